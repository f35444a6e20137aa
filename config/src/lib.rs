//! ngx-wsgi's configuration: every option under its uWSGI name, parsed and validated.
//!
//! One [`Config`] is read from the command line and from INI, XML and TOML files, by the
//! daemon and by the nginx module, so it carries no dependency on nginx, tokio or Python.
#![forbid(unsafe_code)]

mod expand;
mod ini;
mod load;
pub mod nginx;
mod options;
pub mod owner;
mod source;
mod toml_file;
mod xml;

use std::fmt;
use std::path::PathBuf;

pub use load::{load_file, parse_args, Format, Parsed};
pub use options::{help_text, lookup, suggest, Arity, OptionSpec, Support, OPTIONS};
use serde::{Serialize, Serializer};
pub use source::{Diagnostic, Location, Note, Setting};
use thiserror::Error;

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `/path/to.sock` (any value containing a `/`).
    Unix(PathBuf),
    /// `@name`: a Linux abstract unix socket.
    Abstract(String),
    /// `host:port`, `[v6]:port` or `:port` (all interfaces).
    Tcp { host: String, port: u16 },
}

impl ListenAddr {
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(name) = value.strip_prefix('@') {
            if name.is_empty() {
                return Err("an abstract socket name after '@'".into());
            }
            return Ok(ListenAddr::Abstract(name.to_string()));
        }
        if value.contains('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(value)));
        }
        let (host, port) = value
            .rsplit_once(':')
            .ok_or("/path (unix), @name (abstract unix), host:port or :port (TCP)")?;
        let port: u16 = port
            .parse()
            .map_err(|_| "a TCP port from 0 to 65535 after ':'")?;
        let host = match host.trim_start_matches('[').trim_end_matches(']') {
            "" | "*" => "0.0.0.0".to_string(),
            host => host.to_string(),
        };
        Ok(ListenAddr::Tcp { host, port })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(path) => write!(f, "{}", path.display()),
            ListenAddr::Abstract(name) => write!(f, "@{name}"),
            ListenAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The wire protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Uwsgi,
    Http,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: ListenAddr,
    pub protocol: Protocol,
}

