//! Everything that can be wrong with a migration stream or with the device it came from.

use core::fmt;

use super::FORMAT_VERSION;
use super::MAGIC;
use super::pci_face::PciFaceError;
use super::record::RecordType;

/// Where a record sits in the stream, for error messages: "UserData record 3 at byte 16932".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordAt {
    /// Zero-based index of the record among the records after the header.
    pub index: u64,
    /// Byte offset of the record's first byte from the start of the stream.
    pub offset: u64,
    /// The record's type.
    pub record_type: RecordType,
}

impl fmt::Display for RecordAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} record {} at byte {}",
            self.record_type, self.index, self.offset
        )
    }
}

/// A migration stream is malformed, incomplete, or from a device this one cannot become.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The first eight bytes are not [`MAGIC`].
    #[error(
        "not a vfio-nvme migration stream: bad magic {found:02x?}, expected {:02x?}",
        MAGIC
    )]
    BadMagic {
        /// The first eight bytes of the stream.
        found: [u8; 8],
    },
    /// The stream was written by a format version this build cannot read.
    #[error(
        "unsupported migration stream format version {found}; this build reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
    },
    /// A bounded header field is over its bound.
    #[error("stream header: {field} is {value}, more than the limit of {limit}")]
    HeaderFieldTooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest allowed value.
        limit: u64,
    },
    /// The header length field disagrees with the lengths and counts in the header.
    #[error(
        "stream header: header length field says {declared} bytes, but its namespace count and string lengths make {computed}"
    )]
    HeaderLengthMismatch {
        /// The header length field.
        declared: u32,
        /// The length the other fields imply.
        computed: u64,
    },
    /// A reserved header field is not zero.
    #[error("stream header: {field} is {value:#x}, must be zero")]
    HeaderReserved {
        /// Which reserved field.
        field: String,
        /// Its value.
        value: u64,
    },
    /// The header's CRC does not match its contents.
    #[error("stream header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// The CRC in the stream.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// A header string is not UTF-8.
    #[error("stream header: the {field} is not valid UTF-8")]
    BadString {
        /// "subsystem NQN" or "serial number".
        field: &'static str,
    },
    /// A namespace entry has a reserved nsid.
    #[error(
        "stream header: namespace entry {index} has nsid {nsid:#x}, which is not a valid namespace id"
    )]
    InvalidNsid {
        /// Position in the namespace table.
        index: usize,
        /// The nsid.
        nsid: u32,
    },
    /// The namespace table is not in strictly ascending nsid order.
    #[error(
        "stream header: namespace {nsid} follows namespace {previous}; the table must list each nsid once, ascending"
    )]
    NamespaceOrder {
        /// The out-of-order nsid.
        nsid: u32,
        /// The entry before it.
        previous: u32,
    },
    /// A namespace has an unsupported block size.
    #[error(
        "stream header: namespace {nsid} has LBA data size shift {shift}; only 9 (512-byte) and 12 (4096-byte) blocks are supported"
    )]
    BadLbaShift {
        /// The namespace.
        nsid: u32,
        /// The shift.
        shift: u8,
    },
    /// A namespace's size is zero or does not fit in 64 bits of bytes.
    #[error(
        "stream header: namespace {nsid} has {blocks} blocks of {block_size} bytes, not a valid size"
    )]
    NamespaceSize {
        /// The namespace.
        nsid: u32,
        /// Its size in blocks.
        blocks: u64,
        /// Its block size.
        block_size: u64,
    },
    /// A namespace entry has flag bits this version does not define.
    #[error(
        "stream header: namespace {nsid} has flags {flags:#04x}; only bit 0 (shared) is defined"
    )]
    NamespaceFlags {
        /// The namespace.
        nsid: u32,
        /// The flags byte.
        flags: u8,
    },
    /// A record has a type this build does not know.
    #[error("record {index} at byte {offset}: unknown record type {record_type}")]
    UnknownRecordType {
        /// Zero-based record index.
        index: u64,
        /// Byte offset of the record.
        offset: u64,
        /// The type byte.
        record_type: u8,
    },
    /// A record's reserved bytes are not zero.
    #[error("{at}: reserved bytes are {value:02x?}, must be zero")]
    RecordReserved {
        /// The record.
        at: RecordAt,
        /// The reserved bytes.
        value: [u8; 3],
    },
    /// A record's payload length is over its type's limit.
    #[error("{at}: payload length {length} exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record.
        at: RecordAt,
        /// The payload length field.
        length: u64,
        /// The type's limit.
        limit: u64,
    },
    /// A record's payload length is under its type's minimum.
    #[error("{at}: payload length {length} is below the minimum of {min} bytes")]
    RecordTooShort {
        /// The record.
        at: RecordAt,
        /// The payload length field.
        length: u64,
        /// The type's minimum.
        min: u64,
    },
    /// A record's CRC does not match its contents.
    #[error("{at}: CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    RecordCrc {
        /// The record.
        at: RecordAt,
        /// The CRC in the stream.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// A record names a namespace the header does not list.
    #[error("{at}: namespace {nsid} is not in the stream header")]
    UnknownNamespace {
        /// The record.
        at: RecordAt,
        /// The nsid.
        nsid: u32,
    },
    /// A record carries data of a shared namespace, whose data never travels in the stream.
    #[error("{at}: namespace {nsid} is on shared storage; its data must not be in the stream")]
    SharedNamespaceData {
        /// The record.
        at: RecordAt,
        /// The nsid.
        nsid: u32,
    },
    /// A record's byte range is empty.
    #[error("{at}: empty byte range at offset {offset} of namespace {nsid}")]
    EmptyRange {
        /// The record.
        at: RecordAt,
        /// The namespace.
        nsid: u32,
        /// The range's offset.
        offset: u64,
    },
    /// A record's byte range is not block aligned.
    #[error(
        "{at}: byte range {offset}+{length} of namespace {nsid} is not aligned to its {block_size}-byte blocks"
    )]
    Misaligned {
        /// The record.
        at: RecordAt,
        /// The namespace.
        nsid: u32,
        /// The range's offset.
        offset: u64,
        /// The range's length.
        length: u64,
        /// The namespace's block size.
        block_size: u64,
    },
    /// A record's byte range extends past the end of its namespace.
    #[error(
        "{at}: byte range {offset}+{length} lies outside namespace {nsid}, which has {namespace_bytes} bytes"
    )]
    OutsideNamespace {
        /// The record.
        at: RecordAt,
        /// The namespace.
        nsid: u32,
        /// The range's offset.
        offset: u64,
        /// The range's length.
        length: u64,
        /// The namespace's size in bytes.
        namespace_bytes: u64,
    },
    /// A second `ControllerState` record.
    #[error("{at}: a second controller state (the first was record {first})")]
    DuplicateControllerState {
        /// The second record.
        at: RecordAt,
        /// Index of the first.
        first: u64,
    },
    /// A `PciFace` payload does not have its layout.
    #[error("{at}: {error}")]
    PciFace {
        /// The record.
        at: RecordAt,
        /// What is wrong with it.
        #[source]
        error: PciFaceError,
    },
    /// A second `PciFace` record.
    #[error("{at}: a second PCI face (the first was record {first})")]
    DuplicatePciFace {
        /// The second record.
        at: RecordAt,
        /// Index of the first.
        first: u64,
    },
    /// `End` came without a `ControllerState` record before it.
    #[error("{at}: the stream ends without a ControllerState record")]
    MissingControllerState {
        /// The End record.
        at: RecordAt,
    },
    /// `End`'s totals disagree with what the stream held.
    #[error("{at}: End record says {declared} {field}, but the stream held {counted}")]
    EndMismatch {
        /// The End record.
        at: RecordAt,
        /// "records" or "user-data bytes".
        field: &'static str,
        /// The total in the End record.
        declared: u64,
        /// The total the decoder counted.
        counted: u64,
    },
    /// Bytes follow the `End` record.
    #[error("data after the End record, starting at byte {offset}")]
    DataAfterEnd {
        /// Byte offset of the first byte after End.
        offset: u64,
    },
    /// The stream stopped in the middle of an item.
    #[error(
        "truncated stream: {item} is incomplete: {have} of {need} bytes present, {} missing",
        .need.saturating_sub(*.have)
    )]
    Truncated {
        /// The incomplete item, e.g. "UserData record 3 at byte 16932 (1048588-byte payload)".
        item: String,
        /// Bytes of it received.
        have: u64,
        /// Bytes it needs (for a header or record header not yet fully read: the bytes needed
        /// to learn its length).
        need: u64,
    },
    /// The stream stopped between records, before `End`.
    #[error(
        "truncated stream: it stops after {records} records at byte {offset} without an End record"
    )]
    MissingEnd {
        /// Records received.
        records: u64,
        /// Stream bytes received.
        offset: u64,
    },
    /// The destination has a different number of namespaces.
    #[error(
        "device mismatch: source has {source_count} namespaces, destination has {destination_count}"
    )]
    NamespaceCountMismatch {
        /// Namespaces in the stream header.
        source_count: usize,
        /// Namespaces on the destination.
        destination_count: usize,
    },
    /// A source namespace does not exist on the destination.
    #[error("device mismatch: namespace {nsid} of the source does not exist on the destination")]
    NamespaceMissing {
        /// The nsid.
        nsid: u32,
    },
    /// A namespace's size or block size differs.
    #[error(
        "device mismatch: namespace {nsid}: source has {source_blocks} blocks of {source_block_size} bytes, destination has {destination_blocks} blocks of {destination_block_size} bytes"
    )]
    NamespaceGeometryMismatch {
        /// The namespace.
        nsid: u32,
        /// Blocks on the source.
        source_blocks: u64,
        /// Block size on the source.
        source_block_size: u64,
        /// Blocks on the destination.
        destination_blocks: u64,
        /// Block size on the destination.
        destination_block_size: u64,
    },
    /// A namespace is shared on one side and local on the other.
    #[error(
        "device mismatch: namespace {nsid} is {} on the source but {} on the destination",
        if *.source_shared { "shared" } else { "local" },
        if *.source_shared { "local" } else { "shared" }
    )]
    NamespaceSharingMismatch {
        /// The namespace.
        nsid: u32,
        /// Whether the source marks it shared.
        source_shared: bool,
    },
    /// A controller limit of the destination is below the source's.
    #[error(
        "device mismatch: destination supports {destination_value} {limit}, the source has {source_value}"
    )]
    LimitTooSmall {
        /// The limit, e.g. "I/O queue pairs".
        limit: &'static str,
        /// The source's value.
        source_value: u64,
        /// The destination's value.
        destination_value: u64,
    },
    /// The destination's maximum data transfer size is smaller than the source's.
    #[error(
        "device mismatch: destination MDTS {destination_mdts} allows smaller transfers than the source's MDTS {source_mdts} (0 means no limit)"
    )]
    MdtsTooSmall {
        /// The source's MDTS.
        source_mdts: u8,
        /// The destination's MDTS.
        destination_mdts: u8,
    },
}
