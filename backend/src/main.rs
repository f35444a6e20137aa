//! The `ngx-wsgi` executable: the daemon (`lib.rs`) with the interpreter linked in.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "ngx-wsgi".into());
    let start = ngx_wsgi::Start::Executable { program };
    ExitCode::from(ngx_wsgi::main(start, argv.collect()))
}
