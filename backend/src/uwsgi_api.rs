//! The `uwsgi` and `uwsgidecorators` Python modules apps written for uWSGI import
//! (`backend/python/`), over a small native module, `_ngx_wsgi`, for what only the daemon
//! knows: which worker this is, the shared counters, the master to signal.
//!
//! Python calls these functions with no way to pass the daemon's context along, so what
//! they need is kept here, set once: the config (at start) and the worker's readiness pipe
//! (after fork).

use std::os::fd::RawFd;
use std::sync::OnceLock;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyModule};

use ngx_wsgi_config::Config;

static CONFIG: OnceLock<Config> = OnceLock::new();
/// A worker's end of the readiness pipe: `chain_reload()` asks the master through it.
static MASTER_PIPE: OnceLock<RawFd> = OnceLock::new();

/// What a worker writes on the readiness pipe (in place of its pid) to ask the master
/// for a chain reload.
pub const CHAIN_RELOAD_REQUEST: i32 = -1;

const UWSGI_SOURCE: &str = include_str!("../python/uwsgi.py");
const DECORATORS_SOURCE: &str = include_str!("../python/uwsgidecorators.py");

/// Makes `uwsgi` and `uwsgidecorators` importable, in the master before the app loads
/// (workers inherit them).
pub fn install(py: Python<'_>, config: &Config) -> PyResult<()> {
    let _ = CONFIG.set(config.clone());
    let modules = py.import("sys")?.getattr("modules")?;
    let native = PyModule::new(py, "_ngx_wsgi")?;
    for function in [
        wrap_pyfunction!(worker_id, &native)?,
        wrap_pyfunction!(masterpid, &native)?,
        wrap_pyfunction!(total_requests, &native)?,
        wrap_pyfunction!(request_id, &native)?,
        wrap_pyfunction!(workers_json, &native)?,
        wrap_pyfunction!(mem, &native)?,
        wrap_pyfunction!(logsize, &native)?,
        wrap_pyfunction!(log, &native)?,
        wrap_pyfunction!(reload, &native)?,
        wrap_pyfunction!(chain_reload, &native)?,
        wrap_pyfunction!(stop, &native)?,
        wrap_pyfunction!(setprocname, &native)?,
        wrap_pyfunction!(set_logvar, &native)?,
        wrap_pyfunction!(get_logvar, &native)?,
        wrap_pyfunction!(register_signal, &native)?,
        wrap_pyfunction!(signal_registered, &native)?,
        wrap_pyfunction!(raise_signal, &native)?,
        wrap_pyfunction!(add_timer, &native)?,
        wrap_pyfunction!(add_cron, &native)?,
        wrap_pyfunction!(add_file_monitor, &native)?,
        wrap_pyfunction!(set_user_harakiri, &native)?,
        wrap_pyfunction!(parsefile, &native)?,
        wrap_pyfunction!(lock, &native)?,
        wrap_pyfunction!(unlock, &native)?,
        wrap_pyfunction!(is_locked, &native)?,
        wrap_pyfunction!(cache_get, &native)?,
        wrap_pyfunction!(cache_exists, &native)?,
        wrap_pyfunction!(cache_write, &native)?,
        wrap_pyfunction!(cache_del, &native)?,
        wrap_pyfunction!(cache_clear, &native)?,
        wrap_pyfunction!(cache_keys, &native)?,
        wrap_pyfunction!(cache_math, &native)?,
        wrap_pyfunction!(spool, &native)?,
        wrap_pyfunction!(spooler_pids, &native)?,
        wrap_pyfunction!(spooler_jobs, &native)?,
        wrap_pyfunction!(i_am_the_spooler, &native)?,
        wrap_pyfunction!(mule_id, &native)?,
        wrap_pyfunction!(mule_msg, &native)?,
        wrap_pyfunction!(mule_get_msg, &native)?,
    ] {
        native.add_function(function)?;
    }
    modules.set_item("_ngx_wsgi", &native)?;

    let uwsgi = PyModule::from_code(
        py,
        &std::ffi::CString::new(UWSGI_SOURCE)?,
        c"uwsgi.py",
        c"uwsgi",
    )?;
    uwsgi.setattr("numproc", config.processes)?;
    uwsgi.setattr("cores", config.threads)?;
    uwsgi.setattr("buffer_size", config.vars_limit())?;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    uwsgi.setattr("started_on", started)?;
    let hostname = nix::unistd::gethostname().unwrap_or_default();
    uwsgi.setattr("hostname", PyBytes::new(py, hostname.as_encoded_bytes()))?;
    let version = format!("2.0.30 (ngx-wsgi {})", env!("CARGO_PKG_VERSION"));
    uwsgi.setattr("version", PyBytes::new(py, version.as_bytes()))?;
    uwsgi.setattr("opt", options(py, config)?)?;
    modules.set_item("uwsgi", &uwsgi)?;

    let decorators = PyModule::from_code(
        py,
        &std::ffi::CString::new(DECORATORS_SOURCE)?,
        c"uwsgidecorators.py",
        c"uwsgidecorators",
    )?;
    modules.set_item("uwsgidecorators", decorators)?;
    Ok(())
}

