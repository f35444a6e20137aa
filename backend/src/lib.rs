//! `ngx-wsgi`: hosts a Python WSGI app behind the uwsgi protocol (for nginx) and HTTP.
//!
//! The daemon is this library, run two ways: by the `ngx-wsgi` executable (`main.rs`),
//! with the interpreter linked in, or inside Debian's own `python3.X` executable, loaded
//! as an extension module (`python_host.rs`), which the executable switches to when that
//! module is installed beside it.

mod autoreload;
mod cache;
mod cheaper;
mod conn;
mod context;
mod cron_jobs;
mod daemons;
mod fifo;
mod handover;
mod helpers;
mod http;
mod idle;
mod listeners;
mod locks;
mod logging;
mod master;
mod mules;
mod outcome;
mod process;
mod procname;
mod python;
mod python_host;
mod reqlog;
mod shm;
mod signals;
mod spooler;
mod static_files;
mod stats;
mod systemd;
mod uwsgi;
mod uwsgi_api;
mod watchdog;
mod worker;
mod wsgi;

use std::path::PathBuf;

/// How this process came to run the daemon.
pub enum Start {
    /// As the `ngx-wsgi` executable, started as `program` (its `argv[0]`), with the
    /// interpreter linked in: it runs the daemon inside Debian's Python when the
    /// extension module is installed (`python_host`).
    Executable { program: String },
    /// Inside Python, from the extension module; `exe` is the `ngx-wsgi` executable that
    /// started it, which a reload runs again.
    InPython { exe: PathBuf },
}

/// The daemon's command line (the arguments after the program name); returns the exit
/// status.
pub fn main(start: Start, args: Vec<String>) -> u8 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", ngx_wsgi_config::help_text());
        return 0;
    }
    if args.iter().any(|a| a == "--version") {
        // The build: which sources, as the extension module must say too (`python_host`).
        println!(
            "ngx-wsgi {} (build {})",
            env!("CARGO_PKG_VERSION"),
            python_host::BUILD_ID
        );
        return 0;
    }
    let parsed = match ngx_wsgi_config::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("ngx-wsgi: {error}");
            }
            if !args.iter().any(|a| a == "--check-config") {
                eprintln!("ngx-wsgi: see \"ngx-wsgi --help\"");
            }
            return 2;
        }
    };
    if parsed.check_only {
        for note in &parsed.notes {
            eprintln!("ngx-wsgi: note: {note}");
        }
        print!("{}", parsed.config.to_toml());
        return 0;
    }
    // Without /proc, say, there is no executable to find: no move into Python, and a
    // reload is refused with that reason.
    let exe = match start {
        Start::InPython { exe } => Some(exe),
        Start::Executable { program } => {
            let exe = std::env::current_exe().ok();
            if let Some(exe) = &exe {
                // Returns only when the daemon stays in this executable.
                let moved = python_host::run_inside_python_if_installed(
                    exe,
                    &program,
                    &args,
                    &parsed.config,
                );
                if let Err(err) = moved {
                    eprintln!("ngx-wsgi: {err}");
                    return 1;
                }
            }
            exe
        }
    };
    let mut config = parsed.config;
    if let Some(logfile) = config.daemonize.clone() {
        if let Err(err) = daemonize() {
            eprintln!("ngx-wsgi: daemonize: {err:#}");
            return 1;
        }
        config.logto.get_or_insert(logfile);
    }
    if let Err(err) = logging::init(&config) {
        eprintln!("ngx-wsgi: {err:#}");
        return 1;
    }
    for note in &parsed.notes {
        tracing::info!("{note}");
    }
    if config.show_config {
        tracing::info!("show-config: the effective config\n{}", config.to_toml());
    }
    if std::env::var_os(master::CHECK_APP_ENV).is_some() {
        return master::check_app(&config) as u8;
    }
    match master::run(config, master::Invocation { exe, args }) {
        Ok(code) => code as u8,
        Err(err) => {
            tracing::error!("{err:#}");
            1
        }
    }
}

/// `daemonize`: goes on in a child in a session of its own; the command returns at once.
/// A reload's re-exec is already detached.
fn daemonize() -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::unistd::{fork, setsid, ForkResult};
    if std::env::var_os(listeners::INHERITED_FDS_ENV).is_some() {
        return Ok(());
    }
    // SAFETY: no thread has been started, and Python is not initialized yet or (the
    // daemon inside Python's executable) has started none and is not running (the GIL
    // is released, `python_host::run`): the child is a full copy of a single-threaded
    // process.
    match unsafe { fork() }.context("fork()")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid()")?;
    let null = std::fs::File::open("/dev/null").context("/dev/null")?;
    nix::unistd::dup2_stdin(&null).context("dup2 onto stdin")?;
    Ok(())
}
