//! uWSGI's substitutions in INI and XML values, as its docs define them: `$(ENV)` (with
//! `$(ENV:-default)` and `$(ENV-default)`), `@(file)` contents, `%(name)` placeholders (with
//! uWSGI's pipeline math, `%(workers + 1)`), and the magic variables (`%d`, `%n`, `%p`, ...).
//!
//! uWSGI resolves placeholders once its config tree is assembled, so `%(name)` may name a
//! key set further down the file; a repeated key's first value is used, as in uWSGI. A
//! name the file does not set is looked up among what the including file and the command
//! line set before. Unlike uWSGI, which leaves an unresolved `%(name)` in the value as
//! written, a reference to nothing is an error naming the line.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::source::{Location, Reading, Setting};
use crate::ConfigError;

/// Placeholders may nest (`root = %(base)/x`); deeper than this is a cycle.
const MAX_DEPTH: usize = 16;
/// The longest a value may grow to once expanded: placeholders that repeat each other
/// would otherwise grow exponentially with the lines of a file.
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;
/// All the values of one file, expanded: a bound on the work and memory of a file.
const MAX_FILE_EXPANSION: usize = 4 << 20;
/// Placeholder math operations one file may ask for.
const MAX_MATH_OPERATIONS: usize = 10_000;

/// Options that define placeholders instead of setting anything: `set-ph = name=value`.
pub(crate) const SET_PLACEHOLDER: &[&str] = &["set-placeholder", "set-ph"];

/// The config file being read, for the magic variables.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    /// As the user gave it (`%o`).
    pub given: PathBuf,
    /// Absolute (`%p`).
    pub absolute: PathBuf,
    /// The section (INI) or id (XML) asked for with `file:section`.
    pub section: Option<String>,
}

fn lossy(s: Option<&std::ffi::OsStr>) -> String {
    s.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl FileInfo {
    pub fn new(given: &Path, section: Option<&str>) -> Self {
        FileInfo {
            given: given.to_path_buf(),
            absolute: std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf()),
            section: section.map(str::to_string),
        }
    }

    /// The value of magic variable `%<letter>`, or `None` if uWSGI defines no such letter
    /// (the text is then kept as written). The uppercase forms name "the first
    /// non-template config file": without templates, the file itself.
    fn magic(&self, letter: char) -> Option<String> {
        let abs = &self.absolute;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        Some(match letter {
            'd' | 'D' => {
                let mut dir = dir.to_string_lossy().into_owned();
                if !dir.ends_with('/') {
                    dir.push('/');
                }
                dir
            }
            'p' | 'P' => abs.to_string_lossy().into_owned(),
            's' | 'S' => lossy(abs.file_name()),
            'n' | 'N' => lossy(abs.file_stem()),
            'e' | 'E' => lossy(abs.extension()),
            'c' | 'C' => lossy(dir.file_name()),
            'o' | 'O' => self.given.to_string_lossy().into_owned(),
            'x' | 'X' => match &self.section {
                Some(section) => format!("{}:{section}", lossy(abs.file_name())),
                None => lossy(abs.file_name()),
            },
            'v' => std::env::current_dir()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            '0'..='9' => {
                let index = letter as usize - '0' as usize;
                dir.components()
                    .filter_map(|c| match c {
                        Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                        _ => None,
                    })
                    .nth(index)
                    .unwrap_or_default()
            }
            '[' => "\x1b".into(),
            'h' => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'k' => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string(),
            'u' => nix::unistd::getuid().to_string(),
            'g' => nix::unistd::getgid().to_string(),
            'U' => nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name),
            'G' => nix::unistd::Group::from_gid(nix::unistd::getgid())
                .ok()
                .flatten()
                .map_or_else(|| nix::unistd::getgid().to_string(), |g| g.name),
            't' => unix_time().as_secs().to_string(),
            'T' => unix_time().as_micros().to_string(),
            'V' => env!("CARGO_PKG_VERSION").to_string(),
            _ => return None,
        })
    }
}

fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// One `key = value` of a file, before substitution.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub name: String,
    pub value: Option<String>,
    pub line: usize,
}

/// Where a placeholder's value comes from.
enum Source<'a> {
    /// A line of this file, still to be expanded.
    Raw(&'a str),
    /// A bare key: true.
    Switch,
}

/// Substitutes every entry's value and returns the file's settings. `outer` holds what
/// was set before this file (the including file, the command line): placeholders this
/// file does not define itself.
pub(crate) fn expand_entries(
    entries: Vec<RawEntry>,
    file: &FileInfo,
    outer: &HashMap<String, String>,
    reading: &mut Reading,
) {
    let mut defined: HashMap<&str, Source> = HashMap::new();
    for entry in &entries {
        let source = match (&entry.value, SET_PLACEHOLDER.contains(&entry.name.as_str())) {
            (Some(value), true) => match value.split_once('=') {
                Some((name, value)) => {
                    defined
                        .entry(name.trim())
                        .or_insert(Source::Raw(value.trim()));
                    continue;
                }
                None => continue, // reported below
            },
            (Some(value), false) => Source::Raw(value),
            (None, _) => Source::Switch,
        };
        // uWSGI resolves a reference to a repeated key with its first value.
        defined.entry(entry.name.as_str()).or_insert(source);
    }
    let mut expander = Expander {
        file,
        defined,
        outer,
        referenced: Vec::new(),
        seen: HashSet::new(),
        expanded: HashMap::new(),
        budget: MAX_FILE_EXPANSION,
        operations: 0,
        keep_unknown: false,
    };
    for entry in &entries {
        let at = Location {
            file: file.given.clone(),
            line: entry.line,
        };
        if SET_PLACEHOLDER.contains(&entry.name.as_str()) {
            // Passed on, expanded, so files this one includes see the placeholder too.
            let Some((name, raw)) = entry.value.as_deref().and_then(|v| v.split_once('=')) else {
                reading.error(
                    at,
                    ConfigError::BadValue {
                        name: entry.name.clone(),
                        value: entry.value.clone().unwrap_or_default(),
                        expected: "NAME=VALUE".into(),
                    },
                );
                continue;
            };
            match expander.expand(raw.trim(), &at, 0, reading) {
                Ok(value) => reading.settings.push(Setting {
                    name: entry.name.clone(),
                    value: Some(format!("{}={value}", name.trim())),
                    at: Some(at),
                }),
                Err(error) => reading.error(at, error),
            }
            continue;
        }
        // uWSGI's log variables (%(addr), %(status), ...) are the logger's to fill in: a
        // name no placeholder or option defines is left as written in the log format.
        expander.keep_unknown = LOG_FORMAT_OPTIONS.contains(&entry.name.as_str());
        let value = match &entry.value {
            None => None,
            Some(raw) => match expander.expand(raw, &at, 0, reading) {
                Ok(value) => Some(value),
                Err(error) => {
                    reading.error(at, error);
                    continue;
                }
            },
        };
        reading.settings.push(Setting {
            name: entry.name.clone(),
            value,
            at: Some(at),
        });
    }
    reading.placeholders.extend(expander.referenced);
}

struct Expander<'a> {
    file: &'a FileInfo,
    defined: HashMap<&'a str, Source<'a>>,
    outer: &'a HashMap<String, String>,
    /// Names referred to, in order of first reference (and as a set).
    referenced: Vec<String>,
    seen: HashSet<String>,
    /// Each placeholder of this file expanded once: a name used a thousand times costs
    /// one expansion.
    expanded: HashMap<String, String>,
    /// Bytes of expanded values this file may still produce.
    budget: usize,
    /// Placeholder math operations done.
    operations: usize,
    /// Expanding a log format: unknown names stay, for the logger.
    keep_unknown: bool,
}

/// Options whose values hold uWSGI's log variables.
const LOG_FORMAT_OPTIONS: &[&str] = &["log-format", "logformat"];

