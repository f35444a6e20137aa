//! uWSGI signals and timers: `uwsgi.register_signal(n, target, handler)`,
//! `uwsgi.signal(n)`, `add_timer`, `add_rb_timer`, `add_cron`, and the decorators on them.
//!
//! One table in memory the master and the workers share (made before the first fork):
//! each signal's target and timer or cron entry, and a pending mask per worker. Raising a
//! signal sets its bit in the target workers' masks and wakes them through their eventfd;
//! a thread in each worker runs the Python handlers. Timers and cron entries are fired by
//! the master's loop; a worker may add them (lazy-apps imports the app in each worker).
//! File monitors (`add_file_monitor`, `@filemon`) are paths in the same table: the master
//! watches them with inotify and raises their signal when they change.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

const SIGNALS: usize = 256;
/// A cron field that matches any value (-1 in `add_cron`).
const CRON_ANY: u32 = 100;

/// Where a signal goes: `""`/`"worker"` one worker, `"workers"` all, `"workerN"` worker N.
const TARGET_NONE: u32 = 0;
const TARGET_ANY: u32 = 1;
const TARGET_ALL: u32 = 2;
/// `TARGET_WORKER + N`: worker N.
const TARGET_WORKER: u32 = 16;

#[repr(C)]
struct Entry {
    target: AtomicU32,
    /// Timer period in seconds (0: none), its remaining iterations (0: forever; -1: done),
    /// and when it fires next (unix seconds).
    period: AtomicU64,
    iterations: AtomicI64,
    next: AtomicU64,
    /// Cron: minute, hour, day, month, weekday, each stored +1 so that 0 means "no cron
    /// entry"; [`CRON_ANY`] for -1 (any).
    cron: [AtomicU32; 5],
    cron_last_minute: AtomicU64,
}

/// At most this many file monitors, of paths up to `MONITOR_PATH` bytes.
const MONITORS: usize = 64;
const MONITOR_PATH: usize = 1024;

#[repr(C)]
struct Monitor {
    /// 0: free; n + 1: claimed for signal n.
    signal: AtomicU32,
    /// The path's length once it is written (0 before).
    ready: AtomicU32,
    path: std::cell::UnsafeCell<[u8; MONITOR_PATH]>,
}

#[repr(C)]
struct Table {
    entries: [Entry; SIGNALS],
    monitors: [Monitor; MONITORS],
    /// Round robin for "one worker".
    next_worker: AtomicU32,
}

struct Signals {
    table: NonNull<Table>,
    /// One pending mask (256 bits) per worker, after the table.
    pending: NonNull<[AtomicU64; 4]>,
    wakeups: Vec<OwnedFd>,
    processes: usize,
}

// SAFETY: the shared memory is only accessed through atomics.
unsafe impl Send for Signals {}
// SAFETY: as above.
unsafe impl Sync for Signals {}

static SIGNALS_TABLE: OnceLock<Signals> = OnceLock::new();

/// Makes the table and one eventfd per worker, in the master before the first fork.
pub fn install(processes: u32) -> anyhow::Result<()> {
    let processes = processes as usize;
    let len = std::mem::size_of::<Table>() + processes * std::mem::size_of::<[AtomicU64; 4]>();
    let len = std::num::NonZeroUsize::new(len).context("signal table")?;
    // Zero-filled: a valid value of every atomic in it, and of every free monitor slot.
    let base = crate::shm::map(len, "the signal table")?;
    let table = base.cast::<Table>();
    // SAFETY: the masks follow the table inside the mapping, 8-byte aligned.
    let pending = unsafe {
        NonNull::new_unchecked(base.as_ptr().cast::<u8>().add(std::mem::size_of::<Table>()))
            .cast::<[AtomicU64; 4]>()
    };
    let wakeups = (0..processes)
        .map(|_| {
            nix::sys::eventfd::EventFd::from_flags(
                nix::sys::eventfd::EfdFlags::EFD_CLOEXEC
                    | nix::sys::eventfd::EfdFlags::EFD_SEMAPHORE,
            )
            .map(OwnedFd::from)
        })
        .collect::<Result<Vec<_>, _>>()
        .context("eventfd for the signals")?;
    let _ = SIGNALS_TABLE.set(Signals {
        table,
        pending,
        wakeups,
        processes,
    });
    Ok(())
}

