//! Stream framing: a pure state machine that turns the bytes (and file descriptors) read from a
//! stream socket into complete messages, and encoders for whole messages.
//!
//! A message may arrive in many pieces (large `REGION_WRITE` or `MIG_DATA_WRITE` messages
//! regularly do), and one read may hold the end of one message and the start of the next. The
//! [`Framer`] yields a message only once all `msg_size` bytes are in. libvfio-user reads a body
//! with a single `recv()` and loses framing on such messages; this does not.

use std::collections::VecDeque;

use vfio_migration::Errno;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use crate::command::Command;
use crate::error::DecodeError;
use crate::header::HEADER_SIZE;
use crate::header::Header;
use crate::limits::Limits;
use crate::message::Reply;
use crate::message::Request;
use crate::payload::Payload;

/// One complete message as received: header, payload and the fds that came with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<F> {
    /// The header (msg_size already validated).
    pub header: Header,
    /// The `msg_size - 16` bytes after the header.
    pub payload: Vec<u8>,
    /// File descriptors received with the message's bytes.
    pub fds: Vec<F>,
}

/// A reply as received: success with a body, or the peer's errno.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    /// The command succeeded.
    Ok(Reply),
    /// The command failed with this errno (the header's `error`, possibly 0).
    Error(Errno),
}

impl<F> Frame<F> {
    /// Decodes a command message: type bits must say "command", the body must decode, and the
    /// fds must fit the message ([`Request::check_fds`]).
    pub fn decode_request(&self, limits: &Limits) -> Result<Request, DecodeError> {
        if self.header.is_reply()? {
            return Err(DecodeError::BadMessageType {
                command: self.header.command,
                value: 1,
            });
        }
        let request = Request::decode(self.header.command, &self.payload, limits)?;
        request.check_fds(self.fds.len())?;
        Ok(request)
    }

    /// The data of a command message whose header says `MIG_DATA_WRITE`, checked as
    /// [`Self::decode_request`] checks it, but left where it was received instead of copied into a [`Request`]: the
    /// migration stream is the one large payload a server takes on every message.
    pub fn decode_mig_data_write(&self, limits: &Limits) -> Result<&[u8], DecodeError> {
        let command = Command::MIG_DATA_WRITE;
        if self.header.is_reply()? {
            return Err(DecodeError::BadMessageType { command, value: 1 });
        }
        let data = crate::migration::MigDataWrite::data_in(&self.payload, limits)?;
        crate::message::fd_count(command, self.fds.len(), 0..=0)?;
        Ok(data)
    }

    /// Decodes a reply message. An error reply must carry no payload.
    pub fn decode_reply(&self, limits: &Limits) -> Result<ReplyBody, DecodeError> {
        let command = self.header.command;
        if !self.header.is_reply()? {
            return Err(DecodeError::BadMessageType { command, value: 0 });
        }
        if self.header.flags.error() {
            if !self.payload.is_empty() {
                let extra = self.payload.len();
                return Err(DecodeError::TrailingBytes {
                    command,
                    what: "error reply",
                    extra,
                });
            }
            return Ok(ReplyBody::Error(self.header.errno()));
        }
        let reply = Reply::decode(command, &self.payload, limits)?;
        reply.check_fds(self.fds.len())?;
        Ok(ReplyBody::Ok(reply))
    }
}

/// Payloads at least this long are received straight into a buffer of their own (from a
/// [`PayloadPool`]) instead of through the framer's read buffer.
pub const LARGE_PAYLOAD: usize = 64 * 1024;

/// Payloads above this are received through the read buffer, which grows only with the bytes
/// that arrived: a peer announcing a huge message (a client's framer admits large DMA-logging
/// reports) must not make the framer allocate it all up front.
const MAX_BODY_PAYLOAD: usize = 16 << 20;

/// Room the framer offers for one read when no large payload is being received.
const READ_ROOM: usize = 64 * 1024;

/// Large-payload buffers kept for reuse.
const POOL_BUFFERS: usize = 16;
/// Buffers above this are not kept (a little over the 1 MiB `max_data_xfer_size` chunks).
const MAX_POOLED: usize = 2 << 20;

