//! The spooler, as uWSGI's: background tasks kept as files.
//!
//! `uwsgi.spool()` (and `@spool`) writes a task into a spooler directory (`spooler = DIR`)
//! as a uwsgi packet: modifier1 17, the task's vars, then an optional body. Processes the
//! master starts for each directory (`spooler-processes`) run each task through the app's
//! `uwsgi.spooler` hook, and delete the file when the hook returns `SPOOL_OK`. A task is
//! on disk from the moment `spool()` returns, so a crash or a restart loses none; one that
//! was running when its process died runs again.
//!
//! - Writing: into a hidden file in the same directory, fsync'd, then renamed into place:
//!   a spooler never reads half a task.
//! - Running: `flock` on the file, so one directory can have several processes (and
//!   several daemons) without a task running twice at once.
//! - Order: numeric subdirectories first (`priority`), lowest number first, then the
//!   directory itself; oldest file first in each.
//! - A file that cannot be read as a task is moved to `DIR/broken/` and logged, never
//!   retried; a hook that raises or returns `SPOOL_RETRY` leaves the task for the next
//!   scan, as in uWSGI.
//! - Waiting: an idle spooler sleeps on inotify, so a task written into its directory
//!   wakes it at once; it also looks every `spooler-frequency` seconds, and when a task's
//!   `at` time comes.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ngx_wsgi_config::Config;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use thiserror::Error;
use uwsgi_proto::{EncodeError, PacketHeader, VarsError, HEADER_LEN};

/// `modifier1` of a spool packet.
pub const MODIFIER1_SPOOL: u8 = 17;
/// uWSGI's task file names start so; other files in the directory are not tasks.
const TASK_PREFIX: &str = "uwsgi_spoolfile_on_";
/// Where files that are not readable tasks go.
const BROKEN_DIR: &str = "broken";
/// uWSGI's return values of the `spooler` hook.
const SPOOL_OK: i64 = -2;
const SPOOL_RETRY: i64 = -1;
const SPOOL_IGNORE: i64 = 0;

/// Why a file is not a task.
#[derive(Debug, Error)]
pub enum TaskError {
    #[error("{0} bytes: shorter than a uwsgi packet header")]
    Short(usize),
    #[error("modifier1 is {0}, not 17 (a spool packet)")]
    Modifier(u8),
    #[error("the header announces {declared} bytes of vars, the file has {available} after it")]
    Truncated { declared: usize, available: usize },
    #[error(transparent)]
    Vars(#[from] VarsError),
    #[error("its at = {0:?} is not a unix time")]
    At(String),
}

/// A packet's vars, in order: (key, value).
pub type Vars = Vec<(Vec<u8>, Vec<u8>)>;

/// One task: its vars, in order, and its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Task {
    pub vars: Vars,
    pub body: Vec<u8>,
}

