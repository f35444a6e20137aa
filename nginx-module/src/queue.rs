//! `wsgi_app`'s queue: the requests beyond what the daemon can start soon wait in nginx,
//! in one queue, not in the daemon's sockets.
//!
//! nginx sends a request on a kept-alive connection, and every connection to the daemon
//! belongs to one of its worker processes: a request sent is committed to one worker.
//! Sending every request at once, each worker came to hold a queue of its own (128
//! requests each at 256 client connections on 2 workers), and a worker that the kernel
//! left without CPU for a few milliseconds delayed every request it held while the other
//! worker could have served them: that was the tail of the latency (a Flask app's p99
//! 45 ms against the 36 of uWSGI's shared listen queue, from which a worker takes one
//! request at a time). So an nginx worker sends a `wsgi_app`'s daemon as many requests
//! at a time as it answers in [`WAIT_IN_DAEMON_MS`] (the rate measured over the last
//! [`RATE_WINDOW_MS`]), and never fewer than `processes × (threads + 2)` (its config
//! says how many), so that a thread finds its next request waiting when it is done with
//! one. The others wait here in order of arrival, and go as answers make room, on the
//! connection nginx's keepalive cache put back last: the one of the worker that has just
//! answered.
//!
//! The time is a trade: the fewer requests the daemon holds, the fewer wait behind a
//! stalled worker, and the sooner its workers run dry when nginx itself is left without
//! CPU (on 2 cores shared with the client, 2 ms cost a Flask app 10% of its requests/s;
//! `bench/RESULTS.md`).
//!
//! A waiting request is ended with 504 after `wsgi_connect_timeout`, as a connect that
//! times out is, and ended as soon as its client goes away (499): the daemon never sees
//! it. A request sent keeps its room until the daemon is done with it, even when nginx
//! ends it first (its client went away, its read timed out): the daemon's thread runs it
//! to its end anyway, so its connection is kept, half-closed, until the daemon closes it
//! ([`release`]). The queue is per nginx worker, made with the configuration and reached from the
//! upstream's server configuration slot of this module.
//!
//! With several nginx workers (`worker_processes auto` gives one per core), each has its
//! own queue, and the daemon's room is shared out among them by how many requests each
//! has, sent or waiting ([`Shares`], in a shared memory zone): each worker's count of
//! answers grows with what it sends, so a share by answers would keep whatever split came
//! first, and the clients of the worker with the smaller one would wait longer (Flask at
//! 256 connections on 2 nginx workers: p99 84 ms against 67 with every request sent at
//! once, and 58 for uWSGI's shared listen queue). And all of them together send no more
//! than that room, but for one request each: the first requests of a burst reach a
//! worker before the others' demand is published, and shares alone let 4 nginx workers
//! send a daemon with room for 3 up to 9 at once.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::{mem, ptr};

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_conf_t, ngx_connection_log_error_e_NGX_ERROR_INFO,
    ngx_connection_t, ngx_core_conf_t, ngx_core_module, ngx_current_msec, ngx_cycle, ngx_cycle_t,
    ngx_del_timer, ngx_delete_posted_event, ngx_destroy_pool, ngx_event_t, ngx_handle_read_event,
    ngx_handle_write_event, ngx_http_block_reading, ngx_http_finalize_request, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_http_test_reading, ngx_http_upstream_init,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_msec_t, ngx_pagesize, ngx_post_event,
    ngx_posted_events, ngx_process, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc,
    ngx_slab_pool_t, ngx_str_t, ngx_uint_t, ngx_variable_value_t, ngx_worker, shutdown, NGX_AGAIN,
    NGX_ERROR, NGX_HTTP_GATEWAY_TIME_OUT, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_ERR,
    NGX_LOG_WARN, NGX_OK, NGX_PROCESS_WORKER, SHUT_WR,
};
use ngx::http::HttpModule;

use ngx_wsgi_config::Config;

use crate::WsgiModule;

/// Requests sent to a daemon worker beyond its request threads, waiting there for one,
/// at least: the queue never sends fewer than `processes × (threads + 2)` at a time.
const AHEAD_PER_WORKER: u32 = 2;
/// How long a request may expect to wait inside the daemon: as many requests are sent
/// as the daemon answers in this time, measured over [`RATE_WINDOW_MS`]. Flask at 256
/// connections, against 2 ms in two runs: p99 44.6 and 52.4 against 49.6 and 55.7 ms,
/// 5-6% more requests/s.
const WAIT_IN_DAEMON_MS: u64 = 5;
/// How often the rate of answers is measured again.
const RATE_WINDOW_MS: ngx_msec_t = 100;
/// nginx workers that share out a daemon's room: a worker numbered beyond (`ngx_worker`)
/// keeps to the room its own answers give it, as with one worker.
const SHARED_WORKERS: usize = 256;
/// How often a worker with requests waiting looks again at its share, when there are
/// others: their requests' end makes room it hears of from no event of its own.
const RECHECK_MS: ngx_msec_t = 2;

/// What each nginx worker has of one daemon's requests, in a shared memory zone made
/// anew with each configuration (old workers finishing after a reload keep the old one).
#[repr(C)]
struct Shares {
    /// All the workers' requests, sent and waiting: the sum of their `demand` (the two
    /// totals in a line of their own, as the lines below are aligned).
    demand: AtomicU32,
    /// All the workers' requests sent: the sum of their `sent`, taken (reserved) before a
    /// request goes, so that two workers never both take the last room.
    sent: AtomicU32,
    worker: [Share; SHARED_WORKERS],
}