/// Buffers for the payloads of large messages (migration data, large region and DMA
/// transfers), handed back by whoever consumed the message ([`PayloadPool::give`]) so that the
/// next one is received into memory that is already allocated and faulted in, not into a fresh
/// allocation the kernel must zero page by page.
#[derive(Debug, Default)]
pub struct PayloadPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl PayloadPool {
    /// Gives back the payload of a consumed message (small ones are simply dropped).
    pub fn give(&self, payload: Vec<u8>) {
        // Only buffers the size of a migration chunk are worth keeping: a peer's rare 16 MiB
        // messages must not leave sixteen of them allocated per connection.
        if payload.capacity() < LARGE_PAYLOAD || payload.capacity() > MAX_POOLED {
            return;
        }
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < POOL_BUFFERS {
            free.push(payload);
        }
    }

    /// A buffer of `len` bytes (their values are whatever it held: the framer overwrites them
    /// all before the message is handed out).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        // Only growth beyond the buffer's previous length is zeroed.
        buf.resize(len, 0);
        buf
    }
}

/// A large message whose payload is being received into its own buffer.
#[derive(Debug)]
struct Body {
    header: Header,
    payload: Vec<u8>,
    /// Payload bytes received so far.
    filled: usize,
}

/// Accumulates stream bytes and yields complete messages.
///
/// The bytes of a read go where [`Framer::room`] says: the framer's read buffer, or — once the
/// header of a large message ([`LARGE_PAYLOAD`] up to 16 MiB) has arrived — that message's own payload
/// buffer, exactly up to the message's end, so the payload is handed out without a copy and its
/// buffer can come back through the [`PayloadPool`]. [`Framer::push`] copies given bytes the
/// same way (for callers that read elsewhere, and tests).
///
/// File descriptors are added together with the bytes of the read that delivered them. On a
/// Unix stream socket, SCM_RIGHTS data is attached to the first bytes of the `sendmsg` that
/// carried it and a `recvmsg` never reads past the end of such a send, so the fds of one read
/// belong to the message that contains the read's **last** byte; the framer attaches them so.
///
/// After a framing error (`msg_size` below 16 or above the maximum) the message boundary is
/// lost: every further call returns the same error and the connection must be closed.
#[derive(Debug)]
pub struct Framer<F> {
    max_msg_size: u32,
    /// Received bytes not yet handed out are `buf[start..end]`; `buf[end..]` is room.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The large message being received, if any (then `buf[start..end]` is empty).
    body: Option<Body>,
    /// Stream position of the first byte not yet handed out.
    consumed: u64,
    /// Stream bytes received.
    received: u64,
    /// Fds with the stream position of the last byte of the read that carried them.
    fds: VecDeque<(u64, F)>,
    failed: Option<DecodeError>,
    pool: std::sync::Arc<PayloadPool>,
    /// A small message's payload given back ([`Framer::recycle`]): the next small message is
    /// copied into it instead of a fresh allocation.
    spare: Vec<u8>,
}

impl<F> Framer<F> {
    /// A framer that accepts messages of at most `max_msg_size` bytes including the header.
    pub fn new(max_msg_size: u32) -> Self {
        Self {
            max_msg_size,
            buf: Vec::new(),
            start: 0,
            end: 0,
            body: None,
            consumed: 0,
            received: 0,
            fds: VecDeque::new(),
            failed: None,
            pool: std::sync::Arc::default(),
            spare: Vec::new(),
        }
    }

    /// Takes back the payload of a small message handed out and consumed, for the next small
    /// message (a doorbell write per command must not cost an allocation).
    pub fn recycle(&mut self, payload: Vec<u8>) {
        if payload.capacity() < LARGE_PAYLOAD && payload.capacity() > self.spare.capacity() {
            self.spare = payload;
        }
    }

    /// The largest message accepted, header included.
    pub fn max_msg_size(&self) -> u32 {
        self.max_msg_size
    }

    /// The pool large payloads are received into; consumers give their buffers back there.
    pub fn pool(&self) -> &std::sync::Arc<PayloadPool> {
        &self.pool
    }

    /// Where the next read's bytes go: the rest of the large message being received, or room
    /// in the read buffer. Never empty. Hand the count read to [`Self::commit`].
    pub fn room(&mut self) -> &mut [u8] {
        self.room_upto(usize::MAX, true)
    }

