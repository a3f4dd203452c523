//! One client's stream socket, split in two: the [`Inbox`] the connection's reader thread reads
//! bytes and SCM_RIGHTS file descriptors from into a [`Framer`], and the [`Outbox`] every thread
//! that talks to the client (replies from the dispatcher, DMA_READ/DMA_WRITE from the device's
//! I/O threads) writes whole messages to, one at a time.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::TryLockError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::event::PollFd;
use rustix::event::PollFlags;
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

/// How long a message may wait for the client to make room in the socket buffer before the
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
    /// Bytes were added to the framer.
    Bytes,
    /// Nothing was there after all (or the call was interrupted).
    Nothing,
    /// The client closed its end.
    Closed,
}

/// The reading half: the socket and the framer its bytes go into.
pub(super) struct Inbox {
    socket: Arc<OwnedFd>,
    framer: Framer<OwnedFd>,
}

/// The writing half, shared by every thread that sends to the client.
#[derive(Debug)]
pub(super) struct Outbox {
    socket: Arc<OwnedFd>,
    /// Held while one message is written, so messages never interleave.
    sending: Mutex<()>,
    /// A send failed part-way: the stream has lost its framing and the connection must end.
    broken: AtomicBool,
}

/// Splits an accepted socket into its halves; messages above `max_msg_size` bytes are framing
/// errors.
pub(super) fn split(socket: OwnedFd, max_msg_size: u32) -> io::Result<(Inbox, Arc<Outbox>)> {
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Send,
        Some(SEND_TIMEOUT),
    )?;
    let socket = Arc::new(socket);
    let inbox = Inbox {
        socket: Arc::clone(&socket),
        framer: Framer::new(max_msg_size),
    };
    let outbox = Arc::new(Outbox {
        socket,
        sending: Mutex::new(()),
        broken: AtomicBool::new(false),
    });
    Ok((inbox, outbox))
}

impl Inbox {
    /// The socket, for polling.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The next complete message already received, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame<OwnedFd>>, DecodeError> {
        self.framer.next_frame()
    }

    /// Takes back a small message's payload once handled, for the next one.
    pub fn recycle(&mut self, payload: Vec<u8>) {
        self.framer.recycle(payload);
    }

    /// The pool large payloads are received into (the dispatcher gives them back there).
    pub fn pool(&self) -> Arc<crate::framing::PayloadPool> {
        Arc::clone(self.framer.pool())
    }

    /// Bytes of a message that has started to arrive but is not complete.
    pub fn partial_bytes(&self) -> usize {
        self.framer.buffered()
    }

    /// Reads whatever is available without waiting, with the file descriptors that came with
    /// it, straight into the framer's room (a large message's own payload buffer).
    pub fn read(&mut self) -> io::Result<ReadOutcome> {
        match socket::receive(self.socket.as_fd(), self.framer.room(), MAX_MSG_FDS)? {
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
                self.framer.commit(bytes, fds);
                Ok(ReadOutcome::Bytes)
            }
            Received::Nothing => Ok(ReadOutcome::Nothing),
            Received::Closed => Ok(ReadOutcome::Closed),
        }
    }
}

impl Outbox {
    /// Sends a whole message; the descriptors travel with its first byte. A failure breaks the
    /// connection (a partial message cannot be taken back): later sends fail at once and the
    /// reader ends the connection.
    pub fn send(&self, message: &Outgoing) -> io::Result<()> {
        let _one_at_a_time = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        self.send_held(message)
    }

    /// The send side, held, if no other thread is sending and the socket has room now (poll
    /// says writable: at least half its send buffer is free, far more than a short message
    /// needs), so that a short message sent through the [`Held`] cannot wait for the client.
    /// The reader uses it to answer a request itself: it must never wait for the client, who
    /// may be waiting for it to read.
    pub fn hold_if_ready(&self) -> Option<Held<'_>> {
        let guard = match self.sending.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let mut fds = [PollFd::new(&*self.socket, PollFlags::OUT)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ready = matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(1))
            && fds[0].revents().contains(PollFlags::OUT);
        ready.then_some(Held {
            outbox: self,
            _guard: guard,
        })
    }

    /// [`Self::send`] with the send side already held.
    fn send_held(&self, message: &Outgoing) -> io::Result<()> {
        if self.is_broken() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier send to the client failed",
            ));
        }
        let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
        let sent = socket::send_all(self.socket.as_fd(), &message.bytes, &fds);
        if sent.is_err() {
            self.broken.store(true, Ordering::Release);
            // Wakes the reader, which then ends the connection.
            let _ = rustix::net::shutdown(self.socket.as_fd(), rustix::net::Shutdown::Both);
        }
        sent
    }

    /// Whether a send failed and the connection must end.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

/// The send side of an [`Outbox`] held by one thread while the socket has room (see
/// [`Outbox::hold_if_ready`]).
pub(super) struct Held<'a> {
    outbox: &'a Outbox,
    _guard: MutexGuard<'a, ()>,
}

impl Held<'_> {
    /// Sends a short message, as [`Outbox::send`] does.
    pub fn send(&self, message: &Outgoing) -> io::Result<()> {
        self.outbox.send_held(message)
    }
}
