//! A controller brought up and used the way the Linux `nvme` driver does: enable, Identify,
//! Number of Queues, I/O queue pairs with MSI-X vectors, verified I/O on every queue with every
//! PRP layout, Write Zeroes, deallocation, Flush, asynchronous events, Abort, a controller reset
//! in the middle of I/O, shutdown, and a refused enable.

mod common;

use std::sync::Arc;

use nvme_device::namespace::NamespaceIdentity;
use nvme_device::testing;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::RawQueue;
use nvme_device::testing::TestHost;
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::driver::build_prps;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::command::DsmCdw10;
use nvme_spec::command::DsmCdw11;
use nvme_spec::command::DsmRange;
use nvme_spec::command::GetLogPageCdw10;
use nvme_spec::command::NvmOpcode;
use nvme_spec::command::WriteZeroesCdw12;
use nvme_spec::features::AsyncEventCompletion;
use nvme_spec::features::AsyncEventInfoError;
use nvme_spec::features::AsyncEventType;
use nvme_spec::features::FeatureId;
use nvme_spec::features::NumberOfQueuesAllocated;
use nvme_spec::identify::CSI_NVM;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IdentifyControllerNvm;
use nvme_spec::identify::NamespaceIdentifier;
use nvme_spec::identify::NamespaceList;
use nvme_spec::identify::decode_namespace_descriptors;
use nvme_spec::identify::pad_ascii;
use nvme_spec::log::LogPageId;
use nvme_spec::registers::ShutdownStatus;
use nvme_spec::status::Status;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

const IOVA: u64 = 0x4000_0000;
/// Blocks of namespace 1 (4 MiB of 4096-byte blocks) and namespace 2 (1 MiB of 512-byte ones).
const NS1_BLOCKS: u64 = 1024;
const NS2_BLOCKS: u64 = 2048;
const PAGE: u64 = 4096;

/// The guest of VF 1: its memory, BAR and driver.
struct Guest {
    host: TestHost,
    mem: Arc<HostMemory>,
    bar: Arc<ControllerBar>,
    driver: Driver,
}

fn guest(name: &str) -> Guest {
    let (host, _) = common::vf_host(name);
    let mem = host.memory(Function::Vf(1), 16 << 20, IOVA);
    let bar = host.bar(Function::Vf(1));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    Guest {
        host,
        mem,
        bar,
        driver,
    }
}