impl Expander<'_> {
    fn expand(
        &mut self,
        raw: &str,
        at: &Location,
        depth: usize,
        reading: &mut Reading,
    ) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(pos) = rest.find(['%', '$', '@']) {
            out.push_str(&rest[..pos]);
            let sigil = rest.as_bytes()[pos] as char;
            let after = &rest[pos + 1..];
            if let Some(inner) = after.strip_prefix('(') {
                let Some(close) = inner.find(')') else {
                    return Err(ConfigError::Syntax(format!(
                        "\"{sigil}(\" is not closed with \")\""
                    )));
                };
                let name = &inner[..close];
                match sigil {
                    '$' => out.push_str(&environment(name, at, reading)),
                    '@' => out.push_str(&file_contents(name)?),
                    _ => out.push_str(&self.placeholder(name, at, depth, reading)?),
                }
                if out.len() > MAX_VALUE_BYTES {
                    return Err(ConfigError::TooLarge(format!(
                        "this value expands to more than {MAX_VALUE_BYTES} bytes (placeholders \
                         repeating each other?)"
                    )));
                }
                rest = &inner[close + 1..];
                continue;
            }
            let letter = after.chars().next();
            match (sigil, letter) {
                ('%', Some('%')) => {
                    out.push('%');
                    rest = &after[1..];
                }
                ('%', Some(letter)) => match self.file.magic(letter) {
                    Some(value) => {
                        out.push_str(&value);
                        rest = &after[letter.len_utf8()..];
                    }
                    None => {
                        out.push('%');
                        rest = after;
                    }
                },
                _ => {
                    out.push(sigil);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        if out.len() > MAX_VALUE_BYTES {
            return Err(ConfigError::TooLarge(format!(
                "this value expands to more than {MAX_VALUE_BYTES} bytes (placeholders repeating \
                 each other?)"
            )));
        }
        self.budget = self.budget.checked_sub(out.len()).ok_or_else(|| {
            ConfigError::TooLarge(format!(
                "the values of this file expand to more than {MAX_FILE_EXPANSION} bytes in all"
            ))
        })?;
        Ok(out)
    }

    /// `%(name)`, or uWSGI's placeholder math `%(a + b * 2)`: items and operators
    /// separated by spaces, applied left to right; two items in a row are concatenated.
    fn placeholder(
        &mut self,
        name: &str,
        at: &Location,
        depth: usize,
        reading: &mut Reading,
    ) -> Result<String, ConfigError> {
        if depth >= MAX_DEPTH {
            return Err(ConfigError::CircularReference(name.into()));
        }
        let words: Vec<&str> = name.split_whitespace().collect();
        if words.len() <= 1 {
            return self.lookup(name, at, depth, reading);
        }
        let mut value = self.operand(words[0], at, depth, reading)?;
        let mut i = 1;
        while i < words.len() {
            let word = words[i];
            i += 1;
            self.operations += 1;
            if self.operations > MAX_MATH_OPERATIONS {
                return Err(math_error(
                    name,
                    &format!("the file asks for more than {MAX_MATH_OPERATIONS} operations"),
                ));
            }
            let result = match word {
                "++" | "--" => {
                    let n = number(name, &value)?;
                    if word == "++" {
                        n.checked_add(1)
                    } else {
                        n.checked_sub(1)
                    }
                }
                "+" | "-" | "*" | "/" => {
                    let Some(next) = words.get(i) else {
                        return Err(math_error(name, &format!("nothing after \"{word}\"")));
                    };
                    i += 1;
                    let (a, b) = (
                        number(name, &value)?,
                        number(name, &self.operand(next, at, depth, reading)?)?,
                    );
                    match word {
                        "+" => a.checked_add(b),
                        "-" => a.checked_sub(b),
                        "*" => a.checked_mul(b),
                        _ => a.checked_div(b),
                    }
                }
                item => {
                    value.push_str(&self.operand(item, at, depth, reading)?);
                    continue;
                }
            };
            value = result
                .ok_or_else(|| math_error(name, "overflow or division by zero"))?
                .to_string();
        }
        Ok(value)
    }

    /// An item of placeholder math: a number as written, else a placeholder.
    fn operand(
        &mut self,
        word: &str,
        at: &Location,
        depth: usize,
        reading: &mut Reading,
    ) -> Result<String, ConfigError> {
        if word.parse::<i64>().is_ok() {
            return Ok(word.to_string());
        }
        self.lookup(word, at, depth, reading)
    }

    fn lookup(
        &mut self,
        name: &str,
        at: &Location,
        depth: usize,
        reading: &mut Reading,
    ) -> Result<String, ConfigError> {
        // `%(_)` is what config logic (if-env, for, ...) fills in when it applies the
        // option: left as written for it.
        if name == "_" {
            return Ok("%(_)".into());
        }
        if self.keep_unknown && !self.defined.contains_key(name) && !self.outer.contains_key(name) {
            return Ok(format!("%({name})"));
        }
        if self.seen.insert(name.to_string()) {
            self.referenced.push(name.into());
        }
        if let Some(value) = self.expanded.get(name) {
            return Ok(value.clone());
        }
        match self.defined.get(name) {
            Some(Source::Raw(raw)) => {
                let raw: &str = raw;
                // The borrow of `defined` ends here: the value is copied out first.
                let raw = raw.to_string();
                let value = self
                    .expand(&raw, at, depth + 1, reading)
                    .map_err(|err| match err {
                        ConfigError::CircularReference(_) => {
                            ConfigError::CircularReference(name.into())
                        }
                        other => other,
                    })?;
                self.expanded.insert(name.to_string(), value.clone());
                Ok(value)
            }
            Some(Source::Switch) => Ok("true".into()),
            None => self
                .outer
                .get(name)
                .cloned()
                .ok_or_else(|| ConfigError::UnknownReference(name.into())),
        }
    }
}

fn number(expression: &str, value: &str) -> Result<i64, ConfigError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| math_error(expression, &format!("\"{value}\" is not a whole number")))
}

