//! The request side of `wsgi_pass`: the content handler and the upstream callbacks, in
//! the order nginx calls them (create_request, process_status_line, process_header,
//! input_filter_init, reinit_request, abort_request, finalize_request).

use core::ffi::c_void;
use core::{mem, ptr};

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_get_free_buf, ngx_chain_t, ngx_create_temp_buf,
    ngx_event_pipe_t, ngx_hash_find, ngx_http_parse_header_line, ngx_http_parse_status_line,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_http_status_t,
    ngx_http_upstream_create, ngx_http_upstream_header_t, ngx_http_upstream_t, ngx_int_t,
    ngx_list_part_t, ngx_list_push, ngx_palloc, ngx_pool_t, ngx_str_t, ngx_table_elt_t, NGX_AGAIN,
    NGX_DONE, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_MODIFIED,
    NGX_HTTP_NO_CONTENT, NGX_HTTP_PARSE_HEADER_DONE, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_HTTP_SWITCHING_PROTOCOLS, NGX_HTTP_UPSTREAM_INVALID_HEADER, NGX_LOG_ERR, NGX_OK,
};
use ngx::ffi::{
    ngx_event_pipe_add_free_buf, ngx_http_complex_value_t, ngx_http_get_flushed_variable,
    ngx_http_parse_chunked, ngx_http_upstream_resolved_t, ngx_parse_url, ngx_uint_t, ngx_url_t,
};
use ngx::ngx_string;

use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, Method, NgxHttpUpstreamModule, Request,
};

use crate::{ngx_http_wsgi_module, WsgiLocConf, WsgiModule, WsgiParam};
use uwsgi_proto::{header_separator, header_var_char, same_header_var};

/// Logs an error on the request's connection log (nginx's error_log), as NGX_LOG_ERR.
fn log_error(request: &Request, message: &str) {
    ngx::ngx_log_error!(NGX_LOG_ERR, request.log(), "{message}");
}

/// Runs a callback's body on the request nginx passed, turning a panic into NGX_ERROR (a
/// 500 or 502 for the request) with a log line: a panic must not unwind into nginx, where
/// it would abort the worker and every connection it serves.
fn guarded(
    r: *mut ngx_http_request_t,
    callback: &str,
    body: impl FnOnce(&mut Request) -> ngx_int_t,
) -> ngx_int_t {
    if r.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: nginx passes each callback the live request it runs for (the body filters
    // get it through the context the content handler set); Request wraps it as it is.
    // nginx writes to the request through its own pointers too, during the calls made
    // from the body (as for any module's handler, and ngx's own handler macro): nothing
    // read through this reference is kept across such a call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut *request)));
    outcome.unwrap_or_else(|_| {
        log_error(
            request,
            &format!("internal error in ngx_http_wsgi_module's {callback}: the request fails"),
        );
        NGX_ERROR as ngx_int_t
    })
}

/// The request as nginx's functions take it.
fn raw(request: &mut Request) -> *mut ngx_http_request_t {
    request.into()
}

/// The request's upstream, which the content handler made before any callback runs.
fn upstream(request: &Request) -> *mut ngx_http_upstream_t {
    request
        .upstream()
        .expect("the request's upstream, made by the content handler")
}

/// The request an event pipe works for (its input_ctx, set by the content handler).
fn pipe_request(p: *mut ngx_event_pipe_t) -> *mut ngx_http_request_t {
    // SAFETY: nginx calls pipe filters with the pipe our content handler created, whose
    // input_ctx is the request.
    unsafe { (*p).input_ctx as *mut ngx_http_request_t }
}

/// Our location configuration of a request.
fn loc_conf(request: &Request) -> &'static mut WsgiLocConf {
    // Our handlers run only in locations with wsgi_pass, whose configuration is ours.
    WsgiModule::location_conf_mut(request).expect("ngx_http_wsgi_module's location configuration")
}

/// Per-request state, in the request pool: the status-line parser's, and whether the
/// server promised to keep the connection open (docs/protocol.md).
#[repr(C)]
pub struct RequestCtx {
    status: ngx_http_status_t,
    server_keeps_alive: bool,
    /// Its place in `wsgi_app`'s queue (`queue.rs`), or null.
    ticket: *mut crate::queue::Ticket,
    /// The chunked-body parser's state, for `Transfer-Encoding: chunked` responses.
    chunked: ngx::ffi::ngx_http_chunked_t,
}

/// nginx's chunked-body parser; trailers are not kept (nginx 1.27.2+ asks).
///
/// # Safety
/// As `ngx_http_parse_chunked`: a live request, a buffer and its parser state.
unsafe fn parse_chunked(
    r: *mut ngx_http_request_t,
    buf: *mut ngx_buf_t,
    ctx: *mut ngx::ffi::ngx_http_chunked_t,
) -> ngx_int_t {
    #[cfg(not(ngx_parse_chunked_keep_trailers))]
    // SAFETY: the caller's contract is ngx_http_parse_chunked's.
    return unsafe { ngx_http_parse_chunked(r, buf, ctx) };
    #[cfg(ngx_parse_chunked_keep_trailers)]
    // SAFETY: as above; 0: trailers are skipped, as before 1.27.2.
    return unsafe { ngx_http_parse_chunked(r, buf, ctx, 0) };
}

/// The request's module context, set by the content handler (None before).
///
/// # Safety
/// No other reference to the context is alive (callbacks take it one at a time).
unsafe fn request_ctx<'a>(request: &Request) -> Option<&'a mut RequestCtx> {
    // SAFETY: the ctx array has a slot for every HTTP module; ours is null or the
    // RequestCtx the content handler put in the request pool, and per the contract this
    // is the only reference to it.
    unsafe {
        (*request.as_ref().ctx.add(WsgiModule::module().ctx_index) as *mut RequestCtx).as_mut()
    }
}

