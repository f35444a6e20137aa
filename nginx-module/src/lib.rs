//! `ngx_http_wsgi_module`: `wsgi_pass`, a uwsgi-protocol upstream handler for nginx, and
//! `wsgi_app`, which takes the address and checks from the daemon's own config file.
//!
//! Read in the order of nginx's own `ngx_http_uwsgi_module.c`: types, directives, module
//! context, then the configuration callbacks. The request side (content handler and
//! upstream callbacks) is in `upstream.rs`, `wsgi_app` in `app.rs`. Raw FFI stays in these
//! files, each `unsafe` block with the nginx guarantee it relies on.
//!
//! The `wsgi_*` directives mirror the `uwsgi_*` family (same contexts, defaults and
//! meaning).

mod app;
mod queue;
mod upstream;

use core::ffi::{c_char, c_void};
use core::{mem, ptr};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_create, ngx_array_push, ngx_array_t, ngx_command_t, ngx_conf_bitmask_t,
    ngx_conf_merge_path_value, ngx_conf_set_bitmask_slot, ngx_conf_set_bufs_slot,
    ngx_conf_set_flag_slot, ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_set_path_slot,
    ngx_conf_set_size_slot, ngx_conf_set_str_array_slot, ngx_conf_t, ngx_flag_t, ngx_hash_init_t,
    ngx_http_compile_complex_value, ngx_http_compile_complex_value_t, ngx_http_complex_value_t,
    ngx_http_core_loc_conf_t, ngx_http_get_variable_index, ngx_http_module_t,
    ngx_http_upstream_add, ngx_http_upstream_bind_set_slot, ngx_http_upstream_conf_t,
    ngx_http_upstream_hide_headers_hash, ngx_int_t, ngx_module_t, ngx_msec_t, ngx_path_init_t,
    ngx_pcalloc, ngx_str_t, ngx_uint_t, ngx_url_t, NGX_CONF_1MORE, NGX_CONF_BITMASK_SET,
    NGX_CONF_FLAG, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE1234, NGX_CONF_TAKE2,
    NGX_CONF_TAKE23, NGX_HTTP_LIF_CONF, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF, NGX_HTTP_UPSTREAM_FT_ERROR,
    NGX_HTTP_UPSTREAM_FT_TIMEOUT, NGX_LOG_EMERG, NGX_OK,
};
use ngx::ffi::{ngx_palloc, ngx_pool_cleanup_add, ngx_pool_t};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_string};

/// `value` moved into `pool`, dropped when the pool is destroyed; null when out of memory.
/// (`ngx::core::Pool::allocate` writes the value before it checks the allocation.)
///
/// # Safety
/// `pool` is a live nginx pool.
pub unsafe fn pool_allocate<T>(pool: *mut ngx_pool_t, value: T) -> *mut T {
    unsafe extern "C" fn drop_value<T>(data: *mut c_void) {
        // SAFETY: the value pool_allocate wrote, dropped once, by its pool's cleanup.
        unsafe { ptr::drop_in_place(data as *mut T) };
    }
    const { assert!(mem::align_of::<T>() <= mem::align_of::<u64>()) };
    // SAFETY: per the caller; a cleanup entry without a handler does nothing.
    let cleanup = unsafe { ngx_pool_cleanup_add(pool, 0) };
    // SAFETY: per the caller; nginx's pool aligns allocations to NGX_ALIGNMENT (that of
    // unsigned long), enough for T per the assertion.
    let place = unsafe { ngx_palloc(pool, mem::size_of::<T>()) } as *mut T;
    if cleanup.is_null() || place.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: room for a T, written once; then the cleanup that drops it.
    unsafe {
        place.write(value);
        (*cleanup).handler = Some(drop_value::<T>);
        (*cleanup).data = place.cast();
    }
    place
}

// nginx's NGX_CONF_UNSET_* markers: casts of -1 that bindgen does not carry over.
const UNSET_FLAG: ngx_flag_t = -1;
const UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const UNSET_SIZE: usize = usize::MAX;
const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const UNSET_PTR: *mut c_void = usize::MAX as *mut c_void;

/// One uwsgi var sent with every request: `wsgi_param NAME VALUE [if_not_empty]`, or one
/// of the defaults.
#[repr(C)]
pub struct WsgiParam {
    key: ngx_str_t,
    value: ngx_http_complex_value_t,
    skip_empty: bool,
    /// The value is one variable (`$name`, as most of `uwsgi_params` are): its index, read
    /// per request with no script run and no copy; -1 otherwise.
    variable: ngx_int_t,
}

