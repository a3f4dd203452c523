//! The PCI face of a virtual function: configuration space, BAR0 layout and MSI-X.
//!
//! BAR0 (64-bit memory, 16 KiB) holds, in order:
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0000h | 4 KiB | NVMe controller registers |
//! | 1000h | 4 KiB | doorbells — a sparse-mmap area backed by shared memory |
//! | 2000h | 16 B × vectors | MSI-X table |
//! | 3000h | 8 B × ⌈vectors/64⌉ | MSI-X pending bit array |
//!
//! The doorbell area is the only part the client may map; everything else goes through
//! REGION_READ/REGION_WRITE.

pub mod config;
pub mod msix;

/// vfio region index of BAR0.
pub const BAR0_REGION: u32 = 0;
/// vfio region index of PCI configuration space.
pub const CONFIG_REGION: u32 = 7;
/// Number of vfio regions of a PCI device (BAR0–5, ROM, config, VGA).
pub const NUM_REGIONS: u32 = 9;
/// vfio IRQ index of MSI-X.
pub const MSIX_IRQ_INDEX: u32 = 2;
/// Number of vfio IRQ indices of a PCI device (INTx, MSI, MSI-X, ERR, REQ).
pub const NUM_IRQS: u32 = 5;

/// Size of BAR0.
pub const BAR0_SIZE: u64 = 0x4000;
/// Offset of the doorbells in BAR0.
pub const DOORBELL_OFFSET: u64 = 0x1000;
/// Size of the doorbell area.
pub const DOORBELL_SIZE: u64 = 0x1000;
/// Offset of the MSI-X table in BAR0.
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
/// Offset of the MSI-X pending bit array in BAR0.
pub const MSIX_PBA_OFFSET: u64 = 0x3000;
/// Size of PCI configuration space (with PCI Express extended space).
pub const CONFIG_SIZE: u64 = 0x1000;
