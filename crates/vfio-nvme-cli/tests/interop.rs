//! An independent client — the rust-vmm `vfio_user` crate — against `vfio-nvme serve` in another
//! process: it negotiates, reads PCI configuration space and the NVMe CAP register.

mod common;

use common::ServeProcess;
use common::TempDir;

#[test]
fn rust_vmm_client_reads_config_space_and_nvme_cap() {
    // The default trapped doorbells leave BAR0 without a mappable area; shared ones offer the
    // doorbell page.
    reads_config_space_and_nvme_cap(&[], false);
    reads_config_space_and_nvme_cap(&["--doorbells", "shared"], true);
}

/// The rust-vmm client's checks against a `serve` started with `extra` arguments, whose
/// doorbell page is mappable if `doorbells_mapped`.
fn reads_config_space_and_nvme_cap(extra: &[&str], doorbells_mapped: bool) {
    let dir = TempDir::new("interop");
    let args: Vec<&str> = ["--namespace", "ram:64M"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let serve = ServeProcess::start(&dir.path("vf.sock"), &args);
    let mut client = vfio_user::Client::new(&serve.socket).expect("rust-vmm client connects");

    let mut config = [0u8; 12];
    client
        .region_read(7, 0, &mut config)
        .expect("config space read");
    assert_eq!(
        u16::from_le_bytes([config[0], config[1]]),
        nvme_device::PCI_VENDOR_ID
    );
    assert_eq!(
        u16::from_le_bytes([config[2], config[3]]),
        nvme_device::PCI_DEVICE_ID
    );
    // Class code 01:08:02: an NVMe I/O controller.
    assert_eq!(&config[9..12], &[0x02, 0x08, 0x01]);

    let mut cap = [0u8; 8];
    client.region_read(0, 0, &mut cap).expect("CAP read");
    let cap = nvme_spec::registers::Cap::from(u64::from_le_bytes(cap));
    assert!(cap.css().nvm(), "CAP.CSS names the NVM command set");
    assert!(cap.cqr(), "CAP.CQR: contiguous queues required");
    assert_eq!(cap.max_queue_entries(), 1024);
    let mut vs = [0u8; 4];
    client.region_read(0, 8, &mut vs).expect("VS read");
    assert_eq!(u32::from_le_bytes(vs), 0x0002_0000);

    let bar0 = client.region(0).expect("BAR0 described");
    assert_eq!(bar0.size, 0x4000);
    if doorbells_mapped {
        assert_eq!(bar0.sparse_areas.len(), 1, "the doorbell page is mmappable");
        assert_eq!(
            (bar0.sparse_areas[0].offset, bar0.sparse_areas[0].size),
            (0x1000, 0x1000)
        );
    } else {
        assert!(
            bar0.sparse_areas.is_empty(),
            "trapped doorbells: nothing to map"
        );
    }
    drop(client);
    assert!(serve.stop(), "serve exits cleanly on SIGTERM");
    assert!(!dir.path("vf.sock").exists(), "the socket is removed");
}
