//! Running the daemon inside Debian's own Python executable.
//!
//! Debian builds `/usr/bin/python3.X` with the interpreter linked in statically, with
//! profile-guided and link-time optimisation; `libpython3.X.so`, which the `ngx-wsgi`
//! executable links, is compiled as position-independent code without link-time
//! optimisation, and runs the same Python code in about 18% more instructions
//! (`bench/interpreter.sh`). So the daemon is also built as an extension module,
//! `ngx_wsgi_host.so` (`make build`), and when that file is installed beside the
//! executable, the executable replaces itself, before it does anything else, with the
//! interpreter the daemon was built for, which loads the module and runs the daemon in
//! it (as uWSGI's `pyuwsgi` wheel does). Debian's Python security updates reach it as
//! they reach the shared library.
//!
//! The process is the same one (same pid: systemd, a supervisor and `--pidfile` see no
//! difference), shows itself as the `ngx-wsgi` command it was started as, and the daemon
//! runs in it as it does in the executable: the bootstrap leaves the interpreter as the
//! executable starts it (no signal handler of Python's, `sys.argv` and `sys.path` as
//! there; `tests/test_python_host.py` compares them), and the process ends without
//! finalizing the interpreter. Python's own start-up is `python3.X`'s: a C or POSIX locale
//! is coerced to C.UTF-8 (PEP 538 and 540, as for any Python program), which the
//! executable's interpreter repeats (`python::pre_initialize_as_python3`). What differs is
//! `sys.orig_argv`, which holds the bootstrap's command line.
//! `NGX_WSGI_PYTHON_HOST=off` keeps the daemon in the executable; a path there names
//! the module to load instead of the installed one. The two must come from one build
//! (`BUILD_ID`): a module left from another is refused, not run.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use ngx_wsgi_config::Config;
use pyo3::prelude::*;

// The interpreter the daemon was built for: the one whose ABI the module has.
use crate::python::EXECUTABLE as PYTHON;

/// The extension module's file name; its entry is `PyInit_ngx_wsgi_host` ([`ngx_wsgi_host`]).
pub const MODULE_FILE: &str = "ngx_wsgi_host.so";

/// `off`, or the path of the module to load.
pub const HOST_ENV: &str = "NGX_WSGI_PYTHON_HOST";

/// What the interpreter runs: load the module from its path, start the daemon with the
/// executable's path and arguments. The same process as an embedded interpreter's: no
/// Python signal handler (SIGINT is the daemon's; SIGXFSZ, which Python ignores, kills
/// as in the executable and in the programs the daemon starts), `sys.argv` `['']`, nothing of the
/// command line on `sys.path` (the daemon puts the working directory first itself), and
/// no name of the bootstrap's left in `__main__`.
const BOOTSTRAP: &str = "\
def bootstrap():
    import importlib.machinery, importlib.util, signal, sys
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    if not getattr(sys.flags, 'safe_path', False):
        del sys.path[0]
    module_path, daemon_argv = sys.argv[1], sys.argv[2:]
    sys.argv[:] = ['']
    try:
        loader = importlib.machinery.ExtensionFileLoader('ngx_wsgi_host', module_path)
        spec = importlib.util.spec_from_file_location('ngx_wsgi_host', module_path, loader=loader)
        host = importlib.util.module_from_spec(spec)
        loader.exec_module(host)
    except Exception as err:
        sys.exit(f'ngx-wsgi: cannot load the daemon from {module_path}: {err} '
                 f'(NGX_WSGI_PYTHON_HOST=off runs it in the executable)')
    del globals()['bootstrap']
    host.run(module_path, daemon_argv)
bootstrap()
";

/// The config's `env`, which the executable sets before the exec so that the interpreter
/// starts with it, as the embedded one does, and each variable's value before: the
/// daemon inside Python reads its arguments again, and must read them as the executable
/// did, before `env` applied (`$(VAR)`, `if-env`).
const ENV_BEFORE_CONFIG: &str = "NGX_WSGI_ENV_BEFORE_CONFIG";

