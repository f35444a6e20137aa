//! `start_response`, `write()` and the response head they build (PEP 3333).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::conn::Conn;

/// A validated status and header list.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub code: u16,
    /// The status as the app gave it, e.g. `"200 OK"`.
    pub status: String,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The head as an HTTP/1.1 response, as uWSGI writes it to nginx.
    pub fn to_http1(&self) -> Vec<u8> {
        self.to_http1_with(&[])
    }

    /// The head with headers of the server's own after the app's.
    pub fn to_http1_with(&self, server_headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.headers.len() * 40);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_latin1(&mut out, &self.status);
        out.extend_from_slice(b"\r\n");
        let server = server_headers.iter().map(|(n, v)| (*n, *v));
        for (name, value) in self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(server)
        {
            push_latin1(&mut out, name);
            out.extend_from_slice(b": ");
            push_latin1(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The Content-Length the app declared, if it is a number.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
    }

    /// Responses that never have a body, whatever the app yields.
    fn has_no_body(&self) -> bool {
        self.code < 200 || self.code == 204 || self.code == 304
    }

    pub fn internal_error() -> ResponseHead {
        ResponseHead {
            code: 500,
            status: "500 Internal Server Error".into(),
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("Content-Length".into(), "21".into()),
            ],
        }
    }
}

pub const INTERNAL_ERROR_BODY: &[u8] = b"Internal Server Error";

/// Native strings are latin-1 (checked in `start_response`), so each char is one byte.
fn push_latin1(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        // Nearly every header: the bytes are the chars.
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(text.chars().map(|c| c as u8));
    }
}

/// Where the response goes once its head is committed.
pub enum Sink {
    /// Written straight to the connection (uwsgi protocol).
    Socket(Arc<Conn>),
    /// Kept for an HTTP library to send: the head, and what `write()` produced.
    Collect {
        head: Option<ResponseHead>,
        early_body: Vec<u8>,
    },
}

/// How the body of a response on a uwsgi connection ends (docs/protocol.md).
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

pub use uwsgi_proto::KeepAlive;

/// The state `start_response` and `write()` share with the server for one request.
pub struct ResponseState {
    pub head: Option<ResponseHead>,
    pub head_sent: bool,
    /// HEAD request: the head is sent, the body is not.
    pub head_only: bool,
    pub body_bytes: u64,
    /// The size of the head as written (for the request log's `hsize`).
    pub head_len: usize,
    pub sink: Sink,
    /// What the client can do with a reused connection (NGX_WSGI_KEEPALIVE).
    keep_alive: KeepAlive,
    /// Decided when the head is committed.
    pub framing: Framing,
    /// The app's body did not match its Content-Length: the connection cannot be reused.
    framing_broken: bool,
    /// Set by [`ResponseState::finish`]: the response is complete and delimited.
    reusable: bool,
    /// The request body's bytes not read yet: over [`DRAIN_LIMIT`] when the head goes
    /// out, the connection will not be kept (it is lingered on and closed instead).
    unread_body: Option<Arc<AtomicU64>>,
}

/// Request body left unread by the app that is read and dropped to keep a connection;
/// beyond it, the connection is closed (after a lingering read: see `uwsgi::linger`).
pub const DRAIN_LIMIT: u64 = 1 << 20;

pub type SharedResponse = Arc<Mutex<ResponseState>>;

impl ResponseState {
    pub fn new(sink: Sink, head_only: bool) -> SharedResponse {
        Self::with_keep_alive(sink, head_only, KeepAlive::Off)
    }

    pub fn with_keep_alive(sink: Sink, head_only: bool, keep_alive: KeepAlive) -> SharedResponse {
        Arc::new(Mutex::new(ResponseState {
            head: None,
            head_sent: false,
            head_only,
            body_bytes: 0,
            head_len: 0,
            sink,
            keep_alive,
            framing: Framing::UntilClose,
            framing_broken: false,
            reusable: false,
            unread_body: None,
        }))
    }

