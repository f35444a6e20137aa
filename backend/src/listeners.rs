//! Binding the listening sockets, handing them to a re-executed master on reload, and
//! taking connections from them in the workers (`Accepting`, for both protocols).

use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{bail, Context};
use ngx_wsgi_config::{Config, ListenAddr, Listener};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::conn::Conn;
use crate::systemd::PassedSocket;

/// The environment variable a reloading master passes its listening sockets in.
pub const INHERITED_FDS_ENV: &str = "NGX_WSGI_LISTEN_FDS";

pub enum ListeningSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl AsFd for ListeningSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ListeningSocket::Unix(l) => l.as_fd(),
            ListeningSocket::Tcp(l) => l.as_fd(),
        }
    }
}

impl ListeningSocket {
    /// Sets O_NONBLOCK; it belongs to the open file, shared by every worker and thread,
    /// so accept() never blocks in one of them after another won the race.
    pub fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            ListeningSocket::Unix(l) => l.set_nonblocking(true),
            ListeningSocket::Tcp(l) => l.set_nonblocking(true),
        }
    }

    /// Accepts one connection waiting now, or WouldBlock (the listener is non-blocking):
    /// the socket, in non-blocking mode if `nonblocking` says so (in the same system call:
    /// the uwsgi fast path reads a blocking one, the HTTP listener registers it with its
    /// runtime at once), and a name for its peer in log lines: the client's address over
    /// TCP, `unix_peer` over a unix socket, which has no peer address.
    fn accept(
        &self,
        unix_peer: &str,
        so_keepalive: bool,
        nonblocking: bool,
    ) -> std::io::Result<(Conn, String)> {
        let flags = match nonblocking {
            true => libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            false => libc::SOCK_CLOEXEC,
        };
        let (socket, addr) = socket2::SockRef::from(self).accept4(flags)?;
        match self {
            ListeningSocket::Unix(_) => Ok((
                Conn::Unix(OwnedFd::from(socket).into()),
                unix_peer.to_string(),
            )),
            ListeningSocket::Tcp(_) => {
                socket.set_tcp_nodelay(true)?;
                if so_keepalive {
                    socket.set_keepalive(true)?;
                }
                let peer = addr.as_socket().map(|a| a.to_string()).unwrap_or_default();
                Ok((Conn::Tcp(OwnedFd::from(socket).into()), peer))
            }
        }
    }
}

impl AsRawFd for ListeningSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A worker thread's side of a listening socket, for both protocols: watched by the
/// thread's runtime, connections taken when they come or, as the daemon stops, while
/// any is queued.
pub struct Accepting {
    listener: AsyncFd<ListeningSocket>,
    /// What a unix socket's peers are called in log lines: made once, not per connection.
    unix_peer: String,
    so_keepalive: bool,
    /// Connections come non-blocking (HTTP), or blocking (uwsgi's fast path).
    nonblocking: bool,
}

impl Accepting {
    /// Puts the socket in non-blocking mode (its open file is every worker's: accept()
    /// never blocks in one after another won the race) and registers it with the runtime.
    pub fn new(
        socket: ListeningSocket,
        name: &str,
        protocol: ngx_wsgi_config::Protocol,
        so_keepalive: bool,
    ) -> std::io::Result<Accepting> {
        socket.set_nonblocking()?;
        // SAFETY: the AsyncFd owns the listener, so the descriptor stays open and the same
        // for as long as it is registered.
        let listener =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .map_err(|err| err.into_parts().1)?;
        Ok(Accepting {
            listener,
            unix_peer: format!("unix:{name}"),
            so_keepalive,
            nonblocking: protocol == ngx_wsgi_config::Protocol::Http,
        })
    }

