//! What this process is (master, worker N, spooler N, mule N), the signals that stop
//! it, the codes it exits with and how its threads are scheduled: what every kind of
//! process and the master agree on.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;

/// 0 in the master, N in worker N.
static WORKER_ID: AtomicU32 = AtomicU32::new(0);

/// N in spooler process N, 0 elsewhere.
static SPOOLER_ID: AtomicU32 = AtomicU32::new(0);

pub fn set_spooler_id(id: u32) {
    SPOOLER_ID.store(id, Ordering::Relaxed);
}

/// N in mule N, 0 elsewhere (`uwsgi.mule_id()`).
static MULE_ID: AtomicU32 = AtomicU32::new(0);

pub fn set_mule_id(id: u32) {
    MULE_ID.store(id, Ordering::Relaxed);
}

pub fn mule_id() -> u32 {
    MULE_ID.load(Ordering::Relaxed)
}

pub fn set_worker_id(id: u32) {
    WORKER_ID.store(id, Ordering::Relaxed);
}

/// N in worker N, 0 in the master.
pub fn worker_id() -> u32 {
    WORKER_ID.load(Ordering::Relaxed)
}

/// [worker id, spooler id, mule id]: all 0 in the master.
pub fn ids() -> [u32; 3] {
    [&WORKER_ID, &SPOOLER_ID, &MULE_ID].map(|id| id.load(Ordering::Relaxed))
}

/// Exit code of a worker that stopped after `max-requests`: the master replaces it.
pub const EXIT_RECYCLED: i32 = 4;

/// Exit code of a worker whose app failed to load (`--lazy-apps`): respawning would loop.
pub const EXIT_APP_LOAD_FAILED: i32 = 3;

/// Sets the calling thread's scheduling policy (`SCHED_BATCH`, `SCHED_IDLE`: policies any
/// process may move itself to from the normal one), at the normal priority.
pub fn schedule_this_thread(policy: libc::c_int) -> std::io::Result<()> {
    let normal_priority = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the kernel only reads the parameter.
    match unsafe { libc::sched_setscheduler(0, policy, &normal_priority) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The signals the master blocks around fork() and the worker handles.
pub fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        RETIRE,
    ] {
        set.add(signal);
    }
    set
}

/// What the master sends a worker it replaces while the others serve on (reload, chain
/// reload, cheaper, max-worker-lifetime, ...): stop as SIGTERM does, and hand idle
/// kept-alive connections over to them instead of closing them.
pub const RETIRE: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// Resolves once the worker is told to stop.
pub async fn stopped(stop_rx: &mut watch::Receiver<bool>) {
    let _ = stop_rx.wait_for(|stop| *stop).await;
}