    /// Watches the request body's unread bytes (see `unread_body`).
    pub fn watch_body(&mut self, unread: Arc<AtomicU64>) {
        self.unread_body = Some(unread);
    }

    /// The head's bytes for a uwsgi connection; decides the framing of the body.
    fn head_bytes(&mut self) -> io::Result<Vec<u8>> {
        let head = self.head.as_ref().ok_or_else(|| {
            io::Error::other("the app returned a body without calling start_response")
        })?;
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
        if self.framing == Framing::UntilClose {
            return Ok(head.to_http1());
        }
        Ok(match self.framing {
            Framing::Chunked => head.to_http1_with(&[
                ("Connection", "keep-alive"),
                ("Transfer-Encoding", "chunked"),
            ]),
            _ => head.to_http1_with(&[("Connection", "keep-alive")]),
        })
    }

    /// Commits the head: after this, status and headers cannot change.
    pub fn send_head(&mut self) -> io::Result<()> {
        self.send_body(b"")
    }

    /// Sends body bytes, committing the head first (in the same system call).
    pub fn send_body(&mut self, data: &[u8]) -> io::Result<()> {
        let data = if self.head_only { &[][..] } else { data };
        if let Sink::Collect {
            head: slot,
            early_body,
        } = &mut self.sink
        {
            if !self.head_sent {
                let head = self.head.as_ref().ok_or_else(|| {
                    io::Error::other("the app returned a body without calling start_response")
                })?;
                *slot = Some(head.clone());
                self.head_sent = true;
            }
            early_body.extend_from_slice(data);
            self.body_bytes += data.len() as u64;
            return Ok(());
        }
        let head = if self.head_sent {
            Vec::new()
        } else {
            self.head_bytes()?
        };
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
        if let Sink::Socket(conn) = &self.sink {
            if !head.is_empty() && !crate::watchdog::claim_answer() {
                return Err(io::Error::other(
                    "harakiri has answered this request already",
                ));
            }
            conn.write_parts(&[&head, size_line.as_bytes(), payload, trailer])?;
        }
        if !head.is_empty() {
            self.head_len = head.len();
        }
        self.head_sent = true;
        self.body_bytes += payload.len() as u64;
        Ok(())
    }

    /// Ends the body (the last chunk) and tells whether the connection can be reused.
    pub fn finish(&mut self) -> io::Result<bool> {
        self.send_head()?;
        match self.framing {
            Framing::Chunked => {
                if let Sink::Socket(conn) = &self.sink {
                    conn.write_all(b"0\r\n\r\n")?;
                }
            }
            Framing::Length(remaining) if remaining > 0 => self.framing_broken = true,
            _ => {}
        }
        self.reusable = self.keep_alive != KeepAlive::Off
            && self.framing != Framing::UntilClose
            && !self.framing_broken;
        Ok(self.reusable)
    }

    /// Whether the connection can carry another request after this response.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Lets go of the connection, so the server can take it back for the next request
    /// even if the app keeps `start_response` alive.
    pub fn release_connection(&mut self) {
        self.sink = Sink::Collect {
            head: None,
            early_body: Vec::new(),
        };
    }
}

pub fn lock(response: &SharedResponse) -> MutexGuard<'_, ResponseState> {
    // A panic while holding this lock cannot leave it half-updated in a way we care
    // about more than serving the error: take the state as it is.
    response
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `start_response` callable passed to the app.
#[pyclass(module = "ngx_wsgi")]
pub struct StartResponse {
    response: SharedResponse,
    /// `add-header`: appended to the app's headers.
    added_headers: Arc<[(String, String)]>,
}

