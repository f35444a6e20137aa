//! Serving uwsgi-protocol connections: nginx's `uwsgi_pass` (and our module) speak it.
//!
//! The fast path is uWSGI's: accept, one `recv`, run the app, write, close, with no
//! event-loop bookkeeping in between. Accepted sockets are not registered with the
//! runtime; if the whole request head is already there (nginx sends it right after
//! connecting), the request runs at once on this thread with the socket in blocking mode,
//! the GIL released around each read, write and sendfile. Only a peer whose head is not
//! all there yet is handed to the runtime, so slow peers cost no thread.

mod response;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ngx_wsgi_config::Protocol;
use nix::sys::socket::{recv, MsgFlags};
use pyo3::prelude::*;
use tokio::sync::watch;
use uwsgi_proto::{parse_request_head, HeadError, HeaderError, KeepAlive, RequestHead, HEADER_LEN};

use response::{UwsgiWriter, DRAIN_LIMIT};

use crate::conn::{Conn, ConnReader, UwsgiConn};
use crate::context::{InFlight, ThreadContext, WorkerContext, LINGER_AT_STOP};
use crate::idle::Waited;
use crate::listeners::Accepting;
use crate::outcome::Outcome;
use crate::reqlog::{RequestLine, Vars};
use crate::static_files::StaticAnswer;
use crate::wsgi::input::{Body, WsgiInput};
use crate::wsgi::response::{lock, ResponseState};
use crate::wsgi::EnvironSource;