/// Everything the daemon is told to do, under uWSGI's option names.
///
/// `ngx-wsgi --check-config` prints it as TOML, which reads back to the same config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// `socket`, `http-socket`, `http`: where to listen, in the order given.
    #[serde(flatten, serialize_with = "listeners_by_option")]
    pub listeners: Vec<Listener>,
    /// `listen`: backlog of every listening socket.
    pub listen: u32,
    /// `chmod-socket`: mode of unix sockets.
    #[serde(serialize_with = "octal", skip_serializing_if = "Option::is_none")]
    pub chmod_socket: Option<u32>,
    /// `chown-socket`: `user[:group]` owning unix sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown_socket: Option<String>,
    /// `umask`: the daemon's file mode creation mask (the mode of unix sockets without
    /// `chmod-socket`); `None` keeps the one it was started with.
    #[serde(serialize_with = "octal", skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// `uid`: user (name or number) the daemon runs as once its sockets are bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `gid`: group (name or number) the daemon runs as once its sockets are bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// `wsgi-file`: a Python file defining the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsgi_file: Option<PathBuf>,
    /// `module`: `pkg.mod[:callable]` defining the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// `callable`: the app's name in its module.
    pub callable: String,
    /// `chdir`: working directory for the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chdir: Option<PathBuf>,
    /// `pythonpath`: entries prepended to `sys.path`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pythonpath: Vec<PathBuf>,
    /// `env`: environment variables set before the app loads.
    #[serde(serialize_with = "key_values", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// `home`: the app's virtualenv.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    /// `master`: accepted; ngx-wsgi always supervises its workers.
    pub master: bool,
    /// `processes`: number of worker processes.
    pub processes: u32,
    /// `threads`: request threads in each worker.
    pub threads: u32,
    /// `lazy-apps`: load the app in each worker instead of once before forking.
    pub lazy_apps: bool,
    /// `harakiri`: seconds a request may run before its worker is killed and replaced
    /// (0: no limit).
    pub harakiri: u64,
    /// `max-requests`: a worker is replaced after serving this many requests (0: never).
    pub max_requests: u64,
    /// `max-requests-delta`: worker K's limit is `max-requests` + K × this.
    pub max_requests_delta: u64,
    /// `touch-reload`: files whose modification reloads the daemon gracefully.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub touch_reload: Vec<PathBuf>,
    /// `reload-on-rss`: a worker whose resident memory is above this many MiB after a
    /// request is replaced (0: never).
    pub reload_on_rss: u64,
    /// `reload-on-as`: a worker whose address space is above this many MiB after a request
    /// is replaced (0: never).
    pub reload_on_as: u64,
    /// `limit-as`: each worker's address space limit, in MiB (0: none).
    pub limit_as: u64,
    /// `reload-mercy`: seconds a graceful stop or reload waits for in-flight requests.
    pub reload_mercy: u64,
    /// `limit-post`: the largest request body accepted, in bytes (0: no limit).
    pub limit_post: u64,
    /// `pidfile`: where the master writes its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// `daemonize`: detach from the terminal and log to this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemonize: Option<PathBuf>,
    /// `vacuum`: remove unix sockets and the pidfile at exit.
    pub vacuum: bool,
    /// `stats`: where the master serves uWSGI's stats JSON.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub stats: Option<ListenAddr>,
    /// `stats-http`: the stats JSON as an HTTP response.
    pub stats_http: bool,
    /// `buffer-size`: the largest uwsgi vars block accepted, in bytes. uWSGI's classic
    /// 65536 (or more) is taken as written; the protocol's own limit is 65535
    /// ([`Config::vars_limit`]).
    pub buffer_size: usize,
    /// `logto`: log file (default: stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logto: Option<PathBuf>,
    /// `disable-logging`: no per-request log lines.
    pub disable_logging: bool,
    /// `log-4xx`: log requests answered 4xx even with `disable-logging`.
    pub log_4xx: bool,
    /// `log-5xx`: log requests answered 5xx even with `disable-logging`.
    pub log_5xx: bool,
    /// `log-slow`: log requests that took this many milliseconds or more even with
    /// `disable-logging` (0: off).
    pub log_slow: u64,
}

fn listeners_by_option<S: Serializer>(listeners: &[Listener], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    for (option, protocol) in [("socket", Protocol::Uwsgi), ("http-socket", Protocol::Http)] {
        let addrs: Vec<String> = listeners
            .iter()
            .filter(|l| l.protocol == protocol)
            .map(|l| l.addr.to_string())
            .collect();
        if !addrs.is_empty() {
            map.serialize_entry(option, &addrs)?;
        }
    }
    map.end()
}

fn display<S: Serializer>(value: &Option<ListenAddr>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

fn octal<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match mode {
        Some(mode) => s.serialize_str(&format!("{mode:03o}")),
        None => s.serialize_none(),
    }
}

fn key_values<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(pairs.iter().map(|(k, v)| format!("{k}={v}")))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            listen: 4096,
            chmod_socket: None,
            chown_socket: None,
            umask: None,
            uid: None,
            gid: None,
            wsgi_file: None,
            module: None,
            callable: "application".into(),
            chdir: None,
            pythonpath: Vec::new(),
            env: Vec::new(),
            home: None,
            master: false,
            processes: 1,
            threads: 1,
            lazy_apps: false,
            harakiri: 0,
            max_requests: 0,
            max_requests_delta: 0,
            touch_reload: Vec::new(),
            reload_on_rss: 0,
            reload_on_as: 0,
            limit_as: 0,
            reload_mercy: 60,
            limit_post: 0,
            pidfile: None,
            daemonize: None,
            vacuum: false,
            stats: None,
            stats_http: false,
            buffer_size: 65535,
            logto: None,
            disable_logging: false,
            log_4xx: false,
            log_5xx: false,
            log_slow: 0,
        }
    }
}

