//! A small PCI device for the server tests: config space (region 7, 256 bytes, vendor/device
//! id), BAR0 of 16 KiB backed by a memfd with a sparse-mmap area at 0x1000..0x2000, five IRQ
//! indices (MSI-X with 4 vectors) whose eventfds it records and can trigger, DMA windows it
//! reads and writes, a toy migration (STOP_COPY|PRE_COPY) and DMA logging.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use shmem::Mapping;
use vfu::error::errno;
use vfu::feature::MigrationFlags;
use vfu::irq::IrqAction;
use vfu::irq::IrqInfoFlags;
use vfu::region::RegionCap;
use vfu::region::RegionInfoFlags;
use vfu::region::SparseMmapArea;
use vfu::server::Device;
use vfu::server::DmaRegion;
use vfu::server::Errno;
use vfu::server::IrqRequest;
use vfu::server::RegionDescription;

/// PCI vendor id in config space.
pub const VENDOR_ID: u16 = 0x1b36;
/// PCI device id in config space.
pub const DEVICE_ID: u16 = 0x0010;
/// BAR0 region index.
pub const BAR0: u32 = 0;
/// Config space region index (`VFIO_PCI_CONFIG_REGION_INDEX`).
pub const CONFIG: u32 = 7;
/// Number of regions (BARs 0–5, ROM, config, VGA).
pub const NUM_REGIONS: u32 = 9;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 16 * 1024;
/// The sparse-mmap area of BAR0 (offset, size).
pub const MMAP_AREA: (u64, u64) = (0x1000, 0x1000);
/// Size of config space.
pub const CONFIG_SIZE: u64 = 256;
/// MSI-X IRQ index.
pub const MSIX: u32 = 2;
/// MSI-X vector count.
pub const MSIX_VECTORS: u32 = 4;
/// The blob `migration_read` streams.
pub const MIGRATION_BLOB: [u8; 100] = {
    let mut blob = [0; 100];
    let mut i = 0;
    while i < blob.len() {
        blob[i] = (i as u8).wrapping_mul(7);
        i += 1;
    }
    blob
};

/// Kernel `VFIO_DEVICE_STATE_RUNNING`.
pub const RUNNING: u32 = 2;

/// The test device. Everything is observable by the test through public helpers.
#[derive(Debug)]
pub struct TestDevice {
    bar0: Mapping,
    config: Mutex<[u8; CONFIG_SIZE as usize]>,
    /// Per IRQ index, one slot per vector.
    eventfds: Mutex<Vec<Vec<Option<OwnedFd>>>>,
    /// Masked MSI-X vectors.
    masked: Mutex<BTreeSet<u32>>,
    dma: Mutex<Vec<DmaRegion>>,
    state: AtomicU32,
    read_pos: AtomicUsize,
    resumed: Mutex<Vec<u8>>,
    /// DMA logging: page size and dirty page addresses.
    logging: Mutex<Option<(u64, BTreeSet<u64>)>>,
    /// Calls of `reset`.
    pub resets: AtomicUsize,
    /// Calls of `disconnected`.
    pub disconnects: AtomicUsize,
    /// Vectors triggered by an `Action` request, by (index, vector).
    triggered: Mutex<BTreeMap<(u32, u32), u32>>,
    /// Whether the device offers migration and DMA logging.
    migratable: bool,
}

impl TestDevice {
    /// A device in RUNNING with zeroed BARs and the ids in config space.
    pub fn new() -> Self {
        Self::with_migration(true)
    }

    /// The same device without migration or DMA logging (`migration_flags()` is `None` and the
    /// other migration methods keep their ENOTTY defaults).
    pub fn without_migration() -> Self {
        Self::with_migration(false)
    }

