//! Submission and completion queue entries, opcodes, and typed views of command dwords.
//!
//! A [`Command`] is the 64-byte submission queue entry (NVMe Base 2.1, figure "Common Command
//! Format"); a [`Completion`] is the 16-byte completion queue entry. Command-specific dwords
//! (CDW10–CDW15) are plain `u32`s in the entry; the per-command `bitfield` types in this module and
//! in [`crate::lm`] give them names, e.g. `CreateIoSqCdw11::from(cmd.cdw11).pc()`.

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::features::FeatureId;
use crate::features::Select;
use crate::identify::Cns;
use crate::log::LogPageId;
use crate::status::Status;

/// Command dword 0: opcode, fused operation, PRP/SGL selector and command identifier.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Cdw0 {
    /// The command opcode (admin or I/O, depending on the queue).
    pub opcode: u8,
    /// Fused operation: 00b normal, 01b first of a fused pair, 10b second.
    #[bits(2)]
    pub fuse: u8,
    #[bits(4)]
    _reserved: u8,
    /// PRP or SGL for Data Transfer: 00b means PRPs are used.
    #[bits(2)]
    pub psdt: u8,
    /// Command identifier, unique among the commands outstanding on one submission queue.
    pub cid: u16,
}

/// A 64-byte submission queue entry.
///
/// Offsets: CDW0 at 0, NSID at 4, CDW2/CDW3 at 8/12, MPTR at 16, DPTR (PRP1, PRP2) at 24/32,
/// CDW10–CDW15 at 40–60.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct Command {
    /// Opcode, fuse, PSDT and command identifier.
    pub cdw0: Cdw0,
    /// Namespace identifier (0 when the command does not use one, `0xFFFF_FFFF` for "all").
    pub nsid: u32,
    /// Command dword 2 (command specific).
    pub cdw2: u32,
    /// Command dword 3 (command specific).
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer entry 1: PRP1.
    pub prp1: u64,
    /// Data pointer entry 2: PRP2, or a pointer to a PRP list.
    pub prp2: u64,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

const _: () = assert!(size_of::<Command>() == 64);

/// The status field of a completion: phase tag in bit 0, then the 15-bit status.
#[bitfield(u16)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CompletionStatus {
    /// Phase tag: inverted by the controller on each pass through the completion queue.
    pub phase: bool,
    /// Status code (SC) within the status code type.
    pub sc: u8,
    /// Status code type (SCT): 0 generic, 1 command specific, 2 media and data integrity, 3 path.
    #[bits(3)]
    pub sct: u8,
    /// Command retry delay.
    #[bits(2)]
    pub crd: u8,
    /// More status information is available in the Error Information log.
    pub more: bool,
    /// Do not retry: the same command would fail again.
    pub dnr: bool,
}

impl CompletionStatus {
    /// The status (SCT and SC) without phase tag, CRD, M or DNR.
    pub fn status(&self) -> Status {
        Status::from_parts(self.sct(), self.sc())
    }

    /// Builds a status field from a [`Status`] and a phase tag. DNR is set for every error,
    /// because none of the errors this project's controller reports would succeed on a retry.
    pub fn new_with(status: Status, phase: bool) -> Self {
        Self::new()
            .with_phase(phase)
            .with_sc(status.sc())
            .with_sct(status.sct())
            .with_dnr(status != Status::SUCCESS)
    }
}

/// A 16-byte completion queue entry.
///
/// Offsets: DW0 at 0, DW1 at 4, SQ head pointer at 8, SQ identifier at 10, command identifier at
/// 12, status (with phase tag in bit 0) at 14.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct Completion {
    /// Command-specific dword 0.
    pub dw0: u32,
    /// Command-specific dword 1.
    pub dw1: u32,
    /// Submission queue head pointer at the time this entry was posted.
    pub sqhd: u16,
    /// Identifier of the submission queue the command came from.
    pub sqid: u16,
    /// Command identifier of the completed command.
    pub cid: u16,
    /// Phase tag and status.
    pub status: CompletionStatus,
}

const _: () = assert!(size_of::<Completion>() == 16);

