//! The master's bookkeeping of its helper processes: the spooler processes (spooler.rs)
//! and the mules (mules.rs). Unlike workers they serve no request; like workers they are
//! forked by the master, respawned when they die, and let finish (then replaced) at a
//! stop or a reload.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ngx_wsgi_config::Config;
use nix::unistd::Pid;

/// What a helper process does.
#[derive(Debug, Clone)]
pub enum Job {
    /// Spooler process `slot` (0-based, over every directory) runs the tasks in `dir`.
    Spooler { slot: usize, dir: PathBuf },
    /// Mule `id` (1-based) runs `script`, or waits for messages.
    Mule { id: u32, script: Option<PathBuf> },
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::Spooler { slot, .. } => format!("spooler {}", slot + 1),
            Job::Mule { id, .. } => format!("mule {id}"),
        }
    }

    fn what(&self) -> String {
        match self {
            Job::Spooler { dir, .. } => format!("on {}", dir.display()),
            Job::Mule { script: None, .. } => "waiting for messages".to_string(),
            Job::Mule {
                script: Some(script),
                ..
            } => format!("running {}", script.display()),
        }
    }

    /// What the workers and the stats server learn of the process (spoolers: their
    /// pids and respawns).
    fn record(&self, pid: Option<Pid>, respawned: bool) {
        if let Job::Spooler { slot, .. } = self {
            crate::spooler::record(*slot, pid, respawned);
        }
    }
}

pub struct Helpers {
    slots: Vec<Slot>,
}

struct Slot {
    job: Job,
    pid: Option<Pid>,
    born: Instant,
    /// When a replacement is due (one that died young waits a second: no respawn loop).
    respawn_at: Option<Instant>,
    /// It could not load the app: not respawned until a reload.
    given_up: bool,
}

impl Helpers {
    /// Every helper the config asks for: spooler processes, then mules.
    pub fn new(config: &Config) -> Self {
        let spoolers = crate::spooler::slots(config)
            .into_iter()
            .enumerate()
            .map(|(slot, dir)| Job::Spooler { slot, dir });
        let mules = crate::mules::scripts(config)
            .into_iter()
            .enumerate()
            .map(|(i, script)| Job::Mule {
                id: i as u32 + 1,
                script,
            });
        let slots = spoolers
            .chain(mules)
            .map(|job| Slot {
                job,
                pid: None,
                born: Instant::now(),
                respawn_at: Some(Instant::now()),
                given_up: false,
            })
            .collect();
        Helpers { slots }
    }

    /// Starts the helpers that are due (all of them at first).
    pub fn start_due(
        &mut self,
        mut spawn: impl FnMut(&Job) -> anyhow::Result<Pid>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.pid.is_some() || slot.given_up || slot.respawn_at.is_none_or(|at| at > now) {
                continue;
            }
            let pid = spawn(&slot.job)?;
            tracing::info!(
                "{} started (pid {pid}) {}",
                slot.job.name(),
                slot.job.what()
            );
            slot.job.record(Some(pid), false);
            slot.pid = Some(pid);
            slot.born = now;
            slot.respawn_at = None;
        }
        Ok(())
    }

    pub fn pids(&self) -> impl Iterator<Item = &Pid> {
        self.slots.iter().filter_map(|s| s.pid.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.pid.is_none())
    }

    /// A child exited: true if it was a helper. Its replacement is scheduled unless
    /// `stopping`, or it could not load the app.
    pub fn exited(&mut self, pid: Pid, code: Option<i32>, how: &str, stopping: bool) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
            return false;
        };
        slot.pid = None;
        slot.job.record(None, !stopping);
        let name = slot.job.name();
        if stopping {
            tracing::info!("{name} (pid {pid}) {how}");
            return true;
        }
        match code {
            Some(crate::process::EXIT_RECYCLED) => {
                tracing::info!(
                    "{name} (pid {pid}) retired itself (reason above); starting its replacement"
                )
            }
            Some(crate::process::EXIT_APP_LOAD_FAILED) => {
                tracing::error!(
                    "{name} could not load the app (see above); not respawning it until a reload"
                );
                slot.given_up = true;
                return true;
            }
            _ => tracing::error!("{name} (pid {pid}) {how}; respawning it"),
        }
        let young = slot.born.elapsed() < Duration::from_secs(1);
        slot.respawn_at = Some(match young {
            true => Instant::now() + Duration::from_secs(1),
            false => Instant::now(),
        });
        true
    }
}
