//! `stats`: uWSGI's stats JSON (what uwsgitop reads), served by the master.
//!
//! Workers count their requests in memory the master maps before forking and shares with
//! them; the master, which never starts a thread, answers stats connections between two
//! ticks of its supervision loop: one JSON object per connection, then close, as uWSGI.

use std::io::Write;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::listeners::{BoundListener, ListeningSocket};
use crate::outcome::Outcome;
use ngx_wsgi_config::Config;

/// One worker's counters. All-zero is the valid "nothing yet" state (fresh mmap memory).
#[repr(C)]
pub struct WorkerCounters {
    pid: AtomicI32,
    accepting: AtomicU32,
    requests: AtomicU64,
    exceptions: AtomicU64,
    harakiri_count: AtomicU64,
    tx: AtomicU64,
    running_time_us: AtomicU64,
    last_spawn: AtomicU64,
    respawn_count: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    status_classes: [AtomicU64; 5],
    /// Requests by duration: how many took at most each of [`DURATION_BUCKETS`].
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    /// Set by the master before it signals a stop of the whole daemon ([`daemon_stops`]).
    daemon_stops: AtomicU32,
}

impl WorkerCounters {
    fn count_status(&self, status: u16) {
        if let Some(class) = (status / 100)
            .checked_sub(1)
            .and_then(|c| self.status_classes.get(c as usize))
        {
            class.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A metric family with one sample per worker: name, type, help, and the value for a
/// worker id.
type PerWorkerFamily<'a> = (
    &'static str,
    &'static str,
    &'static str,
    &'a dyn Fn(u32) -> u64,
);

/// The request duration histogram's upper bounds, in seconds (Prometheus' defaults).
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One request thread's counters.
#[repr(C)]
pub struct CoreCounters {
    requests: AtomicU64,
    in_request: AtomicU32,
}

impl CoreCounters {
    /// Which request the thread is in, as the idle-connection mover (`idle.rs`) tells
    /// them apart: the number of requests it finished, if it is in one now.
    pub fn current_request(&self) -> Option<u64> {
        // SeqCst, as request_started's store: see RequestThread::wake_mover.
        (self.in_request.load(Ordering::SeqCst) != 0).then(|| self.requests.load(Ordering::Relaxed))
    }
}

/// In a worker: its request threads' counters (none before `attach`).
pub fn my_threads() -> &'static [CoreCounters] {
    MINE.get().map_or(&[], |(_, cores)| cores)
}

/// The counters of every worker and thread, in one shared anonymous mapping.
pub struct SharedCounters {
    base: NonNull<u8>,
    processes: usize,
    threads: usize,
}

// SAFETY: the mapping is only accessed through atomics, from any thread or process.
unsafe impl Send for SharedCounters {}
// SAFETY: as above.
unsafe impl Sync for SharedCounters {}

/// The master's counters, when `stats` is on.
static SHARED: OnceLock<&'static SharedCounters> = OnceLock::new();

/// This process's counters once it is a worker: (worker slot, first core slot).
static MINE: OnceLock<(&'static WorkerCounters, &'static [CoreCounters])> = OnceLock::new();

impl SharedCounters {
    /// Maps zeroed shared memory for `processes` workers of `threads` threads, for the
    /// functions below; it is never unmapped (it lives as long as the master, and workers
    /// inherit it).
    pub fn install(processes: u32, threads: u32) -> anyhow::Result<&'static SharedCounters> {
        let (processes, threads) = (processes as usize, threads as usize);
        let len = processes * std::mem::size_of::<WorkerCounters>()
            + processes * threads * std::mem::size_of::<CoreCounters>();
        let len = NonZeroUsize::new(len).context("no workers to count")?;
        // Zero-filled: a valid value for every atomic in it.
        let base = crate::shm::map(len, "the stats counters")?;
        let counters: &'static SharedCounters = Box::leak(Box::new(SharedCounters {
            base: base.cast(),
            processes,
            threads,
        }));
        let _ = SHARED.set(counters);
        Ok(counters)
    }

    fn worker(&self, id: u32) -> &WorkerCounters {
        let index = (id as usize - 1).min(self.processes - 1);
        // SAFETY: index < processes: inside the workers' part of the mapping, which is
        // aligned (page-aligned base, 8-byte-multiple slot size).
        unsafe { &*(self.base.as_ptr() as *const WorkerCounters).add(index) }
    }

    fn cores(&self, id: u32) -> &[CoreCounters] {
        let index = (id as usize - 1).min(self.processes - 1);
        // SAFETY: the cores' part follows the workers' part; worker `index` owns `threads`
        // consecutive slots inside it, aligned as the slot size is a multiple of 8.
        unsafe {
            let first = self
                .base
                .as_ptr()
                .add(self.processes * std::mem::size_of::<WorkerCounters>())
                as *const CoreCounters;
            std::slice::from_raw_parts(first.add(index * self.threads), self.threads)
        }
    }

    fn worker_started(&self, id: u32, pid: i32) {
        let worker = self.worker(id);
        worker.pid.store(pid, Ordering::Relaxed);
        worker.last_spawn.store(unix_secs(), Ordering::Relaxed);
        worker.respawn_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The JSON uwsgitop reads, with uWSGI's keys.
    fn json(&self, config: &Config, listeners: &[BoundListener]) -> Value {
        let workers = self.workers_json(config);
        let load: u64 = (1..=self.processes as u32)
            .flat_map(|id| self.cores(id))
            .map(|c| u64::from(c.in_request.load(Ordering::Relaxed)))
            .sum();
        let sockets: Vec<Value> = listeners
            .iter()
            .map(|l| {
                let proto = match l.spec.protocol {
                    ngx_wsgi_config::Protocol::Uwsgi => "uwsgi",
                    ngx_wsgi_config::Protocol::Http => "http",
                };
                json!({
                    "name": l.spec.addr.to_string(), "proto": proto,
                    "queue": crate::listeners::queued(l),
                    "max_queue": config.listen, "shared": 0, "can_offload": 0,
                })
            })
            .collect();
        let mut stats = json!({
            "version": concat!("ngx-wsgi ", env!("CARGO_PKG_VERSION")),
            // TCP listeners' accept queues (unix sockets' are not readable this way).
            "listen_queue": listeners.iter().map(crate::listeners::queued).sum::<u32>(),
            "listen_queue_errors": 0, "signal_queue": 0, "load": load,
            "pid": std::process::id(),
            "uid": nix::unistd::getuid().as_raw(), "gid": nix::unistd::getgid().as_raw(),
            "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            // uWSGI's user and cache locks (its internal ones, signal, timer, ..., do not
            // exist here: atomics do their work).
            "locks": crate::locks::stats_entries().into_iter().chain(crate::cache::lock_entries()).collect::<Vec<_>>(),
            "sockets": sockets,
            "workers": workers,
        });
        // As uWSGI: a "spoolers" list, one entry per spooler process, when there are any.
        let spoolers = crate::spooler::stats_json(config);
        if spoolers.as_array().is_some_and(|s| !s.is_empty()) {
            stats["spoolers"] = spoolers;
        }
        // As uWSGI: a "caches" list when there are caches.
        let caches = crate::cache::stats_json();
        if caches.as_array().is_some_and(|c| !c.is_empty()) {
            stats["caches"] = caches;
        }
        stats
    }

    /// Answers every stats connection waiting on `server` (non-blocking).
    /// The stats JSON's `workers`: what `uwsgi.workers()` returns too.
    fn workers_json(&self, config: &Config) -> Vec<Value> {
        (1..=self.processes as u32)
            .map(|id| {
                let w = self.worker(id);
                let pid = w.pid.load(Ordering::Relaxed);
                let requests = w.requests.load(Ordering::Relaxed);
                let running = w.running_time_us.load(Ordering::Relaxed);
                let cores: Vec<Value> = self
                    .cores(id)
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        json!({
                            "id": i, "requests": c.requests.load(Ordering::Relaxed),
                            "static_requests": 0, "routed_requests": 0, "offloaded_requests": 0,
                            "write_errors": 0, "read_errors": 0,
                            "in_request": c.in_request.load(Ordering::Relaxed),
                            "vars": [], "req_info": {},
                        })
                    })
                    .collect();
                let busy = self
                    .cores(id)
                    .iter()
                    .any(|c| c.in_request.load(Ordering::Relaxed) != 0);
                let (rss, vsz) = memory(pid);
                json!({
                    "id": id, "pid": pid, "accepting": w.accepting.load(Ordering::Relaxed),
                    "requests": requests, "delta_requests": requests,
                    "exceptions": w.exceptions.load(Ordering::Relaxed),
                    "harakiri_count": w.harakiri_count.load(Ordering::Relaxed),
                    "signals": 0, "signal_queue": 0,
                    "status": if busy { "busy" } else { "idle" },
                    "rss": rss, "vsz": vsz, "running_time": running,
                    "last_spawn": w.last_spawn.load(Ordering::Relaxed),
                    "respawn_count": w.respawn_count.load(Ordering::Relaxed),
                    "tx": w.tx.load(Ordering::Relaxed),
                    "avg_rt": running.checked_div(requests).unwrap_or(0),
                    "apps": [{
                        "id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0,
                        "requests": requests, "exceptions": w.exceptions.load(Ordering::Relaxed),
                        "chdir": config.chdir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
                    }],
                    "cores": cores,
                })
            })
            .collect()
    }

    /// The Prometheus text format (0.0.4): the same counters as the JSON, by worker.
    fn prometheus(&self, config: &Config, listeners: &[BoundListener]) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(8192);
        let ids = 1..=self.processes as u32;
        let mut family =
            |name: &str, kind: &str, help: &str, samples: &mut dyn FnMut(&mut String)| {
                let _ = writeln!(
                    out,
                    "# HELP ngx_wsgi_{name} {help}\n# TYPE ngx_wsgi_{name} {kind}"
                );
                samples(&mut out);
            };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            "requests_total",
            "counter",
            "Requests answered, by worker and status class.",
            &mut |out| {
                for id in ids.clone() {
                    for (class, count) in self.worker(id).status_classes.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "ngx_wsgi_requests_total{{worker=\"{id}\",status=\"{}xx\"}} {}",
                            class + 1,
                            load(count)
                        );
                    }
                }
            },
        );
        family(
            "request_duration_seconds",
            "histogram",
            "Time from a request's head to its response's end.",
            &mut |out| {
                for id in ids.clone() {
                    let w = self.worker(id);
                    let mut cumulative = 0;
                    for (bound, count) in DURATION_BUCKETS.iter().zip(&w.duration_buckets) {
                        cumulative += load(count);
                        let _ = writeln!(out, "ngx_wsgi_request_duration_seconds_bucket{{worker=\"{id}\",le=\"{bound}\"}} {cumulative}");
                    }
                    let requests = load(&w.requests);
                    let _ = writeln!(out, "ngx_wsgi_request_duration_seconds_bucket{{worker=\"{id}\",le=\"+Inf\"}} {requests}");
                    let _ = writeln!(
                        out,
                        "ngx_wsgi_request_duration_seconds_sum{{worker=\"{id}\"}} {}",
                        load(&w.running_time_us) as f64 / 1e6
                    );
                    let _ = writeln!(
                        out,
                        "ngx_wsgi_request_duration_seconds_count{{worker=\"{id}\"}} {requests}"
                    );
                }
            },
        );
        let now = unix_secs();
        let memory: Vec<(u64, u64)> = ids
            .clone()
            .map(|id| memory(self.worker(id).pid.load(Ordering::Relaxed)))
            .collect();
        // One sample per worker each: (name, type, help, the value for worker id).
        let per_worker: [PerWorkerFamily<'_>; 9] = [
            (
                "exceptions_total",
                "counter",
                "Requests whose app raised an exception.",
                &|id| load(&self.worker(id).exceptions),
            ),
            (
                "harakiri_total",
                "counter",
                "Requests killed by harakiri.",
                &|id| load(&self.worker(id).harakiri_count),
            ),
            (
                "sent_bytes_total",
                "counter",
                "Response body bytes sent.",
                &|id| load(&self.worker(id).tx),
            ),
            (
                "worker_spawns_total",
                "counter",
                "Times this worker slot was started (1 plus its respawns).",
                &|id| load(&self.worker(id).respawn_count),
            ),
            (
                "worker_busy_threads",
                "gauge",
                "Request threads running a request, by worker.",
                &|id| {
                    self.cores(id)
                        .iter()
                        .map(|c| u64::from(c.in_request.load(Ordering::Relaxed)))
                        .sum()
                },
            ),
            (
                "worker_up",
                "gauge",
                "1 while the worker accepts requests.",
                &|id| u64::from(self.worker(id).accepting.load(Ordering::Relaxed)),
            ),
            (
                "worker_lifetime_seconds",
                "gauge",
                "Seconds since the worker was (re)started.",
                &|id| now.saturating_sub(load(&self.worker(id).last_spawn)),
            ),
            (
                "worker_rss_bytes",
                "gauge",
                "Resident memory of each worker.",
                &|id| memory[id as usize - 1].0,
            ),
            (
                "worker_vsz_bytes",
                "gauge",
                "Virtual memory of each worker.",
                &|id| memory[id as usize - 1].1,
            ),
        ];
        for (name, kind, help, value) in per_worker {
            family(name, kind, help, &mut |out| {
                for id in ids.clone() {
                    let _ = writeln!(out, "ngx_wsgi_{name}{{worker=\"{id}\"}} {}", value(id));
                }
            });
        }
        family(
            "worker_threads",
            "gauge",
            "Request threads per worker (threads).",
            &mut |out| {
                let _ = writeln!(out, "ngx_wsgi_worker_threads {}", self.threads);
            },
        );
        family(
            "listen_queue",
            "gauge",
            "Connections waiting in a TCP socket's accept queue (0 for unix sockets).",
            &mut |out| {
                for l in listeners {
                    let _ = writeln!(
                        out,
                        "ngx_wsgi_listen_queue{{socket=\"{}\"}} {}",
                        label(&l.spec.addr.to_string()),
                        crate::listeners::queued(l)
                    );
                }
            },
        );
        family(
            "listen_queue_max",
            "gauge",
            "The sockets' backlog (listen).",
            &mut |out| {
                let _ = writeln!(out, "ngx_wsgi_listen_queue_max {}", config.listen);
            },
        );
        out
    }

    pub fn serve_pending(
        &self,
        server: &ListeningSocket,
        config: &Config,
        listeners: &[BoundListener],
    ) {
        loop {
            let accepted = match server {
                ListeningSocket::Unix(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
                ListeningSocket::Tcp(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
            };
            let Ok(client) = accepted else {
                return; // EAGAIN: nobody else is waiting
            };
            // A plain socket file: both kinds read and write alike. Short timeouts: the
            // master serves this between two ticks of its loop.
            let sock = socket2::Socket::from(client);
            let _ = sock.set_nonblocking(false);
            let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
            let mut stream = std::fs::File::from(OwnedFd::from(sock));
            let response = if config.stats_http {
                // uwsgitop sends nothing; an HTTP client names what it wants.
                let (content_type, body) = match request_target(&mut stream).as_deref() {
                    Some("/metrics") => (
                        "text/plain; version=0.0.4; charset=utf-8",
                        self.prometheus(config, listeners),
                    ),
                    _ => ("application/json", self.json(config, listeners).to_string()),
                };
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                self.json(config, listeners).to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    }
}

/// The target of an HTTP request's first line (`GET /metrics HTTP/1.1`), read within the
/// socket's read timeout.
fn request_target(stream: &mut std::fs::File) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = std::str::from_utf8(&head).ok()?.lines().next()?;
    let mut words = line.split_whitespace();
    let _method = words.next()?;
    let target = words.next()?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}

/// A Prometheus label value: backslashes and quotes escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The workers as the stats JSON lists them (for `uwsgi.workers()`), if counters exist.
pub fn workers_json(config: &Config) -> Value {
    SHARED.get().map_or(Value::Array(Vec::new()), |shared| {
        Value::Array(shared.workers_json(config))
    })
}

/// Every worker's requests so far (`uwsgi.total_requests()`).
pub fn all_requests() -> u64 {
    SHARED.get().map_or(0, |shared| {
        (1..=shared.processes as u32)
            .map(|id| shared.worker(id).requests.load(Ordering::Relaxed))
            .sum()
    })
}

/// In the master, as worker `id` starts as `pid`.
pub fn worker_started(id: u32, pid: i32) {
    if let Some(shared) = SHARED.get() {
        shared.worker_started(id, pid);
    }
}

/// In the master: whether worker `id` is in a request (false without shared counters).
pub fn worker_busy(id: u32) -> bool {
    SHARED.get().is_some_and(|shared| {
        shared
            .cores(id)
            .iter()
            .any(|c| c.in_request.load(Ordering::Relaxed) != 0)
    })
}

/// In a worker: whether a request thread of some serving worker is free, for the mover
/// (`idle.rs`): handing a waiting request over helps only if someone can take it up.
/// False without shared counters.
pub fn a_thread_is_free() -> bool {
    SHARED.get().is_some_and(|shared| {
        (1..=shared.processes as u32).any(|id| {
            shared.worker(id).accepting.load(Ordering::Relaxed) == 1
                && shared
                    .cores(id)
                    .iter()
                    .any(|c| c.in_request.load(Ordering::Relaxed) == 0)
        })
    })
}

/// In the master: the requests the workers have served (for `idle`).
pub fn total_requests(ids: impl Iterator<Item = u32>) -> u64 {
    SHARED.get().map_or(0, |shared| {
        ids.map(|id| shared.worker(id).requests.load(Ordering::Relaxed))
            .sum()
    })
}

/// In a worker, during a request: this worker's requests and every worker's, this one
/// included (uWSGI's `req: N/M` in the request log line).
pub fn request_numbers() -> (u64, u64) {
    let (Some(shared), Some((mine, _))) = (SHARED.get(), MINE.get()) else {
        return (1, 1);
    };
    let total: u64 = (1..=shared.processes as u32)
        .map(|id| shared.worker(id).requests.load(Ordering::Relaxed))
        .sum();
    (mine.requests.load(Ordering::Relaxed) + 1, total + 1)
}

/// Whether worker `id` runs and accepts requests (true without shared counters).
pub fn worker_accepting(id: u32) -> bool {
    SHARED
        .get()
        .is_none_or(|shared| shared.worker(id).accepting.load(Ordering::Relaxed) == 1)
}

/// In the master, when worker `id`'s process is gone.
pub fn worker_gone(id: u32) {
    if let Some(shared) = SHARED.get() {
        shared.worker(id).accepting.store(0, Ordering::Relaxed);
    }
}

/// In worker `id`, after fork: its slot starts afresh, and counts its requests from now on.
pub fn attach(id: u32) {
    if let Some(shared) = SHARED.get() {
        let (worker, cores) = (shared.worker(id), shared.cores(id));
        worker.requests.store(0, Ordering::Relaxed);
        worker.running_time_us.store(0, Ordering::Relaxed);
        worker.tx.store(0, Ordering::Relaxed);
        for counter in worker.status_classes.iter().chain(&worker.duration_buckets) {
            counter.store(0, Ordering::Relaxed);
        }
        for core in cores {
            core.requests.store(0, Ordering::Relaxed);
            core.in_request.store(0, Ordering::Relaxed);
        }
        worker.daemon_stops.store(0, Ordering::Relaxed);
        worker.accepting.store(1, Ordering::Relaxed);
        let _ = MINE.set((worker, cores));
    }
}

/// In the master, before it signals the workers that the whole daemon stops (and not one
/// worker alone: `idle`, cheaper, a graceful harakiri).
pub fn daemon_stopping() {
    if let Some(shared) = SHARED.get() {
        for id in 1..=shared.processes as u32 {
            shared.worker(id).daemon_stops.store(1, Ordering::SeqCst);
        }
    }
}

/// In a worker told to stop: whether the whole daemon stops, so that nobody but the
/// workers stopping with it takes what is queued for them (false without shared
/// counters).
pub fn daemon_stops() -> bool {
    MINE.get()
        .is_some_and(|(worker, _)| worker.daemon_stops.load(Ordering::SeqCst) == 1)
}

/// In a worker about to be killed by harakiri.
pub fn harakiri() {
    if let Some((worker, _)) = MINE.get() {
        worker.harakiri_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a finished request in this worker's slot (no-op without `stats`).
pub fn request_done(thread: usize, running: Duration) {
    if let Some((worker, cores)) = MINE.get() {
        worker.requests.fetch_add(1, Ordering::Relaxed);
        let seconds = running.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            worker.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        worker
            .running_time_us
            .fetch_add(running.as_micros() as u64, Ordering::Relaxed);
        if let Some(core) = cores.get(thread) {
            core.requests.fetch_add(1, Ordering::Relaxed);
            core.in_request.store(0, Ordering::Relaxed);
        }
    }
}

/// Marks request thread `thread` busy with a request.
pub fn request_started(thread: usize) {
    if let Some((_, cores)) = MINE.get() {
        if let Some(core) = cores.get(thread) {
            // SeqCst: the mover reads it before sleeping (RequestThread::wake_mover).
            core.in_request.store(1, Ordering::SeqCst);
        }
    }
}

/// Counts what a response sent, or an exception of the app.
pub fn response_done(outcome: &Outcome) {
    if let Some((worker, _)) = MINE.get() {
        match outcome {
            Outcome::Sent { bytes, status } => {
                worker.tx.fetch_add(*bytes, Ordering::Relaxed);
                worker.count_status(*status);
            }
            // The head was sent: the client got that status, and a cut-short body.
            Outcome::Aborted { status, .. } => {
                worker.exceptions.fetch_add(1, Ordering::Relaxed);
                worker.count_status(*status);
            }
            Outcome::AppFailed { .. } => {
                worker.exceptions.fetch_add(1, Ordering::Relaxed);
                worker.count_status(500);
            }
            Outcome::PeerGone { .. } => {}
        }
    }
}

/// In the worker being stopped by max-requests: no longer accepting.
pub fn stop_accepting() {
    if let Some((worker, _)) = MINE.get() {
        worker.accepting.store(0, Ordering::Relaxed);
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Resident and virtual size of a process, in bytes.
pub fn memory(pid: i32) -> (u64, u64) {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return (0, 0);
    };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let vsz = fields.next().unwrap_or(0) * page;
    let rss = fields.next().unwrap_or(0) * page;
    (rss, vsz)
}
