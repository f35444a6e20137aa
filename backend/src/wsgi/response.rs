//! `start_response`, `write()` and the response head they build (PEP 3333).

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// A validated status and header list, kept as the HTTP/1.1 lines they become: the status
/// line and one line per header, each ending in CRLF, in latin-1 (PEP 3333's native
/// strings), written once as `start_response` checks them.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub code: u16,
    lines: Vec<u8>,
    /// Where the reason phrase ends in `lines` (before the status line's CRLF).
    reason_end: usize,
    pub header_count: usize,
    /// The Content-Length the app declared, if it is a number.
    content_length: Option<u64>,
    /// Whether the app declared one (a number or not): only the first counts.
    has_content_length: bool,
}

impl ResponseHead {
    /// A head with status `status` (`"200 OK"`, checked by the caller) and no headers.
    fn with_status(code: u16, status: &str) -> ResponseHead {
        let mut lines = Vec::with_capacity(256);
        lines.extend_from_slice(b"HTTP/1.1 ");
        push_latin1(&mut lines, status);
        let reason_end = lines.len();
        lines.extend_from_slice(b"\r\n");
        ResponseHead {
            code,
            lines,
            reason_end,
            header_count: 0,
            content_length: None,
            has_content_length: false,
        }
    }

    /// A head built by the server itself (its own answers, tests).
    pub fn new(status: &str, headers: &[(&str, &str)]) -> ResponseHead {
        let code = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(500);
        let mut head = ResponseHead::with_status(code, status);
        for (name, value) in headers {
            head.push_header(name, value);
        }
        head
    }

    /// Adds a header line (checked by the caller).
    pub fn push_header(&mut self, name: &str, value: &str) {
        // The first Content-Length counts, as before (HTTP clients read the first too).
        if !self.has_content_length && name.eq_ignore_ascii_case("content-length") {
            self.has_content_length = true;
            self.content_length = value.trim().parse().ok();
        }
        push_latin1(&mut self.lines, name);
        self.lines.extend_from_slice(b": ");
        push_latin1(&mut self.lines, value);
        self.lines.extend_from_slice(b"\r\n");
        self.header_count += 1;
    }

    /// The head as an HTTP/1.1 response, as uWSGI writes it to nginx.
    pub fn to_http1(&self) -> Vec<u8> {
        self.http1_parts(b"").concat()
    }

