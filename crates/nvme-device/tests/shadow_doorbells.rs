//! Shadow doorbells (Doorbell Buffer Config) and trapped doorbell delivery, with a host that
//! rings its I/O queues the way Linux does once it configured shadow doorbells: the shadow
//! value always, the register only when the controller's EventIdx asks for it.
//!
//! With trapped delivery an idle worker sleeps until a register write wakes it, without a
//! timeout: a lost wake-up (EventIdx armed too late, a write the worker did not look at) leaves
//! a command that never completes, and the test host's wait fails. So these tests show the
//! protocol by completing verified I/O, nothing by timing.

use std::sync::Arc;

use nvme_device::backend::RamBackend;
use nvme_device::controller::DoorbellDelivery;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::HostShadow;
use nvme_device::testing::RawQueue;
use nvme_device::testing::TestHost;
use nvme_device::testing::lm::get_state;
use nvme_device::testing::lm::resume;
use nvme_device::testing::lm::set_state;
use nvme_device::testing::lm::suspend;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IdentifyController;
use nvme_spec::status::Status;
use zerocopy::FromBytes;

const IOVA: u64 = 0x1000_0000;
const BLOCK: u64 = 4096;
/// Entries per I/O queue: small, so the tests wrap the rings many times.
const ENTRIES: u32 = 16;
/// CNTLID of VF 1.
const VF1: u16 = 2;

/// A subsystem named `name` with VF 1 and a private 1 MiB namespace, doorbells delivered as
/// `delivery`.
fn host(name: &str, delivery: DoorbellDelivery, storage: &Arc<RamBackend>) -> TestHost {
    let mut config = SubsystemConfig::new(name, 1);
    config.limits.doorbells = delivery;
    TestHost::new(
        config,
        vec![NamespaceSpec {
            backend: storage.clone(),
            block_size: BlockSize::B4096,
            attachment: Attachment::Private { vfn: 1 },
        }],
    )
}

/// A guest on VF 1 of `side` (its memory also mapped into VF 1 of `also`): an admin queue,
/// I/O queue pair 1, a shadow doorbell buffer (not configured yet) and a data page.
struct Guest {
    bar: Arc<ControllerBar>,
    admin: RawQueue,
    io: RawQueue,
    shadow: Arc<HostShadow>,
    data: DmaBuffer,
    cid: u16,
}

fn guest(side: &TestHost, also: &[&TestHost]) -> Guest {
    let mut spaces = vec![&**side.space(Function::Vf(1))];
    spaces.extend(also.iter().map(|s| &**s.space(Function::Vf(1))));
    let mem: Arc<HostMemory> = testing::host_memory(2 << 20, IOVA, &spaces);
    let bar = side.bar(Function::Vf(1));
    let mut admin = testing::raw_enable(&bar, &mem, 16);
    let io = RawQueue::new(&mem, bar.clone(), 1, ENTRIES, ENTRIES);
    for cmd in [
        Command::create_io_cq(1, 1, ENTRIES, io.cq_iova(), true, 1),
        Command::create_io_sq(2, 1, ENTRIES, io.sq_iova(), 1),
    ] {
        assert_eq!(admin.run(cmd).status.status(), Status::SUCCESS);
    }
    Guest {
        bar,
        admin,
        io,
        shadow: HostShadow::new(&mem),
        data: mem.alloc(BLOCK).unwrap(),
        cid: 10,
    }
}

impl Guest {
    /// Hands the shadow buffers to the controller and rings I/O queue 1 through them.
    fn configure_shadow(&mut self) {
        let cmd = self.shadow.config_command(3);
        assert_eq!(self.admin.run(cmd).status.status(), Status::SUCCESS);
        self.io.use_shadow(self.shadow.clone());
    }

    fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// Writes block `lba` filled with `byte`, one command at a time.
    fn write(&mut self, lba: u64, byte: u8) {
        self.data.write(0, &[byte; BLOCK as usize]);
        let cmd = Command::write(self.next_cid(), 1, lba, 0, self.data.iova(), 0);
        assert_eq!(self.io.run(cmd).status.status(), Status::SUCCESS);
    }

    /// The first byte of block `lba` after a read, checking the whole block holds it.
    fn read(&mut self, lba: u64) -> u8 {
        let cmd = Command::read(self.next_cid(), 1, lba, 0, self.data.iova(), 0);
        assert_eq!(self.io.run(cmd).status.status(), Status::SUCCESS);
        let mut block = vec![0u8; BLOCK as usize];
        self.data.read(0, &mut block);
        assert!(block.iter().all(|&b| b == block[0]), "block {lba} is torn");
        block[0]
    }

    /// Flushes in bursts of `burst` commands rung at once, `rounds` times.
    fn flush_bursts(&mut self, burst: u32, rounds: u32) {
        for _ in 0..rounds {
            for _ in 0..burst {
                let cmd = Command::flush(self.next_cid(), 1);
                self.io.push(cmd);
            }
            self.io.ring();
            for _ in 0..burst {
                assert_eq!(self.io.wait().status.status(), Status::SUCCESS);
            }
        }
    }
}