/// Accepts and serves uwsgi connections until the worker stops; as it closes, those in
/// the listener's queue too.
pub async fn accept_loop(
    listener: Accepting,
    name: String,
    ctx: Arc<ThreadContext>,
    stop_rx: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<()> {
    // Made once, not per connection: waiting on a watch channel registers a waiter.
    let mut stop_watch = stop_rx.clone();
    let stop = crate::process::stopped(&mut stop_watch);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.next() => accepted,
        };
        match accepted {
            Ok((conn, peer)) => serve_accepted(conn, peer, &ctx, &stop_rx, &in_flight).await,
            Err(err) => {
                // EMFILE and friends: say so and keep serving the connections we have.
                tracing::error!("accept() on \"{name}\" failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // As the daemon stops: the connections left in the listener's queue.
    while let Some((conn, peer)) = ctx.queued_at_stop(&listener, &name).await {
        serve_accepted(conn, peer, &ctx, &stop_rx, &in_flight).await;
    }
    Ok(())
}

/// Serves a connection just accepted: at once if its request head is in (the fast path),
/// else in a task of its own.
async fn serve_accepted(
    conn: Conn,
    peer: String,
    ctx: &Arc<ThreadContext>,
    stop_rx: &watch::Receiver<bool>,
    in_flight: &Arc<InFlight>,
) {
    tracing::debug!("{peer}: connection accepted");
    let guard = in_flight.enter();
    // Taken before reading: the request then runs without yielding.
    let slot = ctx.slot_for_request().await;
    let allow_keep_alive = !*stop_rx.borrow();
    if let Some(pending) = serve_if_complete(ctx, conn, &peer, allow_keep_alive) {
        drop(slot);
        let (ctx, stop_rx) = (ctx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            serve_connection(pending, peer, ctx, stop_rx).await;
            drop(guard);
        });
    }
}

thread_local! {
    /// Receive buffer of the fast path: one per request thread, reused by every request.
    static RECV_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection with more to do than the fast path could: the rest of a request head to
/// wait for, or, kept alive, the next request.
struct PendingConn {
    conn: Conn,
    /// What has been received of the next request head.
    received: Vec<u8>,
    /// Between two requests: may be closed on stop or after the idle timeout.
    idle: bool,
}

/// The fast path: serves the request now if its whole head has arrived. Returns the
/// connection when there is more to do on it, for [`serve_connection`].
fn serve_if_complete(
    ctx: &ThreadContext,
    conn: Conn,
    peer: &str,
    allow_keep_alive: bool,
) -> Option<PendingConn> {
    RECV_BUFFER.with_borrow_mut(|buf| {
        buf.resize(HEADER_LEN + ctx.buffer_size + 16 * 1024, 0);
        let received = match recv(conn.as_fd().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return None, // connected and closed: a health check, not an error
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => 0,
            Err(errno) => {
                tracing::error!("{peer}: reading the request failed: {errno}; connection closed");
                return None;
            }
        };
        match parse_request_head(&buf[..received], ctx.buffer_size) {
            Ok(Some(head)) if ctx.requests.admit() => {
                run_request(ctx, conn, peer, &buf[..received], &head, allow_keep_alive).map(
                    |(conn, received)| PendingConn {
                        conn,
                        received,
                        idle: true,
                    },
                )
            }
            // Not all there yet, past max-requests (to be handed over), or refused: the
            // async path waits, hands it over, or answers and drains.
            Ok(_) | Err(_) => Some(PendingConn {
                conn,
                received: buf[..received].to_vec(),
                idle: false,
            }),
        }
    })
}

/// Serves a kept-alive connection another worker handed over as it retired, with the
/// bytes of the next request it had read.
pub async fn serve_handed_over(
    conn: Conn,
    received: Vec<u8>,
    peer: String,
    ctx: Arc<ThreadContext>,
    stop_rx: watch::Receiver<bool>,
) {
    let pending = PendingConn {
        conn,
        received,
        idle: true,
    };
    serve_connection(pending, peer, ctx, stop_rx).await
}

/// The slow path: waits for request heads without holding the thread, and serves them,
/// for as long as the connection is kept alive.
async fn serve_connection(
    pending: PendingConn,
    peer: String,
    ctx: Arc<ThreadContext>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let PendingConn {
        conn,
        mut received,
        mut idle,
    } = pending;
    // Registered once for the connection's life: its requests run on it as it is.
    let stream = match UwsgiConn::register(conn) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!("{peer}: cannot register the connection: {err}; connection closed");
            return;
        }
    };
    // Listed with this thread while it serves it: if the thread gets stuck in a long
    // request, the connection goes to a free one (`idle.rs`).
    let entry = ctx.thread.list(stream.as_fd(), Protocol::Uwsgi, &peer);
    let ended = next_requests(
        &ctx,
        &stream,
        &entry,
        &peer,
        &mut received,
        &mut idle,
        &mut stop_rx,
    )
    .await;
    // Off the list before it is shut or let go of.
    drop(entry);
    if let Ended::Closed = ended {
        // It may be open in another process too (it came from another worker): the
        // peer sees the end only when it is shut.
        let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
    }
}

/// How [`next_requests`] let go of a connection.
enum Ended {
    Closed,
    /// Given to the handover socket by this task (retiring, max-requests).
    HandedOver,
    /// Given by the mover while this thread was busy.
    Given,
}

/// Serves the requests of a registered connection, one after another, for as long as it
/// is kept alive.
async fn next_requests(
    ctx: &ThreadContext,
    stream: &Arc<UwsgiConn>,
    entry: &Arc<crate::idle::IdleConn>,
    peer: &str,
    received: &mut Vec<u8>,
    idle: &mut bool,
    stop_rx: &mut watch::Receiver<bool>,
) -> Ended {
    let mut idle_timer = std::pin::pin!(tokio::time::sleep(idle_timeout()));
    loop {
        let head = loop {
            match parse_request_head(received, ctx.buffer_size) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(err) => {
                    if let HeadError::Header(header) = &err {
                        let status = match header {
                            HeaderError::TooLarge { .. } => "431 Request Header Fields Too Large",
                            _ => "400 Bad Request",
                        };
                        reject(stream, status, &err.to_string()).await;
                    }
                    tracing::error!("{peer}: {err}; connection closed");
                    return Ended::Closed;
                }
            }
            let read = if *idle && received.is_empty() {
                // Between requests: the mover may take it meanwhile.
                let waited = ctx
                    .thread
                    .wait_next_request(
                        stream,
                        entry,
                        received,
                        stop_rx,
                        (idle_timer.as_mut(), idle_timeout()),
                    )
                    .await;
                match waited {
                    Waited::Read(read) => read,
                    Waited::Given => return Ended::Given,
                    // Closed when its idle time is up, as nginx would close it.
                    Waited::Expired => return Ended::Closed,
                    // An idle connection is handed over when the worker retires; when
                    // nobody takes it, a request that comes on it soon is still answered
                    // (nginx may have sent it as the stop came), and it is closed after.
                    Waited::Stopped if ctx.retiring() => {
                        return hand_over(ctx, stream, peer, &[], "the idle connection");
                    }
                    Waited::Stopped => {
                        let next = stream.read_available(received);
                        match tokio::time::timeout(LINGER_AT_STOP, next).await {
                            Ok(read) => read,
                            Err(_) => return Ended::Closed,
                        }
                    }
                }
            } else {
                let limit = ctx.head_timeout;
                match tokio::time::timeout(limit, stream.read_available(received)).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::error!(
                            "{peer}: no complete uwsgi request head after {} s ({}); connection closed",
                            limit.as_secs_f32(),
                            truncation(received).replace("connection closed after", "received")
                        );
                        return Ended::Closed;
                    }
                }
            };
            let waiting_idle = *idle && received.is_empty();
            match read {
                // The peer closed a kept-alive connection between requests: its right.
                Ok(0) if waiting_idle => return Ended::Closed,
                // A peer that closes with our last response still unread (its client went
                // away) resets the connection: between requests, that is a close too.
                Err(err) if waiting_idle && err.kind() == std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!("{peer}: connection reset between requests");
                    return Ended::Closed;
                }
                Ok(0) => {
                    tracing::error!("{peer}: {}; connection closed", truncation(received));
                    return Ended::Closed;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(
                        "{peer}: reading the uwsgi request failed: {err}; connection closed"
                    );
                    return Ended::Closed;
                }
            }
        };
        let slot = ctx.slot_for_request().await;
        if !ctx.requests.admit() {
            // This worker has started its max-requests: the request, with what has been
            // read of it, goes to a worker that serves on.
            return hand_over(ctx, stream, peer, received, "a request past max-requests");
        }
        let allow_keep_alive = !*stop_rx.borrow();
        let conn = Conn::Registered(stream.clone());
        let Some((_, leftover)) = run_request(ctx, conn, peer, received, &head, allow_keep_alive)
        else {
            return Ended::Closed;
        };
        drop(slot);
        *received = leftover;
        *idle = true;
    }
}

