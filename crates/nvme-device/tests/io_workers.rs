//! I/O workers and asynchronous backends: a command a [`DelayBackend`] holds stops neither
//! another queue (with one worker or two), nor another VF while its own VF's Suspend waits for
//! it; Delete SQ and a reset with a held command behave as `controller::worker` documents; and
//! verifying I/O over four queues and two workers reads back what it wrote, across a
//! suspend / capture / restore into another subsystem. Everything counts completions; nothing
//! depends on timing but the generous waits of the test host.

use std::sync::Arc;
use std::time::Duration;

use nvme_device::backend::Backend;
use nvme_device::backend::DelayBackend;
use nvme_device::backend::DelayGate;
use nvme_device::backend::RamBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_device::testing::lm::get_state;
use nvme_device::testing::lm::resume;
use nvme_device::testing::lm::set_state;
use nvme_device::testing::lm::suspend;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::status::Status;

#[path = "common/completions.rs"]
mod completions;

const NSID: u32 = 1;
const BLOCK: u64 = 4096;
const GUEST_IOVA: u64 = 0x1000_0000;
/// CNTLID of VF `vfn`.
const fn vf_cntlid(vfn: u16) -> u16 {
    vfn + 1
}
/// The LBA the tests hold.
const HELD_LBA: u64 = 100;
/// Completions counted on another queue while a command is held.
const OTHERS: u64 = 50;

/// A subsystem with `vfs` VFs, `workers` I/O workers per controller and one shared namespace
/// over a [`DelayBackend`] on `storage`; returns it with the backend's gate.
fn host(
    name: &str,
    vfs: u16,
    workers: u16,
    storage: &Arc<RamBackend>,
) -> (TestHost, Arc<DelayGate>) {
    host_with(name, vfs, workers, DelayBackend::new(storage.clone()))
}

fn host_with(
    name: &str,
    vfs: u16,
    workers: u16,
    delay: DelayBackend,
) -> (TestHost, Arc<DelayGate>) {
    let gate = delay.gate();
    let mut config = SubsystemConfig::new(name, vfs);
    config.limits.io_workers = workers;
    let backend: Arc<dyn Backend> = Arc::new(delay);
    let host = TestHost::new(
        config,
        vec![NamespaceSpec {
            backend,
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
    );
    (host, gate)
}

fn storage() -> Arc<RamBackend> {
    Arc::new(RamBackend::new(4 << 20).unwrap())
}

/// A guest on VF `vfn` of `side` with `queues` I/O queue pairs; its memory is also mapped into
/// VF `vfn` of every host in `also` (a migration's destinations).
struct Guest {
    mem: Arc<HostMemory>,
    bar: Arc<ControllerBar>,
    driver: Driver,
    qps: Vec<QueuePair>,
}

fn guest(side: &TestHost, vfn: u16, queues: u16, also: &[&TestHost]) -> Guest {
    let mut spaces = vec![&**side.space(Function::Vf(vfn))];
    spaces.extend(also.iter().map(|s| &**s.space(Function::Vf(vfn))));
    let mem = testing::host_memory(8 << 20, GUEST_IOVA, &spaces);
    let bar = side.bar(Function::Vf(vfn));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    assert_eq!(driver.set_queue_count(queues).unwrap(), queues);
    let qps = (1..=queues)
        .map(|qid| driver.create_queue_pair(qid, 64, None).unwrap())
        .collect();
    Guest {
        mem,
        bar,
        driver,
        qps,
    }
}

fn pattern(slba: u64, blocks: u64, seed: u64) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| ((slba * 31 + i * 7 + seed * 13) % 251) as u8)
        .collect()
}

