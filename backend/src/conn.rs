//! A client connection in blocking mode, shared by the request body reader and the
//! response writer while a request runs.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => (&*s).write_all(data),
            Conn::Tcp(s) => (&*s).write_all(data),
        }
    }

    /// Writes several buffers (head, chunk size line, data, ...) with as few system calls
    /// as the socket allows: one, when they fit in its send buffer.
    pub fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let written = match self {
                Conn::Unix(s) => (&*s).write_vectored(slices),
                Conn::Tcp(s) => (&*s).write_vectored(slices),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => (&*s).read(buf),
            Conn::Tcp(s) => (&*s).read(buf),
        }
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
            match nix::sys::sendfile::sendfile(self.as_fd(), file, Some(&mut offset), want) {
                Ok(0) => return Ok(sent),
                Ok(n) => sent += n as u64,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }
}

/// Reads the request body from a shared connection.
pub struct ConnReader(pub Arc<Conn>);

impl Read for ConnReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// A connection registered with the runtime: HTTP connections, and uwsgi ones while
/// their request head arrives.
pub enum AsyncConn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncConn {
    pub fn from_blocking(conn: Conn) -> io::Result<AsyncConn> {
        Ok(match conn {
            Conn::Unix(s) => {
                s.set_nonblocking(true)?;
                AsyncConn::Unix(tokio::net::UnixStream::from_std(s)?)
            }
            Conn::Tcp(s) => {
                s.set_nonblocking(true)?;
                AsyncConn::Tcp(tokio::net::TcpStream::from_std(s)?)
            }
        })
    }

    pub fn into_blocking(self) -> io::Result<Conn> {
        let conn = match self {
            AsyncConn::Unix(s) => Conn::Unix(s.into_std()?),
            AsyncConn::Tcp(s) => Conn::Tcp(s.into_std()?),
        };
        match &conn {
            Conn::Unix(s) => s.set_nonblocking(false)?,
            Conn::Tcp(s) => s.set_nonblocking(false)?,
        }
        Ok(conn)
    }

    pub async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            AsyncConn::Unix(s) => s.read_buf(buf).await,
            AsyncConn::Tcp(s) => s.read_buf(buf).await,
        }
    }
}
