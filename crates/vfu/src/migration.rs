//! `MIG_DATA_READ` (command 17) and `MIG_DATA_WRITE` (command 18): the migration data stream,
//! carried on the socket instead of the kernel's data fd.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::header::HEADER_SIZE;
use crate::header::Header;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire;

/// The 8-byte head of both commands' bodies: argsz 0, size 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct MigDataHead {
    /// Request: largest reply payload accepted. Read reply: head plus data.
    pub argsz: u32,
    /// Bytes asked for (read request) or carried (read reply, write request).
    pub size: u32,
}

const _: () = assert!(size_of::<MigDataHead>() == 8);

const HEAD: usize = size_of::<MigDataHead>();

/// `MIG_DATA_READ` request: read up to `size` bytes. Valid in PRE_COPY and STOP_COPY (checked by
/// the server, not here).
pub type MigDataReadRequest = MigDataHead;

impl MigDataHead {
    /// A read request for `size` bytes with an argsz that admits the reply.
    pub fn read(size: u32) -> Self {
        Self {
            argsz: wire::len_u32(HEAD + size as usize),
            size,
        }
    }
}

wire::fixed_payload!(
    MigDataHead,
    Command::MIG_DATA_READ,
    "mig_data",
    MigDataHead::check_read
);

impl MigDataHead {
    /// The decoder's checks of a read request: `size` within `max_data_xfer_size` (E2BIG),
    /// `argsz` with room for a full reply (EINVAL, as libvfio-user).
    fn check_read(&self, limits: &Limits) -> Result<(), DecodeError> {
        let c = Command::MIG_DATA_READ;
        wire::check_limit(
            c,
            "size",
            self.size.into(),
            limits.max_data_xfer_size.into(),
        )?;
        if (self.argsz as usize) < HEAD + self.size as usize {
            return Err(DecodeError::invalid(
                c,
                "argsz",
                self.argsz.into(),
                "too small for the requested size",
            ));
        }
        Ok(())
    }
}

/// Checks a head followed by exactly `size` bytes and returns the head and the data, in place.
fn data_of<'a>(
    command: Command,
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(MigDataHead, &'a [u8]), DecodeError> {
    let (head, data) = wire::read::<MigDataHead>(command, "mig_data", bytes)?;
    wire::check_limit(
        command,
        "size",
        head.size.into(),
        limits.max_data_xfer_size.into(),
    )?;
    if head.size as usize != data.len() {
        return Err(DecodeError::invalid(
            command,
            "size",
            head.size.into(),
            "differs from the data length",
        ));
    }
    Ok((head, data))
}

/// Bytes in front of the data in a `MIG_DATA_READ` reply or a `MIG_DATA_WRITE` request
/// message: the message header and the 8-byte head. Sending this prefix and then the data
/// (scatter/gather) puts the same bytes on the wire as encoding the whole message, without
/// copying the data into it.
pub const DATA_PREFIX_BYTES: usize = HEADER_SIZE + HEAD;

/// The first [`DATA_PREFIX_BYTES`] of the reply to the `MIG_DATA_READ` `request` that carries
/// `len` data bytes (the bytes `encode_reply(request, &MigDataReadReply { data })` starts
/// with).
pub fn read_reply_prefix(request: &Header, len: usize) -> [u8; DATA_PREFIX_BYTES] {
    let head = MigDataHead {
        argsz: wire::len_u32(HEAD + len),
        size: wire::len_u32(len),
    };
    data_prefix(request.reply(HEAD + len), head)
}

/// The first [`DATA_PREFIX_BYTES`] of a `MIG_DATA_WRITE` request with `msg_id` that carries
/// `len` data bytes (the bytes `encode_request(msg_id, &MigDataWrite::new(data), false)`
/// starts with).
pub fn write_request_prefix(msg_id: u16, len: usize) -> [u8; DATA_PREFIX_BYTES] {
    let head = MigDataHead {
        argsz: wire::len_u32(HEAD + len),
        size: wire::len_u32(len),
    };
    data_prefix(
        Header::command(msg_id, Command::MIG_DATA_WRITE, HEAD + len, false),
        head,
    )
}

