//! `start_response`, `write()` and the response head they build (PEP 3333).

use std::io;
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
        let mut out = Vec::with_capacity(64 + self.headers.len() * 40);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_latin1(&mut out, &self.status);
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            push_latin1(&mut out, name);
            out.extend_from_slice(b": ");
            push_latin1(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
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
    out.extend(text.chars().map(|c| c as u8));
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

/// The state `start_response` and `write()` share with the server for one request.
pub struct ResponseState {
    pub head: Option<ResponseHead>,
    pub head_sent: bool,
    /// HEAD request: the head is sent, the body is not.
    pub head_only: bool,
    pub body_bytes: u64,
    pub sink: Sink,
}

pub type SharedResponse = Arc<Mutex<ResponseState>>;

impl ResponseState {
    pub fn new(sink: Sink, head_only: bool) -> SharedResponse {
        Arc::new(Mutex::new(ResponseState {
            head: None,
            head_sent: false,
            head_only,
            body_bytes: 0,
            sink,
        }))
    }

    /// Commits the head: after this, status and headers cannot change.
    pub fn send_head(&mut self) -> io::Result<()> {
        if self.head_sent {
            return Ok(());
        }
        let head = self.head.as_ref().ok_or_else(|| {
            io::Error::other("the app returned a body without calling start_response")
        })?;
        match &mut self.sink {
            Sink::Socket(conn) => conn.write_all(&head.to_http1())?,
            Sink::Collect { head: slot, .. } => *slot = Some(head.clone()),
        }
        self.head_sent = true;
        Ok(())
    }

    /// Sends body bytes, committing the head first.
    pub fn send_body(&mut self, data: &[u8]) -> io::Result<()> {
        let data = if self.head_only { &[][..] } else { data };
        // The head and the first chunk leave in one system call.
        if let (false, Some(head), Sink::Socket(conn)) = (self.head_sent, &self.head, &self.sink) {
            conn.write_all_vectored(&head.to_http1(), data)?;
            self.head_sent = true;
            self.body_bytes += data.len() as u64;
            return Ok(());
        }
        self.send_head()?;
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Socket(conn) => conn.write_all(data)?,
            Sink::Collect { early_body, .. } => early_body.extend_from_slice(data),
        }
        self.body_bytes += data.len() as u64;
        Ok(())
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
}

impl StartResponse {
    pub fn new(response: SharedResponse) -> Self {
        StartResponse { response }
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
            state.head = Some(validate_head(status, headers)?);
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
