//! ngx-wsgi's configuration: every option under its uWSGI name, parsed and validated.
//!
//! One [`Config`] is read from the command line and from INI, XML and TOML files, by the
//! daemon and by the nginx module, so it carries no dependency on nginx, tokio or Python.
#![forbid(unsafe_code)]

pub mod cache;
pub mod catalogue;
pub mod cron;
mod daemon;
mod expand;
mod ini;
mod load;
mod logic;
pub mod nginx;
#[macro_use]
mod options;
pub mod owner;
mod source;
mod toml_file;
mod xml;

use std::fmt;

pub use cache::CacheSpec;
use std::path::PathBuf;

pub use daemon::AttachedDaemon;
pub use load::{load_file, load_text, parse_args, Format, Parsed};
pub use options::{
    all_options, declared, help_text, lookup, suggest, topic_of, Action, Arity, OptionSpec, Support,
};
use options::{flag, optional, value};
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

declare_config! {
    /// Everything the daemon is told to do, under uWSGI's option names: one row per option
    /// (field, default, parser, and the option's name, topic and help line).
    ///
    /// `ngx-wsgi --check-config` prints it as TOML, which reads back to the same config.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "kebab-case")]
    pub struct Config {
        /// `socket`: uwsgi protocol listeners, in the order given.
        #[serde(serialize_with = "displays", skip_serializing_if = "Vec::is_empty")]
        socket: Vec<ListenAddr> = Vec::new(), push(listen_addr),
            value("socket", "sockets", "ADDR",
                "uwsgi protocol listener: /path (unix), @name (abstract unix), host:port or :port (TCP); repeatable")
            .aliases(&["uwsgi-socket"]).short('s');
        /// `http-socket` (`http`): HTTP/1.1 listeners served by the workers.
        #[serde(serialize_with = "displays", skip_serializing_if = "Vec::is_empty")]
        http_socket: Vec<ListenAddr> = Vec::new(), push(listen_addr),
            value("http-socket", "sockets", "ADDR",
                "HTTP/1.1 listener served by the workers themselves (keep-alive, chunked); repeatable; \
                 --http (a router process in uWSGI) is served the same way")
            .aliases(&["http"]);
        /// `listen`: backlog of every listening socket.
        listen: u32 = 4096, set(positive::<u32>),
            value("listen", "sockets", "N",
                "listen backlog of every socket (default 4096, clamped by net.core.somaxconn; uWSGI's 100 causes 502s under bursts)")
            .short('l');
        /// `chmod-socket`: mode of unix sockets.
        #[serde(serialize_with = "octal", skip_serializing_if = "Option::is_none")]
        chmod_socket: Option<u32> = None, some(socket_mode),
            optional("chmod-socket", "sockets", "MODE", "permissions of unix sockets, 3 octal digits (no value: 666)")
            .aliases(&["chmod"]).short('C');
        /// `chown-socket`: `user[:group]` owning unix sockets.
        #[serde(skip_serializing_if = "Option::is_none")]
        chown_socket: Option<String> = None, some(text),
            value("chown-socket", "sockets", "USER[:GROUP]", "owner of unix sockets");
        /// `umask`: the daemon's file mode creation mask (the mode of unix sockets without
        /// `chmod-socket`); `None` keeps the one it was started with.
        #[serde(serialize_with = "octal", skip_serializing_if = "Option::is_none")]
        umask: Option<u32> = None, some(umask),
            value("umask", "sockets", "MODE",
                "file mode creation mask of the daemon (3 octal digits): the mode of unix sockets without chmod-socket");
        /// `so-keepalive`: TCP keepalive probes on accepted connections.
        so_keepalive: bool = false, set(switch),
            flag("so-keepalive", "sockets",
                "enable TCP keepalive probes on accepted TCP connections (a peer gone silently is noticed)");
        /// `reuse-port`: SO_REUSEPORT on TCP listeners.
        reuse_port: bool = false, set(switch),
            flag("reuse-port", "sockets",
                "bind TCP listeners with SO_REUSEPORT, so another daemon can bind the same port (blue/green)");
        /// `socket-timeout`: seconds a uwsgi peer may take to send its request head.
        socket_timeout: u64 = 30, set(positive_seconds),
            value("socket-timeout", "sockets", "SECONDS",
                "how long a connected peer may take to send its request head (default 30; uWSGI's 4)")
            .short('z');
        /// `wsgi-file`: a Python file defining the app.
        #[serde(skip_serializing_if = "Option::is_none")]
        wsgi_file: Option<PathBuf> = None, some(path),
            value("wsgi-file", "app", "FILE", "load the WSGI app from this Python file").aliases(&["file"]);
        /// `module`: `pkg.mod[:callable]` defining the app.
        #[serde(skip_serializing_if = "Option::is_none")]
        module: Option<String> = None, some(text),
            value("module", "app", "MOD[:CALLABLE]", "load the WSGI app from this module")
            .aliases(&["wsgi"]).short('w');
        /// `mount`: more apps, each at a URL prefix: `MOUNTPOINT=FILE.py` or
        /// `MOUNTPOINT=MODULE[:CALLABLE]`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mount: Vec<String> = Vec::new(), push(mount_spec),
            value("mount", "app", "/PREFIX=APP",
                "serve APP (a .py file, or MODULE[:CALLABLE]) under /PREFIX: with manage-script-name the \
                 longest matching prefix picks the app, else the SCRIPT_NAME nginx sends; repeatable")
            .aliases(&["worker-mount"]);
        /// `manage-script-name`: the mounted app is picked from PATH_INFO's prefix, which
        /// moves to SCRIPT_NAME.
        manage_script_name: bool = false, set(switch),
            flag("manage-script-name", "app",
                "pick the mounted app by the longest mountpoint PATH_INFO starts with, and move that \
                 prefix from PATH_INFO to SCRIPT_NAME");
        /// `static-map`: URL prefixes served from directories before the app.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        static_map: Vec<String> = Vec::new(), push(static_mapping),
            value("static-map", "static", "/PREFIX=DIR",
                "serve files under DIR for paths starting with /PREFIX (the rest of the path under DIR), \
                 before the app; a path with no file goes to the app; repeatable");
        /// `static-map2`: the same, the whole path looked up under the directory.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        static_map2: Vec<String> = Vec::new(), push(static_mapping),
            value("static-map2", "static", "/PREFIX=DIR",
                "static-map looking up the whole path (prefix included) under DIR; repeatable");
        /// `check-static`: directories every request's path is looked up in first.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        check_static: Vec<PathBuf> = Vec::new(), push(path),
            value("check-static", "static", "DIR", "serve a file of DIR whose path is the request's, before the app; repeatable")
            .aliases(&["static-check"]);
        /// `static-index`: files served for a request naming a directory.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        static_index: Vec<String> = Vec::new(), push(text),
            value("static-index", "static", "FILE", "for a path naming a directory, serve this file of it (index.html); repeatable");
        /// `static-skip-ext`: extensions never served as static files.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        static_skip_ext: Vec<String> = Vec::new(), push(text),
            value("static-skip-ext", "static", "EXT", "never serve files with this extension (.py, .ini), the app gets the request; repeatable");
        /// `static-safe`: directories a static file may resolve into besides its own.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        static_safe: Vec<PathBuf> = Vec::new(), push(path),
            value("static-safe", "static", "DIR",
                "a directory a mapped file may resolve into (through a symlink) besides its own; repeatable");
        /// `pyargv`: the words of the app's `sys.argv` after the program name.
        #[serde(skip_serializing_if = "Option::is_none")]
        pyargv: Option<String> = None, some(text),
            value("pyargv", "app", "ARGS", "sys.argv for the app: [\"ngx-wsgi\", ARGS split at spaces]");
        /// `callable`: the app's name in its module.
        callable: String = "application".into(), set(text),
            value("callable", "app", "NAME", "name of the WSGI callable (default: application)");
        /// `chdir`: working directory for the app.
        #[serde(skip_serializing_if = "Option::is_none")]
        chdir: Option<PathBuf> = None, some(path),
            value("chdir", "app", "DIR", "change to this directory before loading the app");
        /// `pythonpath`: entries prepended to `sys.path`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pythonpath: Vec<PathBuf> = Vec::new(), push(path),
            value("pythonpath", "app", "DIR", "add DIR to sys.path; repeatable").aliases(&["python-path", "pp"]);
        /// `env`: environment variables set before the app loads.
        #[serde(serialize_with = "key_values", skip_serializing_if = "Vec::is_empty")]
        env: Vec<(String, String)> = Vec::new(), push(key_value),
            value("env", "app", "KEY=VALUE", "set an environment variable; repeatable");
        /// `home`: the app's virtualenv.
        #[serde(skip_serializing_if = "Option::is_none")]
        home: Option<PathBuf> = None, some(path),
            value("home", "app", "DIR", "the app's virtualenv (made from the same Python ngx-wsgi embeds)")
            .aliases(&["virtualenv", "venv", "pyhome"]).short('H');
        /// `master`: accepted; ngx-wsgi always supervises its workers.
        master: bool = false, set(switch),
            flag("master", "processes", "supervise the workers (always on in ngx-wsgi: a dead worker is respawned)")
            .short('M');
        /// `processes`: number of worker processes.
        processes: u32 = 1, set(workers),
            value("processes", "processes", "N", "worker processes (default 1)").aliases(&["workers"]).short('p');
        /// `threads`: request threads in each worker.
        threads: u32 = 1, set(workers),
            value("threads", "processes", "N", "request threads per worker (default 1)");
        /// `sched-batch`: whether request threads run under the kernel's `SCHED_BATCH`
        /// policy, so a request arriving does not preempt the process that sent it
        /// (nginx's worker); `None` (`auto`, the default): when the daemon has a uwsgi
        /// socket (nginx in front) and no more request threads than the cores it may run on.
        #[serde(skip_serializing_if = "Option::is_none")]
        sched_batch: Option<bool> = None, set(auto_or_switch),
            optional("sched-batch", "processes", "auto|true|false",
                "request threads run under SCHED_BATCH: a request arriving waits for a core instead of \
                 preempting nginx, which passes several at a time; auto (the default): with a uwsgi socket \
                 and processes x threads at most the cores, as with more the threads queue behind each other");
        /// `lazy-apps`: load the app in each worker instead of once before forking.
        lazy_apps: bool = false, set(switch),
            flag("lazy-apps", "processes", "load the app in each worker after fork instead of once in the master")
            .aliases(&["lazy"]);
        /// `cheaper`: the fewest workers kept (0: always `processes`), `processes` being the most.
        cheaper: u32 = 0, set(count_u32),
            value("cheaper", "processes", "N",
                "cheaper mode: keep at least N workers and start more, up to processes, as the load needs (0: off)");
        /// `cheaper-initial`: workers started at first in cheaper mode (0: `cheaper`).
        cheaper_initial: u32 = 0, set(count_u32),
            value("cheaper-initial", "processes", "N", "workers started at first in cheaper mode (default: cheaper)");
        /// `cheaper-step`: workers started at once when more are needed.
        cheaper_step: u32 = 1, set(positive::<u32>),
            value("cheaper-step", "processes", "N", "workers started at once when more are needed (default 1)");
        /// `cheaper-algo`: `spare` or `backlog`.
        cheaper_algo: String = "spare".into(), set(cheaper_algo),
            value("cheaper-algo", "processes", "spare|backlog",
                "spare (default): more workers when all are busy for cheaper-overload seconds, fewer when \
                 more than one idles; backlog: more while the TCP listen queue holds more than cheaper-overload");
        /// `cheaper-overload`: seconds (spare) or queued connections (backlog).
        cheaper_overload: u32 = 3, set(positive::<u32>),
            value("cheaper-overload", "processes", "N",
                "spare: seconds of overload before starting workers; backlog: queued connections (default 3)");
        /// `idle`: seconds without a request after which every worker stops, to start again
        /// with the next connection (0: never).
        idle: u64 = 0, set(seconds),
            value("idle", "processes", "SECONDS",
                "stop every worker after SECONDS without a request; the next connection starts them again (0: off)");
        /// `uid`: user (name or number) the daemon runs as once its sockets are bound.
        #[serde(skip_serializing_if = "Option::is_none")]
        uid: Option<String> = None, some(text),
            value("uid", "processes", "USER", "run as this user once the sockets are bound");
        /// `gid`: group (name or number) the daemon runs as once its sockets are bound.
        #[serde(skip_serializing_if = "Option::is_none")]
        gid: Option<String> = None, some(text),
            value("gid", "processes", "GROUP", "run as this group once the sockets are bound");
        /// `daemonize`: detach from the terminal and log to this file.
        #[serde(skip_serializing_if = "Option::is_none")]
        daemonize: Option<PathBuf> = None, some(path),
            value("daemonize", "processes", "LOGFILE",
                "detach into the background and log to LOGFILE (not needed under systemd)")
            .short('d');
        /// `pidfile`: where the master writes its pid.
        #[serde(skip_serializing_if = "Option::is_none")]
        pidfile: Option<PathBuf> = None, some(path),
            value("pidfile", "processes", "FILE", "write the master's pid to FILE");
        /// `safe-pidfile`: a pidfile written atomically (a temporary file renamed into place).
        #[serde(skip_serializing_if = "Option::is_none")]
        safe_pidfile: Option<PathBuf> = None, some(path),
            value("safe-pidfile", "processes", "FILE",
                "write the master's pid to FILE atomically: readers never see it empty or half-written");
        /// `master-fifo`: FIFOs the master reads uWSGI's one-letter commands from.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        master_fifo: Vec<PathBuf> = Vec::new(), push(path),
            value("master-fifo", "processes", "FILE",
                "a FIFO the master reads commands from: r/R reload, w/W reload workers, c chain reload, \
                 q/Q stop, s log the workers, l reopen the log, 0-9 select another fifo; repeatable");
        /// `attach-daemon`: commands the master runs beside the workers, restarts when
        /// they die and stops with itself.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attach_daemon: Vec<String> = Vec::new(), push(daemon_spec),
            value("attach-daemon", "daemons", "COMMAND",
                "run COMMAND (with /bin/sh -c) beside the workers: restarted if it dies, stopped (SIGTERM, \
                 then SIGKILL after reload-mercy) and started again on a reload; repeatable");
        /// `attach-daemon2`: the same, described as uWSGI's key=value list.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attach_daemon2: Vec<String> = Vec::new(), push(daemon_spec),
            value("attach-daemon2", "daemons", "cmd=...,KEY=VALUE",
                "attach-daemon with keys: cmd, pidfile, daemonize, stopsignal, reloadsignal, chdir, \
                 touch (restart when the file changes), max_throttle; repeatable");
        /// `smart-attach-daemon`: a command that daemonizes itself and writes a pidfile.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        smart_attach_daemon: Vec<String> = Vec::new(), push(daemon_spec),
            value("smart-attach-daemon", "daemons", "PIDFILE COMMAND",
                "run COMMAND, which daemonizes and writes PIDFILE; that pid is watched, restarted if it \
                 dies, left running across a reload, stopped with the daemon; repeatable");
        /// `smart-attach-daemon2`: the same for a command that stays in the foreground.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        smart_attach_daemon2: Vec<String> = Vec::new(), push(daemon_spec),
            value("smart-attach-daemon2", "daemons", "PIDFILE COMMAND",
                "smart-attach-daemon for a COMMAND that stays in the foreground; repeatable");
        /// `auto-procname`: process titles `ngx-wsgi master`, `ngx-wsgi worker N`.
        auto_procname: bool = false, set(switch),
            flag("auto-procname", "processes",
                "name the processes in ps and top: \"ngx-wsgi master\", \"ngx-wsgi worker N\"");
        /// `procname`: every process's title.
        #[serde(skip_serializing_if = "Option::is_none")]
        procname: Option<String> = None, some(text),
            value("procname", "processes", "NAME", "the title of every process (the master's too, unless procname-master)");
        /// `procname-master`: the master's title.
        #[serde(skip_serializing_if = "Option::is_none")]
        procname_master: Option<String> = None, some(text),
            value("procname-master", "processes", "NAME", "the master's title");
        /// `procname-prefix`: prepended to every title.
        #[serde(skip_serializing_if = "Option::is_none")]
        procname_prefix: Option<String> = None, some(text),
            value("procname-prefix", "processes", "TEXT", "prepended to every process title");
        /// `procname-prefix-spaced`: prepended to every title, with a space.
        #[serde(skip_serializing_if = "Option::is_none")]
        procname_prefix_spaced: Option<String> = None, some(text),
            value("procname-prefix-spaced", "processes", "TEXT", "prepended to every process title, with a space");
        /// `procname-append`: appended to every title.
        #[serde(skip_serializing_if = "Option::is_none")]
        procname_append: Option<String> = None, some(text),
            value("procname-append", "processes", "TEXT", "appended to every process title");
        /// `vacuum`: remove unix sockets and the pidfile at exit.
        vacuum: bool = false, set(switch),
            flag("vacuum", "processes", "remove unix sockets and the pidfile at exit");
        /// `limit-as`: each worker's address space limit, in MiB (0: none).
        limit_as: u64 = 0, set(mebibytes),
            value("limit-as", "processes", "MB",
                "cap each worker's address space (setrlimit): an app that allocates past it gets MemoryError");
        /// `harakiri`: seconds a request may run before its worker is killed and replaced
        /// (0: no limit).
        harakiri: u64 = 0, set(seconds),
            value("harakiri", "recycling", "SECONDS",
                "replace a worker whose request runs longer, logging the request and the worker's Python stacks first (0: off)")
            .short('t');
        /// `max-requests`: a worker is replaced after serving this many requests (0: never).
        max_requests: u64 = 0, set(requests),
            value("max-requests", "recycling", "N", "replace a worker after it served N requests (0: never)")
            .short('R');
        /// `max-requests-delta`: worker K's limit is `max-requests` + K × this.
        max_requests_delta: u64 = 0, set(requests),
            value("max-requests-delta", "recycling", "N",
                "worker K is replaced after max-requests + K×N requests, so the workers do not all restart at once");
        /// `touch-reload`: files whose modification reloads the daemon gracefully.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        touch_reload: Vec<PathBuf> = Vec::new(), push(path),
            value("touch-reload", "recycling", "FILE",
                "reload gracefully (as SIGHUP) when FILE's modification time changes; repeatable");
        /// `reload-on-rss`: a worker whose resident memory is above this many MiB after a
        /// request is replaced (0: never).
        reload_on_rss: u64 = 0, set(mebibytes),
            value("reload-on-rss", "recycling", "MB",
                "replace a worker gracefully once a request leaves its resident memory above this (0: off)");
        /// `reload-on-as`: a worker whose address space is above this many MiB after a request
        /// is replaced (0: never).
        reload_on_as: u64 = 0, set(mebibytes),
            value("reload-on-as", "recycling", "MB",
                "replace a worker gracefully once a request leaves its address space above this (0: off)");
        /// `harakiri-graceful-timeout`: seconds a worker past harakiri gets, after
        /// `harakiri-graceful-signal`, before SIGKILL (0: SIGKILL at once).
        harakiri_graceful_timeout: u64 = 0, set(seconds),
            value("harakiri-graceful-timeout", "recycling", "SECONDS",
                "a worker past harakiri first gets harakiri-graceful-signal and this long to finish its other \
                 requests before SIGKILL (0: SIGKILL at once)");
        /// `harakiri-graceful-signal`: the signal of a graceful harakiri.
        harakiri_graceful_signal: i32 = 15, set(signal_number),
            value("harakiri-graceful-signal", "recycling", "N",
                "the signal harakiri-graceful-timeout sends first (default 15, SIGTERM: stop accepting, finish in-flight requests)");
        /// `max-worker-lifetime`: seconds after which a worker is replaced gracefully (0: never).
        max_worker_lifetime: u64 = 0, set(seconds),
            value("max-worker-lifetime", "recycling", "SECONDS",
                "replace a worker gracefully once it has run this long (0: never)");
        /// `max-worker-lifetime-delta`: worker K's lifetime is `max-worker-lifetime` + (K-1) × this.
        max_worker_lifetime_delta: u64 = 0, set(seconds),
            value("max-worker-lifetime-delta", "recycling", "SECONDS",
                "worker K lives max-worker-lifetime + (K-1)×SECONDS, so the workers do not all restart at once");
        /// `min-worker-lifetime`: seconds a worker runs before max-requests, reload-on-rss or
        /// reload-on-as may replace it (0: at once).
        min_worker_lifetime: u64 = 0, set(seconds),
            value("min-worker-lifetime", "recycling", "SECONDS",
                "a worker runs at least this long before max-requests or the memory limits replace it \
                 (default 0, so max-requests N means at most N; uWSGI's is 10)");
        /// `reload-on-exception`: a worker whose app raised is replaced after that request.
        reload_on_exception: bool = false, set(switch),
            flag("reload-on-exception", "recycling",
                "replace a worker gracefully after a request in which the app raised an exception");
        /// `evil-reload-on-rss`: the master kills a worker whose resident memory is above this
        /// many MiB, whatever it is doing (0: never).
        evil_reload_on_rss: u64 = 0, set(mebibytes),
            value("evil-reload-on-rss", "recycling", "MB",
                "the master kills (SIGKILL) and replaces a worker whose resident memory goes above this, even mid-request (0: off)");
        /// `evil-reload-on-as`: the same for the address space.
        evil_reload_on_as: u64 = 0, set(mebibytes),
            value("evil-reload-on-as", "recycling", "MB",
                "the master kills (SIGKILL) and replaces a worker whose address space goes above this, even mid-request (0: off)");
        /// `touch-workers-reload`: files whose modification replaces every worker gracefully.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        touch_workers_reload: Vec<PathBuf> = Vec::new(), push(path),
            value("touch-workers-reload", "recycling", "FILE",
                "replace every worker gracefully (not the master) when FILE's modification time changes; repeatable");
        /// `touch-chain-reload`: files whose modification replaces the workers one at a time.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        touch_chain_reload: Vec<PathBuf> = Vec::new(), push(path),
            value("touch-chain-reload", "recycling", "FILE",
                "replace the workers one at a time, the next once the new one serves, when FILE's modification time changes; repeatable");
        /// `py-autoreload`: seconds between two looks at the imported modules' files
        /// (0: off); one that changed reloads the daemon. For development.
        py_autoreload: u64 = 0, set(seconds),
            value("py-autoreload", "recycling", "SECONDS",
                "every SECONDS, look at the files of the imported Python modules and reload when one \
                 changed (development; 0: off)")
            .aliases(&["py-auto-reload", "python-auto-reload", "python-autoreload"]);
        /// `py-auto-reload-ignore`: modules py-autoreload does not look at.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        py_auto_reload_ignore: Vec<String> = Vec::new(), push(text),
            value("py-auto-reload-ignore", "recycling", "MODULE", "a module py-autoreload leaves alone; repeatable");
        /// `reload-mercy`: seconds a graceful stop or reload waits for in-flight requests.
        reload_mercy: u64 = 60, set(positive_seconds),
            value("reload-mercy", "recycling", "SECONDS",
                "how long a graceful stop or reload waits for in-flight requests (default 60)")
            .aliases(&["worker-reload-mercy"]);
        /// `buffer-size`: the largest uwsgi vars block accepted, in bytes. uWSGI's classic
        /// 65536 (or more) is taken as written; the protocol's own limit is 65535
        /// ([`Config::vars_limit`]).
        buffer_size: usize = 65535, set(buffer_size),
            value("buffer-size", "requests", "BYTES",
                "largest uwsgi vars block accepted (default 65535, the most the protocol carries; uWSGI's 4096 causes 502s with big cookies)")
            .short('b');
        /// `limit-post`: the largest request body accepted, in bytes (0: no limit).
        limit_post: u64 = 0, set(body_limit),
            value("limit-post", "requests", "BYTES",
                "refuse request bodies larger than this with 413 (0: no limit, the default)");
        /// `add-header`: headers added to every response.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        add_header: Vec<String> = Vec::new(), push(header_line),
            value("add-header", "requests", "\"NAME: VALUE\"", "add this header to every response; repeatable");
        /// `show-config`: the effective config in the log at start.
        show_config: bool = false, set(switch),
            flag("show-config", "stats", "log the effective config (as --check-config prints it) at start");
        /// `stats`: where the master serves uWSGI's stats JSON.
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
        stats: Option<ListenAddr> = None, some(listen_addr),
            value("stats", "stats", "ADDR",
                "serve uWSGI's stats JSON (what uwsgitop reads) on this TCP address or unix socket")
            .aliases(&["stats-server"]);
        /// `stats-http`: the stats JSON as an HTTP response.
        stats_http: bool = false, set(switch),
            flag("stats-http", "stats", "serve the stats JSON as an HTTP response");
        /// `logto`: log file (default: stderr).
        #[serde(skip_serializing_if = "Option::is_none")]
        logto: Option<PathBuf> = None, some(path),
            value("logto", "logging", "FILE", "append the log to FILE instead of stderr");
        /// `log-maxsize`: the log file is rotated once larger than this many bytes (0: never).
        log_maxsize: u64 = 0, set(body_limit_size),
            value("log-maxsize", "logging", "BYTES",
                "rotate the logto file once it is larger than this: renamed (to log-backupname, or FILE.TIMESTAMP) and started afresh");
        /// `log-backupname`: what a rotated log file is renamed to.
        #[serde(skip_serializing_if = "Option::is_none")]
        log_backupname: Option<PathBuf> = None, some(path),
            value("log-backupname", "logging", "FILE", "the name log-maxsize renames the log file to (replaced at each rotation)");
        /// `touch-logreopen`: files whose modification reopens the log file.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        touch_logreopen: Vec<PathBuf> = Vec::new(), push(path),
            value("touch-logreopen", "logging", "FILE",
                "reopen the logto file (after logrotate moved it) when FILE's modification time changes; repeatable");
        /// `disable-logging`: no per-request log lines.
        disable_logging: bool = false, set(switch),
            flag("disable-logging", "logging", "do not log each request").short('L');
        /// `log-4xx`: log requests answered 4xx even with `disable-logging`.
        log_4xx: bool = false, set(switch),
            flag("log-4xx", "logging", "with disable-logging: still log requests answered 4xx");
        /// `log-5xx`: log requests answered 5xx even with `disable-logging`.
        log_5xx: bool = false, set(switch),
            flag("log-5xx", "logging", "with disable-logging: still log requests answered 5xx");
        /// `log-slow`: log requests that took this many milliseconds or more even with
        /// `disable-logging` (0: off).
        log_slow: u64 = 0, set(milliseconds),
            value("log-slow", "logging", "MS",
                "with disable-logging: still log requests that took MS milliseconds or more");
        /// `locks`: uWSGI's user locks beyond lock 0.
        locks: u64 = 0, set(lock_count),
            value("locks", "locks", "N",
                "N more shared locks for the app, besides lock 0: uwsgi.lock(n), uwsgi.unlock(n)");
        /// `cache2`: shared caches, `name=NAME,items=N,...` each.
        #[serde(serialize_with = "displays", skip_serializing_if = "Vec::is_empty")]
        cache2: Vec<CacheSpec> = Vec::new(), push(cache2_spec),
            value("cache2", "cache", "SPEC",
                "a cache shared by every worker: name=NAME,items=N[,blocksize=BYTES,blocks=N,bitmap=1,\
                 keysize=BYTES,sweep_on_full=1,purge_lru=1,lazy=1]; repeatable; uwsgi.cache_get() etc.");
        /// `cache`: uWSGI's first cache API: a cache named "default" of this many items.
        cache: Option<u64> = None, some(positive::<u64>),
            value("cache", "cache", "N", "a cache named \"default\" of N items of cache-blocksize bytes (use cache2 for more)");
        /// `cache-blocksize`: the block size of `cache`.
        cache_blocksize: u64 = 65536, set(cache_block_size),
            value("cache-blocksize", "cache", "BYTES", "the block size of the cache option's cache (default 64k)");
        /// `cache-expire-freq`: how often the master sweeps expired items.
        cache_expire_freq: u64 = 3, set(positive::<u64>),
            value("cache-expire-freq", "cache", "SECONDS",
                "how often the master removes expired items from the caches (default 3; not for lazy caches)");
        /// `spooler`: directories of task files (uwsgi.spool(), @spool), each run by
        /// `spooler-processes` processes the master starts.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        spooler: Vec<PathBuf> = Vec::new(), push(path),
            value("spooler", "spooler", "DIR",
                "run the tasks uwsgi.spool() and @spool write as files in DIR (it must exist), in \
                 spooler processes the master starts; repeatable (the first is the default)")
            .short('Q');
        /// `spooler-processes`: processes per spooler directory.
        spooler_processes: u32 = 1, set(workers),
            value("spooler-processes", "spooler", "N", "processes running each spooler's tasks (default 1)");
        /// `spooler-frequency`: how often an idle spooler looks at its directory (a task
        /// written by this daemon wakes it at once).
        spooler_frequency: u64 = 30, set(positive_seconds),
            value("spooler-frequency", "spooler", "SECONDS",
                "how often an idle spooler scans its directory for due tasks (default 30; a task spooled here, \
                 or written into the directory, wakes it at once)")
            .aliases(&["spooler-freq"]);
        /// `spooler-max-tasks`: a spooler process is replaced after this many tasks.
        spooler_max_tasks: u64 = 0, set(requests),
            value("spooler-max-tasks", "spooler", "N", "replace a spooler process after it ran N tasks (0: never)");
        /// `mules`: this many mules waiting for messages (`uwsgi.mule_msg()`, `@mulefunc`).
        mules: u64 = 0, set(mule_count),
            value("mules", "mules", "N",
                "start N mules: processes that serve no request and run what the workers send them \
                 (uwsgi.mule_msg(), @mulefunc)");
        /// `mule`: one more mule, running a script (or waiting for messages, bare).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mule: Vec<String> = Vec::new(), push(mule_script),
            optional("mule", "mules", "SCRIPT.py",
                "start a mule running SCRIPT.py (respawned when it ends), or with no value one waiting for \
                 messages; repeatable; these come first in mule ids");
        /// `farm`: a named group of mules sharing a queue: `NAME:1,2`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        farm: Vec<String> = Vec::new(), push(farm_spec),
            value("farm", "mules", "NAME:IDS",
                "a group of mules (NAME:1,2) reading one queue: uwsgi.mule_msg(msg, \"NAME\"), farm_get_msg(); repeatable");
        /// `cron`: shell commands the master runs on a schedule.
        #[serde(serialize_with = "displays", skip_serializing_if = "Vec::is_empty")]
        cron: Vec<cron::CronSpec> = Vec::new(), push(cron_spec),
            value("cron", "signals", "MIN HOUR DAY MONTH WEEKDAY COMMAND",
                "run COMMAND (sh -c, as the daemon's user) when the local time matches; -1 any, -N every N; repeatable");
        /// `unique-cron`: as `cron`, not started again while the previous run goes on.
        #[serde(serialize_with = "displays", skip_serializing_if = "Vec::is_empty")]
        unique_cron: Vec<cron::CronSpec> = Vec::new(), push(cron_spec),
            value("unique-cron", "signals", "MIN HOUR DAY MONTH WEEKDAY COMMAND",
                "as cron, but skipped while its previous run is still going; repeatable");
        /// `cron-harakiri`: a cron command running longer is killed.
        cron_harakiri: u64 = 0, set(seconds),
            value("cron-harakiri", "signals", "SECONDS", "kill a cron command still running after SECONDS (0: never)");
        /// `log-format`: the request line, with uWSGI's `%(var)` variables.
        log_format: Option<String> = None, some(text),
            value("log-format", "logging", "FORMAT",
                "the request log line, with uWSGI's variables: %(addr) %(user) %(method) %(uri) %(proto) \
                 %(status) %(size) %(msecs) %(ltime) %(var.NAME) ... (default: uWSGI's line)")
            .aliases(&["logformat"]);
        /// `logformat-strftime`: strftime() applied to the format's own text.
        logformat_strftime: bool = false, set(switch),
            flag("logformat-strftime", "logging",
                "apply strftime to log-format's text (%Y-%m-%d ...), at the request's start, local time")
            .aliases(&["log-format-strftime"]);
        /// `log-x-forwarded-for`: the client address from X-Forwarded-For.
        log_x_forwarded_for: bool = false, set(switch),
            flag("log-x-forwarded-for", "logging",
                "log the X-Forwarded-For header's address as the client's (%(addr)), when the request has one");
        /// `log-micros`: request durations in microseconds in the default line.
        log_micros: bool = false, set(switch),
            flag("log-micros", "logging", "the default request line gives the time in micros, not msecs");
        /// `logfile-chown`: the log file is given to `uid`/`gid`.
        logfile_chown: bool = false, set(switch),
            flag("logfile-chown", "logging",
                "give the logto file to uid and gid, so the workers (and a reloaded master) can reopen it");
        /// `logger`: where the daemon's own lines go (default: logto or stderr).
        #[serde(serialize_with = "display", skip_serializing_if = "Option::is_none")]
        logger: Option<LogTarget> = None, some(log_target),
            value("logger", "logging", "TARGET",
                "where log lines go: file:PATH, stdio, syslog[:IDENT] or rsyslog:HOST:PORT[,IDENT] (default: logto, else stderr)");
        /// `req-logger`: where request lines go (default: with the other lines).
        #[serde(serialize_with = "display", skip_serializing_if = "Option::is_none")]
        req_logger: Option<LogTarget> = None, some(log_target),
            value("req-logger", "logging", "TARGET",
                "where request lines go: file:PATH, stdio, syslog[:IDENT] or rsyslog:HOST:PORT[,IDENT] (default: with the other lines)")
            .aliases(&["logger-req"]);
    }
}

