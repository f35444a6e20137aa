//! Build script of the nginx module crate (`nginx-module/Cargo.toml` points here).
//!
//! `nginx-sys` generates the bindings from the nginx build directory (`NGINX_BUILD_DIR`,
//! prepared by `scripts/nginx-objs.sh`) and exports what it found as `DEP_NGINX_*`
//! variables; this turns them into `cfg` values the module can test, and the nginx
//! version into the API changes the module follows (it builds against Debian 12's 1.22 and
//! nginx.org's current mainline alike).

/// nginx API changes, by the first version that has them (`nginx_version`, e.g. 1027000).
const API_CHANGES: &[(&str, u64)] = &[
    // The *_limit_rate directives take variables: a complex value, not a size.
    ("ngx_limit_rate_complex", 1_027_000),
    // ngx_http_parse_chunked() takes a keep_trailers argument.
    ("ngx_parse_chunked_keep_trailers", 1_027_002),
    // Newer than the nginx `wsgi_request_buffering off` is verified with (1.22): on 1.31.4
    // the body does not reach the daemon (the request times out), so it is refused there.
    ("ngx_unbuffered_body_unverified", 1_023_000),
];

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version: u64 = std::env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    for (cfg, since) in API_CHANGES {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if version >= *since {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-env-changed=NGINX_BUILD_DIR");
    println!("cargo::rerun-if-env-changed=NGINX_SOURCE_DIR");

    for (metadata, cfg) in [
        ("DEP_NGINX_FEATURES", "ngx_feature"),
        ("DEP_NGINX_OS", "ngx_os"),
    ] {
        println!("cargo::rerun-if-env-changed={metadata}_CHECK");
        let accepted =
            std::env::var(format!("{metadata}_CHECK")).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({accepted}))");
        println!("cargo::rerun-if-env-changed={metadata}");
        if let Ok(values) = std::env::var(metadata) {
            for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{value}\"");
            }
        }
    }
}
