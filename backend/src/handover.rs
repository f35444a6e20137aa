//! Kept-alive uwsgi connections handed from a retiring worker to the serving ones.
//!
//! A worker that goes away on purpose (reload, chain reload, `max-requests`, cheaper, ...)
//! holds idle connections nginx keeps for reuse. Closing one races with nginx sending a
//! request on it: nginx then logs `recv() failed (104)` and retries a GET, and answers a
//! POST with 502. So a retiring worker closes none of them: it passes each idle one, with
//! whatever it had read of the next request, over a SOCK_SEQPACKET socket pair every
//! worker shares (the master makes it once and keeps it across reloads), and any serving
//! worker takes it up as if it had accepted it. On a stop of the whole daemon the workers
//! close their connections instead, and take what was left in the queue
//! (`worker.rs::handover_loop`).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;

use crate::conn::Conn;
use ngx_wsgi_config::Protocol;

/// The largest message: a protocol tag, a peer name and the start of a request head.
const MAX_MESSAGE: usize = 128 * 1024;

/// Both ends of the socket pair: connections are sent on one and received on the other.
pub struct HandoverSockets {
    pub send: OwnedFd,
    pub receive: OwnedFd,
}

impl HandoverSockets {
    pub fn new() -> io::Result<HandoverSockets> {
        let (send, receive) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        Ok(HandoverSockets { send, receive })
    }

    /// Takes the pair a previous master image left open (see `listeners::export_for_exec`).
    ///
    /// # Safety
    /// Both descriptors must be the pair's, open in this process and owned by nothing else.
    pub unsafe fn from_raw(send: RawFd, receive: RawFd) -> HandoverSockets {
        // SAFETY: as the caller promises.
        unsafe {
            HandoverSockets {
                send: OwnedFd::from_raw_fd(send),
                receive: OwnedFd::from_raw_fd(receive),
            }
        }
    }
}

/// A worker's side: whether it is retiring (its idle connections are then handed over
/// rather than closed), and the socket to hand them over on.
pub struct Handover {
    send: OwnedFd,
    retiring: AtomicBool,
}

impl Handover {
    pub fn new(sockets: &HandoverSockets) -> io::Result<Arc<Handover>> {
        Ok(Arc::new(Handover {
            send: sockets.send.try_clone()?,
            retiring: AtomicBool::new(false),
        }))
    }

    /// This worker goes away while the others serve on: hand idle connections over.
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::SeqCst);
    }

    pub fn retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Passes an idle connection on, with the bytes of the next request already read.
    /// On failure (no room, or too much read) the caller closes it as before.
    pub fn give(
        &self,
        conn: &impl AsFd,
        protocol: Protocol,
        peer: &str,
        received: &[&[u8]],
    ) -> io::Result<()> {
        let peer = &peer.as_bytes()[..peer.len().min(u16::MAX as usize)];
        let received_len: usize = received.iter().map(|r| r.len()).sum();
        if 3 + peer.len() + received_len > MAX_MESSAGE {
            return Err(io::Error::other("too much of the next request was read"));
        }
        let tag = [match protocol {
            Protocol::Uwsgi => b'u',
            Protocol::Http => b'h',
        }];
        let len = (peer.len() as u16).to_be_bytes();
        let mut parts = vec![IoSlice::new(&tag), IoSlice::new(&len), IoSlice::new(peer)];
        parts.extend(received.iter().map(|r| IoSlice::new(r)));
        let fds = [conn.as_fd().as_raw_fd()];
        sendmsg::<()>(
            self.send.as_raw_fd(),
            &parts,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }
}

/// The receiving end, on one request thread's runtime: whichever thread is free takes the
/// next connection handed over.
pub struct Incoming {
    socket: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl Incoming {
    pub fn new(receive: OwnedFd) -> io::Result<Incoming> {
        // SAFETY: the AsyncFd owns the socket, so the descriptor stays open and the same
        // for as long as it is registered.
        let socket =
            unsafe { AsyncFd::register_with_interest(receive, tokio::io::Interest::READABLE) }
                .map_err(|err| err.into_parts().1)?;
        Ok(Incoming {
            socket,
            buf: vec![0u8; MAX_MESSAGE],
        })
    }

    /// The next connection handed over: its protocol, the socket, its peer's name and the
    /// bytes read of its next request.
    pub async fn next(&mut self) -> io::Result<Taken> {
        loop {
            let mut ready = self.socket.readable().await?;
            let Ok(received) = ready.try_io(|fd| take(fd.get_ref(), &mut self.buf)) else {
                continue; // another worker took it
            };
            match received {
                Ok(Some(taken)) => return Ok(taken),
                Ok(None) => continue,
                Err(err) => tracing::error!("taking a handed-over connection: {err}"),
            }
        }
    }

    /// The next connection handed over if one is waiting now (an error is logged, as by
    /// `next`, and ends the wait as none would).
    pub fn try_next(&mut self) -> Option<Taken> {
        loop {
            match take(self.socket.get_ref(), &mut self.buf) {
                Ok(Some(taken)) => return Some(taken),
                Ok(None) => continue, // not a connection: the next message
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                Err(err) => {
                    tracing::error!("taking a handed-over connection: {err}");
                    return None;
                }
            }
        }
    }
}

/// A connection taken over: its protocol, the socket, its peer's name and the bytes read
/// of its next request.
pub type Taken = (Protocol, Conn, String, Vec<u8>);

/// Receives one message: the connection, its peer's name and the bytes read of it.
fn take(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<Taken>> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel installed this descriptor in our table for us alone.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let len = message.bytes;
    let Some(fd) = fd else {
        return Ok(None);
    };
    let data = &buf[..len];
    let Some((tag, data)) = data.split_first() else {
        return Ok(None);
    };
    let protocol = match tag {
        b'h' => Protocol::Http,
        _ => Protocol::Uwsgi,
    };
    let Some((peer_len, rest)) = data.split_first_chunk::<2>() else {
        return Ok(None);
    };
    let peer_len = u16::from_be_bytes(*peer_len) as usize;
    if rest.len() < peer_len {
        return Ok(None);
    }
    let (peer, head) = rest.split_at(peer_len);
    let peer = String::from_utf8_lossy(peer).into_owned();
    let conn = match socket2::SockRef::from(&fd).domain()? {
        socket2::Domain::UNIX => Conn::Unix(std::os::unix::net::UnixStream::from(fd)),
        _ => Conn::Tcp(std::net::TcpStream::from(fd)),
    };
    Ok(Some((protocol, conn, peer, head.to_vec())))
}
