//! uWSGI's cheaper mode: between `cheaper` and `processes` workers, as many as the load
//! needs, decided once a second by the master.
//!
//! - `spare` (the default, uWSGI's algorithm): when every worker has been busy for more
//!   than `cheaper-overload` checks, start `cheaper-step` more; when more than one worker
//!   is idle, stop one every `cheaper-overload` checks, down to `cheaper`.
//! - `backlog`: start `cheaper-step` more while the listen queue holds more than
//!   `cheaper-overload` connections; stop one while it holds fewer.

/// What the master does after a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start this many workers (within `processes`).
    Spawn(u32),
    /// Stop one worker (not below `cheaper`).
    Cheap,
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Spare,
    Backlog,
}

pub struct Cheaper {
    pub min: u32,
    pub max: u32,
    step: u32,
    overload: u32,
    algo: Algo,
    overload_count: u32,
    idle_count: u32,
}

impl Cheaper {
    pub fn new(config: &ngx_wsgi_config::Config) -> Option<Cheaper> {
        (config.cheaper > 0).then(|| Cheaper {
            min: config.cheaper,
            max: config.processes,
            step: config.cheaper_step.max(1),
            overload: config.cheaper_overload.max(1),
            algo: match config.cheaper_algo.as_str() {
                "backlog" => Algo::Backlog,
                _ => Algo::Spare,
            },
            overload_count: 0,
            idle_count: 0,
        })
    }

    /// The workers to start at first: `cheaper-initial`, else `cheaper`.
    pub fn initial(config: &ngx_wsgi_config::Config) -> u32 {
        match config.cheaper {
            0 => config.processes,
            min => config.cheaper_initial.max(min).min(config.processes),
        }
    }

    /// One check: `active` workers, `busy` of them in a request, `backlog` connections
    /// waiting in the listen queues.
    pub fn decide(&mut self, active: u32, busy: u32, backlog: u32) -> Decision {
        let room = self.max.saturating_sub(active);
        match self.algo {
            Algo::Backlog => {
                if backlog > self.overload && room > 0 {
                    Decision::Spawn(self.step.min(room))
                } else if backlog < self.overload && active > self.min {
                    Decision::Cheap
                } else {
                    Decision::Nothing
                }
            }
            Algo::Spare => {
                if active > 0 && busy >= active {
                    // Bounded: a long peak at `processes` must not delay the end of it.
                    self.overload_count = (self.overload_count + 1).min(self.overload + 1);
                    self.idle_count = 0;
                } else {
                    self.overload_count = self.overload_count.saturating_sub(1);
                }
                if self.overload_count > self.overload && room > 0 {
                    self.overload_count = 0;
                    return Decision::Spawn(self.step.min(room));
                }
                if self.overload_count > 0 || active.saturating_sub(busy) <= 1 {
                    // Idle checks count only when consecutive.
                    self.idle_count = 0;
                    return Decision::Nothing;
                }
                self.idle_count += 1;
                if active > self.min && self.idle_count >= self.overload {
                    self.idle_count = 0;
                    Decision::Cheap
                } else {
                    Decision::Nothing
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheaper(args: &str) -> Cheaper {
        let config = ngx_wsgi_config::parse_args(
            format!("--socket /s --module m {args}").split_whitespace(),
        )
        .unwrap()
        .config;
        Cheaper::new(&config).unwrap()
    }

    #[test]
    fn spare_spawns_after_overload_and_cheaps_slowly() {
        let mut c = cheaper("--processes 8 --cheaper 2 --cheaper-step 2 --cheaper-overload 3");
        // All busy for more than 3 checks: two more.
        let decisions: Vec<Decision> = (0..4).map(|_| c.decide(2, 2, 0)).collect();
        assert_eq!(
            decisions[..3],
            [Decision::Nothing, Decision::Nothing, Decision::Nothing]
        );
        assert_eq!(decisions[3], Decision::Spawn(2));
        // One spare worker is the stable state.
        assert_eq!(c.decide(4, 3, 0), Decision::Nothing);
        // Three idle: one stopped every 3 checks.
        let decisions: Vec<Decision> = (0..6).map(|_| c.decide(4, 1, 0)).collect();
        assert_eq!(
            decisions.iter().filter(|d| **d == Decision::Cheap).count(),
            2
        );
        // Never below cheaper.
        let mut c = cheaper("--processes 4 --cheaper 2 --cheaper-overload 1");
        assert!((0..5).all(|_| c.decide(2, 0, 0) == Decision::Nothing));
        // Never above processes.
        let mut c = cheaper("--processes 4 --cheaper 1 --cheaper-step 8 --cheaper-overload 1");
        c.decide(3, 3, 0);
        assert_eq!(c.decide(3, 3, 0), Decision::Spawn(1));
    }

    #[test]
    fn backlog_follows_the_listen_queue() {
        let mut c =
            cheaper("--processes 4 --cheaper 1 --cheaper-algo backlog --cheaper-overload 5");
        assert_eq!(c.decide(1, 1, 6), Decision::Spawn(1));
        assert_eq!(c.decide(2, 2, 5), Decision::Nothing);
        assert_eq!(c.decide(2, 0, 0), Decision::Cheap);
        assert_eq!(c.decide(1, 0, 0), Decision::Nothing);
    }
}
