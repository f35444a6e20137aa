//! The master process: binds the sockets, loads the app (unless `--lazy-apps`), forks
//! and supervises the workers, and turns signals into stops and reloads.
//!
//! The master never starts a thread: it forks after Python is initialized, and a process
//! that forks must be single-threaded for the child to be sound.
//!
//! Signals, a contract with systemd and with users:
//! - SIGTERM: graceful stop. Workers stop accepting, finish in-flight requests (up to
//!   `--reload-mercy` seconds), then everything exits 0. Unlike uWSGI, it does not reload.
//! - SIGINT, SIGQUIT: fast stop. Workers exit at once.
//! - SIGHUP: graceful reload. A new master image (same pid) takes over the listening
//!   sockets, loads the app afresh and starts new workers; only then are the old workers
//!   told to finish their requests and exit. Connections wait in the listen backlog in
//!   between, so none is refused. If the app no longer loads, the reload is refused and
//!   the running workers keep serving.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ngx_wsgi_config::Config;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use pyo3::prelude::*;

use crate::cheaper::{self, Cheaper};
use crate::daemons::Daemons;
use crate::handover::HandoverSockets;
use crate::helpers::{Helpers, Job};
use crate::listeners::{self, BoundListener, ListeningSocket};
use crate::process::{self, EXIT_APP_LOAD_FAILED};
use crate::reqlog::RequestLogger;
use crate::{fifo, logging, procname, python, stats, worker};

/// Set in the environment of a probe process that only loads the app and exits.
pub const CHECK_APP_ENV: &str = "NGX_WSGI_CHECK_APP";
const OLD_WORKERS_ENV: &str = "NGX_WSGI_OLD_WORKERS";
/// How the old workers stop after a reload: retiring (finish, hand idle connections over;
/// the default) or SIGINT (`R`).
const OLD_WORKERS_STOP_ENV: &str = "NGX_WSGI_OLD_WORKERS_STOP";
/// The handover socket pair's descriptors, kept open across a reload's exec.
const HANDOVER_ENV: &str = "NGX_WSGI_HANDOVER";
const TICK: Duration = Duration::from_millis(50);
const FAST_STOP_GRACE: Duration = Duration::from_secs(5);

struct Signals {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let signals = Signals {
            term: Arc::default(),
            int: Arc::default(),
            hup: Arc::default(),
        };
        signal_hook::flag::register(SIGTERM, signals.term.clone())?;
        signal_hook::flag::register(SIGINT, signals.int.clone())?;
        signal_hook::flag::register(SIGQUIT, signals.int.clone())?;
        signal_hook::flag::register(SIGHUP, signals.hup.clone())?;
        Ok(signals)
    }
}

/// Wakes the master's loop as soon as a child exits or a signal asks something of it,
/// rather than at its next tick: a worker that exits (max-requests, a crash, SIGKILL) is
/// replaced at once. One byte per signal, written by the handler.
struct Wakeup {
    read: std::os::unix::net::UnixStream,
}

impl Wakeup {
    fn register() -> anyhow::Result<Wakeup> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let (read, write) =
            std::os::unix::net::UnixStream::pair().context("cannot make the wake-up socket")?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for signal in [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(Wakeup { read })
    }

    /// Sleeps until a signal came or `timeout` passed.
    fn sleep(&self, timeout: Duration) {
        let mut polled = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.read),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut polled, millis);
        let mut drained = [0u8; 64];
        while matches!(std::io::Read::read(&mut &self.read, &mut drained), Ok(1..)) {}
    }
}

enum State {
    Running,
    Stopping { deadline: Instant },
}

/// What the master knows of one of its workers.
struct WorkerState {
    id: u32,
    born: Instant,
    /// The worker said it accepts requests (through the readiness pipe).
    ready: bool,
    /// Why the master asked it to go, if it did: its exit is then no failure.
    retiring: Option<&'static str>,
}

type Workers = HashMap<Pid, WorkerState>;

/// Workers tell the master they accept requests by writing their pid here; a chain
/// reload waits for that before replacing the next one.
struct ReadyPipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

impl ReadyPipe {
    fn new() -> anyhow::Result<ReadyPipe> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .context("cannot make the workers' readiness pipe")?;
        Ok(ReadyPipe { read, write })
    }

    /// Marks the workers that said they are ready since the last look; true when one
    /// asked for a chain reload (`uwsgi.chain_reload()`).
    fn collect(&self, workers: &mut Workers) -> bool {
        let mut buf = [0u8; 512];
        let mut chain_reload = false;
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            // Each message is 4 bytes, written whole (below PIPE_BUF): a pid, or a request.
            for message in buf[..n].chunks_exact(4) {
                let value = i32::from_ne_bytes([message[0], message[1], message[2], message[3]]);
                if value == crate::uwsgi_api::CHAIN_RELOAD_REQUEST {
                    chain_reload = true;
                } else if let Some(worker) = workers.get_mut(&Pid::from_raw(value)) {
                    worker.ready = true;
                }
            }
        }
        chain_reload
    }
}

/// How long a chain reload waits for one worker's replacement to serve.
const CHAIN_STEP_LIMIT: Duration = Duration::from_secs(60);

/// A chain reload (`touch-chain-reload`): workers replaced one at a time, the next once
/// the previous one's replacement accepts requests.
struct ChainReload {
    /// Worker ids still to replace.
    pending: Vec<u32>,
    /// The worker id being replaced, and since when.
    current: Option<(u32, Instant)>,
}

impl ChainReload {
    fn new(workers: &Workers) -> ChainReload {
        let mut pending: Vec<u32> = workers
            .values()
            .filter(|w| w.retiring.is_none())
            .map(|w| w.id)
            .collect();
        pending.sort_unstable_by(|a, b| b.cmp(a));
        ChainReload {
            pending,
            current: None,
        }
    }

