//! A ledger saved to a file: what a run wrote, so that another process can re-verify a server
//! later (the source after an aborted migration, the destination after a successful one).
//!
//! The file is a [`LayoutHeader`] followed by one little-endian `u64` per I/O unit: the
//! unit's raw ledger word (0 = not written by the run, `u64::MAX` = unknown, anything else the
//! newest acknowledged generation). A CRC32 covers the header (with its CRC field as zero)
//! and the words. [`decode`] treats the bytes as untrusted: every field is checked, nothing
//! panics, and nothing is allocated before the length is known to match.

use std::mem::offset_of;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::block::HEADER_LEN;
use super::config::MAX_UNITS;
use super::ledger::Baseline;
use super::ledger::Ledger;

/// `"VNVMELAY"`: marks a saved workload layout.
pub const LAYOUT_MAGIC: u64 = u64::from_le_bytes(*b"VNVMELAY");

/// The layout format this code writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// The start of a layout file (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LayoutHeader {
    /// [`LAYOUT_MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// The namespace the run used.
    pub nsid: u32,
    /// The run identifier stamped into every block the run wrote.
    pub run: u64,
    /// First LBA of the range.
    pub lba_start: u64,
    /// End of the range (exclusive; whole units).
    pub lba_end: u64,
    /// Logical block size in bytes.
    pub lba_bytes: u64,
    /// Logical blocks per I/O unit.
    pub unit_blocks: u64,
    /// Number of unit words that follow.
    pub units: u64,
    /// 0: unwritten units hold earlier content; 1: the namespace started as zeros.
    pub baseline: u32,
    /// CRC32 (IEEE) of the header with this field as zero, then the unit words.
    pub crc: u32,
}

const _: () = assert!(size_of::<LayoutHeader>() == 72);

const CRC_OFFSET: usize = offset_of!(LayoutHeader, crc);

/// A layout read back from a file.
#[derive(Debug)]
pub struct SavedLayout {
    /// The namespace the run used.
    pub nsid: u32,
    /// The run's ledger: verify against it with [`verify_all`](super::verify_all).
    pub ledger: Ledger,
}

/// Why bytes are not a layout this code can use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Shorter than the header.
    #[error("{len} bytes are too short for a workload layout (the header alone is 72 bytes)")]
    TooShort {
        /// The length given.
        len: usize,
    },
    /// The magic is wrong.
    #[error("not a workload layout (no VNVMELAY magic at its start)")]
    BadMagic,
    /// Another format version.
    #[error("workload layout version {found}; this vfio-nvme reads version {LAYOUT_VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A header field that cannot describe a ledger.
    #[error("invalid workload layout: {0}")]
    Invalid(String),
    /// The length does not match the unit count.
    #[error("the layout holds {found} bytes of unit words, its header promises {expected}")]
    Length {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The checksum does not match: the file was damaged or truncated.
    #[error(
        "the layout's checksum does not match (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
    )]
    Checksum {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
}

fn checksum(header: &LayoutHeader, words: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let bytes = header.as_bytes();
    hasher.update(&bytes[..CRC_OFFSET]);
    hasher.update(&[0; 4]);
    hasher.update(&bytes[CRC_OFFSET + 4..]);
    hasher.update(words);
    hasher.finalize()
}

/// The layout of `ledger` (used on namespace `nsid`) as bytes for a file.
pub fn encode(ledger: &Ledger, nsid: u32) -> Vec<u8> {
    let lbas = ledger.lbas();
    let mut header = LayoutHeader {
        magic: LAYOUT_MAGIC,
        version: LAYOUT_VERSION,
        nsid,
        run: ledger.run(),
        lba_start: lbas.start,
        lba_end: lbas.end,
        lba_bytes: ledger.lba_bytes(),
        unit_blocks: ledger.unit_blocks(),
        units: ledger.units(),
        baseline: match ledger.baseline() {
            Baseline::Earlier => 0,
            Baseline::Zeros => 1,
        },
        crc: 0,
    };
    let words: Vec<u8> = ledger
        .raw_generations()
        .flat_map(u64::to_le_bytes)
        .collect();
    header.crc = checksum(&header, &words);
    let mut bytes = Vec::with_capacity(size_of::<LayoutHeader>() + words.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&words);
    bytes
}

