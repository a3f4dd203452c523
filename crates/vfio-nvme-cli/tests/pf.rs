//! The primary controller served by `vfio-nvme serve --pf-socket`, driven from this process —
//! not the server — with `vfu`'s client and the `nvme-driver` host driver, as a host owning a
//! PF would: the PF's PCI face and SR-IOV capability; SR-IOV management over the PF socket and
//! what the host of a VF sees of it; TP4159 with the statuses of invalid actions and the CDQ
//! events; the libvfn scenario of `tp4159.md` §1.11 between two servers, entirely through their
//! PF (and VF) sockets; and the server's own live migration while a client owns the PF.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use common::ServeProcess;
use common::TempDir;
use nvme_device::testing;
use nvme_device::testing::CdqReader;
use nvme_host::driver::Bar;
use nvme_host::driver::Driver;
use nvme_host::driver::DriverError;
use nvme_host::driver::QueuePair;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::SwitchableBar;
use nvme_host::vfio_user_bar::VfioUserBar;
use nvme_host::vfio_user_bar::dma_map_host_memory;
use nvme_spec::command::Command;
use nvme_spec::command::VirtualizationAction as Act;
use nvme_spec::command::VirtualizationResource as Rt;
use nvme_spec::features::AsyncEventInfoOneShot;
use nvme_spec::features::AsyncEventType;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IDENTIFY_DATA_SIZE;
use nvme_spec::identify::PrimaryControllerCapabilities;
use nvme_spec::identify::SecondaryControllerList;
use nvme_spec::lm::ControllerStateHeader;
use nvme_spec::lm::CreateCdq;
use nvme_spec::lm::DeleteCdq;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::GetCdqFeature;
use nvme_spec::lm::GetControllerState;
use nvme_spec::lm::LbaChangeInfo;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::LogUserDataChanges;
use nvme_spec::lm::LoggingAction;
use nvme_spec::lm::NvmeControllerStateV0;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetCdqFeature;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::registers::Register;
use nvme_spec::status::Status;
use vfio_migration::DeviceState;
use vfu::client::Client;
use vfu::pci::CONFIG_REGION_INDEX;
use zerocopy::FromBytes;

const BLOCK: u64 = 4096;
const NSID: u32 = 1;
/// CNTLIDs of VF 1 and VF 2.
const VF1: u16 = 2;
const VF2: u16 = 3;
/// IOVA of the PF client's memory and of the VF client's (guest) memory.
const PF_IOVA: u64 = 0x2_0000_0000;
const GUEST_IOVA: u64 = 0x1_0000_0000;

