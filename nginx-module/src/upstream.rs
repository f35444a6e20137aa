//! The request side of `wsgi_pass`: the content handler and the upstream callbacks, in
//! the order nginx calls them (create_request, process_status_line, process_header,
//! input_filter_init, reinit_request, abort_request, finalize_request).

use core::ffi::c_void;
use core::{mem, ptr};

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_get_free_buf, ngx_chain_t, ngx_create_temp_buf,
    ngx_event_pipe_t, ngx_hash_find, ngx_http_complex_value, ngx_http_parse_header_line,
    ngx_http_parse_status_line, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_http_status_t, ngx_http_upstream_create, ngx_http_upstream_header_t,
    ngx_http_upstream_init, ngx_http_upstream_main_conf_t, ngx_http_upstream_module,
    ngx_http_upstream_t, ngx_int_t, ngx_list_part_t, ngx_list_push, ngx_palloc, ngx_pcalloc,
    ngx_pnalloc, ngx_str_t, ngx_table_elt_t, NGX_AGAIN, NGX_DONE, NGX_ERROR, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_MODIFIED, NGX_HTTP_NO_CONTENT,
    NGX_HTTP_PARSE_HEADER_DONE, NGX_HTTP_SPECIAL_RESPONSE, NGX_HTTP_SWITCHING_PROTOCOLS,
    NGX_HTTP_UPSTREAM_INVALID_HEADER, NGX_LOG_ERR, NGX_OK,
};
use ngx::ffi::{
    ngx_event_pipe_add_free_buf, ngx_http_complex_value_t, ngx_http_get_flushed_variable,
    ngx_http_parse_chunked, ngx_http_upstream_resolved_t, ngx_parse_url, ngx_uint_t, ngx_url_t,
};
use ngx::ngx_string;

use ngx::http::{HttpModule, HttpModuleLocationConf};

use crate::{ngx_http_wsgi_module, WsgiLocConf, WsgiModule, WsgiParam};
use uwsgi_proto::{header_separator, header_var_char, same_header_var};

/// Logs an error on the request's connection log (nginx's error_log), as NGX_LOG_ERR.
fn log_error(r: *mut ngx_http_request_t, message: &str) {
    // SAFETY: callers pass a live request, so its connection and log are valid; the
    // message is passed with an explicit length.
    unsafe {
        ngx::ffi::ngx_log_error_core(
            NGX_LOG_ERR as ngx::ffi::ngx_uint_t,
            (*(*r).connection).log,
            0,
            c"%*s".as_ptr(),
            message.len(),
            message.as_ptr(),
        );
    }
}

/// Runs a callback's body, turning a panic into NGX_ERROR (a 500 or 502 for the request)
/// with a log line: a panic must not unwind into nginx, where it would abort the worker and
/// every connection it serves.
fn guarded(
    r: *mut ngx_http_request_t,
    callback: &str,
    body: impl FnOnce() -> ngx_int_t,
) -> ngx_int_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(_) => {
            if !r.is_null() {
                log_error(
                    r,
                    &format!(
                        "internal error in ngx_http_wsgi_module's {callback}: the request fails"
                    ),
                );
            }
            NGX_ERROR as ngx_int_t
        }
    }
}

/// The request an event pipe works for (its input_ctx, set by the content handler).
fn pipe_request(p: *mut ngx_event_pipe_t) -> *mut ngx_http_request_t {
    // SAFETY: nginx calls pipe filters with the pipe our content handler created, whose
    // input_ctx is the request.
    unsafe { (*p).input_ctx as *mut ngx_http_request_t }
}

/// This module's index in the per-request context array.
fn module_index() -> usize {
    WsgiModule::module().ctx_index
}

/// Our location configuration of a request.
///
/// # Safety
/// `r` is a live request.
unsafe fn loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a mut WsgiLocConf {
    // SAFETY: per the contract.
    let r = unsafe { &*r };
    // Our handlers run only in locations with wsgi_pass, whose configuration is ours.
    WsgiModule::location_conf_mut(r).expect("ngx_http_wsgi_module's location configuration")
}

/// Per-request state, in the request pool: the status-line parser's, and whether the
/// server promised to keep the connection open (docs/protocol.md).
#[repr(C)]
pub struct RequestCtx {
    status: ngx_http_status_t,
    server_keeps_alive: bool,
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

/// The request's module context.
///
/// # Safety
/// `r` is a live request.
unsafe fn request_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    // SAFETY: per the contract; the ctx array has a slot for every HTTP module, ours set
    // by the content handler to a pool allocation.
    unsafe { (*(*r).ctx.add(module_index()) as *mut RequestCtx).as_mut() }
}