    /// Moves the chain on; false once every worker has been replaced, or the chain
    /// stopped because a replacement did not come back.
    fn advance(&mut self, workers: &mut Workers) -> bool {
        if let Some((id, since)) = self.current {
            let replaced = workers
                .values()
                .any(|w| w.id == id && w.born > since && w.ready);
            if !replaced {
                if since.elapsed() < CHAIN_STEP_LIMIT {
                    return true;
                }
                tracing::error!(
                    "chain reload: worker {id} did not come back within {} s: stopping the chain \
                     (the other workers go on as they are)",
                    CHAIN_STEP_LIMIT.as_secs()
                );
                return false;
            }
            tracing::info!(
                "chain reload: worker {id} replaced and serving; {} to go",
                self.pending.len()
            );
            self.current = None;
        }
        // The next worker still running (cheaper mode may have stopped one meanwhile).
        while let Some(id) = self.pending.pop() {
            if let Some((pid, worker)) = workers.iter_mut().find(|(_, w)| w.id == id) {
                worker.retiring = Some("chain reload");
                let _ = kill(*pid, process::RETIRE);
                self.current = Some((id, Instant::now()));
                return true;
            }
        }
        tracing::info!("chain reload: done");
        false
    }
}

/// The master's periodic checks of its workers: `max-worker-lifetime`, and
/// `evil-reload-on-rss`/`-as` (memory read once a second, as uWSGI reads it every few).
fn check_workers(workers: &mut Workers, config: &Config, last_memory_check: &mut Instant) {
    if config.max_worker_lifetime > 0 {
        for (pid, worker) in workers.iter_mut().filter(|(_, w)| w.retiring.is_none()) {
            let extra = u64::from(worker.id - 1).saturating_mul(config.max_worker_lifetime_delta);
            let lifetime = config.max_worker_lifetime.saturating_add(extra);
            if worker.born.elapsed() >= Duration::from_secs(lifetime) {
                tracing::info!(
                    "worker {} (pid {pid}) has run {lifetime} s (max-worker-lifetime): replacing it gracefully",
                    worker.id
                );
                worker.retiring = Some("max-worker-lifetime");
                let _ = kill(*pid, process::RETIRE);
            }
        }
    }
    let (rss_limit, as_limit) = (config.evil_reload_on_rss, config.evil_reload_on_as);
    if (rss_limit == 0 && as_limit == 0) || last_memory_check.elapsed() < Duration::from_secs(1) {
        return;
    }
    *last_memory_check = Instant::now();
    const MIB: u64 = 1024 * 1024;
    for (pid, worker) in workers.iter_mut() {
        let (rss, vsz) = stats::memory(pid.as_raw());
        let over = if rss_limit > 0 && rss > rss_limit.saturating_mul(MIB) {
            Some(("resident memory", rss, "evil-reload-on-rss", rss_limit))
        } else if as_limit > 0 && vsz > as_limit.saturating_mul(MIB) {
            Some(("address space", vsz, "evil-reload-on-as", as_limit))
        } else {
            None
        };
        if let Some((what, bytes, option, limit)) = over {
            tracing::error!(
                "worker {} (pid {pid}): {what} {} MiB is over {option} = {limit} MiB: killing it",
                worker.id,
                bytes / MIB
            );
            worker.retiring = Some(option);
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
}

/// Stops the highest-numbered running worker gracefully, unless `fewest` are left.
fn cheap_one(workers: &mut Workers, cheaped: &mut HashSet<u32>, fewest: u32) -> bool {
    let running = workers.values().filter(|w| w.retiring.is_none()).count() as u32;
    if running <= fewest {
        return false;
    }
    let Some((pid, worker)) = workers
        .iter_mut()
        .filter(|(_, w)| w.retiring.is_none())
        .max_by_key(|(_, w)| w.id)
    else {
        return false;
    };
    worker.retiring = Some("cheaper");
    cheaped.insert(worker.id);
    let _ = kill(*pid, process::RETIRE);
    true
}

/// `idle`: after that long without a request every worker stops; a connection waiting on
/// a listener starts them again.
struct IdleWatch {
    after: Duration,
    last_requests: u64,
    last_activity: Instant,
    asleep: bool,
}

impl IdleWatch {
    fn new(config: &Config) -> Option<IdleWatch> {
        (config.idle > 0).then(|| IdleWatch {
            after: Duration::from_secs(config.idle),
            last_requests: 0,
            last_activity: Instant::now(),
            asleep: false,
        })
    }

    /// Stops the workers when idle; true when a connection came to wake them.
    fn check(
        &mut self,
        workers: &mut Workers,
        cheaped: &mut HashSet<u32>,
        listeners: &[BoundListener],
    ) -> bool {
        if self.asleep {
            if workers.is_empty() && listeners.iter().any(listeners::readable) {
                tracing::info!("idle: a connection came: starting the workers");
                self.asleep = false;
                self.last_activity = Instant::now();
                return true;
            }
            return false;
        }
        let requests = stats::total_requests(workers.values().map(|w| w.id));
        let busy = workers.values().any(|w| stats::worker_busy(w.id));
        if requests != self.last_requests || busy {
            self.last_requests = requests;
            self.last_activity = Instant::now();
            return false;
        }
        if self.last_activity.elapsed() < self.after {
            return false;
        }
        tracing::info!(
            "idle: no request for {} s: stopping the workers",
            self.after.as_secs()
        );
        for (pid, worker) in workers.iter_mut() {
            worker.retiring = Some("idle");
            cheaped.insert(worker.id);
            let _ = kill(*pid, Signal::SIGTERM);
        }
        self.last_requests = 0;
        self.asleep = true;
        false
    }
}

/// Asks every worker to finish its requests and exit; the master replaces each as it goes.
fn replace_all_workers(workers: &mut Workers, why: &'static str) {
    for (pid, worker) in workers.iter_mut().filter(|(_, w)| w.retiring.is_none()) {
        worker.retiring = Some(why);
        let _ = kill(*pid, process::RETIRE);
    }
}

/// Loads the app in a fresh process image, for `--check`-style probes before a reload.
pub fn check_app(config: &Config) -> i32 {
    if let Err(err) = privileges_reachable(config) {
        tracing::error!("{err:#}");
        return EXIT_APP_LOAD_FAILED;
    }
    match python::initialize(config, crate::uwsgi_api::install)
        .and_then(|()| Python::attach(|py| python::load_app(py, config)).map(drop))
    {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!("{err:#}");
            EXIT_APP_LOAD_FAILED
        }
    }
}

/// What a reload runs again: the `ngx-wsgi` executable (none when it cannot be found)
/// and the arguments it was given.
pub struct Invocation {
    pub exe: Option<PathBuf>,
    pub args: Vec<String>,
}

pub fn run(config: Config, invocation: Invocation) -> anyhow::Result<i32> {
    // First of all, so a stop signal during start-up (an import can take seconds) is
    // not fatal: it is acted on as soon as the workers are up.
    let signals = Signals::register()?;
    // Before anything else opens a descriptor: systemd's start at 3.
    let passed = crate::systemd::take_listen_fds();
    // Once systemd's descriptors are taken: it opens descriptors.
    let wakeup = Wakeup::register()?;
    // Written first, as uWSGI does: a supervisor may look for it as soon as we start.
    // A reload re-executes the same process: same pid, and maybe no longer root.
    let reloaded = std::env::var_os(listeners::INHERITED_FDS_ENV).is_some();
    if let Some(pidfile) = config.pidfile().filter(|_| !reloaded) {
        write_pidfile(pidfile, config.safe_pidfile.is_some())
            .with_context(|| format!("cannot write pidfile \"{}\"", pidfile.display()))?;
    }
    if let Some(mask) = config.umask {
        // Before binding: it gives unix sockets without chmod-socket their mode.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let (listeners, stats_socket) = match listeners::open_all(&config, passed) {
        Ok(sockets) => (sockets.listeners, sockets.stats),
        Err(err) => {
            // The sockets in the way are another server's: leave them, take our pidfile.
            vacuum(&config, false);
            return Err(err);
        }
    };
    for listener in &listeners {
        tracing::info!(
            "listening on \"{}\" ({:?})",
            listener.spec.addr,
            listener.spec.protocol
        );
    }
    if let (Some(addr), Some(_)) = (&config.stats, &stats_socket) {
        tracing::info!("stats on \"{addr}\"");
    }
    if nix::unistd::geteuid().is_root() && config.uid.is_none() {
        tracing::warn!(
            "running as root: the app's code runs as root too; set uid (and gid) to the user \
             it should run as (the sockets are bound first, as root)"
        );
    }
    // Opened here, before dropping privileges (a log directory may be root's); the workers
    // inherit it.
    let request_log = match RequestLogger::new(&config) {
        Ok(logger) => Arc::new(logger),
        Err(err) if reloaded => {
            tracing::error!("reload: req-logger: {err}; request lines go to the log");
            Arc::new(RequestLogger::stderr(&config))
        }
        Err(err) => {
            vacuum(&config, true);
            return Err(anyhow::anyhow!("req-logger: {err}"));
        }
    };
    // After binding (ports below 1024, sockets in root's directories), before the app loads.
    if let Err(err) = drop_privileges(&config) {
        if reloaded {
            tracing::error!("reload: {err:#}; keeping the user and group we run as");
        } else {
            vacuum(&config, true);
            return Err(err);
        }
    }
    let result = serve(
        &config,
        &invocation,
        &listeners,
        stats_socket.as_ref(),
        &signals,
        &wakeup,
        &request_log,
    );
    vacuum(&config, true);
    result
}

/// `pidfile`, or `safe-pidfile`: written to a temporary file in the same directory and
/// renamed into place, so a reader never sees it empty or half-written.
fn write_pidfile(path: &Path, atomic: bool) -> std::io::Result<()> {
    let text = format!("{}\n", std::process::id());
    if !atomic {
        return std::fs::write(path, text);
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// `touch-reload`: files whose modification time, when it changes, reloads the daemon.
struct TouchReload {
    files: Vec<(PathBuf, Option<SystemTime>)>,
}

impl TouchReload {
    fn new(files: &[PathBuf]) -> Self {
        let files = files.iter().map(|f| (f.clone(), modified(f))).collect();
        TouchReload { files }
    }

    /// Whether a file changed since the last look (one stat() per file per tick).
    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (file, seen) in &mut self.files {
            let now = modified(file);
            if now != *seen {
                tracing::info!("touch-reload: \"{}\" changed: reloading", file.display());
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Whether a reload can switch to the config's `uid`/`gid`: only root can change them.
fn privileges_reachable(config: &Config) -> anyhow::Result<()> {
    use nix::unistd::{geteuid, getgid, getuid};
    if geteuid().is_root() {
        return Ok(());
    }
    let (uid, gid) = wanted_ids(config)?;
    if uid.is_some_and(|uid| uid != getuid()) || gid.is_some_and(|gid| gid != getgid()) {
        anyhow::bail!(
            "uid/gid changed in the config: running as uid {} gid {}, only a restart can switch",
            getuid(),
            getgid()
        );
    }
    Ok(())
}

/// The config's `uid` and `gid`, names or numbers, as ids.
fn wanted_ids(config: &Config) -> anyhow::Result<(Option<Uid>, Option<Gid>)> {
    use ngx_wsgi_config::owner::{group_id, user_id};
    let uid = config.uid.as_deref().map(user_id).transpose();
    let gid = config.gid.as_deref().map(group_id).transpose();
    Ok((
        uid.map_err(|err| anyhow::anyhow!("uid: {err}"))?
            .map(Uid::from_raw),
        gid.map_err(|err| anyhow::anyhow!("gid: {err}"))?
            .map(Gid::from_raw),
    ))
}

/// `uid` and `gid`: runs as this user and group from now on, as uWSGI does once its
/// sockets are bound. A no-op when already them (after a reload's re-exec).
fn drop_privileges(config: &Config) -> anyhow::Result<()> {
    use nix::unistd::{getgid, getuid, setgid, setgroups, setuid};
    let (user, gid) = wanted_ids(config)?;
    if let Some(gid) = gid.filter(|gid| *gid != getgid()) {
        // Supplementary groups are root's until replaced: keep only the one asked for.
        setgroups(&[gid]).context("gid: cannot drop supplementary groups")?;
        setgid(gid).with_context(|| format!("gid: cannot switch to group {gid}"))?;
    }
    if let Some(uid) = user.filter(|uid| *uid != getuid()) {
        if gid.is_none() {
            tracing::warn!("uid without gid: keeping group {}", getgid());
        }
        setuid(uid).with_context(|| format!("uid: cannot switch to user {uid}"))?;
    }
    if gid.is_some() || user.is_some() {
        tracing::info!("running as uid {} gid {}", getuid(), getgid());
    }
    Ok(())
}

/// `--vacuum`: removes the pidfile, the master fifos and, when we bound them, the unix
/// socket files.
fn vacuum(config: &Config, sockets: bool) {
    if !config.vacuum {
        return;
    }
    let socket_files = if sockets {
        listeners::vacuum_paths(config)
    } else {
        Vec::new()
    };
    let files = socket_files
        .into_iter()
        .chain(config.master_fifo.iter().map(PathBuf::as_path))
        .chain(config.pidfile());
    for file in files {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            // Typically a root-owned directory (/run/ngx-wsgi) after the drop to uid: the
            // file stays, and the next start replaces a stale socket file.
            Err(err) => tracing::warn!(
                "vacuum: cannot remove \"{}\": {err} (running as uid {}); it is left, and the next start replaces it",
                file.display(),
                nix::unistd::getuid()
            ),
        }
    }
}

/// Each `spooler` directory exists and is writable by the user the daemon runs as (it
/// has dropped privileges by now): a clear error at start rather than tasks lost later.
fn check_spooler_dirs(config: &Config) -> anyhow::Result<()> {
    use nix::unistd::{access, AccessFlags};
    for dir in &config.spooler {
        if !dir.is_dir() {
            anyhow::bail!(
                "spooler {}: no such directory (make it, writable by the user the daemon runs as)",
                dir.display()
            );
        }
        if let Err(err) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
            anyhow::bail!(
                "spooler {}: not writable by uid {} ({err}): the spooler and the workers write tasks there",
                dir.display(),
                nix::unistd::getuid()
            );
        }
    }
    Ok(())
}

/// Loads the app, starts the workers and supervises them until a stop signal.
fn serve(
    config: &Config,
    invocation: &Invocation,
    listeners: &[BoundListener],
    stats_socket: Option<&ListeningSocket>,
    signals: &Signals,
    wakeup: &Wakeup,
    request_log: &Arc<RequestLogger>,
) -> anyhow::Result<i32> {
    python::initialize(config, crate::uwsgi_api::install)?;
    procname::set(config, None);
    // Before the first fork: every worker maps the same caches.
    crate::cache::install(config)?;
    crate::locks::install(config.locks)?;
    crate::signals::install(config.processes)?;
    crate::spooler::install(config)?;
    check_spooler_dirs(config)?;
    crate::mules::install(config)?;
    let mut notifier = crate::systemd::Notifier::from_env();
    // The workers' counters: the stats server, cheaper mode, idle and systemd's STATUS=
    // read them, and the request log's `req: N/M`.
    let shared = stats::SharedCounters::install(config.processes, config.threads)?;
    let counters = stats_socket.map(|socket| (shared, socket));
    let app = if config.lazy_apps {
        None
    } else {
        let app = Python::attach(|py| python::load_app(py, config))?;
        tracing::info!(
            "app loaded; forking {} worker(s) with {} thread(s) each",
            config.processes,
            config.threads
        );
        Some(app)
    };
    let batch_scheduling = crate::worker::decide_scheduling(config, listeners);
    let ready = ReadyPipe::new()?;
    let handover = handover_sockets()?;
    let spawner = Spawner {
        config,
        app: app.as_ref(),
        listeners,
        ready: &ready,
        request_log,
        handover: &handover,
        batch_scheduling,
    };
    let mut workers: Workers = HashMap::new();
    let mut cheaper = Cheaper::new(config);
    // Worker ids not running on purpose (cheaper mode, idle): not respawned when they exit.
    let mut cheaped: HashSet<u32> = (Cheaper::initial(config) + 1..=config.processes).collect();
    for id in 1..=Cheaper::initial(config) {
        spawner.start(&mut workers, id)?;
    }
    // Spooler processes and mules.
    let mut helpers = Helpers::new(config);
    helpers.start_due(|job| spawn_helper(job, config))?;
    let mut idle = IdleWatch::new(config);
    let mut old_workers = retire_old_workers();
    let mut state = State::Running;
    let mut touched = TouchReload::new(&config.touch_reload);
    let mut touched_workers = TouchReload::new(&config.touch_workers_reload);
    let mut touched_chain = TouchReload::new(&config.touch_chain_reload);
    let mut touched_log = TouchReload::new(&config.touch_logreopen);
    let mut last_log_check = Instant::now();
    let mut chain: Option<ChainReload> = None;
    let mut last_memory_check = Instant::now();
    let mut last_cheaper_check = Instant::now();
    let mut last_cache_sweep = Instant::now();
    let mut fifo = fifo::MasterFifo::open(&config.master_fifo)?;
    let mut file_monitors = crate::signals::FileMonitors::new();
    let mut cron_jobs = crate::cron_jobs::CronJobs::new(config);
    let mut daemons = Daemons::start(config.attached_daemons());
    let mut brutal_reload = false;
    let mut fast_stop = false;
    let mut told_ready = false;
    loop {
        if ready.collect(&mut workers) {
            tracing::info!("uwsgi.chain_reload() called by the app");
            if chain.is_none() {
                warn_without_lazy_apps(config, "uwsgi.chain_reload()");
                chain = Some(ChainReload::new(&workers));
            }
        }
        if let Some(notifier) = &mut notifier {
            if !told_ready && !workers.is_empty() && workers.values().all(|w| w.ready) {
                told_ready = true;
                notifier.ready(status_line(&workers));
            }
            notifier.tick(|| status_line(&workers));
        }
        for command in fifo.commands() {
            use fifo::Command;
            tracing::info!("master fifo: {command:?}");
            match command {
                Command::Reload => signals.hup.store(true, Ordering::SeqCst),
                Command::BrutalReload => {
                    brutal_reload = true;
                    signals.hup.store(true, Ordering::SeqCst);
                }
                Command::Stop => signals.term.store(true, Ordering::SeqCst),
                Command::BrutalStop => signals.int.store(true, Ordering::SeqCst),
                Command::ReloadWorkers => {
                    warn_without_lazy_apps(config, "master fifo w");
                    replace_all_workers(&mut workers, "master fifo w");
                }
                Command::BrutalReloadWorkers => {
                    for (pid, worker) in &mut workers {
                        worker.retiring = Some("master fifo W");
                        let _ = kill(*pid, Signal::SIGINT);
                    }
                }
                Command::ChainReload if chain.is_none() => {
                    warn_without_lazy_apps(config, "master fifo c");
                    chain = Some(ChainReload::new(&workers));
                }
                Command::ChainReload => tracing::info!("chain reload: already under way"),
                Command::Stats => log_workers(&workers),
                Command::ReopenLogs => reopen_logs(config, workers.keys().chain(&old_workers)),
                Command::MoreWorkers | Command::FewerWorkers if cheaper.is_none() => {
                    tracing::error!(
                        "master fifo: + and - add and remove workers in cheaper mode: set cheaper \
                         (the fewest workers) below processes (the most)"
                    )
                }
                Command::MoreWorkers => {
                    let started = spawner.start_cheaped(&mut workers, &mut cheaped, 1)?;
                    if started == 0 {
                        tracing::warn!(
                            "master fifo +: already at processes = {}",
                            config.processes
                        );
                    }
                }
                Command::FewerWorkers => {
                    let fewest = cheaper.as_ref().map_or(config.processes, |c| c.min);
                    if !cheap_one(&mut workers, &mut cheaped, fewest) {
                        tracing::warn!("master fifo -: already at cheaper = {fewest}");
                    }
                }
            }
        }
        // Signals before reaping: systemd (KillMode=control-group) and a terminal's Ctrl-C
        // signal the workers together with the master, and a worker that stopped because
        // of that signal must not be respawned.
        if signals.int.swap(false, Ordering::SeqCst) {
            fast_stop = true;
            tracing::info!("SIGINT/SIGQUIT: stopping now");
            if let Some(notifier) = &notifier {
                notifier.stopping("SIGINT/SIGQUIT, at once");
            }
            let everyone = workers.keys().chain(&old_workers).chain(helpers.pids());
            signal_all(everyone, Signal::SIGINT);
            state = State::Stopping {
                deadline: Instant::now() + FAST_STOP_GRACE,
            };
        } else if signals.term.swap(false, Ordering::SeqCst) && matches!(state, State::Running) {
            if let Some(notifier) = &notifier {
                notifier.stopping("SIGTERM, in-flight requests finish");
            }
            tracing::info!(
                "SIGTERM: stopping gracefully, in-flight requests finish (up to {} s)",
                config.reload_mercy
            );
            // Before the workers hear of it: they answer what is queued, and nothing more
            // may join the queue once they have (it would be reset at our exit).
            for listener in listeners {
                if let Err(err) = listeners::stop_taking_connections(listener) {
                    tracing::warn!(
                        "\"{}\": cannot stop new connections ({err}); those that come during \
                         the stop are reset at exit",
                        listener.spec.addr
                    );
                }
            }
            stats::daemon_stopping();
            let everyone = workers.keys().chain(&old_workers).chain(helpers.pids());
            signal_all(everyone, Signal::SIGTERM);
            state = State::Stopping {
                deadline: Instant::now() + Duration::from_secs(config.reload_mercy),
            };
        } else if (signals.hup.swap(false, Ordering::SeqCst) || touched.changed())
            && matches!(state, State::Running)
        {
            let old_workers_stop = if std::mem::take(&mut brutal_reload) {
                Signal::SIGINT
            } else {
                process::RETIRE
            };
            let stats = stats_socket.zip(config.stats.as_ref());
            if let Some(notifier) = &notifier {
                notifier.reloading();
            }
            let sockets = ExecSockets {
                listeners,
                stats,
                handover: &handover,
            };
            reload(
                invocation,
                sockets,
                // Spooler processes finish their task and exit, as workers their requests
                // (mules stop at once).
                workers.keys().chain(&old_workers).chain(helpers.pids()),
                old_workers_stop,
                &mut daemons,
                Duration::from_secs(config.reload_mercy),
            )?;
            // Still here: the reload was refused and these workers go on serving.
            if let Some(notifier) = &mut notifier {
                notifier.ready(status_line(&workers));
            }
        }
        if matches!(state, State::Running) {
            if touched_workers.changed() {
                warn_without_lazy_apps(config, "touch-workers-reload");
                replace_all_workers(&mut workers, "touch-workers-reload");
            }
            if touched_chain.changed() && chain.is_none() {
                warn_without_lazy_apps(config, "touch-chain-reload");
                tracing::info!("chain reload: replacing the workers one at a time");
                chain = Some(ChainReload::new(&workers));
            }
            if let Some(reloading) = &mut chain {
                if !reloading.advance(&mut workers) {
                    chain = None;
                }
            }
            check_workers(&mut workers, config, &mut last_memory_check);
            if let Some(cheaper) = &mut cheaper {
                if last_cheaper_check.elapsed() >= Duration::from_secs(1) {
                    last_cheaper_check = Instant::now();
                    let active: Vec<u32> = workers
                        .values()
                        .filter(|w| w.retiring.is_none())
                        .map(|w| w.id)
                        .collect();
                    let busy = active.iter().filter(|id| stats::worker_busy(**id)).count() as u32;
                    let backlog = listeners.iter().map(listeners::queued).sum();
                    match cheaper.decide(active.len() as u32, busy, backlog) {
                        cheaper::Decision::Spawn(n) => {
                            let started = spawner.start_cheaped(&mut workers, &mut cheaped, n)?;
                            tracing::info!(
                                "cheaper: {busy} of {} workers busy: started {started} more",
                                active.len()
                            );
                        }
                        cheaper::Decision::Cheap => {
                            if cheap_one(&mut workers, &mut cheaped, cheaper.min) {
                                tracing::info!(
                                    "cheaper: {} of {} workers idle: stopping one",
                                    active.len() as u32 - busy,
                                    active.len()
                                );
                            }
                        }
                        cheaper::Decision::Nothing => {}
                    }
                }
            }
            if let Some(idle) = &mut idle {
                if idle.check(&mut workers, &mut cheaped, listeners) {
                    let wanted = Cheaper::initial(config);
                    spawner.start_cheaped(&mut workers, &mut cheaped, wanted)?;
                }
            }
            if last_cache_sweep.elapsed() >= Duration::from_secs(config.cache_expire_freq) {
                last_cache_sweep = Instant::now();
                crate::cache::sweep_all();
            }
            if touched_log.changed() {
                reopen_logs(config, workers.keys().chain(&old_workers));
            }
            if last_log_check.elapsed() >= Duration::from_secs(1) {
                last_log_check = Instant::now();
                if rotate_log(config) {
                    reopen_logs(config, workers.keys().chain(&old_workers));
                }
            }
        }
        reap(
            &mut workers,
            &mut old_workers,
            &cheaped,
            (&mut daemons, &mut helpers),
            &state,
            &spawner,
        )?;
        if matches!(state, State::Running) {
            daemons.check();
            helpers.start_due(|job| spawn_helper(job, config))?;
        }
        if let State::Stopping { deadline } = state {
            if workers.is_empty() && old_workers.is_empty() && helpers.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{} worker(s) and {} spooler process(es) or mule(s) still busy after the grace period: killing them",
                    workers.len() + old_workers.len(),
                    helpers.pids().count()
                );
                let everyone = workers.keys().chain(&old_workers).chain(helpers.pids());
                signal_all(everyone, Signal::SIGKILL);
            }
        }
        if let Some((counters, socket)) = &counters {
            counters.serve_pending(socket, config, listeners);
        }
        if matches!(state, State::Running) {
            crate::signals::fire_due();
            file_monitors.check();
            cron_jobs.tick();
        }
        // Until the next tick, or until a signal or a child's exit wakes the loop.
        wakeup.sleep(TICK);
    }
    let mercy = match fast_stop {
        true => FAST_STOP_GRACE,
        false => Duration::from_secs(config.reload_mercy),
    };
    daemons.stop_all(mercy);
    tracing::info!("stopped");
    Ok(0)
}

/// The socket pair retiring workers hand idle connections over on: the one the previous
/// master image kept open across a reload (old workers still hold it), or a new one.
fn handover_sockets() -> anyhow::Result<HandoverSockets> {
    if let Ok(fds) = std::env::var(HANDOVER_ENV) {
        // SAFETY: single-threaded here; nothing else reads the environment.
        unsafe { std::env::remove_var(HANDOVER_ENV) };
        if let Some((send, receive)) = fds.split_once(' ') {
            if let (Ok(send), Ok(receive)) = (send.parse(), receive.parse()) {
                // SAFETY: the previous image named these two descriptors, left open across
                // exec for us; nothing else here owns them.
                let sockets = unsafe { HandoverSockets::from_raw(send, receive) };
                for fd in [&sockets.send, &sockets.receive] {
                    nix::fcntl::fcntl(
                        fd,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                    )
                    .context("fcntl(F_SETFD) on the handover socket")?;
                }
                return Ok(sockets);
            }
        }
    }
    HandoverSockets::new().context("cannot make the handover socket pair")
}

/// systemd's `STATUS=`: what `systemctl status` shows under the unit's name.
fn status_line(workers: &Workers) -> String {
    let ids = || {
        workers
            .values()
            .filter(|w| w.retiring.is_none())
            .map(|w| w.id)
    };
    let busy = ids().filter(|id| stats::worker_busy(*id)).count();
    format!(
        "serving: {} workers ({busy} busy), {} requests",
        ids().count(),
        stats::total_requests(ids())
    )
}

/// Without lazy-apps, workers fork from the master's copy of the app: replacing them does
/// not load new code. uWSGI's chain reload has the same limit; say so when it matters.
fn warn_without_lazy_apps(config: &Config, option: &str) {
    if !config.lazy_apps {
        tracing::warn!(
            "{option}: without lazy-apps the new workers run the code the master loaded at \
             start; reload the whole daemon (SIGHUP, touch-reload) to load new code"
        );
    }
}

/// What starting a worker takes: the config, the app loaded before forking (unless
/// lazy-apps), the listeners and the readiness pipe.
struct Spawner<'a> {
    config: &'a Config,
    app: Option<&'a Py<PyAny>>,
    listeners: &'a [BoundListener],
    ready: &'a ReadyPipe,
    /// Opened by the master; each worker writes its request lines through it.
    request_log: &'a Arc<RequestLogger>,
    /// Where retiring workers hand their idle connections to the others.
    handover: &'a HandoverSockets,
    /// Whether the request threads run under `SCHED_BATCH` (`sched-batch`, decided once).
    batch_scheduling: bool,
}

impl Spawner<'_> {
    /// Forks worker `id` and records it.
    fn start(&self, workers: &mut Workers, id: u32) -> anyhow::Result<()> {
        let pid = spawn_worker(id, self)?;
        let worker = WorkerState {
            id,
            born: Instant::now(),
            ready: false,
            retiring: None,
        };
        workers.insert(pid, worker);
        Ok(())
    }

    /// Starts up to `n` of the workers not running (cheaper mode, idle); returns how many.
    fn start_cheaped(
        &self,
        workers: &mut Workers,
        cheaped: &mut HashSet<u32>,
        n: u32,
    ) -> anyhow::Result<u32> {
        let mut ids: Vec<u32> = cheaped
            .iter()
            .copied()
            // A worker still finishing its last requests keeps its id until it is gone.
            .filter(|id| !workers.values().any(|w| w.id == *id))
            .collect();
        ids.sort_unstable();
        let mut started = 0;
        for id in ids.into_iter().take(n as usize) {
            cheaped.remove(&id);
            self.start(workers, id)?;
            started += 1;
        }
        Ok(started)
    }
}