/// One nginx worker's line: its demand written at each request, its count of requests
/// sent as they go and end, its rate at each window, the rates read by the others once per
/// ms at most. Lines of their own, as each is
/// written by another core.
#[repr(C, align(64))]
struct Share {
    /// Its requests sent and waiting.
    demand: AtomicU32,
    /// Its requests sent.
    sent: AtomicU32,
    /// The answers per second it measured last, at `rate_at` (nginx's monotonic clock,
    /// the same in every process).
    rate: AtomicU32,
    rate_at: AtomicU64,
}

/// One nginx worker's requests to one daemon: how many are sent, and those waiting.
pub struct Queue {
    /// Requests sent and not yet answered.
    sent: u32,
    /// The fewest the daemon is sent at once: `processes × (threads + 2)`.
    floor: u32,
    /// Answers since `window_start` (nginx's clock), and the rate of the last window.
    answers: u64,
    window_start: ngx_msec_t,
    rate_per_s: u32,
    /// The nginx workers' lines (null until nginx made the zone), how many workers there
    /// are (read once, in the worker), the demand this one last published, and the
    /// daemon's room for them all, summed from their rates at most once per ms.
    shares: *mut Shares,
    workers: Option<usize>,
    published: u32,
    room: u32,
    room_at: ngx_msec_t,
    /// Requests waiting to be sent, oldest first.
    waiting: WaitList,
    /// Posted when an answer makes room while requests wait: sends them.
    send_waiting: ngx_event_t,
    /// The same, on a timer of [`RECHECK_MS`] while requests wait, with other nginx workers.
    recheck: ngx_event_t,
}

