//! A worker process: `--threads` request threads, each with its own single-threaded
//! tokio runtime accepting on every listener, running the app on that same thread.
//!
//! No request crosses threads, so serving one costs no hand-off. Signals: SIGTERM stops
//! accepting and lets in-flight requests finish; SIGINT and SIGQUIT exit at once.

use std::sync::Arc;

use anyhow::Context;
use pyo3::prelude::*;
use tokio::sync::watch;

use crate::conn::{AsyncConn, Conn};
use crate::context::{InFlight, ThreadContext, WorkerContext, LINGER_AT_STOP};
use crate::handover::{Handover, HandoverSockets};
use crate::idle::RequestThreads;
use crate::listeners::{Accepting, BoundListener, ListeningSocket};
use crate::process::{stop_signals, stopped, EXIT_RECYCLED};
use crate::reqlog::RequestLogger;
use crate::watchdog::RequestClock;
use crate::wsgi::WsgiApp;
use ngx_wsgi_config::{Config, Protocol};

/// Runs a worker until it is told to stop; returns the process exit code.
pub fn run(
    config: &Config,
    app: Py<PyAny>,
    listeners: &[BoundListener],
    ready: std::os::fd::BorrowedFd<'_>,
    request_log: Arc<RequestLogger>,
    handover_sockets: &HandoverSockets,
    batch_scheduling: bool,
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
        sched_batch: batch_scheduling,
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
        let ctx = ThreadContext::new(&ctx, request_threads.thread(index as usize));
        let thread = std::thread::Builder::new()
            .name(format!("request-{index}"))
            .spawn(move || {
                crate::watchdog::set_thread_index(index as usize);
                // The main thread's error is the worker's; this one's would go unseen.
                if let Err(err) = serve_thread(ctx, sockets, receive, stop_rx) {
                    tracing::error!("request thread {index} stopped: {err:#}");
                }
            })
            .context("cannot start a request thread")?;
        threads.push(thread);
    }
    spawn_signal_thread(stop_tx, requests.clone(), config.clone(), handover)?;
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
    let ctx = ThreadContext::new(&ctx, request_threads.thread(0));
    let result = serve_thread(ctx, sockets, receive, stop_rx);
    for thread in threads {
        let _ = thread.join();
    }
    result.map(|()| match requests.recycled() {
        true => EXIT_RECYCLED,
        false => 0,
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
    if ctx.sched_batch {
        schedule_as_batch();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(async move {
        let in_flight = Arc::new(InFlight::default());
        let mut loops = vec![tokio::spawn(handover_loop(
            handed_over,
            ctx.clone(),
            stop_rx.clone(),
            in_flight.clone(),
        ))];
        for (protocol, socket, name) in sockets {
            let listener = Accepting::new(socket, &name, protocol, ctx.so_keepalive)?;
            if protocol == Protocol::Uwsgi {
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
                listener,
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

/// `sched-batch`, `auto` resolved: batch scheduling pays when nginx passes the requests
/// over the uwsgi protocol and every request thread can have a core once nginx has passed
/// its batch. With more threads than cores they queue behind each other instead (4
/// processes on 2 cores: the same requests/s, a p99 2.3-3.5x longer), and a daemon with
/// only HTTP listeners gained nothing (`proxy_pass` in front: the same requests/s; a local
/// client straight to it: 4% fewer), so `auto` keeps the normal policy there.
fn batch_scheduling(config: &Config, listeners: &[BoundListener]) -> bool {
    config.sched_batch.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let serves_nginx = listeners.iter().any(|l| l.spec.protocol == Protocol::Uwsgi);
        serves_nginx && (config.processes as usize) * (config.threads as usize) <= cores
    })
}

/// Puts the calling thread under `SCHED_BATCH` (`sched-batch`). The kernel then lets a
/// woken batch thread wait for the running one to block or use up its slice instead of
/// preempting it: when nginx writes a request, it goes on with its other ready events and
/// writes those too, and this thread takes them in one wake-up, where it otherwise
/// switched in and out once per request (on 2 cores shared with nginx and the client:
/// hello-world 13-19% more requests/s at 256 connections, nginx's CPU per request 11% lower
/// and ours 22% lower, `bench/RESULTS.md`). An idle core still runs it at once. Any
/// process may move itself from the normal policy to this one; a refusal leaves it there.
/// A policy the daemon was started with (`chrt`, systemd's `CPUSchedulingPolicy=`) is the
/// administrator's choice, and stays. Threads and processes the app starts from a request
/// thread inherit the policy, as they would a `chrt`.
fn schedule_as_batch() {
    if !under_the_normal_policy() {
        return;
    }
    if let Err(err) = crate::process::schedule_this_thread(libc::SCHED_BATCH) {
        tracing::warn!("sched-batch: the request thread keeps the normal policy: {err}");
    }
}

/// Whether the calling thread runs under the normal policy (workers inherit the master's).
fn under_the_normal_policy() -> bool {
    // SAFETY: pid 0 is the calling thread; the call only reads the kernel's record of it.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER }
}

/// Decides, once in the master, whether the workers' request threads run under
/// `SCHED_BATCH` (`auto` decides on the machine), and says so in its log when they do, or
/// when they keep the policy the daemon was started with.
pub fn decide_scheduling(config: &Config, listeners: &[BoundListener]) -> bool {
    if !batch_scheduling(config, listeners) {
        return false;
    }
    if !under_the_normal_policy() {
        tracing::info!(
            "sched-batch: the request threads keep the scheduling policy the daemon was started with"
        );
        return true;
    }
    let why = match config.sched_batch {
        None => " = auto: a uwsgi socket, and no more request threads than cores",
        Some(_) => "",
    };
    tracing::info!("request threads run under SCHED_BATCH (sched-batch{why})");
    true
}

/// Watches the stop signals on a thread of its own, so they act even while every
/// request thread is busy in the app.
fn spawn_signal_thread(
    stop_tx: watch::Sender<bool>,
    requests: Arc<RequestClock>,
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
                        requests.close();
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

fn fast_exit(signal: &str) {
    tracing::info!("{signal}: exiting now");
    std::process::exit(0);
}

/// Accepts HTTP connections and serves each in a task of its own until the worker stops;
/// as it closes, those in the listener's queue too.
async fn http_accept_loop(
    listener: Accepting,
    name: String,
    ctx: Arc<ThreadContext>,
    mut stop_rx: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<()> {
    let task_stop_rx = stop_rx.clone();
    // An accepted socket, registered with the runtime (a failure is the accept's).
    let registered = |accepted: std::io::Result<(Conn, String)>| {
        accepted.and_then(|(conn, peer)| Ok((AsyncConn::from_nonblocking(conn)?, peer)))
    };
    // Serves a connection in a task of its own; told when its first request head is in.
    let serve = |conn: AsyncConn, peer: String| {
        let guard = in_flight.enter();
        let (head_in, head_read) = tokio::sync::oneshot::channel();
        let (ctx, stop_rx) = (ctx.clone(), task_stop_rx.clone());
        tokio::spawn(async move {
            crate::http::serve(conn, Vec::new(), peer, ctx, stop_rx, Some(head_in)).await;
            drop(guard);
        });
        head_read
    };
    loop {
        // Only a free thread takes a new connection: one taken while the app runs here
        // (or streams a body) would wait for it, where another thread, or another
        // worker, could serve it now.
        let Some(accepted) = ctx.when_free(&mut stop_rx, listener.next()).await else {
            break;
        };
        let (conn, peer) = match registered(accepted) {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: say so and keep serving the connections we have.
                tracing::error!("accept() on \"{name}\" failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let head_read = serve(conn, peer);
        // As a uWSGI thread reads the request it accepted before it accepts another: the
        // next connection is taken once this one's request head is in (its request then
        // holds the thread, above), it ended, or socket-timeout passed.
        tokio::select! {
            biased;
            _ = stopped(&mut stop_rx) => break,
            _ = tokio::time::timeout(ctx.head_timeout, head_read) => {}
        }
    }
    // As the daemon stops: the connections left in the listener's queue, taken as above
    // (a free thread, one at a time); one that sends nothing (a browser's preconnection)
    // holds up the next no longer than it may linger itself.
    while let Some(accepted) = ctx.queued_at_stop(&listener, &name).await {
        match registered(Ok(accepted)) {
            Ok((conn, peer)) => {
                let _ = tokio::time::timeout(LINGER_AT_STOP, serve(conn, peer)).await;
            }
            Err(err) => tracing::error!("accept() on \"{name}\" as the worker stops failed: {err}"),
        }
    }
    Ok(())
}

/// Takes up connections other workers hand over, on this request thread's runtime, until
/// the worker stops; each is served as the slow path serves a kept-alive connection.
async fn handover_loop(
    receive: std::os::fd::OwnedFd,
    ctx: Arc<ThreadContext>,
    mut stop_rx: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<()> {
    let mut incoming = crate::handover::Incoming::new(receive)?;
    let task_stop_rx = stop_rx.clone();
    let serve = |(protocol, conn, peer, head): crate::handover::Taken| {
        tracing::debug!("{peer}: connection taken over from a retiring worker");
        let guard = in_flight.enter();
        let (ctx, stop_rx) = (ctx.clone(), task_stop_rx.clone());
        tokio::spawn(async move {
            match protocol {
                Protocol::Uwsgi => {
                    crate::uwsgi::serve_handed_over(conn, head, peer, ctx, stop_rx).await
                }
                Protocol::Http => match AsyncConn::register(conn) {
                    Ok(conn) => crate::http::serve(conn, head, peer, ctx, stop_rx, None).await,
                    Err(err) => tracing::error!("{peer}: cannot register the connection: {err}"),
                },
            }
            drop(guard);
        });
    };
    loop {
        // Only a free thread takes one: the others wait in the shared queue (held by the
        // master too, so a worker killed meanwhile loses none) for the first that is.
        let Some(taken) = ctx.when_free(&mut stop_rx, incoming.next()).await else {
            break;
        };
        serve(taken?);
        // Its request first: the next connection waiting goes to whichever thread is free
        // then, this one or another worker's, not to this thread by default.
        tokio::task::yield_now().await;
    }
    // If the whole daemon stops (the master says so before it signals): what is left in
    // the queue, which no worker would take any more, taken the same way until none is
    // left.
    if !(ctx.closing() && crate::stats::daemon_stops()) {
        return Ok(());
    }
    loop {
        drop(ctx.app_slot().await);
        let Some(taken) = incoming.try_next() else {
            return Ok(());
        };
        serve(taken);
        tokio::task::yield_now().await;
    }
}
