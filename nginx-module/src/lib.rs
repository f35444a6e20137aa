//! `ngx_http_wsgi_module`: the nginx side of ngx-wsgi.
//!
//! Not written yet: the `wsgi_pass` upstream handler is the subject of the module issue.
//! Until then this crate only builds, so the workspace layout is the final one, and
//! `make demo` serves through stock nginx `uwsgi_pass`.
#![forbid(unsafe_code)]
