//! A fake device for tests of anything that talks to a vfio-user server (feature `test-utils`,
//! the way `virtio-queue` exports its mock driver): the server's own tests, the client's, and
//! those of host-side code such as an NVMe driver's BAR over vfio-user.
//!
//! A [`FakeDevice`] is configured with [`FakeDevice::builder`]:
//!
//! * regions ([`FakeRegion`]), each backed by a memfd the test reads and writes through
//!   [`FakeDevice::region_memory`]; a region can offer sparse-mmap areas, and then the memfd
//!   goes to the client with the region info;
//! * IRQ indices with their vector count and flags; the eventfds the client assigns are kept,
//!   and [`FakeDevice::signal`] raises one;
//! * optionally migration ([`FakeMigration`]): the real [`DeviceMigration`] adapter over a
//!   scripted driver whose saving sessions stream a fixed blob and whose resuming sessions record
//!   what they receive.
//!
//! Guest memory goes through a [`shmem::AddressSpace`], as in a real device, so DMA logging sees
//! the fake's [`FakeDevice::dma_write`]s. Everything the client did is recorded for assertions:
//! DMA windows, region writes (with the server thread that carried each out), resets,
//! disconnects, masked and triggered vectors, arcs run. A region can declare its writes as
//! returning at once ([`FakeRegion::writes_at_once`]), and a test can hold a region's writes
//! ([`FakeDevice::hold_writes`]) to play a device busy with one.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use shmem::AddressSpace;
use shmem::MapError;
use shmem::Mapping;
use vfio_migration::ArcFailure;
use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfio_migration::MigrationDriver;
use vfio_migration::MigrationFlags;
use vfio_migration::NewSession;
use vfio_migration::SessionKind;
use vfio_migration::test_support::RecordingSink;
use vfio_migration::test_support::ScriptedSource;
use vfio_migration::test_support::Step;

use crate::irq::IrqAction;
use crate::irq::IrqInfoFlags;
use crate::region::RegionCap;
use crate::region::RegionInfoFlags;
use crate::region::SparseMmapArea;
use crate::server::Device;
use crate::server::DeviceMigration;
use crate::server::DmaRegion;
use crate::server::Eventfd;
use crate::server::IrqRequest;
use crate::server::Migratable;
use crate::server::RegionDescription;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One region of a [`FakeDevice`]: readable and writable, backed by a memfd.
#[derive(Clone, Debug)]
pub struct FakeRegion {
    size: u64,
    areas: Vec<SparseMmapArea>,
    at_once: bool,
}

impl FakeRegion {
    /// A readable, writable region of `size` bytes, reached only by REGION_READ/WRITE.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            areas: Vec::new(),
            at_once: false,
        }
    }

    /// Its writes return at once ([`Device::write_returns_at_once`]), like doorbells, so the
    /// server may carry them out on its reader thread.
    pub fn writes_at_once(mut self) -> Self {
        self.at_once = true;
        self
    }

    /// Also lets the client mmap the `(offset, size)` areas: the region gets the MMAP flag and
    /// a sparse-mmap capability, and its memfd (file offset 0 = region offset 0) goes with the
    /// region info.
    pub fn mmap_areas(mut self, areas: &[(u64, u64)]) -> Self {
        self.areas = areas
            .iter()
            .map(|&(offset, size)| SparseMmapArea { offset, size })
            .collect();
        self
    }
}

/// The migration of a [`FakeDevice`]: a scripted driver behind the real adapter.
#[derive(Clone, Debug)]
pub struct FakeMigration {
    flags: MigrationFlags,
    stream: Vec<u8>,
    stop_copy_length: u64,
}

impl FakeMigration {
    /// A device with `flags` whose every saving session streams `stream` and then ends (in
    /// STOP_COPY; in PRE_COPY it then has "no data yet"); MIG_DATA_SIZE answers the stream's
    /// length.
    pub fn new(flags: MigrationFlags, stream: impl Into<Vec<u8>>) -> Self {
        let stream = stream.into();
        Self {
            flags,
            stop_copy_length: stream.len() as u64,
            stream,
        }
    }
}

/// The scripted driver: opens the sessions the arcs require and records the arcs.
struct FakeDriver {
    config: FakeMigration,
    resumed: RecordingSink,
    arcs: Arc<Mutex<Vec<(DeviceState, DeviceState)>>>,
}

/// The scripted driver never fails.
#[derive(Debug, thiserror::Error)]
#[error("the fake migration driver does not fail")]
struct NeverFails;

impl vfio_migration::ToErrno for NeverFails {
    fn errno(&self) -> Errno {
        Errno::EIO
    }
}

impl MigrationDriver for FakeDriver {
    type Error = NeverFails;