/// A request's place in its [`Queue`], in the request's pool: dropped with the request,
/// it gives back what it holds.
pub struct Ticket {
    queue: *mut Queue,
    request: *mut ngx_http_request_t,
    state: TicketState,
    /// How long it may wait: `wsgi_connect_timeout`.
    timer: ngx_event_t,
    /// Its neighbours in the queue's [`WaitList`] while it waits.
    prev: *mut Ticket,
    next: *mut Ticket,
    /// When it came (nginx's clock), and how long it waited before it was sent or gave
    /// up: `$wsgi_queue_time`.
    came_at: ngx_msec_t,
    waited: Option<ngx_msec_t>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TicketState {
    /// Holds nothing: not placed yet, or given back.
    Idle,
    /// In its queue's [`WaitList`].
    Waiting,
    /// Counted among the requests sent.
    Sent,
}

/// The waiting tickets, oldest first, linked through their own `prev` and `next`: one that
/// leaves from anywhere (its client went away, its time ran out) leaves at once, however
/// many wait.
struct WaitList {
    first: *mut Ticket,
    last: *mut Ticket,
    len: u32,
}

impl WaitList {
    const fn new() -> Self {
        Self {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            len: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// # Safety
    /// `ticket` is alive and in no list; every ticket in this one is alive.
    unsafe fn push_back(&mut self, ticket: *mut Ticket) {
        // SAFETY: per the caller.
        unsafe {
            (*ticket).prev = self.last;
            (*ticket).next = ptr::null_mut();
            match self.last.as_mut() {
                Some(last) => last.next = ticket,
                None => self.first = ticket,
            }
        }
        self.last = ticket;
        self.len += 1;
    }

    /// # Safety
    /// Every ticket in the list is alive.
    unsafe fn pop_front(&mut self) -> Option<*mut Ticket> {
        let first = self.first;
        if first.is_null() {
            return None;
        }
        // SAFETY: per the caller; the first ticket is in the list.
        unsafe { self.unlink(first) };
        Some(first)
    }

    /// # Safety
    /// `ticket` is in this list, and every ticket in it is alive.
    unsafe fn unlink(&mut self, ticket: *mut Ticket) {
        // SAFETY: per the caller: the ticket and its neighbours are alive.
        unsafe {
            let (prev, next) = ((*ticket).prev, (*ticket).next);
            match prev.as_mut() {
                Some(prev) => prev.next = next,
                None => self.first = next,
            }
            match next.as_mut() {
                Some(next) => next.prev = prev,
                None => self.last = prev,
            }
            (*ticket).prev = ptr::null_mut();
            (*ticket).next = ptr::null_mut();
        }
        self.len -= 1;
    }
}

/// Gives an implicit upstream (wsgi_app's) a queue for the daemon `config` describes.
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler of the http block;
/// `upstream` was returned by ngx_http_upstream_add during it.
pub unsafe fn install(
    cf: *mut ngx_conf_t,
    upstream: *mut ngx_http_upstream_srv_conf_t,
    config: &Config,
) -> Result<(), String> {
    // SAFETY: per the caller, the configuration being parsed: its pool outlives the
    // upstream.
    let pool = unsafe { (*cf).pool };
    // SAFETY: per the caller, the upstream just added, in the configuration pool.
    let Some(slots) = unsafe { crate::app::implicit_upstream_slots(pool, upstream) }? else {
        // An `upstream` block of the user's: requests go as they come.
        return Ok(());
    };
    let ours = WsgiModule::module().ctx_index;
    let floor = config
        .processes
        .saturating_mul(config.threads + AHEAD_PER_WORKER);
    // SAFETY: null, or the queue a wsgi_app naming the same socket installed, alive with
    // the configuration.
    if let Some(queue) = unsafe { (slots[ours] as *mut Queue).as_mut() } {
        // Its daemon is this one: the largest count any of its configs gives.
        queue.floor = queue.floor.max(floor);
        return Ok(());
    }
    let queue = Queue {
        sent: 0,
        floor,
        answers: 0,
        window_start: 0,
        rate_per_s: 0,
        shares: ptr::null_mut(),
        workers: None,
        published: 0,
        room: floor,
        room_at: 0,
        waiting: WaitList::new(),
        // SAFETY: an all-zero event is an unposted one without a timer, as nginx's
        // modules make theirs; its handler is set here, its data and log when posted.
        send_waiting: ngx_event_t {
            handler: Some(send_waiting),
            ..unsafe { mem::zeroed() }
        },
        // SAFETY: as above.
        recheck: ngx_event_t {
            handler: Some(send_waiting),
            ..unsafe { mem::zeroed() }
        },
    };
    // SAFETY: the configuration's pool, which drops the queue when it is freed.
    let queue = unsafe { crate::pool_allocate(pool, queue) };
    if queue.is_null() {
        return Err("out of memory".into());
    }
    slots[ours] = queue.cast();
    // SAFETY: per the caller; the upstream's host is its URL, in the configuration pool.
    unsafe { add_shares(cf, upstream, queue) }
}

/// Asks nginx for the zone of the nginx workers' [`Shares`] of this daemon's room: named
/// after the upstream, made anew with each configuration, found by the queue once nginx
/// made it ([`init_shares`], before the workers start).
///
/// # Safety
/// As [`install`]; `queue` is the upstream's, in the configuration pool.
unsafe fn add_shares(
    cf: *mut ngx_conf_t,
    upstream: *mut ngx_http_upstream_srv_conf_t,
    queue: *mut Queue,
) -> Result<(), String> {
    // The upstream's host and port (two daemons on one host are two upstreams, and two
    // zones): "wsgi_app queue 127.0.0.1:8000", "wsgi_app queue unix:/run/app.sock".
    // SAFETY: per the caller: the upstream's URL, in the configuration pool.
    let (host, port) = unsafe { ((*upstream).host.as_bytes(), (*upstream).port) };
    let mut text = b"wsgi_app queue ".to_vec();
    text.extend_from_slice(host);
    if port != 0 {
        text.extend_from_slice(format!(":{port}").as_bytes());
    }
    // SAFETY: the configuration's pool, which keeps the zone's name as long as the zone.
    let data = unsafe { ngx::ffi::ngx_pnalloc((*cf).pool, text.len()) } as *mut u8;
    if data.is_null() {
        return Err("out of memory".into());
    }
    // SAFETY: `data` was just allocated with room for `text`.
    unsafe { ptr::copy_nonoverlapping(text.as_ptr(), data, text.len()) };
    let mut name = ngx_str_t {
        len: text.len(),
        data,
    };
    // SAFETY: the configuration being parsed; the zone's tag is this module, whose
    // address is the same in every process.
    let zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut name,
            mem::size_of::<Shares>() + 8 * ngx_pagesize,
            ptr::addr_of_mut!(crate::ngx_http_wsgi_module).cast(),
        )
    };
    // SAFETY: null, or the zone just added, in the configuration's cycle.
    let Some(zone) = (unsafe { zone.as_mut() }) else {
        return Err("cannot add the shared memory zone of its queue".into());
    };
    zone.init = Some(init_shares);
    zone.data = queue.cast();
    // A new zone for each configuration: old workers that finish their requests after a
    // reload, numbered as the new ones are, keep writing the old zone.
    zone.noreuse = 1;
    Ok(())
}

/// nginx made the zone (in the master, before the workers start): the queue gets its lines.
extern "C" fn init_shares(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    let mut outcome = NGX_ERROR as ngx_int_t;
    guarded("init_shares", || outcome = init_shares_body(zone));
    outcome
}

fn init_shares_body(zone: *mut ngx_shm_zone_t) -> ngx_int_t {
    // SAFETY: the zone add_shares added, mapped now, its data the queue (alive with the
    // configuration); a zone begins with its slab pool, which nginx has set up.
    unsafe {
        let shares = ngx_slab_calloc(
            (*zone).shm.addr.cast::<ngx_slab_pool_t>(),
            mem::size_of::<Shares>(),
        );
        if shares.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*(*zone).data.cast::<Queue>()).shares = shares.cast();
    }
    NGX_OK as ngx_int_t
}

/// The upstream's queue, in our server configuration slot: null for an upstream that
/// [`install`] did not set up (an `upstream` block's slot of ours is null: this module
/// has no server configuration of its own).
///
/// # Safety
/// `us` is an upstream's configuration, or null.
unsafe fn queue_of(us: *mut ngx_http_upstream_srv_conf_t) -> *mut Queue {
    // SAFETY: per the caller; srv_conf is null or has a slot per HTTP module.
    unsafe {
        match us.as_ref() {
            Some(us) if !us.srv_conf.is_null() => {
                *us.srv_conf.add(WsgiModule::module().ctx_index) as *mut Queue
            }
            _ => ptr::null_mut(),
        }
    }
}

