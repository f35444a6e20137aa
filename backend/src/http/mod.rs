//! The HTTP/1.1 listener (`--http-socket`, `--http`), on hyper: keep-alive, chunked
//! requests and responses, HEAD, pipelining.
//!
//! The request body is read before the app runs (in memory up to 1 MiB, in an unlinked
//! temporary file beyond), because the app runs on the thread that drives this
//! connection and could not wait for body bytes that only this thread would read.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Seek, Write};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use pyo3::prelude::*;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::conn::{AsyncConn, PrefixedConn};
use crate::context::{ThreadContext, WorkerContext, LINGER_AT_STOP};
use crate::outcome::Outcome;
use crate::reqlog::{RequestLine, Vars};
use crate::wsgi::input::{Body, WsgiInput};
use crate::wsgi::response::{lock, ResponseHead, ResponseState, ResponseWriter};
use crate::wsgi::{close_iterable, EnvironSource};
use gate::{ActiveRequest, Gate, GatedConn};
use ngx_wsgi_config::Protocol;

mod framer;
mod gate;

const MEMORY_BODY_LIMIT: usize = 1 << 20;

/// Serves one HTTP connection until the client closes it or the worker stops. `prefix`:
/// bytes of it another worker read before handing it over. `head_in` is told when the
/// first request's head has been read (the accept loop waits for it).
///
/// When the worker stops, a request in progress is finished. An idle connection is handed
/// over to the serving workers if this one retires (reload, recycling: a close there
/// would race with the client's next request, which would be lost). If nobody takes it
/// (the daemon stops), requests that come on it are answered with `Connection: close`,
/// and it is closed once idle for [`LINGER_AT_STOP`]: a client that had sent its next
/// request as the stop came does not find the connection closed under it.
pub async fn serve(
    conn: AsyncConn,
    prefix: Vec<u8>,
    peer: String,
    ctx: Arc<ThreadContext>,
    mut stop_rx: watch::Receiver<bool>,
    head_in: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let (remote, local_port) = match &conn {
        AsyncConn::Tcp(s) => (
            s.peer_addr()
                .map(|a| (a.ip().to_string(), a.port()))
                .unwrap_or_default(),
            s.local_addr().map(|a| a.port()).unwrap_or(0),
        ),
        AsyncConn::Unix(_) => (("127.0.0.1".to_string(), 0), 0),
    };
    // Listed with the thread from the start: between requests the mover may take it.
    let entry = ctx.thread.list(conn.as_fd(), Protocol::Http, &peer);
    let gate = Gate::new(entry.clone());
    // Still here while no request head came on a connection just accepted (not handed
    // over), whose first request may be on its way.
    let head_in = Arc::new(std::sync::Mutex::new(head_in));
    let service = {
        let (ctx, peer, gate) = (ctx.clone(), peer.clone(), gate.clone());
        let head_in = head_in.clone();
        hyper::service::service_fn(move |request| {
            if let Some(head_in) = head_in.lock().ok().and_then(|mut slot| slot.take()) {
                let _ = head_in.send(());
            }
            // The request counts as active until hyper drops its response's body.
            let (admitted, guard) = gate.take_admission();
            let handled = handle(
                request,
                admitted,
                ctx.clone(),
                peer.clone(),
                remote.clone(),
                local_port,
            );
            Box::pin(async move {
                let response = handled.await?;
                Ok::<_, Infallible>(response.map(|body| body.holding(guard)))
            })
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A client may shut its writing side once its request is sent: it still gets the answer.
    builder.half_close(true);
    let io = GatedConn::new(PrefixedConn::new(conn, prefix), gate.clone(), ctx.clone());
    let mut connection = builder.serve_connection(TokioIo::new(io), service);
    // When the worker stops: whether the connection was idle then (no request read or
    // answered on it), so that it can be handed over.
    let mut idle_at_stop = None;
    // For a request refused as the worker retired and left here by a SIGTERM (below).
    let stop_rx_then = stop_rx.clone();
    let stop = crate::process::stopped(&mut stop_rx);
    tokio::pin!(stop);
    let mut stop_seen = false;
    // As the worker closes: when this connection, idle since, is closed.
    let mut linger: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let result = std::future::poll_fn(|cx| loop {
        if let Poll::Ready(result) = connection.poll_without_shutdown(cx) {
            return Poll::Ready(result);
        }
        if idle_at_stop.is_some() {
            return Poll::Pending;
        }
        stop_seen = stop_seen || stop.as_mut().poll(cx).is_ready();
        // Not while hyper still holds some of a response: once shut down, it would drop
        // what it has not written (the write's readiness polls this again).
        if !stop_seen || gate.writing() {
            return Poll::Pending;
        }
        if ctx.closing() {
            // Not shut down while a request is read or answered: hyper would drop a head
            // it has begun to read. Its response says `Connection: close` instead.
            if !gate.idle() || gate.next_request_waiting() {
                linger = None;
                return Poll::Pending;
            }
            // A connection just accepted may have its first request on the way, one
            // retransmission late (200 ms or more): it has longer.
            let first_to_come = head_in.lock().is_ok_and(|head_in| head_in.is_some());
            let wait = match first_to_come {
                true => 4 * LINGER_AT_STOP,
                false => LINGER_AT_STOP,
            };
            let linger = linger
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)))
                .as_mut();
            if linger.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        idle_at_stop = Some(gate.idle());
        // Finish the request in progress, then close instead of keeping alive.
        Pin::new(&mut connection).graceful_shutdown();
    })
    .await;
    if entry.given() {
        // The mover sent it, with the request waiting on it, to a free thread: this task
        // only lets go of its descriptor.
        return;
    }
    if let Err(err) = &result {
        if !err.is_incomplete_message() {
            tracing::warn!("{peer}: HTTP connection error: {err}");
        }
    }
    let parts = connection.into_parts();
    let io = parts.io.into_inner().io;
    // Out of the mover's reach before it is handed over or closed.
    if !entry.reclaim().await {
        return;
    }
    drop(entry);
    let retiring = ctx.retiring();
    // Idle when the worker stopped, or closed by hyper with the head of a request admitted
    // but not complete yet (it is in `read_buf`): another worker serves it.
    let unserved = idle_at_stop == Some(true) || gate.admission_pending();
    // In stream order: what hyper read and did not use, then what it had not read yet.
    let received = [&parts.read_buf[..], io.unread_prefix()];
    if result.is_ok() && unserved && retiring {
        match ctx
            .handover
            .give(&io.conn, Protocol::Http, &peer, &received)
        {
            Ok(()) => {
                tracing::debug!("{peer}: idle connection handed over");
                return;
            }
            Err(err) => {
                tracing::warn!("{peer}: cannot hand the idle connection over ({err}); closed")
            }
        }
    }
    // The worker retired and refused a request, to be handed over with the connection;
    // then SIGTERM came, and nobody would take it now: it is served here, as a connection
    // handed over would be.
    if result.is_ok() && unserved && ctx.closing() && received.iter().any(|r| !r.is_empty()) {
        let received = received.concat();
        let again = serve(io.conn, received, peer, ctx, stop_rx_then, None);
        return Box::pin(again).await;
    }
    let _ = socket2::SockRef::from(&io.conn).shutdown(std::net::Shutdown::Write);
}

/// Answers one request. `admitted`: the thread's app slot, taken (and the request
/// admitted) before its head was read (`gate.rs`); None for a request a pipelining client
/// sent with the previous one.
async fn handle(
    request: Request<Incoming>,
    admitted: Option<OwnedSemaphorePermit>,
    ctx: Arc<ThreadContext>,
    peer: String,
    remote: (String, u16),
    local_port: u16,
) -> Result<Response<WsgiBody>, Infallible> {
    let started = Instant::now();
    let (head, incoming) = request.into_parts();
    if let Some(response) = static_response(&ctx, &head, (&peer, &remote.0), started) {
        return Ok(response);
    }
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // The body is not read (or not all of it): the connection closes after the answer,
    // rather than hyper reading what is left of the body as if it were a next request.
    let too_large = |reason: String| {
        tracing::error!("{peer} {} {} => 413: {reason}", head.method, head.uri);
        Ok(closing(plain_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content Too Large",
        )))
    };
    // A declared length is refused before reading; a chunked body once it passes the limit.
    if let Some(reason) = declared.and_then(|length| ctx.refuse_body(length)) {
        return too_large(reason);
    }
    let (first, spooled, length) = match read_body(incoming, ctx.limit_post, ctx.head_timeout).await
    {
        Ok(ReadBody::Whole {
            memory,
            spooled,
            length,
        }) => (memory, spooled, length),
        Ok(ReadBody::OverLimit { read }) => {
            let reason = ctx.refuse_body(read).unwrap_or_default();
            return too_large(format!("{reason} (chunked: reading stopped there)"));
        }
        Err(err) => {
            tracing::warn!(
                "{peer} {} {}: request body not received: {err}; connection closed",
                head.method,
                head.uri
            );
            return Ok(closing(plain_response(
                StatusCode::BAD_REQUEST,
                "Bad Request",
            )));
        }
    };
    let has_body = length > 0 || head.headers.contains_key(http::header::CONTENT_LENGTH);
    let permit = match admitted {
        Some(permit) => permit,
        None => {
            let permit = ctx.app_slot().await;
            // Served here even past max-requests: hyper read it with the one before, and
            // no other worker could be given it.
            ctx.requests.admit();
            permit
        }
    };
    // From now: the body has been read already, which is the client's time, not the app's.
    let _timer = ctx
        .requests
        .start(ctx.thread.index, Instant::now(), None, || {
            format!("{} {} (from {peer})", head.method, head.uri)
        });
    ctx.thread.wake_mover();
    let response = Python::attach(|py| {
        let source: crate::wsgi::input::BodySource = match spooled {
            Some(file) => Box::new(file),
            None => Box::new(std::io::empty()),
        };
        let input = WsgiInput::new(Body::new(first, source, length));
        let info = crate::wsgi::environ::HttpRequestInfo {
            head: &head,
            content_length: has_body.then_some(length),
            remote,
            local_port,
        };
        let log = RequestLog {
            ctx: ctx.worker.clone(),
            peer: peer.clone(),
            head: copy_head(&head),
            remote: info.remote.0.clone(),
            started,
            status: 0,
            bytes: 0,
            content_length: None,
            response_head: (0, 0),
            // Now, while this request is not counted yet: its line may be written after.
            numbers: crate::stats::request_numbers(),
            core: ctx.thread.index,
        };
        let head_only = head.method == http::Method::HEAD;
        let (response, finished) = run_app(
            py,
            &ctx,
            &EnvironSource::Http(info),
            input,
            head_only,
            permit,
            log,
        );
        if let Some((log, outcome)) = finished {
            log.write(&outcome);
        }
        response
    });
    Ok(ending_if_closing(&ctx, response))
}

