//! The migration stream: the opaque bytes a VMM carries from the source's MIG_DATA_READ to the
//! destination's MIG_DATA_WRITE. Pure encoding and decoding, no I/O.
//!
//! The stream is ours to define (DESIGN.md, "The migration path"). A VMM may cut it into pieces of
//! any size, and it may arrive corrupted, truncated, or from an incompatible device; the
//! destination detects each of these with a [`StreamError`] that names the problem. The source
//! writes it incrementally with a [`StreamEncoder`] (one bounded record at a time, so it never
//! holds a whole namespace in memory); the destination reads it with a [`StreamDecoder`] that
//! accepts any segmentation and keeps at most one record in memory, checks the source's device
//! with [`check_compatible`], and [`describe`] / [`describe_reader`] render a stream for
//! `vfio-nvme state decode`. [`PciFaceState`] is the `PciFace` record's payload: the VF driver's
//! state, as the `ControllerState` record carries NVMe's.
//!
//! # Format, version 1
//!
//! All integers are little-endian. A stream is one header, then records, the last of which is
//! the `End` record; nothing may follow it.
//!
//! ## Header
//!
//! | Offset          | Size   | Field                                                          |
//! |-----------------|--------|----------------------------------------------------------------|
//! | 0               | 8      | magic `b"VFNVMIG\0"` ([`MAGIC`])                               |
//! | 8               | 2      | format version, 1 ([`FORMAT_VERSION`])                         |
//! | 10              | 2      | reserved, 0                                                    |
//! | 12              | 4      | header length *H* in bytes, including the trailing CRC         |
//! | 16              | 2      | I/O queue pairs of the source controller                       |
//! | 18              | 2      | MQES: maximum queue entries, zero-based (as in CAP.MQES)       |
//! | 20              | 2      | MSI-X vectors                                                  |
//! | 22              | 1      | MDTS (as in Identify Controller; 0 = no limit)                 |
//! | 23              | 1      | reserved, 0                                                    |
//! | 24              | 2      | subsystem NQN length *Q* (≤ 256)                               |
//! | 26              | 2      | serial number length *S* (≤ 256)                               |
//! | 28              | 4      | namespace count *N* (≤ 1024)                                   |
//! | 32              | 16 × N | namespace table, ascending nsid (entry layout below)           |
//! | 32 + 16N        | Q      | subsystem NQN, UTF-8 (informational)                           |
//! | 32 + 16N + Q    | S      | serial number, UTF-8 (informational)                           |
//! | H − 4           | 4      | CRC32 (IEEE) of header bytes 0 .. H − 4                        |
//!
//! *H* must equal `32 + 16N + Q + S + 4`, so the header is at most 16 932 bytes.
//!
//! Namespace entry:
//!
//! | Offset | Size | Field                                                                     |
//! |--------|------|---------------------------------------------------------------------------|
//! | 0      | 4    | nsid (1 ..= 0xFFFF_FFFE)                                                  |
//! | 4      | 1    | LBA data size shift: 9 (512-byte blocks) or 12 (4 KiB blocks)             |
//! | 5      | 1    | flags: bit 0 = shared (its data is not in the stream); other bits 0       |
//! | 6      | 2    | reserved, 0                                                               |
//! | 8      | 8    | size in blocks (≥ 1)                                                      |
//!
//! ## Records
//!
//! | Offset | Size | Field                                                                     |
//! |--------|------|---------------------------------------------------------------------------|
//! | 0      | 1    | record type ([`RecordType`])                                              |
//! | 1      | 3    | reserved, 0                                                               |
//! | 4      | 4    | payload length *L*                                                        |
//! | 8      | L    | payload                                                                   |
//! | 8 + L  | 4    | CRC32 (IEEE) of record bytes 0 .. 8 + L (type, reserved, length, payload) |
//!
//! Payloads:
//!
//! | Type                  | Payload                                                    | *L*                  |
//! |-----------------------|------------------------------------------------------------|----------------------|
//! | 1 `UserData`          | nsid u32 @0, byte offset u64 @4, data @12                  | 12 ..= 12 + 1 MiB    |
//! | 2 `Deallocate`        | nsid u32 @0, byte offset u64 @4, byte length u64 @12       | 20                   |
//! | 3 `ControllerState`   | the TP4159 Get Controller State data, opaque here          | 1 ..= 64 MiB         |
//! | 4 `End`               | records before End u64 @0, total user-data bytes u64 @8    | 16                   |
//! | 5 `PciFace`           | the function's PCI face, below ([`PciFaceState`])           | 296 ..= 33 544       |
//!
//! `PciFace` payload, for a function with *N* MSI-X vectors (1 ≤ *N* ≤ 2048):
//!
//! | Offset                | Size         | Field                                                  |
//! |-----------------------|--------------|--------------------------------------------------------|
//! | 0                     | 2            | layout version, 1 ([`PCI_FACE_VERSION`])               |
//! | 2                     | 2            | *N*                                                    |
//! | 4                     | 4            | reserved, 0                                            |
//! | 8                     | 256          | PCI configuration space bytes 00h–FFh                  |
//! | 264                   | 16 × N       | the MSI-X table (address, data, vector control)        |
//! | 264 + 16N             | 8 × ⌈N/64⌉   | mask bits: vector *v* is bit *v* mod 64 of qword *v*/64 |
//! | 264 + 16N + 8⌈N/64⌉   | 8 × ⌈N/64⌉   | pending bits, the same way (the PBA's layout)          |
//!
//! The payload is exactly that long and no mask or pending bit is set for a vector beyond *N*.
//! Record type 5 came after version 1 was first written: a reader that does not know it
//! refuses such a stream with "unknown record type 5" (record types are closed).
//!
//! Rules the decoder enforces beyond the layout: user-data and deallocate ranges are non-empty,
//! block aligned, inside a namespace of the header that is not shared; records apply in stream
//! order (a later range overrides an earlier one, as pre-copy resends changed ranges); exactly one
//! `ControllerState` record precedes `End` (the saving side concatenates the Get Controller State
//! chunks it read under MDTS); at most one `PciFace` record (a source without a PCI face, such
//! as an older one, sends none, and the destination's function then keeps its own); `End`'s
//! totals equal the records and user-data bytes seen.

