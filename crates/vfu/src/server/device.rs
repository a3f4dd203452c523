//! The [`Device`] trait: what a vfio-user server needs from the device it hosts.
//!
//! The server owns the socket, the message codec, file-descriptor passing and the mmaps of the
//! client's DMA windows; the device owns everything device-specific: regions, interrupts, reset,
//! and (optionally) live migration and DMA logging. Every method returns an [`Errno`] on failure,
//! which the server sends back as an error reply, and keeps serving.
//!
//! Methods take `&self`: the server calls them from its connection thread while the device's
//! own threads (e.g. I/O pollers) run; devices use interior mutability.

use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use shmem::Mapping;

use crate::error::errno;
use crate::irq::IrqAction;
use crate::region::RegionCap;
use crate::region::RegionInfoFlags;

/// A Linux errno value, as sent in error replies.
pub type Errno = u32;

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
    Eventfds {
        /// The action the eventfds are for (normally [`IrqAction::Trigger`]).
        action: IrqAction,
        /// First vector.
        start: u32,
        /// One entry per vector.
        fds: Vec<Option<OwnedFd>>,
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

/// One window of client memory the server mapped for the device.
#[derive(Debug)]
pub struct DmaRegion {
    /// Guest-physical (I/O virtual) address of the first byte.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// The client allows device writes.
    pub writable: bool,
    /// The mapped memory, or `None` when the client sent no file descriptor (the device cannot
    /// reach such a window directly; accesses to it fail).
    pub mapping: Option<Mapping>,
}

/// A device hosted by the vfio-user server.
pub trait Device: Send + Sync {
    /// Number of regions (`DEVICE_GET_INFO`); PCI devices have at least 9 (BARs, ROM, config,
    /// VGA).
    fn num_regions(&self) -> u32;
    /// Number of IRQ indices (`DEVICE_GET_INFO`); PCI devices have 5 (INTx, MSI, MSI-X, ERR,
    /// REQ).
    fn num_irqs(&self) -> u32;
    /// Describes region `index`, or `None` for an index beyond `num_regions`.
    fn region(&self, index: u32) -> Option<RegionDescription<'_>>;
    /// Reads `buf.len()` bytes at `offset` in region `index`.
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Writes `data` at `offset` in region `index`.
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno>;
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
    /// The client disconnected: drop every DMA window and interrupt fd, keep device state.
    fn disconnected(&self);

    /// Migration capabilities (`VFIO_MIGRATION_*` bits), or `None` if the device cannot migrate
    /// (migration features then answer ENOTTY).
    fn migration_flags(&self) -> Option<u64> {
        None
    }
    /// The current migration state (uAPI numbering).
    fn migration_state(&self) -> Result<u32, Errno> {
        Err(errno::ENOTTY)
    }
    /// Moves to migration state `state` (uAPI numbering), fully, before returning.
    fn set_migration_state(&self, _state: u32) -> Result<(), Errno> {
        Err(errno::ENOTTY)
    }
    /// `MIG_DATA_READ`: fills `buf` as far as the stream allows and returns the byte count; a
    /// count below `buf.len()` means "no more data now" (end of stream in STOP_COPY).
    fn migration_read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(errno::ENOTTY)
    }
    /// `MIG_DATA_WRITE`: appends `data` to the resuming stream.
    fn migration_write(&self, _data: &[u8]) -> Result<(), Errno> {
        Err(errno::ENOTTY)
    }
    /// `MIG_DATA_SIZE` (a kernel feature carried as an extension): estimated STOP_COPY bytes.
    fn migration_data_size(&self) -> Result<u64, Errno> {
        Err(errno::ENOTTY)
    }
    /// Whether the device implements the DMA-logging methods below; the server answers a
    /// `DEVICE_FEATURE` PROBE of the logging features with it (a probe must not start logging
    /// just to find out).
    fn dma_logging_supported(&self) -> bool {
        false
    }
    /// `DMA_LOGGING_START` with `page_size` and ranges `(iova, length)`; an empty list means
    /// "log every write" (vfio-user semantics).
    fn dma_logging_start(&self, _page_size: u64, _ranges: &[(u64, u64)]) -> Result<(), Errno> {
        Err(errno::ENOTTY)
    }
    /// `DMA_LOGGING_STOP`.
    fn dma_logging_stop(&self) -> Result<(), Errno> {
        Err(errno::ENOTTY)
    }
    /// `DMA_LOGGING_REPORT`: ORs the dirty bits of `[iova, iova + length)` at `page_size` into
    /// `bitmap` (bit i = page i) and clears them in the log.
    fn dma_logging_report(
        &self,
        _iova: u64,
        _length: u64,
        _page_size: u64,
        _bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        Err(errno::ENOTTY)
    }
}
