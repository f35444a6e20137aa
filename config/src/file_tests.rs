//! The three file formats, their substitutions and their error messages (which are part of
//! the contract: users grep for them and act on them).

use std::path::{Path, PathBuf};

use super::*;
use crate::load::read_text;

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ngx-wsgi-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> Parsed {
    match load_file(path) {
        Ok(parsed) => parsed,
        Err(errors) => panic!("{path:?} did not load:\n{errors}"),
    }
}

fn load_errors(path: &Path) -> Vec<String> {
    let errors = load_file(path).expect_err("the file should be refused");
    errors.0.iter().map(ToString::to_string).collect()
}

fn notes(parsed: &Parsed) -> Vec<String> {
    parsed.notes.iter().map(ToString::to_string).collect()
}

const DJANGO_INI: &str = "\
# mysite_uwsgi.ini, as Django deployment guides write it
[uwsgi]
uid = www-data
gid = www-data
chdir = /srv/mysite
module = mysite.wsgi:application
env = DJANGO_SETTINGS_MODULE=mysite.settings
home = /srv/mysite/venv
master = true
processes = 4
socket = /run/mysite/mysite.sock
chmod-socket = 660
pidfile = /run/mysite/mysite.pid
vacuum = true
max-requests = 5000
harakiri = 30
buffer-size = 32768
post-buffering = 8192
die-on-term = true
";

#[test]
fn the_classic_django_ini_loads_and_means_what_uwsgi_reads() {
    let dir = scratch("django");
    let parsed = load(&write(&dir, "mysite.ini", DJANGO_INI));
    let c = &parsed.config;
    assert_eq!(
        (c.uid.as_deref(), c.gid.as_deref()),
        (Some("www-data"), Some("www-data"))
    );
    assert_eq!(c.chdir.as_deref(), Some(Path::new("/srv/mysite")));
    assert_eq!(
        c.module_and_callable(),
        Some(("mysite.wsgi", "application"))
    );
    assert_eq!(
        c.env,
        [("DJANGO_SETTINGS_MODULE".into(), "mysite.settings".into())]
    );
    assert_eq!(c.home.as_deref(), Some(Path::new("/srv/mysite/venv")));
    assert!(c.master && c.vacuum);
    assert_eq!(c.processes, 4);
    assert_eq!(
        c.listeners()[0].addr,
        ListenAddr::Unix("/run/mysite/mysite.sock".into())
    );
    assert_eq!(c.listeners()[0].protocol, Protocol::Uwsgi);
    assert_eq!(c.chmod_socket, Some(0o660));
    assert_eq!(
        c.pidfile.as_deref(),
        Some(Path::new("/run/mysite/mysite.pid"))
    );
    assert_eq!(
        (c.max_requests, c.harakiri, c.buffer_size),
        (5000, 30, 32768)
    );
    let path = dir.join("mysite.ini").display().to_string();
    assert_eq!(
        notes(&parsed),
        [
            format!("{path}:18: option \"post-buffering\" ignored: request bodies are read from the socket as the app asks; nginx already buffers them (wsgi_request_buffering)"),
            format!("{path}:19: option \"die-on-term\" ignored: SIGTERM always stops ngx-wsgi gracefully"),
        ]
    );
    assert_eq!(parsed.origins["harakiri"].line, 16);
}