/// The location configuration.
#[repr(C)]
pub struct WsgiLocConf {
    upstream: ngx_http_upstream_conf_t,
    /// `wsgi_param`s of this level (WsgiParam), null when there are none.
    user_params: *mut ngx_array_t,
    /// What requests send: the defaults not overridden, then the user's (after merge).
    params: *mut ngx_array_t,
    /// Some param is named HTTP_*: the request header it names is not sent as well (set
    /// at merge, so that requests without such a param do not look).
    replaces_headers: bool,
    /// `wsgi_pass` with variables: the address, evaluated for each request.
    pass_value: *mut ngx_http_complex_value_t,
    /// `wsgi_modifier1`, `wsgi_modifier2`: the packet header's modifiers.
    modifier1: ngx_uint_t,
    modifier2: ngx_uint_t,
    /// `wsgi_app`: the daemon's config read for this location, in the configuration pool;
    /// None without one (create_loc_conf zeroes the configuration).
    app: Option<&'static app::AppBinding>,
    /// `wsgi_buffers` is in this level or an enclosing one: `wsgi_app` keeps the user's
    /// buffers rather than its own (set at merge).
    buffers_chosen: bool,
    /// `wsgi_buffer_size` is in this level or an enclosing one: `wsgi_app` keeps it
    /// (set at merge).
    head_buffer_chosen: bool,
    /// Merged: the values are this level's own and what it inherited. The `http` level is
    /// never merged (it is only ever a parent): its values are its own or unset.
    merged: bool,
}

/// The params Debian's `uwsgi_params` file sets, which `wsgi_pass` sends without an
/// `include`: `wsgi_param` adds to them or overrides one.
const DEFAULT_PARAMS: &[(&str, &str, bool)] = &[
    ("QUERY_STRING", "$query_string", false),
    ("REQUEST_METHOD", "$request_method", false),
    ("CONTENT_TYPE", "$content_type", false),
    ("CONTENT_LENGTH", "$content_length", false),
    ("REQUEST_URI", "$request_uri", false),
    ("PATH_INFO", "$document_uri", false),
    ("DOCUMENT_ROOT", "$document_root", false),
    ("SERVER_PROTOCOL", "$server_protocol", false),
    ("REQUEST_SCHEME", "$scheme", false),
    ("HTTPS", "$https", true),
    ("REMOTE_ADDR", "$remote_addr", false),
    ("REMOTE_PORT", "$remote_port", false),
    ("SERVER_PORT", "$server_port", false),
    ("SERVER_NAME", "$server_name", false),
];

/// Headers of the backend's response nginx does not pass on, as for uwsgi_pass.
static mut HIDE_HEADERS: [ngx_str_t; 6] = [
    ngx_string!("X-Accel-Expires"),
    ngx_string!("X-Accel-Redirect"),
    ngx_string!("X-Accel-Limit-Rate"),
    ngx_string!("X-Accel-Buffering"),
    ngx_string!("X-Accel-Charset"),
    ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    },
];

/// Buffered responses spill into nginx's uwsgi temporary directory.
static mut TEMP_PATH: ngx_path_init_t = ngx_path_init_t {
    name: ngx_str_t {
        len: ngx::ffi::NGX_HTTP_UWSGI_TEMP_PATH.count_bytes(),
        data: ngx::ffi::NGX_HTTP_UWSGI_TEMP_PATH.as_ptr() as *mut u8,
    },
    level: [1, 2, 0],
};