    /// The next connection, once one comes (cancel-safe: none is taken unless returned).
    pub async fn next(&self) -> std::io::Result<(Conn, String)> {
        loop {
            let mut ready = self.listener.readable().await?;
            let shut = ready.ready().is_read_closed();
            match ready.try_io(|l| self.accept(l.get_ref())) {
                Ok(accepted) => return accepted,
                // A unix listener the master shut as the daemon stops, its queue empty:
                // nothing can come any more, and the runtime keeps it readable (a
                // hang-up, once seen, stays), so trying again would spin until this
                // worker hears SIGTERM, which the caller waits for beside this.
                Err(_would_block) if shut => std::future::pending().await,
                // Another thread took it: wait for the next.
                Err(_would_block) => {}
            }
        }
    }

    /// Takes a connection waiting in the queue now, or WouldBlock: no wait for the
    /// runtime to see the listener readable.
    pub fn take_queued(&self) -> std::io::Result<(Conn, String)> {
        self.accept(self.listener.get_ref())
    }

    fn accept(&self, listener: &ListeningSocket) -> std::io::Result<(Conn, String)> {
        listener.accept(&self.unix_peer, self.so_keepalive, self.nonblocking)
    }

    /// Whether the master closed this listener as the daemon stops ([`taking_no_more`]).
    pub fn taking_no_more(&self) -> bool {
        taking_no_more(self.listener.as_fd())
    }
}

/// A listening socket and the config entry it was made from.
pub struct BoundListener {
    pub spec: Listener,
    pub socket: ListeningSocket,
}

/// Connections waiting in a TCP listener's accept queue (what `cheaper-algo = backlog`
/// reads); 0 for a unix socket, whose queue Linux shows only through sock_diag.
pub fn queued(listener: &BoundListener) -> u32 {
    let ListeningSocket::Tcp(socket) = &listener.socket else {
        return 0;
    };
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes, and the descriptor is a TCP
    // socket this struct owns; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getsockopt succeeded and the struct was zeroed first, so every field is set.
    let info = unsafe { info.assume_init() };
    // For a listening socket, Linux reports the accept queue's length as tcpi_unacked.
    info.tcpi_unacked
}

/// Whether a connection is waiting on the listener (`idle` wakes the workers then).
pub fn readable(listener: &BoundListener) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let fd = match &listener.socket {
        ListeningSocket::Unix(s) => s.as_fd(),
        ListeningSocket::Tcp(s) => s.as_fd(),
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// The sockets of a master: its listeners, and the `stats` socket if the config has one.
pub struct Sockets {
    pub listeners: Vec<BoundListener>,
    pub stats: Option<ListeningSocket>,
}

/// Binds every socket of the config, or takes it from those systemd passed (socket
/// activation), or takes them all over from a reloading master.
pub fn open_all(config: &Config, mut passed: Vec<PassedSocket>) -> anyhow::Result<Sockets> {
    if let Ok(fds) = std::env::var(INHERITED_FDS_ENV) {
        // SAFETY: only this process reads the variable, once, before any thread starts.
        unsafe { std::env::remove_var(INHERITED_FDS_ENV) };
        return inherit(config, &fds);
    }
    let mut listeners = Vec::new();
    for spec in config.listeners() {
        match take_passed(&mut passed, &spec.addr)? {
            Some(socket) => {
                tracing::info!("\"{}\": the socket systemd passed", spec.addr);
                remember_passed(&spec.addr);
                listeners.push(BoundListener { spec, socket });
            }
            None => listeners.push(bind(&spec, config)?),
        }
    }
    let stats = match &config.stats {
        Some(addr) => match take_passed(&mut passed, addr)? {
            Some(socket) => {
                remember_passed(addr);
                socket.set_nonblocking()?;
                Some(socket)
            }
            None => bind_stats(config)?,
        },
        None => None,
    };
    if let Some(extra) = passed.first() {
        let addr = describe(&extra.fd);
        bail!(
            "systemd passed {} listening on {addr}, which no socket, http-socket or stats entry \
             of the config names: add it to the config (socket = {addr}) or remove it from the \
             .socket unit",
            extra.name
        );
    }
    Ok(Sockets { listeners, stats })
}

/// The socket systemd passed for `addr`, if there is one: same path, abstract name, or
/// port and address (a wildcard address matches a wildcard one, IPv4 or IPv6).
fn take_passed(
    passed: &mut Vec<PassedSocket>,
    addr: &ListenAddr,
) -> anyhow::Result<Option<ListeningSocket>> {
    let Some(index) = passed.iter().position(|p| {
        socket2::SockRef::from(&p.fd)
            .local_addr()
            .is_ok_and(|local| same_address(&local, addr))
    }) else {
        return Ok(None);
    };
    let PassedSocket { fd, name } = passed.swap_remove(index);
    let sock = socket2::SockRef::from(&fd);
    if sock.r#type()? != Type::STREAM || !sock.is_listener()? {
        bail!("systemd passed {name} for \"{addr}\", but it is not a listening stream socket: use ListenStream= in the .socket unit");
    }
    set_cloexec(fd.as_raw_fd(), true)?;
    Ok(Some(match addr {
        ListenAddr::Tcp { .. } => ListeningSocket::Tcp(TcpListener::from(fd)),
        _ => ListeningSocket::Unix(UnixListener::from(fd)),
    }))
}

