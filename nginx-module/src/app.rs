//! `wsgi_app FILE;`: the daemon's own config file tells nginx where to pass requests.
//!
//! The file is read with the daemon's config crate while nginx loads its configuration,
//! so `nginx -t` reports the same errors as `ngx-wsgi --check-config`, then compares the
//! daemon's settings with the location's (timeouts, body size, socket permissions). The
//! socket is reached through an implicit upstream with nginx's keepalive cache, as an
//! `upstream { keepalive 512; }` block would.

use core::ffi::{c_char, c_void};
use core::{mem, ptr};
use std::path::Path;

use ngx::core::{CoreModuleMainConf, NgxCoreModule, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_create, ngx_array_push, ngx_bufs_t, ngx_command_t, ngx_conf_full_name, ngx_conf_t,
    ngx_http_conf_ctx_t, ngx_http_max_module, ngx_http_module_t, ngx_http_upstream_add,
    ngx_http_upstream_module, ngx_http_upstream_srv_conf_t, ngx_module_t, ngx_pcalloc, ngx_pool_t,
    ngx_str_t, ngx_uint_t, ngx_url_t, NGX_HTTP_UPSTREAM_CREATE, NGX_LOG_EMERG, NGX_LOG_WARN,
    NGX_OK,
};
use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_log_error};
use ngx_wsgi_config::nginx::{check, upstream_url, NginxSide, Severity, WorkerUser};
use ngx_wsgi_config::{load_file, Parsed};

use crate::{core_loc_conf, directive_args, WsgiLocConf};

/// Idle connections to the daemon each nginx worker keeps for reuse, unless
/// `wsgi_app FILE keepalive=N;` says otherwise. nginx closes a connection after its
/// request when its pool is full, so with fewer than the requests a worker has in flight
/// at peak, every request past the pool pays a connect and a close on both sides (at 256
/// client connections, a pool of 32 served hello-world 0.99x the uWSGI stack, one of 256
/// 1.43x). A pool only fills as far as the concurrency it meets, and the daemon holds an
/// idle connection at the cost of a descriptor, not a thread.
const KEEPALIVE_CONNECTIONS: &str = "512";

/// The buffers a response is read into past its head, unless `wsgi_buffers` is set, or
/// one of the sizes nginx checks against them is set below their size
/// (`wsgi_busy_buffers_size`, `wsgi_temp_file_write_size`, a `wsgi_max_temp_file_size`
/// but 0), which then keeps `uwsgi_pass`'s default, 8 of a memory page, as `wsgi_pass`
/// does. nginx reads
/// into one buffer per `readv` and allocates them one by one as a response needs them, so
/// a small response uses none and the size sets the system calls of a large one: a 64
/// KiB page took 22 system calls of nginx's worker with 4 KiB buffers and 10 with 16 KiB
/// (served 16-20k against 26-30k requests/s, `wsgi_buffers 4 16k` to `4 64k` alike).
/// Eight of them keep a response of up to 128 KiB in memory for a slow client, where 8 of
/// 4 KiB write one past 32 KiB to a temporary file. The response's head is read into one
/// of that size too, unless `wsgi_buffer_size` is set, or the buffers are not these
/// (`wsgi_buffers` set, or the sizes above): then it is a page, as with `uwsgi_pass`:
/// nginx's first read takes a response of up to 16 KiB whole, where with a page it read
/// 4 KiB, asked the kernel how much was left and read it (nginx's worker answering an
/// 8 KiB POST with its echo: 7.1 system calls per request, from 9.1). A head of up to 16
/// KiB (cookies, a long `Content-Security-Policy`) is served, where a page answered 502
/// ("upstream sent too big header").
pub const APP_BUFFERS: ngx_bufs_t = ngx_bufs_t {
    num: 8,
    size: 16 * 1024,
};

extern "C" {
    /// nginx's upstream keepalive module, built into every nginx since 1.1.4.
    static mut ngx_http_upstream_keepalive_module: ngx_module_t;
}

/// What `wsgi_app` read, kept for the checks made once the location is merged.
pub struct AppBinding {
    /// The daemon's config file, as written in nginx.conf.
    file: String,
    parsed: Parsed,
    /// Where the directive is, for messages given after parsing.
    nginx_file: String,
    nginx_line: usize,
}