/// One thing wrong with the options given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown option \"{name}\"{}", did_you_mean(.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("option \"{0}\" is a uWSGI option ngx-wsgi does not support yet")]
    NotSupportedYet(String),
    #[error("option \"{0}\" needs a value")]
    MissingValue(String),
    #[error("invalid value \"{value}\" for option \"{name}\": expected {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: String,
    },
    #[error("unexpected argument \"{0}\" (options start with --)")]
    StrayArgument(String),
    #[error("no app to serve: set wsgi-file or module")]
    NoApp,
    #[error("both wsgi-file and module are set: give one")]
    TwoApps,
    #[error("nowhere to listen: set socket, http-socket or http")]
    NoListener,
    #[error("cannot read config file: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Syntax(String),
    #[error("no [{0}] section in this file")]
    NoSection(String),
    #[error("%({0}) refers to nothing: no option or placeholder \"{0}\" is set in this file")]
    UnknownReference(String),
    #[error("%({0}) refers to itself through other placeholders")]
    CircularReference(String),
    #[error(
        "cannot tell the format of \"{0}\" from its name: use --ini FILE, --xml FILE or \
         --config FILE (TOML), or name it .ini, .xml or .toml"
    )]
    UnknownFormat(String),
    #[error("config files include each other more than 8 levels deep (\"{0}\")")]
    IncludeTooDeep(String),
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|name| format!(", did you mean \"{name}\"?"))
        .unwrap_or_default()
}

/// All the problems found in one set of options, reported together.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn bad(name: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue {
        name: name.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    name: &str,
    value: &str,
) -> Result<T, ConfigError> {
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(bad(name, value, "a whole number of at least 1")),
    }
}

fn count(name: &str, value: &str, unit: &str) -> Result<u64, ConfigError> {
    value.parse::<u64>().map_err(|_| {
        bad(
            name,
            value,
            &format!("a whole number of {unit}, 0 for no limit"),
        )
    })
}

/// A switch: no value, or uWSGI's spellings of true and false.
fn switch(name: &str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1" | "yes" | "on" | "") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(bad(
            name,
            value.unwrap_or(""),
            "true or false (or no value)",
        )),
    }
}

/// Parses a size in bytes: `65535`, `64k`, `1m` (powers of 1024, as uWSGI does).
pub fn parse_size(value: &str) -> Option<usize> {
    let lower = value.to_ascii_lowercase();
    let (digits, multiplier) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 1024),
        b'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        b'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (&lower[..], 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(multiplier)
}

