//! Interop with the rust-vmm `vfio_user` crate's client (crates.io 0.1.7): it negotiates with our
//! server, fetches every region (including BAR0's sparse-mmap capability and fd), and reads
//! config space.

use crate::TestServer;
use crate::device;

#[test]
fn rust_vmm_client_negotiates_and_reads_config_space() {
    let server = TestServer::start("rust-vmm");
    let mut client = vfio_user::Client::new(&server.path).expect("rust-vmm client connects");
    let mut ids = [0u8; 4];
    client
        .region_read(device::CONFIG, 0, &mut ids)
        .expect("config space read");
    assert_eq!(ids[..2], device::VENDOR_ID.to_le_bytes());
    assert_eq!(ids[2..], device::DEVICE_ID.to_le_bytes());

    let bar0 = client.region(device::BAR0).expect("BAR0 described");
    assert_eq!(bar0.size, device::BAR0_SIZE);
    assert!(bar0.file_offset.is_some(), "BAR0's fd reached the client");
    assert_eq!(bar0.sparse_areas.len(), 1);
    assert_eq!(
        (bar0.sparse_areas[0].offset, bar0.sparse_areas[0].size),
        device::MMAP_AREA
    );

    client
        .region_write(device::CONFIG, 0x40, &[1, 2, 3, 4])
        .expect("config space write");
    let mut back = [0u8; 4];
    client.region_read(device::CONFIG, 0x40, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
}
