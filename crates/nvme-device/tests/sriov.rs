//! SR-IOV management in process: Identify CNS 14h/15h, Virtualization Management and its
//! statuses, what an offline secondary controller looks like to its host and how it comes
//! back, assigned resources bounding what a controller offers, Primary Controller Flexible
//! Allocation, and a private admin port of the primary controller beside its PCI function.

use std::sync::Arc;
use std::time::Duration;

use nvme_device::backend::RamBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::sriov::PRIMARY_PRIVATE_QUEUE_PAIRS;
use nvme_device::sriov::SecondaryStart;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_driver::driver::Driver;
use nvme_spec::command::Command;
use nvme_spec::command::VirtualizationAction;
use nvme_spec::command::VirtualizationResource;
use nvme_spec::features::FeatureId;
use nvme_spec::features::NumberOfQueuesAllocated;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IDENTIFY_DATA_SIZE;
use nvme_spec::identify::PrimaryControllerCapabilities;
use nvme_spec::identify::SecondaryControllerList;
use nvme_spec::lm::CreateCdq;
use nvme_spec::lm::GetControllerState;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::LogUserDataChanges;
use nvme_spec::lm::LoggingAction;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::registers::Cc;
use nvme_spec::registers::Register;
use nvme_spec::status::Status;
use zerocopy::FromBytes;

const IOVA: u64 = 0x4000_0000;
const MEMORY: u64 = 4 << 20;
const BLOCK: u64 = 4096;
const VF1: u16 = 2;
const VF2: u16 = 3;
/// What a secondary holds at most, and by default: 64 I/O queue pairs plus the admin pair, and
/// 65 vectors.
const SECONDARY_MAX: u16 = 65;

use VirtualizationAction as Act;
use VirtualizationResource as Rt;

/// A subsystem with two VFs, each with a private 1 MiB namespace.
fn host(name: &str, start: SecondaryStart) -> TestHost {
    let mut config = SubsystemConfig::new(name, 2);
    config.secondary_start = start;
    let namespaces = (1..=2)
        .map(|vfn| NamespaceSpec {
            backend: Arc::new(RamBackend::new(1 << 20).unwrap()),
            block_size: BlockSize::B4096,
            attachment: Attachment::Private { vfn },
        })
        .collect();
    TestHost::new(config, namespaces)
}

/// Virtualization Management through `pf`: CQE DW0 (NRM) or the status.
fn vm(pf: &Driver, act: Act, rt: Rt, cntlid: u16, nr: u16) -> Result<u32, Status> {
    match pf.admin(Command::virtualization_management(0, act, rt, cntlid, nr)) {
        Ok(done) => Ok(done.dw0),
        Err(err) => Err(testing::status(Err(err))),
    }
}

fn capabilities(pf: &Driver) -> PrimaryControllerCapabilities {
    let page = pf
        .admin_read(
            Command::identify(0, Cns::PRIMARY_CONTROLLER_CAPABILITIES, 0, 0, 0),
            IDENTIFY_DATA_SIZE as u64,
        )
        .unwrap();
    PrimaryControllerCapabilities::read_from_bytes(&page).unwrap()
}

fn secondaries(pf: &Driver, first: u16) -> SecondaryControllerList {
    let page = pf
        .admin_read(
            Command::identify(0, Cns::SECONDARY_CONTROLLER_LIST, 0, first, 0),
            IDENTIFY_DATA_SIZE as u64,
        )
        .unwrap();
    SecondaryControllerList::read_from_bytes(&page).unwrap()
}

/// (SCS, NVQ, NVI) of secondary `cntlid` in the list `pf` reports.
fn entry(pf: &Driver, cntlid: u16) -> (u8, u16, u16) {
    let list = secondaries(pf, 0);
    let e = list
        .valid_entries()
        .iter()
        .find(|e| e.scid == cntlid)
        .unwrap();
    (e.scs, e.nvq, e.nvi)
}

