//! In-process test host: the `nvme-driver` user-space driver talking to controllers of an in-process
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
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::driver::DriverError;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::lm::LbaMigrationQueueEntry;
use nvme_spec::status::Status;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

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
    pub buf: nvme_driver::memory::DmaBuffer,
    /// Slots.
    pub slots: u32,
    /// Next slot to read.
    pub head: u32,
    /// Phase tag of new entries.
    pub phase: bool,
}

impl CdqReader {
    /// A reader over a zeroed ring of `slots` entries in `buf`.
    pub fn new(buf: nvme_driver::memory::DmaBuffer, slots: u32) -> Self {
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

/// A VF-only test subsystem: PF plus VF 1, with namespace 1 (4 MiB, 4096-byte blocks) and
/// namespace 2 (1 MiB, 512-byte blocks) private to VF 1, each controller in its own address
/// space. Returns the side and the two backends.
pub fn vf_side(name: &str) -> (Side, [Arc<RamBackend>; 2]) {
    let ns1 = Arc::new(RamBackend::new(4 << 20).unwrap());
    let ns2 = Arc::new(RamBackend::new(1 << 20).unwrap());
    let pf_space = Arc::new(AddressSpace::new());
    let vf_space = Arc::new(AddressSpace::new());
    let (pf, vf) = (pf_space.clone(), vf_space.clone());
    let spec = |backend: &Arc<RamBackend>, block_size| NamespaceSpec {
        backend: backend.clone(),
        block_size,
        attachment: Attachment::Private { vfn: 1 },
    };
    let sub = Subsystem::new(
        SubsystemConfig::new(name, 1),
        vec![spec(&ns1, BlockSize::B4096), spec(&ns2, BlockSize::B512)],
        move |cntlid| -> Arc<dyn DmaMemory> { if cntlid == 1 { pf.clone() } else { vf.clone() } },
    )
    .unwrap();
    let side = Side {
        sub: Arc::new(sub),
        pf_space,
        vf_space,
    };
    (side, [ns1, ns2])
}

/// How long a test waits for the controller before declaring it stuck.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A queue pair the test drives entry by entry: its own SQ and CQ sizes, CIDs chosen by the
/// caller, and the CQ head doorbell written only when the test says so.
pub struct RawQueue {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    sq: nvme_driver::memory::DmaBuffer,
    cq: nvme_driver::memory::DmaBuffer,
    sq_entries: u32,
    cq_entries: u32,
    tail: u32,
    head: u32,
    phase: bool,
    bar: Arc<dyn Bar>,
}

impl RawQueue {
    /// Rings for queue pair `qid` in `mem`, reached through `bar`.
    pub fn new(
        mem: &Arc<HostMemory>,
        bar: Arc<dyn Bar>,
        qid: u16,
        sq_entries: u32,
        cq_entries: u32,
    ) -> Self {
        Self {
            qid,
            sq: mem.alloc(u64::from(sq_entries) * 64).unwrap(),
            cq: mem.alloc(u64::from(cq_entries) * 16).unwrap(),
            sq_entries,
            cq_entries,
            tail: 0,
            head: 0,
            phase: true,
            bar,
        }
    }

    /// IOVA of the submission queue.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    /// IOVA of the completion queue.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Submission queue entries.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// The SQ tail doorbell's BAR offset.
    pub fn sq_doorbell(&self) -> u64 {
        0x1000 + 8 * u64::from(self.qid)
    }

    /// The CQ head doorbell's BAR offset.
    pub fn cq_doorbell(&self) -> u64 {
        self.sq_doorbell() + 4
    }

    /// Writes `cmd` at the tail without ringing.
    pub fn push(&mut self, cmd: Command) {
        self.sq.write(u64::from(self.tail) * 64, cmd.as_bytes());
        self.tail = (self.tail + 1) % self.sq_entries;
    }

    /// Writes the SQ tail doorbell.
    pub fn ring(&self) {
        self.bar.doorbell(self.sq_doorbell(), self.tail);
    }

    /// Pushes `cmd` and rings.
    pub fn submit(&mut self, cmd: Command) {
        self.push(cmd);
        self.ring();
    }

    /// The next new completion, if the controller posted one (the head doorbell is not
    /// written).
    pub fn next(&mut self) -> Option<Completion> {
        let mut raw = [0u8; 16];
        self.cq.read(u64::from(self.head) * 16, &mut raw);
        let entry = Completion::read_from_bytes(&raw).unwrap();
        if entry.status.phase() != self.phase {
            return None;
        }
        self.head += 1;
        if self.head == self.cq_entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        Some(entry)
    }

    /// Writes the CQ head doorbell with the entries consumed so far.
    pub fn ring_head(&self) {
        self.bar.doorbell(self.cq_doorbell(), self.head);
    }

    /// Waits for the next completion and acknowledges it.
    pub fn wait(&mut self) -> Completion {
        let entry = eventually("a completion", || self.next());
        self.ring_head();
        entry
    }

    /// Submits `cmd` and waits for its completion, which must be the next one.
    pub fn run(&mut self, cmd: Command) -> Completion {
        self.submit(cmd);
        let done = self.wait();
        assert_eq!(done.cid, cmd.cdw0.cid(), "completion out of order");
        done
    }
}

/// Brings a controller up by hand, as the Linux driver does: AQA, ASQ and ACQ, then CC.EN with
/// 64-byte SQ and 16-byte CQ entries, then wait for CSTS.RDY. Returns the admin queue.
pub fn raw_enable(bar: &Arc<ControllerBar>, mem: &Arc<HostMemory>, entries: u32) -> RawQueue {
    let admin = RawQueue::new(mem, bar.clone(), 0, entries, entries);
    let size = entries - 1;
    bar.write32(0x24, size | size << 16).unwrap();
    bar.write64(0x28, admin.sq_iova()).unwrap();
    bar.write64(0x30, admin.cq_iova()).unwrap();
    bar.write32(0x14, 1 | 6 << 16 | 4 << 20).unwrap();
    eventually("CSTS.RDY", || {
        (bar.read32(0x1C).unwrap() & 1 == 1).then_some(())
    });
    admin
}
