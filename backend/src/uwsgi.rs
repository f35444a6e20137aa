//! Serving one uwsgi-protocol connection: nginx's `uwsgi_pass` (and our module) speak it.
//!
//! The request head is read asynchronously, so slow or idle peers cost no thread. Once
//! the vars are in, the request runs to completion on this thread with the socket in
//! blocking mode, as a uWSGI worker does: the app reads its body and writes its response
//! with plain system calls, and the GIL is released around each of them.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use pyo3::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uwsgi_proto::{HeaderError, PacketHeader, HEADER_LEN};

use crate::conn::{Conn, ConnReader};
use crate::worker::WorkerContext;
use crate::wsgi::input::{Body, WsgiInput};
use crate::wsgi::response::{ResponseState, Sink};
use crate::wsgi::{EnvironSource, Outcome};

/// A connection accepted on a uwsgi listener, still owned by tokio.
pub enum AsyncConn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncConn {
    fn into_blocking(self) -> std::io::Result<Conn> {
        let conn = match self {
            AsyncConn::Unix(s) => Conn::Unix(s.into_std()?),
            AsyncConn::Tcp(s) => Conn::Tcp(s.into_std()?),
        };
        match &conn {
            Conn::Unix(s) => s.set_nonblocking(false)?,
            Conn::Tcp(s) => s.set_nonblocking(false)?,
        }
        Ok(conn)
    }
}

/// Reads exactly `buf.len()` bytes; returns how many arrived before the peer closed.
async fn read_full(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Answers a request we will not serve with an HTTP error saying why: nginx passes it to
/// the client (a 431 instead of uWSGI's 502), and a browser pointed at the socket reads
/// the reason. Then the rest of the input is drained briefly, so closing does not reset
/// the connection and destroy the answer.
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
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// The request head: vars block and whatever body bytes arrived with it.
struct RequestHead {
    vars: Vec<u8>,
    content_length: u64,
}

async fn read_head(
    conn: &mut AsyncConn,
    buffer_size: usize,
) -> anyhow::Result<Option<RequestHead>> {
    let mut header = [0u8; HEADER_LEN];
    let got = match conn {
        AsyncConn::Unix(s) => read_full(s, &mut header).await,
        AsyncConn::Tcp(s) => read_full(s, &mut header).await,
    }
    .context("reading the uwsgi header")?;
    match got {
        0 => return Ok(None), // connected and closed: a health check, not an error
        HEADER_LEN => {}
        n => anyhow::bail!("connection closed after {n} of the 4 bytes of the uwsgi header"),
    }
    let header = PacketHeader::parse(header);
    if let Err(err) = header.validate(buffer_size) {
        let status = match err {
            HeaderError::TooLarge { .. } => "431 Request Header Fields Too Large",
            _ => "400 Bad Request",
        };
        reject(conn, status, &err.to_string()).await;
        return Err(err.into());
    }
    let mut vars = vec![0u8; usize::from(header.datasize)];
    let got = match conn {
        AsyncConn::Unix(s) => read_full(s, &mut vars).await,
        AsyncConn::Tcp(s) => read_full(s, &mut vars).await,
    }
    .context("reading the uwsgi vars")?;
    if got < vars.len() {
        anyhow::bail!(
            "connection closed after {got} of the {} bytes of the uwsgi vars block",
            vars.len()
        );
    }
    let mut content_length = 0;
    for pair in uwsgi_proto::parse_vars(&vars) {
        let (key, value) = pair?;
        if key == b"CONTENT_LENGTH" && !value.is_empty() {
            content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .with_context(|| {
                    format!(
                        "CONTENT_LENGTH \"{}\" is not a number",
                        String::from_utf8_lossy(value)
                    )
                })?;
        }
    }
    Ok(Some(RequestHead {
        vars,
        content_length,
    }))
}

/// Serves one uwsgi connection: one request, then close (as uWSGI and stock nginx expect).
pub async fn serve(mut conn: AsyncConn, peer: String, ctx: Arc<WorkerContext>) {
    let head = match read_head(&mut conn, ctx.buffer_size).await {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(err) => {
            tracing::error!("{peer}: {err:#}; connection closed");
            return;
        }
    };
    // One request at a time per thread: a response still streaming on this thread (HTTP)
    // finishes before another app call starts here.
    let _slot = ctx.app_slot().await;
    let conn = match conn.into_blocking() {
        Ok(conn) => Arc::new(conn),
        Err(err) => {
            tracing::error!("{peer}: cannot switch the connection to blocking mode: {err}");
            return;
        }
    };
    let started = Instant::now();
    let outcome = Python::attach(|py| {
        let body = Body::new(
            Vec::new(),
            Box::new(ConnReader(conn.clone())),
            head.content_length,
        );
        let source = EnvironSource::Uwsgi { vars: &head.vars };
        let environ = match ctx.app.environ(py, &source, WsgiInput::new(body)) {
            Ok(environ) => environ,
            Err(err) => {
                return Outcome::AppFailed {
                    traceback: crate::python::format_exception(py, &err),
                }
            }
        };
        let method = environ
            .get_item("REQUEST_METHOD")
            .ok()
            .flatten()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let uri = environ
            .get_item("REQUEST_URI")
            .ok()
            .flatten()
            .or_else(|| environ.get_item("PATH_INFO").ok().flatten())
            .map(|u| u.to_string())
            .unwrap_or_default();
        // nginx passes the client's address; the log names it with the socket it came through.
        let client = match environ.get_item("REMOTE_ADDR").ok().flatten() {
            Some(addr) => format!("{addr} via {peer}"),
            None => peer.clone(),
        };
        let response = ResponseState::new(Sink::Socket(conn.clone()), method == "HEAD");
        let outcome = ctx.app.respond_on_socket(py, environ, &response, &conn);
        ctx.log_request(&client, &method, &uri, &outcome, started);
        outcome
    });
    if matches!(outcome, Outcome::Aborted { .. } | Outcome::PeerGone { .. }) {
        conn.shutdown();
    }
}