fn math_error(expression: &str, why: &str) -> ConfigError {
    ConfigError::Syntax(format!("cannot compute %({expression}): {why}"))
}

/// `$(NAME)`, `$(NAME:-DEFAULT)` (when unset or empty), `$(NAME-DEFAULT)` (when unset).
fn environment(spec: &str, at: &Location, reading: &mut Reading) -> String {
    if let Some((name, default)) = spec.split_once(":-") {
        return std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string());
    }
    if let Some((name, default)) = spec.split_once('-') {
        return std::env::var(name).unwrap_or_else(|_| default.to_string());
    }
    std::env::var(spec).unwrap_or_else(|_| {
        reading.note(
            at.clone(),
            format!("$({spec}) is not set in the environment: read as empty, as uWSGI does"),
        );
        String::new()
    })
}

/// `@(FILE)`: the file's contents, without the final newline.
fn file_contents(path: &str) -> Result<String, ConfigError> {
    let text = read_regular_file(Path::new(path), MAX_VALUE_BYTES as u64)
        .map_err(|err| ConfigError::Unreadable(format!("@({path}): {err}")))?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// Reads a regular file of at most `limit` bytes: a device (/dev/zero), a FIFO or a
/// terminal (/dev/stdin) would make loading a config endless or unbounded.
pub(crate) fn read_regular_file(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|err| err.to_string())?;
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if !meta.is_file() {
        return Err(
            "not a regular file (a device, FIFO or directory cannot be read as config)".into(),
        );
    }
    if meta.len() > limit {
        return Err(format!(
            "{} bytes, over the {limit} bytes a config file may have",
            meta.len()
        ));
    }
    let mut text = String::new();
    // The size may change under us: never read past the limit.
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|err| err.to_string())?;
    if text.len() as u64 > limit {
        return Err(format!("over the {limit} bytes a config file may have"));
    }
    Ok(text)
}
