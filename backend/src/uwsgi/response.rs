//! How a response goes to nginx over a uwsgi connection (docs/protocol.md): the head
//! and body as the app produces them, delimited for a kept-alive connection.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uwsgi_proto::KeepAlive;

use crate::conn::Conn;
use crate::watchdog::RequestClock;
use crate::wsgi::response::{ResponseHead, ResponseWriter, INTERNAL_ERROR_BODY};

/// Request body left unread by the app that is read and dropped to keep a connection;
/// beyond it, the connection is closed (after a lingering read: see `uwsgi::linger`).
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// How the body of a response on a uwsgi connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Stock uwsgi: the body ends when the connection closes.
    UntilClose,
    /// No body at all: HEAD, 1xx, 204, 304.
    Empty,
    /// `Content-Length`: this many bytes still to send.
    Length(u64),
    /// Chunked transfer encoding.
    Chunked,
}

/// Writes one response to a uwsgi connection.
pub struct UwsgiWriter {
    /// `None` once the request is over (see [`UwsgiWriter::release`]).
    conn: Option<Arc<Conn>>,
    /// The worker's clock and the request thread's index: harakiri may have answered.
    clock: Arc<RequestClock>,
    thread: usize,
    /// HEAD request: the head goes out, the body does not.
    head_only: bool,
    /// What nginx can do with a reused connection (NGX_WSGI_KEEPALIVE).
    keep_alive: KeepAlive,
    /// Decided when the head is committed.
    framing: Framing,
    /// The app's body did not match its Content-Length: the connection cannot be reused.
    framing_broken: bool,
    /// Set by `finish`: the response is complete and delimited.
    reusable: bool,
    /// The request body's bytes not read yet: over [`DRAIN_LIMIT`] when the head goes
    /// out, the connection will not be kept (it is lingered on and closed instead).
    unread_body: Option<Arc<AtomicU64>>,
    /// The size of the head as written (for the request log's `hsize`).
    pub head_len: usize,
}

impl UwsgiWriter {
    pub fn new(
        conn: Arc<Conn>,
        (clock, thread): (Arc<RequestClock>, usize),
        head_only: bool,
        keep_alive: KeepAlive,
        unread_body: Option<Arc<AtomicU64>>,
    ) -> Self {
        UwsgiWriter {
            conn: Some(conn),
            clock,
            thread,
            head_only,
            keep_alive,
            framing: Framing::UntilClose,
            framing_broken: false,
            reusable: false,
            unread_body,
            head_len: 0,
        }
    }

    /// Whether the connection can carry another request after this response.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Lets go of the connection, so the server can take it back for the next request
    /// even if the app keeps `start_response` alive.
    pub fn release(&mut self) {
        self.conn = None;
    }

    fn conn(&self) -> io::Result<&Conn> {
        self.conn
            .as_deref()
            .ok_or_else(|| io::Error::other("the request is over: its connection is gone"))
    }

    /// Decides the framing of the body; returns the header lines the server adds to the
    /// app's for it.
    fn frame(&mut self, head: &ResponseHead) -> &'static [u8] {
        // A body the app left mostly unread ends the connection: say so in the head.
        let keep_alive = match &self.unread_body {
            Some(unread) if unread.load(Ordering::Relaxed) > DRAIN_LIMIT => KeepAlive::Off,
            _ => self.keep_alive,
        };
        self.framing = match (keep_alive, head.content_length()) {
            (KeepAlive::Off, _) => Framing::UntilClose,
            _ if self.head_only || head.has_no_body() => Framing::Empty,
            (_, Some(length)) => Framing::Length(length),
            (KeepAlive::Chunked, None) => Framing::Chunked,
            // A client that cannot read chunks gets the body delimited by closing.
            (KeepAlive::Length, None) => Framing::UntilClose,
        };
        match self.framing {
            Framing::UntilClose => b"",
            Framing::Chunked => b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
            _ => b"Connection: keep-alive\r\n",
        }
    }
}

impl ResponseWriter for UwsgiWriter {
    fn send(&mut self, head: Option<&ResponseHead>, data: &[u8]) -> io::Result<u64> {
        // Written as they are, with the server's lines after the app's, in one writev.
        let head = head.map(|head| {
            let server_lines = self.frame(head);
            (
                head.http1_parts(server_lines),
                head.http1_len() + server_lines.len(),
            )
        });
        let mut size_line = String::new();
        let mut payload = data;
        let mut trailer: &[u8] = b"";
        match &mut self.framing {
            Framing::UntilClose => {}
            Framing::Empty => payload = &[],
            Framing::Length(remaining) => {
                if payload.len() as u64 > *remaining {
                    self.framing_broken = true;
                    payload = &payload[..*remaining as usize];
                }
                *remaining -= payload.len() as u64;
            }
            Framing::Chunked if payload.is_empty() => {}
            Framing::Chunked => {
                size_line = format!("{:x}\r\n", payload.len());
                trailer = b"\r\n";
            }
        }
        if head.is_some() && !self.clock.claim_answer(self.thread) {
            return Err(io::Error::other(
                "harakiri has answered this request already",
            ));
        }
        let [lines, server_lines, end] = head.map_or([&[][..]; 3], |(parts, _)| parts);
        self.conn()?.write_parts(&[
            lines,
            server_lines,
            end,
            size_line.as_bytes(),
            payload,
            trailer,
        ])?;
        if let Some((_, head_len)) = head {
            self.head_len = head_len;
        }
        Ok(payload.len() as u64)
    }

