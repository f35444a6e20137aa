//! `cron`, `unique-cron` and `cron-harakiri`: shell commands the master runs when the
//! local time matches their schedule (config/src/cron.rs), at most once a minute each.

use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ngx_wsgi_config::cron::CronSpec;
use ngx_wsgi_config::Config;

struct Job {
    spec: CronSpec,
    /// `unique-cron`: not started while a previous run goes on.
    unique: bool,
    running: Vec<(Child, Instant)>,
}

pub struct CronJobs {
    jobs: Vec<Job>,
    /// The minute (unix time / 60) the schedules were last looked at.
    last_minute: u64,
    harakiri: Option<Duration>,
}

impl CronJobs {
    pub fn new(config: &Config) -> Self {
        let job = |unique| {
            move |spec: &CronSpec| Job {
                spec: spec.clone(),
                unique,
                running: Vec::new(),
            }
        };
        let jobs = config
            .cron
            .iter()
            .map(job(false))
            .chain(config.unique_cron.iter().map(job(true)))
            .collect();
        CronJobs {
            jobs,
            last_minute: 0,
            harakiri: (config.cron_harakiri > 0).then(|| Duration::from_secs(config.cron_harakiri)),
        }
    }

    /// The master's tick: notes finished runs, kills those over `cron-harakiri`, and
    /// starts the commands due this minute.
    pub fn tick(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        for job in &mut self.jobs {
            job.running.retain_mut(|(child, started)| {
                // The master's reaping may have collected it first: gone either way.
                if !matches!(child.try_wait(), Ok(None)) {
                    return false;
                }
                match self.harakiri {
                    Some(limit) if started.elapsed() >= limit => {
                        tracing::warn!(
                            "cron: killing `{}` (pid {}) after {} s (cron-harakiri)",
                            job.spec.command,
                            child.id(),
                            limit.as_secs()
                        );
                        let _ = child.kill();
                        let _ = child.try_wait();
                        false
                    }
                    _ => true,
                }
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now / 60 == self.last_minute {
            return;
        }
        self.last_minute = now / 60;
        let local = crate::signals::local_time(now);
        for job in &mut self.jobs {
            if !job.spec.matches(local) {
                continue;
            }
            if job.unique && !job.running.is_empty() {
                tracing::warn!(
                    "unique-cron: `{}` is still running: not started again",
                    job.spec.command
                );
                continue;
            }
            match Command::new("/bin/sh")
                .arg("-c")
                .arg(&job.spec.command)
                .spawn()
            {
                Ok(child) => {
                    tracing::info!("cron: started `{}` (pid {})", job.spec.command, child.id());
                    job.running.push((child, Instant::now()));
                }
                Err(err) => tracing::error!("cron: cannot start `{}`: {err}", job.spec.command),
            }
        }
    }
}