/// Admin command opcodes, including the TP4159 live-migration opcodes.
///
/// Migration Send is 41h: the 2025 RFC's commit text says 43h, but its own enum and every other
/// source (libnvme, nvme-cli, libvfn, the QEMU TP4159 model) use 41h.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum AdminOpcode {
    /// Delete I/O Submission Queue.
    DELETE_IO_SQ = 0x00,
    /// Create I/O Submission Queue.
    CREATE_IO_SQ = 0x01,
    /// Get Log Page.
    GET_LOG_PAGE = 0x02,
    /// Delete I/O Completion Queue.
    DELETE_IO_CQ = 0x04,
    /// Create I/O Completion Queue.
    CREATE_IO_CQ = 0x05,
    /// Identify.
    IDENTIFY = 0x06,
    /// Abort.
    ABORT = 0x08,
    /// Set Features.
    SET_FEATURES = 0x09,
    /// Get Features.
    GET_FEATURES = 0x0A,
    /// Asynchronous Event Request.
    ASYNC_EVENT_REQUEST = 0x0C,
    /// Namespace Management.
    NAMESPACE_MANAGEMENT = 0x0D,
    /// Firmware Commit.
    FIRMWARE_COMMIT = 0x10,
    /// Firmware Image Download.
    FIRMWARE_IMAGE_DOWNLOAD = 0x11,
    /// Device Self-test.
    DEVICE_SELF_TEST = 0x14,
    /// Namespace Attachment.
    NAMESPACE_ATTACHMENT = 0x15,
    /// Keep Alive.
    KEEP_ALIVE = 0x18,
    /// Directive Send.
    DIRECTIVE_SEND = 0x19,
    /// Directive Receive.
    DIRECTIVE_RECEIVE = 0x1A,
    /// Virtualization Management.
    VIRTUALIZATION_MANAGEMENT = 0x1C,
    /// NVMe-MI Send.
    NVME_MI_SEND = 0x1D,
    /// NVMe-MI Receive.
    NVME_MI_RECEIVE = 0x1E,
    /// TP4159 Track Send: start/stop LBA change logging into a User Data Migration Queue.
    TRACK_SEND = 0x3D,
    /// TP4159 Track Receive (fields not publicly documented; never implemented here).
    TRACK_RECEIVE = 0x3E,
    /// TP4159 Migration Send: Suspend, Resume, Set Controller State.
    MIGRATION_SEND = 0x41,
    /// TP4159 Migration Receive: Get Controller State.
    MIGRATION_RECEIVE = 0x42,
    /// TP4159 Controller Data Queue: create/delete.
    CONTROLLER_DATA_QUEUE = 0x45,
    /// Doorbell Buffer Config (shadow doorbells).
    DOORBELL_BUFFER_CONFIG = 0x7C,
    /// Format NVM.
    FORMAT_NVM = 0x80,
    /// Security Send.
    SECURITY_SEND = 0x81,
    /// Security Receive.
    SECURITY_RECEIVE = 0x82,
    /// Sanitize.
    SANITIZE = 0x84,
}

/// NVM command set I/O opcodes.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum NvmOpcode {
    /// Flush.
    FLUSH = 0x00,
    /// Write.
    WRITE = 0x01,
    /// Read.
    READ = 0x02,
    /// Write Uncorrectable.
    WRITE_UNCORRECTABLE = 0x04,
    /// Compare.
    COMPARE = 0x05,
    /// Write Zeroes.
    WRITE_ZEROES = 0x08,
    /// Dataset Management.
    DATASET_MANAGEMENT = 0x09,
    /// Verify.
    VERIFY = 0x0C,
    /// Reservation Register.
    RESERVATION_REGISTER = 0x0D,
    /// Reservation Report.
    RESERVATION_REPORT = 0x0E,
    /// Reservation Acquire.
    RESERVATION_ACQUIRE = 0x11,
    /// Reservation Release.
    RESERVATION_RELEASE = 0x15,
    /// Copy.
    COPY = 0x19,
}

impl AdminOpcode {
    /// The data transfer direction encoded in bits 1:0 of the opcode.
    pub fn direction(self) -> DataDirection {
        DataDirection::from_opcode(self.0)
    }
}

impl NvmOpcode {
    /// The data transfer direction encoded in bits 1:0 of the opcode.
    pub fn direction(self) -> DataDirection {
        DataDirection::from_opcode(self.0)
    }
}

/// Data transfer direction, encoded by NVMe in bits 1:0 of every standard opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// 00b: no data transfer.
    None,
    /// 01b: host to controller (the controller reads host memory).
    HostToController,
    /// 10b: controller to host (the controller writes host memory).
    ControllerToHost,
    /// 11b: bidirectional.
    Bidirectional,
}

impl DataDirection {
    /// Decodes bits 1:0 of an opcode.
    pub fn from_opcode(opcode: u8) -> Self {
        match opcode & 0b11 {
            0b00 => Self::None,
            0b01 => Self::HostToController,
            0b10 => Self::ControllerToHost,
            _ => Self::Bidirectional,
        }
    }
}

/// Identify CDW10: which data structure to return.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct IdentifyCdw10 {
    /// Controller or Namespace Structure.
    #[bits(8)]
    pub cns: Cns,
    #[bits(8)]
    _reserved: u8,
    /// Controller Identifier (for the controller-list and secondary-controller CNS values).
    pub cntid: u16,
}

/// Identify CDW11: CNS-specific identifier and command set identifier.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct IdentifyCdw11 {
    /// CNS Specific Identifier (e.g. the NVM set or endurance group).
    pub cnssid: u16,
    #[bits(8)]
    _reserved: u8,
    /// Command Set Identifier (0 = NVM) for the I/O command set specific CNS values.
    pub csi: u8,
}