fn same_address(local: &SockAddr, addr: &ListenAddr) -> bool {
    match addr {
        ListenAddr::Unix(path) => local.as_pathname() == Some(path.as_path()),
        ListenAddr::Abstract(name) => local.as_abstract_namespace() == Some(name.as_bytes()),
        ListenAddr::Tcp { host, port } => {
            let Some(local) = local.as_socket() else {
                return false;
            };
            let wanted = (host.as_str(), *port).to_socket_addrs();
            local.port() == *port
                && wanted.is_ok_and(|mut wanted| {
                    wanted.any(|w| {
                        w.ip() == local.ip()
                            || (w.ip().is_unspecified() && local.ip().is_unspecified())
                    })
                })
        }
    }
}

/// A passed socket's address, as a config would write it.
fn describe(fd: &OwnedFd) -> String {
    match socket2::SockRef::from(fd).local_addr() {
        Ok(local) => match (
            local.as_socket(),
            local.as_pathname(),
            local.as_abstract_namespace(),
        ) {
            (Some(inet), _, _) => inet.to_string(),
            (_, Some(path), _) => path.display().to_string(),
            (_, _, Some(name)) => format!("@{}", String::from_utf8_lossy(name)),
            _ => "an unnamed socket".into(),
        },
        Err(err) => format!("an address we cannot read ({err})"),
    }
}

/// How the stats socket is named across a reload.
fn stats_key(addr: &ListenAddr) -> String {
    format!("Stats {addr}")
}

/// The `stats` socket, if the config has one, bound like the listeners.
fn bind_stats(config: &Config) -> anyhow::Result<Option<ListeningSocket>> {
    let Some(addr) = &config.stats else {
        return Ok(None);
    };
    let spec = Listener {
        addr: addr.clone(),
        protocol: ngx_wsgi_config::Protocol::Http,
    };
    let bound = bind(&spec, config).context("stats")?;
    bound.socket.set_nonblocking()?;
    Ok(Some(bound.socket))
}