/// The content handler of a `wsgi_pass` location.
pub extern "C" fn ngx_http_wsgi_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "ngx_http_wsgi_handler", ngx_http_wsgi_handler_body)
}

fn ngx_http_wsgi_handler_body(request: &mut Request) -> ngx_int_t {
    const FAILED: ngx_int_t = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    // SAFETY: a content handler's request, as ngx_http_uwsgi_handler does.
    if unsafe { ngx_http_upstream_create(raw(request)) } != NGX_OK as ngx_int_t {
        return FAILED;
    }
    let ctx = request.pool().calloc(mem::size_of::<RequestCtx>());
    if ctx.is_null() {
        return FAILED;
    }
    request.set_module_ctx(ctx, WsgiModule::module());

    let conf = loc_conf(request);
    // SAFETY: a `wsgi_pass` with variables, compiled at configuration time.
    if let Some(pass) = unsafe { conf.pass_value.as_ref() } {
        if !resolve_pass_value(request, pass) {
            return FAILED;
        }
    }
    let pipe = request.pool().calloc(mem::size_of::<ngx_event_pipe_t>()) as *mut ngx_event_pipe_t;
    // SAFETY: zeroed just now in the request pool, as ngx_http_uwsgi_handler's.
    let Some(pipe) = (unsafe { pipe.as_mut() }) else {
        return FAILED;
    };
    pipe.input_filter = Some(buffered_copy_filter);
    pipe.input_ctx = raw(request).cast();
    // SAFETY: made by ngx_http_upstream_create above, in the request pool.
    let u = unsafe { &mut *upstream(request) };
    u.schema = ngx_string!("uwsgi://");
    u.output.tag = &raw const ngx_http_wsgi_module as *mut c_void;
    u.conf = &mut conf.upstream;
    u.create_request = Some(create_request);
    u.reinit_request = Some(reinit_request);
    u.process_header = Some(process_status_line);
    u.abort_request = Some(abort_request);
    u.finalize_request = Some(finalize_request);
    u.set_buffering(conf.upstream.buffering as u32);
    u.pipe = pipe;
    u.input_filter_init = Some(input_filter_init);
    u.input_filter = Some(non_buffered_copy_filter);
    u.input_filter_ctx = raw(request).cast();

    let r = request.as_mut();
    r.state = 0;
    if conf.upstream.request_buffering == 0
        && conf.upstream.pass_request_body != 0
        && r.headers_in.chunked() == 0
    {
        r.set_request_body_no_buffering(1);
    }
    // SAFETY: the request, set up as ngx_http_upstream_init expects.
    let rc = unsafe {
        ngx_http_read_client_request_body(raw(request), Some(crate::queue::start_upstream))
    };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// Evaluates `wsgi_pass` with variables into the request's upstream address: an address
/// (`unix:/path`, `host:port`) or an upstream block's name, which nginx then looks up.
/// The request's upstream is made (ngx_http_upstream_create).
fn resolve_pass_value(request: &Request, value: &ngx_http_complex_value_t) -> bool {
    let Some(evaluated) = request.get_complex_value(value) else {
        return false;
    };
    let mut address = evaluated.as_bytes();
    if let Some(rest) = address.strip_prefix(b"uwsgi://") {
        address = rest;
    }
    // SAFETY: all zeroes is an empty ngx_url_t, as nginx's modules start one.
    let mut url: ngx_url_t = unsafe { mem::zeroed() };
    url.url = ngx_str_t {
        len: address.len(),
        data: address.as_ptr() as *mut u8,
    };
    url.set_no_resolve(1);
    // SAFETY: the url points into the evaluated value, in the request pool, where
    // ngx_parse_url allocates too (as ngx_http_uwsgi_eval).
    if unsafe { ngx_parse_url(request.pool().as_ptr(), &mut url) } != NGX_OK as ngx_int_t {
        let reason = match url.err.is_null() {
            true => "invalid address".into(),
            // SAFETY: ngx_parse_url's error is a static C string.
            false => unsafe { core::ffi::CStr::from_ptr(url.err) }.to_string_lossy(),
        };
        let address = String::from_utf8_lossy(address);
        log_error(request, &format!("{reason} in wsgi_pass \"{address}\""));
        return false;
    }
    let resolved = request
        .pool()
        .calloc(mem::size_of::<ngx_http_upstream_resolved_t>())
        as *mut ngx_http_upstream_resolved_t;
    // SAFETY: zeroed just now in the request pool.
    let Some(resolved) = (unsafe { resolved.as_mut() }) else {
        return false;
    };
    // SAFETY: ngx_parse_url's addresses, if any, are in the request pool.
    if let Some(addr) = unsafe { url.addrs.as_ref() } {
        resolved.sockaddr = addr.sockaddr;
        resolved.socklen = addr.socklen;
        resolved.name = addr.name;
        resolved.naddrs = 1;
    }
    resolved.host = url.host;
    resolved.port = url.port;
    resolved.no_port = url.no_port() as ngx::ffi::ngx_uint_t;
    // SAFETY: the request's upstream, made before this is called.
    unsafe { (*upstream(request)).resolved = resolved };
    true
}

/// The request's headers, in the order they came.
fn headers(request: &Request) -> impl Iterator<Item = &ngx_table_elt_t> + Clone {
    let first: *const ngx_list_part_t = &request.as_ref().headers_in.headers.part;
    std::iter::successors(Some(first), |&part| {
        // SAFETY: each part of the request's header list is valid, its `next` null or valid.
        let next = unsafe { (*part).next };
        (!next.is_null()).then_some(next as *const ngx_list_part_t)
    })
    .flat_map(|part| {
        // SAFETY: a part holds `nelts` headers at `elts`.
        unsafe {
            core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts)
        }
    })
}