/// The content handler of a `wsgi_pass` location.
pub extern "C" fn ngx_http_wsgi_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "ngx_http_wsgi_handler", || ngx_http_wsgi_handler_body(r))
}

fn ngx_http_wsgi_handler_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request; everything set up here is
    // allocated from the request pool or is static, as ngx_http_uwsgi_handler does.
    unsafe {
        if ngx_http_upstream_create(r) != NGX_OK as ngx_int_t {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        let ctx = ngx_pcalloc((*r).pool, mem::size_of::<RequestCtx>());
        if ctx.is_null() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        *(*r).ctx.add(module_index()) = ctx;

        let conf = loc_conf(r);
        if !conf.pass_value.is_null() && !resolve_pass_value(r, &*conf.pass_value) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        let u: &mut ngx_http_upstream_t = &mut *(*r).upstream;
        u.schema = ngx_string!("uwsgi://");
        u.output.tag = &raw const ngx_http_wsgi_module as *mut c_void;
        u.conf = &mut conf.upstream;
        u.create_request = Some(create_request);
        u.reinit_request = Some(reinit_request);
        u.process_header = Some(process_status_line);
        u.abort_request = Some(abort_request);
        u.finalize_request = Some(finalize_request);
        (*r).state = 0;
        u.set_buffering(conf.upstream.buffering as u32);

        u.pipe =
            ngx_pcalloc((*r).pool, mem::size_of::<ngx_event_pipe_t>()) as *mut ngx_event_pipe_t;
        if u.pipe.is_null() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        (*u.pipe).input_filter = Some(buffered_copy_filter);
        (*u.pipe).input_ctx = r as *mut c_void;
        u.input_filter_init = Some(input_filter_init);
        u.input_filter = Some(non_buffered_copy_filter);
        u.input_filter_ctx = r as *mut c_void;

        if conf.upstream.request_buffering == 0
            && conf.upstream.pass_request_body != 0
            && (*r).headers_in.chunked() == 0
        {
            (*r).set_request_body_no_buffering(1);
        }
        let rc = ngx_http_read_client_request_body(r, Some(ngx_http_upstream_init));
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        NGX_DONE as ngx_int_t
    }
}

/// Evaluates `wsgi_pass` with variables into the request's upstream address: an address
/// (`unix:/path`, `host:port`) or an upstream block's name, which nginx then looks up.
///
/// # Safety
/// `r` is a live request on which ngx_http_upstream_create has run.
unsafe fn resolve_pass_value(r: *mut ngx_http_request_t, value: &ngx_http_complex_value_t) -> bool {
    // SAFETY: per the contract; everything allocated comes from the request pool, as in
    // ngx_http_uwsgi_eval.
    unsafe {
        let mut evaluated = ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        };
        if ngx_http_complex_value(r, value as *const _ as *mut _, &mut evaluated)
            != NGX_OK as ngx_int_t
        {
            return false;
        }
        let mut address = evaluated.as_bytes();
        if let Some(rest) = address.strip_prefix(b"uwsgi://") {
            address = rest;
        }
        let mut url: ngx_url_t = mem::zeroed();
        url.url = ngx_str_t {
            len: address.len(),
            data: address.as_ptr() as *mut u8,
        };
        url.set_no_resolve(1);
        if ngx_parse_url((*r).pool, &mut url) != NGX_OK as ngx_int_t {
            let reason = if url.err.is_null() {
                "invalid address".into()
            } else {
                core::ffi::CStr::from_ptr(url.err).to_string_lossy()
            };
            log_error(
                r,
                &format!(
                    "{reason} in wsgi_pass \"{}\"",
                    String::from_utf8_lossy(address)
                ),
            );
            return false;
        }
        let resolved = ngx_pcalloc((*r).pool, mem::size_of::<ngx_http_upstream_resolved_t>())
            as *mut ngx_http_upstream_resolved_t;
        if resolved.is_null() {
            return false;
        }
        if let Some(addr) = url.addrs.as_ref() {
            (*resolved).sockaddr = addr.sockaddr;
            (*resolved).socklen = addr.socklen;
            (*resolved).name = addr.name;
            (*resolved).naddrs = 1;
        }
        (*resolved).host = url.host;
        (*resolved).port = url.port;
        (*resolved).no_port = url.no_port() as ngx::ffi::ngx_uint_t;
        (*(*r).upstream).resolved = resolved;
        true
    }
}

