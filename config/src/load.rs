//! Reading options from the command line and from config files into one [`Config`].
//!
//! Placeholders given on the command line (`--set-ph`) come first, so files can use them;
//! then the files, in the order given; then the command line's other options, so a flag
//! overrides the file. A list option given on the command line (`--socket`) replaces the
//! file's list instead of adding to it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::expand::{FileInfo, SET_PLACEHOLDER};
use crate::logic::{self, BLOCK_ENDS, OPENERS};
use crate::options::{self, lookup, suggest, Action, Arity, Support};
use crate::source::{Diagnostic, Location, Note, Reading, Setting};
use crate::{Config, ConfigError, ConfigErrors};

/// Files may include others (`ini = %dbase.ini`); deeper than this is a loop.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Config files read for one config, includes and all.
const MAX_FILES: usize = 64;
/// The largest config file read.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;
/// Unknown names get a "did you mean" for the first this many (each costs a scan of
/// every option name).
const MAX_SUGGESTIONS: usize = 100;

/// A config file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// uWSGI's INI.
    Ini,
    /// uWSGI's XML.
    Xml,
    /// ngx-wsgi's native format.
    Toml,
}

impl Format {
    /// The format a file's extension says, if it says one.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "ini" => Some(Format::Ini),
            "xml" => Some(Format::Xml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// The format the option `name` reads `file` in, if `name` is one that names a file:
    /// `ini`, `xml`, or `config` (by extension, TOML for any other).
    fn for_option(name: &str, file: &str) -> Option<Format> {
        match name {
            "ini" => Some(Format::Ini),
            "xml" => Some(Format::Xml),
            "config" => Some(Format::from_path(split_section(file).0).unwrap_or(Format::Toml)),
            _ => None,
        }
    }
}

/// The result of reading options: the config, notes worth logging, and where each option
/// was set.
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    /// Ignored options, inline comments, unset environment variables: worth a log line.
    pub notes: Vec<Note>,
    /// The file and line each option was last set on (options from files only).
    pub origins: HashMap<&'static str, Location>,
    /// `--check-config`: print the effective config and exit instead of running.
    pub check_only: bool,
}

/// Applies settings from every source to one config, collecting every problem on the way.
#[derive(Default)]
struct Builder {
    config: Config,
    notes: Vec<Note>,
    errors: Vec<Diagnostic>,
    origins: HashMap<&'static str, Location>,
    /// List options the command line has started replacing.
    replaced: Vec<&'static str>,
    depth: usize,
    /// Every value set so far, by the name it was set under: what later files'
    /// placeholders may refer to.
    values: HashMap<String, String>,
    /// For `ini = :section`.
    last_ini: Option<std::path::PathBuf>,
    /// Names some file referred to with `%(name)`.
    referenced: HashSet<String>,
    /// The files being read, outermost first (canonical paths): one of them included
    /// again is a loop.
    including: Vec<(std::path::PathBuf, Option<String>)>,
    /// Files read so far.
    files_read: usize,
    /// Names that are no option: typos, unless a file refers to them (placeholders).
    unknown: Vec<(String, Option<Location>)>,
    /// The config logic block (`if-env`, `for`, ...) open now.
    block: Option<Block>,
}

/// An open `if-*`/`for` block: where it was opened, and the values `%(_)` takes for each
/// option inside it (none: its condition is false).
struct Block {
    opener: String,
    at: Option<Location>,
    values: Vec<String>,
}

impl Builder {
    fn error(&mut self, at: Option<Location>, error: ConfigError) {
        self.errors.push(Diagnostic { at, error });
    }

    /// Reads `path[:section]` in `format` (by extension when `None`) and applies it.
    /// `:section` alone is a section of the last INI file read, as in uWSGI.
    fn read_file(&mut self, spec: &str, format: Option<Format>, at: Option<Location>) {
        let same_file;
        let (path, section) = match (spec.strip_prefix(':'), &self.last_ini) {
            (Some(section), Some(last)) => {
                same_file = last.clone();
                (same_file.as_path(), Some(section))
            }
            _ => split_section(spec),
        };
        let Some(format) = format.or_else(|| Format::from_path(path)) else {
            self.error(at, ConfigError::UnknownFormat(path.display().to_string()));
            return;
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            self.error(at, ConfigError::IncludeTooDeep(path.display().to_string()));
            return;
        }
        // A file and section being read already: reading it again would loop (another
        // section of the same file is another config).
        let canonical = (
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            section.map(str::to_string),
        );
        if self.including.contains(&canonical) {
            self.error(at, ConfigError::IncludeLoop(path.display().to_string()));
            return;
        }
        if self.files_read >= MAX_FILES {
            self.error(at, ConfigError::TooManyFiles(MAX_FILES));
            return;
        }
        self.files_read += 1;
        let text = match crate::expand::read_regular_file(path, MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(err) => {
                let reason = format!("{}: {err}", path.display());
                self.error(at, ConfigError::Unreadable(reason));
                return;
            }
        };
        self.read_text(&text, path, format, section, canonical);
    }

