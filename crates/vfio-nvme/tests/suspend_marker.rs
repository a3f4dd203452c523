//! The driver drains the User Data Migration Queue up to the "suspended" marker before the last
//! round (issue 15): a real PF may post the marker — and the last changes before it — after
//! its Suspend command completed. A stand-in PF here acknowledges Suspend at once and carries it
//! out later (or never).

use std::sync::Arc;
use std::time::Duration;

use nvme_device::memory::DmaMemory;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::PRIMARY_CNTLID;
use nvme_device::subsystem::Subsystem;
use nvme_device::subsystem::SubsystemConfig;
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;
use vfio_migration::DeviceState;
use vfio_nvme::migration::admin::InProcessPrimary;
use vfio_nvme::migration::admin::LmAdmin;
use vfio_nvme::migration::admin::LmError;
use vfio_nvme::migration::admin::Transfer;
use vfio_nvme::migration::error::MigrationError;
use vfio_nvme::served::migratable_function;
use vfio_nvme::vf::VfDevice;
use vfu::server::Device;

const IOVA: u64 = 0x4000_0000;
const BLOCK: u64 = 4096;

/// A PF whose Suspend completes at once while the controller suspends `delay` later (`None`:
/// never), so its "suspended" marker comes after the command.
struct LateSuspend {
    inner: Arc<InProcessPrimary>,
    delay: Option<Duration>,
}

impl LmAdmin for LateSuspend {
    fn execute(&self, what: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError> {
        let suspend = cmd.cdw0.opcode() == AdminOpcode::MIGRATION_SEND.0 && cmd.cdw10 & 0xFF == 0;
        if !suspend {
            return self.inner.execute(what, cmd, data);
        }
        if let Some(delay) = self.delay {
            let (inner, what) = (self.inner.clone(), what.to_owned());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                inner.execute(&what, cmd, Transfer::None).unwrap();
            });
        }
        Ok(0)
    }

    fn memory(&self) -> Option<&Arc<HostMemory>> {
        self.inner.memory()
    }

    fn max_transfer(&self) -> u64 {
        self.inner.max_transfer()
    }
}

/// VF 1 of a one-VF subsystem with a private RAM namespace, migrated through `LateSuspend`.
fn late_vf(name: &str, delay: Option<Duration>) -> (Arc<Subsystem>, VfDevice) {
    let config = SubsystemConfig::new(name, 1);
    let limits = config.limits.clone();
    let spaces = [Arc::new(AddressSpace::new()), Arc::new(AddressSpace::new())];
    let namespaces = vec![NamespaceSpec {
        backend: Arc::new(nvme_device::backend::RamBackend::new(16 << 20).unwrap()),
        block_size: BlockSize::B4096,
        attachment: Attachment::Private { vfn: 1 },
    }];
    let subsystem = Arc::new(
        Subsystem::new(config, namespaces, |cntlid| {
            spaces[usize::from(cntlid - PRIMARY_CNTLID)].clone() as Arc<dyn DmaMemory>
        })
        .unwrap(),
    );
    let primary: Arc<dyn LmAdmin> = Arc::new(LateSuspend {
        inner: Arc::new(InProcessPrimary::new(&subsystem).unwrap()),
        delay,
    });
    let vf = migratable_function(
        &subsystem,
        &limits,
        &primary,
        1,
        spaces[1].clone(),
        subsystem.namespaces().to_vec(),
    )
    .unwrap();
    (subsystem, vf)
}

struct VfBar(Arc<std::sync::Mutex<Arc<VfDevice>>>);

impl Bar for VfBar {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.0
            .lock()
            .unwrap()
            .region_read(0, offset, &mut b)
            .unwrap();
        Ok(u32::from_le_bytes(b))
    }

    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.0
            .lock()
            .unwrap()
            .region_read(0, offset, &mut b)
            .unwrap();
        Ok(u64::from_le_bytes(b))
    }

    fn write32(&self, offset: u64, value: u32) -> std::io::Result<()> {
        let vf = self.0.lock().unwrap().clone();
        vf.region_write(0, offset, &value.to_le_bytes()).unwrap();
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.write32(offset, value).unwrap();
    }
}