impl Config {
    /// Applies one option, by its canonical name, as it would be read from any source.
    pub fn apply(&mut self, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let text = value.unwrap_or("");
        match name {
            "socket" | "http-socket" | "http" => {
                let addr =
                    ListenAddr::parse(text).map_err(|expected| bad(name, text, &expected))?;
                let protocol = if name == "socket" {
                    Protocol::Uwsgi
                } else {
                    Protocol::Http
                };
                self.listeners.push(Listener { addr, protocol });
            }
            "listen" => self.listen = positive(name, text)?,
            "chmod-socket" => {
                let mode = if text.is_empty() { "666" } else { text };
                let parsed = u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o777);
                match parsed {
                    Some(m) if mode.len() == 3 || mode.len() == 4 => self.chmod_socket = Some(m),
                    _ => return Err(bad(name, text, "3 octal digits such as 660")),
                }
            }
            "chown-socket" => self.chown_socket = Some(text.into()),
            "umask" => match u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777) {
                Some(mask) if (1..=4).contains(&text.len()) => self.umask = Some(mask),
                _ => return Err(bad(name, text, "octal digits such as 022 or 002")),
            },
            "uid" => self.uid = Some(text.into()),
            "gid" => self.gid = Some(text.into()),
            "wsgi-file" => self.wsgi_file = Some(text.into()),
            "module" => self.module = Some(text.into()),
            "callable" => self.callable = text.into(),
            "chdir" => self.chdir = Some(text.into()),
            "pythonpath" => self.pythonpath.push(text.into()),
            "env" => match text.split_once('=') {
                Some((key, val)) if !key.is_empty() => self.env.push((key.into(), val.into())),
                _ => return Err(bad(name, text, "KEY=VALUE")),
            },
            "home" => self.home = Some(text.into()),
            "master" => self.master = switch(name, value)?,
            "processes" => self.processes = positive(name, text)?,
            "threads" => self.threads = positive(name, text)?,
            "lazy-apps" => self.lazy_apps = switch(name, value)?,
            "harakiri" => self.harakiri = count(name, text, "seconds")?,
            "max-requests" => self.max_requests = count(name, text, "requests")?,
            "max-requests-delta" => self.max_requests_delta = count(name, text, "requests")?,
            "touch-reload" => self.touch_reload.push(text.into()),
            "reload-on-rss" => self.reload_on_rss = count(name, text, "MiB")?,
            "reload-on-as" => self.reload_on_as = count(name, text, "MiB")?,
            "limit-as" => self.limit_as = count(name, text, "MiB")?,
            "reload-mercy" => self.reload_mercy = positive(name, text)?,
            "limit-post" => {
                self.limit_post = parse_size(text)
                    .ok_or_else(|| bad(name, text, "a size in bytes (e.g. 10m), 0 for no limit"))?
                    as u64
            }
            "pidfile" => self.pidfile = Some(text.into()),
            "daemonize" => self.daemonize = Some(text.into()),
            "vacuum" => self.vacuum = switch(name, value)?,
            "buffer-size" => {
                self.buffer_size = parse_size(text).filter(|n| *n >= 1).ok_or_else(|| {
                    bad(
                        name,
                        text,
                        "a size in bytes of at least 1 (e.g. 32768, 32k or 64k)",
                    )
                })?
            }
            "stats" => {
                let addr =
                    ListenAddr::parse(text).map_err(|expected| bad(name, text, &expected))?;
                self.stats = Some(addr);
            }
            "stats-http" => self.stats_http = switch(name, value)?,
            "logto" => self.logto = Some(text.into()),
            "disable-logging" => self.disable_logging = switch(name, value)?,
            "log-4xx" => self.log_4xx = switch(name, value)?,
            "log-5xx" => self.log_5xx = switch(name, value)?,
            "log-slow" => self.log_slow = count(name, text, "milliseconds")?,
            other => unreachable_option(other)?,
        }
        Ok(())
    }

    /// Forgets what earlier sources said for a repeatable option, so the command line
    /// replaces a file's list instead of adding to it.
    pub(crate) fn clear_list(&mut self, name: &str) {
        match name {
            "socket" => self.listeners.retain(|l| l.protocol != Protocol::Uwsgi),
            "http-socket" => self.listeners.retain(|l| l.protocol != Protocol::Http),
            "pythonpath" => self.pythonpath.clear(),
            "touch-reload" => self.touch_reload.clear(),
            "env" => self.env.clear(),
            _ => {}
        }
    }

    /// Cross-option checks, run after every source has been applied.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        match (&self.wsgi_file, &self.module) {
            (None, None) => errors.push(ConfigError::NoApp),
            (Some(_), Some(_)) => errors.push(ConfigError::TwoApps),
            _ => {}
        }
        if self.listeners.is_empty() {
            errors.push(ConfigError::NoListener);
        }
        errors
    }

    /// The largest vars block a request may carry: `buffer-size`, within the 65535 bytes
    /// the uwsgi protocol's 16-bit size can say at all.
    pub fn vars_limit(&self) -> usize {
        self.buffer_size.min(usize::from(u16::MAX))
    }

    /// The module and callable names to import: `--module pkg.mod:app` wins over `--callable`.
    pub fn module_and_callable(&self) -> Option<(&str, &str)> {
        let module = self.module.as_deref()?;
        Some(match module.split_once(':') {
            Some((module, callable)) => (module, callable),
            None => (module, self.callable.as_str()),
        })
    }

    /// The config as TOML (ngx-wsgi's own format), for `--check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|err| format!("# cannot print the config: {err}\n"))
    }
}

/// Options in the table but missing from [`Config::apply`] are a bug in this crate; report
/// it as "not supported yet" rather than panicking in the user's face.
fn unreachable_option(name: &str) -> Result<(), ConfigError> {
    Err(ConfigError::NotSupportedYet(name.into()))
}

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;