/// The body-read handler of a `wsgi_pass` location, in place of `ngx_http_upstream_init`:
/// starts the request's upstream now, or, for a `wsgi_app` whose daemon has as many
/// requests as it can start, once answers make room.
pub extern "C" fn start_upstream(r: *mut ngx_http_request_t) {
    if !guarded("start_upstream", || start_upstream_body(r)) {
        // SAFETY: the request nginx passed; it fails as a callback's NGX_ERROR fails it.
        unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
    }
}

fn start_upstream_body(r: *mut ngx_http_request_t) {
    // SAFETY: the request whose body nginx read (or began to), with the upstream the
    // content handler made; the configuration's upstream is set before the handler runs
    // (null for a `wsgi_pass` with variables).
    let queue = unsafe { queue_of((*(*(*r).upstream).conf).upstream) };
    // SAFETY: as above; the queue, alive with the configuration, used by one thread.
    let Some(queue) = (unsafe { queue.as_mut() }) else {
        // SAFETY: as ngx_http_read_client_request_body would call it.
        unsafe { ngx_http_upstream_init(r) };
        return;
    };
    let ticket = Ticket {
        queue,
        request: r,
        state: TicketState::Idle,
        // SAFETY: an all-zero event is one without a timer, as nginx's modules make theirs.
        timer: unsafe { mem::zeroed() },
        prev: ptr::null_mut(),
        next: ptr::null_mut(),
        // SAFETY: nginx's clock, updated by its event loop on this thread.
        came_at: unsafe { ngx_current_msec },
        waited: None,
    };
    // SAFETY: the request's pool, which drops the ticket with the request.
    let ticket = unsafe { crate::pool_allocate((*r).pool, ticket) };
    if ticket.is_null() {
        // SAFETY: as above; the request fails as nginx fails it out of memory.
        unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
        return;
    }
    crate::upstream::set_ticket(r, ticket);
    if queue.waiting.is_empty() && queue.take_room_if_any(1) {
        // SAFETY: just allocated, alive with the request.
        unsafe { (*ticket).take_room() };
        queue.publish_demand();
        // SAFETY: as above.
        unsafe { ngx_http_upstream_init(r) };
        return;
    }
    // SAFETY: the request and its connection, as above.
    let (c, http1) = unsafe { ((*r).connection, (*r).stream.is_null()) };
    if http1 {
        // As ngx_http_upstream_init does before its own waits: the body's timer (of a
        // body read as it is sent) is not the request's while it waits, and the read
        // event is registered (it is not yet when the request came with its connection,
        // accepted `deferred`), so that a client going away is noticed.
        // SAFETY: the request's connection and its read event.
        let registered = unsafe {
            if (*(*c).read).timer_set() != 0 {
                ngx_del_timer((*c).read);
            }
            ngx_handle_read_event((*c).read, 0) == NGX_OK as ngx_int_t
        };
        if !registered {
            // SAFETY: as above; the ticket, holding nothing yet, is dropped with the request.
            unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
            return;
        }
    }
    // SAFETY: the ticket just allocated, alive with the request; those in the list leave
    // it when they are dropped.
    unsafe { queue.waiting.push_back(ticket) };
    // SAFETY: as above.
    unsafe { (*ticket).state = TicketState::Waiting };
    queue.publish_demand();
    queue.recheck_later();
    // SAFETY: the ticket just allocated, alive with the request; the request and its
    // upstream's configuration as above.
    unsafe {
        let timer = &mut (*ticket).timer;
        timer.handler = Some(waited_too_long);
        timer.data = ticket.cast();
        timer.log = (*(*r).connection).log;
        let conf = &*(*(*r).upstream).conf;
        ngx_add_timer(timer, conf.connect_timeout);
        // A client that goes away while its request waits ends it (and its ticket
        // leaves the queue), as the upstream module notices it once the request is
        // sent, unless the location says to go on without the client.
        if conf.ignore_client_abort == 0 {
            (*r).read_event_handler = Some(ngx_http_test_reading);
        }
    }
}

/// The request's upstream is over (its `finalize_request`): its room goes to the next,
/// unless the daemon may still be running it. `unfinished` is the connection of a request
/// sent whose response was not read whole, with `wsgi_read_timeout`: the daemon's thread
/// runs such a request to its end whatever nginx does, so it keeps its room until the
/// daemon is done, and the queue takes the connection to see when ([`drain`]; true: nginx
/// must not close it). Giving the room back at once let the requests waiting here go to
/// a daemon still busy with those its clients had left, there to wait behind them.
pub fn release(
    ticket: *mut Ticket,
    unfinished: Option<(*mut ngx_connection_t, ngx_msec_t)>,
) -> bool {
    // SAFETY: null, or the request's ticket, alive with its pool.
    let Some(ticket) = (unsafe { ticket.as_mut() }) else {
        return false;
    };
    if let Some((c, timeout)) = unfinished {
        if ticket.state == TicketState::Sent && in_worker_process() {
            // SAFETY: the ticket's request, alive while nginx finalizes it.
            let request_line = unsafe { (*ticket.request).request_line.as_bytes().to_vec() };
            let drained = Drained {
                queue: ticket.queue,
                request_line,
            };
            if start_draining(drained, c, timeout) {
                // It stays counted among the requests sent; its timer went when it was sent.
                ticket.state = TicketState::Idle;
                return true;
            }
        }
    }
    ticket.release();
    false
}

