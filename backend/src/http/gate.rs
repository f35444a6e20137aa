//! What lets hyper read the next request on a kept-alive HTTP connection: the thread's
//! app slot and the worker's admission, before a byte of it is read.
//!
//! Between two requests the connection is listed with its request thread as idle
//! (`idle.rs`), and hyper's reads wait here: for the connection to be readable, then for
//! the thread to be free; only then is the connection claimed back from the mover and
//! read, and the worker asked to admit one more request (`max-requests`; a retiring
//! worker admits none: the bytes read go back, to be handed over with the connection; a
//! worker that stops with nobody to hand it to admits it, and its answer closes).
//! Until then the request stays in the socket, whole, so that:
//!
//! - a thread busy with a slow request does not hold up the requests that arrive on its
//!   other connections: the mover hands those connections to a free thread, as it does
//!   uwsgi ones (head-of-line blocking);
//! - a worker past `max-requests`, or retiring, hands the connection over with the request
//!   unread, instead of serving one request more than it may;
//! - a worker killed with SIGKILL takes with it the requests it was running, not the ones
//!   queued behind them.
//!
//! Once admitted, the request holds the thread while it is read, as a uWSGI thread does:
//! its head must be in within `socket-timeout`, and each read of its body too (`mod.rs`).
//! Reads then pass until hyper has its response. Bytes of a request that came with the
//! previous one (a pipelining client) were not admitted here: once hyper has read any
//! (`framer.rs` tells where requests begin), the connection stays with its thread, since
//! hyper holds them; such requests are served as they come (no client in use pipelines).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::framer::Framer;
use crate::conn::PrefixedConn;
use crate::context::ThreadContext;
use crate::idle::{Claim, IdleConn};

/// What a connection's reads, its requests and its serve loop share.
pub struct Gate {
    /// The connection's entry in its thread's idle list.
    pub entry: Arc<IdleConn>,
    /// Requests admitted or dispatched whose response body hyper has not dropped yet
    /// (it drops it once the last frame is in its write buffer).
    active: AtomicUsize,
    /// The app slot of the request admitted whose head hyper reads now: its request takes it.
    admitted: Mutex<Option<OwnedSemaphorePermit>>,
    /// Bytes of a request this gate did not admit were read (the framer sees it, see
    /// [`GatedConn::follow`]), or its count could not be trusted: reads pass from then
    /// on, and the connection no longer moves.
    pinned: AtomicBool,
    /// The next request's first bytes are in (the connection is readable) and wait for the
    /// thread: as the worker closes, the serve loop keeps the connection for them.
    waiting: AtomicBool,
    /// The last write hyper asked for would block: it holds bytes of a response the socket
    /// did not take yet (until it flushes the connection).
    writing: AtomicBool,
}

impl Gate {
    pub fn new(entry: Arc<IdleConn>) -> Arc<Gate> {
        Arc::new(Gate {
            entry,
            active: AtomicUsize::new(0),
            admitted: Mutex::new(None),
            pinned: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            writing: AtomicBool::new(false),
        })
    }

    /// Called as hyper hands a request to the service: the slot admitted for it, or None
    /// for a request that came whole with the previous one (the caller then waits for the
    /// slot and admits it itself). It counts as active until the guard is dropped.
    pub fn take_admission(self: &Arc<Self>) -> (Option<OwnedSemaphorePermit>, ActiveRequest) {
        let admitted = self.admitted().take();
        if admitted.is_none() {
            // The framer pinned the connection already when that request's first bytes
            // were read; should it have lost count, this still does before dispatch.
            self.pinned.store(true, Ordering::SeqCst);
            self.active.fetch_add(1, Ordering::SeqCst);
        }
        (admitted, ActiveRequest(self.clone()))
    }

    /// Notes whether a write hyper asked for would block (it then holds bytes).
    fn wrote(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        self.writing.store(written.is_pending(), Ordering::SeqCst);
        written
    }

    /// hyper holds bytes of a response it could not write yet.
    pub fn writing(&self) -> bool {
        self.writing.load(Ordering::SeqCst)
    }

    /// Between requests, the next one's bytes have come and wait for the thread.
    pub fn next_request_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// No request is being read or answered on the connection.
    pub fn idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
    }

    fn admitted(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request was admitted and its head is being read: hyper has not handed it to its
    /// service yet.
    pub fn admission_pending(&self) -> bool {
        self.admitted().is_some()
    }

    fn between_requests(&self) -> bool {
        self.idle() && !self.pinned.load(Ordering::SeqCst)
    }
}

