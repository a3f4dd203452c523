//! The client against the real [`Server`] over a socket path, hosting a tiny device: one BAR
//! backed by a memfd (registers below 0x1000, an mmappable doorbell page above), MSI-X eventfds,
//! DMA windows and a migration stream.

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use shmem::Mapping;

use super::eventfd;
use super::read_eventfd;
use crate::client::Client;
use crate::error::errno;
use crate::feature::MigrationFlags;
use crate::irq::IrqInfoFlags;
use crate::region::RegionCap;
use crate::region::RegionInfoFlags;
use crate::region::SparseMmapArea;
use crate::server::Device;
use crate::server::DmaRegion;
use crate::server::Errno;
use crate::server::IrqRequest;
use crate::server::RegionDescription;
use crate::server::Server;

const BAR_SIZE: u64 = 0x2000;
const VECTORS: u32 = 4;
const STREAM: &[u8] = b"device state for the destination";

#[derive(Debug)]
struct TinyDevice {
    bar: Mapping,
    msix: Mutex<Vec<Option<OwnedFd>>>,
    dma: Mutex<Vec<DmaRegion>>,
    state: Mutex<u32>,
    sent: Mutex<usize>,
}

impl TinyDevice {
    fn new() -> Self {
        Self {
            bar: Mapping::memfd("tiny-bar", BAR_SIZE as usize).unwrap(),
            msix: Mutex::new((0..VECTORS).map(|_| None).collect()),
            dma: Mutex::new(Vec::new()),
            state: Mutex::new(2),
            sent: Mutex::new(0),
        }
    }

    fn signal(&self, vector: usize) {
        let msix = self.msix.lock().unwrap();
        let fd = msix[vector].as_ref().expect("vector has an eventfd");
        rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
    }
}

impl Device for TinyDevice {
    fn num_regions(&self) -> u32 {
        1
    }

    fn num_irqs(&self) -> u32 {
        3
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        (index == 0).then(|| RegionDescription {
            flags: RegionInfoFlags::READ | RegionInfoFlags::WRITE | RegionInfoFlags::MMAP,
            size: BAR_SIZE,
            file_offset: 0,
            caps: vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x1000,
                size: 0x1000,
            }])],
            fd: self.bar.fd(),
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
        if index != 2 {
            return Err(errno::EINVAL);
        }
        let mut msix = self.msix.lock().unwrap();
        match request {
            IrqRequest::Eventfds { start, fds, .. } => {
                for (i, fd) in fds.into_iter().enumerate() {
                    *msix.get_mut(start as usize + i).ok_or(errno::EINVAL)? = fd;
                }
            }
            IrqRequest::DisableAll => msix.iter_mut().for_each(|fd| *fd = None),
            IrqRequest::Action { .. } => {}
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
        *self.state.lock().unwrap() = 2;
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

    fn migration_flags(&self) -> Option<u64> {
        Some((MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY).bits())
    }

    fn migration_state(&self) -> Result<u32, Errno> {
        Ok(*self.state.lock().unwrap())
    }

    fn set_migration_state(&self, state: u32) -> Result<(), Errno> {
        *self.state.lock().unwrap() = state;
        Ok(())
    }

    fn migration_read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut sent = self.sent.lock().unwrap();
        let n = buf.len().min(STREAM.len() - *sent);
        buf[..n].copy_from_slice(&STREAM[*sent..*sent + n]);
        *sent += n;
        Ok(n)
    }
}

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("vfio-user-client-e2e-{}.sock", std::process::id()))
}

#[test]
fn the_client_drives_the_real_server() {
    let path = socket_path();
    let server = Server::bind(&path).unwrap();
    let device = Arc::new(TinyDevice::new());
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
    device.bar.read(0x1008, &mut tail).unwrap();
    assert_eq!(u32::from_ne_bytes(tail), 5);

    // Interrupts on eventfds.
    let fds: Vec<OwnedFd> = (0..VECTORS).map(|_| eventfd()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    client.set_irq_eventfds(2, 0, &borrowed).unwrap();
    device.signal(3);
    assert_eq!(read_eventfd(&fds[3]), 1);

    // DMA through the passed memfd.
    let ram = Mapping::memfd("e2e-ram", 0x1000).unwrap();
    ram.write(0, b"host data").unwrap();
    client.dma_map(0x8000, 0x1000, true, ram.fd(), 0).unwrap();
    {
        let dma = device.dma.lock().unwrap();
        let mut seen = [0; 9];
        dma[0].mapping.as_ref().unwrap().read(0, &mut seen).unwrap();
        assert_eq!(&seen, b"host data");
    }
    client.dma_unmap(0x8000, 0x1000).unwrap();

    // Migration: STOP_COPY then read the stream to its end.
    assert!(
        client
            .migration_flags()
            .unwrap()
            .contains(MigrationFlags::PRE_COPY)
    );
    client.set_migration_state(1).unwrap();
    client.set_migration_state(3).unwrap();
    assert_eq!(client.migration_state().unwrap(), 3);
    assert_eq!(client.mig_data_read(4096).unwrap(), STREAM);
    client.reset().unwrap();
    assert_eq!(client.migration_state().unwrap(), 2);

    drop(client);
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap().unwrap();
}
