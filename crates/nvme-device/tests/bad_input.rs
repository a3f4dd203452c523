//! Every bad command a guest can send gets the status the NVMe base and NVM command set
//! specifications give, and never touches memory outside what the guest mapped.

mod common;

use std::sync::Arc;

use nvme_device::backend::Backend;
use nvme_device::backend::RamBackend;
use nvme_device::testing;
use nvme_device::testing::Function;
use nvme_device::testing::GuardedMemory;
use nvme_device::testing::RawQueue;
use nvme_device::testing::TestHost;
use nvme_driver::driver::Bar;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Cdw0;
use nvme_spec::command::Command;
use nvme_spec::command::CreateIoCqCdw11;
use nvme_spec::command::CreateIoSqCdw11;
use nvme_spec::command::DsmCdw10;
use nvme_spec::command::DsmCdw11;
use nvme_spec::command::DsmRange;
use nvme_spec::command::NvmOpcode;
use nvme_spec::command::SetFeaturesCdw10;
use nvme_spec::command::WriteZeroesCdw12;
use nvme_spec::features::FeatureId;
use nvme_spec::features::NumberOfQueuesAllocated;
use nvme_spec::features::NumberOfQueuesRequest;
use nvme_spec::features::Select;
use nvme_spec::identify::Cns;
use nvme_spec::log::LogPageId;
use nvme_spec::status::Status;
use zerocopy::IntoBytes;

const IOVA: u64 = 0x4000_0000;
/// Host memory size; the last [`GUARD`] bytes are never mapped into the controller.
const MEMORY: u64 = 2 << 20;
const GUARD: u64 = 64 << 10;
const PAGE: u64 = 4096;

/// A guest of VF 1 on raw queues: admin queue, and I/O queue pair 1 (of 2 allocated).
struct Guest {
    mem: Arc<HostMemory>,
    guarded: GuardedMemory,
    admin: RawQueue,
    io: RawQueue,
    backends: [Arc<RamBackend>; 2],
    cid: u16,
    _host: TestHost,
}

impl Guest {
    fn new(name: &str) -> Self {
        let (host, backends) = common::vf_host(name);
        let guarded = GuardedMemory::new(MEMORY, IOVA, 0, GUARD, &[host.space(Function::Vf(1))]);
        let mem = guarded.memory().clone();
        let bar = host.bar(Function::Vf(1));
        let admin = testing::raw_enable(&bar, &mem, 32);
        let io = RawQueue::new(&mem, bar.clone(), 1, 16, 16);
        let mut guest = Self {
            mem,
            guarded,
            admin,
            io,
            backends,
            cid: 0,
            _host: host,
        };
        let request = NumberOfQueuesRequest::new().with_nsqr(1).with_ncqr(1);
        let done = guest.admin_dw0(Command::set_features(
            0,
            FeatureId::NUMBER_OF_QUEUES,
            request.into(),
        ));
        assert_eq!(
            done,
            Ok(NumberOfQueuesAllocated::new()
                .with_nsqa(1)
                .with_ncqa(1)
                .into())
        );
        let (cq, sq) = (guest.io.cq_iova(), guest.io.sq_iova());
        assert_eq!(
            guest.admin_status(Command::create_io_cq(0, 1, 16, cq, true, 1)),
            Status::SUCCESS
        );
        assert_eq!(
            guest.admin_status(Command::create_io_sq(0, 1, 16, sq, 1)),
            Status::SUCCESS
        );
        guest
    }

    fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    fn admin_dw0(&mut self, mut cmd: Command) -> Result<u32, Status> {
        cmd.cdw0 = cmd.cdw0.with_cid(self.next_cid());
        let done = self.admin.run(cmd);
        let status = done.status.status();
        if status.is_success() {
            Ok(done.dw0)
        } else {
            Err(status)
        }
    }

    fn admin_status(&mut self, cmd: Command) -> Status {
        self.admin_dw0(cmd).err().unwrap_or(Status::SUCCESS)
    }

    fn io_status(&mut self, mut cmd: Command) -> Status {
        cmd.cdw0 = cmd.cdw0.with_cid(self.next_cid());
        self.io.run(cmd).status.status()
    }

    /// The first unmapped byte: the guard after the memory the controller reaches.
    fn guard_iova(&self) -> u64 {
        self.guarded.end_of_mapping()
    }
}

