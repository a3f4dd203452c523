//! [`Channel`]: the receiving side of one vfio-user stream socket, with file-descriptor passing
//! and message framing (the client's reader thread owns one; sending is `link.rs`'s).
//!
//! Receiving reads until the [`Framer`] has a complete message or a deadline passes; the
//! descriptors of each read are handed to the framer, which attaches them to the right message.
//!
//! The reply to a `MIG_DATA_READ` the caller marked for relaying ([`Relayed`]) is not read into
//! memory: once its header and head are in, [`Channel::recv`] returns it as
//! [`Incoming::Relay`] and the caller moves its data from the socket into a pipe
//! ([`Channel::splice_data`]), from where it goes to another socket, the kernel passing pages
//! on instead of copying them out and back in.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use zerocopy::FromBytes;

use crate::command::Command;
use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::Framer;
use crate::framing::LARGE_PAYLOAD;
use crate::header::HEADER_SIZE;
use crate::header::Header;
use crate::migration::DATA_PREFIX_BYTES;
use crate::migration::MigDataHead;
use crate::socket;
use crate::socket::Received;
use crate::socket::SpliceError;

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

/// What [`Channel::recv`] received.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A whole message.
    Frame(Frame<OwnedFd>),
    /// The start of a relayed `MIG_DATA_READ` reply; its data follows in the socket.
    Relay(RelayStart),
}

/// A relayed `MIG_DATA_READ` reply whose header and head have been read and checked: `len`
/// data bytes follow, of which `early` were already read with the head.
#[derive(Debug)]
pub(crate) struct RelayStart {
    /// The reply's header.
    pub header: Header,
    /// Data bytes of the reply.
    pub len: usize,
    /// The first data bytes, read together with the head (none when reads stop at the head).
    pub early: Vec<u8>,
}

/// The msg_ids of `MIG_DATA_READ` requests whose replies are relayed (shared by the sender,
/// which adds an id before its request goes out, and the reader, which takes it off when the
/// reply comes).
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    ids: Mutex<Vec<u16>>,
}

impl Relayed {
    /// The reply to `msg_id` is to be relayed.
    pub(crate) fn add(&self, msg_id: u16) {
        self.lock().push(msg_id);
    }

    /// The reply to `msg_id` is no longer awaited (it came, or its request failed).
    pub(crate) fn remove(&self, msg_id: u16) -> bool {
        let mut ids = self.lock();
        let found = ids.iter().position(|&id| id == msg_id);
        found.map(|i| ids.swap_remove(i)).is_some()
    }

    fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connected vfio-user stream socket with its framer.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    framer: Framer<OwnedFd>,
    relayed: std::sync::Arc<Relayed>,
}

impl Channel {
    /// Wraps a connected stream; messages larger than `max_msg_size` are framing errors.
    pub(crate) fn new(stream: UnixStream, max_msg_size: u32) -> Self {
        Self {
            stream,
            framer: Framer::new(max_msg_size),
            relayed: std::sync::Arc::default(),
        }
    }

    /// The registry of relayed replies, shared with the sender.
    pub(crate) fn relayed(&self) -> &std::sync::Arc<Relayed> {
        &self.relayed
    }