/// The request's headers, in the order they came.
///
/// # Safety
/// `r` is a live request.
unsafe fn headers<'a>(
    r: *mut ngx_http_request_t,
) -> impl Iterator<Item = &'a ngx_table_elt_t> + Clone {
    // SAFETY: per the contract; the list and its parts belong to the request.
    let first: *const ngx_list_part_t = unsafe { &(*r).headers_in.headers.part };
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
/// replaces are left out. Each item: the first header of its name, and the others.
///
/// # Safety
/// `r` is a live request.
unsafe fn header_vars(
    r: *mut ngx_http_request_t,
    params: &[WsgiParam],
) -> impl Iterator<
    Item = (
        &ngx_table_elt_t,
        impl Iterator<Item = &ngx_table_elt_t> + Clone,
    ),
> {
    // SAFETY: per the contract; every walk below is over the same live list.
    let all = unsafe { headers(r) };
    all.enumerate().filter_map(move |(i, header)| {
        let name = header.key.as_bytes();
        let replaced = params.iter().any(|p| {
            p.key
                .as_bytes()
                .strip_prefix(b"HTTP_")
                .is_some_and(|k| same_header_var(k, name))
        });
        // SAFETY: as above.
        let mut earlier = unsafe { headers(r) }.take(i);
        if replaced || earlier.any(|e| same_header_var(e.key.as_bytes(), name)) {
            return None;
        }
        // SAFETY: as above.
        let repeats = unsafe { headers(r) }
            .skip(i + 1)
            .filter(move |e| same_header_var(e.key.as_bytes(), name));
        Some((header, repeats))
    })
}

/// A param's value for this request: a lone variable read by its index, anything else
/// through nginx's script engine (a constant costs nothing there).
///
/// # Safety
/// `r` is a live request of the location whose param this is.
unsafe fn param_value(r: *mut ngx_http_request_t, param: &WsgiParam) -> Option<ngx_str_t> {
    // SAFETY: per the contract; the index and the complex value were made at
    // configuration time for this location.
    unsafe {
        if param.variable >= 0 {
            let value = ngx_http_get_flushed_variable(r, param.variable as ngx_uint_t);
            if value.is_null() {
                return None;
            }
            if (*value).not_found() != 0 {
                return Some(ngx_str_t {
                    len: 0,
                    data: ptr::null_mut(),
                });
            }
            return Some(ngx_str_t {
                len: (*value).len() as usize,
                data: (*value).data,
            });
        }
        let mut value = ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        };
        let complex = &param.value as *const ngx_http_complex_value_t as *mut _;
        (ngx_http_complex_value(r, complex, &mut value) == NGX_OK as ngx_int_t).then_some(value)
    }
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
///
/// # Safety
/// `r` is a live request in a `wsgi_pass` location.
unsafe fn encode_packet(
    r: *mut ngx_http_request_t,
    conf: &WsgiLocConf,
) -> Result<*mut ngx_buf_t, Option<uwsgi_proto::EncodeError>> {
    use uwsgi_proto::{EncodeError, KEEPALIVE_CHUNKED, KEEPALIVE_VAR, MAX_VARS_LEN};
    let field = |len: usize, key: &[u8]| match u16::try_from(len) {
        Ok(_) => Ok(len),
        Err(_) => Err(Some(EncodeError::FieldTooLong(
            String::from_utf8_lossy(key).into_owned(),
        ))),
    };
    // SAFETY: per the contract; params were compiled at configuration time, the values and
    // the packet go in the request pool, the header list belongs to the request.
    unsafe {
        let params: &[WsgiParam] = match conf.params.as_ref() {
            Some(a) => a.as_slice::<WsgiParam>(),
            None => &[],
        };
        let values = match params.len() {
            0 => &mut [][..],
            n => {
                let values =
                    ngx_palloc((*r).pool, n * mem::size_of::<ngx_str_t>()) as *mut ngx_str_t;
                if values.is_null() {
                    return Err(None);
                }
                core::slice::from_raw_parts_mut(values, n)
            }
        };
        let mut size = 4 + KEEPALIVE_VAR.len() + KEEPALIVE_CHUNKED.len();
        for (param, value) in params.iter().zip(values.iter_mut()) {
            *value = param_value(r, param).ok_or(None)?;
            if !(param.skip_empty && value.len == 0) {
                size += 4 + param.key.len + field(value.len, param.key.as_bytes())?;
            }
        }
        let pass_headers = conf.upstream.pass_request_headers != 0;
        if pass_headers {
            for (header, repeats) in header_vars(r, params) {
                let name = header.key.as_bytes();
                let joined: usize = repeats.map(|e| 2 + e.value.len).sum();
                size += 4 + 5 + name.len() + field(header.value.len + joined, name)?;
            }
        }
        if size > MAX_VARS_LEN {
            return Err(Some(EncodeError::PacketTooLarge(size)));
        }
        let b = ngx_create_temp_buf((*r).pool, 4 + size);
        if b.is_null() {
            return Err(None);
        }
        let mut w = PacketWriter {
            out: core::slice::from_raw_parts_mut((*b).last, 4 + size),
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
            for (header, repeats) in header_vars(r, params) {
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
        (*b).last = (*b).last.add(4 + size);
        Ok(b)
    }
}

extern "C" fn create_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "create_request", || create_request_body(r))
}

