//! `REGION_READ` / `REGION_WRITE` (commands 9 and 10) and `REGION_WRITE_MULTI` (command 15).

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;
use crate::limits::WRITE_MULTI_MAX_DATA;
use crate::payload::Payload;
use crate::wire;

/// The 16-byte head of region access bodies: offset 0, region 8, count 12.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct RegionAccess {
    /// Offset into the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// Bytes to transfer (at most the peer's `max_data_xfer_size`).
    pub count: u32,
}

const _: () = assert!(size_of::<RegionAccess>() == 16);

impl RegionAccess {
    fn check(&self, command: Command, limits: &Limits) -> Result<(), DecodeError> {
        wire::check_limit(
            command,
            "count",
            self.count.into(),
            limits.max_data_xfer_size.into(),
        )?;
        wire::check_range(command, "offset/count", self.offset, self.count.into())
    }
}

/// Decodes a head followed by exactly `count` data bytes.
fn decode_with_data(
    command: Command,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(u64, u32, Vec<u8>), DecodeError> {
    let (head, data) = view_with_data(command, bytes, limits)?;
    Ok((head.offset, head.region, data.to_vec()))
}

/// The head and the data of a request with data, checked, the data where it lies in `bytes`.
fn view_with_data<'a>(
    command: Command,
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(RegionAccess, &'a [u8]), DecodeError> {
    let (head, data) = wire::read::<RegionAccess>(command, "region access", bytes)?;
    head.check(command, limits)?;
    if head.count as usize != data.len() {
        return Err(DecodeError::invalid(
            command,
            "count",
            head.count.into(),
            "differs from the data length",
        ));
    }
    Ok((head, data))
}

fn encode_with_data(out: &mut Vec<u8>, offset: u64, region: u32, data: &[u8]) {
    wire::put(
        out,
        &RegionAccess {
            offset,
            region,
            count: wire::len_u32(data.len()),
        },
    );
    out.extend_from_slice(data);
}

/// `REGION_READ` request: the head alone.
pub type RegionReadRequest = RegionAccess;

wire::fixed_payload!(
    RegionAccess,
    Command::REGION_READ,
    "region access",
    |head, limits| head.check(Command::REGION_READ, limits)
);

/// `REGION_READ` reply: the head with `count` the bytes read, then the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionReadReply {
    /// Offset read.
    pub offset: u64,
    /// Region read.
    pub region: u32,
    /// The bytes read.
    pub data: Vec<u8>,
}

impl Payload for RegionReadReply {
    const COMMAND: Command = Command::REGION_READ;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_with_data(out, self.offset, self.region, &self.data);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (offset, region, data) = decode_with_data(Self::COMMAND, bytes, limits)?;
        Ok(Self {
            offset,
            region,
            data,
        })
    }
}

/// `REGION_WRITE` request: the head then `count` bytes to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionWrite {
    /// Offset to write.
    pub offset: u64,
    /// Region to write.
    pub region: u32,
    /// The bytes to write.
    pub data: Vec<u8>,
}

impl RegionWrite {
    /// A `REGION_WRITE` payload's head and data, checked as [`Payload::decode`] checks them,
    /// without copying the data: for a server that carries the write out straight from the
    /// received message (the head is also the reply's body).
    ///
    /// # Errors
    /// As [`Payload::decode`].
    pub fn view<'a>(
        bytes: &'a [u8],
        limits: &Limits,
    ) -> Result<(RegionAccess, &'a [u8]), DecodeError> {
        view_with_data(Self::COMMAND, bytes, limits)
    }

    /// The reply: the three head fields echoed, no data.
    pub fn reply(&self) -> RegionWriteReply {
        RegionWriteReply(RegionAccess {
            offset: self.offset,
            region: self.region,
            count: wire::len_u32(self.data.len()),
        })
    }
}

impl Payload for RegionWrite {
    const COMMAND: Command = Command::REGION_WRITE;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_with_data(out, self.offset, self.region, &self.data);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (offset, region, data) = decode_with_data(Self::COMMAND, bytes, limits)?;
        Ok(Self {
            offset,
            region,
            data,
        })
    }
}

/// `REGION_WRITE` reply: offset, region and count echoed, no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionWriteReply(pub RegionAccess);