/// A server with VFs on `vfs` sockets and the PF on `pf`, plus `args`; returns once every
/// socket exists.
fn serve(vfs: &[PathBuf], pf: &Path, args: &[&str]) -> ServeProcess {
    let mut all: Vec<String> = Vec::new();
    for vf in &vfs[1..] {
        all.extend(["--socket".to_owned(), vf.display().to_string()]);
    }
    all.extend(["--pf-socket".to_owned(), pf.display().to_string()]);
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let server = ServeProcess::start(&vfs[0], &refs);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !vfs
        .iter()
        .map(PathBuf::as_path)
        .chain([pf])
        .all(Path::exists)
    {
        assert!(Instant::now() < deadline, "the sockets never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A client of one function: its connection, its memory (mapped at `iova`) and BAR0.
struct Function {
    client: Arc<Mutex<Client>>,
    memory: Arc<HostMemory>,
    bar: Arc<VfioUserBar>,
}

impl Function {
    fn connect(socket: &Path, memory: Arc<HostMemory>) -> Self {
        let mut client = Client::connect(socket).unwrap();
        dma_map_host_memory(&mut client, &memory).unwrap();
        let client = Arc::new(Mutex::new(client));
        let bar = Arc::new(VfioUserBar::new(client.clone()).unwrap());
        Self {
            client,
            memory,
            bar,
        }
    }

    fn fresh(socket: &Path, iova: u64) -> Self {
        Self::connect(socket, HostMemory::new(16 << 20, iova).unwrap())
    }

    /// The host driver, bringing the controller up.
    fn driver(&self) -> Driver {
        Driver::new(self.bar.clone(), self.memory.clone()).unwrap()
    }

    fn config(&self, offset: u64, len: u32) -> Vec<u8> {
        self.client
            .lock()
            .unwrap()
            .region_read(CONFIG_REGION_INDEX, offset, len)
            .unwrap()
    }

    fn config16(&self, offset: u64) -> u16 {
        u16::from_le_bytes(self.config(offset, 2).try_into().unwrap())
    }

    fn config32(&self, offset: u64) -> u32 {
        u32::from_le_bytes(self.config(offset, 4).try_into().unwrap())
    }

    fn write_config(&self, offset: u64, data: &[u8]) {
        self.client
            .lock()
            .unwrap()
            .region_write(CONFIG_REGION_INDEX, offset, data)
            .unwrap();
    }

    /// The MSI-X capability's Table Size, as a vector count.
    fn msix_vectors(&self) -> u16 {
        (self.config16(0x42) & 0x7FF) + 1
    }

    fn register32(&self, reg: Register) -> u32 {
        self.bar.read32(reg.0).unwrap()
    }
}

/// The NVMe status of a host driver result.
fn status<T>(result: Result<T, DriverError>) -> Status {
    match result {
        Ok(_) => Status::SUCCESS,
        Err(DriverError::Status { status, .. }) => status,
        Err(other) => panic!("the command failed outside NVMe: {other}"),
    }
}

fn send(pf: &Driver, op: impl LmCommand) -> Status {
    status(pf.admin(op.encode().unwrap()))
}

fn vm(pf: &Driver, act: Act, rt: Rt, cntlid: u16, nr: u16) -> Result<u32, Status> {
    pf.admin(Command::virtualization_management(0, act, rt, cntlid, nr))
        .map(|done| done.dw0)
        .map_err(|e| status::<()>(Err(e)))
}

fn identify<T: FromBytes>(pf: &Driver, cns: Cns, cntid: u16) -> T {
    let page = pf
        .admin_read(
            Command::identify(0, cns, 0, cntid, 0),
            IDENTIFY_DATA_SIZE as u64,
        )
        .unwrap();
    T::read_from_bytes(&page).unwrap()
}

/// (SCS, NVQ, NVI) of secondary `cntlid` in the Secondary Controller List.
fn secondary(pf: &Driver, cntlid: u16) -> (u8, u16, u16) {
    let list: SecondaryControllerList = identify(pf, Cns::SECONDARY_CONTROLLER_LIST, 0);
    let e = list
        .valid_entries()
        .iter()
        .find(|e| e.scid == cntlid)
        .unwrap();
    (e.scs, e.nvq, e.nvi)
}

fn suspend(pf: &Driver, cntlid: u16, dudmq: bool) -> Status {
    let op = Suspend {
        cntlid,
        stype: SuspendType::SUSPEND,
        dudmq,
    };
    send(pf, op)
}

fn track(pf: &Driver, cdqid: u16, lact: LoggingAction) -> Status {
    send(pf, LogUserDataChanges { lact, cdqid })
}

/// A UDMQ of `slots` entries for `cntlid`, in `pf`'s memory.
fn create_udmq(pf: &Driver, cntlid: u16, slots: u32) -> (u16, CdqReader) {
    let buf = pf.memory().alloc(u64::from(slots) * 32).unwrap();
    let cmd = CreateCdq::user_data_migration_queue(cntlid, buf.iova(), slots * 8)
        .encode()
        .unwrap();
    let cdqid = pf.admin(cmd).unwrap().dw0 as u16;
    (cdqid, CdqReader::new(buf, slots))
}

/// Get Controller State of `cntlid` (CSVI 1, CSUUIDI `csuuidi`) in one 4 KiB read: the state
/// and CQE DW0.
fn get_state(pf: &Driver, cntlid: u16, csuuidi: u8) -> (Vec<u8>, u32) {
    let op = GetControllerState {
        csvi: 1,
        cntlid,
        csuuidi,
        csuidxp: 0,
        offset: 0,
        uidx: 0,
        numd: GetControllerState::numd_for_len(4096).unwrap(),
    };
    let (done, bytes) = pf
        .admin_read_completion(op.encode().unwrap(), 4096)
        .unwrap();
    let total = ControllerStateHeader::decode(&bytes)
        .unwrap()
        .total_len()
        .unwrap();
    (bytes[..total].to_vec(), done.dw0)
}

fn pattern(slba: u64, blocks: u64) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| ((slba * 13 + i * 3) % 253) as u8)
        .collect()
}

/// Runs `cmd` with a buffer of `blocks` blocks from `memory` on `qp`; returns the buffer's bytes.
fn io(qp: &mut QueuePair, memory: &Arc<HostMemory>, mut cmd: Command, data: &[u8]) -> Vec<u8> {
    let len = data.len() as u64;
    let buf = memory.alloc(len).unwrap();
    buf.write(0, data);
    let list = memory.alloc(4096).unwrap();
    nvme_host::driver::build_prps(&mut cmd, buf.iova(), Some(&list), len);
    let done = testing::io(qp, cmd);
    assert!(done.status.status().is_success(), "{:?}", done.status);
    let mut out = vec![0u8; len as usize];
    buf.read(0, &mut out);
    out
}

#[test]
fn the_pf_is_an_nvme_function_with_an_sriov_capability_describing_the_vfs() {
    let dir = TempDir::new("pf-face");
    let vfs = [dir.path("vf1.sock"), dir.path("vf2.sock")];
    let server = serve(&vfs, &dir.path("pf.sock"), &["--namespace", "ram:16M"]);
    let mode = std::fs::metadata(dir.path("pf.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the PF's socket is as closed as the VFs'"
    );
    let pf = Function::fresh(&dir.path("pf.sock"), PF_IOVA);
    assert_eq!(pf.config16(0), nvme_device::PCI_VENDOR_ID);
    assert_eq!(pf.config16(2), nvme_device::PCI_DEVICE_ID);
    assert_eq!(pf.config32(8) >> 8, 0x01_0802, "class 01:08:02");
    assert_eq!(pf.config(0x34, 1), [0x40], "capabilities from MSI-X at 40h");
    // The PF offers its 17 private vectors.
    assert_eq!(pf.msix_vectors(), 17);
    // The SR-IOV capability, at the offsets of Linux's pci_regs.h.
    let cap = 0x100;
    assert_eq!(pf.config32(cap), 0x0001_0010, "SR-IOV, version 1, last");
    assert_eq!(pf.config16(cap + 0x0C), 2, "InitialVFs");
    assert_eq!(pf.config16(cap + 0x0E), 2, "TotalVFs");
    assert_eq!(pf.config16(cap + 0x10), 0, "NumVFs");
    assert_eq!(pf.config16(cap + 0x14), 1, "First VF Offset");
    assert_eq!(pf.config16(cap + 0x16), 1, "VF Stride");
    assert_eq!(pf.config16(cap + 0x1A), nvme_device::PCI_DEVICE_ID);
    assert_eq!(pf.config32(cap + 0x1C) & 1, 1, "4 KiB pages");
    // Linux's enumeration writes NumVFs; VF Enable stays clear (the VFs are devices of their
    // own), TotalVFs read-only.
    pf.write_config(cap + 0x10, &2u16.to_le_bytes());
    assert_eq!(pf.config16(cap + 0x10), 2);
    pf.write_config(cap + 0x08, &0x0019u16.to_le_bytes());
    assert_eq!(
        pf.config16(cap + 0x08),
        0x0010,
        "only ARI Capable Hierarchy sticks"
    );
    pf.write_config(cap + 0x0E, &9u16.to_le_bytes());
    assert_eq!(pf.config16(cap + 0x0E), 2);
    // VF BAR0 is a 64-bit memory BAR the size of a VF's BAR0.
    pf.write_config(cap + 0x24, &u32::MAX.to_le_bytes());
    assert_eq!(pf.config32(cap + 0x24), !(0x4000 - 1) | 0x4);
    // An FLR puts the writable fields back.
    pf.write_config(0x58, &0x8000u16.to_le_bytes());
    assert_eq!(pf.config16(cap + 0x10), 0);
    assert_eq!(pf.config16(cap + 0x0E), 2);

    // A VF has no SR-IOV capability and offers 65 vectors.
    let vf = Function::fresh(&vfs[0], GUEST_IOVA);
    assert_eq!(vf.config32(0x100), 0);
    assert_eq!(vf.msix_vectors(), 65);
    assert_eq!(vf.config32(8) >> 8, 0x01_0802);

    // The controller behind the PF is the primary: CNTLID 1, Virtualization Management and
    // host managed live migration; the VFs' controllers are neither.
    let driver = pf.driver();
    let id = driver.identify_controller().unwrap();
    assert_eq!(id.cntlid, 1);
    assert!(id.oacs.virtualization_management() && id.oacs.hmlms());
    let vf_id = vf.driver().identify_controller().unwrap();
    assert_eq!(vf_id.cntlid, VF1);
    assert!(!vf_id.oacs.virtualization_management() && !vf_id.oacs.hmlms());
    drop((pf, vf, driver));
    assert!(server.stop(), "serve exits cleanly on SIGTERM");
    assert!(!dir.path("pf.sock").exists(), "the PF's socket is removed");
}

#[test]
fn sriov_management_over_the_pf_socket_and_what_a_vfs_host_sees() {
    let dir = TempDir::new("pf-sriov");
    let vfs = [dir.path("vf1.sock"), dir.path("vf2.sock")];
    let _server = serve(
        &vfs,
        &dir.path("pf.sock"),
        &["--namespace", "ram:16M,lba=4096"],
    );
    let pf_fn = Function::fresh(&dir.path("pf.sock"), PF_IOVA);
    let pf = pf_fn.driver();
    let caps: PrimaryControllerCapabilities =
        identify(&pf, Cns::PRIMARY_CONTROLLER_CAPABILITIES, 0);
    assert_eq!(
        (caps.vqfrt, caps.vqrfa, caps.vqprt, caps.vqfrsm),
        (130, 130, 17, 65)
    );
    assert_eq!(
        (caps.vifrt, caps.virfa, caps.viprt, caps.vifrsm),
        (130, 130, 17, 65)
    );
    assert_eq!(secondary(&pf, VF1), (1, 65, 65));

    // The VF's host writes a block, then its controller goes offline under it.
    let vf = Function::fresh(&vfs[0], GUEST_IOVA);
    let vf_driver = vf.driver();
    vf_driver.set_queue_count(1).unwrap();
    let mut qp = vf_driver.create_queue_pair(1, 16, None).unwrap();
    io(
        &mut qp,
        &vf.memory,
        Command::write(0, NSID, 3, 0, 0, 0),
        &pattern(3, 1),
    );
    // Statuses of invalid actions.
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 2),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, 1, 0),
        Err(Status::INVALID_CONTROLLER_IDENTIFIER)
    );
    assert_eq!(
        vm(&pf, Act(0xF), Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_FIELD_IN_COMMAND)
    );
    assert_eq!(vm(&pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(secondary(&pf, VF1), (0, 0, 0));
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 66),
        Err(Status::INVALID_NUMBER_OF_CONTROLLER_RESOURCES)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_ASSIGN, Rt(5), VF1, 1),
        Err(Status::INVALID_RESOURCE_IDENTIFIER)
    );
    assert_eq!(
        vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0),
        Err(Status::INVALID_SECONDARY_CONTROLLER_STATE)
    );
    // What the VF's host sees: CSTS.CFS, registers 0, CC.EN never brings RDY; its queue is gone.
    assert_eq!(vf.register32(Register::CSTS), 0x2);
    assert_eq!(vf.bar.read64(Register::CAP.0).unwrap(), 0);
    vf.bar
        .write32(
            Register::CC.0,
            nvme_spec::registers::Cc::new().with_en(true).into(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(vf.register32(Register::CSTS), 0x2);
    assert_eq!(vf.register32(Register::CC), 0);
    assert_eq!(vf.msix_vectors(), 1);
    let cid = qp
        .submit(Command::read(0, NSID, 3, 0, GUEST_IOVA, 0))
        .unwrap();
    assert!(testing::wait_for(&mut qp, cid, Duration::from_millis(300)).is_none());
    assert!(matches!(
        Driver::new(vf.bar.clone(), vf.memory.clone()),
        Err(DriverError::Fatal)
    ));

    // Back online with 3 VQ (admin + 2 I/O pairs) and 2 VI: that is all its host is offered.
    for (rt, nr) in [(Rt::QUEUE, 3), (Rt::INTERRUPT, 2)] {
        assert_eq!(
            vm(&pf, Act::SECONDARY_ASSIGN, rt, VF1, nr),
            Ok(u32::from(nr))
        );
    }
    assert_eq!(vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0), Ok(0));
    assert_eq!(secondary(&pf, VF1), (1, 3, 2));
    assert_eq!(vf.register32(Register::CSTS), 0);
    assert_eq!(vf.msix_vectors(), 2);
    let vf_driver = vf.driver();
    assert_eq!(vf_driver.set_queue_count(8).unwrap(), 2);
    let cq = vf.memory.alloc(4096).unwrap();
    assert_eq!(
        status(vf_driver.admin(Command::create_io_cq(0, 1, 16, cq.iova(), true, 2))),
        Status::INVALID_INTERRUPT_VECTOR
    );
    let mut qp = vf_driver.create_queue_pair(1, 16, None).unwrap();
    let data = io(
        &mut qp,
        &vf.memory,
        Command::read(0, NSID, 3, 0, 0, 0),
        &[0; 4096],
    );
    assert_eq!(
        data,
        pattern(3, 1),
        "the VF's data survived offline and online"
    );
    let caps: PrimaryControllerCapabilities =
        identify(&pf, Cns::PRIMARY_CONTROLLER_CAPABILITIES, 0);
    assert_eq!((caps.vqrfa, caps.virfa), (65 + 3, 65 + 2));
}

