//! Log lines: time, level, which process (master or worker N) and the message.
//!
//! With `--logto FILE` the file becomes the process's stdout and stderr, so Python's own
//! `logging` and `print`, `wsgi.errors` and the daemon's lines all land in one place.

use std::fmt;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ngx_wsgi_config::{Config, LogTarget};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub fn init(config: &Config) -> anyhow::Result<()> {
    reopen(config)?;
    // `logger = syslog...`: each line goes there whole; otherwise to stderr (the logto file).
    let sink = match &config.logger {
        Some(target @ (LogTarget::Syslog { .. } | LogTarget::RemoteSyslog { .. })) => Some(
            Arc::new(crate::reqlog::LineSink::open(target).context("logger")?),
        ),
        _ => None,
    };
    let writer = move || match &sink {
        Some(sink) => LineWriter::Sink(sink.clone(), Vec::new()),
        None => LineWriter::Stderr(std::io::stderr()),
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .event_format(LineFormat)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NGX_WSGI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    Ok(())
}

/// Where one log line is written: stderr, or a [`LineSink`](crate::reqlog::LineSink)
/// once the whole line is there.
enum LineWriter {
    Stderr(std::io::Stderr),
    Sink(Arc<crate::reqlog::LineSink>, Vec<u8>),
}

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Stderr(stderr) => stderr.write(buf),
            LineWriter::Sink(_, line) => {
                line.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if let LineWriter::Sink(sink, line) = self {
            sink.write_line(&String::from_utf8_lossy(line));
        }
    }
}

/// The log file: `logto`, or `logger = file:PATH`.
pub fn log_file(config: &Config) -> Option<&Path> {
    match &config.logger {
        Some(LogTarget::File(path)) => Some(path),
        _ => config.logto.as_deref(),
    }
}

/// `logto`: (re)opens the log file as this process's stdout and stderr; after logrotate
/// moved it, the next lines go to a new file of that name. With `logfile-chown`, the
/// file is given to `uid`/`gid` (while we are still root), so that the workers and a
/// reloaded master, running as that user, can reopen it.
pub fn reopen(config: &Config) -> anyhow::Result<()> {
    if let Some(path) = log_file(config) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --logto \"{}\"", path.display()))?;
        if config.logfile_chown && nix::unistd::geteuid().is_root() {
            use ngx_wsgi_config::owner::{group_id, user_id};
            let uid = config.uid.as_deref().map(user_id).transpose();
            let gid = config.gid.as_deref().map(group_id).transpose();
            let (uid, gid) = uid
                .and_then(|uid| Ok((uid, gid?)))
                .map_err(|err| anyhow::anyhow!("logfile-chown: {err}"))?;
            nix::unistd::fchown(
                &file,
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
            )
            .with_context(|| format!("logfile-chown \"{}\"", path.display()))?;
        }
        nix::unistd::dup2_stdout(&file).context("dup2 onto stdout")?;
        nix::unistd::dup2_stderr(&file).context("dup2 onto stderr")?;
    }
    Ok(())
}

struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let pid = std::process::id();
        match crate::process::ids() {
            [0, 0, 0] => write!(writer, " [{level}] master {pid}: ")?,
            [0, 0, mule] => write!(writer, " [{level}] mule {mule} ({pid}): ")?,
            [0, spooler, _] => write!(writer, " [{level}] spooler {spooler} ({pid}): ")?,
            [id, _, _] => write!(writer, " [{level}] worker {id} ({pid}): ")?,
        }
        if event.metadata().target() == "wsgi.errors" {
            write!(writer, "wsgi.errors: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
