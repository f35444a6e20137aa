//! What a worker's requests see: the worker's shared context, each request thread's
//! own, and the count of requests in flight a stopping worker waits for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::conn::Conn;
use crate::handover::Handover;
use crate::idle::RequestThread;
use crate::listeners::Accepting;
use crate::outcome::Outcome;
use crate::reqlog::{RequestLine, RequestLogger, RequestRecord};
use crate::watchdog::RequestClock;
use crate::wsgi::environ::EnvironCache;
use crate::wsgi::WsgiApp;

/// How long a kept-alive connection that is idle as the worker closes
/// ([`WorkerContext::closing`]) stays open for a next request its client may have sent
/// already, before it is closed. A client that sends its requests one after another gets
/// its next one answered (with `Connection: close`) instead of finding the connection
/// closed under it; an idle one delays the stop by this much.
pub const LINGER_AT_STOP: std::time::Duration = std::time::Duration::from_millis(250);

/// A request that holds its thread this long or longer keeps the thread's runtime from
/// looking at its connections meanwhile: the next request the thread starts lets it look
/// first ([`ThreadContext::slot_for_request`]).
const LOOK_AROUND_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// What every request thread of a worker shares.
pub struct WorkerContext {
    pub app: WsgiApp,
    pub buffer_size: usize,
    pub log_requests: bool,
    /// `log-4xx`, `log-5xx`, `log-slow`: lines kept with `disable-logging`.
    pub log_4xx: bool,
    pub log_5xx: bool,
    pub log_slow: Option<std::time::Duration>,
    /// `limit-post`: the largest request body served.
    pub limit_post: Option<u64>,
    /// `harakiri` and `max-requests`.
    pub requests: Arc<RequestClock>,
    /// `socket-timeout`: how long a peer may take to send its request head once connected.
    /// nginx sends it at once; a peer that does not is stuck or hostile, and would hold up
    /// a graceful stop.
    pub head_timeout: std::time::Duration,
    /// `reload-on-exception`: the worker retires after a request whose app raised.
    pub reload_on_exception: bool,
    /// `so-keepalive`: TCP keepalive on accepted connections.
    pub so_keepalive: bool,
    /// `sched-batch`: request threads run under `SCHED_BATCH`.
    pub sched_batch: bool,
    /// `static-map`, `check-static`: files served before the app.
    pub static_files: Option<crate::static_files::StaticFiles>,
    /// The request log line's format and where it goes.
    pub request_log: Arc<RequestLogger>,
    /// Where idle connections go when this worker retires.
    pub handover: Arc<Handover>,
}

/// What a request thread's requests see: the worker's context and the thread itself,
/// made once per thread and passed down as a value.
pub struct ThreadContext {
    pub worker: Arc<WorkerContext>,
    /// What the idle-connection mover knows of this thread (`idle.rs`).
    pub thread: RequestThread,
    /// One app call at a time per request thread, as with uWSGI's threads.
    app_slot: Arc<Semaphore>,
    /// What this thread's uwsgi requests leave to build the next environ from.
    pub environ_cache: Mutex<EnvironCache>,
    /// A uwsgi request held the thread for [`LOOK_AROUND_AFTER`] or more since its
    /// runtime last looked at its connections.
    held_long: AtomicBool,
}

impl std::ops::Deref for ThreadContext {
    type Target = WorkerContext;

    fn deref(&self) -> &WorkerContext {
        &self.worker
    }
}

impl ThreadContext {
    /// The thread's app slot if it is free now.
    pub fn try_app_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.app_slot.clone().try_acquire_owned().ok()
    }

    /// Waits until this thread is free to run a request that has come on a connection.
    /// If the last request held the thread long, the thread's connections are looked at
    /// first (one non-blocking `epoll_wait`): nobody did meanwhile, and a peer may have
    /// half-closed one. Our nginx module does that to a request it gave up on (its client
    /// left, or `wsgi_read_timeout`), and keeps that request's room in its queue until we
    /// close the connection: closed now, its room goes to the next request as the request
    /// ends, not after the ones this thread runs next.
    pub async fn slot_for_request(&self) -> OwnedSemaphorePermit {
        let slot = self.app_slot().await;
        if self.held_long.load(Ordering::Relaxed) {
            self.held_long.store(false, Ordering::Relaxed);
            // Deferred until the runtime has polled its driver: the tasks that wakes run
            // first.
            tokio::task::yield_now().await;
        }
        slot
    }

    /// Notes how long a request held this thread, for [`ThreadContext::slot_for_request`].
    pub fn held_for(&self, took: std::time::Duration) {
        if took >= LOOK_AROUND_AFTER {
            self.held_long.store(true, Ordering::Relaxed);
        }
    }

    /// Waits until this thread is free to run the app.
    pub fn app_slot(
        &self,
    ) -> impl std::future::Future<Output = OwnedSemaphorePermit> + Send + 'static {
        let slot = self.app_slot.clone();
        async move {
            // The semaphore is never closed, so acquiring only waits.
            slot.acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("app slot semaphore closed"))
        }
    }

    /// Once this thread is free to run the app, what `next` gives (a connection taken
    /// then has the thread for its request); None if the worker stops first.
    pub async fn when_free<T>(
        &self,
        stop_rx: &mut watch::Receiver<bool>,
        next: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let free_then_next = async {
            drop(self.app_slot().await);
            next.await
        };
        tokio::select! {
            biased;
            _ = crate::process::stopped(stop_rx) => None,
            taken = free_then_next => Some(taken),
        }
    }

    /// As the daemon stops, once this thread is free: a connection left in the queue of
    /// `listener` (`name`), which the master closed to new ones and which would be reset
    /// at exit. None when none is left, and at once when the worker is not closing or the
    /// listener was not closed (a worker stopped alone, a socket systemd passed: its queue
    /// is for the workers that serve on, or the next daemon).
    pub async fn queued_at_stop(&self, listener: &Accepting, name: &str) -> Option<(Conn, String)> {
        if !(self.closing() && listener.taking_no_more()) {
            return None;
        }
        // A free thread takes the next: the others, in this worker or another, take theirs.
        drop(self.app_slot().await);
        match listener.take_queued() {
            Ok(accepted) => Some(accepted),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(err) => {
                tracing::error!("accept() on \"{name}\" as the worker stops failed: {err}");
                None
            }
        }
    }
}