impl Payload for RegionWriteReply {
    const COMMAND: Command = Command::REGION_WRITE;

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put(out, &self.0);
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let head: RegionAccess = wire::read_exact(Self::COMMAND, "region access", bytes)?;
        head.check(Self::COMMAND, limits)?;
        Ok(Self(head))
    }
}

/// One `REGION_WRITE_MULTI` entry (24 bytes): offset 0, region 8, count 12, data 16 (8 bytes,
/// of which the first `count` are written).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct WriteMultiEntry {
    /// Offset into the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// Bytes to write, at most 8.
    pub count: u32,
    /// The bytes (first `count` used).
    pub data: [u8; 8],
}

const _: () = assert!(size_of::<WriteMultiEntry>() == 24);

impl WriteMultiEntry {
    /// An entry writing `data` (at most 8 bytes; longer input is cut to 8).
    pub fn new(offset: u64, region: u32, data: &[u8]) -> Self {
        let len = data.len().min(WRITE_MULTI_MAX_DATA as usize);
        let mut bytes = [0; 8];
        bytes[..len].copy_from_slice(&data[..len]);
        Self {
            offset,
            region,
            count: len as u32,
            data: bytes,
        }
    }

    /// The bytes to write (`count` is validated by the decoder; clamped here regardless).
    pub fn bytes(&self) -> &[u8] {
        let len = (self.count as usize).min(self.data.len());
        &self.data[..len]
    }
}

/// `REGION_WRITE_MULTI` request: `wr_cnt u64` then `wr_cnt` entries. Clients send it with
/// No_reply; if a reply is wanted it is [`RegionWriteMultiReply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionWriteMulti {
    /// The writes, in order.
    pub writes: Vec<WriteMultiEntry>,
}

impl Payload for RegionWriteMulti {
    const COMMAND: Command = Command::REGION_WRITE_MULTI;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.writes.len() as u64).to_ne_bytes());
        wire::put(out, self.writes.as_slice());
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let c = Self::COMMAND;
        let (wr_cnt, rest) = wire::read::<u64>(c, "wr_cnt", bytes)?;
        wire::check_limit(c, "wr_cnt", wr_cnt, limits.max_write_multi_entries.into())?;
        let len = wr_cnt as usize * size_of::<WriteMultiEntry>();
        let (entries, rest) = wire::take(c, "write entries", rest, len)?;
        wire::expect_end(c, "write entries", rest)?;
        let mut writes = Vec::with_capacity(wr_cnt as usize);
        for chunk in entries.chunks_exact(size_of::<WriteMultiEntry>()) {
            let entry: WriteMultiEntry = wire::read_exact(c, "write entry", chunk)?;
            wire::check_limit(c, "count", entry.count.into(), WRITE_MULTI_MAX_DATA.into())?;
            wire::check_range(c, "offset/count", entry.offset, entry.count.into())?;
            writes.push(entry);
        }
        Ok(Self { writes })
    }
}

/// `REGION_WRITE_MULTI` reply: the number of writes completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionWriteMultiReply {
    /// Writes completed.
    pub wr_cnt: u64,
}

