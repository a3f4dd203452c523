//! The [`Device`] trait: what a vfio-user server needs from the device it hosts.
//!
//! The server owns the socket, the message codec, file-descriptor passing and the mmaps of the
//! client's DMA windows; the device owns everything device-specific: regions, interrupts, reset,
//! and (optionally) live migration and DMA logging, offered as one [`Migratable`] handle. Every
//! method returns an [`Errno`] on failure, which the server sends back as an error reply, and
//! keeps serving.
//!
//! Methods take `&self`: the server calls them from its connection thread while the device's
//! own threads (e.g. I/O pollers) run; devices use interior mutability.

use std::os::fd::BorrowedFd;

use shmem::WindowMemory;
use vfio_migration::Errno;

use crate::irq::IrqAction;
use crate::region::RegionCap;
use crate::region::RegionInfoFlags;

use super::eventfd::Eventfd;
use super::migratable::Migratable;

/// One region as the device describes it for `DEVICE_GET_REGION_INFO`.
#[derive(Debug)]
pub struct RegionDescription<'a> {
    /// READ / WRITE / MMAP (the server sets CAPS itself when `caps` is not empty).
    pub flags: RegionInfoFlags,
    /// Size in bytes (0 for a region that does not exist, e.g. an unused BAR).
    pub size: u64,
    /// File offset of the region's first byte in `fd`, for mmap.
    pub file_offset: u64,
    /// Capabilities, e.g. the sparse-mmap areas the client may map.
    pub caps: Vec<RegionCap>,
    /// The file the mmappable areas live in; sent with the reply.
    pub fd: Option<BorrowedFd<'a>>,
}

/// What `DEVICE_SET_IRQS` asks of one IRQ index.
#[derive(Debug)]
pub enum IrqRequest {
    /// Use these eventfds for vectors `start..start + fds.len()` (`None` de-assigns a vector).
    /// The server checked that each is an eventfd and made it non-blocking.
    Eventfds {
        /// The action the eventfds are for (normally [`IrqAction::Trigger`]).
        action: IrqAction,
        /// First vector.
        start: u32,
        /// One entry per vector.
        fds: Vec<Option<Eventfd>>,
    },
    /// Apply `action` to vectors `start..start + count` (where `mask` is `None`) or to the
    /// vectors whose flag is set.
    Action {
        /// What to do.
        action: IrqAction,
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// Per-vector selection (`DATA_BOOL`), or `None` for all (`DATA_NONE`).
        mask: Option<Vec<bool>>,
    },
    /// Disable every vector of the index (`DATA_NONE`, count 0).
    DisableAll,
}

/// One window of client memory the server made reachable for the device.
#[derive(Debug)]
pub struct DmaRegion {
    /// Guest-physical (I/O virtual) address of the first byte.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// The client allows device writes.
    pub writable: bool,
    /// The memory: a mapping of the client's file when it cannot shrink, file I/O on it
    /// otherwise, or `DMA_READ`/`DMA_WRITE` messages for a window the client mapped without a
    /// file descriptor. Every kind reports an unreachable access as an error, never a signal.
    pub memory: WindowMemory,
}

/// A device hosted by the vfio-user server.
pub trait Device: Send + Sync {
    /// Number of regions (`DEVICE_GET_INFO`); PCI devices have at least
    /// [`crate::pci::NUM_REGIONS`] (BARs, ROM, config, VGA).
    fn num_regions(&self) -> u32;
    /// Number of IRQ indices (`DEVICE_GET_INFO`); PCI devices have [`crate::pci::NUM_IRQS`]
    /// (INTx, MSI, MSI-X, ERR, REQ).
    fn num_irqs(&self) -> u32;
    /// Describes region `index`, or `None` for an index beyond `num_regions`.
    fn region(&self, index: u32) -> Option<RegionDescription<'_>>;
    /// Reads `buf.len()` bytes at `offset` in region `index`.
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Writes `data` at `offset` in region `index`.
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno>;
    /// Whether a `REGION_WRITE` of `len` bytes at `offset` in region `index` returns at once: it
    /// waits for no other thread (no lock held for long, no drain of the device) and sends the
    /// client nothing, e.g. a doorbell write that only wakes an I/O thread. The server may then
    /// carry it out on the thread that reads the socket, when no earlier request is pending,
    /// instead of handing it to its dispatching thread: a thread wake-up less per write, which
    /// is most of the cost of a trapped doorbell. `false` (the default) for everything else.
    fn write_returns_at_once(&self, index: u32, offset: u64, len: u64) -> bool {
        let _ = (index, offset, len);
        false
    }
    /// Describes IRQ index `index` as (count, flags bits of `IrqInfoFlags`), or `None` beyond
    /// `num_irqs`.
    fn irq_info(&self, index: u32) -> Option<(u32, u32)>;
    /// Applies a `DEVICE_SET_IRQS` to IRQ index `index`.
    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno>;
    /// The client mapped a DMA window.
    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno>;
    /// The client unmapped the window at exactly `iova`/`size`; when this returns the device
    /// must hold no reference to that memory.
    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno>;
    /// `DEVICE_RESET`.
    fn reset(&self) -> Result<(), Errno>;
    /// The client disconnected: drop every DMA window and interrupt fd, keep device state. The
    /// server calls this before [`Migratable::disconnected`].
    fn disconnected(&self);

    /// The device's live migration and DMA logging, or `None` if it cannot migrate (every
    /// migration and logging feature then answers ENOTTY, as the kernel does). Devices built on
    /// a [`vfio_migration::MigrationDriver`] return their [`super::DeviceMigration`].
    fn migration(&self) -> Option<&dyn Migratable> {
        None
    }

    /// A vfio-user client was accepted and is about to be served (for observers, e.g. an event
    /// log; the default does nothing).
    fn client_attached(&self) {}

    /// The attached client's connection ended, after [`Device::disconnected`] and
    /// [`Migratable::disconnected`]: `error` says why when the server dropped it rather than
    /// the client closing it (for observers; the default does nothing).
    fn client_detached(&self, error: Option<&dyn std::error::Error>) {
        let _ = error;
    }
}