#[test]
fn vfs_can_start_offline_for_the_pfs_host_to_bring_up() {
    let dir = TempDir::new("pf-offline-start");
    let vfs = [dir.path("vf1.sock")];
    let _server = serve(
        &vfs,
        &dir.path("pf.sock"),
        &["--offline-vfs", "--namespace", "ram:16M"],
    );
    let pf = Function::fresh(&dir.path("pf.sock"), PF_IOVA).driver();
    let vf = Function::fresh(&vfs[0], GUEST_IOVA);
    assert_eq!(secondary(&pf, VF1), (0, 0, 0));
    assert_eq!(vf.register32(Register::CSTS), 0x2);
    // QEMU's documented bring-up, as `nvme virt-mgmt` sends it.
    for rt in [Rt::INTERRUPT, Rt::QUEUE] {
        assert_eq!(vm(&pf, Act::PRIMARY_FLEXIBLE_ALLOCATION, rt, 1, 0), Ok(0));
    }
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, VF1, 1), Ok(1));
    assert_eq!(vm(&pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, VF1, 2), Ok(2));
    assert_eq!(vm(&pf, Act::SECONDARY_ONLINE, Rt::QUEUE, VF1, 0), Ok(0));
    let vf_driver = vf.driver();
    assert_eq!(vf_driver.set_queue_count(4).unwrap(), 1);
}