/// Forks a child of the master: Some(its pid) in the master, None in the child.
///
/// A stop signal sent to the child before it has its own handlers would hit the master's
/// inherited ones and be lost: the signals stay blocked across fork(); the child unblocks
/// them once its handlers are in place, and gets any pending one then.
fn fork_child() -> anyhow::Result<Option<Pid>> {
    let stop_signals = process::stop_signals();
    stop_signals
        .thread_block()
        .context("blocking signals for fork()")?;
    let pid = Python::attach(python::fork).context("fork() failed");
    if !matches!(pid, Ok(0)) {
        stop_signals
            .thread_unblock()
            .context("unblocking signals after fork()")?;
    }
    Ok(match pid? {
        0 => {
            // The master's handler would wake the master for this process's children.
            // SAFETY: resets one signal's disposition in the new, still single-threaded
            // child; no handler state is touched.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
            None
        }
        pid => Some(Pid::from_raw(pid)),
    })
}

/// Forks a spooler process or a mule (helpers.rs): it runs its job until stopped.
fn spawn_helper(job: &Job, config: &Config) -> anyhow::Result<Pid> {
    if let Some(pid) = fork_child()? {
        return Ok(pid);
    }
    // In the child: never return into the master's loop.
    let title = match job {
        Job::Spooler { slot, .. } => {
            process::set_spooler_id(*slot as u32 + 1);
            crate::spooler::become_spooler();
            format!("ngx-wsgi spooler {}", slot + 1)
        }
        Job::Mule { id, .. } => {
            process::set_mule_id(*id);
            crate::mules::stop_at_once();
            format!("ngx-wsgi mule {id}")
        }
    };
    if config.auto_procname {
        procname::set_title(&title);
    }
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    // With lazy-apps the master has not imported the app: its @spool and @mulefunc
    // functions are registered by importing it here (not for a mule with a script).
    let script_mule = matches!(
        job,
        Job::Mule {
            script: Some(_),
            ..
        }
    );
    if config.lazy_apps && !script_mule {
        if let Err(err) = Python::attach(|py| python::load_app(py, config)) {
            tracing::error!("{err:#}");
            std::process::exit(EXIT_APP_LOAD_FAILED);
        }
    }
    Python::attach(crate::uwsgi_api::run_post_fork_hook);
    let code = match job {
        Job::Spooler { slot, dir } => crate::spooler::run(config, *slot, dir),
        Job::Mule { id, script } => crate::mules::run(*id, script.as_deref()),
    };
    Python::attach(crate::uwsgi_api::run_atexit);
    std::process::exit(code);
}