/// A response written while the worker closes ([`WorkerContext::closing`]) says
/// `Connection: close`, so a kept-alive client does not send its next request on a
/// connection about to close. A retiring worker (reload, max-requests, ...) hands its
/// idle connections over instead, and keeps them alive.
fn ending_if_closing(ctx: &WorkerContext, response: Response<WsgiBody>) -> Response<WsgiBody> {
    match ctx.closing() {
        true => closing(response),
        false => response,
    }
}

/// Reads the whole request body: the bytes, and a temporary file when it outgrew memory.
/// A request body as read before the app runs.
enum ReadBody {
    /// In memory up to [`MEMORY_BODY_LIMIT`], then in an unlinked temporary file.
    Whole {
        memory: Vec<u8>,
        spooled: Option<std::fs::File>,
        length: u64,
    },
    /// Past `limit-post`: reading stopped after `read` bytes.
    OverLimit { read: u64 },
}

/// The request holds its thread meanwhile (`gate.rs`): a client that sends nothing for
/// `socket-timeout` (`silence`) is given up, as uWSGI gives up a read.
async fn read_body(
    mut incoming: Incoming,
    limit: Option<u64>,
    silence: std::time::Duration,
) -> anyhow::Result<ReadBody> {
    // Most requests have no body: nothing to wait for, and no timer.
    if incoming.is_end_stream() {
        return Ok(ReadBody::Whole {
            memory: Vec::new(),
            spooled: None,
            length: 0,
        });
    }
    let mut memory = Vec::new();
    let mut file: Option<std::fs::File> = None;
    let mut length = 0u64;
    // One timer for the body, pushed back after each frame.
    let mut quiet = std::pin::pin!(tokio::time::sleep(silence));
    loop {
        let frame = tokio::select! {
            biased;
            frame = incoming.frame() => frame,
            () = quiet.as_mut() => anyhow::bail!(
                "nothing came for socket-timeout ({} s) after {length} bytes",
                silence.as_secs()
            ),
        };
        quiet.as_mut().reset(tokio::time::Instant::now() + silence);
        let Some(frame) = frame else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        length += data.len() as u64;
        if limit.is_some_and(|limit| length > limit) {
            return Ok(ReadBody::OverLimit { read: length });
        }
        match &mut file {
            Some(file) => file.write_all(&data)?,
            None if memory.len() + data.len() > MEMORY_BODY_LIMIT => {
                let mut spool = tempfile()?;
                spool.write_all(&memory)?;
                spool.write_all(&data)?;
                memory.clear();
                file = Some(spool);
            }
            None => memory.extend_from_slice(&data),
        }
    }
    if let Some(file) = &mut file {
        file.rewind()?;
    }
    Ok(ReadBody::Whole {
        memory,
        spooled: file,
        length,
    })
}

