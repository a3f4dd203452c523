//! [`Channel`]: the receiving side of one vfio-user stream socket, with file-descriptor passing
//! and message framing (the client's reader thread owns one; sending is `link.rs`'s).
//!
//! Receiving reads until the [`Framer`] has a complete message or a deadline passes; the
//! descriptors of each read are handed to the framer, which attaches them to the right message.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use std::time::Instant;

use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::Framer;
use crate::socket;
use crate::socket::Received;

/// Most descriptors one received read may carry (QEMU's `VFIO_USER_MAX_MAX_FDS`); this is the
/// `max_msg_fds` the client advertises.
pub const MAX_RECV_FDS: usize = 16;

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
}

impl Channel {
    /// Wraps a connected stream; messages larger than `max_msg_size` are framing errors.
    pub(crate) fn new(stream: UnixStream, max_msg_size: u32) -> Self {
        Self {
            stream,
            framer: Framer::new(max_msg_size),
        }
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
        socket::wait_readable(self.stream.as_fd(), timeout).map_err(RecvError::Io)
    }

    /// The pool large payloads are received into (their consumers give them back there).
    pub(crate) fn pool(&self) -> &std::sync::Arc<crate::framing::PayloadPool> {
        self.framer.pool()
    }

    /// One `recvmsg`, straight into the framer's room: its bytes and descriptors.
    fn read_once(&mut self) -> Result<(), RecvError> {
        match socket::receive(self.stream.as_fd(), self.framer.room(), MAX_RECV_FDS)
            .map_err(RecvError::Io)?
        {
            Received::Data { bytes, fds, .. } => {
                self.framer.commit(bytes, fds);
                Ok(())
            }
            Received::Nothing => Ok(()),
            Received::Closed => Err(RecvError::Eof),
        }
    }
}
