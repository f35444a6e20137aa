//! `wsgi.input`: the request body, read on demand from its source.
//!
//! Over the uwsgi protocol the body is streamed from the socket as the app reads it, so a
//! large upload is never held in memory; the GIL is released during every blocking read.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

create_exception!(
    ngx_wsgi,
    ClientDisconnected,
    PyOSError,
    "The client closed its connection before sending the whole request body."
);

const READ_CHUNK: usize = 64 * 1024;

/// Where the body bytes come from, after what was already read with the request head.
pub type BodySource = Box<dyn BodyRead>;

/// A source of body bytes: a connection, a spooled file, nothing.
pub trait BodyRead: Read + Send + Sync {
    /// Reads into memory that may not be initialized yet (a bytes object just allocated),
    /// as `read` does; the bytes it says it read are initialized. By default the memory
    /// is zeroed first; a connection reads into it as it is.
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every byte of `buf` was initialized just above.
        let buf = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        self.read(buf)
    }

    /// Reads the last bytes of the body, as `read_uninit`: a source may read past them in
    /// the same call, for its own use (a connection keeps the next request's first bytes).
    fn read_end(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.read_uninit(buf)
    }
}

impl BodyRead for io::Empty {}

impl BodyRead for std::fs::File {}

/// The request body of one request: `CONTENT_LENGTH` bytes, no more.
pub struct Body {
    buffer: Vec<u8>,
    pos: usize,
    source: BodySource,
    /// Bytes still to come from `source`.
    remaining: u64,
    /// Body size the client announced.
    announced: u64,
    /// `remaining`, for the response writer, which decides at head time whether the
    /// connection can be kept (see [`Body::share_remaining`]).
    shared_remaining: Option<Arc<AtomicU64>>,
}

impl Body {
    /// A body whose first bytes are `already_read`, with the rest still in `source`.
    pub fn new(already_read: Vec<u8>, source: BodySource, announced: u64) -> Body {
        let remaining = announced.saturating_sub(already_read.len() as u64);
        Body {
            buffer: already_read,
            pos: 0,
            source,
            remaining,
            announced,
            shared_remaining: None,
        }
    }