fn spawn_worker(id: u32, spawner: &Spawner<'_>) -> anyhow::Result<Pid> {
    let Spawner {
        config,
        app,
        listeners,
        ready,
        request_log,
        handover,
        batch_scheduling,
    } = *spawner;
    if let Some(pid) = fork_child()? {
        tracing::info!("worker {id} started (pid {pid})");
        stats::worker_started(id, pid.as_raw());
        return Ok(pid);
    }
    // In the child: never return into the master's loop.
    process::set_worker_id(id);
    procname::set(config, Some(id));
    stats::attach(id);
    if config.limit_as > 0 {
        // Here rather than in the master, so only the workers run under the cap.
        let bytes = config.limit_as.saturating_mul(1024 * 1024);
        let limited =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes);
        if let Err(err) = limited {
            tracing::error!(
                "limit-as: setrlimit(RLIMIT_AS, {} MiB) failed: {err}",
                config.limit_as
            );
        }
    }
    // A worker outliving its master finishes its requests and exits.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let app = match app {
        Some(app) => Python::attach(|py| app.clone_ref(py)),
        None => match Python::attach(|py| python::load_app(py, config)) {
            Ok(app) => app,
            Err(err) => {
                tracing::error!("{err:#}");
                std::process::exit(EXIT_APP_LOAD_FAILED);
            }
        },
    };
    crate::uwsgi_api::set_master_pipe(std::os::fd::AsRawFd::as_raw_fd(&ready.write));
    // @postfork: after fork, and after the app loaded (with lazy-apps too).
    Python::attach(crate::uwsgi_api::run_post_fork_hook);
    if let Err(err) = crate::signals::spawn_worker_thread(id) {
        tracing::error!("{err:#}");
    }
    use std::os::fd::AsFd;
    let code = match worker::run(
        config,
        app,
        listeners,
        ready.write.as_fd(),
        request_log.clone(),
        handover,
        batch_scheduling,
    ) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            1
        }
    };
    Python::attach(crate::uwsgi_api::run_atexit);
    std::process::exit(code);
}

