//! Every option name ngx-wsgi knows, and what it does with each.
//!
//! Two sources make one registry:
//! - the options ngx-wsgi implements, each declared once in `lib.rs` with
//!   [`declare_config!`]: its [`Config`] field, default, parser, help line and topic;
//! - uWSGI's whole catalogue (`uwsgi-options.tsv`, see [`crate::catalogue`]), which says of
//!   every other uWSGI name whether it is accepted with a note or refused with what to do
//!   instead.
//!
//! `--help`, the command-line parser, the file readers and "did you mean" all read this
//! registry, so an option cannot be documented without being parsed or parsed without
//! being listed.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::catalogue::{self, Topic};
use crate::{Config, ConfigError};

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

/// What ngx-wsgi does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented with uWSGI's meaning.
    Yes,
    /// Accepted and ignored: it means nothing for ngx-wsgi; the text says why.
    Ignored(&'static str),
    /// A uWSGI option ngx-wsgi does not provide: refused; the text says what to do instead.
    Refused(&'static str),
}

/// Sets a [`Config`] field from an option's value.
pub type ApplyFn = fn(&mut Config, &str, Option<&str>) -> Result<(), ConfigError>;

/// What applying an option does.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Nothing to apply: read by the loader itself (config files, placeholders,
    /// `--check-config`), or an option that is ignored or refused.
    None,
    /// Sets a field.
    Set(ApplyFn),
    /// Adds to a list; `clear` empties it when the command line replaces a file's list.
    Push {
        apply: ApplyFn,
        clear: fn(&mut Config),
    },
}

/// One option: its name, its other spellings, its help line and what it does.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub arity: Arity,
    pub metavar: &'static str,
    pub help: &'static str,
    /// The topic id (`processes`, `sockets`, ...) `--help` groups it under.
    pub topic: &'static str,
    pub support: Support,
    pub action: Action,
}

impl OptionSpec {
    /// The option's name and aliases.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    pub(crate) const fn aliases(self, aliases: &'static [&'static str]) -> Self {
        OptionSpec { aliases, ..self }
    }

    pub(crate) const fn short(self, letter: char) -> Self {
        OptionSpec {
            short: Some(letter),
            ..self
        }
    }
}

const fn spec(
    name: &'static str,
    topic: &'static str,
    arity: Arity,
    metavar: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        aliases: &[],
        short: None,
        arity,
        metavar,
        help,
        topic,
        support: Support::Yes,
        action: Action::None,
    }
}

/// An option taking a value: `--name METAVAR`.
pub(crate) const fn value(
    name: &'static str,
    topic: &'static str,
    metavar: &'static str,
    help: &'static str,
) -> OptionSpec {
    spec(name, topic, Arity::Value, metavar, help)
}

/// A switch: `--name`, or `name = true|false` in a file.
pub(crate) const fn flag(
    name: &'static str,
    topic: &'static str,
    help: &'static str,
) -> OptionSpec {
    spec(name, topic, Arity::Flag, "", help)
}

/// An option whose value may be left out: `--name[=METAVAR]`.
pub(crate) const fn optional(
    name: &'static str,
    topic: &'static str,
    metavar: &'static str,
    help: &'static str,
) -> OptionSpec {
    spec(name, topic, Arity::OptionalValue, metavar, help)
}

