//! `harakiri` and `max-requests`: what a worker keeps track of about its requests.
//!
//! uWSGI's master SIGKILLs a worker stuck over `harakiri`, which leaves no trace of where
//! the request was stuck and no answer. Here a thread of the worker itself notices, answers
//! a uwsgi request that has no response head out yet with a 504 saying why, logs the
//! request and the Python stack of every thread (faulthandler, which needs no GIL), then
//! kills the worker; the master replaces it as it replaces any dead worker.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use ngx_wsgi_config::Config;
use nix::sys::signal::{self, Signal};
use pyo3::prelude::*;
use tokio::sync::watch;

/// How often the harakiri thread looks at the running requests.
const CHECK_EVERY: Duration = Duration::from_millis(200);

thread_local! {
    /// This request thread's index in [`RequestClock::threads`], for the one caller that
    /// comes without a context: the app, calling `uwsgi.set_user_harakiri()`. The server's
    /// own code passes the index along (`worker::ThreadContext`).
    static THREAD_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Called once by each request thread before it serves.
pub fn set_thread_index(index: usize) {
    THREAD_INDEX.set(index);
}

struct Running {
    since: Instant,
    what: String,
    /// The uwsgi connection the request came on, for the harakiri thread's 504.
    conn: Option<RawFd>,
    /// `uwsgi.set_user_harakiri(seconds)`: when, and the seconds asked.
    user_deadline: Option<(Instant, u64)>,
}

/// Who answers a request, when harakiri is on: nobody yet, the app (its response head went
/// out), or the harakiri thread (its 504 did). Decided once, by compare-and-swap, so the
/// two never write on one connection.
const ANSWER_OPEN: u8 = 0;
const ANSWER_BY_APP: u8 = 1;
const ANSWER_BY_HARAKIRI: u8 = 2;

/// The worker's clock, for [`set_user_harakiri`], which the app calls.
static CLOCK: OnceLock<Arc<RequestClock>> = OnceLock::new();

/// What the harakiri thread knows of one request thread.
struct ThreadSlot {
    /// The request it is running.
    running: Mutex<Option<Running>>,
    /// Who answers that request (ANSWER_*).
    answered: AtomicU8,
}

/// The requests a worker is running and has served.
pub struct RequestClock {
    harakiri: Option<Duration>,
    max_requests: u64,
    /// `reload-on-rss` and `reload-on-as`, in bytes (0: off).
    max_rss: u64,
    max_as: u64,
    /// Requests started: the Nth of `max-requests` stops the worker taking more as it
    /// starts (so requests the other threads would begin meanwhile go elsewhere).
    started: AtomicU64,
    recycled: AtomicBool,
    /// SIGTERM came: the worker closes (`WorkerContext::closing`), whatever else made it
    /// stop before or after.
    closing: AtomicBool,
    /// `harakiri-graceful-timeout` and `-signal`: what harakiri sends before SIGKILL.
    graceful: Option<(Duration, Signal)>,
    /// `min-worker-lifetime`: max-requests and the memory limits wait until the worker
    /// has run this long.
    born: Instant,
    min_lifetime: Duration,
    /// One per request thread, used when harakiri is on (or once the app has called
    /// `uwsgi.set_user_harakiri()`).
    threads: Vec<ThreadSlot>,
    user_armed: AtomicBool,
    thread_started: AtomicBool,
    stop: watch::Sender<bool>,
}

/// Marks one request as running until it is dropped.
pub struct RequestTimer<'a> {
    clock: &'a RequestClock,
    started: Instant,
    /// The request thread's index.
    thread: usize,
}

impl RequestClock {
    pub fn new(config: &Config, stop: watch::Sender<bool>) -> Self {
        const MIB: u64 = 1024 * 1024;
        RequestClock {
            harakiri: (config.harakiri > 0).then(|| Duration::from_secs(config.harakiri)),
            // Staggered, so workers started together do not all retire together.
            max_requests: match config.max_requests {
                0 => u64::MAX,
                n => n.saturating_add(
                    u64::from(crate::process::worker_id())
                        .saturating_mul(config.max_requests_delta),
                ),
            },
            max_rss: config.reload_on_rss.saturating_mul(MIB),
            max_as: config.reload_on_as.saturating_mul(MIB),
            born: Instant::now(),
            graceful: (config.harakiri_graceful_timeout > 0).then(|| {
                (
                    Duration::from_secs(config.harakiri_graceful_timeout),
                    Signal::try_from(config.harakiri_graceful_signal).unwrap_or(Signal::SIGTERM),
                )
            }),
            min_lifetime: Duration::from_secs(config.min_worker_lifetime),
            started: AtomicU64::new(0),
            recycled: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            user_armed: AtomicBool::new(false),
            thread_started: AtomicBool::new(false),
            threads: (0..config.threads)
                .map(|_| ThreadSlot {
                    running: Mutex::new(None),
                    answered: AtomicU8::new(ANSWER_OPEN),
                })
                .collect(),
            stop,
        }
    }

