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
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use vfio_migration::Placed;

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

/// How long a reply's lent bytes ([`Outgoing::lent`]) may stay lent while the client takes the
/// reply in: the device holds them unchanged meanwhile, which delays the guest's writes to
/// them. What is not sent by then is copied and sent from the copy.
const LENT_SEND_BUDGET: Duration = Duration::from_millis(5);

/// Lent pieces of one message sent from a fixed list of parts; a message with more is sent
/// from a copy.
const MAX_LENT_PARTS: usize = 32;

/// A message to send: its bytes (header included) and the descriptors that go with it.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The message's own bytes, header first: the first `own_len` are sent.
    pub bytes: Vec<u8>,
    /// How many of `bytes` belong to the message (the rest is room kept for the next one).
    pub own_len: usize,
    /// Descriptors attached to the message's first byte.
    pub fds: Vec<OwnedFd>,
    /// Bytes the device lent (a `MIG_DATA_READ` reply's namespace data), each sent after the
    /// first `at` own bytes; given back once sent, or copied when the client is slow.
    pub lent: Vec<Placed>,
}

impl Outgoing {
    /// A message without descriptors.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            own_len: bytes.len(),
            bytes,
            fds: Vec::new(),
            lent: Vec::new(),
        }
    }

    /// The header-only error reply to `request`.
    pub fn error(request: &Header, errno: Errno) -> Self {
        Self::new(encode_error_reply(request, errno).to_vec())
    }

    /// Calls `f` with the message's own bytes and lent bytes, in order.
    fn for_each_part<'m>(&'m self, mut f: impl FnMut(&'m [u8])) {
        let own = &self.bytes[..self.own_len];
        let mut from = 0;
        for (at, lent) in &self.lent {
            let at = (*at).clamp(from, own.len());
            f(&own[from..at]);
            f(lent.bytes());
            from = at;
        }
        f(&own[from..]);
    }

    /// The message's parts ([`Self::for_each_part`]) in `out`, and how many; `None` when it has
    /// more lent pieces than `out` takes.
    fn parts<'m>(&'m self, out: &mut [&'m [u8]; 2 * MAX_LENT_PARTS + 1]) -> Option<usize> {
        if self.lent.len() > MAX_LENT_PARTS {
            return None;
        }
        let mut count = 0;
        self.for_each_part(|part| {
            out[count] = part;
            count += 1;
        });
        Some(count)
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
    /// Held while one message is written, so messages never interleave; holds the buffer the
    /// rest of a message with lent bytes is copied into when the client is slow.
    sending: Mutex<Vec<u8>>,
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
        sending: Mutex::new(Vec::new()),
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
    ///
    /// Lent bytes are given back (dropped) as soon as they are sent, or copied into the
    /// outbox's spill buffer once the client has taken longer than [`LENT_SEND_BUDGET`]: how long
    /// the device keeps them unchanged does not depend on how fast the client reads.
    pub fn send(&self, message: &mut Outgoing) -> io::Result<()> {
        let mut spill = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_broken() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier send to the client failed",
            ));
        }
        // The descriptors go with this send and are closed after it.
        let owned_fds = std::mem::take(&mut message.fds);
        let fds: Vec<BorrowedFd<'_>> = owned_fds.iter().map(AsFd::as_fd).collect();
        let sent = if message.lent.is_empty() {
            socket::send_all(self.socket.as_fd(), &message.bytes[..message.own_len], &fds)
        } else {
            Self::send_lent(self.socket.as_fd(), message, &fds, &mut spill)
        };
        message.lent.clear();
        if sent.is_err() {
            self.broken.store(true, Ordering::Release);
            // Wakes the reader, which then ends the connection.
            let _ = rustix::net::shutdown(self.socket.as_fd(), rustix::net::Shutdown::Both);
        }
        sent
    }

    /// Sends a message with lent bytes: gathered straight from where they are lent for up to
    /// [`LENT_SEND_BUDGET`], then whatever is left from a copy in `spill`, after the lent bytes
    /// have been given back.
    fn send_lent(
        socket: BorrowedFd<'_>,
        message: &mut Outgoing,
        fds: &[BorrowedFd<'_>],
        spill: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut parts = [&[][..]; 2 * MAX_LENT_PARTS + 1];
        let Some(count) = message.parts(&mut parts) else {
            spill.clear();
            message.for_each_part(|part| spill.extend_from_slice(part));
            message.lent.clear();
            return socket::send_all(socket, spill, fds);
        };
        let parts = &parts[..count];
        let deadline = Instant::now() + LENT_SEND_BUDGET;
        let sent = socket::send_parts(socket, parts, fds, 0, Some(deadline))?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if sent == total {
            return Ok(());
        }
        // The client is slow: the rest goes from a copy, and the device has its bytes back.
        spill.clear();
        let mut skip = sent;
        for part in parts {
            let from = skip.min(part.len());
            spill.extend_from_slice(&part[from..]);
            skip -= from;
        }
        message.lent.clear();
        socket::send_all(socket, spill, &[])
    }

    /// Whether a send failed and the connection must end.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use vfio_migration::Lender;
    use vfio_migration::LentBytes;
    use vfio_migration::Loan;

    use super::*;

    /// Lends slices of its bytes and counts what was given back.
    struct Bytes {
        data: Vec<u8>,
        given_back: AtomicUsize,
    }

    impl Lender for Bytes {
        fn lent(&self, loan: &Loan) -> &[u8] {
            &self.data[loan.addr..loan.addr + loan.len]
        }
        fn give_back(&self, _loan: &Loan) {
            self.given_back.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn lender(len: usize) -> Arc<Bytes> {
        Arc::new(Bytes {
            data: (0..len).map(|i| (i * 7 + i / 251) as u8).collect(),
            given_back: AtomicUsize::new(0),
        })
    }

    fn lend(lender: &Arc<Bytes>, addr: usize, len: usize) -> LentBytes {
        let loan = Loan { key: 0, addr, len };
        LentBytes::new(Arc::clone(lender) as Arc<dyn Lender>, loan)
    }

    /// Own bytes `[0, 1, …]` with `pieces` of `lender`'s bytes placed after own bytes 2 and 5;
    /// returns the message and the bytes it stands for.
    fn message(lender: &Arc<Bytes>, pieces: &[(usize, usize)]) -> (Outgoing, Vec<u8>) {
        let own: Vec<u8> = (100..110).collect();
        let mut message = Outgoing::new(own.clone());
        // Room beyond own_len is never sent.
        message.bytes.extend_from_slice(&[0xEE; 4]);
        let places = [2, 5, 5, 9];
        let mut expected = Vec::new();
        let mut from = 0;
        for (&(addr, len), &at) in pieces.iter().zip(places.iter()) {
            expected.extend_from_slice(&own[from..at]);
            expected.extend_from_slice(&lender.data[addr..addr + len]);
            message.lent.push((at, lend(lender, addr, len)));
            from = at;
        }
        expected.extend_from_slice(&own[from..]);
        (message, expected)
    }

    fn outbox() -> (Arc<Outbox>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_inbox, outbox) = split(OwnedFd::from(ours), 1 << 20).unwrap();
        (outbox, theirs)
    }

    #[test]
    fn lent_bytes_go_out_between_the_own_bytes_and_are_given_back() {
        let lender = lender(64 << 10);
        let (outbox, mut client) = outbox();
        let (mut message, expected) = message(&lender, &[(10, 3000), (5000, 1), (9000, 40000)]);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, expected);
        });
        outbox.send(&mut message).unwrap();
        assert!(message.lent.is_empty());
        assert_eq!(lender.given_back.load(Ordering::SeqCst), 3);
        reader.join().unwrap();
    }

    #[test]
    fn lent_bytes_are_given_back_while_a_slow_client_has_not_read_them() {
        let lender = lender(16 << 20);
        let (outbox, mut client) = outbox();
        // Far more than the socket buffers hold, so the send cannot finish before the client
        // reads.
        let (mut message, expected) = message(&lender, &[(0, 16 << 20)]);
        let sender = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || outbox.send(&mut message))
        };
        let waited = Instant::now();
        while lender.given_back.load(Ordering::SeqCst) == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "lent bytes not given back while the client did not read"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Only now does the client read: the rest came from the copy.
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert!(got == expected, "the message differs from what was lent");
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn a_message_with_more_lent_pieces_than_parts_is_sent_whole() {
        let lender = lender(1 << 16);
        let (outbox, mut client) = outbox();
        let mut message = Outgoing::new(vec![1, 2, 3]);
        let mut expected = Vec::new();
        for i in 0..MAX_LENT_PARTS + 3 {
            message.lent.push((1, lend(&lender, i * 100, 50)));
            expected.extend_from_slice(&lender.data[i * 100..i * 100 + 50]);
        }
        expected.insert(0, 1);
        expected.extend_from_slice(&[2, 3]);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, expected);
        });
        outbox.send(&mut message).unwrap();
        assert_eq!(lender.given_back.load(Ordering::SeqCst), MAX_LENT_PARTS + 3);
        reader.join().unwrap();
    }
}