#[test]
fn tp4159_statuses_and_cdq_events_over_the_pf_socket() {
    let dir = TempDir::new("pf-tp4159");
    let vfs = [dir.path("vf1.sock")];
    let _server = serve(
        &vfs,
        &dir.path("pf.sock"),
        &["--namespace", "ram:16M,lba=4096"],
    );
    let pf_fn = Function::fresh(&dir.path("pf.sock"), PF_IOVA);
    let pf = pf_fn.driver();
    let vf = Function::fresh(&vfs[0], GUEST_IOVA);
    let vf_driver = vf.driver();
    vf_driver.set_queue_count(1).unwrap();
    let mut qp = vf_driver.create_queue_pair(1, 16, None).unwrap();

    // Commands that name no migratable controller, or a state it is not in.
    for cntlid in [0, 1, 9] {
        assert_eq!(
            suspend(&pf, cntlid, false),
            Status::INVALID_CONTROLLER_IDENTIFIER
        );
    }
    assert_eq!(
        send(&pf, Resume { cntlid: VF1 }),
        Status::CONTROLLER_NOT_SUSPENDED
    );
    let mut bad_offset = GetControllerState {
        csvi: 1,
        cntlid: VF1,
        csuuidi: 0,
        csuidxp: 0,
        offset: 2,
        uidx: 0,
        numd: 0,
    }
    .encode()
    .unwrap();
    bad_offset.prp1 = pf_fn.memory.alloc(4096).unwrap().iova();
    assert_eq!(
        status(pf.admin(bad_offset)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    assert_eq!(
        track(&pf, 7, LoggingAction::START),
        Status::INVALID_CONTROLLER_DATA_QUEUE
    );
    assert_eq!(
        send(&pf, DeleteCdq { cdqid: 7 }),
        Status::INVALID_CONTROLLER_DATA_QUEUE
    );
    assert_eq!(
        status(pf.admin_read(GetCdqFeature { cdqid: 7 }.encode().unwrap(), 8)),
        Status::INVALID_CONTROLLER_DATA_QUEUE
    );
    // A CDQ must lie in memory the PF's client mapped.
    let outside = CreateCdq::user_data_migration_queue(VF1, 0x7_0000_0000, 1024)
        .encode()
        .unwrap();
    assert_eq!(status(pf.admin(outside)), Status::INVALID_FIELD_IN_COMMAND);
    // nvme-cli 2.13 (libnvme 1.13) puts the CNTLID in CDW11[15:0], OR-ed with PC, leaving CQS
    // (CDW11[31:16], TP4159's CNTLID) zero: reserved bits set, refused.
    let mut cli_encoded = CreateCdq::user_data_migration_queue(VF1, PF_IOVA, 1024)
        .encode()
        .unwrap();
    cli_encoded.cdw11 = u32::from(VF1) | 1;
    assert_eq!(
        status(pf.admin(cli_encoded)),
        Status::INVALID_FIELD_IN_COMMAND
    );
    // With the reserved bits clear, CQS 0 names no controller.
    cli_encoded.cdw11 = 1;
    assert_eq!(
        status(pf.admin(cli_encoded)),
        Status::INVALID_CONTROLLER_IDENTIFIER
    );

    // A UDMQ in the PF client's memory, its tail pointer trigger and its full event, delivered
    // to the PF's client as asynchronous events (type one-shot, CDQID in dword 1).
    let (cdqid, mut reader) = create_udmq(&pf, VF1, 4);
    pf.request_event().unwrap();
    pf.request_event().unwrap();
    let arm = SetCdqFeature {
        cdqid,
        etpt: true,
        hp: 0,
        tpt: 2,
    };
    assert_eq!(send(&pf, arm), Status::SUCCESS);
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);
    for lba in 0..4 {
        io(
            &mut qp,
            &vf.memory,
            Command::write(0, NSID, lba, 0, 0, 0),
            &pattern(lba, 1),
        );
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "events: {seen:?}");
        seen.extend(pf.poll_events());
        std::thread::sleep(Duration::from_millis(5));
    }
    let infos: Vec<u8> = seen
        .iter()
        .map(|(event, dw1)| {
            assert_eq!(event.event_type(), AsyncEventType::ONE_SHOT);
            assert_eq!(*dw1, u32::from(cdqid));
            event.event_info()
        })
        .collect();
    assert_eq!(
        infos,
        [
            AsyncEventInfoOneShot::CDQ_TAIL_POINTER_TRIGGER.0,
            AsyncEventInfoOneShot::CDQ_FULL.0
        ]
    );
    let entries = reader.drain_until(EntrySequence::LAST_FULL);
    assert_eq!(entries[0].attr.esa(), EntrySequence::FIRST);
    let (data, dw0) = {
        let cmd = GetCdqFeature { cdqid }.encode().unwrap();
        let (done, bytes) = pf.admin_read_completion(cmd, 8).unwrap();
        (bytes, done.dw0)
    };
    assert_eq!(dw0 & 0xFFFF, u32::from(cdqid));
    assert_eq!(
        &data[0..4],
        &0u32.to_le_bytes(),
        "HP is where the host left it"
    );
    // Logging cannot change while the VF is suspended; a suspended VF refuses Track Send.
    assert_eq!(suspend(&pf, VF1, false), Status::SUCCESS);
    assert_eq!(
        track(&pf, cdqid, LoggingAction::STOP),
        Status::CONTROLLER_SUSPENDED
    );
    assert_eq!(send(&pf, Resume { cntlid: VF1 }), Status::SUCCESS);
    assert_eq!(send(&pf, DeleteCdq { cdqid }), Status::SUCCESS);
}

