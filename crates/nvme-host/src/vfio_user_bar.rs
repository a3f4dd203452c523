//! The NVMe controller's BAR0 over a vfio-user connection, plus the two other things a host
//! driver needs from that connection: its DMA memory mapped into the device, and MSI-X
//! interrupts delivered on eventfds.
//!
//! * Registers (CAP, CC, CSTS, AQA, ASQ, ACQ, …) are REGION_READ/REGION_WRITE on region 0.
//! * Doorbells are atomic stores into the sparse-mmap area of BAR0 that covers offset 1000h,
//!   which the server backs with shared memory its pollers watch. A server that offers no such
//!   area (trapped doorbells) still works: each doorbell then becomes a posted REGION_WRITE
//!   (a message, no reply), sent beside the client so that a thread holding the client does
//!   not hold it up.
//! * [`dma_map_host_memory`] hands [`HostMemory`]'s memfd to the server at its IOVA;
//!   [`dma_map_host_memory_served`] maps it without the fd, served by DMA_READ/DMA_WRITE.
//! * [`MsixVectors`] creates one eventfd per MSI-X vector, registers them with SET_IRQS
//!   (index 2) and lets the driver wait on them.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nvme_spec::registers::Register;
use rustix::event::EventfdFlags;
use rustix::event::PollFd;
use rustix::event::PollFlags;
use rustix::event::Timespec;
use shmem::Mapping;
use vfu::client::Client;
use vfu::client::ClientError;
use vfu::client::PostedWriter;
use vfu::pci::BAR0_REGION_INDEX;
use vfu::pci::MSIX_IRQ_INDEX;

use crate::driver::Bar;
use crate::memory::HostMemory;

/// Why the vfio-user transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A request to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The device has no BAR0 region.
    #[error("the vfio-user device has no BAR0 (region {BAR0_REGION_INDEX})")]
    NoBar0,
    /// The host memory has no file descriptor, so the server cannot map it.
    #[error("host memory at IOVA {iova:#x} has no file descriptor to pass with DMA_MAP")]
    NoMemoryFd {
        /// The memory's IOVA.
        iova: u64,
    },
    /// The client's own view of host memory (to serve DMA_READ/DMA_WRITE from) failed.
    #[error("cannot map host memory at IOVA {iova:#x} a second time to serve DMA from: {source}")]
    MemoryView {
        /// The memory's IOVA.
        iova: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The device offers fewer MSI-X vectors than asked for.
    #[error("the device has {available} MSI-X vectors, {requested} were requested")]
    NotEnoughVectors {
        /// Vectors the driver asked for.
        requested: u32,
        /// Vectors the device has.
        available: u32,
    },
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd for MSI-X vector {vector}: {source}")]
    Eventfd {
        /// The vector.
        vector: u32,
        /// The OS error.
        source: io::Error,
    },
}

/// The doorbell part of BAR0, mapped from the server's shared memory.
#[derive(Debug)]
struct DoorbellArea {
    /// BAR0 offset of the mapping's first byte.
    start: u64,
    mapping: Mapping,
}

impl DoorbellArea {
    /// Stores `value` at BAR0 offset `offset`; false if the offset is outside the area.
    fn store(&self, offset: u64, value: u32) -> bool {
        let Some(relative) = offset.checked_sub(self.start) else {
            return false;
        };
        match self.mapping.atomic_u32(relative) {
            Ok(word) => {
                // Release: the SQ entries written before the doorbell are visible to the
                // device's poller once it sees the new tail.
                word.store(value, Ordering::Release);
                true
            }
            Err(_) => false,
        }
    }
}

/// [`Bar`] over a vfio-user [`Client`] shared with the rest of the host (migration, DMA maps).
#[derive(Debug)]
pub struct VfioUserBar {
    client: Arc<Mutex<Client>>,
    doorbells: Option<DoorbellArea>,
    /// Sends the doorbells of a server without a mapped doorbell area, without taking
    /// `client`: whoever holds it (a migration's batch of data reads) does not hold up the
    /// guest's doorbells.
    posted: PostedWriter,
}

impl VfioUserBar {
    /// Maps the doorbell area of BAR0 (the sparse-mmap area covering the first doorbell,
    /// [`Register::DOORBELLS`]) if the server offers one; otherwise doorbells fall back to
    /// posted REGION_WRITEs.
    pub fn new(client: Arc<Mutex<Client>>) -> Result<Self, TransportError> {
        let doorbells = {
            let guard = lock(&client);
            let info = guard
                .region_info(BAR0_REGION_INDEX)
                .ok_or(TransportError::NoBar0)?;
            let mmappable = info.flags.contains(vfu::region::RegionInfoFlags::MMAP);
            let areas = if mmappable {
                guard.map_sparse(BAR0_REGION_INDEX)?
            } else {
                Vec::new()
            };
            areas
                .into_iter()
                .find(|(start, mapping)| {
                    (*start..start.saturating_add(mapping.len())).contains(&Register::DOORBELLS.0)
                })
                .map(|(start, mapping)| DoorbellArea { start, mapping })
        };
        if doorbells.is_none() {
            tracing::debug!(
                "the server offers no mmappable doorbell area in BAR0 (trapped doorbells): every \
                 doorbell register write is a (posted) REGION_WRITE message; with shadow \
                 doorbells only those the controller asks for"
            );
        }
        let posted = lock(&client).posted_writer();
        Ok(Self {
            client,
            doorbells,
            posted,
        })
    }

    /// Whether doorbells go to shared memory (true) or through REGION_WRITE (false).
    pub fn doorbells_mapped(&self) -> bool {
        self.doorbells.is_some()
    }

    /// The client this BAR talks through.
    pub fn client(&self) -> &Arc<Mutex<Client>> {
        &self.client
    }

