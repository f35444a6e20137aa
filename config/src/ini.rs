//! uWSGI's INI format: a `[uwsgi]` section (or the one named after `file.ini:`), `key = value`
//! lines, `;`/`#` comment lines, repeated keys, bare keys meaning true.

use std::collections::HashMap;

use crate::expand::{expand_entries, FileInfo, RawEntry};
use crate::source::{Location, Reading};
use crate::ConfigError;

pub(crate) fn read(
    text: &str,
    file: &FileInfo,
    section: &str,
    outer: &HashMap<String, String>,
) -> Reading {
    let mut reading = Reading::default();
    let mut entries = Vec::new();
    let mut current: Option<&str> = None;
    let mut found = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let at = || Location {
            file: file.given.clone(),
            line: number,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            match header.strip_suffix(']') {
                Some(name) => {
                    current = Some(name.trim());
                    found |= name.trim() == section;
                }
                None => reading.error(
                    at(),
                    ConfigError::Syntax(format!("section header \"{line}\" has no closing ']'")),
                ),
            }
            continue;
        }
        if current != Some(section) {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (line, None),
        };
        if name.is_empty() {
            reading.error(
                at(),
                ConfigError::Syntax(format!("\"{line}\" has no option name before '='")),
            );
            continue;
        }
        let value = value.map(|value| match inline_comment(value) {
            Some(pos) => {
                reading.note(
                    at(),
                    format!(
                        "\"{}\" after the value of {name} is read as a comment \
                         (uWSGI would make it part of the value)",
                        &value[pos..].trim_start()
                    ),
                );
                value[..pos].trim_end().to_string()
            }
            None => value.to_string(),
        });
        entries.push(RawEntry {
            name: name.to_string(),
            value,
            line: number,
        });
    }
    if !found {
        reading.error(
            Location {
                file: file.given.clone(),
                line: 0,
            },
            ConfigError::NoSection(section.into()),
        );
    }
    expand_entries(entries, file, outer, &mut reading);
    reading
}

/// Where a comment starts inside a value: a `#` or `;` after whitespace.
fn inline_comment(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    (1..bytes.len())
        .find(|&i| matches!(bytes[i], b'#' | b';') && bytes[i - 1].is_ascii_whitespace())
}