/// `uwsgi.opt`: the options set, as uWSGI gives them: bytes, `True` for a flag, a list
/// for an option given more than once. Defaults are left out, as in uWSGI.
fn options<'py>(py: Python<'py>, config: &Config) -> PyResult<Bound<'py, PyDict>> {
    let to_json = |config: &Config| serde_json::to_value(config).unwrap_or_default();
    let (given, defaults) = (to_json(config), to_json(&Config::default()));
    let opt = PyDict::new(py);
    let serde_json::Value::Object(given) = given else {
        return Ok(opt);
    };
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (name, value) in given {
        if defaults.get(&name) == Some(&value) {
            continue;
        }
        match &value {
            serde_json::Value::Null => {}
            serde_json::Value::Bool(true) => opt.set_item(&name, true)?,
            serde_json::Value::Bool(false) => {}
            serde_json::Value::Array(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(PyBytes::new(py, text(item).as_bytes()))?;
                }
                opt.set_item(&name, list)?;
            }
            other => opt.set_item(&name, PyBytes::new(py, text(other).as_bytes()))?,
        }
    }
    Ok(opt)
}

/// In a worker, after fork: where `chain_reload()` asks the master.
pub fn set_master_pipe(fd: RawFd) {
    let _ = MASTER_PIPE.set(fd);
}

/// Runs the app's `uwsgi.post_fork_hook` (what `@postfork` registers), if it set one.
pub fn run_post_fork_hook(py: Python<'_>) {
    run_hook(py, "post_fork_hook");
}

/// Runs the app's `uwsgi.atexit`, if it set one, as the worker exits.
pub fn run_atexit(py: Python<'_>) {
    run_hook(py, "atexit");
}

fn run_hook(py: Python<'_>, name: &str) {
    let Ok(uwsgi) = py.import("uwsgi") else {
        return;
    };
    let hook = match uwsgi.getattr(name) {
        Ok(hook) if !hook.is_none() => hook,
        _ => return,
    };
    if let Err(err) = hook.call0() {
        tracing::error!(
            "uwsgi.{name} raised:\n{}",
            crate::python::format_exception(py, &err)
        );
    }
}

fn master() -> Pid {
    match crate::process::worker_id() {
        0 if !crate::spooler::i_am_the_spooler() => nix::unistd::getpid(),
        _ => nix::unistd::getppid(),
    }
}

#[pyfunction]
fn worker_id() -> u32 {
    crate::process::worker_id()
}

#[pyfunction]
fn masterpid() -> i32 {
    master().as_raw()
}

#[pyfunction]
fn total_requests() -> u64 {
    crate::stats::all_requests()
}

#[pyfunction]
fn request_id() -> u64 {
    crate::stats::request_numbers().0
}

#[pyfunction]
fn workers_json() -> String {
    CONFIG.get().map_or_else(String::new, |config| {
        crate::stats::workers_json(config).to_string()
    })
}

#[pyfunction]
fn mem() -> (u64, u64) {
    crate::stats::memory(std::process::id() as i32)
}

#[pyfunction]
fn logsize() -> u64 {
    CONFIG
        .get()
        .and_then(crate::logging::log_file)
        .and_then(|path| std::fs::metadata(path).ok())
        .map_or(0, |meta| meta.len())
}

#[pyfunction]
fn log(message: &str) {
    tracing::info!("{message}");
}

#[pyfunction]
fn reload() -> bool {
    kill(master(), Signal::SIGHUP).is_ok()
}

#[pyfunction]
fn stop() -> bool {
    kill(master(), Signal::SIGTERM).is_ok()
}

#[pyfunction]
fn chain_reload() -> PyResult<bool> {
    let Some(fd) = MASTER_PIPE.get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "uwsgi.chain_reload() is for workers: the master reloads with SIGHUP",
        ));
    };
    // SAFETY: the worker keeps its end of the readiness pipe open for its whole life.
    let pipe = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
    Ok(nix::unistd::write(pipe, &CHAIN_RELOAD_REQUEST.to_ne_bytes()).is_ok())
}

#[pyfunction]
fn setprocname(name: &str) {
    crate::procname::set_title(name);
}

#[pyfunction]
fn set_logvar(key: &str, value: &str) {
    crate::reqlog::set_logvar(key, value);
}

#[pyfunction]
fn get_logvar(key: &str) -> Option<String> {
    crate::reqlog::get_logvar(key)
}

