//! `nvme_host::vfio_user_bar` against the real vfio-user server hosting `vfu`'s fake device as
//! a stand-in for an NVMe controller's BAR0 (a memfd: registers below 1000h, the doorbell page
//! above, optionally mmappable), MSI-X eventfds and DMA windows.

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
use vfu::client::Client;
use vfu::fake::FakeDevice;
use vfu::fake::FakeRegion;
use vfu::fake::FakeWindow;
use vfu::irq::IrqInfoFlags;
use vfu::pci::BAR0_REGION_INDEX;
use vfu::pci::MSIX_IRQ_INDEX;
use vfu::server::Device;
use vfu::server::Server;

const BAR_SIZE: u64 = 0x4000;
const VECTORS: u32 = 8;

/// BAR0 in a memfd; the doorbell page (1000h–1FFFh) is offered for mmap when `mmap_doorbells`.
fn fake_controller(mmap_doorbells: bool) -> FakeDevice {
    let mut bar = FakeRegion::new(BAR_SIZE);
    if mmap_doorbells {
        bar = bar.mmap_areas(&[(0x1000, 0x1000)]);
    }
    FakeDevice::builder()
        .region(BAR0_REGION_INDEX, bar)
        .irq(0, 1, IrqInfoFlags::EVENTFD)
        .irq(1, 1, IrqInfoFlags::EVENTFD)
        .irq(MSIX_IRQ_INDEX, VECTORS, IrqInfoFlags::EVENTFD)
        .build()
        .unwrap()
}

/// A BAR0 word as the fake controller sees it.
fn word(controller: &FakeDevice, offset: u64) -> u32 {
    let mut bytes = [0; 4];
    controller
        .region_memory(BAR0_REGION_INDEX)
        .unwrap()
        .read(offset, &mut bytes)
        .unwrap();
    u32::from_ne_bytes(bytes)
}

/// A served fake controller and a client connected to it.
struct Setup {
    controller: Arc<FakeDevice>,
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
        let controller = Arc::new(fake_controller(mmap_doorbells));
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
    assert_eq!(word(&setup.controller, 0x14), 0x46_0001);
    assert_eq!(bar.read32(0x14).unwrap(), 0x46_0001);
    bar.write64(0x28, 0x1234_5678_9abc_d000).unwrap();
    assert_eq!(bar.read64(0x28).unwrap(), 0x1234_5678_9abc_d000);

    // SQ 1 tail doorbell (stride 0): a store into shared memory, seen by the device at once.
    bar.doorbell(0x1008, 7);
    assert_eq!(word(&setup.controller, 0x1008), 7);
    // A doorbell beyond the mapped page still reaches the device, by a posted REGION_WRITE:
    // done before any later request (here a register read) is answered.
    bar.doorbell(0x2004, 9);
    bar.read32(0x1c).unwrap();
    assert_eq!(word(&setup.controller, 0x2004), 9);
}

#[test]
fn without_a_mappable_doorbell_page_doorbells_use_posted_region_writes() {
    let setup = Setup::new(false);
    let bar = VfioUserBar::new(setup.client.clone()).unwrap();
    assert!(!bar.doorbells_mapped());
    bar.doorbell(0x1000, 3);
    bar.read32(0x1c).unwrap();
    assert_eq!(word(&setup.controller, 0x1000), 3);
    assert!(Arc::ptr_eq(bar.client(), &setup.client));
}

#[test]
fn host_memory_is_dma_mapped_and_msix_vectors_signal_their_eventfds() {
    let setup = Setup::new(true);
    let mut client = setup.client.lock().unwrap();

    let memory = HostMemory::new(0x4000, 0x10_0000).unwrap();
    memory.write(0x10_1000, b"submission queue").unwrap();
    dma_map_host_memory(&mut client, &memory).unwrap();
    let windows = setup.controller.windows();
    let FakeWindow {
        iova,
        size,
        writable,
        ..
    } = windows[0];
    assert_eq!((iova, size, writable), (0x10_0000, 0x4000, true));
    let mut seen = [0; 16];
    setup.controller.dma_read(0x10_1000, &mut seen).unwrap();
    assert_eq!(&seen, b"submission queue");
    dma_unmap_host_memory(&mut client, &memory).unwrap();
    assert!(setup.controller.windows().is_empty());

    let vectors = MsixVectors::register(&mut client, 4).unwrap();
    assert_eq!(vectors.len(), 4);
    assert!(setup.controller.signal(MSIX_IRQ_INDEX, 2));
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
