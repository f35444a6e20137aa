//! A client connection while a request runs, shared by the request body reader and the
//! response writer: a blocking socket (a new connection on the fast path), or a kept-alive
//! one that stays registered with the runtime and non-blocking, waited on with poll(2)
//! when it would block, so reusing it costs no mode switch per request.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    /// Kept alive: registered with the runtime, non-blocking.
    Registered(Arc<UwsgiConn>),
}

/// Waits until `fd` is ready for `events`; for sockets in non-blocking mode.
fn wait_ready(fd: BorrowedFd<'_>, events: nix::poll::PollFlags) -> io::Result<()> {
    let mut fds = [nix::poll::PollFd::new(fd, events)];
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// Runs `op` on `fd` until it does not report that it would block, waiting for `events`
/// in between (a socket in non-blocking mode); interrupted calls are made again.
fn when_ready<T>(
    fd: BorrowedFd<'_>,
    events: nix::poll::PollFlags,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => wait_ready(fd, events)?,
            other => return other,
        }
    }
}

impl Conn {
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write_parts(&[data])
    }

    /// Writes several buffers (head, chunk size line, data, ...) with as few system calls
    /// as the socket allows: one, when they fit in its send buffer.
    pub fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        // On the stack: a response's parts are few (head, server lines, chunk framing, data).
        let mut slices: smallvec::SmallVec<[io::IoSlice<'_>; 8]> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            // Straight to the socket, whatever holds it: tokio's cached readiness is not
            // updated while this thread runs a request, so its try_* calls would keep
            // refusing.
            let written = when_ready(self.as_fd(), nix::poll::PollFlags::POLLOUT, || {
                nix::sys::uio::writev(self.as_fd(), slices).map_err(io::Error::from)
            })?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }

    /// Reads into memory that may not be initialized yet, as `read` does.
    fn read_uninit(&self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        let fd = self.as_fd();
        when_ready(fd, nix::poll::PollFlags::POLLIN, || {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call, and
            // read(2) writes only the bytes it returns as read.
            let read = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match read {
                -1 => Err(io::Error::last_os_error()),
                read => Ok(read as usize),
            }
        })
    }

    /// Sends `file` from `offset` with sendfile(2), to its end or `limit` bytes at most;
    /// returns the bytes sent.
    pub fn sendfile(
        &self,
        file: BorrowedFd<'_>,
        mut offset: i64,
        limit: Option<u64>,
    ) -> io::Result<u64> {
        let mut sent = 0u64;
        loop {
            let want = limit.map_or(1 << 20, |limit| (limit - sent).min(1 << 20)) as usize;
            if want == 0 {
                return Ok(sent);
            }
            let n = when_ready(self.as_fd(), nix::poll::PollFlags::POLLOUT, || {
                nix::sys::sendfile::sendfile(self.as_fd(), file, Some(&mut offset), want)
                    .map_err(io::Error::from)
            })?;
            if n == 0 {
                return Ok(sent);
            }
            sent += n as u64;
        }
    }

    pub fn shutdown(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
            Conn::Registered(s) => s.as_fd(),
        }
    }
}

impl AsFd for AsyncConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            AsyncConn::Unix(s) => s.as_fd(),
            AsyncConn::Tcp(s) => s.as_fd(),
        }
    }
}

/// Reads the request body from a shared connection.
pub struct ConnReader(pub Arc<Conn>);

impl Read for ConnReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: read_uninit writes only bytes it returns as read, so `buf` stays
        // initialized.
        self.0
            .read_uninit(unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) })
    }
}

impl crate::wsgi::input::BodyRead for ConnReader {
    fn read_uninit(&mut self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        self.0.read_uninit(buf)
    }

    fn read_end(&mut self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        match &*self.0 {
            // On a kept-alive connection: with room past the body.
            Conn::Registered(conn) => conn.read_body_end(buf),
            conn => conn.read_uninit(buf),
        }
    }
}