    /// A counter of the body bytes still to come from the source, kept current as the app
    /// reads.
    pub fn share_remaining(&mut self) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(self.remaining));
        self.shared_remaining = Some(counter.clone());
        counter
    }

    /// Body bytes not read from the source yet.
    pub fn unread(&self) -> u64 {
        self.remaining
    }

    pub fn empty() -> Body {
        Body::new(Vec::new(), Box::new(io::empty()), 0)
    }

    fn buffered(&self) -> &[u8] {
        &self.buffer[self.pos..]
    }

    /// Reads one more chunk from the source into the buffer; false at the end of the body.
    fn fill(&mut self) -> io::Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buffer.drain(..self.pos);
            self.pos = 0;
        }
        let want = READ_CHUNK.min(self.remaining as usize);
        self.buffer.reserve(want);
        let start = self.buffer.len();
        // Out of `self` while read_source borrows it; the bytes go straight into the
        // buffer's spare capacity, not zeroed first.
        let mut spare = std::mem::take(&mut self.buffer);
        let got = self.read_source(&mut spare.spare_capacity_mut()[..want]);
        self.buffer = spare;
        // SAFETY: read_source initialized the `got` bytes after `start` it says it read.
        unsafe { self.buffer.set_len(start + got?) };
        Ok(true)
    }

    /// Reads the next body bytes from the source into `out` (not past the body): how
    /// many, all initialized, and counted. A read of none is the client gone.
    fn read_source(&mut self, out: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // Never past the body: what follows it is the next request (which a source may
        // read with the body's end, and keeps: `BodyRead::read_end`).
        let room = out
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let last = room > 0 && room as u64 == self.remaining;
        let got = loop {
            let read = match last {
                true => self.source.read_end(&mut out[..room]),
                false => self.source.read_uninit(&mut out[..room]),
            };
            match read {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        // What was read goes out as initialized: a source that says it read more than it
        // was given is not believed.
        if got > room {
            return Err(io::Error::other(format!(
                "the body source said it read {got} bytes into {room}"
            )));
        }
        self.count_read(got)?;
        Ok(got)
    }

    /// Counts `got` bytes read from the source; a read of none before the end of the body
    /// means the client closed.
    fn count_read(&mut self, got: usize) -> io::Result<()> {
        if got == 0 {
            let received = self.announced - self.remaining;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "client closed the connection after {received} of {} body bytes (CONTENT_LENGTH)",
                    self.announced
                ),
            ));
        }
        self.remaining -= got as u64;
        if let Some(shared) = &self.shared_remaining {
            shared.store(self.remaining, Ordering::Relaxed);
        }
        Ok(())
    }

    /// How many bytes a read of at most `limit` (all with `None`) hands out: what is
    /// buffered and what is still to come, up to the limit.
    pub fn read_len(&self, limit: Option<usize>) -> usize {
        let left = (self.buffered().len() as u64).saturating_add(self.remaining);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        limit.map_or(left, |n| n.min(left))
    }

    /// Fills `out` (at most [`Body::read_len`] bytes) with the next body bytes: the
    /// buffered ones, then the rest straight from the source, with no buffer between.
    /// Every byte of `out` is initialized when this returns `Ok`.
    pub fn read_into(&mut self, out: &mut [MaybeUninit<u8>]) -> io::Result<()> {
        let buffered = self.buffered().len().min(out.len());
        out[..buffered].write_copy_of_slice(self.take(buffered));
        let mut filled = buffered;
        while filled < out.len() {
            filled += self.read_source(&mut out[filled..])?;
        }
        Ok(())
    }

    /// Reads from the source until a whole line (up to and including `\n`), `limit` bytes
    /// or the end of the body is buffered; returns the length of that line.
    pub fn fill_for_line(&mut self, limit: Option<usize>) -> io::Result<usize> {
        let mut scanned = 0;
        loop {
            let buffered = self.buffered();
            if let Some(i) = buffered[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(limit.map_or(end, |n| n.min(end)));
            }
            scanned = buffered.len();
            if limit.is_some_and(|n| scanned >= n) || !self.fill()? {
                return Ok(limit.map_or(scanned, |n| n.min(scanned)));
            }
        }
    }

    /// Hands out `len` buffered bytes (at most what is buffered: see `fill_for_line`,
    /// `read_len`).
    pub fn take(&mut self, len: usize) -> &[u8] {
        let start = self.pos;
        self.pos += len;
        &self.buffer[start..start + len]
    }

    /// Takes one line (up to and including `\n`), at most `limit` bytes.
    pub fn readline(&mut self, limit: Option<usize>) -> io::Result<Vec<u8>> {
        let len = self.fill_for_line(limit)?;
        Ok(self.take(len).to_vec())
    }
}

impl Body {
    /// Reads and drops what the app left unread, so the next request on the connection
    /// starts where it should. False when more than `limit` bytes are left: closing the
    /// connection is cheaper than reading them.
    pub fn discard_unread(&mut self, limit: u64) -> io::Result<bool> {
        if self.remaining > limit {
            return Ok(false);
        }
        while self.fill()? {
            self.pos = self.buffer.len();
        }
        Ok(true)
    }

    /// Lets go of the connection the body came from.
    pub fn release_source(&mut self) {
        self.source = Box::new(io::empty());
        self.remaining = 0;
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|n| usize::try_from(n).ok())
}

fn to_py_err(err: io::Error) -> PyErr {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        ClientDisconnected::new_err(err.to_string())
    } else {
        PyOSError::new_err(format!("reading the request body failed: {err}"))
    }
}

/// The `wsgi.input` object.
#[pyclass(module = "ngx_wsgi", name = "Input")]
pub struct WsgiInput {
    body: Body,
}

impl WsgiInput {
    pub fn new(body: Body) -> Self {
        WsgiInput { body }
    }

    pub fn body_mut(&mut self) -> &mut Body {
        &mut self.body
    }
}