#[test]
fn ini_sections_comments_repeated_and_bare_keys() {
    let text = "\
top = ignored, before any section
[uwsgi]
; a comment
   # an indented comment
socket = :3031
pythonpath = /srv/a
pythonpath = /srv/b
master
lazy-apps = false
module = app
[staging]
socket = :4041
module = staging_app
";
    let dir = scratch("sections");
    let path = write(&dir, "app.ini", text);
    let c = load(&path).config;
    assert_eq!(c.listeners().len(), 1);
    assert_eq!(c.listeners()[0].addr.to_string(), "0.0.0.0:3031");
    assert_eq!(
        c.pythonpath,
        [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
    );
    assert!(c.master);
    assert!(!c.lazy_apps);
    let staging = load(Path::new(&format!("{}:staging", path.display()))).config;
    assert_eq!(staging.module.as_deref(), Some("staging_app"));
    assert_eq!(staging.listeners()[0].addr.to_string(), "0.0.0.0:4041");
    assert_eq!(
        load_errors(Path::new(&format!("{}:prod", path.display()))),
        [
            format!("{}: no [prod] section in this file", path.display()),
            format!(
                "{}: no app to serve: set wsgi-file, module or mount",
                path.display()
            ),
            format!(
                "{}: nowhere to listen: set socket, http-socket or http",
                path.display()
            ),
        ]
    );
}

#[test]
fn ini_placeholders_environment_and_magic_variables() {
    std::env::set_var("NGX_WSGI_TEST_LOGDIR", "/var/log/test");
    let text = "\
[uwsgi]
project = mysite
base = /srv
chdir = %(base)/%(project)
module = %(project).wsgi
socket = %d%n.sock
pidfile = %(chdir)/%n-%e.pid
logto = $(NGX_WSGI_TEST_LOGDIR)/%s.log
env = LITERAL=100%%
env = UNSET=$(NGX_WSGI_TEST_SURELY_UNSET)
";
    let dir = scratch("magic");
    let path = write(&dir, "site.ini", text);
    let parsed = load(&path);
    let c = &parsed.config;
    assert_eq!(c.chdir.as_deref(), Some(Path::new("/srv/mysite")));
    assert_eq!(c.module.as_deref(), Some("mysite.wsgi"));
    let abs = std::path::absolute(&dir).unwrap();
    assert_eq!(
        c.listeners()[0].addr,
        ListenAddr::Unix(abs.join("site.sock"))
    );
    assert_eq!(
        c.pidfile.as_deref(),
        Some(Path::new("/srv/mysite/site-ini.pid"))
    );
    assert_eq!(
        c.logto.as_deref(),
        Some(Path::new("/var/log/test/site.ini.log"))
    );
    assert_eq!(
        c.env,
        [
            ("LITERAL".into(), "100%".into()),
            ("UNSET".into(), String::new())
        ]
    );
    assert_eq!(
        notes(&parsed),
        [format!(
            "{}:10: $(NGX_WSGI_TEST_SURELY_UNSET) is not set in the environment: read as empty, as uWSGI does",
            path.display()
        )]
    );
}

#[test]
fn ini_inline_comments_are_stripped_with_a_warning() {
    let text = "[uwsgi]\nmodule = app\nprocesses=2 # workers\nsocket = /run/a.sock ; nginx talks here\nenv = COLOR=#fff\n";
    let dir = scratch("inline");
    let path = write(&dir, "app.ini", text);
    let parsed = load(&path);
    assert_eq!(parsed.config.processes, 2);
    assert_eq!(parsed.config.listeners()[0].addr.to_string(), "/run/a.sock");
    assert_eq!(parsed.config.env, [("COLOR".into(), "#fff".into())]);
    let p = path.display();
    assert_eq!(
        notes(&parsed),
        [
            format!("{p}:3: \"# workers\" after the value of processes is read as a comment (uWSGI would make it part of the value)"),
            format!("{p}:4: \"; nginx talks here\" after the value of socket is read as a comment (uWSGI would make it part of the value)"),
        ]
    );
}

#[test]
fn ini_errors_name_file_line_and_fix_all_at_once() {
    let text = "\
[uwsgi]
sokcet = /run/app.sock
module = app
emperor = /etc/vassals
chmod-socket = 999
processes = -2
buffer-size = 10x
limit-post = 5q
chdir = %(bsae)/app
socket = /run/app.sock
";
    let dir = scratch("errors");
    let path = write(&dir, "app.ini", text);
    let p = path.display();
    assert_eq!(
        load_errors(&path),
        [
            format!("{p}:2: unknown option \"sokcet\", did you mean \"socket\"?"),
            format!("{p}:4: option \"emperor\" is a uWSGI option ngx-wsgi does not provide: run one ngx-wsgi per app as a systemd unit: systemctl enable --now ngx-wsgi@NAME (nginx-conf/ngx-wsgi@.service reads /etc/ngx-wsgi/NAME.ini)"),
            format!("{p}:5: invalid value \"999\" for option \"chmod-socket\": expected 3 octal digits such as 660"),
            format!("{p}:6: invalid value \"-2\" for option \"processes\": expected a whole number of at least 1"),
            format!("{p}:7: invalid value \"10x\" for option \"buffer-size\": expected a size in bytes of at least 1 (e.g. 32768, 32k or 64k)"),
            format!("{p}:8: invalid value \"5q\" for option \"limit-post\": expected a size in bytes (e.g. 10m), 0 for no limit"),
            format!("{p}:9: %(bsae) refers to nothing: no option or placeholder \"bsae\" is set in this file"),
        ]
    );
}

#[test]
fn ini_placeholder_cycles_and_syntax_errors() {
    let text = "[uwsgi]\na = %(b)\nb = %(a)\nmodule = app\nsocket = /s\n= 3\n[broken\n";
    let reading = read_text(
        text,
        Path::new("x.ini"),
        Format::Ini,
        None,
        &Default::default(),
    );
    let errors: Vec<String> = reading.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "x.ini:6: \"= 3\" has no option name before '='",
            "x.ini:7: section header \"[broken\" has no closing ']'",
            "x.ini:2: %(b) refers to itself through other placeholders",
            "x.ini:3: %(a) refers to itself through other placeholders",
        ]
    );
}

