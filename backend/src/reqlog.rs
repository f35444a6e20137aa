//! Request log lines as uWSGI writes them: its default line, or `log-format` with its
//! `%(name)` variables, written whole in one write() to the log or to `req-logger`.
//!
//! The format is parsed once per worker; a line is made only when it is written.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ngx_wsgi_config::{Config, LogTarget};

use crate::outcome::Outcome;

/// What a request log line can say about one request.
pub struct RequestRecord<'a> {
    pub vars: Vars<'a>,
    /// The peer's address when the request names none (REMOTE_ADDR).
    pub peer: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub status: u16,
    /// Response body bytes sent.
    pub size: u64,
    /// The response's header count and head size in bytes.
    pub headers: usize,
    pub head_bytes: usize,
    pub started: SystemTime,
    pub duration: Duration,
    /// Which request thread served it (0-based, uWSGI's core).
    pub core: usize,
    /// This worker's requests and every worker's, this one included.
    pub worker_requests: u64,
    pub total_requests: u64,
}

/// What a request's log line says of the request itself, whatever its outcome.
pub struct RequestLine<'a> {
    pub vars: Vars<'a>,
    pub peer: &'a str,
    pub method: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    /// The response's header count and head size.
    pub response_head: (usize, usize),
    /// This worker's request number and every worker's (`req: N/M`).
    pub numbers: (u64, u64),
    /// The request thread's index (`core`).
    pub core: usize,
}

impl<'a> RequestRecord<'a> {
    /// The record of a request that ended with `outcome` after `took`.
    pub fn new(line: &'a RequestLine<'a>, outcome: &Outcome, took: Duration) -> RequestRecord<'a> {
        let (status, size) = match outcome {
            Outcome::Sent { status, bytes } => (*status, *bytes),
            Outcome::AppFailed { .. } => (500, 0),
            Outcome::Aborted { status, .. } => (*status, 0),
            Outcome::PeerGone { .. } => (0, 0),
        };
        RequestRecord {
            vars: line.vars,
            peer: line.peer,
            method: &line.method,
            uri: &line.uri,
            status,
            size,
            headers: line.response_head.0,
            head_bytes: line.response_head.1,
            started: SystemTime::now() - took,
            duration: took,
            core: line.core,
            worker_requests: line.numbers.0,
            total_requests: line.numbers.1,
        }
    }
}

impl RequestRecord<'_> {
    /// Who sent the request, for error lines: the client nginx names, and the socket it
    /// came through.
    pub fn client(&self) -> String {
        match (&self.vars, self.vars.get("REMOTE_ADDR")) {
            (Vars::Uwsgi(_), Some(addr)) => format!("{addr} via {}", self.peer),
            _ => self.peer.to_string(),
        }
    }
}

/// The request's variables: a uwsgi vars block, or what the HTTP listener read.
#[derive(Clone, Copy)]
pub enum Vars<'a> {
    /// Decoded with the request head.
    Uwsgi(uwsgi_proto::Vars<'a>),
    Http {
        head: &'a http::request::Parts,
        remote: &'a str,
    },
}

impl Vars<'_> {
    /// A variable by its CGI name (`REMOTE_USER`, `HTTP_REFERER`, ...).
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match self {
            Vars::Uwsgi(vars) => vars
                .iter()
                .find(|(key, _)| *key == name.as_bytes())
                .map(|(_, value)| String::from_utf8_lossy(value)),
            Vars::Http { head, remote } => match name {
                "REQUEST_METHOD" => Some(head.method.as_str().into()),
                "REQUEST_URI" => Some(head.uri.to_string().into()),
                "PATH_INFO" => Some(head.uri.path().into()),
                "QUERY_STRING" => Some(head.uri.query().unwrap_or("").into()),
                "SERVER_PROTOCOL" => Some(format!("{:?}", head.version).into()),
                "REMOTE_ADDR" => Some((*remote).into()),
                "CONTENT_TYPE" | "CONTENT_LENGTH" => header(head, &name.replace('_', "-")),
                _ => header(head, &name.strip_prefix("HTTP_")?.replace('_', "-")),
            },
        }
    }

    /// uWSGI's `{N vars in M bytes}`: N counts names and values, M is the vars block's size.
    fn count_and_size(&self) -> (usize, usize) {
        match self {
            Vars::Uwsgi(vars) => (vars.len() * 2, vars.block().len()),
            Vars::Http { head, .. } => {
                // The vars uWSGI's own HTTP parser makes: the CGI ones and one per header.
                let cgi = [
                    "REQUEST_METHOD",
                    "REQUEST_URI",
                    "PATH_INFO",
                    "QUERY_STRING",
                    "SERVER_PROTOCOL",
                    "SERVER_NAME",
                    "SERVER_PORT",
                    "REMOTE_ADDR",
                    "REMOTE_PORT",
                ];
                let cgi_bytes: usize = cgi
                    .iter()
                    .map(|name| 4 + name.len() + self.get(name).map_or(0, |v| v.len()))
                    .sum();
                let header_bytes: usize = head
                    .headers
                    .iter()
                    .map(|(name, value)| 4 + 5 + name.as_str().len() + value.len())
                    .sum();
                (
                    (cgi.len() + head.headers.len()) * 2,
                    cgi_bytes + header_bytes,
                )
            }
        }
    }
}

