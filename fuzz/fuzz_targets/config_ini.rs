//! The ini config reader, with its includes, placeholders and logic: whatever the text,
//! loading ends (within the loader's bounds) with a config or errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/tmp/ngx-wsgi-fuzz/app.ini");
    let _ = ngx_wsgi_config::load_text(text, path, ngx_wsgi_config::Format::Ini);
});
