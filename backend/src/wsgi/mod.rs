//! Running a WSGI app (PEP 3333) for one request.

pub mod environ;
pub mod input;
mod objects;
pub mod response;

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple};

pub use environ::EnvironSource;
use input::{ClientDisconnected, WsgiInput};
use objects::{ErrorsStream, FileWrapper};
use response::{lock, ResponseState, ResponseWriter, SharedResponse, StartResponse};

use crate::outcome::Outcome;
use crate::python::format_exception;

/// The app and the per-worker objects every environ shares.
pub struct WsgiApp {
    app: Py<PyAny>,
    /// The keys every environ has with the same value: `wsgi.version`, `wsgi.errors`...
    fixed_keys: Vec<(Py<PyString>, Py<PyAny>)>,
    /// `add-header`: headers added to every response the app starts.
    added_headers: Arc<[(String, String)]>,
}

/// How much of the app's body [`WsgiApp::pull`] sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pull {
    Everything,
    /// Up to the head and the first body bytes.
    UntilHead,
}

impl WsgiApp {
    pub fn new(py: Python<'_>, app: Py<PyAny>, config: &ngx_wsgi_config::Config) -> PyResult<Self> {
        let added_headers = config
            .add_header
            .iter()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        let flag = |value: bool| pyo3::types::PyBool::new(py, value).to_owned().into_any();
        let fixed_keys = [
            ("wsgi.version", PyTuple::new(py, [1, 0])?.into_any()),
            (
                "wsgi.errors",
                Bound::new(py, ErrorsStream::new())?.into_any(),
            ),
            ("wsgi.multithread", flag(config.threads > 1)),
            ("wsgi.multiprocess", flag(config.processes > 1)),
            ("wsgi.run_once", flag(false)),
            ("wsgi.input_terminated", flag(true)),
            ("wsgi.file_wrapper", py.get_type::<FileWrapper>().into_any()),
        ];
        Ok(WsgiApp {
            app,
            fixed_keys: fixed_keys
                .into_iter()
                .map(|(key, value)| (PyString::intern(py, key).unbind(), value.unbind()))
                .collect(),
            added_headers,
        })
    }

