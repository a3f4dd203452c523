//! The stream header: who the source device was and the geometry the destination must match.

use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::FORMAT_VERSION;
use super::MAGIC;
use super::MAX_NAMESPACES;
use super::MAX_STRING_BYTES;
use super::error::StreamError;
use super::wire::CRC_BYTES;
use super::wire::HeaderFixed;
use super::wire::NS_FLAG_SHARED;
use super::wire::NamespaceEntry;

/// One namespace of a device, as the migration stream records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceGeometry {
    /// Namespace identifier.
    pub nsid: u32,
    /// log2 of the LBA data size: 9 or 12.
    pub lba_shift: u8,
    /// Size in logical blocks.
    pub blocks: u64,
    /// The namespace is on storage both hosts reach, so its data is not in the stream.
    pub shared: bool,
}

impl NamespaceGeometry {
    /// Bytes per logical block (0 for a shift beyond 63, which no valid namespace has).
    pub fn block_size(&self) -> u64 {
        1u64.checked_shl(u32::from(self.lba_shift)).unwrap_or(0)
    }

    /// Size in bytes (saturating; a valid namespace never saturates).
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size())
    }
}

/// What a destination controller must match to take over a source's state: the controller limits
/// a guest may have relied on and the namespace table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceGeometry {
    /// Number of I/O submission/completion queue pairs the controller supports.
    pub io_queue_pairs: u16,
    /// Maximum queue entries, zero-based (CAP.MQES).
    pub mqes: u16,
    /// MSI-X vectors of the function.
    pub msix_vectors: u16,
    /// Maximum data transfer size as in Identify Controller (power of two in units of the
    /// minimum page size; 0 = no limit).
    pub mdts: u8,
    /// The namespaces, in ascending nsid order.
    pub namespaces: Vec<NamespaceGeometry>,
}

impl DeviceGeometry {
    /// The namespace with `nsid`, if the table lists it.
    pub fn namespace(&self, nsid: u32) -> Option<&NamespaceGeometry> {
        self.namespaces.iter().find(|ns| ns.nsid == nsid)
    }
}

/// The stream header: the source device's identity (informational) and geometry (checked).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamHeader {
    /// The source's subsystem NQN (at most 256 bytes of UTF-8).
    pub subsystem_nqn: String,
    /// The source controller's serial number (at most 256 bytes of UTF-8).
    pub serial: String,
    /// Limits and namespaces the destination must match.
    pub geometry: DeviceGeometry,
}

/// Bytes before the namespace table.
pub(super) const FIXED_BYTES: usize = size_of::<HeaderFixed>();

impl StreamHeader {
    /// Checks every bound and rule a decoder enforces on a header.
    pub fn validate(&self) -> Result<(), StreamError> {
        check_bound(
            "subsystem NQN length",
            self.subsystem_nqn.len(),
            MAX_STRING_BYTES,
        )?;
        check_bound("serial number length", self.serial.len(), MAX_STRING_BYTES)?;
        check_bound(
            "namespace count",
            self.geometry.namespaces.len(),
            MAX_NAMESPACES,
        )?;
        let mut previous: Option<u32> = None;
        for (index, ns) in self.geometry.namespaces.iter().enumerate() {
            if ns.nsid == 0 || ns.nsid == u32::MAX {
                return Err(StreamError::InvalidNsid {
                    index,
                    nsid: ns.nsid,
                });
            }
            if let Some(previous) = previous.filter(|&p| p >= ns.nsid) {
                return Err(StreamError::NamespaceOrder {
                    nsid: ns.nsid,
                    previous,
                });
            }
            previous = Some(ns.nsid);
            if ns.lba_shift != 9 && ns.lba_shift != 12 {
                return Err(StreamError::BadLbaShift {
                    nsid: ns.nsid,
                    shift: ns.lba_shift,
                });
            }
            if ns.blocks == 0 || ns.blocks.checked_mul(ns.block_size()).is_none() {
                return Err(StreamError::NamespaceSize {
                    nsid: ns.nsid,
                    blocks: ns.blocks,
                    block_size: ns.block_size(),
                });
            }
        }
        Ok(())
    }