impl Payload for RegionWriteMultiReply {
    const COMMAND: Command = Command::REGION_WRITE_MULTI;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.wr_cnt.to_ne_bytes());
    }

    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            wr_cnt: wire::read_exact(Self::COMMAND, "wr_cnt", bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use proptest::prelude::*;
    use vfio_migration::Errno;

    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(offset_of!(RegionAccess, region), 8);
        assert_eq!(offset_of!(RegionAccess, count), 12);
        assert_eq!(offset_of!(WriteMultiEntry, region), 8);
        assert_eq!(offset_of!(WriteMultiEntry, count), 12);
        assert_eq!(offset_of!(WriteMultiEntry, data), 16);
    }

    #[test]
    fn region_write_vector_and_reply() {
        // Write 0x0046_0001 to CC (BAR0 offset 0x14).
        let bytes = [
            0x14, 0, 0, 0, 0, 0, 0, 0, // offset
            0, 0, 0, 0, // region 0
            4, 0, 0, 0, // count
            0x01, 0x00, 0x46, 0x00, // data
        ];
        let w = RegionWrite::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(
            w,
            RegionWrite {
                offset: 0x14,
                region: 0,
                data: vec![1, 0, 0x46, 0]
            }
        );
        assert_eq!(w.to_bytes(), bytes);
        assert_eq!(w.reply().to_bytes(), bytes[..16]);
    }

    #[test]
    fn counts_are_checked() {
        let l = Limits {
            max_data_xfer_size: 8,
            ..Limits::default()
        };
        let read = RegionAccess {
            offset: 0,
            region: 0,
            count: 9,
        };
        assert_eq!(
            RegionAccess::decode(&read.to_bytes(), &l)
                .unwrap_err()
                .errno(),
            Errno::E2BIG
        );
        let mut bytes = RegionWrite {
            offset: 0,
            region: 1,
            data: vec![1, 2],
        }
        .to_bytes();
        bytes.pop();
        assert_eq!(
            RegionWrite::decode(&bytes, &l).unwrap_err().errno(),
            Errno::EINVAL
        );
        // wr_cnt above the limit fails before anything is allocated.
        let mut multi = u64::MAX.to_ne_bytes().to_vec();
        multi.extend_from_slice(&[0; 24]);
        assert_eq!(
            RegionWriteMulti::decode(&multi, &l).unwrap_err().errno(),
            Errno::E2BIG
        );
        let mut entry = WriteMultiEntry::new(0, 0, &[1]);
        entry.count = 9;
        let bad = RegionWriteMulti {
            writes: vec![entry],
        };
        assert_eq!(
            RegionWriteMulti::decode(&bad.to_bytes(), &l)
                .unwrap_err()
                .errno(),
            Errno::E2BIG
        );
    }

    #[test]
    fn write_multi_vector() {
        let multi = RegionWriteMulti {
            writes: vec![
                WriteMultiEntry::new(0x1000, 0, &[1, 0, 0, 0]),
                WriteMultiEntry::new(0x1008, 0, &[2]),
            ],
        };
        let bytes = multi.to_bytes();
        assert_eq!(bytes.len(), 8 + 48);
        assert_eq!(&bytes[..8], &2u64.to_ne_bytes());
        assert_eq!(&bytes[8..16], &0x1000u64.to_ne_bytes());
        assert_eq!(&bytes[20..24], &4u32.to_ne_bytes());
        assert_eq!(&bytes[24..28], &[1, 0, 0, 0]);
        let decoded = RegionWriteMulti::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(decoded.writes[1].bytes(), &[2]);
        assert_eq!(
            RegionWriteMultiReply { wr_cnt: 2 }.to_bytes(),
            2u64.to_ne_bytes()
        );
    }

    proptest! {
        #[test]
        fn round_trips(offset in 0u64..1 << 40, region: u32, data in proptest::collection::vec(any::<u8>(), 0..32),
                       entries in proptest::collection::vec((0u64..1 << 40, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=8)), 0..10)) {
            let l = Limits::default();
            let read = RegionAccess { offset, region, count: data.len() as u32 };
            prop_assert_eq!(RegionAccess::decode(&read.to_bytes(), &l).unwrap(), read);
            let reply = RegionReadReply { offset, region, data: data.clone() };
            prop_assert_eq!(RegionReadReply::decode(&reply.to_bytes(), &l).unwrap(), reply);
            let write = RegionWrite { offset, region, data };
            prop_assert_eq!(RegionWrite::decode(&write.to_bytes(), &l).unwrap(), write.clone());
            prop_assert_eq!(RegionWriteReply::decode(&write.reply().to_bytes(), &l).unwrap(), write.reply());
            let multi = RegionWriteMulti {
                writes: entries.iter().map(|(o, r, d)| WriteMultiEntry::new(*o, *r, d)).collect(),
            };
            prop_assert_eq!(RegionWriteMulti::decode(&multi.to_bytes(), &l).unwrap(), multi);
        }
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = RegionAccess::decode(bytes, &l);
                let _ = RegionReadReply::decode(bytes, &l);
                let _ = RegionWrite::decode(bytes, &l);
                let _ = RegionWriteReply::decode(bytes, &l);
                let _ = RegionWriteMulti::decode(bytes, &l);
                let _ = RegionWriteMultiReply::decode(bytes, &l);
            });
    }
}
