//! The table of options the daemon knows, by their uWSGI names.
//!
//! One table serves `--help`, the command-line parser and the "did you mean" suggestions,
//! so an option cannot be documented without being parsed or parsed without being listed.

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// `--master`: a switch, no value.
    Flag,
    /// `--socket ADDR`: a value is required.
    Value,
    /// `--chmod-socket[=MODE]`: a value may follow.
    OptionalValue,
}

/// What ngx-wsgi does with an option a uWSGI user may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented with uWSGI's meaning.
    Yes,
    /// Accepted and ignored: it means nothing for ngx-wsgi; the text says why.
    Ignored(&'static str),
    /// A uWSGI option ngx-wsgi does not implement yet: refused, named as such.
    NotYet,
}

/// One option: its uWSGI name, its other spellings, and its help line.
#[derive(Debug)]
pub struct OptionSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub arity: Arity,
    pub metavar: &'static str,
    pub help: &'static str,
    pub support: Support,
}

const fn opt(
    name: &'static str,
    aliases: &'static [&'static str],
    short: Option<char>,
    arity: Arity,
    metavar: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        aliases,
        short,
        arity,
        metavar,
        help,
        support: Support::Yes,
    }
}

const fn ignored(name: &'static str, arity: Arity, why: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        aliases: &[],
        short: None,
        arity,
        metavar: "",
        help: why,
        support: Support::Ignored(why),
    }
}

const fn not_yet(name: &'static str, arity: Arity) -> OptionSpec {
    OptionSpec {
        name,
        aliases: &[],
        short: None,
        arity,
        metavar: "",
        help: "uWSGI option, not supported yet",
        support: Support::NotYet,
    }
}

use Arity::{Flag, OptionalValue, Value};

