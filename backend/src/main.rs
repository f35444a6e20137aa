//! The `ngx-wsgi` executable: the daemon (`lib.rs`) with the interpreter linked in.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(ngx_wsgi::main(ngx_wsgi::Start::Executable, args))
}
