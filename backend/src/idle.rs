//! Kept-alive connections between two requests (uwsgi and HTTP), and how they leave a
//! busy thread.
//!
//! nginx keeps idle connections to the daemon and sends each request on the one it put
//! back last, not knowing which request thread holds it. A thread running a slow request
//! would hold its other idle connections with it, and a request nginx sends on one of them
//! would wait for the slow one to end (head-of-line blocking), while other workers idle.
//!
//! So each request thread lists its idle connections here, and one thread per worker, the
//! mover, looks at the request threads every [`TICK`]. When a thread has been in the same
//! request since its last look and holds up requests another could serve (while a thread
//! of some worker is free, as the stats counters say: it waits, for sleep, I/O or a lock,
//! or it has computed for [`COMPUTING_LOOKS`] looks; while none is: it waits in a system
//! call other than a futex, or in a futex, which may be the GIL, for that many looks),
//! those of its idle connections on which a
//! request has arrived go to the handover socket every worker takes from (`handover.rs`).
//! Only a free thread takes from it, one connection at a time (it serves that request
//! before it takes another); when none is free they wait there, in one queue, for the
//! first that is: uWSGI's shared accept queue, for connections kept alive. The master
//! holds that socket too, so what waits there outlives a worker killed meanwhile.
//!
//! What is not moved, and why: idle connections with no request on them (moving them all
//! piled them onto the one thread free at that moment); requests of a thread that merely
//! shares the CPU with others; requests behind a computing one while every thread is busy
//! (they wait for the CPU, wherever they are), or behind one that may be waiting for the
//! GIL then. A fast request never waits for the mover,
//! so a loaded steady state moves nothing. The mover runs at the idle scheduling priority
//! (see `move_loop`).
//!
//! Who may touch an idle connection is decided by one compare-and-swap on its
//! [`IdleConn::state`]: its task claims it before reading (`IDLE` to `ACTIVE`), the mover
//! before sending it (`IDLE` to `GIVING`, then `GIVEN`, or back to `IDLE` if it could not).
//! The task closes a connection only once it has claimed it, so the mover never sends a
//! descriptor that was closed, and after `GIVEN` the task lets go of it without a word.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::conn::UwsgiConn;
use crate::handover::Handover;
use ngx_wsgi_config::Protocol;

/// How often the mover looks: requests waiting behind one that has run this long (two at
/// most) may move.
const TICK: Duration = Duration::from_millis(1);

/// Looks without a request running on any thread before the mover sleeps.
const QUIET_TICKS: u32 = 100;

/// The task serving it is reading or running a request on it.
const ACTIVE: u8 = 0;
/// Waiting for its next request: the mover may take it.
const IDLE: u8 = 1;
/// The mover is sending it to the handover socket.
const GIVING: u8 = 2;
/// Sent: another thread serves it now.
const GIVEN: u8 = 3;

/// A kept-alive connection's entry in its thread's idle list. Made once per connection.
pub struct IdleConn {
    /// Valid while the state is `IDLE` or `GIVING` (the task closes it only once claimed).
    fd: RawFd,
    peer: String,
    protocol: Protocol,
    state: AtomicU8,
    /// The mover is done with it: given, or left where it was.
    settled: Notify,
}

/// What [`IdleConn::claim`] found.
pub enum Claim {
    /// The task has it: it may read, serve and close it.
    Claimed,
    /// The mover sent it away: let go of it without closing it.
    Given,
    /// The mover is sending it: wait for [`IdleConn::settled`], then claim again.
    Giving,
}

