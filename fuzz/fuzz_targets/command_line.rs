//! The daemon's command line: arguments are NUL-separated in the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Files named on a fuzzed command line would be read from the machine: keep to flags.
    let args: Vec<&str> = text
        .split('\0')
        .filter(|a| !(a.ends_with(".ini") || a.ends_with(".xml") || a.ends_with(".toml")))
        .collect();
    if args.windows(2).any(|w| matches!(w[0], "--ini" | "--xml" | "--config" | "-x")) {
        return;
    }
    let _ = ngx_wsgi_config::parse_args(args);
});
