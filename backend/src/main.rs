//! `ngx-wsgi`: hosts a Python WSGI app behind the uwsgi protocol (for nginx) and HTTP.

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

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", ngx_wsgi_config::help_text());
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version") {
        println!("ngx-wsgi {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
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
            return ExitCode::from(2);
        }
    };
    if parsed.check_only {
        for note in &parsed.notes {
            eprintln!("ngx-wsgi: note: {note}");
        }
        print!("{}", parsed.config.to_toml());
        return ExitCode::SUCCESS;
    }
    let mut config = parsed.config;
    if let Some(logfile) = config.daemonize.clone() {
        if let Err(err) = daemonize() {
            eprintln!("ngx-wsgi: daemonize: {err:#}");
            return ExitCode::FAILURE;
        }
        config.logto.get_or_insert(logfile);
    }
    if let Err(err) = logging::init(&config) {
        eprintln!("ngx-wsgi: {err:#}");
        return ExitCode::FAILURE;
    }
    for note in &parsed.notes {
        tracing::info!("{note}");
    }
    if config.show_config {
        tracing::info!("show-config: the effective config\n{}", config.to_toml());
    }
    if std::env::var_os(master::CHECK_APP_ENV).is_some() {
        return ExitCode::from(master::check_app(&config) as u8);
    }
    match master::run(config, args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
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
    // SAFETY: no thread has been started and Python is not initialized yet: the child
    // is a full copy of a single-threaded process.
    match unsafe { fork() }.context("fork()")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid()")?;
    let null = std::fs::File::open("/dev/null").context("/dev/null")?;
    nix::unistd::dup2_stdin(&null).context("dup2 onto stdin")?;
    Ok(())
}
