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
//! runs in it exactly as it does in the executable: the interpreter is started the way
//! the executable starts it (no signal handler of Python's, `sys.argv` and `sys.path`
//! as there), and the process ends without finalizing the interpreter.
//! `NGX_WSGI_PYTHON_HOST=off` keeps the daemon in the executable; a path there names
//! the module to load instead of the installed one.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use ngx_wsgi_config::Config;
use pyo3::prelude::*;

/// The extension module's file name; its `PyInit_` function is [`PyInit_ngx_wsgi_host`].
pub const MODULE_FILE: &str = "ngx_wsgi_host.so";

/// `off`, or the path of the module to load.
pub const HOST_ENV: &str = "NGX_WSGI_PYTHON_HOST";

/// The interpreter the daemon was built for: the one whose ABI the module has.
const PYTHON: &str = crate::python::EXECUTABLE;

/// What the interpreter runs: load the module from its path, start the daemon with the
/// executable's path and arguments. The same process as an embedded interpreter's: no
/// Python signal handler (SIGINT is the daemon's), `sys.argv` `['']`, nothing of the
/// command line on `sys.path` (the daemon puts the working directory first itself), and
/// no name of the bootstrap's left in `__main__`.
const BOOTSTRAP: &str = "\
def bootstrap():
    import importlib.machinery, importlib.util, signal, sys
    signal.signal(signal.SIGINT, signal.SIG_DFL)
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
    host.run(daemon_argv)
bootstrap()
";

/// Replaces this process with the interpreter running the daemon from the extension
/// module, when it is installed beside `exe` (`exe`'s directory, or `../lib/ngx-wsgi/`
/// from there); returns when it is not, or when `NGX_WSGI_PYTHON_HOST=off`, and the
/// daemon then runs in the executable. When the interpreter cannot be started, that is
/// said on stderr and the daemon runs in the executable too. An error: the module
/// `NGX_WSGI_PYTHON_HOST` names is not a file.
pub fn run_inside_python_if_installed(
    exe: &Path,
    args: &[String],
    config: &Config,
) -> Result<(), String> {
    let module = match std::env::var_os(HOST_ENV).filter(|value| !value.is_empty()) {
        Some(value) if value == "off" => return Ok(()),
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        Some(path) => {
            return Err(format!(
                "{HOST_ENV}={} is not a file: it is \"off\" or the path of {MODULE_FILE}",
                path.to_string_lossy()
            ))
        }
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
    // The app's environment before the interpreter starts, which snapshots it in
    // `os.environ` (in the executable, `python::initialize` sets it just as early).
    crate::python::set_app_environment(config);
    let err = exec_python(&module, exe, args);
    eprintln!(
        "ngx-wsgi: cannot run the daemon inside {PYTHON} with \"{}\": {err}; \
         running it with the interpreter linked into ngx-wsgi",
        module.display()
    );
    Ok(())
}

/// `execv` of the interpreter with the bootstrap; returns only its error.
fn exec_python(module: &Path, exe: &Path, args: &[String]) -> String {
    let argv: Result<Vec<CString>, _> = [PYTHON.as_bytes(), b"-c", BOOTSTRAP.as_bytes()]
        .into_iter()
        .chain([module, exe].map(|path| path.as_os_str().as_encoded_bytes()))
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

/// The daemon, run by the bootstrap: `argv` is the executable's path, then its arguments.
/// Never returns: the process exits with the daemon's status, as the executable does,
/// without finalizing the interpreter.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let Some((exe, args)) = argv.split_first() else {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "run([executable, arguments...])",
        ));
    };
    let exe = PathBuf::from(exe);
    crate::procname::show_as_command(&exe, args, &[PYTHON.as_bytes(), b"\0-c\0"].concat());
    let args = args.to_vec();
    // The daemon takes the GIL where it runs Python, as in the executable, where the
    // interpreter is started with the GIL released.
    let status = py.detach(|| crate::main(crate::Start::InPython { exe }, args));
    std::process::exit(status.into())
}

/// The module the bootstrap loads.
#[pymodule]
pub fn ngx_wsgi_host(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(run, module)?)
}
