//! The self-describing block a verifying workload writes.
//!
//! Every logical block starts with a [`BlockHeader`] — magic, the ledger's run identifier, the
//! block's own LBA, the write's generation, the writing queue and its sequence number — followed
//! by a fill that is a deterministic function of (run, LBA, generation). A CRC32 covers the whole
//! block with the CRC field taken as zero. A read can therefore tell a block that is ours and
//! intact ([`BlockState::Valid`]) from zeros and from anything damaged ([`BlockState::Corrupt`]),
//! without keeping a copy of what was written.

use std::mem::offset_of;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::rng::SplitMix64;

/// `"VNVMEWLD"`: marks a block written by this workload.
pub const BLOCK_MAGIC: u64 = u64::from_le_bytes(*b"VNVMEWLD");

/// The header at the start of every written logical block (little-endian, native layout; the
/// crate does not build for big-endian targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlockHeader {
    /// [`BLOCK_MAGIC`].
    pub magic: u64,
    /// The ledger's run identifier: tells this run's blocks from an earlier run's.
    pub run: u64,
    /// The LBA the block was written to.
    pub lba: u64,
    /// The write's generation (from the ledger; newer writes have larger generations).
    pub generation: u64,
    /// The writing queue's command sequence number.
    pub seq: u64,
    /// The writing queue's identifier.
    pub queue: u16,
    /// Zero.
    pub reserved: u16,
    /// CRC32 (IEEE) of the whole logical block with this field as zero.
    pub crc: u32,
}

const _: () = assert!(size_of::<BlockHeader>() == 48);

/// Size of [`BlockHeader`]: the smallest logical block the workload can verify.
pub const HEADER_LEN: usize = size_of::<BlockHeader>();

const CRC_OFFSET: usize = offset_of!(BlockHeader, crc);

/// The CRC of `block` with the header's CRC field taken as zero.
fn checksum(block: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&block[..CRC_OFFSET]);
    hasher.update(&[0; 4]);
    hasher.update(&block[CRC_OFFSET + 4..]);
    hasher.finalize()
}

/// Seed of a block's fill: depends on every field a misplaced or stale copy would differ in.
fn fill_seed(run: u64, lba: u64, generation: u64) -> u64 {
    run ^ lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation.rotate_left(32)
}

/// Writes one stamped logical block into `block` (at least [`HEADER_LEN`] bytes): `header`
/// (its magic and CRC are set here), the deterministic fill, the CRC.
pub fn stamp_block(block: &mut [u8], header: BlockHeader) {
    let header = BlockHeader {
        magic: BLOCK_MAGIC,
        reserved: 0,
        crc: 0,
        ..header
    };
    block[..HEADER_LEN].copy_from_slice(header.as_bytes());
    let mut rng = SplitMix64::new(fill_seed(header.run, header.lba, header.generation));
    let mut words = block[HEADER_LEN..].chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = rng.next_u64().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
    let crc = checksum(block);
    block[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Stamps every `lba_bytes` block of `buf` (one command's data): block `i` gets LBA
/// `first.lba + i`, all share the other header fields.
pub fn stamp(buf: &mut [u8], lba_bytes: usize, first: BlockHeader) {
    for (i, block) in buf.chunks_exact_mut(lba_bytes).enumerate() {
        stamp_block(
            block,
            BlockHeader {
                lba: first.lba + i as u64,
                ..first
            },
        );
    }
}

/// What one logical block read back holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// All zeros: never written, or deallocated.
    Zeros,
    /// An intact block of ours (magic and CRC match).
    Valid(BlockHeader),
    /// Non-zero and not an intact block of ours; the reason says which check failed.
    Corrupt(&'static str),
}

/// Classifies one logical block read from the device (untrusted bytes: never panics).
pub fn inspect(block: &[u8]) -> BlockState {
    if block.iter().all(|&b| b == 0) {
        return BlockState::Zeros;
    }
    let Ok((header, _)) = BlockHeader::read_from_prefix(block) else {
        return BlockState::Corrupt("block shorter than the block header");
    };
    if header.magic != BLOCK_MAGIC {
        return BlockState::Corrupt("no block header (bad magic)");
    }
    if checksum(block) != header.crc {
        return BlockState::Corrupt("checksum mismatch");
    }
    BlockState::Valid(header)
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    fn header(lba: u64, generation: u64) -> BlockHeader {
        BlockHeader {
            magic: 0,
            run: 0xabcd,
            lba,
            generation,
            seq: 9,
            queue: 3,
            reserved: 0,
            crc: 0,
        }
    }

    #[test]
    fn layout() {
        assert_eq!(offset_of!(BlockHeader, magic), 0);
        assert_eq!(offset_of!(BlockHeader, run), 8);
        assert_eq!(offset_of!(BlockHeader, lba), 16);
        assert_eq!(offset_of!(BlockHeader, generation), 24);
        assert_eq!(offset_of!(BlockHeader, seq), 32);
        assert_eq!(offset_of!(BlockHeader, queue), 40);
        assert_eq!(offset_of!(BlockHeader, reserved), 42);
        assert_eq!(offset_of!(BlockHeader, crc), 44);
        let mut block = vec![0u8; 512];
        stamp_block(&mut block, header(0x1122, 5));
        assert_eq!(&block[..8], b"VNVMEWLD");
        assert_eq!(&block[16..24], &0x1122u64.to_le_bytes());
        assert_eq!(&block[24..32], &5u64.to_le_bytes());
        assert_eq!(&block[40..42], &3u16.to_le_bytes());
    }

    #[test]
    fn stamped_blocks_inspect_valid_and_damage_is_seen() {
        let mut buf = vec![0u8; 3 * 520];
        stamp(&mut buf, 520, header(100, 7));
        for (i, block) in buf.chunks_exact(520).enumerate() {
            let BlockState::Valid(h) = inspect(block) else {
                panic!("block {i} not valid");
            };
            assert_eq!(h.lba, 100 + i as u64);
            assert_eq!(h.generation, 7);
            assert_eq!(h.magic, BLOCK_MAGIC);
        }
        // The fill depends on the LBA and the generation.
        assert_ne!(buf[HEADER_LEN..520], buf[520 + HEADER_LEN..1040]);
        let mut again = vec![0u8; 520];
        stamp_block(&mut again, header(100, 8));
        assert_ne!(again[HEADER_LEN..], buf[HEADER_LEN..520]);

        for pos in [0, 20, CRC_OFFSET, 300, 519] {
            let mut bad = buf[..520].to_vec();
            bad[pos] ^= 0x40;
            assert!(
                matches!(inspect(&bad), BlockState::Corrupt(_)),
                "flip at {pos} unnoticed"
            );
        }
        assert_eq!(inspect(&[0u8; 512]), BlockState::Zeros);
        assert_eq!(
            inspect(&[1u8; 16]),
            BlockState::Corrupt("block shorter than the block header")
        );
        assert_eq!(
            inspect(&[1u8; 512]),
            BlockState::Corrupt("no block header (bad magic)")
        );
    }

    #[test]
    fn fuzz_inspect() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|input: &[u8]| {
                let _ = inspect(input);
            });
    }
}
