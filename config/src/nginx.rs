//! What nginx's `wsgi_app` checks between a daemon config and the location passing
//! requests to it: the address to connect to, and the settings of the two sides that must
//! agree. Pure functions of their inputs; the nginx module gathers nginx's side.

use std::fmt;

use crate::{Config, ListenAddr, Location, Parsed};

/// How bad a disagreement is: an error fails `nginx -t`; a warning is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One disagreement, with the line of the daemon's config it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub at: Option<Location>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{} ({at})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// The user nginx's worker processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the worker is in (nginx calls initgroups()).
    pub groups: Vec<u32>,
}

impl WorkerUser {
    /// The user named `name` with primary group `gid`, and its supplementary groups.
    pub fn lookup(name: &str, uid: u32, gid: u32) -> WorkerUser {
        let mut groups = vec![gid];
        if let Ok(cname) = std::ffi::CString::new(name) {
            if let Ok(list) = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid)) {
                groups.extend(list.into_iter().map(|g| g.as_raw()));
            }
        }
        WorkerUser {
            name: name.into(),
            uid,
            gid,
            groups,
        }
    }
}

/// nginx's side of the location that passes requests to the daemon.
#[derive(Debug, Clone)]
pub struct NginxSide {
    /// `wsgi_read_timeout`, in milliseconds.
    pub read_timeout_ms: u64,
    /// `client_max_body_size`, in bytes (0: no limit).
    pub client_max_body_size: u64,
    /// The largest request head nginx accepts: `large_client_header_buffers` number × size.
    pub max_request_head: u64,
    pub worker: WorkerUser,
}

/// The address nginx connects to: the config's first uwsgi `socket`, as nginx's URL syntax
/// writes it (`unix:/run/app.sock`, `127.0.0.1:3031`).
pub fn upstream_url(parsed: &Parsed) -> Result<(String, Option<Location>), Finding> {
    let at = parsed.origins.get("socket").cloned();
    let error = |message: String| Finding {
        severity: Severity::Error,
        at: at.clone(),
        message,
    };
    let Some(addr) = parsed.config.socket.first() else {
        return Err(error(
            "the config has no uwsgi socket for nginx to pass requests to: add one, \
             such as socket = /run/ngx-wsgi/app.sock"
                .into(),
        ));
    };
    let url = match addr {
        ListenAddr::Unix(path) => format!("unix:{}", path.display()),
        ListenAddr::Abstract(name) => {
            return Err(error(format!(
                "socket = @{name} is an abstract unix socket, which nginx cannot connect to: \
                 use a path such as /run/ngx-wsgi/app.sock"
            )))
        }
        ListenAddr::Tcp { host, port } => match host.as_str() {
            // Listening on every interface: nginx reaches it on loopback.
            "0.0.0.0" => format!("127.0.0.1:{port}"),
            "::" => format!("[::1]:{port}"),
            host if host.contains(':') => format!("[{host}]:{port}"),
            host => format!("{host}:{port}"),
        },
    };
    Ok((url, at))
}

/// Everything about `parsed` that disagrees with nginx's side.
pub fn check(parsed: &Parsed, nginx: &NginxSide) -> Vec<Finding> {
    let config = &parsed.config;
    let at = |option: &str| parsed.origins.get(option).cloned();
    let mut findings = Vec::new();
    let mut add = |severity, option: &str, message: String| {
        findings.push(Finding {
            severity,
            at: at(option),
            message,
        })
    };

    let harakiri_ms = config.harakiri.saturating_mul(1000);
    if config.harakiri > 0 && nginx.read_timeout_ms <= harakiri_ms {
        let severity = if nginx.read_timeout_ms < harakiri_ms {
            Severity::Error
        } else {
            Severity::Warning
        };
        add(
            severity,
            "harakiri",
            format!(
                "wsgi_read_timeout {} is not longer than harakiri = {} s: nginx answers 504 and \
                 drops the request while the daemon still runs it; set wsgi_read_timeout {}s \
                 or more, or lower harakiri",
                show_ms(nginx.read_timeout_ms),
                config.harakiri,
                config.harakiri + 5
            ),
        );
    }

    if config.limit_post > 0
        && (nginx.client_max_body_size == 0 || nginx.client_max_body_size > config.limit_post)
    {
        let nginx_limit = match nginx.client_max_body_size {
            0 => "0 (no limit)".to_string(),
            n => format!("{n} bytes"),
        };
        add(
            Severity::Error,
            "limit-post",
            format!(
                "client_max_body_size is {nginx_limit}, above limit-post = {} bytes: nginx \
                 would take bodies the daemon refuses; set client_max_body_size {} or less",
                config.limit_post, config.limit_post
            ),
        );
    }

    if (config.buffer_size as u64) < nginx.max_request_head {
        add(
            Severity::Warning,
            "buffer-size",
            format!(
                "buffer-size = {} is smaller than the request heads nginx accepts ({} bytes, \
                 large_client_header_buffers): requests with large headers or cookies will \
                 get 431 from the daemon",
                config.buffer_size, nginx.max_request_head
            ),
        );
    }

    if let Some(ListenAddr::Unix(path)) = config.socket.first() {
        let (owner, group) = socket_owner(config);
        let option = if config.chmod_socket.is_some() {
            "chmod-socket"
        } else if config.umask.is_some() {
            "umask"
        } else {
            "socket"
        };
        // A socket the daemon has already made says for sure what applies now.
        let now = std::fs::metadata(path).ok().map(|meta| {
            use std::os::unix::fs::MetadataExt;
            (meta.mode() & 0o777, meta.uid(), meta.gid())
        });
        if let Some((mode, uid, gid)) = now {
            if let Access::Denied(_) =
                socket_access(Some(mode), Some(uid), Some(gid), &nginx.worker)
            {
                add(
                    Severity::Warning,
                    option,
                    format!(
                        "nginx's workers run as {} and cannot connect to {} as it is now (mode {mode:03o}, \
                         uid {uid}, gid {gid}): requests fail until the daemon makes it again",
                        nginx.worker.name,
                        path.display()
                    ),
                );
            }
        }
        // Without chmod-socket, a umask in the config says the mode bind() gives.
        let mode = config
            .chmod_socket
            .or(config.umask.map(|mask| 0o777 & !mask));
        match socket_access(mode, owner, group, &nginx.worker) {
            Access::Allowed => {}
            // The config leaves it to the umask, but the socket as it is lets them in.
            Access::Unsure(_)
                if now.is_some_and(|(mode, uid, gid)| {
                    socket_access(Some(mode), Some(uid), Some(gid), &nginx.worker)
                        == Access::Allowed
                }) => {}
            Access::Denied(why) => add(
                Severity::Error,
                option,
                format!(
                    "nginx's workers run as {} and cannot connect to {}: {why}",
                    nginx.worker.name,
                    path.display()
                ),
            ),
            Access::Unsure(why) => add(
                Severity::Warning,
                option,
                format!(
                    "nginx's workers run as {} and may not be able to connect to {}: {why}",
                    nginx.worker.name,
                    path.display()
                ),
            ),
        }
    }
    findings
}