/// What a drained connection's events reach (its `data`, in its pool): the queue whose
/// room the request holds, and the request's line, for the log.
struct Drained {
    queue: *mut Queue,
    request_line: Vec<u8>,
}

/// Whether this is an nginx worker process, which keeps its configuration, hence its
/// queues, for its life. A single process (`master_process off`) frees the old
/// configuration at a reload while its requests still run.
fn in_worker_process() -> bool {
    // SAFETY: nginx's process kind, set before the process handles any event.
    unsafe { ngx_process == NGX_PROCESS_WORKER as ngx_uint_t }
}

/// Takes the connection of a request nginx is done with before the daemon may be: it is
/// half-closed, so that the daemon, once it has written its response, reads no next
/// request there and closes it; what it sends is read and dropped meanwhile, for at most
/// `timeout`. Then the request's room goes to the next. False when nothing was taken (no
/// memory in the connection's pool for `drained`).
fn start_draining(drained: Drained, c: *mut ngx_connection_t, timeout: ngx_msec_t) -> bool {
    // SAFETY: the request's upstream connection, open, which nginx no longer reaches
    // (finalize_request clears it from the upstream) once this returns true; its events
    // and pool are its own.
    let rev = unsafe {
        let pool = (*c).pool;
        if pool.is_null() {
            return false;
        }
        let drained = crate::pool_allocate(pool, drained);
        if drained.is_null() {
            return false;
        }
        // The request's log goes with its client's connection.
        let log = (*ngx_cycle).log;
        (*c).log = log;
        (*pool).log = log;
        (*c).data = drained.cast();
        // The daemon resetting it is no error of nginx's.
        (*c).set_log_error(ngx_connection_log_error_e_NGX_ERROR_INFO);
        let (rev, wev) = ((*c).read, (*c).write);
        (*rev).log = log;
        (*wev).log = log;
        (*rev).handler = Some(drain);
        (*wev).handler = Some(ignore_event);
        if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
        if (*rev).timer_set() != 0 {
            ngx_del_timer(rev);
        }
        (*rev).set_timedout(0);
        // Not cancelable: a worker shutting down waits for it, as for the request.
        ngx_add_timer(rev, timeout);
        // A socket that never connected refuses; the read below then sees the error.
        shutdown((*c).fd, SHUT_WR as c_int);
        // A write event left waiting (the request's body was being sent) would fire on
        // every loop of level-triggered events (poll, select) once the socket is
        // half-closed: marked ready, nginx takes it out (with epoll, nothing to do).
        (*wev).set_ready(1);
        ngx_handle_write_event(wev, 0);
        rev
    };
    // What already came (an edge-triggered event would not fire for it again).
    drain(rev);
    true
}

/// Reads and drops what the daemon sends on a connection taken by [`start_draining`],
/// until it closes it (or the time is up, or the worker closes everything as it exits),
/// then closes it and gives the request's room back.
extern "C" fn drain(rev: *mut ngx_event_t) {
    guarded("drain", || drain_body(rev));
}

fn drain_body(rev: *mut ngx_event_t) {
    // SAFETY: a drained connection's read event: its data is the connection, whose data
    // is its Drained, in its pool, until the pool is destroyed below.
    let (c, drained) = unsafe {
        let c = (*rev).data.cast::<ngx_connection_t>();
        (c, &*(*c).data.cast::<Drained>())
    };
    // The queue is the configuration's, alive for the worker's life.
    let queue = drained.queue;
    // SAFETY: as above.
    let (timed_out, closing) = unsafe { ((*rev).timedout() != 0, (*c).close() != 0) };
    if timed_out {
        // SAFETY: nginx's cycle, set before any handler runs.
        let log = unsafe { (*ngx_cycle).log };
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "the daemon was still running a request nginx had ended (\"{}\"), wsgi_read_timeout after: its room goes to the next request",
            String::from_utf8_lossy(&drained.request_line)
        );
    } else if !closing {
        let mut dropped = [0u8; 4096];
        loop {
            // SAFETY: the connection's own receive function, into the buffer above.
            let n = unsafe {
                match (*c).recv {
                    Some(recv) => recv(c, dropped.as_mut_ptr(), dropped.len()),
                    None => 0,
                }
            };
            if n == NGX_AGAIN as isize {
                // SAFETY: the connection's read event, handled by nginx's event module.
                if unsafe { ngx_handle_read_event(rev, 0) } == NGX_OK as ngx_int_t {
                    return;
                }
                break;
            }
            if n <= 0 {
                // The daemon closed it (0), or it failed.
                break;
            }
        }
    }
    // SAFETY: the connection taken by start_draining, with its pool (which drops its
    // Drained: not read from here on), closed once: nothing else reaches it.
    unsafe {
        ngx_destroy_pool((*c).pool);
        ngx_close_connection(c);
        let queue = &mut *queue;
        queue.answered();
        queue.publish_demand();
    }
}

/// A drained connection's write event: nothing more is written there.
extern "C" fn ignore_event(_ev: *mut ngx_event_t) {}