impl Task {
    pub fn parse(bytes: &[u8]) -> Result<Task, TaskError> {
        if let Some(&modifier1) = bytes.first() {
            if modifier1 != MODIFIER1_SPOOL {
                return Err(TaskError::Modifier(modifier1));
            }
        }
        let (vars, declared) = packet(bytes)?;
        Ok(Task {
            vars,
            body: bytes[HEADER_LEN + declared..].to_vec(),
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let pairs = self.vars.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let mut packet = uwsgi_proto::encode_request(MODIFIER1_SPOOL, pairs)?;
        packet.extend_from_slice(&self.body);
        Ok(packet)
    }

    /// The unix time before which the task must not run (its `at` var), if any.
    pub fn at(&self) -> Result<Option<f64>, TaskError> {
        let Some((_, at)) = self.vars.iter().find(|(k, _)| k == b"at") else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(at);
        // uWSGI takes a number of seconds; a fractional one (time.time()) is kept: the
        // task runs not before it.
        let seconds = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| TaskError::At(text.to_string()))?;
        Ok(Some(seconds))
    }
}

/// The vars of the uwsgi packet `bytes` starts with (any modifier1), and their length.
fn packet(bytes: &[u8]) -> Result<(Vars, usize), TaskError> {
    let header: [u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(TaskError::Short(bytes.len()))?;
    let declared = usize::from(PacketHeader::parse(header).datasize);
    let rest = &bytes[HEADER_LEN..];
    let block = rest.get(..declared).ok_or(TaskError::Truncated {
        declared,
        available: rest.len(),
    })?;
    let vars = uwsgi_proto::parse_vars(block)
        .map(|pair| pair.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((vars, declared))
}

/// `uwsgi.parsefile()`: the vars of a file's uwsgi packet.
pub fn packet_vars(bytes: &[u8]) -> Result<Vars, TaskError> {
    packet(bytes).map(|(vars, _)| vars)
}

/// Why `uwsgi.spool()` refused a task.
#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("no spooler is configured (set spooler = DIR)")]
    NoSpooler,
    #[error("{0} is not one of this daemon's spoolers ({1})")]
    UnknownSpooler(String, String),
    #[error("priority must be a whole number (it names a subdirectory), not {0:?}")]
    Priority(String),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("cannot write the task into {dir}: {source}")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `task` into spooler `dir` (the first configured one when None), in the
/// `priority` subdirectory if given; returns the task file's path.
pub fn enqueue(
    config: &Config,
    dir: Option<&Path>,
    priority: Option<&str>,
    task: &Task,
) -> Result<PathBuf, SpoolError> {
    let first = config.spooler.first().ok_or(SpoolError::NoSpooler)?;
    let dir = match dir {
        None => first.clone(),
        Some(asked) => config
            .spooler
            .iter()
            .find(|d| same_dir(d, asked))
            .cloned()
            .ok_or_else(|| {
                let known: Vec<String> = config
                    .spooler
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                SpoolError::UnknownSpooler(asked.display().to_string(), known.join(", "))
            })?,
    };
    let dir = match priority {
        None => dir,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => dir.join(p),
        Some(p) => return Err(SpoolError::Priority(p.to_string())),
    };
    let packet = task.encode()?;
    let write_err = |source| SpoolError::Write {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let name = task_name();
    let hidden = dir.join(format!(".{name}.part"));
    let path = dir.join(&name);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&hidden)?;
        file.write_all(&packet)?;
        file.sync_all()?;
        std::fs::rename(&hidden, &path)?;
        // The rename itself reaches the disk with the directory.
        File::open(&dir)?.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&hidden);
        return Err(write_err(err));
    }
    Ok(path)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        )
}

/// uWSGI's name: host, pid, a counter and the time make it unique across processes and
/// daemons sharing a directory.
fn task_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = nix::unistd::gethostname().unwrap_or_default();
    let host = host.to_string_lossy().replace(['/', '_'], "-");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{TASK_PREFIX}{host}_{}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        now.as_secs(),
        now.subsec_nanos()
    )
}

/// The task files of `dir`, in the order they run: numeric subdirectories (priorities)
/// first, lowest first, then `dir`'s own; oldest first in each.
pub fn task_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut priorities: Vec<(u64, PathBuf)> = Vec::new();
    let mut own: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if let Ok(n) = name.parse::<u64>() {
                priorities.push((n, entry.path()));
            }
        } else if kind.is_file() && name.starts_with(TASK_PREFIX) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            own.push((modified, entry.path()));
        }
    }
    priorities.sort();
    own.sort();
    let mut files = Vec::new();
    for (_, sub) in priorities {
        files.extend(task_files(&sub));
    }
    files.extend(own.into_iter().map(|(_, path)| path));
    files
}

/// The processes' table in shared memory: each spooler process's pid and tasks done,
/// read by the workers (`uwsgi.spooler_pid()`) and the stats server.
struct Table {
    tasks: &'static [AtomicU64],
    pids: &'static [AtomicI32],
    /// 1 while the process runs a task.
    running: &'static [AtomicI32],
}

/// Per slot, how many times its process was replaced (the master's own count).
static RESPAWNS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

static TABLE: OnceLock<Table> = OnceLock::new();
/// Set in a spooler process: `uwsgi.i_am_the_spooler()`.
static I_AM_THE_SPOOLER: AtomicBool = AtomicBool::new(false);