const DOCS_XML: &str = r#"<uwsgi>
    <!-- as uWSGI's documentation writes it -->
    <socket>127.0.0.1:3031</socket>
    <chdir>/srv/mysite</chdir>
    <module>mysite.wsgi</module>
    <master/>
    <processes>4</processes>
    <threads>2</threads>
    <vacuum></vacuum>
</uwsgi>
"#;

#[test]
fn xml_as_uwsgi_docs_write_it() {
    let dir = scratch("xml");
    let c = load(&write(&dir, "app.xml", DOCS_XML)).config;
    assert_eq!(c.listeners()[0].addr.to_string(), "127.0.0.1:3031");
    assert_eq!(c.module.as_deref(), Some("mysite.wsgi"));
    assert!(c.master && c.vacuum);
    assert_eq!((c.processes, c.threads), (4, 2));
}

#[test]
fn xml_ids_placeholders_and_errors() {
    let text = r#"<config>
  <uwsgi>
    <module>app</module>
    <socket>/run/a.sock</socket>
  </uwsgi>
  <uwsgi id="staging">
    <base>/srv</base>
    <chdir>%(base)/staging</chdir>
    <module>app</module>
    <socket>%d%n.sock</socket>
    <procesess>2</procesess>
    <processes>zero</processes>
  </uwsgi>
</config>
"#;
    let dir = scratch("xmlid");
    let path = write(&dir, "app.xml", text);
    assert_eq!(
        load(&path).config.listeners()[0].addr.to_string(),
        "/run/a.sock"
    );
    let p = path.display();
    assert_eq!(
        load_errors(Path::new(&format!("{p}:staging"))),
        [
            format!("{p}:11: unknown option \"procesess\", did you mean \"processes\"?"),
            format!("{p}:12: invalid value \"zero\" for option \"processes\": expected a whole number of at least 1"),
        ]
    );
    let broken = write(
        &dir,
        "broken.xml",
        "<uwsgi>\n<socket>/s</socket>\n<module>app</modul>\n</uwsgi>\n",
    );
    let errors = load_errors(&broken);
    assert!(
        errors[0].starts_with(&format!("{}:3: not well-formed XML:", broken.display())),
        "{errors:?}"
    );
}

const SAME_TOML: &str = r#"# the same deployment in ngx-wsgi's own format
socket = ["/run/app.sock", "127.0.0.1:3031"]
module = "mysite.wsgi"
pythonpath = ["/srv/a", "/srv/b"]
env = ["A=1"]
processes = 4
master = true
chmod-socket = 660
harakiri = 30
limit-post = "10m"
"#;

const SAME_INI: &str =
    "[uwsgi]\nsocket = /run/app.sock\nsocket = 127.0.0.1:3031\nmodule = mysite.wsgi\n\
pythonpath = /srv/a\npythonpath = /srv/b\nenv = A=1\nprocesses = 4\nmaster\nchmod-socket = 660\n\
harakiri = 30\nlimit-post = 10m\n";

const SAME_XML: &str = "<uwsgi><socket>/run/app.sock</socket><socket>127.0.0.1:3031</socket>\
<module>mysite.wsgi</module><pythonpath>/srv/a</pythonpath><pythonpath>/srv/b</pythonpath>\
<env>A=1</env><processes>4</processes><master/><chmod-socket>660</chmod-socket>\
<harakiri>30</harakiri><limit-post>10m</limit-post></uwsgi>";

#[test]
fn ini_xml_and_toml_with_the_same_meaning_give_the_same_config() {
    let dir = scratch("same");
    let toml = load(&write(&dir, "app.toml", SAME_TOML)).config;
    let ini = load(&write(&dir, "app.ini", SAME_INI)).config;
    let xml = load(&write(&dir, "app.xml", SAME_XML)).config;
    assert_eq!(toml, ini);
    assert_eq!(toml, xml);
    assert_eq!(toml.limit_post, 10 << 20);
    assert_eq!(toml.pythonpath.len(), 2);
}