    /// Reads a file's text and applies its settings, the file (`including`) being on the
    /// stack of files read meanwhile.
    fn read_text(
        &mut self,
        text: &str,
        path: &Path,
        format: Format,
        section: Option<&str>,
        including: (std::path::PathBuf, Option<String>),
    ) {
        if format == Format::Ini {
            self.last_ini = Some(path.to_path_buf());
        }
        let reading = read_text(text, path, format, section, &self.values);
        self.notes.extend(reading.notes);
        self.errors.extend(reading.errors);
        self.referenced.extend(reading.placeholders);
        self.depth += 1;
        self.including.push(including);
        for setting in reading.settings {
            self.apply(setting, false);
        }
        self.including.pop();
        self.depth -= 1;
    }

    fn apply(&mut self, setting: Setting, from_command_line: bool) {
        if self.config_logic(&setting, from_command_line) {
            return;
        }
        let Setting { name, value, at } = setting;
        if SET_PLACEHOLDER.contains(&name.as_str()) {
            match value.as_deref().and_then(|v| v.split_once('=')) {
                Some((key, value)) => {
                    self.values.insert(key.trim().into(), value.trim().into());
                }
                None => self.error(
                    at,
                    ConfigError::BadValue {
                        name,
                        value: value.unwrap_or_default(),
                        expected: "NAME=VALUE".into(),
                    },
                ),
            }
            return;
        }
        let shown = value.clone().unwrap_or_else(|| "true".into());
        let Some(spec) = lookup(&name) else {
            if from_command_line {
                let suggestion = suggest(&name);
                self.error(at, ConfigError::Unknown { name, suggestion });
            } else {
                // A placeholder if some file refers to it, else a typo: decided at the end.
                self.values.insert(name.clone(), shown);
                self.unknown.push((name, at));
            }
            return;
        };
        self.values.insert(name.clone(), shown.clone());
        self.values.insert(spec.name.into(), shown);
        if let Some(format) = Format::for_option(spec.name, value.as_deref().unwrap_or("")) {
            match value {
                Some(file) => self.read_file(&file, Some(format), at),
                None => self.error(at, ConfigError::MissingValue(name)),
            }
            return;
        }
        match spec.support {
            Support::Yes => {}
            Support::Ignored(why) => {
                let text = format!("option \"{name}\" ignored: {why}");
                self.notes.push(Note { at, text });
                return;
            }
            Support::Refused(instead) => {
                self.error(at, ConfigError::Refused { name, instead });
                return;
            }
        }
        if spec.arity == Arity::Value && value.is_none() {
            self.error(at, ConfigError::MissingValue(name));
            return;
        }
        if from_command_line
            && matches!(spec.action, Action::Push { .. })
            && !self.replaced.contains(&spec.name)
        {
            self.replaced.push(spec.name);
            self.config.clear_list(spec);
        }
        match self.config.apply_spec(spec, spec.name, value.as_deref()) {
            Ok(()) => {
                if let Some(at) = at {
                    self.origins.insert(spec.name, at);
                }
            }
            Err(error) => self.error(at, error),
        }
    }

