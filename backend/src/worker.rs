//! A worker process: `--threads` request threads, each with its own single-threaded
//! tokio runtime accepting on every listener, running the app on that same thread.
//!
//! No request crosses threads, so serving one costs no hand-off. Signals: SIGTERM stops
//! accepting and lets in-flight requests finish; SIGINT and SIGQUIT exit at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use pyo3::prelude::*;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::conn::AsyncConn;
use crate::handover::{Handover, HandoverSockets};
use crate::idle::{RequestThread, RequestThreads};
use crate::listeners::{BoundListener, ListeningSocket};
use crate::reqlog::{RequestLine, RequestLogger, RequestRecord};
use crate::watchdog::RequestClock;
use crate::wsgi::{Outcome, WsgiApp};
use ngx_wsgi_config::{Config, Protocol};

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
}

impl std::ops::Deref for ThreadContext {
    type Target = WorkerContext;

    fn deref(&self) -> &WorkerContext {
        &self.worker
    }
}

impl ThreadContext {
    /// Waits until this thread is free to run the app.
    pub async fn app_slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring only waits.
        self.app_slot
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("app slot semaphore closed"))
    }
}

impl WorkerContext {
    /// Whether this worker goes away while the others serve on (the master replaces it, or
    /// `max-requests`): its idle connections are then handed over, not closed.
    pub fn retiring(&self) -> bool {
        self.handover.retiring() || self.requests.recycled()
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
    /// written (not per request with `disable-logging`).
    pub fn log_request<'a>(
        &self,
        outcome: &Outcome,
        started: std::time::Instant,
        line: impl FnOnce() -> RequestLine<'a>,
    ) {
        let took = started.elapsed();
        if self.should_log(outcome, took) {
            let line = line();
            self.write_request_line(&RequestRecord::new(&line, outcome, took), outcome);
        }
        crate::reqlog::clear_logvars();
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

/// Exit code of a worker that stopped after `max-requests`: the master replaces it.
pub const EXIT_RECYCLED: i32 = 4;

/// Runs a worker until it is told to stop; returns the process exit code.
pub fn run(
    config: &Config,
    app: Py<PyAny>,
    listeners: &[BoundListener],
    ready: std::os::fd::BorrowedFd<'_>,
    request_log: Arc<RequestLogger>,
    handover_sockets: &HandoverSockets,
) -> anyhow::Result<i32> {
    let handover = Handover::new(handover_sockets).context("the handover socket")?;
    let wsgi_app = Python::attach(|py| WsgiApp::new(py, app, config))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let requests = Arc::new(RequestClock::new(config, stop_tx.clone()));
    requests.spawn_harakiri_thread()?;
    let ctx = Arc::new(WorkerContext {
        app: wsgi_app,
        buffer_size: config.vars_limit(),
        log_requests: !config.disable_logging,
        log_4xx: config.log_4xx,
        log_5xx: config.log_5xx,
        log_slow: (config.log_slow > 0).then(|| std::time::Duration::from_millis(config.log_slow)),
        limit_post: (config.limit_post > 0).then_some(config.limit_post),
        requests: requests.clone(),
        head_timeout: std::time::Duration::from_secs(config.socket_timeout),
        reload_on_exception: config.reload_on_exception,
        so_keepalive: config.so_keepalive,
        static_files: crate::static_files::StaticFiles::new(config),
        request_log,
        handover: handover.clone(),
    });
    let request_threads = RequestThreads::new(config.threads as usize);
    // With one request thread in the whole daemon, nobody could take a busy thread's idle
    // connections.
    if config.processes * config.threads > 1 {
        request_threads
            .spawn_mover(handover.clone(), stop_rx.clone())
            .context("cannot start the idle-connection mover")?;
    }
    let mut threads = Vec::new();
    for index in 1..config.threads {
        let sockets = dup_listeners(listeners)?;
        let receive = handover_sockets.receive.try_clone()?;
        let stop_rx = stop_rx.clone();
        let ctx = thread_context(&ctx, request_threads.thread(index as usize));
        let thread = std::thread::Builder::new()
            .name(format!("request-{index}"))
            .spawn(move || {
                crate::watchdog::set_thread_index(index as usize);
                serve_thread(ctx, sockets, receive, stop_rx)
            })
            .context("cannot start a request thread")?;
        threads.push(thread);
    }
    spawn_signal_thread(stop_tx, config.clone(), handover)?;
    if config.py_autoreload > 0 {
        let every = std::time::Duration::from_secs(config.py_autoreload);
        let files = config.wsgi_file.iter().cloned().collect();
        crate::autoreload::spawn(every, config.py_auto_reload_ignore.clone(), files)?;
    }
    let sockets = dup_listeners(listeners)?;
    let receive = handover_sockets.receive.try_clone()?;
    // The master waits for this before a chain reload replaces the next worker. One
    // write of 4 bytes is atomic on a pipe; a master gone meanwhile is no error here.
    let _ = nix::unistd::write(ready, &std::process::id().to_ne_bytes());
    // The main thread serves too.
    let ctx = thread_context(&ctx, request_threads.thread(0));
    let result = serve_thread(ctx, sockets, receive, stop_rx);
    for thread in threads {
        let _ = thread.join();
    }
    result.map(|()| match requests.recycled() {
        true => EXIT_RECYCLED,
        false => 0,
    })
}

fn thread_context(worker: &Arc<WorkerContext>, thread: RequestThread) -> Arc<ThreadContext> {
    Arc::new(ThreadContext {
        worker: worker.clone(),
        thread,
        app_slot: Arc::new(Semaphore::new(1)),
    })
}

fn dup_listeners(
    listeners: &[BoundListener],
) -> anyhow::Result<Vec<(Protocol, ListeningSocket, String)>> {
    listeners
        .iter()
        .map(|l| {
            let socket = match &l.socket {
                ListeningSocket::Unix(s) => ListeningSocket::Unix(s.try_clone()?),
                ListeningSocket::Tcp(s) => ListeningSocket::Tcp(s.try_clone()?),
            };
            Ok((l.spec.protocol, socket, l.spec.addr.to_string()))
        })
        .collect()
}

fn serve_thread(
    ctx: Arc<ThreadContext>,
    sockets: Vec<(Protocol, ListeningSocket, String)>,
    handed_over: std::os::fd::OwnedFd,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    ctx.thread.started();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(async move {
        let in_flight = Arc::new(InFlight::default());
        let mut loops = vec![tokio::spawn(crate::handover::receive_loop(
            handed_over,
            ctx.clone(),
            stop_rx.clone(),
            in_flight.clone(),
        ))];
        for (protocol, socket, name) in sockets {
            if protocol == Protocol::Uwsgi {
                socket.set_nonblocking()?;
                let listener = match socket {
                    ListeningSocket::Unix(s) => crate::uwsgi::UwsgiListener::Unix(s),
                    ListeningSocket::Tcp(s) => crate::uwsgi::UwsgiListener::Tcp(s),
                };
                loops.push(tokio::spawn(crate::uwsgi::accept_loop(
                    listener,
                    name,
                    ctx.clone(),
                    stop_rx.clone(),
                    in_flight.clone(),
                )));
                continue;
            }
            loops.push(tokio::spawn(http_accept_loop(
                socket,
                name,
                ctx.clone(),
                stop_rx.clone(),
                in_flight.clone(),
            )));
        }
        for accept in loops {
            accept.await??;
        }
        in_flight.wait_idle().await;
        crate::uwsgi::lingering_done().await;
        Ok(())
    })
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

/// Watches the stop signals on a thread of its own, so they act even while every
/// request thread is busy in the app.
fn spawn_signal_thread(
    stop_tx: watch::Sender<bool>,
    config: Config,
    handover: Arc<Handover>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // The handlers exist: take the signals the master blocked across fork(),
            // here only; the request threads keep them blocked.
            if let Err(err) = stop_signals().thread_unblock() {
                tracing::error!("cannot unblock signals: {err}");
            }
            for signal in signals.forever() {
                match signal {
                    SIGTERM => {
                        tracing::info!("SIGTERM: finishing in-flight requests, then exiting");
                        let _ = stop_tx.send(true);
                    }
                    SIGUSR1 => {
                        tracing::info!(
                            "replaced: finishing in-flight requests, handing idle connections over, then exiting"
                        );
                        handover.retire();
                        let _ = stop_tx.send(true);
                    }
                    SIGINT => fast_exit("SIGINT"),
                    SIGQUIT => fast_exit("SIGQUIT"),
                    // The master reloads on SIGHUP; to a worker it sends it to reopen the
                    // log file (master-fifo `l`).
                    SIGHUP => {
                        if let Err(err) = crate::logging::reopen(&config) {
                            tracing::error!("reopening the log: {err:#}");
                        }
                    }
                    _ => {}
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

pub async fn stopped(stop_rx: &mut watch::Receiver<bool>) {
    let _ = stop_rx.wait_for(|stop| *stop).await;
}

fn fast_exit(signal: &str) {
    tracing::info!("{signal}: exiting now");
    std::process::exit(0);
}

/// Accepts HTTP connections and serves each in a task of its own until the worker stops.
async fn http_accept_loop(
    socket: ListeningSocket,
    name: String,
    ctx: Arc<ThreadContext>,
    mut stop_rx: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<()> {
    enum Listener {
        Unix(tokio::net::UnixListener),
        Tcp(tokio::net::TcpListener),
    }
    socket.set_nonblocking()?;
    let listener = match socket {
        ListeningSocket::Unix(s) => Listener::Unix(tokio::net::UnixListener::from_std(s)?),
        ListeningSocket::Tcp(s) => Listener::Tcp(tokio::net::TcpListener::from_std(s)?),
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut stop_rx) => return Ok(()),
            accepted = accept(&listener, &name, ctx.so_keepalive) => accepted,
        };
        let (conn, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: say so and keep serving the connections we have.
                tracing::error!("accept() on \"{name}\" failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let guard = in_flight.enter();
        let (ctx, stop_rx) = (ctx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            crate::http::serve(conn, Vec::new(), peer, ctx, stop_rx).await;
            drop(guard);
        });
    }

    /// Accepts a connection and names its peer for log lines: the client address over
    /// TCP, the socket it came in on for unix sockets (which have no peer address).
    async fn accept(
        listener: &Listener,
        name: &str,
        keepalive: bool,
    ) -> std::io::Result<(AsyncConn, String)> {
        Ok(match listener {
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                (AsyncConn::Unix(stream), format!("unix:{name}"))
            }
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                stream.set_nodelay(true)?;
                if keepalive {
                    socket2::SockRef::from(&stream).set_keepalive(true)?;
                }
                (AsyncConn::Tcp(stream), addr.to_string())
            }
        })
    }
}