/// A Write of `blocks` blocks at `slba` with `pattern(slba, blocks, seed)`, with its data
/// buffer and PRP list (kept until the command completes).
fn write_cmd(guest: &Guest, slba: u64, blocks: u64, seed: u64) -> (Command, [DmaBuffer; 2]) {
    let buf = guest.mem.alloc(blocks * BLOCK).unwrap();
    buf.write(0, &pattern(slba, blocks, seed));
    let mut cmd = Command::write(0, NSID, slba, (blocks - 1) as u16, 0, 0);
    let list = guest.mem.alloc(4096).unwrap();
    nvme_driver::driver::build_prps(&mut cmd, buf.iova(), Some(&list), blocks * BLOCK);
    (cmd, [buf, list])
}

impl Guest {
    fn write(&mut self, q: usize, slba: u64, blocks: u64, seed: u64) {
        let (cmd, _buffers) = write_cmd(self, slba, blocks, seed);
        let done = testing::io(&mut self.qps[q], cmd);
        assert_eq!(done.status.status(), Status::SUCCESS, "write at {slba}");
    }

    fn read(&mut self, q: usize, slba: u64, blocks: u64) -> Vec<u8> {
        let buf = self.mem.alloc(blocks * BLOCK).unwrap();
        let mut cmd = Command::read(0, NSID, slba, (blocks - 1) as u16, 0, 0);
        let list = self.mem.alloc(4096).unwrap();
        nvme_driver::driver::build_prps(&mut cmd, buf.iova(), Some(&list), blocks * BLOCK);
        let done = testing::io(&mut self.qps[q], cmd);
        assert_eq!(done.status.status(), Status::SUCCESS, "read at {slba}");
        let mut out = vec![0u8; (blocks * BLOCK) as usize];
        buf.read(0, &mut out);
        out
    }

    /// Submits a Write of the held LBA on queue `q` and waits until the backend holds it;
    /// returns its CID and buffers.
    fn submit_held(&mut self, q: usize, gate: &DelayGate) -> (u16, [DmaBuffer; 2]) {
        gate.hold(HELD_LBA * BLOCK..(HELD_LBA + 1) * BLOCK);
        let (cmd, buffers) = write_cmd(self, HELD_LBA, 1, 7);
        let cid = self.qps[q].submit(cmd).unwrap();
        testing::eventually("the backend holds the write", || {
            (gate.held() == 1).then_some(())
        });
        (cid, buffers)
    }

    /// Writes and reads back [`OTHERS`] blocks on queue `q`.
    fn others(&mut self, q: usize) {
        for i in 0..OTHERS {
            self.write(q, i, 1, 1);
            assert_eq!(self.read(q, i, 1), pattern(i, 1, 1));
        }
    }
}

fn not_completed(qp: &mut QueuePair, cid: u16) {
    assert!(
        testing::wait_for(qp, cid, Duration::from_millis(50)).is_none(),
        "the held command completed"
    );
}

fn completes(qp: &mut QueuePair, cid: u16) -> Status {
    testing::wait_for(qp, cid, testing::PATIENCE)
        .expect("the released command completes")
        .status
        .status()
}

fn a_held_command_does_not_stop_another_queue(workers: u16) {
    let storage = storage();
    let (host, gate) = host("held", 1, workers, &storage);
    let mut g = guest(&host, 1, 2, &[]);
    let (cid, _buffers) = g.submit_held(0, &gate);
    g.others(1);
    not_completed(&mut g.qps[0], cid);
    // The held queue itself keeps serving other commands too.
    g.write(0, 200, 1, 3);
    assert_eq!(g.read(0, 200, 1), pattern(200, 1, 3));
    gate.release();
    assert_eq!(completes(&mut g.qps[0], cid), Status::SUCCESS);
    assert_eq!(g.read(1, HELD_LBA, 1), pattern(HELD_LBA, 1, 7));
    let vf = host.controller(Function::Vf(1));
    assert_eq!(testing::in_flight(vf), 0);
    let queues = vf.queues();
    let workers_of: Vec<_> = queues.iter().map(|q| (q.qid, q.worker)).collect();
    let second = if workers > 1 { 1 } else { 0 };
    assert_eq!(workers_of, [(0, 0), (1, 0), (2, second)]);
    // Two writes + two reads on queue 1, the held write among them; 2 × OTHERS + 1 on queue 2.
    assert_eq!(queues[1].counters.completed, 3);
    assert_eq!(queues[2].counters.completed, 2 * OTHERS + 1);
}

