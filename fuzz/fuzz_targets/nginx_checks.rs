//! The checks nginx -t runs on a config (inside nginx's master): any config, any nginx
//! settings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ngx_wsgi_config::nginx::{check, upstream_url, NginxSide, WorkerUser};

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let number = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
    let Ok(text) = std::str::from_utf8(&data[24..]) else {
        return;
    };
    let path = std::path::Path::new("/tmp/ngx-wsgi-fuzz/app.ini");
    let Ok(parsed) = ngx_wsgi_config::load_text(text, path, ngx_wsgi_config::Format::Ini) else {
        return;
    };
    let nginx = NginxSide {
        read_timeout_ms: number(0),
        client_max_body_size: number(8),
        max_request_head: number(16),
        worker: WorkerUser {
            name: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
        },
    };
    let _ = check(&parsed, &nginx);
    let _ = upstream_url(&parsed);
});