    /// Opens, closes or runs the inside of an `if-*`/`for` block; false when `setting` is
    /// none of those and is to be applied as it is.
    fn config_logic(&mut self, setting: &Setting, from_command_line: bool) -> bool {
        let name = lookup(&setting.name).map_or(setting.name.as_str(), |spec| spec.name);
        if BLOCK_ENDS.contains(&name) || BLOCK_ENDS.contains(&setting.name.as_str()) {
            if self.block.take().is_none() {
                let text = format!("{} closes no if-* or for block: ignored", setting.name);
                self.notes.push(Note {
                    at: setting.at.clone(),
                    text,
                });
            }
            return true;
        }
        if let Some(block) = &self.block {
            if OPENERS.contains(&name) {
                let opened = block.at.as_ref().map_or_else(
                    || "on the command line".to_string(),
                    |at| format!("at {at}"),
                );
                let error = ConfigError::Syntax(format!(
                    "{} inside the {} block opened {opened}: config logic does not nest (in \
                     uWSGI either); close that block first (endif, endfor)",
                    setting.name, block.opener
                ));
                self.error(setting.at.clone(), error);
                return true;
            }
            // Each value of the block applies the option once, `%(_)` replaced; the
            // block is set aside meanwhile, so an included file inside it reads plainly.
            let block = self.block.take();
            for substitute in block.iter().flat_map(|b| &b.values) {
                let value = setting
                    .value
                    .as_ref()
                    .map(|v| v.replace("%(_)", substitute));
                let inner = Setting {
                    name: setting.name.clone(),
                    value,
                    at: setting.at.clone(),
                };
                self.apply(inner, from_command_line);
            }
            self.block = block;
            return true;
        }
        if !OPENERS.contains(&name) {
            return false;
        }
        let arg = setting.value.as_deref().unwrap_or("");
        match logic::block_values(name, arg, &self.values) {
            Ok(values) => {
                self.block = Some(Block {
                    opener: setting.name.clone(),
                    at: setting.at.clone(),
                    values,
                })
            }
            Err(error) => {
                self.error(setting.at.clone(), error);
                // What follows is skipped until the block's end, as a false condition.
                self.block = Some(Block {
                    opener: setting.name.clone(),
                    at: setting.at.clone(),
                    values: Vec::new(),
                });
            }
        }
        true
    }

