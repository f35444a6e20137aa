//! uWSGI's config logic: `if-env`, `if-exists`, `if-opt`, `for`, ... blocks closed by
//! `endif`/`endfor`, as uWSGI reads them.
//!
//! A block's opener is evaluated once, where it stands: it gives the values `%(_)` takes in
//! the block (none when a condition is false, one when it is true, one per item of a
//! loop). Each option inside the block is then applied once per value, with `%(_)`
//! replaced. Blocks do not nest, in uWSGI either.

use std::collections::HashMap;
use std::path::Path;

use crate::ConfigError;

/// The names that close a block (`end` is uWSGI's too, though no option has that name).
pub(crate) const BLOCK_ENDS: &[&str] = &["endif", "end-if", "endfor", "end-for", "end"];

/// The canonical names of the options that open a block.
pub(crate) const OPENERS: &[&str] = &[
    "if-env",
    "if-not-env",
    "if-exists",
    "if-not-exists",
    "if-file",
    "if-not-file",
    "if-dir",
    "if-not-dir",
    "if-opt",
    "if-not-opt",
    "for",
    "for-times",
    "for-readline",
];

/// `for-times` counts to at most this, and `for-readline` reads at most this many bytes:
/// a config cannot make its own loading unbounded.
const MAX_ITERATIONS: u64 = 10_000;
const MAX_READLINE_BYTES: u64 = 1 << 20;

/// The values `%(_)` takes inside the block `opener = arg` opens: empty when a condition
/// is false. `options` holds every option set so far, for `if-opt`.
pub(crate) fn block_values(
    opener: &str,
    arg: &str,
    options: &HashMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    // `NAME=VALUE` compares; `NAME` alone asks whether it is set at all.
    let (key, wanted) = match arg.split_once('=') {
        Some((key, wanted)) => (key, Some(wanted)),
        None => (arg, None),
    };
    let matches = |found: Option<&str>| match (found, wanted) {
        (Some(found), Some(wanted)) => found == wanted,
        (found, _) => found.is_some(),
    };
    let when = |condition: bool, value: &str| {
        if condition {
            vec![value.to_string()]
        } else {
            Vec::new()
        }
    };
    let path = Path::new(arg);
    Ok(match opener {
        "if-env" | "if-not-env" => {
            let found = std::env::var(key).ok();
            let holds = matches(found.as_deref());
            when(
                holds == (opener == "if-env"),
                found.as_deref().unwrap_or(""),
            )
        }
        "if-opt" | "if-not-opt" => {
            let found = options.get(key).map(String::as_str);
            let holds = matches(found);
            when(holds == (opener == "if-opt"), found.unwrap_or(""))
        }
        "if-exists" => when(path.exists(), arg),
        "if-not-exists" => when(!path.exists(), arg),
        "if-file" => when(path.is_file(), arg),
        "if-not-file" => when(!path.is_file(), arg),
        "if-dir" => when(path.is_dir(), arg),
        "if-not-dir" => when(!path.is_dir(), arg),
        "for" => arg.split_whitespace().map(str::to_string).collect(),
        "for-times" => match arg.trim().parse::<u64>() {
            Ok(n) if n <= MAX_ITERATIONS => (1..=n).map(|i| i.to_string()).collect(),
            _ => {
                return Err(ConfigError::BadValue {
                    name: opener.into(),
                    value: arg.into(),
                    expected: format!("a number of iterations from 0 to {MAX_ITERATIONS}"),
                })
            }
        },
        "for-readline" => read_lines(path).map_err(|reason| {
            ConfigError::Unreadable(format!("{} (for-readline): {reason}", path.display()))
        })?,
        _ => Vec::new(),
    })
}

/// The non-empty lines of a regular file of at most [`MAX_READLINE_BYTES`].
fn read_lines(path: &Path) -> Result<Vec<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_READLINE_BYTES {
        return Err(format!("larger than {MAX_READLINE_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_loops_give_the_values_of_their_block() {
        let mut options = HashMap::new();
        options.insert("processes".to_string(), "4".to_string());
        let values = |opener, arg| block_values(opener, arg, &options).unwrap();
        std::env::set_var("NGX_WSGI_LOGIC_TEST", "prod");
        assert_eq!(values("if-env", "NGX_WSGI_LOGIC_TEST"), ["prod"]);
        assert_eq!(values("if-env", "NGX_WSGI_LOGIC_TEST=prod"), ["prod"]);
        assert!(values("if-env", "NGX_WSGI_LOGIC_TEST=dev").is_empty());
        assert!(values("if-not-env", "NGX_WSGI_LOGIC_TEST").is_empty());
        assert_eq!(values("if-not-env", "NGX_WSGI_LOGIC_TEST=dev"), ["prod"]);
        assert_eq!(values("if-not-env", "NGX_WSGI_LOGIC_UNSET"), [""]);
        assert_eq!(values("if-opt", "processes=4"), ["4"]);
        assert!(values("if-opt", "threads").is_empty());
        assert_eq!(values("if-not-opt", "threads"), [""]);
        assert_eq!(values("if-dir", "/"), ["/"]);
        assert!(values("if-file", "/").is_empty());
        assert_eq!(values("if-not-exists", "/no/such/file"), ["/no/such/file"]);
        assert_eq!(values("for", "a  b c"), ["a", "b", "c"]);
        assert_eq!(values("for-times", "3"), ["1", "2", "3"]);
        assert!(block_values("for-times", "1000000", &options).is_err());
        assert!(block_values("for-readline", "/dev/zero", &options).is_err());
    }
}