/// One block of test data: it starts with its LBA and generation, the rest derives from both.
fn block(lba: u64, generation: u64, size: u64) -> Vec<u8> {
    let mut x =
        (lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation.wrapping_mul(0xC2B2_AE3D)) | 1;
    let mut out: Vec<u8> = (0..size / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    out[..8].copy_from_slice(&lba.to_le_bytes());
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out
}

/// `blocks` consecutive blocks from `slba`.
fn blocks(slba: u64, count: u64, generation: u64, size: u64) -> Vec<u8> {
    (slba..slba + count)
        .flat_map(|lba| block(lba, generation, size))
        .collect()
}

/// Pushes `cmds` on `qp`, rings once and waits for all completions, which must succeed.
fn run_batch(qp: &mut QueuePair, cmds: &[Command]) {
    for cmd in cmds {
        qp.push(*cmd).unwrap();
    }
    qp.ring();
    let mut done = 0;
    testing::eventually("a batch of I/O completions", || {
        qp.poll(|e| {
            assert_eq!(e.status.status(), Status::SUCCESS, "I/O failed: {e:?}");
            done += 1;
        });
        (done == cmds.len()).then_some(())
    });
}

/// Runs one I/O command and returns its status.
fn run_one(qp: &mut QueuePair, cmd: Command) -> Status {
    testing::io(qp, cmd).status.status()
}

/// Reads `count` blocks of `size` bytes at `slba` through a plain PRP layout.
fn read(
    mem: &Arc<HostMemory>,
    qp: &mut QueuePair,
    nsid: u32,
    slba: u64,
    count: u64,
    size: u64,
) -> Vec<u8> {
    let len = count * size;
    let buf = mem.alloc(len).unwrap();
    let list = mem.alloc(PAGE).unwrap();
    let mut cmd = Command::read(0, nsid, slba, (count - 1) as u16, 0, 0);
    build_prps(&mut cmd, buf.iova(), Some(&list), len);
    assert_eq!(run_one(qp, cmd), Status::SUCCESS);
    let mut out = vec![0u8; len as usize];
    buf.read(0, &mut out);
    out
}

#[test]
fn bring_up_and_identify_like_linux() {
    let g = guest("ll-identify");
    let identity = g.host.subsystem().identity().clone();
    let id = g.driver.identify_controller().unwrap();
    assert_eq!(id.cntlid, 2);
    assert_eq!(id.mdts, 6);
    assert_eq!(u32::from(id.ver), 0x0002_0000);
    assert_eq!(
        u64::from(u32::from(id.ver)),
        g.host.controller(Function::Vf(1)).read_register(8, 4)
    );
    assert!(
        !id.oacs.hmlms(),
        "only the primary controller manages migration"
    );
    assert_eq!(id.sn, pad_ascii::<20>(&identity.serial));
    assert_eq!(id.mn, pad_ascii::<40>(&identity.model));
    assert_eq!(id.fr, pad_ascii::<8>(&identity.firmware));
    let nqn = identity.nqn.as_bytes();
    assert_eq!(&id.subnqn[..nqn.len()], nqn);
    assert!(id.subnqn[nqn.len()..].iter().all(|&b| b == 0));
    assert_eq!((id.sqes.required(), id.sqes.maximum()), (6, 6));
    assert_eq!((id.cqes.required(), id.cqes.maximum()), (4, 4));
    assert_eq!(id.nn, 2);
    assert!(id.oncs.dataset_management() && id.oncs.write_zeroes());
    assert!(id.vwc.present());

    // The PF advertises host managed live migration.
    let (pf_host, _) = common::vf_host("ll-identify-pf");
    let pf = pf_host.driver(Function::Primary, 4 << 20, IOVA);
    let pf_id = pf.identify_controller().unwrap();
    assert_eq!(pf_id.cntlid, 1);
    assert!(pf_id.oacs.hmlms());

    // Identify Namespace: NSZE and the LBA format in use for both block sizes.
    for (nsid, nsze, lbads) in [(1u32, NS1_BLOCKS, 12u8), (2, NS2_BLOCKS, 9)] {
        let ns = g.driver.identify_namespace(nsid).unwrap();
        assert_eq!((ns.nsze, ns.ncap), (nsze, nsze), "namespace {nsid}");
        assert_eq!(ns.nlbaf, 1);
        assert_eq!(ns.lbaf[usize::from(ns.flbas & 0xF)].lbads, lbads);
        assert_eq!((ns.lbaf[0].lbads, ns.lbaf[1].lbads), (9, 12));
        let expected = NamespaceIdentity::derive(&identity.serial, nsid);
        assert_eq!(ns.nguid, expected.nguid);
        assert_eq!(ns.eui64, expected.eui64);
        assert_ne!(ns.nguid, [0; 16]);

        let raw = g
            .driver
            .admin_read(
                Command::identify(0, Cns::NAMESPACE_ID_DESCRIPTORS, nsid, 0, 0),
                PAGE,
            )
            .unwrap();
        let descriptors = decode_namespace_descriptors(&raw).unwrap();
        for want in [
            NamespaceIdentifier::Eui64(expected.eui64),
            NamespaceIdentifier::Nguid(expected.nguid),
            NamespaceIdentifier::Uuid(expected.uuid),
            NamespaceIdentifier::Csi(CSI_NVM),
        ] {
            assert!(descriptors.contains(&want), "{want:?} missing for {nsid}");
        }
        g.driver
            .admin_read(
                Command::identify_csi(0, Cns::CSI_NAMESPACE, nsid, CSI_NVM, 0),
                PAGE,
            )
            .unwrap();
    }
    assert_ne!(
        g.driver.identify_namespace(1).unwrap().nguid,
        g.driver.identify_namespace(2).unwrap().nguid
    );

    // Active namespace lists, whole and from NSID 1 on, for all command sets and for CSI 0.
    assert_eq!(g.driver.active_namespaces().unwrap(), vec![1, 2]);
    for cmd in [
        Command::identify(0, Cns::ACTIVE_NAMESPACE_LIST, 1, 0, 0),
        Command::identify_csi(0, Cns::CSI_ACTIVE_NAMESPACE_LIST, 1, CSI_NVM, 0),
    ] {
        let raw = g.driver.admin_read(cmd, PAGE).unwrap();
        let list = NamespaceList::read_from_bytes(&raw).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![2]);
    }
    let raw = g
        .driver
        .admin_read(
            Command::identify_csi(0, Cns::CSI_CONTROLLER, 0, CSI_NVM, 0),
            PAGE,
        )
        .unwrap();
    assert_eq!(
        IdentifyControllerNvm::read_from_bytes(&raw).unwrap().dmrl,
        255
    );

    // Number of Queues: the allocation is what was asked for, and Get Features reports it.
    assert_eq!(g.driver.set_queue_count(4).unwrap(), 4);
    let allocated = NumberOfQueuesAllocated::from(
        g.driver
            .get_feature(FeatureId::NUMBER_OF_QUEUES, 0)
            .unwrap(),
    );
    assert_eq!((allocated.nsqa(), allocated.ncqa()), (3, 3));
}

