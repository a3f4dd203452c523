//! Limits applied while decoding, so that no attacker-controlled count sizes an allocation or a
//! loop beyond what the receiver agreed to.

use crate::header::HEADER_SIZE;

/// Default `max_data_xfer_size` (spec: 1 MiB when the capability is absent).
pub const DEFAULT_MAX_DATA_XFER_SIZE: u32 = 1 << 20;
/// Default maximum number of entries in one `REGION_WRITE_MULTI` (QEMU's batch size,
/// `VFIO_USER_MULTI_MAX`).
pub const DEFAULT_MAX_WRITE_MULTI_ENTRIES: u32 = 200;
/// Default maximum number of ranges in `DMA_LOGGING_START`: one 4 KiB page of 16-byte ranges, the
/// kernel's limit (it answers E2BIG above it).
pub const DEFAULT_MAX_DMA_LOGGING_RANGES: u32 = 256;
/// Default maximum size of a DMA-logging report bitmap in bytes (QEMU's `max_bitmap_size`
/// default, 256 MiB, enough for 8 TiB of 4 KiB pages).
pub const DEFAULT_MAX_BITMAP_SIZE: u64 = 256 << 20;
/// Maximum data bytes in one `REGION_WRITE_MULTI` entry (the entry's fixed `data[8]`).
pub const WRITE_MULTI_MAX_DATA: u32 = 8;

/// Decoding limits. `max_data_xfer_size` is normally the value this side advertised in VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `count`/`size` of a REGION/DMA/MIG_DATA data transfer this side accepts.
    pub max_data_xfer_size: u32,
    /// Largest `wr_cnt` of `REGION_WRITE_MULTI`.
    pub max_write_multi_entries: u32,
    /// Largest `num_ranges` of `DMA_LOGGING_START`.
    pub max_dma_logging_ranges: u32,
    /// Largest DMA-logging report bitmap, in bytes.
    pub max_bitmap_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_xfer_size: DEFAULT_MAX_DATA_XFER_SIZE,
            max_write_multi_entries: DEFAULT_MAX_WRITE_MULTI_ENTRIES,
            max_dma_logging_ranges: DEFAULT_MAX_DMA_LOGGING_RANGES,
            max_bitmap_size: DEFAULT_MAX_BITMAP_SIZE,
        }
    }
}

impl Limits {
    /// A maximum message size (for the framer) that admits every message these limits allow
    /// except DMA-logging reports: header, a 16-byte access header and `max_data_xfer_size` bytes
    /// of data, or a full write-multi batch or logging-start range list if larger. A client that
    /// asks for large dirty bitmaps must size its framer for them.
    pub fn max_msg_size(&self) -> u32 {
        let data = 16 + u64::from(self.max_data_xfer_size);
        let multi = 8 + 24 * u64::from(self.max_write_multi_entries);
        let ranges = 8 + 16 + 16 * u64::from(self.max_dma_logging_ranges);
        let payload = data.max(multi).max(ranges).max(4096);
        u32::try_from(HEADER_SIZE as u64 + payload).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_message_size_fits_a_full_data_transfer() {
        let limits = Limits::default();
        assert_eq!(limits.max_msg_size(), 16 + 16 + (1 << 20));
        let many = Limits {
            max_write_multi_entries: 100_000,
            ..limits
        };
        assert_eq!(many.max_msg_size(), 16 + 8 + 24 * 100_000);
    }
}