    fn flags(&self) -> MigrationFlags {
        self.config.flags
    }

    fn arc(
        &mut self,
        from: DeviceState,
        to: DeviceState,
    ) -> Result<Option<NewSession>, ArcFailure<NeverFails>> {
        lock(&self.arcs).push((from, to));
        Ok(match vfio_migration::session_opened_by(from, to) {
            Some(SessionKind::Saving) => Some(NewSession::Saving(Box::new(ScriptedSource::new([
                Step::Data(self.config.stream.clone()),
            ])))),
            Some(SessionKind::Resuming) => Some(NewSession::Resuming {
                sink: Box::new(self.resumed.clone()),
                max_bytes: u64::MAX,
            }),
            None => None,
        })
    }

    fn stop_copy_length(&mut self) -> Result<u64, NeverFails> {
        Ok(self.config.stop_copy_length)
    }

    fn reset(&mut self) -> Result<(), NeverFails> {
        Ok(())
    }
}

/// Builds a [`FakeDevice`].
#[derive(Clone, Debug, Default)]
pub struct FakeDeviceBuilder {
    regions: Vec<Option<FakeRegion>>,
    irqs: Vec<(u32, IrqInfoFlags)>,
    migration: Option<FakeMigration>,
}

impl FakeDeviceBuilder {
    /// Region `index` is `region`; missing lower indices are regions of size 0.
    pub fn region(mut self, index: u32, region: FakeRegion) -> Self {
        let index = index as usize;
        if self.regions.len() <= index {
            self.regions.resize(index + 1, None);
        }
        self.regions[index] = Some(region);
        self
    }

    /// At least `count` regions (the missing ones of size 0), e.g. [`crate::pci::NUM_REGIONS`].
    pub fn regions(mut self, count: u32) -> Self {
        if self.regions.len() < count as usize {
            self.regions.resize(count as usize, None);
        }
        self
    }

    /// IRQ index `index` has `count` vectors with `flags`; missing lower indices have none.
    pub fn irq(mut self, index: u32, count: u32, flags: IrqInfoFlags) -> Self {
        let index = index as usize;
        if self.irqs.len() <= index {
            self.irqs.resize(index + 1, (0, IrqInfoFlags::empty()));
        }
        self.irqs[index] = (count, flags);
        self
    }

    /// The device can migrate (and log DMA), as `migration` scripts.
    pub fn migration(mut self, migration: FakeMigration) -> Self {
        self.migration = Some(migration);
        self
    }

    /// The device, its regions zeroed, no DMA window, no eventfd, migration in RUNNING.
    ///
    /// # Errors
    /// A region's memfd cannot be created.
    pub fn build(self) -> io::Result<FakeDevice> {
        let regions = self
            .regions
            .into_iter()
            .enumerate()
            .map(|(index, region)| match region {
                Some(region) if region.size > 0 => {
                    let len = usize::try_from(region.size).map_err(io::Error::other)?;
                    let memory = Mapping::memfd(&format!("fake-region-{index}"), len)?;
                    Ok(Some((region, memory)))
                }
                _ => Ok(None),
            })
            .collect::<io::Result<_>>()?;
        let eventfds = self
            .irqs
            .iter()
            .map(|&(count, _)| (0..count).map(|_| None).collect())
            .collect();
        let space = Arc::new(AddressSpace::new());
        let resumed = RecordingSink::default();
        let arcs = Arc::default();
        let migration = match self.migration {
            Some(config) => {
                let driver = FakeDriver {
                    config,
                    resumed: resumed.clone(),
                    arcs: Arc::clone(&arcs),
                };
                Some(DeviceMigration::new(driver, Arc::clone(&space)).map_err(io::Error::other)?)
            }
            None => None,
        };
        Ok(FakeDevice {
            regions,
            irqs: self.irqs,
            eventfds: Mutex::new(eventfds),
            masked: Mutex::new(BTreeSet::new()),
            triggered: Mutex::new(BTreeMap::new()),
            space,
            windows: Mutex::new(Vec::new()),
            resets: AtomicUsize::new(0),
            disconnects: AtomicUsize::new(0),
            writes: Mutex::new(Vec::new()),
            held: Mutex::new(BTreeSet::new()),
            released: Condvar::new(),
            migration,
            resumed,
            arcs,
        })
    }
}

/// A DMA window the client mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeWindow {
    /// First guest address.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// The client allows device writes.
    pub writable: bool,
    /// The device reaches the window through a mapping (the client passed a file that cannot
    /// shrink); otherwise through file I/O or DMA_READ/DMA_WRITE messages.
    pub mapped: bool,
}

