//! Build script of the nginx module crate (`nginx-module/Cargo.toml` points here).
//!
//! `nginx-sys` generates the bindings from the nginx build directory (`NGINX_BUILD_DIR`,
//! prepared by `scripts/nginx-objs.sh`) and exports what it found as `DEP_NGINX_*`
//! variables; this turns them into `cfg` values the module can test.
fn main() {
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