/// Get Log Page CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct GetLogPageCdw10 {
    /// Log Page Identifier.
    #[bits(8)]
    pub lid: LogPageId,
    /// Log Specific Parameter.
    #[bits(7)]
    pub lsp: u8,
    /// Retain Asynchronous Event: do not clear the event that this log page reports.
    pub rae: bool,
    /// Number of Dwords Lower: low 16 bits of the 0's based dword count.
    pub numdl: u16,
}

/// Get Log Page CDW11.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct GetLogPageCdw11 {
    /// Number of Dwords Upper: high 16 bits of the 0's based dword count.
    pub numdu: u16,
    /// Log Specific Identifier.
    pub lsi: u16,
}

/// Get Log Page CDW14.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct GetLogPageCdw14 {
    /// UUID Index.
    #[bits(7)]
    pub uuid_index: u8,
    #[bits(16)]
    _reserved: u16,
    /// Offset Type: LPOL/LPOU are an index into a list rather than a byte offset.
    pub ot: bool,
    /// Command Set Identifier.
    pub csi: u8,
}

/// The byte length a Get Log Page asks for: `(NUMDU:NUMDL + 1) * 4`. Never overflows (at most
/// 2^34).
pub fn log_page_len(cdw10: GetLogPageCdw10, cdw11: GetLogPageCdw11) -> u64 {
    let numd = (u64::from(cdw11.numdu()) << 16) | u64::from(cdw10.numdl());
    (numd + 1) * 4
}

/// The byte offset a Get Log Page starts at: LPOU (CDW13) : LPOL (CDW12).
pub fn log_page_offset(cdw12: u32, cdw13: u32) -> u64 {
    (u64::from(cdw13) << 32) | u64::from(cdw12)
}

/// Get Features CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct GetFeaturesCdw10 {
    /// Feature Identifier.
    #[bits(8)]
    pub fid: FeatureId,
    /// Select: current, default, saved value or supported capabilities.
    #[bits(3)]
    pub sel: Select,
    #[bits(21)]
    _reserved: u32,
}

/// Set Features CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct SetFeaturesCdw10 {
    /// Feature Identifier.
    #[bits(8)]
    pub fid: FeatureId,
    #[bits(23)]
    _reserved: u32,
    /// Save: make the value persist across power cycles and resets.
    pub sv: bool,
}

/// CDW10 of Create I/O Submission Queue and Create I/O Completion Queue.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CreateQueueCdw10 {
    /// Queue Identifier.
    pub qid: u16,
    /// Queue Size, 0's based.
    pub qsize: u16,
}

/// Create I/O Submission Queue CDW11.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CreateIoSqCdw11 {
    /// Physically Contiguous: PRP1 is the queue's base, not a PRP list pointer.
    pub pc: bool,
    /// Queue Priority for weighted round robin: 0 urgent, 1 high, 2 medium, 3 low.
    #[bits(2)]
    pub qprio: u8,
    #[bits(13)]
    _reserved: u16,
    /// Completion Queue Identifier this SQ posts to.
    pub cqid: u16,
}

/// Create I/O Completion Queue CDW11.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CreateIoCqCdw11 {
    /// Physically Contiguous.
    pub pc: bool,
    /// Interrupts Enabled.
    pub ien: bool,
    #[bits(14)]
    _reserved: u16,
    /// Interrupt Vector (MSI-X table index).
    pub iv: u16,
}

/// CDW10 of Delete I/O Submission Queue and Delete I/O Completion Queue.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct DeleteQueueCdw10 {
    /// Queue Identifier.
    pub qid: u16,
    #[bits(16)]
    _reserved: u16,
}

/// Abort CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct AbortCdw10 {
    /// Submission Queue Identifier of the command to abort.
    pub sqid: u16,
    /// Command Identifier of the command to abort.
    pub cid: u16,
}

/// The starting LBA of an NVM I/O command: CDW11 (high) : CDW10 (low).
pub fn slba(cdw10: u32, cdw11: u32) -> u64 {
    (u64::from(cdw11) << 32) | u64::from(cdw10)
}

/// Read / Write / Compare CDW12.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct ReadWriteCdw12 {
    /// Number of Logical Blocks, 0's based.
    pub nlb: u16,
    #[bits(4)]
    _reserved: u8,
    /// Directive Type (Write).
    #[bits(4)]
    pub dtype: u8,
    /// Storage Tag Check.
    pub stc: bool,
    #[bits(1)]
    _reserved2: u8,
    /// Protection Information field.
    #[bits(4)]
    pub prinfo: u8,
    /// Force Unit Access.
    pub fua: bool,
    /// Limited Retry.
    pub lr: bool,
}