/// Collects exited workers; respawns them unless the master is stopping.
fn reap(
    workers: &mut Workers,
    old_workers: &mut Vec<Pid>,
    cheaped: &HashSet<u32>,
    (daemons, helpers): (&mut Daemons, &mut Helpers),
    state: &State,
    spawner: &Spawner,
) -> anyhow::Result<()> {
    loop {
        let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, (Some(code), None)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, (None, Some(signal))),
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(()),
            Ok(_) => continue,
            Err(err) => return Err(err).context("waitpid()"),
        };
        old_workers.retain(|old| *old != pid);
        let Some(WorkerState { id, retiring, .. }) = workers.remove(&pid) else {
            let text = match how {
                (Some(code), _) => format!("exited with code {code}"),
                (_, Some(signal)) => format!("was killed by {signal}"),
                _ => "ended".to_string(),
            };
            let stopping = matches!(state, State::Stopping { .. });
            if !helpers.exited(pid, how.0, &text, stopping) {
                daemons.exited(pid, &text);
            }
            continue;
        };
        stats::worker_gone(id);
        if matches!(state, State::Stopping { .. }) {
            continue;
        }
        if cheaped.contains(&id) {
            tracing::info!(
                "worker {id} (pid {pid}) stopped ({})",
                retiring.unwrap_or("cheaper")
            );
            continue;
        }
        if how.0 == Some(EXIT_APP_LOAD_FAILED) {
            // Respawning would loop. With no worker left, nothing serves: stop; with
            // others still serving (a replacement after a broken deploy), they go on.
            if workers.is_empty() && old_workers.is_empty() {
                anyhow::bail!("worker {id} could not load the app (see above); not respawning it");
            }
            tracing::error!(
                "worker {id} could not load the app (see above); not respawning it: the other \
                 workers go on serving until a reload loads a working app"
            );
            continue;
        }
        match how {
            _ if retiring.is_some() => tracing::info!(
                "worker {id} (pid {pid}) retired ({}); starting its replacement",
                retiring.unwrap_or_default()
            ),
            (Some(process::EXIT_RECYCLED), _) => {
                tracing::info!(
                    "worker {id} (pid {pid}) retired itself (reason above); starting its replacement"
                )
            }
            (Some(code), _) => {
                tracing::error!("worker {id} (pid {pid}) exited with code {code}; respawning it")
            }
            (_, Some(signal)) => {
                tracing::error!("worker {id} (pid {pid}) was killed by {signal}; respawning it")
            }
            _ => {}
        }
        spawner.start(workers, id)?;
    }
}