    /// [`Self::room`] of at most `max` bytes (at least one), and with `bodies` false no large
    /// message is moved to a payload buffer of its own: a caller that may take the rest of the
    /// front message from the stream itself ([`Self::skip_front`]) reads its header first.
    pub fn room_upto(&mut self, max: usize, bodies: bool) -> &mut [u8] {
        if bodies {
            self.start_body();
        }
        let max = max.max(1);
        if let Some(body) = &mut self.body
            && body.filled < body.payload.len()
        {
            let end = body.payload.len().min(body.filled.saturating_add(max));
            return &mut body.payload[body.filled..end];
        }
        // Bytes after a complete large message (not yet handed out) are buffered behind it.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < READ_ROOM {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_ROOM {
            self.buf.resize(self.end + READ_ROOM, 0);
        }
        // At most READ_ROOM per read, however large the buffer once grew: a large message can
        // then never arrive whole in one read, so its body always goes into a pooled buffer
        // (`start_body`) rather than being copied out of this one.
        let cap = (self.end + READ_ROOM.min(max)).min(self.buf.len());
        &mut self.buf[self.end..cap]
    }

    /// The buffered bytes of the message at the front, unless it is being received into a
    /// payload buffer of its own or the stream failed.
    pub fn front(&self) -> Option<&[u8]> {
        if self.body.is_some() || self.failed.is_some() {
            return None;
        }
        Some(&self.buf[self.start..self.end])
    }

    /// Hands the message at the front, of `msg_size` bytes (its header is buffered), to the
    /// caller, who has looked at its buffered bytes with [`Self::front`] and reads the rest
    /// straight from the stream before the next read into [`Self::room`]: the buffered bytes are
    /// dropped and the rest counted as received. Fds that came with the message are dropped.
    pub fn skip_front(&mut self, msg_size: usize) {
        let have = (self.end - self.start).min(msg_size);
        self.start += have;
        self.received += (msg_size - have) as u64;
        self.consumed += msg_size as u64;
        drop(self.fds_before(self.consumed));
    }

    /// Takes the `n` bytes a read put into [`Self::room`], with the fds that came with them.
    pub fn commit(&mut self, n: usize, fds: impl IntoIterator<Item = F>) {
        self.received += n as u64;
        let owner = self.received.saturating_sub(1);
        self.fds.extend(fds.into_iter().map(|fd| (owner, fd)));
        match &mut self.body {
            Some(body) if body.filled < body.payload.len() => body.filled += n,
            _ => self.end += n,
        }
    }

    /// Adds the bytes and fds of one read that was made elsewhere.
    pub fn push(&mut self, mut bytes: &[u8], fds: impl IntoIterator<Item = F>) {
        while !bytes.is_empty() {
            let room = self.room();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if !bytes.is_empty() {
                self.commit(n, None);
            } else {
                self.commit(n, fds);
                return;
            }
        }
        // No bytes: the fds still belong to the stream position reached.
        self.commit(0, fds);
    }

    /// Bytes received but not yet returned as part of a message.
    pub fn buffered(&self) -> usize {
        let body = self.body.as_ref().map_or(0, |b| HEADER_SIZE + b.filled);
        body + self.end - self.start
    }

    /// Moves a large message whose header is buffered, but not all of it, to its own payload
    /// buffer. Messages with an invalid size are left for [`Self::next_frame`] to refuse.
    fn start_body(&mut self) {
        if self.body.is_some() || self.failed.is_some() {
            return;
        }
        let pending = &self.buf[self.start..self.end];
        let Ok((header, _)) = Header::read_from_prefix(pending) else {
            return;
        };
        let size = header.msg_size as usize;
        let payload = size.saturating_sub(HEADER_SIZE);
        if !(LARGE_PAYLOAD..=MAX_BODY_PAYLOAD).contains(&payload)
            || header.msg_size > self.max_msg_size
            || pending.len() >= size
        {
            return;
        }
        let mut payload = self.pool.take(payload);
        let have = pending.len() - HEADER_SIZE;
        payload[..have].copy_from_slice(&pending[HEADER_SIZE..]);
        self.start = self.end;
        self.body = Some(Body {
            header,
            payload,
            filled: have,
        });
    }

    /// The fds of the bytes before stream position `end`.
    fn fds_before(&mut self, end: u64) -> Vec<F> {
        let mut fds = Vec::new();
        while self.fds.front().is_some_and(|(owner, _)| *owner < end) {
            if let Some((_, fd)) = self.fds.pop_front() {
                fds.push(fd);
            }
        }
        fds
    }

    /// The next complete message, `None` if more bytes are needed, or a framing error.
    pub fn next_frame(&mut self) -> Result<Option<Frame<F>>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if let Some(body) = &self.body {
            if body.filled < body.payload.len() {
                return Ok(None);
            }
            let Some(Body {
                header, payload, ..
            }) = self.body.take()
            else {
                return Ok(None);
            };
            self.consumed += u64::from(header.msg_size);
            let fds = self.fds_before(self.consumed);
            return Ok(Some(Frame {
                header,
                payload,
                fds,
            }));
        }
        let pending = &self.buf[self.start..self.end];
        let Ok((header, _)) = Header::read_from_prefix(pending) else {
            return Ok(None);
        };
        let msg_size = header.msg_size;
        let error = if (msg_size as usize) < HEADER_SIZE {
            Some(DecodeError::MsgSizeTooSmall { msg_size })
        } else if msg_size > self.max_msg_size {
            Some(DecodeError::MsgSizeTooLarge {
                msg_size,
                max: self.max_msg_size,
            })
        } else {
            None
        };
        if let Some(err) = error {
            self.failed = Some(err.clone());
            return Err(err);
        }
        let size = msg_size as usize;
        if pending.len() < size {
            return Ok(None);
        }
        let mut payload = std::mem::take(&mut self.spare);
        payload.clear();
        payload.extend_from_slice(&pending[HEADER_SIZE..size]);
        self.start += size;
        self.consumed += size as u64;
        let fds = self.fds_before(self.consumed);
        Ok(Some(Frame {
            header,
            payload,
            fds,
        }))
    }
}