/// Write Zeroes CDW12.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct WriteZeroesCdw12 {
    /// Number of Logical Blocks, 0's based.
    pub nlb: u16,
    #[bits(8)]
    _reserved: u8,
    /// Storage Tag Check.
    pub stc: bool,
    /// Deallocate: the blocks may be deallocated instead of written.
    pub deac: bool,
    /// Protection Information field.
    #[bits(4)]
    pub prinfo: u8,
    /// Force Unit Access.
    pub fua: bool,
    /// Limited Retry.
    pub lr: bool,
}

/// Dataset Management CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct DsmCdw10 {
    /// Number of Ranges, 0's based (up to 256 [`DsmRange`]s).
    pub nr: u8,
    #[bits(24)]
    _reserved: u32,
}

/// Dataset Management CDW11: the attributes of the ranges.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct DsmCdw11 {
    /// Integral Dataset for Read.
    pub idr: bool,
    /// Integral Dataset for Write.
    pub idw: bool,
    /// Attribute – Deallocate.
    pub ad: bool,
    #[bits(29)]
    _reserved: u32,
}

/// One Dataset Management range (16 bytes; the data buffer holds NR + 1 of them).
///
/// Offsets: context attributes at 0, length at 4, starting LBA at 8.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct DsmRange {
    /// Context Attributes (access frequency/latency hints).
    pub cattr: u32,
    /// Length in logical blocks (a plain count, not 0's based).
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

const _: () = assert!(size_of::<DsmRange>() == 16);

/// Virtualization Management actions (CDW10.ACT).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum VirtualizationAction {
    /// 1h: Primary Controller Flexible Allocation.
    PRIMARY_FLEXIBLE_ALLOCATION = 0x1,
    /// 7h: Secondary Controller Offline.
    SECONDARY_OFFLINE = 0x7,
    /// 8h: Secondary Controller Assign (flexible resources).
    SECONDARY_ASSIGN = 0x8,
    /// 9h: Secondary Controller Online.
    SECONDARY_ONLINE = 0x9,
}
bitfield_enum!(VirtualizationAction, u8);

/// Virtualization Management resource types (CDW10.RT).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum VirtualizationResource {
    /// 0h: VQ resources (queues).
    QUEUE = 0,
    /// 1h: VI resources (interrupt vectors).
    INTERRUPT = 1,
}
bitfield_enum!(VirtualizationResource, u8);

/// Virtualization Management CDW10.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct VirtualizationManagementCdw10 {
    /// Action.
    #[bits(4)]
    pub act: VirtualizationAction,
    #[bits(4)]
    _reserved: u8,
    /// Resource Type.
    #[bits(3)]
    pub rt: VirtualizationResource,
    #[bits(5)]
    _reserved2: u8,
    /// Controller Identifier of the secondary (or primary) controller acted on.
    pub cntlid: u16,
}

/// Virtualization Management CDW11.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct VirtualizationManagementCdw11 {
    /// Number of Controller Resources to assign.
    pub nr: u16,
    #[bits(16)]
    _reserved: u16,
}

/// Data-only constructors for the commands a host driver sends. Each returns a zeroed entry with
/// the opcode, command identifier and the named fields filled in; nothing is validated.
impl Command {
    fn with_opcode(opcode: u8, cid: u16) -> Self {
        Self {
            cdw0: Cdw0::new().with_opcode(opcode).with_cid(cid),
            ..Self::default()
        }
    }

    /// The PRP data pointer pair.
    fn with_prps(self, prp1: u64, prp2: u64) -> Self {
        Self { prp1, prp2, ..self }
    }

    /// Identify: returns a 4 KiB structure at `prp1` (which must not cross a page boundary
    /// unless `prp2` is set by the caller).
    pub fn identify(cid: u16, cns: Cns, nsid: u32, cntid: u16, prp1: u64) -> Self {
        Self {
            nsid,
            cdw10: IdentifyCdw10::new().with_cns(cns).with_cntid(cntid).into(),
            ..Self::with_opcode(AdminOpcode::IDENTIFY.0, cid).with_prps(prp1, 0)
        }
    }

    /// Identify for an I/O command set specific structure (CNS 05h/06h/07h) of command set `csi`.
    pub fn identify_csi(cid: u16, cns: Cns, nsid: u32, csi: u8, prp1: u64) -> Self {
        Self {
            cdw11: IdentifyCdw11::new().with_csi(csi).into(),
            ..Self::identify(cid, cns, nsid, 0, prp1)
        }
    }