fn signal_all<'a>(pids: impl Iterator<Item = &'a Pid>, signal: Signal) {
    for pid in pids {
        let _ = kill(*pid, signal);
    }
}

/// After a reload, the previous image's workers are told to finish and exit.
fn retire_old_workers() -> Vec<Pid> {
    let Ok(list) = std::env::var(OLD_WORKERS_ENV) else {
        return Vec::new();
    };
    let stop = match std::env::var(OLD_WORKERS_STOP_ENV).as_deref() {
        Ok("SIGINT") => Signal::SIGINT,
        _ => process::RETIRE,
    };
    // SAFETY: single-threaded here; nothing else reads the environment.
    unsafe {
        std::env::remove_var(OLD_WORKERS_ENV);
        std::env::remove_var(OLD_WORKERS_STOP_ENV);
    }
    let old: Vec<Pid> = list
        .split(',')
        .filter_map(|p| p.parse().ok())
        .map(Pid::from_raw)
        .collect();
    tracing::info!(
        "reload: new workers are up; {} old worker(s) finish their requests and exit",
        old.len()
    );
    signal_all(old.iter(), stop);
    old
}

/// Reopens the log file in the master and, by SIGHUP, in every worker.
fn reopen_logs<'a>(config: &Config, workers: impl Iterator<Item = &'a Pid>) {
    if let Err(err) = logging::reopen(config) {
        tracing::error!("reopening the log: {err:#}");
    }
    signal_all(workers, Signal::SIGHUP);
}

