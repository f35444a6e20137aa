//! The CGI part of the environ, from a uwsgi vars block or an HTTP request head.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Where the CGI variables of a request come from.
pub enum EnvironSource<'a> {
    /// A uwsgi vars block, already validated by the connection reader, and what the
    /// request thread kept from its previous requests to build the environ from.
    Uwsgi {
        vars: uwsgi_proto::Vars<'a>,
        cache: &'a Mutex<EnvironCache>,
    },
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

/// Keys every environ has with the same value (`wsgi.version`, `wsgi.errors`...), set by
/// the app's owner.
pub type FixedKeys = [(Py<PyString>, Py<PyAny>)];

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

/// How many var positions a request thread remembers the name and value of; past them,
/// names and values are decoded each time.
const VAR_SLOTS: usize = 64;

/// How many shapes of the params part (which params, in which order) a request thread
/// keeps a template for: a site served over both http and https has two (nginx leaves
/// HTTPS out when it is empty), a server with several locations one per set of params.
const TEMPLATES: usize = 4;

/// What a request thread keeps from one uwsgi request to build the next one's environ with
/// less work. nginx sends its params first, the same names in the same order with every
/// request and most values the same (method, protocol, document root, server name and
/// port...), then the request's headers. For each shape of the params part the thread
/// keeps a template: the environ those params made, with the keys PEP 3333 requires and
/// the wsgi.* keys that do not change. A request whose params have a template's names in
/// its order gets a copy of that template (CPython copies a dict's table whole) once the
/// params whose value changed are set in it; only its headers are then added one by one.
/// The name and value of each position are kept too, so a header that came with the same
/// value last time is not decoded again.
///
/// Only the request thread that owns it uses it (the lock is never contended); the
/// values it shares with the environs it made are immutable strs.
#[derive(Default)]
pub struct EnvironCache {
    /// Most recently used first.
    templates: Vec<Template>,
    /// By position in the vars block.
    slots: Vec<Option<VarSlot>>,
}

/// The environ one shape of params makes.
struct Template {
    params: Vec<TemplateParam>,
    environ: Py<PyDict>,
    /// Whether the params say the client used https (the header part may say it too).
    https: bool,
}

/// A param as the template's environ has it.
struct TemplateParam {
    name: Box<[u8]>,
    /// The environ's key, the str made from `name`.
    key: Py<PyString>,
    value: Vec<u8>,
    /// HTTPS, REQUEST_SCHEME or UWSGI_SCHEME: its value decides `https`.
    scheme: bool,
}

/// The name and value a position of the vars block had last time, and their strs.
struct VarSlot {
    name: Box<[u8]>,
    key: Py<PyString>,
    value: Vec<u8>,
    text: Py<PyString>,
}

/// Whether a var belongs to the params part: nginx sends the request's headers (HTTP_*)
/// after its params, and wsgi_pass its keep-alive var last.
fn is_param(name: &[u8]) -> bool {
    !name.starts_with(b"HTTP_") && name != uwsgi_proto::KEEPALIVE_VAR
}

/// What a var says of the client's scheme: `Some(https)` for HTTPS, REQUEST_SCHEME and
/// UWSGI_SCHEME, as nginx sets them; `None` for the others.
fn scheme_var(name: &[u8], value: &[u8]) -> Option<bool> {
    match name {
        b"HTTPS" => Some(value.eq_ignore_ascii_case(b"on") || value == b"1"),
        b"REQUEST_SCHEME" | b"UWSGI_SCHEME" => Some(value.eq_ignore_ascii_case(b"https")),
        _ => None,
    }
}

/// Whether a var's name is one of the fixed wsgi.* keys' namespace: the fixed keys win
/// over such a var, as they are set after the CGI vars.
fn is_wsgi_key(name: &[u8]) -> bool {
    name.starts_with(b"wsgi.")
}