/// A complete command message: header (type command) and body.
pub fn encode_request<P: Payload>(msg_id: u16, body: &P, no_reply: bool) -> Vec<u8> {
    encode_with(
        |payload_len| Header::command(msg_id, P::COMMAND, payload_len, no_reply),
        body,
    )
}

/// A complete successful reply to the command whose header is `request`: same msg_id and
/// command, type reply.
pub fn encode_reply<P: Payload>(request: &Header, body: &P) -> Vec<u8> {
    encode_with(|payload_len| request.reply(payload_len), body)
}

/// A complete error reply to `request`: header only, Error bit, `errno`.
pub fn encode_error_reply(request: &Header, errno: Errno) -> [u8; HEADER_SIZE] {
    let mut bytes = [0; HEADER_SIZE];
    bytes.copy_from_slice(request.error_reply(errno).as_bytes());
    bytes
}

fn encode_with<P: Payload>(header: impl FnOnce(usize) -> Header, body: &P) -> Vec<u8> {
    let mut out = vec![0; HEADER_SIZE];
    body.encode(&mut out);
    let header = header(out.len() - HEADER_SIZE);
    out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    out
}

/// The command of a raw message's header, if at least the header is present (for logging a
/// message that failed to decode).
pub fn peek_command(bytes: &[u8]) -> Option<Command> {
    Header::read_from_prefix(bytes).ok().map(|(h, _)| h.command)
}

#[cfg(test)]
mod tests {
    use vfio_migration::Errno;

    use super::*;
    use crate::access::RegionWrite;
    use crate::device::DeviceReset;
    use crate::dma::DmaMap;
    use crate::migration::MigDataWrite;
    use crate::version::Capabilities;
    use crate::version::Version;

    /// Three messages, the middle one carrying an fd.
    fn stream() -> (Vec<u8>, Vec<usize>) {
        let version = Version {
            major: 0,
            minor: 0,
            capabilities: Capabilities::default(),
        };
        let map = DmaMap {
            argsz: 32,
            flags: 3,
            offset: 0,
            address: 0x1000,
            size: 0x2000,
        };
        let write = RegionWrite {
            offset: 0x14,
            region: 0,
            data: (0..200).collect(),
        };
        let mut bytes = encode_request(1, &version, false);
        let first = bytes.len();
        bytes.extend_from_slice(&encode_request(2, &map, false));
        let second = bytes.len();
        bytes.extend_from_slice(&encode_request(3, &write, true));
        (bytes, vec![first, second])
    }