/// Assigns `nvq` and `nvi` to offline secondary `cntlid` and brings it online.
fn provision(pf: &Driver, cntlid: u16, nvq: u16, nvi: u16) {
    assert_eq!(
        vm(pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, cntlid, nvq),
        Ok(nvq.into())
    );
    assert_eq!(
        vm(pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, cntlid, nvi),
        Ok(nvi.into())
    );
    assert_eq!(vm(pf, Act::SECONDARY_ONLINE, Rt::QUEUE, cntlid, 0), Ok(0));
}

/// The Number of Queues a driver is given when it asks for `wanted` pairs: (SQs, CQs).
fn queues_offered(driver: &Driver) -> (u16, u16) {
    let current =
        NumberOfQueuesAllocated::from(driver.get_feature(FeatureId::NUMBER_OF_QUEUES, 0).unwrap());
    (current.nsqa() + 1, current.ncqa() + 1)
}

fn status_of(
    result: Result<nvme_spec::command::Completion, nvme_driver::driver::DriverError>,
) -> Status {
    testing::status(result)
}

#[test]
fn identify_reports_the_pools_and_every_secondary() {
    let host = host("sr-identify", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    let id = pf.identify_controller().unwrap();
    assert!(id.oacs.virtualization_management() && id.oacs.hmlms());

    let caps = capabilities(&pf);
    assert_eq!((caps.cntlid, caps.portid), (1, 0));
    assert!(caps.crt.vq() && caps.crt.vi());
    let secondary_total = 2 * u32::from(SECONDARY_MAX);
    assert_eq!(
        (caps.vqfrt, caps.vqrfa, caps.vqrfap, caps.vqprt),
        (
            secondary_total,
            secondary_total,
            0,
            PRIMARY_PRIVATE_QUEUE_PAIRS
        )
    );
    assert_eq!((caps.vqfrsm, caps.vqgran), (SECONDARY_MAX, 1));
    assert_eq!(
        (caps.vifrt, caps.virfa, caps.virfap, caps.viprt),
        (
            secondary_total,
            secondary_total,
            0,
            PRIMARY_PRIVATE_QUEUE_PAIRS
        )
    );
    assert_eq!((caps.vifrsm, caps.vigran), (SECONDARY_MAX, 1));

    let list = secondaries(&pf, 0);
    assert_eq!(list.numid, 2);
    for (e, (scid, vfn)) in list.valid_entries().iter().zip([(VF1, 1), (VF2, 2)]) {
        assert_eq!((e.scid, e.pcid, e.vfn), (scid, 1, vfn));
        assert!(e.online());
        assert_eq!((e.nvq, e.nvi), (SECONDARY_MAX, SECONDARY_MAX));
    }
    // CDW10.CNTID: entries from that CNTLID on.
    let from_vf2 = secondaries(&pf, VF2);
    assert_eq!(from_vf2.numid, 1);
    assert_eq!(from_vf2.entries[0].scid, VF2);

    // The primary's PCI function offers its private queue pairs (less the admin pair).
    assert_eq!(
        pf.set_queue_count(64).unwrap(),
        PRIMARY_PRIVATE_QUEUE_PAIRS - 1
    );

    // A secondary neither manages nor reports SR-IOV.
    let vf = host.driver(Function::Vf(1), MEMORY, IOVA);
    let vf_id = vf.identify_controller().unwrap();
    assert!(!vf_id.oacs.virtualization_management() && !vf_id.oacs.hmlms());
    for cns in [
        Cns::PRIMARY_CONTROLLER_CAPABILITIES,
        Cns::SECONDARY_CONTROLLER_LIST,
    ] {
        let cmd = Command::identify(0, cns, 0, 0, 0);
        assert_eq!(
            testing::status(vf.admin_read(cmd, 4096).map(|_| Default::default())),
            Status::INVALID_FIELD_IN_COMMAND,
            "{cns:?} on a VF"
        );
    }
    assert_eq!(
        vm(&vf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_COMMAND_OPCODE)
    );
    // The VF offers every queue pair and vector its hardware has.
    assert_eq!(vf.set_queue_count(64).unwrap(), 64);
}

#[test]
fn virtualization_management_statuses() {
    let host = host("sr-statuses", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    // A reserved action.
    assert_eq!(
        vm(&pf, Act(2), Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_FIELD_IN_COMMAND)
    );
    // Secondary actions name a secondary controller; Primary Flexible Allocation the primary.
    for act in [
        Act::SECONDARY_OFFLINE,
        Act::SECONDARY_ASSIGN,
        Act::SECONDARY_ONLINE,
    ] {
        for cntlid in [0, 1, 4, 0xFFFF] {
            assert_eq!(
                vm(&pf, act, Rt::QUEUE, cntlid, 1),
                Err(Status::INVALID_CONTROLLER_IDENTIFIER),
                "{act:?} of {cntlid}"
            );
        }
    }
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_CONTROLLER_IDENTIFIER)
    );
    // Resources are assigned only while the secondary is offline.
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 4),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE)
    );
    // Online and Offline repeat harmlessly.
    assert_eq!(vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(entry(&pf, VF1), (0, 0, 0), "Offline releases the resources");
    // A resource type that does not exist.
    for rt in [2, 7] {
        assert_eq!(
            vm(&pf, Act::SECONDARY_ASSIGN, Rt(rt), VF1, 1),
            Err(Status::INVALID_RESOURCE_IDENTIFIER)
        );
        assert_eq!(
            vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt(rt), 1, 0),
            Err(Status::INVALID_RESOURCE_IDENTIFIER)
        );
    }
    // More than one secondary may hold.
    for rt in [Rt::QUEUE, Rt::INTERRUPT] {
        assert_eq!(
            vm(&pf, Act::SECONDARY_ASSIGN, rt, VF1, SECONDARY_MAX + 1),
            Err(Status::INVALID_NUMBER_OF_CONTROLLER_RESOURCES)
        );
    }
    // Online needs at least the admin queue pair and one more, and one vector.
    assert_eq!(
        vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE)
    );
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 1), Ok(1));
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 1), Ok(1));
    assert_eq!(
        vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE),
        "NVQ 1 is the admin pair only"
    );
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 2), Ok(2));
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 0), Ok(0));
    assert_eq!(
        vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE),
        "no vector"
    );
    assert_eq!(entry(&pf, VF1), (0, 2, 0));
    // The pool: VF 2 holds 65 of each, VF 1 two queue pairs; 63 are free.
    let caps = capabilities(&pf);
    assert_eq!((caps.vqrfa, caps.virfa), (67, 65));
    // The primary can use 48 flexible resources on top of its 17 private ones.
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::QUEUE, 1, 49),
        Err(Status::INVALID_NUMBER_OF_CONTROLLER_RESOURCES)
    );
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::QUEUE, 1, 48),
        Ok(48)
    );
    // With 48 reserved for the primary, 15 queue resources are free (VF 1 holds 2).
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 18),
        Err(Status::INVALID_RESOURCE_IDENTIFIER)
    );
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 17), Ok(17));
    // And the other way round: the primary cannot take what secondaries hold.
    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::INTERRUPT, 1, 48),
        Ok(48)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 17),
        Ok(17)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 18),
        Err(Status::INVALID_RESOURCE_IDENTIFIER)
    );
    let caps = capabilities(&pf);
    assert!(caps.vqrfa + u32::from(caps.vqrfap) <= caps.vqfrt);
    assert!(caps.virfa + u32::from(caps.virfap) <= caps.vifrt);
}

