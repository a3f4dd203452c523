//! In-process test host: the `nvme-host` driver talking to controllers of an in-process
//! subsystem through a [`Bar`] implementation, with the host's memfd mapped into the
//! controller's address space at the same IOVA.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use nvme_device::backend::RamBackend;
use nvme_device::controller::Controller;
use nvme_device::memory::DmaMemory;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::Subsystem;
use nvme_device::subsystem::SubsystemConfig;
use nvme_host::driver::Bar;
use nvme_host::driver::Driver;
use nvme_host::driver::DriverError;
use nvme_host::driver::QueuePair;
use nvme_host::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::lm::LbaMigrationQueueEntry;
use nvme_spec::status::Status;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;

/// Which controller of a subsystem a BAR reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// The primary controller (PF).
    Primary,
    /// The secondary controller behind VF `vfn`.
    Vf(u16),
}

/// BAR0 of an in-process controller. It can be re-pointed at another controller, which is how
/// a test "migrates" a guest: the guest's driver keeps running against the destination.
pub struct ControllerBar {
    target: RwLock<(Arc<Subsystem>, Function)>,
}

impl ControllerBar {
    /// A BAR for `function` of `sub`.
    pub fn new(sub: &Arc<Subsystem>, function: Function) -> Arc<Self> {
        Arc::new(Self {
            target: RwLock::new((sub.clone(), function)),
        })
    }

    /// Points the BAR at `function` of `sub` from now on.
    pub fn retarget(&self, sub: &Arc<Subsystem>, function: Function) {
        *self.target.write().unwrap() = (sub.clone(), function);
    }

    fn with<T>(&self, f: impl FnOnce(&Controller) -> T) -> T {
        let guard = self.target.read().unwrap();
        let (sub, function) = &*guard;
        let ctrl = match function {
            Function::Primary => sub.primary(),
            Function::Vf(vfn) => sub.secondary(*vfn).expect("no such VF"),
        };
        f(ctrl)
    }
}

impl Bar for ControllerBar {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        Ok(self.with(|c| c.read_register(offset, 4)) as u32)
    }

    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        Ok(self.with(|c| c.read_register(offset, 8)))
    }

    fn write32(&self, offset: u64, value: u32) -> std::io::Result<()> {
        self.with(|c| c.write_register(offset, 4, value.into()));
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.with(|c| c.write_register(offset, 4, value.into()));
    }
}

/// Host memory of `len` bytes at `iova`, mapped into every address space in `spaces`.
pub fn host_memory(len: u64, iova: u64, spaces: &[&AddressSpace]) -> Arc<HostMemory> {
    let mem = HostMemory::new(len, iova).unwrap();
    for space in spaces {
        let fd = mem.mapping().fd().unwrap().try_clone_to_owned().unwrap();
        let mapping = Mapping::from_fd(fd, 0, len as usize, Protection::ReadWrite).unwrap();
        space.map(iova, mapping).unwrap();
    }
    mem
}

/// One subsystem with a PF and one VF, each with its own address space.
pub struct Side {
    /// The subsystem.
    pub sub: Arc<Subsystem>,
    /// What the PF reaches (host memory).
    pub pf_space: Arc<AddressSpace>,
    /// What the VF reaches (guest memory).
    pub vf_space: Arc<AddressSpace>,
}

/// Block size of the test namespaces.
pub const BLOCK: u64 = 4096;

/// A subsystem named `name` with one VF and one namespace shared by PF and VF over `backend`.
pub fn side(name: &str, backend: &Arc<RamBackend>) -> Side {
    let pf_space = Arc::new(AddressSpace::new());
    let vf_space = Arc::new(AddressSpace::new());
    let (pf, vf) = (pf_space.clone(), vf_space.clone());
    let sub = Subsystem::new(
        SubsystemConfig::new(name, 1),
        vec![NamespaceSpec {
            backend: backend.clone(),
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
        move |cntlid| -> Arc<dyn DmaMemory> { if cntlid == 1 { pf.clone() } else { vf.clone() } },
    )
    .unwrap();
    Side {
        sub: Arc::new(sub),
        pf_space,
        vf_space,
    }
}

/// A host driver for the PF of `side`, with host memory at `iova`.
pub fn pf_driver(side: &Side, iova: u64) -> Driver {
    let mem = host_memory(4 << 20, iova, &[&side.pf_space]);
    Driver::new(ControllerBar::new(&side.sub, Function::Primary), mem).unwrap()
}

/// Submits `cmd` on `qp` and waits for its completion.
pub fn io(qp: &mut QueuePair, cmd: Command) -> Completion {
    let cid = qp.submit(cmd).unwrap();
    wait_for(qp, cid, Duration::from_secs(5)).expect("no I/O completion")
}

/// Waits up to `timeout` for the completion of `cid` on `qp`.
pub fn wait_for(qp: &mut QueuePair, cid: u16, timeout: Duration) -> Option<Completion> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut found = None;
        qp.poll(|e| {
            assert_eq!(e.cid, cid, "unexpected completion");
            found = Some(e);
        });
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The NVMe status of an admin command's result (SUCCESS for Ok).
pub fn status(result: Result<Completion, DriverError>) -> Status {
    match result {
        Ok(_) => Status::SUCCESS,
        Err(DriverError::Status { status, .. }) => status,
        Err(other) => panic!("admin command failed outside NVMe: {other}"),
    }
}

/// The host side of a User Data Migration Queue: reads entries with phase tracking.
pub struct CdqReader {
    /// The ring.
    pub buf: nvme_host::memory::DmaBuffer,
    /// Slots.
    pub slots: u32,
    /// Next slot to read.
    pub head: u32,
    /// Phase tag of new entries.
    pub phase: bool,
}

impl CdqReader {
    /// A reader over a zeroed ring of `slots` entries in `buf`.
    pub fn new(buf: nvme_host::memory::DmaBuffer, slots: u32) -> Self {
        Self {
            buf,
            slots,
            head: 0,
            phase: true,
        }
    }

    /// The next new entry, if the controller wrote one.
    pub fn next(&mut self) -> Option<LbaMigrationQueueEntry> {
        let mut raw = [0u8; 32];
        self.buf.read(u64::from(self.head) * 32, &mut raw);
        let entry = LbaMigrationQueueEntry::decode(&raw).unwrap();
        if entry.attr.cdqp() != self.phase {
            return None;
        }
        self.head = (self.head + 1) % self.slots;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        Some(entry)
    }

    /// Entries up to and including the first with sequence attribute `esa`, waiting up to 5 s.
    pub fn drain_until(
        &mut self,
        esa: nvme_spec::lm::EntrySequence,
    ) -> Vec<LbaMigrationQueueEntry> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        loop {
            match self.next() {
                Some(e) => {
                    out.push(e);
                    if e.attr.esa() == esa {
                        return out;
                    }
                }
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "no ESA {esa:?} entry; got {out:?}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
