//! Process titles (`auto-procname`, `procname`, `procname-master`, `procname-prefix`,
//! `procname-prefix-spaced`, `procname-append`): what `ps`, `top` and `pgrep` show.
//!
//! Linux shows two names: the command line (`ps aux`, from the process's own argv memory)
//! and the 15-byte `comm` (`top`, `ps -o comm`, from prctl). Both are set. The argv area
//! is overwritten in place, so a title longer than the command ngx-wsgi was started with
//! is cut to that length; main() copied its arguments before, and nothing reads argv since.

use ngx_wsgi_config::Config;

/// The title of the master, or of worker `worker` (None: titles are left as they are).
pub fn title(config: &Config, worker: Option<u32>) -> Option<String> {
    let name = match worker {
        None => config
            .procname_master
            .clone()
            .or_else(|| config.procname.clone())
            .or_else(|| config.auto_procname.then(|| "ngx-wsgi master".to_string())),
        Some(id) => config.procname.clone().or_else(|| {
            config
                .auto_procname
                .then(|| format!("ngx-wsgi worker {id}"))
        }),
    };
    let decorated = config.procname_prefix.is_some()
        || config.procname_prefix_spaced.is_some()
        || config.procname_append.is_some();
    // Only a prefix or suffix given: they decorate uWSGI's default names, as in uWSGI.
    let name = match (name, decorated) {
        (Some(name), _) => name,
        (None, true) => match worker {
            None => "ngx-wsgi master".to_string(),
            Some(id) => format!("ngx-wsgi worker {id}"),
        },
        (None, false) => return None,
    };
    let mut title = String::new();
    if let Some(prefix) = &config.procname_prefix {
        title.push_str(prefix);
    }
    if let Some(prefix) = &config.procname_prefix_spaced {
        title.push_str(prefix);
        title.push(' ');
    }
    title.push_str(&name);
    if let Some(suffix) = &config.procname_append {
        title.push_str(suffix);
    }
    Some(title)
}

/// Sets this process's title, if the config asks for one.
pub fn set(config: &Config, worker: Option<u32>) {
    if let Some(title) = title(config, worker) {
        set_title(&title);
    }
}

/// Sets this process's title (`ps`, /proc/PID/cmdline) and its name (comm, `top`).
pub fn set_title(title: &str) {
    set_comm(title.as_bytes());
    if let Err(err) = overwrite_argv(title.as_bytes(), b"") {
        tracing::warn!("cannot set the process title: {err}");
    }
}

/// Shows this process as the command `program args...` (comm: `program`'s file name),
/// as the `ngx-wsgi` executable shows, when the daemon runs inside Python
/// (`python_host`), whose command line holds them after its own arguments. Only when the
/// command line is the one `python_host` started, beginning with `started_as`: under
/// valgrind, say, the kernel's argv area is valgrind's own, its options still in use.
pub fn show_as_command(program: &str, args: &[String], started_as: &[u8]) {
    set_comm(program.rsplit('/').next().unwrap_or(program).as_bytes());
    let mut command_line = program.as_bytes().to_vec();
    for arg in args {
        command_line.push(0);
        command_line.extend_from_slice(arg.as_bytes());
    }
    if let Err(err) = overwrite_argv(&command_line, started_as) {
        // Before the daemon's logging starts.
        eprintln!("ngx-wsgi: cannot show the process as {program}: {err}");
    }
}

/// The process's name (comm): at most 15 bytes and a NUL.
fn set_comm(name: &[u8]) {
    let comm: Vec<u8> = name.iter().copied().filter(|b| *b != 0).take(15).collect();
    if let Ok(comm) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
}

/// Writes `title` over the argv strings the kernel shows in /proc/self/cmdline, if they
/// begin with `only_over`.
fn overwrite_argv(title: &[u8], only_over: &[u8]) -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // arg_start and arg_end are fields 48 and 49 of proc(5); `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return Err(std::io::Error::other(
            "no arg_start/arg_end in /proc/self/stat",
        ));
    };
    if end <= start {
        return Ok(());
    }
    let len = end - start;
    let shown = title.len().min(len - 1);
    // SAFETY: [arg_start, arg_end) is this process's own argv area, mapped writable on its
    // initial stack, as the kernel reports it. Nothing holds a reference into it: main()
    // copied the arguments into owned Strings at start and std::env::args() is not called
    // again (inside Python, `python_host`, the interpreter copied them at its start). The
    // write stays inside the range.
    let argv = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    if !argv.starts_with(only_over) {
        return Ok(());
    }
    argv[..shown].copy_from_slice(&title[..shown]);
    argv[shown..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Config {
        ngx_wsgi_config::parse_args(format!("--socket /s --module m {args}").split_whitespace())
            .unwrap()
            .config
    }

    #[test]
    fn titles_as_uwsgi_names_its_processes() {
        assert_eq!(title(&config(""), None), None);
        let auto = config("--auto-procname");
        assert_eq!(title(&auto, None).as_deref(), Some("ngx-wsgi master"));
        assert_eq!(title(&auto, Some(2)).as_deref(), Some("ngx-wsgi worker 2"));
        let named = config("--procname mysite --procname-master mysite-master");
        assert_eq!(title(&named, None).as_deref(), Some("mysite-master"));
        assert_eq!(title(&named, Some(1)).as_deref(), Some("mysite"));
        let prefixed =
            config("--auto-procname --procname-prefix-spaced [blog] --procname-append !");
        assert_eq!(
            title(&prefixed, Some(1)).as_deref(),
            Some("[blog] ngx-wsgi worker 1!")
        );
        let bare_prefix = config("--procname-prefix x-");
        assert_eq!(
            title(&bare_prefix, None).as_deref(),
            Some("x-ngx-wsgi master")
        );
    }
}