fn data_prefix(header: Header, head: MigDataHead) -> [u8; DATA_PREFIX_BYTES] {
    let mut out = [0; DATA_PREFIX_BYTES];
    out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    out[HEADER_SIZE..].copy_from_slice(head.as_bytes());
    out
}

/// Decodes a head followed by exactly `size` bytes.
fn decode_with_data(
    command: Command,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, DecodeError> {
    Ok(data_of(command, bytes, limits)?.1.to_vec())
}

fn encode_with_data(out: &mut Vec<u8>, argsz: u32, data: &[u8]) {
    wire::put(
        out,
        &MigDataHead {
            argsz,
            size: wire::len_u32(data.len()),
        },
    );
    out.extend_from_slice(data);
}

/// `MIG_DATA_READ` reply: the data read. Fewer bytes than requested means the stream has no
/// more data for now; in STOP_COPY that is the end of the stream, in PRE_COPY (where vfio-user
/// has no "nothing yet" signal) it may only mean "nothing now".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigDataReadReply {
    /// The data (argsz = 8 + len, size = len on the wire).
    pub data: Vec<u8>,
}

impl MigDataReadReply {
    /// Whether this reply to a request for `requested` bytes is short (no more data).
    pub fn is_short(&self, requested: u32) -> bool {
        self.data.len() < requested as usize
    }
}

impl MigDataReadReply {
    /// The data of a reply payload, checked as [`Payload::decode`] does, without copying it.
    pub fn data_in<'a>(payload: &'a [u8], limits: &Limits) -> Result<&'a [u8], DecodeError> {
        Ok(data_of(Self::COMMAND, payload, limits)?.1)
    }
}

impl Payload for MigDataReadReply {
    const COMMAND: Command = Command::MIG_DATA_READ;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_with_data(out, wire::len_u32(HEAD + self.data.len()), &self.data);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            data: decode_with_data(Self::COMMAND, bytes, limits)?,
        })
    }
}

/// `MIG_DATA_WRITE` request: `size` bytes of the stream. Valid in RESUMING (checked by the
/// server); the server must take all of it. The reply has no payload ([`MigDataWriteReply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigDataWrite {
    /// Largest reply payload accepted (the reply is empty; clients send 8 + size or 0).
    pub argsz: u32,
    /// The data.
    pub data: Vec<u8>,
}

impl MigDataWrite {
    /// A write of `data` with argsz covering the request body, as the kernel-style clients do.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            argsz: wire::len_u32(HEAD + data.len()),
            data,
        }
    }
}

impl MigDataWrite {
    /// The data of a request body, checked as [`Payload::decode`] does, without copying it.
    pub fn data_in<'a>(body: &'a [u8], limits: &Limits) -> Result<&'a [u8], DecodeError> {
        Ok(data_of(Self::COMMAND, body, limits)?.1)
    }
}

impl Payload for MigDataWrite {
    const COMMAND: Command = Command::MIG_DATA_WRITE;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_with_data(out, self.argsz, &self.data);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (head, data) = data_of(Self::COMMAND, bytes, limits)?;
        Ok(Self {
            argsz: head.argsz,
            data: data.to_vec(),
        })
    }
}

/// `MIG_DATA_WRITE` reply: no payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigDataWriteReply;