fn header<'a>(head: &'a http::request::Parts, name: &str) -> Option<Cow<'a, str>> {
    head.headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
}

/// One piece of a log format.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

/// Writes request lines in the config's format to the config's request log.
pub struct RequestLogger {
    /// `None`: uWSGI's default line.
    format: Option<Vec<Piece>>,
    strftime: bool,
    x_forwarded_for: bool,
    micros: bool,
    sink: LineSink,
}

impl RequestLogger {
    pub fn new(config: &Config) -> std::io::Result<RequestLogger> {
        let sink = match &config.req_logger {
            Some(target) => LineSink::open(target)?,
            None => LineSink::Stderr,
        };
        Ok(RequestLogger {
            sink,
            ..RequestLogger::stderr(config)
        })
    }

    /// The config's format, writing to stderr (when `req-logger` cannot be opened).
    pub fn stderr(config: &Config) -> RequestLogger {
        RequestLogger {
            format: config.log_format.as_deref().map(parse_format),
            strftime: config.logformat_strftime,
            x_forwarded_for: config.log_x_forwarded_for,
            micros: config.log_micros,
            sink: LineSink::Stderr,
        }
    }

    pub fn write(&self, record: &RequestRecord<'_>) {
        let mut line = self.line(record);
        line.push('\n');
        self.sink.write_line(&line);
    }
}

thread_local! {
    /// `uwsgi.set_logvar()`: variables for the request log line of the request this thread
    /// runs (`%(name)` in log-format); cleared as each request ends.
    static LOGVARS: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn set_logvar(key: &str, value: &str) {
    LOGVARS.with_borrow_mut(|vars| {
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_string(), value.to_string()));
    });
}

