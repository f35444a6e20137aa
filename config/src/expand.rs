//! uWSGI's substitutions in INI and XML values: `$(ENV)`, `%(name)` placeholders and the
//! magic variables (`%d`, `%n`, `%p`, ...).
//!
//! uWSGI resolves placeholders after the whole file is read, so `%(name)` may name a key
//! set further down; the last value of a repeated key wins, as it does in uWSGI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::source::{Location, Reading, Setting};
use crate::ConfigError;

/// Placeholders may nest (`root = %(base)/x`); deeper than this is a cycle.
const MAX_DEPTH: usize = 16;

/// The config file being read, for the magic variables.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    /// As the user gave it (`%o`).
    pub given: PathBuf,
    /// Absolute (`%p`).
    pub absolute: PathBuf,
}

impl FileInfo {
    pub fn new(given: &Path) -> Self {
        FileInfo {
            given: given.to_path_buf(),
            absolute: std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf()),
        }
    }

    fn stem(path: &Path) -> String {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The value of magic variable `%<letter>`, or `None` if uWSGI defines no such letter
    /// (the text is then kept as written).
    fn magic(&self, letter: char) -> Option<String> {
        let abs = &self.absolute;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        Some(match letter {
            'd' => {
                let mut dir = dir.to_string_lossy().into_owned();
                if !dir.ends_with('/') {
                    dir.push('/');
                }
                dir
            }
            'p' => abs.to_string_lossy().into_owned(),
            's' | 'x' => abs
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'n' => Self::stem(abs),
            'e' | 'X' => abs
                .extension()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'c' => dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'o' => self.given.to_string_lossy().into_owned(),
            'O' => self.given.with_extension("").to_string_lossy().into_owned(),
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
                .map(|u| u.name)
                .unwrap_or_default(),
            'G' => nix::unistd::Group::from_gid(nix::unistd::getgid())
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_default(),
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

/// Substitutes every entry's value and returns the file's settings.
pub(crate) fn expand_entries(entries: Vec<RawEntry>, file: &FileInfo, reading: &mut Reading) {
    let mut last: HashMap<&str, &RawEntry> = HashMap::new();
    for entry in &entries {
        last.insert(entry.name.as_str(), entry);
    }
    let mut expander = Expander {
        file,
        last,
        referenced: Vec::new(),
    };
    let mut settings = Vec::new();
    for entry in &entries {
        let at = Location {
            file: file.given.clone(),
            line: entry.line,
        };
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
        settings.push(Setting {
            name: entry.name.clone(),
            value,
            at: Some(at),
        });
    }
    reading.placeholders.extend(expander.referenced);
    reading.settings.extend(settings);
}

struct Expander<'a> {
    file: &'a FileInfo,
    last: HashMap<&'a str, &'a RawEntry>,
    referenced: Vec<String>,
}

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
        while let Some(pos) = rest.find(['%', '$']) {
            out.push_str(&rest[..pos]);
            let sigil = rest.as_bytes()[pos];
            let after = &rest[pos + 1..];
            if let Some(inner) = after.strip_prefix('(') {
                let Some(close) = inner.find(')') else {
                    return Err(ConfigError::Syntax(format!(
                        "\"{}(\" is not closed with \")\"",
                        sigil as char
                    )));
                };
                let name = &inner[..close];
                if sigil == b'$' {
                    match std::env::var(name) {
                        Ok(value) => out.push_str(&value),
                        Err(_) => reading.note(
                            at.clone(),
                            format!("$({name}) is not set in the environment: read as empty, as uWSGI does"),
                        ),
                    }
                } else {
                    out.push_str(&self.placeholder(name, at, depth, reading)?);
                }
                rest = &inner[close + 1..];
                continue;
            }
            let letter = after.chars().next();
            match (sigil, letter) {
                (b'%', Some('%')) => {
                    out.push('%');
                    rest = &after[1..];
                }
                (b'%', Some(letter)) => match self.file.magic(letter) {
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
                    out.push(sigil as char);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

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
        let Some(entry) = self.last.get(name).copied() else {
            return Err(ConfigError::UnknownReference(name.into()));
        };
        if !self.referenced.iter().any(|r| r == name) {
            self.referenced.push(name.into());
        }
        match &entry.value {
            None => Ok("true".into()),
            Some(raw) => self.expand(raw, at, depth + 1, reading),
        }
    }
}