/// `wsgi_next_upstream`'s values, as `uwsgi_next_upstream`'s.
static mut NEXT_UPSTREAM_MASKS: [ngx_conf_bitmask_t; 12] = [
    mask(ngx_string!("error"), NGX_HTTP_UPSTREAM_FT_ERROR),
    mask(ngx_string!("timeout"), NGX_HTTP_UPSTREAM_FT_TIMEOUT),
    mask(
        ngx_string!("invalid_header"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_INVALID_HEADER,
    ),
    mask(
        ngx_string!("non_idempotent"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT,
    ),
    mask(
        ngx_string!("http_500"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_HTTP_500,
    ),
    mask(
        ngx_string!("http_503"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_HTTP_503,
    ),
    mask(
        ngx_string!("http_403"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_HTTP_403,
    ),
    mask(
        ngx_string!("http_404"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_HTTP_404,
    ),
    mask(
        ngx_string!("http_429"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_HTTP_429,
    ),
    mask(
        ngx_string!("updating"),
        ngx::ffi::NGX_HTTP_UPSTREAM_FT_UPDATING,
    ),
    mask(ngx_string!("off"), ngx::ffi::NGX_HTTP_UPSTREAM_FT_OFF),
    mask(
        ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        },
        0,
    ),
];

const fn mask(name: ngx_str_t, mask: u32) -> ngx_conf_bitmask_t {
    ngx_conf_bitmask_t {
        name,
        mask: mask as ngx_uint_t,
    }
}

/// The contexts of every directive but wsgi_pass, as for the uwsgi_* family.
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

type Setter = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// A directive that stores into a field of the location configuration with one of
/// nginx's own slot setters (or ours, for wsgi_param).
const fn slot(
    name: ngx_str_t,
    args: u32,
    set: Setter,
    offset: usize,
    post: *mut c_void,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (ANY_LEVEL | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset,
        post,
    }
}

macro_rules! field {
    ($($path:tt)+) => { mem::offset_of!(WsgiLocConf, $($path)+) };
}

const NONE: *mut c_void = ptr::null_mut();

static mut NGX_HTTP_WSGI_COMMANDS: [ngx_command_t; 30] = [
    ngx_command_t {
        name: ngx_string!("wsgi_app"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_TAKE12) as ngx_uint_t,
        set: Some(ngx_http_wsgi_app),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("wsgi_pass"),
        type_: (NGX_HTTP_LOC_CONF | NGX_HTTP_LIF_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_wsgi_pass),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    slot(
        ngx_string!("wsgi_param"),
        NGX_CONF_TAKE23,
        ngx_http_wsgi_param,
        0,
        NONE,
    ),
    slot(
        ngx_string!("wsgi_modifier1"),
        NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        field!(modifier1),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_modifier2"),
        NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        field!(modifier2),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_pass_request_headers"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.pass_request_headers),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_pass_request_body"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.pass_request_body),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_connect_timeout"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(upstream.connect_timeout),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_send_timeout"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(upstream.send_timeout),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_read_timeout"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(upstream.read_timeout),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_buffering"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.buffering),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_request_buffering"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.request_buffering),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_buffer_size"),
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        field!(upstream.buffer_size),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_buffers"),
        NGX_CONF_TAKE2,
        ngx_conf_set_bufs_slot,
        field!(upstream.bufs),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_busy_buffers_size"),
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        field!(upstream.busy_buffers_size_conf),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_max_temp_file_size"),
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        field!(upstream.max_temp_file_size_conf),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_temp_file_write_size"),
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        field!(upstream.temp_file_write_size_conf),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_temp_path"),
        NGX_CONF_TAKE1234,
        ngx_conf_set_path_slot,
        field!(upstream.temp_path),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_next_upstream"),
        NGX_CONF_1MORE,
        ngx_conf_set_bitmask_slot,
        field!(upstream.next_upstream),
        &raw mut NEXT_UPSTREAM_MASKS as *mut c_void,
    ),
    slot(
        ngx_string!("wsgi_next_upstream_tries"),
        NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        field!(upstream.next_upstream_tries),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_next_upstream_timeout"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(upstream.next_upstream_timeout),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_intercept_errors"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.intercept_errors),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_hide_header"),
        NGX_CONF_TAKE1,
        ngx_conf_set_str_array_slot,
        field!(upstream.hide_headers),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_pass_header"),
        NGX_CONF_TAKE1,
        ngx_conf_set_str_array_slot,
        field!(upstream.pass_headers),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_ignore_headers"),
        NGX_CONF_1MORE,
        ngx_conf_set_bitmask_slot,
        field!(upstream.ignore_headers),
        &raw mut ngx::ffi::ngx_http_upstream_ignore_headers_masks as *mut c_void,
    ),
    slot(
        ngx_string!("wsgi_bind"),
        NGX_CONF_TAKE12,
        ngx_http_upstream_bind_set_slot,
        field!(upstream.local),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_socket_keepalive"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.socket_keepalive),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_ignore_client_abort"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(upstream.ignore_client_abort),
        NONE,
    ),
    slot(
        ngx_string!("wsgi_limit_rate"),
        NGX_CONF_TAKE1,
        #[cfg(not(ngx_limit_rate_complex))]
        ngx_conf_set_size_slot,
        // nginx 1.27.0+: a size with variables, as uwsgi_limit_rate.
        #[cfg(ngx_limit_rate_complex)]
        ngx::ffi::ngx_http_set_complex_value_size_slot,
        field!(upstream.limit_rate),
        NONE,
    ),
    ngx_command_t::empty(),
];

static NGX_HTTP_WSGI_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(ngx_http_wsgi_add_variables),
    postconfiguration: None,
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(ngx_http_wsgi_create_loc_conf),
    merge_loc_conf: Some(ngx_http_wsgi_merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_wsgi_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_wsgi_module: ngx_module_t = ngx_module_t {
    ctx: &raw const NGX_HTTP_WSGI_MODULE_CTX as _,
    // SAFETY: taking the address of the static command table, which nginx reads and
    // never frees; no reference to the `static mut` is created.
    commands: unsafe { &raw mut NGX_HTTP_WSGI_COMMANDS[0] },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(queue::init_process),
    ..ngx_module_t::default()
};

/// The directive's arguments as byte slices (the name first).
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler.
unsafe fn directive_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: during a directive handler, cf->args is an array of ngx_str_t holding the
    // directive's words, alive for the whole configuration parse.
    unsafe { (*(*cf).args).as_slice::<ngx_str_t>() }
}

/// The core module's location configuration of the block being parsed.
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler or a merge callback of
/// an HTTP module, so its ctx is an ngx_http_conf_ctx_t.
unsafe fn core_loc_conf<'a>(cf: *mut ngx_conf_t) -> &'a mut ngx_http_core_loc_conf_t {
    // SAFETY: as above: `cf` is valid for the callback.
    let cf = unsafe { &*cf };
    // The core module's slot is filled in every HTTP block (nginx makes it first).
    NgxHttpCoreModule::location_conf_mut(cf).expect("the core module's location configuration")
}

/// This module, for the `ngx` crate's typed access to its configurations.
pub struct WsgiModule;

impl ngx::http::HttpModule for WsgiModule {
    fn module() -> &'static ngx_module_t {
        // SAFETY: nginx writes the module (its indexes) only while it loads the
        // configuration, before any of this module's code asks for it.
        unsafe { &*core::ptr::addr_of!(ngx_http_wsgi_module) }
    }
}

// SAFETY: this module's slot in a location's configuration holds the WsgiLocConf that
// create_loc_conf made for it.
unsafe impl HttpModuleLocationConf for WsgiModule {
    type LocationConf = WsgiLocConf;
}

/// Runs a configuration-phase callback's body, turning a panic into a configuration error
/// at the file and line nginx is reading: a panic must not unwind into nginx's master,
/// where it would abort it (on `nginx -s reload`, the running server with it), as the
/// request callbacks are guarded in upstream.rs.
fn conf_guarded<T>(cf: *mut ngx_conf_t, what: &str, failed: T, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "internal error in ngx_http_wsgi_module's {what}: the configuration is refused"
            );
            failed
        }
    }
}