#[test]
fn a_held_command_does_not_stop_another_queue_of_the_same_worker() {
    a_held_command_does_not_stop_another_queue(1);
}

#[test]
fn a_held_command_does_not_stop_another_queue_of_another_worker() {
    a_held_command_does_not_stop_another_queue(2);
}

#[test]
fn suspend_waits_for_a_held_command_while_another_vf_keeps_completing() {
    let storage = storage();
    let (host, gate) = host("suspend", 2, 2, &storage);
    let pf = host.driver(Function::Primary, 4 << 20, 0x2000_0000);
    let mut a = guest(&host, 1, 1, &[]);
    let mut b = guest(&host, 2, 1, &[]);
    let (cid, _buffers) = a.submit_held(0, &gate);
    std::thread::scope(|s| {
        let suspending = s.spawn(|| suspend(&pf, vf_cntlid(1), false));
        testing::eventually("VF 1 suspended", || {
            host.controller(Function::Vf(1)).suspended().then_some(())
        });
        // VF 2 completes its I/O while VF 1's Suspend waits.
        b.others(0);
        assert!(
            !suspending.is_finished(),
            "Suspend finished with a command in flight"
        );
        gate.release();
        assert_eq!(suspending.join().unwrap(), Status::SUCCESS);
    });
    // The held write completed before the Suspend did, and nothing is in flight.
    let vf = host.controller(Function::Vf(1));
    assert_eq!(testing::in_flight(vf), 0);
    assert_eq!(completes(&mut a.qps[0], cid), Status::SUCCESS);
    let (state, _) = get_state(&pf, vf_cntlid(1), 4096);
    assert_eq!(get_state(&pf, vf_cntlid(1), 4096).0, state, "nothing moved");
    let q1 = vf.queues()[1];
    assert_eq!((q1.sq_head, q1.cq_tail, q1.counters.completed), (1, 1, 1));
    assert_eq!(resume(&pf, vf_cntlid(1)), Status::SUCCESS);
    assert_eq!(a.read(0, HELD_LBA, 1), pattern(HELD_LBA, 1, 7));
}

#[test]
fn a_suspend_waiting_on_one_private_port_does_not_hold_up_another_vfs_on_another() {
    // The migration driver of each VF has a private admin port of its own: VF 1's Suspend
    // waiting for its held command occupies only VF 1's port.
    let storage = storage();
    let (host, gate) = host("ports", 2, 1, &storage);
    let port_a = host.private_port(4 << 20, 0x2000_0000);
    let port_b = host.private_port(4 << 20, 0x2000_0000);
    let mut a = guest(&host, 1, 1, &[]);
    let mut b = guest(&host, 2, 1, &[]);
    let (cid, _buffers) = a.submit_held(0, &gate);
    std::thread::scope(|s| {
        let suspending = s.spawn(|| suspend(&port_a.driver, vf_cntlid(1), false));
        testing::eventually("VF 1 suspended", || {
            host.controller(Function::Vf(1)).suspended().then_some(())
        });
        // VF 2 suspends, is captured and resumes through the other port meanwhile.
        assert_eq!(
            suspend(&port_b.driver, vf_cntlid(2), false),
            Status::SUCCESS
        );
        let (state, _) = get_state(&port_b.driver, vf_cntlid(2), 4096);
        assert!(!state.is_empty());
        assert_eq!(resume(&port_b.driver, vf_cntlid(2)), Status::SUCCESS);
        b.others(0);
        assert!(
            !suspending.is_finished(),
            "VF 1's Suspend finished with a command in flight"
        );
        gate.release();
        assert_eq!(suspending.join().unwrap(), Status::SUCCESS);
    });
    assert_eq!(completes(&mut a.qps[0], cid), Status::SUCCESS);
    assert_eq!(resume(&port_a.driver, vf_cntlid(1)), Status::SUCCESS);
    assert_eq!(a.read(0, HELD_LBA, 1), pattern(HELD_LBA, 1, 7));
}