    fn finish(
        mut self,
        whole_file: Option<Location>,
        check_only: bool,
    ) -> Result<Parsed, ConfigErrors> {
        if let Some(block) = self.block.take() {
            let text = format!(
                "{} has no endif/endfor: it runs to the end of the config, as in uWSGI",
                block.opener
            );
            self.notes.push(Note { at: block.at, text });
        }
        for (index, (name, at)) in std::mem::take(&mut self.unknown).into_iter().enumerate() {
            if !self.referenced.contains(&name) {
                let suggestion = if index < MAX_SUGGESTIONS {
                    suggest(&name)
                } else {
                    None
                };
                self.error(at, ConfigError::Unknown { name, suggestion });
            }
        }
        for error in self.config.validate() {
            self.error(whole_file.clone(), error);
        }
        for text in self.config.warnings() {
            self.notes.push(Note {
                at: whole_file.clone(),
                text,
            });
        }
        // A file's problems in line order, whatever stage found them; the file as a whole
        // (line 0) last; the command line's first, as given.
        self.errors.sort_by_key(|d| {
            d.at.as_ref().map(|at| {
                (
                    at.file.clone(),
                    if at.line == 0 { usize::MAX } else { at.line },
                )
            })
        });
        if self.errors.is_empty() {
            Ok(Parsed {
                config: self.config,
                notes: self.notes,
                origins: self.origins,
                check_only,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// `file.ini:other` names section `other` of `file.ini` (`<uwsgi id="other">` in XML).
fn split_section(spec: &str) -> (&Path, Option<&str>) {
    if let Some((path, section)) = spec.rsplit_once(':') {
        if !section.is_empty()
            && !section.contains('/')
            && Format::from_path(Path::new(path)).is_some()
        {
            return (Path::new(path), Some(section));
        }
    }
    (Path::new(spec), None)
}

/// Parses a file's text (no includes, no validation): what the format reader saw. `outer`
/// holds the values set before the file, for its placeholders.
pub(crate) fn read_text(
    text: &str,
    path: &Path,
    format: Format,
    section: Option<&str>,
    outer: &HashMap<String, String>,
) -> Reading {
    let file = FileInfo::new(path, section);
    match format {
        Format::Ini => crate::ini::read(text, &file, section.unwrap_or("uwsgi"), outer),
        Format::Xml => crate::xml::read(text, &file, section, outer),
        Format::Toml => crate::toml_file::read(text, &file),
    }
}

/// Reads a config from text as if it were the file `path` (whose directory its `%d` and
/// relative includes name), validated: what fuzzing and tests drive the readers with.
pub fn load_text(text: &str, path: &Path, format: Format) -> Result<Parsed, ConfigErrors> {
    let mut builder = Builder::default();
    let whole_file = Location {
        file: path.to_path_buf(),
        line: 0,
    };
    builder.files_read = 1;
    builder.read_text(text, path, format, None, (path.to_path_buf(), None));
    builder.finish(Some(whole_file), false)
}

/// Reads one config file, as the nginx module does: format by extension, validated.
pub fn load_file(path: &Path) -> Result<Parsed, ConfigErrors> {
    let mut builder = Builder::default();
    let spec = path.to_string_lossy();
    let whole_file = Location {
        file: split_section(&spec).0.to_path_buf(),
        line: 0,
    };
    builder.read_file(&spec, None, None);
    builder.finish(Some(whole_file), false)
}

/// Reads command-line arguments (without the program name) into a validated config.
///
/// Config files (`--ini`, `--xml`, `--config`, or a `.ini`/`.xml`/`.toml` file given as an
/// argument) are read first, then the other options override them. Every problem is
/// collected, so a user fixing a copied uWSGI command line or ini file sees them all.
pub fn parse_args<I, S>(args: I) -> Result<Parsed, ConfigErrors>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
    let mut builder = Builder::default();
    let mut files: Vec<(String, Option<Format>)> = Vec::new();
    let mut settings: Vec<Setting> = Vec::new();
    let mut check_only = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (spec, inline_value, shown) = if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            if name == "check-config" {
                check_only = true;
                continue;
            }
            match lookup(name) {
                Some(spec) => (spec, value, name.to_string()),
                None => {
                    builder.error(
                        None,
                        ConfigError::Unknown {
                            name: name.into(),
                            suggestion: suggest(name),
                        },
                    );
                    // Skip what is probably its value, so it is not reported as stray too.
                    if value.is_none() && args.get(i).is_some_and(|next| !next.starts_with('-')) {
                        i += 1;
                    }
                    continue;
                }
            }
        } else if let Some(letter) = arg.strip_prefix('-').filter(|s| s.chars().count() == 1) {
            let letter = letter.chars().next().unwrap_or('-');
            match options::lookup_short(letter) {
                Some(spec) => (spec, None, spec.name.to_string()),
                None => {
                    builder.error(
                        None,
                        ConfigError::Unknown {
                            name: arg.clone(),
                            suggestion: None,
                        },
                    );
                    continue;
                }
            }
        } else if Format::from_path(split_section(arg).0).is_some() {
            files.push((arg.clone(), None));
            continue;
        } else {
            builder.error(None, ConfigError::StrayArgument(arg.clone()));
            continue;
        };

        let value = match (spec.arity, inline_value) {
            (_, Some(v)) => Some(v),
            (Arity::Flag, None) => None,
            (Arity::Value, None) => match args.get(i) {
                Some(next) => {
                    i += 1;
                    Some(next.clone())
                }
                None => None,
            },
            // uWSGI only takes `--chmod-socket=660`; accept `--chmod-socket 660` as well.
            (Arity::OptionalValue, None) => match args.get(i) {
                Some(next)
                    if !next.starts_with('-') && next.chars().all(|c| c.is_ascii_digit()) =>
                {
                    i += 1;
                    Some(next.clone())
                }
                _ => None,
            },
        };
        if let Some(format) = Format::for_option(spec.name, value.as_deref().unwrap_or("")) {
            match value {
                Some(file) => files.push((file, Some(format))),
                None => builder.error(None, ConfigError::MissingValue(shown)),
            }
            continue;
        }
        settings.push(Setting {
            name: shown,
            value,
            at: None,
        });
    }
    // With one file, what is missing is missing from it.
    let whole_file = match files.as_slice() {
        [(file, _)] => Some(Location {
            file: split_section(file).0.to_path_buf(),
            line: 0,
        }),
        _ => None,
    };
    // Placeholders first, so the files can use them.
    let (placeholders, settings): (Vec<Setting>, Vec<Setting>) = settings
        .into_iter()
        .partition(|s| SET_PLACEHOLDER.contains(&s.name.as_str()));
    for setting in placeholders {
        builder.apply(setting, true);
    }
    for (file, format) in files {
        builder.read_file(&file, format, None);
    }
    for setting in settings {
        builder.apply(setting, true);
    }
    builder.finish(whole_file, check_only)
}