impl Ticket {
    /// The request is sent now: it counts among those in the daemon, and its wait is over.
    fn take_room(&mut self) {
        if self.timer.timer_set() != 0 {
            // SAFETY: the ticket's own timer, in nginx's timer tree until deleted.
            unsafe { ngx_del_timer(&mut self.timer) };
        }
        self.state = TicketState::Sent;
        self.note_waited();
        // SAFETY: the queue outlives every request (the configuration's pool).
        unsafe { (*self.queue).sent += 1 };
    }

    /// Gives back what the ticket holds: its room among the requests sent, or its place
    /// in the queue.
    fn release(&mut self) {
        if self.timer.timer_set() != 0 {
            // SAFETY: the ticket's own timer, in nginx's timer tree until deleted.
            unsafe { ngx_del_timer(&mut self.timer) };
        }
        // SAFETY: the queue outlives every request (the configuration's pool).
        let queue = unsafe { &mut *self.queue };
        match mem::replace(&mut self.state, TicketState::Idle) {
            TicketState::Sent => queue.answered(),
            TicketState::Waiting => {
                self.note_waited();
                // SAFETY: a waiting ticket is in its queue's list, whose tickets are alive.
                unsafe { queue.waiting.unlink(self) }
            }
            TicketState::Idle => return,
        }
        queue.publish_demand();
    }
}

impl Ticket {
    /// Its wait is over (sent, or given up): how long it was, for `$wsgi_queue_time`.
    fn note_waited(&mut self) {
        // SAFETY: nginx's clock, updated by its event loop on this thread.
        let now = unsafe { ngx_current_msec };
        self.waited = Some(now.saturating_sub(self.came_at));
    }
}

/// `$wsgi_queue_time`: how long the request waited in `wsgi_app`'s queue in nginx before
/// it was sent to the daemon (or before it gave up), in seconds with milliseconds as
/// `$upstream_connect_time` is: "0.000" for a request sent at once; not found ("-" in a
/// log) for one that went through no queue.
pub extern "C" fn queue_time_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    let mut outcome = NGX_ERROR as ngx_int_t;
    guarded("$wsgi_queue_time", || {
        // SAFETY: the request nginx evaluates the variable for; its ticket, if any, lives
        // in its pool; `v` is the variable's value nginx passes to fill.
        unsafe {
            let ticket = crate::upstream::ticket_of(r);
            let Some(waited) = ticket.as_ref().and_then(|ticket| ticket.waited) else {
                (*v).set_not_found(1);
                outcome = NGX_OK as ngx_int_t;
                return;
            };
            // "4294967.295" at most: seconds of a 32-bit count of ms, and the ms.
            let mut digits = [0u8; 24];
            let mut rest = &mut digits[..];
            let _ = std::io::Write::write_fmt(
                &mut rest,
                format_args!("{}.{:03}", waited / 1000, waited % 1000),
            );
            let unused = rest.len();
            let text = &digits[..digits.len() - unused];
            let data = ngx::ffi::ngx_pnalloc((*r).pool, text.len()) as *mut u8;
            if data.is_null() {
                return;
            }
            ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
            (*v).data = data;
            (*v).set_len(text.len() as u32);
            (*v).set_valid(1);
            (*v).set_no_cacheable(0);
            (*v).set_not_found(0);
            outcome = NGX_OK as ngx_int_t;
        }
    });
    outcome
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // A request freed while it waits (its client went away and nginx ended it), or
        // without its upstream's end.
        self.release();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The configuration is freed (a reload without a master process frees the old one
        // from a timer, before posted events run).
        if self.send_waiting.posted() != 0 {
            // SAFETY: the queue's event, posted, in nginx's posted queue.
            unsafe { ngx_delete_posted_event(&mut self.send_waiting) };
        }
        if self.recheck.timer_set() != 0 {
            // SAFETY: the queue's timer, in nginx's timer tree until deleted.
            unsafe { ngx_del_timer(&mut self.recheck) };
        }
    }
}

impl Queue {
    /// This worker's line among the nginx workers' [`Shares`], and the shares (for their
    /// totals), if it has a line: memory the worker keeps mapped for its life, not the
    /// queue's.
    fn my_share(&mut self) -> Option<(&'static Share, &'static Shares)> {
        if !in_worker_process() {
            // A single process (`master_process off`) has no one to share with, and unmaps
            // the old configuration's zone at a reload while its requests still run.
            return None;
        }
        // SAFETY: null, or the zone's lines, mapped in a worker process for its life (the
        // master unmaps an old zone in itself only); written only through atomics.
        let shares: &'static Shares = unsafe { self.shares.as_ref() }?;
        // SAFETY: this worker's number, set before it handles any event.
        let me = unsafe { ngx_worker };
        if self.workers.is_none() {
            // SAFETY: this worker's cycle, whose core module configuration nginx made.
            let processes = unsafe {
                let conf = *(*ngx_cycle).conf_ctx.add(ngx_core_module.index);
                (*conf.cast::<ngx_core_conf_t>()).worker_processes
            };
            self.workers = Some(
                usize::try_from(processes)
                    .unwrap_or(1)
                    .clamp(1, SHARED_WORKERS),
            );
            if let Some(mine) = shares.worker.get(me) {
                // A worker started in place of one that exited (crashed) takes back what
                // that one left counted.
                take_back(&shares.demand, mine.demand.swap(0, Ordering::Relaxed));
                take_back(&shares.sent, mine.sent.swap(0, Ordering::Relaxed));
            }
        }
        (me < self.workers.unwrap_or(1)).then(|| (&shares.worker[me], shares))
    }