fn create_request_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: a live request in a wsgi_pass location.
    let conf = unsafe { loc_conf(r) };
    // SAFETY: as above.
    let b = match unsafe { encode_packet(r, conf) } {
        Ok(b) => b,
        Err(err) => {
            if let Some(err) = err {
                log_error(r, &format!("wsgi request not sent: {err}"));
            }
            return NGX_ERROR as ngx_int_t;
        }
    };
    // SAFETY: buffers and chain links come from the request pool; the body chain is the
    // one nginx read, copied link by link as ngx_http_uwsgi_create_request does.
    unsafe {
        let cl = ngx_alloc_chain_link((*r).pool);
        if cl.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*cl).buf = b;
        let u = &mut *(*r).upstream;
        let mut last = cl;
        let mut last_buf: *mut ngx_buf_t = b;
        if (*r).request_body_no_buffering() == 0 && conf.upstream.pass_request_body != 0 {
            let mut body = u.request_bufs;
            while !body.is_null() {
                let copy = ngx_palloc((*r).pool, mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
                let link = ngx_alloc_chain_link((*r).pool);
                if copy.is_null() || link.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                ptr::copy_nonoverlapping((*body).buf, copy, 1);
                (*link).buf = copy;
                (*last).next = link;
                last = link;
                last_buf = copy;
                body = (*body).next;
            }
        }
        u.request_bufs = cl;
        (*last_buf).set_flush(1);
        (*last).next = ptr::null_mut();
    }
    NGX_OK as ngx_int_t
}

extern "C" fn reinit_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "reinit_request", || reinit_request_body(r))
}

fn reinit_request_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a live request before retrying on another server.
    unsafe {
        if let Some(ctx) = request_ctx(r) {
            ctx.status.code = 0;
            ctx.status.count = 0;
            ctx.status.start = ptr::null_mut();
            ctx.status.end = ptr::null_mut();
            ctx.server_keeps_alive = false;
            ctx.chunked = mem::zeroed();
            (*(*r).upstream).process_header = Some(process_status_line);
            (*r).state = 0;
        }
    }
    NGX_OK as ngx_int_t
}

extern "C" fn process_status_line(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "process_status_line", || process_status_line_body(r))
}

fn process_status_line_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a live request whose upstream buffer holds the start
    // of the response; the parser and copies work within that buffer and the pool.
    unsafe {
        let Some(ctx) = request_ctx(r) else {
            return NGX_ERROR as ngx_int_t;
        };
        let status = &mut ctx.status;
        let u = &mut *(*r).upstream;
        let rc = ngx_http_parse_status_line(r, &mut u.buffer, status);
        if rc == NGX_AGAIN as ngx_int_t {
            return rc;
        }
        if rc == NGX_ERROR as ngx_int_t {
            // No status line: a CGI-style response with a Status header, or none.
            u.process_header = Some(process_header);
            (*r).state = 0;
            return process_header(r);
        }
        if !u.state.is_null() && (*u.state).status == 0 {
            (*u.state).status = status.code;
        }
        u.headers_in.status_n = status.code;
        let len = status.end.offset_from(status.start) as usize;
        let line = ngx_pnalloc((*r).pool, len) as *mut u8;
        if line.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ptr::copy_nonoverlapping(status.start, line, len);
        u.headers_in.status_line = ngx_str_t { len, data: line };
        u.process_header = Some(process_header);
        process_header(r)
    }
}