fn bind(spec: &Listener, config: &Config) -> anyhow::Result<BoundListener> {
    let backlog = i32::try_from(config.listen).unwrap_or(i32::MAX);
    let socket = match &spec.addr {
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket
                .bind(&SockAddr::unix(path)?)
                .with_context(|| format!("cannot bind unix socket \"{}\"", path.display()))?;
            // Mode and owner before listen(): nginx connecting in between would be refused
            // (its workers run as another user) and answer 502.
            if let Some(mode) = config.chmod_socket {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot chmod \"{}\"", path.display()))?;
            }
            if let Some(owner) = &config.chown_socket {
                chown_socket(path, owner)?;
            }
            socket.listen(backlog)?;
            ListeningSocket::Unix(UnixListener::from(OwnedFd::from(socket)))
        }
        ListenAddr::Abstract(name) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            // A leading NUL byte names an address in Linux's abstract namespace.
            let addr = SockAddr::unix(format!("\0{name}"))?;
            socket
                .bind(&addr)
                .with_context(|| format!("cannot bind abstract socket \"@{name}\""))?;
            socket.listen(backlog)?;
            ListeningSocket::Unix(UnixListener::from(OwnedFd::from(socket)))
        }
        ListenAddr::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve \"{}\"", spec.addr))?
                .next()
                .with_context(|| format!("\"{}\" resolves to no address", spec.addr))?;
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if config.reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket
                .bind(&addr.into())
                .with_context(|| format!("cannot bind \"{}\"", spec.addr))?;
            socket.listen(backlog)?;
            ListeningSocket::Tcp(TcpListener::from(OwnedFd::from(socket)))
        }
    };
    Ok(BoundListener {
        spec: spec.clone(),
        socket,
    })
}

/// A socket file left by a process that died is removed; a live one is an error.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "cannot bind unix socket \"{}\": a file that is not a socket is in the way",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "cannot bind unix socket \"{}\": another server is listening on it",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove stale socket \"{}\"", path.display()))
}

fn chown_socket(path: &Path, owner: &str) -> anyhow::Result<()> {
    use ngx_wsgi_config::owner::{group_id, split_owner, user_id};
    use nix::unistd::{chown, Gid, Uid};
    let (user, group) = split_owner(owner);
    let uid = user
        .map(user_id)
        .transpose()
        .map_err(|err| anyhow::anyhow!("chown-socket: {err}"))?;
    let gid = group
        .map(group_id)
        .transpose()
        .map_err(|err| anyhow::anyhow!("chown-socket: {err}"))?;
    chown(path, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
        .with_context(|| format!("cannot chown \"{}\" to \"{owner}\"", path.display()))
}

/// Takes over the listeners a reloading master left open. The config may have changed
/// since: a listener it still has keeps its socket (connections waiting in its backlog are
/// served), a new one is bound, one it no longer has is closed. A new listener that
/// cannot be bound is logged and left out rather than stopping a running service.
fn inherit(config: &Config, exported: &str) -> anyhow::Result<Sockets> {
    let mut inherited: Vec<(RawFd, String)> = exported
        .lines()
        .filter_map(|line| {
            let (fd, key) = line.split_once(' ')?;
            Some((fd.parse().ok()?, key.to_string()))
        })
        .collect();
    let mut bound = Vec::new();
    for spec in &config.listeners() {
        let key = listener_key(spec);
        let Some(index) = inherited.iter().position(|(_, k)| *k == key) else {
            match bind(spec, config) {
                Ok(listener) => {
                    tracing::info!("reload: new listener \"{}\"", spec.addr);
                    bound.push(listener);
                }
                Err(err) => tracing::error!("reload: {err:#}; serving without it"),
            }
            continue;
        };
        let (fd, _) = inherited.swap_remove(index);
        // SAFETY: the previous master image listed this fd as one of its listening sockets
        // and exec'd us with it open; nothing else in this process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(fd, true)?;
        let socket = match spec.addr {
            ListenAddr::Tcp { .. } => ListeningSocket::Tcp(TcpListener::from(owned)),
            _ => ListeningSocket::Unix(UnixListener::from(owned)),
        };
        bound.push(BoundListener {
            spec: spec.clone(),
            socket,
        });
    }
    // The stats socket is handed over the same way: uwsgitop and exporters never find it
    // gone during a reload.
    let stats = match &config.stats {
        None => None,
        Some(addr) => match inherited.iter().position(|(_, k)| *k == stats_key(addr)) {
            Some(index) => {
                let (fd, _) = inherited.swap_remove(index);
                // SAFETY: as above: the previous image's stats socket, ours alone now.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(fd, true)?;
                let socket = match addr {
                    ListenAddr::Tcp { .. } => ListeningSocket::Tcp(TcpListener::from(owned)),
                    _ => ListeningSocket::Unix(UnixListener::from(owned)),
                };
                socket.set_nonblocking()?;
                Some(socket)
            }
            // A new stats address: bound now; one that cannot be does not stop a running
            // service.
            None => bind_stats(config).unwrap_or_else(|err| {
                tracing::error!("reload: {err:#}; serving without stats");
                None
            }),
        },
    };
    for (fd, key) in inherited {
        tracing::info!("reload: no longer listening on {key}");
        // SAFETY: as above: an inherited listening socket no one else owns; closed here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(Sockets {
        listeners: bound,
        stats,
    })
}