pub fn get_logvar(key: &str) -> Option<String> {
    LOGVARS.with_borrow(|vars| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
}

/// Forgets the request's log variables (after its line, written or not).
pub fn clear_logvars() {
    LOGVARS.with_borrow_mut(|vars| {
        if !vars.is_empty() {
            vars.clear();
        }
    });
}

impl RequestLogger {
    fn line(&self, r: &RequestRecord<'_>) -> String {
        let Some(format) = &self.format else {
            return self.default_line(r);
        };
        let mut line = String::with_capacity(128);
        for piece in format {
            match piece {
                Piece::Text(text) if self.strftime => line.push_str(&strftime(text, r.started)),
                Piece::Text(text) => line.push_str(text),
                Piece::Var(name) => line.push_str(&self.var(name, r)),
            }
        }
        line
    }

    /// uWSGI's default request line, field for field.
    fn default_line(&self, r: &RequestRecord<'_>) -> String {
        let (took, unit) = match self.micros {
            true => (r.duration.as_micros(), "micros"),
            false => (r.duration.as_millis(), "msecs"),
        };
        let (vars, vars_bytes) = r.vars.count_and_size();
        let (mut addr, mut user, mut proto, mut forwarded) = (None, None, None, None);
        match &r.vars {
            // One pass over the decoded vars for everything the line needs from them.
            Vars::Uwsgi(decoded) => {
                for (key, value) in decoded.iter() {
                    let slot = match key {
                        b"REMOTE_ADDR" => &mut addr,
                        b"REMOTE_USER" => &mut user,
                        b"SERVER_PROTOCOL" => &mut proto,
                        b"HTTP_X_FORWARDED_FOR" => &mut forwarded,
                        _ => continue,
                    };
                    *slot = Some(String::from_utf8_lossy(value));
                }
            }
            Vars::Http { .. } => {
                addr = r.vars.get("REMOTE_ADDR");
                user = r.vars.get("REMOTE_USER");
                proto = r.vars.get("SERVER_PROTOCOL");
                forwarded = r.vars.get("HTTP_X_FORWARDED_FOR");
            }
        }
        let addr = match forwarded.filter(|_| self.x_forwarded_for) {
            Some(forwarded) => Cow::Owned(first_address(&forwarded).unwrap_or(r.peer).to_string()),
            None => addr.unwrap_or(Cow::Borrowed(r.peer)),
        };
        format!(
            "[pid: {pid}|app: 0|req: {wreq}/{total}] {addr} ({user}) {{{vars} vars in {vars_bytes} bytes}} \
             [{time}] {method} {uri} => generated {size} bytes in {took} {unit} ({proto} {status}) \
             {headers} headers in {hsize} bytes (1 switches on core {core})",
            pid = std::process::id(),
            wreq = r.worker_requests,
            total = r.total_requests,
            user = user.unwrap_or_default(),
            time = ctime(r.started),
            method = r.method,
            uri = r.uri,
            size = r.size,
            proto = proto.unwrap_or(Cow::Borrowed("HTTP/1.1")),
            status = r.status,
            headers = r.headers,
            hsize = r.head_bytes,
            core = r.core,
        )
    }

    fn addr<'a>(&self, r: &'a RequestRecord<'_>) -> Cow<'a, str> {
        if self.x_forwarded_for {
            if let Some(forwarded) = r.vars.get("HTTP_X_FORWARDED_FOR") {
                if let Some(client) = first_address(&forwarded) {
                    return client.to_string().into();
                }
            }
        }
        r.vars.get("REMOTE_ADDR").unwrap_or(Cow::Borrowed(r.peer))
    }

    /// One of uWSGI's log variables; an unknown name is empty, as in uWSGI (where it
    /// would be a variable the app sets with `uwsgi.set_logvar`).
    fn var<'a>(&self, name: &str, r: &'a RequestRecord<'_>) -> Cow<'a, str> {
        let var = |cgi: &str| r.vars.get(cgi).map(|v| Cow::Owned(v.into_owned()));
        let since_epoch = r.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        let memory = || crate::stats::memory(std::process::id() as i32);
        let text: String = match name {
            "addr" => return self.addr(r),
            "user" => return var("REMOTE_USER").unwrap_or_default(),
            "host" => return var("HTTP_HOST").unwrap_or_default(),
            "referer" => return var("HTTP_REFERER").unwrap_or_default(),
            "uagent" => return var("HTTP_USER_AGENT").unwrap_or_default(),
            "proto" => return var("SERVER_PROTOCOL").unwrap_or_default(),
            "method" => return Cow::Borrowed(r.method),
            "uri" => return Cow::Borrowed(r.uri),
            "status" => r.status.to_string(),
            "size" => r.size.to_string(),
            "cl" => return var("CONTENT_LENGTH").unwrap_or(Cow::Borrowed("0")),
            "msecs" => r.duration.as_millis().to_string(),
            "micros" => r.duration.as_micros().to_string(),
            "time" => since_epoch.as_secs().to_string(),
            "tmsecs" => since_epoch.as_millis().to_string(),
            "tmicros" => since_epoch.as_micros().to_string(),
            "epoch" => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .to_string(),
            "ltime" => ctime(r.started),
            "ftime" => strftime("%d/%b/%Y:%H:%M:%S %z", r.started),
            "pid" => std::process::id().to_string(),
            "wid" => crate::process::worker_id().to_string(),
            "core" => r.core.to_string(),
            "switches" => "1".into(),
            "headers" => r.headers.to_string(),
            "hsize" => r.head_bytes.to_string(),
            "vars" => r.vars.count_and_size().0.to_string(),
            "pktsize" => r.vars.count_and_size().1.to_string(),
            "modifier1" | "modifier2" => "0".into(),
            "rss" => memory().0.to_string(),
            "vsz" => memory().1.to_string(),
            "rssM" => (memory().0 >> 20).to_string(),
            "vszM" => (memory().1 >> 20).to_string(),
            other => match other.strip_prefix("var.") {
                Some(cgi) => return var(cgi).unwrap_or_default(),
                None => return get_logvar(other).map_or(Cow::Borrowed(""), Cow::Owned),
            },
        };
        Cow::Owned(text)
    }
}

/// X-Forwarded-For's first address: the client's (the others are proxies on the way).
fn first_address(forwarded: &str) -> Option<&str> {
    Some(forwarded.split(',').next()?.trim()).filter(|a| !a.is_empty())
}

fn parse_format(format: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("%(") {
        let Some(len) = rest[start + 2..].find(')') else {
            break;
        };
        text.push_str(&rest[..start]);
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Var(rest[start + 2..start + 2 + len].to_string()));
        rest = &rest[start + 2 + len + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// The time as C's ctime() writes it (local time), as uWSGI's line has it; made once a
/// second per thread (it is most of a log line's cost otherwise).
fn ctime(at: SystemTime) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with_borrow_mut(|(last, text)| {
        if *last != secs {
            *text = strftime("%a %b %e %H:%M:%S %Y", at);
            *last = secs;
        }
        text.clone()
    })
}

fn strftime(format: &str, at: SystemTime) -> String {
    let Ok(format) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: all-zero is a valid `struct tm`, and localtime_r fills it from `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return String::new();
    }
    let mut out = vec![0u8; 256 + format.as_bytes().len() * 4];
    // SAFETY: `out` is writable for its length, the format is NUL-terminated and `tm` valid.
    let len = unsafe { libc::strftime(out.as_mut_ptr().cast(), out.len(), format.as_ptr(), &tm) };
    out.truncate(len);
    String::from_utf8_lossy(&out).into_owned()
}

/// Where whole lines go: stderr (the log file with `logto`), a file, or syslog.
pub enum LineSink {
    Stderr,
    File(std::fs::File),
    Syslog {
        socket: std::os::unix::net::UnixDatagram,
        ident: String,
    },
    RemoteSyslog {
        socket: std::net::UdpSocket,
        ident: String,
    },
}

impl LineSink {
    pub fn open(target: &LogTarget) -> std::io::Result<LineSink> {
        Ok(match target {
            LogTarget::Stdio => LineSink::Stderr,
            LogTarget::File(path) => LineSink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        std::io::Error::new(err.kind(), format!("\"{}\": {err}", path.display()))
                    })?,
            ),
            LogTarget::Syslog { ident } => {
                let socket = std::os::unix::net::UnixDatagram::unbound()?;
                socket.connect(syslog_socket()).map_err(|err| {
                    std::io::Error::new(
                        err.kind(),
                        format!("syslog socket \"{}\": {err}", syslog_socket()),
                    )
                })?;
                LineSink::Syslog {
                    socket,
                    ident: ident.clone(),
                }
            }
            LogTarget::RemoteSyslog { addr, ident } => {
                let socket = std::net::UdpSocket::bind(match addr.starts_with('[') {
                    true => "[::]:0",
                    false => "0.0.0.0:0",
                })?;
                socket.connect(addr.as_str()).map_err(|err| {
                    std::io::Error::new(err.kind(), format!("rsyslog \"{addr}\": {err}"))
                })?;
                LineSink::RemoteSyslog {
                    socket,
                    ident: ident.clone(),
                }
            }
        })
    }

    /// Writes one line (ending with a newline) in one system call, so lines of several
    /// processes never mix.
    pub fn write_line(&self, line: &str) {
        let _ = match self {
            LineSink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            LineSink::File(file) => (&*file).write_all(line.as_bytes()),
            LineSink::Syslog { socket, ident } => socket
                .send(syslog_message(ident, line).as_bytes())
                .map(|_| ()),
            LineSink::RemoteSyslog { socket, ident } => socket
                .send(syslog_message(ident, line).as_bytes())
                .map(|_| ()),
        };
    }
}

/// RFC 3164, as syslog(3) sends it: facility user (1), severity info (6).
fn syslog_message(ident: &str, line: &str) -> String {
    format!(
        "<14>{} {ident}[{}]: {}",
        strftime("%b %e %H:%M:%S", SystemTime::now()),
        std::process::id(),
        line.trim_end_matches('\n')
    )
}

/// The local syslog socket.
fn syslog_socket() -> &'static str {
    "/dev/log"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_split_into_text_and_variables() {
        assert_eq!(
            parse_format("%(addr) - [%(ltime)] \"%(method) %(uri)\" %(status) %(var.HTTP_X)%("),
            vec![
                Piece::Var("addr".into()),
                Piece::Text(" - [".into()),
                Piece::Var("ltime".into()),
                Piece::Text("] \"".into()),
                Piece::Var("method".into()),
                Piece::Text(" ".into()),
                Piece::Var("uri".into()),
                Piece::Text("\" ".into()),
                Piece::Var("status".into()),
                Piece::Text(" ".into()),
                Piece::Var("var.HTTP_X".into()),
                Piece::Text("%(".into()),
            ]
        );
    }
}