#[test]
fn verified_io_on_four_queues_with_every_prp_layout() {
    let g = guest("ll-io");
    let irq = g.host.interrupts(Function::Vf(1));
    assert_eq!(g.driver.set_queue_count(4).unwrap(), 4);
    let mut qps: Vec<QueuePair> = (1..=4u16)
        .map(|q| g.driver.create_queue_pair(q, 64, Some(q)).unwrap())
        .collect();

    // Generations of single-block writes spread over namespace 1, each LBA written on one
    // queue and read back on another.
    let lbas: Vec<u64> = (0..128).map(|i| i * 8).collect();
    for generation in 0..3u64 {
        let mut buffers: Vec<Vec<DmaBuffer>> = (0..4).map(|_| Vec::new()).collect();
        let mut cmds: Vec<Vec<Command>> = vec![Vec::new(); 4];
        for (i, &lba) in lbas.iter().enumerate() {
            let buf = g.mem.alloc(PAGE).unwrap();
            buf.write(0, &block(lba, generation, PAGE));
            cmds[i % 4].push(Command::write(0, 1, lba, 0, buf.iova(), 0));
            buffers[i % 4].push(buf);
        }
        for (qp, cmds) in qps.iter_mut().zip(&cmds) {
            run_batch(qp, cmds);
        }
        let mut reads: Vec<Vec<Command>> = vec![Vec::new(); 4];
        let mut targets = Vec::new();
        for (i, &lba) in lbas.iter().enumerate() {
            let buf = g.mem.alloc(PAGE).unwrap();
            reads[(i + 1) % 4].push(Command::read(0, 1, lba, 0, buf.iova(), 0));
            targets.push((lba, buf));
        }
        // All four queues at once.
        for (qp, cmds) in qps.iter_mut().zip(&reads) {
            for cmd in cmds {
                qp.push(*cmd).unwrap();
            }
            qp.ring();
        }
        for qp in &mut qps {
            let want = qp.outstanding();
            let mut done = 0;
            testing::eventually("reads", || {
                qp.poll(|e| {
                    assert!(e.status.status().is_success());
                    done += 1;
                });
                (done == want).then_some(())
            });
        }
        for (lba, buf) in &targets {
            let mut out = vec![0u8; PAGE as usize];
            buf.read(0, &mut out);
            assert!(
                out == block(*lba, generation, PAGE),
                "LBA {lba} generation {generation}"
            );
        }
    }
    for vector in 0..=4 {
        assert!(irq.count(vector) > 0, "vector {vector} never fired");
    }
    assert_eq!(irq.count(5), 0);

    let qp = &mut qps[0];
    let mem = &g.mem;

    // PRP1 and PRP2 as two separate data pages.
    let (a, _gap, b) = (
        mem.alloc(PAGE).unwrap(),
        mem.alloc(PAGE).unwrap(),
        mem.alloc(PAGE).unwrap(),
    );
    let data = blocks(900, 2, 7, PAGE);
    a.write(0, &data[..4096]);
    b.write(0, &data[4096..]);
    assert_eq!(
        run_one(qp, Command::write(0, 1, 900, 1, a.iova(), b.iova())),
        Status::SUCCESS
    );
    assert!(read(mem, qp, 1, 900, 2, PAGE) == data);
    a.fill(0);
    b.fill(0);
    assert_eq!(
        run_one(qp, Command::read(0, 1, 900, 1, a.iova(), b.iova())),
        Status::SUCCESS
    );
    let mut back = vec![0u8; 8192];
    a.read(0, &mut back[..4096]);
    b.read(0, &mut back[4096..]);
    assert!(back == data);

    // A PRP list whose pages are scattered: transfer page k lives in buffer page perm(k).
    let mut scattered = |count: u64, list_at: u64, chain: bool, slba: u64, generation: u64| {
        let pool = mem.alloc(count * PAGE).unwrap();
        let perm = |k: u64| (k * 5) % count;
        let lists = mem.alloc(2 * PAGE).unwrap();
        let entries: Vec<u64> = (1..count).map(|k| pool.iova() + perm(k) * PAGE).collect();
        if chain {
            // The first list holds one data entry and a pointer to the second list page.
            let first: Vec<u8> = [entries[0], lists.iova() + PAGE]
                .iter()
                .flat_map(|e| e.to_le_bytes())
                .collect();
            lists.write(list_at, &first);
            let rest: Vec<u8> = entries[1..].iter().flat_map(|e| e.to_le_bytes()).collect();
            lists.write(PAGE, &rest);
        } else {
            let all: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            lists.write(list_at, &all);
        }
        let prp1 = pool.iova() + perm(0) * PAGE;
        let prp2 = lists.iova() + list_at;
        let data = blocks(slba, count, generation, PAGE);
        for k in 0..count {
            let page = &data[(k * PAGE) as usize..((k + 1) * PAGE) as usize];
            pool.write(perm(k) * PAGE, page);
        }
        let nlb = (count - 1) as u16;
        assert_eq!(
            run_one(qp, Command::write(0, 1, slba, nlb, prp1, prp2)),
            Status::SUCCESS
        );
        assert!(
            read(mem, qp, 1, slba, count, PAGE) == data,
            "{count} pages, chain {chain}"
        );
        pool.fill(0);
        assert_eq!(
            run_one(qp, Command::read(0, 1, slba, nlb, prp1, prp2)),
            Status::SUCCESS
        );
        for k in 0..count {
            let mut page = vec![0u8; PAGE as usize];
            pool.read(perm(k) * PAGE, &mut page);
            assert!(page[..] == data[(k * PAGE) as usize..((k + 1) * PAGE) as usize]);
        }
    };
    scattered(16, 0x100, false, 920, 8);
    // The largest transfer (MDTS, 64 pages), with a list that starts in the last two slots of
    // its page and chains onto the next list page.
    scattered(64, PAGE - 16, true, 960, 9);

    // A buffer that starts 512 bytes into its first page (512-byte blocks of namespace 2):
    // 12 KiB then needs PRP1, and a list for the three further pages.
    let buf = mem.alloc(4 * PAGE).unwrap();
    let list = mem.alloc(PAGE).unwrap();
    let data = blocks(100, 24, 10, 512);
    buf.write(0x200, &data);
    let mut cmd = Command::write(0, 2, 100, 23, 0, 0);
    build_prps(&mut cmd, buf.iova() + 0x200, Some(&list), data.len() as u64);
    assert_eq!(cmd.prp2, list.iova());
    assert_eq!(run_one(qp, cmd), Status::SUCCESS);
    assert!(read(mem, qp, 2, 100, 24, 512) == data);
    // 4 KiB starting 0x600 into a page: PRP2 is the second data page.
    let mut cmd = Command::read(0, 2, 104, 7, 0, 0);
    buf.fill(0);
    build_prps(&mut cmd, buf.iova() + 0x600, None, PAGE);
    assert_eq!(cmd.prp2, buf.iova() + PAGE);
    assert_eq!(run_one(qp, cmd), Status::SUCCESS);
    let mut back = vec![0u8; PAGE as usize];
    buf.read(0x600, &mut back);
    assert!(back[..] == data[4 * 512..12 * 512]);

    // Write Zeroes over LBAs 0..=8 (written above), with and without deallocation.
    for (slba, deac) in [(0u64, false), (16, true)] {
        let mut wz = Command::write(0, 1, slba, 0, 0, 0);
        wz.cdw0 = wz.cdw0.with_opcode(NvmOpcode::WRITE_ZEROES.0);
        wz.cdw12 = WriteZeroesCdw12::new().with_nlb(8).with_deac(deac).into();
        assert_eq!(run_one(qp, wz), Status::SUCCESS);
        assert!(read(mem, qp, 1, slba, 9, PAGE).iter().all(|&b| b == 0));
    }
    assert!(read(mem, qp, 1, 32, 1, PAGE) == block(32, 2, PAGE));

    // Dataset Management deallocate of two ranges: they read back as zeros, a neighbour not.
    let ranges = [
        DsmRange {
            cattr: 0,
            nlb: 1,
            slba: 40,
        },
        DsmRange {
            cattr: 0,
            nlb: 9,
            slba: 48,
        },
    ];
    let dsm_buf = mem.alloc(PAGE).unwrap();
    dsm_buf.write(0, ranges.as_bytes());
    let mut dsm = Command::write(0, 1, 0, 0, dsm_buf.iova(), 0);
    dsm.cdw0 = dsm.cdw0.with_opcode(NvmOpcode::DATASET_MANAGEMENT.0);
    dsm.cdw10 = DsmCdw10::new().with_nr(1).into();
    dsm.cdw11 = DsmCdw11::new().with_ad(true).into();
    dsm.cdw12 = 0;
    assert_eq!(run_one(qp, dsm), Status::SUCCESS);
    assert!(read(mem, qp, 1, 40, 1, PAGE).iter().all(|&b| b == 0));
    assert!(read(mem, qp, 1, 48, 9, PAGE).iter().all(|&b| b == 0));
    assert!(read(mem, qp, 1, 64, 1, PAGE) == block(64, 2, PAGE));

    // Flush one namespace and all of them.
    assert_eq!(run_one(qp, Command::flush(0, 1)), Status::SUCCESS);
    assert_eq!(run_one(qp, Command::flush(0, u32::MAX)), Status::SUCCESS);
}

