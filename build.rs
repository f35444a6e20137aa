//! Build script of the nginx module crate (`nginx-module/Cargo.toml` points here).
//!
//! The module will be compiled against the headers of the nginx it is loaded into
//! (`NGINX_BUILD_DIR`, an nginx `objs/` directory after `configure`). Until the module
//! issue lands there is nothing to generate; the script only declares its inputs so
//! cargo rebuilds when they change.
fn main() {
    println!("cargo::rerun-if-env-changed=NGINX_BUILD_DIR");
    println!("cargo::rerun-if-env-changed=NGINX_SOURCE_DIR");
}
