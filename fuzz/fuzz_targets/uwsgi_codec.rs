//! The uwsgi codec on what a peer may send: request heads and vars blocks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for buffer_size in [4096, 65535] {
        if let Ok(Some(head)) = uwsgi_proto::parse_request_head(data, buffer_size) {
            let vars = &data[head.vars.clone()];
            for pair in uwsgi_proto::parse_vars(vars) {
                let _ = pair;
            }
        }
    }
    for pair in uwsgi_proto::parse_vars(data) {
        let _ = pair;
    }
});
