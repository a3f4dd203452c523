//! [`Channel`]: one vfio-user stream socket with file-descriptor passing and message framing.
//!
//! Sending writes a whole message, with any descriptors attached as SCM_RIGHTS to its first
//! bytes. Receiving reads until the [`Framer`] has a complete message or a deadline passes; the
//! descriptors of each read are handed to the framer, which attaches them to the right message.

use std::io;
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use std::time::Instant;

use rustix::event::PollFd;
use rustix::event::PollFlags;
use rustix::event::Timespec;
use rustix::net::RecvAncillaryBuffer;
use rustix::net::RecvAncillaryMessage;
use rustix::net::RecvFlags;
use rustix::net::SendAncillaryBuffer;
use rustix::net::SendAncillaryMessage;
use rustix::net::SendFlags;

use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::Framer;

/// Most descriptors one received read may carry (QEMU's `VFIO_USER_MAX_MAX_FDS`); this is the
/// `max_msg_fds` the client advertises.
pub const MAX_RECV_FDS: usize = 16;

/// Bytes read from the socket per `recvmsg`.
const RECV_CHUNK: usize = 64 * 1024;

/// Why no message could be received.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The peer closed the connection.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// A header's `msg_size` is impossible; the message boundary is lost.
    Framing(DecodeError),
}

/// A connected vfio-user stream socket with its framer.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    framer: Framer<OwnedFd>,
    buf: Vec<u8>,
}

impl Channel {
    /// Wraps a connected stream; messages larger than `max_msg_size` are framing errors.
    pub(crate) fn new(stream: UnixStream, max_msg_size: u32) -> Self {
        Self {
            stream,
            framer: Framer::new(max_msg_size),
            buf: vec![0; RECV_CHUNK],
        }
    }

    /// Bounds how long one send may block on a peer that does not read (`SO_SNDTIMEO`).
    pub(crate) fn set_send_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = (!timeout.is_zero()).then_some(timeout);
        rustix::net::sockopt::set_socket_timeout(
            &self.stream,
            rustix::net::sockopt::Timeout::Send,
            timeout,
        )?;
        Ok(())
    }

    /// Sends one whole message with `fds` attached to its first bytes.
    pub(crate) fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            let rest = &bytes[sent..];
            let result = if sent == 0 && !fds.is_empty() {
                send_with_fds(&self.stream, rest, fds)
            } else {
                rustix::net::send(&self.stream, rest, SendFlags::NOSIGNAL)
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the peer stopped reading; {sent} of {} bytes sent",
                            bytes.len()
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next complete message, waiting for bytes until `deadline`; `Ok(None)` when the
    /// deadline passed first.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Result<Option<Frame<OwnedFd>>, RecvError> {
        loop {
            if let Some(frame) = self.framer.next_frame().map_err(RecvError::Framing)? {
                return Ok(Some(frame));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait_readable(left)? {
                return Ok(None);
            }
            self.read_once()?;
        }
    }

    /// Waits up to `timeout` for the socket to become readable (or hung up).
    fn wait_readable(&self, timeout: Duration) -> Result<bool, RecvError> {
        // Deadlines are at most a year away (see `LONGEST_WAIT`), so this cannot fail; a
        // failure would only mean "wait as long as possible".
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::from(u32::MAX),
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(RecvError::Io(e.into())),
        }
    }

    /// One `recvmsg`: its bytes and descriptors go to the framer.
    fn read_once(&mut self) -> Result<(), RecvError> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let received = match rustix::net::recvmsg(
            &self.stream,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(msg) => msg.bytes,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(RecvError::Io(e.into())),
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received == 0 {
            return Err(RecvError::Eof);
        }
        self.framer.push(&self.buf[..received], fds);
        Ok(())
    }
}

/// One `sendmsg` of (the start of) `bytes` with `fds` as SCM_RIGHTS.
fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<usize> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // The buffer is sized for exactly these descriptors.
        return Err(rustix::io::Errno::NOBUFS);
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
}
