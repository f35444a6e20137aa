//! Attached daemons: commands the master runs beside the workers (a Celery worker, a
//! scheduler), restarts when they die, and stops with itself.
//!
//! A plain daemon is the master's child, in a process group of its own so its stop signal
//! reaches whatever it started. On a reload it is stopped like the workers and started
//! again by the new master image. A smart daemon (with a pidfile) is watched through that
//! pid instead, and left running across a reload. One that keeps dying is restarted after
//! a wait that doubles each time, up to `max_throttle` seconds.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ngx_wsgi_config::AttachedDaemon;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A daemon that ran this long before dying is restarted at once.
const STABLE_AFTER: Duration = Duration::from_secs(10);

struct Supervised {
    spec: AttachedDaemon,
    /// Our child running the command, if it is.
    child: Option<Pid>,
    started: Instant,
    /// No restart before this (throttling a daemon that keeps dying).
    next_start: Instant,
    throttle: Duration,
    touched: Vec<(PathBuf, Option<SystemTime>)>,
    /// Seen running since its last start: if it is not any more, it died.
    seen_running: bool,
}

impl Supervised {
    fn name(&self) -> &str {
        &self.spec.command
    }

    /// The daemon's pid: the one its pidfile names (smart daemons), else our child.
    fn pid(&self) -> Option<Pid> {
        match &self.spec.pidfile {
            Some(pidfile) => std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 0)
                .map(Pid::from_raw)
                .filter(|pid| kill(*pid, None).is_ok()),
            None => self.child,
        }
    }

    fn start(&mut self) {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.spec.command)
            .stdin(Stdio::null())
            // Its own process group: the stop signal reaches the whole tree it starts.
            .process_group(0);
        if let Some(dir) = &self.spec.chdir {
            command.current_dir(dir);
        }
        match command.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                tracing::info!("attached daemon started (pid {pid}): {}", self.name());
                self.child = Some(pid);
                self.started = Instant::now();
            }
            Err(err) => {
                tracing::error!("attached daemon \"{}\" cannot start: {err}", self.name());
                self.throttle_restart();
            }
        }
    }

    /// Waits longer before each restart of a daemon that keeps dying.
    fn throttle_restart(&mut self) {
        let max = Duration::from_secs(self.spec.max_throttle.max(1));
        self.throttle = if self.started.elapsed() >= STABLE_AFTER {
            Duration::ZERO
        } else {
            (self.throttle * 2).clamp(Duration::from_secs(1), max)
        };
        self.next_start = Instant::now() + self.throttle;
        if !self.throttle.is_zero() {
            tracing::warn!(
                "attached daemon \"{}\" died within {} s of its start: restarting it in {} s",
                self.name(),
                STABLE_AFTER.as_secs(),
                self.throttle.as_secs()
            );
        }
    }

    fn touched(&mut self) -> bool {
        let mut changed = false;
        for (file, seen) in &mut self.touched {
            let now = std::fs::metadata(&*file).and_then(|m| m.modified()).ok();
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            // A smart daemon's pid need not lead a group: then signal it alone.
            if killpg(pid, signal).is_err() {
                let _ = kill(pid, signal);
            }
        }
    }
}

/// The master's attached daemons.
pub struct Daemons {
    daemons: Vec<Supervised>,
}

impl Daemons {
    /// Starts every daemon the config attaches (a smart daemon whose pidfile names a live
    /// process, as after a reload, is adopted instead).
    pub fn start(specs: Vec<AttachedDaemon>) -> Daemons {
        let now = Instant::now();
        let mut daemons: Vec<Supervised> = specs
            .into_iter()
            .map(|spec| Supervised {
                touched: spec
                    .touch
                    .iter()
                    .map(|f| {
                        (
                            f.clone(),
                            std::fs::metadata(f).and_then(|m| m.modified()).ok(),
                        )
                    })
                    .collect(),
                spec,
                child: None,
                started: now,
                next_start: now,
                throttle: Duration::ZERO,
                seen_running: false,
            })
            .collect();
        for daemon in &mut daemons {
            match daemon.pid() {
                Some(pid) if daemon.spec.pidfile.is_some() => {
                    tracing::info!(
                        "attached daemon already running (pid {pid}): {}",
                        daemon.name()
                    )
                }
                _ => daemon.start(),
            }
        }
        Daemons { daemons }
    }