extern "C" fn process_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(r, "process_header", || process_header_body(r))
}

fn process_header_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: as process_status_line; header storage comes from the request pool, and the
    // upstream module's headers_in hash is nginx's own.
    unsafe {
        // SAFETY: reading a field of nginx's module structure, set before requests run.
        let upstream_index = ngx_http_upstream_module.ctx_index;
        let umcf =
            &mut *(*(*r).main_conf.add(upstream_index) as *mut ngx_http_upstream_main_conf_t);
        loop {
            let u = &mut *(*r).upstream;
            let rc = ngx_http_parse_header_line(r, &mut u.buffer, 1);
            if rc == NGX_OK as ngx_int_t {
                let h = ngx_list_push(&mut u.headers_in.headers) as *mut ngx_table_elt_t;
                if h.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                let h = &mut *h;
                h.hash = (*r).header_hash;
                h.key.len = (*r).header_name_end.offset_from((*r).header_name_start) as usize;
                h.value.len = (*r).header_end.offset_from((*r).header_start) as usize;
                let storage =
                    ngx_pnalloc((*r).pool, h.key.len + 1 + h.value.len + 1 + h.key.len) as *mut u8;
                if storage.is_null() {
                    h.hash = 0;
                    return NGX_ERROR as ngx_int_t;
                }
                h.key.data = storage;
                h.value.data = storage.add(h.key.len + 1);
                h.lowcase_key = storage.add(h.key.len + 1 + h.value.len + 1);
                ptr::copy_nonoverlapping((*r).header_name_start, h.key.data, h.key.len);
                *h.key.data.add(h.key.len) = 0;
                ptr::copy_nonoverlapping((*r).header_start, h.value.data, h.value.len);
                *h.value.data.add(h.value.len) = 0;
                if h.key.len == (*r).lowcase_index {
                    ptr::copy_nonoverlapping(
                        (*r).lowcase_header.as_ptr(),
                        h.lowcase_key,
                        h.key.len,
                    );
                } else {
                    for i in 0..h.key.len {
                        *h.lowcase_key.add(i) = (*h.key.data.add(i)).to_ascii_lowercase();
                    }
                }
                // The server's promise to keep the connection (docs/protocol.md).
                let lowcase_key = core::slice::from_raw_parts(h.lowcase_key, h.key.len);
                if lowcase_key == b"connection"
                    && h.value.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                {
                    if let Some(ctx) = request_ctx(r) {
                        ctx.server_keeps_alive = true;
                    }
                }
                let hh = ngx_hash_find(&mut umcf.headers_in_hash, h.hash, h.lowcase_key, h.key.len)
                    as *mut ngx_http_upstream_header_t;
                if let Some(handler) = hh.as_ref().and_then(|hh| hh.handler) {
                    let rc = handler(r, h, (*hh).offset);
                    if rc != NGX_OK as ngx_int_t {
                        return rc;
                    }
                }
                continue;
            }
            if rc == NGX_HTTP_PARSE_HEADER_DONE as ngx_int_t {
                if u.headers_in.status_n == 0 {
                    if let Some(status) = u.headers_in.status.as_ref() {
                        let line = status.value.as_bytes();
                        let code = line
                            .get(..3)
                            .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
                        let Some(code) = code else {
                            let line = String::from_utf8_lossy(line);
                            log_error(r, &format!("upstream sent invalid status \"{line}\""));
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
                    if !u.state.is_null() && (*u.state).status == 0 {
                        (*u.state).status = u.headers_in.status_n;
                    }
                }
                if u.headers_in.status_n == NGX_HTTP_SWITCHING_PROTOCOLS as usize
                    && !(*r).headers_in.upgrade.is_null()
                {
                    u.set_upgrade(1);
                }
                // A response without a body is complete now, and nginx may finalize a
                // HEAD request before any body filter runs: mark the connection
                // reusable here, as the proxy module does.
                let status = u.headers_in.status_n;
                if status == NGX_HTTP_NO_CONTENT as usize
                    || status == NGX_HTTP_NOT_MODIFIED as usize
                    || (*r).method == NGX_HTTP_HEAD as usize
                    || u.headers_in.content_length_n == 0
                {
                    u.set_keepalive(reusable(r) as u32);
                }
                return NGX_OK as ngx_int_t;
            }
            if rc == NGX_AGAIN as ngx_int_t {
                return rc;
            }
            log_error(r, "upstream sent an invalid header line");
            return NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
        }
    }
}

/// Whether the connection can go back to nginx's keepalive cache once this response is
/// read: the server promised it, and did not also say "close".
///
/// # Safety
/// `r` is a live request with an upstream.
unsafe fn reusable(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: per the contract.
    unsafe {
        let promised = request_ctx(r).is_some_and(|ctx| ctx.server_keeps_alive);
        promised && (*(*r).upstream).headers_in.connection_close() == 0
    }
}

extern "C" fn input_filter_init(data: *mut c_void) -> ngx_int_t {
    guarded(data as *mut ngx_http_request_t, "input_filter_init", || {
        input_filter_init_body(data)
    })
}

fn input_filter_init_body(data: *mut c_void) -> ngx_int_t {
    let r = data as *mut ngx_http_request_t;
    // SAFETY: nginx passes the input_filter_ctx we set: the request, with its pipe.
    unsafe {
        let keep = reusable(r);
        let u = &mut *(*r).upstream;
        let status = u.headers_in.status_n;
        let no_body =
            status == NGX_HTTP_NO_CONTENT as usize || status == NGX_HTTP_NOT_MODIFIED as usize;
        let head = (*r).method == NGX_HTTP_HEAD as usize;
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
            (*u.pipe).input_filter = Some(buffered_chunked_filter);
            (*u.pipe).length = 3;
            u.input_filter = Some(non_buffered_chunked_filter);
            u.length = 1;
            return NGX_OK as ngx_int_t;
        }
        (*u.pipe).length = length;
        u.length = length;
        if length == 0 {
            // No body: the filters will not be called to see it end.
            u.set_keepalive(keep as u32);
        }
    }
    NGX_OK as ngx_int_t
}