fn check(guest: &mut Guest, cases: &[(&str, Command, Status)], io: bool) {
    for (what, cmd, want) in cases {
        let got = if io {
            guest.io_status(*cmd)
        } else {
            guest.admin_status(*cmd)
        };
        assert_eq!(got, *want, "{what}");
    }
}

fn with_cdw11<T: Into<u32>>(mut cmd: Command, cdw11: T) -> Command {
    cmd.cdw11 = cdw11.into();
    cmd
}

fn with_cdw0(mut cmd: Command, f: impl FnOnce(Cdw0) -> Cdw0) -> Command {
    cmd.cdw0 = f(cmd.cdw0);
    cmd
}

#[test]
fn queue_management_errors() {
    let mut guest = Guest::new("bad-queues");
    let base = guest.mem.alloc(16 * PAGE).unwrap().iova();
    let cq =
        |qid: u16, entries: u32, iv: u16| Command::create_io_cq(0, qid, entries, base, true, iv);
    let sq = |qid: u16, entries: u32, cqid: u16| Command::create_io_sq(0, qid, entries, base, cqid);
    use Status as S;
    let cases = [
        ("CQ qid 0", cq(0, 16, 0), S::INVALID_QUEUE_IDENTIFIER),
        (
            "CQ qid beyond the controller's maximum",
            cq(65, 16, 0),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "CQ qid beyond the allocated queues",
            cq(3, 16, 0),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        ("CQ qid in use", cq(1, 16, 0), S::INVALID_QUEUE_IDENTIFIER),
        ("CQ of one entry", cq(2, 1, 0), S::INVALID_QUEUE_SIZE),
        ("CQ above MQES + 1", cq(2, 1025, 0), S::INVALID_QUEUE_SIZE),
        (
            "CQ not physically contiguous",
            with_cdw11(
                cq(2, 16, 0),
                CreateIoCqCdw11::from(cq(2, 16, 0).cdw11).with_pc(false),
            ),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "CQ vector beyond MSI-X",
            cq(2, 16, 65),
            S::INVALID_INTERRUPT_VECTOR,
        ),
        (
            "CQ base not page aligned",
            Command::create_io_cq(0, 2, 16, base + 0x80, true, 0),
            S::PRP_OFFSET_INVALID,
        ),
        ("SQ qid 0", sq(0, 16, 1), S::INVALID_QUEUE_IDENTIFIER),
        (
            "SQ qid beyond the controller's maximum",
            sq(65, 16, 1),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "SQ qid beyond the allocated queues",
            sq(3, 16, 1),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        ("SQ qid in use", sq(1, 16, 1), S::INVALID_QUEUE_IDENTIFIER),
        ("SQ of one entry", sq(2, 1, 1), S::INVALID_QUEUE_SIZE),
        ("SQ above MQES + 1", sq(2, 1025, 1), S::INVALID_QUEUE_SIZE),
        (
            "SQ not physically contiguous",
            with_cdw11(
                sq(2, 16, 1),
                CreateIoSqCdw11::from(sq(2, 16, 1).cdw11).with_pc(false),
            ),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "SQ naming a missing CQ",
            sq(2, 16, 2),
            S::COMPLETION_QUEUE_INVALID,
        ),
        (
            "SQ naming the admin CQ",
            sq(2, 16, 0),
            S::COMPLETION_QUEUE_INVALID,
        ),
        (
            "SQ base not page aligned",
            Command::create_io_sq(0, 2, 16, base + 0x40, 1),
            S::PRP_OFFSET_INVALID,
        ),
        (
            "delete a CQ an SQ uses",
            Command::delete_io_cq(0, 1),
            S::INVALID_QUEUE_DELETION,
        ),
        (
            "delete a missing SQ",
            Command::delete_io_sq(0, 2),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "delete a missing CQ",
            Command::delete_io_cq(0, 2),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "delete the admin SQ",
            Command::delete_io_sq(0, 0),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "delete the admin CQ",
            Command::delete_io_cq(0, 0),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            "delete an SQ beyond the maximum",
            Command::delete_io_sq(0, 0xFFFF),
            S::INVALID_QUEUE_IDENTIFIER,
        ),
    ];
    check(&mut guest, &cases, false);
    // A failed creation leaves nothing behind: qid 2 can still be created properly.
    assert_eq!(guest.admin_status(cq(2, 16, 2)), Status::SUCCESS);
    assert_eq!(guest.admin_status(sq(2, 16, 2)), Status::SUCCESS);
    assert_eq!(
        guest.admin_status(Command::delete_io_sq(0, 2)),
        Status::SUCCESS
    );
    assert_eq!(
        guest.admin_status(Command::delete_io_cq(0, 2)),
        Status::SUCCESS
    );
}

#[test]
fn admin_command_errors() {
    let mut guest = Guest::new("bad-admin");
    let buf = guest.mem.alloc(PAGE).unwrap().iova();
    let raw = |opcode: u8| Command {
        cdw0: Cdw0::new().with_opcode(opcode),
        ..Command::default()
    };
    let log = |lid: LogPageId, len: u64, offset: u64| {
        Command::get_log_page(0, lid, 0, len, offset, buf, 0)
    };
    let set = |fid: FeatureId, cdw11: u32| Command::set_features(0, fid, cdw11);
    let nq = |n: u16| {
        set(
            FeatureId::NUMBER_OF_QUEUES,
            NumberOfQueuesRequest::new()
                .with_nsqr(n)
                .with_ncqr(n)
                .into(),
        )
    };
    let mut saved = set(FeatureId::ARBITRATION, 0);
    saved.cdw10 = SetFeaturesCdw10::from(saved.cdw10).with_sv(true).into();
    use Status as S;
    let cases = [
        ("unknown admin opcode", raw(0x7F), S::INVALID_COMMAND_OPCODE),
        (
            "TP4159 Migration Send on a secondary controller",
            raw(0x41),
            S::INVALID_COMMAND_OPCODE,
        ),
        (
            "fused admin command",
            with_cdw0(Command::identify(0, Cns::CONTROLLER, 0, 0, buf), |c| {
                c.with_fuse(1)
            }),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "SGL admin command",
            with_cdw0(Command::identify(0, Cns::CONTROLLER, 0, 0, buf), |c| {
                c.with_psdt(1)
            }),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "unknown CNS",
            Command::identify(0, Cns(0x1F), 0, 0, buf),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "TP4159 CNS on a secondary controller",
            Command::identify(0, Cns::SECONDARY_CONTROLLER_LIST, 0, 0, buf),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "CNS 05h for a command set we lack",
            Command::identify_csi(0, Cns::CSI_NAMESPACE, 1, 2, buf),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "Identify Namespace NSID 0",
            Command::identify(0, Cns::NAMESPACE, 0, 0, buf),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "Identify Namespace beyond NN",
            Command::identify(0, Cns::NAMESPACE, 3, 0, buf),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "descriptors of NSID 0",
            Command::identify(0, Cns::NAMESPACE_ID_DESCRIPTORS, 0, 0, buf),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "descriptors of the broadcast NSID",
            Command::identify(0, Cns::NAMESPACE_ID_DESCRIPTORS, u32::MAX, 0, buf),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "active list after FFFFFFFEh",
            Command::identify(0, Cns::ACTIVE_NAMESPACE_LIST, 0xFFFF_FFFE, 0, buf),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "unknown log page",
            log(LogPageId(0x7E), 64, 0),
            S::INVALID_LOG_PAGE,
        ),
        (
            "log offset not dword aligned",
            log(LogPageId::SMART_HEALTH, 64, 2),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "log offset beyond the log",
            log(LogPageId::SMART_HEALTH, 64, 512),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "log longer than MDTS",
            log(LogPageId::SMART_HEALTH, 512 << 10, 0),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "log into unmapped memory",
            Command::get_log_page(0, LogPageId::SMART_HEALTH, 0, 512, 0, guest.guard_iova(), 0),
            S::DATA_TRANSFER_ERROR,
        ),
        (
            "Get Features of an unknown feature",
            Command::get_features(0, FeatureId(0x7D), Select::CURRENT, 0),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "Set Features of an unknown feature",
            set(FeatureId(0x7D), 0),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "Set Features saving a value",
            saved,
            S::FEATURE_NOT_SAVEABLE,
        ),
        (
            "Number of Queues 65535",
            nq(0xFFFF),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "Number of Queues after queue creation",
            nq(3),
            S::COMMAND_SEQUENCE_ERROR,
        ),
        (
            "Timestamp from unmapped memory",
            Command {
                prp1: guest.guard_iova(),
                ..set(FeatureId::TIMESTAMP, 0)
            },
            S::DATA_TRANSFER_ERROR,
        ),
    ];
    check(&mut guest, &cases, false);
    guest.guarded.assert_untouched();

    // AERL + 1 requests may be outstanding; one more is refused at once.
    for cid in 200..204 {
        guest.admin.submit(Command::async_event_request(cid));
    }
    let refused = guest.admin.run(Command::async_event_request(204));
    assert_eq!(
        refused.status.status(),
        Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED
    );
}

#[test]
fn number_of_queues_is_fixed_until_reset() {
    let (host, _) = common::vf_host("bad-nq");
    let mem = host.memory(Function::Vf(1), 1 << 20, IOVA);
    let bar = host.bar(Function::Vf(1));
    let mut admin = testing::raw_enable(&bar, &mem, 8);
    let mut request = |cid: u16, n: u16| {
        let nq = NumberOfQueuesRequest::new().with_nsqr(n).with_ncqr(n);
        let done = admin.run(Command::set_features(
            cid,
            FeatureId::NUMBER_OF_QUEUES,
            nq.into(),
        ));
        assert!(done.status.status().is_success());
        NumberOfQueuesAllocated::from(done.dw0).nsqa()
    };
    // Larger than the controller has: capped at 64 pairs (0's based 63).
    assert_eq!(request(1, 1000), 63);
    // The allocation does not change between resets.
    assert_eq!(request(2, 1), 63);
    bar.write32(0x14, 0).unwrap();
    let mut admin = testing::raw_enable(&bar, &mem, 8);
    let nq = NumberOfQueuesRequest::new().with_nsqr(1).with_ncqr(1);
    let done = admin.run(Command::set_features(
        3,
        FeatureId::NUMBER_OF_QUEUES,
        nq.into(),
    ));
    assert_eq!(NumberOfQueuesAllocated::from(done.dw0).nsqa(), 1);

    // A host that creates queues without asking first may not ask afterwards either.
    bar.write32(0x14, 0).unwrap();
    let mut admin = testing::raw_enable(&bar, &mem, 8);
    let cq = mem.alloc(PAGE).unwrap();
    let done = admin.run(Command::create_io_cq(4, 1, 16, cq.iova(), false, 0));
    assert!(done.status.status().is_success());
    let done = admin.run(Command::set_features(
        5,
        FeatureId::NUMBER_OF_QUEUES,
        nq.into(),
    ));
    assert_eq!(done.status.status(), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn io_command_errors() {
    let mut guest = Guest::new("bad-io");
    let data = guest.mem.alloc(4 * PAGE).unwrap();
    let list = guest.mem.alloc(PAGE).unwrap();
    let d = data.iova();
    let entries = |e: &[u64]| {
        let bytes: Vec<u8> = e.iter().flat_map(|v| v.to_le_bytes()).collect();
        list.write(0, &bytes);
        list.iova()
    };
    let read = |nsid: u32, slba: u64, nlb0: u16| Command::read(0, nsid, slba, nlb0, d, d + PAGE);
    let guard = guest.guard_iova();
    use Status as S;
    let cases = [
        (
            "read beyond the namespace",
            read(1, 1024, 0),
            S::LBA_OUT_OF_RANGE,
        ),
        (
            "read across the end of the namespace",
            read(1, 1023, 1),
            S::LBA_OUT_OF_RANGE,
        ),
        (
            "read at the largest LBA",
            read(1, u64::MAX, 0),
            S::LBA_OUT_OF_RANGE,
        ),
        (
            "read beyond the 512-byte namespace",
            read(2, 2048, 0),
            S::LBA_OUT_OF_RANGE,
        ),
        (
            "write beyond the namespace",
            Command::write(0, 1, 1024, 0, d, 0),
            S::LBA_OUT_OF_RANGE,
        ),
        (
            "read of NSID 0",
            read(0, 0, 0),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "read of a namespace that is not attached",
            read(3, 0, 0),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "read of the broadcast NSID",
            read(u32::MAX, 0, 0),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "flush of a namespace that is not attached",
            Command::flush(0, 3),
            S::INVALID_NAMESPACE_OR_FORMAT,
        ),
        (
            "read over MDTS",
            read(1, 0, 64),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "SGL read",
            with_cdw0(read(1, 0, 0), |c| c.with_psdt(1)),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "fused read",
            with_cdw0(read(1, 0, 0), |c| c.with_fuse(1)),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "fused write, second half",
            with_cdw0(Command::write(0, 1, 0, 0, d, 0), |c| c.with_fuse(2)),
            S::INVALID_FIELD_IN_COMMAND,
        ),
        (
            "unknown I/O opcode",
            with_cdw0(read(1, 0, 0), |c| c.with_opcode(0x7F)),
            S::INVALID_COMMAND_OPCODE,
        ),
        (
            "PRP1 not dword aligned",
            Command::read(0, 1, 0, 0, d + 2, 0),
            S::PRP_OFFSET_INVALID,
        ),
        (
            "PRP2 data page not page aligned",
            Command::read(0, 1, 0, 0, d + 0x800, d + PAGE + 8),
            S::PRP_OFFSET_INVALID,
        ),
        (
            "PRP list pointer not qword aligned",
            Command::read(0, 1, 0, 2, d, list.iova() + 4),
            S::PRP_OFFSET_INVALID,
        ),
    ];
    check(&mut guest, &cases, true);
    let cases = [(
        "PRP list entry not page aligned",
        Command::read(0, 1, 0, 2, d, entries(&[d + PAGE, d + 2 * PAGE + 0x10])),
        S::PRP_OFFSET_INVALID,
    )];
    check(&mut guest, &cases, true);

    // Data pointers outside the mapped memory: Data Transfer Error, the guard never written.
    let cases = [
        (
            "read to unmapped PRP1",
            Command::read(0, 1, 0, 0, guard, 0),
            S::DATA_TRANSFER_ERROR,
        ),
        (
            "read to unmapped PRP2",
            Command::read(0, 1, 0, 1, d, guard),
            S::DATA_TRANSFER_ERROR,
        ),
        (
            "read with an unmapped PRP list",
            Command::read(0, 1, 0, 2, d, guard),
            S::DATA_TRANSFER_ERROR,
        ),
        (
            "read to a far-away PRP1",
            Command::read(0, 1, 0, 0, 0xFFFF_FFFF_FFFF_F000, 0),
            S::DATA_TRANSFER_ERROR,
        ),
        (
            "write from unmapped PRP1",
            Command::write(0, 1, 0, 0, guard, 0),
            S::DATA_TRANSFER_ERROR,
        ),
    ];
    check(&mut guest, &cases, true);
    for (what, cmd) in [
        (
            "read to an unmapped list entry",
            Command::read(0, 1, 0, 2, d, entries(&[d + PAGE, guard + PAGE])),
        ),
        (
            "read to a list entry past the end",
            Command::read(0, 1, 0, 2, d, entries(&[guard - PAGE, guard])),
        ),
    ] {
        assert_eq!(guest.io_status(cmd), Status::DATA_TRANSFER_ERROR, "{what}");
    }
    guest.guarded.assert_untouched();

    // Write Zeroes beyond the namespace.
    let mut wz = Command::write(0, 1, 1020, 0, 0, 0);
    wz.cdw0 = wz.cdw0.with_opcode(NvmOpcode::WRITE_ZEROES.0);
    wz.cdw12 = WriteZeroesCdw12::new().with_nlb(7).into();
    assert_eq!(guest.io_status(wz), Status::LBA_OUT_OF_RANGE);

    // Dataset Management with one range beyond the namespace fails as a whole: the valid
    // range before it is not deallocated.
    guest.backends[0].write(0, &[0x5A; 4096]).unwrap();
    let ranges = [
        DsmRange {
            cattr: 0,
            nlb: 1,
            slba: 0,
        },
        DsmRange {
            cattr: 0,
            nlb: 2,
            slba: 1023,
        },
    ];
    let dsm_buf = guest.mem.alloc(PAGE).unwrap();
    dsm_buf.write(0, ranges.as_bytes());
    let mut dsm = Command::write(0, 1, 0, 0, dsm_buf.iova(), 0);
    dsm.cdw0 = dsm.cdw0.with_opcode(NvmOpcode::DATASET_MANAGEMENT.0);
    dsm.cdw10 = DsmCdw10::new().with_nr(1).into();
    dsm.cdw11 = DsmCdw11::new().with_ad(true).into();
    dsm.cdw12 = 0;
    assert_eq!(guest.io_status(dsm), Status::LBA_OUT_OF_RANGE);
    let mut first = [0u8; 4096];
    guest.backends[0].read(0, &mut first).unwrap();
    assert_eq!(
        first, [0x5A; 4096],
        "a failed Dataset Management deallocated"
    );
    dsm.prp1 = guard;
    assert_eq!(guest.io_status(dsm), Status::DATA_TRANSFER_ERROR);

    // The queue pair still works.
    assert_eq!(
        guest.io_status(Command::read(0, 1, 0, 0, d, 0)),
        Status::SUCCESS
    );
    let mut back = [0u8; 4096];
    data.read(0, &mut back);
    assert_eq!(back, [0x5A; 4096]);
}