fn show(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// `wsgi_app FILE [keepalive=N|off];` (called through `crate::ngx_http_wsgi_app`, which
/// guards it against panics).
pub fn wsgi_app_directive(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this with its configuration and our location configuration.
    let (conf, args) = unsafe { (&mut *(conf as *mut WsgiLocConf), directive_args(cf)) };
    if conf.app.is_some() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"wsgi_app\" directive is duplicate");
        return NGX_CONF_ERROR;
    }
    if !conf.upstream.upstream.is_null() || !conf.pass_value.is_null() {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_app\" and \"wsgi_pass\" in one location: wsgi_app already says where to pass requests"
        );
        return NGX_CONF_ERROR;
    }
    let keepalive = match args.get(2).map(show) {
        None => Some(KEEPALIVE_CONNECTIONS.to_string()),
        Some(arg) => match arg.strip_prefix("keepalive=") {
            Some("off") => None,
            Some(n) if n.parse::<u32>().is_ok_and(|n| n > 0) => Some(n.to_string()),
            _ => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid parameter \"{arg}\" of \"wsgi_app\": expected keepalive=N (idle connections kept per worker) or keepalive=off"
                );
                return NGX_CONF_ERROR;
            }
        },
    };
    let mut name = args[1];
    // SAFETY: cf->cycle is the cycle being configured; a relative name is resolved against
    // nginx's configuration prefix, into the configuration pool.
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as isize {
        return NGX_CONF_ERROR;
    }
    let file = show(&name);
    let parsed = match load_file(Path::new(&file)) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for error in &errors.0 {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "wsgi_app: {error}");
            }
            return NGX_CONF_ERROR;
        }
    };
    for note in &parsed.notes {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "wsgi_app: {note}");
    }
    let (url, _) = match upstream_url(&parsed) {
        Ok(url) => url,
        Err(finding) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "wsgi_app {file}: {finding}");
            return NGX_CONF_ERROR;
        }
    };
    // SAFETY: cf is valid during the directive; what the upstream keeps of the URL is
    // copied into the configuration pool first.
    let upstream = unsafe { add_upstream(cf, &url) };
    if upstream.is_null() {
        return NGX_CONF_ERROR;
    }
    let reused = match &keepalive {
        // SAFETY: as above; `upstream` was just returned by ngx_http_upstream_add.
        Some(connections) => unsafe { reuse_connections(cf, upstream, connections) },
        None => Ok(()),
    }
    // SAFETY: as above.
    .and_then(|()| unsafe { crate::queue::install(cf, upstream, &parsed.config) });
    if let Err(reason) = reused {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "wsgi_app: cannot keep connections to {url} alive: {reason}"
        );
        return NGX_CONF_ERROR;
    }
    conf.upstream.upstream = upstream;
    // SAFETY: cf is the configuration of the location this directive is in.
    unsafe { core_loc_conf(cf) }.handler = Some(crate::upstream::ngx_http_wsgi_handler);
    // SAFETY: cf->conf_file is the file being parsed, valid during the directive.
    let conf_file = unsafe { &*(*cf).conf_file };
    let (nginx_file, nginx_line) = (show(&conf_file.file.name), conf_file.line);
    let binding = AppBinding {
        file,
        parsed,
        nginx_file,
        nginx_line,
    };
    // SAFETY: cf->pool lives as long as this configuration; the pool drops the binding
    // (a cleanup handler) when the configuration is freed.
    let binding = unsafe { crate::pool_allocate((*cf).pool, binding) };
    // SAFETY: null (out of memory) or the binding just written in the configuration
    // pool, which outlives the location configuration that refers to it.
    conf.app = unsafe { binding.as_ref() };
    if conf.app.is_none() {
        return NGX_CONF_ERROR;
    }
    NGX_CONF_OK
}

/// The implicit upstream for `url`, as `wsgi_pass URL` makes one.
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler.
unsafe fn add_upstream(cf: *mut ngx_conf_t, url: &str) -> *mut ngx_http_upstream_srv_conf_t {
    // SAFETY: per the caller, cf is valid; the copy lives in its pool, which outlives the
    // upstream.
    let Some(url) = (unsafe { ngx_str_t::from_bytes((*cf).pool, url.as_bytes()) }) else {
        return ptr::null_mut();
    };
    // SAFETY: an all-zero ngx_url_t is an empty one, as nginx's modules start them.
    let mut parsed: ngx_url_t = unsafe { mem::zeroed() };
    parsed.url = url;
    parsed.set_no_resolve(1);
    // SAFETY: per the caller, cf is a directive handler's configuration.
    unsafe { ngx_http_upstream_add(cf, &mut parsed, 0) }
}