#[pymethods]
impl WsgiInput {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let len = self.body.read_len(size_arg(size));
        let body = &mut self.body;
        if len <= body.buffered().len() {
            return Ok(PyBytes::new(py, body.take(len)));
        }
        // The bytes still in the socket are read straight into a new bytes object, as
        // they are (uWSGI does the same): no buffer between, nothing zeroed first. The
        // GIL is released meanwhile; nobody else can see the object yet.
        let size = isize::try_from(len)
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("a body longer than isize"))?;
        // At least one byte (len > what is buffered): CPython's shared empty bytes object
        // is never the one written into below.
        debug_assert!(len > 0);
        // SAFETY: with a null pointer and a size over 0, CPython allocates a new bytes
        // object of `size` bytes whose contents are not initialized, or returns NULL with
        // an error set, which from_owned_ptr_or_err turns into that error.
        let bytes = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
            )?
        };
        // SAFETY: the object is a new bytes object of `len` bytes that only this function
        // holds: its buffer is valid for writes of `len` bytes, and nothing reads it until
        // read_into has initialized every byte (on an error it is dropped unseen).
        let out = unsafe {
            std::slice::from_raw_parts_mut(
                pyo3::ffi::PyBytes_AsString(bytes.as_ptr()).cast::<MaybeUninit<u8>>(),
                len,
            )
        };
        py.detach(|| body.read_into(out)).map_err(to_py_err)?;
        Ok(bytes.cast_into()?)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let body = &mut self.body;
        let len = py
            .detach(|| body.fill_for_line(size_arg(size)))
            .map_err(to_py_err)?;
        Ok(PyBytes::new(py, self.body.take(len)))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if size_arg(hint).is_some_and(|h| h > 0 && total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out its bytes a few at a time, like a socket.
    struct Trickle(Vec<u8>, usize);
    impl BodyRead for Trickle {}
    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.1).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    fn body(first: &[u8], rest: &[u8], announced: u64) -> Body {
        Body::new(
            first.to_vec(),
            Box::new(Trickle(rest.to_vec(), 3)),
            announced,
        )
    }

    /// What read_into puts in `len` bytes of memory that was not initialized.
    fn read_into(b: &mut Body, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![MaybeUninit::<u8>::uninit(); len];
        b.read_into(&mut out)?;
        // SAFETY: read_into returned Ok, so it initialized every byte of `out`.
        Ok(out
            .iter()
            .map(|byte| unsafe { byte.assume_init() })
            .collect())
    }

    /// What `wsgi.input.read(limit)` returns: up to `limit` bytes (all with `None`).
    fn read(b: &mut Body, limit: Option<usize>) -> io::Result<Vec<u8>> {
        let len = b.read_len(limit);
        read_into(b, len)
    }

    #[test]
    fn read_into_takes_the_prefix_then_the_stream_and_stops_at_the_body_end() {
        let mut b = body(b"abc", b"defgh", 8);
        assert_eq!(b.read_len(Some(100)), 8);
        assert_eq!(read_into(&mut b, 6).unwrap(), b"abcdef");
        assert_eq!(b.read_len(None), 2);
        assert_eq!(read_into(&mut b, 2).unwrap(), b"gh");
        assert_eq!(b.unread(), 0);
        // A client that closes early: an error naming how much came.
        let mut short = body(b"ab", b"cd", 10);
        let err = read_into(&mut short, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("after 4 of 10 body bytes"),
            "{err}"
        );
    }

    #[test]
    fn read_all_joins_prefix_and_stream() {
        let mut b = body(b"ab", b"cdefgh", 8);
        assert_eq!(read(&mut b, None).unwrap(), b"abcdefgh");
        assert_eq!(read(&mut b, None).unwrap(), b"");
    }

    #[test]
    fn read_sized_returns_exactly_that_many() {
        let mut b = body(b"", b"0123456789", 10);
        assert_eq!(read(&mut b, Some(7)).unwrap(), b"0123456");
        assert_eq!(read(&mut b, Some(7)).unwrap(), b"789");
    }

    #[test]
    fn never_reads_past_content_length() {
        // A keep-alive peer may send the next request right after the body.
        let mut b = body(b"", b"bodyNEXT REQUEST", 4);
        assert_eq!(read(&mut b, None).unwrap(), b"body");
    }

    #[test]
    fn readline_splits_on_newlines_across_chunks() {
        let mut b = body(b"line one\nli", b"ne two\nlast", 22);
        assert_eq!(b.readline(None).unwrap(), b"line one\n");
        assert_eq!(b.readline(None).unwrap(), b"line two\n");
        assert_eq!(b.readline(None).unwrap(), b"last");
        assert_eq!(b.readline(None).unwrap(), b"");
    }

    #[test]
    fn readline_honours_its_limit() {
        let mut b = body(b"abcdef\n", b"", 7);
        assert_eq!(b.readline(Some(4)).unwrap(), b"abcd");
        assert_eq!(b.readline(None).unwrap(), b"ef\n");
    }

    #[test]
    fn short_body_is_an_error_naming_the_sizes() {
        let mut b = body(b"ab", b"cd", 10);
        let err = read(&mut b, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            err.to_string(),
            "client closed the connection after 4 of 10 body bytes (CONTENT_LENGTH)"
        );
    }
}
