//! `MIG_DATA_READ` (command 17) and `MIG_DATA_WRITE` (command 18): the migration data stream,
//! carried on the socket instead of the kernel's data fd.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
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

/// Decodes a head followed by exactly `size` bytes.
fn decode_with_data(
    command: Command,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, DecodeError> {
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
    Ok(data.to_vec())
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

impl Payload for MigDataWrite {
    const COMMAND: Command = Command::MIG_DATA_WRITE;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_with_data(out, self.argsz, &self.data);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (head, _) = wire::read::<MigDataHead>(Self::COMMAND, "mig_data", bytes)?;
        let data = decode_with_data(Self::COMMAND, bytes, limits)?;
        Ok(Self {
            argsz: head.argsz,
            data,
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

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = MigDataHead::decode(bytes, &l);
                let _ = MigDataReadReply::decode(bytes, &l);
                let _ = MigDataWrite::decode(bytes, &l);
                let _ = MigDataWriteReply::decode(bytes, &l);
            });
    }
}