#[test]
fn an_offline_secondary_reads_failed_and_comes_back_online() {
    let host = host("sr-offline", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    let vf_mem = host.memory(Function::Vf(1), MEMORY, IOVA);
    let vf = Driver::new(host.bar(Function::Vf(1)), vf_mem.clone()).unwrap();
    vf.set_queue_count(1).unwrap();
    let mut qp = vf.create_queue_pair(1, 16, None).unwrap();
    let buf = vf_mem.alloc(BLOCK).unwrap();
    buf.fill(0x5a);
    let done = testing::io(&mut qp, Command::write(0, 1, 7, 0, buf.iova(), 0));
    assert!(done.status.status().is_success());

    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0), Ok(0));
    let ctrl = host.controller(Function::Vf(1));
    assert!(!ctrl.online());
    // CSTS reads CFS, every other register 0; writes change nothing, so CC.EN never brings it up.
    assert_eq!(ctrl.read_register(Register::CSTS.0, 4), 0x2);
    for reg in [Register::CAP, Register::ASQ, Register::ACQ] {
        assert_eq!(ctrl.read_register(reg.0, 8), 0, "{reg:?}");
    }
    for reg in [Register::VS, Register::CC, Register::AQA] {
        assert_eq!(ctrl.read_register(reg.0, 4), 0, "{reg:?}");
    }
    ctrl.write_register(Register::AQA.0, 4, 0x001F_001F);
    ctrl.write_register(Register::ASQ.0, 8, IOVA);
    ctrl.write_register(Register::CC.0, 4, u32::from(Cc::new().with_en(true)).into());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ctrl.read_register(Register::CC.0, 4), 0);
    assert_eq!(ctrl.read_register(Register::CSTS.0, 4), 0x2);
    // Its queues went with the reset: a command gets no completion.
    let cid = qp.submit(Command::read(0, 1, 7, 0, buf.iova(), 0)).unwrap();
    assert!(testing::wait_for(&mut qp, cid, Duration::from_millis(200)).is_none());
    // The host driver sees a failed controller.
    assert!(Driver::new(host.bar(Function::Vf(1)), vf_mem.clone()).is_err());
    // TP4159 does not reach it.
    let suspend = Suspend {
        cntlid: VF1,
        stype: SuspendType::SUSPEND,
        dudmq: false,
    };
    assert_eq!(
        status_of(pf.admin(suspend.encode().unwrap())),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );
    assert_eq!(entry(&pf, VF1), (0, 0, 0));

    // Back online with three queue pairs (the admin pair and two I/O pairs) and two vectors.
    provision(&pf, VF1, 3, 2);
    assert!(ctrl.online());
    assert_eq!(entry(&pf, VF1), (1, 3, 2));
    assert_eq!((ctrl.offered_queue_pairs(), ctrl.offered_vectors()), (2, 2));
    assert_eq!(ctrl.read_register(Register::CSTS.0, 4), 0);
    let vf = Driver::new(host.bar(Function::Vf(1)), vf_mem.clone()).unwrap();
    assert_eq!(
        queues_offered(&vf),
        (2, 2),
        "Number of Queues before it is set"
    );
    assert_eq!(vf.set_queue_count(64).unwrap(), 2);
    // Vectors beyond the two assigned are refused.
    let cq = vf_mem.alloc(4096).unwrap();
    assert_eq!(
        status_of(vf.admin(Command::create_io_cq(0, 1, 16, cq.iova(), true, 2))),
        Status::INVALID_INTERRUPT_VECTOR
    );
    assert_eq!(
        status_of(vf.admin(Command::create_io_cq(0, 1, 16, cq.iova(), true, 1))),
        Status::SUCCESS
    );
    assert_eq!(
        status_of(vf.admin(Command::create_io_cq(0, 3, 16, cq.iova(), true, 0))),
        Status::INVALID_QUEUE_IDENTIFIER,
        "only two I/O queue pairs"
    );
    // The data written before it went offline is still there.
    let mut qp = vf.create_queue_pair(2, 16, None).unwrap();
    buf.fill(0);
    let done = testing::io(&mut qp, Command::read(0, 1, 7, 0, buf.iova(), 0));
    assert!(done.status.status().is_success());
    let mut got = vec![0u8; BLOCK as usize];
    buf.read(0, &mut got);
    assert!(got.iter().all(|&b| b == 0x5a));
}

