//! The CGI part of the environ, from a uwsgi vars block or an HTTP request head.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Where the CGI variables of a request come from.
pub enum EnvironSource<'a> {
    /// A uwsgi vars block, already validated by the connection reader.
    Uwsgi { vars: &'a [u8] },
    /// An HTTP/1.1 request served by the workers themselves.
    Http(HttpRequestInfo<'a>),
}

/// What the HTTP listener knows of a request.
pub struct HttpRequestInfo<'a> {
    pub head: &'a http::request::Parts,
    pub content_length: Option<u64>,
    pub remote: (String, u16),
    pub local_port: u16,
}

/// Decodes bytes as latin-1, WSGI's "native string" encoding: CPython's own decoder, one
/// pass and one copy (every var of every request goes through here).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = isize::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("a var longer than isize"))?;
    // SAFETY: the pointer and length describe `bytes`, alive for the call; every byte is
    // valid latin-1, so CPython returns a new str, or NULL with an error set (out of memory),
    // which from_owned_ptr_or_err turns into that error.
    unsafe {
        let text = pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, text)?.cast_into_unchecked())
    }
}

/// Var names cached by their position in the vars block: nginx sends the same params in
/// the same order with every request, so a name usually comes back where it was last time,
/// and its str (with its hash computed) is reused instead of made again. Bounded: past
/// [`KEY_CACHE_SLOTS`] positions, names are made each time.
const KEY_CACHE_SLOTS: usize = 64;

/// A var's name as received, and the str made from it.
type CachedKey = Option<(Box<[u8]>, Py<PyString>)>;

thread_local! {
    static KEY_CACHE: std::cell::RefCell<Vec<CachedKey>> =
        std::cell::RefCell::new((0..KEY_CACHE_SLOTS).map(|_| None).collect());
}

fn cached_key<'py>(py: Python<'py>, position: usize, key: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if position >= KEY_CACHE_SLOTS {
        return latin1(py, key);
    }
    KEY_CACHE.with_borrow_mut(|slots| {
        if let Some((name, text)) = &slots[position] {
            if **name == *key {
                return Ok(text.bind(py).clone());
            }
        }
        let text = latin1(py, key)?;
        slots[position] = Some((key.into(), text.clone().unbind()));
        Ok(text)
    })
}

/// A cheap hash of a var name (length and two bytes), for telling apart the header names
/// of one request; a collision only costs a dict look-up.
fn name_hash(key: &[u8]) -> usize {
    let (last, middle) = (key[key.len() - 1], key[key.len() / 2]);
    key.len() * 7 + usize::from(last) * 3 + usize::from(middle)
}

/// Room for nginx's params, a dozen headers and the wsgi.* keys: the environ is made this
/// size at once instead of growing (and rehashing) three times on the way to it.
const ENVIRON_SIZE: isize = 40;

extern "C" {
    /// CPython's dict constructor with room for `minused` items, exported by libpython
    /// (not in pyo3's bindings: it has a leading underscore, but has kept its signature
    /// since 3.6).
    fn _PyDict_NewPresized(minused: pyo3::ffi::Py_ssize_t) -> *mut pyo3::ffi::PyObject;
}

/// An empty dict with room for `items` entries.
fn presized_dict(py: Python<'_>, items: isize) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: called with the GIL held (`py`); returns a new reference to an empty dict,
    // or NULL with an exception set, which from_owned_ptr_or_err turns into that error.
    unsafe {
        let dict = _PyDict_NewPresized(items);
        Ok(Bound::from_owned_ptr_or_err(py, dict)?.cast_into_unchecked())
    }
}