/// How a listener is named across a reload: its protocol and address.
fn listener_key(spec: &Listener) -> String {
    format!("{:?} {}", spec.protocol, spec.addr)
}

/// Leaves the sockets open across exec and names them for the next master image.
pub fn export_for_exec(
    listeners: &[BoundListener],
    stats: Option<(&ListeningSocket, &ListenAddr)>,
) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    for listener in listeners {
        let fd = listener.socket.as_raw_fd();
        set_cloexec(fd, false)?;
        lines.push(format!("{fd} {}", listener_key(&listener.spec)));
    }
    if let Some((socket, addr)) = stats {
        let fd = socket.as_raw_fd();
        set_cloexec(fd, false)?;
        lines.push(format!("{fd} {}", stats_key(addr)));
    }
    Ok(lines.join("\n"))
}

fn set_cloexec(fd: RawFd, on: bool) -> anyhow::Result<()> {
    // SAFETY: `fd` is one of our listening sockets, open for the life of the process.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags)).context("fcntl(F_SETFD) on a listening socket")?;
    Ok(())
}

/// Names the sockets systemd passed, one address a line (a unix socket's is its path):
/// they stay as they are when the daemon stops, since the .socket unit still listens on
/// them (`vacuum` leaves their files, a stop leaves their queues). In the environment, so
/// a reloaded master image knows them too; it named unix paths alone once, and keeps its
/// name so that an image reloaded from such a build still reads it.
const SYSTEMD_PATHS_ENV: &str = "NGX_WSGI_SYSTEMD_SOCKET_PATHS";

fn remember_passed(addr: &ListenAddr) {
    let mut addrs = std::env::var_os(SYSTEMD_PATHS_ENV).unwrap_or_default();
    if !addrs.is_empty() {
        addrs.push("\n");
    }
    match addr {
        ListenAddr::Unix(path) => addrs.push(path),
        other => addrs.push(other.to_string()),
    }
    // SAFETY: the master is single-threaded while it opens its sockets.
    unsafe { std::env::set_var(SYSTEMD_PATHS_ENV, addrs) };
}

fn passed_by_systemd(addr: &ListenAddr) -> bool {
    let passed = std::env::var_os(SYSTEMD_PATHS_ENV).unwrap_or_default();
    let passed = passed.as_encoded_bytes();
    let this = match addr {
        ListenAddr::Unix(path) => path.as_os_str().as_encoded_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    };
    passed.split(|b| *b == b'\n').any(|line| line == this)
}