/// Queues a filtered buffer's chain link on the pipe's input, as nginx's filters do.
///
/// # Safety
/// `cl` is a link from the pipe's own free list.
unsafe fn append_to_pipe_input(p: &mut ngx_event_pipe_t, cl: *mut ngx_chain_t) {
    // SAFETY: in/last_in are the pipe's input chain, which its filters extend this way.
    unsafe {
        if p.in_.is_null() {
            p.in_ = cl;
        } else {
            *p.last_in = cl;
        }
        p.last_in = &mut (*cl).next;
    }
}

/// The buffered-mode body filter: passes the bytes on, and once a Content-Length body is
/// complete hands the connection back for reuse (the proxy module's copy filter).
extern "C" fn buffered_copy_filter(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    guarded(pipe_request(p), "buffered_copy_filter", || {
        buffered_copy_filter_body(p, buf)
    })
}

fn buffered_copy_filter_body(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    // SAFETY: nginx's event pipe calls this with itself and a buffer it read; the chain
    // link comes from the pipe's free list, as in ngx_event_pipe_copy_input_filter.
    unsafe {
        let (p, buf) = (&mut *p, &mut *buf);
        if buf.pos == buf.last || p.upstream_done() != 0 {
            return NGX_OK as ngx_int_t;
        }
        let r = p.input_ctx as *mut ngx_http_request_t;
        if p.length == 0 {
            log_error(r, "upstream sent more data than its Content-Length");
            (*(*r).upstream).set_keepalive(0);
            p.set_upstream_done(1);
            return NGX_OK as ngx_int_t;
        }
        let cl = ngx_chain_get_free_buf(p.pool, &mut p.free);
        if cl.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        let b = &mut *(*cl).buf;
        ptr::copy_nonoverlapping(buf as *const ngx_buf_t, b, 1);
        b.shadow = buf;
        b.tag = p.tag;
        b.set_last_shadow(1);
        b.set_recycled(1);
        buf.shadow = b;
        append_to_pipe_input(p, cl);
        if p.length == -1 {
            return NGX_OK as ngx_int_t;
        }
        let size = b.last.offset_from(b.pos) as i64;
        if size > p.length {
            log_error(r, "upstream sent more data than its Content-Length");
            b.last = b.pos.add(p.length as usize);
            p.set_upstream_done(1);
            return NGX_OK as ngx_int_t;
        }
        p.length -= size;
        if p.length == 0 {
            (*(*r).upstream).set_keepalive(reusable(r) as u32);
        }
    }
    NGX_OK as ngx_int_t
}