impl IdleConn {
    /// Lists a claimed connection as waiting for its next request: the mover may take it
    /// from now on. A connection already given stays given.
    pub fn release(&self) {
        let _ = self
            .state
            .compare_exchange(ACTIVE, IDLE, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Takes the connection back from the mover's reach, before reading from or closing it.
    pub fn claim(&self) -> Claim {
        match self
            .state
            .compare_exchange(IDLE, ACTIVE, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(ACTIVE) => Claim::Claimed,
            Err(GIVEN) => Claim::Given,
            Err(_) => Claim::Giving,
        }
    }

    /// Whether the mover sent it to another thread.
    pub fn given(&self) -> bool {
        self.state.load(Ordering::SeqCst) == GIVEN
    }

    /// Waits until the mover is done with the connection (given, or left where it was).
    pub async fn settled(&self) {
        self.settled.notified().await
    }

    /// Claims the connection, waiting for the mover's verdict if it is sending it: true
    /// when this task has it, false when it was given away.
    pub async fn reclaim(&self) -> bool {
        loop {
            match self.claim() {
                Claim::Claimed => return true,
                Claim::Given => return false,
                Claim::Giving => self.settled().await,
            }
        }
    }
}

/// Why [`RequestThread::wait_next_request`] returned; the connection is claimed unless
/// it was given.
pub enum Waited {
    /// Bytes of the next request were read (0: the peer closed).
    Read(std::io::Result<usize>),
    /// The worker stops.
    Stopped,
    /// Nothing came within the idle timeout.
    Expired,
    /// The mover gave it to another thread: let go of it without closing it.
    Given,
}

/// One request thread as the mover sees it (with its stats counters, which say whether
/// and which request it is in).
struct ThreadState {
    idle: Mutex<Vec<Arc<IdleConn>>>,
    /// The thread's id (gettid), once it serves; 0 before.
    tid: AtomicI32,
}

/// The request threads of a worker, and its mover.
pub struct RequestThreads {
    threads: Box<[ThreadState]>,
    mover: OnceLock<std::thread::Thread>,
    /// The mover sleeps (no request ran for a while) and must be woken by the next.
    mover_asleep: AtomicBool,
}

impl RequestThreads {
    pub fn new(count: usize) -> Arc<RequestThreads> {
        let threads = (0..count.max(1))
            .map(|_| ThreadState {
                idle: Mutex::new(Vec::new()),
                tid: AtomicI32::new(0),
            })
            .collect();
        Arc::new(RequestThreads {
            threads,
            mover: OnceLock::new(),
            mover_asleep: AtomicBool::new(false),
        })
    }

    /// Request thread `index`'s handle.
    pub fn thread(self: &Arc<Self>, index: usize) -> RequestThread {
        RequestThread {
            index,
            threads: self.clone(),
        }
    }

    /// Starts the mover, which hands over requests waiting on busy threads until the
    /// worker stops. Not started when the daemon has a single request thread: there is nobody to
    /// hand them to.
    pub fn spawn_mover(
        self: &Arc<Self>,
        handover: Arc<Handover>,
        stop_rx: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let threads = self.clone();
        let mover = std::thread::Builder::new()
            .name("idle-mover".into())
            .spawn(move || threads.move_loop(&handover, &stop_rx))?;
        let _ = self.mover.set(mover.thread().clone());
        Ok(())
    }

    fn move_loop(&self, handover: &Handover, stop_rx: &watch::Receiver<bool>) {
        // Runs only on CPU time nobody else wants. Waking every millisecond at normal
        // priority, it preempted nginx and the workers on a saturated machine: with a Flask
        // app at 32 connections on 2 cores, one run in three had a p99 of 40 to 150 ms
        // (none without the mover, and none like this). When every CPU is busy, moving a
        // request gains nothing anyway; the head-of-line case it is for has idle CPU.
        // Failure leaves the normal policy, which works, only less politely.
        if crate::process::schedule_this_thread(libc::SCHED_IDLE).is_err() {
            tracing::debug!("the idle-connection mover keeps the normal scheduling policy");
        }
        // Per thread: the request it was in at the last look (the stats counters say:
        // `CoreCounters::current_request`), and for how many looks since.
        let mut seen: Vec<(Option<u64>, u32)> = vec![(None, 0); self.threads.len()];
        let mut quiet = 0;
        while !*stop_rx.borrow() {
            std::thread::sleep(TICK);
            let cores = crate::stats::my_threads();
            let mut any_running = false;
            for ((thread, core), (last, looks)) in
                self.threads.iter().zip(cores).zip(seen.iter_mut())
            {
                let current = core.current_request();
                *looks = if current.is_some() && current == *last {
                    *looks + 1
                } else {
                    0
                };
                *last = current;
                if current.is_none() {
                    continue;
                }
                any_running = true;
                if *looks >= 1 && thread.holding_up(*looks) && !handover.retiring() {
                    thread.give_waiting(handover);
                }
            }
            quiet = if any_running { 0 } else { quiet + 1 };
            if quiet >= QUIET_TICKS {
                // Said before looking once more, so a request starting meanwhile either
                // is seen here or sees the mover asleep and wakes it.
                self.mover_asleep.store(true, Ordering::SeqCst);
                if !cores.iter().any(|core| core.current_request().is_some()) {
                    std::thread::park();
                }
                self.mover_asleep.store(false, Ordering::SeqCst);
                quiet = 0;
            }
        }
    }
}

/// How many looks a request that is computing (not waiting) may last before its thread's
/// waiting requests move: a CPU-bound request past this is slow; below it, the thread is
/// only sharing the CPU with others, and moving its requests to another thread as busy
/// gains nothing (it cost a Flask app at 32 connections its p99, 8 ms to 150 ms).
const COMPUTING_LOOKS: u32 = 10;

impl ThreadState {
    /// Whether this thread, in the same request for `looks` looks, holds up requests
    /// another thread could serve. While a thread of the daemon is free: it waits (sleep,
    /// I/O, a lock: /proc says it is not runnable), or it has computed for
    /// [`COMPUTING_LOOKS`]. While every thread is busy: it has been waiting for
    /// [`COMPUTING_LOOKS`]; the requests then go to the shared queue, where the first
    /// thread to be free takes them and where they outlive this worker if it is killed.
    /// Sooner if it waits in a system call other than a futex: a thread waiting for the
    /// GIL (a futex) is not runnable either, and under load every request of a worker
    /// with threads would move.
    fn holding_up(&self, looks: u32) -> bool {
        match crate::stats::a_thread_is_free() {
            true => looks >= COMPUTING_LOOKS || self.waiting(),
            false => self.waiting() && (looks >= COMPUTING_LOOKS || !self.in_futex()),
        }
    }

    /// Whether the thread is in a futex wait (the GIL, or a lock of the app's), as
    /// /proc/self/task/TID/syscall says: the number of the system call it is in first.
    fn in_futex(&self) -> bool {
        let tid = self.tid.load(Ordering::Relaxed);
        let Ok(syscall) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
            return true; // unknown: as if it might be the GIL
        };
        syscall.split_whitespace().next() == Some(&libc::SYS_futex.to_string())
    }

    /// Whether the thread sleeps rather than runs (its state in /proc/self/task/TID/stat).
    fn waiting(&self) -> bool {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 {
            return false;
        }
        let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
            return false;
        };
        // "TID (COMM) STATE ...": the command may hold anything, so after its last ')'.
        let state = stat
            .iter()
            .rposition(|&c| c == b')')
            .and_then(|close| stat.get(close + 2));
        matches!(state, Some(b'S' | b'D'))
    }

