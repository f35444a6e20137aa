//! `stats`: uWSGI's stats JSON (what uwsgitop reads), served by the master.
//!
//! Workers count their requests in memory the master maps before forking and shares with
//! them; the master, which never starts a thread, answers stats connections between two
//! ticks of its supervision loop: one JSON object per connection, then close, as uWSGI.

use std::io::Write;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
use serde_json::{json, Value};

use crate::listeners::{BoundListener, ListeningSocket};
use crate::wsgi::Outcome;
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
}

/// One request thread's counters.
#[repr(C)]
pub struct CoreCounters {
    requests: AtomicU64,
    in_request: AtomicU32,
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
        // SAFETY: a fresh anonymous mapping aliases nothing; it is zero-filled, which is a
        // valid value for every atomic in it.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .context("mmap for the stats counters")?;
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
        let workers: Vec<Value> = (1..=self.processes as u32)
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
            .collect();
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
        json!({
            "version": concat!("ngx-wsgi ", env!("CARGO_PKG_VERSION")),
            // TCP listeners' accept queues (unix sockets' are not readable this way).
            "listen_queue": listeners.iter().map(crate::listeners::queued).sum::<u32>(),
            "listen_queue_errors": 0, "signal_queue": 0, "load": load,
            "pid": std::process::id(),
            "uid": nix::unistd::getuid().as_raw(), "gid": nix::unistd::getgid().as_raw(),
            "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "locks": [],
            "sockets": sockets,
            "workers": workers,
        })
    }

    /// Answers every stats connection waiting on `server` (non-blocking).
    pub fn serve_pending(
        &self,
        server: &ListeningSocket,
        config: &Config,
        listeners: &[BoundListener],
    ) {
        loop {
            let accepted: std::io::Result<Box<dyn Write>> = match server {
                ListeningSocket::Unix(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    Box::new(s) as Box<dyn Write>
                }),
                ListeningSocket::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    Box::new(s) as Box<dyn Write>
                }),
            };
            let Ok(mut stream) = accepted else {
                return; // EAGAIN: nobody else is waiting
            };
            let body = self.json(config, listeners).to_string();
            let response = if config.stats_http {
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                body
            };
            let _ = stream.write_all(response.as_bytes());
        }
    }
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
        for core in cores {
            core.requests.store(0, Ordering::Relaxed);
            core.in_request.store(0, Ordering::Relaxed);
        }
        worker.accepting.store(1, Ordering::Relaxed);
        let _ = MINE.set((worker, cores));
    }
}

/// In a worker about to be killed by harakiri.
pub fn harakiri() {
    if let Some((worker, _)) = MINE.get() {
        worker.harakiri_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a finished request in this worker's slot (no-op without `stats`).
pub fn request_done(running: Duration) {
    if let Some((worker, cores)) = MINE.get() {
        worker.requests.fetch_add(1, Ordering::Relaxed);
        worker
            .running_time_us
            .fetch_add(running.as_micros() as u64, Ordering::Relaxed);
        if let Some(core) = cores.get(crate::watchdog::thread_index()) {
            core.requests.fetch_add(1, Ordering::Relaxed);
            core.in_request.store(0, Ordering::Relaxed);
        }
    }
}

/// Marks this thread busy with a request.
pub fn request_started() {
    if let Some((_, cores)) = MINE.get() {
        if let Some(core) = cores.get(crate::watchdog::thread_index()) {
            core.in_request.store(1, Ordering::Relaxed);
        }
    }
}

/// Counts what a response sent, or an exception of the app.
pub fn response_done(outcome: &Outcome) {
    if let Some((worker, _)) = MINE.get() {
        match outcome {
            Outcome::Sent { bytes, .. } => {
                worker.tx.fetch_add(*bytes, Ordering::Relaxed);
            }
            Outcome::AppFailed { .. } | Outcome::Aborted { .. } => {
                worker.exceptions.fetch_add(1, Ordering::Relaxed);
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