/// The unbuffered-mode body filter (`wsgi_buffering off`, upgraded connections): the same
/// bookkeeping as [`buffered_copy_filter`] on the upstream's own buffer.
extern "C" fn non_buffered_copy_filter(data: *mut c_void, bytes: isize) -> ngx_int_t {
    guarded(
        data as *mut ngx_http_request_t,
        "non_buffered_copy_filter",
        || non_buffered_copy_filter_body(data, bytes),
    )
}

fn non_buffered_copy_filter_body(data: *mut c_void, bytes: isize) -> ngx_int_t {
    let r = data as *mut ngx_http_request_t;
    // SAFETY: nginx calls this with the input_filter_ctx we set (the request) after
    // reading `bytes` more into u->buffer; links come from u->free_bufs, as in
    // ngx_http_upstream_non_buffered_filter.
    unsafe {
        let u = &mut *(*r).upstream;
        if u.length == 0 {
            log_error(r, "upstream sent more data than its Content-Length");
            u.set_keepalive(0);
            return NGX_OK as ngx_int_t;
        }
        let mut ll: *mut *mut ngx_chain_t = &mut u.out_bufs;
        while !(*ll).is_null() {
            ll = &mut (**ll).next;
        }
        let cl = ngx_chain_get_free_buf((*r).pool, &mut u.free_bufs);
        if cl.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        *ll = cl;
        let out = &mut *(*cl).buf;
        out.set_flush(1);
        out.set_memory(1);
        out.pos = u.buffer.last;
        u.buffer.last = u.buffer.last.offset(bytes);
        out.last = u.buffer.last;
        out.tag = u.output.tag;
        if u.length == -1 {
            return NGX_OK as ngx_int_t;
        }
        if bytes as i64 > u.length {
            log_error(r, "upstream sent more data than its Content-Length");
            out.last = out.pos.add(u.length as usize);
            u.length = 0;
            return NGX_OK as ngx_int_t;
        }
        u.length -= bytes as i64;
        if u.length == 0 {
            u.set_keepalive(reusable(r) as u32);
        }
    }
    NGX_OK as ngx_int_t
}

/// The buffered-mode filter for a chunked body: passes the chunks' data on, and once the
/// last chunk is read hands the connection back for reuse (the proxy module's chunked
/// filter).
extern "C" fn buffered_chunked_filter(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    guarded(pipe_request(p), "buffered_chunked_filter", || {
        buffered_chunked_filter_body(p, buf)
    })
}

fn buffered_chunked_filter_body(p: *mut ngx_event_pipe_t, buf: *mut ngx_buf_t) -> ngx_int_t {
    // SAFETY: nginx's event pipe calls this with itself and a buffer it read; the data
    // buffers made here are shadows of `buf`, chain links come from the pipe's free list.
    unsafe {
        let (p, buf) = (&mut *p, &mut *buf);
        if buf.pos == buf.last || p.upstream_done() != 0 {
            return NGX_OK as ngx_int_t;
        }
        let r = p.input_ctx as *mut ngx_http_request_t;
        let Some(ctx) = request_ctx(r) else {
            return NGX_ERROR as ngx_int_t;
        };
        if p.length == 0 {
            log_error(r, "upstream sent data after the final chunk");
            (*(*r).upstream).set_keepalive(0);
            p.set_upstream_done(1);
            return NGX_OK as ngx_int_t;
        }
        let mut last_data: *mut ngx_buf_t = ptr::null_mut();
        let mut prev: *mut *mut ngx_buf_t = &mut buf.shadow;
        loop {
            let rc = parse_chunked(r, buf, &mut ctx.chunked);
            if rc == NGX_OK as ngx_int_t {
                let cl = ngx_chain_get_free_buf(p.pool, &mut p.free);
                if cl.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                let b = (*cl).buf;
                ptr::write_bytes(b, 0, 1);
                (*b).pos = buf.pos;
                (*b).start = buf.start;
                (*b).end = buf.end;
                (*b).tag = p.tag;
                (*b).set_temporary(1);
                (*b).set_recycled(1);
                *prev = b;
                prev = &mut (*b).shadow;
                append_to_pipe_input(p, cl);
                (*b).num = buf.num;
                let available = buf.last.offset_from(buf.pos) as i64;
                if available >= ctx.chunked.size {
                    buf.pos = buf.pos.add(ctx.chunked.size as usize);
                    (*b).last = buf.pos;
                    ctx.chunked.size = 0;
                } else {
                    ctx.chunked.size -= available;
                    buf.pos = buf.last;
                    (*b).last = buf.last;
                }
                last_data = b;
                continue;
            }
            if rc == NGX_DONE as ngx_int_t {
                p.length = 0;
                let mut keep = reusable(r);
                if buf.pos != buf.last {
                    log_error(r, "upstream sent data after the final chunk");
                    keep = false;
                }
                (*(*r).upstream).set_keepalive(keep as u32);
                break;
            }
            if rc == NGX_AGAIN as ngx_int_t {
                // The least the parser needs to see next.
                p.length = ctx.chunked.length;
                break;
            }
            log_error(r, "upstream sent an invalid chunked response");
            return NGX_ERROR as ngx_int_t;
        }
        if let Some(b) = last_data.as_mut() {
            b.shadow = buf;
            b.set_last_shadow(1);
            return NGX_OK as ngx_int_t;
        }
        // No data in this buffer (only chunk framing): it can be reused at once.
        if ngx_event_pipe_add_free_buf(p, buf) != NGX_OK as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
    }
    NGX_OK as ngx_int_t
}