/// One pattern byte per block and round.
fn pattern(lba: u64, round: u64) -> u8 {
    (lba * 7 + round * 13 + 1) as u8
}

/// Writes then reads back 40 blocks one command at a time (the rings wrap five times), and
/// runs bursts of flushes, the last ones filling the queue (each burst takes the tail a whole
/// lap but one around, as a host at depth `ENTRIES − 1` does).
fn verified_io(g: &mut Guest, round: u64) {
    for lba in 0..40 {
        g.write(lba, pattern(lba, round));
    }
    for lba in 0..40 {
        assert_eq!(g.read(lba), pattern(lba, round), "block {lba}");
    }
    g.flush_bursts(6, 4);
    g.flush_bursts(ENTRIES - 1, 4);
}

#[test]
fn io_through_shadow_doorbells_completes_with_shared_and_trapped_doorbells() {
    for delivery in [DoorbellDelivery::Shared, DoorbellDelivery::Trapped] {
        let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
        let side = host(&format!("shadow-{delivery:?}"), delivery, &storage);
        let mut g = guest(&side, &[]);
        g.configure_shadow();
        verified_io(&mut g, 0);
        let commands = 40 + 40 + 24 + 4 * (ENTRIES - 1);
        let writes = g.shadow.register_writes();
        match delivery {
            // Nobody sleeps on a shared page: the polling worker keeps the SQ's EventIdx one
            // behind the head it reached and the CQ's one behind the head it last read before
            // posting, so no value of the host passes them after the first submission and the
            // first completion (before the worker had set them), however often the rings wrap.
            DoorbellDelivery::Shared => {
                let behind = (g.shadow.value(1, false) + ENTRIES - 1) % ENTRIES;
                assert_eq!(g.shadow.event_index(1, false), behind);
                assert!(
                    writes <= 2,
                    "{writes} register writes for {commands} commands"
                );
            }
            // An idle worker arms its queue before it sleeps: EventIdx is the tail it consumed,
            // so the next submission writes the register and wakes it.
            DoorbellDelivery::Trapped => {
                let tail = g.shadow.value(1, false);
                testing::eventually("the idle worker arms its queue", || {
                    (g.shadow.event_index(1, false) == tail).then_some(())
                });
                assert!(
                    writes > 0,
                    "a sleeping worker must have asked for a register write"
                );
            }
        }
    }
}

#[test]
fn dropping_a_trapped_controller_as_its_worker_goes_to_sleep_never_hangs() {
    // Each drop comes right after a completion, while the worker still spins or is on its
    // way to a sleep without a timeout: one that raised its flag after the drop's wake-up
    // must see the stop instead of sleeping through it (the drop joins it).
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
        for i in 0..1000u32 {
            let side = host(&format!("drop-{i}"), DoorbellDelivery::Trapped, &storage);
            let mut g = guest(&side, &[]);
            g.configure_shadow();
            g.write(u64::from(i % 8), 1);
            // Half the time at once, half the time a little later, into the spin or the sleep.
            if i % 2 == 1 {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(i % 50)));
            }
            drop(g);
            drop(side);
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a controller's drop hung: a worker slept through it");
}

#[test]
fn trapped_doorbells_without_shadow_wake_the_worker_on_every_register_write() {
    let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
    let side = host("trapped-registers", DoorbellDelivery::Trapped, &storage);
    let mut g = guest(&side, &[]);
    verified_io(&mut g, 0);
    assert_eq!(g.shadow.register_writes(), 0, "no shadow configured");
}