/// Gives a connection, with what was read of its next request, to the serving workers
/// (`handover.rs`); `what` names it in the log. A request that cannot go is lost: an error.
fn hand_over(
    ctx: &ThreadContext,
    stream: &UwsgiConn,
    peer: &str,
    received: &[u8],
    what: &str,
) -> Ended {
    let protocol = Protocol::Uwsgi;
    match ctx.handover.give(stream, protocol, peer, &[received]) {
        Ok(()) => {
            tracing::debug!("{peer}: {what} handed over");
            Ended::HandedOver
        }
        Err(err) if received.is_empty() => {
            tracing::warn!("{peer}: cannot hand {what} over ({err}); connection closed");
            Ended::Closed
        }
        Err(err) => {
            tracing::error!("{peer}: cannot hand {what} over ({err}); connection closed");
            Ended::Closed
        }
    }
}

/// Reads a duration in seconds from the environment, for the timeouts tests shorten.
fn seconds_from_env(name: &str, default: u64) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<f32>().ok())
        .map_or(Duration::from_secs(default), Duration::from_secs_f32)
}

/// How long a kept-alive connection may stay idle between requests: longer than nginx's
/// default upstream `keepalive_timeout` (60 s), so nginx normally closes first.
/// `NGX_WSGI_IDLE_TIMEOUT` (seconds) overrides the default of 90 s.
fn idle_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| seconds_from_env("NGX_WSGI_IDLE_TIMEOUT", 90))
}

/// What a peer that closed before its head was complete had sent.
fn truncation(received: &[u8]) -> String {
    match received.first_chunk::<HEADER_LEN>() {
        None => format!(
            "connection closed after {} of the 4 bytes of the uwsgi header",
            received.len()
        ),
        Some(raw) => format!(
            "connection closed after {} of the {} bytes of the uwsgi vars block",
            received.len() - HEADER_LEN,
            uwsgi_proto::PacketHeader::parse(*raw).datasize
        ),
    }
}