/// An unlinked file in the temporary directory: it disappears when closed.
fn tempfile() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())
}

/// Runs the app until its head is committed (`WsgiApp::start`); the rest of the body
/// streams from [`WsgiBody`].
fn run_app(
    py: Python<'_>,
    ctx: &WorkerContext,
    source: &EnvironSource<'_>,
    input: WsgiInput,
    head_only: bool,
    permit: OwnedSemaphorePermit,
    mut log: RequestLog,
) -> (Response<WsgiBody>, Option<(RequestLog, Outcome)>) {
    let state = ResponseState::new(Collected::default(), head_only);
    let started = (|| -> PyResult<Option<Pending>> {
        let environ = ctx.app.environ(py, source, Bound::new(py, input)?)?;
        let rest = ctx.app.start(py, environ, &state)?;
        Ok(rest.map(|(iterable, iterator)| Pending {
            iterable: iterable.unbind(),
            iterator: iterator.into_any().unbind(),
        }))
    })();
    let mut state = lock(&state);
    match started {
        Ok(rest) => {
            let Collected {
                head: Some(head),
                early_body,
            } = std::mem::take(&mut state.writer)
            else {
                let outcome = Outcome::AppFailed {
                    traceback: "the app returned without calling start_response".into(),
                };
                return (
                    plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    Some((log, outcome)),
                );
            };
            log.status = head.code;
            log.bytes = state.body_bytes;
            log.response_head = (head.header_count, head.http1_len());
            log.content_length = head.content_length();
            let finished = match rest {
                Some(_) => None,
                None => Some(Outcome::Sent {
                    status: head.code,
                    bytes: state.body_bytes,
                }),
            };
            let (body_log, finished) = match finished {
                Some(outcome) => (None, Some((log, outcome))),
                None => (Some(log), None),
            };
            let body = WsgiBody {
                early: Some(Bytes::from(early_body)),
                rest,
                head_only,
                permit: Some(permit),
                log: body_log,
                file: None,
                active: None,
            };
            (build_response(&head, body), finished)
        }
        Err(err) => {
            let outcome = Outcome::AppFailed {
                traceback: crate::python::format_exception(py, &err),
            };
            (
                plain_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                Some((log, outcome)),
            )
        }
    }
}