/// At the daemon's stop, before the workers are told: the listener takes no new
/// connection from now on, while those already in its queue stay there for the stopping
/// workers to take and answer (`worker.rs`). Closing it with connections queued would
/// reset them, requests sent and all.
///
/// - TCP: a socket filter that drops a SYN (a packet without ACK), so that no handshake
///   begins; the ACK that completes one begun already passes, and its connection joins
///   the queue. The client's kernel sends the SYN again (after 1 s, then 2 s more, ...):
///   a SYN sent after the daemon has exited is refused, or taken by the next daemon if
///   one listens by then. nginx in front waits so (`uwsgi_connect_timeout`), where it
///   used to see its request reset at the exit.
/// - Unix: `shutdown(SHUT_RD)`, after which Linux refuses a `connect()` at once.
///
/// A socket systemd passed is left as it is: its queue waits for the next daemon.
/// [`taking_no_more`] tells the workers which listeners this closed.
pub fn stop_taking_connections(listener: &BoundListener) -> std::io::Result<()> {
    if passed_by_systemd(&listener.spec.addr) {
        return Ok(());
    }
    match &listener.socket {
        ListeningSocket::Unix(socket) => {
            socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read)
        }
        ListeningSocket::Tcp(socket) => {
            // Classic BPF on the TCP header: keep a packet with ACK set, drop the others.
            use socket2::SockFilter;
            let op = |code: u32, jt: u8, k: u32| SockFilter::new(code as u16, jt, 0, k);
            const TCP_FLAGS: u32 = 13;
            const ACK: u32 = 0x10;
            socket2::SockRef::from(socket).attach_filter(&[
                op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, TCP_FLAGS),
                op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 1, ACK),
                op(libc::BPF_RET | libc::BPF_K, 0, 0),
                op(libc::BPF_RET | libc::BPF_K, 0, u32::MAX),
            ])
        }
    }
}

/// Whether the master closed this listener to new connections as the daemon stops
/// ([`stop_taking_connections`]): a stopping worker then answers what is in its queue,
/// which nothing else would. A listener still open (a worker stopped alone, a socket
/// systemd passed) keeps its queue for the workers that serve on, or the next daemon.
pub fn taking_no_more(listener: BorrowedFd<'_>) -> bool {
    match socket2::SockRef::from(&listener).domain() {
        Ok(Domain::UNIX) => {
            // Linux reports a listener shut for reading as POLLRDHUP (which nix's poll
            // does not know, and would drop).
            let mut fd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one pollfd, ours for the call; a zero timeout.
            let ready = unsafe { libc::poll(&mut fd, 1, 0) };
            ready == 1 && fd.revents & libc::POLLRDHUP != 0
        }
        Ok(_) => {
            // With no room for it, getsockopt says how long the attached filter is.
            let mut len: libc::socklen_t = 0;
            // SAFETY: a null buffer of length 0: the kernel writes only `len`.
            let rc = unsafe {
                libc::getsockopt(
                    listener.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_GET_FILTER,
                    std::ptr::null_mut(),
                    &mut len,
                )
            };
            rc == 0 && len > 0
        }
        Err(_) => false,
    }
}

/// The unix socket files `--vacuum` removes at exit: those we bound, not systemd's.
pub fn vacuum_paths(config: &Config) -> Vec<&Path> {
    config
        .socket
        .iter()
        .chain(&config.http_socket)
        .chain(&config.stats)
        .filter(|addr| !passed_by_systemd(addr))
        .filter_map(|addr| match addr {
            ListenAddr::Unix(path) => Some(path.as_path()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ngx_wsgi_config::Protocol;
    use std::time::Duration;

    /// A unix listener the master shut as the daemon stops stays readable with nothing to
    /// take: a thread waiting on it for a connection must still see what else it waits
    /// for (the stop, here a timer).
    #[test]
    fn waiting_on_a_shut_unix_listener_lets_the_thread_see_the_stop() {
        let path = std::env::temp_dir().join(format!("ngx-wsgi-shut-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // As stop_taking_connections shuts it.
        socket2::SockRef::from(&listener)
            .shutdown(std::net::Shutdown::Read)
            .unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = runtime.block_on(async {
                let accepting =
                    Accepting::new(ListeningSocket::Unix(listener), "shut", Protocol::Uwsgi, false)
                        .unwrap();
                if !accepting.taking_no_more() {
                    return "the shut listener is not seen as taking no more".to_string();
                }
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(Duration::from_millis(50)) => String::new(),
                    accepted = accepting.next() => {
                        format!("accepted from a shut listener: {:?}", accepted.map(|(_, peer)| peer))
                    }
                }
            });
            done_tx.send(outcome).unwrap();
        });
        let seen = done_rx.recv_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_file(&path);
        let outcome = seen
            .expect("the timer beside Accepting::next never ran: it spins on the shut listener");
        assert_eq!(outcome, "");
    }
}