    fn with_migration(migratable: bool) -> Self {
        let mut config = [0; CONFIG_SIZE as usize];
        config[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
        config[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
        Self {
            bar0: Mapping::memfd("test-bar0", BAR0_SIZE as usize).expect("memfd for BAR0"),
            config: Mutex::new(config),
            eventfds: Mutex::new(
                (0..5)
                    .map(|i| (0..irq_count(i)).map(|_| None).collect())
                    .collect(),
            ),
            masked: Mutex::new(BTreeSet::new()),
            dma: Mutex::new(Vec::new()),
            state: AtomicU32::new(RUNNING),
            read_pos: AtomicUsize::new(0),
            resumed: Mutex::new(Vec::new()),
            logging: Mutex::new(None),
            resets: AtomicUsize::new(0),
            disconnects: AtomicUsize::new(0),
            triggered: Mutex::new(BTreeMap::new()),
            migratable,
        }
    }

    /// BAR0 as the device sees it.
    pub fn bar0(&self) -> &Mapping {
        &self.bar0
    }

    /// Signals the eventfd of MSI-X `vector`; false if none is assigned.
    pub fn trigger_msix(&self, vector: u32) -> bool {
        let eventfds = self.eventfds.lock().unwrap();
        match &eventfds[MSIX as usize][vector as usize] {
            Some(fd) => {
                rustix::io::write(fd, &1u64.to_ne_bytes()).expect("signal eventfd");
                true
            }
            None => false,
        }
    }

    /// Number of eventfds assigned to IRQ `index`.
    pub fn eventfd_count(&self, index: u32) -> usize {
        self.eventfds.lock().unwrap()[index as usize]
            .iter()
            .flatten()
            .count()
    }

    /// The masked MSI-X vectors.
    pub fn masked(&self) -> Vec<u32> {
        self.masked.lock().unwrap().iter().copied().collect()
    }

    /// How often `(index, vector)` was triggered by a SET_IRQS action.
    pub fn triggered(&self, index: u32, vector: u32) -> u32 {
        self.triggered
            .lock()
            .unwrap()
            .get(&(index, vector))
            .copied()
            .unwrap_or(0)
    }

    /// The mapped DMA windows as (iova, size, writable, has memory).
    pub fn windows(&self) -> Vec<(u64, u64, bool, bool)> {
        self.dma
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.iova, r.size, r.writable, r.mapping.is_some()))
            .collect()
    }

    /// Reads guest memory at `iova` through the mapped windows.
    pub fn dma_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let dma = self.dma.lock().unwrap();
        let (region, offset) = find(&dma, iova, buf.len() as u64)?;
        let mapping = region.mapping.as_ref().ok_or(errno::EFAULT)?;
        mapping.read(offset, buf).map_err(|_| errno::EFAULT)
    }

    /// Writes guest memory at `iova` through the mapped windows (and logs the dirty pages).
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), Errno> {
        let dma = self.dma.lock().unwrap();
        let (region, offset) = find(&dma, iova, data.len() as u64)?;
        let mapping = region.mapping.as_ref().ok_or(errno::EFAULT)?;
        mapping.write(offset, data).map_err(|_| errno::EFAULT)?;
        if let Some((page_size, dirty)) = self.logging.lock().unwrap().as_mut() {
            let first = iova / *page_size;
            let last = (iova + data.len() as u64 - 1) / *page_size;
            dirty.extend((first..=last).map(|p| p * *page_size));
        }
        Ok(())
    }

    /// The bytes received in RESUMING.
    pub fn resumed(&self) -> Vec<u8> {
        self.resumed.lock().unwrap().clone()
    }
}

fn find(dma: &[DmaRegion], iova: u64, len: u64) -> Result<(&DmaRegion, u64), Errno> {
    dma.iter()
        .find(|r| iova >= r.iova && iova.saturating_add(len) <= r.iova + r.size)
        .map(|r| (r, iova - r.iova))
        .ok_or(errno::EFAULT)
}

fn irq_count(index: u32) -> u32 {
    if index == MSIX { MSIX_VECTORS } else { 1 }
}

impl Device for TestDevice {
    fn num_regions(&self) -> u32 {
        NUM_REGIONS
    }