impl EnvironSource<'_> {
    /// The CGI variables as a dict, and whether the client used https (for
    /// `wsgi.url_scheme`: what nginx says in HTTPS, REQUEST_SCHEME or UWSGI_SCHEME).
    pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, bool)> {
        let environ = presized_dict(py, ENVIRON_SIZE)?;
        let mut https = false;
        match self {
            EnvironSource::Uwsgi { vars } => {
                // nginx forwards every request header as HTTP_*, Content-Length and
                // Content-Type included; CGI and PEP 3333 have those only as CONTENT_*
                // (which nginx's params set). They fill in CONTENT_* when that is empty.
                let mut header_fallbacks = Vec::new();
                // nginx before 1.23 sends a repeated request header as several vars of one
                // name; they are joined as nginx 1.23+ joins them (", ", Cookie "; "). One bit
                // per header name, by a cheap hash: only a name whose bit is set already may
                // be a repeat, and only then is the environ asked (no allocation per request).
                let mut headers_seen = 0u64;
                for (position, pair) in uwsgi_proto::parse_vars(vars).enumerate() {
                    let (key, value) =
                        pair.map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
                    https |= match key {
                        b"HTTPS" => value.eq_ignore_ascii_case(b"on") || value == b"1",
                        b"REQUEST_SCHEME" | b"UWSGI_SCHEME" => value.eq_ignore_ascii_case(b"https"),
                        _ => false,
                    };
                    if key == uwsgi_proto::KEEPALIVE_VAR {
                        continue; // a protocol var (docs/protocol.md), not the app's
                    }
                    match key.strip_prefix(b"HTTP_") {
                        Some(cgi_key @ (b"CONTENT_LENGTH" | b"CONTENT_TYPE")) => {
                            header_fallbacks.push((cgi_key, value))
                        }
                        Some(_) => {
                            let bit = 1u64 << (name_hash(key) % 64);
                            let maybe_repeated = headers_seen & bit != 0;
                            headers_seen |= bit;
                            let name = cached_key(py, position, key)?;
                            let text = latin1(py, value)?;
                            let earlier = match maybe_repeated {
                                true => environ.get_item(&name)?,
                                false => None,
                            };
                            match earlier {
                                Some(earlier) => {
                                    let separator = if key == b"HTTP_COOKIE" { "; " } else { ", " };
                                    environ.set_item(name, earlier.add(separator)?.add(text)?)?
                                }
                                None => environ.set_item(name, text)?,
                            }
                        }
                        None => {
                            environ.set_item(cached_key(py, position, key)?, latin1(py, value)?)?
                        }
                    }
                }
                for (key, value) in header_fallbacks {
                    let key = latin1(py, key)?;
                    let current = environ.get_item(&key)?;
                    if current.is_none_or(|v| !v.is_truthy().unwrap_or(true)) {
                        environ.set_item(key, latin1(py, value)?)?;
                    }
                }
            }
            EnvironSource::Http(info) => http_environ(py, &environ, info)?,
        }
        // PEP 3333 requires these; nginx may omit SCRIPT_NAME, a bare client QUERY_STRING.
        let empty = pyo3::intern!(py, "");
        for key in [
            pyo3::intern!(py, "SCRIPT_NAME"),
            pyo3::intern!(py, "PATH_INFO"),
            pyo3::intern!(py, "QUERY_STRING"),
        ] {
            if !environ.contains(key)? {
                environ.set_item(key, empty)?;
            }
        }
        Ok((environ, https))
    }
}

fn http_environ(
    py: Python<'_>,
    environ: &Bound<'_, PyDict>,
    info: &HttpRequestInfo<'_>,
) -> PyResult<()> {
    let head = info.head;
    let uri = &head.uri;
    let raw_path = uri.path().as_bytes();
    environ.set_item("REQUEST_METHOD", head.method.as_str())?;
    environ.set_item("SCRIPT_NAME", "")?;
    environ.set_item("PATH_INFO", latin1(py, &percent_decode(raw_path))?)?;
    environ.set_item("QUERY_STRING", uri.query().unwrap_or(""))?;
    environ.set_item(
        "REQUEST_URI",
        uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/"),
    )?;
    environ.set_item("SERVER_PROTOCOL", format!("{:?}", head.version))?;
    let host = head
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let (server_name, server_port) = split_host(&host);
    let server_name = if server_name.is_empty() {
        "localhost"
    } else {
        server_name
    };
    let server_port = server_port.map_or_else(|| info.local_port.to_string(), str::to_string);
    environ.set_item("SERVER_NAME", server_name)?;
    environ.set_item("SERVER_PORT", server_port)?;
    environ.set_item("REMOTE_ADDR", &info.remote.0)?;
    environ.set_item("REMOTE_PORT", info.remote.1.to_string())?;
    if let Some(length) = info.content_length {
        environ.set_item("CONTENT_LENGTH", length.to_string())?;
    }
    for name in head.headers.keys() {
        let mut values = head.headers.get_all(name).iter().map(|v| v.as_bytes());
        let separator: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let mut joined = values.next().unwrap_or_default().to_vec();
        for value in values {
            joined.extend_from_slice(separator);
            joined.extend_from_slice(value);
        }
        let key = match name.as_str() {
            "content-type" => "CONTENT_TYPE".to_string(),
            // Taken from the body actually read (a chunked body has none).
            "content-length" => continue,
            other => format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
        };
        environ.set_item(key, latin1(py, &joined)?)?;
    }
    Ok(())
}

/// Splits a Host header into name and port: `example.org:80`, `[::1]:80`, `example.org`.
fn split_host(host: &str) -> (&str, Option<&str>) {
    let port_start = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => i,
        _ => return (host, None),
    };
    match host[port_start + 1..].parse::<u16>() {
        Ok(_) => (&host[..port_start], Some(&host[port_start + 1..])),
        Err(_) => (host, None),
    }
}