#[test]
fn toml_errors_name_the_line() {
    let text = "module = \"app\"\nsocket = \"/s\"\nprocesess = 2\n[uwsgi]\nmaster = true\n";
    let dir = scratch("tomlerr");
    let path = write(&dir, "app.toml", text);
    let p = path.display();
    assert_eq!(
        load_errors(&path),
        [
            format!("{p}:3: unknown option \"procesess\", did you mean \"processes\"?"),
            format!("{p}:4: uwsgi is a table: options are top-level keys holding a string, a number, true/false, or a list of those"),
        ]
    );
    let nested = write(
        &dir,
        "nested.toml",
        "module = \"app\"\nsocket = \"/s\"\nthreads = [[1]]\n",
    );
    assert_eq!(
        load_errors(&nested),
        [format!("{}:3: threads is a list of lists: options are top-level keys holding a string, a number, true/false, or a list of those", nested.display())]
    );
    let broken = write(&dir, "broken.toml", "module = \"app\"\nsocket = /s\n");
    let errors = load_errors(&broken);
    assert!(
        errors[0].starts_with(&format!("{}:2: not valid TOML:", broken.display())),
        "{errors:?}"
    );
}

#[test]
fn the_printed_config_reads_back_the_same() {
    let dir = scratch("roundtrip");
    let parsed = load(&write(&dir, "mysite.ini", DJANGO_INI));
    let printed = parsed.config.to_toml();
    assert!(
        printed.contains("socket = [\"/run/mysite/mysite.sock\"]"),
        "{printed}"
    );
    assert!(printed.contains("chmod-socket = \"660\""), "{printed}");
    let again = load(&write(&dir, "printed.toml", &printed)).config;
    assert_eq!(again, parsed.config);
}

#[test]
fn command_line_overrides_the_file() {
    let dir = scratch("override");
    let ini = write(&dir, "app.ini", SAME_INI);
    let parsed = parse_args([
        "--processes",
        "8",
        ini.to_str().unwrap(),
        "--socket",
        "/run/other.sock",
        "--check-config",
    ])
    .unwrap();
    assert!(parsed.check_only);
    let c = parsed.config;
    assert_eq!(c.processes, 8);
    let addrs: Vec<String> = c.listeners().iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(addrs, ["/run/other.sock"]);
    assert_eq!(c.module.as_deref(), Some("mysite.wsgi"));

    let xml = write(&dir, "app.cfg", SAME_XML);
    let by_flag = parse_args(["--xml", xml.to_str().unwrap()]).unwrap().config;
    assert_eq!(by_flag.processes, 4);
    let toml = write(&dir, "app.conf", SAME_TOML);
    let by_config = parse_args(["--config", toml.to_str().unwrap()])
        .unwrap()
        .config;
    assert_eq!(by_config, by_flag);
}