    /// Get Log Page of `len` bytes (a non-zero multiple of 4, at most 2^34) from byte `offset`.
    /// A `len` that is not a positive multiple of 4 is rounded down, with a minimum of 4.
    pub fn get_log_page(
        cid: u16,
        lid: LogPageId,
        nsid: u32,
        len: u64,
        offset: u64,
        prp1: u64,
        prp2: u64,
    ) -> Self {
        let numd = (len / 4).saturating_sub(1).min(u64::from(u32::MAX));
        Self {
            nsid,
            cdw10: GetLogPageCdw10::new()
                .with_lid(lid)
                .with_numdl(numd as u16)
                .into(),
            cdw11: GetLogPageCdw11::new()
                .with_numdu((numd >> 16) as u16)
                .into(),
            cdw12: offset as u32,
            cdw13: (offset >> 32) as u32,
            ..Self::with_opcode(AdminOpcode::GET_LOG_PAGE.0, cid).with_prps(prp1, prp2)
        }
    }

    /// Get Features for `fid` with selector `sel`; `cdw11` carries feature-specific input.
    pub fn get_features(cid: u16, fid: FeatureId, sel: Select, cdw11: u32) -> Self {
        Self {
            cdw10: GetFeaturesCdw10::new().with_fid(fid).with_sel(sel).into(),
            cdw11,
            ..Self::with_opcode(AdminOpcode::GET_FEATURES.0, cid)
        }
    }

    /// Set Features: `fid` to the value in `cdw11` (not saved).
    pub fn set_features(cid: u16, fid: FeatureId, cdw11: u32) -> Self {
        Self {
            cdw10: SetFeaturesCdw10::new().with_fid(fid).into(),
            cdw11,
            ..Self::with_opcode(AdminOpcode::SET_FEATURES.0, cid)
        }
    }

    /// Doorbell Buffer Config: the host's shadow doorbell buffer at `doorbells` and the
    /// controller's EventIdx buffer at `event_indices`, each one memory page, page aligned.
    pub fn doorbell_buffer_config(cid: u16, doorbells: u64, event_indices: u64) -> Self {
        Self::with_opcode(AdminOpcode::DOORBELL_BUFFER_CONFIG.0, cid)
            .with_prps(doorbells, event_indices)
    }

    /// Create I/O Completion Queue `qid` with `entries` entries (1..=65536) at the physically
    /// contiguous address `base`, interrupting on vector `iv` when `ien`.
    pub fn create_io_cq(cid: u16, qid: u16, entries: u32, base: u64, ien: bool, iv: u16) -> Self {
        Self {
            cdw10: CreateQueueCdw10::new()
                .with_qid(qid)
                .with_qsize(entries.saturating_sub(1) as u16)
                .into(),
            cdw11: CreateIoCqCdw11::new()
                .with_pc(true)
                .with_ien(ien)
                .with_iv(iv)
                .into(),
            ..Self::with_opcode(AdminOpcode::CREATE_IO_CQ.0, cid).with_prps(base, 0)
        }
    }

    /// Create I/O Submission Queue `qid` with `entries` entries (1..=65536) at the physically
    /// contiguous address `base`, posting completions to `cqid`.
    pub fn create_io_sq(cid: u16, qid: u16, entries: u32, base: u64, cqid: u16) -> Self {
        Self {
            cdw10: CreateQueueCdw10::new()
                .with_qid(qid)
                .with_qsize(entries.saturating_sub(1) as u16)
                .into(),
            cdw11: CreateIoSqCdw11::new().with_pc(true).with_cqid(cqid).into(),
            ..Self::with_opcode(AdminOpcode::CREATE_IO_SQ.0, cid).with_prps(base, 0)
        }
    }

    /// Delete I/O Submission Queue `qid`.
    pub fn delete_io_sq(cid: u16, qid: u16) -> Self {
        Self {
            cdw10: DeleteQueueCdw10::new().with_qid(qid).into(),
            ..Self::with_opcode(AdminOpcode::DELETE_IO_SQ.0, cid)
        }
    }

    /// Delete I/O Completion Queue `qid`.
    pub fn delete_io_cq(cid: u16, qid: u16) -> Self {
        Self {
            cdw10: DeleteQueueCdw10::new().with_qid(qid).into(),
            ..Self::with_opcode(AdminOpcode::DELETE_IO_CQ.0, cid)
        }
    }

    /// Abort command `target_cid` on submission queue `sqid`.
    pub fn abort(cid: u16, sqid: u16, target_cid: u16) -> Self {
        Self {
            cdw10: AbortCdw10::new()
                .with_sqid(sqid)
                .with_cid(target_cid)
                .into(),
            ..Self::with_opcode(AdminOpcode::ABORT.0, cid)
        }
    }

    /// Asynchronous Event Request (completes when the controller has an event to report).
    pub fn async_event_request(cid: u16) -> Self {
        Self::with_opcode(AdminOpcode::ASYNC_EVENT_REQUEST.0, cid)
    }