/// Declares [`Config`]: each row is one option, written once. A row gives the field (its
/// doc comment and serde attributes, name, type and default), how a value is applied to
/// it, and the option's spec (name, topic, help; aliases and short letter):
///
/// ```text
/// /// `listen`: backlog of every listening socket.
/// listen: u32 = 4096, set(positive), value("listen", "sockets", "N", "...").short('l');
/// ```
///
/// `set(parse)` assigns `parse(name, value)?`, `some(parse)` assigns `Some(..)`, and
/// `push(parse)` appends to a list (which the command line replaces rather than extends).
macro_rules! declare_config {
    (
        $(#[$struct_attr:meta])*
        pub struct Config {
            $(
                $(#[$attr:meta])*
                $field:ident: $ty:ty = $default:expr, $mode:ident($parse:expr), $spec:expr;
            )*
        }
    ) => {
        $(#[$struct_attr])*
        pub struct Config {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* }
            }
        }

        /// Every option that sets a field of [`Config`], in `--help` order.
        pub(crate) static FIELD_OPTIONS: &[$crate::options::OptionSpec] = &[
            $( declare_config!(@spec $mode, $field, $parse, $spec), )*
        ];
    };
    (@spec set, $field:ident, $parse:expr, $spec:expr) => {
        $crate::options::OptionSpec {
            action: $crate::options::Action::Set(|config, name, value| {
                config.$field = ($parse)(name, value)?;
                Ok(())
            }),
            ..$spec
        }
    };
    (@spec some, $field:ident, $parse:expr, $spec:expr) => {
        $crate::options::OptionSpec {
            action: $crate::options::Action::Set(|config, name, value| {
                config.$field = Some(($parse)(name, value)?);
                Ok(())
            }),
            ..$spec
        }
    };
    (@spec push, $field:ident, $parse:expr, $spec:expr) => {
        $crate::options::OptionSpec {
            action: $crate::options::Action::Push {
                apply: |config, name, value| {
                    config.$field.push(($parse)(name, value)?);
                    Ok(())
                },
                clear: |config| config.$field.clear(),
            },
            ..$spec
        }
    };
}

/// Options the loader reads itself: they set no field.
static LOADER_OPTIONS: &[OptionSpec] = &[
    value(
        "ini",
        "config",
        "FILE[:SECTION]",
        "read options from a uWSGI INI file ([uwsgi] section, or the one named); repeatable",
    ),
    value(
        "xml",
        "config",
        "FILE[:ID]",
        "read options from a uWSGI XML file (<uwsgi> root)",
    )
    .aliases(&["xmlconfig"])
    .short('x'),
    value(
        "config",
        "config",
        "FILE",
        "read options from a file: .ini and .xml as uWSGI reads them, anything else as TOML",
    ),
    value(
        "set-placeholder",
        "config",
        "NAME=VALUE",
        "define a placeholder, %(NAME) in config files",
    )
    .aliases(&["set-ph"]),
    flag(
        "check-config",
        "config",
        "check the options, print the effective config as TOML and exit (0: valid)",
    ),
    value(
        "if-env",
        "config",
        "VAR[=VALUE]",
        "the options up to endif apply if VAR is set (to VALUE); %(_) is its value",
    )
    .aliases(&["ifenv"]),
    value(
        "if-not-env",
        "config",
        "VAR[=VALUE]",
        "the options up to endif apply if VAR is not set (to VALUE)",
    ),
    value(
        "if-exists",
        "config",
        "PATH",
        "the options up to endif apply if PATH exists; %(_) is PATH",
    )
    .aliases(&["ifexists"]),
    value(
        "if-not-exists",
        "config",
        "PATH",
        "the options up to endif apply if PATH does not exist",
    ),
    value(
        "if-file",
        "config",
        "PATH",
        "the options up to endif apply if PATH is a regular file",
    ),
    value(
        "if-not-file",
        "config",
        "PATH",
        "the options up to endif apply if PATH is not a regular file",
    ),
    value(
        "if-dir",
        "config",
        "PATH",
        "the options up to endif apply if PATH is a directory",
    )
    .aliases(&["ifdir", "if-directory"]),
    value(
        "if-not-dir",
        "config",
        "PATH",
        "the options up to endif apply if PATH is not a directory",
    ),
    value(
        "if-opt",
        "config",
        "NAME[=VALUE]",
        "the options up to endif apply if option NAME was set before (to VALUE); %(_) is its value",
    ),
    value(
        "if-not-opt",
        "config",
        "NAME[=VALUE]",
        "the options up to endif apply if option NAME was not set before (to VALUE)",
    ),
    value(
        "for",
        "config",
        "ITEMS",
        "the options up to endfor apply once per space-separated item, %(_) being the item",
    ),
    value(
        "for-times",
        "config",
        "N",
        "the options up to endfor apply N times, %(_) being 1 to N",
    ),
    value(
        "for-readline",
        "config",
        "FILE",
        "the options up to endfor apply once per line of FILE, %(_) being the line",
    ),
    optional(
        "endif",
        "config",
        "",
        "closes an if-* or for block (endfor, end-if and end-for too)",
    )
    .aliases(&["end-if", "endfor", "end-for"]),
];

/// The options ngx-wsgi declares itself (implemented or read by the loader), in `--help`
/// order.
pub fn declared() -> impl Iterator<Item = &'static OptionSpec> {
    crate::FIELD_OPTIONS.iter().chain(LOADER_OPTIONS)
}

/// Every option known, by every name it has.
struct Registry {
    all: Vec<&'static OptionSpec>,
    by_name: HashMap<&'static str, &'static OptionSpec>,
    by_short: HashMap<char, &'static OptionSpec>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut all: Vec<&'static OptionSpec> = declared().collect();
        let mut by_name = HashMap::new();
        let mut by_short = HashMap::new();
        for spec in &all {
            for name in spec.names() {
                by_name.insert(name, *spec);
            }
            if let Some(letter) = spec.short {
                by_short.insert(letter, *spec);
            }
        }
        // uWSGI's names ngx-wsgi does not declare: accepted with a note, or refused.
        for spec in catalogue::undeclared() {
            if spec.names().any(|name| by_name.contains_key(name)) {
                continue;
            }
            for name in spec.names() {
                by_name.insert(name, spec);
            }
            if let Some(letter) = spec.short {
                by_short.entry(letter).or_insert(spec);
            }
            all.push(spec);
        }
        Registry {
            all,
            by_name,
            by_short,
        }
    })
}

