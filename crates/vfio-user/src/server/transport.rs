//! One client's stream socket: reading bytes and SCM_RIGHTS file descriptors into a
//! [`Framer`], and writing whole messages with their file descriptors.

use std::io;
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::RecvAncillaryBuffer;
use rustix::net::RecvAncillaryMessage;
use rustix::net::RecvFlags;
use rustix::net::ReturnFlags;
use rustix::net::SendAncillaryBuffer;
use rustix::net::SendAncillaryMessage;
use rustix::net::SendFlags;

use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::Framer;
use crate::framing::encode_error_reply;
use crate::header::Header;

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
    pub fn error(request: &Header, errno: u32) -> Self {
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
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_MSG_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let received = match rustix::net::recvmsg(
            &self.socket,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(received) => received,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {
                return Ok(ReadOutcome::Data);
            }
            Err(rustix::io::Errno::CONNRESET) => return Ok(ReadOutcome::Closed),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                fds.extend(received_fds);
            }
        }
        if received.flags.contains(ReturnFlags::CTRUNC) {
            tracing::warn!(
                max = MAX_MSG_FDS,
                "client sent more file descriptors than the server accepts; the excess was closed"
            );
        }
        if received.bytes == 0 {
            return Ok(ReadOutcome::Closed);
        }
        self.framer.push(&self.buf[..received.bytes], fds);
        Ok(ReadOutcome::Data)
    }

    /// Sends a whole message; the descriptors travel with its first byte.
    pub fn send(&self, message: &Outgoing) -> io::Result<()> {
        let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
        let mut sent = 0;
        while sent < message.bytes.len() {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_MSG_FDS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if sent == 0 && !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds))
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many file descriptors for one message",
                ));
            }
            match rustix::net::sendmsg(
                &self.socket,
                &[IoSlice::new(&message.bytes[sent..])],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Waits up to `timeout` for `fd` to become readable (or hung up); `false` on timeout.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