/// A region write the device carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeWrite {
    /// The region.
    pub region: u32,
    /// Offset in the region.
    pub offset: u64,
    /// The name of the thread that called [`Device::region_write`], if it has one.
    pub thread: Option<String>,
}

/// A configurable vfio-user device that records what its client does; see the module docs.
pub struct FakeDevice {
    /// Per region: its description and memory (`None` for a region of size 0).
    regions: Vec<Option<(FakeRegion, Mapping)>>,
    irqs: Vec<(u32, IrqInfoFlags)>,
    /// Per IRQ index, one slot per vector.
    eventfds: Mutex<Vec<Vec<Option<Eventfd>>>>,
    /// Masked vectors, by (index, vector).
    masked: Mutex<BTreeSet<(u32, u32)>>,
    /// SET_IRQS trigger actions, by (index, vector).
    triggered: Mutex<BTreeMap<(u32, u32), u32>>,
    space: Arc<AddressSpace>,
    windows: Mutex<Vec<FakeWindow>>,
    resets: AtomicUsize,
    disconnects: AtomicUsize,
    /// Every region write done, in order.
    writes: Mutex<Vec<FakeWrite>>,
    /// Regions whose writes wait until released, and the writes waiting.
    held: Mutex<BTreeSet<u32>>,
    released: Condvar,
    migration: Option<DeviceMigration<FakeDriver>>,
    resumed: RecordingSink,
    arcs: Arc<Mutex<Vec<(DeviceState, DeviceState)>>>,
}

impl std::fmt::Debug for FakeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDevice")
            .field("regions", &self.regions.len())
            .field("irqs", &self.irqs)
            .field("migration", &self.migration)
            .finish_non_exhaustive()
    }
}

impl FakeDevice {
    /// A builder for a device with no regions, no IRQs and no migration.
    pub fn builder() -> FakeDeviceBuilder {
        FakeDeviceBuilder::default()
    }

    /// The memory behind region `index`, as the device sees it (`None` for a region of size 0).
    pub fn region_memory(&self, index: u32) -> Option<&Mapping> {
        let (_, memory) = self.regions.get(index as usize)?.as_ref()?;
        Some(memory)
    }

    /// Signals the eventfd the client assigned to `vector` of IRQ `index`; false if it has none.
    pub fn signal(&self, index: u32, vector: u32) -> bool {
        let eventfds = lock(&self.eventfds);
        match eventfds
            .get(index as usize)
            .and_then(|slots| slots.get(vector as usize))
        {
            Some(Some(fd)) => fd.signal(),
            _ => false,
        }
    }

    /// Number of eventfds assigned to IRQ `index`.
    pub fn eventfd_count(&self, index: u32) -> usize {
        lock(&self.eventfds)
            .get(index as usize)
            .map_or(0, |slots| slots.iter().flatten().count())
    }

    /// The masked vectors of IRQ `index`.
    pub fn masked(&self, index: u32) -> Vec<u32> {
        lock(&self.masked)
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|&(_, vector)| vector)
            .collect()
    }

    /// How often `vector` of IRQ `index` was triggered by a SET_IRQS action.
    pub fn triggered(&self, index: u32, vector: u32) -> u32 {
        lock(&self.triggered)
            .get(&(index, vector))
            .copied()
            .unwrap_or(0)
    }

    /// The DMA windows the client mapped, in mapping order.
    pub fn windows(&self) -> Vec<FakeWindow> {
        lock(&self.windows).clone()
    }

    /// Reads guest memory at `iova` as a device DMA would (EFAULT outside the windows or when the
    /// memory behind one cannot be reached).
    pub fn dma_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.space.read(iova, buf).map_err(|_| Errno::EFAULT)
    }

    /// Writes guest memory at `iova` as a device DMA would, seen by DMA logging (EFAULT outside
    /// the reachable windows or into a read-only one).
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), Errno> {
        self.space.write(iova, data).map_err(|_| Errno::EFAULT)
    }

    /// Calls of [`Device::reset`].
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    /// Calls of [`Device::disconnected`].
    pub fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }

    /// Everything the resuming sessions received, in order.
    pub fn resumed(&self) -> Vec<u8> {
        lock(&self.resumed.data).clone()
    }

    /// While `errno` is set, resuming sessions refuse every write with it (a destination that
    /// cannot take the stream).
    pub fn fail_resume_writes(&self, errno: Option<Errno>) {
        *lock(&self.resumed.fail_with) = errno;
    }

    /// The migration arcs the driver ran, in order.
    pub fn arcs(&self) -> Vec<(DeviceState, DeviceState)> {
        lock(&self.arcs).clone()
    }

    /// The region writes carried out so far, in order.
    pub fn region_writes(&self) -> Vec<FakeWrite> {
        lock(&self.writes).clone()
    }

    /// While `hold` is set, writes to region `index` wait (in the thread that carries them out)
    /// until it is cleared: a device busy with a slow register write.
    pub fn hold_writes(&self, index: u32, hold: bool) {
        let mut held = lock(&self.held);
        if hold {
            held.insert(index);
        } else {
            held.remove(&index);
        }
        self.released.notify_all();
    }

    fn memory(&self, index: u32) -> Result<&Mapping, Errno> {
        self.region_memory(index).ok_or(Errno::EINVAL)
    }
}