/// Reads a layout written by [`encode`] (untrusted bytes: every field is checked).
pub fn decode(bytes: &[u8]) -> Result<SavedLayout, LayoutError> {
    let (header, words) = LayoutHeader::read_from_prefix(bytes)
        .map_err(|_| LayoutError::TooShort { len: bytes.len() })?;
    if header.magic != LAYOUT_MAGIC {
        return Err(LayoutError::BadMagic);
    }
    if header.version != LAYOUT_VERSION {
        return Err(LayoutError::Version {
            found: header.version,
        });
    }
    let invalid = |what: String| Err(LayoutError::Invalid(what));
    let baseline = match header.baseline {
        0 => Baseline::Earlier,
        1 => Baseline::Zeros,
        other => return invalid(format!("baseline {other} is neither 0 nor 1")),
    };
    if header.lba_bytes < HEADER_LEN as u64 || !header.lba_bytes.is_power_of_two() {
        return invalid(format!(
            "LBA size {} is not a power of two of at least {HEADER_LEN} bytes",
            header.lba_bytes
        ));
    }
    if header.unit_blocks == 0 || header.unit_blocks > 1 << 16 {
        return invalid(format!(
            "{} blocks per unit is outside 1..=65536",
            header.unit_blocks
        ));
    }
    if header.units == 0 || header.units > MAX_UNITS {
        return invalid(format!("{} units is outside 1..={MAX_UNITS}", header.units));
    }
    let span = header.units * header.unit_blocks;
    if header.lba_start.checked_add(span) != Some(header.lba_end) {
        return invalid(format!(
            "LBAs {}..{} are not {} units of {} blocks",
            header.lba_start, header.lba_end, header.units, header.unit_blocks
        ));
    }
    let expected = header.units * 8;
    if words.len() as u64 != expected {
        return Err(LayoutError::Length {
            expected,
            found: words.len() as u64,
        });
    }
    let computed = checksum(&header, words);
    if computed != header.crc {
        return Err(LayoutError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    let generations = words.chunks_exact(8).map(|w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        u64::from_le_bytes(word)
    });
    Ok(SavedLayout {
        nsid: header.nsid,
        ledger: Ledger::from_parts(
            header.lba_start..header.lba_end,
            header.lba_bytes,
            header.unit_blocks,
            header.run,
            baseline,
            generations,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Expected;

    fn sample() -> Ledger {
        let ledger = Ledger::new(16..48, 512, 8, Baseline::Zeros);
        let g = ledger.next_generation();
        ledger.acknowledge(1, g);
        ledger.mark_unknown(3);
        ledger
    }

    #[test]
    fn layout_offsets() {
        assert_eq!(offset_of!(LayoutHeader, version), 8);
        assert_eq!(offset_of!(LayoutHeader, nsid), 12);
        assert_eq!(offset_of!(LayoutHeader, run), 16);
        assert_eq!(offset_of!(LayoutHeader, lba_start), 24);
        assert_eq!(offset_of!(LayoutHeader, units), 56);
        assert_eq!(offset_of!(LayoutHeader, baseline), 64);
        assert_eq!(offset_of!(LayoutHeader, crc), 68);
        let bytes = encode(&sample(), 2);
        assert_eq!(&bytes[..8], b"VNVMELAY");
        assert_eq!(&bytes[12..16], &2u32.to_le_bytes());
        assert_eq!(bytes.len(), 72 + 4 * 8);
    }

    #[test]
    fn a_ledger_round_trips() {
        let ledger = sample();
        let saved = decode(&encode(&ledger, 2)).unwrap();
        assert_eq!(saved.nsid, 2);
        let back = saved.ledger;
        assert_eq!(back.run(), ledger.run());
        assert_eq!(back.lbas(), 16..48);
        assert_eq!((back.lba_bytes(), back.unit_blocks()), (512, 8));
        assert_eq!(back.baseline(), Baseline::Zeros);
        for unit in 0..4 {
            assert_eq!(back.expected(unit), ledger.expected(unit), "unit {unit}");
        }
        assert_eq!(back.expected(3), Expected::Unknown);
        assert_eq!(back.written().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn damage_is_refused_with_its_reason() {
        let bytes = encode(&sample(), 1);
        assert_eq!(
            decode(&bytes[..10]).unwrap_err(),
            LayoutError::TooShort { len: 10 }
        );
        assert_eq!(
            decode(&bytes[..bytes.len() - 8]).unwrap_err(),
            LayoutError::Length {
                expected: 32,
                found: 24
            }
        );
        let mut flipped = bytes.clone();
        flipped[80] ^= 1;
        assert!(matches!(
            decode(&flipped).unwrap_err(),
            LayoutError::Checksum { .. }
        ));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic).unwrap_err(), LayoutError::BadMagic);
        let mut version = bytes.clone();
        version[8] = 9;
        assert_eq!(
            decode(&version).unwrap_err(),
            LayoutError::Version { found: 9 }
        );
        let mut range = bytes;
        range[32] ^= 1; // lba_end
        assert!(matches!(
            decode(&range).unwrap_err(),
            LayoutError::Invalid(_)
        ));
    }

    #[test]
    fn fuzz_decode() {
        let valid = encode(&sample(), 1);
        bolero::check!()
            .with_iterations(2000)
            .for_each(|input: &[u8]| {
                let _ = decode(input);
                // The same damage applied to a valid layout.
                let mut bytes = valid.clone();
                for (i, b) in input.iter().enumerate().take(bytes.len()) {
                    bytes[(i * 7) % valid.len()] ^= b;
                }
                let _ = decode(&bytes);
            });
    }
}