#[test]
fn secondaries_may_start_offline_and_a_vf_reset_keeps_them_so() {
    let host = host("sr-start-off", SecondaryStart::Offline);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    assert_eq!(entry(&pf, VF1), (0, 0, 0));
    assert_eq!(entry(&pf, VF2), (0, 0, 0));
    let caps = capabilities(&pf);
    assert_eq!((caps.vqrfa, caps.virfa), (0, 0));
    let ctrl = host.controller(Function::Vf(2));
    assert_eq!(ctrl.read_register(Register::CSTS.0, 4), 0x2);
    ctrl.reset();
    assert_eq!(
        ctrl.read_register(Register::CSTS.0, 4),
        0x2,
        "an FLR keeps it offline"
    );
    // QEMU's documented bring-up: take nothing for the primary, give VF 2 resources, online.
    for rt in [Rt::INTERRUPT, Rt::QUEUE] {
        assert_eq!(vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, rt, 1, 0), Ok(0));
    }
    provision(&pf, VF2, 2, 1);
    let vf = host.driver(Function::Vf(2), MEMORY, IOVA);
    assert_eq!(vf.set_queue_count(8).unwrap(), 1);
}

#[test]
fn primary_flexible_allocation_takes_effect_at_the_next_reset() {
    let host = host("sr-primary", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    // Everything flexible is with the secondaries: nothing is free for the primary.
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::QUEUE, 1, 1),
        Err(Status::INVALID_RESOURCE_IDENTIFIER)
    );
    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF2, 0), Ok(0));
    for rt in [Rt::QUEUE, Rt::INTERRUPT] {
        assert_eq!(vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, rt, 1, 48), Ok(48));
    }
    // Not yet in effect.
    assert_eq!(capabilities(&pf).vqrfap, 0);
    assert_eq!(pf.set_queue_count(64).unwrap(), 16);
    let primary = host.controller(Function::Primary);
    assert_eq!(primary.offered_vectors(), 17);
    // A controller reset of the PF applies it.
    pf.enable().unwrap();
    let caps = capabilities(&pf);
    assert_eq!((caps.vqrfap, caps.virfap), (48, 48));
    assert_eq!(pf.set_queue_count(64).unwrap(), 64);
    assert_eq!(primary.offered_vectors(), 65);
    // Giving some back also waits for a reset; meanwhile the reservation holds.
    assert_eq!(
        vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, Rt::QUEUE, 1, 0),
        Ok(0)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF2, 18),
        Err(Status::INVALID_RESOURCE_IDENTIFIER)
    );
    primary.reset();
    let pf = host.driver(Function::Primary, MEMORY, IOVA + MEMORY);
    assert_eq!(capabilities(&pf).vqrfap, 0);
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF2, 65), Ok(65));
}