/// `log-maxsize`: renames the log file once it is over the size (to `log-backupname`, or
/// FILE.TIMESTAMP as uWSGI names it); true when the processes must reopen it.
fn rotate_log(config: &Config) -> bool {
    let Some(log) = crate::logging::log_file(config).filter(|_| config.log_maxsize > 0) else {
        return false;
    };
    let size = std::fs::metadata(log).map_or(0, |m| m.len());
    if size <= config.log_maxsize {
        return false;
    }
    let backup = config.log_backupname.clone().unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("{}.{now}", log.display()))
    });
    tracing::info!(
        "log file is {size} bytes, over log-maxsize = {}: rotating it to \"{}\"",
        config.log_maxsize,
        backup.display()
    );
    match std::fs::rename(log, &backup) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!("log-maxsize: cannot rename \"{}\": {err}", log.display());
            false
        }
    }
}

/// Master fifo `s`: each worker's state in the log.
fn log_workers(workers: &Workers) {
    let mut list: Vec<(&Pid, &WorkerState)> = workers.iter().collect();
    list.sort_by_key(|(_, w)| w.id);
    for (pid, worker) in list {
        let (rss, vsz) = stats::memory(pid.as_raw());
        tracing::info!(
            "worker {} (pid {pid}): up {} s, {}, rss {} MiB, address space {} MiB",
            worker.id,
            worker.born.elapsed().as_secs(),
            worker.retiring.map_or_else(
                || if worker.ready {
                    "serving".to_string()
                } else {
                    "starting".to_string()
                },
                |why| format!("retiring ({why})")
            ),
            rss >> 20,
            vsz >> 20
        );
    }
}