    fn num_irqs(&self) -> u32 {
        5
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        let rw = RegionInfoFlags::READ | RegionInfoFlags::WRITE;
        Some(match index {
            BAR0 => RegionDescription {
                flags: rw | RegionInfoFlags::MMAP,
                size: BAR0_SIZE,
                file_offset: 0,
                caps: vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                    offset: MMAP_AREA.0,
                    size: MMAP_AREA.1,
                }])],
                fd: self.bar0.fd(),
            },
            CONFIG => RegionDescription {
                flags: rw,
                size: CONFIG_SIZE,
                file_offset: 0,
                caps: Vec::new(),
                fd: None,
            },
            i if i < NUM_REGIONS => RegionDescription {
                flags: RegionInfoFlags::empty(),
                size: 0,
                file_offset: 0,
                caps: Vec::new(),
                fd: None,
            },
            _ => return None,
        })
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        match index {
            BAR0 => self.bar0.read(offset, buf).map_err(|_| errno::EINVAL),
            CONFIG => {
                let config = self.config.lock().unwrap();
                let start = offset as usize;
                buf.copy_from_slice(&config[start..start + buf.len()]);
                Ok(())
            }
            _ => Err(errno::EINVAL),
        }
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        match index {
            BAR0 => self.bar0.write(offset, data).map_err(|_| errno::EINVAL),
            CONFIG => {
                let mut config = self.config.lock().unwrap();
                let start = offset as usize;
                config[start..start + data.len()].copy_from_slice(data);
                Ok(())
            }
            _ => Err(errno::EINVAL),
        }
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        let flags = match index {
            0 => IrqInfoFlags::EVENTFD | IrqInfoFlags::MASKABLE | IrqInfoFlags::AUTOMASKED,
            1 | 2 => IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE,
            3 | 4 => IrqInfoFlags::EVENTFD,
            _ => return None,
        };
        Some((irq_count(index), flags.bits()))
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        let mut eventfds = self.eventfds.lock().unwrap();
        let slots = eventfds.get_mut(index as usize).ok_or(errno::EINVAL)?;
        match request {
            IrqRequest::Eventfds { action, start, fds } => {
                if action != IrqAction::Trigger {
                    return Err(errno::ENOTSUP);
                }
                for (i, fd) in fds.into_iter().enumerate() {
                    slots[start as usize + i] = fd;
                }
            }
            IrqRequest::Action {
                action,
                start,
                count,
                mask,
            } => {
                for vector in start..start + count {
                    if mask.as_ref().is_some_and(|m| !m[(vector - start) as usize]) {
                        continue;
                    }
                    match action {
                        IrqAction::Mask => {
                            self.masked.lock().unwrap().insert(vector);
                        }
                        IrqAction::Unmask => {
                            self.masked.lock().unwrap().remove(&vector);
                        }
                        IrqAction::Trigger => {
                            *self
                                .triggered
                                .lock()
                                .unwrap()
                                .entry((index, vector))
                                .or_default() += 1;
                            if let Some(fd) = &slots[vector as usize] {
                                rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes())
                                    .map_err(|_| errno::EIO)?;
                            }
                        }
                    }
                }
            }
            IrqRequest::DisableAll => slots.iter_mut().for_each(|slot| *slot = None),
        }
        Ok(())
    }

    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.dma.lock().unwrap().push(region);
        Ok(())
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        let mut dma = self.dma.lock().unwrap();
        let before = dma.len();
        dma.retain(|r| (r.iova, r.size) != (iova, size));
        if dma.len() == before {
            return Err(errno::EINVAL);
        }
        Ok(())
    }

    fn reset(&self) -> Result<(), Errno> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn disconnected(&self) {
        self.dma.lock().unwrap().clear();
        for slots in self.eventfds.lock().unwrap().iter_mut() {
            slots.iter_mut().for_each(|slot| *slot = None);
        }
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }

    fn migration_flags(&self) -> Option<u64> {
        self.migratable
            .then_some((MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY).bits())
    }

    fn migration_state(&self) -> Result<u32, Errno> {
        Ok(self.state.load(Ordering::SeqCst))
    }

    fn set_migration_state(&self, state: u32) -> Result<(), Errno> {
        // The toy machine only refuses the arc the kernel forbids outright.
        let current = self.state.load(Ordering::SeqCst);
        if current == 3 && state == 6 {
            return Err(errno::EINVAL);
        }
        self.state.store(state, Ordering::SeqCst);
        Ok(())
    }

    fn migration_read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let pos = self.read_pos.load(Ordering::SeqCst);
        let rest = &MIGRATION_BLOB[pos.min(MIGRATION_BLOB.len())..];
        let len = rest.len().min(buf.len());
        buf[..len].copy_from_slice(&rest[..len]);
        self.read_pos.store(pos + len, Ordering::SeqCst);
        Ok(len)
    }

    fn migration_write(&self, data: &[u8]) -> Result<(), Errno> {
        self.resumed.lock().unwrap().extend_from_slice(data);
        Ok(())
    }

    fn migration_data_size(&self) -> Result<u64, Errno> {
        Ok(MIGRATION_BLOB.len() as u64)
    }

    fn dma_logging_supported(&self) -> bool {
        self.migratable
    }

    fn dma_logging_start(&self, page_size: u64, _ranges: &[(u64, u64)]) -> Result<(), Errno> {
        let mut logging = self.logging.lock().unwrap();
        if logging.is_some() {
            return Err(errno::EBUSY);
        }
        *logging = Some((page_size, BTreeSet::new()));
        Ok(())
    }

    fn dma_logging_stop(&self) -> Result<(), Errno> {
        self.logging
            .lock()
            .unwrap()
            .take()
            .map(drop)
            .ok_or(errno::EINVAL)
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        let mut logging = self.logging.lock().unwrap();
        let (_, dirty) = logging.as_mut().ok_or(errno::EINVAL)?;
        let in_range: Vec<u64> = dirty
            .iter()
            .copied()
            .filter(|&page| page >= iova && page < iova + length)
            .collect();
        for page in in_range {
            let bit = (page - iova) / page_size;
            bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
            dirty.remove(&page);
        }
        Ok(())
    }
}
