//! The client against the real [`Server`] over a socket path, hosting a tiny fake device: one
//! BAR backed by a memfd (registers below 0x1000, an mmappable doorbell page above), MSI-X
//! eventfds, DMA windows and a migration stream.

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use shmem::Mapping;
use vfio_migration::DeviceState;
use vfio_migration::MigrationFlags;

use super::eventfd;
use super::read_eventfd;
use crate::client::Client;
use crate::fake::FakeDevice;
use crate::fake::FakeMigration;
use crate::fake::FakeRegion;
use crate::irq::IrqInfoFlags;
use crate::server::Device;
use crate::server::Server;

const BAR_SIZE: u64 = 0x2000;
const VECTORS: u32 = 4;
const STREAM: &[u8] = b"device state for the destination";

/// One BAR with an mmappable page at 0x1000, three IRQ indices (MSI-X with [`VECTORS`]) and a
/// migration that streams [`STREAM`].
fn tiny_device() -> FakeDevice {
    FakeDevice::builder()
        .region(0, FakeRegion::new(BAR_SIZE).mmap_areas(&[(0x1000, 0x1000)]))
        .irq(0, 1, IrqInfoFlags::EVENTFD)
        .irq(1, 1, IrqInfoFlags::EVENTFD)
        .irq(2, VECTORS, IrqInfoFlags::EVENTFD)
        .migration(FakeMigration::new(
            MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY,
            STREAM,
        ))
        .build()
        .unwrap()
}

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("vfio-user-client-e2e-{}.sock", std::process::id()))
}

#[test]
fn the_client_drives_the_real_server() {
    let path = socket_path();
    let server = Server::bind(&path).unwrap();
    let device = Arc::new(tiny_device());
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let device: Arc<dyn Device> = device.clone();
        let stop = stop.clone();
        std::thread::spawn(move || server.serve(device, &stop))
    };

    let mut client = Client::connect_with(&path, super::fake::options()).unwrap();
    assert_eq!(client.device_info().num_regions, 1);
    assert_eq!(client.region_info(0).unwrap().size, BAR_SIZE);

    // Registers by message, doorbells through the mapped page.
    client
        .region_write(0, 0x14, &0x46_0001u32.to_ne_bytes())
        .unwrap();
    assert_eq!(
        client.region_read(0, 0x14, 4).unwrap(),
        0x46_0001u32.to_ne_bytes()
    );
    let areas = client.map_sparse(0).unwrap();
    assert_eq!(areas[0].0, 0x1000);
    areas[0]
        .1
        .atomic_u32(0x8)
        .unwrap()
        .store(5, Ordering::Release);
    let mut tail = [0; 4];
    device
        .region_memory(0)
        .unwrap()
        .read(0x1008, &mut tail)
        .unwrap();
    assert_eq!(u32::from_ne_bytes(tail), 5);

    // Interrupts on eventfds.
    let fds: Vec<OwnedFd> = (0..VECTORS).map(|_| eventfd()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    client.set_irq_eventfds(2, 0, &borrowed).unwrap();
    assert!(device.signal(2, 3));
    assert_eq!(read_eventfd(&fds[3]), 1);

    // DMA through the passed memfd.
    let ram = Mapping::memfd("e2e-ram", 0x1000).unwrap();
    ram.write(0, b"host data").unwrap();
    client.dma_map(0x8000, 0x1000, true, ram.fd(), 0).unwrap();
    let mut seen = [0; 9];
    device.dma_read(0x8000, &mut seen).unwrap();
    assert_eq!(&seen, b"host data");
    client.dma_unmap(0x8000, 0x1000).unwrap();

    // Migration: STOP_COPY then read the stream to its end.
    assert!(
        client
            .migration_flags()
            .unwrap()
            .contains(MigrationFlags::PRE_COPY)
    );
    client.set_migration_state(DeviceState::Stop).unwrap();
    client.set_migration_state(DeviceState::StopCopy).unwrap();
    assert_eq!(client.migration_state().unwrap(), DeviceState::StopCopy);
    assert_eq!(client.mig_data_read(4096).unwrap(), STREAM);
    client.reset().unwrap();
    assert_eq!(client.migration_state().unwrap(), DeviceState::Running);

    drop(client);
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap().unwrap();
}