impl StartResponse {
    pub fn new(response: SharedResponse, added_headers: Arc<[(String, String)]>) -> Self {
        StartResponse {
            response,
            added_headers,
        }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|info| !info.is_none());
        {
            let this = slf.borrow();
            let mut state = lock(&this.response);
            match exc_info {
                // PEP 3333: too late to change the response, re-raise the app's error.
                Some(info) if state.head_sent => {
                    let value = info.cast::<PyTuple>()?.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if state.head.is_some() => {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                _ => {}
            }
            let mut head = validate_head(status, headers)?;
            head.headers.extend(this.added_headers.iter().cloned());
            state.head = Some(head);
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// The `write(data)` callable start_response returns (for legacy apps).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data: Vec<u8> = match data.cast::<pyo3::types::PyBytes>() {
            Ok(bytes) => bytes.as_bytes().to_vec(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "write() takes bytes, not {}",
                    data.get_type().name()?
                )))
            }
        };
        let response = self.response.clone();
        py.detach(move || lock(&response).send_body(&data))
            .map_err(|err| PyOSError::new_err(format!("write() failed: {err}")))
    }
}

/// Checks status and headers as PEP 3333 requires of the app.
fn validate_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
    let status: String = native_string(status, "status")?;
    let code = status
        .get(..3)
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u16>().ok())
        .filter(|code| *code >= 100 && (status.len() == 3 || status.as_bytes()[3] == b' '))
        .ok_or_else(|| PyValueError::new_err(format!("status {status:?} is not \"NNN Reason\"")))?;
    check_no_control(&status, "status")?;
    let list = headers.cast::<pyo3::types::PyList>().map_err(|_| {
        PyTypeError::new_err("response headers must be a list of (name, value) tuples")
    })?;
    let mut parsed = Vec::with_capacity(list.len());
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "response header {item} is not a (name, value) tuple"
                ))
            })?;
        let name = native_string(&pair.get_item(0)?, "header name")?;
        let value = native_string(&pair.get_item(1)?, "header value")?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(PyValueError::new_err(format!(
                "invalid response header name {name:?}"
            )));
        }
        check_no_control(&value, "header value")?;
        parsed.push((name, value));
    }
    Ok(ResponseHead {
        code,
        status,
        headers: parsed,
    })
}

fn native_string(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    let text = value
        .cast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} must be str, not {}",
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?
        .to_str()?
        .to_string();
    if text.chars().any(|c| c as u32 > 0xFF) {
        return Err(PyValueError::new_err(format!(
            "{what} {text:?} is not latin-1"
        )));
    }
    Ok(text)
}

