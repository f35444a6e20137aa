//! Serving uwsgi-protocol connections: nginx's `uwsgi_pass` (and our module) speak it.
//!
//! The fast path is uWSGI's: accept, one `recv`, run the app, write, close, with no
//! event-loop bookkeeping in between. Accepted sockets are not registered with the
//! runtime; if the whole request head is already there (nginx sends it right after
//! connecting), the request runs at once on this thread with the socket in blocking mode,
//! the GIL released around each read, write and sendfile. Only a peer whose head is not
//! all there yet is handed to the runtime, so slow peers cost no thread.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recv, MsgFlags};
use pyo3::prelude::*;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use uwsgi_proto::{parse_request_head, HeadError, HeaderError, RequestHead, HEADER_LEN};

use crate::conn::{AsyncConn, Conn, ConnReader};
use crate::worker::{InFlight, WorkerContext};
use crate::wsgi::input::{Body, WsgiInput};
use crate::wsgi::response::{ResponseState, Sink};
use crate::wsgi::{EnvironSource, Outcome};

/// A listening uwsgi socket, already in non-blocking mode.
pub enum UwsgiListener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl AsRawFd for UwsgiListener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UwsgiListener::Unix(l) => l.as_raw_fd(),
            UwsgiListener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl UwsgiListener {
    /// Accepts one connection: a blocking socket (Linux does not pass O_NONBLOCK on) and
    /// a name for its peer in log lines.
    fn accept(&self, name: &str) -> io::Result<(Conn, String)> {
        match self {
            UwsgiListener::Unix(l) => l
                .accept()
                .map(|(s, _)| (Conn::Unix(s), format!("unix:{name}"))),
            UwsgiListener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nodelay(true)?;
                Ok((Conn::Tcp(s), addr.to_string()))
            }
        }
    }
}

/// Accepts and serves uwsgi connections until the worker stops.
pub async fn accept_loop(
    listener: UwsgiListener,
    name: String,
    ctx: Arc<WorkerContext>,
    mut stop_rx: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<()> {
    // SAFETY: the AsyncFd owns the listener, so the descriptor stays open and the same for
    // as long as it is registered.
    let listener =
        unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
    loop {
        let mut ready = tokio::select! {
            biased;
            _ = crate::worker::stopped(&mut stop_rx) => return Ok(()),
            ready = listener.readable() => ready?,
        };
        match ready.try_io(|l| l.get_ref().accept(&name)) {
            Ok(Ok((conn, peer))) => {
                let guard = in_flight.enter();
                // Taken before reading: the request then runs without yielding.
                let slot = ctx.app_slot().await;
                if let Some((conn, received)) = serve_if_complete(&ctx, conn, &peer) {
                    drop(slot);
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        serve_when_complete(conn, received, peer, ctx).await;
                        drop(guard);
                    });
                }
            }
            Ok(Err(err)) => {
                // EMFILE and friends: say so and keep serving the connections we have.
                tracing::error!("accept() on \"{name}\" failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_would_block) => {}
        }
    }
}

thread_local! {
    /// Receive buffer of the fast path: one per request thread, reused by every request.
    static RECV_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fast path: serves the request now if its whole head has arrived. Otherwise returns
/// the connection and what was received, for [`serve_when_complete`].
fn serve_if_complete(ctx: &WorkerContext, conn: Conn, peer: &str) -> Option<(Conn, Vec<u8>)> {
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
            Ok(Some(head)) => {
                run_request(ctx, conn, peer, &buf[..received], &head);
                None
            }
            // Not all there yet, or refused: the async path waits, or answers and drains.
            Ok(None) | Err(_) => Some((conn, buf[..received].to_vec())),
        }
    })
}

