//! The PCI face of an NVMe function (a VF or the PF): configuration space, BAR0 layout, MSI-X,
//! and [`function::NvmeFunction`], a controller served as a PCI function with all of them. The
//! PF's configuration space also has an SR-IOV capability ([`sriov`]).
//! [`face`] holds the configuration space and MSI-X as the one piece of state that travels with a
//! migration.
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
//! The doorbell area is the only part the client may map, and only with shared doorbell
//! delivery ([`DoorbellDelivery::Shared`]); with trapped delivery it is not mappable either, so
//! every doorbell write arrives as a message that wakes the queue's worker. Everything else goes
//! through REGION_READ/REGION_WRITE. Region and IRQ indices are VFIO's ([`vfu::pci`]).
//!
//! [`DoorbellDelivery::Shared`]: nvme_device::controller::DoorbellDelivery::Shared

pub mod config;
pub mod face;
pub mod function;
pub mod msix;
pub mod sriov;

use nvme_spec::registers::Register;

/// Size of BAR0.
pub const BAR0_SIZE: u64 = 0x4000;
/// Offset of the doorbells in BAR0: where NVMe puts them ([`Register::DOORBELLS`]).
pub const DOORBELL_OFFSET: u64 = Register::DOORBELLS.0;
/// Size of the doorbell area: one page.
pub const DOORBELL_SIZE: u64 = 0x1000;
/// Offset of the MSI-X table in BAR0.
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
/// Offset of the MSI-X pending bit array in BAR0.
pub const MSIX_PBA_OFFSET: u64 = 0x3000;
/// Size of PCI configuration space (with PCI Express extended space).
pub const CONFIG_SIZE: u64 = 0x1000;
