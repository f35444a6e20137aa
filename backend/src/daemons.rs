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
/// How long a smart daemon may take to write its pidfile after it starts.
const PIDFILE_GRACE: Duration = Duration::from_secs(10);

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
    /// A smart daemon whose pidfile never named a live process: not started again (each
    /// start could leave one more copy running).
    given_up: bool,
    /// A smart daemon started and not yet seen in its pidfile: since when.
    awaiting_pidfile: Option<Instant>,
}

impl Supervised {
    fn name(&self) -> &str {
        &self.spec.command
    }

    /// The daemon's pid: the one its pidfile names (smart daemons), else our child. A
    /// pidfile naming init, the master itself or no live process names nothing: it is
    /// never signalled.
    fn pid(&self) -> Option<Pid> {
        match &self.spec.pidfile {
            Some(pidfile) => std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 1 && *pid != std::process::id() as i32)
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
                if self.spec.pidfile.is_some() {
                    self.awaiting_pidfile = Some(self.started);
                }
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
        match (self.child, self.pid()) {
            // Our child leads a process group of its own: the whole group.
            (Some(child), Some(pid)) if child == pid => {
                let _ = killpg(pid, signal);
            }
            // A smart daemon's pid (from its pidfile) is signalled alone.
            (_, Some(pid)) => {
                let _ = kill(pid, signal);
            }
            _ => {}
        }
    }
}

/// The master's attached daemons.
pub struct Daemons {
    daemons: Vec<Supervised>,
    /// [`Daemons::check`] looks once a second (pidfiles are read, touch files stat'ed),
    /// not at every tick of the master.
    last_check: Instant,
}

const CHECK_EVERY: Duration = Duration::from_secs(1);

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
                given_up: false,
                awaiting_pidfile: None,
            })
            .collect();
        for daemon in &mut daemons {
            match daemon.pid() {
                Some(pid) if daemon.spec.pidfile.is_some() => {
                    // Seen alive now: if it dies before the first check, that check says
                    // so as it starts it again (it started it silently before).
                    daemon.seen_running = true;
                    tracing::info!(
                        "attached daemon already running (pid {pid}): {}",
                        daemon.name()
                    )
                }
                _ => daemon.start(),
            }
        }
        Daemons {
            daemons,
            last_check: now,
        }
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
        if self.last_check.elapsed() < CHECK_EVERY {
            return;
        }
        self.last_check = Instant::now();
        for daemon in &mut self.daemons {
            if daemon.given_up {
                continue;
            }
            if daemon.touched() {
                tracing::info!(
                    "attached daemon: a touch file changed: restarting {}",
                    daemon.name()
                );
                daemon.signal(Signal::try_from(daemon.spec.stop_signal).unwrap_or(Signal::SIGTERM));
            }
            if daemon.spec.pidfile.is_some() {
                if daemon.pid().is_some() {
                    daemon.seen_running = true;
                    daemon.awaiting_pidfile = None;
                    continue;
                }
                if let Some(since) = daemon.awaiting_pidfile {
                    // Time to write its pidfile; one that never does is not started again:
                    // each start could leave another copy running.
                    if daemon.child.is_some() || since.elapsed() < PIDFILE_GRACE {
                        continue;
                    }
                    tracing::error!(
                        "attached daemon: {} never named a live process {} s after its start: \
                         not starting it again (is the pidfile right?): {}",
                        daemon
                            .spec
                            .pidfile
                            .as_ref()
                            .map_or(String::new(), |p| p.display().to_string()),
                        PIDFILE_GRACE.as_secs(),
                        daemon.name()
                    );
                    daemon.given_up = true;
                    continue;
                }
                // Seen alive, gone now: it died.
                if std::mem::take(&mut daemon.seen_running) {
                    tracing::warn!(
                        "attached daemon gone (its pidfile names no live process): {}",
                        daemon.name()
                    );
                    daemon.throttle_restart();
                }
            } else if daemon.child.is_some() {
                continue;
            }
            // A plain daemon's death was seen when it was reaped ([`Daemons::exited`]).
            if Instant::now() >= daemon.next_start {
                daemon.start();
            }
        }
    }

    /// Stops the daemons for good (the master is exiting), within `mercy`.
    pub fn stop_all(&mut self, mercy: Duration) {
        self.stop(false, mercy);
        self.daemons.clear();
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

impl Drop for Daemons {
    /// A master that leaves on an error does not orphan its daemons (a normal stop and a
    /// reload's exec never get here with any left).
    fn drop(&mut self) {
        if !self.daemons.is_empty() {
            self.stop(false, Duration::from_secs(5));
        }
    }
}