    /// The encoded header, after [`Self::validate`].
    pub fn encode(&self) -> Result<Vec<u8>, StreamError> {
        self.validate()?;
        let namespaces = &self.geometry.namespaces;
        let header_len = encoded_len(
            namespaces.len(),
            self.subsystem_nqn.len(),
            self.serial.len(),
        );
        // The bounds checked above keep every length far inside its field.
        let fixed = HeaderFixed {
            magic: MAGIC,
            version: FORMAT_VERSION,
            reserved0: 0,
            header_len: u32::try_from(header_len).unwrap_or(u32::MAX),
            io_queue_pairs: self.geometry.io_queue_pairs,
            mqes: self.geometry.mqes,
            msix_vectors: self.geometry.msix_vectors,
            mdts: self.geometry.mdts,
            reserved1: 0,
            nqn_len: u16::try_from(self.subsystem_nqn.len()).unwrap_or(u16::MAX),
            serial_len: u16::try_from(self.serial.len()).unwrap_or(u16::MAX),
            namespace_count: u32::try_from(namespaces.len()).unwrap_or(u32::MAX),
        };
        let mut out = Vec::with_capacity(header_len as usize);
        out.extend_from_slice(fixed.as_bytes());
        for ns in namespaces {
            let entry = NamespaceEntry {
                nsid: ns.nsid,
                lba_shift: ns.lba_shift,
                flags: if ns.shared { NS_FLAG_SHARED } else { 0 },
                reserved: [0; 2],
                blocks: ns.blocks,
            };
            out.extend_from_slice(entry.as_bytes());
        }
        out.extend_from_slice(self.subsystem_nqn.as_bytes());
        out.extend_from_slice(self.serial.as_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

fn check_bound(field: &'static str, value: usize, limit: usize) -> Result<(), StreamError> {
    if value > limit {
        return Err(StreamError::HeaderFieldTooLarge {
            field,
            value: value as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// The header length implied by its variable parts.
fn encoded_len(namespaces: usize, nqn: usize, serial: usize) -> u64 {
    (FIXED_BYTES + namespaces * size_of::<NamespaceEntry>() + nqn + serial + CRC_BYTES) as u64
}

/// Checks the magic (the caller has at least 8 bytes).
pub(super) fn check_magic(bytes: &[u8]) -> Result<(), StreamError> {
    let mut found = [0u8; 8];
    let n = bytes.len().min(8);
    found[..n].copy_from_slice(&bytes[..n]);
    if found != MAGIC {
        return Err(StreamError::BadMagic { found });
    }
    Ok(())
}

/// Checks the fixed part (the caller has at least [`FIXED_BYTES`] bytes) and returns the header
/// length it declares, which is then known to be consistent and bounded.
pub(super) fn check_fixed(bytes: &[u8]) -> Result<usize, StreamError> {
    check_magic(bytes)?;
    let (fixed, _) = HeaderFixed::read_from_prefix(bytes).map_err(|_| truncated_fixed(bytes))?;
    if fixed.version != FORMAT_VERSION {
        return Err(StreamError::UnsupportedVersion {
            found: fixed.version,
        });
    }
    if fixed.reserved0 != 0 {
        return Err(StreamError::HeaderReserved {
            field: "header bytes 10..12".into(),
            value: fixed.reserved0.into(),
        });
    }
    if fixed.reserved1 != 0 {
        return Err(StreamError::HeaderReserved {
            field: "header byte 23".into(),
            value: fixed.reserved1.into(),
        });
    }
    check_bound(
        "subsystem NQN length",
        fixed.nqn_len.into(),
        MAX_STRING_BYTES,
    )?;
    check_bound(
        "serial number length",
        fixed.serial_len.into(),
        MAX_STRING_BYTES,
    )?;
    let count = usize::try_from(fixed.namespace_count).unwrap_or(usize::MAX);
    check_bound("namespace count", count, MAX_NAMESPACES)?;
    let computed = encoded_len(count, fixed.nqn_len.into(), fixed.serial_len.into());
    if u64::from(fixed.header_len) != computed {
        return Err(StreamError::HeaderLengthMismatch {
            declared: fixed.header_len,
            computed,
        });
    }
    Ok(computed as usize)
}

fn truncated_fixed(bytes: &[u8]) -> StreamError {
    StreamError::Truncated {
        item: "stream header".into(),
        have: bytes.len() as u64,
        need: FIXED_BYTES as u64,
    }
}

/// Decodes a complete header (exactly the length [`check_fixed`] returned).
pub(super) fn decode(bytes: &[u8]) -> Result<StreamHeader, StreamError> {
    check_fixed(bytes)?;
    let (covered, crc) = bytes.split_at(bytes.len().saturating_sub(CRC_BYTES));
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| truncated_fixed(bytes))?);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(StreamError::HeaderCrc { stored, computed });
    }
    let (fixed, mut rest) =
        HeaderFixed::read_from_prefix(covered).map_err(|_| truncated_fixed(bytes))?;
    let mut namespaces = Vec::with_capacity(fixed.namespace_count as usize);
    for _ in 0..fixed.namespace_count {
        let (entry, tail) =
            NamespaceEntry::read_from_prefix(rest).map_err(|_| truncated_fixed(bytes))?;
        rest = tail;
        if entry.flags & !NS_FLAG_SHARED != 0 {
            return Err(StreamError::NamespaceFlags {
                nsid: entry.nsid,
                flags: entry.flags,
            });
        }
        if entry.reserved != [0; 2] {
            return Err(StreamError::HeaderReserved {
                field: format!("reserved bytes of namespace {} entry", entry.nsid),
                value: u16::from_le_bytes(entry.reserved).into(),
            });
        }
        namespaces.push(NamespaceGeometry {
            nsid: entry.nsid,
            lba_shift: entry.lba_shift,
            blocks: entry.blocks,
            shared: entry.flags & NS_FLAG_SHARED != 0,
        });
    }
    let (nqn, serial) = rest.split_at(usize::from(fixed.nqn_len).min(rest.len()));
    let header = StreamHeader {
        subsystem_nqn: string(nqn, "subsystem NQN")?,
        serial: string(serial, "serial number")?,
        geometry: DeviceGeometry {
            io_queue_pairs: fixed.io_queue_pairs,
            mqes: fixed.mqes,
            msix_vectors: fixed.msix_vectors,
            mdts: fixed.mdts,
            namespaces,
        },
    };
    header.validate()?;
    Ok(header)
}

fn string(bytes: &[u8], field: &'static str) -> Result<String, StreamError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StreamError::BadString { field })
}
