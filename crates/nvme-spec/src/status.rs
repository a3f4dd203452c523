//! Completion status codes.
//!
//! A [`Status`] packs the status code type (SCT, bits 10:8) and the status code (SC, bits 7:0) into
//! one `u16`, so a single open enum names every status this project uses, and any pair a device
//! reports can still be represented.

use open_enum::open_enum;

/// Status code type 0h: generic command status.
pub const SCT_GENERIC: u8 = 0;
/// Status code type 1h: command specific status.
pub const SCT_COMMAND_SPECIFIC: u8 = 1;
/// Status code type 2h: media and data integrity errors.
pub const SCT_MEDIA: u8 = 2;
/// Status code type 3h: path related status.
pub const SCT_PATH: u8 = 3;

/// A completion status: `(SCT << 8) | SC`.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u16)]
pub enum Status {
    /// Successful Completion.
    SUCCESS = 0x000,
    /// Invalid Command Opcode.
    INVALID_COMMAND_OPCODE = 0x001,
    /// Invalid Field in Command.
    INVALID_FIELD_IN_COMMAND = 0x002,
    /// Command ID Conflict.
    COMMAND_ID_CONFLICT = 0x003,
    /// Data Transfer Error.
    DATA_TRANSFER_ERROR = 0x004,
    /// Commands Aborted due to Power Loss Notification.
    ABORTED_POWER_LOSS = 0x005,
    /// Internal Error.
    INTERNAL_ERROR = 0x006,
    /// Command Abort Requested.
    COMMAND_ABORT_REQUESTED = 0x007,
    /// Command Aborted due to SQ Deletion.
    ABORTED_SQ_DELETION = 0x008,
    /// Command Aborted due to Failed Fused Command.
    ABORTED_FAILED_FUSED = 0x009,
    /// Command Aborted due to Missing Fused Command.
    ABORTED_MISSING_FUSED = 0x00A,
    /// Invalid Namespace or Format.
    INVALID_NAMESPACE_OR_FORMAT = 0x00B,
    /// Command Sequence Error.
    COMMAND_SEQUENCE_ERROR = 0x00C,
    /// Invalid SGL Segment Descriptor.
    INVALID_SGL_SEGMENT_DESCRIPTOR = 0x00D,
    /// Invalid Number of SGL Descriptors.
    INVALID_NUMBER_OF_SGL_DESCRIPTORS = 0x00E,
    /// Data SGL Length Invalid.
    DATA_SGL_LENGTH_INVALID = 0x00F,
    /// Metadata SGL Length Invalid.
    METADATA_SGL_LENGTH_INVALID = 0x010,
    /// SGL Descriptor Type Invalid.
    SGL_DESCRIPTOR_TYPE_INVALID = 0x011,
    /// Invalid Use of Controller Memory Buffer.
    INVALID_USE_OF_CMB = 0x012,
    /// PRP Offset Invalid.
    PRP_OFFSET_INVALID = 0x013,
    /// Host Identifier Inconsistent Format.
    HOST_IDENTIFIER_INCONSISTENT_FORMAT = 0x018,
    /// Keep Alive Timer Expired.
    KEEP_ALIVE_TIMER_EXPIRED = 0x019,
    /// Keep Alive Timeout Invalid.
    KEEP_ALIVE_TIMEOUT_INVALID = 0x01A,
    /// Command Aborted due to Preempt and Abort.
    ABORTED_PREEMPT_AND_ABORT = 0x01B,
    /// Sanitize Failed.
    SANITIZE_FAILED = 0x01C,
    /// Sanitize In Progress.
    SANITIZE_IN_PROGRESS = 0x01D,
    /// Namespace is Write Protected.
    NAMESPACE_WRITE_PROTECTED = 0x020,
    /// Command Interrupted.
    COMMAND_INTERRUPTED = 0x021,
    /// Transient Transport Error.
    TRANSIENT_TRANSPORT_ERROR = 0x022,
    /// LBA Out of Range.
    LBA_OUT_OF_RANGE = 0x080,
    /// Capacity Exceeded.
    CAPACITY_EXCEEDED = 0x081,
    /// Namespace Not Ready.
    NAMESPACE_NOT_READY = 0x082,
    /// Reservation Conflict.
    RESERVATION_CONFLICT = 0x083,
    /// Format In Progress.
    FORMAT_IN_PROGRESS = 0x084,

