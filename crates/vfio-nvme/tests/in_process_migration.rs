//! Live migration of a VF between two served subsystems, in one process: the host driver runs
//! I/O on VF-A, the migration stream goes from A's saving session into B's resuming session,
//! and the host switches to VF-B without knowing — exactly the orchestrator's job, minus the
//! sockets.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;

use nvme_device::controller::MigrationOffer;
use nvme_device::namespace::BlockSize;
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use shmem::Mapping;
use shmem::Protection;
use vfio_migration::DeviceState;
use vfio_nvme::pci::config::MSIX_CAP;
use vfio_nvme::pci::config::MSIX_ENABLE;
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfio_nvme::vf::VfDevice;
use vfu::irq::IrqAction;
use vfu::pci::BAR0_REGION_INDEX;
use vfu::pci::CONFIG_REGION_INDEX;
use vfu::pci::MSIX_IRQ_INDEX;
use vfu::server::Device;
use vfu::server::IrqRequest;

const IOVA: u64 = 0x4000_0000;
const BLOCK: u64 = 4096;

/// BAR0 of whichever VF the host currently uses.
struct SwitchableBar(Mutex<Arc<VfDevice>>);

impl SwitchableBar {
    fn device(&self) -> Arc<VfDevice> {
        self.0.lock().unwrap().clone()
    }
}

impl Bar for SwitchableBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.device().region_read(0, offset, &mut b).unwrap();
        Ok(u32::from_le_bytes(b))
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.device().region_read(0, offset, &mut b).unwrap();
        Ok(u64::from_le_bytes(b))
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.device()
            .region_write(0, offset, &value.to_le_bytes())
            .unwrap();
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.write32(offset, value).unwrap();
    }
}

fn served(name: &str) -> Served {
    Served::new(&ServeConfig {
        name: name.to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: 64 << 20,
                prealloc: false,
            },
            block_size: BlockSize::B4096,
            shared: false,
        }],
        ..ServeConfig::default()
    })
    .unwrap()
}

fn map_host_memory(mem: &HostMemory, vf: &VfDevice) {
    let fd = mem.mapping().fd().unwrap().try_clone_to_owned().unwrap();
    let view = Mapping::from_fd(fd, 0, mem.len() as usize, Protection::ReadWrite).unwrap();
    vf.address_space().map(IOVA, view).unwrap();
}

/// A block's contents: its LBA and a generation, repeated.
fn pattern(lba: u64, generation: u64) -> Vec<u8> {
    (0..BLOCK / 16)
        .flat_map(|_| {
            let mut w = lba.to_le_bytes().to_vec();
            w.extend_from_slice(&generation.to_le_bytes());
            w
        })
        .collect()
}

fn wait(qp: &mut QueuePair, want: usize) -> Vec<Completion> {
    let mut done = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while done.len() < want {
        qp.poll(|c| done.push(c));
        assert!(std::time::Instant::now() < deadline, "completions missing");
        std::thread::yield_now();
    }
    done
}

fn write_blocks(qp: &mut QueuePair, buf: &DmaBuffer, lbas: &[u64], generation: u64) {
    for &lba in lbas {
        buf.write(0, &pattern(lba, generation));
        qp.submit(Command::write(0, 1, lba, 0, buf.iova(), 0))
            .unwrap();
        let done = wait(qp, 1);
        assert!(done[0].status.status().is_success());
    }
}

fn check_blocks(qp: &mut QueuePair, buf: &DmaBuffer, expect: &[(u64, u64)]) {
    for &(lba, generation) in expect {
        buf.fill(0);
        qp.submit(Command::read(0, 1, lba, 0, buf.iova(), 0))
            .unwrap();
        let done = wait(qp, 1);
        assert!(done[0].status.status().is_success());
        let mut got = vec![0u8; BLOCK as usize];
        buf.read(0, &mut got);
        assert_eq!(got, pattern(lba, generation), "LBA {lba}");
    }
}

/// Moves every byte the source's session offers into the destination's.
fn pump(a: &VfDevice, b: &VfDevice) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = a.migration().unwrap().read(&mut buf).unwrap();
        if n > 0 {
            b.migration().unwrap().write(&buf[..n]).unwrap();
            total += n;
        }
        if n < buf.len() {
            return total;
        }
    }
}