#[test]
fn files_that_cannot_be_read_or_told_apart() {
    let dir = scratch("unreadable");
    let missing = dir.join("nope.ini");
    let errors = parse_args(["--ini", missing.to_str().unwrap()]).unwrap_err();
    assert_eq!(
        errors.0[0].to_string(),
        format!(
            "cannot read config file: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let conf = write(&dir, "app.conf", SAME_INI);
    assert_eq!(
        load_errors(&conf)[0],
        format!("cannot tell the format of \"{}\" from its name: use --ini FILE, --xml FILE or --config FILE (TOML), or name it .ini, .xml or .toml", conf.display())
    );
}

#[test]
fn files_include_others() {
    let dir = scratch("include");
    write(
        &dir,
        "base.ini",
        "[uwsgi]\nmaster = true\nprocesses = 3\nmodule = app\n",
    );
    let site = write(
        &dir,
        "site.ini",
        "[uwsgi]\nini = %dbase.ini\nsocket = /run/site.sock\nprocesses = 5\n",
    );
    let c = load(&site).config;
    assert!(c.master);
    assert_eq!(c.processes, 5);
    let looping = write(&dir, "loop.ini", "[uwsgi]\nini = %p\n");
    let errors = load_errors(&looping);
    assert!(
        errors[0].ends_with(
            "loop.ini\" includes itself (through the files it includes): an include loop"
        ),
        "{errors:?}"
    );
}

mod nginx_checks {
    use super::*;
    use crate::nginx::{
        check, socket_access, upstream_url, Access, NginxSide, Severity, WorkerUser,
    };

    fn www_data() -> WorkerUser {
        WorkerUser {
            name: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
        }
    }

    fn side() -> NginxSide {
        NginxSide {
            read_timeout_ms: 60_000,
            client_max_body_size: 1 << 20,
            max_request_head: 32768,
            worker: www_data(),
        }
    }

    fn parsed(text: &str) -> Parsed {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = scratch(&format!("nginx-{n}"));
        load(&write(&dir, "app.ini", text))
    }

    #[test]
    fn the_first_uwsgi_socket_is_where_nginx_connects() {
        let p = parsed(
            "[uwsgi]\nhttp-socket = :8000\nsocket = :3031\nsocket = /run/b.sock\nmodule = m\n",
        );
        assert_eq!(upstream_url(&p).unwrap().0, "127.0.0.1:3031");
        let p = parsed("[uwsgi]\nsocket = /run/a.sock\nmodule = m\n");
        assert_eq!(upstream_url(&p).unwrap().0, "unix:/run/a.sock");
        let p = parsed("[uwsgi]\nhttp-socket = :8000\nmodule = m\n");
        assert_eq!(upstream_url(&p).unwrap_err().severity, Severity::Error);
    }

    #[test]
    fn harakiri_longer_than_the_read_timeout_is_an_error_equal_a_warning() {
        let p = parsed("[uwsgi]\nsocket = /run/a.sock\nmodule = m\nharakiri = 60\nbuffer-size = 32k\nchmod-socket = 666\n");
        let findings = check(&p, &side());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].at.as_ref().unwrap().line, 4);
        let short = NginxSide {
            read_timeout_ms: 30_000,
            ..side()
        };
        let findings = check(&p, &short);
        assert_eq!(findings[0].severity, Severity::Error);
        assert!(findings[0]
            .message
            .starts_with("wsgi_read_timeout 30s is not longer than harakiri = 60 s"));
    }

    #[test]
    fn a_body_limit_nginx_exceeds_is_an_error() {
        let p = parsed(
            "[uwsgi]\nsocket = /run/a.sock\nmodule = m\nlimit-post = 512k\nchmod-socket = 666\n",
        );
        let findings = check(&p, &side());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Error);
        assert_eq!(
            findings[0].message,
            "client_max_body_size is 1048576 bytes, above limit-post = 524288 bytes: nginx would take bodies the daemon refuses; set client_max_body_size 524288 or less"
        );
        let unlimited = NginxSide {
            client_max_body_size: 0,
            ..side()
        };
        assert!(check(&p, &unlimited)[0]
            .message
            .starts_with("client_max_body_size is 0 (no limit)"));
    }

    #[test]
    fn a_socket_that_exists_says_what_applies_now() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("live-socket");
        let sock = dir.join("app.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let config = |extra: &str| {
            let path = write(
                &dir,
                "app.ini",
                &format!("[uwsgi]\nsocket = {}\nmodule = m\n{extra}", sock.display()),
            );
            load(&path)
        };
        let worker = WorkerUser {
            uid: 4242,
            gid: 4242,
            groups: vec![4242],
            ..www_data()
        };
        let side = NginxSide { worker, ..side() };
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755)).unwrap();
        let findings = check(&config(""), &side);
        let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(findings.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("as it is now (mode 755"),
            "{messages:?}"
        );
        assert!(messages[1].contains("without chmod-socket"), "{messages:?}");
        assert!(findings.iter().all(|f| f.severity == Severity::Warning));
        // The config leaves the mode to the umask, but the socket as it is lets them in.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(check(&config(""), &side), []);
    }

    #[test]
    fn a_umask_tells_the_mode_of_a_socket_without_chmod_socket() {
        let with = |extra: &str| {
            parsed(&format!(
                "[uwsgi]\nsocket = /run/none/a.sock\nmodule = m\nchown-socket = 0:33\n{extra}"
            ))
        };
        assert_eq!(check(&with("umask = 002\n"), &side()), []);
        let findings = check(&with("umask = 022\n"), &side());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Error);
        assert!(findings[0]
            .message
            .contains("the socket's group 33 is theirs but mode 755 gives it no write permission"));
        assert_eq!(findings[0].at.as_ref().unwrap().line, 5);
    }

    #[test]
    fn socket_permissions_follow_unix_rules() {
        let w = www_data();
        assert_eq!(socket_access(Some(0o666), None, None, &w), Access::Allowed);
        assert_eq!(
            socket_access(Some(0o660), None, Some(33), &w),
            Access::Allowed
        );
        assert_eq!(
            socket_access(Some(0o600), Some(33), None, &w),
            Access::Allowed
        );
        assert!(matches!(
            socket_access(Some(0o640), None, Some(33), &w),
            Access::Denied(_)
        ));
        assert!(matches!(
            socket_access(Some(0o660), Some(0), Some(0), &w),
            Access::Denied(_)
        ));
        assert!(matches!(
            socket_access(Some(0o660), None, None, &w),
            Access::Unsure(_)
        ));
        assert!(matches!(
            socket_access(None, None, None, &w),
            Access::Unsure(_)
        ));
        assert_eq!(socket_access(None, Some(33), None, &w), Access::Allowed);
        let root = WorkerUser {
            uid: 0,
            ..www_data()
        };
        assert_eq!(
            socket_access(Some(0o600), Some(5), Some(5), &root),
            Access::Allowed
        );
    }
}