/// Every option known: ngx-wsgi's own, then the rest of uWSGI's catalogue.
pub fn all_options() -> &'static [&'static OptionSpec] {
    &registry().all
}

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OptionSpec> {
    registry().by_name.get(name).copied()
}

/// Finds an option by its one-letter form.
pub fn lookup_short(letter: char) -> Option<&'static OptionSpec> {
    registry().by_short.get(&letter).copied()
}

/// Names longer than this are no misspelling of an option: nothing to suggest (and
/// comparing them would cost time for nothing).
const LONGEST_SUGGESTIBLE: usize = 64;

/// The known option closest to a misspelled `name`, if one is close enough to suggest.
pub fn suggest(name: &str) -> Option<&'static str> {
    if name.len() > LONGEST_SUGGESTIBLE {
        return None;
    }
    registry()
        .by_name
        .keys()
        .copied()
        .filter(|known| known.len().abs_diff(name.len()) <= 2.max(known.len() / 4))
        .map(|known| (strsim::damerau_levenshtein(name, known), known))
        .filter(|(distance, known)| *distance <= 2.max(known.len() / 4))
        // Closest first; among equals, the shorter and then the alphabetically first, so the
        // suggestion does not depend on hash order.
        .min_by_key(|(distance, known)| (*distance, known.len(), *known))
        .map(|(_, known)| known)
}

fn usage_of(spec: &OptionSpec) -> String {
    let mut left = format!("--{}", spec.name);
    for alias in spec.aliases {
        left.push_str(&format!(", --{alias}"));
    }
    if let Some(letter) = spec.short {
        left = format!("-{letter}, {left}");
    }
    match spec.arity {
        Arity::Flag => {}
        Arity::Value if !spec.metavar.is_empty() => left.push_str(&format!(" {}", spec.metavar)),
        Arity::Value => left.push_str(" VALUE"),
        Arity::OptionalValue if !spec.metavar.is_empty() => {
            left.push_str(&format!("[={}]", spec.metavar))
        }
        Arity::OptionalValue => left.push_str("[=VALUE]"),
    }
    left
}

/// The `--help` text: ngx-wsgi's options by topic, then the uWSGI options it accepts and
/// ignores, and a count of those it refuses.
pub fn help_text() -> String {
    let mut text = String::from(
        "ngx-wsgi: serve a Python WSGI app over the uwsgi protocol and HTTP\n\n\
         usage: ngx-wsgi [FILE.ini|FILE.xml|FILE.toml] [OPTIONS]\n\
         options take uWSGI's names: --opt VALUE or --opt=VALUE on the command line, opt = value in\n\
         files; the command line overrides the file. --check-config FILE prints what it means.\n",
    );
    let options = all_options();
    for topic in catalogue::topics() {
        let mut lines = String::new();
        for spec in options.iter().filter(|s| s.topic == topic.id) {
            let help = match spec.support {
                Support::Yes => spec.help.to_string(),
                Support::Ignored(why) => format!("accepted and ignored: {why}"),
                Support::Refused(_) => continue,
            };
            lines.push_str(&format!("  {:<44} {help}\n", usage_of(spec)));
        }
        if !lines.is_empty() {
            text.push_str(&format!("\n{}:\n{lines}", topic.title));
        }
    }
    let refused = options
        .iter()
        .filter(|s| matches!(s.support, Support::Refused(_)))
        .count();
    text.push_str(&format!(
        "\n{refused} other uWSGI options are known and refused, each saying what to do instead\n\
         (docs/uwsgi-options.md lists them all).\n\n\
         signals: SIGTERM stops gracefully (in-flight requests finish), SIGINT/SIGQUIT stop at once,\n\
         SIGHUP reloads gracefully (new workers on the same sockets, no request dropped)\n\n\
         environment: NGX_WSGI_PYTHON_HOST=off runs the app with the interpreter linked into\n\
         ngx-wsgi instead of inside the Python executable it was built for (when ngx_wsgi_host.so\n\
         is installed beside it); a path there names that module\n"
    ));
    text
}

/// The topic an option is listed under.
pub fn topic_of(spec: &OptionSpec) -> Option<&'static Topic> {
    catalogue::topics().iter().find(|t| t.id == spec.topic)
}