    /// Virtualization Management: action `act` on resource type `rt` of controller `cntlid`,
    /// with `nr` resources (Primary Controller Flexible Allocation and Secondary Controller
    /// Assign).
    pub fn virtualization_management(
        cid: u16,
        act: VirtualizationAction,
        rt: VirtualizationResource,
        cntlid: u16,
        nr: u16,
    ) -> Self {
        Self {
            cdw10: VirtualizationManagementCdw10::new()
                .with_act(act)
                .with_rt(rt)
                .with_cntlid(cntlid)
                .into(),
            cdw11: VirtualizationManagementCdw11::new().with_nr(nr).into(),
            ..Self::with_opcode(AdminOpcode::VIRTUALIZATION_MANAGEMENT.0, cid)
        }
    }

    /// An NVM Read or Write of `nlb0 + 1` blocks (`nlb0` is 0's based) from `slba`.
    fn read_write(
        opcode: NvmOpcode,
        cid: u16,
        nsid: u32,
        slba: u64,
        nlb0: u16,
        prp1: u64,
        prp2: u64,
    ) -> Self {
        Self {
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: ReadWriteCdw12::new().with_nlb(nlb0).into(),
            ..Self::with_opcode(opcode.0, cid).with_prps(prp1, prp2)
        }
    }

    /// NVM Read of `nlb0 + 1` blocks (`nlb0` is 0's based) from `slba` into `prp1`/`prp2`.
    pub fn read(cid: u16, nsid: u32, slba: u64, nlb0: u16, prp1: u64, prp2: u64) -> Self {
        Self::read_write(NvmOpcode::READ, cid, nsid, slba, nlb0, prp1, prp2)
    }

    /// NVM Write of `nlb0 + 1` blocks (`nlb0` is 0's based) at `slba` from `prp1`/`prp2`.
    pub fn write(cid: u16, nsid: u32, slba: u64, nlb0: u16, prp1: u64, prp2: u64) -> Self {
        Self::read_write(NvmOpcode::WRITE, cid, nsid, slba, nlb0, prp1, prp2)
    }

    /// NVM Flush of namespace `nsid`.
    pub fn flush(cid: u16, nsid: u32) -> Self {
        Self {
            nsid,
            ..Self::with_opcode(NvmOpcode::FLUSH.0, cid)
        }
    }