fn signals() -> Result<&'static Signals, String> {
    SIGNALS_TABLE
        .get()
        .ok_or_else(|| "uWSGI signals are not set up in this process".into())
}

impl Signals {
    fn table(&self) -> &Table {
        // SAFETY: the table lives as long as the process.
        unsafe { self.table.as_ref() }
    }

    fn entry(&self, n: u8) -> &Entry {
        &self.table().entries[n as usize]
    }

    fn mask(&self, worker: usize) -> &[AtomicU64; 4] {
        // SAFETY: worker < processes: inside the mapping.
        unsafe { &*self.pending.as_ptr().add(worker) }
    }

    /// Sets signal n pending in worker `worker` (0-based) and wakes it.
    fn deliver_to(&self, worker: usize, n: u8) {
        self.mask(worker)[n as usize / 64].fetch_or(1 << (n % 64), Ordering::SeqCst);
        let _ = nix::unistd::write(&self.wakeups[worker], &1u64.to_ne_bytes());
    }

    fn deliver(&self, n: u8) -> Result<(), String> {
        match self.entry(n).target.load(Ordering::SeqCst) {
            TARGET_NONE => return Err(format!("signal {n} is not registered")),
            TARGET_ANY => {
                // SAFETY: the table lives as long as the process.
                let next = unsafe { &(*self.table.as_ptr()).next_worker };
                // In turn, skipping workers not running (cheaper mode, idle, a respawn).
                let first = next.fetch_add(1, Ordering::Relaxed) as usize;
                let worker = (0..self.processes)
                    .map(|i| (first + i) % self.processes)
                    .find(|w| crate::stats::worker_accepting(*w as u32 + 1))
                    .unwrap_or(first % self.processes);
                self.deliver_to(worker, n);
            }
            TARGET_ALL => (0..self.processes).for_each(|w| self.deliver_to(w, n)),
            target => {
                let worker = (target - TARGET_WORKER) as usize;
                if worker == 0 || worker > self.processes {
                    return Err(format!("signal {n}: there is no worker {worker}"));
                }
                self.deliver_to(worker - 1, n);
            }
        }
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `uwsgi.register_signal`: where signal n goes.
pub fn register(n: u8, target: &str) -> Result<(), String> {
    let code = match target {
        "" | "worker" => TARGET_ANY,
        "workers" | "active-workers" => TARGET_ALL,
        other => match other.strip_prefix("worker").and_then(|w| w.parse::<u32>().ok()) {
            Some(w) if w >= 1 => TARGET_WORKER + w,
            _ => {
                return Err(format!(
                    "signal target \"{other}\": ngx-wsgi delivers to \"worker\" (one), \"workers\" (all) \
                     or \"workerN\"; mules, spoolers and the master are not provided"
                ))
            }
        },
    };
    signals()?.entry(n).target.store(code, Ordering::SeqCst);
    Ok(())
}

pub fn registered(n: u8) -> bool {
    signals().is_ok_and(|s| s.entry(n).target.load(Ordering::SeqCst) != TARGET_NONE)
}

/// `uwsgi.signal(n)`: raised now, from any process.
pub fn raise(n: u8) -> Result<(), String> {
    signals()?.deliver(n)
}

/// `uwsgi.add_timer` (`iterations` 0: forever) and `add_rb_timer`.
pub fn add_timer(n: u8, seconds: u64, iterations: i64) -> Result<(), String> {
    if seconds == 0 {
        return Err("a timer's period is at least 1 second".into());
    }
    let entry = signals()?.entry(n);
    entry.iterations.store(iterations, Ordering::SeqCst);
    entry.next.store(now() + seconds, Ordering::SeqCst);
    entry.period.store(seconds, Ordering::SeqCst);
    Ok(())
}

/// `uwsgi.add_cron(n, minute, hour, day, month, weekday)`, -1 for any.
pub fn add_cron(n: u8, fields: [i64; 5]) -> Result<(), String> {
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
    let entry = signals()?.entry(n);
    for ((slot, value), (low, high)) in entry.cron.iter().zip(fields).zip(ranges) {
        let stored = match value {
            -1 => CRON_ANY,
            v if (low..=high).contains(&v) => v as u32 + 1,
            v => {
                return Err(format!(
                    "cron field {v} is out of {low}..{high} (or -1 for any)"
                ))
            }
        };
        slot.store(stored, Ordering::SeqCst);
    }
    Ok(())
}

/// `uwsgi.add_file_monitor(n, path)`: signal n is raised when `path` (a file, or a
/// directory and its entries) changes.
pub fn add_file_monitor(n: u8, path: &str) -> Result<(), String> {
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() > MONITOR_PATH {
        return Err(format!(
            "a monitored path is 1 to {MONITOR_PATH} bytes long"
        ));
    }
    if let Err(err) = std::fs::metadata(path) {
        return Err(format!("cannot monitor {path}: {err}"));
    }
    let table = signals()?.table();
    for monitor in &table.monitors {
        let claimed = monitor.signal.compare_exchange(
            0,
            u32::from(n) + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if claimed.is_ok() {
            // SAFETY: this process claimed the slot: nobody else writes its path, and the
            // master reads it only once `ready` is set below.
            let path = unsafe { &mut *monitor.path.get() };
            path[..bytes.len()].copy_from_slice(bytes);
            monitor.ready.store(bytes.len() as u32, Ordering::Release);
            return Ok(());
        }
    }
    Err(format!("at most {MONITORS} file monitors"))
}

/// The master's inotify watches of the file monitors.
pub struct FileMonitors {
    inotify: Option<nix::sys::inotify::Inotify>,
    /// Per table slot: watched yet.
    watched: [bool; MONITORS],
    signal_of: std::collections::HashMap<nix::sys::inotify::WatchDescriptor, u8>,
}

impl FileMonitors {
    pub fn new() -> Self {
        FileMonitors {
            inotify: None,
            watched: [false; MONITORS],
            signal_of: std::collections::HashMap::new(),
        }
    }

    /// The master's tick: watches monitors added since, raises the signals of those that
    /// changed (once per tick each).
    pub fn check(&mut self) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let Some(signals) = SIGNALS_TABLE.get() else {
            return;
        };
        let table = signals.table();
        for (slot, monitor) in table.monitors.iter().enumerate() {
            let len = monitor.ready.load(Ordering::Acquire) as usize;
            if self.watched[slot] || len == 0 {
                continue;
            }
            self.watched[slot] = true;
            let n = (monitor.signal.load(Ordering::SeqCst) - 1) as u8;
            // SAFETY: `ready` is set: the path is written and no longer changes.
            let path = unsafe { &*monitor.path.get() }[..len].to_vec();
            let path: std::path::PathBuf =
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(path).into();
            if self.inotify.is_none() {
                self.inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                    .map_err(|err| tracing::error!("file monitors: inotify: {err}"))
                    .ok();
            }
            let Some(inotify) = &self.inotify else {
                continue;
            };
            let flags = AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF;
            match inotify.add_watch(&path, flags) {
                Ok(wd) => {
                    tracing::info!("file monitor: signal {n} when {} changes", path.display());
                    self.signal_of.insert(wd, n);
                }
                Err(err) => tracing::error!("file monitor on {}: {err}", path.display()),
            }
        }
        let Some(inotify) = &self.inotify else {
            return;
        };
        let mut changed = std::collections::BTreeSet::new();
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            changed.extend(
                events
                    .iter()
                    .filter_map(|e| self.signal_of.get(&e.wd).copied()),
            );
        }
        for n in changed {
            if let Err(err) = signals.deliver(n) {
                tracing::warn!("file monitor: {err}");
            }
        }
    }
}

/// The master's tick: fires the timers and cron entries that are due.
pub fn fire_due() {
    let Some(signals) = SIGNALS_TABLE.get() else {
        return;
    };
    let now = now();
    let minute = now / 60;
    // Made once per tick, and only when a cron entry needs it.
    let mut local = None;
    for n in 0..SIGNALS {
        let entry = signals.entry(n as u8);
        let period = entry.period.load(Ordering::Relaxed);
        if period > 0 && entry.iterations.load(Ordering::Relaxed) >= 0 {
            let next = entry.next.load(Ordering::Relaxed);
            if now >= next {
                entry.next.store(now + period, Ordering::Relaxed);
                match entry.iterations.load(Ordering::Relaxed) {
                    0 => {}
                    1 => entry.iterations.store(-1, Ordering::Relaxed),
                    left => entry.iterations.store(left - 1, Ordering::Relaxed),
                }
                if let Err(err) = signals.deliver(n as u8) {
                    tracing::warn!("timer: {err}");
                }
            }
        }
        if entry.cron[0].load(Ordering::Relaxed) != 0
            && entry.cron_last_minute.load(Ordering::Relaxed) != minute
        {
            let local: [u32; 5] = *local.get_or_insert_with(|| local_time(now));
            let matches = entry.cron.iter().zip(local).all(|(field, value)| {
                let field = field.load(Ordering::Relaxed);
                field == CRON_ANY || field == value + 1
            });
            if matches {
                entry.cron_last_minute.store(minute, Ordering::Relaxed);
                if let Err(err) = signals.deliver(n as u8) {
                    tracing::warn!("cron: {err}");
                }
            }
        }
    }
}

/// Minute, hour, day, month, weekday of `secs`, local time.
pub fn local_time(secs: u64) -> [u32; 5] {
    let t = secs as libc::time_t;
    // SAFETY: all-zero is a valid tm, which localtime_r fills.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals.
    unsafe { libc::localtime_r(&t, &mut tm) };
    [
        tm.tm_min as u32,
        tm.tm_hour as u32,
        tm.tm_mday as u32,
        tm.tm_mon as u32 + 1,
        tm.tm_wday as u32,
    ]
}

/// In worker `id`: a thread that runs the Python handlers of the signals delivered to it.
pub fn spawn_worker_thread(id: u32) -> anyhow::Result<()> {
    let Some(signals) = SIGNALS_TABLE.get() else {
        return Ok(());
    };
    let worker = id as usize - 1;
    std::thread::Builder::new()
        .name("uwsgi-signals".into())
        .spawn(move || {
            let mut buf = [0u8; 8];
            loop {
                if nix::unistd::read(signals.wakeups[worker].as_fd(), &mut buf).is_err() {
                    return;
                }
                for (word, bits) in signals.mask(worker).iter().enumerate() {
                    let mut pending = bits.swap(0, Ordering::SeqCst);
                    while pending != 0 {
                        let bit = pending.trailing_zeros();
                        pending &= pending - 1;
                        run_signal_handler((word * 64) as u8 + bit as u8);
                    }
                }
            }
        })
        .context("cannot start the signal handler thread")?;
    Ok(())
}

/// Runs the app's handler of uWSGI signal `n` (in a worker's signal thread).
fn run_signal_handler(n: u8) {
    use pyo3::prelude::*;
    Python::attach(|py| {
        let dispatched = py
            .import("uwsgi")
            .and_then(|uwsgi| uwsgi.call_method1("_dispatch_signal", (n,)));
        if let Err(err) = dispatched {
            tracing::error!(
                "the handler of uWSGI signal {n} raised:\n{}",
                crate::python::format_exception(py, &err)
            );
        }
    });
}