/// What the app's response starts with, kept for hyper to send: the head once the app
/// commits it, and what it produced before its iterable's first non-empty chunk (or all
/// of an in-memory body). hyper frames the response.
#[derive(Default)]
struct Collected {
    head: Option<ResponseHead>,
    early_body: Vec<u8>,
}

impl ResponseWriter for Collected {
    fn send(&mut self, head: Option<&ResponseHead>, data: &[u8]) -> std::io::Result<u64> {
        if let Some(head) = head {
            self.head = Some(head.clone());
        }
        self.early_body.extend_from_slice(data);
        Ok(data.len() as u64)
    }

    fn finish(&mut self) -> std::io::Result<bool> {
        Ok(true)
    }

    fn sends_to_peer() -> bool {
        false // hyper sends what was collected, after the app call
    }
}

/// What the request log line needs, carried by a streaming body until it ends.
pub struct RequestLog {
    ctx: Arc<WorkerContext>,
    peer: String,
    /// The request's head, for the log line's variables.
    head: http::request::Parts,
    /// The client's address (REMOTE_ADDR).
    remote: String,
    started: Instant,
    status: u16,
    bytes: u64,
    /// The Content-Length the app declared, if any.
    content_length: Option<u64>,
    /// The response's header count and head size.
    response_head: (usize, usize),
    /// This worker's request number and every worker's (`req: N/M`).
    numbers: (u64, u64),
    /// The request thread's index (`core`).
    core: usize,
}

