//! What a guest can do: its actions and their random generation.

use nvme_spec::registers::Register;
use proptest::prelude::*;

use crate::BLOCKS;
use crate::DOORBELLS;
use crate::IO_QUEUE_PAIRS;
use crate::VECTORS;

/// Where a queue or a data buffer goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place {
    /// The guest's own place for it.
    Own,
    /// Guest page `n` (modulo the pages a test may use).
    Page(u8),
    /// Outside the guest's memory.
    Unmapped,
    /// Not page aligned.
    Misaligned,
}

/// Which command an Abort names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// One of the commands submitted lately (modulo how many).
    Recent(u8),
    /// Any CID.
    Cid(u16),
}

/// One admin command.
#[derive(Clone, Debug)]
pub(crate) enum Admin {
    CreateCq {
        qid: u16,
        qsize: u16,
        at: Place,
        ien: bool,
        iv: u16,
        pc: bool,
    },
    CreateSq {
        qid: u16,
        qsize: u16,
        at: Place,
        cqid: u16,
        qprio: u8,
        pc: bool,
    },
    DeleteSq(u16),
    DeleteCq(u16),
    Identify {
        cns: u8,
        nsid: u32,
        cntid: u16,
        at: Place,
    },
    GetLogPage {
        lid: u8,
        dwords: u32,
        offset: u32,
        rae: bool,
        at: Place,
    },
    SetFeatures {
        fid: u8,
        cdw11: u32,
        save: bool,
    },
    SetTimestamp(u64),
    GetFeatures {
        fid: u8,
        sel: u8,
        cdw11: u32,
    },
    AsyncEventRequest,
    Abort {
        sqid: u16,
        target: Target,
    },
    KeepAlive,
    Other {
        opcode: u8,
        fuse: u8,
    },
}

/// A data buffer of an I/O command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buffer {
    /// Data page (modulo the data pages).
    pub page: u8,
    /// Byte offset into it (the PRP offset).
    pub offset: u16,
    /// Or no valid buffer at all.
    pub fault: Option<Place>,
}

/// One I/O command.
#[derive(Clone, Debug)]
pub(crate) enum Io {
    Read {
        nsid: u32,
        slba: u64,
        nlb: u16,
        to: Buffer,
    },
    Write {
        nsid: u32,
        slba: u64,
        nlb: u16,
        from: Buffer,
        fill: u8,
    },
    Flush {
        nsid: u32,
    },
    WriteZeroes {
        nsid: u32,
        slba: u64,
        nlb: u16,
        deallocate: bool,
    },
    DatasetManagement {
        nsid: u32,
        ranges: Vec<(u64, u32)>,
        deallocate: bool,
    },
    Other {
        opcode: u8,
    },
}

/// One thing the guest does.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Resets the controller (CC.EN = 0), programs AQA, ASQ and ACQ for admin queues of these
    /// sizes, the completion queue `at`, and sets CC.EN, as Linux brings a controller up.
    Enable {
        sq_entries: u32,
        cq_entries: u32,
        at: Place,
    },
    /// Writes CC (enable, disable, shutdown, anything).
    Cc(u32),
    /// Writes another register.
    Register { offset: u64, value: u32 },
    /// Submits an admin command at the guest's admin SQ tail and rings the doorbell.
    Admin(Admin),
    /// Submits an I/O command on one of the guest's I/O submission queues (modulo how many).
    Io { sq: u8, cmd: Io },
    /// Writes any value to any doorbell (or past them).
    Doorbell { index: u16, value: u32 },
    /// Consumes one of the guest's completion queues (modulo how many): its head doorbell.
    Ack { cq: u8 },
}

pub(crate) fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        8 => Just(Place::Own),
        2 => any::<u8>().prop_map(Place::Page),
        1 => Just(Place::Unmapped),
        1 => Just(Place::Misaligned),
    ]
}

pub(crate) fn nsid() -> impl Strategy<Value = u32> {
    prop_oneof![8 => Just(1u32), 1 => Just(0u32), 1 => Just(u32::MAX), 1 => any::<u32>()]
}

pub(crate) fn qid() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 1..=IO_QUEUE_PAIRS, 2 => 0..=IO_QUEUE_PAIRS + 3]
}

/// A queue identifier to create: mostly the one the bring-up left free.
pub(crate) fn new_qid() -> impl Strategy<Value = u16> {
    prop_oneof![2 => Just(IO_QUEUE_PAIRS), 1 => qid()]
}

pub(crate) fn qsize() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 1u16..32, 1 => Just(0u16), 1 => any::<u16>()]
}

