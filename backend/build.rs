//! Links the Python interpreter into the daemon when the build asks for it.
//!
//! By default pyo3 links Debian's shared `libpython3.X.so`, so that Debian's Python
//! security updates reach the daemon without a rebuild. `make PYTHON_LINK=static` hands
//! pyo3 a config (scripts/pyo3-static-config.sh) with `shared=false` and
//! `suppress_build_script_link_lines=true`: this script then links `libpython3.X.a` the
//! way `/usr/bin/python3.X` is linked (README, "Linking Python statically"): the whole
//! archive, since extension modules (lib-dynload, wheels) call interpreter functions the
//! daemon itself never does; with its symbols exported to them; as a position-dependent
//! executable, since Debian's archive is not position-independent code; and with the
//! libraries the interpreter's built-in modules use (sysconfig's MODLIBS, LIBS, SYSLIBS).
//!
//! It also names, as `NGX_WSGI_PYTHON_EXECUTABLE`, the executable of the interpreter the
//! daemon is built for, which runs the daemon as an extension module (`python_host.rs`),
//! and, as `NGX_WSGI_BUILD_ID`, a hash of the daemon's sources (this crate's and the
//! workspace crates it uses): the executable and the module, built by two cargo runs,
//! must come from the same sources.

use std::collections::BTreeMap;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    // The interpreter pyo3 builds for, found as pyo3 finds it.
    let python = pyo3_build_config::get()
        .executable()
        .unwrap_or("python3")
        .to_owned();
    println!(
        "cargo:rustc-env=NGX_WSGI_PYTHON_EXECUTABLE={}",
        python_executable(&python)
    );
    println!("cargo:rustc-env=NGX_WSGI_BUILD_ID={:016x}", sources_hash());
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    let Some(path) = std::env::var_os("PYO3_CONFIG_FILE") else {
        return;
    };
    println!("cargo:rerun-if-changed={}", path.to_string_lossy());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("PYO3_CONFIG_FILE {}: {e}", path.to_string_lossy()));
    let config: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    if config.get("shared") != Some(&"false") {
        return;
    }
    let want = |key: &str| {
        *config.get(key).unwrap_or_else(|| {
            panic!(
                "PYO3_CONFIG_FILE {} links Python statically but names no {key}",
                path.to_string_lossy()
            )
        })
    };
    let (lib_dir, lib_name, python) = (want("lib_dir"), want("lib_name"), want("executable"));
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=static:+whole-archive,-bundle={lib_name}");
    for lib in interpreter_libraries(python) {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic");
    println!("cargo:rustc-link-arg=-no-pie");
}

/// A hash of every file of the daemon's sources, by path and content.
fn sources_hash() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut files = Vec::new();
    for dir in ["src", "Cargo.toml", "../config", "../uwsgi-proto"] {
        println!("cargo:rerun-if-changed={dir}");
        collect_files(std::path::Path::new(dir), &mut files);
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in files {
        path.hash(&mut hasher);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(path: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            collect_files(&entry.expect("a directory entry").path(), files);
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
}

/// The interpreter's own executable, links resolved (`/usr/bin/python3` is
/// `/usr/bin/python3.11`; a virtualenv's `python` is the interpreter it was made from).
fn python_executable(python: &str) -> String {
    python_says(
        python,
        "import os, sys; print(os.path.realpath(sys.executable))",
        "its executable",
    )
    .trim()
    .to_owned()
}

/// What `python -c script` prints; `what` names it in a failure.
fn python_says(python: &str, script: &str, what: &str) -> String {
    let out = Command::new(python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("running {python} for {what}: {e}"));
    assert!(
        out.status.success(),
        "{python} could not say {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-l` libraries `python` says its static library needs, each once, in order.
fn interpreter_libraries(python: &str) -> Vec<String> {
    let script = "import sysconfig\n\
                  print(' '.join(sysconfig.get_config_var(v) or '' for v in ('MODLIBS', 'LIBS', 'SYSLIBS')))";
    let out = python_says(python, script, "its link libraries");
    let mut libs: Vec<String> = Vec::new();
    for lib in out
        .split_whitespace()
        .filter_map(|flag| flag.strip_prefix("-l"))
    {
        if !libs.iter().any(|seen| seen == lib) {
            libs.push(lib.to_owned());
        }
    }
    libs
}
