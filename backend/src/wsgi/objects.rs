//! `wsgi.errors` and `wsgi.file_wrapper`.

use pyo3::prelude::*;
use pyo3::types::PyString;

/// `wsgi.errors`: text written by the app lands in the daemon's log, a line at a time.
#[pyclass(module = "ngx_wsgi", name = "Errors")]
pub struct ErrorsStream {
    pending: std::sync::Mutex<String>,
}

impl ErrorsStream {
    pub fn new() -> Self {
        ErrorsStream {
            pending: std::sync::Mutex::new(String::new()),
        }
    }
}

#[pymethods]
impl ErrorsStream {
    fn write(&self, text: &Bound<'_, PyString>) -> PyResult<usize> {
        let text = text.to_str()?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.push_str(text);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            tracing::warn!(target: "wsgi.errors", "{}", line.trim_end());
        }
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.cast::<PyString>()?)?;
        }
        Ok(())
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.is_empty() {
            tracing::warn!(target: "wsgi.errors", "{}", pending.trim_end());
            pending.clear();
        }
    }
}

/// `wsgi.file_wrapper`: returned by the app, it lets the server send a file with
/// sendfile(2); iterated like any body otherwise.
#[pyclass(module = "ngx_wsgi", name = "FileWrapper")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((block.len()? > 0).then_some(block))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// The file descriptor and position to sendfile from, when the file-like object is a
    /// real file.
    pub fn file_position(&self, py: Python<'_>) -> Option<(i32, i64)> {
        let filelike = self.filelike.bind(py);
        let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
        let position: i64 = filelike.call_method0("tell").ok()?.extract().ok()?;
        Some((fd, position))
    }
}