#[test]
fn a_bare_key_for_an_option_that_needs_a_value() {
    let dir = scratch("bare");
    let path = write(
        &dir,
        "app.ini",
        "[uwsgi]\nsocket = /s\nmodule\nwsgi-file = app.py\n",
    );
    assert_eq!(
        load_errors(&path),
        [format!(
            "{}:3: option \"module\" needs a value",
            path.display()
        )]
    );
}

/// The examples of uWSGI's own documentation (Configuration, ParsingOrder, the Python
/// quickstart and the Django tutorial), with what uWSGI says they mean.
mod uwsgi_docs_examples {
    use super::*;

    fn settings(text: &str, name: &str) -> Vec<(String, Option<String>)> {
        let dir = scratch(&format!("docs-{name}"));
        let path = write(&dir, name, text);
        let format = Format::from_path(&path).unwrap();
        let reading = read_text(text, &path, format, None, &Default::default());
        assert!(reading.errors.is_empty(), "{:?}", reading.errors);
        reading
            .settings
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect()
    }

    fn value(settings: &[(String, Option<String>)], name: &str) -> String {
        settings
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not set in {settings:?}"))
    }

    #[test]
    fn magic_variables_funnyapp() {
        let dir = scratch("funnyapp");
        let path = write(
            &dir,
            "funnyapp.ini",
            "[uwsgi]\nsocket = /tmp/%n.sock\nmodule = werkzeug.testapp:test_app\nprocesses = 4\nmaster = 1\n",
        );
        let c = load(&path).config;
        assert_eq!(c.listeners()[0].addr.to_string(), "/tmp/funnyapp.sock");
        assert_eq!(
            c.module_and_callable(),
            Some(("werkzeug.testapp", "test_app"))
        );
        assert!(c.master);
        assert_eq!(c.processes, 4);
    }

    #[test]
    fn placeholders_set_directly_and_with_set_ph() {
        let text = "[uwsgi]\n; These are placeholders...\nmy_funny_domain = uwsgi.it\n\
            set-ph = max_customer_address_space = 64\nset-placeholder = customers_base_dir = /var/www\n\
            ; And these aren't.\nsocket = /tmp/sockets/%(my_funny_domain).sock\n\
            chdir = %(customers_base_dir)/%(my_funny_domain)\nlimit-as = %(max_customer_address_space)\n";
        let s = settings(text, "placeholders.ini");
        assert_eq!(value(&s, "socket"), "/tmp/sockets/uwsgi.it.sock");
        assert_eq!(value(&s, "chdir"), "/var/www/uwsgi.it");
        assert_eq!(value(&s, "limit-as"), "64");
        let dir = scratch("placeholders-load");
        let c = load(&write(&dir, "p.ini", &format!("{text}module = app\n"))).config;
        assert_eq!(c.limit_as, 64);
        assert_eq!(c.chdir.as_deref(), Some(Path::new("/var/www/uwsgi.it")));
    }

    #[test]
    fn placeholder_math() {
        let s = settings(
            "[uwsgi]\nfoo = 17\nbar = 30\ntotal = %(foo + bar + 3)\n",
            "m1.ini",
        );
        assert_eq!(value(&s, "total"), "50");
        let s = settings(
            "[uwsgi]\nfoo = 17\nbar = 30\ntotal = %(foo + bar + 3 * 2)\n",
            "m2.ini",
        );
        assert_eq!(value(&s, "total"), "100");
        let s = settings("[uwsgi]\nfoo = 29\nbar = %(foo ++)\n", "m3.ini");
        assert_eq!(value(&s, "bar"), "30");
        // No operator between two items: concatenation ("29"), then ++.
        let s = settings("[uwsgi]\nfoo = 2\nbar = 9\nbar = %(foo bar ++)\n", "m4.ini");
        assert_eq!(value(&s, "bar"), "30");
        let reading = read_text(
            "[uwsgi]\nfoo = x\nbar = %(foo + 1)\n",
            Path::new("m5.ini"),
            Format::Ini,
            None,
            &Default::default(),
        );
        assert_eq!(
            reading.errors[0].to_string(),
            "m5.ini:3: cannot compute %(foo + 1): \"x\" is not a whole number"
        );
    }