/// Counts a request as active until its response's body is dropped.
pub struct ActiveRequest(Arc<Gate>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection as hyper reads and writes it.
pub struct GatedConn {
    pub io: PrefixedConn,
    gate: Arc<Gate>,
    ctx: Arc<ThreadContext>,
    /// Between requests, once the next one's bytes are there: the thread's app slot.
    slot: Option<Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>>,
    /// The mover is sending the connection: its verdict.
    settling: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// When the admitted request's head must be in: made at the first admission, reset
    /// for each next one (no allocation per request).
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline applies: a request was admitted and hyper has not dispatched it yet.
    head_armed: bool,
    /// The worker admits no more requests: the serve loop hands the connection over or
    /// closes it (it is told by the worker's stop).
    refused: bool,
    /// Where the requests begin in what hyper read, and how many this gate admitted: one
    /// begun and not admitted is a pipelining client's (see [`GatedConn::follow`]).
    framer: Framer,
    admissions: u64,
}

impl GatedConn {
    pub fn new(io: PrefixedConn, gate: Arc<Gate>, ctx: Arc<ThreadContext>) -> GatedConn {
        GatedConn {
            io,
            gate,
            ctx,
            slot: None,
            settling: None,
            head_deadline: None,
            head_armed: false,
            refused: false,
            framer: Framer::default(),
            admissions: 0,
        }
    }

    /// Follows the bytes hyper just read. If they hold the start of a request this gate
    /// did not admit (a client that pipelines), hyper holds it, or part of it: the
    /// connection stays with this thread from now on (it is pinned), since another
    /// thread's hyper would get that request without the bytes this one holds. So does
    /// a connection whose requests can no longer be told apart.
    fn follow(&mut self, read: &[u8]) {
        if self.gate.pinned.load(Ordering::SeqCst) {
            return; // for good: nothing more to tell
        }
        self.framer.feed(read);
        if self
            .framer
            .started()
            .is_none_or(|begun| begun > self.admissions)
        {
            self.gate.pinned.store(true, Ordering::SeqCst);
        }
    }

    /// Between requests: ready with the thread's app slot once the connection looks
    /// readable, the thread is free and the connection is claimed back from the mover.
    /// Err: the mover gave it away meanwhile.
    fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedSemaphorePermit>> {
        loop {
            if let Some(settling) = self.settling.as_mut() {
                std::task::ready!(settling.as_mut().poll(cx));
                self.settling = None;
                if self.gate.entry.given() {
                    return Poll::Ready(Err(given()));
                }
            }
            let permit = match self.slot.as_mut() {
                Some(slot) => std::task::ready!(slot.as_mut().poll(cx)),
                None => {
                    // Listed as waiting for its next request: the mover may move it from
                    // here, unless bytes of it are in the prefix (handed over with it),
                    // which the mover could not send along.
                    if self.io.unread_prefix().is_empty() {
                        self.gate.entry.release();
                    }
                    std::task::ready!(self.io.poll_read_ready(cx));
                    self.gate.waiting.store(true, Ordering::SeqCst);
                    match self.ctx.try_app_slot() {
                        Some(permit) => permit,
                        None => {
                            self.slot = Some(Box::pin(self.ctx.app_slot()));
                            continue;
                        }
                    }
                }
            };
            self.slot = None;
            match self.gate.entry.claim() {
                Claim::Claimed => return Poll::Ready(Ok(permit)),
                Claim::Given => return Poll::Ready(Err(given())),
                Claim::Giving => self.settle(),
            }
        }
    }

    /// Between requests: reads the next request's first bytes once it may (see
    /// [`GatedConn::poll_claim`]), and admits the request, which then holds the slot.
    fn poll_admitted_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.refused {
            return Poll::Pending;
        }
        let permit = std::task::ready!(self.poll_claim(cx))?;
        self.gate.waiting.store(false, Ordering::SeqCst);
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            // The readiness was stale: the thread is not held, the mover may take it again.
            Poll::Pending => {
                self.gate.entry.release();
                return Poll::Pending;
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            // The client closed the connection: nothing to admit.
            Poll::Ready(Ok(())) if buf.filled().len() == before => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {}
        }
        // A retiring worker's connections go to the workers that serve on, this request
        // with them.
        let may_admit = !self.ctx.requests.stopping() || !self.ctx.retiring();
        // Refused: Pending with no waker of its own is enough, because refusing means the
        // worker's stop was sent already, and the serve loop polls that stop.
        if !(may_admit && self.ctx.requests.admit()) {
            // Not this worker's to serve: the bytes go back, and its stop makes the serve
            // loop hand the connection over with them (or close it if nobody takes it).
            let read = buf.filled()[before..].to_vec();
            buf.set_filled(before);
            self.io.unread(&read);
            self.refused = true;
            return Poll::Pending;
        }
        self.gate.active.fetch_add(1, Ordering::SeqCst);
        *self.gate.admitted() = Some(permit);
        // An admission read starts a request: if the stream is not between requests here
        // (bytes read to drain a body the app left, say), the count cannot be trusted.
        if !self.framer.between(self.admissions) {
            self.gate.pinned.store(true, Ordering::SeqCst);
        }
        self.admissions += 1;
        self.follow(&buf.filled()[before..]);
        let deadline = tokio::time::Instant::now() + self.ctx.head_timeout;
        match self.head_deadline.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.head_deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.head_armed = true;
        Poll::Ready(Ok(()))
    }

    fn settle(&mut self) {
        let entry = self.gate.entry.clone();
        self.settling = Some(Box::pin(async move { entry.settled().await }));
    }

    /// Whether the admitted request's head is still being read.
    fn head_pending(&self) -> bool {
        self.head_armed && self.gate.admitted().is_some()
    }
}

/// The error hyper ends the connection with once the mover gave it to another thread
/// (the serve loop then sees the entry given, and lets go of it without a word).
fn given() -> io::Error {
    io::Error::other("the connection was handed to another thread")
}

impl AsyncRead for GatedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.gate.between_requests() {
            return this.poll_admitted_read(cx, buf);
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.follow(&buf.filled()[before..]);
        }
        if read.is_pending() && this.head_pending() {
            if let Some(deadline) = this.head_deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.head_armed = false;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not come within socket-timeout",
                    )));
                }
            }
        } else if !this.head_pending() {
            this.head_armed = false;
        }
        read
    }
}

impl AsyncWrite for GatedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.gate.wrote(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.gate.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes its connection once it has written all it buffered.
        self.gate.writing.store(false, Ordering::SeqCst);
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