/// A cache key or value as uWSGI takes them: bytes, or str (UTF-8).
fn bytes_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    Ok(value.extract::<String>()?.into_bytes())
}

/// `uwsgi.spool()`: writes a task (vars in order, and a body) into a spooler directory;
/// returns its file's path. uwsgi.py sorts out the special keys.
#[pyfunction]
#[pyo3(signature = (vars, body, spooler, priority))]
fn spool<'py>(
    py: Python<'py>,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    spooler: Option<std::path::PathBuf>,
    priority: Option<String>,
) -> PyResult<Bound<'py, PyBytes>> {
    let config = CONFIG
        .get()
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("ngx-wsgi is not configured"))?;
    let task = crate::spooler::Task { vars, body };
    let path = py
        .detach(|| crate::spooler::enqueue(config, spooler.as_deref(), priority.as_deref(), &task))
        .map_err(|err| match err {
            crate::spooler::SpoolError::Write { .. } => {
                pyo3::exceptions::PyOSError::new_err(err.to_string())
            }
            _ => pyo3::exceptions::PyValueError::new_err(err.to_string()),
        })?;
    Ok(PyBytes::new(py, path.as_os_str().as_encoded_bytes()))
}

#[pyfunction]
fn spooler_pids() -> Vec<i32> {
    crate::spooler::pids()
}

/// Every task file waiting in the spooler directories, as paths.
#[pyfunction]
fn spooler_jobs<'py>(py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
    let dirs = CONFIG.get().map(|c| c.spooler.clone()).unwrap_or_default();
    dirs.iter()
        .flat_map(|dir| crate::spooler::task_files(dir))
        .map(|path| PyBytes::new(py, path.as_os_str().as_encoded_bytes()))
        .collect()
}

#[pyfunction]
fn i_am_the_spooler() -> bool {
    crate::spooler::i_am_the_spooler()
}

#[pyfunction]
fn mule_id() -> u32 {
    crate::mules::mule_id()
}

fn mule_error(err: crate::mules::MuleError) -> PyErr {
    use crate::mules::MuleError;
    match err {
        MuleError::Io(..) => pyo3::exceptions::PyOSError::new_err(err.to_string()),
        _ => pyo3::exceptions::PyValueError::new_err(err.to_string()),
    }
}

/// `uwsgi.mule_msg()`: to any mule (target None or 0), mule N, or farm NAME; false when
/// that queue is full.
#[pyfunction]
#[pyo3(signature = (message, target=None))]
fn mule_msg(py: Python<'_>, message: Vec<u8>, target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    use crate::mules::Target;
    let target = match target {
        None => Target::Any,
        Some(t) if t.is_none() => Target::Any,
        Some(t) => match t.extract::<u32>() {
            Ok(n) => Target::Mule(n),
            Err(_) => Target::Farm(String::from_utf8_lossy(&bytes_of(t)?).into_owned()),
        },
    };
    py.detach(|| crate::mules::send_message(&target, &message))
        .map_err(mule_error)
}

/// In a mule: the next message (`own`: its queue and the shared one; `farms`: its
/// farms'), waiting up to `timeout` seconds (negative: until one comes).
#[pyfunction]
fn mule_get_msg<'py>(
    py: Python<'py>,
    own: bool,
    farms: bool,
    timeout: f64,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let timeout = (timeout >= 0.0).then(|| std::time::Duration::from_secs_f64(timeout));
    let message = py
        .detach(|| crate::mules::receive(farms, own, timeout))
        .map_err(mule_error)?;
    Ok(message.map(|m| PyBytes::new(py, &m)))
}

fn cache(name: Option<&str>) -> PyResult<&'static crate::cache::Cache> {
    crate::cache::by_name(name).map_err(pyo3::exceptions::PyValueError::new_err)
}

#[pyfunction]
#[pyo3(signature = (key, cache_name=None))]
fn cache_get<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    cache_name: Option<&str>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let (key, cache) = (bytes_of(key)?, cache(cache_name)?);
    let value = py.detach(|| cache.get(&key));
    Ok(value.map(|v| PyBytes::new(py, &v)))
}

#[pyfunction]
#[pyo3(signature = (key, cache_name=None))]
fn cache_exists(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    cache_name: Option<&str>,
) -> PyResult<bool> {
    let (key, cache) = (bytes_of(key)?, cache(cache_name)?);
    Ok(py.detach(|| cache.exists(&key)))
}

/// `cache_set` (`update` false: only a new key) and `cache_update`.
#[pyfunction]
#[pyo3(signature = (key, value, expires, cache_name, update))]
fn cache_write(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    expires: i64,
    cache_name: Option<&str>,
    update: bool,
) -> PyResult<bool> {
    let (key, value, cache) = (bytes_of(key)?, bytes_of(value)?, cache(cache_name)?);
    let mode = match update {
        true => crate::cache::Write::Update,
        false => crate::cache::Write::Set,
    };
    Ok(py.detach(|| cache.set(&key, &value, expires, mode)).is_ok())
}