    #[test]
    fn ini_and_xml_examples() {
        let dir = scratch("docs-ini-xml");
        let ini = write(
            &dir,
            "a.ini",
            "[uwsgi]\nsocket = /tmp/uwsgi.sock\nsocket = 127.0.0.1:8000\nworkers = 3\nmaster = true\nmodule = app\n",
        );
        let xml = write(
            &dir,
            "a.xml",
            "<uwsgi>\n  <socket>/tmp/uwsgi.sock</socket>\n  <socket>127.0.0.1:8000</socket>\n  <master/>\n  <workers>3</workers>\n  <module>app</module>\n</uwsgi>\n",
        );
        let (ini, xml) = (load(&ini).config, load(&xml).config);
        assert_eq!(ini, xml);
        let addrs: Vec<String> = ini.listeners().iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["/tmp/uwsgi.sock", "127.0.0.1:8000"]);
        assert_eq!(ini.processes, 3);
        let stanzas = write(
            &dir,
            "b.xml",
            "<i-love-xml>\n  <uwsgi id=\"turbogears\"><socket>/tmp/tg.sock</socket><module>tg</module></uwsgi>\n  <uwsgi id=\"django\"><socket>/tmp/django.sock</socket><module>dj</module></uwsgi>\n</i-love-xml>\n",
        );
        let django = load(Path::new(&format!("{}:django", stanzas.display()))).config;
        assert_eq!(django.listeners()[0].addr.to_string(), "/tmp/django.sock");
    }

    #[test]
    fn another_section_of_the_same_file() {
        let dir = scratch("docs-sections");
        let path = write(
            &dir,
            "app.ini",
            "[uwsgi]\nmodule = app\nini = :app1\n\n[app1]\nsocket = /tmp/app1.sock\n",
        );
        assert_eq!(
            load(&path).config.listeners()[0].addr.to_string(),
            "/tmp/app1.sock"
        );
    }

    #[test]
    fn quickstart_ini_and_xml() {
        let dir = scratch("docs-quickstart");
        let ini = write(
            &dir,
            "q.ini",
            "[uwsgi]\nsocket = 127.0.0.1:3031\nchdir = /home/foobar/myproject/\nwsgi-file = myproject/wsgi.py\nprocesses = 4\nthreads = 2\nstats = 127.0.0.1:9191\n",
        );
        let xml = write(
            &dir,
            "q.xml",
            "<uwsgi>\n    <socket>127.0.0.1:3031</socket>\n    <chdir>/home/foobar/myproject/</chdir>\n    <wsgi-file>myproject/wsgi.py</wsgi-file>\n    <processes>4</processes>\n    <threads>2</threads>\n    <stats>127.0.0.1:9191</stats>\n</uwsgi>\n",
        );
        let (ini, xml) = (load(&ini).config, load(&xml).config);
        assert_eq!(ini, xml);
        assert_eq!((ini.processes, ini.threads), (4, 2));
        assert_eq!(
            ini.stats.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9191")
        );
    }

    #[test]
    fn django_tutorial_ini() {
        let text = "# mysite_uwsgi.ini file\n[uwsgi]\n\n# Django-related settings\n\
            # the base directory (full path)\nchdir           = /path/to/your/project\n\
            # Django's wsgi file\nmodule          = project.wsgi\n\
            # the virtualenv (full path)\nhome            = /path/to/virtualenv\n\n\
            # process-related settings\n# master\nmaster          = true\n\
            # maximum number of worker processes\nprocesses       = 10\n\
            # the socket (use the full path to be safe\nsocket          = /path/to/your/project/mysite.sock\n\
            # ... with appropriate permissions - may be needed\n# chmod-socket    = 664\n\
            # clear environment on exit\nvacuum          = true\n";
        let dir = scratch("docs-django");
        let parsed = load(&write(&dir, "mysite_uwsgi.ini", text));
        let c = parsed.config;
        assert_eq!(c.module.as_deref(), Some("project.wsgi"));
        assert_eq!(c.home.as_deref(), Some(Path::new("/path/to/virtualenv")));
        assert_eq!(c.processes, 10);
        assert!(c.master && c.vacuum);
        assert_eq!(c.chmod_socket, None);
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    }

    #[test]
    fn environment_defaults_and_file_contents() {
        std::env::set_var("NGX_WSGI_TEST_EMPTY", "");
        let dir = scratch("docs-env");
        let name = write(&dir, "name.txt", "node7\n");
        let text = format!(
            "[uwsgi]\na = $(NGX_WSGI_TEST_UNSET_VAR:-fallback)\nb = $(NGX_WSGI_TEST_EMPTY:-fallback)\n\
             c = $(NGX_WSGI_TEST_EMPTY-fallback)\nd = $(NGX_WSGI_TEST_UNSET_VAR-fallback)\nnodename = @({})\n",
            name.display()
        );
        let s = settings(&text, "env.ini");
        assert_eq!(value(&s, "a"), "fallback");
        assert_eq!(value(&s, "b"), "fallback");
        assert_eq!(value(&s, "c"), "");
        assert_eq!(value(&s, "d"), "fallback");
        assert_eq!(value(&s, "nodename"), "node7");
    }

    #[test]
    fn placeholders_from_the_command_line_and_the_including_file() {
        let dir = scratch("docs-outer");
        let inner = write(
            &dir,
            "inner.ini",
            "[uwsgi]\nsocket = /run/%(site).sock\nchdir = %(base)\n",
        );
        let outer = write(
            &dir,
            "outer.ini",
            &format!(
                "[uwsgi]\nbase = /srv/site\nmodule = app\nini = {}\n",
                inner.display()
            ),
        );
        let c = parse_args(["--set-ph", "site=blog", outer.to_str().unwrap()])
            .unwrap()
            .config;
        assert_eq!(c.listeners()[0].addr.to_string(), "/run/blog.sock");
        assert_eq!(c.chdir.as_deref(), Some(Path::new("/srv/site")));
    }
}