impl RequestLog {
    fn write(&self, outcome: &Outcome) {
        crate::stats::response_done(outcome);
        self.ctx.after_request(outcome);
        log(
            (&self.ctx, self.core),
            &self.head,
            (&self.peer, &self.remote),
            outcome,
            (self.started, self.numbers),
            self.response_head,
        );
    }
}

/// A copy of a request's head (without its extensions), for a log line written after the
/// request was handed on.
fn copy_head(head: &http::request::Parts) -> http::request::Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method.clone();
    *copy.uri_mut() = head.uri.clone();
    *copy.version_mut() = head.version;
    *copy.headers_mut() = head.headers.clone();
    copy.into_parts().0
}

/// The request's log line, when one is written. `response_head`: the response's header
/// count and head size; `numbers`: its `req: N/M`; `core`: the request thread's index.
fn log(
    (ctx, core): (&WorkerContext, usize),
    head: &http::request::Parts,
    (peer, remote): (&str, &str),
    outcome: &Outcome,
    (started, numbers): (Instant, (u64, u64)),
    response_head: (usize, usize),
) {
    ctx.log_request(outcome, started, || RequestLine {
        vars: Vars::Http { head, remote },
        peer,
        method: head.method.as_str().into(),
        uri: head
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .into(),
        response_head,
        numbers,
        core,
    });
}

fn build_response(head: &ResponseHead, body: WsgiBody) -> Response<WsgiBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(head.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !head.reason().is_empty() {
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason().to_vec()) {
            response.extensions_mut().insert(reason);
        }
    }
    let headers = response.headers_mut();
    for (name, value) in head.headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// `static-map`, `check-static`: a GET or HEAD request for a file gets it, not the app.