    /// The next complete message or relayed reply, waiting for bytes until `deadline`;
    /// `Ok(None)` when the deadline passed first.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Result<Option<Incoming>, RecvError> {
        loop {
            if let Some(frame) = self.framer.next_frame().map_err(RecvError::Framing)? {
                if frame.header.is_reply().unwrap_or(false) {
                    self.relayed.remove(frame.header.msg_id);
                }
                return Ok(Some(Incoming::Frame(frame)));
            }
            if let Some(start) = self.relay_start() {
                return Ok(Some(Incoming::Relay(start)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait_readable(left)? {
                return Ok(None);
            }
            self.read_once()?;
        }
    }

    /// While relayed replies are awaited, reads stop at each message's head, so that a
    /// relayed reply's data is left in the socket: the most to read now, and whether a large
    /// message may go to a payload buffer of its own (not before its head is known).
    fn read_limit(&self) -> (usize, bool) {
        if !self.relayed.any() {
            return (usize::MAX, true);
        }
        let Some(front) = self.framer.front() else {
            // A large message's body is being received: to its end.
            return (usize::MAX, true);
        };
        // Unknown size: the header is not in yet; read up to a head.
        let size = Header::read_from_prefix(front)
            .map_or(DATA_PREFIX_BYTES, |(header, _)| header.msg_size as usize);
        if front.len() < DATA_PREFIX_BYTES && size >= DATA_PREFIX_BYTES {
            return (DATA_PREFIX_BYTES - front.len(), false);
        }
        // To this message's end, not into the next one's data.
        (size.saturating_sub(front.len()), true)
    }

    /// The front message, if it is a relayed reply whose header and head are in and agree
    /// with each other: it is taken off the framer, its data left for [`Self::splice_data`].
    /// Anything else (an error reply, a small or malformed one) is left to the framer, which
    /// hands it out as a message.
    fn relay_start(&mut self) -> Option<RelayStart> {
        let front = self.framer.front()?;
        let (header, rest) = Header::read_from_prefix(front).ok()?;
        let (head, early) = MigDataHead::read_from_prefix(rest).ok()?;
        let size = header.msg_size as usize;
        let len = size.checked_sub(DATA_PREFIX_BYTES)?;
        let relayable = header.command == Command::MIG_DATA_READ
            && header.is_reply().unwrap_or(false)
            && !header.flags.error()
            && head.size as usize == len
            && head.argsz as usize == size - HEADER_SIZE
            && len >= LARGE_PAYLOAD
            && size <= self.framer.max_msg_size() as usize
            && early.len() < len;
        if !relayable || !self.relayed.remove(header.msg_id) {
            return None;
        }
        let early = early.to_vec();
        self.framer.skip_front(size);
        Some(RelayStart { header, len, early })
    }

    /// Moves the data of the relayed reply `start` into `pipe`: its early bytes, then the rest
    /// from the socket. If the pipe's reader goes away first, the rest is read and dropped, so
    /// the next message is found where it starts.
    pub(crate) fn splice_data(
        &mut self,
        start: &RelayStart,
        pipe: OwnedFd,
    ) -> Result<(), RecvError> {
        let rest = start.len - start.early.len();
        let pipe_gone = match rustix::io::write(&pipe, &start.early) {
            Ok(n) if n == start.early.len() => false,
            // Room for 64 KiB is always there in a fresh pipe; anything else is a gone reader.
            _ => true,
        };
        if pipe_gone {
            return self.discard(rest);
        }
        match socket::splice_from_socket(self.stream.as_fd(), pipe.as_fd(), rest) {
            Ok(()) => Ok(()),
            Err(SpliceError::PipeClosed { moved }) => self.discard(rest - moved),
            Err(SpliceError::Closed) => Err(RecvError::Eof),
            Err(SpliceError::Io(e)) => Err(RecvError::Io(e)),
        }
    }

    /// Reads and drops `len` bytes of the stream.
    fn discard(&mut self, mut len: usize) -> Result<(), RecvError> {
        let mut scratch = vec![0u8; LARGE_PAYLOAD];
        while len > 0 {
            if !self.wait_readable(Duration::from_secs(1))? {
                continue;
            }
            let want = len.min(scratch.len());
            match socket::receive(self.stream.as_fd(), &mut scratch[..want], 0)
                .map_err(RecvError::Io)?
            {
                Received::Data { bytes, .. } => len -= bytes,
                Received::Nothing => {}
                Received::Closed => return Err(RecvError::Eof),
            }
        }
        Ok(())
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
        let (max, bodies) = self.read_limit();
        let room = self.framer.room_upto(max, bodies);
        match socket::receive(self.stream.as_fd(), room, MAX_RECV_FDS).map_err(RecvError::Io)? {
            Received::Data { bytes, fds, .. } => {
                self.framer.commit(bytes, fds);
                Ok(())
            }
            Received::Nothing => Ok(()),
            Received::Closed => Err(RecvError::Eof),
        }
    }
}