/// Creates a UDMQ of 64 entries for `cntlid` through `pf`: its CDQID or the status.
fn create_udmq(pf: &Driver, cntlid: u16) -> Result<u16, Status> {
    let buf = pf.memory().alloc(64 * 32).unwrap();
    let cmd = CreateCdq::user_data_migration_queue(cntlid, buf.iova(), 64 * 8)
        .encode()
        .unwrap();
    match pf.admin(cmd) {
        Ok(done) => Ok(done.dw0 as u16),
        Err(err) => Err(testing::status(Err(err))),
    }
}

fn track(pf: &Driver, cdqid: u16) -> Status {
    let op = LogUserDataChanges {
        lact: LoggingAction::START,
        cdqid,
    };
    status_of(pf.admin(op.encode().unwrap()))
}

/// CSUP (CQE DW0 bit 0) of a Get Controller State header read of `cntlid` through `pf`.
fn reported_suspended(pf: &Driver, cntlid: u16) -> bool {
    let cmd = GetControllerState {
        csvi: 1,
        cntlid,
        csuuidi: 0,
        csuidxp: 0,
        offset: 0,
        uidx: 0,
        numd: GetControllerState::numd_for_len(48).unwrap(),
    }
    .encode()
    .unwrap();
    let (done, _) = pf.admin_read_completion(cmd, 48).unwrap();
    done.dw0 & 1 == 1
}