#[test]
fn vf_migrates_with_io_in_flight() {
    migrate_with_io_in_flight("a", false);
}

/// The same with the host's doorbells in shadow doorbell buffers (as Linux has them): the
/// command submitted while the source no longer fetches may reach no register at all, and the
/// destination finds it in the shadow buffer its restored state points at.
#[test]
fn vf_migrates_with_io_in_flight_through_shadow_doorbells() {
    migrate_with_io_in_flight("shadow", true);
}

fn migrate_with_io_in_flight(name: &str, shadow: bool) {
    let a = served(&format!("{name}-a"));
    let b = served(&format!("{name}-b"));
    let vf_a = a.function(1).unwrap().clone();
    let vf_b = b.function(1).unwrap().clone();
    let mem = HostMemory::new(32 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf_a);
    map_host_memory(&mem, &vf_b);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf_a.clone())));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    let id_a = driver.identify_controller().unwrap();
    if shadow {
        assert!(driver.use_shadow_doorbells().unwrap(), "the VF offers them");
    }
    driver.set_queue_count(2).unwrap();
    let mut qp = driver.create_queue_pair(1, 64, None).unwrap();
    assert_eq!(qp.shadowed(), shadow);
    let buf = mem.alloc(BLOCK).unwrap();

    // Before migration: LBAs 0..32 at generation 1.
    let early: Vec<u64> = (0..32).collect();
    write_blocks(&mut qp, &buf, &early, 1);

    // PRE_COPY on A, RESUMING on B.
    vf_a.migration()
        .unwrap()
        .set_state(DeviceState::PreCopy)
        .unwrap();
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Resuming)
        .unwrap();
    let first = pump(&vf_a, &vf_b);
    assert!(
        first > 32 * BLOCK as usize,
        "initial data streamed: {first}"
    );
    // The guest keeps writing during pre-copy: overwrite some, write new ones.
    write_blocks(&mut qp, &buf, &[3, 7, 100, 101], 2);
    let second = pump(&vf_a, &vf_b);
    assert!(
        second >= 4 * BLOCK as usize,
        "dirty data streamed: {second}"
    );

    // PRE_COPY_P2P: A stops fetching. A write submitted now stays in the SQ.
    vf_a.migration()
        .unwrap()
        .set_state(DeviceState::PreCopyP2p)
        .unwrap();
    buf.write(0, &pattern(200, 3));
    qp.submit(Command::write(0, 1, 200, 0, buf.iova(), 0))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        qp.poll(|_| {}),
        0,
        "a suspended controller fetched a command"
    );

    // STOP_COPY on A: the rest, the controller state, the end.
    vf_a.migration()
        .unwrap()
        .set_state(DeviceState::StopCopy)
        .unwrap();
    pump(&vf_a, &vf_b);
    // B: RESUMING → STOP (validate + Set Controller State) → RUNNING.
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Stop)
        .unwrap();
    *bar.0.lock().unwrap() = vf_b.clone();
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Running)
        .unwrap();
    // A ends its session.
    vf_a.migration()
        .unwrap()
        .set_state(DeviceState::Stop)
        .unwrap();
    // A's client leaves: a source whose whole state was handed over is reset, not resumed
    // with the guest's queues (which, with shadow doorbells, would poll the guest's shadow
    // buffers as soon as the same memory is mapped into it again).
    Device::disconnected(vf_a.as_ref());
    vf_a.migration().unwrap().disconnected();
    assert_eq!(vf_a.migration().unwrap().state(), DeviceState::Running);
    let mut csts = [0u8; 4];
    vf_a.region_read(BAR0_REGION_INDEX, 0x1C, &mut csts)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(csts) & 1,
        0,
        "A's controller is not ready: it was reset"
    );
    map_host_memory(&mem, &vf_a);

    // The write submitted before the switch completes on B, once.
    let done = wait(&mut qp, 1);
    assert!(done[0].status.status().is_success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(qp.poll(|_| {}), 0, "a command completed twice");

    // Everything written in all phases reads back on B, and B looks like A.
    let mut expect: Vec<(u64, u64)> = early.iter().map(|&l| (l, 1)).collect();
    for (lba, generation) in &mut expect {
        if *lba == 3 || *lba == 7 {
            *generation = 2;
        }
    }
    expect.extend([(100, 2), (101, 2), (200, 3)]);
    check_blocks(&mut qp, &buf, &expect);
    let id_b = driver.identify_controller().unwrap();
    assert_eq!(id_a.sn, id_b.sn);
    assert_eq!(id_a.subnqn, id_b.subnqn);
    assert_eq!(id_a.cntlid, id_b.cntlid);
    write_blocks(&mut qp, &buf, &[5], 4);
    check_blocks(&mut qp, &buf, &[(5, 4)]);
}