impl EnvironCache {
    /// The strs of the var at `position`: those made last time when the name and value
    /// are the same.
    fn strings<'py>(
        &mut self,
        py: Python<'py>,
        position: usize,
        name: &[u8],
        value: &[u8],
    ) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>)> {
        if position >= VAR_SLOTS {
            return Ok((latin1(py, name)?, latin1(py, value)?));
        }
        if self.slots.len() <= position {
            self.slots.resize_with(position + 1, || None);
        }
        let slot = &mut self.slots[position];
        match slot {
            Some(slot) if *slot.name == *name => {
                if slot.value != value {
                    slot.text = latin1(py, value)?.unbind();
                    slot.value.clear();
                    slot.value.extend_from_slice(value);
                }
                Ok((slot.key.bind(py).clone(), slot.text.bind(py).clone()))
            }
            _ => {
                let (key, text) = (latin1(py, name)?, latin1(py, value)?);
                *slot = Some(VarSlot {
                    name: name.into(),
                    key: key.clone().unbind(),
                    value: value.to_vec(),
                    text: text.clone().unbind(),
                });
                Ok((key, text))
            }
        }
    }

    /// The environ of a uwsgi request (its CGI part and the fixed keys), and whether the
    /// client used https.
    fn environ<'py>(
        &mut self,
        py: Python<'py>,
        vars: uwsgi_proto::Vars<'_>,
        fixed: &FixedKeys,
    ) -> PyResult<(Bound<'py, PyDict>, bool)> {
        if let Some(index) = self.templates.iter().position(|t| t.matches(&vars)) {
            self.templates[..=index].rotate_right(1);
            let template = &mut self.templates[0];
            template.update(py, &vars)?;
            let environ = template.environ.bind(py).copy()?;
            let mut adder = VarAdder::new(environ, template.https);
            let params = template.params.len();
            for (position, (name, value)) in (params..).zip(vars.iter_from(params)) {
                adder.add(py, self, position, name, value)?;
            }
            let wsgi_key_seen = adder.wsgi_key_seen;
            let (environ, https) = adder.finish(py)?;
            if wsgi_key_seen {
                complete(py, &environ, fixed)?;
            }
            return Ok((environ, https));
        }
        // Var by var; the params part becomes a template for the next requests.
        let mut adder = VarAdder::new(presized_dict(py, ENVIRON_SIZE)?, false);
        let mut in_params = true;
        for (position, (name, value)) in vars.iter().enumerate() {
            if in_params && !(is_param(name) && position < VAR_SLOTS) {
                in_params = false;
                self.remember(py, &vars, position, &adder, fixed)?;
            }
            adder.add(py, self, position, name, value)?;
        }
        if in_params {
            self.remember(py, &vars, vars.len(), &adder, fixed)?;
        }
        let (environ, https) = adder.finish(py)?;
        complete(py, &environ, fixed)?;
        Ok((environ, https))
    }

    /// Makes a template of the params part of a request without one (its first `params`
    /// vars), from the environ they made: unless a param was repeated (the last one
    /// wins, which a template does not know how to update).
    fn remember(
        &mut self,
        py: Python<'_>,
        vars: &uwsgi_proto::Vars<'_>,
        params: usize,
        adder: &VarAdder<'_, '_>,
        fixed: &FixedKeys,
    ) -> PyResult<()> {
        if params == 0
            || adder.environ.len() != params
            || vars.iter().take(params).any(|(name, _)| is_wsgi_key(name))
        {
            return Ok(());
        }
        let environ = adder.environ.copy()?;
        complete(py, &environ, fixed)?;
        let params = vars
            .iter()
            .take(params)
            .enumerate()
            .map(|(position, (name, value))| {
                let key = match self.slots.get(position) {
                    Some(Some(slot)) => slot.key.clone_ref(py),
                    _ => latin1(py, name)?.unbind(),
                };
                Ok(TemplateParam {
                    name: name.into(),
                    key,
                    value: value.to_vec(),
                    scheme: scheme_var(name, value).is_some(),
                })
            })
            .collect::<PyResult<_>>()?;
        self.templates.truncate(TEMPLATES - 1);
        self.templates.insert(
            0,
            Template {
                params,
                environ: environ.unbind(),
                https: adder.https,
            },
        );
        Ok(())
    }
}

impl Template {
    /// Whether the request's params are this template's, by name: all of them, so that a
    /// location sending more params than another gets a template of its own rather than
    /// its extra params decoded one by one behind the shorter one's.
    fn matches(&self, vars: &uwsgi_proto::Vars<'_>) -> bool {
        let n = self.params.len();
        vars.len() >= n
            && self
                .params
                .iter()
                .zip(vars.iter())
                .all(|(param, (name, _))| name == &*param.name)
            && (n == VAR_SLOTS
                || vars
                    .iter_from(n)
                    .next()
                    .is_none_or(|(name, _)| !is_param(name)))
    }