    #[test]
    fn every_split_point_yields_the_same_messages_and_fd_placement() {
        let (bytes, bounds) = stream();
        let (first, second) = (bounds[0], bounds[1]);
        let l = Limits::default();
        for cut in 0..=bytes.len() {
            for cut2 in [cut, (cut + 7).min(bytes.len()), bytes.len()] {
                let mut framer = Framer::new(l.max_msg_size());
                let mut frames = Vec::new();
                // The fd arrives with the read holding the DMA_MAP's first byte; a real socket
                // never puts later messages' bytes into that read, but earlier ones may.
                for (range_start, range_end) in [(0, cut), (cut, cut2), (cut2, bytes.len())] {
                    if range_start == range_end {
                        continue;
                    }
                    let chunk = &bytes[range_start..range_end];
                    let carries_fd = range_start <= first && first < range_end;
                    let chunk = if carries_fd {
                        &bytes[range_start..=first]
                    } else {
                        chunk
                    };
                    framer.push(chunk, carries_fd.then_some(42));
                    if carries_fd && first + 1 < range_end {
                        framer.push(&bytes[first + 1..range_end], None);
                    }
                    while let Some(frame) = framer.next_frame().unwrap() {
                        frames.push(frame);
                    }
                }
                assert_eq!(frames.len(), 3, "cut at {cut}/{cut2}");
                assert_eq!(framer.buffered(), 0);
                assert!(frames[0].fds.is_empty());
                assert_eq!(frames[1].fds, vec![42], "cut at {cut}/{cut2}");
                assert!(frames[2].fds.is_empty());
                assert_eq!(frames[1].payload.len(), second - first - HEADER_SIZE);
                assert!(matches!(
                    frames[1].decode_request(&l),
                    Ok(Request::DmaMap(_))
                ));
                assert!(frames[2].header.flags.no_reply());
                assert!(
                    matches!(frames[2].decode_request(&l), Ok(Request::RegionWrite(w)) if w.data.len() == 200)
                );
            }
        }
    }

    #[test]
    fn a_recycled_small_payload_receives_the_next_small_message() {
        let write = |value: u8| RegionWrite {
            offset: 0x1008,
            region: 0,
            data: vec![value; 4],
        };
        let mut framer = Framer::<()>::new(4096);
        framer.push(&encode_request(1, &write(1), true), None);
        framer.push(&encode_request(2, &write(2), true), None);
        let first = framer.next_frame().unwrap().unwrap();
        let buffer = first.payload.as_ptr();
        framer.recycle(first.payload);
        let second = framer.next_frame().unwrap().unwrap();
        assert_eq!(second.payload.as_ptr(), buffer, "no new allocation");
        assert_eq!(
            RegionWrite::decode(&second.payload, &Limits::default()).unwrap(),
            write(2)
        );
    }

    #[test]
    fn byte_by_byte() {
        let (bytes, _) = stream();
        let mut framer = Framer::<()>::new(4096);
        let mut count = 0;
        for b in &bytes {
            framer.push(core::slice::from_ref(b), None);
            while framer.next_frame().unwrap().is_some() {
                count += 1;
            }
        }
        assert_eq!(count, 3);
    }

    #[test]
    fn bad_sizes_poison_the_stream() {
        let mut framer = Framer::<()>::new(64);
        let mut header = Header::command(1, Command::DEVICE_RESET, 0, false);
        header.msg_size = 15;
        framer.push(header.as_bytes(), None);
        let err = framer.next_frame().unwrap_err();
        assert_eq!(err, DecodeError::MsgSizeTooSmall { msg_size: 15 });
        assert!(err.to_string().contains("15"));
        assert!(framer.next_frame().is_err(), "stays failed");

        let mut framer = Framer::<()>::new(64);
        framer.push(
            &encode_request(1, &MigDataWrite::new(vec![0; 100]), false),
            None,
        );
        let err = framer.next_frame().unwrap_err();
        assert_eq!(
            err,
            DecodeError::MsgSizeTooLarge {
                msg_size: 16 + 108,
                max: 64
            }
        );
        assert_eq!(err.errno(), Errno::E2BIG);
    }

    #[test]
    fn replies_and_error_replies() {
        let l = Limits::default();
        let request = Header::command(9, Command::DEVICE_RESET, 0, false);
        let mut framer = Framer::<()>::new(4096);
        framer.push(&encode_reply(&request, &DeviceReset), None);
        framer.push(&encode_error_reply(&request, Errno::EBUSY), None);
        let ok = framer.next_frame().unwrap().unwrap();
        assert_eq!(ok.header.msg_id, 9);
        assert_eq!(
            ok.decode_reply(&l).unwrap(),
            ReplyBody::Ok(Reply::DeviceReset(DeviceReset))
        );
        assert!(ok.decode_request(&l).is_err(), "a reply is not a request");
        let failed = framer.next_frame().unwrap().unwrap();
        assert_eq!(
            failed.decode_reply(&l).unwrap(),
            ReplyBody::Error(Errno::EBUSY)
        );
        assert_eq!(
            peek_command(&encode_error_reply(&request, Errno::EPERM)),
            Some(Command::DEVICE_RESET)
        );
        assert_eq!(peek_command(&[1, 2]), None);
    }