#[test]
fn a_private_port_is_the_same_primary_with_queues_and_cdqs_of_its_own() {
    let host = host("sr-ports", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    // The same IOVA as the PF's memory: the port's address space is its own.
    let port = host.private_port(MEMORY, IOVA);
    let own = &port.driver;
    assert_eq!(own.identify_controller().unwrap().cntlid, 1);
    assert_eq!(port.space.windows(), vec![IOVA..IOVA + MEMORY]);

    // SR-IOV state is shared: an Offline through one port shows through the other.
    assert_eq!(vm(own, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF2, 0), Ok(0));
    assert_eq!(entry(&pf, VF2), (0, 0, 0));
    provision(&pf, VF2, SECONDARY_MAX, SECONDARY_MAX);
    assert_eq!(entry(own, VF2), (1, SECONDARY_MAX, SECONDARY_MAX));
    // The private port holds nothing of the pool, and offers the primary's configuration.
    assert_eq!(capabilities(own), capabilities(&pf));
    assert_eq!(port.controller.offered_queue_pairs(), 64);

    // CDQs are per port: both get CDQID 1; a secondary has one UDMQ, whoever created it.
    assert_eq!(create_udmq(&pf, VF1), Ok(1));
    assert_eq!(create_udmq(own, VF2), Ok(1));
    assert_eq!(create_udmq(own, VF1), Err(Status::NOT_ENOUGH_RESOURCES));
    assert_eq!(track(&pf, 1), Status::SUCCESS);
    assert_eq!(track(own, 1), Status::SUCCESS);
    assert_eq!(track(own, 2), Status::INVALID_CONTROLLER_DATA_QUEUE);

    // Suspension is the secondary's: suspended through one port, reported by both, resumed by
    // either. A Suspend with DUDMQ deletes only the suspending port's UDMQ.
    let suspend = Suspend {
        cntlid: VF2,
        stype: SuspendType::SUSPEND,
        dudmq: true,
    };
    assert_eq!(
        status_of(pf.admin(suspend.encode().unwrap())),
        Status::SUCCESS
    );
    assert!(reported_suspended(own, VF2) && reported_suspended(&pf, VF2));
    assert!(!reported_suspended(own, VF1));
    let resume = Resume { cntlid: VF2 };
    assert_eq!(
        status_of(own.admin(resume.encode().unwrap())),
        Status::SUCCESS
    );
    assert!(!reported_suspended(&pf, VF2));
    assert_eq!(
        track(own, 1),
        Status::SUCCESS,
        "the private port's UDMQ of VF 2 lives"
    );

    // A reset of the PF's controller deletes its CDQs, not the private port's.
    pf.enable().unwrap();
    assert_eq!(track(&pf, 1), Status::INVALID_CONTROLLER_DATA_QUEUE);
    assert_eq!(track(own, 1), Status::SUCCESS);
    // VF 1's UDMQ went with the PF's reset: the private port may create one now.
    assert_eq!(create_udmq(own, VF1), Ok(2));
    // Dropping the port deletes nothing of the PF's.
    drop(port);
    assert_eq!(create_udmq(&pf, VF1), Err(Status::NOT_ENOUGH_RESOURCES));
}

#[test]
fn a_reset_of_the_target_voids_a_set_controller_state_transfer() {
    let host = host("sr-set-reset", SecondaryStart::Online);
    let pf = host.driver(Function::Primary, MEMORY, IOVA);
    let suspend = || {
        let op = Suspend {
            cntlid: VF1,
            stype: SuspendType::SUSPEND,
            dudmq: false,
        };
        assert_eq!(status_of(pf.admin(op.encode().unwrap())), Status::SUCCESS);
    };
    let chunk = |seqind, offset, data: &[u8]| {
        let op = SetControllerState {
            seqind,
            cntlid: VF1,
            csvi: 1,
            csuuidi: 1,
            offset,
            uidx: 0,
            numd: SetControllerState::numd_for_len(data.len() as u64).unwrap(),
        };
        status_of(pf.admin_write(op.encode().unwrap(), data))
    };
    suspend();
    assert_eq!(
        chunk(SequenceIndicator::FIRST, 0, &[0; 64]),
        Status::SUCCESS
    );
    // The VF's host toggles CC.EN; the VF's state changed under the transfer.
    host.controller(Function::Vf(1)).reset();
    suspend();
    assert_eq!(
        chunk(SequenceIndicator::MIDDLE, 64, &[0; 64]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // The refused chunk dropped the transfer; a new one may begin.
    assert_eq!(
        chunk(SequenceIndicator::LAST, 64, &[0; 64]),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(
        chunk(SequenceIndicator::FIRST, 0, &[0; 64]),
        Status::SUCCESS
    );
}

#[test]
fn assigned_resources_bound_a_restored_state() {
    // A source VF with 64 queue pairs in use cannot land on a VF offering two.
    let source = host("sr-restore-a", SecondaryStart::Online);
    let dest = host("sr-restore-b", SecondaryStart::Online);
    let src_pf = source.driver(Function::Primary, MEMORY, IOVA);
    let dst_pf = dest.driver(Function::Primary, MEMORY, IOVA);
    let vf = source.driver(Function::Vf(1), MEMORY, IOVA);
    assert_eq!(vf.set_queue_count(4).unwrap(), 4);
    let _qp = vf.create_queue_pair(4, 16, None).unwrap();
    let suspend = |pf: &Driver| {
        let op = Suspend {
            cntlid: VF1,
            stype: SuspendType::SUSPEND,
            dudmq: false,
        };
        assert_eq!(status_of(pf.admin(op.encode().unwrap())), Status::SUCCESS);
    };
    suspend(&src_pf);
    let header = GetControllerState {
        csvi: 1,
        cntlid: VF1,
        csuuidi: 1,
        csuidxp: 0,
        offset: 0,
        uidx: 0,
        numd: GetControllerState::numd_for_len(4096).unwrap(),
    };
    let state = src_pf.admin_read(header.encode().unwrap(), 4096).unwrap();
    let total = nvme_spec::lm::ControllerStateHeader::decode(&state)
        .unwrap()
        .total_len()
        .unwrap();
    assert!(total <= state.len());
    let state = &state[..total];

    assert_eq!(
        vm(&dst_pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0),
        Ok(0)
    );
    provision(&dst_pf, VF1, 3, 3);
    suspend(&dst_pf);
    let set = |pf: &Driver| {
        let op = SetControllerState {
            seqind: SequenceIndicator::ONLY,
            cntlid: VF1,
            csvi: 1,
            csuuidi: 1,
            offset: 0,
            uidx: 0,
            numd: SetControllerState::numd_for_len(state.len() as u64).unwrap(),
        };
        status_of(pf.admin_write(op.encode().unwrap(), state))
    };
    assert_eq!(set(&dst_pf), Status::INVALID_FIELD_IN_COMMAND);
    // With the resources the source used, it lands.
    assert_eq!(
        vm(&dst_pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0),
        Ok(0)
    );
    provision(&dst_pf, VF1, SECONDARY_MAX, SECONDARY_MAX);
    suspend(&dst_pf);
    assert_eq!(set(&dst_pf), Status::SUCCESS);
}