    /// Sets in the template the params whose value is not what it was last time.
    fn update(&mut self, py: Python<'_>, vars: &uwsgi_proto::Vars<'_>) -> PyResult<()> {
        let environ = self.environ.bind(py);
        let mut scheme_changed = false;
        for (param, (_, value)) in self.params.iter_mut().zip(vars.iter()) {
            if param.value != value {
                environ.set_item(param.key.bind(py), latin1(py, value)?)?;
                param.value.clear();
                param.value.extend_from_slice(value);
                scheme_changed |= param.scheme;
            }
        }
        if scheme_changed {
            self.https = self
                .params
                .iter()
                .any(|param| param.scheme && scheme_var(&param.name, &param.value) == Some(true));
        }
        Ok(())
    }
}

/// An environ filled var by var: the header part of a request, or every var of one
/// without a template.
struct VarAdder<'v, 'py> {
    environ: Bound<'py, PyDict>,
    https: bool,
    /// nginx forwards every request header as HTTP_*, Content-Length and Content-Type
    /// included; CGI and PEP 3333 have those only as CONTENT_* (which nginx's params
    /// set). They fill in CONTENT_* when that is empty.
    header_fallbacks: Vec<(&'v [u8], &'v [u8])>,
    /// nginx before 1.23 sends a repeated request header as several vars of one name;
    /// they are joined as nginx 1.23+ joins them (", ", Cookie "; "). One bit per header
    /// name, by a cheap hash: only a name whose bit is set already may be a repeat, and
    /// only then is the environ asked (no allocation per request).
    headers_seen: u64,
    /// A var named wsgi.*: the fixed keys are set again once every var is in.
    wsgi_key_seen: bool,
}

impl<'v, 'py> VarAdder<'v, 'py> {
    fn new(environ: Bound<'py, PyDict>, https: bool) -> Self {
        VarAdder {
            environ,
            https,
            header_fallbacks: Vec::new(),
            headers_seen: 0,
            wsgi_key_seen: false,
        }
    }

    fn add(
        &mut self,
        py: Python<'py>,
        cache: &mut EnvironCache,
        position: usize,
        name: &'v [u8],
        value: &'v [u8],
    ) -> PyResult<()> {
        self.https |= scheme_var(name, value) == Some(true);
        self.wsgi_key_seen |= is_wsgi_key(name);
        if name == uwsgi_proto::KEEPALIVE_VAR {
            return Ok(()); // a protocol var (docs/protocol.md), not the app's
        }
        match name.strip_prefix(b"HTTP_") {
            Some(cgi_name @ (b"CONTENT_LENGTH" | b"CONTENT_TYPE")) => {
                self.header_fallbacks.push((cgi_name, value));
            }
            Some(_) => {
                let bit = 1u64 << (name_hash(name) % 64);
                let maybe_repeated = self.headers_seen & bit != 0;
                self.headers_seen |= bit;
                let (key, text) = cache.strings(py, position, name, value)?;
                let earlier = match maybe_repeated {
                    true => self.environ.get_item(&key)?,
                    false => None,
                };
                match earlier {
                    Some(earlier) => {
                        let separator = if name == b"HTTP_COOKIE" { "; " } else { ", " };
                        self.environ
                            .set_item(key, earlier.add(separator)?.add(text)?)?
                    }
                    None => self.environ.set_item(key, text)?,
                }
            }
            None => {
                let (key, text) = cache.strings(py, position, name, value)?;
                self.environ.set_item(key, text)?
            }
        }
        Ok(())
    }

    /// The environ once every var is in, and whether the client used https.
    fn finish(self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, bool)> {
        for (name, value) in self.header_fallbacks {
            let key = latin1(py, name)?;
            let current = self.environ.get_item(&key)?;
            if current.is_none_or(|v| !v.is_truthy().unwrap_or(true)) {
                self.environ.set_item(key, latin1(py, value)?)?;
            }
        }
        Ok((self.environ, self.https))
    }
}