/// One header var per header name, in the order the names first came: repeated headers
/// joined with ", " (Cookie with "; "), as nginx 1.23+ does. Headers a param named HTTP_*
/// replaces are left out (`replacing`: the params, if any of them is). Each item: the
/// first header of its name, and the others.
fn header_vars<'a>(
    request: &'a Request,
    replacing: &'a [WsgiParam],
) -> impl Iterator<
    Item = (
        &'a ngx_table_elt_t,
        impl Iterator<Item = &'a ngx_table_elt_t> + Clone,
    ),
> {
    headers(request).enumerate().filter_map(move |(i, header)| {
        let name = header.key.as_bytes();
        let replaced = replacing.iter().any(|p| {
            p.key
                .as_bytes()
                .strip_prefix(b"HTTP_")
                .is_some_and(|k| same_header_var(k, name))
        });
        let mut earlier = headers(request).take(i);
        if replaced || earlier.any(|e| same_header_var(e.key.as_bytes(), name)) {
            return None;
        }
        let repeats = headers(request)
            .skip(i + 1)
            .filter(move |e| same_header_var(e.key.as_bytes(), name));
        Some((header, repeats))
    })
}

/// A param's value for this request: a lone variable read by its index, anything else
/// through nginx's script engine (a constant costs nothing there). `param` is one of the
/// request's location.
fn param_value(request: &mut Request, param: &WsgiParam) -> Option<ngx_str_t> {
    if param.variable >= 0 {
        // SAFETY: the index was made at configuration time, for this location's variables;
        // nginx returns null or a value kept with the request.
        let value = unsafe {
            ngx_http_get_flushed_variable(raw(request), param.variable as ngx_uint_t).as_ref()
        }?;
        if value.not_found() != 0 {
            return Some(ngx_str_t::default());
        }
        return Some(ngx_str_t {
            len: value.len() as usize,
            data: value.data,
        });
    }
    let value = request.get_complex_value(&param.value)?.as_bytes();
    Some(ngx_str_t {
        len: value.len(),
        data: value.as_ptr() as *mut u8,
    })
}

/// Writes a uwsgi packet into a buffer measured for it beforehand.
struct PacketWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl PacketWriter<'_> {
    fn put(&mut self, data: &[u8]) {
        self.out[self.at..self.at + data.len()].copy_from_slice(data);
        self.at += data.len();
    }

    /// A field's length; fields were checked to fit in 16 bits when measured.
    fn len(&mut self, len: usize) {
        self.put(&(len as u16).to_le_bytes());
    }

    fn var(&mut self, key: &[u8], value: &[u8]) {
        self.len(key.len());
        self.put(key);
        self.len(value.len());
        self.put(value);
    }

    /// "HTTP_" and the header's name, as a var's key.
    fn header_key(&mut self, name: &[u8]) {
        self.len(5 + name.len());
        self.put(b"HTTP_");
        for (slot, &c) in self.out[self.at..self.at + name.len()].iter_mut().zip(name) {
            *slot = header_var_char(c);
        }
        self.at += name.len();
    }
}

/// The request's uwsgi packet (header and vars; the body follows in its own buffers),
/// in one buffer from the request pool: the params (evaluated once, into the pool), the
/// request headers as HTTP_* vars, and the keep-alive var. Measured first, then written,
/// with no allocation but the pool's.
fn encode_packet(
    request: &mut Request,
    conf: &WsgiLocConf,
) -> Result<*mut ngx_buf_t, Option<uwsgi_proto::EncodeError>> {
    use uwsgi_proto::{EncodeError, KEEPALIVE_CHUNKED, KEEPALIVE_VAR, MAX_VARS_LEN};
    let field = |len: usize, key: &[u8]| match u16::try_from(len) {
        Ok(_) => Ok(len),
        Err(_) => Err(Some(EncodeError::FieldTooLong(
            String::from_utf8_lossy(key).into_owned(),
        ))),
    };
    // SAFETY: the location's params, compiled at configuration time (WsgiParam each).
    let params: &[WsgiParam] = match unsafe { conf.params.as_ref() } {
        // SAFETY: as above.
        Some(a) => unsafe { a.as_slice::<WsgiParam>() },
        None => &[],
    };
    let values: &mut [ngx_str_t] = match params.len() {
        0 => &mut [],
        n => {
            let values = request.pool().calloc(n * mem::size_of::<ngx_str_t>()) as *mut ngx_str_t;
            if values.is_null() {
                return Err(None);
            }
            // SAFETY: room for n zeroed ngx_str_t, in the request pool.
            unsafe { core::slice::from_raw_parts_mut(values, n) }
        }
    };
    let mut size = 4 + KEEPALIVE_VAR.len() + KEEPALIVE_CHUNKED.len();
    for (param, value) in params.iter().zip(values.iter_mut()) {
        *value = param_value(request, param).ok_or(None)?;
        if !(param.skip_empty && value.len == 0) {
            size += 4 + param.key.len + field(value.len, param.key.as_bytes())?;
        }
    }
    let pass_headers = conf.upstream.pass_request_headers != 0;
    let replacing = match conf.replaces_headers {
        true => params,
        false => &[],
    };
    if pass_headers {
        for (header, repeats) in header_vars(request, replacing) {
            let name = header.key.as_bytes();
            let joined: usize = repeats.map(|e| 2 + e.value.len).sum();
            size += 4 + 5 + name.len() + field(header.value.len + joined, name)?;
        }
    }
    if size > MAX_VARS_LEN {
        return Err(Some(EncodeError::PacketTooLarge(size)));
    }
    // SAFETY: a buffer of the request pool.
    let b = unsafe { ngx_create_temp_buf(request.pool().as_ptr(), 4 + size) };
    if b.is_null() {
        return Err(None);
    }
    let mut w = PacketWriter {
        // SAFETY: the new buffer's memory, 4 + size bytes from `last`.
        out: unsafe { core::slice::from_raw_parts_mut((*b).last, 4 + size) },
        at: 0,
    };
    w.put(&[conf.modifier1 as u8]);
    w.len(size);
    w.put(&[conf.modifier2 as u8]);
    for (param, value) in params.iter().zip(values.iter()) {
        if !(param.skip_empty && value.len == 0) {
            w.var(param.key.as_bytes(), value.as_bytes());
        }
    }
    if pass_headers {
        for (header, repeats) in header_vars(request, replacing) {
            let name = header.key.as_bytes();
            let joined: usize = repeats.clone().map(|e| 2 + e.value.len).sum();
            w.header_key(name);
            w.len(header.value.len + joined);
            w.put(header.value.as_bytes());
            for repeat in repeats {
                w.put(header_separator(name));
                w.put(repeat.value.as_bytes());
            }
        }
    }
    // Ask to keep the connection, for delimited and chunked responses
    // (docs/protocol.md); a stock server ignores the var and closes, and nginx then
    // does too.
    w.var(KEEPALIVE_VAR, KEEPALIVE_CHUNKED);
    debug_assert_eq!(w.at, 4 + size);
    // SAFETY: as written above, within the buffer.
    unsafe { (*b).last = (*b).last.add(4 + size) };
    Ok(b)
}

