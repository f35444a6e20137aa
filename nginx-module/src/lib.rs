//! `ngx_http_wsgi_module`: the nginx side of ngx-wsgi.
//!
//! Work in progress. The module builds against the nginx that loads it and registers its
//! directives, but the `wsgi_pass` upstream handler is not written yet: the directive is
//! refused with a clear configuration error, so nobody mistakes this build for a working
//! one. Until it lands, use nginx's stock `uwsgi_pass` with the ngx-wsgi daemon.

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_module_t, ngx_module_t, ngx_uint_t, NGX_CONF_TAKE1,
    NGX_HTTP_LIF_CONF, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MODULE, NGX_LOG_EMERG,
};
use ngx::{ngx_conf_log_error, ngx_string};

static NGX_HTTP_WSGI_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

static mut NGX_HTTP_WSGI_COMMANDS: [ngx_command_t; 2] = [
    ngx_command_t {
        name: ngx_string!("wsgi_pass"),
        type_: (NGX_HTTP_LOC_CONF | NGX_HTTP_LIF_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_wsgi_pass),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

ngx::ngx_modules!(ngx_http_wsgi_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_wsgi_module: ngx_module_t = ngx_module_t {
    ctx: &raw const NGX_HTTP_WSGI_MODULE_CTX as _,
    // SAFETY: taking the address of the static command table, which nginx reads and
    // never frees; no reference to the `static mut` is created.
    commands: unsafe { &raw mut NGX_HTTP_WSGI_COMMANDS[0] },
    type_: NGX_HTTP_MODULE as _,
    ..ngx_module_t::default()
};

/// `wsgi_pass ADDRESS;` — refused until the upstream handler exists.
extern "C" fn ngx_http_wsgi_pass(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "\"wsgi_pass\" is not implemented yet in this build of ngx_http_wsgi_module; \
         use \"uwsgi_pass\" with the ngx-wsgi daemon meanwhile"
    );
    NGX_CONF_ERROR
}
