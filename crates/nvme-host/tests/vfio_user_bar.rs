//! `nvme_host::vfio_user_bar` against the real vfio-user server hosting a small stand-in for an
//! NVMe controller's BAR0 (a memfd: registers below 1000h, the doorbell page above, optionally
//! mmappable), MSI-X eventfds and DMA windows.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use nvme_host::driver::Bar;
use nvme_host::memory::HostMemory;
use nvme_host::vfio_user_bar::MsixVectors;
use nvme_host::vfio_user_bar::TransportError;
use nvme_host::vfio_user_bar::VfioUserBar;
use nvme_host::vfio_user_bar::dma_map_host_memory;
use nvme_host::vfio_user_bar::dma_unmap_host_memory;
use shmem::Mapping;
use vfu::client::Client;
use vfu::error::errno;
use vfu::irq::IrqInfoFlags;
use vfu::region::RegionCap;
use vfu::region::RegionInfoFlags;
use vfu::region::SparseMmapArea;
use vfu::server::Device;
use vfu::server::DmaRegion;
use vfu::server::Errno;
use vfu::server::IrqRequest;
use vfu::server::RegionDescription;
use vfu::server::Server;

const BAR_SIZE: u64 = 0x4000;
const VECTORS: u32 = 8;

/// BAR0 in a memfd; the doorbell page (1000h–1FFFh) is offered for mmap when `mmap_doorbells`.
struct FakeController {
    bar: Mapping,
    mmap_doorbells: bool,
    msix: Mutex<Vec<Option<OwnedFd>>>,
    dma: Mutex<Vec<DmaRegion>>,
}

impl FakeController {
    fn new(mmap_doorbells: bool) -> Self {
        Self {
            bar: Mapping::memfd("fake-nvme-bar0", BAR_SIZE as usize).unwrap(),
            mmap_doorbells,
            msix: Mutex::new((0..VECTORS).map(|_| None).collect()),
            dma: Mutex::new(Vec::new()),
        }
    }

    fn word(&self, offset: u64) -> u32 {
        let mut bytes = [0; 4];
        self.bar.read(offset, &mut bytes).unwrap();
        u32::from_ne_bytes(bytes)
    }

    fn signal(&self, vector: usize) {
        let msix = self.msix.lock().unwrap();
        let fd = msix[vector].as_ref().expect("the vector has an eventfd");
        rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
    }
}

impl Device for FakeController {
    fn num_regions(&self) -> u32 {
        1
    }

    fn num_irqs(&self) -> u32 {
        3
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        let mut flags = RegionInfoFlags::READ | RegionInfoFlags::WRITE;
        let mut caps = Vec::new();
        if self.mmap_doorbells {
            flags |= RegionInfoFlags::MMAP;
            caps.push(RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x1000,
                size: 0x1000,
            }]));
        }
        (index == 0).then(|| RegionDescription {
            flags,
            size: BAR_SIZE,
            file_offset: 0,
            caps,
            fd: self.mmap_doorbells.then(|| self.bar.fd()).flatten(),
        })
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if index != 0 {
            return Err(errno::EINVAL);
        }
        self.bar.read(offset, buf).map_err(|_| errno::EINVAL)
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if index != 0 {
            return Err(errno::EINVAL);
        }
        self.bar.write(offset, data).map_err(|_| errno::EINVAL)
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        let count = if index == 2 { VECTORS } else { 1 };
        (index < 3).then_some((count, IrqInfoFlags::EVENTFD.bits()))
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        let mut msix = self.msix.lock().unwrap();
        match (index, request) {
            (2, IrqRequest::Eventfds { start, fds, .. }) => {
                for (i, fd) in fds.into_iter().enumerate() {
                    *msix.get_mut(start as usize + i).ok_or(errno::EINVAL)? = fd;
                }
                Ok(())
            }
            _ => Err(errno::ENOTSUP),
        }
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
        Ok(())
    }

    fn disconnected(&self) {
        self.dma.lock().unwrap().clear();
        self.msix
            .lock()
            .unwrap()
            .iter_mut()
            .for_each(|fd| *fd = None);
    }
}

