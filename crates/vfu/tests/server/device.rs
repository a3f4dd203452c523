//! The device of the server tests: `vfu`'s fake device as a small PCI function. Config space
//! (region 7, 256 bytes) holds the vendor and device id; BAR0 is 16 KiB with a sparse-mmap area
//! at 0x1000..0x2000; five IRQ indices (MSI-X with 4 vectors); optionally a migration
//! (STOP_COPY|PRE_COPY, or every state) whose saving sessions stream [`MIGRATION_BLOB`], and DMA
//! logging.

use vfio_migration::MigrationFlags;
use vfu::fake::FakeDevice;
use vfu::fake::FakeMigration;
use vfu::fake::FakeRegion;
use vfu::irq::IrqInfoFlags;
use vfu::pci;

/// PCI vendor id in config space.
pub const VENDOR_ID: u16 = 0x1b36;
/// PCI device id in config space.
pub const DEVICE_ID: u16 = 0x0010;
/// BAR0 region index.
pub const BAR0: u32 = pci::BAR0_REGION_INDEX;
/// Config space region index.
pub const CONFIG: u32 = pci::CONFIG_REGION_INDEX;
/// Number of regions (BARs 0–5, ROM, config, VGA).
pub const NUM_REGIONS: u32 = pci::NUM_REGIONS;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 16 * 1024;
/// The sparse-mmap area of BAR0 (offset, size).
pub const MMAP_AREA: (u64, u64) = (0x1000, 0x1000);
/// Size of config space.
pub const CONFIG_SIZE: u64 = 256;
/// MSI-X IRQ index.
pub const MSIX: u32 = pci::MSIX_IRQ_INDEX;
/// MSI-X vector count.
pub const MSIX_VECTORS: u32 = 4;
/// The blob every saving session streams.
pub const MIGRATION_BLOB: [u8; 100] = {
    let mut blob = [0; 100];
    let mut i = 0;
    while i < blob.len() {
        blob[i] = (i as u8).wrapping_mul(7);
        i += 1;
    }
    blob
};

/// The device the tests serve.
pub type TestDevice = FakeDevice;

/// The migratable device, in RUNNING with zeroed BARs and the ids in config space.
pub fn new() -> TestDevice {
    build(Some(MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY))
}

/// The same device without migration or DMA logging.
pub fn without_migration() -> TestDevice {
    build(None)
}

/// The same device migrating with every optional state (P2P and PRE_COPY).
pub fn with_every_migration_state() -> TestDevice {
    build(Some(MigrationFlags::all()))
}

fn build(migration: Option<MigrationFlags>) -> TestDevice {
    let mut builder = FakeDevice::builder()
        .region(BAR0, FakeRegion::new(BAR0_SIZE).mmap_areas(&[MMAP_AREA]))
        .region(CONFIG, FakeRegion::new(CONFIG_SIZE))
        .regions(NUM_REGIONS)
        .irq(
            pci::INTX_IRQ_INDEX,
            1,
            IrqInfoFlags::EVENTFD | IrqInfoFlags::MASKABLE | IrqInfoFlags::AUTOMASKED,
        )
        .irq(
            pci::MSI_IRQ_INDEX,
            1,
            IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE,
        )
        .irq(
            MSIX,
            MSIX_VECTORS,
            IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE,
        )
        .irq(pci::ERR_IRQ_INDEX, 1, IrqInfoFlags::EVENTFD)
        .irq(pci::REQ_IRQ_INDEX, 1, IrqInfoFlags::EVENTFD);
    if let Some(flags) = migration {
        builder = builder.migration(FakeMigration::new(flags, MIGRATION_BLOB));
    }
    let device = builder.build().expect("the test device's memfds");
    let config = device.region_memory(CONFIG).expect("config space");
    config
        .write(0, &VENDOR_ID.to_le_bytes())
        .expect("vendor id");
    config
        .write(2, &DEVICE_ID.to_le_bytes())
        .expect("device id");
    device
}