#[test]
fn delete_sq_completes_a_held_command_first() {
    let storage = storage();
    let (host, gate) = host("delete", 1, 2, &storage);
    let mut g = guest(&host, 1, 2, &[]);
    let (cid, _buffers) = g.submit_held(1, &gate);
    let mut qp = g.qps.pop().unwrap();
    std::thread::scope(|s| {
        let deleting = s.spawn(|| g.driver.admin(Command::delete_io_sq(0, 2)));
        // The held command has not completed, and the deletion waits for it.
        not_completed(&mut qp, cid);
        assert!(!deleting.is_finished());
        gate.release();
        let done = deleting.join().unwrap().unwrap();
        assert_eq!(done.status.status(), Status::SUCCESS);
    });
    // Its completion was posted while its queue existed.
    assert_eq!(completes(&mut qp, cid), Status::SUCCESS);
    let vf = host.controller(Function::Vf(1));
    assert_eq!(testing::in_flight(vf), 0);
    assert_eq!(
        vf.queues().iter().map(|q| q.qid).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(g.read(0, HELD_LBA, 1), pattern(HELD_LBA, 1, 7));
}

#[test]
fn a_reset_waits_for_a_held_command_and_discards_its_completion() {
    let storage = storage();
    let (host, gate) = host("reset", 1, 2, &storage);
    let mut g = guest(&host, 1, 2, &[]);
    let (cid, _buffers) = g.submit_held(1, &gate);
    let vf = host.controller(Function::Vf(1));
    let cq_tail_before = vf.queues()[2].cq_tail;
    let resets = testing::resets(vf);
    std::thread::scope(|s| {
        let resetting = s.spawn(|| vf.reset());
        // Once the reset counts, it holds every lock: no worker can post the completion.
        testing::eventually("the reset holds the controller", || {
            (testing::resets(vf) > resets).then_some(())
        });
        assert!(!resetting.is_finished(), "the reset did not wait");
        gate.release();
        resetting.join().unwrap();
    });
    assert_eq!(testing::in_flight(vf), 0);
    assert!(vf.queues().is_empty(), "the reset deleted every queue");
    // The write reached the storage, but no completion went into the deleted queue.
    let mut data = vec![0u8; BLOCK as usize];
    storage.read(HELD_LBA * BLOCK, &mut data).unwrap();
    assert_eq!(data, pattern(HELD_LBA, 1, 7));
    assert_eq!(cq_tail_before, 0);
    not_completed(&mut g.qps[1], cid);
}

#[test]
fn a_full_backend_queue_keeps_commands_in_order_and_loses_none() {
    let storage = storage();
    let (host, _gate) = host_with(
        "full",
        1,
        1,
        DelayBackend::new(storage.clone()).with_depth(1),
    );
    let mut g = guest(&host, 1, 1, &[]);
    let mut buffers = Vec::new();
    let cids: Vec<u16> = (0..40)
        .map(|i| {
            let (cmd, b) = write_cmd(&g, i, 1, 5);
            buffers.push(b);
            g.qps[0].submit(cmd).unwrap()
        })
        .collect();
    assert!(
        completions::collect(&mut g.qps[0], &cids)
            .iter()
            .all(|s| *s == Status::SUCCESS)
    );
    for i in 0..40 {
        assert_eq!(g.read(0, i, 1), pattern(i, 1, 5));
    }
}

#[test]
fn verified_io_on_four_queues_over_two_workers_survives_a_migration() {
    let storage = storage();
    let (a, _) = host("src", 1, 2, &storage);
    let (b, _) = host("dst", 1, 2, &storage);
    let mut g = guest(&a, 1, 4, &[&b]);
    // Many writes in flight on every queue at once, then every block read back.
    let blocks_per_queue = 24u64;
    let mut buffers = Vec::new();
    let mut cids = vec![Vec::new(); 4];
    for i in 0..blocks_per_queue {
        for (q, cids) in cids.iter_mut().enumerate() {
            let slba = q as u64 * 256 + i * 4;
            let (cmd, b) = write_cmd(&g, slba, 1 + i % 3, q as u64);
            buffers.push(b);
            cids.push(g.qps[q].submit(cmd).unwrap());
        }
    }
    for (q, cids) in cids.iter().enumerate() {
        assert!(
            completions::collect(&mut g.qps[q], cids)
                .iter()
                .all(|s| *s == Status::SUCCESS)
        );
    }
    let expect = |q: usize, i: u64| pattern(q as u64 * 256 + i * 4, 1 + i % 3, q as u64);
    let pf_a = a.driver(Function::Primary, 4 << 20, 0x2000_0000);
    let pf_b = b.driver(Function::Primary, 4 << 20, 0x3000_0000);
    assert_eq!(suspend(&pf_a, vf_cntlid(1), false), Status::SUCCESS);
    assert_eq!(testing::in_flight(a.controller(Function::Vf(1))), 0);
    let (state, _) = get_state(&pf_a, vf_cntlid(1), 4096);
    assert_eq!(suspend(&pf_b, vf_cntlid(1), false), Status::SUCCESS);
    assert_eq!(
        set_state(&pf_b, vf_cntlid(1), &state, 4096),
        Status::SUCCESS
    );
    assert_eq!(
        get_state(&pf_b, vf_cntlid(1), 4096).0,
        state,
        "save → restore → save"
    );
    assert_eq!(resume(&pf_b, vf_cntlid(1)), Status::SUCCESS);
    g.bar.retarget(b.subsystem(), Function::Vf(1));
    // Each queue on the destination reads what every queue wrote on the source.
    for q in 0..4 {
        for i in 0..blocks_per_queue {
            let slba = q as u64 * 256 + i * 4;
            assert_eq!(
                g.read((q + 1) % 4, slba, 1 + i % 3),
                expect(q, i),
                "{q}/{i}"
            );
        }
    }
    let workers: Vec<_> = b
        .controller(Function::Vf(1))
        .queues()
        .iter()
        .map(|q| q.worker)
        .collect();
    assert_eq!(workers, [0, 0, 1, 0, 1]);
}

#[test]
fn asynchronous_commands_report_errors_and_flush_like_synchronous_ones() {
    let storage = storage();
    let (host, _gate) = host("errors", 1, 2, &storage);
    let mut g = guest(&host, 1, 2, &[]);
    let status = |g: &mut Guest, cmd| testing::io(&mut g.qps[1], cmd).status.status();
    assert_eq!(status(&mut g, Command::flush(0, NSID)), Status::SUCCESS);
    let blocks = storage.size() / BLOCK;
    assert_eq!(
        status(&mut g, Command::read(0, NSID, blocks, 0, GUEST_IOVA, 0)),
        Status::LBA_OUT_OF_RANGE,
        "checked before the backend sees it"
    );
    // The backend's copy into guest memory fails: an unmapped data buffer.
    assert_eq!(
        status(&mut g, Command::read(0, NSID, 0, 0, 0x7000_0000, 0)),
        Status::DATA_TRANSFER_ERROR
    );
    assert_eq!(
        status(&mut g, Command::write(0, NSID, 0, 0, 0x7000_0000, 0)),
        Status::DATA_TRANSFER_ERROR
    );
    let q = host.controller(Function::Vf(1)).queues()[2];
    assert_eq!(
        (q.worker, q.counters.completed, q.counters.errors),
        (1, 4, 3)
    );
}
