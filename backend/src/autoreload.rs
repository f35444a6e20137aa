//! `py-autoreload N`: a worker thread that looks every N seconds at the files of the
//! Python modules the app has imported, and reloads the daemon (SIGHUP to the master)
//! when one changed. For development, as in uWSGI.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use pyo3::prelude::*;

/// Starts the watcher thread of this worker.
/// `files`: looked at besides the modules (the wsgi-file, which need not be one).
pub fn spawn(every: Duration, ignore: Vec<String>, files: Vec<PathBuf>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("py-autoreload".into())
        .spawn(move || {
            let mut seen: HashMap<PathBuf, SystemTime> = HashMap::new();
            loop {
                std::thread::sleep(every);
                let changed = changed_file(&files, &mut seen)
                    .or_else(|| Python::attach(|py| changed_module(py, &mut seen, &ignore)));
                if let Some(changed) = changed {
                    let master = nix::unistd::getppid();
                    if master.as_raw() <= 1 {
                        return; // the master is gone: this worker is on its way out
                    }
                    tracing::info!(
                        "py-autoreload: \"{}\" changed: reloading",
                        changed.display()
                    );
                    // Watching goes on: if the master refuses the reload (the new code does
                    // not import), the next change is seen too.
                    let _ = nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGHUP);
                }
            }
        })
        .context("cannot start the py-autoreload thread")?;
    Ok(())
}

/// The first of `files` whose modification time changed since the last look.
fn changed_file(files: &[PathBuf], seen: &mut HashMap<PathBuf, SystemTime>) -> Option<PathBuf> {
    let mut changed = None;
    for path in files {
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            continue;
        };
        match seen.insert(path.clone(), modified) {
            Some(before) if before != modified && changed.is_none() => changed = Some(path.clone()),
            _ => {}
        }
    }
    changed
}

/// The first imported module file whose modification time changed since the last look.
fn changed_module(
    py: Python<'_>,
    seen: &mut HashMap<PathBuf, SystemTime>,
    ignore: &[String],
) -> Option<PathBuf> {
    let modules = py.import("sys").ok()?.getattr("modules").ok()?;
    // A copy: the app's threads may import while we look.
    let items = modules.call_method0("copy").ok()?;
    let items = items.cast::<pyo3::types::PyDict>().ok()?;
    let mut changed = None;
    for (name, module) in items.iter() {
        let name: String = name.extract().unwrap_or_default();
        if ignore.contains(&name) {
            continue;
        }
        let Ok(file) = module.getattr("__file__") else {
            continue;
        };
        let Ok(file) = file.extract::<String>() else {
            continue;
        };
        let path = PathBuf::from(file);
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        match seen.insert(path.clone(), modified) {
            Some(before) if before != modified && changed.is_none() => changed = Some(path),
            _ => {}
        }
    }
    changed
}