wire::empty_payload!(MigDataWriteReply, Command::MIG_DATA_WRITE);

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use proptest::prelude::*;
    use vfio_migration::Errno;

    use super::*;

    #[test]
    fn layout_and_vectors() {
        assert_eq!(offset_of!(MigDataHead, size), 4);
        let l = Limits::default();
        let req = MigDataHead::read(4096);
        assert_eq!(req.to_bytes(), [8, 0x10, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(MigDataHead::decode(&req.to_bytes(), &l).unwrap(), req);
        let reply = MigDataReadReply {
            data: vec![0xaa; 3],
        };
        assert_eq!(
            reply.to_bytes(),
            [11, 0, 0, 0, 3, 0, 0, 0, 0xaa, 0xaa, 0xaa]
        );
        assert!(reply.is_short(4096));
        assert!(!reply.is_short(3));
        let write = MigDataWrite::new(vec![1, 2]);
        assert_eq!(write.to_bytes(), [10, 0, 0, 0, 2, 0, 0, 0, 1, 2]);
        assert!(MigDataWriteReply::decode(&[], &l).is_ok());
    }

    #[test]
    fn checks() {
        let l = Limits {
            max_data_xfer_size: 16,
            ..Limits::default()
        };
        assert_eq!(
            MigDataHead::decode(&MigDataHead::read(17).to_bytes(), &l)
                .unwrap_err()
                .errno(),
            Errno::E2BIG
        );
        let small = MigDataHead { argsz: 8, size: 16 };
        assert_eq!(
            MigDataHead::decode(&small.to_bytes(), &l)
                .unwrap_err()
                .errno(),
            Errno::EINVAL
        );
        let mut bytes = MigDataWrite::new(vec![1, 2, 3]).to_bytes();
        bytes.pop();
        assert_eq!(
            MigDataWrite::decode(&bytes, &l).unwrap_err().errno(),
            Errno::EINVAL
        );
        let big = MigDataWrite::new(vec![0; 17]);
        assert_eq!(
            MigDataWrite::decode(&big.to_bytes(), &l)
                .unwrap_err()
                .errno(),
            Errno::E2BIG
        );
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..128), size in 0u32..4096) {
            let l = Limits::default();
            let req = MigDataHead::read(size);
            prop_assert_eq!(MigDataHead::decode(&req.to_bytes(), &l).unwrap(), req);
            let reply = MigDataReadReply { data: data.clone() };
            prop_assert_eq!(MigDataReadReply::decode(&reply.to_bytes(), &l).unwrap(), reply);
            let write = MigDataWrite::new(data);
            prop_assert_eq!(MigDataWrite::decode(&write.to_bytes(), &l).unwrap(), write);
        }
    }

    proptest! {
        #[test]
        fn prefixes_match_the_encoders(data in proptest::collection::vec(any::<u8>(), 0..64), msg_id: u16) {
            use crate::framing::encode_reply;
            use crate::framing::encode_request;
            let request = Header::command(msg_id, Command::MIG_DATA_READ, HEAD, false);
            let mut reply = read_reply_prefix(&request, data.len()).to_vec();
            reply.extend_from_slice(&data);
            prop_assert_eq!(reply, encode_reply(&request, &MigDataReadReply { data: data.clone() }));
            let mut write = write_request_prefix(msg_id, data.len()).to_vec();
            write.extend_from_slice(&data);
            prop_assert_eq!(write, encode_request(msg_id, &MigDataWrite::new(data), false));
        }
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = MigDataHead::decode(bytes, &l);
                let write = MigDataWrite::decode(bytes, &l);
                let _ = MigDataWriteReply::decode(bytes, &l);
                // The in-place readers accept and refuse exactly what the decoders do.
                let in_place = MigDataWrite::data_in(bytes, &l);
                assert_eq!(
                    in_place.as_ref().map(|d| d.to_vec()).map_err(|e| e.errno()),
                    write
                        .as_ref()
                        .map(|w| w.data.clone())
                        .map_err(|e| e.errno())
                );
                let read = MigDataReadReply::decode(bytes, &l);
                assert_eq!(
                    MigDataReadReply::data_in(bytes, &l)
                        .map(<[u8]>::to_vec)
                        .map_err(|e| e.errno()),
                    read.map(|r| r.data).map_err(|e| e.errno())
                );
            });
    }
}