    /// With other nginx workers and requests waiting, looks at the share again soon.
    fn recheck_later(&mut self) {
        if self.waiting.is_empty() || self.recheck.timer_set() != 0 || self.my_share().is_none() {
            return;
        }
        if self.workers == Some(1) {
            return;
        }
        self.recheck.data = ptr::from_mut(self).cast();
        // SAFETY: nginx's cycle, set before any request.
        self.recheck.log = unsafe { (*ngx_cycle).log };
        // A worker shutting down does not wait for it: only for the waiting requests.
        self.recheck.set_cancelable(1);
        // SAFETY: the queue's timer, alive with the configuration, not set.
        unsafe { ngx_add_timer(&mut self.recheck, RECHECK_MS) };
    }

    /// Tells the other nginx workers how many requests this one has, sent or waiting.
    fn publish_demand(&mut self) {
        let demand = self.sent + self.waiting.len;
        if let Some((mine, shares)) = self.my_share() {
            let before = mine.demand.swap(demand, Ordering::Relaxed);
            if demand >= before {
                shares.demand.fetch_add(demand - before, Ordering::Relaxed);
            } else {
                take_back(&shares.demand, before - demand);
            }
            self.published = demand;
        }
    }

    /// Whether one more request may be sent now, with `arriving` requests not counted yet;
    /// if so, its room is taken among the workers' (the caller sends it, [`Ticket::take_room`]).
    ///
    /// Alone, a worker sends what the daemon answers in [`WAIT_IN_DAEMON_MS`], at least the
    /// floor. With others, that room (at the rate they all measured) is shared out by how
    /// many requests each has, rounded up, so that each worker's requests wait about as
    /// long; and all together send no more than the room, but for the first request of
    /// each (so that a worker with none sent is never left behind the others' answers).
    /// The totals are read each time; the rates, at most once per ms.
    fn take_room_if_any(&mut self, arriving: u32) -> bool {
        let Some((my_line, shares)) = self.my_share() else {
            // Alone: what the daemon answers this worker in the time.
            return self.sent < self.room_at_rate(u64::from(self.rate_per_s));
        };
        let others = u64::from(
            shares
                .demand
                .load(Ordering::Relaxed)
                .saturating_sub(self.published),
        );
        // SAFETY: nginx's clock, updated by its event loop on this thread.
        let now = unsafe { ngx_current_msec };
        if now != self.room_at {
            self.room_at = now;
            self.room = self.room_now(now);
        }
        let mine = u64::from(self.sent + self.waiting.len + arriving);
        // At least one each; with nothing sent nor waiting (a recheck after the last
        // answer) there is room.
        let share = (u64::from(self.room) * mine)
            .div_ceil((others + mine).max(1))
            .max(1);
        if u64::from(self.sent) >= share {
            return false;
        }
        let (first, room) = (self.sent == 0, self.room);
        let taken = shares
            .sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |all| {
                (first || all < room).then_some(all + 1)
            });
        if taken.is_err() {
            return false;
        }
        // For a worker started in its place, should this one crash (init_process).
        my_line.sent.store(self.sent + 1, Ordering::Relaxed);
        true
    }

    /// The daemon's room for all nginx workers: what it answers them in
    /// [`WAIT_IN_DAEMON_MS`] at their last rates (this worker's own included), and at
    /// least the floor.
    fn room_now(&mut self, now: ngx_msec_t) -> u32 {
        let workers = self.workers.unwrap_or(1);
        // SAFETY: my_share found the lines there.
        let shares = unsafe { &*self.shares };
        let rate: u64 = shares.worker[..workers]
            .iter()
            // A rate measured more than two windows ago is of a worker with nothing to send.
            .filter(|share| {
                // Another process's clock may be ahead of this one's by a few ms: a rate
                // measured "later" is fresh.
                (now as u64).saturating_sub(share.rate_at.load(Ordering::Relaxed))
                    <= 2 * RATE_WINDOW_MS as u64
            })
            .map(|share| u64::from(share.rate.load(Ordering::Relaxed)))
            .sum();
        self.room_at_rate(rate)
    }

    /// Little's law: the daemon answering R requests per second, N sent at a time wait
    /// N / R s in it; so it is sent what it answers in [`WAIT_IN_DAEMON_MS`]. A daemon
    /// slower than that (long requests) gets the floor.
    fn room_at_rate(&self, answers_per_s: u64) -> u32 {
        (answers_per_s * WAIT_IN_DAEMON_MS / 1000).clamp(u64::from(self.floor), u64::from(u32::MAX))
            as u32
    }

    /// A request sent is over: the next waiting one may go (after the current event).
    fn answered(&mut self) {
        self.sent = self.sent.saturating_sub(1);
        // Its room among the workers', taken when it was sent (take_room_if_any).
        if let Some((mine, shares)) = self.my_share() {
            mine.sent.store(self.sent, Ordering::Relaxed);
            take_back(&shares.sent, 1);
        }
        self.answers += 1;
        // SAFETY: nginx's clock, updated by its event loop on this thread.
        let now = unsafe { ngx_current_msec };
        let elapsed = now.wrapping_sub(self.window_start);
        if elapsed >= RATE_WINDOW_MS {
            self.rate_per_s = (self.answers * 1000 / elapsed as u64).min(u32::MAX as u64) as u32;
            let rate = self.rate_per_s;
            if let Some((mine, _)) = self.my_share() {
                mine.rate.store(rate, Ordering::Relaxed);
                mine.rate_at.store(now as u64, Ordering::Relaxed);
            }
            self.answers = 0;
            self.window_start = now;
        }
        if !self.waiting.is_empty() && self.send_waiting.posted() == 0 {
            self.send_waiting.data = ptr::from_mut(self).cast();
            // SAFETY: nginx's cycle, set before any request.
            self.send_waiting.log = unsafe { (*ngx_cycle).log };
            // SAFETY: the queue's event, alive with the configuration, not posted.
            unsafe { ngx_post_event(&mut self.send_waiting, &raw mut ngx_posted_events) };
        }
    }
}

