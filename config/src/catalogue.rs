//! uWSGI 2.0's option catalogue (`uwsgi-options.tsv`): every name uWSGI knows, its aliases,
//! short letter, arity and topic, and what ngx-wsgi does with it.
//!
//! The names are uWSGI's (read from its option tables); the topics, statuses and notes
//! are ngx-wsgi's. An option ngx-wsgi implements is declared in `lib.rs` and marked
//! `implemented` here (a test keeps the two in step); any other name is accepted with a
//! note saying why it means nothing here, or refused with what to do instead.

use std::sync::OnceLock;

use crate::options::{Action, Arity, OptionSpec, Support};

const TSV: &str = include_str!("../uwsgi-options.tsv");

/// A group of options `--help` and the docs list together.
#[derive(Debug)]
pub struct Topic {
    pub id: &'static str,
    pub title: &'static str,
    /// Status and note of the topic's options that give none of their own.
    status: &'static str,
    note: &'static str,
}

/// What ngx-wsgi does with a uWSGI option, as the catalogue says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Implemented,
    Accepted(&'static str),
    Refused(&'static str),
}

/// One line of the catalogue: a uWSGI option and its aliases.
#[derive(Debug)]
pub struct Entry {
    pub names: Vec<&'static str>,
    pub short: Option<char>,
    pub arity: Arity,
    pub topic: &'static str,
    pub status: Status,
    /// The 1-based line in `uwsgi-options.tsv`, for messages about the file itself.
    pub line: usize,
}

struct Catalogue {
    topics: Vec<Topic>,
    entries: Vec<Entry>,
    /// The entries ngx-wsgi does not declare, as options.
    undeclared: Vec<OptionSpec>,
}

fn field(value: &'static str) -> Option<&'static str> {
    (value != "-").then_some(value)
}

fn parse(text: &'static str) -> Result<Catalogue, String> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&'static str> = line.split('\t').collect();
        if let ["@topic", id, title, status, note] = cells[..] {
            topics.push(Topic {
                id,
                title,
                status,
                note,
            });
            continue;
        }
        let [names, short, arity, topic, status, note] = cells[..] else {
            return Err(format!("uwsgi-options.tsv:{number}: expected 6 cells"));
        };
        let Some(topic) = topics.iter().find(|t| t.id == topic) else {
            return Err(format!("uwsgi-options.tsv:{number}: no topic {topic}"));
        };
        let note = field(note).unwrap_or(topic.note);
        let status = match field(status).unwrap_or(topic.status) {
            "implemented" => Status::Implemented,
            "accepted" => Status::Accepted(note),
            "refused" => Status::Refused(note),
            other => return Err(format!("uwsgi-options.tsv:{number}: no status {other}")),
        };
        let arity = match arity {
            "flag" => Arity::Flag,
            "value" => Arity::Value,
            "optional" => Arity::OptionalValue,
            other => return Err(format!("uwsgi-options.tsv:{number}: no arity {other}")),
        };
        entries.push(Entry {
            names: names.split(',').collect(),
            short: field(short).and_then(|s| s.chars().next()),
            arity,
            topic: topic.id,
            status,
            line: number,
        });
    }
    let undeclared = entries
        .iter()
        .filter_map(|entry| {
            let support = match entry.status {
                Status::Implemented => return None,
                Status::Accepted(why) => Support::Ignored(why),
                Status::Refused(instead) => Support::Refused(instead),
            };
            let aliases: &'static [&'static str] =
                Box::leak(entry.names[1..].to_vec().into_boxed_slice());
            Some(OptionSpec {
                name: entry.names[0],
                aliases,
                short: entry.short,
                arity: entry.arity,
                metavar: "",
                help: match support {
                    Support::Ignored(why) | Support::Refused(why) => why,
                    Support::Yes => "",
                },
                topic: entry.topic,
                support,
                action: Action::None,
            })
        })
        .collect();
    Ok(Catalogue {
        topics,
        entries,
        undeclared,
    })
}

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    // The file is part of the source: a broken line is a bug the unit tests catch, and
    // an empty catalogue (every uWSGI name then "unknown") is the safe way to fail.
    CATALOGUE.get_or_init(|| {
        parse(TSV).unwrap_or(Catalogue {
            topics: Vec::new(),
            entries: Vec::new(),
            undeclared: Vec::new(),
        })
    })
}

/// The topics, in the order `--help` lists them.
pub fn topics() -> &'static [Topic] {
    &catalogue().topics
}

/// Every uWSGI option, as the catalogue lists them.
pub fn entries() -> &'static [Entry] {
    &catalogue().entries
}

/// The uWSGI options ngx-wsgi does not declare itself (accepted with a note, or refused).
pub(crate) fn undeclared() -> impl Iterator<Item = &'static OptionSpec> {
    catalogue().undeclared.iter()
}

/// How many uWSGI option names have each status: (implemented, accepted, refused).
pub fn counts() -> (usize, usize, usize) {
    count(entries().iter())
}

fn count<'a>(entries: impl Iterator<Item = &'a Entry>) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for entry in entries {
        let n = entry.names.len();
        match entry.status {
            Status::Implemented => counts.0 += n,
            Status::Accepted(_) => counts.1 += n,
            Status::Refused(_) => counts.2 += n,
        }
    }
    counts
}

/// The README's compatibility summary: counts per status and per topic.
pub fn summary_markdown() -> String {
    let (implemented, accepted, refused) = counts();
    let mut text = format!(
        "ngx-wsgi knows all {} option names of uWSGI 2.0 (its core and every plugin's table): \
         **{implemented} implemented** with uWSGI's meaning, **{accepted} accepted** with a note \
         saying why they mean nothing here, **{refused} refused** with what to do instead. \
         Any other name is a typo: \"unknown option\", with a suggestion. \
         [docs/uwsgi-options.md](docs/uwsgi-options.md) lists every name.\n\n\
         | topic | implemented | accepted | refused |\n|---|---:|---:|---:|\n",
        implemented + accepted + refused
    );
    for topic in topics() {
        let row = count(entries().iter().filter(|e| e.topic == topic.id));
        text.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            topic.title, row.0, row.1, row.2
        ));
    }
    text
}

/// `docs/uwsgi-options.md`: every uWSGI option name, by topic, with what ngx-wsgi does.
pub fn reference_markdown() -> String {
    let mut text = String::from(
        "# uWSGI's options in ngx-wsgi\n\n\
         Generated from `config/uwsgi-options.tsv` by the config crate's tests \
         (`UPDATE_DOCS=1 cargo test -p ngx-wsgi-config catalogue` rewrites it); \
         do not edit by hand.\n\n",
    );
    text.push_str(&summary_markdown().replace("(docs/uwsgi-options.md)", "(uwsgi-options.md)"));
    for topic in topics() {
        text.push_str(&format!(
            "\n## {}\n\n| option | ngx-wsgi |\n|---|---|\n",
            topic.title
        ));
        for entry in entries().iter().filter(|e| e.topic == topic.id) {
            let names = entry
                .names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let what = match entry.status {
                Status::Implemented => {
                    let help = crate::options::lookup(entry.names[0]).map_or("", |s| s.help);
                    format!("implemented: {help}")
                }
                Status::Accepted(why) => format!("accepted, ignored: {why}"),
                Status::Refused(instead) => format!("refused: {instead}"),
            };
            text.push_str(&format!("| {names} | {} |\n", what.replace('|', "\\|")));
        }
    }
    text
}

#[cfg(test)]
pub(crate) fn parse_errors() -> Option<String> {
    parse(TSV).err()
}