/// The module's variables: `$wsgi_queue_time` (`queue.rs`).
extern "C" fn ngx_http_wsgi_add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    conf_guarded(cf, "variables", ngx::ffi::NGX_ERROR as ngx_int_t, || {
        let mut name = ngx_string!("wsgi_queue_time");
        // SAFETY: the configuration nginx passes to a preconfiguration callback; the
        // name is static.
        let variable = unsafe {
            ngx::ffi::ngx_http_add_variable(
                cf,
                &mut name,
                ngx::ffi::NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t,
            )
        };
        // SAFETY: null, or the variable nginx just added, in the configuration pool.
        match unsafe { variable.as_mut() } {
            Some(variable) => {
                variable.get_handler = Some(queue::queue_time_variable);
                NGX_OK as ngx_int_t
            }
            None => ngx::ffi::NGX_ERROR as ngx_int_t,
        }
    })
}

/// `wsgi_app FILE [keepalive=N|off];`
extern "C" fn ngx_http_wsgi_app(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guarded(cf, "wsgi_app directive", NGX_CONF_ERROR, || {
        app::wsgi_app_directive(cf, cmd, conf)
    })
}

/// `wsgi_pass ADDRESS;`: `unix:/path`, `host:port` or an upstream block's name.
extern "C" fn ngx_http_wsgi_pass(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guarded(cf, "wsgi_pass directive", NGX_CONF_ERROR, || {
        wsgi_pass_directive(cf, cmd, conf)
    })
}

fn wsgi_pass_directive(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this with its configuration and our location configuration.
    let (conf, args) = unsafe { (&mut *(conf as *mut WsgiLocConf), directive_args(cf)) };
    if !conf.upstream.upstream.is_null() || !conf.pass_value.is_null() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"wsgi_pass\" directive is duplicate");
        return NGX_CONF_ERROR;
    }
    let mut address = args[1];
    // SAFETY: cf is the configuration of the location this directive is in.
    let clcf = unsafe { core_loc_conf(cf) };
    clcf.handler = Some(upstream::ngx_http_wsgi_handler);
    if address.as_bytes().contains(&b'$') {
        // Evaluated for each request (upstream::resolve_pass_value), as uwsgi_pass does.
        // SAFETY: cf is valid during the directive; zeroed room in its pool, or null.
        let value = unsafe { ngx_pcalloc((*cf).pool, mem::size_of::<ngx_http_complex_value_t>()) }
            as *mut ngx_http_complex_value_t;
        // SAFETY: the room just allocated, zeroed: an empty complex value.
        let Some(compiled) = (unsafe { value.as_mut() }) else {
            return NGX_CONF_ERROR;
        };
        // SAFETY: cf is the configuration of the directive being handled.
        if !unsafe { compile_complex_value(cf, address, compiled) } {
            return NGX_CONF_ERROR;
        }
        conf.pass_value = value;
        return NGX_CONF_OK;
    }
    if let Some(rest) = address.as_bytes().strip_prefix(b"uwsgi://") {
        address = ngx_str_t {
            len: rest.len(),
            data: rest.as_ptr() as *mut u8,
        };
    }
    // SAFETY: ngx_url_t is a plain C struct; all-zero is its "nothing set" state.
    let mut url: ngx_url_t = unsafe { mem::zeroed() };
    url.url = address;
    url.set_no_resolve(1);
    // SAFETY: cf is valid; ngx_http_upstream_add copies what it keeps from `url`.
    conf.upstream.upstream = unsafe { ngx_http_upstream_add(cf, &mut url, 0) };
    if conf.upstream.upstream.is_null() {
        return NGX_CONF_ERROR;
    }
    if address.as_bytes().ends_with(b"/") {
        clcf.set_auto_redirect(1);
    }
    NGX_CONF_OK
}