fn show_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The owner and group `chown-socket` gives the socket, resolved to ids (`None`: not
/// given, the socket belongs to whoever starts the daemon).
fn socket_owner(config: &Config) -> (Option<u32>, Option<u32>) {
    let Some(spec) = &config.chown_socket else {
        return (None, None);
    };
    let (user, group) = crate::owner::split_owner(spec);
    (
        user.and_then(|u| crate::owner::user_id(u).ok()),
        group.and_then(|g| crate::owner::group_id(g).ok()),
    )
}

/// Whether a worker may connect to a unix socket (connecting needs write permission).
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied(String),
    Unsure(String),
}

/// Unix permission rules for connecting: the owner's bits if the worker owns the socket,
/// else the group's if it is in the group, else everyone's.
pub fn socket_access(
    mode: Option<u32>,
    owner: Option<u32>,
    group: Option<u32>,
    worker: &WorkerUser,
) -> Access {
    const FIX: &str = "set chmod-socket = 660 and chown-socket = :GROUP with a group of nginx's user, or chmod-socket = 666";
    if worker.uid == 0 {
        return Access::Allowed;
    }
    let Some(mode) = mode else {
        return if owner == Some(worker.uid) {
            Access::Allowed
        } else {
            Access::Unsure(format!(
                "without chmod-socket the socket's mode comes from the daemon's umask (with the \
                 usual 022, only its owner can connect); {FIX}"
            ))
        };
    };
    let shown = format!("{mode:03o}");
    if owner == Some(worker.uid) {
        return match mode & 0o200 {
            0 => Access::Denied(format!(
                "mode {shown} gives its owner no write permission; {FIX}"
            )),
            _ => Access::Allowed,
        };
    }
    if let Some(group) = group.filter(|g| worker.groups.contains(g)) {
        return match mode & 0o020 {
            0 => Access::Denied(format!(
                "the socket's group {group} is theirs but mode {shown} gives it no write permission; {FIX}"
            )),
            _ => Access::Allowed,
        };
    }
    if mode & 0o002 != 0 {
        return Access::Allowed;
    }
    if owner.is_some() && group.is_some() {
        return Access::Denied(format!(
            "mode {shown} lets only the socket's owner and group connect, and \
             chown-socket makes them a user and group that are not theirs; {FIX}"
        ));
    }
    Access::Unsure(format!(
        "mode {shown} lets only the socket's owner and group connect, and the config \
         does not say they are nginx's user (chown-socket); {FIX}"
    ))
}

/// The variable an nginx directive's value is made of alone (`$name` or `${name}`), if it
/// is: `wsgi_param` reads such a value by the variable's index, with no script run.
pub fn lone_variable(value: &[u8]) -> Option<&[u8]> {
    let name = value.strip_prefix(b"$")?;
    let name = match name.strip_prefix(b"{") {
        Some(braced) => braced.strip_suffix(b"}")?,
        None => name,
    };
    let is_name = !name.is_empty() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    is_name.then_some(name)
}

#[cfg(test)]
mod lone_variable_tests {
    use super::lone_variable;

    #[test]
    fn a_value_that_is_one_variable_names_it() {
        assert_eq!(
            lone_variable(b"$request_method"),
            Some(&b"request_method"[..])
        );
        assert_eq!(lone_variable(b"${http_x_real}"), Some(&b"http_x_real"[..]));
        // Anything else goes through nginx's script engine.
        for value in [
            &b"$request_method-$uri"[..],
            b"text",
            b"$",
            b"${}",
            b"${uri",
            b"$uri/",
            b"",
        ] {
            assert_eq!(
                lone_variable(value),
                None,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