fn check_no_control(text: &str, what: &str) -> PyResult<()> {
    if text.contains(['\r', '\n', '\0']) {
        return Err(PyValueError::new_err(format!(
            "{what} {text:?} contains a line break"
        )));
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_serializes_as_http11_in_latin1() {
        let head = ResponseHead {
            code: 200,
            status: "200 OK".into(),
            headers: vec![("X-Name".into(), "caf\u{e9}".into())],
        };
        assert_eq!(
            head.to_http1(),
            b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\n\r\n"
        );
    }

    /// A response state writing to one end of a socket pair, and the other end.
    fn socket_response(
        head_only: bool,
        keep_alive: KeepAlive,
    ) -> (SharedResponse, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let sink = Sink::Socket(Arc::new(Conn::Unix(ours)));
        (
            ResponseState::with_keep_alive(sink, head_only, keep_alive),
            theirs,
        )
    }

    fn head(status: &str, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            code: status[..3].parse().unwrap(),
            status: status.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn written(response: SharedResponse, mut theirs: std::os::unix::net::UnixStream) -> String {
        drop(response); // closes our end
        let mut out = String::new();
        std::io::Read::read_to_string(&mut theirs, &mut out).unwrap();
        out
    }

    #[test]
    fn kept_alive_body_without_length_is_chunked() {
        let (response, theirs) = socket_response(false, KeepAlive::Chunked);
        let mut state = lock(&response);
        state.head = Some(head("200 OK", &[("Content-Type", "text/plain")]));
        state.send_body(b"abc").unwrap();
        state.send_body(b"").unwrap();
        state.send_body(b"de").unwrap();
        assert!(state.finish().unwrap());
        drop(state);
        assert_eq!(
            written(response, theirs),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\
             Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn a_client_without_chunked_gets_an_unframed_body_and_a_close() {
        let (response, theirs) = socket_response(false, KeepAlive::Length);
        let mut state = lock(&response);
        state.head = Some(head("200 OK", &[]));
        state.send_body(b"streamed").unwrap();
        assert!(!state.finish().unwrap());
        drop(state);
        assert_eq!(written(response, theirs), "HTTP/1.1 200 OK\r\n\r\nstreamed");
    }

    #[test]
    fn kept_alive_body_that_breaks_its_length_ends_the_connection() {
        for (body, sent) in [(&b"abc"[..], "abc"), (&b"abcdefghijkl"[..], "abcdefghij")] {
            let (response, theirs) = socket_response(false, KeepAlive::Length);
            let mut state = lock(&response);
            state.head = Some(head("200 OK", &[("Content-Length", "10")]));
            state.send_body(body).unwrap();
            assert!(!state.finish().unwrap(), "{body:?} is not 10 bytes");
            drop(state);
            assert!(written(response, theirs).ends_with(&format!("\r\n\r\n{sent}")));
        }
    }

    #[test]
    fn kept_alive_head_and_204_have_no_body() {
        for (status, head_only) in [
            ("200 OK", true),
            ("204 No Content", false),
            ("304 Not Modified", false),
        ] {
            let (response, theirs) = socket_response(head_only, KeepAlive::Length);
            let mut state = lock(&response);
            state.head = Some(head(status, &[("Content-Length", "5")]));
            state.send_body(b"hello").unwrap();
            assert!(state.finish().unwrap());
            assert_eq!(state.framing, Framing::Empty);
            drop(state);
            assert!(written(response, theirs).ends_with("Connection: keep-alive\r\n\r\n"));
        }
    }

    #[test]
    fn without_keep_alive_the_response_is_uwsgis() {
        let (response, theirs) = socket_response(false, KeepAlive::Off);
        let mut state = lock(&response);
        state.head = Some(head("200 OK", &[]));
        state.send_body(b"body").unwrap();
        assert!(!state.finish().unwrap());
        drop(state);
        assert_eq!(written(response, theirs), "HTTP/1.1 200 OK\r\n\r\nbody");
    }

    #[test]
    fn internal_error_length_matches_its_body() {
        let head = ResponseHead::internal_error();
        let length = &head
            .headers
            .iter()
            .find(|(n, _)| n == "Content-Length")
            .unwrap()
            .1;
        assert_eq!(length.parse::<usize>().unwrap(), INTERNAL_ERROR_BODY.len());
    }

    #[test]
    fn collect_sink_keeps_head_and_early_body_and_honours_head_only() {
        let response = ResponseState::new(
            Sink::Collect {
                head: None,
                early_body: Vec::new(),
            },
            false,
        );
        let mut state = lock(&response);
        assert!(
            state.send_body(b"x").is_err(),
            "a body before start_response is an error"
        );
        state.head = Some(ResponseHead {
            code: 204,
            status: "204 No Content".into(),
            headers: vec![],
        });
        state.send_body(b"abc").unwrap();
        assert!(state.head_sent);
        assert_eq!(state.body_bytes, 3);
        match &state.sink {
            Sink::Collect { head, early_body } => {
                assert_eq!(head.as_ref().unwrap().code, 204);
                assert_eq!(early_body, b"abc");
            }
            Sink::Socket(_) => unreachable!(),
        }
        let head_only = ResponseState::new(
            Sink::Collect {
                head: None,
                early_body: Vec::new(),
            },
            true,
        );
        let mut state = lock(&head_only);
        state.head = Some(ResponseHead {
            code: 200,
            status: "200 OK".into(),
            headers: vec![],
        });
        state.send_body(b"abc").unwrap();
        assert_eq!(state.body_bytes, 0);
    }
}