    /// The starting LBA of an NVM I/O command (CDW10/CDW11).
    pub fn slba(&self) -> u64 {
        slba(self.cdw10, self.cdw11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use zerocopy::FromZeros;

    #[test]
    fn command_offsets() {
        assert_eq!(offset_of!(Command, cdw0), 0);
        assert_eq!(offset_of!(Command, nsid), 4);
        assert_eq!(offset_of!(Command, cdw2), 8);
        assert_eq!(offset_of!(Command, cdw3), 12);
        assert_eq!(offset_of!(Command, mptr), 16);
        assert_eq!(offset_of!(Command, prp1), 24);
        assert_eq!(offset_of!(Command, prp2), 32);
        assert_eq!(offset_of!(Command, cdw10), 40);
        assert_eq!(offset_of!(Command, cdw11), 44);
        assert_eq!(offset_of!(Command, cdw12), 48);
        assert_eq!(offset_of!(Command, cdw13), 52);
        assert_eq!(offset_of!(Command, cdw14), 56);
        assert_eq!(offset_of!(Command, cdw15), 60);
    }

    #[test]
    fn completion_offsets() {
        assert_eq!(offset_of!(Completion, dw0), 0);
        assert_eq!(offset_of!(Completion, dw1), 4);
        assert_eq!(offset_of!(Completion, sqhd), 8);
        assert_eq!(offset_of!(Completion, sqid), 10);
        assert_eq!(offset_of!(Completion, cid), 12);
        assert_eq!(offset_of!(Completion, status), 14);
    }

    #[test]
    fn cdw0_bytes() {
        let mut cmd = <Command as FromZeros>::new_zeroed();
        cmd.cdw0 = Cdw0::new().with_opcode(0x42).with_cid(0xBEEF).with_psdt(0);
        let bytes = cmd.as_bytes();
        assert_eq!(&bytes[0..4], &[0x42, 0x00, 0xEF, 0xBE]);
        let back = Command::read_from_bytes(bytes).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(
            AdminOpcode(back.cdw0.opcode()),
            AdminOpcode::MIGRATION_RECEIVE
        );
    }

    #[test]
    fn completion_status_bits() {
        // Command-specific (SCT 1) status 3Ah "Controller Not Suspended", phase 1, DNR.
        let st = CompletionStatus::new_with(Status::CONTROLLER_NOT_SUSPENDED, true);
        assert_eq!(u16::from(st), 1 | (0x3A << 1) | (1 << 9) | (1 << 15));
        assert_eq!(st.status(), Status::CONTROLLER_NOT_SUSPENDED);
        let ok = CompletionStatus::new_with(Status::SUCCESS, false);
        assert_eq!(u16::from(ok), 0);
    }

    #[test]
    fn opcode_directions() {
        assert_eq!(
            AdminOpcode::MIGRATION_SEND.direction(),
            DataDirection::HostToController
        );
        assert_eq!(
            AdminOpcode::MIGRATION_RECEIVE.direction(),
            DataDirection::ControllerToHost
        );
        assert_eq!(NvmOpcode::READ.direction(), DataDirection::ControllerToHost);
        assert_eq!(
            NvmOpcode::WRITE.direction(),
            DataDirection::HostToController
        );
        // 45h ends in 01b although the queue memory itself is never transferred.
        assert_eq!(
            AdminOpcode::CONTROLLER_DATA_QUEUE.direction(),
            DataDirection::HostToController
        );
    }

    #[test]
    fn identify_dwords() {
        let cmd = Command::identify(7, Cns::SECONDARY_CONTROLLER_LIST, 0, 0x0102, 0x8000);
        assert_eq!(cmd.cdw0.opcode(), AdminOpcode::IDENTIFY.0);
        assert_eq!(cmd.cdw0.cid(), 7);
        assert_eq!(cmd.cdw10, 0x0102_0015);
        assert_eq!(cmd.prp1, 0x8000);
        let cdw10 = IdentifyCdw10::from(cmd.cdw10);
        assert_eq!(cdw10.cns(), Cns::SECONDARY_CONTROLLER_LIST);
        assert_eq!(cdw10.cntid(), 0x0102);
        let csi = Command::identify_csi(1, Cns::CSI_CONTROLLER, 0, 0x5A, 0);
        assert_eq!(csi.cdw10, 0x06);
        assert_eq!(csi.cdw11, 0x5A00_0000);
        assert_eq!(IdentifyCdw11::from(0x0200_0007).cnssid(), 7);
    }

    #[test]
    fn get_log_page_dwords() {
        // 512-byte SMART log: NUMD = 127 (0's based), RAE set by hand.
        let cdw10 = GetLogPageCdw10::from(0x007F_8002);
        assert_eq!(cdw10.lid(), LogPageId::SMART_HEALTH);
        assert!(cdw10.rae());
        assert_eq!(cdw10.lsp(), 0);
        assert_eq!(cdw10.numdl(), 127);
        assert_eq!(log_page_len(cdw10, GetLogPageCdw11::new()), 512);
        // Maximum: NUMDU:NUMDL all ones = 2^32 dwords.
        let max = log_page_len(
            GetLogPageCdw10::new().with_numdl(0xFFFF),
            GetLogPageCdw11::new().with_numdu(0xFFFF),
        );
        assert_eq!(max, 1 << 34);
        assert_eq!(GetLogPageCdw10::from(0x7F << 8).lsp(), 0x7F);
        let cmd = Command::get_log_page(
            3,
            LogPageId::ERROR_INFORMATION,
            0xFFFF_FFFF,
            0x4_0000 * 4,
            0x1_0000_0040,
            0x1000,
            0x2000,
        );
        assert_eq!(cmd.cdw10, 0xFFFF_0001);
        assert_eq!(cmd.cdw11, 0x0003);
        assert_eq!(log_page_offset(cmd.cdw12, cmd.cdw13), 0x1_0000_0040);
        assert_eq!(
            log_page_len(cmd.cdw10.into(), cmd.cdw11.into()),
            0x4_0000 * 4
        );
        let cdw14 = GetLogPageCdw14::from(0x0280_0005);
        assert_eq!((cdw14.uuid_index(), cdw14.ot(), cdw14.csi()), (5, true, 2));
    }

    #[test]
    fn features_dwords() {
        let get = Command::get_features(
            1,
            FeatureId::NUMBER_OF_QUEUES,
            Select::SUPPORTED_CAPABILITIES,
            0,
        );
        assert_eq!(get.cdw10, 0x0307);
        let cdw10 = GetFeaturesCdw10::from(get.cdw10);
        assert_eq!(cdw10.fid(), FeatureId::NUMBER_OF_QUEUES);
        assert_eq!(cdw10.sel(), Select::SUPPORTED_CAPABILITIES);
        let set = Command::set_features(2, FeatureId::ASYNC_EVENT_CONFIG, 0x0900);
        assert_eq!((set.cdw10, set.cdw11), (0x0B, 0x0900));
        let saved = SetFeaturesCdw10::from(0x8000_0006);
        assert!(saved.sv());
        assert_eq!(saved.fid(), FeatureId::VOLATILE_WRITE_CACHE);
    }

    #[test]
    fn queue_dwords() {
        let cq = Command::create_io_cq(1, 3, 64, 0xA000, true, 2);
        assert_eq!(cq.cdw0.opcode(), 0x05);
        assert_eq!(cq.cdw10, 0x003F_0003);
        assert_eq!(cq.cdw11, 0x0002_0003);
        let cdw11 = CreateIoCqCdw11::from(cq.cdw11);
        assert!(cdw11.pc() && cdw11.ien());
        assert_eq!(cdw11.iv(), 2);
        let sq = Command::create_io_sq(2, 3, 1024, 0xB000, 3);
        assert_eq!(sq.cdw10, 0x03FF_0003);
        assert_eq!(sq.cdw11, 0x0003_0001);
        let cdw11 = CreateIoSqCdw11::from(0x0005_0005);
        assert!(cdw11.pc());
        assert_eq!((cdw11.qprio(), cdw11.cqid()), (2, 5));
        let cdw10 = CreateQueueCdw10::from(sq.cdw10);
        assert_eq!((cdw10.qid(), cdw10.qsize()), (3, 1023));
        assert_eq!(Command::delete_io_sq(4, 9).cdw10, 9);
        assert_eq!(Command::delete_io_cq(4, 9).cdw0.opcode(), 0x04);
        assert_eq!(DeleteQueueCdw10::from(0xFFFF_0009).qid(), 9);
        let abort = Command::abort(5, 1, 0x77);
        assert_eq!(abort.cdw10, 0x0077_0001);
        let cdw10 = AbortCdw10::from(abort.cdw10);
        assert_eq!((cdw10.sqid(), cdw10.cid()), (1, 0x77));
        assert_eq!(Command::async_event_request(9).cdw0.opcode(), 0x0C);
    }

    #[test]
    fn io_dwords() {
        let read = Command::read(1, 1, 0x1_2345_6789, 7, 0x1000, 0);
        assert_eq!(read.cdw0.opcode(), NvmOpcode::READ.0);
        assert_eq!((read.cdw10, read.cdw11), (0x2345_6789, 1));
        assert_eq!(read.slba(), 0x1_2345_6789);
        assert_eq!(read.cdw12, 7);
        let write = Command::write(2, 1, 0, 0xFFFF, 0x1000, 0x2000);
        assert_eq!(write.cdw0.opcode(), NvmOpcode::WRITE.0);
        assert_eq!(write.prp2, 0x2000);
        assert_eq!(Command::flush(3, 1).cdw0.opcode(), NvmOpcode::FLUSH.0);
        let rw = ReadWriteCdw12::from(0xC000_0003);
        assert!(rw.fua() && rw.lr());
        assert_eq!(rw.nlb(), 3);
        assert_eq!(
            u32::from(
                ReadWriteCdw12::new()
                    .with_nlb(1)
                    .with_dtype(2)
                    .with_prinfo(0xF)
            ),
            1 | 2 << 20 | 0xF << 26
        );
        let wz = WriteZeroesCdw12::from(1 << 25 | 1 << 30 | 9);
        assert!(wz.deac() && wz.fua() && !wz.lr());
        assert_eq!(wz.nlb(), 9);
        assert_eq!(slba(0xFFFF_FFFF, 0xFFFF_FFFF), u64::MAX);
    }

    #[test]
    fn dsm_dwords() {
        assert_eq!(DsmCdw10::from(0xFF).nr(), 255);
        let cdw11 = DsmCdw11::from(0b100);
        assert!(cdw11.ad() && !cdw11.idr() && !cdw11.idw());
        assert_eq!(core::mem::offset_of!(DsmRange, cattr), 0);
        assert_eq!(core::mem::offset_of!(DsmRange, nlb), 4);
        assert_eq!(core::mem::offset_of!(DsmRange, slba), 8);
        let range = DsmRange {
            cattr: 0,
            nlb: 8,
            slba: 0x100,
        };
        assert_eq!(
            range.as_bytes(),
            &[0, 0, 0, 0, 8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn virtualization_management_dwords() {
        // VFN example: Online (ACT 9h) of CNTLID 2: CDW10 = 2 << 16 | RT << 8 | 9.
        let cdw10 = VirtualizationManagementCdw10::new()
            .with_act(VirtualizationAction::SECONDARY_ONLINE)
            .with_cntlid(2);
        assert_eq!(u32::from(cdw10), 0x0002_0009);
        let assign = VirtualizationManagementCdw10::from(0x0003_0108);
        assert_eq!(assign.act(), VirtualizationAction::SECONDARY_ASSIGN);
        assert_eq!(assign.rt(), VirtualizationResource::INTERRUPT);
        assert_eq!(assign.cntlid(), 3);
        assert_eq!(VirtualizationManagementCdw11::from(0xFFFF_0004).nr(), 4);
        // nvme-cli's `virt-mgmt -c 2 -r 0 -a 8 -n 4` (pf-interop.md §b.1).
        let cmd = Command::virtualization_management(
            7,
            VirtualizationAction::SECONDARY_ASSIGN,
            VirtualizationResource::QUEUE,
            2,
            4,
        );
        assert_eq!(cmd.cdw0.opcode(), 0x1C);
        assert_eq!((cmd.cdw10, cmd.cdw11), (0x0002_0008, 4));
    }
}