/// A connection registered with the runtime: HTTP connections, and uwsgi ones while
/// their request head arrives.
pub enum AsyncConn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncConn {
    /// Registers an HTTP connection another worker handed over with the runtime.
    pub fn register(conn: Conn) -> io::Result<AsyncConn> {
        match &conn {
            Conn::Unix(s) => s.set_nonblocking(true)?,
            Conn::Tcp(s) => s.set_nonblocking(true)?,
            Conn::Registered(_) => {}
        }
        AsyncConn::from_nonblocking(conn)
    }

    /// Registers an HTTP connection already in non-blocking mode (accepted so) with the
    /// runtime.
    pub fn from_nonblocking(conn: Conn) -> io::Result<AsyncConn> {
        Ok(match conn {
            Conn::Unix(s) => AsyncConn::Unix(tokio::net::UnixStream::from_std(s)?),
            Conn::Tcp(s) => AsyncConn::Tcp(tokio::net::TcpStream::from_std(s)?),
            Conn::Registered(_) => {
                return Err(io::Error::other("a uwsgi connection is not an HTTP one"))
            }
        })
    }
}

/// A kept-alive uwsgi connection: non-blocking, registered with the runtime for reading
/// only. Its responses go out with writev straight to the socket (`Conn::write_parts`), so
/// a write wakes nobody (tokio's streams register for writing too, and each response then
/// cost an epoll_wait that woke for EPOLLOUT alone).
pub struct UwsgiConn(AsyncFd<OwnedFd>, std::sync::Mutex<Vec<u8>>);

impl UwsgiConn {
    /// Registers a connection with the runtime (once: a registered one stays as it is).
    pub fn register(conn: Conn) -> io::Result<Arc<UwsgiConn>> {
        let fd: OwnedFd = match conn {
            Conn::Unix(s) => {
                s.set_nonblocking(true)?;
                s.into()
            }
            Conn::Tcp(s) => {
                s.set_nonblocking(true)?;
                s.into()
            }
            Conn::Registered(s) => return Ok(s),
        };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(Arc::new(UwsgiConn(fd, std::sync::Mutex::default())))
    }

    /// Waits until the runtime says the connection is readable (or was, and no read
    /// has said otherwise since).
    pub async fn readable(&self) -> io::Result<()> {
        // The guard is dropped without clearing: the read that follows says.
        self.0.readable().await.map(drop)
    }

    /// Reads what has arrived, waiting for something to arrive.
    pub async fn read_available(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read_available(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Reads what has arrived without waiting: WouldBlock if nothing has.
    pub fn try_read_available(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // Room for a whole request head in one read: an empty Vec would grow from 64
        // bytes, one recvfrom() per doubling (4 per kept-alive request with nginx's vars).
        if buf.capacity() - buf.len() < READ_ROOM / 2 {
            buf.reserve(READ_ROOM);
        }
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let read = self.0.try_io(tokio::io::Interest::READABLE, |fd| {
            // SAFETY: recv writes at most `room` bytes into the spare capacity, which is
            // that long and ours for the call.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    room,
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                -1 => Err(io::Error::last_os_error()),
                n => Ok(n as usize),
            }
        });
        if let Ok(n) = read {
            // SAFETY: recv initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            if n > 0 && n < room {
                self.drained();
            }
        }
        read
    }

