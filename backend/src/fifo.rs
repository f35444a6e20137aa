//! `master-fifo`: uWSGI's one-letter commands, written to a FIFO the master reads between
//! two ticks of its supervision loop (`echo r > /run/app.fifo`).
//!
//! Several `master-fifo` options make several FIFOs; the master reads the selected one
//! (the first at start), and writing a digit `0`-`9` selects another, as in uWSGI.

use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// A command written to the FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `r`: graceful reload (as SIGHUP).
    Reload,
    /// `R`: reload; the old workers exit at once instead of finishing their requests.
    BrutalReload,
    /// `w`: replace every worker gracefully.
    ReloadWorkers,
    /// `W`: replace every worker at once.
    BrutalReloadWorkers,
    /// `c`: chain reload, one worker at a time.
    ChainReload,
    /// `q`: graceful stop (as SIGTERM).
    Stop,
    /// `Q`: stop at once (as SIGINT).
    BrutalStop,
    /// `s`: the workers' state in the log.
    Stats,
    /// `l`: reopen the log file (after logrotate moved it).
    ReopenLogs,
    /// `+`: one more worker (uWSGI's cheaper mode).
    MoreWorkers,
    /// `-`: one worker fewer (uWSGI's cheaper mode).
    FewerWorkers,
}

impl Command {
    fn from_byte(byte: u8) -> Option<Command> {
        Some(match byte {
            b'r' => Command::Reload,
            b'R' => Command::BrutalReload,
            b'w' => Command::ReloadWorkers,
            b'W' => Command::BrutalReloadWorkers,
            b'c' => Command::ChainReload,
            b'q' => Command::Stop,
            b'Q' => Command::BrutalStop,
            b's' => Command::Stats,
            b'l' => Command::ReopenLogs,
            b'+' => Command::MoreWorkers,
            b'-' => Command::FewerWorkers,
            _ => return None,
        })
    }
}

/// The master's FIFOs.
pub struct MasterFifo {
    fifos: Vec<(PathBuf, OwnedFd)>,
    selected: usize,
}

impl MasterFifo {
    /// Makes each FIFO (replacing a FIFO left by an earlier run) and opens it.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<MasterFifo> {
        let mut fifos = Vec::new();
        for path in paths {
            fifos.push((path.clone(), make(path)?));
            tracing::info!("master fifo \"{}\" ready", path.display());
        }
        Ok(MasterFifo { fifos, selected: 0 })
    }

    /// The commands written since the last look; unknown letters are logged and skipped.
    pub fn commands(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        let Some((path, fd)) = self.fifos.get(self.selected) else {
            return commands;
        };
        let path = path.clone();
        let mut buf = [0u8; 64];
        // Opened read-write, so there is always a writer: an empty FIFO says EAGAIN
        // rather than end of file.
        while let Ok(n @ 1..) = nix::unistd::read(fd, &mut buf) {
            for &byte in &buf[..n] {
                match byte {
                    b'0'..=b'9' => {
                        let slot = usize::from(byte - b'0');
                        if slot < self.fifos.len() {
                            self.selected = slot;
                            tracing::info!(
                                "master fifo: reading \"{}\" from now on",
                                self.fifos[slot].0.display()
                            );
                        } else {
                            tracing::warn!("master fifo: there is no fifo {slot}");
                        }
                    }
                    b'\n' | b'\r' | b' ' => {}
                    other => match Command::from_byte(other) {
                        Some(command) => commands.push(command),
                        None => tracing::warn!(
                            "master fifo \"{}\": unknown command {:?} (r R w W c q Q s l + - 0-9)",
                            path.display(),
                            char::from(other)
                        ),
                    },
                }
            }
        }
        commands
    }
}

fn make(path: &Path) -> anyhow::Result<OwnedFd> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => std::fs::remove_file(path)
            .with_context(|| format!("master-fifo: cannot replace \"{}\"", path.display()))?,
        Ok(_) => anyhow::bail!(
            "master-fifo: \"{}\" exists and is not a FIFO: remove it or name another path",
            path.display()
        ),
        Err(_) => {}
    }
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("master-fifo: cannot make \"{}\"", path.display()))?;
    nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("master-fifo: cannot open \"{}\"", path.display()))
}