#[pyfunction]
#[pyo3(signature = (key, cache_name=None))]
fn cache_del(py: Python<'_>, key: &Bound<'_, PyAny>, cache_name: Option<&str>) -> PyResult<bool> {
    let (key, cache) = (bytes_of(key)?, cache(cache_name)?);
    Ok(py.detach(|| cache.delete(&key)))
}

#[pyfunction]
#[pyo3(signature = (cache_name=None))]
fn cache_clear(py: Python<'_>, cache_name: Option<&str>) -> PyResult<bool> {
    let cache = cache(cache_name)?;
    py.detach(|| cache.clear());
    Ok(true)
}

#[pyfunction]
#[pyo3(signature = (cache_name=None))]
fn cache_keys<'py>(py: Python<'py>, cache_name: Option<&str>) -> PyResult<Bound<'py, PyList>> {
    let cache = cache(cache_name)?;
    let keys = py.detach(|| cache.keys());
    PyList::new(py, keys.iter().map(|k| PyBytes::new(py, k)))
}

/// `cache_inc`, `cache_dec`, `cache_mul`, `cache_div`: the new value, or None.
#[pyfunction]
#[pyo3(signature = (key, op, amount, expires, cache_name))]
fn cache_math(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    op: &str,
    amount: i64,
    expires: i64,
    cache_name: Option<&str>,
) -> PyResult<Option<i64>> {
    use crate::cache::Math;
    let (key, cache) = (bytes_of(key)?, cache(cache_name)?);
    let op = match op {
        "inc" => Math::Inc,
        "dec" => Math::Dec,
        "mul" => Math::Mul,
        _ => Math::Div,
    };
    Ok(py.detach(|| cache.math(&key, op, amount, expires)).ok())
}

#[pyfunction]
fn lock(py: Python<'_>, n: u64) -> PyResult<()> {
    py.detach(|| crate::locks::lock_user(n))
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

#[pyfunction]
fn unlock(n: u64) -> PyResult<()> {
    crate::locks::unlock_user(n).map_err(pyo3::exceptions::PyValueError::new_err)
}

#[pyfunction]
fn is_locked(n: u64) -> PyResult<bool> {
    crate::locks::is_locked_user(n).map_err(pyo3::exceptions::PyValueError::new_err)
}

fn value_error(message: String) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(message)
}

#[pyfunction]
fn register_signal(n: u8, target: &str) -> PyResult<()> {
    crate::signals::register(n, target).map_err(value_error)
}

#[pyfunction]
fn signal_registered(n: u8) -> bool {
    crate::signals::registered(n)
}

#[pyfunction]
fn raise_signal(n: u8) -> PyResult<()> {
    crate::signals::raise(n).map_err(value_error)
}

#[pyfunction]
fn add_timer(n: u8, seconds: u64, iterations: i64) -> PyResult<()> {
    crate::signals::add_timer(n, seconds, iterations).map_err(value_error)
}

#[pyfunction]
fn add_cron(n: u8, minute: i64, hour: i64, day: i64, month: i64, weekday: i64) -> PyResult<()> {
    crate::signals::add_cron(n, [minute, hour, day, month, weekday]).map_err(value_error)
}

#[pyfunction]
fn add_file_monitor(n: u8, path: std::path::PathBuf) -> PyResult<()> {
    let path = path
        .to_str()
        .ok_or_else(|| value_error(format!("{} is not UTF-8", path.display())))?
        .to_owned();
    crate::signals::add_file_monitor(n, &path).map_err(value_error)
}

/// `uwsgi.parsefile(path)`: the vars of a uwsgi packet in a file (any modifier1), or
/// None (with a log line saying why), as uWSGI answers.
#[pyfunction]
fn parsefile<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let parsed = std::fs::read(&path)
        .map_err(|err| err.to_string())
        .and_then(|bytes| crate::spooler::packet_vars(&bytes).map_err(|err| err.to_string()));
    let vars = match parsed {
        Ok(vars) => vars,
        Err(why) => {
            tracing::warn!("uwsgi.parsefile({}): {why}", path.display());
            return Ok(None);
        }
    };
    let dict = PyDict::new(py);
    for (key, value) in vars {
        dict.set_item(PyBytes::new(py, &key), PyBytes::new(py, &value))?;
    }
    Ok(Some(dict))
}

#[pyfunction]
fn set_user_harakiri(seconds: u64) -> PyResult<()> {
    crate::watchdog::set_user_harakiri(seconds).map_err(value_error)
}