/// Every option, in the order `--help` lists them.
pub static OPTIONS: &[OptionSpec] = &[
    // Listeners
    opt("socket", &["uwsgi-socket"], Some('s'), Value, "ADDR",
        "uwsgi protocol listener: /path (unix), @name (abstract unix), host:port or :port (TCP); repeatable"),
    opt("http-socket", &[], None, Value, "ADDR",
        "HTTP/1.1 listener served by the workers themselves (keep-alive, chunked); repeatable"),
    opt("http", &[], None, Value, "ADDR",
        "HTTP/1.1 listener; uWSGI starts a router process for it, ngx-wsgi serves it like --http-socket"),
    opt("listen", &[], Some('l'), Value, "N",
        "listen backlog of every socket (default 4096, clamped by net.core.somaxconn; uWSGI's 100 causes 502s under bursts)"),
    opt("chmod-socket", &[], None, OptionalValue, "MODE",
        "permissions of unix sockets, 3 octal digits (no value: 666)"),
    opt("chown-socket", &[], None, Value, "USER[:GROUP]", "owner of unix sockets"),
    opt("umask", &[], None, Value, "MODE",
        "file mode creation mask of the daemon (3 octal digits): the mode of unix sockets without chmod-socket"),
    // The application
    opt("wsgi-file", &["file"], None, Value, "FILE", "load the WSGI app from this Python file"),
    opt("module", &["wsgi"], Some('w'), Value, "MOD[:CALLABLE]", "load the WSGI app from this module"),
    opt("callable", &[], None, Value, "NAME", "name of the WSGI callable (default: application)"),
    opt("chdir", &[], None, Value, "DIR", "change to this directory before loading the app"),
    opt("pythonpath", &["python-path", "pp"], None, Value, "DIR", "add DIR to sys.path; repeatable"),
    opt("env", &[], None, Value, "KEY=VALUE", "set an environment variable; repeatable"),
    opt("home", &["virtualenv", "venv", "pyhome"], Some('H'), Value, "DIR",
        "the app's virtualenv (made from the same Python ngx-wsgi embeds)"),
    // Config files
    opt("ini", &[], None, Value, "FILE[:SECTION]",
        "read options from a uWSGI INI file ([uwsgi] section, or the one named); repeatable"),
    opt("xml", &[], None, Value, "FILE[:ID]", "read options from a uWSGI XML file (<uwsgi> root)"),
    opt("config", &[], None, Value, "FILE",
        "read options from a file: .ini and .xml as uWSGI reads them, anything else as TOML"),
    opt("set-placeholder", &["set-ph"], None, Value, "NAME=VALUE",
        "define a placeholder, %(NAME) in config files"),
    opt("check-config", &[], None, Flag, "",
        "check the options, print the effective config as TOML and exit (0: valid)"),
    // Processes
    opt("master", &[], Some('M'), Flag, "",
        "supervise the workers (always on in ngx-wsgi: a dead worker is respawned)"),
    opt("processes", &["workers"], Some('p'), Value, "N", "worker processes (default 1)"),
    opt("threads", &[], None, Value, "N", "request threads per worker (default 1)"),
    opt("lazy-apps", &["lazy"], None, Flag, "",
        "load the app in each worker after fork instead of once in the master"),
    opt("harakiri", &[], None, Value, "SECONDS",
        "replace a worker whose request runs longer, logging the request and the worker's Python stacks first (0: off)"),
    opt("max-requests", &[], None, Value, "N", "replace a worker after it served N requests (0: never)"),
    opt("uid", &[], None, Value, "USER", "run as this user once the sockets are bound"),
    opt("gid", &[], None, Value, "GROUP", "run as this group once the sockets are bound"),
    opt("daemonize", &[], None, Value, "LOGFILE",
        "detach into the background and log to LOGFILE (not needed under systemd)"),
    opt("max-requests-delta", &[], None, Value, "N",
        "worker K is replaced after max-requests + K×N requests, so the workers do not all restart at once"),
    opt("touch-reload", &[], None, Value, "FILE",
        "reload gracefully (as SIGHUP) when FILE's modification time changes; repeatable"),
    opt("reload-on-rss", &[], None, Value, "MB",
        "replace a worker gracefully once a request leaves its resident memory above this (0: off)"),
    opt("reload-on-as", &[], None, Value, "MB",
        "replace a worker gracefully once a request leaves its address space above this (0: off)"),
    opt("limit-as", &[], None, Value, "MB",
        "cap each worker's address space (setrlimit): an app that allocates past it gets MemoryError"),
    opt("reload-mercy", &["worker-reload-mercy"], None, Value, "SECONDS",
        "how long a graceful stop or reload waits for in-flight requests (default 60)"),
    opt("pidfile", &[], None, Value, "FILE", "write the master's pid to FILE"),
    opt("vacuum", &[], None, Flag, "", "remove unix sockets and the pidfile at exit"),
    // Requests
    opt("buffer-size", &[], Some('b'), Value, "BYTES",
        "largest uwsgi vars block accepted (default 65535, uWSGI's 4096 causes 502s with big cookies)"),
    opt("limit-post", &[], None, Value, "BYTES",
        "refuse request bodies larger than this with 413 (0: no limit, the default)"),
    // Monitoring
    opt("stats", &["stats-server"], None, Value, "ADDR",
        "serve uWSGI's stats JSON (what uwsgitop reads) on this TCP address or unix socket"),
    opt("stats-http", &[], None, Flag, "", "serve the stats JSON as an HTTP response"),
    // Logging
    opt("logto", &[], None, Value, "FILE", "append the log to FILE instead of stderr"),
    opt("disable-logging", &[], Some('L'), Flag, "", "do not log each request"),
    opt("log-4xx", &[], None, Flag, "", "with disable-logging: still log requests answered 4xx"),
    opt("log-5xx", &[], None, Flag, "", "with disable-logging: still log requests answered 5xx"),
    opt("log-slow", &[], None, Value, "MS",
        "with disable-logging: still log requests that took MS milliseconds or more"),
    // Accepted for compatibility
    ignored("die-on-term", Flag, "SIGTERM always stops ngx-wsgi gracefully"),
    ignored("enable-threads", Flag, "Python threads are always enabled"),
    ignored("single-interpreter", Flag, "ngx-wsgi always runs one interpreter per worker"),
    ignored("thunder-lock", Flag, "the kernel already wakes one worker per connection"),
    ignored("need-app", Flag, "ngx-wsgi never starts without its app"),
    ignored("strict", Flag, "ngx-wsgi always refuses unknown options"),
    ignored("no-orphans", Flag, "workers always exit when the master dies"),
    ignored("auto-procname", Flag, "process titles are not changed"),
    ignored("procname-prefix", Value, "process titles are not changed"),
    ignored("plugin", Value, "Python support is built in"),
    ignored("plugins", Value, "Python support is built in"),
    ignored("py-tracebacker", Value, "tracebacks of failing requests are always logged"),
    ignored("memory-report", Flag, "the stats server reports every worker's memory"),
    ignored("logdate", OptionalValue, "log lines always carry the date and time"),
    ignored("log-date", OptionalValue, "log lines always carry the date and time"),
    ignored("ignore-sigpipe", Flag, "a client gone mid-response is logged once, never a crash"),
    ignored("ignore-write-errors", Flag, "a client gone mid-response is logged once, never a crash"),
    ignored("disable-write-exception", Flag, "a client gone mid-response is never raised into the app"),
    ignored("http-keepalive", OptionalValue, "the HTTP listener always keeps connections alive"),
    ignored("post-buffering", Value,
        "request bodies are read from the socket as the app asks; nginx already buffers them (wsgi_request_buffering)"),
    ignored("post-buffering-bufsize", Value, "request bodies are read in 64 KiB pieces"),
    // uWSGI options users bring that ngx-wsgi does not implement yet
    ignored("harakiri-verbose", Flag, "harakiri always logs the request and the Python stacks of the worker it replaces"),
    not_yet("cache2", Value),
    not_yet("log-maxsize", Value),
    not_yet("json", Value),
    not_yet("yaml", Value),
    not_yet("static-map", Value),
    not_yet("py-autoreload", Value),
    not_yet("cheaper", Value),
    not_yet("offload-threads", Value),
    not_yet("mount", Value),
    not_yet("manage-script-name", Flag),
    not_yet("max-worker-lifetime", Value),
    not_yet("socket-timeout", Value),
    not_yet("http-timeout", Value),
    not_yet("wsgi-disable-file-wrapper", Flag),
    not_yet("log-x-forwarded-for", Flag),
    not_yet("log-format", Value),
    not_yet("logger", Value),
    not_yet("req-logger", Value),
    not_yet("add-header", Value),
    not_yet("route", Value),
    not_yet("route-run", Value),
    not_yet("hook-accepting", Value),
    not_yet("cheaper-initial", Value),
    not_yet("cheaper-step", Value),
    not_yet("cheaper-algo", Value),
    not_yet("threads-stacksize", Value),
    not_yet("max-fd", Value),
    not_yet("master-fifo", Value),
    not_yet("shared-socket", Value),
    not_yet("inherit", Value),
    not_yet("if-env", Value),
    not_yet("if-not-env", Value),
    not_yet("if-exists", Value),
    not_yet("if-not-exists", Value),
    not_yet("if-file", Value),
    not_yet("if-dir", Value),
    not_yet("if-opt", Value),
    not_yet("endif", OptionalValue),
    not_yet("for", Value),
    not_yet("endfor", OptionalValue),
    not_yet("attach-daemon", Value),
    not_yet("smart-attach-daemon", Value),
    not_yet("spooler", Value),
    not_yet("mule", OptionalValue),
    not_yet("emperor", Value),
];

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|spec| spec.name == name || spec.aliases.contains(&name))
}