/// An nginx worker starts (the first ones, or one in place of one that exited): its line
/// in each daemon's shares begins at nothing, whatever a worker numbered as it left there,
/// before it serves any request.
pub extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guarded("init_process", || {
        // SAFETY: the worker's cycle, whose list of shared memory zones nginx made; the
        // zones of this module's tag hold the queue they were added for.
        unsafe {
            let mut part = &raw mut (*cycle).shared_memory.part;
            while let Some(list) = part.as_mut() {
                let zones =
                    core::slice::from_raw_parts_mut(list.elts.cast::<ngx_shm_zone_t>(), list.nelts);
                for zone in zones {
                    if zone.tag == ptr::addr_of_mut!(crate::ngx_http_wsgi_module).cast() {
                        if let Some(queue) = zone.data.cast::<Queue>().as_mut() {
                            queue.my_share();
                        }
                    }
                }
                part = list.next;
            }
        }
    });
    NGX_OK as ngx_int_t
}

/// Takes `count` off one of the workers' totals, never below 0: a worker that crashed
/// between writing its line and the total leaves them apart by one change (the total one
/// too high or, taken back from a line ahead of it, too low).
fn take_back(total: &AtomicU32, count: u32) {
    // The closure always gives a value: the update cannot fail.
    let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |all| {
        Some(all.saturating_sub(count))
    });
}

/// Sends the requests waiting, as far as there is room (the posted event).
extern "C" fn send_waiting(ev: *mut ngx_event_t) {
    guarded("send_waiting", || send_waiting_body(ev));
}

fn send_waiting_body(ev: *mut ngx_event_t) {
    // SAFETY: the queue's own event, whose data is the queue.
    let queue = unsafe { (*ev).data as *mut Queue };
    loop {
        // SAFETY: the queue, alive with the configuration, and its waiting tickets, alive
        // with their requests; borrowed only between the calls into nginx below, which
        // may reach it again.
        let next = unsafe {
            let queue = &mut *queue;
            if queue.waiting.is_empty() {
                return;
            }
            if !queue.take_room_if_any(0) {
                queue.recheck_later();
                return;
            }
            queue.waiting.pop_front()
        };
        // Never None: the list was not empty, and nothing ran since (else the room just
        // taken would be counted with no request sent).
        let Some(ticket) = next else {
            return;
        };
        // SAFETY: a waiting request's ticket, alive with the request (it leaves the
        // queue when it is dropped); its request and connection are alive too.
        let (r, c) = unsafe {
            let ticket = &mut *ticket;
            ticket.take_room();
            (ticket.request, (*ticket.request).connection)
        };
        // SAFETY: as the end of reading the body would start it (reading blocked, as it
        // leaves it), then what nginx runs after an event of the request's connection.
        unsafe {
            (*r).read_event_handler = Some(ngx_http_block_reading);
            ngx_http_upstream_init(r);
            ngx_http_run_posted_requests(c);
        }
    }
}

/// A request waited `wsgi_connect_timeout` for room: 504, as when a connect times out.
extern "C" fn waited_too_long(ev: *mut ngx_event_t) {
    guarded("waited_too_long", || waited_too_long_body(ev));
}

fn waited_too_long_body(ev: *mut ngx_event_t) {
    // SAFETY: a waiting ticket's timer, whose data is the ticket, alive with its request.
    let ticket = unsafe { &mut *((*ev).data as *mut Ticket) };
    let r = ticket.request;
    ticket.release();
    // SAFETY: the request, alive while its ticket is, and its connection.
    let (c, log) = unsafe { ((*r).connection, (*(*r).connection).log) };
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "upstream timed out waiting for room in the daemon: its workers were busy with other requests for wsgi_connect_timeout"
    );
    // SAFETY: a request parked in the content phase, ended as a failed connect ends it,
    // then what nginx runs after an event of the request's connection.
    unsafe {
        ngx_http_finalize_request(r, NGX_HTTP_GATEWAY_TIME_OUT as ngx_int_t);
        ngx_http_run_posted_requests(c);
    }
}

/// Runs a handler's body, logging a panic instead of letting it abort the nginx worker
/// and every connection it serves (as `upstream.rs` guards its callbacks); false after one.
fn guarded(handler: &str, body: impl FnOnce()) -> bool {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_ok();
    if !ok {
        // SAFETY: nginx's cycle, set before any handler runs.
        let log = unsafe { (*ngx_cycle).log };
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "internal error in ngx_http_wsgi_module's queue ({handler})"
        );
    }
    ok
}
