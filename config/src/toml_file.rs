//! ngx-wsgi's own format: TOML with flat keys named as uWSGI's options
//! (`socket = "/run/app.sock"`, `processes = 4`, `pythonpath = ["/srv/a", "/srv/b"]`).

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::expand::FileInfo;
use crate::source::{Location, Reading, Setting};
use crate::ConfigError;

pub(crate) fn read(text: &str, file: &FileInfo) -> Reading {
    let mut reading = Reading::default();
    let at = |offset: usize| Location {
        file: file.given.clone(),
        line: text[..offset.min(text.len())].matches('\n').count() + 1,
    };
    let table = match DeTable::parse(text) {
        Ok(table) => table.into_inner(),
        Err(err) => {
            let line = err.span().map(|s| at(s.start).line).unwrap_or(0);
            let message = err.message().trim().to_string();
            reading.error(
                Location {
                    file: file.given.clone(),
                    line,
                },
                ConfigError::Syntax(format!("not valid TOML: {message}")),
            );
            return reading;
        }
    };
    // The table is sorted by key; the file's order matters (listeners bind in order).
    let mut keys: Vec<_> = table.iter().collect();
    keys.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in keys {
        let name = key.get_ref().to_string();
        let location = at(key.span().start);
        let values: Vec<&Spanned<DeValue>> = match value.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            _ => vec![value],
        };
        for item in values {
            match scalar(item.get_ref()) {
                Ok(value) => reading.settings.push(Setting {
                    name: name.clone(),
                    value,
                    at: Some(location.clone()),
                }),
                Err(what) => reading.error(
                    at(item.span().start),
                    ConfigError::Syntax(format!(
                        "{name} is {what}: options are top-level keys holding a string, \
                         a number, true/false, or a list of those"
                    )),
                ),
            }
        }
    }
    reading
}

/// A TOML value as the text an option parses; `None` is a switch turned on.
fn scalar(value: &DeValue) -> Result<Option<String>, &'static str> {
    Ok(Some(match value {
        DeValue::String(s) => s.to_string(),
        DeValue::Boolean(true) => return Ok(None),
        DeValue::Boolean(false) => "false".into(),
        // A mode written `0o660` keeps its octal digits: "0660".
        DeValue::Integer(n) if n.radix() == 8 => format!("0{}", n.as_str()),
        DeValue::Integer(n) if n.radix() == 10 => n.as_str().to_string(),
        DeValue::Integer(n) => i128::from_str_radix(n.as_str(), n.radix())
            .map_err(|_| "an integer out of range")?
            .to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Datetime(_) => return Err("a date"),
        DeValue::Array(_) => return Err("a list of lists"),
        DeValue::Table(_) => return Err("a table"),
    }))
}
