//! The xml config reader (see `ngx_wsgi_fuzz::load_config`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ngx_wsgi_config::Format;

fuzz_target!(|data: &[u8]| ngx_wsgi_fuzz::load_config(data, Format::Xml));