/// The unbuffered-mode filter for a chunked body, on the upstream's own buffer.
extern "C" fn non_buffered_chunked_filter(data: *mut c_void, bytes: isize) -> ngx_int_t {
    guarded(
        data as *mut ngx_http_request_t,
        "non_buffered_chunked_filter",
        || non_buffered_chunked_filter_body(data, bytes),
    )
}

fn non_buffered_chunked_filter_body(data: *mut c_void, bytes: isize) -> ngx_int_t {
    let r = data as *mut ngx_http_request_t;
    // SAFETY: nginx calls this with the request after reading `bytes` more into
    // u->buffer; links come from u->free_bufs and point into that buffer.
    unsafe {
        let Some(ctx) = request_ctx(r) else {
            return NGX_ERROR as ngx_int_t;
        };
        let u = &mut *(*r).upstream;
        if u.length == 0 {
            log_error(r, "upstream sent data after the final chunk");
            u.set_keepalive(0);
            return NGX_OK as ngx_int_t;
        }
        let buf: *mut ngx_buf_t = &mut u.buffer;
        (*buf).pos = (*buf).last;
        (*buf).last = (*buf).last.offset(bytes);
        let mut ll: *mut *mut ngx_chain_t = &mut u.out_bufs;
        while !(*ll).is_null() {
            ll = &mut (**ll).next;
        }
        loop {
            let rc = parse_chunked(r, buf, &mut ctx.chunked);
            if rc == NGX_OK as ngx_int_t {
                let cl = ngx_chain_get_free_buf((*r).pool, &mut u.free_bufs);
                if cl.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                *ll = cl;
                ll = &mut (*cl).next;
                let b = &mut *(*cl).buf;
                b.set_flush(1);
                b.set_memory(1);
                b.pos = (*buf).pos;
                b.tag = u.output.tag;
                let available = (*buf).last.offset_from((*buf).pos) as i64;
                if available >= ctx.chunked.size {
                    (*buf).pos = (*buf).pos.add(ctx.chunked.size as usize);
                    b.last = (*buf).pos;
                    ctx.chunked.size = 0;
                } else {
                    ctx.chunked.size -= available;
                    (*buf).pos = (*buf).last;
                    b.last = (*buf).last;
                }
                continue;
            }
            if rc == NGX_DONE as ngx_int_t {
                let mut keep = reusable(r);
                u.length = 0;
                if (*buf).pos != (*buf).last {
                    log_error(r, "upstream sent data after the final chunk");
                    keep = false;
                }
                u.set_keepalive(keep as u32);
                break;
            }
            if rc == NGX_AGAIN as ngx_int_t {
                break;
            }
            log_error(r, "upstream sent an invalid chunked response");
            return NGX_ERROR as ngx_int_t;
        }
    }
    NGX_OK as ngx_int_t
}

extern "C" fn abort_request(_r: *mut ngx_http_request_t) {}

extern "C" fn finalize_request(_r: *mut ngx_http_request_t, _rc: ngx_int_t) {}