#![forbid(unsafe_code)]

mod compat;
mod decoder;
mod encoder;
mod error;
mod header;
mod ledger;
mod pci_face;
mod record;
mod report;
mod wire;

#[cfg(test)]
mod tests;

pub use compat::check_compatible;
pub use decoder::Item;
pub use decoder::ItemRef;
pub use decoder::PushError;
pub use decoder::StreamDecoder;
pub use encoder::DEALLOCATE_RECORD_BYTES;
pub use encoder::StreamEncoder;
pub use encoder::USER_DATA_OVERHEAD;
pub use error::RecordAt;
pub use error::StreamError;
pub use header::DeviceGeometry;
pub use header::NamespaceGeometry;
pub use header::StreamHeader;
pub use ledger::Summary;
pub use pci_face::MAX_MSIX_VECTORS;
pub use pci_face::PCI_FACE_CONFIG_BYTES;
pub use pci_face::PCI_FACE_VERSION;
pub use pci_face::PciFaceError;
pub use pci_face::PciFaceState;
pub use pci_face::pci_face_payload_len;
pub use record::Record;
pub use record::RecordType;
pub use report::ByteRange;
pub use report::EndTotals;
pub use report::NamespaceReport;
pub use report::PciFaceReport;
pub use report::RangeSummary;
pub use report::StreamReport;
pub use report::describe;
pub use report::describe_reader;

/// The first eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"VFNVMIG\0";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Most namespaces a header may list.
pub const MAX_NAMESPACES: usize = 1024;
/// Longest subsystem NQN or serial number a header may carry, in bytes.
pub const MAX_STRING_BYTES: usize = 256;
/// Most data bytes one `UserData` record may carry.
pub const MAX_USER_DATA_BYTES: usize = 1 << 20;
/// Largest `ControllerState` payload, in bytes.
pub const MAX_CONTROLLER_STATE_BYTES: usize = 64 << 20;