    /// Hands over this thread's idle connections on which a request has arrived: those
    /// requests would wait for the thread. The others stay: moving them would only pile
    /// every idle connection onto whichever thread is free at that moment (it takes all
    /// that come), and a request that comes on one later is moved at the next look.
    fn give_waiting(&self, handover: &Handover) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The idle ones (the list holds those being served too), and which of them have
        // bytes waiting, looked at before claiming any: a connection closed meanwhile is not
        // claimed below (its task claimed it before closing), so whatever its number now
        // is, nothing is sent.
        let candidates: Vec<&Arc<IdleConn>> = idle
            .iter()
            .filter(|conn| conn.state.load(Ordering::SeqCst) == IDLE)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let mut polled: Vec<libc::pollfd> = candidates
            .iter()
            .map(|conn| libc::pollfd {
                fd: conn.fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `polled` is an array of that many pollfd, alive for the call; poll(2)
        // only reads the readiness of the numbers it is given.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
        if ready <= 0 {
            return;
        }
        let mut given = Vec::new();
        for (conn, polled) in candidates.iter().zip(&polled) {
            if polled.revents & libc::POLLIN == 0
                || conn
                    .state
                    .compare_exchange(IDLE, GIVING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                continue;
            }
            let state = match Self::give(conn, handover) {
                true => {
                    given.push(Arc::as_ptr(*conn));
                    GIVEN
                }
                false => IDLE,
            };
            conn.state.store(state, Ordering::SeqCst);
            conn.settled.notify_one();
        }
        idle.retain(|conn| !given.contains(&Arc::as_ptr(conn)));
    }

    /// Sends one connection (GIVING) to the handover socket.
    fn give(conn: &IdleConn, handover: &Handover) -> bool {
        // SAFETY: the descriptor stays open while the state is GIVING: its task closes it
        // only after claiming it, which fails until the state changes.
        let fd = unsafe { BorrowedFd::borrow_raw(conn.fd) };
        match handover.give(&fd, conn.protocol, &conn.peer, &[]) {
            Ok(()) => {
                tracing::debug!(
                    "{}: a request on an idle connection of a busy thread handed over",
                    conn.peer
                );
                true
            }
            Err(err) => {
                tracing::debug!("{}: cannot hand an idle connection over: {err}", conn.peer);
                false
            }
        }
    }
}

/// One request thread's handle: what it tells the mover.
pub struct RequestThread {
    pub index: usize,
    threads: Arc<RequestThreads>,
}

impl RequestThread {
    fn state(&self) -> &ThreadState {
        &self.threads.threads[self.index]
    }

    /// Called on the request thread itself before it serves: the mover looks it up in
    /// /proc by its id.
    pub fn started(&self) {
        self.state()
            .tid
            .store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    }

    /// Wakes the mover if it sleeps, once a request has started on this thread (after
    /// `stats::request_started`, whose SeqCst store pairs with the mover's: either it sees
    /// the request before sleeping, or this sees it asleep).
    pub fn wake_mover(&self) {
        let threads = &self.threads;
        if threads.mover_asleep.load(Ordering::SeqCst)
            && threads.mover_asleep.swap(false, Ordering::SeqCst)
        {
            if let Some(mover) = threads.mover.get() {
                mover.unpark();
            }
        }
    }