pub(crate) fn admin() -> impl Strategy<Value = Admin> {
    let fid = prop_oneof![
        prop::sample::select(vec![1u8, 2, 4, 5, 6, 7, 8, 9, 0x0A, 0x0B, 0x0E, 0x0F]),
        any::<u8>(),
    ];
    prop_oneof![
        3 => (new_qid(), qsize(), place(), prop::bool::weighted(0.8), 0..VECTORS + 2,
              prop::bool::weighted(0.9))
            .prop_map(|(qid, qsize, at, ien, iv, pc)| Admin::CreateCq { qid, qsize, at, ien, iv, pc }),
        3 => (new_qid(), qsize(), place(), qid(), 0u8..4, prop::bool::weighted(0.9))
            .prop_map(|(qid, qsize, at, cqid, qprio, pc)| Admin::CreateSq { qid, qsize, at, cqid, qprio, pc }),
        1 => qid().prop_map(Admin::DeleteSq),
        1 => qid().prop_map(Admin::DeleteCq),
        1 => (prop::sample::select(vec![0u8, 1, 2, 3, 0x13, 0x20, 0xFF]), nsid(), any::<u16>(), place())
            .prop_map(|(cns, nsid, cntid, at)| Admin::Identify { cns, nsid, cntid, at }),
        2 => (prop_oneof![2 => Just(1u8), 1 => prop::sample::select(vec![2u8, 3, 4, 5, 0x0D, 0x80])],
              prop_oneof![1u32..=16, 1u32..=2048, any::<u32>()],
              prop_oneof![4 => Just(0u32), 1 => Just(64), 1 => any::<u32>()],
              any::<bool>(), place())
            .prop_map(|(lid, dwords, offset, rae, at)| Admin::GetLogPage { lid, dwords, offset, rae, at }),
        3 => (fid.clone(),
              prop_oneof![0u32..0x20, (0u32..8).prop_map(|iv| iv | 1 << 16), any::<u32>()],
              prop::bool::weighted(0.1))
            .prop_map(|(fid, cdw11, save)| Admin::SetFeatures { fid, cdw11, save }),
        1 => any::<u64>().prop_map(Admin::SetTimestamp),
        1 => Just(Admin::GetFeatures { fid: 0x0E, sel: 0, cdw11: 0 }),
        2 => (fid, 0u8..5, prop_oneof![0u32..8, any::<u32>()])
            .prop_map(|(fid, sel, cdw11)| Admin::GetFeatures { fid, sel, cdw11 }),
        3 => Just(Admin::AsyncEventRequest),
        1 => (prop_oneof![Just(0u16), qid()],
              prop_oneof![any::<u8>().prop_map(Target::Recent), any::<u16>().prop_map(Target::Cid)])
            .prop_map(|(sqid, target)| Admin::Abort { sqid, target }),
        1 => Just(Admin::KeepAlive),
        1 => (any::<u8>(), 0u8..4).prop_map(|(opcode, fuse)| Admin::Other { opcode, fuse }),
    ]
}

pub(crate) fn buffer() -> impl Strategy<Value = Buffer> {
    let offset =
        prop_oneof![4 => Just(0u16), 1 => (0u16..1024).prop_map(|d| d * 4), 1 => any::<u16>()];
    let fault = prop_oneof![
        8 => Just(None),
        1 => Just(Some(Place::Unmapped)),
        1 => Just(Some(Place::Misaligned)),
    ];
    (any::<u8>(), offset, fault).prop_map(|(page, offset, fault)| Buffer {
        page,
        offset,
        fault,
    })
}

pub(crate) fn slba() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..BLOCKS, 1 => BLOCKS - 4..BLOCKS + 4, 1 => any::<u64>()]
}

pub(crate) fn nlb() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 0u16..16, 1 => 16u16..40, 1 => any::<u16>()]
}

pub(crate) fn io() -> impl Strategy<Value = Io> {
    prop_oneof![
        3 => (nsid(), slba(), nlb(), buffer()).prop_map(|(nsid, slba, nlb, to)| Io::Read { nsid, slba, nlb, to }),
        3 => (nsid(), slba(), nlb(), buffer(), any::<u8>())
            .prop_map(|(nsid, slba, nlb, from, fill)| Io::Write { nsid, slba, nlb, from, fill }),
        1 => nsid().prop_map(|nsid| Io::Flush { nsid }),
        1 => (nsid(), slba(), nlb(), any::<bool>())
            .prop_map(|(nsid, slba, nlb, deallocate)| Io::WriteZeroes { nsid, slba, nlb, deallocate }),
        1 => (nsid(), prop::collection::vec((slba(), 0u32..40), 1..4), prop::bool::weighted(0.8))
            .prop_map(|(nsid, ranges, deallocate)| Io::DatasetManagement { nsid, ranges, deallocate }),
        1 => any::<u8>().prop_map(|opcode| Io::Other { opcode }),
    ]
}