/// Decodes `%XX` escapes of a URL path, as nginx does for PATH_INFO.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/caf%C3%A9/a%20b"), b"/caf\xc3\xa9/a b");
        assert_eq!(percent_decode(b"/100%"), b"/100%");
        assert_eq!(percent_decode(b"/%zz"), b"/%zz");
    }

    fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        Python::initialize();
        Python::attach(f)
    }

    #[test]
    fn uwsgi_vars_become_latin1_native_strings() {
        with_python(|py| {
            let packet = uwsgi_proto::encode_request(
                0,
                vec![
                    (&b"REQUEST_METHOD"[..], &b"GET"[..]),
                    (b"PATH_INFO", b"/caf\xe9"),
                    (b"HTTPS", b"on"),
                ],
            )
            .unwrap();
            let source = EnvironSource::Uwsgi { vars: &packet[4..] };
            let header_copies = uwsgi_proto::encode_request(
                0,
                vec![
                    (&b"CONTENT_TYPE"[..], &b""[..]),
                    (b"CONTENT_LENGTH", b"5"),
                    (b"HTTP_CONTENT_TYPE", b"text/plain"),
                    (b"HTTP_CONTENT_LENGTH", b"5"),
                ],
            )
            .unwrap();
            let (copies, _) = EnvironSource::Uwsgi {
                vars: &header_copies[4..],
            }
            .to_dict(py)
            .unwrap();
            let get =
                |k: &str| -> String { copies.get_item(k).unwrap().unwrap().extract().unwrap() };
            assert_eq!(
                (get("CONTENT_TYPE"), get("CONTENT_LENGTH")),
                ("text/plain".into(), "5".into())
            );
            assert!(!copies.contains("HTTP_CONTENT_TYPE").unwrap());
            assert!(!copies.contains("HTTP_CONTENT_LENGTH").unwrap());
            let (environ, https) = source.to_dict(py).unwrap();
            let path: String = environ
                .get_item("PATH_INFO")
                .unwrap()
                .unwrap()
                .extract()
                .unwrap();
            assert_eq!(path, "/caf\u{e9}");
            // Required keys nginx may leave out are present and empty.
            let script: String = environ
                .get_item("SCRIPT_NAME")
                .unwrap()
                .unwrap()
                .extract()
                .unwrap();
            let query: String = environ
                .get_item("QUERY_STRING")
                .unwrap()
                .unwrap()
                .extract()
                .unwrap();
            assert_eq!((script.as_str(), query.as_str()), ("", ""));
            assert!(https);
        });
    }

    #[test]
    fn repeated_uwsgi_header_vars_are_joined_as_nginx_123_joins_them() {
        with_python(|py| {
            // What nginx 1.22's uwsgi_pass sends for two Cookie and two X-Forwarded-For lines.
            let packet = uwsgi_proto::encode_request(
                0,
                vec![
                    (&b"HTTP_COOKIE"[..], &b"a=1"[..]),
                    (b"HTTP_X_FORWARDED_FOR", b"10.0.0.1"),
                    (b"HTTP_COOKIE", b"b=2"),
                    (b"HTTP_X_FORWARDED_FOR", b"10.0.0.2"),
                    (b"HTTP_X_FORWARDED_FOR", b"10.0.0.3"),
                    (b"QUERY_STRING", b"a=1"),
                    (b"QUERY_STRING", b"b=2"),
                ],
            )
            .unwrap();
            let (environ, _) = EnvironSource::Uwsgi { vars: &packet[4..] }
                .to_dict(py)
                .unwrap();
            let get =
                |k: &str| -> String { environ.get_item(k).unwrap().unwrap().extract().unwrap() };
            assert_eq!(get("HTTP_COOKIE"), "a=1; b=2");
            assert_eq!(get("HTTP_X_FORWARDED_FOR"), "10.0.0.1, 10.0.0.2, 10.0.0.3");
            // Only headers are joined: a repeated CGI var is a param set twice, the last wins.
            assert_eq!(get("QUERY_STRING"), "b=2");
        });
    }

    #[test]
    fn http_headers_are_joined_as_nginx_joins_them() {
        with_python(|py| {
            let request = http::Request::builder()
                .method("POST")
                .uri("/a%20b?x=1")
                .header("Host", "example.org:8080")
                .header("Cookie", "a=1")
                .header("Cookie", "b=2")
                .header("Accept", "text/html")
                .header("Accept", "text/plain")
                .header("Content-Type", "text/plain")
                .header("Content-Length", "999")
                .body(())
                .unwrap();
            let (head, ()) = request.into_parts();
            let info = HttpRequestInfo {
                head: &head,
                content_length: Some(5),
                remote: ("127.0.0.1".into(), 5555),
                local_port: 8080,
            };
            let (environ, https) = EnvironSource::Http(info).to_dict(py).unwrap();
            assert!(!https);
            let get =
                |k: &str| -> String { environ.get_item(k).unwrap().unwrap().extract().unwrap() };
            assert_eq!(get("HTTP_COOKIE"), "a=1; b=2");
            assert_eq!(get("HTTP_ACCEPT"), "text/html, text/plain");
            assert_eq!(get("PATH_INFO"), "/a b");
            assert_eq!(get("QUERY_STRING"), "x=1");
            assert_eq!(get("REQUEST_URI"), "/a%20b?x=1");
            assert_eq!(
                (get("SERVER_NAME"), get("SERVER_PORT")),
                ("example.org".into(), "8080".into())
            );
            assert_eq!(get("CONTENT_TYPE"), "text/plain");
            assert_eq!(
                get("CONTENT_LENGTH"),
                "5",
                "the length read, not the header"
            );
            assert!(!environ.contains("HTTP_CONTENT_LENGTH").unwrap());
            assert_eq!(get("SERVER_PROTOCOL"), "HTTP/1.1");
        });
    }
}