/// uWSGI's config logic, as its "Configuration logic" page writes it.
#[test]
fn ini_config_logic_blocks() {
    let dir = scratch("logic");
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::env::set_var("NGX_WSGI_TEST_DEPLOY", "production");
    std::env::remove_var("NGX_WSGI_TEST_UNSET");
    let ini = write(
        &dir,
        "app.ini",
        &format!(
            "[uwsgi]
module = app
socket = /run/app.sock
if-env = NGX_WSGI_TEST_DEPLOY=production
processes = 8
env = DEPLOY=%(_)
endif =
if-env = NGX_WSGI_TEST_DEPLOY=staging
processes = 2
endif =
if-not-env = NGX_WSGI_TEST_UNSET
harakiri = 30
end-if =
if-opt = harakiri
max-requests = %(_)00
endif
if-dir = {dir}/static
touch-reload = %(_)/stamp
endif
if-exists = {dir}/missing
threads = 16
endif
for = 3031 3032
http-socket = 127.0.0.1:%(_)
endfor =
for-times = 2
env = SLOT%(_)=on
endfor
",
            dir = dir.display()
        ),
    );
    let parsed = load(&ini);
    let c = parsed.config;
    assert_eq!(c.processes, 8);
    assert_eq!(c.harakiri, 30);
    assert_eq!(c.max_requests, 3000);
    assert_eq!(c.threads, 1);
    assert_eq!(c.touch_reload, [dir.join("static/stamp")]);
    let http: Vec<String> = c.http_socket.iter().map(ToString::to_string).collect();
    assert_eq!(http, ["127.0.0.1:3031", "127.0.0.1:3032"]);
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(env, ["DEPLOY=production", "SLOT1=on", "SLOT2=on"]);
    assert!(parsed.notes.is_empty(), "{:?}", notes_of(&parsed.notes));

    // Nesting is refused (uWSGI refuses it too), naming both lines; an unclosed block and
    // a stray endif are noted.
    let nested = write(
        &dir,
        "nested.ini",
        "[uwsgi]\nmodule = app\nsocket = /s\nif-env = HOME\nif-env = PATH\nprocesses = 2\nendif\n",
    );
    assert_eq!(
        load_errors(&nested),
        [format!(
            "{p}:5: if-env inside the if-env block opened at {p}:4: config logic does not nest \
             (in uWSGI either); close that block first (endif, endfor)",
            p = nested.display()
        )]
    );
    let unclosed = write(
        &dir,
        "unclosed.ini",
        "[uwsgi]\nmodule = app\nendif\nfor = /a /b\nsocket = %(_)\n",
    );
    let parsed = load(&unclosed);
    let p = unclosed.display();
    assert_eq!(
        notes_of(&parsed.notes),
        [
            format!("{p}:3: endif closes no if-* or for block: ignored"),
            format!(
                "{p}:4: for has no endif/endfor: it runs to the end of the config, as in uWSGI"
            ),
        ]
    );
    assert_eq!(parsed.config.socket.len(), 2);
}

fn notes_of(notes: &[Note]) -> Vec<String> {
    notes.iter().map(ToString::to_string).collect()
}