fn display<T: fmt::Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

/// Where `logger` and `req-logger` send lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `file:PATH`: appended to PATH.
    File(PathBuf),
    /// `stdio`: the process's stderr, as without a logger.
    Stdio,
    /// `syslog[:IDENT]`: the local syslog socket (/dev/log), facility user.
    Syslog { ident: String },
    /// `rsyslog:HOST:PORT[,IDENT]`: a syslog server over UDP.
    RemoteSyslog { addr: String, ident: String },
}

impl LogTarget {
    pub fn parse(text: &str) -> Option<LogTarget> {
        let (kind, arg) = text.split_once(':').unwrap_or((text, ""));
        match (kind, arg) {
            ("file", path) if !path.is_empty() => Some(LogTarget::File(path.into())),
            ("stdio", "") => Some(LogTarget::Stdio),
            ("syslog", ident) => Some(LogTarget::Syslog {
                ident: match ident {
                    "" => "ngx-wsgi".into(),
                    ident => ident.split(',').next().unwrap_or(ident).into(),
                },
            }),
            ("rsyslog", spec) => {
                let (addr, ident) = spec.split_once(',').unwrap_or((spec, "ngx-wsgi"));
                let (host, port) = addr.rsplit_once(':')?;
                (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| LogTarget::RemoteSyslog {
                    addr: addr.into(),
                    ident: ident.into(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::File(path) => write!(f, "file:{}", path.display()),
            LogTarget::Stdio => f.write_str("stdio"),
            LogTarget::Syslog { ident } => write!(f, "syslog:{ident}"),
            LogTarget::RemoteSyslog { addr, ident } => write!(f, "rsyslog:{addr},{ident}"),
        }
    }
}

fn displays<T: fmt::Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
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

/// One thing wrong with the options given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown option \"{name}\"{}", did_you_mean(.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("option \"{name}\" is a uWSGI option ngx-wsgi does not provide: {instead}")]
    Refused { name: String, instead: &'static str },
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
    #[error("{0}")]
    Conflict(String),
    #[error("no app to serve: set wsgi-file, module or mount")]
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
    #[error("\"{0}\" includes itself (through the files it includes): an include loop")]
    IncludeLoop(String),
    #[error("more than {0} config files are read in all: includes fanning out?")]
    TooManyFiles(usize),
    #[error("{0}")]
    TooLarge(String),
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
    value: Option<&str>,
) -> Result<T, ConfigError> {
    let text = value.unwrap_or("");
    match text.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(bad(name, text, "a whole number of at least 1")),
    }
}

fn count(name: &str, value: Option<&str>, unit: &str) -> Result<u64, ConfigError> {
    let text = value.unwrap_or("");
    text.parse::<u64>().map_err(|_| {
        bad(
            name,
            text,
            &format!("a whole number of {unit}, 0 for no limit"),
        )
    })
}

/// Ten years: the longest duration a config may give. Durations and what is computed from
/// them (deadlines, milliseconds) then never overflow.
const LONGEST_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// The largest amount of MiB a config may give (1 PiB): bytes computed from it fit a u64.
const LARGEST_MIB: u64 = 1 << 30;
/// Processes and threads: more than this is a typo, and would exhaust the machine.
const MOST_WORKERS: u32 = 4096;

fn within(
    name: &str,
    value: Option<&str>,
    n: u64,
    max: u64,
    expected: &str,
) -> Result<u64, ConfigError> {
    if n > max {
        return Err(bad(name, value.unwrap_or(""), expected));
    }
    Ok(n)
}

fn seconds(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = count(name, value, "seconds")?;
    let expected = "a whole number of seconds up to 315360000 (ten years), 0 for none";
    within(name, value, n, LONGEST_SECONDS, expected)
}

fn positive_seconds(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = positive::<u64>(name, value)?;
    let expected = "a whole number of seconds from 1 to 315360000 (ten years)";
    within(name, value, n, LONGEST_SECONDS, expected)
}

fn milliseconds(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = count(name, value, "milliseconds")?;
    let expected = "a whole number of milliseconds up to 315360000000 (ten years), 0 for none";
    within(name, value, n, LONGEST_SECONDS * 1000, expected)
}

fn workers(name: &str, value: Option<&str>) -> Result<u32, ConfigError> {
    let n = positive::<u32>(name, value)?;
    within(
        name,
        value,
        u64::from(n),
        u64::from(MOST_WORKERS),
        "a whole number from 1 to 4096",
    )?;
    Ok(n)
}

fn requests(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    count(name, value, "requests")
}

fn mule_count(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = count(name, value, "mules")?;
    within(name, value, n, 256, "a whole number of mules from 0 to 256")
}

/// A bare `mule` (no value, or a true boolean in a file) waits for messages; otherwise
/// the value is a Python script.
fn mule_script(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    match value.unwrap_or("").trim() {
        "" | "1" | "true" | "yes" | "on" => Ok(String::new()),
        script if script.ends_with(".py") => Ok(script.to_string()),
        other => Err(bad(
            name,
            other,
            "a Python script (.py), or no value for a mule waiting for messages",
        )),
    }
}

fn farm_spec(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("").trim();
    let valid = text.split_once(':').is_some_and(|(farm, ids)| {
        !farm.is_empty()
            && ids
                .split(',')
                .all(|id| id.trim().parse::<u32>().is_ok_and(|n| n >= 1))
    });
    match valid {
        true => Ok(text.to_string()),
        false => Err(bad(
            name,
            text,
            "NAME:IDS, a name and mule numbers such as heavy:1,2",
        )),
    }
}

fn mebibytes(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = count(name, value, "MiB")?;
    let expected = "a whole number of MiB up to 1073741824 (1 PiB), 0 for no limit";
    within(name, value, n, LARGEST_MIB, expected)
}

fn text(_: &str, value: Option<&str>) -> Result<String, ConfigError> {
    Ok(value.unwrap_or("").into())
}

fn lock_count(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let n = count(name, value, "locks")?;
    within(name, value, n, 65536, "a whole number of locks up to 65536")
}

fn cron_spec(name: &str, value: Option<&str>) -> Result<cron::CronSpec, ConfigError> {
    cron::CronSpec::parse(name, value.unwrap_or(""))
}

fn cache2_spec(name: &str, value: Option<&str>) -> Result<CacheSpec, ConfigError> {
    CacheSpec::parse(name, value.unwrap_or(""))
}

fn cache_block_size(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let text = value.unwrap_or("");
    parse_size(text)
        .filter(|n| *n > 0)
        .map(|n| n as u64)
        .ok_or_else(|| {
            bad(
                name,
                text,
                "a size in bytes of at least 1 (e.g. 65536, 64k)",
            )
        })
}

fn log_target(name: &str, value: Option<&str>) -> Result<LogTarget, ConfigError> {
    let text = value.unwrap_or("");
    LogTarget::parse(text).ok_or_else(|| {
        bad(
            name,
            text,
            "file:PATH, stdio, syslog[:IDENT] or rsyslog:HOST:PORT[,IDENT] (uWSGI's other loggers are not provided)",
        )
    })
}

fn path(_: &str, value: Option<&str>) -> Result<PathBuf, ConfigError> {
    Ok(value.unwrap_or("").into())
}

fn listen_addr(name: &str, value: Option<&str>) -> Result<ListenAddr, ConfigError> {
    let text = value.unwrap_or("");
    ListenAddr::parse(text).map_err(|expected| bad(name, text, &expected))
}

fn key_value(name: &str, value: Option<&str>) -> Result<(String, String), ConfigError> {
    let text = value.unwrap_or("");
    match text.split_once('=') {
        Some((key, val)) if !key.is_empty() => Ok((key.into(), val.into())),
        _ => Err(bad(name, text, "KEY=VALUE")),
    }
}

fn socket_mode(name: &str, value: Option<&str>) -> Result<u32, ConfigError> {
    let text = value.unwrap_or("");
    let mode = if text.is_empty() { "666" } else { text };
    match u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o777) {
        Some(m) if mode.len() == 3 || mode.len() == 4 => Ok(m),
        _ => Err(bad(name, text, "3 octal digits such as 660")),
    }
}

fn umask(name: &str, value: Option<&str>) -> Result<u32, ConfigError> {
    let text = value.unwrap_or("");
    match u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777) {
        Some(mask) if (1..=4).contains(&text.len()) => Ok(mask),
        _ => Err(bad(name, text, "octal digits such as 022 or 002")),
    }
}

fn buffer_size(name: &str, value: Option<&str>) -> Result<usize, ConfigError> {
    let text = value.unwrap_or("");
    parse_size(text).filter(|n| *n >= 1).ok_or_else(|| {
        bad(
            name,
            text,
            "a size in bytes of at least 1 (e.g. 32768, 32k or 64k)",
        )
    })
}

fn body_limit(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let text = value.unwrap_or("");
    parse_size(text)
        .map(|n| n as u64)
        .ok_or_else(|| bad(name, text, "a size in bytes (e.g. 10m), 0 for no limit"))
}

/// `static-map = /prefix=dir`.
fn static_mapping(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("");
    match text.split_once('=') {
        Some((prefix, dir)) if prefix.starts_with('/') && !dir.is_empty() => Ok(text.to_string()),
        _ => Err(bad(
            name,
            text,
            "/PREFIX=DIR (e.g. /static=/srv/app/static)",
        )),
    }
}

/// `mount = /prefix=app.py`: a mountpoint (empty, or starting with /) and an app.
fn mount_spec(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("");
    match text.split_once('=') {
        Some((point, app))
            if (point.is_empty() || point.starts_with('/')) && !app.trim().is_empty() =>
        {
            Ok(text.to_string())
        }
        _ => Err(bad(
            name,
            text,
            "/PREFIX=APP, APP being a .py file or MODULE[:CALLABLE] (e.g. /blog=blog/wsgi.py)",
        )),
    }
}

/// An attached daemon's description, checked now so a mistake names its line.
fn daemon_spec(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("");
    AttachedDaemon::parse(name, text)
        .map(|_| text.to_string())
        .map_err(|expected| bad(name, text, &expected))
}

fn signal_number(name: &str, value: Option<&str>) -> Result<i32, ConfigError> {
    let text = value.unwrap_or("");
    text.parse::<i32>()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| bad(name, text, "a signal number from 1 to 64 (15 is SIGTERM)"))
}

