//! Stream-socket I/O shared by the server and the client: whole messages out, with SCM_RIGHTS
//! descriptors attached to their first byte; whatever has arrived in, with the descriptors that
//! came with it; and waiting for the socket to become readable.

use std::io;
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
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

/// What one non-blocking read produced.
#[derive(Debug)]
pub(crate) enum Received {
    /// `bytes` bytes were read into the buffer, with these descriptors; `fds_truncated` says the
    /// peer sent more descriptors than allowed and the kernel closed the excess.
    Data {
        /// Bytes read.
        bytes: usize,
        /// Descriptors received with them.
        fds: Vec<OwnedFd>,
        /// Descriptors were dropped (MSG_CTRUNC).
        fds_truncated: bool,
    },
    /// Nothing yet (interrupted, or no data after all).
    Nothing,
    /// The peer closed the connection.
    Closed,
}

/// Reads what is available into `buf`, accepting up to `max_fds` descriptors.
pub(crate) fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Received> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let received = match rustix::net::recvmsg(
        socket,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    ) {
        Ok(received) => received,
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Ok(Received::Nothing),
        Err(rustix::io::Errno::CONNRESET) => return Ok(Received::Closed),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Ok(Received::Closed);
    }
    Ok(Received::Data {
        bytes: received.bytes,
        fds,
        fds_truncated: received.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// Sends all of `bytes`, with `fds` attached to the first `sendmsg`. A peer that stops reading
/// until the socket's send timeout passes gives a `TimedOut` error saying how far it got.
pub(crate) fn send_all(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        let rest = [IoSlice::new(&bytes[sent..])];
        let result = if sent == 0 && !fds.is_empty() {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                // The buffer is sized for exactly these descriptors.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many file descriptors for one message",
                ));
            }
            rustix::net::sendmsg(socket, &rest, &mut control, SendFlags::NOSIGNAL)
        } else {
            rustix::net::send(socket, &bytes[sent..], SendFlags::NOSIGNAL)
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

/// Waits up to `timeout` for `socket` to become readable (or hung up); `false` on timeout or
/// an interrupted wait.
pub(crate) fn wait_readable(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [rustix::event::PollFd::new(
        &socket,
        rustix::event::PollFlags::IN,
    )];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits up to `timeout` for `socket` to have room to write; `false` on timeout or an
/// interrupted wait.
pub(crate) fn wait_writable(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [rustix::event::PollFd::new(
        &socket,
        rustix::event::PollFlags::OUT,
    )];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