    fn finish(&mut self) -> io::Result<bool> {
        match self.framing {
            Framing::Chunked => self.conn()?.write_all(b"0\r\n\r\n")?,
            Framing::Length(remaining) if remaining > 0 => self.framing_broken = true,
            _ => {}
        }
        self.reusable = self.keep_alive != KeepAlive::Off
            && self.framing != Framing::UntilClose
            && !self.framing_broken;
        Ok(self.reusable)
    }

    fn send_file(&mut self, file: BorrowedFd<'_>, offset: i64) -> io::Result<Option<u64>> {
        // The bytes go out as they are in the file unless they are chunked.
        let limit = match self.framing {
            Framing::UntilClose => None,
            Framing::Length(remaining) => Some(remaining),
            Framing::Empty => return Ok(Some(0)),
            Framing::Chunked => return Ok(None),
        };
        let sent = self.conn()?.sendfile(file, offset, limit)?;
        if let Framing::Length(remaining) = &mut self.framing {
            *remaining -= sent;
        }
        Ok(Some(sent))
    }

    fn finish_may_wait(&self) -> bool {
        // Only a chunked body's last chunk is written; the others end as they are.
        self.framing == Framing::Chunked
    }

    fn send_internal_error(&mut self) {
        let head = ResponseHead::internal_error().to_http1();
        if let Ok(conn) = self.conn() {
            if self.clock.claim_answer(self.thread) {
                let _ = conn.write_parts(&[&head, INTERNAL_ERROR_BODY]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsgi::response::{lock, ResponseState, SharedResponse};

    /// A response state writing to one end of a socket pair, and the other end.
    fn socket_response(
        head_only: bool,
        keep_alive: KeepAlive,
    ) -> (SharedResponse<UwsgiWriter>, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (stop, _) = tokio::sync::watch::channel(false);
        let clock = Arc::new(RequestClock::new(&ngx_wsgi_config::Config::default(), stop));
        let writer = UwsgiWriter::new(
            Arc::new(Conn::Unix(ours)),
            (clock, 0),
            head_only,
            keep_alive,
            None,
        );
        (ResponseState::new(writer, head_only), theirs)
    }

    fn head(status: &str, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead::new(status, headers)
    }

    /// Answers with `status`, `headers` and the body chunks: whether the connection can
    /// be reused, the framing chosen, and what the peer received.
    fn answer(
        keep_alive: KeepAlive,
        head_only: bool,
        (status, headers): (&str, &[(&str, &str)]),
        body: &[&[u8]],
    ) -> (bool, Framing, String) {
        let (response, theirs) = socket_response(head_only, keep_alive);
        let mut state = lock(&response);
        state.head = Some(head(status, headers));
        for chunk in body {
            state.send_body(chunk).unwrap();
        }
        let reusable = state.finish().unwrap();
        let framing = state.writer.framing;
        drop(state);
        (reusable, framing, written(response, theirs))
    }

    fn written(
        response: SharedResponse<UwsgiWriter>,
        mut theirs: std::os::unix::net::UnixStream,
    ) -> String {
        drop(response); // closes our end
        let mut out = String::new();
        std::io::Read::read_to_string(&mut theirs, &mut out).unwrap();
        out
    }

    #[test]
    fn kept_alive_body_without_length_is_chunked() {
        let head = ("200 OK", &[("Content-Type", "text/plain")][..]);
        let (reusable, _, out) = answer(KeepAlive::Chunked, false, head, &[b"abc", b"", b"de"]);
        assert!(reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\
             Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn a_client_without_chunked_gets_an_unframed_body_and_a_close() {
        let (reusable, _, out) = answer(KeepAlive::Length, false, ("200 OK", &[]), &[b"streamed"]);
        assert!(!reusable);
        assert_eq!(out, "HTTP/1.1 200 OK\r\n\r\nstreamed");
    }

    #[test]
    fn kept_alive_body_that_breaks_its_length_ends_the_connection() {
        for (body, sent) in [(&b"abc"[..], "abc"), (&b"abcdefghijkl"[..], "abcdefghij")] {
            let head = ("200 OK", &[("Content-Length", "10")][..]);
            let (reusable, _, out) = answer(KeepAlive::Length, false, head, &[body]);
            assert!(!reusable, "{body:?} is not 10 bytes");
            assert!(out.ends_with(&format!("\r\n\r\n{sent}")));
        }
    }

    #[test]
    fn kept_alive_head_and_204_have_no_body() {
        for (status, head_only) in [
            ("200 OK", true),
            ("204 No Content", false),
            ("304 Not Modified", false),
        ] {
            let head = (status, &[("Content-Length", "5")][..]);
            let (reusable, framing, out) = answer(KeepAlive::Length, head_only, head, &[b"hello"]);
            assert!(reusable);
            assert_eq!(framing, Framing::Empty);
            assert!(out.ends_with("Connection: keep-alive\r\n\r\n"));
        }
    }

    #[test]
    fn without_keep_alive_the_response_is_uwsgis() {
        let (reusable, _, out) = answer(KeepAlive::Off, false, ("200 OK", &[]), &[b"body"]);
        assert!(!reusable);
        assert_eq!(out, "HTTP/1.1 200 OK\r\n\r\nbody");
    }
}