#[test]
fn a_guest_controller_reset_does_not_lift_a_migration_suspend() {
    let a = served("reset");
    let vf = a.function(1).unwrap().clone();
    let mem = HostMemory::new(8 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf.clone())));
    let driver = Driver::new(bar, mem.clone()).unwrap();
    // RUNNING_P2P: the controller is suspended for migration.
    vf.migration()
        .unwrap()
        .set_state(DeviceState::RunningP2p)
        .unwrap();
    assert!(vf.controller().suspended());
    // The guest toggles CC.EN: the controller comes back ready but stays suspended, so the
    // migration driver's view (nothing is fetched) still holds.
    driver.disable().unwrap();
    assert!(vf.controller().suspended());
    // A device reset (FLR / DEVICE_RESET) lifts it and returns the migration state to RUNNING.
    vf.reset().unwrap();
    assert!(!vf.controller().suspended());
    assert_eq!(vf.migration().unwrap().state(), DeviceState::Running);
    let driver = Driver::new(driver.bar().clone(), mem).unwrap();
    driver.identify_controller().unwrap();
}

#[test]
fn a_device_reset_of_a_loaded_destination_runs_none_of_the_guests_commands() {
    // A migration that fails after the destination loaded the state (its STOP → RUNNING never
    // came): the source resumes, and the orchestrator resets the destination. Both map the
    // same guest memory, so the destination must not fetch the loaded queues' commands on
    // the way: it would run the guest's commands a second time, into guest memory.
    let a = served("aborted-src");
    let b = served("aborted-dst");
    let (vf_a, vf_b) = (
        a.function(1).unwrap().clone(),
        b.function(1).unwrap().clone(),
    );
    let mem = HostMemory::new(8 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf_a);
    map_host_memory(&mem, &vf_b);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf_a.clone())));
    let driver = Driver::new(bar, mem.clone()).unwrap();
    driver.set_queue_count(2).unwrap();
    let mut qp = driver.create_queue_pair(1, 64, None).unwrap();
    let buf = mem.alloc(BLOCK).unwrap();
    write_blocks(&mut qp, &buf, &[1], 1);
    let (ma, mb) = (vf_a.migration().unwrap(), vf_b.migration().unwrap());
    mb.set_state(DeviceState::Resuming).unwrap();
    ma.set_state(DeviceState::PreCopy).unwrap();
    pump(&vf_a, &vf_b);
    // A read submitted once A stopped fetching: in the state B loads, not yet fetched.
    ma.set_state(DeviceState::PreCopyP2p).unwrap();
    buf.fill(0xAA);
    qp.submit(Command::read(0, 1, 1, 0, buf.iova(), 0)).unwrap();
    ma.set_state(DeviceState::StopCopy).unwrap();
    pump(&vf_a, &vf_b);
    mb.set_state(DeviceState::Stop).unwrap();
    // The abort: A runs the read, and the buffer gets a marker again.
    ma.set_state(DeviceState::Running).unwrap();
    assert!(wait(&mut qp, 1)[0].status.status().is_success());
    buf.fill(0x55);
    vf_b.reset().unwrap();
    assert_eq!(mb.state(), DeviceState::Running);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut got = vec![0u8; BLOCK as usize];
    buf.read(0, &mut got);
    assert!(
        got.iter().all(|&b| b == 0x55),
        "the reset destination ran the guest's read again"
    );
    assert_eq!(
        qp.poll(|_| {}),
        0,
        "a completion from the reset destination"
    );
    check_blocks(&mut qp, &buf, &[(1, 1)]);
}