fn count_u32(name: &str, value: Option<&str>) -> Result<u32, ConfigError> {
    let text = value.unwrap_or("");
    text.parse::<u32>()
        .map_err(|_| bad(name, text, "a whole number, 0 for off"))
}

fn cheaper_algo(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("");
    match text {
        "spare" | "backlog" => Ok(text.to_string()),
        _ => Err(bad(
            name,
            text,
            "spare or backlog (ngx-wsgi's cheaper algorithms)",
        )),
    }
}

/// `Name: value`, as a response header line is written.
fn header_line(name: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("");
    match text.split_once(':') {
        Some((header, value))
            if !header.is_empty()
                && header.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                && !value.contains(['\r', '\n']) =>
        {
            Ok(text.to_string())
        }
        _ => Err(bad(
            name,
            text,
            "a header line such as \"X-Served-By: app1\"",
        )),
    }
}

fn body_limit_size(name: &str, value: Option<&str>) -> Result<u64, ConfigError> {
    let text = value.unwrap_or("");
    parse_size(text).map(|n| n as u64).ok_or_else(|| {
        bad(
            name,
            text,
            "a size in bytes (e.g. 2147483647 or 100m), 0 for never",
        )
    })
}

/// `auto` (None) or a switch's value.
fn auto_or_switch(name: &str, value: Option<&str>) -> Result<Option<bool>, ConfigError> {
    match value {
        Some(text) if text.eq_ignore_ascii_case("auto") => Ok(None),
        _ => switch(name, value).map(Some).map_err(|_| {
            bad(
                name,
                value.unwrap_or(""),
                "auto, true or false (or no value: true)",
            )
        }),
    }
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
    /// Applies one option, by any of its names, as it would be read from any source.
    pub fn apply(&mut self, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let spec = lookup(name).ok_or_else(|| ConfigError::Unknown {
            name: name.into(),
            suggestion: suggest(name),
        })?;
        self.apply_spec(spec, name, value)
    }

    /// [`Config::apply`] for an option already looked up.
    pub(crate) fn apply_spec(
        &mut self,
        spec: &OptionSpec,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), ConfigError> {
        match spec.action {
            Action::Set(apply) | Action::Push { apply, .. } => apply(self, name, value),
            Action::None => match spec.support {
                Support::Refused(instead) => Err(ConfigError::Refused {
                    name: name.into(),
                    instead,
                }),
                // Ignored options, and those the loader reads itself: nothing to set here.
                Support::Ignored(_) | Support::Yes => Ok(()),
            },
        }
    }

    /// Forgets what earlier sources said for a list option, so the command line replaces
    /// a file's list instead of adding to it.
    pub(crate) fn clear_list(&mut self, spec: &OptionSpec) {
        if let Action::Push { clear, .. } = spec.action {
            clear(self);
        }
    }

    /// Every listener, uwsgi ones first, each in the order given.
    pub fn listeners(&self) -> Vec<Listener> {
        let uwsgi = self.socket.iter().map(|addr| Listener {
            addr: addr.clone(),
            protocol: Protocol::Uwsgi,
        });
        let http = self.http_socket.iter().map(|addr| Listener {
            addr: addr.clone(),
            protocol: Protocol::Http,
        });
        uwsgi.chain(http).collect()
    }

    /// Cross-option checks, run after every source has been applied.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        match (&self.wsgi_file, &self.module) {
            (None, None) if self.mount.is_empty() => errors.push(ConfigError::NoApp),
            (Some(_), Some(_)) => errors.push(ConfigError::TwoApps),
            _ => {}
        }
        if self.max_worker_lifetime > 0 && self.min_worker_lifetime >= self.max_worker_lifetime {
            errors.push(ConfigError::Conflict(format!(
                "min-worker-lifetime = {} is not below max-worker-lifetime = {}: workers could \
                 never be replaced (uWSGI refuses it too)",
                self.min_worker_lifetime, self.max_worker_lifetime
            )));
        }
        if self.cheaper > 0 && self.cheaper >= self.processes {
            errors.push(ConfigError::Conflict(format!(
                "cheaper = {} is not below processes = {}: cheaper is the fewest workers, processes \
                 the most (uWSGI refuses it too)",
                self.cheaper, self.processes
            )));
        }
        if self.cheaper_initial > self.processes {
            errors.push(ConfigError::Conflict(format!(
                "cheaper-initial = {} is above processes = {}, the most workers",
                self.cheaper_initial, self.processes
            )));
        }
        if self.pidfile.is_some() && self.safe_pidfile.is_some() {
            errors.push(ConfigError::Conflict(
                "pidfile and safe-pidfile are both set: give one (safe-pidfile writes atomically)"
                    .into(),
            ));
        }
        if self.socket.is_empty() && self.http_socket.is_empty() {
            errors.push(ConfigError::NoListener);
        }
        errors
    }

    /// The largest vars block a request may carry: `buffer-size`, within the 65535 bytes
    /// the uwsgi protocol's 16-bit size can say at all.
    pub fn vars_limit(&self) -> usize {
        self.buffer_size.min(usize::from(u16::MAX))
    }

    /// What uWSGI accepts that does nothing in this config: worth a note, not an error.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if (self.log_maxsize > 0 || !self.touch_logreopen.is_empty())
            && self.logto.is_none()
            && self.daemonize.is_none()
        {
            warnings.push(
                "log-maxsize and touch-logreopen act on a log file, and there is none (no logto \
                 or daemonize): the log goes to stderr, unrotated"
                    .to_string(),
            );
        }
        let tcp = self
            .socket
            .iter()
            .chain(&self.http_socket)
            .any(|addr| matches!(addr, ListenAddr::Tcp { .. }));
        if self.cheaper > 0 && self.cheaper_algo == "backlog" && !tcp {
            warnings.push(
                "cheaper-algo = backlog reads the listen queue of TCP sockets, and this config \
                 has none: workers will stay at cheaper; use cheaper-algo = spare with unix sockets"
                    .to_string(),
            );
        }
        warnings
    }

    /// Every cache: the `cache` option's "default" one first, as uWSGI makes it, then the
    /// `cache2` ones in order.
    pub fn caches(&self) -> Vec<CacheSpec> {
        let legacy = self
            .cache
            .map(|items| CacheSpec::legacy(items, self.cache_blocksize));
        legacy
            .into_iter()
            .chain(self.cache2.iter().cloned())
            .collect()
    }

    /// Every attached daemon, from the four options that describe them.
    pub fn attached_daemons(&self) -> Vec<AttachedDaemon> {
        [
            ("attach-daemon", &self.attach_daemon),
            ("attach-daemon2", &self.attach_daemon2),
            ("smart-attach-daemon", &self.smart_attach_daemon),
            ("smart-attach-daemon2", &self.smart_attach_daemon2),
        ]
        .into_iter()
        .flat_map(|(option, values)| {
            values
                .iter()
                .filter_map(move |value| AttachedDaemon::parse(option, value).ok())
        })
        .collect()
    }

    /// The pidfile, written plainly (`pidfile`) or atomically (`safe-pidfile`).
    pub fn pidfile(&self) -> Option<&std::path::Path> {
        self.pidfile.as_deref().or(self.safe_pidfile.as_deref())
    }

    /// The mounted apps: (mountpoint, app) as `mount` gives them, mountpoints without a
    /// trailing slash.
    pub fn mounts(&self) -> Vec<(String, String)> {
        self.mount
            .iter()
            .filter_map(|m| m.split_once('='))
            .map(|(point, app)| {
                (
                    point.trim_end_matches('/').to_string(),
                    app.trim().to_string(),
                )
            })
            .collect()
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

#[cfg(test)]
mod catalogue_tests;
#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;
