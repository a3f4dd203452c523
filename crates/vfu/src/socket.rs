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
    send_all_parts(socket, &[bytes], fds)
}

/// Sends the concatenation of `parts` as [`send_all`] does, gathering them in each `sendmsg`
/// (a message header and its data go out without being copied together first).
pub(crate) fn send_all_parts(
    socket: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    /// Parts gathered per `sendmsg`; more are sent by the next calls.
    const MAX_PARTS: usize = 8;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0;
    while sent < total {
        // The parts from byte `sent` on.
        let mut skip = sent;
        let mut iov = [IoSlice::new(&[]); MAX_PARTS];
        let mut count = 0;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            if count == MAX_PARTS {
                break;
            }
            iov[count] = IoSlice::new(&part[skip..]);
            skip = 0;
            count += 1;
        }
        let rest = &iov[..count];
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
            rustix::net::sendmsg(socket, rest, &mut control, SendFlags::NOSIGNAL)
        } else {
            rustix::net::sendmsg(
                socket,
                rest,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer stopped reading; {sent} of {total} bytes sent"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Send buffer asked for on every vfio-user connection (the kernel caps it at
/// `net.core.wmem_max`): room for a few 1 MiB migration chunks in flight, so the sending side
/// does not wait for the reader after every ~200 KiB, the default.
const SEND_BUFFER_BYTES: usize = 4 << 20;

/// Enlarges `socket`'s send buffer to [`SEND_BUFFER_BYTES`] (best effort: a smaller buffer only
/// costs speed).
pub(crate) fn enlarge_send_buffer(socket: BorrowedFd<'_>) {
    if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(socket, SEND_BUFFER_BYTES) {
        tracing::debug!("cannot enlarge the socket's send buffer: {e}");
    }
}

/// Capacity asked for each relay pipe: a whole 1 MiB migration chunk, so the reader filling
/// it rarely waits for the writer emptying it (best effort; the default 64 KiB only costs
/// more wake-ups).
const RELAY_PIPE_BYTES: usize = 1 << 20;

/// A pipe for relaying one message's data between two sockets without it entering this
/// process's memory: (read end, write end), close-on-exec.
pub(crate) fn relay_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(&write, RELAY_PIPE_BYTES) {
        tracing::debug!("cannot enlarge a relay pipe: {e}");
    }
    Ok((read, write))
}

/// Why [`splice_from_socket`] stopped early.
#[derive(Debug)]
pub(crate) enum SpliceError {
    /// The pipe's reader went away: the rest of the data is still in the socket.
    PipeClosed {
        /// Bytes that were moved before.
        moved: usize,
    },
    /// The socket's peer closed the connection.
    Closed,
    /// The socket or the pipe failed.
    Io(io::Error),
}

/// Moves exactly `len` bytes from `socket` into `pipe` with `splice` (the kernel passes the
/// socket's pages on; nothing is copied into this process), waiting as long as it takes for
/// bytes and for room: the peer's hang-up, or `shutdown` of the socket, ends the wait.
pub(crate) fn splice_from_socket(
    socket: BorrowedFd<'_>,
    pipe: BorrowedFd<'_>,
    len: usize,
) -> Result<(), SpliceError> {
    use rustix::pipe::SpliceFlags;
    let mut moved = 0;
    while moved < len {
        match rustix::pipe::splice(
            socket,
            None,
            pipe,
            None,
            len - moved,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => return Err(SpliceError::Closed),
            Ok(n) => moved += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::PIPE) => return Err(SpliceError::PipeClosed { moved }),
            Err(rustix::io::Errno::CONNRESET) => return Err(SpliceError::Closed),
            // Either side may be the one not ready: wait for room in the pipe first, then for
            // bytes in the socket (waiting on both at once would spin while one is ready).
            Err(rustix::io::Errno::AGAIN) => {
                let wait = Duration::from_secs(1);
                let room = wait_for(pipe, rustix::event::PollFlags::OUT, Duration::ZERO)
                    .map_err(SpliceError::Io)?;
                if room {
                    wait_for(socket, rustix::event::PollFlags::IN, wait)
                } else {
                    wait_for(pipe, rustix::event::PollFlags::OUT, wait)
                }
                .map_err(SpliceError::Io)?;
            }
            Err(e) => return Err(SpliceError::Io(e.into())),
        }
    }
    Ok(())
}

/// Moves exactly `len` bytes from `pipe` into `socket` with `splice` (the pipe's pages are
/// handed to the socket, not copied), waiting for the pipe's bytes until `deadline`. The
/// socket's own send timeout bounds each send. Fails with `UnexpectedEof` if the pipe's
/// writer closed it first and `TimedOut` at the deadline; both say how far it got.
pub(crate) fn splice_to_socket(
    pipe: BorrowedFd<'_>,
    socket: BorrowedFd<'_>,
    len: usize,
    deadline: std::time::Instant,
) -> io::Result<()> {
    use rustix::pipe::SpliceFlags;
    let mut moved = 0;
    while moved < len {
        match rustix::pipe::splice(
            pipe,
            None,
            socket,
            None,
            len - moved,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the relayed data ended after {moved} of {len} bytes"),
                ));
            }
            Ok(n) => moved += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if !wait_for(pipe, rustix::event::PollFlags::IN, left)? && left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the relayed data stopped coming; {moved} of {len} bytes sent"),
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits up to `timeout` for `fd` to be ready for `events` (or hung up); `false` on timeout
/// or an interrupted wait.
fn wait_for(
    fd: BorrowedFd<'_>,
    events: rustix::event::PollFlags,
    timeout: Duration,
) -> io::Result<bool> {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [rustix::event::PollFd::new(&fd, events)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits up to `timeout` for `socket` to become readable (or hung up); `false` on timeout or
/// an interrupted wait.
pub(crate) fn wait_readable(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait_for(socket, rustix::event::PollFlags::IN, timeout)
}

/// Waits up to `timeout` for `socket` to have room to write; `false` on timeout or an
/// interrupted wait.
pub(crate) fn wait_writable(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait_for(socket, rustix::event::PollFlags::OUT, timeout)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Gathered parts arrive as their concatenation, however many and however cut (empty ones,
    /// more than one `sendmsg` takes, more than the socket buffer holds at once).
    #[test]
    fn parts_arrive_concatenated() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let cuts = [
            0, 0, 3, 16, 17, 1000, 1000, 70_000, 300_000, 300_001, 450_000, 599_999,
        ];
        let mut parts = Vec::new();
        let mut prev = 0;
        for &cut in cuts.iter().chain([data.len()].iter()) {
            parts.push(&data[prev..cut]);
            prev = cut;
        }
        let (tx, mut rx) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).unwrap();
            got
        });
        send_all_parts(tx.as_fd(), &parts, &[]).unwrap();
        drop(tx);
        assert!(reader.join().unwrap() == data);
    }
}