/// Adds what every environ has: the keys PEP 3333 requires that nginx may omit
/// (SCRIPT_NAME, a bare client's QUERY_STRING), empty, and the fixed wsgi.* keys.
fn complete(py: Python<'_>, environ: &Bound<'_, PyDict>, fixed: &FixedKeys) -> PyResult<()> {
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
    for (key, value) in fixed {
        environ.set_item(key.bind(py), value.bind(py))?;
    }
    Ok(())
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
    /// The environ but for `wsgi.input` and `wsgi.url_scheme`, and whether the client
    /// used https (for `wsgi.url_scheme`: what nginx says in HTTPS, REQUEST_SCHEME or
    /// UWSGI_SCHEME).
    pub fn to_dict<'py>(
        &self,
        py: Python<'py>,
        fixed: &FixedKeys,
    ) -> PyResult<(Bound<'py, PyDict>, bool)> {
        match self {
            EnvironSource::Uwsgi { vars, cache } => {
                // A panic while the cache was being updated may have left a template
                // whose values are not its bytes': start afresh.
                let mut cache = cache.lock().unwrap_or_else(|poisoned| {
                    let mut cache = poisoned.into_inner();
                    *cache = EnvironCache::default();
                    cache
                });
                cache.environ(py, *vars, fixed)
            }
            EnvironSource::Http(info) => {
                let environ = presized_dict(py, ENVIRON_SIZE)?;
                http_environ(py, &environ, info)?;
                complete(py, &environ, fixed)?;
                Ok((environ, false))
            }
        }
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

    /// The vars of a block, decoded (the spans leaked: a test's few bytes).
    fn decoded(block: &[u8]) -> uwsgi_proto::Vars<'_> {
        let spans = Box::leak(Box::new(uwsgi_proto::decode_vars(block).unwrap()));
        uwsgi_proto::Vars::new(block, spans)
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
            let source = EnvironSource::Uwsgi {
                vars: decoded(&packet[4..]),
                cache: &Mutex::default(),
            };
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
                vars: decoded(&header_copies[4..]),
                cache: &Mutex::default(),
            }
            .to_dict(py, &[])
            .unwrap();
            let get =
                |k: &str| -> String { copies.get_item(k).unwrap().unwrap().extract().unwrap() };
            assert_eq!(
                (get("CONTENT_TYPE"), get("CONTENT_LENGTH")),
                ("text/plain".into(), "5".into())
            );
            assert!(!copies.contains("HTTP_CONTENT_TYPE").unwrap());
            assert!(!copies.contains("HTTP_CONTENT_LENGTH").unwrap());
            let (environ, https) = source.to_dict(py, &[]).unwrap();
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

    /// The environ and https flag of each request in turn, built with one thread's cache
    /// (templates and all) and with a fresh cache each time (var by var), are the same.
    #[test]
    fn an_environ_from_a_template_is_the_one_made_var_by_var() {
        let params = |https: bool, uri: &'static [u8], query: &'static [u8]| {
            let mut vars: Vec<(&[u8], &[u8])> = vec![
                (b"QUERY_STRING", query),
                (b"REQUEST_METHOD", b"GET"),
                (b"CONTENT_TYPE", b""),
                (b"CONTENT_LENGTH", b""),
                (b"REQUEST_URI", uri),
                (b"PATH_INFO", uri),
                (b"REQUEST_SCHEME", if https { b"https" } else { b"http" }),
            ];
            if https {
                vars.push((b"HTTPS", b"on"));
            }
            vars.extend([
                (&b"REMOTE_ADDR"[..], &b"127.0.0.1"[..]),
                (b"SERVER_PORT", b"80"),
            ]);
            vars
        };
        let with = |mut vars: Vec<(&'static [u8], &'static [u8])>,
                    more: &[(&'static [u8], &'static [u8])]| {
            vars.extend_from_slice(more);
            vars
        };
        let requests = [
            params(false, b"/a", b""),
            with(
                params(false, b"/b", b"x=1"),
                &[(b"HTTP_HOST", b"h"), (b"NGX_WSGI_KEEPALIVE", b"1")],
            ),
            with(
                params(false, b"/b", b"x=1"),
                &[
                    (b"HTTP_HOST", b"h"),
                    (b"HTTP_COOKIE", b"a=1"),
                    (b"HTTP_COOKIE", b"b=2"),
                ],
            ),
            // https: another shape of params, then back to http, then https again.
            with(params(true, b"/s", b""), &[(b"HTTP_HOST", b"h")]),
            with(params(false, b"/c", b""), &[(b"HTTP_HOST", b"other")]),
            with(params(true, b"/s2", b""), &[(b"HTTP_HOST", b"h")]),
            // Header copies of CONTENT_*, a param repeated, a param after the headers.
            with(
                params(false, b"/d", b""),
                &[(b"HTTP_CONTENT_TYPE", b"text/plain"), (b"HTTP_HOST", b"h")],
            ),
            with(params(false, b"/e", b""), &[(b"QUERY_STRING", b"again")]),
            with(
                params(false, b"/f", b""),
                &[(b"HTTP_HOST", b"h"), (b"SCRIPT_NAME", b"/app")],
            ),
            vec![(b"QUERY_STRING", b"q"), (b"QUERY_STRING", b"last")],
            vec![
                (b"QUERY_STRING", b"q"),
                (b"QUERY_STRING", b"last wins again"),
            ],
            // A var in the fixed keys' namespace, after the headers and among the params:
            // the fixed keys win, with a template as without.
            with(
                params(false, b"/g", b""),
                &[(b"HTTP_HOST", b"h"), (b"wsgi.run_once", b"yes")],
            ),
            vec![(b"wsgi.run_once", b"yes"), (b"REQUEST_METHOD", b"GET")],
            vec![(b"REQUEST_METHOD", b"POST")],
            vec![(b"REQUEST_METHOD", b"PUT"), (b"HTTP_X", b"1")],
            params(false, b"/a", b""),
        ];
        with_python(|py| {
            let fixed = [(
                PyString::intern(py, "wsgi.run_once").unbind(),
                pyo3::types::PyBool::new(py, false)
                    .to_owned()
                    .into_any()
                    .unbind(),
            )];
            let cache = Mutex::default();
            let mut kept = Vec::new();
            for (round, vars) in requests.iter().chain(&requests).enumerate() {
                let packet = uwsgi_proto::encode_request(0, vars.clone()).unwrap();
                let vars = decoded(&packet[4..]);
                let (cached, cached_https) = EnvironSource::Uwsgi {
                    vars,
                    cache: &cache,
                }
                .to_dict(py, &fixed)
                .unwrap();
                let (fresh, fresh_https) = EnvironSource::Uwsgi {
                    vars,
                    cache: &Mutex::default(),
                }
                .to_dict(py, &fixed)
                .unwrap();
                assert!(
                    cached.eq(&fresh).unwrap(),
                    "request {round}: {cached} != {fresh}"
                );
                assert_eq!(cached_https, fresh_https, "request {round}");
                // What the app does to its environ stays in it.
                cached.set_item("PATH_INFO", "changed by the app").unwrap();
                cached.del_item("REQUEST_METHOD").ok();
                kept.push(cached);
            }
            // Templates of three shapes: the http params, the https params, a lone
            // REQUEST_METHOD; a repeated param makes none.
            assert_eq!(cache.lock().unwrap().templates.len(), 3);
            assert_eq!(
                kept[0].get_item("PATH_INFO").unwrap().unwrap().to_string(),
                "changed by the app"
            );
        });
    }

    #[test]
    fn params_of_two_locations_one_with_more_get_a_template_each() {
        // Two locations: uwsgi_params, and uwsgi_params with SCRIPT_NAME after them.
        let short: Vec<(&[u8], &[u8])> = vec![
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", b"/a"),
            (b"HTTP_HOST", b"h"),
        ];
        let long: Vec<(&[u8], &[u8])> = vec![
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", b"/b"),
            (b"SCRIPT_NAME", b"/app"),
            (b"HTTP_HOST", b"h"),
        ];
        with_python(|py| {
            let cache = Mutex::default();
            for vars in [&short, &long, &short, &long] {
                let packet = uwsgi_proto::encode_request(0, vars.clone()).unwrap();
                let (environ, _) = EnvironSource::Uwsgi {
                    vars: decoded(&packet[4..]),
                    cache: &cache,
                }
                .to_dict(py, &[])
                .unwrap();
                let script_name = environ
                    .get_item("SCRIPT_NAME")
                    .unwrap()
                    .map(|v| v.to_string());
                let sent = vars.iter().any(|(name, _)| name == b"SCRIPT_NAME");
                let expected = if sent { "/app" } else { "" };
                assert_eq!(script_name.as_deref(), Some(expected), "{environ}");
            }
            let mut shapes: Vec<usize> = cache
                .lock()
                .unwrap()
                .templates
                .iter()
                .map(|t| t.params.len())
                .collect();
            shapes.sort();
            assert_eq!(shapes, [2, 3]);
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
            let (environ, _) = EnvironSource::Uwsgi {
                vars: decoded(&packet[4..]),
                cache: &Mutex::default(),
            }
            .to_dict(py, &[])
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
            let (environ, https) = EnvironSource::Http(info).to_dict(py, &[]).unwrap();
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