fn static_response(
    ctx: &ThreadContext,
    head: &http::request::Parts,
    (peer, remote): (&str, &str),
    started: Instant,
) -> Option<Response<WsgiBody>> {
    use crate::static_files::StaticAnswer;
    let statics = ctx.static_files.as_ref()?;
    let head_only = head.method == http::Method::HEAD;
    if !(head.method == http::Method::GET || head_only) {
        return None;
    }
    let path = crate::wsgi::environ::percent_decode(head.uri.path().as_bytes());
    let since = head
        .headers
        .get(http::header::IF_MODIFIED_SINCE)
        .map(|v| v.as_bytes());
    let answer = statics.answer(&path, since)?;
    let (status, modified, length, content_type, file) = match answer {
        StaticAnswer::File(found) => (
            StatusCode::OK,
            found.modified,
            Some(found.len),
            found.content_type,
            (!head_only).then_some(found.file),
        ),
        StaticAnswer::NotModified { modified } => {
            (StatusCode::NOT_MODIFIED, modified, None, "", None)
        }
    };
    let outcome = Outcome::Sent {
        status: status.as_u16(),
        bytes: if head_only { 0 } else { length.unwrap_or(0) },
    };
    let body = WsgiBody {
        early: None,
        rest: None,
        head_only,
        permit: None,
        log: None,
        file,
        active: None,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(length) = length {
        headers.insert(http::header::CONTENT_LENGTH, length.into());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
    }
    if let Ok(value) = http::HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        headers.insert(http::header::LAST_MODIFIED, value);
    }
    crate::stats::response_done(&outcome);
    let response_head = (headers.len(), head_size(status, headers));
    let numbers = crate::stats::request_numbers();
    log(
        (ctx, ctx.thread.index),
        head,
        (peer, remote),
        &outcome,
        (started, numbers),
        response_head,
    );
    Some(response)
}

/// The size of a response head as HTTP/1.1 writes it.
fn head_size(status: StatusCode, headers: &http::HeaderMap) -> usize {
    let status_line = "HTTP/1.1 ".len()
        + status.as_str().len()
        + 1
        + status.canonical_reason().unwrap_or("").len()
        + 2;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    status_line + fields + 2
}