/// Runs two admin commands one after the other on a raw admin queue: once the second has
/// completed, the controller has finished a whole pass that started after everything written
/// before the first, including delivering any event that was due.
fn barrier(admin: &mut RawQueue, cid: u16) {
    for i in 0..2 {
        let done = admin.run(Command::get_features(
            cid + i,
            FeatureId::ARBITRATION,
            nvme_spec::features::Select::CURRENT,
            0,
        ));
        assert!(done.status.status().is_success());
    }
}

fn assert_invalid_doorbell_event(done: &Completion, cid: u16) {
    assert_eq!(done.cid, cid);
    assert_eq!(done.status.status(), Status::SUCCESS);
    let event = AsyncEventCompletion::from(done.dw0);
    assert_eq!(event.event_type(), AsyncEventType::ERROR);
    assert_eq!(
        event.event_info(),
        AsyncEventInfoError::INVALID_DOORBELL_VALUE.0
    );
    assert_eq!(event.log_page(), LogPageId::ERROR_INFORMATION);
}

#[test]
fn async_events_are_masked_until_the_log_is_read_and_aborts_complete_them() {
    let (host, _) = common::vf_host("ll-aer");
    let mem = host.memory(Function::Vf(1), 2 << 20, IOVA);
    let bar = host.bar(Function::Vf(1));
    let mut admin = testing::raw_enable(&bar, &mem, 16);
    let io = RawQueue::new(&mem, bar.clone(), 1, 8, 8);
    let created = [
        admin.run(Command::create_io_cq(1, 1, 8, io.cq_iova(), true, 1)),
        admin.run(Command::create_io_sq(2, 1, 8, io.sq_iova(), 1)),
    ];
    assert!(created.iter().all(|c| c.status.status().is_success()));
    let log = mem.alloc(PAGE).unwrap();
    let read_errors = |cid: u16, rae: bool| {
        let mut cmd =
            Command::get_log_page(cid, LogPageId::ERROR_INFORMATION, 0, 64, 0, log.iova(), 0);
        cmd.cdw10 = GetLogPageCdw10::from(cmd.cdw10).with_rae(rae).into();
        cmd
    };

    admin.submit(Command::async_event_request(100));
    admin.submit(Command::async_event_request(101));
    barrier(&mut admin, 10);

    // A tail doorbell equal to the queue size is invalid: an Error event, log page 01h.
    bar.doorbell(io.sq_doorbell(), 8);
    assert_invalid_doorbell_event(&admin.wait(), 100);
    // Repair it, then write a bad value again: the event is masked until the log is read.
    bar.doorbell(io.sq_doorbell(), 0);
    barrier(&mut admin, 20);
    bar.doorbell(io.sq_doorbell(), 9);
    barrier(&mut admin, 30);
    // Reading the log with Retain Asynchronous Event keeps it masked.
    assert!(
        admin
            .run(read_errors(40, true))
            .status
            .status()
            .is_success()
    );
    barrier(&mut admin, 41);
    assert!(admin.next().is_none());
    // Without RAE the queued event is delivered to the second request.
    assert!(
        admin
            .run(read_errors(50, false))
            .status
            .status()
            .is_success()
    );
    assert_invalid_doorbell_event(&admin.wait(), 101);

    // The bad value stays in the doorbell, but one bad write is one event: a new request
    // stays outstanding even after the log is read again.
    admin.submit(Command::async_event_request(102));
    assert!(
        admin
            .run(read_errors(60, false))
            .status
            .status()
            .is_success()
    );
    barrier(&mut admin, 61);
    assert!(admin.next().is_none());
    bar.doorbell(io.sq_doorbell(), 0);

    // Abort of the outstanding request: it completes with Command Abort Requested, then the
    // Abort with DW0 bit 0 clear (aborted).
    admin.submit(Command::abort(70, 0, 102));
    let aborted = admin.wait();
    assert_eq!(aborted.cid, 102);
    assert_eq!(aborted.status.status(), Status::COMMAND_ABORT_REQUESTED);
    let abort = admin.wait();
    assert_eq!((abort.cid, abort.status.status()), (70, Status::SUCCESS));
    assert_eq!(abort.dw0 & 1, 0);
    // Abort of a command that is not outstanding: DW0 bit 0 set (not aborted).
    let abort = admin.run(Command::abort(71, 0, 77));
    assert_eq!(abort.status.status(), Status::SUCCESS);
    assert_eq!(abort.dw0 & 1, 1);
    let abort = admin.run(Command::abort(72, 1, 3));
    assert_eq!(abort.dw0 & 1, 1);

    // The I/O queue still works after all this.
    let mut io = io;
    let buf = mem.alloc(PAGE).unwrap();
    let done = io.run(Command::read(5, 1, 0, 0, buf.iova(), 0));
    assert!(done.status.status().is_success());
}