#[test]
fn doorbell_buffer_config_starts_from_the_registers_and_wants_aligned_pages() {
    let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
    let side = host("shadow-config", DoorbellDelivery::Shared, &storage);
    let mut g = guest(&side, &[]);
    for lba in 0..3 {
        g.write(lba, pattern(lba, 0));
    }
    let mut cmd = g.shadow.config_command(4);
    cmd.prp1 += 8;
    assert_eq!(
        g.admin.run(cmd).status.status(),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // Pages the controller reaches only by messages are refused too (polling them would cost a
    // message per pass): the queue keeps its registers.
    testing::CopiedMemory::map(side.space(Function::Vf(1)), 0x4000_0000, 2 * 4096);
    let cmd = Command::doorbell_buffer_config(4, 0x4000_0000, 0x4000_1000);
    assert_eq!(
        g.admin.run(cmd).status.status(),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(g.read(2), pattern(2, 0));
    g.configure_shadow();
    // The queue's registers said tail 4, head 4: so does its shadow entry now.
    assert_eq!((g.shadow.value(1, false), g.shadow.value(1, true)), (4, 4));
    for lba in 0..3 {
        assert_eq!(g.read(lba), pattern(lba, 0));
    }
    // Identify Controller offers the command (OACS bit 8).
    let cmd = Command::identify(5, Cns::CONTROLLER, 0, 0, g.data.iova());
    assert_eq!(g.admin.run(cmd).status.status(), Status::SUCCESS);
    let mut page = vec![0u8; BLOCK as usize];
    g.data.read(0, &mut page);
    let id = IdentifyController::read_from_bytes(&page).unwrap();
    assert!(id.oacs.doorbell_buffer_config());
}

#[test]
fn shadow_doorbells_survive_a_migration() {
    let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
    let a = host("shadow-src", DoorbellDelivery::Trapped, &storage);
    let b = host("shadow-dst", DoorbellDelivery::Trapped, &storage);
    let mut g = guest(&a, &[&b]);
    g.configure_shadow();
    verified_io(&mut g, 0);
    let pf_a = a.driver(Function::Primary, 4 << 20, 0x2000_0000);
    let pf_b = b.driver(Function::Primary, 4 << 20, 0x3000_0000);
    assert_eq!(suspend(&pf_a, VF1, false), Status::SUCCESS);
    let (state, _) = get_state(&pf_a, VF1, 4096);
    assert_eq!(suspend(&pf_b, VF1, false), Status::SUCCESS);
    assert_eq!(set_state(&pf_b, VF1, &state, 4096), Status::SUCCESS);
    assert_eq!(
        get_state(&pf_b, VF1, 4096).0,
        state,
        "save → restore → save"
    );
    assert_eq!(resume(&pf_b, VF1), Status::SUCCESS);
    g.bar.retarget(b.subsystem(), Function::Vf(1));
    // The destination reads the shadow tails: without them it would never see a command.
    for lba in 0..40 {
        assert_eq!(g.read(lba), pattern(lba, 0), "block {lba}");
    }
    verified_io(&mut g, 1);
}

/// A BAR that counts the doorbell registers written through it.
struct CountingBar {
    inner: Arc<ControllerBar>,
    doorbells: std::sync::atomic::AtomicU64,
}

impl nvme_driver::driver::Bar for CountingBar {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        self.inner.read32(offset)
    }
    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        self.inner.read64(offset)
    }
    fn write32(&self, offset: u64, value: u32) -> std::io::Result<()> {
        self.inner.write32(offset, value)
    }
    fn doorbell(&self, offset: u64, value: u32) {
        self.doorbells
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.doorbell(offset, value);
    }
}

/// Runs `cmd` on `qp` and waits (bounded) for its completion.
fn run_on(qp: &mut nvme_driver::driver::QueuePair, cmd: Command) -> Status {
    qp.submit(cmd).unwrap();
    let mut status = None;
    testing::eventually("the command completes", || {
        qp.poll(|c| status = Some(c.status.status()));
        status
    })
}

#[test]
fn the_host_driver_rings_through_shadow_doorbells_and_keeps_them_across_a_reset() {
    for delivery in [DoorbellDelivery::Shared, DoorbellDelivery::Trapped] {
        let storage = Arc::new(RamBackend::new(1 << 20).unwrap());
        let side = host(&format!("driver-shadow-{delivery:?}"), delivery, &storage);
        let bar = Arc::new(CountingBar {
            inner: side.bar(Function::Vf(1)),
            doorbells: Default::default(),
        });
        let mem = side.memory(Function::Vf(1), 4 << 20, IOVA);
        let driver = nvme_driver::driver::Driver::new(bar.clone(), mem.clone()).unwrap();
        assert!(driver.use_shadow_doorbells().unwrap(), "{delivery:?}");
        driver.set_queue_count(1).unwrap();
        let data = mem.alloc(BLOCK).unwrap();
        for round in 0..2u64 {
            let mut qp = driver.create_queue_pair(1, ENTRIES, None).unwrap();
            assert!(qp.shadowed());
            let before = bar.doorbells.load(std::sync::atomic::Ordering::SeqCst);
            for lba in 0..40 {
                data.fill(pattern(lba, round));
                let write = Command::write(0, 1, lba, 0, data.iova(), 0);
                assert_eq!(run_on(&mut qp, write), Status::SUCCESS);
            }
            for lba in 0..40 {
                data.fill(0);
                let read = Command::read(0, 1, lba, 0, data.iova(), 0);
                assert_eq!(run_on(&mut qp, read), Status::SUCCESS);
                let mut got = [0u8; 1];
                data.read(0, &mut got);
                assert_eq!(got[0], pattern(lba, round), "block {lba}, round {round}");
            }
            let writes = bar.doorbells.load(std::sync::atomic::Ordering::SeqCst) - before;
            if delivery == DoorbellDelivery::Shared {
                // Nobody arms EventIdx: a register write per ring cycle of each doorbell.
                assert!(writes < 80 / 4, "{writes} register writes for 80 commands");
            }
            if round == 0 {
                // A controller reset forgets the buffers; the driver hands them over again.
                drop(qp);
                driver.enable().unwrap();
                assert!(driver.shadow_doorbells());
                driver.set_queue_count(1).unwrap();
            }
        }
    }
}