    fn read(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        lock(&self.client)
            .region_read(BAR0_REGION_INDEX, offset, len)
            .map_err(io::Error::other)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        lock(&self.client)
            .region_write(BAR0_REGION_INDEX, offset, data)
            .map_err(io::Error::other)
    }
}

impl Bar for VfioUserBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        let bytes = self.read(offset, 4)?;
        let word = <[u8; 4]>::try_from(bytes.as_slice()).map_err(io::Error::other)?;
        Ok(u32::from_ne_bytes(word))
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        let bytes = self.read(offset, 8)?;
        let word = <[u8; 8]>::try_from(bytes.as_slice()).map_err(io::Error::other)?;
        Ok(u64::from_ne_bytes(word))
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.write(offset, &value.to_ne_bytes())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        if self
            .doorbells
            .as_ref()
            .is_some_and(|area| area.store(offset, value))
        {
            return;
        }
        // Posted, as a CPU's doorbell write is: the server carries messages out in order, so
        // the next register read or migration request sees it. Not through the client, which
        // another thread may hold for a while.
        let posted = self
            .posted
            .region_write(BAR0_REGION_INDEX, offset, &value.to_ne_bytes());
        if let Err(err) = posted {
            tracing::warn!(offset, value, "doorbell REGION_WRITE failed: {err}");
        }
    }
}

/// Locks the shared client; a panic elsewhere while holding it leaves the client usable (its
/// state is per request), so poisoning is ignored.
fn lock(client: &Mutex<Client>) -> MutexGuard<'_, Client> {
    client.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps `memory` into the device at its IOVA, read-write, by passing its memfd (DMA_MAP).
pub fn dma_map_host_memory(client: &mut Client, memory: &HostMemory) -> Result<(), TransportError> {
    let fd = memory.mapping().fd().ok_or(TransportError::NoMemoryFd {
        iova: memory.iova(),
    })?;
    client.dma_map(memory.iova(), memory.len(), true, Some(fd), 0)?;
    Ok(())
}

/// Maps `memory` into the device at its IOVA, read-write, **without** passing its memfd: the
/// server reaches it with DMA_READ/DMA_WRITE messages, which `client` answers from its own
/// view of the memory (the spec's path for memory a server cannot map, as QEMU uses for some
/// windows). Slower than [`dma_map_host_memory`]; for tests of that path.
pub fn dma_map_host_memory_served(
    client: &mut Client,
    memory: &HostMemory,
) -> Result<(), TransportError> {
    let iova = memory.iova();
    let fd = memory
        .mapping()
        .fd()
        .ok_or(TransportError::NoMemoryFd { iova })?;
    let view = fd
        .try_clone_to_owned()
        .and_then(|fd| {
            let len = usize::try_from(memory.len()).map_err(io::Error::other)?;
            Mapping::from_fd(fd, 0, len, shmem::Protection::ReadWrite)
        })
        .map_err(|source| TransportError::MemoryView { iova, source })?;
    client.dma_map_served(iova, Arc::new(view), true)?;
    Ok(())
}

/// Withdraws the mapping made by [`dma_map_host_memory`] or [`dma_map_host_memory_served`]
/// (DMA_UNMAP).
pub fn dma_unmap_host_memory(
    client: &mut Client,
    memory: &HostMemory,
) -> Result<(), TransportError> {
    client.dma_unmap(memory.iova(), memory.len())?;
    Ok(())
}

/// One eventfd per MSI-X vector, registered with the server so that it signals vector `i` on
/// eventfd `i`.
#[derive(Debug)]
pub struct MsixVectors {
    fds: Vec<OwnedFd>,
}

impl MsixVectors {
    /// Creates `count` eventfds and registers them for vectors `0..count` (SET_IRQS, index 2,
    /// trigger). Fails if the device has fewer vectors.
    pub fn register(client: &mut Client, count: u32) -> Result<Self, TransportError> {
        let available = client.irq_info(MSIX_IRQ_INDEX)?.count;
        if count > available {
            return Err(TransportError::NotEnoughVectors {
                requested: count,
                available,
            });
        }
        let fds = (0..count)
            .map(|vector| {
                rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(
                    |e| TransportError::Eventfd {
                        vector,
                        source: e.into(),
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        client.set_irq_eventfds(MSIX_IRQ_INDEX, 0, &borrowed)?;
        Ok(Self { fds })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when no vector was registered.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The eventfd of `vector` (to add to the caller's own poll set).
    pub fn fd(&self, vector: usize) -> Option<BorrowedFd<'_>> {
        self.fds.get(vector).map(AsFd::as_fd)
    }

    /// Consumes the interrupts pending on `vector` without waiting: the number signalled since
    /// the last call (0 if none).
    pub fn take(&self, vector: usize) -> io::Result<u64> {
        let fd = self.vector_fd(vector)?;
        let mut count = [0; 8];
        match rustix::io::read(fd, &mut count) {
            Ok(_) => Ok(u64::from_ne_bytes(count)),
            Err(rustix::io::Errno::AGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout` for an interrupt on `vector` and consumes it: the number signalled
    /// (0 if the timeout passed first).
    pub fn wait(&self, vector: usize, timeout: Duration) -> io::Result<u64> {
        let fd = self.vector_fd(vector)?;
        let timeout = Timespec::try_from(timeout).map_err(io::Error::other)?;
        let mut poll = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut poll, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => Ok(0),
            Ok(_) => self.take(vector),
            Err(e) => Err(e.into()),
        }
    }

    fn vector_fd(&self, vector: usize) -> io::Result<BorrowedFd<'_>> {
        self.fd(vector).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "MSI-X vector {vector} is not registered ({} vectors)",
                    self.fds.len()
                ),
            )
        })
    }
}
