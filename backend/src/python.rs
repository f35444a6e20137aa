//! The embedded interpreter: start-up, the app's virtualenv and paths, and loading the app.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ngx_wsgi_config::Config;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The executable of the interpreter the daemon is built for (`build.rs`), links resolved:
/// `sys.executable` for the app, unless its virtualenv has its own.
pub const EXECUTABLE: &str = env!("NGX_WSGI_PYTHON_EXECUTABLE");

/// Starts the interpreter in this process, without Python's signal handlers, so the
/// master keeps SIGINT/SIGTERM for itself. Starts no thread: the master forks after this.
/// `install_api` makes the `uwsgi` module importable (`uwsgi_api::install`), once the
/// paths are set and before the app is imported.
pub fn initialize(
    config: &Config,
    install_api: impl FnOnce(Python<'_>, &Config) -> PyResult<()>,
) -> anyhow::Result<()> {
    set_app_environment(config);
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot chdir to \"{}\"", dir.display()))?;
    }
    pre_initialize_as_python3()?;
    Python::initialize();
    Python::attach(|py| -> anyhow::Result<()> {
        // What `subprocess` and `multiprocessing` start as Python: this interpreter, not
        // whatever `python3` the PATH has first (what an embedded one guesses).
        py.import("sys")?.setattr("executable", EXECUTABLE)?;
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
        install_api(py, config)?;
        // `pyargv`: sys.argv as uWSGI gives it, the program name and the words given.
        if let Some(pyargv) = &config.pyargv {
            let mut argv = vec!["ngx-wsgi"];
            argv.extend(pyargv.split_whitespace());
            py.import("sys")?.setattr("argv", argv)?;
        }
        Ok(())
    })
}

/// Prepares the interpreter's start as `python3.X` starts it, where the daemon does not run
/// inside it (`NGX_WSGI_PYTHON_HOST=off`, the static build): a C or POSIX locale
/// (systemd's default without `LANG`) is coerced to C.UTF-8, or else the UTF-8 mode is on
/// (PEP 538, 540), so files open as UTF-8 by default, as they do inside `python3.X`. An
/// embedder's default keeps the locale as it is: ASCII there, and `UnicodeEncodeError`
/// for the first accented letter an app writes to a file. Nothing to do inside Python,
/// which started so.
fn pre_initialize_as_python3() -> anyhow::Result<()> {
    use pyo3::ffi;
    // SAFETY: asks whether an interpreter runs in this process; callable before any.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    let mut preconfig = std::mem::MaybeUninit::<ffi::PyPreConfig>::uninit();
    // SAFETY: fills every field of the struct it is given (Python's C API).
    unsafe { ffi::PyPreConfig_InitPythonConfig(preconfig.as_mut_ptr()) };
    // SAFETY: initialized by the call above.
    let mut preconfig = unsafe { preconfig.assume_init() };
    // No command line of Python's to read: the daemon read its own.
    preconfig.parse_argv = 0;
    // SAFETY: called once, before the interpreter starts (checked above), from the one
    // thread the master has; the struct is read during the call only.
    let status = unsafe { ffi::Py_PreInitialize(&preconfig) };
    // SAFETY: reads the status the call returned.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        bail!("cannot prepare the Python interpreter's start (its locale and UTF-8 mode)");
    }
    Ok(())
}