/// A non-blocking eventfd, as a VMM gives for an MSI-X vector.
fn eventfd() -> std::os::fd::OwnedFd {
    use rustix::event::EventfdFlags;
    rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap()
}

/// Interrupts an eventfd counted since it was last read.
fn fired(fd: &std::os::fd::OwnedFd) -> u64 {
    let mut count = [0u8; 8];
    match rustix::io::read(fd, &mut count) {
        Ok(8) => u64::from_ne_bytes(count),
        Ok(n) => panic!("a short eventfd read of {n} bytes"),
        Err(rustix::io::Errno::AGAIN) => 0,
        Err(e) => panic!("eventfd read: {e}"),
    }
}

/// Waits up to five seconds for `fd` to fire and returns the count. The device writes the
/// completion entry before it signals the vector, so a host that saw the completion may still
/// be ahead of the interrupt.
fn fires(fd: &std::os::fd::OwnedFd) -> u64 {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let timeout = rustix::event::Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&timeout)).unwrap();
    fired(fd)
}

/// Gives `vf` an eventfd for MSI-X vector `vector`.
fn wire_vector(vf: &VfDevice, vector: u32, fd: &std::os::fd::OwnedFd) {
    let fds = vec![Some(
        vfu::server::Eventfd::new(fd.try_clone().unwrap()).unwrap(),
    )];
    let request = IrqRequest::Eventfds {
        action: IrqAction::Trigger,
        start: vector,
        fds,
    };
    vf.set_irqs(MSIX_IRQ_INDEX, request).unwrap();
}

/// Masks or unmasks MSI-X vector `vector` of `vf` (DEVICE_SET_IRQS MASK/UNMASK).
fn mask_vector(vf: &VfDevice, vector: u32, masked: bool) {
    let action = if masked {
        IrqAction::Mask
    } else {
        IrqAction::Unmask
    };
    let request = IrqRequest::Action {
        action,
        start: vector,
        count: 1,
        mask: None,
    };
    vf.set_irqs(MSIX_IRQ_INDEX, request).unwrap();
}

/// The first byte of `vf`'s pending bit array (vectors 0..8).
fn pending(vf: &VfDevice) -> u8 {
    let mut pba = [0u8; 8];
    vf.region_read(BAR0_REGION_INDEX, 0x3000, &mut pba).unwrap();
    pba[0]
}

