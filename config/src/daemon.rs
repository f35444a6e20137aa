//! Attached daemons (`attach-daemon`, `attach-daemon2`, `smart-attach-daemon`,
//! `smart-attach-daemon2`): commands the master starts, restarts and stops with itself,
//! such as a Celery worker beside the app.

use std::path::PathBuf;

/// One attached daemon, as its option describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDaemon {
    /// Run with `/bin/sh -c`.
    pub command: String,
    /// Smart daemons: where the daemon writes its pid. The master watches that pid instead
    /// of its own child, and leaves the daemon running across a reload.
    pub pidfile: Option<PathBuf>,
    /// The command forks into the background itself (`smart-attach-daemon`,
    /// `daemonize=1`): its own child is not the daemon.
    pub daemonizes: bool,
    /// Sent to the daemon's process group to stop it (SIGTERM by default).
    pub stop_signal: i32,
    /// Sent instead of `stop_signal` when the master reloads (0: `stop_signal`).
    pub reload_signal: i32,
    /// Working directory of the command.
    pub chdir: Option<PathBuf>,
    /// Files whose modification restarts the daemon.
    pub touch: Vec<PathBuf>,
    /// The longest wait between two restarts of a daemon that keeps dying, in seconds.
    pub max_throttle: u64,
}

const SIGTERM: i32 = 15;
const DEFAULT_MAX_THROTTLE: u64 = 60;

impl AttachedDaemon {
    fn plain(command: &str) -> AttachedDaemon {
        AttachedDaemon {
            command: command.trim().to_string(),
            pidfile: None,
            daemonizes: false,
            stop_signal: SIGTERM,
            reload_signal: 0,
            chdir: None,
            touch: Vec::new(),
            max_throttle: DEFAULT_MAX_THROTTLE,
        }
    }

    /// Reads the value of option `option` (one of the four) as uWSGI writes it.
    pub fn parse(option: &str, value: &str) -> Result<AttachedDaemon, String> {
        let daemon = match option {
            "attach-daemon" => AttachedDaemon::plain(value),
            "smart-attach-daemon" | "smart-attach-daemon2" => {
                let (pidfile, command) = value
                    .trim()
                    .split_once(char::is_whitespace)
                    .ok_or("PIDFILE COMMAND: the pidfile the daemon writes, then its command")?;
                AttachedDaemon {
                    pidfile: Some(PathBuf::from(pidfile)),
                    daemonizes: option == "smart-attach-daemon",
                    ..AttachedDaemon::plain(command)
                }
            }
            "attach-daemon2" => parse_keyval(value)?,
            other => return Err(format!("{other} is not an attach-daemon option")),
        };
        if daemon.command.is_empty() {
            return Err("a command to run".into());
        }
        Ok(daemon)
    }
}

/// `attach-daemon2 = cmd=...,pidfile=...,stopsignal=15`: uWSGI's key=value list.
fn parse_keyval(value: &str) -> Result<AttachedDaemon, String> {
    let mut daemon = AttachedDaemon::plain("");
    for item in value.split(',').filter(|i| !i.trim().is_empty()) {
        let (key, val) = item.split_once('=').ok_or_else(|| {
            format!("key=value items separated by commas (\"{item}\" has no '=')")
        })?;
        let (key, val) = (key.trim(), val.trim());
        let signal = || {
            val.parse::<i32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| format!("a signal number for {key} (e.g. 15 for SIGTERM)"))
        };
        match key {
            "command" | "cmd" | "exec" => daemon.command = val.to_string(),
            "pidfile" => daemon.pidfile = Some(PathBuf::from(val)),
            "daemonize" | "daemon" => {
                daemon.daemonizes = matches!(val, "1" | "true" | "yes" | "on");
            }
            "stopsignal" | "stop_signal" => daemon.stop_signal = signal()?,
            "reloadsignal" | "reload_signal" => daemon.reload_signal = signal()?,
            "chdir" => daemon.chdir = Some(PathBuf::from(val)),
            "touch" => daemon.touch.push(PathBuf::from(val)),
            "max_throttle" => {
                daemon.max_throttle = val
                    .parse()
                    .map_err(|_| "a number of seconds for max_throttle".to_string())?
            }
            // How often uWSGI looks at a smart daemon's pidfile; ngx-wsgi looks every tick.
            "freq" => {}
            "uid" | "gid" | "stdin" | "control" | "legion" | "ns_pid" | "notifypid" => {
                return Err(format!(
                    "{key} is not supported for attached daemons: run such a daemon as a \
                     systemd unit of its own"
                ))
            }
            other => {
                return Err(format!(
                    "known keys: cmd, pidfile, daemonize, stopsignal, reloadsignal, chdir, touch, \
                     max_throttle, freq (not \"{other}\")"
                ))
            }
        }
    }
    if daemon.daemonizes && daemon.pidfile.is_none() {
        return Err("daemonize=1 needs pidfile=, where the daemon writes its pid".into());
    }
    Ok(daemon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_options_as_uwsgi_writes_them() {
        let celery =
            AttachedDaemon::parse("attach-daemon", "celery -A proj worker -l info").unwrap();
        assert_eq!(celery.command, "celery -A proj worker -l info");
        assert_eq!((celery.stop_signal, celery.pidfile), (15, None));
        let smart = AttachedDaemon::parse(
            "smart-attach-daemon",
            "/tmp/memcached.pid memcached -d -P /tmp/memcached.pid",
        )
        .unwrap();
        assert_eq!(smart.pidfile, Some(PathBuf::from("/tmp/memcached.pid")));
        assert!(smart.daemonizes);
        let smart2 =
            AttachedDaemon::parse("smart-attach-daemon2", "/tmp/x.pid x --foreground").unwrap();
        assert!(!smart2.daemonizes);
        let keyval = AttachedDaemon::parse(
            "attach-daemon2",
            "cmd=celery -A proj beat,stopsignal=2,chdir=/srv/app,touch=/srv/app/reload,freq=5",
        )
        .unwrap();
        assert_eq!(keyval.command, "celery -A proj beat");
        assert_eq!(keyval.stop_signal, 2);
        assert_eq!(keyval.chdir, Some(PathBuf::from("/srv/app")));
        assert_eq!(keyval.touch, [PathBuf::from("/srv/app/reload")]);
        for (value, error) in [
            ("cmd=x,stopsignal=TERM", "a signal number for stopsignal (e.g. 15 for SIGTERM)"),
            ("cmd=x,bogus=1", "known keys: cmd, pidfile, daemonize, stopsignal, reloadsignal, chdir, touch, max_throttle, freq (not \"bogus\")"),
            ("cmd=x,daemonize=1", "daemonize=1 needs pidfile=, where the daemon writes its pid"),
            ("stopsignal=15", "a command to run"),
        ] {
            assert_eq!(AttachedDaemon::parse("attach-daemon2", value).unwrap_err(), error);
        }
        assert!(AttachedDaemon::parse("smart-attach-daemon", "/only/a/pidfile").is_err());
    }
}