/// Maps the table, in the master before the first fork (no-op without spoolers).
pub fn install(config: &Config) -> anyhow::Result<()> {
    let slots = slots(config).len();
    let Some(len) = std::num::NonZeroUsize::new(slots * 16) else {
        return Ok(());
    };
    // Zero-filled: a valid value of every atomic in it.
    let base = crate::shm::map(len, "the spooler table")?;
    // SAFETY: the mapping holds `slots` u64 (8-byte aligned: page-aligned base), then
    // twice `slots` i32 (16 bytes a slot in all), and lives for the rest of the process.
    let (tasks, pids, running) = unsafe {
        let tasks = base.as_ptr() as *const AtomicU64;
        let pids = tasks.add(slots) as *const AtomicI32;
        (
            std::slice::from_raw_parts(tasks, slots),
            std::slice::from_raw_parts(pids, slots),
            std::slice::from_raw_parts(pids.add(slots), slots),
        )
    };
    let _ = TABLE.set(Table {
        tasks,
        pids,
        running,
    });
    *RESPAWNS.lock().unwrap_or_else(|e| e.into_inner()) = vec![0; slots];
    Ok(())
}

/// Every spooler process the config asks for: its directory, in config order.
pub fn slots(config: &Config) -> Vec<PathBuf> {
    config
        .spooler
        .iter()
        .flat_map(|dir| std::iter::repeat_n(dir.clone(), config.spooler_processes as usize))
        .collect()
}

/// The running spooler processes' pids, in slot order.
pub fn pids() -> Vec<i32> {
    TABLE.get().map_or_else(Vec::new, |t| {
        t.pids
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .filter(|p| *p != 0)
            .collect()
    })
}

/// The stats server's `spoolers`, as uWSGI lists them: one entry per process.
pub fn stats_json(config: &Config) -> serde_json::Value {
    let Some(table) = TABLE.get() else {
        return serde_json::Value::Array(Vec::new());
    };
    let respawns = RESPAWNS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    slots(config)
        .into_iter()
        .enumerate()
        .map(|(i, dir)| {
            serde_json::json!({
                "dir": dir.display().to_string(),
                "pid": table.pids[i].load(Ordering::Relaxed),
                "tasks": table.tasks[i].load(Ordering::Relaxed),
                "respawns": respawns.get(i).copied().unwrap_or(0),
                "running": table.running[i].load(Ordering::Relaxed),
            })
        })
        .collect()
}

/// In a spooler process, before the app's hooks run: `uwsgi.i_am_the_spooler()` is True.
pub fn become_spooler() {
    I_AM_THE_SPOOLER.store(true, Ordering::Relaxed);
}

pub fn i_am_the_spooler() -> bool {
    I_AM_THE_SPOOLER.load(Ordering::Relaxed)
}

/// The master records spooler process `slot`'s pid (None: gone; `respawned`: it will be
/// replaced), for the workers and the stats server.
pub fn record(slot: usize, pid: Option<nix::unistd::Pid>, respawned: bool) {
    if let Some(table) = TABLE.get() {
        let raw = pid.map_or(0, |p| p.as_raw());
        table.pids[slot].store(raw, Ordering::Relaxed);
    }
    if respawned {
        if let Some(count) = RESPAWNS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(slot)
        {
            *count += 1;
        }
    }
}

/// What became of one task file.
enum Outcome {
    Done,
    /// Left for a later scan: busy elsewhere, not due, retried, ignored, broken.
    Left,
    NotDue(f64),
}

/// The spooler process: runs the tasks of `dir` until told to stop. Returns the exit
/// code (process::EXIT_RECYCLED after `spooler-max-tasks`).
pub fn run(config: &Config, slot: usize, dir: &Path) -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
        crate::process::RETIRE as i32,
    ] {
        if let Err(err) = signal_hook::flag::register(signal, stop.clone()) {
            tracing::error!("spooler: cannot handle signal {signal}: {err}");
        }
    }
    // SIGHUP (the master's log reopening for workers) means nothing here.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(AtomicBool::new(false)),
    );
    // The master blocked these around fork(); a stop sent meanwhile arrives now.
    let _ = crate::process::stop_signals().thread_unblock();

    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|err| {
            tracing::warn!("spooler: inotify: {err}; looking every spooler-frequency seconds only")
        })
        .ok();
    let watch = |path: &Path| {
        if let Some(inotify) = &inotify {
            let flags = AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CREATE;
            let _ = inotify.add_watch(path, flags);
        }
    };
    watch(dir);
    let frequency = Duration::from_secs(config.spooler_frequency);
    let mut done = 0u64;
    let mut reported_broken = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        let mut next_due: Option<f64> = None;
        for path in task_files(dir) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Some(parent) = path.parent().filter(|p| *p != dir) {
                watch(parent);
            }
            match run_task(&path, slot, &mut reported_broken) {
                Outcome::Done => {
                    done += 1;
                    if let Some(table) = TABLE.get() {
                        table.tasks[slot].fetch_add(1, Ordering::Relaxed);
                    }
                    if config.spooler_max_tasks > 0 && done >= config.spooler_max_tasks {
                        tracing::info!(
                            "spooler-max-tasks: ran {done} tasks: exiting, to be replaced"
                        );
                        return crate::process::EXIT_RECYCLED;
                    }
                }
                Outcome::NotDue(at) => next_due = Some(next_due.map_or(at, |n| n.min(at))),
                Outcome::Left => {}
            }
        }
        let mut wait = frequency;
        if let Some(at) = next_due {
            let until = Duration::from_secs_f64((at - unix_now()).max(0.01));
            wait = wait.min(until);
        }
        wait_for_tasks(inotify.as_ref(), wait, &stop);
    }
    0
}