    /// Lists a kept-alive connection this thread serves from now on, claimed. It stays
    /// listed until it is given or the returned [`Listed`] is dropped.
    pub fn list(&self, conn: BorrowedFd<'_>, protocol: Protocol, peer: &str) -> Listed {
        let entry = Arc::new(IdleConn {
            fd: conn.as_raw_fd(),
            peer: peer.to_string(),
            protocol,
            state: AtomicU8::new(ACTIVE),
            settled: Notify::new(),
        });
        let mut idle = self.state().idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(entry.clone());
        Listed {
            entry,
            thread: RequestThread {
                index: self.index,
                threads: self.threads.clone(),
            },
        }
    }

    /// Waits for the next request on a kept-alive connection, listed as idle meanwhile,
    /// and reads what came of it into `received`. On return the connection is claimed
    /// (this task may read, serve and close it) unless [`Waited::Given`].
    pub async fn wait_next_request(
        &self,
        conn: &UwsgiConn,
        entry: &Arc<IdleConn>,
        received: &mut Vec<u8>,
        stop_rx: &mut watch::Receiver<bool>,
        (mut timer, timeout): (Pin<&mut tokio::time::Sleep>, Duration),
    ) -> Waited {
        // One timer per connection, pushed back at each wait: a later deadline only
        // updates the registered one, where a new timer per wait is registered with the
        // runtime's timer wheel and taken off it again (a lock each time).
        timer.as_mut().reset(tokio::time::Instant::now() + timeout);
        // From here the mover may take it.
        entry.release();
        loop {
            // None: readable, to be read once claimed.
            let woken = tokio::select! {
                biased;
                _ = crate::process::stopped(stop_rx) => Some(Waited::Stopped),
                _ = entry.settled() => {
                    if entry.given() {
                        return Waited::Given;
                    }
                    continue;
                }
                // Before the timer: a request that came while this thread ran a long one
                // is served, not dropped as if the connection had expired.
                ready = conn.readable() => match ready {
                    Ok(()) => None,
                    Err(err) => Some(Waited::Read(Err(err))),
                },
                () = timer.as_mut() => Some(Waited::Expired),
            };
            // If the mover is sending it: its verdict (`settled` keeps a wake-up given
            // before this waits), without spinning on the readiness meanwhile.
            if !entry.reclaim().await {
                return Waited::Given;
            }
            if let Some(waited) = woken {
                return waited;
            }
            match conn.try_read_available(received) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    // Woken by readiness left from the last request: idle again.
                    entry.release();
                }
                read => return Waited::Read(read),
            }
        }
    }

    /// Takes an entry off this thread's list.
    fn forget(&self, entry: &Arc<IdleConn>) {
        let mut idle = self.state().idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|e| !Arc::ptr_eq(e, entry));
    }
}

/// A connection's entry in its thread's idle list, for as long as its task holds it.
/// Dropped, it claims the connection back (so the mover never sends a descriptor its task
/// let go of) and takes it off the list, however the task ends: its own way, or a panic.
/// A task drops it before it closes the connection.
pub struct Listed {
    entry: Arc<IdleConn>,
    thread: RequestThread,
}

impl std::ops::Deref for Listed {
    type Target = Arc<IdleConn>;

    fn deref(&self) -> &Arc<IdleConn> {
        &self.entry
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        // The mover holds it for one sendmsg at most.
        while matches!(self.entry.claim(), Claim::Giving) {
            std::thread::yield_now();
        }
        self.thread.forget(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn listed_count(threads: &RequestThreads) -> usize {
        threads.threads[0]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    #[test]
    fn an_entry_leaves_the_list_however_its_task_ends() {
        let threads = RequestThreads::new(1);
        let (conn, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let thread = threads.thread(0);
        // Dropped where it was made: the task's own way.
        let listed = thread.list(conn.as_fd(), Protocol::Http, "peer");
        assert_eq!(listed_count(&threads), 1);
        drop(listed);
        assert_eq!(listed_count(&threads), 0);
        // Dropped by a panic while the connection waited for its next request (idle):
        // claimed back and off the list, so the mover cannot send that number any more.
        let seen = Mutex::new(None);
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let listed = thread.list(conn.as_fd(), Protocol::Http, "peer");
            listed.release();
            *seen.lock().unwrap() = Some(Arc::clone(&listed));
            panic!("the task failed");
        }));
        assert!(failed.is_err());
        let entry = seen.lock().unwrap().take().expect("listed");
        assert_eq!(entry.state.load(Ordering::SeqCst), ACTIVE);
        assert_eq!(listed_count(&threads), 0);
    }
}