impl WorkerContext {
    /// Whether this worker goes away while the others serve on (the master replaces it, or
    /// `max-requests`): its idle connections are then handed over, not closed.
    /// SIGTERM overrides both: when the whole daemon stops, nobody would take what is
    /// handed over.
    pub fn retiring(&self) -> bool {
        !self.closing() && (self.handover.retiring() || self.requests.recycled())
    }

    /// Whether this worker closes its connections as it stops (SIGTERM: the daemon
    /// stops, the master lets an idle worker go, a graceful harakiri), rather than
    /// handing them over. A request that has come is still answered, its response says
    /// the connection ends, and an idle connection is closed once nothing came on it for
    /// [`LINGER_AT_STOP`]. When the master closed the listeners (the daemon stops:
    /// `listeners::taking_no_more`), the connections in their queues are answered too.
    pub fn closing(&self) -> bool {
        self.requests.closing()
    }

    /// `limit-post`: why a body of at least `length` bytes is refused, if it is.
    pub fn refuse_body(&self, length: u64) -> Option<String> {
        let limit = self.limit_post.filter(|limit| length > *limit)?;
        Some(format!(
            "request body of {length} bytes is over limit-post = {limit} bytes"
        ))
    }

    /// Whether [`WorkerContext::log_request`] writes a line for this outcome: failures
    /// always, the others unless `disable-logging` (with its `log-4xx`, `log-5xx` and
    /// `log-slow` exceptions).
    pub fn should_log(&self, outcome: &Outcome, took: std::time::Duration) -> bool {
        match outcome {
            Outcome::Sent { status, .. } => {
                self.log_requests
                    || (self.log_4xx && (400..500).contains(status))
                    || (self.log_5xx && *status >= 500)
                    || self.log_slow.is_some_and(|slow| took >= slow)
            }
            _ => true,
        }
    }

    /// What a worker does once a request is over: `reload-on-exception` retires it after
    /// one in which the app raised.
    pub fn after_request(&self, outcome: &Outcome) {
        if self.reload_on_exception
            && matches!(outcome, Outcome::AppFailed { .. } | Outcome::Aborted { .. })
        {
            self.requests.recycle(format_args!(
                "the app raised an exception (reload-on-exception)"
            ));
        }
    }

    /// The request's log line, as uWSGI writes them (or as `log-format` says); a failure
    /// is also logged as an error, with the traceback. `line` is only made when a line is
    /// written (not per request with `disable-logging`). Returns how long the request took.
    pub fn log_request<'a>(
        &self,
        outcome: &Outcome,
        started: std::time::Instant,
        line: impl FnOnce() -> RequestLine<'a>,
    ) -> std::time::Duration {
        let took = started.elapsed();
        if self.should_log(outcome, took) {
            let line = line();
            self.write_request_line(&RequestRecord::new(&line, outcome, took), outcome);
        }
        crate::reqlog::clear_logvars();
        took
    }

    fn write_request_line(&self, record: &RequestRecord<'_>, outcome: &Outcome) {
        let (method, uri) = (record.method, record.uri);
        match outcome {
            Outcome::Sent { .. } => self.request_log.write(record),
            Outcome::AppFailed { traceback } => {
                let peer = record.client();
                tracing::error!(
                    "{peer} {method} {uri} => 500: the app raised an exception\n{traceback}"
                );
                self.request_log.write(record);
            }
            Outcome::Aborted { status, traceback } => {
                let peer = record.client();
                tracing::error!(
                    "{peer} {method} {uri} => {status}, response aborted: the app raised after the headers were sent\n{traceback}"
                );
                self.request_log.write(record);
            }
            Outcome::PeerGone { reason } => {
                let peer = record.client();
                tracing::warn!("{peer} {method} {uri}: {reason}; connection closed")
            }
        }
    }
}

/// Counts the connections a thread is serving, so a graceful stop can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl ThreadContext {
    pub fn new(worker: &Arc<WorkerContext>, thread: RequestThread) -> Arc<ThreadContext> {
        Arc::new(ThreadContext {
            worker: worker.clone(),
            thread,
            app_slot: Arc::new(Semaphore::new(1)),
            environ_cache: Mutex::default(),
            held_long: AtomicBool::new(false),
        })
    }
}