/// The response, saying the connection closes after it.
fn closing(mut response: Response<WsgiBody>) -> Response<WsgiBody> {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

fn plain_response(status: StatusCode, text: &'static str) -> Response<WsgiBody> {
    let body = WsgiBody {
        early: Some(Bytes::from_static(text.as_bytes())),
        rest: None,
        head_only: false,
        permit: None,
        log: None,
        file: None,
        active: None,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// The part of the app's response still to send: the iterable (for `close()`) and the
/// iterator already started on it.
struct Pending {
    iterable: Py<PyAny>,
    iterator: Py<PyAny>,
}

/// A response body that pulls the rest of the app's iterable as hyper asks for it, and
/// holds the thread's app slot until the app's `close()` has run.
pub struct WsgiBody {
    early: Option<Bytes>,
    rest: Option<Pending>,
    head_only: bool,
    permit: Option<OwnedSemaphorePermit>,
    log: Option<RequestLog>,
    /// A static file (`static-map`), read in pieces.
    file: Option<std::fs::File>,
    /// The request counts as active until this body is dropped.
    active: Option<ActiveRequest>,
}

impl WsgiBody {
    fn holding(mut self, active: ActiveRequest) -> WsgiBody {
        self.active = Some(active);
        self
    }

    /// Runs the app's `close()`, frees the thread's app slot and writes the log line.
    fn finish(&mut self, py: Python<'_>, outcome: impl FnOnce(&RequestLog) -> Outcome) {
        if let Some(pending) = self.rest.take() {
            if let Err(err) = close_iterable(pending.iterable.bind(py)) {
                tracing::error!(
                    "the app's close() raised\n{}",
                    crate::python::format_exception(py, &err)
                );
            }
        }
        self.permit = None;
        if let Some(log) = self.log.take() {
            log.write(&outcome(&log));
        }
    }
}

fn sent(log: &RequestLog) -> Outcome {
    Outcome::Sent {
        status: log.status,
        bytes: log.bytes,
    }
}

impl HttpBody for WsgiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(early) = self
            .early
            .take()
            .filter(|b| !b.is_empty() && !self.head_only)
        {
            return Poll::Ready(Some(Ok(Frame::data(early))));
        }
        let this = &mut *self;
        if let Some(file) = &mut this.file {
            use std::io::Read;
            let mut piece = vec![0u8; 64 * 1024];
            match file.read(&mut piece) {
                Ok(0) => this.file = None,
                Ok(n) => {
                    piece.truncate(n);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(piece)))));
                }
                Err(err) => {
                    this.file = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
        if this.rest.is_none() {
            return Poll::Ready(None);
        }
        let next = Python::attach(|py| -> PyResult<Option<Bytes>> {
            let Some(iterator) = this.rest.as_ref().map(|p| p.iterator.clone_ref(py)) else {
                return Ok(None);
            };
            if this.head_only {
                this.finish(py, sent);
                return Ok(None);
            }
            let mut iterator = iterator
                .into_bound(py)
                .cast_into::<pyo3::types::PyIterator>()?;
            loop {
                match iterator.next() {
                    Some(chunk) => {
                        let chunk = chunk?;
                        let data = crate::wsgi::chunk_bytes(&chunk)?;
                        if !data.is_empty() {
                            if let Some(log) = &mut this.log {
                                log.bytes += data.len() as u64;
                            }
                            return Ok(Some(Bytes::copy_from_slice(data)));
                        }
                    }
                    None => {
                        this.finish(py, sent);
                        return Ok(None);
                    }
                }
            }
        });
        match next {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => {
                Python::attach(|py| {
                    let traceback = crate::python::format_exception(py, &err);
                    this.finish(py, |log| Outcome::Aborted {
                        status: log.status,
                        traceback,
                    });
                });
                Poll::Ready(Some(Err(std::io::Error::other(
                    "the app raised while streaming",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none()
            && self.file.is_none()
            && self
                .early
                .as_ref()
                .is_none_or(|b| b.is_empty() || self.head_only)
    }

    fn size_hint(&self) -> SizeHint {
        if self.file.is_some() {
            // The Content-Length header says how much.
            return SizeHint::default();
        }
        match (&self.rest, &self.early) {
            (None, Some(early)) if !self.head_only => SizeHint::with_exact(early.len() as u64),
            (None, _) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for WsgiBody {
    fn drop(&mut self) {
        // The client went away mid-response: close() must still run (PEP 3333).
        if self.rest.is_some() {
            // hyper stops pulling once a declared Content-Length is sent: that is a
            // complete response, not a client that left.
            let complete = self
                .log
                .as_ref()
                .is_some_and(|log| log.content_length.is_some_and(|n| log.bytes >= n));
            Python::attach(|py| {
                self.finish(py, |log| match complete {
                    true => sent(log),
                    false => Outcome::PeerGone {
                        reason: "client closed the connection before the response was complete"
                            .into(),
                    },
                })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(state: &mut ResponseState<Collected>, status: &str) {
        state.head = Some(ResponseHead::new(status, &[]));
    }

    #[test]
    fn collected_keeps_head_and_early_body_and_honours_head_only() {
        let response = ResponseState::new(Collected::default(), false);
        let mut state = lock(&response);
        assert!(
            state.send_body(b"x").is_err(),
            "a body before start_response is an error"
        );
        started(&mut state, "204 No Content");
        state.send_body(b"abc").unwrap();
        state.send_body(b"de").unwrap();
        assert!(state.head_sent);
        assert_eq!(state.body_bytes, 5);
        assert_eq!(state.writer.head.as_ref().unwrap().code, 204);
        assert_eq!(state.writer.early_body, b"abcde");

        let head_only = ResponseState::new(Collected::default(), true);
        let mut state = lock(&head_only);
        started(&mut state, "200 OK");
        state.send_body(b"abc").unwrap();
        assert_eq!(state.body_bytes, 0);
        assert!(state.writer.early_body.is_empty());
    }
}
