//! The catalogue and the declarations agree, every uWSGI name has one status, and the
//! generated docs are current.

use std::collections::HashMap;
use std::path::Path;

use crate::catalogue::{self, Status};
use crate::{all_options, declared, lookup, parse_args, Support};

#[test]
fn the_catalogue_file_parses() {
    assert_eq!(catalogue::parse_errors(), None);
    // uWSGI 2.0.30's tables: 1,261 distinct names.
    let names: usize = catalogue::entries().iter().map(|e| e.names.len()).sum();
    assert_eq!(names, 1261);
}

#[test]
fn every_uwsgi_name_has_exactly_one_status() {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for entry in catalogue::entries() {
        for name in &entry.names {
            if let Some(line) = seen.insert(name, entry.line) {
                panic!(
                    "{name} is on lines {line} and {} of uwsgi-options.tsv",
                    entry.line
                );
            }
            let spec = lookup(name).unwrap_or_else(|| panic!("{name} is not known"));
            match entry.status {
                // Implemented in the catalogue means declared with a field (or read by the
                // loader) under that name.
                Status::Implemented => assert!(
                    spec.support == Support::Yes && declared().any(|d| std::ptr::eq(d, spec)),
                    "{name} is marked implemented but is not declared in lib.rs"
                ),
                Status::Accepted(why) => assert_eq!(spec.support, Support::Ignored(why)),
                Status::Refused(instead) => assert_eq!(spec.support, Support::Refused(instead)),
            }
            if !matches!(entry.status, Status::Implemented) {
                let note = match entry.status {
                    Status::Accepted(n) | Status::Refused(n) => n,
                    Status::Implemented => "",
                };
                assert!(
                    note.len() > 10,
                    "{name} has no note saying why or what instead"
                );
            }
        }
    }
}

/// Every name ngx-wsgi declares is uWSGI's (and marked implemented in the catalogue), or
/// one of ngx-wsgi's own.
#[test]
fn declared_names_are_uwsgis_and_marked_implemented() {
    const OURS: &[&str] = &["check-config", "sched-batch"];
    let statuses: HashMap<&str, Status> = catalogue::entries()
        .iter()
        .flat_map(|e| e.names.iter().map(move |n| (*n, e.status)))
        .collect();
    for entry in catalogue::entries() {
        if let (Some(letter), Status::Implemented) = (entry.short, entry.status) {
            let spec = lookup(entry.names[0]).unwrap();
            assert_eq!(
                spec.short,
                Some(letter),
                "-{letter} is uWSGI's {}",
                entry.names[0]
            );
        }
    }
    for spec in declared() {
        for name in spec.names() {
            match statuses.get(name) {
                Some(Status::Implemented) => {}
                Some(other) => panic!("{name} is declared but the catalogue says {other:?}"),
                None => assert!(OURS.contains(&name), "{name} is neither uWSGI's nor ours"),
            }
        }
        assert!(
            crate::topic_of(spec).is_some(),
            "{} has no topic",
            spec.name
        );
    }
}

#[test]
fn refused_and_accepted_options_say_so_from_every_source() {
    let errors = parse_args([
        "--socket",
        "/s",
        "--module",
        "m",
        "--emperor",
        "/etc/vassals",
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(
        errors,
        "option \"emperor\" is a uWSGI option ngx-wsgi does not provide: run one ngx-wsgi per \
         app as a systemd unit: systemctl enable --now ngx-wsgi@NAME (nginx-conf/ngx-wsgi@.service \
         reads /etc/ngx-wsgi/NAME.ini)"
    );
    // A refused flag is not taken to swallow the next argument, nor a valued one to leave it.
    let errors = parse_args([
        "--socket",
        "/s",
        "--module",
        "m",
        "--gevent",
        "100",
        "--thunder-lock",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        errors.starts_with("option \"gevent\" is a uWSGI option"),
        "{errors}"
    );
    assert!(!errors.contains("100"), "{errors}");
    let parsed =
        parse_args(["--socket", "/s", "--module", "m", "--lock-engine", "ipcsem"]).unwrap();
    assert_eq!(
        parsed.notes[0].text,
        "option \"lock-engine\" ignored: ngx-wsgi's locks (uwsgi.lock(), the caches') are robust \
         process-shared pthread mutexes: there is no engine to choose"
    );
    // A short letter of uWSGI's that ngx-wsgi refuses still names the option.
    let errors = parse_args(["--socket", "/s", "--module", "m", "-d", "/var/log/x.log"]);
    assert!(errors.is_ok(), "-d is daemonize: {errors:?}");
}

#[test]
fn every_option_is_listed_once() {
    let mut names: HashMap<&str, &str> = HashMap::new();
    for spec in all_options() {
        for name in spec.names() {
            if let Some(other) = names.insert(name, spec.name) {
                panic!("{name} is listed under {other} and {}", spec.name);
            }
        }
    }
}

/// The README's summary and docs/uwsgi-options.md are generated from the catalogue;
/// `UPDATE_DOCS=1 cargo test -p ngx-wsgi-config catalogue` rewrites them.
#[test]
fn catalogue_docs_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let update = std::env::var_os("UPDATE_DOCS").is_some();

    let reference = root.join("docs/uwsgi-options.md");
    let want = catalogue::reference_markdown();
    if update {
        std::fs::write(&reference, &want).unwrap();
    }
    let have = std::fs::read_to_string(&reference).unwrap_or_default();
    assert!(
        have == want,
        "docs/uwsgi-options.md is stale: run UPDATE_DOCS=1 cargo test -p ngx-wsgi-config catalogue"
    );

    let readme = root.join("README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let (begin, end) = (
        "<!-- uwsgi-options: begin -->\n",
        "<!-- uwsgi-options: end -->",
    );
    let (Some(start), Some(stop)) = (text.find(begin), text.find(end)) else {
        panic!("README.md has no {begin:?} ... {end:?} block");
    };
    let want = catalogue::summary_markdown();
    let have = &text[start + begin.len()..stop];
    if update && have != want {
        let new = format!("{}{want}{}", &text[..start + begin.len()], &text[stop..]);
        std::fs::write(&readme, new).unwrap();
        return;
    }
    assert!(have == want, "README.md's option summary is stale: run UPDATE_DOCS=1 cargo test -p ngx-wsgi-config catalogue");
}