    /// Stops accepting and lets the master start a replacement once the requests in
    /// flight are done (max-requests, reload-on-rss, reload-on-as).
    pub fn recycle(&self, why: std::fmt::Arguments<'_>) {
        if self.recycled.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!("{why}: finishing the requests in flight, then a new worker takes over");
        crate::stats::stop_accepting();
        let _ = self.stop.send(true);
    }

    /// Times a request that request thread `thread` started at `started` on `conn` (a
    /// uwsgi connection, which harakiri may answer); `describe` names it in a harakiri
    /// log line (and is only called when harakiri is on).
    pub fn start(
        &self,
        thread: usize,
        started: Instant,
        conn: Option<RawFd>,
        describe: impl FnOnce() -> String,
    ) -> RequestTimer<'_> {
        if self.tracking() {
            if let Some(slot) = self.threads.get(thread) {
                slot.answered.store(ANSWER_OPEN, Ordering::SeqCst);
                *lock(&slot.running) = Some(Running {
                    since: started,
                    what: describe(),
                    conn,
                    user_deadline: None,
                });
            }
        }
        crate::stats::request_started(thread);
        RequestTimer {
            clock: self,
            started,
            thread,
        }
    }

    /// Counts a request about to start, before [`RequestClock::start`]: the Nth of
    /// `max-requests` stops the worker taking more as it starts (so the other threads do
    /// not begin requests past the limit meanwhile). False when N have started already:
    /// the request goes to another worker if the caller can hand it over.
    ///
    /// As the worker closes (SIGTERM), a request that has come is answered whatever the
    /// count: nobody else would, and the worker goes anyway.
    pub fn admit(&self) -> bool {
        // Relaxed: the count only has to be exact, it orders nothing else.
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.max_requests || self.closing() || self.born.elapsed() < self.min_lifetime {
            return true;
        }
        // The Nth, or (past min-worker-lifetime) the first request after it: the worker
        // takes no more; a request past the Nth goes elsewhere if the caller can send it.
        self.recycle(format_args!(
            "request {n} started, max-requests = {}",
            self.max_requests
        ));
        if n == self.max_requests {
            return true;
        }
        self.started.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// SIGTERM: the worker stops and closes its connections once their requests are
    /// answered (see `WorkerContext::closing`).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// Whether SIGTERM came.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Whether the worker is stopping (a stop signal, a retirement, max-requests, ...).
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Whether the worker stopped because it reached `max-requests`.
    pub fn recycled(&self) -> bool {
        self.recycled.load(Ordering::SeqCst)
    }

    /// Whether requests are timed for harakiri: `harakiri` is set, or the app has called
    /// `uwsgi.set_user_harakiri()` (until then a request costs nothing here).
    fn tracking(&self) -> bool {
        self.harakiri.is_some() || self.user_armed.load(Ordering::Relaxed)
    }

    /// Makes the clock reachable from [`set_user_harakiri`], and starts the harakiri
    /// thread if harakiri is on.
    pub fn spawn_harakiri_thread(self: &Arc<Self>) -> anyhow::Result<()> {
        let _ = CLOCK.set(self.clone());
        match self.harakiri {
            Some(_) => self.start_thread(),
            None => Ok(()),
        }
    }

    fn start_thread(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.thread_started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Each thread's Python stack goes to the log when the harakiri thread raises SIGUSR2.
        Python::attach(|py| {
            py.run(
                c"import faulthandler, signal, sys\nfaulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True, chain=False)",
                None,
                None,
            )
        })
        .context("cannot set up faulthandler for harakiri")?;
        let clock = self.clone();
        std::thread::Builder::new()
            .name("harakiri".into())
            .spawn(move || loop {
                std::thread::sleep(CHECK_EVERY);
                for slot in &clock.threads {
                    let running = lock(&slot.running);
                    let Some(request) = running.as_ref() else {
                        continue;
                    };
                    let ran = request.since.elapsed();
                    let over = match (request.user_deadline, clock.harakiri) {
                        (Some((deadline, seconds)), _) if Instant::now() >= deadline => Some((
                            format!("set_user_harakiri({seconds})"),
                            Duration::from_secs(seconds),
                        )),
                        (_, Some(limit)) if ran >= limit => {
                            Some((format!("harakiri = {} s", limit.as_secs()), limit))
                        }
                        _ => None,
                    };
                    if let Some((why, limit)) = over {
                        tracing::error!(
                            "HARAKIRI: {} has run for {:.1} s, over {why}: killing this worker (pid {}); the master starts a new one. Python stacks of its threads:",
                            request.what,
                            ran.as_secs_f64(),
                            std::process::id()
                        );
                        crate::stats::harakiri();
                        if let Some(fd) = request.conn {
                            let ours = slot.answered.compare_exchange(
                                ANSWER_OPEN,
                                ANSWER_BY_HARAKIRI,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            if ours.is_ok() {
                                answer_504(fd, limit);
                            }
                        }
                        // faulthandler writes from the signal handler, on this thread.
                        let _ = signal::raise(Signal::SIGUSR2);
                        // harakiri-graceful-timeout: the worker's other requests get a chance.
                        if let Some((timeout, graceful)) = clock.graceful {
                            tracing::error!(
                                "HARAKIRI: {graceful} first (harakiri-graceful-signal), SIGKILL in {} s",
                                timeout.as_secs()
                            );
                            drop(running);
                            let _ = signal::kill(nix::unistd::Pid::this(), graceful);
                            std::thread::sleep(timeout);
                        }
                        let _ = signal::raise(Signal::SIGKILL);
                    }
                }
            })
            .context("cannot start the harakiri thread")?;
        Ok(())
    }
}

impl RequestClock {
    /// Called before a response head goes out on a uwsgi connection from request thread
    /// `thread`: `false` when the harakiri thread has answered its request already (the
    /// worker is about to die: write nothing).
    pub fn claim_answer(&self, thread: usize) -> bool {
        let Some(slot) = self.threads.get(thread).filter(|_| self.tracking()) else {
            return true; // harakiri is off
        };
        slot.claim_answer()
    }
}

impl ThreadSlot {
    fn claim_answer(&self) -> bool {
        match self.answered.compare_exchange(
            ANSWER_OPEN,
            ANSWER_BY_APP,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(current) => current == ANSWER_BY_APP,
        }
    }
}

/// `uwsgi.set_user_harakiri(seconds)`: the request this thread runs is killed (with its
/// worker, as by harakiri) if it still runs `seconds` from now; 0 disarms it.
pub fn set_user_harakiri(seconds: u64) -> Result<(), String> {
    let clock = CLOCK
        .get()
        .ok_or("set_user_harakiri() applies to a request: call it in a worker")?;
    if !clock.user_armed.swap(true, Ordering::SeqCst) {
        clock
            .start_thread()
            .map_err(|err| format!("set_user_harakiri(): {err:#}"))?;
    }
    let slot = clock
        .threads
        .get(THREAD_INDEX.get())
        .ok_or("set_user_harakiri() applies to a request: call it from the request's thread")?;
    let now = Instant::now();
    let deadline = (seconds > 0).then(|| (now + Duration::from_secs(seconds), seconds));
    let mut running = lock(&slot.running);
    match running.as_mut() {
        Some(request) => request.user_deadline = deadline,
        // The first call: this request started before requests were timed.
        None if deadline.is_some() => {
            *running = Some(Running {
                since: now,
                what: "the request that called set_user_harakiri()".to_string(),
                conn: None,
                user_deadline: deadline,
            })
        }
        None => {}
    }
    Ok(())
}

/// The 504 a stuck request gets instead of a dropped connection; nginx passes it on.
fn answer_504(fd: RawFd, limit: Duration) {
    use nix::sys::socket::{send, MsgFlags};
    let body = format!(
        "harakiri: the request ran longer than {} s; the worker serving it is being replaced\n",
        limit.as_secs()
    );
    let response = format!(
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Never blocks: a socket whose buffer is full gets nothing, as before.
    let sent = send(
        fd,
        response.as_bytes(),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
    if sent.is_err() {
        return;
    }
    // The worker is killed next: closing with request body unread would reset the
    // connection and destroy the 504 before nginx reads it. Shut the writing side (the
    // answer is complete) and read what nginx still sends, for a second at most.
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
    let until = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 64 * 1024];
    while Instant::now() < until {
        match nix::sys::socket::recv(fd, &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let clock = self.clock;
        if clock.tracking() {
            if let Some(slot) = clock.threads.get(self.thread) {
                *lock(&slot.running) = None;
            }
        }
        crate::stats::request_done(self.thread, self.started.elapsed());
        if (clock.max_rss > 0 || clock.max_as > 0) && clock.born.elapsed() >= clock.min_lifetime {
            // As uWSGI does, after each request: one read of /proc/self/statm.
            let (rss, vsz) = crate::stats::memory(std::process::id() as i32);
            const MIB: u64 = 1024 * 1024;
            if clock.max_rss > 0 && rss > clock.max_rss {
                clock.recycle(format_args!(
                    "resident memory {} MiB is over reload-on-rss = {} MiB",
                    rss / MIB,
                    clock.max_rss / MIB
                ));
            } else if clock.max_as > 0 && vsz > clock.max_as {
                clock.recycle(format_args!(
                    "address space {} MiB is over reload-on-as = {} MiB",
                    vsz / MIB,
                    clock.max_as / MIB
                ));
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