/// One side of the §1.11 scenario: a server with one VF and the PF, a PF client with its
/// driver and an I/O queue pair on the PF, and a client of the VF over the guest's `memory`.
struct Side {
    _server: ServeProcess,
    pf: Driver,
    pf_qp: QueuePair,
    vf: Function,
}

impl Side {
    fn start(dir: &TempDir, name: &str, memory: &Arc<HostMemory>) -> Self {
        let vf_socket = dir.path(&format!("{name}-vf.sock"));
        let pf_socket = dir.path(&format!("{name}-pf.sock"));
        let server = serve(
            std::slice::from_ref(&vf_socket),
            &pf_socket,
            &["--namespace", "ram:16M,lba=4096,shared"],
        );
        let pf = Function::fresh(&pf_socket, PF_IOVA).driver();
        pf.set_queue_count(1).unwrap();
        let pf_qp = pf.create_queue_pair(1, 16, None).unwrap();
        let vf = Function::connect(&vf_socket, memory.clone());
        Self {
            _server: server,
            pf,
            pf_qp,
            vf,
        }
    }

    /// Steps 2–4 of the setup: VFN 1's SCID from the Secondary Controller List, then offline,
    /// assign 2 VQ and 2 VI, reset the VF through vfio-user, online.
    fn provision_child(&self) -> u16 {
        let list: SecondaryControllerList = identify(&self.pf, Cns::SECONDARY_CONTROLLER_LIST, 0);
        let scid = list.find_vfn(1).expect("VFN 1 is listed").scid;
        assert_eq!(
            vm(&self.pf, Act::SECONDARY_OFFLINE, Rt::QUEUE, scid, 0),
            Ok(0)
        );
        assert_eq!(
            vm(&self.pf, Act::SECONDARY_ASSIGN, Rt::QUEUE, scid, 2),
            Ok(2)
        );
        assert_eq!(
            vm(&self.pf, Act::SECONDARY_ASSIGN, Rt::INTERRUPT, scid, 2),
            Ok(2)
        );
        self.vf.client.lock().unwrap().reset().unwrap();
        assert_eq!(
            vm(&self.pf, Act::SECONDARY_ONLINE, Rt::QUEUE, scid, 0),
            Ok(0)
        );
        scid
    }
}