    /// Completion Queue Invalid (Create I/O SQ naming a CQ that does not exist).
    COMPLETION_QUEUE_INVALID = 0x100,
    /// Invalid Queue Identifier.
    INVALID_QUEUE_IDENTIFIER = 0x101,
    /// Invalid Queue Size.
    INVALID_QUEUE_SIZE = 0x102,
    /// Abort Command Limit Exceeded.
    ABORT_COMMAND_LIMIT_EXCEEDED = 0x103,
    /// Asynchronous Event Request Limit Exceeded.
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = 0x105,
    /// Invalid Firmware Slot.
    INVALID_FIRMWARE_SLOT = 0x106,
    /// Invalid Firmware Image.
    INVALID_FIRMWARE_IMAGE = 0x107,
    /// Invalid Interrupt Vector.
    INVALID_INTERRUPT_VECTOR = 0x108,
    /// Invalid Log Page.
    INVALID_LOG_PAGE = 0x109,
    /// Invalid Format.
    INVALID_FORMAT = 0x10A,
    /// Invalid Queue Deletion (deleting a CQ that an SQ still uses).
    INVALID_QUEUE_DELETION = 0x10C,
    /// Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = 0x10D,
    /// Feature Not Changeable.
    FEATURE_NOT_CHANGEABLE = 0x10E,
    /// Feature Not Namespace Specific.
    FEATURE_NOT_NAMESPACE_SPECIFIC = 0x10F,
    /// Namespace Already Attached.
    NAMESPACE_ALREADY_ATTACHED = 0x118,
    /// Namespace Is Private.
    NAMESPACE_IS_PRIVATE = 0x119,
    /// Namespace Not Attached.
    NAMESPACE_NOT_ATTACHED = 0x11A,
    /// Invalid Controller Identifier.
    INVALID_CONTROLLER_IDENTIFIER = 0x11F,
    /// Invalid Secondary Controller State.
    INVALID_SECONDARY_CONTROLLER_STATE = 0x120,
    /// Invalid Number of Controller Resources.
    INVALID_NUMBER_OF_CONTROLLER_RESOURCES = 0x121,
    /// Invalid Resource Identifier.
    INVALID_RESOURCE_IDENTIFIER = 0x122,
    /// TP4159 37h: Invalid Controller Data Queue (unknown CDQID).
    INVALID_CONTROLLER_DATA_QUEUE = 0x137,
    /// TP4159 38h: Not Enough Resources.
    NOT_ENOUGH_RESOURCES = 0x138,
    /// TP4159 39h: Controller Suspended (the operation needs an active controller).
    CONTROLLER_SUSPENDED = 0x139,
    /// TP4159 3Ah: Controller Not Suspended (the operation needs a suspended controller).
    CONTROLLER_NOT_SUSPENDED = 0x13A,
    /// TP4159 3Bh: Controller Data Queue Full.
    CONTROLLER_DATA_QUEUE_FULL = 0x13B,
    /// NVM command set: Conflicting Attributes.
    CONFLICTING_ATTRIBUTES = 0x180,
    /// NVM command set: Invalid Protection Information.
    INVALID_PROTECTION_INFORMATION = 0x181,
    /// NVM command set: Attempted Write to Read Only Range.
    WRITE_TO_READ_ONLY_RANGE = 0x182,

    /// Write Fault.
    WRITE_FAULT = 0x280,
    /// Unrecovered Read Error.
    UNRECOVERED_READ_ERROR = 0x281,
    /// Compare Failure.
    COMPARE_FAILURE = 0x285,
    /// Access Denied.
    ACCESS_DENIED = 0x286,
    /// Deallocated or Unwritten Logical Block.
    DEALLOCATED_OR_UNWRITTEN = 0x287,
}

impl Status {
    /// Builds a status from its status code type and status code.
    pub const fn from_parts(sct: u8, sc: u8) -> Self {
        Self((((sct & 0x7) as u16) << 8) | sc as u16)
    }

    /// The status code type (SCT).
    pub const fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }

    /// The status code (SC).
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }

    /// True for Successful Completion.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_codes_are_command_specific() {
        for (st, sc) in [
            (Status::INVALID_CONTROLLER_DATA_QUEUE, 0x37),
            (Status::NOT_ENOUGH_RESOURCES, 0x38),
            (Status::CONTROLLER_SUSPENDED, 0x39),
            (Status::CONTROLLER_NOT_SUSPENDED, 0x3A),
            (Status::CONTROLLER_DATA_QUEUE_FULL, 0x3B),
        ] {
            assert_eq!(st.sct(), SCT_COMMAND_SPECIFIC);
            assert_eq!(st.sc(), sc);
            assert_eq!(Status::from_parts(SCT_COMMAND_SPECIFIC, sc), st);
        }
    }

    #[test]
    fn parts_round_trip() {
        for raw in 0..0x800u16 {
            let st = Status(raw);
            assert_eq!(Status::from_parts(st.sct(), st.sc()), st);
        }
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INTERNAL_ERROR.is_success());
        assert_eq!(Status::INVALID_FIELD_IN_COMMAND.sct(), SCT_GENERIC);
        assert_eq!(Status::UNRECOVERED_READ_ERROR.sct(), SCT_MEDIA);
    }
}