/// Sets the config's `env` in this process, before the interpreter starts: the app may
/// read it at import time, and `os.environ` is snapshotted when the interpreter starts.
pub fn set_app_environment(config: &Config) {
    for (key, value) in &config.env {
        // SAFETY: called while the process is single-threaded (before the interpreter,
        // the runtimes and the workers), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
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
            "virtualenv \"{}\" was made with Python {} but ngx-wsgi runs Python {ours}: \
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
    // As the virtualenv's own `python` has it, when it has one.
    let venv_python = home.join("bin/python");
    if venv_python.exists() {
        sys.setattr("executable", venv_python.to_string_lossy().as_ref())?;
    }
    py.import("site")?
        .call_method1("addsitedir", (site_packages.to_string_lossy().as_ref(),))?;
    Ok(())
}

/// Imports the app named by the config and returns the WSGI callable: the app itself, or,
/// with `mount`, a [`MountedApps`] dispatching to the app of each URL prefix.
///
/// Errors carry the Python traceback, ready for one log line.
pub fn load_app(py: Python<'_>, config: &Config) -> anyhow::Result<Py<PyAny>> {
    let default = match (&config.wsgi_file, config.module_and_callable()) {
        (None, None) => None,
        _ => Some(load_one(
            py,
            config,
            config.wsgi_file.as_deref(),
            config.module_and_callable(),
        )?),
    };
    let mounts = config.mounts();
    if mounts.is_empty() {
        return default.ok_or_else(|| {
            anyhow::anyhow!("no app to serve: give --wsgi-file FILE or --module MODULE")
        });
    }
    let mut apps = Vec::new();
    for (point, app) in mounts {
        // uWSGI's rule: a .py or .wsgi file (or a path), else a module.
        let is_file = app.ends_with(".py") || app.ends_with(".wsgi") || app.contains('/');
        let loaded = if is_file {
            load_one(py, config, Some(Path::new(&app)), None)
        } else {
            let (module, callable) = app
                .split_once(':')
                .unwrap_or((&app, config.callable.as_str()));
            load_one(py, config, None, Some((module, callable)))
        }
        .with_context(|| format!("mount \"{point}={app}\""))?;
        tracing::info!("mounted \"{app}\" at \"{point}\"");
        apps.push((point, loaded));
    }
    // Longest mountpoint first: the first that matches is the most specific.
    apps.sort_by_key(|(point, _)| std::cmp::Reverse(point.len()));
    let dispatcher = MountedApps {
        apps,
        default,
        manage_script_name: config.manage_script_name,
    };
    Ok(Py::new(py, dispatcher)?.into_any())
}

/// `mount`: the WSGI callable that picks the app of a request by its URL prefix.
#[pyclass(module = "ngx_wsgi")]
pub struct MountedApps {
    /// (mountpoint, app), longest mountpoint first.
    apps: Vec<(String, Py<PyAny>)>,
    /// The wsgi-file or module app, for requests no mountpoint matches.
    default: Option<Py<PyAny>>,
    manage_script_name: bool,
}

#[pymethods]
impl MountedApps {
    fn __call__<'py>(
        &self,
        environ: &Bound<'py, pyo3::types::PyDict>,
        start_response: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = environ.py();
        let get = |key: &str| -> PyResult<String> {
            Ok(match environ.get_item(key)? {
                Some(value) => value.extract()?,
                None => String::new(),
            })
        };
        let app = if self.manage_script_name {
            let path = get("PATH_INFO")?;
            let found = self.apps.iter().find(|(point, _)| {
                path.strip_prefix(point.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            });
            if let Some((point, _)) = found {
                environ.set_item("SCRIPT_NAME", point)?;
                environ.set_item("PATH_INFO", &path[point.len()..])?;
            }
            found.map(|(_, app)| app)
        } else {
            // As uWSGI without manage-script-name: the SCRIPT_NAME nginx sends names it.
            let script_name = get("SCRIPT_NAME")?;
            let script_name = script_name.trim_end_matches('/');
            self.apps
                .iter()
                .find(|(point, _)| point == script_name)
                .map(|(_, app)| app)
        };
        if let Some(app) = app.or(self.default.as_ref()) {
            return app.bind(py).call1((environ, start_response));
        }
        let path = get("PATH_INFO")?;
        tracing::warn!(
            "no app is mounted for \"{path}\" (SCRIPT_NAME \"{}\")",
            get("SCRIPT_NAME")?
        );
        let headers = vec![("Content-Type", "text/plain")];
        start_response.call1(("404 Not Found", headers))?;
        let body = pyo3::types::PyBytes::new(py, b"no app is mounted at this path\n");
        Ok(pyo3::types::PyList::new(py, [body])?.into_any())
    }
}

/// Imports one app, from a file or a module, and returns its callable.
fn load_one(
    py: Python<'_>,
    config: &Config,
    file: Option<&Path>,
    module: Option<(&str, &str)>,
) -> anyhow::Result<Py<PyAny>> {
    let (namespace, callable, origin) = if let Some(file) = file {
        (
            load_file(py, file)?,
            config.callable.as_str(),
            format!("\"{}\"", file.display()),
        )
    } else if let Some((module, callable)) = module {
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
    // Two mounted files of one name (a/app.py, b/app.py) get two modules.
    let taken = |name: &str| -> bool {
        py.import("sys")
            .and_then(|sys| sys.getattr("modules"))
            .and_then(|modules| modules.contains(name))
            .unwrap_or(false)
    };
    let mut module_name = format!("uwsgi_file_{stem}");
    let mut n = 1;
    while taken(&module_name) {
        n += 1;
        module_name = format!("uwsgi_file_{stem}_{n}");
    }
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