    /// Builds the environ of one request.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        source: &EnvironSource<'_>,
        input: Bound<'py, WsgiInput>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (environ, https) = source.to_dict(py, &self.fixed_keys)?;
        let scheme = if https {
            pyo3::intern!(py, "https")
        } else {
            pyo3::intern!(py, "http")
        };
        environ.set_item(pyo3::intern!(py, "wsgi.url_scheme"), scheme)?;
        environ.set_item(pyo3::intern!(py, "wsgi.input"), input)?;
        Ok(environ)
    }

    /// Calls the app; the returned iterable is the response body.
    pub fn call<'py, W: ResponseWriter + 'static>(
        &self,
        py: Python<'py>,
        environ: Bound<'py, PyDict>,
        response: &SharedResponse<W>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let start_response = Bound::new(
            py,
            StartResponse::new(response.clone(), self.added_headers.clone()),
        )?;
        let returned = self.app.bind(py).call1((environ, start_response))?;
        // PEP 3333 asks for an iterable of bytes, and iterating `bytes` gives ints; uWSGI
        // sends a bare `bytes` return value whole, and apps (nginx's own tests' among them)
        // rely on it.
        if returned.is_exact_instance_of::<PyBytes>() {
            return Ok(PyTuple::new(py, [returned])?.into_any());
        }
        Ok(returned)
    }

    /// Runs one request whose response goes out through its writer as the app produces
    /// it (uwsgi protocol).
    pub fn respond<W: ResponseWriter + 'static>(
        &self,
        py: Python<'_>,
        environ: Bound<'_, PyDict>,
        response: &SharedResponse<W>,
    ) -> Outcome {
        let result = self.call(py, environ, response).and_then(|iterable| {
            let sent = self.pull(py, &iterable, response, Pull::Everything);
            // PEP 3333: close() is called whatever happened while iterating.
            let closed = close_iterable(&iterable);
            sent.and(closed)
        });
        let state = lock(response);
        let status = state.head.as_ref().map_or(0, |h| h.code);
        match result {
            Ok(_) => Outcome::Sent {
                status,
                bytes: state.body_bytes,
            },
            Err(err) => {
                let head_sent = state.head_sent;
                drop(state);
                self.failure(py, err, head_sent, status, response)
            }
        }
    }

    /// Calls the app and pulls its body until the head is committed with its first bytes
    /// (PEP 3333: the head goes out with the first non-empty chunk), for a protocol whose
    /// library pulls the rest as the client takes it (the HTTP listener). Returns the
    /// iterable and its iterator when more body may follow; otherwise the iterable is
    /// closed. A body in memory (a list or tuple) is taken whole, so the response can
    /// say its length.
    pub fn start<'py, W: ResponseWriter + 'static>(
        &self,
        py: Python<'py>,
        environ: Bound<'py, PyDict>,
        response: &SharedResponse<W>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyIterator>)>> {
        let iterable = self.call(py, environ, response)?;
        let in_memory = iterable.is_instance_of::<PyList>() || iterable.is_instance_of::<PyTuple>();
        let pull = if in_memory {
            Pull::Everything
        } else {
            Pull::UntilHead
        };
        match self.pull(py, &iterable, response, pull) {
            Ok(Some(iterator)) => Ok(Some((iterable, iterator))),
            finished => {
                let closed = close_iterable(&iterable);
                finished?;
                closed?;
                Ok(None)
            }
        }
    }

    /// Sends the app's body through the writer: the iterator, when it stopped at the
    /// head ([`Pull::UntilHead`]) with more to come.
    fn pull<'py, W: ResponseWriter>(
        &self,
        py: Python<'py>,
        iterable: &Bound<'py, PyAny>,
        response: &SharedResponse<W>,
        pull: Pull,
    ) -> PyResult<Option<Bound<'py, PyIterator>>> {
        let head_only = lock(response).head_only;
        if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
            if let Some((fd, offset)) = wrapper.borrow().file_position(py) {
                // SAFETY: `fd` belongs to the file object the wrapper holds, which stays
                // open while this request runs (close() is called after).
                let file = unsafe { BorrowedFd::borrow_raw(fd) };
                if py
                    .detach(|| lock(response).send_file(file, offset))
                    .map_err(io_to_py)?
                {
                    return send_step(
                        py,
                        response,
                        |state| state.finish_may_wait(),
                        |state| state.finish(),
                    )
                    .map(|_| None)
                    .map_err(io_to_py);
                }
            }
        }
        let iterator = iterable.try_iter()?;
        for chunk in iterator.clone() {
            let chunk = chunk?;
            let data = chunk_bytes(&chunk)?;
            if data.is_empty() && lock(response).head_sent {
                continue;
            }
            let send = |state: &mut ResponseState<W>| state.send_body(data);
            match W::sends_to_peer() {
                true => py.detach(|| send(&mut lock(response))),
                false => send_step(py, response, |_| false, send),
            }
            .map_err(io_to_py)?;
            if head_only {
                break;
            }
            if pull == Pull::UntilHead && !data.is_empty() {
                return Ok(Some(iterator));
            }
        }
        // An empty body still commits the head; a chunked one gets its last chunk.
        send_step(
            py,
            response,
            |state| state.finish_may_wait(),
            |state| state.finish(),
        )
        .map(|_| None)
        .map_err(io_to_py)
    }

    /// Turns an exception into the right outcome, sending a 500 when nothing was sent yet.
    fn failure<W: ResponseWriter>(
        &self,
        py: Python<'_>,
        err: PyErr,
        head_sent: bool,
        status: u16,
        response: &SharedResponse<W>,
    ) -> Outcome {
        if err.is_instance_of::<ClientDisconnected>(py) || err.is_instance_of::<PeerWriteError>(py)
        {
            return Outcome::PeerGone {
                reason: err.value(py).to_string(),
            };
        }
        let traceback = format_exception(py, &err);
        if head_sent {
            return Outcome::Aborted { status, traceback };
        }
        // Best effort: the peer may be gone too, and the app error is what gets logged.
        py.detach(|| lock(response).writer.send_internal_error());
        Outcome::AppFailed { traceback }
    }
}

/// Runs a step of sending the response: with the GIL released when it may wait for the
/// peer, as a socket write may; a step that waits for nothing (the HTTP listener's writer
/// fills memory, a body delimited by its length ends without a write) keeps it, which
/// saves a release and a re-take (about 1,000 instructions).
fn send_step<W: ResponseWriter, T: Send>(
    py: Python<'_>,
    response: &SharedResponse<W>,
    may_wait: impl FnOnce(&ResponseState<W>) -> bool,
    step: impl FnOnce(&mut ResponseState<W>) -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    // With the GIL held the lock is only tried: an app thread in write() holds it while
    // its bytes go out, and every Python thread would wait with this one.
    if let Ok(mut state) = response.try_lock() {
        if !may_wait(&state) {
            return step(&mut state);
        }
    }
    py.detach(|| step(&mut lock(response)))
}

pyo3::create_exception!(
    ngx_wsgi,
    PeerWriteError,
    pyo3::exceptions::PyOSError,
    "Writing the response to the peer failed."
);

fn io_to_py(err: std::io::Error) -> PyErr {
    PeerWriteError::new_err(format!("connection lost while sending the response: {err}"))
}

/// The bytes of one body chunk; PEP 3333 allows nothing else.
pub fn chunk_bytes<'a>(chunk: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    match chunk.cast::<PyBytes>() {
        Ok(bytes) => Ok(bytes.as_bytes()),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the app yielded {} where bytes are required",
            chunk
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))),
    }
}

/// Calls `close()` on the app's iterable when it has one.
pub fn close_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // Most apps return a list: it has no close(), and asking costs an AttributeError
    // (with its formatted message) per request.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    let py = iterable.py();
    if iterable.hasattr(pyo3::intern!(py, "close"))? {
        iterable.call_method0(pyo3::intern!(py, "close"))?;
    }
    Ok(())
}