/// Re-executes the master with the listening sockets open, after checking that the app
/// still loads in a fresh process.
#[allow(clippy::too_many_arguments)]
/// What a reload passes on to the next master image, open across exec.
struct ExecSockets<'a> {
    listeners: &'a [BoundListener],
    stats: Option<(&'a ListeningSocket, &'a ngx_wsgi_config::ListenAddr)>,
    handover: &'a HandoverSockets,
}

fn reload<'a>(
    Invocation { exe, args }: &Invocation,
    ExecSockets {
        listeners,
        stats,
        handover,
    }: ExecSockets<'_>,
    workers: impl Iterator<Item = &'a Pid>,
    old_workers_stop: Signal,
    daemons: &mut Daemons,
    mercy: Duration,
) -> anyhow::Result<()> {
    let Some(exe) = exe else {
        tracing::error!("reload refused: cannot find our own executable to run again (is /proc mounted?); the running workers keep serving");
        return Ok(());
    };
    tracing::info!("reloading; checking that the app loads");
    let probe = std::process::Command::new(exe)
        .args(args)
        .env(CHECK_APP_ENV, "1")
        .status();
    match probe {
        Ok(status) if status.success() => {}
        Ok(_) => {
            tracing::error!("reload refused: the new config or the app does not load (see above); the running workers keep serving");
            return Ok(());
        }
        Err(err) => {
            tracing::error!(
                "reload refused: cannot run \"{}\": {err}; the running workers keep serving",
                exe.display()
            );
            return Ok(());
        }
    }
    // The new image starts the plain daemons again (smart ones go on running).
    daemons.stop(true, mercy);
    let fds = listeners::export_for_exec(listeners, stats)?;
    crate::cache::export_for_exec()?;
    for fd in [&handover.send, &handover.receive] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .context("fcntl(F_SETFD) on the handover socket")?;
    }
    use std::os::fd::AsRawFd;
    let handover = format!(
        "{} {}",
        handover.send.as_raw_fd(),
        handover.receive.as_raw_fd()
    );
    let pids: Vec<String> = workers.map(|p| p.to_string()).collect();
    // SAFETY: single-threaded master; the environment is read by the image we exec.
    unsafe {
        std::env::set_var(listeners::INHERITED_FDS_ENV, fds);
        std::env::set_var(OLD_WORKERS_ENV, pids.join(","));
        std::env::set_var(OLD_WORKERS_STOP_ENV, old_workers_stop.as_str());
        std::env::set_var(HANDOVER_ENV, handover);
    }
    let program = CString::new(exe.as_os_str().as_encoded_bytes())?;
    let mut argv = vec![program.clone()];
    for arg in args {
        argv.push(CString::new(arg.as_bytes())?);
    }
    let err = nix::unistd::execv(&program, &argv).unwrap_err();
    anyhow::bail!("reload failed: execv(\"{}\"): {err}", exe.display())
}