/// The vars the server itself reads, found in one pass over the (validated) vars block.
#[derive(Default)]
struct ServerVars<'a> {
    method: &'a [u8],
    keep_alive: Option<&'a [u8]>,
    request_uri: Option<&'a [u8]>,
    path_info: Option<&'a [u8]>,
    remote_addr: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
}

impl<'a> ServerVars<'a> {
    fn find(vars: uwsgi_proto::Vars<'a>) -> Self {
        let mut found = ServerVars::default();
        for (key, value) in vars.iter() {
            if key == uwsgi_proto::KEEPALIVE_VAR {
                found.keep_alive = Some(value);
                continue;
            }
            match key {
                b"REQUEST_METHOD" => found.method = value,
                b"REQUEST_URI" => found.request_uri = Some(value),
                b"PATH_INFO" => found.path_info = Some(value),
                b"REMOTE_ADDR" => found.remote_addr = Some(value),
                b"HTTP_IF_MODIFIED_SINCE" => found.if_modified_since = Some(value),
                _ => {}
            }
        }
        found
    }
}

/// Runs one request whose head is at the start of `received`. Returns the connection, with
/// the bytes of the next request already received, when it is kept alive (the client
/// asked with NGX_WSGI_KEEPALIVE and the response could be delimited: docs/protocol.md);
/// otherwise the connection is closed, as uWSGI and stock nginx expect.
fn run_request(
    ctx: &ThreadContext,
    conn: Conn,
    peer: &str,
    received: &[u8],
    head: &RequestHead,
    allow_keep_alive: bool,
) -> Option<(Conn, Vec<u8>)> {
    let started = Instant::now();
    let conn = Arc::new(conn);
    let decoded = head.vars(received);
    let body_start = head.vars.end;
    let body_end = received
        .len()
        .min(body_start.saturating_add(head.content_length as usize));
    let server_vars = ServerVars::find(decoded);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let request_line = || {
        let uri = server_vars
            .request_uri
            .or(server_vars.path_info)
            .unwrap_or_default();
        format!("{} {}", text(server_vars.method), text(uri))
    };
    let client = || match server_vars.remote_addr {
        Some(addr) => format!("{} via {peer}", text(addr)),
        None => peer.to_string(),
    };
    // The body bytes that came with the head; the rest is still in the socket.
    let unread_after_head = head.content_length - (body_end - body_start) as u64;
    if let Some(reason) = ctx.refuse_body(head.content_length) {
        tracing::error!("{} {} => 413: {reason}", client(), request_line());
        refuse(&conn, "413 Content Too Large", &reason);
        linger(conn, unread_after_head, ctx.head_timeout);
        return None;
    }
    if let Some(answer) = static_answer(ctx, &server_vars) {
        let (outcome, head_len) = send_static(&conn, answer, server_vars.method == b"HEAD");
        crate::stats::response_done(&outcome);
        log(
            ctx,
            decoded,
            &server_vars,
            peer,
            &outcome,
            started,
            (2, head_len),
        );
        return None;
    }
    let _timer = ctx.requests.start(
        ctx.thread.index,
        started,
        Some(conn.as_fd().as_raw_fd()),
        || format!("{} (from {})", request_line(), client()),
    );
    ctx.thread.wake_mover();
    let keep_alive = match allow_keep_alive {
        true => KeepAlive::from_var(server_vars.keep_alive),
        false => KeepAlive::Off,
    };
    let (outcome, reusable, unread, head_size) = Python::attach(|py| {
        let failed = |err: PyErr| {
            let traceback = crate::python::format_exception(py, &err);
            (
                Outcome::AppFailed { traceback },
                false,
                unread_after_head,
                (0, 0),
            )
        };
        let prefix = received[body_start..body_end].to_vec();
        let mut body = Body::new(
            prefix,
            Box::new(ConnReader(conn.clone())),
            head.content_length,
        );
        // A body over the drain limit may be left unread: the response writer then says
        // the connection ends. A smaller one never is, and costs nothing here.
        let unread_body = (head.content_length > DRAIN_LIMIT).then(|| body.share_remaining());
        let input = match Bound::new(py, WsgiInput::new(body)) {
            Ok(input) => input,
            Err(err) => return failed(err),
        };
        let source = EnvironSource::Uwsgi {
            vars: decoded,
            cache: &ctx.environ_cache,
        };
        let environ = match ctx.app.environ(py, &source, input.clone()) {
            Ok(environ) => environ,
            Err(err) => return failed(err),
        };
        let head_only = server_vars.method == b"HEAD";
        let claim = (ctx.requests.clone(), ctx.thread.index);
        let writer = UwsgiWriter::new(conn.clone(), claim, head_only, keep_alive, unread_body);
        let response = ResponseState::new(writer, head_only);
        let outcome = ctx.app.respond(py, environ, &response);
        let mut reusable =
            matches!(outcome, Outcome::Sent { .. }) && lock(&response).writer.reusable();
        let mut input = input.borrow_mut();
        // Reading what the app left of the body may wait for nginx: without the GIL.
        if reusable && input.body_mut().unread() > 0 {
            let body = input.body_mut();
            reusable = py
                .detach(|| body.discard_unread(DRAIN_LIMIT))
                .unwrap_or(false);
        }
        let unread = input.body_mut().unread();
        // The app may keep its environ or start_response alive: they let go of the socket.
        input.body_mut().release_source();
        let mut response = lock(&response);
        response.writer.release();
        let head_size = (
            response.head.as_ref().map_or(0, |h| h.header_count),
            response.writer.head_len,
        );
        (outcome, reusable, unread, head_size)
    });
    crate::stats::response_done(&outcome);
    ctx.after_request(&outcome);
    log(
        ctx,
        decoded,
        &server_vars,
        peer,
        &outcome,
        started,
        head_size,
    );
    if matches!(outcome, Outcome::Aborted { .. } | Outcome::PeerGone { .. }) {
        conn.shutdown();
        return None;
    }
    if !reusable {
        // An answer before the whole body was read: closing now would reset the
        // connection and destroy the answer nginx has not read yet.
        if unread > 0 {
            linger(conn, unread, ctx.head_timeout);
        }
        return None;
    }
    // Bytes past this request's body are the start of the next one.
    let conn = Arc::into_inner(conn)?;
    // Read ahead with the body's end when the body did not all come with the head (then
    // nothing followed it in `received`).
    let ahead = match &conn {
        Conn::Registered(stream) if unread_after_head > 0 => stream.take_read_ahead(),
        _ => None,
    };
    let next = ahead.unwrap_or_else(|| received[body_end..].to_vec());
    Some((conn, next))
}

