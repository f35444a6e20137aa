//! Mules, as uWSGI's: processes that serve no request and run the app's background code,
//! either a script of their own (`mule = script.py`) or what the workers send them
//! (`mules = N`, `uwsgi.mule_msg()`, `@mulefunc`).
//!
//! Messages travel over unix datagram socket pairs the master makes before the first fork:
//! one per mule, one shared by every mule (a message to "any mule" is read by exactly one
//! of them: the first free), one per farm (`farm = NAME:1,2`). A datagram arrives whole or
//! not at all, up to `MESSAGE_MAX` bytes; a full queue is reported to the sender.
//!
//! Like uWSGI's, a mule is stopped at once at a stop or a reload, and the messages waiting
//! for it are lost then: work that must survive belongs in the spooler.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use ngx_wsgi_config::Config;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use pyo3::prelude::*;
use thiserror::Error;

/// The largest message (uWSGI's default `mule-msg-size`).
pub const MESSAGE_MAX: usize = 65536;

struct Queue {
    receive: OwnedFd,
    send: OwnedFd,
}

struct Farm {
    name: String,
    mules: Vec<u32>,
    queue: Queue,
}

struct Channels {
    /// Mule N's own queue at index N-1.
    mules: Vec<Queue>,
    any: Queue,
    farms: Vec<Farm>,
}

static CHANNELS: OnceLock<Channels> = OnceLock::new();

/// Where a message goes.
#[derive(Debug)]
pub enum Target {
    Any,
    Mule(u32),
    Farm(String),
}

#[derive(Debug, Error)]
pub enum MuleError {
    #[error("no mules are configured (set mules = N, or mule = script.py)")]
    NoMules,
    #[error("there is no mule {0}: mules are 1 to {1}")]
    NoSuchMule(u32, usize),
    #[error("there is no farm {0:?} (farm = NAME:1,2 sets one){1}")]
    NoSuchFarm(String, String),
    #[error("the message is {0} bytes, over the {MESSAGE_MAX}-byte limit")]
    TooLong(usize),
    #[error("{0} is for mules: this process is not one")]
    NotAMule(&'static str),
    #[error("{0}: {1}")]
    Io(&'static str, nix::errno::Errno),
}

/// The mules the config asks for, in id order: `mule` entries (a script, or none), then
/// `mules` bare ones.
pub fn scripts(config: &Config) -> Vec<Option<PathBuf>> {
    config
        .mule
        .iter()
        .map(|script| (!script.is_empty()).then(|| PathBuf::from(script)))
        .chain(std::iter::repeat_n(None, config.mules as usize))
        .collect()
}

/// Farms as `(name, mule ids)`; an id beyond the mules is an error naming it.
fn farms(config: &Config, mules: usize) -> anyhow::Result<Vec<(String, Vec<u32>)>> {
    config
        .farm
        .iter()
        .map(|spec| {
            let (name, ids) = spec
                .split_once(':')
                .with_context(|| format!("farm {spec:?}: expected NAME:1,2,..."))?;
            let ids = ids
                .split(',')
                .map(|id| match id.trim().parse::<u32>() {
                    Ok(n) if n >= 1 && n as usize <= mules => Ok(n),
                    _ => anyhow::bail!(
                        "farm {spec:?}: {id:?} is not a mule (there are {mules}: 1 to {mules})"
                    ),
                })
                .collect::<anyhow::Result<Vec<u32>>>()?;
            Ok((name.to_string(), ids))
        })
        .collect()
}

fn queue() -> anyhow::Result<Queue> {
    let (receive, send) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .context("socketpair for a mule queue")?;
    // Room for several full-size messages in each queue.
    for fd in [&receive, &send] {
        let _ =
            nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::SndBuf, &(4 * MESSAGE_MAX));
        let _ =
            nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::RcvBuf, &(4 * MESSAGE_MAX));
    }
    Ok(Queue { receive, send })
}