#[test]
fn controller_reset_in_the_middle_of_io() {
    let g = guest("ll-reset");
    assert_eq!(g.driver.set_queue_count(1).unwrap(), 1);
    // A 64-entry SQ posting to a 4-entry CQ: the controller fetches only as many commands as
    // it can complete (3) until the host frees CQ slots, so the rest stay pending.
    let mut q = RawQueue::new(&g.mem, g.bar.clone(), 1, 64, 4);
    let ok = |c: Completion| assert!(c.status.status().is_success());
    ok(g.driver
        .admin(Command::create_io_cq(0, 1, 4, q.cq_iova(), false, 0))
        .unwrap());
    ok(g.driver
        .admin(Command::create_io_sq(0, 1, 64, q.sq_iova(), 1))
        .unwrap());
    let mut buffers = Vec::new();
    for lba in 0..40u64 {
        let buf = g.mem.alloc(PAGE).unwrap();
        buf.write(0, &block(lba, 1, PAGE));
        q.push(Command::write(lba as u16, 1, lba, 0, buf.iova(), 0));
        buffers.push(buf);
    }
    q.ring();
    let completed: Vec<u16> = (0..3)
        .map(|_| {
            let c = testing::eventually("a write completion", || q.next());
            assert!(c.status.status().is_success());
            c.cid
        })
        .collect();
    assert_eq!(completed, [0, 1, 2]);

    // CC.EN = 0 with 37 commands pending, wait for CSTS.RDY = 0, then bring it back up.
    g.driver.disable().unwrap();
    assert_eq!(g.bar.read32(0x1C).unwrap() & 1, 0);
    assert!(q.next().is_none(), "nothing completes across a reset");
    g.driver.enable().unwrap();
    assert_eq!(g.driver.set_queue_count(1).unwrap(), 1);
    let mut qp = g.driver.create_queue_pair(1, 64, None).unwrap();
    // What completed before the reset is there; what was never fetched never happened.
    for lba in 0..40u64 {
        let data = read(&g.mem, &mut qp, 1, lba, 1, PAGE);
        if lba < 3 {
            assert!(data == block(lba, 1, PAGE), "completed write {lba} lost");
        } else {
            assert!(
                data.iter().all(|&b| b == 0),
                "unfetched write {lba} executed"
            );
        }
    }
    // And the controller works.
    let buf = g.mem.alloc(PAGE).unwrap();
    buf.write(0, &block(50, 2, PAGE));
    assert_eq!(
        run_one(&mut qp, Command::write(0, 1, 50, 0, buf.iova(), 0)),
        Status::SUCCESS
    );
    assert!(read(&g.mem, &mut qp, 1, 50, 1, PAGE) == block(50, 2, PAGE));
}