/// MSI-X state travels with the VF (issue 10): the enable bit, the table the guest programmed,
/// a vector masked through its table entry, and a vector masked with DEVICE_SET_IRQS whose
/// interrupt fired while masked on the source — which fires on the destination at the unmask.
#[test]
fn msix_masks_and_pending_interrupts_travel() {
    let a = served("msix-a");
    let b = served("msix-b");
    let vf_a = a.function(1).unwrap().clone();
    let vf_b = b.function(1).unwrap().clone();
    let mem = HostMemory::new(8 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf_a);
    map_host_memory(&mem, &vf_b);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf_a.clone())));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    let control = MSIX_CAP as u64 + 2;
    vf_a.region_write(CONFIG_REGION_INDEX, control, &MSIX_ENABLE.to_le_bytes())
        .unwrap();
    let (irq_a, irq_b) = (eventfd(), eventfd());
    wire_vector(&vf_a, 1, &irq_a);
    driver.set_queue_count(1).unwrap();
    let mut qp = driver.create_queue_pair(1, 64, Some(1)).unwrap();
    let buf = mem.alloc(BLOCK).unwrap();
    write_blocks(&mut qp, &buf, &[0], 1);
    assert!(fires(&irq_a) > 0, "vector 1 fires while unmasked");
    // Vector 2's table entry: an address, data, and the mask bit.
    let entry: Vec<u8> = (0x10..0x1C).chain([1, 0, 0, 0]).collect();
    vf_a.region_write(BAR0_REGION_INDEX, 0x2000 + 2 * 16, &entry)
        .unwrap();
    mask_vector(&vf_a, 1, true);
    write_blocks(&mut qp, &buf, &[1], 1);
    assert_eq!(fired(&irq_a), 0, "a masked vector does not fire");
    assert_eq!(pending(&vf_a), 0b10, "it is pending instead");

    vf_a.migration()
        .unwrap()
        .set_state(DeviceState::StopCopy)
        .unwrap();
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Resuming)
        .unwrap();
    pump(&vf_a, &vf_b);
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Stop)
        .unwrap();
    *bar.0.lock().unwrap() = vf_b.clone();
    vf_b.migration()
        .unwrap()
        .set_state(DeviceState::Running)
        .unwrap();

    let mut word = [0u8; 2];
    vf_b.region_read(CONFIG_REGION_INDEX, control, &mut word)
        .unwrap();
    assert_eq!(u16::from_le_bytes(word) & MSIX_ENABLE, MSIX_ENABLE);
    let mut table = [0u8; 16];
    vf_b.region_read(BAR0_REGION_INDEX, 0x2000 + 2 * 16, &mut table)
        .unwrap();
    assert_eq!(&table[..], &entry[..]);
    assert_eq!(pending(&vf_b), 0b10, "the pending interrupt moved");
    // The VMM gives the destination its eventfd; nothing fires until the guest unmasks.
    wire_vector(&vf_b, 1, &irq_b);
    assert_eq!(fired(&irq_b), 0);
    mask_vector(&vf_b, 1, false);
    assert_eq!(
        fires(&irq_b),
        1,
        "the unmask delivers the interrupt that waited"
    );
    assert_eq!(pending(&vf_b), 0);
    write_blocks(&mut qp, &buf, &[2], 1);
    assert!(fires(&irq_b) > 0, "vector 1 fires on the destination");
    assert_eq!(fired(&irq_a), 0, "and never on the source");
}

/// A subsystem whose PF offers `migration` (a stand-in for a third-party TP4159 PF), with `vfs`
/// VFs and one 64 MiB namespace, `shared` or private to each VF.
fn served_with(name: &str, vfs: u16, shared: bool, migration: MigrationOffer) -> Served {
    Served::new(&ServeConfig {
        name: name.to_owned(),
        vfs,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: 64 << 20,
                prealloc: false,
            },
            block_size: BlockSize::B4096,
            shared,
        }],
        migration,
        ..ServeConfig::default()
    })
    .unwrap()
}

/// Moves the VF the host uses from `vf_a` to `vf_b` with the full pre-copy sequence while the
/// host writes: data before, during pre-copy, and a write queued while A is suspended, which
/// must complete on B exactly once. `enable_b` runs before B stops to receive the state (a PF
/// without the vendor state carries no registers or admin queue: the destination's host
/// enables B's controller itself).
/// Returns the queue pair, now on B, and what every block must hold.
fn migrate_while_writing(
    bar: &SwitchableBar,
    qp: &mut QueuePair,
    buf: &DmaBuffer,
    vf_a: &Arc<VfDevice>,
    vf_b: &Arc<VfDevice>,
    enable_b: impl FnOnce(),
) -> Vec<(u64, u64)> {
    let early: Vec<u64> = (0..32).collect();
    write_blocks(qp, buf, &early, 1);
    let state = |vf: &VfDevice, s| vf.migration().unwrap().set_state(s).unwrap();
    // B's controller is stopped (suspended) from here until it runs the migrated state.
    enable_b();
    state(vf_a, DeviceState::PreCopy);
    state(vf_b, DeviceState::Resuming);
    pump(vf_a, vf_b);
    write_blocks(qp, buf, &[3, 7, 100, 101], 2);
    pump(vf_a, vf_b);
    state(vf_a, DeviceState::PreCopyP2p);
    buf.write(0, &pattern(200, 3));
    qp.submit(Command::write(0, 1, 200, 0, buf.iova(), 0))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        qp.poll(|_| {}),
        0,
        "a suspended controller fetched a command"
    );
    state(vf_a, DeviceState::StopCopy);
    pump(vf_a, vf_b);
    state(vf_b, DeviceState::Stop);
    *bar.0.lock().unwrap() = vf_b.clone();
    state(vf_b, DeviceState::Running);
    state(vf_a, DeviceState::Stop);
    let done = wait(qp, 1);
    assert!(done[0].status.status().is_success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(qp.poll(|_| {}), 0, "a command completed twice");
    let mut expect: Vec<(u64, u64)> = early
        .iter()
        .map(|&l| (l, if l == 3 || l == 7 { 2 } else { 1 }))
        .collect();
    expect.extend([(100, 2), (101, 2), (200, 3)]);
    expect
}