/// A served [`FakeController`] and a client connected to it.
struct Setup {
    controller: Arc<FakeController>,
    client: Arc<Mutex<Client>>,
    stop: Arc<AtomicBool>,
    serving: Option<JoinHandle<()>>,
}

impl Setup {
    fn new(mmap_doorbells: bool) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path: PathBuf = std::env::temp_dir().join(format!(
            "nvme-host-bar-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let server = Server::bind(&path).unwrap();
        let controller = Arc::new(FakeController::new(mmap_doorbells));
        let stop = Arc::new(AtomicBool::new(false));
        let serving = {
            let device: Arc<dyn Device> = controller.clone();
            let stop = stop.clone();
            std::thread::spawn(move || server.serve(device, &stop).unwrap())
        };
        let client = Arc::new(Mutex::new(Client::connect(&path).unwrap()));
        Self {
            controller,
            client,
            stop,
            serving: Some(serving),
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.serving.take() {
            thread.join().unwrap();
        }
    }
}

#[test]
fn registers_go_by_message_and_doorbells_into_the_mapped_page() {
    let setup = Setup::new(true);
    let bar = VfioUserBar::new(setup.client.clone()).unwrap();
    assert!(bar.doorbells_mapped());

    bar.write32(0x14, 0x46_0001).unwrap();
    assert_eq!(setup.controller.word(0x14), 0x46_0001);
    assert_eq!(bar.read32(0x14).unwrap(), 0x46_0001);
    bar.write64(0x28, 0x1234_5678_9abc_d000).unwrap();
    assert_eq!(bar.read64(0x28).unwrap(), 0x1234_5678_9abc_d000);

    // SQ 1 tail doorbell (stride 0): a store into shared memory, seen by the device at once.
    bar.doorbell(0x1008, 7);
    assert_eq!(setup.controller.word(0x1008), 7);
    // A doorbell beyond the mapped page still reaches the device, by REGION_WRITE.
    bar.doorbell(0x2004, 9);
    assert_eq!(setup.controller.word(0x2004), 9);
}

#[test]
fn without_a_mappable_doorbell_page_doorbells_use_region_write() {
    let setup = Setup::new(false);
    let bar = VfioUserBar::new(setup.client.clone()).unwrap();
    assert!(!bar.doorbells_mapped());
    bar.doorbell(0x1000, 3);
    assert_eq!(setup.controller.word(0x1000), 3);
    assert!(Arc::ptr_eq(bar.client(), &setup.client));
}

#[test]
fn host_memory_is_dma_mapped_and_msix_vectors_signal_their_eventfds() {
    let setup = Setup::new(true);
    let mut client = setup.client.lock().unwrap();

    let memory = HostMemory::new(0x4000, 0x10_0000).unwrap();
    memory.write(0x10_1000, b"submission queue").unwrap();
    dma_map_host_memory(&mut client, &memory).unwrap();
    {
        let dma = setup.controller.dma.lock().unwrap();
        assert_eq!(
            (dma[0].iova, dma[0].size, dma[0].writable),
            (0x10_0000, 0x4000, true)
        );
        let mut seen = [0; 16];
        dma[0]
            .mapping
            .as_ref()
            .unwrap()
            .read(0x1000, &mut seen)
            .unwrap();
        assert_eq!(&seen, b"submission queue");
    }
    dma_unmap_host_memory(&mut client, &memory).unwrap();
    assert!(setup.controller.dma.lock().unwrap().is_empty());

    let vectors = MsixVectors::register(&mut client, 4).unwrap();
    assert_eq!(vectors.len(), 4);
    setup.controller.signal(2);
    assert_eq!(vectors.wait(2, Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(vectors.wait(1, Duration::from_millis(10)).unwrap(), 0);
    assert_eq!(vectors.take(2).unwrap(), 0, "the interrupt was consumed");
    assert!(vectors.fd(3).is_some());
    assert!(vectors.take(4).is_err());

    let err = MsixVectors::register(&mut client, VECTORS + 1).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::NotEnoughVectors {
                requested: 9,
                available: 8
            }
        ),
        "{err}"
    );
}
