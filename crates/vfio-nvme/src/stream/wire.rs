//! The fixed-size pieces of the stream as `zerocopy` structures, and the record framing writer.
//! Offsets are documented in the module table of [`super`] and checked by the tests below.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::record::RecordType;

#[cfg(target_endian = "big")]
compile_error!("the migration stream maps little-endian fields onto native integers");

/// The fixed first 32 bytes of the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct HeaderFixed {
    pub magic: [u8; 8],
    pub version: u16,
    pub reserved0: u16,
    pub header_len: u32,
    pub io_queue_pairs: u16,
    pub mqes: u16,
    pub msix_vectors: u16,
    pub mdts: u8,
    pub reserved1: u8,
    pub nqn_len: u16,
    pub serial_len: u16,
    pub namespace_count: u32,
}

const _: () = assert!(size_of::<HeaderFixed>() == 32);

/// One entry of the header's namespace table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct NamespaceEntry {
    pub nsid: u32,
    pub lba_shift: u8,
    pub flags: u8,
    pub reserved: [u8; 2],
    pub blocks: u64,
}

const _: () = assert!(size_of::<NamespaceEntry>() == 16);

/// Bit 0 of [`NamespaceEntry::flags`]: the namespace is on shared storage.
pub(super) const NS_FLAG_SHARED: u8 = 1;

/// The 8 bytes in front of every record payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct RecordHeader {
    pub record_type: u8,
    pub reserved: [u8; 3],
    pub length: u32,
}

const _: () = assert!(size_of::<RecordHeader>() == 8);

/// Bytes of the CRC that follows the header and every record.
pub(super) const CRC_BYTES: usize = 4;

/// The start of a `UserData` payload; the data follows.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct UserDataPrefix {
    pub nsid: u32,
    pub offset: u64,
}

const _: () = assert!(size_of::<UserDataPrefix>() == 12);

/// The `Deallocate` payload.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct DeallocatePayload {
    pub nsid: u32,
    pub offset: u64,
    pub length: u64,
}

const _: () = assert!(size_of::<DeallocatePayload>() == 20);

/// The `End` payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct EndPayload {
    pub records: u64,
    pub user_data_bytes: u64,
}

const _: () = assert!(size_of::<EndPayload>() == 16);

/// Bytes the framing adds to a payload: the record header in front, the CRC behind.
pub(super) const FRAMING_BYTES: usize = size_of::<RecordHeader>() + CRC_BYTES;

/// The header of a record of `record_type` with a `payload_len`-byte payload.
///
/// The caller has checked the payload length against the type's bound, which is far below
/// `u32::MAX`.
pub(super) fn record_header(record_type: RecordType, payload_len: usize) -> RecordHeader {
    RecordHeader {
        record_type: record_type as u8,
        reserved: [0; 3],
        length: u32::try_from(payload_len).unwrap_or(u32::MAX),
    }
}

/// Writes one framed record — header, the payload given in `parts` (concatenated), CRC — at
/// the front of `out` and returns its length. `out` has room for it (the caller sized it with
/// [`FRAMING_BYTES`]).
pub(super) fn write_record_into(out: &mut [u8], record_type: RecordType, parts: &[&[u8]]) -> usize {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let total = length + FRAMING_BYTES;
    let record = &mut out[..total];
    let mut at = size_of::<RecordHeader>();
    record[..at].copy_from_slice(record_header(record_type, length).as_bytes());
    for part in parts {
        record[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let crc = crc32fast::hash(&record[..at]);
    record[at..].copy_from_slice(&crc.to_le_bytes());
    total
}

/// Appends one framed record: header, the payload given in `parts` (concatenated), CRC.
pub(super) fn write_record(out: &mut Vec<u8>, record_type: RecordType, parts: &[&[u8]]) {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let start = out.len();
    out.resize(start + length + FRAMING_BYTES, 0);
    write_record_into(&mut out[start..], record_type, parts);
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn header_fixed_offsets() {
        assert_eq!(offset_of!(HeaderFixed, magic), 0);
        assert_eq!(offset_of!(HeaderFixed, version), 8);
        assert_eq!(offset_of!(HeaderFixed, reserved0), 10);
        assert_eq!(offset_of!(HeaderFixed, header_len), 12);
        assert_eq!(offset_of!(HeaderFixed, io_queue_pairs), 16);
        assert_eq!(offset_of!(HeaderFixed, mqes), 18);
        assert_eq!(offset_of!(HeaderFixed, msix_vectors), 20);
        assert_eq!(offset_of!(HeaderFixed, mdts), 22);
        assert_eq!(offset_of!(HeaderFixed, reserved1), 23);
        assert_eq!(offset_of!(HeaderFixed, nqn_len), 24);
        assert_eq!(offset_of!(HeaderFixed, serial_len), 26);
        assert_eq!(offset_of!(HeaderFixed, namespace_count), 28);
    }

    #[test]
    fn namespace_entry_offsets() {
        assert_eq!(offset_of!(NamespaceEntry, nsid), 0);
        assert_eq!(offset_of!(NamespaceEntry, lba_shift), 4);
        assert_eq!(offset_of!(NamespaceEntry, flags), 5);
        assert_eq!(offset_of!(NamespaceEntry, reserved), 6);
        assert_eq!(offset_of!(NamespaceEntry, blocks), 8);
    }

    #[test]
    fn record_offsets() {
        assert_eq!(offset_of!(RecordHeader, record_type), 0);
        assert_eq!(offset_of!(RecordHeader, reserved), 1);
        assert_eq!(offset_of!(RecordHeader, length), 4);
        assert_eq!(offset_of!(UserDataPrefix, nsid), 0);
        assert_eq!(offset_of!(UserDataPrefix, offset), 4);
        assert_eq!(offset_of!(DeallocatePayload, nsid), 0);
        assert_eq!(offset_of!(DeallocatePayload, offset), 4);
        assert_eq!(offset_of!(DeallocatePayload, length), 12);
        assert_eq!(offset_of!(EndPayload, records), 0);
        assert_eq!(offset_of!(EndPayload, user_data_bytes), 8);
    }

    #[test]
    fn fields_are_little_endian() {
        let p = DeallocatePayload {
            nsid: 0x0403_0201,
            offset: 0x0807_0605_0000_0000,
            length: 1,
        };
        assert_eq!(
            p.as_bytes(),
            [1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn write_record_frames_and_checksums() {
        let mut out = vec![0xEE];
        write_record(&mut out, RecordType::ControllerState, &[b"ab", b"c"]);
        let mut expected = vec![0xEE, 3, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'c'];
        let crc = crc32fast::hash(&expected[1..]);
        expected.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(out, expected);
    }
}
