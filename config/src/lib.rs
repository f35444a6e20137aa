//! ngx-wsgi's configuration: every option under its uWSGI name, parsed and validated.
//!
//! The daemon reads it from the command line today; the same [`Config`] will be read
//! from INI, XML and TOML files, and by the nginx module, so it carries no dependency on
//! nginx, tokio or Python.
#![forbid(unsafe_code)]

mod options;

use std::fmt;
use std::path::PathBuf;

pub use options::{help_text, lookup, suggest, Arity, OptionSpec, Support, OPTIONS};
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

/// Everything the daemon is told to do. Field names are uWSGI's option names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `socket`, `http-socket`, `http`: where to listen, in the order given.
    pub listeners: Vec<Listener>,
    /// `listen`: backlog of every listening socket.
    pub listen: u32,
    /// `chmod-socket`: mode of unix sockets.
    pub chmod_socket: Option<u32>,
    /// `chown-socket`: `user[:group]` owning unix sockets.
    pub chown_socket: Option<String>,
    /// `wsgi-file`: a Python file defining the app.
    pub wsgi_file: Option<PathBuf>,
    /// `module`: `pkg.mod[:callable]` defining the app.
    pub module: Option<String>,
    /// `callable`: the app's name in its module.
    pub callable: String,
    /// `chdir`: working directory for the app.
    pub chdir: Option<PathBuf>,
    /// `pythonpath`: entries prepended to `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// `env`: environment variables set before the app loads.
    pub env: Vec<(String, String)>,
    /// `home`: the app's virtualenv.
    pub home: Option<PathBuf>,
    /// `master`: accepted; ngx-wsgi always supervises its workers.
    pub master: bool,
    /// `processes`: number of worker processes.
    pub processes: u32,
    /// `threads`: request threads in each worker.
    pub threads: u32,
    /// `lazy-apps`: load the app in each worker instead of once before forking.
    pub lazy_apps: bool,
    /// `reload-mercy`: seconds a graceful stop or reload waits for in-flight requests.
    pub reload_mercy: u64,
    /// `pidfile`: where the master writes its pid.
    pub pidfile: Option<PathBuf>,
    /// `vacuum`: remove unix sockets and the pidfile at exit.
    pub vacuum: bool,
    /// `buffer-size`: the largest uwsgi vars block accepted, in bytes.
    pub buffer_size: usize,
    /// `logto`: log file (default: stderr).
    pub logto: Option<PathBuf>,
    /// `disable-logging`: no per-request log lines.
    pub disable_logging: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            listen: 4096,
            chmod_socket: None,
            chown_socket: None,
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
            reload_mercy: 60,
            pidfile: None,
            vacuum: false,
            buffer_size: 65535,
            logto: None,
            disable_logging: false,
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
    #[error("option \"{0}\" takes no value")]
    UnexpectedValue(String),
    #[error("invalid value \"{value}\" for option \"{name}\": expected {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: String,
    },
    #[error("unexpected argument \"{0}\" (options start with --)")]
    StrayArgument(String),
    #[error("no app to serve: give --wsgi-file FILE or --module MODULE")]
    NoApp,
    #[error("both --wsgi-file and --module are set: give one")]
    TwoApps,
    #[error("nowhere to listen: give --socket, --http-socket or --http")]
    NoListener,
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|name| format!(", did you mean \"{name}\"?"))
        .unwrap_or_default()
}

/// All the problems found in one set of options, reported together.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

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

/// The result of reading options: the config and one note per ignored option.
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub notes: Vec<String>,
}

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
            "master" => self.master = true,
            "processes" => self.processes = positive(name, text)?,
            "threads" => self.threads = positive(name, text)?,
            "lazy-apps" => self.lazy_apps = true,
            "reload-mercy" => self.reload_mercy = positive(name, text)?,
            "pidfile" => self.pidfile = Some(text.into()),
            "vacuum" => self.vacuum = true,
            "buffer-size" => {
                self.buffer_size = parse_size(text)
                    .filter(|n| (1..=65535).contains(n))
                    .ok_or_else(|| {
                        bad(
                            name,
                            text,
                            "a size from 1 to 65535 bytes (e.g. 32768 or 32k)",
                        )
                    })?
            }
            "logto" => self.logto = Some(text.into()),
            "disable-logging" => self.disable_logging = true,
            other => unreachable_option(other)?,
        }
        Ok(())
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

    /// The module and callable names to import: `--module pkg.mod:app` wins over `--callable`.
    pub fn module_and_callable(&self) -> Option<(&str, &str)> {
        let module = self.module.as_deref()?;
        Some(match module.split_once(':') {
            Some((module, callable)) => (module, callable),
            None => (module, self.callable.as_str()),
        })
    }
}

/// Options in the table but missing from [`Config::apply`] are a bug in this crate; report
/// it as "not supported yet" rather than panicking in the user's face.
fn unreachable_option(name: &str) -> Result<(), ConfigError> {
    Err(ConfigError::NotSupportedYet(name.into()))
}

/// Reads command-line arguments (without the program name) into a validated config.
///
/// Every problem is collected, so a user fixing a copied uWSGI command line sees them all.
pub fn parse_args<I, S>(args: I) -> Result<Parsed, ConfigErrors>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
    let mut config = Config::default();
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (spec, inline_value, shown) = if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            match lookup(name) {
                Some(spec) => (spec, value, name.to_string()),
                None => {
                    errors.push(ConfigError::Unknown {
                        name: name.into(),
                        suggestion: suggest(name),
                    });
                    // Skip what is probably its value, so it is not reported as stray too.
                    if value.is_none() && args.get(i).is_some_and(|next| !next.starts_with('-')) {
                        i += 1;
                    }
                    continue;
                }
            }
        } else if let Some(letter) = arg.strip_prefix('-').filter(|s| s.chars().count() == 1) {
            let letter = letter.chars().next().unwrap_or('-');
            match options::lookup_short(letter) {
                Some(spec) => (spec, None, spec.name.to_string()),
                None => {
                    errors.push(ConfigError::Unknown {
                        name: arg.clone(),
                        suggestion: None,
                    });
                    continue;
                }
            }
        } else {
            errors.push(ConfigError::StrayArgument(arg.clone()));
            continue;
        };

        let value = match (spec.arity, inline_value) {
            (Arity::Flag, Some(v)) if matches!(v.as_str(), "true" | "1" | "yes") => None,
            (Arity::Flag, Some(_)) => {
                errors.push(ConfigError::UnexpectedValue(shown));
                continue;
            }
            (Arity::Flag, None) => None,
            (_, Some(v)) => Some(v),
            (Arity::Value, None) => match args.get(i) {
                Some(next) => {
                    i += 1;
                    Some(next.clone())
                }
                None => {
                    errors.push(ConfigError::MissingValue(shown));
                    continue;
                }
            },
            // uWSGI only takes `--chmod-socket=660`; accept `--chmod-socket 660` as well.
            (Arity::OptionalValue, None) => match args.get(i) {
                Some(next)
                    if !next.starts_with('-') && next.chars().all(|c| c.is_ascii_digit()) =>
                {
                    i += 1;
                    Some(next.clone())
                }
                _ => None,
            },
        };
        match spec.support {
            Support::Yes => {
                if let Err(error) = config.apply(spec.name, value.as_deref()) {
                    errors.push(error);
                }
            }
            Support::Ignored(why) => notes.push(format!("option \"{shown}\" ignored: {why}")),
            Support::NotYet => errors.push(ConfigError::NotSupportedYet(shown)),
        }
    }
    errors.extend(config.validate());
    if errors.is_empty() {
        Ok(Parsed { config, notes })
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests;