    /// Called with every child the master reaps that is not a worker: true if it was one
    /// of the daemons (restarted by the next [`Daemons::check`]).
    pub fn exited(&mut self, pid: Pid, how: &str) -> bool {
        let Some(daemon) = self.daemons.iter_mut().find(|d| d.child == Some(pid)) else {
            return false;
        };
        daemon.child = None;
        // A daemon that forks into the background exits at once, by design.
        if daemon.spec.daemonizes {
            return true;
        }
        tracing::warn!("attached daemon (pid {pid}) {how}: {}", daemon.name());
        daemon.throttle_restart();
        true
    }

    /// Restarts the daemons that are gone (smart ones: whose pidfile names no live process)
    /// or whose `touch` file changed.
    pub fn check(&mut self) {
        for daemon in &mut self.daemons {
            if daemon.touched() {
                tracing::info!(
                    "attached daemon: a touch file changed: restarting {}",
                    daemon.name()
                );
                daemon.signal(Signal::try_from(daemon.spec.stop_signal).unwrap_or(Signal::SIGTERM));
            }
            if daemon.child.is_some() || daemon.pid().is_some() {
                daemon.seen_running = true;
                continue;
            }
            // A smart daemon gets a moment to write its pidfile before it counts as gone.
            if daemon.spec.pidfile.is_some() && daemon.started.elapsed() < Duration::from_secs(2) {
                continue;
            }
            // A plain daemon's death was seen when it was reaped ([`Daemons::exited`]); a
            // smart one's is seen here, once.
            if std::mem::take(&mut daemon.seen_running) && daemon.spec.pidfile.is_some() {
                tracing::warn!(
                    "attached daemon gone (its pidfile names no live process): {}",
                    daemon.name()
                );
                daemon.throttle_restart();
            }
            if Instant::now() >= daemon.next_start {
                daemon.start();
            }
        }
    }

    /// Stops the daemons: their stop signal (or reload signal), then SIGKILL for those still
    /// there after `mercy`. On a reload, smart daemons are left running.
    pub fn stop(&mut self, reloading: bool, mercy: Duration) {
        let stopping: Vec<usize> = (0..self.daemons.len())
            .filter(|&i| !(reloading && self.daemons[i].spec.pidfile.is_some()))
            .collect();
        for &i in &stopping {
            let daemon = &self.daemons[i];
            let number = match daemon.spec.reload_signal {
                n if reloading && n > 0 => n,
                _ => daemon.spec.stop_signal,
            };
            tracing::info!("stopping attached daemon: {}", daemon.name());
            daemon.signal(Signal::try_from(number).unwrap_or(Signal::SIGTERM));
        }
        let deadline = Instant::now() + mercy;
        loop {
            // Only the daemons' own children are reaped here: workers are the caller's.
            for &i in &stopping {
                if let Some(child) = self.daemons[i].child {
                    let status = waitpid(child, Some(WaitPidFlag::WNOHANG));
                    if !matches!(status, Ok(WaitStatus::StillAlive)) {
                        self.daemons[i].child = None;
                    }
                }
            }
            let alive: Vec<usize> = stopping
                .iter()
                .copied()
                .filter(|&i| self.daemons[i].pid().is_some())
                .collect();
            if alive.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for i in alive {
                    let daemon = &self.daemons[i];
                    tracing::warn!(
                        "attached daemon did not stop in time: killing it: {}",
                        daemon.name()
                    );
                    daemon.signal(Signal::SIGKILL);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