extern "C" fn create_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "create_request", create_request_body)
}

fn create_request_body(request: &mut Request) -> ngx_int_t {
    let conf = loc_conf(request);
    let b = match encode_packet(request, conf) {
        Ok(b) => b,
        Err(err) => {
            if let Some(err) = err {
                log_error(request, &format!("wsgi request not sent: {err}"));
            }
            return NGX_ERROR as ngx_int_t;
        }
    };
    let pool = request.pool().as_ptr();
    let no_buffering = request.as_ref().request_body_no_buffering() != 0;
    // SAFETY: a chain link from the request pool, or null.
    let Some(head) = (unsafe { ngx_alloc_chain_link(pool).as_mut() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    head.buf = b;
    head.next = ptr::null_mut();
    let first: *mut ngx_chain_t = head;
    // SAFETY: the packet's buffer, made above in the request pool.
    let mut last_buf = unsafe { &mut *b };
    let mut last = head;
    // SAFETY: the request's upstream, made by the content handler.
    let u = unsafe { &mut *upstream(request) };
    if !no_buffering && conf.upstream.pass_request_body != 0 {
        // The body nginx read, link by link, each buffer copied (the upstream moves its
        // positions as it sends), as ngx_http_uwsgi_create_request does.
        let mut body = u.request_bufs;
        // SAFETY: nginx's chain of the request body: its links, null-terminated.
        while let Some(link) = unsafe { body.as_ref() } {
            // SAFETY: a buffer and a link from the request pool, or nulls.
            let (copy, next) = unsafe {
                (
                    (ngx_palloc(pool, mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t).as_mut(),
                    ngx_alloc_chain_link(pool).as_mut(),
                )
            };
            let (Some(copy), Some(next)) = (copy, next) else {
                return NGX_ERROR as ngx_int_t;
            };
            // SAFETY: every link of the body chain has a buffer.
            *copy = unsafe { *link.buf };
            next.buf = copy;
            next.next = ptr::null_mut();
            last.next = next;
            last = next;
            last_buf = copy;
            body = link.next;
        }
    }
    u.request_bufs = first;
    last_buf.set_flush(1);
    NGX_OK as ngx_int_t
}

extern "C" fn reinit_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "reinit_request", reinit_request_body)
}

fn reinit_request_body(request: &mut Request) -> ngx_int_t {
    // SAFETY: nginx retries on another server between callbacks: nothing else holds the
    // context.
    if let Some(ctx) = unsafe { request_ctx(request) } {
        ctx.status.code = 0;
        ctx.status.count = 0;
        ctx.status.start = ptr::null_mut();
        ctx.status.end = ptr::null_mut();
        ctx.server_keeps_alive = false;
        // SAFETY: all zeroes is the chunked parser's initial state, as the content
        // handler's zeroed context starts it.
        ctx.chunked = unsafe { mem::zeroed() };
        // SAFETY: the request's upstream, made by the content handler.
        unsafe { (*upstream(request)).process_header = Some(process_status_line) };
        request.as_mut().state = 0;
    }
    NGX_OK as ngx_int_t
}

extern "C" fn process_status_line(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "process_status_line", process_status_line_body)
}