#[test]
fn shutdown_notification_completes() {
    let g = guest("ll-shutdown");
    g.driver.shutdown().unwrap();
    let csts = nvme_spec::registers::Csts::from(g.bar.read32(0x1C).unwrap());
    assert_eq!(csts.shst(), ShutdownStatus::COMPLETE);
    // A reset after shutdown brings the controller back.
    g.driver.enable().unwrap();
    g.driver.identify_controller().unwrap();
}

#[test]
fn enable_with_bad_admin_queue_registers_sets_cfs() {
    let (host, _) = common::vf_host("ll-cfs");
    let ctrl = host.controller(Function::Vf(1));
    let base = 0x10_0000u64;
    // (AQA, ASQ, ACQ): misaligned ASQ, misaligned ACQ, zero-sized queues.
    for (aqa, asq, acq) in [
        (0x000F_000F, base + 0x100, base + 0x1000),
        (0x000F_000F, base, base + 0x1008),
        (0, base, base + 0x1000),
    ] {
        ctrl.write_register(0x24, 4, aqa);
        ctrl.write_register(0x28, 8, asq);
        ctrl.write_register(0x30, 8, acq);
        ctrl.write_register(0x14, 4, 1 | 6 << 16 | 4 << 20);
        let csts = ctrl.read_register(0x1C, 4);
        assert_eq!(
            csts & 0b11,
            0b10,
            "CFS and not RDY for {aqa:#x} {asq:#x} {acq:#x}"
        );
        // Clearing CC.EN resets the controller, CFS included.
        ctrl.write_register(0x14, 4, 0);
        assert_eq!(ctrl.read_register(0x1C, 4), 0);
    }
}
