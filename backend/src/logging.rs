//! Log lines: time, level, which process (master or worker N) and the message.
//!
//! With `--logto FILE` the file becomes the process's stdout and stderr, so Python's own
//! `logging` and `print`, `wsgi.errors` and the daemon's lines all land in one place.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use ngx_wsgi_config::Config;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// 0 in the master, N in worker N.
static WORKER_ID: AtomicU32 = AtomicU32::new(0);

pub fn set_worker_id(id: u32) {
    WORKER_ID.store(id, Ordering::Relaxed);
}

/// N in worker N, 0 in the master.
pub fn worker_id() -> u32 {
    WORKER_ID.load(Ordering::Relaxed)
}

pub fn init(config: &Config) -> anyhow::Result<()> {
    reopen(config)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(LineFormat)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NGX_WSGI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    Ok(())
}

/// `logto`: (re)opens the log file as this process's stdout and stderr; after logrotate
/// moved it, the next lines go to a new file of that name.
pub fn reopen(config: &Config) -> anyhow::Result<()> {
    if let Some(path) = &config.logto {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --logto \"{}\"", path.display()))?;
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
        match WORKER_ID.load(Ordering::Relaxed) {
            0 => write!(writer, " [{level}] master {}: ", std::process::id())?,
            id => write!(writer, " [{level}] worker {id} ({}): ", std::process::id())?,
        }
        if event.metadata().target() == "wsgi.errors" {
            write!(writer, "wsgi.errors: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
