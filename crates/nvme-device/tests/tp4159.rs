//! TP4159 live migration end to end, in process, with two subsystems: the libvfn
//! `examples/migrate.c` scenario of `tp4159.md` §1.11, plus every error status.

use std::sync::Arc;
use std::time::Duration;

use nvme_device::backend::RamBackend;
use nvme_device::controller::snapshot::vendor::VendorState;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::CdqReader;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_device::testing::lm::get_state;
use nvme_device::testing::lm::get_state_cmd;
use nvme_device::testing::lm::resume;
use nvme_device::testing::lm::send;
use nvme_device::testing::lm::set_chunk;
use nvme_device::testing::lm::set_state;
use nvme_device::testing::lm::suspend;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::features::AsyncEventInfoOneShot;
use nvme_spec::features::AsyncEventType;
use nvme_spec::features::FeatureId;
use nvme_spec::features::Select;
use nvme_spec::lm::CdqFeatureData;
use nvme_spec::lm::ControllerState;
use nvme_spec::lm::ControllerStateHeader;
use nvme_spec::lm::CreateCdq;
use nvme_spec::lm::DeleteCdq;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::GetCdqFeature;
use nvme_spec::lm::LbaChangeInfo;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::LogUserDataChanges;
use nvme_spec::lm::LoggingAction;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetCdqFeature;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::log::LogPageId;
use nvme_spec::log::SmartHealth;
use nvme_spec::status::Status;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

/// CNTLID of VF 1 in every subsystem.
const VF: u16 = 2;
const NSID: u32 = 1;
const GUEST_IOVA: u64 = 0x1000_0000;

/// Block size of the test namespace.
const BLOCK: u64 = 4096;
/// Host memory of each PF's driver.
const PF_MEMORY: u64 = 4 << 20;

fn backend() -> Arc<RamBackend> {
    Arc::new(RamBackend::new(1 << 20).unwrap())
}

/// A subsystem named `name` with one VF and one namespace shared by PF and VF over `backend`.
fn side(name: &str, backend: &Arc<RamBackend>) -> TestHost {
    TestHost::new(
        SubsystemConfig::new(name, 1),
        vec![NamespaceSpec {
            backend: backend.clone(),
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
    )
}

/// The host driver on the PF of `side`, with its memory at `iova`.
fn pf_driver(side: &TestHost, iova: u64) -> Driver {
    side.driver(Function::Primary, PF_MEMORY, iova)
}

/// A guest bound to VF 1 of `side`: its memory, BAR and driver with I/O queue pair 1.
struct Guest {
    mem: Arc<HostMemory>,
    bar: Arc<ControllerBar>,
    driver: Driver,
    qp: QueuePair,
}

fn guest(side: &TestHost, also: &[&TestHost]) -> Guest {
    let mut spaces = vec![&**side.space(Function::Vf(1))];
    spaces.extend(also.iter().map(|s| &**s.space(Function::Vf(1))));
    let mem = testing::host_memory(4 << 20, GUEST_IOVA, &spaces);
    let bar = side.bar(Function::Vf(1));
    let driver = Driver::new(bar.clone(), mem.clone()).unwrap();
    assert_eq!(driver.set_queue_count(1).unwrap(), 1);
    let qp = driver.create_queue_pair(1, 64, None).unwrap();
    Guest {
        mem,
        bar,
        driver,
        qp,
    }
}

fn pattern(slba: u64, blocks: u64) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| ((slba * 31 + i * 7) % 251) as u8)
        .collect()
}

impl Guest {
    fn write(&mut self, slba: u64, blocks: u64) {
        let buf = self.mem.alloc(blocks * BLOCK).unwrap();
        buf.write(0, &pattern(slba, blocks));
        let mut cmd = Command::write(0, NSID, slba, (blocks - 1) as u16, 0, 0);
        let list = self.mem.alloc(4096).unwrap();
        nvme_driver::driver::build_prps(&mut cmd, buf.iova(), Some(&list), blocks * BLOCK);
        let done = testing::io(&mut self.qp, cmd);
        assert!(done.status.status().is_success());
    }

    fn read(&mut self, slba: u64, blocks: u64) -> Vec<u8> {
        let buf = self.mem.alloc(blocks * BLOCK).unwrap();
        let mut cmd = Command::read(0, NSID, slba, (blocks - 1) as u16, 0, 0);
        let list = self.mem.alloc(4096).unwrap();
        nvme_driver::driver::build_prps(&mut cmd, buf.iova(), Some(&list), blocks * BLOCK);
        let done = testing::io(&mut self.qp, cmd);
        assert!(done.status.status().is_success());
        let mut out = vec![0u8; (blocks * BLOCK) as usize];
        buf.read(0, &mut out);
        out
    }
}

