use super::*;

fn parse(args: &str) -> Result<Parsed, ConfigErrors> {
    parse_args(args.split_whitespace())
}

fn errors(args: &str) -> Vec<String> {
    parse(args)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_copied_uwsgi_command_line_runs() {
    let parsed = parse(
        "--master --die-on-term --enable-threads --socket /tmp/app.sock --wsgi-file app.py \
         --processes 2 --threads 4 --logto /tmp/app.log --disable-logging --chmod-socket=660",
    )
    .unwrap();
    let c = &parsed.config;
    assert_eq!(
        c.listeners(),
        vec![Listener {
            addr: ListenAddr::Unix("/tmp/app.sock".into()),
            protocol: Protocol::Uwsgi
        }]
    );
    assert_eq!((c.processes, c.threads), (2, 4));
    assert!(c.master && c.disable_logging);
    assert_eq!(c.chmod_socket, Some(0o660));
    assert_eq!(
        c.logto.as_deref(),
        Some(std::path::Path::new("/tmp/app.log"))
    );
    let notes: Vec<String> = parsed.notes.iter().map(ToString::to_string).collect();
    assert_eq!(
        notes,
        vec![
            "option \"die-on-term\" ignored: SIGTERM always stops ngx-wsgi gracefully",
            "option \"enable-threads\" ignored: Python threads are always enabled",
        ]
    );
}

#[test]
fn short_flags_and_aliases() {
    let c = parse("-M -s :3031 -w mysite.wsgi:app -p 3 -H /srv/venv --pp /srv/lib")
        .unwrap()
        .config;
    assert!(c.master);
    assert_eq!(
        c.listeners()[0].addr,
        ListenAddr::Tcp {
            host: "0.0.0.0".into(),
            port: 3031
        }
    );
    assert_eq!(c.module_and_callable(), Some(("mysite.wsgi", "app")));
    assert_eq!(c.processes, 3);
    assert_eq!(c.home.as_deref(), Some(std::path::Path::new("/srv/venv")));
    assert_eq!(c.pythonpath, vec![PathBuf::from("/srv/lib")]);
}

#[test]
fn defaults_avoid_uwsgi_502_traps() {
    let c = parse("--socket /s --module m").unwrap().config;
    assert_eq!(c.buffer_size, 65535);
    assert!(c.listen >= 1024);
    assert_eq!(c.callable, "application");
    assert_eq!(c.module_and_callable(), Some(("m", "application")));
}

#[test]
fn repeatable_options_accumulate() {
    let c = parse("--socket /a --socket @b --http-socket 127.0.0.1:8000 --http [::1]:9000 --module m --env A=1 --env B=x=y")
        .unwrap()
        .config;
    let addrs: Vec<String> = c.listeners().iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(addrs, ["/a", "@b", "127.0.0.1:8000", "[::1]:9000"]);
    assert_eq!(c.listeners()[2].protocol, Protocol::Http);
    assert_eq!(
        c.env,
        vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
    );
}

#[test]
fn chmod_socket_without_value_means_666() {
    let c = parse("--socket /s --module m --chmod-socket")
        .unwrap()
        .config;
    assert_eq!(c.chmod_socket, Some(0o666));
    let c = parse("--chmod-socket 600 --socket /s --module m")
        .unwrap()
        .config;
    assert_eq!(c.chmod_socket, Some(0o600));
}

#[test]
fn unknown_option_suggests_the_close_one() {
    assert_eq!(
        errors("--sokcet /s --http :80 --module m"),
        ["unknown option \"sokcet\", did you mean \"socket\"?"]
    );
    assert_eq!(
        errors("--frobnicate --socket /s --module m"),
        ["unknown option \"frobnicate\""]
    );
}

#[test]
fn unsupported_uwsgi_option_is_named_as_such() {
    assert_eq!(
        errors("--socket /s --module m --emperor /etc/vassals"),
        [
            "option \"emperor\" is a uWSGI option ngx-wsgi does not provide: run one ngx-wsgi per \
         app as a systemd unit: systemctl enable --now ngx-wsgi@NAME (nginx-conf/ngx-wsgi@.service \
         reads /etc/ngx-wsgi/NAME.ini)"
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    assert_eq!(
        errors("--processes -2 --chmod-socket=999 --buffer-size 10x --listen 0 stray"),
        [
            "unexpected argument \"stray\" (options start with --)",
            "invalid value \"-2\" for option \"processes\": expected a whole number of at least 1",
            "invalid value \"999\" for option \"chmod-socket\": expected 3 octal digits such as 660",
            "invalid value \"10x\" for option \"buffer-size\": expected a size in bytes of at least 1 (e.g. 32768, 32k or 64k)",
            "invalid value \"0\" for option \"listen\": expected a whole number of at least 1",
            "no app to serve: set wsgi-file, module or mount",
            "nowhere to listen: set socket, http-socket or http",
        ]
    );
}

#[test]
fn missing_and_unexpected_values() {
    assert_eq!(
        errors("--module m --socket"),
        [
            "option \"socket\" needs a value",
            "nowhere to listen: set socket, http-socket or http"
        ]
    );
    assert_eq!(
        errors("--socket /s --module m --master=maybe"),
        ["invalid value \"maybe\" for option \"master\": expected true or false (or no value)"]
    );
    assert!(
        !parse("--socket /s --module m --master=no")
            .unwrap()
            .config
            .master
    );
    assert!(
        parse("--socket /s --module m --master=true")
            .unwrap()
            .config
            .master
    );
}

#[test]
fn bad_addresses_say_what_is_expected() {
    assert_eq!(
        errors("--http :80 --module m --socket nowhere"),
        ["invalid value \"nowhere\" for option \"socket\": expected /path (unix), @name (abstract unix), host:port or :port (TCP)"]
    );
    assert_eq!(
        errors("--http :80 --module m --socket localhost:99999"),
        ["invalid value \"localhost:99999\" for option \"socket\": expected a TCP port from 0 to 65535 after ':'"]
    );
}

#[test]
fn sizes_take_suffixes() {
    assert_eq!(parse_size("32k"), Some(32768));
    assert_eq!(parse_size("1M"), Some(1 << 20));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("k"), None);
    assert_eq!(parse_size(""), None);
    assert_eq!(
        parse("--socket /s --module m -b 8k")
            .unwrap()
            .config
            .buffer_size,
        8192
    );
}

#[test]
fn buffer_size_takes_what_uwsgi_takes() {
    // The classic uWSGI values: the protocol itself cannot carry more than 65535 bytes of
    // vars, so larger values mean that.
    for (given, limit) in [
        ("65536", 65535),
        ("64k", 65535),
        ("1m", 65535),
        ("4096", 4096),
    ] {
        let config = parse(&format!("--socket /s --module m --buffer-size {given}"))
            .unwrap()
            .config;
        assert_eq!(config.vars_limit(), limit, "buffer-size {given}");
    }
    assert!(parse("--socket /s --module m --buffer-size 0").is_err());
}

#[test]
fn two_apps_are_refused() {
    assert_eq!(
        errors("--socket /s --module m --wsgi-file f.py"),
        ["both wsgi-file and module are set: give one"]
    );
}

/// Every option declared with a field is applied by `Config::apply`, under every name.
#[test]
fn every_declared_option_is_applied() {
    for spec in FIELD_OPTIONS {
        let value = match spec.name {
            "socket" | "http-socket" | "stats" => Some("/tmp/x.sock"),
            "chmod-socket" => Some("660"),
            "env" => Some("A=B"),
            "add-header" => Some("X-A: b"),
            "mount" => Some("/a=a.py"),
            "cheaper-algo" => Some("spare"),
            "static-map" | "static-map2" => Some("/static=/srv/static"),
            "attach-daemon2" => Some("cmd=sleep 1"),
            "smart-attach-daemon" | "smart-attach-daemon2" => Some("/run/x.pid x"),
            "logger" | "req-logger" => Some("stdio"),
            "cache2" => Some("name=c,items=10"),
            "farm" => Some("heavy:1"),
            "cron" | "unique-cron" => Some("-1 -1 -1 -1 -1 true"),
            "mule" => Some("job.py"),
            _ if spec.arity == Arity::Flag => None,
            _ => Some("1"),
        };
        for name in spec.names() {
            let result = Config::default().apply(name, value);
            assert!(result.is_ok(), "option {name} is not applied: {result:?}");
        }
        assert!(
            !matches!(spec.action, Action::None),
            "{} sets nothing",
            spec.name
        );
    }
}

#[test]
fn help_lists_every_option_not_refused_by_topic() {
    let help = help_text();
    let listed_names: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[')
        .filter_map(|word| word.strip_prefix("--"))
        .collect();
    for spec in all_options() {
        let listed = listed_names.contains(&spec.name);
        match spec.support {
            Support::Refused(_) => assert!(!listed, "--help lists refused {}", spec.name),
            _ => assert!(listed, "--help misses {}", spec.name),
        }
    }
    assert!(help.contains("\nProcesses and workers:\n"));
    assert!(help.contains("SIGTERM stops gracefully"));
}
