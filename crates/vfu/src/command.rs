//! The vfio-user command numbers (spec v0.9.2, "Commands").

use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// The `command` field of the message header.
///
/// An open enum, so a header carrying any 16-bit value can be represented and answered with an
/// error reply instead of being dropped.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u16)]
pub enum Command {
    /// Protocol version and capability negotiation (client → server, first message).
    VERSION = 1,
    /// Make a range of client memory available for device DMA.
    DMA_MAP = 2,
    /// Withdraw a range made available by `DMA_MAP`.
    DMA_UNMAP = 3,
    /// Device flags and the number of regions and IRQ types.
    DEVICE_GET_INFO = 4,
    /// One region's flags, size, mmap offset and capability chain.
    DEVICE_GET_REGION_INFO = 5,
    /// ioeventfd/ioregionfd sub-regions of a region (optional; this project answers ENOTSUP).
    DEVICE_GET_REGION_IO_FDS = 6,
    /// One IRQ type's flags and vector count.
    DEVICE_GET_IRQ_INFO = 7,
    /// Configure, trigger, mask or unmask interrupts.
    DEVICE_SET_IRQS = 8,
    /// Read from a device region.
    REGION_READ = 9,
    /// Write to a device region.
    REGION_WRITE = 10,
    /// Read client memory (server → client).
    DMA_READ = 11,
    /// Write client memory (server → client).
    DMA_WRITE = 12,
    /// Reset the device.
    DEVICE_RESET = 13,
    /// Migration v1 dirty-page command: removed from the spec, still numbered by QEMU, SPDK and
    /// rust-vmm. Never supported here.
    DIRTY_PAGES = 14,
    /// Several small region writes in one message.
    REGION_WRITE_MULTI = 15,
    /// Get, set or probe a device feature (migration and DMA logging).
    DEVICE_FEATURE = 16,
    /// Read a chunk of the migration data stream (saving states).
    MIG_DATA_READ = 17,
    /// Write a chunk of the migration data stream (RESUMING).
    MIG_DATA_WRITE = 18,
}

impl Command {
    /// Whether this codec can decode messages of this command. `DIRTY_PAGES` and unassigned
    /// numbers are not.
    pub fn is_supported(self) -> bool {
        (1..=18).contains(&self.0) && self != Self::DIRTY_PAGES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_spec_table() {
        assert_eq!(Command::VERSION.0, 1);
        assert_eq!(Command::DEVICE_RESET.0, 13);
        assert_eq!(Command::DIRTY_PAGES.0, 14);
        assert_eq!(Command::REGION_WRITE_MULTI.0, 15);
        assert_eq!(Command::MIG_DATA_WRITE.0, 18);
        assert!(Command::MIG_DATA_READ.is_supported());
        assert!(!Command::DIRTY_PAGES.is_supported());
        assert!(!Command(0).is_supported());
        assert!(!Command(19).is_supported());
        assert_eq!(size_of::<Command>(), 2);
    }
}
