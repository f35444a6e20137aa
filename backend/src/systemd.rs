//! systemd integration without libsystemd: readiness, reload and stop notifications and
//! the watchdog (`Type=notify`, `WatchdogSec=`), and listening sockets passed by socket
//! activation (`LISTEN_FDS`).
//!
//! Both are plain protocols: a datagram of `KEY=value` lines to the unix socket named by
//! `NOTIFY_SOCKET`, and descriptors 3, 4, ... named by `LISTEN_FDS`/`LISTEN_PID`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
const LISTEN_FDS_ENV: &str = "LISTEN_FDS";
const LISTEN_PID_ENV: &str = "LISTEN_PID";
const LISTEN_FDNAMES_ENV: &str = "LISTEN_FDNAMES";
/// The first descriptor socket activation passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// How often `STATUS=` is refreshed while serving.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The master's channel to systemd, when it runs under a `Type=notify` unit.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WatchdogSec=`: how often to send `WATCHDOG=1` (half the timeout), and when we last did.
    watchdog: Option<(Duration, Instant)>,
    last_status: Option<(String, Instant)>,
}

impl Notifier {
    /// The notifier systemd asked for in our environment, if any. The variables stay set:
    /// a reload re-executes the master as the same process, which notifies again.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os(NOTIFY_SOCKET_ENV)?;
        let name = name.as_encoded_bytes();
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)
            }
            None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)),
        };
        let (addr, socket) = match addr.and_then(|addr| Ok((addr, UnixDatagram::unbound()?))) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::error!(
                    "NOTIFY_SOCKET \"{}\": {err}; systemd will not hear that we are ready",
                    String::from_utf8_lossy(name)
                );
                return None;
            }
        };
        let ours = std::process::id().to_string();
        let watchdog = std::env::var(WATCHDOG_USEC_ENV)
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .filter(|_| std::env::var(WATCHDOG_PID_ENV).map_or(true, |pid| pid == ours))
            .map(|usec| (Duration::from_micros(usec / 2), Instant::now()));
        Some(Notifier {
            socket,
            addr,
            watchdog,
            last_status: None,
        })
    }

    fn send(&self, message: &str) {
        if let Err(err) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            tracing::warn!("telling systemd \"{}\": {err}", message.replace('\n', " "));
        }
    }

    /// Every worker of the first generation accepts requests.
    pub fn ready(&mut self, status: String) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
        self.last_status = Some((status, Instant::now()));
    }

    /// Sent before a reload re-executes the master; the new image sends `READY=1`.
    pub fn reloading(&self) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let now = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading: new workers take over the sockets"
        ));
    }

    pub fn stopping(&self, why: &str) {
        self.send(&format!("STOPPING=1\nSTATUS=stopping: {why}"));
    }

    /// Called on every tick of the master's loop: `WATCHDOG=1` when due, and `STATUS=` when
    /// it changed and was not refreshed for a while. `status` is only made when sent.
    pub fn tick(&mut self, status: impl FnOnce() -> String) {
        if let Some((every, last)) = &mut self.watchdog {
            if last.elapsed() >= *every {
                *last = Instant::now();
                self.send("WATCHDOG=1");
            }
        }
        let due = match &self.last_status {
            Some((_, at)) => at.elapsed() >= STATUS_EVERY,
            // Before READY=1, the status is what ready() says.
            None => false,
        };
        if due {
            let status = status();
            if self.last_status.as_ref().is_some_and(|(s, _)| *s != status) {
                self.send(&format!("STATUS={status}"));
            }
            self.last_status = Some((status, Instant::now()));
        }
    }
}

use std::os::unix::ffi::OsStrExt;

/// One socket passed by systemd: its descriptor and what it listens on.
pub struct PassedSocket {
    pub fd: OwnedFd,
    /// `LISTEN_FDNAMES`' entry for it (`FileDescriptorName=`), for messages.
    pub name: String,
}

/// Takes the sockets systemd passed, if they are meant for this process, and clears the
/// variables, so neither the app nor a re-executed master sees them again.
pub fn take_listen_fds() -> Vec<PassedSocket> {
    let count = std::env::var(LISTEN_FDS_ENV).ok();
    let pid = std::env::var(LISTEN_PID_ENV).ok();
    let names = std::env::var(LISTEN_FDNAMES_ENV).unwrap_or_default();
    // SAFETY: called once, first thing in the master, before any thread starts.
    unsafe {
        std::env::remove_var(LISTEN_FDS_ENV);
        std::env::remove_var(LISTEN_PID_ENV);
        std::env::remove_var(LISTEN_FDNAMES_ENV);
    }
    let (Some(count), Some(pid)) = (count, pid) else {
        return Vec::new();
    };
    if pid != std::process::id().to_string() {
        return Vec::new();
    }
    let Ok(count) = count.parse::<RawFd>() else {
        tracing::error!("LISTEN_FDS=\"{count}\" is not a number: passed sockets ignored");
        return Vec::new();
    };
    let mut names = names.split(':');
    (LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count.max(0)))
        .map(|fd| PassedSocket {
            // SAFETY: systemd passed these descriptors to this process (LISTEN_PID is
            // ours) and nothing else in it has claimed them.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            name: names
                .next()
                .filter(|n| !n.is_empty() && *n != "unknown")
                .map_or_else(|| format!("fd {fd}"), |n| format!("fd {fd} ({n})")),
        })
        .collect()
}