    /// Reads the last bytes of a request body into `body`, and in the same system call
    /// what follows them into a buffer of the connection's ([`UwsgiConn::take_read_ahead`]):
    /// a read that fills neither says the socket is drained ([`UwsgiConn::drained`]). A
    /// body read to its exact end would leave the next wait to find that out with a read
    /// returning EAGAIN, one wasted system call per request with a body.
    pub fn read_body_end(&self, body: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        let mut ahead = self.1.lock().unwrap_or_else(|e| e.into_inner());
        ahead.reserve(READ_ROOM);
        let filled = ahead.len();
        let spare = ahead.spare_capacity_mut();
        let iov = [
            libc::iovec {
                iov_base: body.as_mut_ptr().cast(),
                iov_len: body.len(),
            },
            libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len(),
            },
        ];
        let room = body.len() + spare.len();
        let fd = self.as_fd();
        let read = when_ready(fd, nix::poll::PollFlags::POLLIN, || {
            // SAFETY: both buffers are valid for writes of their lengths for the call, and
            // readv(2) writes only the bytes it returns as read, in order.
            let read = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) };
            match read {
                -1 => Err(io::Error::last_os_error()),
                read => Ok(read as usize),
            }
        })?;
        if read > body.len() {
            // SAFETY: readv initialized that many bytes of the spare capacity.
            unsafe { ahead.set_len(filled + read - body.len()) };
        }
        if read > 0 && read < room {
            self.drained();
        }
        Ok(read.min(body.len()))
    }

    /// What [`UwsgiConn::read_body_end`] read past a request's body, if anything: the
    /// start of the next request. The buffer stays with the connection when empty, for
    /// the next body's end.
    pub fn take_read_ahead(&self) -> Option<Vec<u8>> {
        let mut ahead = self.1.lock().unwrap_or_else(|e| e.into_inner());
        (!ahead.is_empty()).then(|| std::mem::take(&mut *ahead))
    }

    /// A read came back short: the socket had no more, so the runtime's "readable" is
    /// stale. Cleared here, the next wait sleeps in epoll_wait until data comes (edge
    /// triggered: data arriving from now on is a new event) instead of trying a read that
    /// returns EAGAIN first, one wasted system call per kept-alive request.
    fn drained(&self) {
        let stale = |_: &OwnedFd| Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        let _ = self.0.try_io(tokio::io::Interest::READABLE, stale);
    }

    /// Writes all of `data`, waiting for room with poll(2) as a request's writes do (the
    /// connection is not registered for writing); for short answers.
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut data = data;
        while !data.is_empty() {
            match nix::unistd::write(self.as_fd(), data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    wait_ready(self.as_fd(), nix::poll::PollFlags::POLLOUT)?
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }
}

impl AsFd for UwsgiConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// How much [`UwsgiConn::try_read_available`] makes room for.
const READ_ROOM: usize = 8 * 1024;

/// An HTTP connection, with bytes of it already read elsewhere (by the worker that handed
/// it over) to be read first.
pub struct PrefixedConn {
    prefix: Vec<u8>,
    read: usize,
    pub conn: AsyncConn,
}

impl PrefixedConn {
    pub fn new(conn: AsyncConn, prefix: Vec<u8>) -> PrefixedConn {
        PrefixedConn {
            prefix,
            read: 0,
            conn,
        }
    }

    /// The prefix bytes not read yet.
    pub fn unread_prefix(&self) -> &[u8] {
        &self.prefix[self.read..]
    }

    /// Ready once the connection looks readable (bytes, its end, or an error), without
    /// reading: a readiness left from an earlier read may be stale, which a read then says
    /// (it would block).
    pub fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.unread_prefix().is_empty() {
            return std::task::Poll::Ready(());
        }
        let ready = match &self.conn {
            AsyncConn::Tcp(s) => s.poll_read_ready(cx),
            AsyncConn::Unix(s) => s.poll_read_ready(cx),
        };
        ready.map(|_| ())
    }

    /// Puts bytes read from the connection back, to be read first (or handed over with it).
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut prefix = bytes.to_vec();
        prefix.extend_from_slice(self.unread_prefix());
        self.prefix = prefix;
        self.read = 0;
    }
}

/// What both kinds of connection are to tokio.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for T {}

impl PrefixedConn {
    fn stream(&mut self) -> std::pin::Pin<&mut dyn Stream> {
        match &mut self.conn {
            AsyncConn::Unix(s) => std::pin::Pin::new(s),
            AsyncConn::Tcp(s) => std::pin::Pin::new(s),
        }
    }
}

impl tokio::io::AsyncRead for PrefixedConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.read);
            buf.put_slice(&this.prefix[this.read..this.read + n]);
            this.read += n;
            return std::task::Poll::Ready(Ok(()));
        }
        this.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PrefixedConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