/// The request's log line, when one is written, and how long it held the thread. `head`
/// is the response's header count and size.
fn log(
    ctx: &ThreadContext,
    vars: uwsgi_proto::Vars<'_>,
    server_vars: &ServerVars<'_>,
    peer: &str,
    outcome: &Outcome,
    started: Instant,
    head: (usize, usize),
) {
    let took = ctx.log_request(outcome, started, || RequestLine {
        vars: Vars::Uwsgi(vars),
        core: ctx.thread.index,
        peer,
        method: String::from_utf8_lossy(server_vars.method),
        uri: String::from_utf8_lossy(
            server_vars
                .request_uri
                .or(server_vars.path_info)
                .unwrap_or_default(),
        ),
        response_head: head,
        numbers: crate::stats::request_numbers(),
    });
    ctx.held_for(took);
}

/// `static-map`, `check-static`: the file a GET or HEAD request gets instead of the app.
fn static_answer(ctx: &WorkerContext, vars: &ServerVars<'_>) -> Option<StaticAnswer> {
    let statics = ctx.static_files.as_ref()?;
    if !matches!(vars.method, b"GET" | b"HEAD") {
        return None;
    }
    statics.answer(vars.path_info?, vars.if_modified_since)
}

/// Sends a static file (sendfile) and closes, as uWSGI does; says how long the head was.
fn send_static(conn: &Conn, answer: StaticAnswer, head_only: bool) -> (Outcome, usize) {
    let head = crate::static_files::response_head(&answer);
    let sent = conn.write_all(&head).and_then(|()| match &answer {
        StaticAnswer::File(file) if !head_only => {
            conn.sendfile(file.file.as_fd(), 0, Some(file.len))
        }
        _ => Ok(0),
    });
    let outcome = match (sent, &answer) {
        (Ok(bytes), StaticAnswer::File(_)) => Outcome::Sent { status: 200, bytes },
        (Ok(_), StaticAnswer::NotModified { .. }) => Outcome::Sent {
            status: 304,
            bytes: 0,
        },
        (Err(err), _) => Outcome::PeerGone {
            reason: format!("sending a static file failed: {err}"),
        },
    };
    (outcome, head.len())
}