/// Item 1 of issue 15: the driver migrates through a PF that lists NVMe state v0 only (no
/// vfio-nvme vendor UUID in Identify CNS 20h): the controller state is the PF's opaque v0 bytes,
/// the private namespace's data travels through the User Data Migration Queue, and the I/O
/// queue the host uses continues on the destination with every write verifying.
#[test]
fn a_vf_migrates_through_a_pf_offering_nvme_state_v0_only() {
    let v0_only = MigrationOffer {
        vendor_state: false,
        user_data_logging: true,
    };
    let a = served_with("v0-a", 1, false, v0_only);
    let b = served_with("v0-b", 1, false, v0_only);
    let vf_a = a.function(1).unwrap().clone();
    let vf_b = b.function(1).unwrap().clone();
    let mem = HostMemory::new(32 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf_a);
    map_host_memory(&mem, &vf_b);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf_a.clone())));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    let id_a = driver.identify_controller().unwrap();
    driver.set_queue_count(2).unwrap();
    let mut qp = driver.create_queue_pair(1, 64, None).unwrap();
    let buf = mem.alloc(BLOCK).unwrap();
    // NVMe state v0 carries the I/O queues only: the destination's host brings up B's
    // controller (registers, an admin queue of its own) before B takes the state.
    let driver_b = Mutex::new(None);
    let expect = migrate_while_writing(&bar, &mut qp, &buf, &vf_a, &vf_b, || {
        let bar_b = Arc::new(SwitchableBar(Mutex::new(vf_b.clone())));
        *driver_b.lock().unwrap() = Some(Driver::new(bar_b, mem.clone()).unwrap());
    });
    check_blocks(&mut qp, &buf, &expect);
    write_blocks(&mut qp, &buf, &[5], 4);
    check_blocks(&mut qp, &buf, &[(5, 4)]);
    // B's own admin queue works beside the migrated I/O queue, and B keeps its own identity
    // (v0 carries none).
    let driver_b = driver_b.into_inner().unwrap().unwrap();
    assert_ne!(driver_b.identify_controller().unwrap().sn, id_a.sn);
}

/// A PF without LBA change logging: a VF with a shared namespace migrates (VF1 → VF2 of one
/// subsystem, the seed's one-device case) with the write queued during the move completing on
/// VF2 once, and a private namespace is refused with an error that says why.
#[test]
fn a_pf_without_logging_migrates_shared_namespaces_only() {
    let no_logging = MigrationOffer {
        vendor_state: true,
        user_data_logging: false,
    };
    let err = Served::new(&ServeConfig {
        name: "no-log-private".to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: 1 << 20,
                prealloc: false,
            },
            block_size: BlockSize::B4096,
            shared: false,
        }],
        migration: no_logging,
        ..ServeConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("does not log user data changes") && err.contains("shared storage"),
        "{err}"
    );

    let served = served_with("no-log", 2, true, no_logging);
    let vf1 = served.function(1).unwrap().clone();
    let vf2 = served.function(2).unwrap().clone();
    let mem = HostMemory::new(32 << 20, IOVA).unwrap();
    map_host_memory(&mem, &vf1);
    map_host_memory(&mem, &vf2);
    let bar = Arc::new(SwitchableBar(Mutex::new(vf1.clone())));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    driver.set_queue_count(2).unwrap();
    let mut qp = driver.create_queue_pair(1, 64, None).unwrap();
    let buf = mem.alloc(BLOCK).unwrap();
    let expect = migrate_while_writing(&bar, &mut qp, &buf, &vf1, &vf2, || {});
    check_blocks(&mut qp, &buf, &expect);
    write_blocks(&mut qp, &buf, &[6], 5);
    check_blocks(&mut qp, &buf, &[(6, 5)]);
}