/// Sleeps until a file lands in a watched directory, `wait` passes, or a stop signal.
fn wait_for_tasks(inotify: Option<&Inotify>, wait: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // Short slices: a stop signal is seen within 200 ms even if poll() restarted.
        let slice = left.min(Duration::from_millis(200));
        let Some(inotify) = inotify else {
            std::thread::sleep(slice);
            continue;
        };
        let mut fds = [nix::poll::PollFd::new(
            inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout =
            nix::poll::PollTimeout::try_from(slice).unwrap_or(nix::poll::PollTimeout::MAX);
        if let Ok(n) = nix::poll::poll(&mut fds, timeout) {
            if n > 0 {
                // Drain the events: which file does not matter, the scan finds them all.
                while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
                return;
            }
        }
    }
}

fn run_task(path: &Path, slot: usize, reported_broken: &mut HashSet<PathBuf>) -> Outcome {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Outcome::Left,
        Err(err) => {
            if reported_broken.insert(path.to_path_buf()) {
                tracing::error!("spooler: cannot open task {}: {err}", path.display());
            }
            return Outcome::Left;
        }
    };
    // Another spooler process (or daemon) runs it: leave it. The lock is held until
    // the task is done (and its file removed), as long as `file` lives.
    let Ok(mut file) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    else {
        return Outcome::Left;
    };
    // Done and deleted by another process between the listing and the lock.
    if file.metadata().map_or(true, |m| nlink(&m) == 0) {
        return Outcome::Left;
    }
    let mut bytes = Vec::new();
    if let Err(err) = file.read_to_end(&mut bytes) {
        tracing::error!("spooler: cannot read task {}: {err}", path.display());
        return Outcome::Left;
    }
    let task = match Task::parse(&bytes).and_then(|task| Ok((task.at()?, task))) {
        Ok((at, task)) => match at {
            Some(at) if at > unix_now() => return Outcome::NotDue(at),
            _ => task,
        },
        Err(err) => {
            move_aside(path, &err, reported_broken);
            return Outcome::Left;
        }
    };
    let name = path.display().to_string();
    let started = Instant::now();
    let running = TABLE.get().map(|t| &t.running[slot]);
    running.inspect(|r| r.store(1, Ordering::Relaxed));
    let result = call_hook(&task, path);
    running.inspect(|r| r.store(0, Ordering::Relaxed));
    match result {
        Ok(SPOOL_OK) => {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::error!("spooler: task {name} done, but it cannot be removed ({err}): it will run again");
            }
            tracing::info!(
                "spooler: task {name} done in {} ms",
                started.elapsed().as_millis()
            );
            Outcome::Done
        }
        Ok(SPOOL_IGNORE) => Outcome::Left,
        Ok(SPOOL_RETRY) => {
            tracing::info!(
                "spooler: task {name} returned SPOOL_RETRY: it runs again at the next scan"
            );
            Outcome::Left
        }
        Ok(other) => {
            tracing::warn!("spooler: task {name} returned {other}, not SPOOL_OK (-2), SPOOL_RETRY (-1) or SPOOL_IGNORE (0): it runs again at the next scan");
            Outcome::Left
        }
        Err(why) => {
            tracing::error!("spooler: task {name} {why}; it runs again at the next scan");
            Outcome::Left
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn nlink(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(meta)
}

/// A file that is not a task goes to DIR/broken/, with a line saying why.
fn move_aside(path: &Path, why: &TaskError, reported: &mut HashSet<PathBuf>) {
    let Some((dir, name)) = path.parent().zip(path.file_name()) else {
        return;
    };
    let broken = dir.join(BROKEN_DIR);
    let target = broken.join(name);
    let moved = std::fs::create_dir_all(&broken).and_then(|()| std::fs::rename(path, &target));
    match moved {
        Ok(()) => tracing::error!(
            "spooler: {} is not a task ({why}): moved to {}",
            path.display(),
            target.display()
        ),
        Err(err) if reported.insert(path.to_path_buf()) => tracing::error!(
            "spooler: {} is not a task ({why}), and cannot be moved to {} ({err}): it is skipped",
            path.display(),
            broken.display()
        ),
        Err(_) => {}
    }
}

/// Runs the app's `uwsgi.spooler(env)`: env holds the task's vars (bytes keys and values,
/// as uWSGI gives them), `spooler_task_name` and `body`.
fn call_hook(task: &Task, path: &Path) -> Result<i64, String> {
    Python::attach(|py| {
        let hook = py
            .import("uwsgi")
            .and_then(|uwsgi| uwsgi.getattr("spooler"))
            .map_err(|err| format!("cannot find uwsgi.spooler: {err}"))?;
        if hook.is_none() {
            return Err("was not run: the app set no uwsgi.spooler hook (import uwsgidecorators and use @spool, \
                        or set uwsgi.spooler = function)"
                .to_string());
        }
        let env = PyDict::new(py);
        let fill = || -> PyResult<()> {
            for (key, value) in &task.vars {
                env.set_item(PyBytes::new(py, key), PyBytes::new(py, value))?;
            }
            env.set_item(
                "spooler_task_name",
                PyBytes::new(py, path.as_os_str().as_encoded_bytes()),
            )?;
            if !task.body.is_empty() {
                env.set_item("body", PyBytes::new(py, &task.body))?;
            }
            Ok(())
        };
        fill().map_err(|err| format!("cannot be passed to Python: {err}"))?;
        match hook.call1((env,)) {
            // A value that is not a number retries, as in uWSGI.
            Ok(ret) => Ok(ret.extract::<i64>().unwrap_or(SPOOL_RETRY)),
            Err(err) => Err(format!(
                "raised:\n{}",
                crate::python::format_exception(py, &err)
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            vars: vec![
                (b"ud_spool_func".to_vec(), b"send_mail".to_vec()),
                (b"to".to_vec(), "ünïcode".as_bytes().to_vec()),
            ],
            body: b"\x00binary\xffbody".to_vec(),
        }
    }

    #[test]
    fn a_task_reads_back_as_written() {
        let bytes = task().encode().unwrap();
        assert_eq!(bytes[0], MODIFIER1_SPOOL);
        assert_eq!(Task::parse(&bytes).unwrap(), task());
    }

    #[test]
    fn files_that_are_not_tasks_say_why() {
        let bytes = task().encode().unwrap();
        let err = |b: &[u8]| Task::parse(b).unwrap_err().to_string();
        assert_eq!(
            err(b"\x11\x00"),
            "2 bytes: shorter than a uwsgi packet header"
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n"),
            "modifier1 is 71, not 17 (a spool packet)"
        );
        assert_eq!(
            err(&bytes[..10]),
            "the header announces 41 bytes of vars, the file has 6 after it"
        );
        let mut bad_vars = bytes[..4].to_vec();
        bad_vars[1] = 3;
        bad_vars[2] = 0;
        bad_vars.extend_from_slice(b"\x09\x00a");
        assert!(err(&bad_vars).contains("uwsgi var key at offset 0 is 9 bytes long"));
    }

    #[test]
    fn at_is_a_unix_time() {
        let mut t = task();
        assert_eq!(t.at().unwrap(), None);
        t.vars.push((b"at".to_vec(), b"1700000000.5".to_vec()));
        assert_eq!(t.at().unwrap(), Some(1_700_000_000.5));
        t.vars.last_mut().unwrap().1 = b"tomorrow".to_vec();
        assert_eq!(
            t.at().unwrap_err().to_string(),
            "its at = \"tomorrow\" is not a unix time"
        );
    }
}