impl Device for FakeDevice {
    fn num_regions(&self) -> u32 {
        self.regions.len() as u32
    }

    fn num_irqs(&self) -> u32 {
        self.irqs.len() as u32
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        let region = self.regions.get(index as usize)?;
        Some(match region {
            None => RegionDescription {
                flags: RegionInfoFlags::empty(),
                size: 0,
                file_offset: 0,
                caps: Vec::new(),
                fd: None,
            },
            Some((region, memory)) => {
                let mut flags = RegionInfoFlags::READ | RegionInfoFlags::WRITE;
                let mut caps = Vec::new();
                let mut fd = None;
                if !region.areas.is_empty() {
                    flags |= RegionInfoFlags::MMAP;
                    caps.push(RegionCap::SparseMmap(region.areas.clone()));
                    fd = memory.fd();
                }
                RegionDescription {
                    flags,
                    size: region.size,
                    file_offset: 0,
                    caps,
                    fd,
                }
            }
        })
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.memory(index)?
            .read(offset, buf)
            .map_err(|_| Errno::EINVAL)
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        drop(
            self.released
                .wait_while(lock(&self.held), |held| held.contains(&index))
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.memory(index)?
            .write(offset, data)
            .map_err(|_| Errno::EINVAL)?;
        lock(&self.writes).push(FakeWrite {
            region: index,
            offset,
            thread: std::thread::current().name().map(str::to_owned),
        });
        Ok(())
    }

    fn write_returns_at_once(&self, index: u32, _offset: u64, _len: u64) -> bool {
        matches!(self.regions.get(index as usize), Some(Some((region, _))) if region.at_once)
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        let &(count, flags) = self.irqs.get(index as usize)?;
        Some((count, flags.bits()))
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        let mut eventfds = lock(&self.eventfds);
        let slots = eventfds.get_mut(index as usize).ok_or(Errno::EINVAL)?;
        match request {
            IrqRequest::Eventfds { action, start, fds } => {
                if action != IrqAction::Trigger {
                    return Err(Errno::ENOTSUP);
                }
                for (vector, fd) in (start as usize..).zip(fds) {
                    *slots.get_mut(vector).ok_or(Errno::EINVAL)? = fd;
                }
            }
            IrqRequest::Action {
                action,
                start,
                count,
                mask,
            } => {
                for (i, vector) in (start..start.saturating_add(count)).enumerate() {
                    if mask
                        .as_ref()
                        .is_some_and(|m| !m.get(i).copied().unwrap_or(false))
                    {
                        continue;
                    }
                    match action {
                        IrqAction::Mask => {
                            lock(&self.masked).insert((index, vector));
                        }
                        IrqAction::Unmask => {
                            lock(&self.masked).remove(&(index, vector));
                        }
                        IrqAction::Trigger => {
                            *lock(&self.triggered).entry((index, vector)).or_default() += 1;
                            if let Some(Some(fd)) = slots.get(vector as usize) {
                                fd.signal();
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
        let window = FakeWindow {
            iova: region.iova,
            size: region.size,
            writable: region.writable,
            mapped: region.memory.is_mapped(),
        };
        self.space
            .map_memory(region.iova, region.memory)
            .map_err(|err| match err {
                MapError::Overlap { .. } => Errno::EEXIST,
                _ => Errno::EINVAL,
            })?;
        lock(&self.windows).push(window);
        Ok(())
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        let mut windows = lock(&self.windows);
        let position = windows
            .iter()
            .position(|w| (w.iova, w.size) == (iova, size))
            .ok_or(Errno::EINVAL)?;
        self.space.unmap(iova, size).map_err(|_| Errno::EINVAL)?;
        windows.remove(position);
        Ok(())
    }

    fn reset(&self) -> Result<(), Errno> {
        if let Some(migration) = &self.migration {
            migration.reset();
        }
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn disconnected(&self) {
        self.space.unmap_all();
        lock(&self.windows).clear();
        for slots in lock(&self.eventfds).iter_mut() {
            slots.iter_mut().for_each(|slot| *slot = None);
        }
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }

    fn migration(&self) -> Option<&dyn Migratable> {
        self.migration.as_ref().map(|m| m as &dyn Migratable)
    }
}
