//! Static files served by the worker before the app (`static-map`, `static-map2`,
//! `check-static`, `static-index`, `static-skip-ext`, `static-safe`), as uWSGI serves them:
//! a request whose path names a file under a mapped directory gets that file; any other
//! goes on to the app.
//!
//! No path escapes its directory: the file is resolved (`..`, symlinks) and must lie under
//! the mapped directory, or under a `static-safe` one, else the request goes to the app as
//! if no file were there (and a warning is logged).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ngx_wsgi_config::Config;

/// A mapping from a URL prefix to a directory.
struct Mapping {
    prefix: String,
    dir: PathBuf,
    /// `static-map2`: the whole path (prefix included) is looked up under `dir`.
    keep_prefix: bool,
}

/// What the config says to serve.
pub struct StaticFiles {
    maps: Vec<Mapping>,
    /// `check-static`: directories every request path is looked up in.
    docroots: Vec<PathBuf>,
    index: Vec<String>,
    skip_ext: Vec<String>,
    /// `static-safe`: directories a resolved file may lie in besides its own.
    safe: Vec<PathBuf>,
}

/// A file to send.
pub struct StaticFile {
    pub file: File,
    pub len: u64,
    pub modified: SystemTime,
    pub content_type: &'static str,
}

/// The answer to a request for a static file.
pub enum StaticAnswer {
    /// 200 with the file.
    File(StaticFile),
    /// 304: the client's copy (If-Modified-Since) is current.
    NotModified { modified: SystemTime },
}

impl StaticFiles {
    /// None when the config serves no static files (the request path then skips this).
    pub fn new(config: &Config) -> Option<StaticFiles> {
        let canonical =
            |dir: &Path| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut maps = Vec::new();
        for (values, keep_prefix) in [(&config.static_map, false), (&config.static_map2, true)] {
            for value in values {
                if let Some((prefix, dir)) = value.split_once('=') {
                    maps.push(Mapping {
                        prefix: prefix.trim_end_matches('/').to_string(),
                        dir: canonical(Path::new(dir)),
                        keep_prefix,
                    });
                }
            }
        }
        // The most specific prefix first.
        maps.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let docroots: Vec<PathBuf> = config.check_static.iter().map(|d| canonical(d)).collect();
        if maps.is_empty() && docroots.is_empty() {
            return None;
        }
        // An index is a file name in the directory asked for, nothing else (`.` would
        // name the directory again, endlessly).
        let index = config
            .static_index
            .iter()
            .filter(|name| !name.contains('/') && !matches!(name.as_str(), "" | "." | ".."))
            .cloned()
            .collect();
        Some(StaticFiles {
            maps,
            docroots,
            index,
            skip_ext: config.static_skip_ext.clone(),
            safe: config.static_safe.iter().map(|d| canonical(d)).collect(),
        })
    }

    /// The file a request for `path` (the decoded PATH_INFO) gets, if any; None: the app
    /// answers it. `if_modified_since` is the request's header, as sent.
    pub fn answer(&self, path: &[u8], if_modified_since: Option<&[u8]>) -> Option<StaticAnswer> {
        if path.contains(&0) {
            return None;
        }
        let found = self.find(path)?;
        let modified = found.modified;
        let fresh = if_modified_since
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                // HTTP dates have whole seconds.
                let secs = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                };
                secs(modified) <= secs(since)
            });
        Some(match fresh {
            true => StaticAnswer::NotModified { modified },
            false => StaticAnswer::File(found),
        })
    }

    fn find(&self, path: &[u8]) -> Option<StaticFile> {
        let text = OsStr::from_bytes(path);
        let path_str = text.as_bytes();
        for map in &self.maps {
            let Some(rest) = path_str.strip_prefix(map.prefix.as_bytes()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with(b"/")) {
                continue;
            }
            let relative = if map.keep_prefix { path_str } else { rest };
            if let Some(file) = self.open_under(&map.dir, relative, true) {
                return Some(file);
            }
        }
        self.docroots
            .iter()
            .find_map(|root| self.open_under(root, path_str, true))
    }

    /// Whether a resolved path lies where files may be served from: under `dir`, or under
    /// a `static-safe` directory.
    fn allowed(&self, resolved: &Path, dir: &Path) -> bool {
        resolved.starts_with(dir) || self.safe.iter().any(|safe| resolved.starts_with(safe))
    }

    /// Opens `dir` + `relative` if it is a regular file (or a directory with an index file)
    /// that resolves to a place under `dir` or a `static-safe` directory.
    fn open_under(&self, dir: &Path, relative: &[u8], with_index: bool) -> Option<StaticFile> {
        let relative = trim_leading_slashes(relative);
        let candidate = dir.join(OsStr::from_bytes(relative));
        let resolved = std::fs::canonicalize(&candidate).ok()?;
        if !self.allowed(&resolved, dir) {
            tracing::warn!(
                "static: \"{}\" resolves to \"{}\", outside \"{}\": not served",
                candidate.display(),
                resolved.display(),
                dir.display()
            );
            return None;
        }
        let meta = std::fs::metadata(&resolved).ok()?;
        if meta.is_dir() {
            if !with_index {
                return None;
            }
            return self.index.iter().find_map(|index| {
                let mut inside = relative.to_vec();
                if !inside.is_empty() && !inside.ends_with(b"/") {
                    inside.push(b'/');
                }
                inside.extend_from_slice(index.as_bytes());
                self.open_under(dir, &inside, false)
            });
        }
        if !meta.is_file() {
            return None;
        }
        let extension = resolved
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if let Some(ext) = &extension {
            if self
                .skip_ext
                .iter()
                .any(|skip| skip.trim_start_matches('.').eq_ignore_ascii_case(ext))
            {
                return None;
            }
        }
        let file = File::open(&resolved).ok()?;
        // What was opened is what was checked: a symlink swapped in between the check and
        // the open would show here, in the path the kernel gives the open file.
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        if !self.allowed(&opened, dir) {
            tracing::warn!(
                "static: \"{}\" changed while opened: not served",
                resolved.display()
            );
            return None;
        }
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(StaticFile {
            file,
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            content_type: content_type(extension.as_deref().unwrap_or("")),
        })
    }
}

fn trim_leading_slashes(mut path: &[u8]) -> &[u8] {
    while let Some(rest) = path.strip_prefix(b"/") {
        path = rest;
    }
    path
}

/// The head of a static answer, as an HTTP/1.1 response head.
pub fn response_head(answer: &StaticAnswer) -> Vec<u8> {
    match answer {
        StaticAnswer::File(file) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nLast-Modified: {}\r\n\r\n",
            file.content_type,
            file.len,
            httpdate::fmt_http_date(file.modified)
        ),
        StaticAnswer::NotModified { modified } => format!(
            "HTTP/1.1 304 Not Modified\r\nLast-Modified: {}\r\n\r\n",
            httpdate::fmt_http_date(*modified)
        ),
    }
    .into_bytes()
}

/// The Content-Type of a file by its extension: the types web apps serve.
fn content_type(extension: &str) -> &'static str {
    match extension {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "wasm" => "application/wasm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "csv" => "text/csv; charset=utf-8",
        _ => "application/octet-stream",
    }
}
