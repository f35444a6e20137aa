//! `cron` and `unique-cron`: shell commands the master runs on a schedule, as uWSGI's
//! (`MINUTE HOUR DAY MONTH WEEKDAY COMMAND`; -1 for any value, -N for every N).

use std::fmt;

use crate::ConfigError;

/// One schedule field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Any,
    /// `-N`: when the value is a multiple of N.
    Every(u32),
    At(u32),
}

impl CronField {
    pub fn matches(self, value: u32) -> bool {
        match self {
            CronField::Any => true,
            CronField::Every(n) => value.checked_rem(n) == Some(0),
            CronField::At(at) => value == at,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CronField::Any => write!(f, "-1"),
            CronField::Every(n) => write!(f, "-{n}"),
            CronField::At(at) => write!(f, "{at}"),
        }
    }
}

/// A command and when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// Minute, hour, day of the month, month, weekday (0 = Sunday).
    pub fields: [CronField; 5],
    pub command: String,
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 6),
];

impl CronSpec {
    pub fn parse(option: &str, text: &str) -> Result<CronSpec, ConfigError> {
        let bad = |expected: String| ConfigError::BadValue {
            name: option.into(),
            value: text.into(),
            expected,
        };
        let mut rest = text.trim_start();
        let mut fields = [CronField::Any; 5];
        for (field, (what, low, high)) in fields.iter_mut().zip(FIELDS) {
            let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            rest = after.trim_start();
            *field = match word.parse::<i64>() {
                Ok(-1) => CronField::Any,
                Ok(n) if n < -1 && -n <= i64::from(high) => CronField::Every((-n) as u32),
                Ok(n) if n >= i64::from(low) && n <= i64::from(high) => CronField::At(n as u32),
                _ => {
                    return Err(bad(format!(
                        "MINUTE HOUR DAY MONTH WEEKDAY COMMAND: the {what} is {word:?}, not {low} to {high}, \
                         -1 (any) or -N (every N)"
                    )))
                }
            };
        }
        if rest.trim().is_empty() {
            return Err(bad(
                "MINUTE HOUR DAY MONTH WEEKDAY COMMAND: the command is missing".into(),
            ));
        }
        Ok(CronSpec {
            fields,
            command: rest.trim().to_string(),
        })
    }

    /// Whether it runs at this local minute, hour, day, month and weekday.
    pub fn matches(&self, now: [u32; 5]) -> bool {
        self.fields
            .iter()
            .zip(now)
            .all(|(field, value)| field.matches(value))
    }
}

impl fmt::Display for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for field in self.fields {
            write!(f, "{field} ")?;
        }
        write!(f, "{}", self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uwsgi_schedules_read_and_match() {
        let spec = CronSpec::parse("cron", "-5 2 -1 -1 -1 /usr/bin/backup --all").unwrap();
        assert_eq!(spec.command, "/usr/bin/backup --all");
        assert_eq!(spec.to_string(), "-5 2 -1 -1 -1 /usr/bin/backup --all");
        assert!(spec.matches([10, 2, 7, 3, 1]));
        assert!(!spec.matches([11, 2, 7, 3, 1]));
        assert!(!spec.matches([10, 3, 7, 3, 1]));
    }

    #[test]
    fn a_bad_schedule_says_which_field() {
        let err = |text| CronSpec::parse("cron", text).unwrap_err().to_string();
        assert!(err("60 -1 -1 -1 -1 x").contains("the minute is \"60\", not 0 to 59"));
        assert!(err("0 0 0 -1 -1 x").contains("the day is \"0\", not 1 to 31"));
        assert!(err("0 0 1 -1 -1").contains("the command is missing"));
        assert!(err("every day x").contains("the minute is \"every\""));
    }
}
