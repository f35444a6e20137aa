//! Process titles (`auto-procname`, `procname`, `procname-master`, `procname-prefix`,
//! `procname-prefix-spaced`, `procname-append`): what `ps`, `top` and `pgrep` show.
//!
//! Linux shows two names: the command line (`ps aux`, from the process's own argv memory)
//! and the 15-byte `comm` (`top`, `ps -o comm`, from prctl). Both are set. The argv area
//! is overwritten in place, so a title longer than the command ngx-wsgi was started with
//! is cut to that length; main() copied its arguments before, and nothing reads argv since.
//! Inside Python (`python_host`) the area is the bootstrap's command line, longer than
//! the command shown over it: the command line the kernel shows is ended where the command
//! ends (`PR_SET_MM_MAP`), not padded with NULs to the area's length, which read as empty
//! arguments after it (psutil's `cmdline()`, monitoring agents). A title is cut to that
//! command's length then, as in the executable. A title is one string, written as uWSGI
//! writes it: a NUL after it, and spaces to the area's end, so that the kernel shows the
//! title alone (its reading of a command line whose last byte is not a NUL, as
//! `setproctitle` leaves it: up to the first NUL).

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
    let line = [title.as_bytes(), b"\0"].concat();
    if let Err(err) = overwrite_argv(&line, b"", b' ') {
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
    // Each argument ended by a NUL, as the kernel lays out a command line.
    let mut command_line = Vec::new();
    for arg in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        command_line.extend_from_slice(arg.as_bytes());
        command_line.push(0);
    }
    match overwrite_argv(&command_line, started_as, 0) {
        // Refused (a thread started already, or the kernel), the command is shown all the
        // same, the area's rest NULs, as before this call: nothing to say at every start.
        Ok(Some((areas, threads, ends_at))) if ends_at < areas.arg_end => {
            let _ = end_command_line(areas, threads, ends_at);
        }
        Ok(_) => {}
        // Before the daemon's logging starts.
        Err(err) => eprintln!("ngx-wsgi: cannot show the process as {program}: {err}"),
    }
}

/// The process's name (comm): at most 15 bytes and a NUL.
fn set_comm(name: &[u8]) {
    let comm: Vec<u8> = name.iter().copied().filter(|b| *b != 0).take(15).collect();
    if let Ok(comm) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
}

/// This process's memory areas as the kernel keeps them: `struct prctl_mm_map` of
/// `<linux/prctl.h>`, for `PR_SET_MM_MAP`.
#[repr(C)]
#[derive(Default)]
struct MemoryAreas {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

// The kernel refuses any other size; `auxv` is a pointer there, 8 bytes here.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MemoryAreas>() == 104);

/// Reads [`MemoryAreas`] from /proc/self/stat (proc(5) fields 26 to 28 and 45 to 51), but
/// the program break, which the kernel does not show there, and the auxiliary vector and
/// executable, which `PR_SET_MM_MAP` leaves as they are when unset (0, and -1); and the
/// process's number of threads (field 20).
fn memory_areas() -> std::io::Result<(MemoryAreas, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // `fields[0]` is field 3.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| std::io::Error::other(format!("no field {n} in /proc/self/stat")))
    };
    let areas = MemoryAreas {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        exe_fd: u32::MAX,
        ..MemoryAreas::default()
    };
    Ok((areas, field(20)?))
}

/// Ends the command line the kernel shows at `arg_end`, after the NUL that ends the last
/// argument there: `PR_SET_MM_MAP` with every area but `arg_end` as it is. It needs no
/// privilege; where the kernel refuses it (built without checkpoint/restore), what is
/// shown stays as long as the area, the rest NULs. Only in a process of one thread: the
/// call sets the program break too, read just before, which another thread's `malloc`
/// could move in between.
fn end_command_line(mut areas: MemoryAreas, threads: u64, arg_end: u64) -> std::io::Result<()> {
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "{threads} threads: the program break may move"
        )));
    }
    // SAFETY: `brk(0)` asks for a break below any heap, which the kernel refuses, moving
    // nothing: it returns the current break, the kernel's own (not libc's copy).
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) };
    areas.brk = brk as u64;
    areas.arg_end = arg_end;
    // SAFETY: the kernel reads `size_of::<MemoryAreas>()` bytes from `areas`, a
    // `struct prctl_mm_map` on this stack frame, and sets this process's areas from it:
    // all as they are (read above), but the end of the command line, which ends where the
    // command now ends, inside the area. Nothing in this process reads those fields.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &areas as *const MemoryAreas as libc::c_ulong,
            std::mem::size_of::<MemoryAreas>() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `line` (NUL-terminated arguments) over the argv strings the kernel shows in
/// /proc/self/cmdline, if they begin with `only_over`, cut to their length, the rest
/// `padding` (a NUL, or a space for a title). Returns the areas and thread count read, and
/// where what was written ends, if it was.
fn overwrite_argv(
    line: &[u8],
    only_over: &[u8],
    padding: u8,
) -> std::io::Result<Option<(MemoryAreas, u64, u64)>> {
    let (areas, threads) = memory_areas()?;
    let (start, end) = (areas.arg_start as usize, areas.arg_end as usize);
    if end <= start || line.last() != Some(&0) {
        return Ok(None);
    }
    let len = end - start;
    let written = line.len().min(len);
    // SAFETY: [arg_start, arg_end) is this process's own argv area, mapped writable on its
    // initial stack, as the kernel reports it. Nothing holds a reference into it: main()
    // copied the arguments into owned Strings at start and std::env::args() is not called
    // again (inside Python, `python_host`, the interpreter copied them at its start). The
    // write stays inside the range.
    let argv = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    if !argv.starts_with(only_over) {
        return Ok(None);
    }
    argv[..written].copy_from_slice(&line[..written]);
    // Cut: the last byte stays the NUL that ends it.
    argv[written - 1] = 0;
    argv[written..].fill(padding);
    Ok(Some((areas, threads, (start + written) as u64)))
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