/// The slow path: waits for the rest of the head without holding the thread.
async fn serve_when_complete(
    conn: Conn,
    mut received: Vec<u8>,
    peer: String,
    ctx: Arc<WorkerContext>,
) {
    let mut stream = match AsyncConn::from_blocking(conn) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!("{peer}: cannot register the connection: {err}; connection closed");
            return;
        }
    };
    let head = loop {
        match parse_request_head(&received, ctx.buffer_size) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(err) => {
                if let HeadError::Header(header) = &err {
                    let status = match header {
                        HeaderError::TooLarge { .. } => "431 Request Header Fields Too Large",
                        _ => "400 Bad Request",
                    };
                    reject(&mut stream, status, &err.to_string()).await;
                }
                tracing::error!("{peer}: {err}; connection closed");
                return;
            }
        }
        let read = tokio::time::timeout(head_timeout(), stream.read_buf(&mut received));
        let Ok(read) = read.await else {
            tracing::error!(
                "{peer}: no complete uwsgi request head after {} s ({}); connection closed",
                head_timeout().as_secs_f32(),
                truncation(&received).replace("connection closed after", "received")
            );
            return;
        };
        match read {
            Ok(0) => {
                tracing::error!("{peer}: {}; connection closed", truncation(&received));
                return;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(
                    "{peer}: reading the uwsgi request failed: {err}; connection closed"
                );
                return;
            }
        }
    };
    let _slot = ctx.app_slot().await;
    match stream.into_blocking() {
        Ok(conn) => run_request(&ctx, conn, &peer, &received, &head),
        Err(err) => tracing::error!("{peer}: cannot switch the connection to blocking mode: {err}"),
    }
}

/// How long a peer may take to send its request head once connected. nginx sends it at
/// once; a peer that does not is stuck or hostile, and would hold up a graceful stop.
/// `NGX_WSGI_HEAD_TIMEOUT` (seconds) overrides the default of 30 s.
fn head_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("NGX_WSGI_HEAD_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<f32>().ok())
            .map_or(Duration::from_secs(30), Duration::from_secs_f32)
    })
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

/// The value of one var of a (validated) vars block.
fn var<'a>(vars: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    uwsgi_proto::parse_vars(vars)
        .flatten()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Runs one request whose head is at the start of `received`, then closes the connection
/// (one request per connection, as uWSGI and stock nginx expect).
fn run_request(ctx: &WorkerContext, conn: Conn, peer: &str, received: &[u8], head: &RequestHead) {
    let started = Instant::now();
    let conn = Arc::new(conn);
    let vars = &received[head.vars.clone()];
    let body_start = head.vars.end;
    let body_end = received
        .len()
        .min(body_start.saturating_add(head.content_length as usize));
    let method = var(vars, b"REQUEST_METHOD").unwrap_or_default();
    let outcome = Python::attach(|py| {
        let prefix = received[body_start..body_end].to_vec();
        let body = Body::new(
            prefix,
            Box::new(ConnReader(conn.clone())),
            head.content_length,
        );
        let source = EnvironSource::Uwsgi { vars };
        let environ = match ctx.app.environ(py, &source, WsgiInput::new(body)) {
            Ok(environ) => environ,
            Err(err) => {
                return Outcome::AppFailed {
                    traceback: crate::python::format_exception(py, &err),
                }
            }
        };
        let response = ResponseState::new(Sink::Socket(conn.clone()), method == b"HEAD");
        ctx.app.respond_on_socket(py, environ, &response, &conn)
    });
    // The log line's strings are made only when it is written (not per request with
    // --disable-logging). nginx passes the client's address: the line names it with the
    // socket it came through.
    if ctx.should_log(&outcome) {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let uri = var(vars, b"REQUEST_URI")
            .or_else(|| var(vars, b"PATH_INFO"))
            .unwrap_or_default();
        let client = match var(vars, b"REMOTE_ADDR") {
            Some(addr) => format!("{} via {peer}", text(addr)),
            None => peer.to_string(),
        };
        ctx.log_request(&client, &text(method), &text(uri), &outcome, started);
    }
    if matches!(outcome, Outcome::Aborted { .. } | Outcome::PeerGone { .. }) {
        conn.shutdown();
    }
}

/// Answers a request we will not serve with an HTTP error saying why: nginx passes it
/// to the client (a 431 instead of uWSGI's 502), and a browser pointed at the socket
/// reads the reason. The rest of the input is then drained briefly, so closing does
/// not reset the connection and destroy the answer.
async fn reject(conn: &mut AsyncConn, status: &str, reason: &str) {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match conn {
        AsyncConn::Unix(s) => answer_and_drain(s, response.as_bytes()).await,
        AsyncConn::Tcp(s) => answer_and_drain(s, response.as_bytes()).await,
    }
}

async fn answer_and_drain(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), response: &[u8]) {
    const DRAIN_LIMIT: usize = 1 << 20;
    if stream.write_all(response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