    #[test]
    fn fuzz_framer() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|input: &[u8]| {
                let mut framer = Framer::new(256);
                let l = Limits::default();
                for chunk in input.chunks(7) {
                    framer.push(chunk, Some(0u8));
                    while let Ok(Some(frame)) = framer.next_frame() {
                        let _ = frame.decode_request(&l);
                        let _ = frame.decode_reply(&l);
                    }
                }
            });
    }

    /// The in-place `MIG_DATA_WRITE` reader takes and refuses exactly what the general request
    /// decoder does, with the same errno and the same data.
    #[test]
    fn fuzz_mig_data_write_in_place() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|input: &[u8]| {
                let Some((&flags, rest)) = input.split_first() else {
                    return;
                };
                let (fds, payload) = rest.split_at(usize::from(flags & 1).min(rest.len()));
                let mut header = Header::command(1, Command::MIG_DATA_WRITE, payload.len(), false);
                if flags & 2 != 0 {
                    header = header.reply(payload.len());
                }
                let frame = Frame {
                    header,
                    payload: payload.to_vec(),
                    fds: fds.to_vec(),
                };
                let l = Limits {
                    max_data_xfer_size: 64,
                    ..Limits::default()
                };
                let general = frame.decode_request(&l).map(|r| match r {
                    Request::MigDataWrite(w) => w.data,
                    other => panic!("decoded as {other:?}"),
                });
                assert_eq!(
                    frame
                        .decode_mig_data_write(&l)
                        .map(<[u8]>::to_vec)
                        .map_err(|e| e.errno()),
                    general.map_err(|e| e.errno())
                );
            });
    }

    /// Large messages are received into their own (recycled) payload buffers and small ones
    /// through the read buffer; whatever the read sizes, the same messages come out with the
    /// fds where they belong, and a recycled buffer's old contents never show.
    #[test]
    fn fuzz_large_payloads_in_their_own_buffers() {
        let big =
            |seed: u8, len: usize| MigDataWrite::new((0..len).map(|i| seed ^ i as u8).collect());
        let messages = [
            encode_request(1, &big(1, 100), false),
            encode_request(2, &big(2, 3 * LARGE_PAYLOAD + 5), false),
            encode_request(3, &big(3, LARGE_PAYLOAD), false),
            encode_request(4, &big(4, 7), false),
            encode_request(5, &big(5, 2 * LARGE_PAYLOAD), false),
        ];
        let stream: Vec<u8> = messages.concat();
        // The fd arrives with the read that ends in message 3's first byte.
        let fd_at = messages[..2].iter().map(Vec::len).sum::<usize>();
        bolero::check!()
            .with_type::<Vec<u32>>()
            .with_iterations(300)
            .for_each(|reads: &Vec<u32>| {
                let mut framer = Framer::new(Limits::default().max_msg_size());
                // Dirty buffers in the pool: their bytes must be overwritten.
                for _ in 0..3 {
                    framer.pool().give(vec![0xEE; 4 * LARGE_PAYLOAD]);
                }
                let mut frames = Vec::new();
                let mut at = 0;
                let mut i = 0;
                while at < stream.len() {
                    let want = reads
                        .get(i)
                        .map_or(usize::MAX, |&r| r as usize % 200_000 + 1);
                    i += 1;
                    let room = framer.room();
                    assert!(!room.is_empty());
                    let mut n = room.len().min(want).min(stream.len() - at);
                    if at <= fd_at && fd_at < at + n {
                        n = fd_at + 1 - at;
                    }
                    room[..n].copy_from_slice(&stream[at..at + n]);
                    let fd = (at + n == fd_at + 1).then_some(9u8);
                    at += n;
                    framer.commit(n, fd);
                    while let Some(frame) = framer.next_frame().unwrap() {
                        frames.push(frame);
                    }
                }
                assert_eq!(frames.len(), messages.len());
                assert_eq!(framer.buffered(), 0);
                for (k, (frame, message)) in frames.into_iter().zip(&messages).enumerate() {
                    assert!(
                        frame.payload == message[HEADER_SIZE..],
                        "message {k} differs"
                    );
                    assert_eq!(frame.fds.len(), usize::from(k == 2), "fds of message {k}");
                    framer.pool().give(frame.payload);
                }
            });
    }
}
