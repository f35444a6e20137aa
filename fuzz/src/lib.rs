//! What the config targets share: a fuzzed text loaded as a config file of one format.

use ngx_wsgi_config::Format;

/// Loads `data` (when it is UTF-8) as a config file of `format`, with its includes,
/// placeholders and logic: whatever the text, loading ends (within the loader's bounds)
/// with a config or errors, never a panic.
pub fn load_config(data: &[u8], format: Format) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = match format {
        Format::Ini => "/tmp/ngx-wsgi-fuzz/app.ini",
        Format::Xml => "/tmp/ngx-wsgi-fuzz/app.xml",
        Format::Toml => "/tmp/ngx-wsgi-fuzz/app.toml",
    };
    let _ = ngx_wsgi_config::load_text(text, std::path::Path::new(path), format);
}
