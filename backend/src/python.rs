//! The embedded interpreter: start-up, the app's virtualenv and paths, and loading the app.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ngx_wsgi_config::Config;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// Starts the interpreter in this process, without Python's signal handlers, so the
/// master keeps SIGINT/SIGTERM for itself. Starts no thread: the master forks after this.
pub fn initialize(config: &Config) -> anyhow::Result<()> {
    // Environment first: the app may read it at import time, and `os.environ` is
    // snapshotted when the interpreter starts.
    for (key, value) in &config.env {
        // SAFETY: the master is single-threaded here (no tokio runtime, no Python thread
        // yet), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot chdir to \"{}\"", dir.display()))?;
    }
    Python::initialize();
    Python::attach(|py| -> anyhow::Result<()> {
        if let Some(home) = &config.home {
            activate_virtualenv(py, home)?;
        }
        let sys_path = py
            .import("sys")?
            .getattr("path")?
            .cast_into::<PyList>()
            .map_err(PyErr::from)?;
        // The working directory first, as `python app.py` and uWSGI do, then --pythonpath.
        for (index, dir) in config.pythonpath.iter().enumerate() {
            sys_path.insert(index, dir.to_string_lossy().as_ref())?;
        }
        sys_path.insert(0, "")?;
        Ok(())
    })
}

/// Makes packages installed in the virtualenv `home` importable, refusing one made from
/// another Python version (its compiled extensions would not load, or would crash).
fn activate_virtualenv(py: Python<'_>, home: &Path) -> anyhow::Result<()> {
    let cfg_path = home.join("pyvenv.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!(
            "--home \"{}\" is not a virtualenv: cannot read \"{}\"",
            home.display(),
            cfg_path.display()
        )
    })?;
    let sys = py.import("sys")?;
    let version = sys.getattr("version_info")?;
    let (major, minor): (u8, u8) = (
        version.getattr("major")?.extract()?,
        version.getattr("minor")?.extract()?,
    );
    let ours = format!("{major}.{minor}");
    let venv_version = cfg
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| matches!(key.trim(), "version" | "version_info"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    if !(venv_version == ours || venv_version.starts_with(&format!("{ours}."))) {
        bail!(
            "virtualenv \"{}\" was made with Python {} but ngx-wsgi embeds Python {ours}: \
             recreate it with \"python{ours} -m venv {}\"",
            home.display(),
            if venv_version.is_empty() {
                "of unknown version".to_string()
            } else {
                venv_version
            },
            home.display()
        );
    }
    let site_packages = home.join(format!("lib/python{ours}/site-packages"));
    let home_str = home.to_string_lossy();
    sys.setattr("prefix", home_str.as_ref())?;
    sys.setattr("exec_prefix", home_str.as_ref())?;
    py.import("site")?
        .call_method1("addsitedir", (site_packages.to_string_lossy().as_ref(),))?;
    Ok(())
}

/// Imports the app named by the config and returns the WSGI callable.
///
/// Errors carry the Python traceback, ready for one log line.
pub fn load_app(py: Python<'_>, config: &Config) -> anyhow::Result<Py<PyAny>> {
    let (namespace, callable, origin) = if let Some(file) = &config.wsgi_file {
        (
            load_file(py, file)?,
            config.callable.as_str(),
            format!("\"{}\"", file.display()),
        )
    } else if let Some((module, callable)) = config.module_and_callable() {
        let module_obj = py.import(module).map_err(|err| {
            anyhow::anyhow!(
                "cannot import module \"{module}\": {}",
                format_exception(py, &err)
            )
        })?;
        (
            module_obj.into_any(),
            callable,
            format!("module \"{module}\""),
        )
    } else {
        bail!("no app to serve: give --wsgi-file FILE or --module MODULE");
    };
    let app = namespace.getattr(callable).map_err(|_| {
        anyhow::anyhow!(
            "{origin} has no callable \"{callable}\" (set --callable, or --module {}:NAME)",
            config
                .module
                .as_deref()
                .map(|m| m.split(':').next().unwrap_or(m))
                .unwrap_or("MODULE")
        )
    })?;
    if !app.is_callable() {
        bail!(
            "\"{callable}\" in {origin} is not callable (it is a {})",
            app.get_type().name()?
        );
    }
    Ok(app.unbind())
}

/// Runs a Python file as the `__main__`-less module `uwsgi_file_<name>`, as uWSGI does.
fn load_file<'py>(py: Python<'py>, file: &Path) -> anyhow::Result<Bound<'py, PyAny>> {
    let path: PathBuf = std::fs::canonicalize(file)
        .with_context(|| format!("cannot open --wsgi-file \"{}\"", file.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().replace(['.', '-'], "_"))
        .unwrap_or_default();
    let module_name = format!("uwsgi_file_{stem}");
    let importlib = py.import("importlib.util")?;
    let path_str = path.to_string_lossy();
    let run = || -> PyResult<Bound<'py, PyAny>> {
        let spec =
            importlib.call_method1("spec_from_file_location", (&module_name, path_str.as_ref()))?;
        let module = importlib.call_method1("module_from_spec", (&spec,))?;
        py.import("sys")?
            .getattr("modules")?
            .set_item(&module_name, &module)?;
        // The file's directory is importable from it, as with `python app.py`.
        if let Some(dir) = path.parent() {
            py.import("sys")?
                .getattr("path")?
                .call_method1("insert", (1, dir.to_string_lossy().as_ref()))?;
        }
        spec.getattr("loader")?
            .call_method1("exec_module", (&module,))?;
        Ok(module)
    };
    run().map_err(|err| {
        anyhow::anyhow!(
            "cannot load --wsgi-file \"{}\": {}",
            path.display(),
            format_exception(py, &err)
        )
    })
}

/// A Python exception with its traceback, as Python prints it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        // Type, value and traceback apart: on Python 3.11 the value does not carry its
        // traceback until it is raised again.
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let text: String = PyModule::import(py, "builtins")?
            .getattr("str")?
            .call_method1("join", ("", lines))?
            .extract()?;
        Ok(text)
    })();
    formatted
        .unwrap_or_else(|_| err.to_string())
        .trim_end()
        .to_string()
}

/// Forks through Python's `os.fork()`, so CPython runs its at-fork handlers (locks,
/// thread states) exactly as for a Python program that forks. Returns the child's pid in
/// the parent and 0 in the child.
pub fn fork(py: Python<'_>) -> PyResult<i32> {
    py.import("os")?.call_method0("fork")?.extract()
}