#[test]
fn the_tp4159_scenario_of_libvfn_between_two_servers_through_their_pf_sockets() {
    let dir = TempDir::new("pf-scenario");
    // The guest's memory: one memfd both VFs map at the same IOVA (the VMM migrates it).
    let guest = HostMemory::new(8 << 20, GUEST_IOVA).unwrap();
    let mut source = Side::start(&dir, "a", &guest);
    let mut dest = Side::start(&dir, "b", &guest);
    let child = source.provision_child();
    assert_eq!(dest.provision_child(), child);
    // The child on the source with I/O queue pair 1 of 64 entries, behind a BAR that can move.
    let bar = Arc::new(SwitchableBar::new(source.vf.bar.clone()));
    let child_driver = Driver::new(bar.clone(), guest.clone()).unwrap();
    assert_eq!(child_driver.set_queue_count(1).unwrap(), 1);
    let mut qp = child_driver.create_queue_pair(1, 64, None).unwrap();
    // The destination's child has its own admin queue, and no I/O queues (NVMe state v0 carries
    // the I/O queues only).
    let dest_child = Driver::new(dest.vf.bar.clone(), guest.clone()).unwrap();

    // 1–2. A UDMQ on the source PF, in the PF client's memory; start logging.
    let (cdqid, mut reader) = create_udmq(&source.pf, child, 128);
    assert_eq!(
        track(&source.pf, cdqid, LoggingAction::START),
        Status::SUCCESS
    );
    // 3. The child writes LBA 0 (and LBAs 4–5).
    io(
        &mut qp,
        &guest,
        Command::write(0, NSID, 0, 0, 0, 0),
        &pattern(0, 1),
    );
    io(
        &mut qp,
        &guest,
        Command::write(0, NSID, 4, 1, 0, 0),
        &pattern(4, 2),
    );
    // 4. Stop logging.
    assert_eq!(
        track(&source.pf, cdqid, LoggingAction::STOP),
        Status::SUCCESS
    );
    // 5. Drain until ESA 2, copying every changed range PF-A → PF-B.
    let entries = reader.drain_until(EntrySequence::LAST_STOPPED);
    let ranges: Vec<(u32, u64, u32)> = entries
        .iter()
        .filter(|e| e.attr.lbacir() == LbaChangeInfo::RANGE)
        .map(|e| (e.nsid, e.slba, e.nlb))
        .collect();
    assert_eq!(ranges, [(NSID, 0, 0), (NSID, 4, 1)]);
    for &(nsid, slba, nlb) in &ranges {
        let blocks = u64::from(nlb) + 1;
        let read = Command::read(0, nsid, slba, nlb as u16, 0, 0);
        let data = io(
            &mut source.pf_qp,
            source.pf.memory(),
            read,
            &vec![0; (blocks * BLOCK) as usize],
        );
        assert_eq!(data, pattern(slba, blocks));
        let write = Command::write(0, nsid, slba, nlb as u16, 0, 0);
        io(&mut dest.pf_qp, dest.pf.memory(), write, &data);
    }
    // 6. Tell the controller how far the host read.
    let hp = SetCdqFeature {
        cdqid,
        etpt: false,
        hp: reader.head(),
        tpt: 0,
    };
    assert_eq!(send(&source.pf, hp), Status::SUCCESS);
    // 7–8. Log again, then suspend the child, deleting the UDMQ.
    assert_eq!(
        track(&source.pf, cdqid, LoggingAction::START),
        Status::SUCCESS
    );
    assert_eq!(suspend(&source.pf, child, true), Status::SUCCESS);
    // 9. A Read submitted now does not complete.
    let read_buf = guest.alloc(2 * BLOCK).unwrap();
    let mut pending = Command::read(0, NSID, 4, 1, 0, 0);
    nvme_host::driver::build_prps(&mut pending, read_buf.iova(), None, 2 * BLOCK);
    let read_cid = qp.submit(pending).unwrap();
    assert!(testing::wait_for(&mut qp, read_cid, Duration::from_secs(1)).is_none());
    // 10. Drain until ESA 3: no change was logged meanwhile.
    let entries = reader.drain_until(EntrySequence::LAST_SUSPENDED);
    assert!(
        entries
            .iter()
            .all(|e| e.attr.lbacir() != LbaChangeInfo::RANGE)
    );
    assert_eq!(
        send(&source.pf, DeleteCdq { cdqid }),
        Status::INVALID_CONTROLLER_DATA_QUEUE,
        "DUDMQ deleted it"
    );
    // 11. Migration Receive: NVMe state v0 of the child, with the Read still in its SQ.
    let (state, dw0) = get_state(&source.pf, child, 0);
    assert_eq!(dw0 & 1, 1, "CSUP: captured while suspended");
    let header = ControllerStateHeader::decode(&state).unwrap();
    assert!(header.csattr.suspended());
    let nvmecs = NvmeControllerStateV0::decode(&state[48..]).unwrap();
    let sq = nvmecs.sqs()[0];
    assert_eq!((nvmecs.sqs().len(), nvmecs.cqs().len()), (1, 1));
    assert_eq!((sq.qid, sq.cqid, sq.qsize), (1, 1, 63));
    assert_eq!((sq.tp + 64 - sq.hp) % 64, 1, "one entry not fetched");
    // 12–14. Destination: suspend its child, set the state (NUMD = the bytes / 4), resume.
    assert_eq!(suspend(&dest.pf, child, false), Status::SUCCESS);
    let set = SetControllerState {
        seqind: SequenceIndicator::ONLY,
        cntlid: child,
        csvi: 1,
        csuuidi: 0,
        offset: 0,
        uidx: 0,
        numd: SetControllerState::numd_for_len(state.len() as u64).unwrap(),
    };
    assert_eq!(state.len(), 48 + 8 + 24 * 2);
    assert_eq!(
        status(dest.pf.admin_write(set.encode().unwrap(), &state)),
        Status::SUCCESS
    );
    assert_eq!(send(&dest.pf, Resume { cntlid: child }), Status::SUCCESS);
    // 15. The Read submitted before the suspend completes on the destination's child, once.
    let done = testing::wait_for(&mut qp, read_cid, Duration::from_secs(10))
        .expect("the pending Read completes on the destination");
    assert!(done.status.status().is_success());
    let mut data = vec![0u8; (2 * BLOCK) as usize];
    read_buf.read(0, &mut data);
    assert_eq!(data, pattern(4, 2));
    assert!(testing::wait_for(&mut qp, read_cid, Duration::from_millis(100)).is_none());
    // The host now rings the destination's doorbells for the same queue and carries on.
    bar.resume(Some(dest.vf.bar.clone()));
    let data = io(
        &mut qp,
        &guest,
        Command::read(0, NSID, 0, 0, 0, 0),
        &[0; 4096],
    );
    assert_eq!(data, pattern(0, 1));
    io(
        &mut qp,
        &guest,
        Command::write(0, NSID, 9, 0, 0, 0),
        &pattern(9, 1),
    );
    drop(dest_child);
    // The source's child stays suspended; the destination has the data.
    assert_eq!(get_state(&source.pf, child, 0).1 & 1, 1);
    let data = io(
        &mut dest.pf_qp,
        dest.pf.memory(),
        Command::read(0, NSID, 9, 0, 0, 0),
        &[0; 4096],
    );
    assert_eq!(data, pattern(9, 1));
}