fn track(pf: &Driver, cdqid: u16, lact: LoggingAction) -> Status {
    send(pf, LogUserDataChanges { lact, cdqid })
}

/// Creates a UDMQ of `slots` entries for `cntlid` on `pf`.
fn create_udmq(pf: &Driver, cntlid: u16, slots: u32) -> (u16, CdqReader) {
    let buf = pf.memory().alloc(u64::from(slots) * 32).unwrap();
    let cmd = CreateCdq::user_data_migration_queue(cntlid, buf.iova(), slots * 8)
        .encode()
        .unwrap();
    let cdqid = pf.admin(cmd).unwrap().dw0 as u16;
    (cdqid, CdqReader::new(buf, slots))
}

#[test]
fn migrate_a_vf_between_subsystems() {
    let storage = backend();
    let a = side("a", &storage);
    let b = side("b", &storage);
    // Guest memory is one memfd both VFs map (the VMM migrates it separately).
    let mut guest = guest(&a, &[&b]);
    let id_ctrl = guest.driver.identify_controller().unwrap();
    let id_ns = guest.driver.identify_namespace(NSID).unwrap();
    guest.write(0, 4);

    let pf_a = pf_driver(&a, 0x2000_0000);
    let pf_b = pf_driver(&b, 0x3000_0000);
    let (cdqid, mut reader) = create_udmq(&pf_a, VF, 128);
    assert_eq!(track(&pf_a, cdqid, LoggingAction::START), Status::SUCCESS);
    guest.write(5, 2);
    guest.write(9, 1);
    assert_eq!(track(&pf_a, cdqid, LoggingAction::STOP), Status::SUCCESS);
    let entries = reader.drain_until(EntrySequence::LAST_STOPPED);
    let esa: Vec<_> = entries.iter().map(|e| e.attr.esa()).collect();
    assert_eq!(
        esa,
        [
            EntrySequence::FIRST,
            EntrySequence::MIDDLE,
            EntrySequence::MIDDLE,
            EntrySequence::LAST_STOPPED
        ]
    );
    let ranges: Vec<_> = entries
        .iter()
        .filter(|e| e.attr.lbacir() == LbaChangeInfo::RANGE)
        .map(|e| (e.nsid, e.slba, e.nlb, e.attr.dlba()))
        .collect();
    assert_eq!(ranges, [(NSID, 5, 1, false), (NSID, 9, 0, false)]);
    assert_eq!(entries[0].attr.lbacir(), LbaChangeInfo::NONE);

    // Copy the changed ranges PF-A → PF-B (the namespace is reachable through both PFs).
    let mut qp_a = pf_a.create_queue_pair(1, 16, None).unwrap();
    let mut qp_b = pf_b.create_queue_pair(1, 16, None).unwrap();
    for &(nsid, slba, nlb, _) in &ranges {
        let len = (u64::from(nlb) + 1) * BLOCK;
        let src = pf_a.memory().alloc(len).unwrap();
        let mut read = Command::read(0, nsid, slba, nlb as u16, 0, 0);
        pf_a.set_prps(&mut read, &src, None, len);
        assert!(testing::io(&mut qp_a, read).status.status().is_success());
        let mut data = vec![0u8; len as usize];
        src.read(0, &mut data);
        assert_eq!(data, pattern(slba, u64::from(nlb) + 1));
        let dst = pf_b.memory().alloc(len).unwrap();
        dst.write(0, &data);
        let mut write = Command::write(0, nsid, slba, nlb as u16, 0, 0);
        pf_b.set_prps(&mut write, &dst, None, len);
        assert!(testing::io(&mut qp_b, write).status.status().is_success());
    }
    let hp = SetCdqFeature {
        cdqid,
        etpt: false,
        hp: reader.head(),
        tpt: 0,
    };
    assert_eq!(send(&pf_a, hp), Status::SUCCESS);

    // Log again, then suspend with DUDMQ.
    assert_eq!(track(&pf_a, cdqid, LoggingAction::START), Status::SUCCESS);
    guest.driver.request_event().unwrap();
    assert_eq!(suspend(&pf_a, VF, true), Status::SUCCESS);
    assert!(a.controller(Function::Vf(1)).suspended());
    // A Read submitted now is not fetched.
    let read_buf = guest.mem.alloc(2 * BLOCK).unwrap();
    let mut pending_read = Command::read(0, NSID, 5, 1, 0, 0);
    nvme_driver::driver::build_prps(&mut pending_read, read_buf.iova(), None, 2 * BLOCK);
    let read_cid = guest.qp.submit(pending_read).unwrap();
    assert!(testing::wait_for(&mut guest.qp, read_cid, Duration::from_millis(100)).is_none());
    let entries = reader.drain_until(EntrySequence::LAST_SUSPENDED);
    let esa: Vec<_> = entries.iter().map(|e| e.attr.esa()).collect();
    assert_eq!(esa, [EntrySequence::FIRST, EntrySequence::LAST_SUSPENDED]);
    // DUDMQ deleted the queue.
    assert_eq!(
        send(&pf_a, DeleteCdq { cdqid }),
        Status::INVALID_CONTROLLER_DATA_QUEUE
    );

    let (state, csup) = get_state(&pf_a, VF, 256);
    assert!(csup);
    let header = ControllerStateHeader::decode(&state).unwrap();
    assert!(header.csattr.suspended());
    assert!(header.nvmecss > 0 && header.vss > 0);
    assert!(state.len() > 512, "several chunks: {} bytes", state.len());

    assert_eq!(suspend(&pf_b, VF, false), Status::SUCCESS);
    assert_eq!(set_state(&pf_b, VF, &state, 200), Status::SUCCESS);
    // save → restore → save is byte-identical (and the identical configs give the same bytes).
    let (again, _) = get_state(&pf_b, VF, 4096);
    assert_eq!(again, state);
    assert_eq!(send(&pf_b, Resume { cntlid: VF }), Status::SUCCESS);

    // The guest now runs on VF-B.
    guest.bar.retarget(b.subsystem(), Function::Vf(1));
    let done = testing::wait_for(&mut guest.qp, read_cid, Duration::from_secs(5))
        .expect("the pending Read completes on VF-B");
    assert!(done.status.status().is_success());
    assert!(testing::wait_for(&mut guest.qp, read_cid, Duration::from_millis(50)).is_none());
    let mut data = vec![0u8; (2 * BLOCK) as usize];
    read_buf.read(0, &mut data);
    assert_eq!(data, pattern(5, 2));
    assert_eq!(guest.read(0, 4), pattern(0, 4));
    assert_eq!(guest.read(9, 1), pattern(9, 1));
    // VF-A never completes anything again.
    assert!(a.controller(Function::Vf(1)).suspended());

    // The guest sees the same controller.
    let id_b = guest.driver.identify_controller().unwrap();
    assert_eq!(id_b.as_bytes(), id_ctrl.as_bytes());
    let ns_b = guest.driver.identify_namespace(NSID).unwrap();
    assert_eq!(ns_b.as_bytes(), id_ns.as_bytes());
    // The outstanding Asynchronous Event Request moved too: an event on VF-B completes it.
    b.controller(Function::Vf(1))
        .post_event(nvme_device::controller::AsyncEvent::invalid_doorbell());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while guest.driver.outstanding_events() > 0 {
        assert!(std::time::Instant::now() < deadline, "AER not completed");
        guest.driver.poll_events();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `driver` has received `n` asynchronous events, and returns them.
fn events(driver: &Driver, n: usize) -> Vec<(AsyncEventType, u8)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < n {
        assert!(std::time::Instant::now() < deadline, "events: {seen:?}");
        seen.extend(
            driver
                .poll_events()
                .iter()
                .map(|(c, _)| (c.event_type(), c.event_info())),
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

/// Issue 10: a guest that writes an out-of-range SQ tail doorbell (the Invalid Doorbell case)
/// must not make its VF unmigratable; the destination takes the state and then behaves as the
/// source would have: the doorbell still holds the bad value, the event it raised is not raised
/// a second time, and the queue works again once the guest writes a valid tail.
#[test]
fn an_invalid_doorbell_does_not_make_a_vf_unmigratable() {
    use nvme_device::controller::AsyncEvent;
    use nvme_driver::driver::Bar;
    use nvme_spec::features::AsyncEventInfoError;

    let storage = backend();
    let a = side("bad-db-a", &storage);
    let b = side("bad-db-b", &storage);
    let mut guest = guest(&a, &[&b]);
    guest.write(0, 1);
    // The tail doorbell of SQ 1 (64 entries) gets 1000: the controller reports it once.
    guest.driver.request_event().unwrap();
    let sq1_tail = 0x1000 + 8;
    guest.bar.doorbell(sq1_tail, 1000);
    let invalid_doorbell = (
        AsyncEventType::ERROR,
        AsyncEventInfoError::INVALID_DOORBELL_VALUE.0,
    );
    assert_eq!(events(&guest.driver, 1), [invalid_doorbell]);

    let pf_a = pf_driver(&a, 0x2000_0000);
    let pf_b = pf_driver(&b, 0x3000_0000);
    assert_eq!(suspend(&pf_a, VF, false), Status::SUCCESS);
    let (state, _) = get_state(&pf_a, VF, 4096);
    assert_eq!(suspend(&pf_b, VF, false), Status::SUCCESS);
    assert_eq!(set_state(&pf_b, VF, &state, 4096), Status::SUCCESS);
    assert_eq!(get_state(&pf_b, VF, 4096).0, state, "save → restore → save");
    assert_eq!(send(&pf_b, Resume { cntlid: VF }), Status::SUCCESS);
    guest.bar.retarget(b.subsystem(), Function::Vf(1));

    let vf_b = b.controller(Function::Vf(1));
    assert_eq!(vf_b.read_register(sq1_tail, 4), 1000);
    // Reading the Error Information log re-enables error events; the bad value is still in the
    // doorbell, but it was reported already, so the next event is the one posted here.
    guest
        .driver
        .log_page(LogPageId::ERROR_INFORMATION, 0, 64)
        .unwrap();
    guest.driver.request_event().unwrap();
    let marker = AsyncEvent {
        event_type: AsyncEventType::VENDOR,
        info: 0x5A,
        log_page: LogPageId(0),
        dw1: 0,
    };
    vf_b.post_event(marker);
    assert_eq!(events(&guest.driver, 1), [(AsyncEventType::VENDOR, 0x5A)]);
    // A valid tail makes the queue work again: the guest's next command is fetched from the
    // head the source left.
    assert_eq!(guest.read(0, 1), pattern(0, 1));
}

/// `state` with its vendor state edited by `edit`.
fn with_vendor(state: &[u8], edit: impl FnOnce(&mut VendorState)) -> Vec<u8> {
    let cs = ControllerState::decode(state).unwrap();
    let mut vendor = VendorState::decode(cs.vendor()).unwrap();
    edit(&mut vendor);
    let header = cs.header();
    ControllerState::new(
        header.ver,
        header.csattr,
        cs.nvmecs().to_vec(),
        vendor.encode(),
    )
    .unwrap()
    .encode()
}

/// The SMART / Health log as the guest reads it.
fn smart(guest: &Guest) -> SmartHealth {
    let page = guest
        .driver
        .log_page(LogPageId::SMART_HEALTH, u32::MAX, 512)
        .unwrap();
    SmartHealth::read_from_bytes(&page).unwrap()
}

/// Issue 10: the SMART / Health counters a guest reads do not restart on the destination. The
/// source has been on for ten hours (its clock was set through its own Set Controller State),
/// lost power once without a shutdown (a function-level reset while enabled), and did I/O.
#[test]
fn smart_counters_continue_on_the_destination() {
    let storage = backend();
    let a = side("smart-a", &storage);
    let b = side("smart-b", &storage);
    let pf_a = pf_driver(&a, 0x2000_0000);
    let pf_b = pf_driver(&b, 0x3000_0000);
    let ten_hours = 10 * 3600 * 1000;
    assert_eq!(suspend(&pf_a, VF, false), Status::SUCCESS);
    let (state, _) = get_state(&pf_a, VF, 4096);
    let older = with_vendor(&state, |v| v.power_on_ms += ten_hours);
    assert_eq!(set_state(&pf_a, VF, &older, 4096), Status::SUCCESS);
    assert_eq!(send(&pf_a, Resume { cntlid: VF }), Status::SUCCESS);

    let mut guest = guest(&a, &[&b]);
    a.controller(Function::Vf(1)).reset();
    guest.driver.enable().unwrap();
    guest.qp = guest.driver.create_queue_pair(1, 64, None).unwrap();
    guest.write(0, 4);
    guest.write(8, 1);
    assert_eq!(guest.read(0, 2), pattern(0, 2));
    let before = smart(&guest);
    assert_eq!(
        (
            { before.host_write_commands },
            { before.host_read_commands },
            { before.data_units_written },
            { before.power_cycles },
            { before.unsafe_shutdowns },
            { before.power_on_hours },
        ),
        (2, 1, 1, 2, 1, 10)
    );

    assert_eq!(suspend(&pf_a, VF, false), Status::SUCCESS);
    let (state, _) = get_state(&pf_a, VF, 4096);
    assert_eq!(suspend(&pf_b, VF, false), Status::SUCCESS);
    assert_eq!(set_state(&pf_b, VF, &state, 4096), Status::SUCCESS);
    assert_eq!(send(&pf_b, Resume { cntlid: VF }), Status::SUCCESS);
    guest.bar.retarget(b.subsystem(), Function::Vf(1));

    let after = smart(&guest);
    assert_eq!(after.as_bytes(), before.as_bytes());
    guest.write(9, 1);
    assert_eq!({ smart(&guest).host_write_commands }, 3);
}

#[test]
fn error_statuses() {
    let storage = backend();
    let a = side("err-a", &storage);
    let b = side("err-b", &storage);
    let _guest = guest(&a, &[]);
    let pf = pf_driver(&a, 0x2000_0000);

    // Bad CNTLID: unknown, and the primary itself.
    assert_eq!(
        suspend(&pf, 99, false),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );
    assert_eq!(
        suspend(&pf, 1, false),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );
    assert_eq!(
        send(&pf, Resume { cntlid: 7 }),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );
    // Reserved bits and values.
    let mut cmd = Suspend {
        cntlid: VF,
        stype: SuspendType::SUSPEND,
        dudmq: false,
    }
    .encode()
    .unwrap();
    cmd.cdw11 |= 1 << 24;
    assert_eq!(
        testing::status(pf.admin(cmd)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    let reserved_stype = Suspend {
        cntlid: VF,
        stype: SuspendType(2),
        dudmq: false,
    };
    assert_eq!(send(&pf, reserved_stype), Status::INVALID_FIELD_IN_COMMAND);
    let mut cmd = Resume { cntlid: VF }.encode().unwrap();
    cmd.cdw10 = 3;
    assert_eq!(
        testing::status(pf.admin(cmd)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // A notification changes nothing.
    let notify = Suspend {
        cntlid: VF,
        stype: SuspendType::NOTIFICATION,
        dudmq: false,
    };
    assert_eq!(send(&pf, notify), Status::SUCCESS);
    assert!(!a.controller(Function::Vf(1)).suspended());
    // Not suspended.
    assert_eq!(
        send(&pf, Resume { cntlid: VF }),
        Status::CONTROLLER_NOT_SUSPENDED
    );
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::ONLY, 0, &[0; 48]),
        Status::CONTROLLER_NOT_SUSPENDED
    );

    // CDQ errors.
    let buf = pf.memory().alloc(4096).unwrap();
    for (size, iova) in [(4, buf.iova()), (12, buf.iova()), (64, buf.iova() + 32)] {
        let cmd = CreateCdq::user_data_migration_queue(VF, iova, size)
            .encode()
            .unwrap();
        assert_eq!(
            testing::status(pf.admin(cmd)),
            Status::INVALID_FIELD_IN_COMMAND
        );
    }
    let outside = CreateCdq::user_data_migration_queue(VF, 0x7000_0000, 64);
    assert_eq!(send(&pf, outside), Status::INVALID_FIELD_IN_COMMAND);
    let wrong_target = CreateCdq::user_data_migration_queue(9, buf.iova(), 64);
    assert_eq!(
        send(&pf, wrong_target),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );
    for unknown in [
        send(&pf, DeleteCdq { cdqid: 77 }),
        track(&pf, 77, LoggingAction::START),
        send(
            &pf,
            SetCdqFeature {
                cdqid: 77,
                etpt: false,
                hp: 0,
                tpt: 0,
            },
        ),
        send(&pf, GetCdqFeature { cdqid: 77 }),
    ] {
        assert_eq!(unknown, Status::INVALID_CONTROLLER_DATA_QUEUE);
    }
    let (cdqid, mut reader) = create_udmq(&pf, VF, 8);
    let second = CreateCdq::user_data_migration_queue(VF, buf.iova(), 64);
    assert_eq!(send(&pf, second), Status::NOT_ENOUGH_RESOURCES);
    assert_eq!(
        track(&pf, cdqid, LoggingAction(2)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // Repeating the current state is a no-op.
    assert_eq!(track(&pf, cdqid, LoggingAction::STOP), Status::SUCCESS);
    assert!(reader.next().is_none());
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    assert_eq!(reader.next().unwrap().attr.esa(), EntrySequence::FIRST);
    assert!(reader.next().is_none());
    // HP rules: beyond the ring, and ahead of the tail (one entry written).
    for hp in [8, 2] {
        let op = SetCdqFeature {
            cdqid,
            etpt: false,
            hp,
            tpt: 0,
        };
        assert_eq!(send(&pf, op), Status::INVALID_FIELD_IN_COMMAND, "HP {hp}");
    }
    // Suspended target: Track Send is refused.
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS, "again");
    assert_eq!(
        track(&pf, cdqid, LoggingAction::STOP),
        Status::CONTROLLER_SUSPENDED
    );

    // Get Controller State offsets.
    let (state, _) = get_state(&pf, VF, 4096);
    for offset in [2, state.len() as u64, state.len() as u64 + 4] {
        let cmd = get_state_cmd(VF, offset, 64);
        assert_eq!(
            testing::status(pf.admin_read(cmd, 64).map(|_| Default::default())),
            Status::INVALID_FIELD_IN_COMMAND,
            "offset {offset}"
        );
    }
    let mut bad_index = get_state_cmd(VF, 0, 64);
    bad_index.cdw10 |= 2 << 16;
    assert_eq!(
        testing::status(pf.admin_read(bad_index, 64).map(|_| Default::default())),
        Status::INVALID_FIELD_IN_COMMAND
    );

    // Set Controller State: chunk order and indices.
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::MIDDLE, 0, &state[..64]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::LAST, 0, &state[..64]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::FIRST, 4, &state[..64]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::FIRST, 0, &state[..64]),
        Status::SUCCESS
    );
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::LAST, 128, &state[128..]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // The bad chunk dropped the transfer.
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::LAST, 64, &state[64..]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    for (csvi, csuuidi) in [(0, 0), (2, 1), (1, 2)] {
        let op = SetControllerState {
            seqind: SequenceIndicator::ONLY,
            cntlid: VF,
            csvi,
            csuuidi,
            offset: 0,
            uidx: 0,
            numd: SetControllerState::numd_for_len(state.len() as u64).unwrap(),
        };
        assert_eq!(
            testing::status(pf.admin_write(op.encode().unwrap(), &state)),
            Status::INVALID_FIELD_IN_COMMAND,
            "CSVI {csvi} CSUUIDI {csuuidi}"
        );
    }

    // Corrupted vendor state and header sizes: rejected, target unchanged.
    let nvmecss = ControllerStateHeader::decode(&state)
        .unwrap()
        .nvmecs_len()
        .unwrap();
    let vendor_at = 48 + nvmecss;
    let mut corrupt = state.clone();
    corrupt[vendor_at + 30] ^= 0xFF;
    assert_eq!(
        set_state(&pf, VF, &corrupt, 4096),
        Status::INVALID_FIELD_IN_COMMAND
    );
    let mut truncated = state.clone();
    truncated.truncate(state.len() - 4);
    assert_eq!(
        set_state(&pf, VF, &truncated, 4096),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // An SQ whose CQ does not exist.
    let mut bad_queue = state.clone();
    bad_queue[48 + 8 + 12] = 9;
    assert_eq!(
        set_state(&pf, VF, &bad_queue, 4096),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(get_state(&pf, VF, 4096).0, state);
    assert_eq!(set_state(&pf, VF, &state, 100), Status::SUCCESS);
    assert_eq!(get_state(&pf, VF, 4096).0, state);

    // A VF reset drops the transfer in progress (and lifts the suspension).
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::FIRST, 0, &state[..64]),
        Status::SUCCESS
    );
    a.controller(Function::Vf(1)).reset();
    assert!(!a.controller(Function::Vf(1)).suspended());
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    assert_eq!(
        set_chunk(&pf, VF, SequenceIndicator::LAST, 64, &state[64..]),
        Status::INVALID_FIELD_IN_COMMAND
    );

    // Namespace mismatch: a subsystem whose namespace is smaller.
    let other = side("err-c", &Arc::new(RamBackend::new(1 << 19).unwrap()));
    let pf_c = pf_driver(&other, 0x2000_0000);
    assert_eq!(suspend(&pf_c, VF, false), Status::SUCCESS);
    let before = get_state(&pf_c, VF, 4096).0;
    assert_eq!(
        set_state(&pf_c, VF, &state, 4096),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(get_state(&pf_c, VF, 4096).0, before);
    // The same namespaces elsewhere are fine.
    let pf_b = pf_driver(&b, 0x2000_0000);
    assert_eq!(suspend(&pf_b, VF, false), Status::SUCCESS);
    assert_eq!(set_state(&pf_b, VF, &state, 4096), Status::SUCCESS);

    // A PF reset deletes its CDQs: the VF can get a new UDMQ afterwards.
    pf.enable().unwrap();
    assert_eq!(
        send(&pf, DeleteCdq { cdqid }),
        Status::INVALID_CONTROLLER_DATA_QUEUE
    );
    let again = create_udmq(&pf, VF, 8);
    assert_eq!(send(&pf, DeleteCdq { cdqid: again.0 }), Status::SUCCESS);
}

#[test]
fn full_queue_and_tail_pointer_trigger_raise_events() {
    let storage = backend();
    let a = side("aer", &storage);
    let mut guest = guest(&a, &[]);
    let pf = pf_driver(&a, 0x2000_0000);
    pf.request_event().unwrap();
    pf.request_event().unwrap();
    let (cdqid, mut reader) = create_udmq(&pf, VF, 4);
    let trigger = SetCdqFeature {
        cdqid,
        etpt: true,
        hp: 0,
        tpt: 2,
    };
    assert_eq!(send(&pf, trigger), Status::SUCCESS);
    assert_eq!(
        get_cdq_feature(&pf, cdqid),
        (u32::from(cdqid) | 1 << 31, CdqFeatureData { hp: 0, tpt: 2 })
    );
    // Start (entry 0), write (entry 1, tail reaches 2: trigger), write (entry 2: full).
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    guest.write(1, 1);
    guest.write(2, 1);
    guest.write(3, 1);
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while events.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "events: {events:?}");
        events.extend(pf.poll_events());
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen: Vec<_> = events
        .iter()
        .map(|(c, dw1)| (c.event_type(), c.event_info(), *dw1))
        .collect();
    assert_eq!(
        seen,
        [
            (
                AsyncEventType::ONE_SHOT,
                AsyncEventInfoOneShot::CDQ_TAIL_POINTER_TRIGGER.0,
                u32::from(cdqid)
            ),
            (
                AsyncEventType::ONE_SHOT,
                AsyncEventInfoOneShot::CDQ_FULL.0,
                u32::from(cdqid)
            ),
        ]
    );
    let entries: Vec<_> = std::iter::from_fn(|| reader.next()).collect();
    assert_eq!(entries.len(), 3, "the third write was not logged");
    assert_eq!(entries[2].attr.esa(), EntrySequence::LAST_FULL);
    assert_eq!(entries[2].slba, 2);
    // Freeing space resumes logging.
    let hp = SetCdqFeature {
        cdqid,
        etpt: false,
        hp: reader.head(),
        tpt: 0,
    };
    assert_eq!(send(&pf, hp), Status::SUCCESS);
    guest.write(7, 1);
    let next = reader.drain_until(EntrySequence::MIDDLE);
    assert_eq!(next[0].slba, 7);
    assert_eq!(
        get_cdq_feature(&pf, cdqid),
        (u32::from(cdqid), CdqFeatureData { hp: 3, tpt: 0 })
    );
}

/// Get Features 21h through the generic command builder: DW0 and the {HP, TPT} data.
fn get_cdq_feature(pf: &Driver, cdqid: u16) -> (u32, CdqFeatureData) {
    let mut cmd = Command::get_features(
        0,
        FeatureId::CONTROLLER_DATA_QUEUE,
        Select::CURRENT,
        u32::from(cdqid),
    );
    assert_eq!(GetCdqFeature::decode(&cmd).unwrap().op.cdqid, cdqid);
    let buf = pf.memory().alloc(8).unwrap();
    pf.set_prps(&mut cmd, &buf, None, 8);
    let dw0 = pf.admin(cmd).unwrap().dw0;
    let mut raw = [0u8; 8];
    buf.read(0, &mut raw);
    (dw0, CdqFeatureData::read_from_bytes(&raw).unwrap())
}

#[test]
fn deallocations_are_logged_with_dlba_and_reads_are_not_logged() {
    use nvme_spec::command::Cdw0;
    use nvme_spec::command::DsmCdw11;
    use nvme_spec::command::DsmRange;
    use nvme_spec::command::NvmOpcode;
    use nvme_spec::command::WriteZeroesCdw12;

    let storage = backend();
    let a = side("dealloc", &storage);
    let mut guest = guest(&a, &[]);
    let pf = pf_driver(&a, 0x2000_0000);
    let (cdqid, mut reader) = create_udmq(&pf, VF, 16);
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    guest.read(0, 1);
    let zeroes = Command {
        cdw0: Cdw0::new().with_opcode(NvmOpcode::WRITE_ZEROES.0),
        nsid: NSID,
        cdw10: 20,
        cdw12: WriteZeroesCdw12::new().with_nlb(3).with_deac(true).into(),
        ..Command::default()
    };
    assert!(
        testing::io(&mut guest.qp, zeroes)
            .status
            .status()
            .is_success()
    );
    let ranges = guest.mem.alloc(4096).unwrap();
    let range = |slba, nlb| DsmRange {
        cattr: 0,
        nlb,
        slba,
    };
    ranges.write(0, [range(30, 2), range(40, 0)].as_bytes());
    let dsm = Command {
        cdw0: Cdw0::new().with_opcode(NvmOpcode::DATASET_MANAGEMENT.0),
        nsid: NSID,
        prp1: ranges.iova(),
        cdw10: 1,
        cdw11: DsmCdw11::new().with_ad(true).into(),
        ..Command::default()
    };
    assert!(testing::io(&mut guest.qp, dsm).status.status().is_success());
    assert_eq!(track(&pf, cdqid, LoggingAction::STOP), Status::SUCCESS);
    let logged: Vec<_> = reader
        .drain_until(EntrySequence::LAST_STOPPED)
        .iter()
        .filter(|e| e.attr.lbacir() == LbaChangeInfo::RANGE)
        .map(|e| (e.slba, e.nlb, e.attr.dlba()))
        .collect();
    // The Read is not logged; the empty DSM range neither; NLB is 0's based.
    assert_eq!(logged, [(20, 3, true), (30, 1, true)]);
}

/// A PF configured like a third-party TP4159 device that offers NVMe state v0 only and no LBA
/// change logging: Identify says so, and the vendor format and User Data Migration Queues are
/// refused, while a v0-only Get/Set round trip still works.
#[test]
fn a_pf_can_offer_state_v0_only_and_no_logging() {
    use nvme_device::controller::MigrationOffer;
    use nvme_spec::identify::Cns;
    use nvme_spec::lm::GetControllerState;
    use nvme_spec::lm::SupportedControllerStateFormats;

    let storage = backend();
    let mut config = SubsystemConfig::new("v0-only", 1);
    config.limits.migration = MigrationOffer {
        vendor_state: false,
        user_data_logging: false,
    };
    let host = TestHost::new(
        config,
        vec![NamespaceSpec {
            backend: storage,
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
    );
    let _guest = guest(&host, &[]);
    let pf = pf_driver(&host, 0x2000_0000);
    let page = pf
        .admin_read(
            Command::identify(0, Cns::SUPPORTED_CONTROLLER_STATE_FORMATS, 0, 0, 0),
            4096,
        )
        .unwrap();
    let formats = SupportedControllerStateFormats::decode(&page).unwrap();
    assert_eq!(formats.versions, [0]);
    assert!(formats.uuids.is_empty(), "{formats:?}");
    let id = pf.identify_controller().unwrap();
    assert!(!id.trattr.tudcs());
    assert_eq!((id.mcudmq, id.mnsudmq), (0, 0));
    let buf = pf.memory().alloc(4096).unwrap();
    let create = CreateCdq::user_data_migration_queue(VF, buf.iova(), 1024)
        .encode()
        .unwrap();
    assert_eq!(
        testing::status(pf.admin(create)),
        Status::INVALID_FIELD_IN_COMMAND
    );

    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    let get = |csuuidi: u8, len: u64| GetControllerState {
        csvi: 1,
        cntlid: VF,
        csuuidi,
        csuidxp: 0,
        offset: 0,
        uidx: 0,
        numd: GetControllerState::numd_for_len(len).unwrap(),
    };
    let vendor = get(1, 48).encode().unwrap();
    assert_eq!(
        testing::status(pf.admin_read_completion(vendor, 48).map(|(c, _)| c)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    let state = pf.admin_read(get(0, 4096).encode().unwrap(), 4096).unwrap();
    let cs = ControllerState::decode(&state[..48 + 8 + 48]).unwrap();
    assert_eq!(cs.header().vss, 0, "no vendor state");
    assert_eq!(cs.nvmecs().len(), 8 + 2 * 24, "one SQ and one CQ");
    let status = SetControllerState {
        seqind: SequenceIndicator::ONLY,
        cntlid: VF,
        csvi: 1,
        csuuidi: 0,
        offset: 0,
        uidx: 0,
        numd: SetControllerState::numd_for_len(104).unwrap(),
    }
    .encode()
    .map(|cmd| testing::status(pf.admin_write(cmd, &state[..104])))
    .unwrap();
    assert_eq!(status, Status::SUCCESS);
    assert_eq!(resume(&pf, VF), Status::SUCCESS);
}

/// The "suspended" marker is posted once per suspension: a repeated Suspend (a driver going
/// RUNNING_P2P → STOP) posts none, and the next suspension after a Resume posts one again.
#[test]
fn one_suspended_marker_per_suspension() {
    let storage = backend();
    let a = side("marker", &storage);
    let mut guest = guest(&a, &[]);
    let pf = pf_driver(&a, 0x2000_0000);
    let (cdqid, mut reader) = create_udmq(&pf, VF, 128);
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    guest.write(1, 1);
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    let esa = |entries: Vec<nvme_spec::lm::LbaMigrationQueueEntry>| -> Vec<EntrySequence> {
        entries.iter().map(|e| e.attr.esa()).collect()
    };
    assert_eq!(
        esa(reader.drain_until(EntrySequence::LAST_SUSPENDED)),
        [
            EntrySequence::FIRST,
            EntrySequence::MIDDLE,
            EntrySequence::LAST_SUSPENDED
        ]
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        reader.next(),
        None,
        "a second Suspend posted a second marker"
    );
    assert_eq!(resume(&pf, VF), Status::SUCCESS);
    assert_eq!(suspend(&pf, VF, false), Status::SUCCESS);
    assert_eq!(
        esa(reader.drain_until(EntrySequence::LAST_SUSPENDED)),
        [EntrySequence::FIRST, EntrySequence::LAST_SUSPENDED]
    );
}