/// Gives an implicit upstream nginx's keepalive cache, by running the `keepalive`
/// directive's own handler on it as if it were written in an `upstream` block.
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler of the http block;
/// `upstream` was returned by ngx_http_upstream_add during it.
unsafe fn reuse_connections(
    cf: *mut ngx_conf_t,
    upstream: *mut ngx_http_upstream_srv_conf_t,
    connections: &str,
) -> Result<(), String> {
    // SAFETY: per the caller, the configuration being parsed.
    let pool = unsafe { (*cf).pool };
    // SAFETY: per the caller, the upstream just added, in the configuration pool.
    let Some(slots) = unsafe { implicit_upstream_slots(pool, upstream) }? else {
        // An `upstream` block: its keepalive is the user's choice.
        return Ok(());
    };
    #[allow(
        clippy::deref_addrof,
        reason = "a static mut is borrowed through a raw pointer"
    )]
    // SAFETY: nginx's keepalive module, which nothing writes to while configuring.
    let keepalive = unsafe { &*(&raw const ngx_http_upstream_keepalive_module) };
    if !slots[keepalive.ctx_index].is_null() {
        // Another wsgi_app with the same socket did this already.
        return Ok(());
    }
    // SAFETY: an HTTP module's context is its ngx_http_module_t.
    let module_ctx = unsafe { &*(keepalive.ctx as *const ngx_http_module_t) };
    let create = module_ctx
        .create_srv_conf
        .ok_or("the keepalive module has no server configuration")?;
    // SAFETY: the module's own constructor, given the configuration being parsed.
    let keepalive_conf = unsafe { create(cf) };
    if keepalive_conf.is_null() {
        return Err("out of memory".into());
    }
    slots[keepalive.ctx_index] = keepalive_conf;
    let mut command = keepalive.commands;
    let set = loop {
        // SAFETY: the module's commands, an array ended by one with an empty name.
        let this = unsafe { &*command };
        if this.name.len == 0 {
            return Err("this nginx has no \"keepalive\" directive".into());
        }
        if this.name.as_bytes() == b"keepalive" {
            break this
                .set
                .ok_or("the \"keepalive\" directive has no handler")?;
        }
        command = command.wrapping_add(1);
    };
    // SAFETY: an array of two ngx_str_t in the configuration pool, or null.
    let args = unsafe { ngx_array_create(pool, 2, mem::size_of::<ngx_str_t>()) };
    if args.is_null() {
        return Err("out of memory".into());
    }
    // The words live in the configuration pool: the handler may keep pointers to them.
    for word in ["keepalive", connections] {
        // SAFETY: `pool` is the configuration's; a copy of the word in it, or none.
        let word = unsafe { ngx_str_t::from_bytes(pool, word.as_bytes()) };
        // SAFETY: the args array of ngx_str_t: room for one more, or null.
        let slot = unsafe { ngx_array_push(args) } as *mut ngx_str_t;
        let (Some(word), false) = (word, slot.is_null()) else {
            return Err("out of memory".into());
        };
        // SAFETY: the new element, uninitialized until written here.
        unsafe { slot.write(word) };
    }
    // SAFETY: per the caller, the configuration being parsed, in the http block.
    let (http, mut in_block) = unsafe { (&*((*cf).ctx as *const ngx_http_conf_ctx_t), *cf) };
    let mut block = ngx_http_conf_ctx_t {
        main_conf: http.main_conf,
        srv_conf: slots.as_mut_ptr(),
        loc_conf: http.loc_conf,
    };
    in_block.args = args;
    in_block.ctx = ptr::from_mut(&mut block).cast();
    // SAFETY: the directive's handler, run as nginx runs it in an `upstream` block: the
    // configuration with its words, the command, and the module's server configuration.
    let rv = unsafe { set(&mut in_block, command, keepalive_conf) };
    if rv.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result of a directive handler is its NUL-terminated message.
    Err(unsafe { core::ffi::CStr::from_ptr(rv) }
        .to_string_lossy()
        .into_owned())
}