    /// The head as an HTTP/1.1 response in parts to write as they are: the app's lines,
    /// `server_lines` (header lines of the server's own, each ending in CRLF), the
    /// blank line.
    pub fn http1_parts<'a>(&'a self, server_lines: &'a [u8]) -> [&'a [u8]; 3] {
        [&self.lines, server_lines, b"\r\n"]
    }

    /// The size of [`ResponseHead::to_http1`]'s bytes.
    pub fn http1_len(&self) -> usize {
        self.lines.len() + 2
    }

    /// The reason phrase, in latin-1 (may be empty).
    pub fn reason(&self) -> &[u8] {
        const REASON_START: usize = "HTTP/1.1 200 ".len();
        self.lines
            .get(REASON_START..self.reason_end)
            .unwrap_or_default()
    }

    /// Each header's name and value, in latin-1, in the app's order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let after_status = self.reason_end + 2;
        self.lines[after_status..]
            .split(|b| *b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|b| *b == b':')?;
                Some((&line[..colon], &line[colon + 2..]))
            })
    }

    /// The Content-Length the app declared, if it is a number.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Responses that never have a body, whatever the app yields.
    pub fn has_no_body(&self) -> bool {
        self.code < 200 || self.code == 204 || self.code == 304
    }

    pub fn internal_error() -> ResponseHead {
        ResponseHead::new(
            "500 Internal Server Error",
            &[("Content-Type", "text/plain"), ("Content-Length", "21")],
        )
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

/// Where a response goes once the app commits its head. Each protocol frames its own
/// responses: `uwsgi::response` writes them to nginx's connection as the app produces
/// them, `http` collects the head and first bytes for hyper to send.
pub trait ResponseWriter: Send {
    /// Sends body bytes, after the head when `head` is given: the first call commits it,
    /// in the same write as the first bytes. Returns how many body bytes went out.
    fn send(&mut self, head: Option<&ResponseHead>, data: &[u8]) -> io::Result<u64>;

    /// Ends the body (after the head went out); whether the connection can carry
    /// another request.
    fn finish(&mut self) -> io::Result<bool>;

    /// Sends the rest of `file` from `offset` as the body, where this protocol sends a
    /// file's bytes as they are (sendfile(2)): the bytes sent, or `None` when the body
    /// must be iterated instead. Called after the head went out.
    fn send_file(&mut self, _file: BorrowedFd<'_>, _offset: i64) -> io::Result<Option<u64>> {
        Ok(None)
    }

    /// The app failed before committing a head: answer 500 where this protocol answers
    /// here (best effort: the peer may be gone too).
    fn send_internal_error(&mut self) {}

    /// Whether `send` writes to the peer, where it may wait (a socket write does): the
    /// request thread releases the GIL around it then, without even trying the response's
    /// lock first. A writer that keeps the bytes in memory says no.
    fn sends_to_peer() -> bool
    where
        Self: Sized,
    {
        true
    }

    /// Whether `finish` may wait for the peer (it writes a last chunk, say): by default,
    /// when `send` does.
    fn finish_may_wait(&self) -> bool
    where
        Self: Sized,
    {
        Self::sends_to_peer()
    }
}

/// The state `start_response` and `write()` share with the server for one request.
/// `W` is the protocol's writer; `start_response` sees it as `dyn ResponseWriter`.
pub struct ResponseState<W: ?Sized + ResponseWriter> {
    pub head: Option<ResponseHead>,
    pub head_sent: bool,
    /// HEAD request: the head is sent, the body is not.
    pub head_only: bool,
    pub body_bytes: u64,
    /// Last, so that a `SharedResponse<UwsgiWriter>` is also a `SharedResponse`.
    pub writer: W,
}

pub type SharedResponse<W = dyn ResponseWriter> = Arc<Mutex<ResponseState<W>>>;

impl<W: ResponseWriter> ResponseState<W> {
    pub fn new(writer: W, head_only: bool) -> SharedResponse<W> {
        Arc::new(Mutex::new(ResponseState {
            head: None,
            head_sent: false,
            head_only,
            body_bytes: 0,
            writer,
        }))
    }

    /// Whether [`ResponseState::finish`] may wait for the peer: when it commits the head
    /// or the writer writes something to end the body.
    pub fn finish_may_wait(&self) -> bool {
        (!self.head_sent && W::sends_to_peer()) || self.writer.finish_may_wait()
    }
}

impl<W: ?Sized + ResponseWriter> ResponseState<W> {
    /// Commits the head: after this, status and headers cannot change.
    pub fn send_head(&mut self) -> io::Result<()> {
        self.send_body(b"")
    }

    /// Sends body bytes, committing the head first (in the same system call).
    pub fn send_body(&mut self, data: &[u8]) -> io::Result<()> {
        let data = if self.head_only { &[][..] } else { data };
        let head = self.head.as_ref().ok_or_else(|| {
            io::Error::other("the app returned a body without calling start_response")
        })?;
        let sent = self.writer.send((!self.head_sent).then_some(head), data)?;
        self.head_sent = true;
        self.body_bytes += sent;
        Ok(())
    }

    /// Sends the rest of a file as the body where the protocol can (see
    /// [`ResponseWriter::send_file`]); false when the body must be iterated instead.
    pub fn send_file(&mut self, file: BorrowedFd<'_>, offset: i64) -> io::Result<bool> {
        self.send_head()?;
        let sent = self.writer.send_file(file, offset)?;
        self.body_bytes += sent.unwrap_or(0);
        Ok(sent.is_some())
    }

    /// Ends the body, committing an empty one's head; whether the connection can be reused.
    pub fn finish(&mut self) -> io::Result<bool> {
        self.send_head()?;
        self.writer.finish()
    }
}

pub fn lock<W: ?Sized + ResponseWriter>(
    response: &SharedResponse<W>,
) -> MutexGuard<'_, ResponseState<W>> {
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
            for (name, value) in this.added_headers.iter() {
                head.push_header(name, value);
            }
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
    let status = native_str(status, "status")?;
    let code = status
        .get(..3)
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u16>().ok())
        .filter(|code| *code >= 100 && (status.len() == 3 || status.as_bytes()[3] == b' '))
        .ok_or_else(|| PyValueError::new_err(format!("status {status:?} is not \"NNN Reason\"")))?;
    check_no_control(status, "status")?;
    let list = headers.cast::<pyo3::types::PyList>().map_err(|_| {
        PyTypeError::new_err("response headers must be a list of (name, value) tuples")
    })?;
    let mut head = ResponseHead::with_status(code, status);
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
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (name, value) = (
            native_str(&name, "header name")?,
            native_str(&value, "header value")?,
        );
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(PyValueError::new_err(format!(
                "invalid response header name {name:?}"
            )));
        }
        check_no_control(value, "header value")?;
        head.push_header(name, value);
    }
    Ok(head)
}

/// A native string's text (borrowed from the object: no copy).
fn native_str<'a>(value: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
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
        .to_str()?;
    if !text.is_ascii() && text.chars().any(|c| c as u32 > 0xFF) {
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
        let head = ResponseHead::new("200 OK", &[("X-Name", "caf\u{e9}")]);
        assert_eq!(
            head.to_http1(),
            b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\n\r\n"
        );
    }

    #[test]
    fn internal_error_length_matches_its_body() {
        let head = ResponseHead::internal_error();
        assert_eq!(
            head.content_length(),
            Some(INTERNAL_ERROR_BODY.len() as u64)
        );
    }

    #[test]
    fn head_gives_back_its_reason_and_headers_in_order() {
        let head = ResponseHead::new(
            "404 Not Found",
            &[
                ("X-A", "1"),
                ("Set-Cookie", "a=b; c"),
                ("X-Empty", ""),
                ("content-LENGTH", " 7 "),
            ],
        );
        assert_eq!(head.code, 404);
        assert_eq!(head.reason(), b"Not Found");
        let headers: Vec<_> = head.headers().collect();
        assert_eq!(
            headers,
            [
                (&b"X-A"[..], &b"1"[..]),
                (b"Set-Cookie", b"a=b; c"),
                (b"X-Empty", b""),
                (b"content-LENGTH", b" 7 "),
            ]
        );
        assert_eq!((head.header_count, head.content_length()), (4, Some(7)));
        assert_eq!(head.http1_len(), head.to_http1().len());
        assert_eq!(ResponseHead::new("200", &[]).reason(), b"");
        let twice = ResponseHead::new(
            "200 OK",
            &[("Content-Length", "3"), ("Content-Length", "9")],
        );
        assert_eq!(twice.content_length(), Some(3));
        let first_not_a_number = ResponseHead::new(
            "200 OK",
            &[("Content-Length", "x"), ("content-length", "9")],
        );
        assert_eq!(first_not_a_number.content_length(), None);
    }
}