/// Makes the queues, in the master before the first fork (no-op without mules).
pub fn install(config: &Config) -> anyhow::Result<()> {
    let count = scripts(config).len();
    let farms = farms(config, count)?;
    if count == 0 {
        return Ok(());
    }
    let channels = Channels {
        mules: (0..count).map(|_| queue()).collect::<anyhow::Result<_>>()?,
        any: queue()?,
        farms: farms
            .into_iter()
            .map(|(name, mules)| {
                Ok(Farm {
                    name,
                    mules,
                    queue: queue()?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let _ = CHANNELS.set(channels);
    Ok(())
}

pub fn mule_id() -> u32 {
    crate::process::mule_id()
}

/// Sends `message`; false when the queue is full (the message is not sent).
pub fn send_message(target: &Target, message: &[u8]) -> Result<bool, MuleError> {
    let channels = CHANNELS.get().ok_or(MuleError::NoMules)?;
    if message.len() > MESSAGE_MAX {
        return Err(MuleError::TooLong(message.len()));
    }
    let queue = match target {
        Target::Any => &channels.any,
        Target::Mule(0) => &channels.any,
        Target::Mule(n) => channels
            .mules
            .get(*n as usize - 1)
            .ok_or(MuleError::NoSuchMule(*n, channels.mules.len()))?,
        Target::Farm(name) => {
            &channels
                .farms
                .iter()
                .find(|f| f.name == *name)
                .ok_or_else(|| {
                    let names: Vec<&str> = channels.farms.iter().map(|f| f.name.as_str()).collect();
                    let known = match names.is_empty() {
                        true => String::new(),
                        false => format!("; farms: {}", names.join(", ")),
                    };
                    MuleError::NoSuchFarm(name.clone(), known)
                })?
                .queue
        }
    };
    match send(queue.send.as_raw_fd(), message, MsgFlags::empty()) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN) => Ok(false),
        Err(err) => Err(MuleError::Io("sending to a mule", err)),
    }
}

/// In a mule: the next message for it (its own queue, the shared one, and its farms'
/// when `farms`), waiting up to `timeout` (None: until one comes).
pub fn receive(
    farms: bool,
    own: bool,
    timeout: Option<Duration>,
) -> Result<Option<Vec<u8>>, MuleError> {
    let what = if own {
        "mule_get_msg()"
    } else {
        "farm_get_msg()"
    };
    let id = mule_id();
    let channels = CHANNELS
        .get()
        .filter(|_| id > 0)
        .ok_or(MuleError::NotAMule(what))?;
    let mut queues: Vec<&Queue> = Vec::new();
    if own {
        queues.push(&channels.mules[id as usize - 1]);
        queues.push(&channels.any);
    }
    if farms {
        queues.extend(
            channels
                .farms
                .iter()
                .filter(|f| f.mules.contains(&id))
                .map(|f| &f.queue),
        );
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buffer = vec![0u8; MESSAGE_MAX];
    loop {
        for queue in &queues {
            match recv(queue.receive.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(n) => return Ok(Some(buffer[..n].to_vec())),
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(err) => return Err(MuleError::Io("receiving a mule message", err)),
            }
        }
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds: Vec<nix::poll::PollFd<'_>> = queues
            .iter()
            .map(|q| nix::poll::PollFd::new(q.receive.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(MuleError::Io("waiting for a mule message", err)),
        }
    }
}

/// In a new mule, before the app's hooks run (`@mule_brainloop` never returns): the
/// stop signals stop it at once, as uWSGI's mules. The master's handlers, inherited,
/// would only set a flag in this copy of its memory.
pub fn stop_at_once() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        crate::process::RETIRE,
    ] {
        // SAFETY: restoring the default disposition installs no handler of ours.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    let _ = crate::process::stop_signals().thread_unblock();
}

/// The mule process: runs its script, or hands each message to the app's
/// `uwsgi.mule_msg_hook` (what `@mulefunc` sets). Returns the exit code.
pub fn run(id: u32, script: Option<&Path>) -> i32 {
    if let Some(script) = script {
        return Python::attach(|py| {
            let ran = py.import("runpy").and_then(|runpy| {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("run_name", "__main__")?;
                runpy.call_method("run_path", (script,), Some(&kwargs))
            });
            match ran {
                Ok(_) => {
                    tracing::info!("mule {id}: {} ended", script.display());
                    0
                }
                Err(err) => {
                    tracing::error!(
                        "mule {id}: {} raised:\n{}",
                        script.display(),
                        crate::python::format_exception(py, &err)
                    );
                    1
                }
            }
        });
    }
    loop {
        let hook = Python::attach(|py| {
            py.import("uwsgi")
                .and_then(|uwsgi| uwsgi.getattr("mule_msg_hook"))
                .ok()
                .filter(|hook| !hook.is_none())
                .map(|hook| hook.unbind())
        });
        // Without a hook, messages stay queued for the app's own mule_get_msg() calls.
        let Some(hook) = hook else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        match receive(true, true, Some(Duration::from_millis(500))) {
            Ok(Some(message)) => Python::attach(|py| {
                let message = pyo3::types::PyBytes::new(py, &message);
                if let Err(err) = hook.call1(py, (message,)) {
                    tracing::error!(
                        "mule {id}: uwsgi.mule_msg_hook raised:\n{}",
                        crate::python::format_exception(py, &err)
                    );
                }
            }),
            Ok(None) => {}
            Err(err) => {
                tracing::error!("mule {id}: {err}");
                return 1;
            }
        }
    }
}