/// The longest a lingering close lasts in all.
const LINGER_TIME: Duration = Duration::from_secs(30);

thread_local! {
    /// The lingering closes under way on this request thread's runtime: a stopping worker
    /// waits for them ([`LINGER_TIME`] at most) before the runtime, and they, end.
    static LINGERING: Arc<InFlight> = Arc::new(InFlight::default());
}

/// Waits until this thread's lingering closes are over.
pub async fn lingering_done() {
    let lingering = LINGERING.with(Arc::clone);
    lingering.wait_idle().await;
}

/// Closes a connection whose request body was not read to its end, after its response:
/// nginx is still sending that body, and closing with unread bytes would reset the
/// connection and destroy the response before nginx reads it (it would answer 502).
/// Like nginx's own lingering close: the writing side is shut (the response is complete),
/// then what the peer still sends is read and dropped, in a task of its own so the
/// request thread goes on serving. It ends when `unread` bytes came (the declared rest
/// of the body, no more), the peer closed, nothing came for `timeout`, or after
/// [`LINGER_TIME`].
fn linger(conn: Arc<Conn>, unread: u64, timeout: Duration) {
    let Some(conn) = Arc::into_inner(conn) else {
        return; // still shared (cannot happen after a request): dropping it closes it
    };
    let _ = socket2::SockRef::from(&conn).shutdown(std::net::Shutdown::Write);
    let conn = match UwsgiConn::register(conn) {
        Ok(conn) => conn,
        Err(_) => return,
    };
    let guard = LINGERING.with(|lingering| lingering.enter());
    tokio::spawn(async move {
        let _lingering = guard;
        drain_rest(&conn, Some(unread), timeout).await;
    });
}

/// Reads and drops what the peer still sends, after an answer: `unread` bytes at most
/// (None: until it closes), `idle` at most between two reads, [`LINGER_TIME`] in all.
async fn drain_rest(conn: &UwsgiConn, unread: Option<u64>, idle: Duration) {
    let drain = async {
        let mut sink = Vec::with_capacity(64 * 1024);
        let mut left = unread.unwrap_or(u64::MAX);
        while left > 0 {
            sink.clear();
            match tokio::time::timeout(idle, conn.read_available(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// [`reject`] for a connection a request thread holds: answers without waiting; the
/// caller closes it, lingering on the body that follows ([`linger`]).
fn refuse(conn: &Conn, status: &str, reason: &str) {
    let response = error_response(status, reason);
    let _ = conn.write_parts(&[response.as_bytes()]);
}

fn error_response(status: &str, reason: &str) -> String {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers a request we will not serve with an HTTP error saying why: nginx passes it
/// to the client (a 431 instead of uWSGI's 502), and a browser pointed at the socket
/// reads the reason. The rest of the input is then drained briefly, so closing does
/// not reset the connection and destroy the answer.
async fn reject(conn: &UwsgiConn, status: &str, reason: &str) {
    let response = error_response(status, reason);
    let answered = conn.write_all(response.as_bytes()).is_ok()
        && socket2::SockRef::from(conn)
            .shutdown(std::net::Shutdown::Write)
            .is_ok();
    // A lingering close, as in [`linger`]: the body that follows a refused head (of a size
    // the head may not tell) is read and dropped until the peer is done.
    if answered {
        drain_rest(conn, None, Duration::from_secs(5)).await;
    }
}