fn map(mem: &HostMemory, vf: &VfDevice) {
    let fd = mem.mapping().fd().unwrap().try_clone_to_owned().unwrap();
    let view = Mapping::from_fd(fd, 0, mem.len() as usize, Protection::ReadWrite).unwrap();
    vf.address_space().map(IOVA, view).unwrap();
}

fn io(qp: &mut nvme_driver::driver::QueuePair, cmd: Command) {
    qp.submit(cmd).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut done = None;
    while done.is_none() {
        qp.poll(|c| done = Some(c));
        assert!(std::time::Instant::now() < deadline, "no completion");
    }
    assert!(done.unwrap().status.status().is_success());
}

#[test]
fn the_last_round_waits_for_a_marker_posted_after_suspend() {
    let (_a, vf_a) = late_vf("late-a", Some(Duration::from_millis(300)));
    let (_b, vf_b) = late_vf("late-b", Some(Duration::ZERO));
    let (vf_a, vf_b) = (Arc::new(vf_a), Arc::new(vf_b));
    let mem = HostMemory::new(8 << 20, IOVA).unwrap();
    map(&mem, &vf_a);
    map(&mem, &vf_b);
    let current = Arc::new(std::sync::Mutex::new(vf_a.clone()));
    let driver = Driver::new(Arc::new(VfBar(current.clone())), mem.clone()).unwrap();
    driver.set_queue_count(1).unwrap();
    let mut qp = driver.create_queue_pair(1, 16, None).unwrap();
    let buf = mem.alloc(BLOCK).unwrap();
    let state = |vf: &VfDevice, s| vf.migration().unwrap().set_state(s);
    state(&vf_a, DeviceState::PreCopy).unwrap();
    state(&vf_b, DeviceState::Resuming).unwrap();
    // The PF acknowledged Suspend but the controller still runs: this write completes on A
    // and is logged before the marker.
    state(&vf_a, DeviceState::PreCopyP2p).unwrap();
    buf.fill(0x5A);
    io(&mut qp, Command::write(0, 1, 9, 0, buf.iova(), 0));
    state(&vf_a, DeviceState::StopCopy).unwrap();
    assert!(
        vf_a.controller().suspended(),
        "the state was saved before the marker said the controller suspended"
    );
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = vf_a.migration().unwrap().read(&mut chunk).unwrap();
        vf_b.migration().unwrap().write(&chunk[..n]).unwrap();
        if n < chunk.len() {
            break;
        }
    }
    state(&vf_b, DeviceState::Stop).unwrap();
    *current.lock().unwrap() = vf_b.clone();
    state(&vf_b, DeviceState::Running).unwrap();
    buf.fill(0);
    io(&mut qp, Command::read(0, 1, 9, 0, buf.iova(), 0));
    let mut got = vec![0u8; BLOCK as usize];
    buf.read(0, &mut got);
    assert!(got.iter().all(|&b| b == 0x5A), "the late change was lost");
}

#[test]
fn a_marker_that_never_comes_is_a_named_error() {
    let (_a, vf_a) = late_vf("never", None);
    let migration = vf_a.migration().unwrap();
    migration.set_state(DeviceState::PreCopy).unwrap();
    migration.set_state(DeviceState::PreCopyP2p).unwrap();
    let errno = migration.set_state(DeviceState::StopCopy).unwrap_err();
    assert_eq!(errno, vfio_migration::Errno::EIO);
    let failure = migration.status().last_failure.unwrap();
    assert!(
        matches!(
            failure.cause::<MigrationError>(),
            Some(MigrationError::NoSuspendMarker { cntlid: 2, .. })
        ),
        "{failure}"
    );
    assert!(
        failure.to_string().contains("no 'suspended' marker"),
        "{failure}"
    );
}
