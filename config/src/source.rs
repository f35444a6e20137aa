//! Where a setting came from, so every message can point at the line to fix.

use std::fmt;
use std::path::PathBuf;

use crate::ConfigError;

/// A line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// One `name = value` as read from a file or the command line, before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The name as written (an alias or a custom placeholder name included).
    pub name: String,
    /// `None` for a bare key, an empty XML element or a command-line switch.
    pub value: Option<String>,
    /// `None` for the command line.
    pub at: Option<Location>,
}

/// A problem, and the line it is on when it comes from a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub at: Option<Location>,
    pub error: ConfigError,
}

/// `file:line: what`, or `what` alone for the command line.
fn write_located(
    f: &mut fmt::Formatter<'_>,
    at: &Option<Location>,
    what: &dyn fmt::Display,
) -> fmt::Result {
    match at {
        Some(at) => write!(f, "{at}: {what}"),
        None => write!(f, "{what}"),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.at, &self.error)
    }
}

/// Something worth telling the user that does not stop the config from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: Option<Location>,
    pub text: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.at, &self.text)
    }
}

/// What reading one file produced: its settings in order, and what went wrong on the way.
#[derive(Debug, Default)]
pub struct Reading {
    pub settings: Vec<Setting>,
    /// Names the file refers to with `%(name)`: an unknown key among them is a placeholder
    /// of the user's, not a typo.
    pub placeholders: Vec<String>,
    pub errors: Vec<Diagnostic>,
    pub notes: Vec<Note>,
}

impl Reading {
    pub(crate) fn error(&mut self, at: Location, error: ConfigError) {
        self.errors.push(Diagnostic {
            at: Some(at),
            error,
        });
    }

    pub(crate) fn note(&mut self, at: Location, text: String) {
        self.notes.push(Note { at: Some(at), text });
    }
}