/// `wsgi_param NAME VALUE [if_not_empty];`
extern "C" fn ngx_http_wsgi_param(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    conf_guarded(cf, "wsgi_param directive", NGX_CONF_ERROR, || {
        wsgi_param_directive(cf, cmd, conf)
    })
}

fn wsgi_param_directive(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this with its configuration and our location configuration.
    let (conf, args) = unsafe { (&mut *(conf as *mut WsgiLocConf), directive_args(cf)) };
    let skip_empty = match args.get(3).map(ngx_str_t::as_bytes) {
        None => false,
        Some(b"if_not_empty") => true,
        Some(other) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid parameter \"{}\" of \"wsgi_param\": expected \"if_not_empty\"",
                String::from_utf8_lossy(other)
            );
            return NGX_CONF_ERROR;
        }
    };
    // SAFETY: cf is valid during the directive; the array lives in the config pool.
    let pushed = unsafe { push_param(cf, &mut conf.user_params, args[1], args[2], skip_empty) };
    if pushed {
        NGX_CONF_OK
    } else {
        NGX_CONF_ERROR
    }
}

/// Compiles a param's value and appends it to `array` (created on first use).
///
/// # Safety
/// `cf` is a valid configuration; `array` is null or an array of WsgiParam.
unsafe fn push_param(
    cf: *mut ngx_conf_t,
    array: &mut *mut ngx_array_t,
    key: ngx_str_t,
    value: ngx_str_t,
    skip_empty: bool,
) -> bool {
    if array.is_null() {
        // SAFETY: per this function's contract; the array lives in the configuration pool.
        *array = unsafe { ngx_array_create((*cf).pool, 16, mem::size_of::<WsgiParam>()) };
        if array.is_null() {
            return false;
        }
    }
    // SAFETY: per this function's contract, an array of WsgiParam: room for one more.
    let param = unsafe { ngx_array_push(*array) } as *mut WsgiParam;
    if param.is_null() {
        return false;
    }
    // SAFETY: an all-zero complex value is an empty one, as nginx's modules start them.
    let empty: ngx_http_complex_value_t = unsafe { mem::zeroed() };
    // SAFETY: the new element, uninitialized until written here.
    unsafe {
        param.write(WsgiParam {
            key,
            value: empty,
            skip_empty,
            variable: -1,
        })
    };
    // SAFETY: written just now, and nothing else refers to it.
    let param = unsafe { &mut *param };
    if let Some(name) = ngx_wsgi_config::nginx::lone_variable(value.as_bytes()) {
        let mut name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // An unknown name is reported when the variables are resolved, as for any.
        // SAFETY: cf is valid during the directive.
        param.variable = unsafe { ngx_http_get_variable_index(cf, &mut name) };
        return param.variable != ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    // SAFETY: per this function's contract.
    unsafe { compile_complex_value(cf, value, &mut param.value) }
}

/// Compiles `value` (text with variables) into `into`, which lives in the configuration
/// pool; false when nginx reported an error.
///
/// # Safety
/// `cf` is the configuration a directive handler or a merge was given.
unsafe fn compile_complex_value(
    cf: *mut ngx_conf_t,
    mut value: ngx_str_t,
    into: &mut ngx_http_complex_value_t,
) -> bool {
    // SAFETY: an all-zero compile request is an empty one, as nginx's modules start them.
    let mut ccv: ngx_http_compile_complex_value_t = unsafe { mem::zeroed() };
    ccv.cf = cf;
    ccv.value = &mut value;
    ccv.complex_value = into;
    // SAFETY: per this function's contract.
    unsafe { ngx_http_compile_complex_value(&mut ccv) == NGX_OK as isize }
}

extern "C" fn ngx_http_wsgi_create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    conf_guarded(cf, "create_loc_conf", ptr::null_mut(), || {
        create_loc_conf(cf)
    })
}

fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf is valid during configuration; the memory lives in its pool.
    let conf = unsafe { ngx_pcalloc((*cf).pool, mem::size_of::<WsgiLocConf>()) };
    // SAFETY: zeroed just now; all-zero is a valid start for every field (set to "unset"
    // below where it matters).
    let Some(conf) = (unsafe { (conf as *mut WsgiLocConf).as_mut() }) else {
        return ptr::null_mut();
    };
    conf.modifier1 = UNSET_UINT;
    conf.modifier2 = UNSET_UINT;
    let u = &mut conf.upstream;
    u.next_upstream_tries = UNSET_UINT;
    u.buffering = UNSET_FLAG;
    u.request_buffering = UNSET_FLAG;
    u.ignore_client_abort = UNSET_FLAG;
    u.force_ranges = UNSET_FLAG;
    u.local = UNSET_PTR as _;
    u.socket_keepalive = UNSET_FLAG;
    u.connect_timeout = UNSET_MSEC;
    u.send_timeout = UNSET_MSEC;
    u.read_timeout = UNSET_MSEC;
    u.next_upstream_timeout = UNSET_MSEC;
    u.send_lowat = UNSET_SIZE;
    u.buffer_size = UNSET_SIZE;
    #[cfg(not(ngx_limit_rate_complex))]
    {
        u.limit_rate = UNSET_SIZE;
    }
    #[cfg(ngx_limit_rate_complex)]
    {
        u.limit_rate = UNSET_PTR as _;
    }
    u.busy_buffers_size_conf = UNSET_SIZE;
    u.max_temp_file_size_conf = UNSET_SIZE;
    u.temp_file_write_size_conf = UNSET_SIZE;
    u.pass_request_headers = UNSET_FLAG;
    u.pass_request_body = UNSET_FLAG;
    u.intercept_errors = UNSET_FLAG;
    u.hide_headers = UNSET_PTR as _;
    u.pass_headers = UNSET_PTR as _;
    u.ssl_name = UNSET_PTR as _;
    u.ssl_certificate = UNSET_PTR as _;
    u.ssl_certificate_key = UNSET_PTR as _;
    u.ssl_passwords = UNSET_PTR as _;
    u.cyclic_temp_file = 0;
    u.set_change_buffering(1);
    u.module = ngx_string!("wsgi");
    ptr::from_mut(conf).cast()
}

fn merge<T: PartialEq + Copy>(value: &mut T, parent: T, unset: T, default: T) {
    if *value == unset {
        *value = if parent == unset { default } else { parent };
    }
}

extern "C" fn ngx_http_wsgi_merge_loc_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    conf_guarded(cf, "merge_loc_conf", NGX_CONF_ERROR, || {
        merge_loc_conf(cf, parent, child)
    })
}

