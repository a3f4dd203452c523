//! One client's stream socket: reading bytes and SCM_RIGHTS file descriptors into a
//! [`Framer`], and writing whole messages with their file descriptors.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::time::Duration;

use vfio_migration::Errno;

use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::Framer;
use crate::framing::encode_error_reply;
use crate::header::Header;
use crate::socket;
use crate::socket::Received;

/// Most file descriptors the server accepts in one message (advertised as `max_msg_fds`, as
/// libvfio-user does). Descriptors beyond it are closed by the kernel (MSG_CTRUNC).
pub(super) const MAX_MSG_FDS: usize = 8;

/// Bytes read per `recvmsg`. Larger messages arrive over several reads.
const READ_CHUNK: usize = 64 * 1024;

/// How long a reply may wait for the client to make room in the socket buffer before the
/// connection is given up (QEMU's client gives up on a reply after 5 s, too).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A message to send: its bytes (header included) and the descriptors that go with it.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The whole message.
    pub bytes: Vec<u8>,
    /// Descriptors attached to the message's first byte.
    pub fds: Vec<OwnedFd>,
}

impl Outgoing {
    /// A message without descriptors.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            fds: Vec::new(),
        }
    }

    /// The header-only error reply to `request`.
    pub fn error(request: &Header, errno: Errno) -> Self {
        Self::new(encode_error_reply(request, errno).to_vec())
    }
}

/// What one read from the socket produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadOutcome {
    /// Bytes (possibly none, after an interrupted call) were added to the framer.
    Data,
    /// The client closed its end.
    Closed,
}

/// A connected client socket and the framer its bytes go into.
pub(super) struct Transport {
    socket: OwnedFd,
    framer: Framer<OwnedFd>,
    buf: Vec<u8>,
}

impl Transport {
    /// Wraps an accepted socket; messages above `max_msg_size` bytes are framing errors.
    pub fn new(socket: OwnedFd, max_msg_size: u32) -> io::Result<Self> {
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Send,
            Some(SEND_TIMEOUT),
        )?;
        Ok(Self {
            socket,
            framer: Framer::new(max_msg_size),
            buf: vec![0; READ_CHUNK],
        })
    }

    /// The socket, for polling.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The next complete message already received, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame<OwnedFd>>, DecodeError> {
        self.framer.next_frame()
    }

    /// Reads whatever is available (call after the socket polled readable) with the file
    /// descriptors that came with it.
    pub fn read(&mut self) -> io::Result<ReadOutcome> {
        match socket::receive(self.socket.as_fd(), &mut self.buf, MAX_MSG_FDS)? {
            Received::Data {
                bytes,
                fds,
                fds_truncated,
            } => {
                if fds_truncated {
                    tracing::warn!(
                        max = MAX_MSG_FDS,
                        "client sent more file descriptors than the server accepts; the excess was closed"
                    );
                }
                self.framer.push(&self.buf[..bytes], fds);
                Ok(ReadOutcome::Data)
            }
            Received::Nothing => Ok(ReadOutcome::Data),
            Received::Closed => Ok(ReadOutcome::Closed),
        }
    }

    /// Sends a whole message; the descriptors travel with its first byte.
    pub fn send(&self, message: &Outgoing) -> io::Result<()> {
        let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
        socket::send_all(self.socket.as_fd(), &message.bytes, &fds)
    }
}

/// Waits up to `timeout` for `fd` to become readable (or hung up); `false` on timeout.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    socket::wait_readable(fd, timeout)
}