pub(crate) fn cc() -> impl Strategy<Value = u32> {
    const EN: u32 = 1;
    const ENTRIES: u32 = 6 << 16 | 4 << 20;
    prop_oneof![
        3 => Just(0u32),
        2 => Just(EN | ENTRIES),
        2 => Just(EN | ENTRIES | 1 << 14),
        1 => Just(EN | ENTRIES | 2 << 14),
        1 => Just(EN | ENTRIES | 1 << 7),
        1 => Just(ENTRIES | 1 << 14),
        1 => any::<u32>(),
    ]
}

pub(crate) fn register() -> impl Strategy<Value = (u64, u32)> {
    let offset = prop::sample::select(vec![
        Register::CAP.0,
        Register::VS.0,
        Register::INTMS.0,
        Register::INTMC.0,
        Register::CSTS.0,
        Register::NSSR.0,
        Register::AQA.0,
        Register::ASQ.0,
        Register::ASQ.0 + 4,
        Register::ACQ.0,
        Register::ACQ.0 + 4,
        Register::CMBLOC.0,
        0x0FFC,
    ]);
    (offset, prop_oneof![0u32..64, any::<u32>()])
}

pub(crate) fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => admin().prop_map(Action::Admin),
        6 => (any::<u8>(), io()).prop_map(|(sq, cmd)| Action::Io { sq, cmd }),
        2 => (0..DOORBELLS + 3, prop_oneof![6 => 0u32..40, 1 => any::<u32>()])
            .prop_map(|(index, value)| Action::Doorbell { index, value }),
        3 => any::<u8>().prop_map(|cq| Action::Ack { cq }),
        1 => (2u32..=64, 2u32..=64, place())
            .prop_map(|(sq_entries, cq_entries, at)| Action::Enable { sq_entries, cq_entries, at }),
        1 => cc().prop_map(Action::Cc),
        1 => register().prop_map(|(offset, value)| Action::Register { offset, value }),
    ]
}

/// What a guest does first, as Linux does: enable the controller, ask for queues, create queue
/// pairs 1 (16 entries) and 2 (8 entries), keep two Asynchronous Event Requests outstanding.
pub(crate) fn bring_up() -> Vec<Action> {
    vec![
        Action::Enable {
            sq_entries: 16,
            cq_entries: 16,
            at: Place::Own,
        },
        Action::Admin(Admin::SetFeatures {
            fid: 7,
            cdw11: 0x0002_0002,
            save: false,
        }),
        Action::Admin(Admin::CreateCq {
            qid: 1,
            qsize: 15,
            at: Place::Own,
            ien: true,
            iv: 1,
            pc: true,
        }),
        Action::Admin(Admin::CreateSq {
            qid: 1,
            qsize: 15,
            at: Place::Own,
            cqid: 1,
            qprio: 0,
            pc: true,
        }),
        Action::Admin(Admin::CreateCq {
            qid: 2,
            qsize: 7,
            at: Place::Own,
            ien: true,
            iv: 2,
            pc: true,
        }),
        Action::Admin(Admin::CreateSq {
            qid: 2,
            qsize: 7,
            at: Place::Own,
            cqid: 2,
            qprio: 0,
            pc: true,
        }),
        Action::Admin(Admin::AsyncEventRequest),
        Action::Admin(Admin::AsyncEventRequest),
        Action::Ack { cq: 0 },
    ]
}

/// What a guest does last: read back every feature and the logs, consuming each completion.
pub(crate) fn read_back() -> Vec<Action> {
    let get = |fid: u8, cdw11: u32| Action::Admin(Admin::GetFeatures { fid, sel: 0, cdw11 });
    let log = |lid: u8| {
        Action::Admin(Admin::GetLogPage {
            lid,
            dwords: 1024,
            offset: 0,
            rae: true,
            at: Place::Own,
        })
    };
    let mut reads: Vec<Action> = [1u8, 2, 5, 6, 7, 8, 0x0A, 0x0B, 0x0E, 0x0F]
        .iter()
        .map(|&fid| get(fid, 0))
        .chain([get(4, 0), get(4, 1 << 20)])
        .chain((0..u32::from(VECTORS)).map(|iv| get(9, iv)))
        .chain([log(1), log(2)])
        .collect();
    reads = reads
        .into_iter()
        .flat_map(|read| [read, Action::Ack { cq: 0 }])
        .collect();
    reads
}