#[test]
fn the_servers_own_migration_works_while_a_client_owns_the_pf() {
    let dir = TempDir::new("pf-busy");
    let vfs = [dir.path("a1.sock"), dir.path("a2.sock")];
    let _a = serve(
        &vfs,
        &dir.path("a-pf.sock"),
        &["--namespace", "ram:64M,lba=4096"],
    );
    let b = ServeProcess::start(
        &dir.path("b1.sock"),
        &[
            "--socket",
            dir.path("b2.sock").to_str().unwrap(),
            "--namespace",
            "ram:64M,lba=4096",
        ],
    );
    // The PF's client: its admin queue, a UDMQ of VF 2 (CDQID 1, in its memory).
    let pf_fn = Function::fresh(&dir.path("a-pf.sock"), PF_IOVA);
    let pf = pf_fn.driver();
    let (cdqid, _reader) = create_udmq(&pf, VF2, 64);
    assert_eq!(cdqid, 1);
    assert_eq!(track(&pf, cdqid, LoggingAction::START), Status::SUCCESS);

    // A VF suspended by the server's migration driver (VFIO STOP) is suspended to the PF's
    // client too; back to RUNNING, it is not.
    {
        let mut vf1 = Client::connect(&vfs[0]).unwrap();
        vf1.set_migration_state(DeviceState::Stop).unwrap();
        assert_eq!(get_state(&pf, VF1, 0).1 & 1, 1);
        vf1.set_migration_state(DeviceState::Running).unwrap();
        assert_eq!(get_state(&pf, VF1, 0).1 & 1, 0);
    }

    // A verified workload on VF 1 migrates A → B (pre-copy of its private namespace through
    // the driver's own UDMQ, CDQID 1 of its private port) while the PF's client keeps using
    // the PF's admin queue.
    let log = dir.path("workload.out");
    let err = dir.path("workload.err");
    let mut workload = std::process::Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(["--json", "workload", "--socket"])
        .arg(&vfs[0])
        .args([
            "--rw",
            "randwrite",
            "--queues",
            "2",
            "--verify",
            "--migrate-after",
            "1s",
            "--migrate-to",
        ])
        .arg(&b.socket)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut identifies = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let exit = loop {
        let list: SecondaryControllerList = identify(&pf, Cns::SECONDARY_CONTROLLER_LIST, 0);
        assert_eq!(list.numid, 2);
        identifies += 1;
        if let Some(exit) = workload.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the workload did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(exit.success(), "{stderr}");
    // The result is the last line, after the migration's progress events.
    let out = std::fs::read_to_string(&log).unwrap();
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        report["migrations"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(report["workload"]["verified"], true, "{report}");
    assert!(identifies > 10, "the PF's admin queue was in use meanwhile");
    // The PF client's own UDMQ is untouched by the driver's.
    assert_eq!(track(&pf, cdqid, LoggingAction::STOP), Status::SUCCESS);
}