fn merge_loc_conf(cf: *mut ngx_conf_t, parent: *mut c_void, child: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes two of our location configurations, created by
    // ngx_http_wsgi_create_loc_conf, the parent's already merged or at its defaults.
    let (prev, conf) = unsafe {
        (
            &mut *(parent as *mut WsgiLocConf),
            &mut *(child as *mut WsgiLocConf),
        )
    };
    // SAFETY: ngx_pagesize is set by nginx before configuration is read.
    let page = unsafe { ngx::ffi::ngx_pagesize };
    merge(&mut conf.modifier1, prev.modifier1, UNSET_UINT, 0);
    merge(&mut conf.modifier2, prev.modifier2, UNSET_UINT, 0);
    for (value, name) in [
        (conf.modifier1, "wsgi_modifier1"),
        (conf.modifier2, "wsgi_modifier2"),
    ] {
        if value > 255 {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{name}\" must be from 0 to 255");
            return NGX_CONF_ERROR;
        }
    }
    conf.merged = true;
    // `wsgi_buffers` and `wsgi_buffer_size` in this location or one enclosing it, `http`
    // included (nginx's slots refuse a second one at a level, so a value here, before the
    // merge, is this level's own; the `http` level's values are always its own).
    let (prev_chose_buffers, prev_chose_head_buffer) = if prev.merged {
        (prev.buffers_chosen, prev.head_buffer_chosen)
    } else {
        (
            prev.upstream.bufs.num != 0,
            prev.upstream.buffer_size != UNSET_SIZE,
        )
    };
    conf.buffers_chosen = conf.upstream.bufs.num != 0 || prev_chose_buffers;
    let app_may_choose_buffers = conf.app.is_some() && !conf.buffers_chosen;
    conf.head_buffer_chosen = conf.upstream.buffer_size != UNSET_SIZE || prev_chose_head_buffer;
    let (c, p) = (&mut conf.upstream, &prev.upstream);
    merge(
        &mut c.next_upstream_tries,
        p.next_upstream_tries,
        UNSET_UINT,
        0,
    );
    merge(&mut c.buffering, p.buffering, UNSET_FLAG, 1);
    merge(&mut c.request_buffering, p.request_buffering, UNSET_FLAG, 1);
    #[cfg(ngx_unbuffered_body_unverified)]
    if c.request_buffering == 0 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_request_buffering off\" is not supported with this nginx version yet (on \
             nginx 1.31.4 the request body does not reach the server and the request times out; \
             it works with nginx 1.22): leave it on, the default"
        );
        return NGX_CONF_ERROR;
    }
    merge(
        &mut c.ignore_client_abort,
        p.ignore_client_abort,
        UNSET_FLAG,
        0,
    );
    merge(&mut c.force_ranges, p.force_ranges, UNSET_FLAG, 0);
    merge(&mut c.local, p.local, UNSET_PTR as _, ptr::null_mut());
    merge(&mut c.socket_keepalive, p.socket_keepalive, UNSET_FLAG, 0);
    merge(&mut c.connect_timeout, p.connect_timeout, UNSET_MSEC, 60000);
    merge(&mut c.send_timeout, p.send_timeout, UNSET_MSEC, 60000);
    merge(&mut c.read_timeout, p.read_timeout, UNSET_MSEC, 60000);
    merge(
        &mut c.next_upstream_timeout,
        p.next_upstream_timeout,
        UNSET_MSEC,
        0,
    );
    merge(&mut c.send_lowat, p.send_lowat, UNSET_SIZE, 0);
    merge(&mut c.buffer_size, p.buffer_size, UNSET_SIZE, page);
    #[cfg(not(ngx_limit_rate_complex))]
    merge(&mut c.limit_rate, p.limit_rate, UNSET_SIZE, 0);
    #[cfg(ngx_limit_rate_complex)]
    merge(
        &mut c.limit_rate,
        p.limit_rate,
        UNSET_PTR as _,
        ptr::null_mut(),
    );
    // Merged before the buffers: set below wsgi_app's buffer size (and valid with
    // page-sized ones), they keep the page-sized ones.
    for (value, parent) in [
        (&mut c.busy_buffers_size_conf, p.busy_buffers_size_conf),
        (
            &mut c.temp_file_write_size_conf,
            p.temp_file_write_size_conf,
        ),
        (&mut c.max_temp_file_size_conf, p.max_temp_file_size_conf),
    ] {
        merge(value, parent, UNSET_SIZE, UNSET_SIZE);
    }
    let below_app_buffers = |size: usize| size != UNSET_SIZE && size < app::APP_BUFFERS.size;
    let sized_for_pages = below_app_buffers(c.busy_buffers_size_conf)
        || below_app_buffers(c.temp_file_write_size_conf)
        || (c.max_temp_file_size_conf != 0 && below_app_buffers(c.max_temp_file_size_conf));
    // wsgi_app's buffers, and its head buffer of their size, unless the user chose theirs.
    let app_buffers = app_may_choose_buffers && !sized_for_pages;
    if c.bufs.num == 0 {
        c.bufs = if app_buffers {
            app::APP_BUFFERS
        } else if p.bufs.num != 0 {
            p.bufs
        } else {
            ngx::ffi::ngx_bufs_t { num: 8, size: page }
        };
    }
    if app_buffers && !conf.head_buffer_chosen {
        c.buffer_size = app::APP_BUFFERS.size;
    }
    if c.bufs.num < 2 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "there must be at least 2 \"wsgi_buffers\""
        );
        return NGX_CONF_ERROR;
    }
    let size = c.buffer_size.max(c.bufs.size);
    c.busy_buffers_size = if c.busy_buffers_size_conf == UNSET_SIZE {
        2 * size
    } else {
        c.busy_buffers_size_conf
    };
    if c.busy_buffers_size < size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_busy_buffers_size\" must be equal to or greater than the maximum of the value of \
             \"wsgi_buffer_size\" and one of the \"wsgi_buffers\""
        );
        return NGX_CONF_ERROR;
    }
    if c.busy_buffers_size > (c.bufs.num.max(1) - 1) as usize * c.bufs.size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_busy_buffers_size\" must be less than the size of all \"wsgi_buffers\" minus one buffer"
        );
        return NGX_CONF_ERROR;
    }
    c.temp_file_write_size = if c.temp_file_write_size_conf == UNSET_SIZE {
        2 * size
    } else {
        c.temp_file_write_size_conf
    };
    c.max_temp_file_size = if c.max_temp_file_size_conf == UNSET_SIZE {
        1024 * 1024 * 1024
    } else {
        c.max_temp_file_size_conf
    };
    if c.temp_file_write_size < size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_temp_file_write_size\" must be equal to or greater than the maximum of the value of \
             \"wsgi_buffer_size\" and one of the \"wsgi_buffers\""
        );
        return NGX_CONF_ERROR;
    }
    if c.max_temp_file_size != 0 && c.max_temp_file_size < size {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"wsgi_max_temp_file_size\" must be equal to zero to disable temporary files usage or must be \
             equal to or greater than the maximum of the value of \"wsgi_buffer_size\" and one of the \
             \"wsgi_buffers\""
        );
        return NGX_CONF_ERROR;
    }
    if c.ignore_headers == 0 {
        c.ignore_headers = if p.ignore_headers != 0 {
            p.ignore_headers
        } else {
            NGX_CONF_BITMASK_SET as _
        };
    }
    if c.next_upstream == 0 {
        c.next_upstream = if p.next_upstream != 0 {
            p.next_upstream
        } else {
            (NGX_CONF_BITMASK_SET | NGX_HTTP_UPSTREAM_FT_ERROR | NGX_HTTP_UPSTREAM_FT_TIMEOUT) as _
        };
    }
    if c.next_upstream & ngx::ffi::NGX_HTTP_UPSTREAM_FT_OFF as ngx_uint_t != 0 {
        c.next_upstream = (NGX_CONF_BITMASK_SET | ngx::ffi::NGX_HTTP_UPSTREAM_FT_OFF) as ngx_uint_t;
    }
    merge(
        &mut c.pass_request_headers,
        p.pass_request_headers,
        UNSET_FLAG,
        1,
    );
    merge(&mut c.pass_request_body, p.pass_request_body, UNSET_FLAG, 1);
    merge(&mut c.intercept_errors, p.intercept_errors, UNSET_FLAG, 0);
    merge(&mut c.ssl_name, p.ssl_name, UNSET_PTR as _, ptr::null_mut());
    merge(
        &mut c.ssl_certificate,
        p.ssl_certificate,
        UNSET_PTR as _,
        ptr::null_mut(),
    );
    merge(
        &mut c.ssl_certificate_key,
        p.ssl_certificate_key,
        UNSET_PTR as _,
        ptr::null_mut(),
    );
    merge(
        &mut c.ssl_passwords,
        p.ssl_passwords,
        UNSET_PTR as _,
        ptr::null_mut(),
    );

    // SAFETY: nginx's own merge helper, called as its upstream modules call it; the
    // default path is a static that outlives the configuration.
    let merged =
        unsafe { ngx_conf_merge_path_value(cf, &mut c.temp_path, p.temp_path, &raw mut TEMP_PATH) };
    if merged != NGX_CONF_OK {
        return NGX_CONF_ERROR;
    }
    // SAFETY: an all-zero hash request is an empty one, as nginx's modules start them.
    let mut hash: ngx_hash_init_t = unsafe { mem::zeroed() };
    hash.max_size = 512;
    // SAFETY: set by nginx before configuration is read.
    let line = unsafe { ngx::ffi::ngx_cacheline_size };
    hash.bucket_size = (64 + line - 1) & !(line - 1);
    hash.name = c"wsgi_hide_headers_hash".as_ptr() as *mut c_char;
    let hide = &raw mut HIDE_HEADERS as *mut ngx_str_t;
    let parent = ptr::from_mut(&mut prev.upstream);
    // SAFETY: as nginx's upstream modules call it: the location's and its parent's
    // upstream configurations (nginx may store the hash it builds in the parent's too),
    // and the static list of hidden headers, ended by an empty entry.
    let hashed = unsafe { ngx_http_upstream_hide_headers_hash(cf, c, parent, hide, &mut hash) };
    if hashed != NGX_OK as isize {
        return NGX_CONF_ERROR;
    }

    // A nested location (`if`, `limit_except`) passes like its parent.
    // SAFETY: cf is the configuration being merged.
    let clcf = unsafe { core_loc_conf(cf) };
    if clcf.noname() != 0 && conf.upstream.upstream.is_null() && conf.pass_value.is_null() {
        conf.upstream.upstream = prev.upstream.upstream;
        conf.pass_value = prev.pass_value;
    }
    let passes = !conf.upstream.upstream.is_null() || !conf.pass_value.is_null();
    if clcf.lmt_excpt() != 0 && clcf.handler.is_none() && passes {
        clcf.handler = Some(upstream::ngx_http_wsgi_handler);
    }
    // SAFETY: cf is the configuration being merged and conf is merged above.
    if !unsafe { app::check_app(cf, conf) } {
        return NGX_CONF_ERROR;
    }

    if conf.user_params.is_null() {
        conf.user_params = prev.user_params;
    }
    if conf.user_params == prev.user_params && !prev.params.is_null() {
        conf.params = prev.params;
        conf.replaces_headers = prev.replaces_headers;
        return NGX_CONF_OK;
    }
    // SAFETY: this level's wsgi_param array, of WsgiParam, in the configuration pool.
    let user: &[WsgiParam] = match unsafe { conf.user_params.as_ref() } {
        // SAFETY: as above.
        Some(array) => unsafe { array.as_slice::<WsgiParam>() },
        None => &[],
    };
    conf.replaces_headers = user.iter().any(|p| p.key.as_bytes().starts_with(b"HTTP_"));
    for (name, value, skip_empty) in DEFAULT_PARAMS {
        if user.iter().any(|u| u.key.as_bytes() == name.as_bytes()) {
            continue;
        }
        let key = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        let value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr() as *mut u8,
        };
        // SAFETY: cf is the configuration being merged; conf.params is null or an array
        // of WsgiParam made by push_param.
        if !unsafe { push_param(cf, &mut conf.params, key, value, *skip_empty) } {
            return NGX_CONF_ERROR;
        }
    }
    if conf.params.is_null() {
        // SAFETY: cf is the configuration being merged, with its pool.
        conf.params =
            unsafe { ngx_array_create((*cf).pool, user.len().max(1), mem::size_of::<WsgiParam>()) };
        if conf.params.is_null() {
            return NGX_CONF_ERROR;
        }
    }
    for param in user {
        // SAFETY: conf.params is an array of WsgiParam: room for one more.
        let slot = unsafe { ngx_array_push(conf.params) } as *mut WsgiParam;
        if slot.is_null() {
            return NGX_CONF_ERROR;
        }
        // SAFETY: the new element, written once here.
        unsafe {
            slot.write(WsgiParam {
                key: param.key,
                value: param.value,
                skip_empty: param.skip_empty,
                variable: param.variable,
            })
        };
    }
    NGX_CONF_OK
}