/// Replaces this process with the interpreter running the daemon from the extension
/// module, when it is installed beside `exe` (`exe`'s directory, or `../lib/ngx-wsgi/`
/// from there); returns when it is not, or when `NGX_WSGI_PYTHON_HOST=off`, and the
/// daemon then runs in the executable. When the interpreter cannot be started, that is
/// said on stderr and the daemon runs in the executable too. An error: the module
/// `NGX_WSGI_PYTHON_HOST` names is not a file. `shown_as` is the program name the
/// executable was started as, which the process goes on showing.
pub fn run_inside_python_if_installed(
    exe: &Path,
    shown_as: &str,
    args: &[String],
    config: &Config,
) -> Result<(), String> {
    let module = match std::env::var_os(HOST_ENV).filter(|value| !value.is_empty()) {
        Some(value) if value == "off" => return Ok(()),
        // Made absolute for the reloads, which run the executable again after `chdir`.
        Some(path) => match std::fs::canonicalize(&path) {
            Ok(module) if module.is_file() => {
                // SAFETY: the executable is single-threaded until the exec.
                unsafe { std::env::set_var(HOST_ENV, &module) };
                module
            }
            _ => {
                return Err(format!(
                    "{HOST_ENV}={} is not a file: it is \"off\" or the path of {MODULE_FILE}",
                    path.to_string_lossy()
                ))
            }
        },
        None => {
            let Some(dir) = exe.parent() else {
                return Ok(());
            };
            let installed = [
                dir.join(MODULE_FILE),
                dir.join("../lib/ngx-wsgi").join(MODULE_FILE),
            ];
            match installed.into_iter().find(|path| path.is_file()) {
                Some(path) => path,
                None => return Ok(()),
            }
        }
    };
    let before: serde_json::Map<String, serde_json::Value> = config
        .env
        .iter()
        .map(|(key, _)| (key.clone(), std::env::var(key).ok().into()))
        .collect();
    // SAFETY: the executable is single-threaded until the exec (no runtime, no worker).
    unsafe {
        std::env::set_var(
            ENV_BEFORE_CONFIG,
            serde_json::Value::from(before).to_string(),
        )
    };
    crate::python::set_app_environment(config);
    let err = exec_python(&module, exe, shown_as, args);
    eprintln!(
        "ngx-wsgi: cannot run the daemon inside {PYTHON} with \"{}\": {err}; \
         running it with the interpreter linked into ngx-wsgi",
        module.display()
    );
    Ok(())
}

/// Sets back the variables the config's `env` changed to what they were before the
/// executable set them (`ENV_BEFORE_CONFIG`, which goes, from `os.environ` too); the
/// master sets them again before the app loads (`python::initialize`), and `os.environ`
/// has had them since Python started.
fn environment_before_config(py: Python<'_>) -> PyResult<()> {
    let Some(before) = std::env::var_os(ENV_BEFORE_CONFIG) else {
        return Ok(());
    };
    py.import("os")?
        .getattr("environ")?
        .call_method1("pop", (ENV_BEFORE_CONFIG, py.None()))?;
    let before: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(before.as_encoded_bytes()).unwrap_or_default();
    for (key, value) in before {
        // SAFETY: the interpreter runs the bootstrap on its only thread: nothing else
        // reads the environment.
        unsafe {
            match value.as_str() {
                Some(value) => std::env::set_var(&key, value),
                None => std::env::remove_var(&key),
            }
        }
    }
    Ok(())
}

/// `execv` of the interpreter with the bootstrap; returns only its error. After the
/// bootstrap: the module, then what `run` takes (the build, the executable, the name it
/// was started as, its arguments).
fn exec_python(module: &Path, exe: &Path, shown_as: &str, args: &[String]) -> String {
    let argv: Result<Vec<CString>, _> = [PYTHON.as_bytes(), b"-c", BOOTSTRAP.as_bytes()]
        .into_iter()
        .chain([module, exe].map(|path| path.as_os_str().as_encoded_bytes()))
        .chain([BUILD_ID.as_bytes(), shown_as.as_bytes()])
        .chain(args.iter().map(|arg| arg.as_bytes()))
        .map(CString::new)
        .collect();
    let argv = match argv {
        Ok(argv) => argv,
        Err(err) => return err.to_string(),
    };
    match nix::unistd::execv(&argv[0], &argv) {
        Ok(never) => match never {},
        Err(errno) => errno.desc().to_string(),
    }
}

/// The daemon's sources, hashed (`build.rs`): the executable and the module must agree.
pub const BUILD_ID: &str = env!("NGX_WSGI_BUILD_ID");

/// The daemon, run by the bootstrap: `argv` is the executable's path, the build it is
/// from, the name it was started as, then its arguments. Never returns: the process
/// exits with the daemon's status, as the executable does (101 for a panic), without
/// finalizing the interpreter.
#[pyfunction]
fn run(py: Python<'_>, module_path: &str, argv: Vec<String>) -> PyResult<()> {
    let [exe, build, shown_as, args @ ..] = argv.as_slice() else {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "run(module_path, [executable, build, shown as, arguments...])",
        ));
    };
    if build != BUILD_ID {
        eprintln!(
            "ngx-wsgi: {module_path} is from other sources than {exe} (build {BUILD_ID} \
             against {build}): install both from one build (make build), or set \
             {HOST_ENV}=off to run the daemon in the executable"
        );
        std::process::exit(1);
    }
    environment_before_config(py)?;
    crate::procname::show_as_command(shown_as, args, &[PYTHON.as_bytes(), b"\0-c\0"].concat());
    let start = crate::Start::InPython {
        exe: PathBuf::from(exe),
    };
    let args = args.to_vec();
    // The daemon takes the GIL where it runs Python, as in the executable, where the
    // interpreter is started with the GIL released. A panic must not unwind into Python,
    // which would finalize the interpreter, in a worker too.
    let status =
        py.detach(|| std::panic::catch_unwind(move || crate::main(start, args)).unwrap_or(101));
    std::process::exit(status.into())
}

/// The module the bootstrap loads.
#[pymodule]
pub fn ngx_wsgi_host(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(run, module)?)
}