/// The server configuration slots of a `wsgi_app`'s implicit upstream, one per HTTP
/// module as an `upstream` block has, made on first use: nginx's upstream module's holds
/// the upstream, the keepalive module's its cache of connections, ours the queue
/// (`queue.rs`). None for an `upstream` block of the user's, whose slots are its own.
///
/// # Safety
/// `pool` is the configuration's; `upstream` was returned by ngx_http_upstream_add while
/// it is parsed. The slots live in that pool, as long as the configuration.
pub unsafe fn implicit_upstream_slots<'a>(
    pool: *mut ngx_pool_t,
    upstream: *mut ngx_http_upstream_srv_conf_t,
) -> Result<Option<&'a mut [*mut c_void]>, String> {
    // SAFETY: per the caller, the upstream, in the configuration pool.
    let upstream = unsafe { &mut *upstream };
    if upstream.flags & NGX_HTTP_UPSTREAM_CREATE as ngx_uint_t != 0 {
        return Ok(None);
    }
    // SAFETY: read-only after nginx counted the modules, before any configuration.
    let (modules, upstream_index) =
        unsafe { (ngx_http_max_module, ngx_http_upstream_module.ctx_index) };
    if upstream.srv_conf.is_null() {
        // SAFETY: a zeroed array in the configuration pool, or null.
        let slots = unsafe { ngx_pcalloc(pool, modules * mem::size_of::<*mut c_void>()) };
        if slots.is_null() {
            return Err("out of memory".into());
        }
        upstream.srv_conf = slots.cast();
        // SAFETY: the array just made, a slot per HTTP module.
        unsafe { *upstream.srv_conf.add(upstream_index) = ptr::from_mut(upstream).cast() };
    }
    // SAFETY: an implicit upstream's slots, made above, one per HTTP module.
    Ok(Some(unsafe {
        core::slice::from_raw_parts_mut(upstream.srv_conf, modules)
    }))
}

/// The checks between the daemon's config and the merged location; `false` fails the
/// configuration (the reasons are logged).
///
/// # Safety
/// `cf` is the configuration nginx passes to a merge callback; `conf` is merged.
pub unsafe fn check_app(cf: *mut ngx_conf_t, conf: &WsgiLocConf) -> bool {
    let Some(app) = conf.app else {
        return true;
    };
    // During a merge, cf->ctx is this location's ngx_http_conf_ctx_t, whose core module
    // slots are merged before ours (nginx merges module by module, core first).
    // SAFETY: cf is the configuration being merged.
    let clcf = unsafe { core_loc_conf(cf) };
    // SAFETY: as above.
    let cscf = NgxHttpCoreModule::server_conf(unsafe { &*cf })
        .expect("the core module's server configuration");
    let buffers = cscf.large_client_header_buffers;
    let side = NginxSide {
        read_timeout_ms: conf.upstream.read_timeout as u64,
        client_max_body_size: clcf.client_max_body_size.max(0) as u64,
        max_request_head: (buffers.num as u64) * (buffers.size as u64),
        // SAFETY: cf->cycle is the cycle being configured.
        worker: unsafe { worker_user(cf) },
    };
    let mut ok = true;
    for finding in check(&app.parsed, &side) {
        // SAFETY: cf->log is the configuration's log.
        let log = unsafe { (*cf).log };
        let where_ = format!("in {}:{}", app.nginx_file, app.nginx_line);
        match finding.severity {
            Severity::Error => {
                ok = false;
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    log,
                    "wsgi_app {}: {finding} {where_}",
                    app.file
                );
            }
            Severity::Warning => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "wsgi_app {}: {finding} {where_}",
                    app.file
                );
            }
        }
    }
    ok
}

/// The user nginx's workers will run as: the `user` directive's when the master is root,
/// nginx's built-in default (nobody) when it has none, else whoever runs nginx.
///
/// # Safety
/// `cf` is a configuration being parsed.
unsafe fn worker_user(cf: *mut ngx_conf_t) -> WorkerUser {
    use nix::unistd::{getegid, geteuid, Group, User};
    let (euid, egid) = (geteuid(), getegid());
    if !euid.is_root() {
        let name = User::from_uid(euid)
            .ok()
            .flatten()
            .map_or_else(|| euid.to_string(), |u| u.name);
        return WorkerUser::lookup(&name, euid.as_raw(), egid.as_raw());
    }
    // The core module's configuration exists from the start of parsing; its user fields
    // are NGX_CONF_UNSET until a `user` directive (usually the first line) sets them.
    // SAFETY: cf is the configuration being parsed.
    let ccf = NgxCoreModule::main_conf(unsafe { &*cf }).expect("the core module's configuration");
    if ccf.user != u32::MAX && !ccf.username.is_null() {
        // SAFETY: username is the NUL-terminated name the `user` directive stored.
        let name = unsafe { core::ffi::CStr::from_ptr(ccf.username) }
            .to_string_lossy()
            .into_owned();
        return WorkerUser::lookup(&name, ccf.user, ccf.group);
    }
    let nobody = User::from_name("nobody").ok().flatten();
    let nogroup = Group::from_name("nogroup").ok().flatten();
    WorkerUser::lookup(
        "nobody",
        nobody.map_or(65534, |u| u.uid.as_raw()),
        nogroup.map_or(65534, |g| g.gid.as_raw()),
    )
}
