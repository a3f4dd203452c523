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
}