fn process_status_line_body(request: &mut Request) -> ngx_int_t {
    // SAFETY: a callback at a time holds the context.
    let Some(ctx) = (unsafe { request_ctx(request) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    let status = &mut ctx.status;
    // SAFETY: the request's upstream, made by the content handler.
    let u = unsafe { &mut *upstream(request) };
    // SAFETY: the upstream's buffer holds the start of the response.
    let rc = unsafe { ngx_http_parse_status_line(raw(request), &mut u.buffer, status) };
    if rc == NGX_AGAIN as ngx_int_t {
        return rc;
    }
    if rc == NGX_ERROR as ngx_int_t {
        // No status line: a CGI-style response with a Status header, or none.
        u.process_header = Some(process_header);
        request.as_mut().state = 0;
        return process_header_body(request);
    }
    // SAFETY: the upstream's state, null or kept with the request.
    if let Some(state) = unsafe { u.state.as_mut() } {
        if state.status == 0 {
            state.status = status.code;
        }
    }
    u.headers_in.status_n = status.code;
    // SAFETY: the parser's start and end of the status line, within the buffer.
    let line = unsafe {
        core::slice::from_raw_parts(status.start, status.end.offset_from(status.start) as usize)
    };
    // SAFETY: the request's pool.
    let Some(copy) = (unsafe { ngx_str_t::from_bytes(request.pool().as_ptr(), line) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    u.headers_in.status_line = copy;
    u.process_header = Some(process_header);
    process_header_body(request)
}

extern "C" fn process_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "process_header", process_header_body)
}

fn process_header_body(request: &mut Request) -> ngx_int_t {
    let umcf = NgxHttpUpstreamModule::main_conf_mut(request)
        .expect("the upstream module's main configuration");
    loop {
        // Taken afresh each time: nginx's header handlers below write to the upstream.
        // SAFETY: the request's upstream, made by the content handler.
        let u = unsafe { &mut *upstream(request) };
        // SAFETY: the upstream's buffer holds the response read so far.
        let rc = unsafe { ngx_http_parse_header_line(raw(request), &mut u.buffer, 1) };
        if rc == NGX_OK as ngx_int_t {
            // SAFETY: a new element of the upstream's header list, in the request pool.
            let Some(h) = (unsafe {
                (ngx_list_push(&mut u.headers_in.headers) as *mut ngx_table_elt_t).as_mut()
            }) else {
                return NGX_ERROR as ngx_int_t;
            };
            let r = request.as_ref();
            // SAFETY: the parser's marks, within the upstream's buffer.
            let (name, value) = unsafe {
                (
                    core::slice::from_raw_parts(
                        r.header_name_start,
                        r.header_name_end.offset_from(r.header_name_start) as usize,
                    ),
                    core::slice::from_raw_parts(
                        r.header_start,
                        r.header_end.offset_from(r.header_start) as usize,
                    ),
                )
            };
            h.hash = r.header_hash;
            // The name and the value, each followed by a NUL, then the lowercased name,
            // in one allocation, as the proxy module stores them.
            let storage = request
                .pool()
                .alloc_unaligned(2 * name.len() + value.len() + 2)
                as *mut u8;
            if storage.is_null() {
                h.hash = 0;
                return NGX_ERROR as ngx_int_t;
            }
            // SAFETY: room for the name, the value, two NULs and the lowercased name.
            let storage = unsafe {
                core::slice::from_raw_parts_mut(storage, 2 * name.len() + value.len() + 2)
            };
            let (key, rest) = storage.split_at_mut(name.len() + 1);
            let (value_copy, lowcase) = rest.split_at_mut(value.len() + 1);
            key[..name.len()].copy_from_slice(name);
            key[name.len()] = 0;
            value_copy[..value.len()].copy_from_slice(value);
            value_copy[value.len()] = 0;
            if name.len() == r.lowcase_index {
                lowcase.copy_from_slice(&r.lowcase_header[..name.len()]);
            } else {
                for (low, c) in lowcase.iter_mut().zip(name) {
                    *low = c.to_ascii_lowercase();
                }
            }
            h.key = ngx_str_t {
                len: name.len(),
                data: key.as_mut_ptr(),
            };
            h.value = ngx_str_t {
                len: value.len(),
                data: value_copy.as_mut_ptr(),
            };
            h.lowcase_key = lowcase.as_mut_ptr();
            // The server's promise to keep the connection (docs/protocol.md).
            if lowcase == b"connection" && value.eq_ignore_ascii_case(b"keep-alive") {
                // SAFETY: a callback at a time holds the context.
                if let Some(ctx) = unsafe { request_ctx(request) } {
                    ctx.server_keeps_alive = true;
                }
            }
            // SAFETY: nginx's hash of the upstream headers it handles, built at
            // configuration; the entry found, or null.
            let known = unsafe {
                (ngx_hash_find(&mut umcf.headers_in_hash, h.hash, h.lowcase_key, h.key.len)
                    as *mut ngx_http_upstream_header_t)
                    .as_ref()
            };
            let rc = match known.and_then(|hh| hh.handler.map(|handler| (handler, hh.offset))) {
                // SAFETY: the header's handler, called as ngx_http_proxy_process_header does.
                Some((handler, offset)) => unsafe { handler(raw(request), h, offset) },
                None => NGX_OK as ngx_int_t,
            };
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            continue;
        }
        if rc == NGX_HTTP_PARSE_HEADER_DONE as ngx_int_t {
            if u.headers_in.status_n == 0 {
                // SAFETY: the Status header, if the server sent one, in the header list.
                if let Some(status) = unsafe { u.headers_in.status.as_ref() } {
                    let line = status.value.as_bytes();
                    let code = line
                        .get(..3)
                        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
                    let Some(code) = code else {
                        let line = String::from_utf8_lossy(line);
                        log_error(request, &format!("upstream sent invalid status \"{line}\""));
                        return NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
                    };
                    u.headers_in.status_n = code;
                    if line.len() > 3 {
                        u.headers_in.status_line = status.value;
                    }
                } else if !u.headers_in.location.is_null() {
                    u.headers_in.status_n = 302;
                    u.headers_in.status_line = ngx_string!("302 Moved Temporarily");
                } else {
                    u.headers_in.status_n = 200;
                    u.headers_in.status_line = ngx_string!("200 OK");
                }
                // SAFETY: the upstream's state, null or kept with the request.
                if let Some(state) = unsafe { u.state.as_mut() } {
                    if state.status == 0 {
                        state.status = u.headers_in.status_n;
                    }
                }
            }
            if u.headers_in.status_n == NGX_HTTP_SWITCHING_PROTOCOLS as usize
                && !request.as_ref().headers_in.upgrade.is_null()
            {
                u.set_upgrade(1);
            }
            // A response without a body is complete now, and nginx may finalize a
            // HEAD request before any body filter runs: mark the connection
            // reusable here, as the proxy module does.
            let status = u.headers_in.status_n;
            if status == NGX_HTTP_NO_CONTENT as usize
                || status == NGX_HTTP_NOT_MODIFIED as usize
                || request.method() == Method::HEAD
                || u.headers_in.content_length_n == 0
            {
                u.set_keepalive(reusable(server_keeps_alive(request), u) as u32);
            }
            return NGX_OK as ngx_int_t;
        }
        if rc == NGX_AGAIN as ngx_int_t {
            return rc;
        }
        log_error(request, "upstream sent an invalid header line");
        return NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
    }
}

/// Whether the server promised to keep the connection (docs/protocol.md). Not called
/// while the caller holds the context: it has the answer.
fn server_keeps_alive(request: &Request) -> bool {
    // SAFETY: per the above, no other reference to the context is alive.
    unsafe { request_ctx(request) }.is_some_and(|ctx| ctx.server_keeps_alive)
}

/// Whether the connection can go back to nginx's keepalive cache once this response is
/// read: the server promised it, and did not also say "close".
fn reusable(server_keeps_alive: bool, u: &ngx_http_upstream_t) -> bool {
    server_keeps_alive && u.headers_in.connection_close() == 0
}

extern "C" fn input_filter_init(data: *mut c_void) -> ngx_int_t {
    guarded(data.cast(), "input_filter_init", input_filter_init_body)
}

fn input_filter_init_body(request: &mut Request) -> ngx_int_t {
    let promised = server_keeps_alive(request);
    let head = request.method() == Method::HEAD;
    // SAFETY: the request's upstream, made by the content handler, with its pipe.
    let u = unsafe { &mut *upstream(request) };
    let keep = reusable(promised, u);
    // SAFETY: as above.
    let pipe = unsafe { &mut *u.pipe };
    let status = u.headers_in.status_n;
    let no_body =
        status == NGX_HTTP_NO_CONTENT as usize || status == NGX_HTTP_NOT_MODIFIED as usize;
    // A stock server may send a body after a HEAD response and close: read to the end.
    let length = if no_body || (head && keep) {
        0
    } else if head {
        -1
    } else {
        u.headers_in.content_length_n
    };
    if u.headers_in.chunked() != 0 && length != 0 {
        // Decoded here, as the proxy module does: at least "0" CRLF CRLF is to come.
        pipe.input_filter = Some(buffered_chunked_filter);
        pipe.length = 3;
        u.input_filter = Some(non_buffered_chunked_filter);
        u.length = 1;
        return NGX_OK as ngx_int_t;
    }
    pipe.length = length;
    u.length = length;
    if length == 0 {
        // No body: the filters will not be called to see it end.
        u.set_keepalive(keep as u32);
    }
    NGX_OK as ngx_int_t
}

/// The bytes from `from` to `to`, two pointers into one buffer.
fn span(from: *const u8, to: *const u8) -> i64 {
    (to as usize).wrapping_sub(from as usize) as i64
}

/// An empty buffer, as `ngx_calloc_buf` makes one.
fn blank_buf() -> ngx_buf_t {
    // SAFETY: all zeroes is a valid ngx_buf_t: null pointers, no flags set.
    unsafe { mem::zeroed() }
}

/// A chain link and its buffer, from the `free` list (or else the pool), as nginx's own
/// body filters take them (`ngx_chain_get_free_buf`). None: out of memory.
fn free_link<'a>(
    pool: *mut ngx_pool_t,
    free: &mut *mut ngx_chain_t,
) -> Option<(&'a mut ngx_chain_t, &'a mut ngx_buf_t)> {
    // SAFETY: `free` is a pipe's or an upstream's list of spare links, which nginx takes
    // from; what it returns (null, or a link from the list or from the request's pool)
    // lives as long as the request and is referenced by nothing else yet.
    let cl = unsafe { ngx_chain_get_free_buf(pool, free).as_mut() }?;
    // SAFETY: every link ngx_chain_get_free_buf returns has a buffer of its own.
    let b = unsafe { &mut *cl.buf };
    Some((cl, b))
}

/// Where a link is appended to a chain: the last link's `next`, or the head if empty.
fn chain_end(head: &mut *mut ngx_chain_t) -> &mut *mut ngx_chain_t {
    let mut end = head;
    // SAFETY: an upstream's output chain: nginx's links, null-terminated through `next`.
    while let Some(cl) = unsafe { end.as_mut() } {
        end = &mut cl.next;
    }
    end
}

/// Queues a filtered buffer's chain link on the pipe's input, as nginx's filters do.
fn append_to_pipe_input(p: &mut ngx_event_pipe_t, cl: &mut ngx_chain_t) {
    if p.in_.is_null() {
        p.in_ = cl;
    } else {
        // SAFETY: once the input has a link, last_in points to the last one's `next`.
        unsafe { *p.last_in = cl };
    }
    p.last_in = &mut cl.next;
}

/// Runs a buffered-mode body filter on a buffer nginx's event pipe read. An empty buffer,
/// or one after the upstream is done, is nothing to filter; bytes that come when the body
/// is complete (`p.length` 0) are logged with `past_end` and dropped, and the connection
/// is not reused.
fn pipe_filter(
    p: *mut ngx_event_pipe_t,
    buf: *mut ngx_buf_t,
    (callback, past_end): (&str, &str),
    filter: fn(&mut Request, &mut ngx_event_pipe_t, &mut ngx_buf_t) -> ngx_int_t,
) -> ngx_int_t {
    guarded(pipe_request(p), callback, |request| {
        // SAFETY: nginx's event pipe calls its filter with itself and a buffer it read,
        // neither referenced elsewhere during the call.
        let (p, buf) = unsafe { (&mut *p, &mut *buf) };
        if buf.pos == buf.last || p.upstream_done() != 0 {
            return NGX_OK as ngx_int_t;
        }
        if p.length == 0 {
            log_error(request, past_end);
            // SAFETY: the request's upstream, made by the content handler.
            unsafe { (*upstream(request)).set_keepalive(0) };
            p.set_upstream_done(1);
            return NGX_OK as ngx_int_t;
        }
        filter(request, p, buf)
    })
}

/// The buffered-mode body filter: passes the bytes on, and once a Content-Length body is
/// complete hands the connection back for reuse (the proxy module's copy filter).
extern "C" fn buffered_copy_filter(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    let names = ("buffered_copy_filter", PAST_CONTENT_LENGTH);
    pipe_filter(p, buf, names, buffered_copy_filter_body)
}

const PAST_CONTENT_LENGTH: &str = "upstream sent more data than its Content-Length";
const PAST_LAST_CHUNK: &str = "upstream sent data after the final chunk";

fn buffered_copy_filter_body(
    request: &mut Request,
    p: &mut ngx_event_pipe_t,
    buf: &mut ngx_buf_t,
) -> ngx_int_t {
    // As ngx_event_pipe_copy_input_filter: a buffer of the pipe's that shadows `buf`.
    let Some((cl, b)) = free_link(p.pool, &mut p.free) else {
        return NGX_ERROR as ngx_int_t;
    };
    *b = *buf;
    b.shadow = buf;
    b.tag = p.tag;
    b.set_last_shadow(1);
    b.set_recycled(1);
    buf.shadow = b;
    append_to_pipe_input(p, cl);
    if p.length == -1 {
        return NGX_OK as ngx_int_t;
    }
    let size = span(b.pos, b.last);
    if size > p.length {
        log_error(request, PAST_CONTENT_LENGTH);
        b.last = b.pos.wrapping_add(p.length as usize);
        p.set_upstream_done(1);
        return NGX_OK as ngx_int_t;
    }
    p.length -= size;
    if p.length == 0 {
        let promised = server_keeps_alive(request);
        // SAFETY: as above.
        let u = unsafe { &mut *upstream(request) };
        u.set_keepalive(reusable(promised, u) as u32);
    }
    NGX_OK as ngx_int_t
}

/// The unbuffered-mode body filter (`wsgi_buffering off`, upgraded connections): the same
/// bookkeeping as [`buffered_copy_filter`] on the upstream's own buffer, into which nginx
/// has just read `bytes` more.
extern "C" fn non_buffered_copy_filter(data: *mut c_void, bytes: isize) -> ngx_int_t {
    let names = ("non_buffered_copy_filter", PAST_CONTENT_LENGTH);
    upstream_filter(data, bytes, names, non_buffered_copy_filter_body)
}

/// Runs an unbuffered-mode body filter on the `bytes` nginx just read into the upstream's
/// buffer. Bytes that come when the body is complete (`u.length` 0) are logged with
/// `past_end` and dropped, and the connection is not reused.
fn upstream_filter(
    data: *mut c_void,
    bytes: isize,
    (callback, past_end): (&str, &str),
    filter: fn(&mut Request, &mut ngx_http_upstream_t, isize) -> ngx_int_t,
) -> ngx_int_t {
    guarded(data.cast(), callback, |request| {
        // SAFETY: the request's upstream, made by the content handler.
        let u = unsafe { &mut *upstream(request) };
        if u.length == 0 {
            log_error(request, past_end);
            u.set_keepalive(0);
            return NGX_OK as ngx_int_t;
        }
        filter(request, u, bytes)
    })
}

fn non_buffered_copy_filter_body(
    request: &mut Request,
    u: &mut ngx_http_upstream_t,
    bytes: isize,
) -> ngx_int_t {
    let pool = request.pool().as_ptr();
    // As ngx_http_upstream_non_buffered_filter: a buffer on the bytes just read.
    let Some((cl, out)) = free_link(pool, &mut u.free_bufs) else {
        return NGX_ERROR as ngx_int_t;
    };
    *chain_end(&mut u.out_bufs) = cl;
    out.set_flush(1);
    out.set_memory(1);
    out.pos = u.buffer.last;
    u.buffer.last = u.buffer.last.wrapping_offset(bytes);
    out.last = u.buffer.last;
    out.tag = u.output.tag;
    if u.length == -1 {
        return NGX_OK as ngx_int_t;
    }
    if bytes as i64 > u.length {
        log_error(request, PAST_CONTENT_LENGTH);
        out.last = out.pos.wrapping_add(u.length as usize);
        u.length = 0;
        return NGX_OK as ngx_int_t;
    }
    u.length -= bytes as i64;
    if u.length == 0 {
        let promised = server_keeps_alive(request);
        u.set_keepalive(reusable(promised, u) as u32);
    }
    NGX_OK as ngx_int_t
}

/// The buffered-mode filter for a chunked body: passes the chunks' data on, and once the
/// last chunk is read hands the connection back for reuse (the proxy module's chunked
/// filter).
extern "C" fn buffered_chunked_filter(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    let names = ("buffered_chunked_filter", PAST_LAST_CHUNK);
    pipe_filter(p, buf, names, buffered_chunked_filter_body)
}

fn buffered_chunked_filter_body(
    request: &mut Request,
    p: &mut ngx_event_pipe_t,
    buf: &mut ngx_buf_t,
) -> ngx_int_t {
    // SAFETY: no other reference to the context is alive during this call.
    let Some(ctx) = (unsafe { request_ctx(request) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // Each chunk's data gets a buffer of the pipe's, and they shadow one another: `buf`
    // the first, each the next, the last `buf` again (as the proxy module's filter).
    let mut last_data: Option<&mut ngx_buf_t> = None;
    loop {
        // SAFETY: the live request, the pipe's buffer and our parser's state.
        let rc = unsafe { parse_chunked(raw(request), buf, &mut ctx.chunked) };
        if rc == NGX_OK as ngx_int_t {
            let Some((cl, b)) = free_link(p.pool, &mut p.free) else {
                return NGX_ERROR as ngx_int_t;
            };
            *b = blank_buf();
            b.pos = buf.pos;
            b.start = buf.start;
            b.end = buf.end;
            b.tag = p.tag;
            b.num = buf.num;
            b.set_temporary(1);
            b.set_recycled(1);
            match last_data.take() {
                Some(previous) => previous.shadow = b,
                None => buf.shadow = b,
            }
            append_to_pipe_input(p, cl);
            let available = span(buf.pos, buf.last);
            if available >= ctx.chunked.size {
                buf.pos = buf.pos.wrapping_add(ctx.chunked.size as usize);
                b.last = buf.pos;
                ctx.chunked.size = 0;
            } else {
                ctx.chunked.size -= available;
                buf.pos = buf.last;
                b.last = buf.last;
            }
            last_data = Some(b);
            continue;
        }
        if rc == NGX_DONE as ngx_int_t {
            p.length = 0;
            // SAFETY: as above.
            let u = unsafe { &mut *upstream(request) };
            let mut keep = reusable(ctx.server_keeps_alive, u);
            if buf.pos != buf.last {
                log_error(request, PAST_LAST_CHUNK);
                keep = false;
            }
            u.set_keepalive(keep as u32);
            break;
        }
        if rc == NGX_AGAIN as ngx_int_t {
            // The least the parser needs to see next.
            p.length = ctx.chunked.length;
            break;
        }
        log_error(request, "upstream sent an invalid chunked response");
        return NGX_ERROR as ngx_int_t;
    }
    if let Some(b) = last_data {
        b.shadow = buf;
        b.set_last_shadow(1);
        return NGX_OK as ngx_int_t;
    }
    // No data in this buffer (only chunk framing): it can be reused at once.
    // SAFETY: the pipe and a buffer it read that nothing refers to any more.
    if unsafe { ngx_event_pipe_add_free_buf(p, buf) } != NGX_OK as ngx_int_t {
        return NGX_ERROR as ngx_int_t;
    }
    NGX_OK as ngx_int_t
}

/// The unbuffered-mode filter for a chunked body, on the upstream's own buffer, into
/// which nginx has just read `bytes` more.
extern "C" fn non_buffered_chunked_filter(data: *mut c_void, bytes: isize) -> ngx_int_t {
    let names = ("non_buffered_chunked_filter", PAST_LAST_CHUNK);
    upstream_filter(data, bytes, names, non_buffered_chunked_filter_body)
}

fn non_buffered_chunked_filter_body(
    request: &mut Request,
    u: &mut ngx_http_upstream_t,
    bytes: isize,
) -> ngx_int_t {
    let pool = request.pool().as_ptr();
    // SAFETY: no other reference to the context is alive during this call.
    let Some(ctx) = (unsafe { request_ctx(request) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    u.buffer.pos = u.buffer.last;
    u.buffer.last = u.buffer.last.wrapping_offset(bytes);
    let mut end = chain_end(&mut u.out_bufs);
    loop {
        // SAFETY: the live request, the upstream's buffer and our parser's state.
        let rc = unsafe { parse_chunked(raw(request), &mut u.buffer, &mut ctx.chunked) };
        if rc == NGX_OK as ngx_int_t {
            let Some((cl, b)) = free_link(pool, &mut u.free_bufs) else {
                return NGX_ERROR as ngx_int_t;
            };
            *end = cl;
            end = &mut cl.next;
            b.set_flush(1);
            b.set_memory(1);
            b.pos = u.buffer.pos;
            b.tag = u.output.tag;
            let available = span(u.buffer.pos, u.buffer.last);
            if available >= ctx.chunked.size {
                u.buffer.pos = u.buffer.pos.wrapping_add(ctx.chunked.size as usize);
                b.last = u.buffer.pos;
                ctx.chunked.size = 0;
            } else {
                ctx.chunked.size -= available;
                u.buffer.pos = u.buffer.last;
                b.last = u.buffer.last;
            }
            continue;
        }
        if rc == NGX_DONE as ngx_int_t {
            let mut keep = reusable(ctx.server_keeps_alive, u);
            u.length = 0;
            if u.buffer.pos != u.buffer.last {
                log_error(request, PAST_LAST_CHUNK);
                keep = false;
            }
            u.set_keepalive(keep as u32);
            break;
        }
        if rc == NGX_AGAIN as ngx_int_t {
            break;
        }
        log_error(request, "upstream sent an invalid chunked response");
        return NGX_ERROR as ngx_int_t;
    }
    NGX_OK as ngx_int_t
}

extern "C" fn abort_request(_r: *mut ngx_http_request_t) {}

extern "C" fn finalize_request(r: *mut ngx_http_request_t, _rc: ngx_int_t) {
    guarded(r, "finalize_request", finalize_request_body);
}

fn finalize_request_body(request: &mut Request) -> ngx_int_t {
    // SAFETY: no other callback holds the context while nginx finalizes the request.
    let Some(ctx) = (unsafe { request_ctx(request) }) else {
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the request's upstream, being finalized, and its configuration.
    let u = unsafe { &mut *upstream(request) };
    // A request sent whose connection is not going back to the cache (its response was
    // not read whole: its client went away, the read timed out; or the daemon closes it)
    // may still be running in the daemon, and nginx would close the connection now.
    let unfinished = (u.request_sent() != 0 && u.keepalive() == 0 && !u.peer.connection.is_null())
        // SAFETY: as above.
        .then(|| (u.peer.connection, unsafe { (*u.conf).read_timeout }));
    if crate::queue::release(ctx.ticket, unfinished) {
        // The queue closes it once the daemon is done with the request.
        u.peer.connection = ptr::null_mut();
    }
    NGX_OK as ngx_int_t
}

/// The request's place in `wsgi_app`'s queue, or null (another location's request, or
/// one that never went through a queue).
pub fn ticket_of(r: *mut ngx_http_request_t) -> *mut crate::queue::Ticket {
    // SAFETY: a live request, between callbacks (a variable's evaluation): nothing else
    // holds its context.
    unsafe { request_ctx(Request::from_ngx_http_request(r)) }
        .map_or(ptr::null_mut(), |ctx| ctx.ticket)
}

/// Records the request's place in `wsgi_app`'s queue (`queue.rs`).
pub fn set_ticket(r: *mut ngx_http_request_t, ticket: *mut crate::queue::Ticket) {
    // SAFETY: a live request, between callbacks: nothing else holds its context.
    if let Some(ctx) = unsafe { request_ctx(Request::from_ngx_http_request(r)) } {
        ctx.ticket = ticket;
    }
}