/// Finds an option by its one-letter form.
pub fn lookup_short(letter: char) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.short == Some(letter))
}

/// The known option closest to a misspelled `name`, if one is close enough to suggest.
pub fn suggest(name: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .flat_map(|spec| std::iter::once(spec.name).chain(spec.aliases.iter().copied()))
        .map(|known| (strsim::damerau_levenshtein(name, known), known))
        .filter(|(distance, known)| *distance <= 2.max(known.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// The `--help` text.
pub fn help_text() -> String {
    let mut text = String::from(
        "ngx-wsgi: serve a Python WSGI app over the uwsgi protocol and HTTP\n\n\
         usage: ngx-wsgi [FILE.ini|FILE.xml|FILE.toml] [OPTIONS]\n\
         options take uWSGI's names: --opt VALUE or --opt=VALUE on the command line, opt = value in\n\
         files; the command line overrides the file. --check-config FILE prints what it means.\n\n",
    );
    for spec in OPTIONS {
        let mut left = format!("--{}", spec.name);
        for alias in spec.aliases {
            left.push_str(&format!(", --{alias}"));
        }
        if let Some(letter) = spec.short {
            left = format!("-{letter}, {left}");
        }
        match spec.arity {
            Arity::Flag => {}
            Arity::Value if !spec.metavar.is_empty() => {
                left.push_str(&format!(" {}", spec.metavar))
            }
            Arity::Value => left.push_str(" VALUE"),
            Arity::OptionalValue => left.push_str(&format!("[={}]", spec.metavar)),
        }
        let help = match spec.support {
            Support::Yes => spec.help.to_string(),
            Support::Ignored(why) => format!("accepted and ignored: {why}"),
            Support::NotYet => spec.help.to_string(),
        };
        text.push_str(&format!("  {left:<44} {help}\n"));
    }
    text.push_str(
        "\nsignals: SIGTERM stops gracefully (in-flight requests finish), SIGINT/SIGQUIT stop at once,\n\
         SIGHUP reloads gracefully (new workers on the same sockets, no request dropped)\n",
    );
    text
}
