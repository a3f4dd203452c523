//! Decode errors and the errno each one is answered with.
//!
//! Every decoder in this crate returns a [`DecodeError`] instead of panicking. Each error names the
//! command and the offending field or value, and [`DecodeError::errno`] gives the errno a server
//! puts into its error reply so that it can keep serving the connection. The only errors after
//! which a stream cannot be trusted are the framing errors ([`DecodeError::MsgSizeTooSmall`],
//! [`DecodeError::MsgSizeTooLarge`]): the message boundary is lost and the connection must be
//! closed.

use crate::command::Command;

/// Linux errno values carried in the header's `error` field. vfio-user runs between processes on
/// one host, so the numbers are the host's; this project targets Linux.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Argument list (here: a size or count) too long.
    pub const E2BIG: u32 = 7;
    /// Bad file descriptor.
    pub const EBADF: u32 = 9;
    /// Resource temporarily unavailable.
    pub const EAGAIN: u32 = 11;
    /// Bad address.
    pub const EFAULT: u32 = 14;
    /// Device or resource busy.
    pub const EBUSY: u32 = 16;
    /// Already exists (overlapping DMA map).
    pub const EEXIST: u32 = 17;
    /// No such device.
    pub const ENODEV: u32 = 19;
    /// Invalid argument: the generic answer to a malformed message.
    pub const EINVAL: u32 = 22;
    /// Inappropriate ioctl: what the kernel answers for a feature the device does not have.
    pub const ENOTTY: u32 = 25;
    /// Function not implemented.
    pub const ENOSYS: u32 = 38;
    /// No message of desired type.
    pub const ENOMSG: u32 = 42;
    /// Value too large for defined data type (address + size wraps).
    pub const EOVERFLOW: u32 = 75;
    /// Operation not supported (`ENOTSUP` and `EOPNOTSUPP` are the same number on Linux).
    pub const ENOTSUP: u32 = 95;
}

/// Why bytes received from a peer could not be turned into a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header's `msg_size` is smaller than the header itself.
    #[error("msg_size {msg_size} is smaller than the 16-byte header")]
    MsgSizeTooSmall {
        /// The value found in the header.
        msg_size: u32,
    },
    /// The header's `msg_size` exceeds the configured maximum message size.
    #[error("msg_size {msg_size} exceeds the maximum message size {max}")]
    MsgSizeTooLarge {
        /// The value found in the header.
        msg_size: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The header's type bits are neither command (0) nor reply (1).
    #[error("{command:?}: message type {value} is neither command (0) nor reply (1)")]
    BadMessageType {
        /// The command in the header.
        command: Command,
        /// The type bits found.
        value: u8,
    },
    /// The payload ends before a structure it must contain.
    #[error("{command:?}: {what} needs {need} bytes but the payload has only {have}")]
    Truncated {
        /// The command being decoded.
        command: Command,
        /// The structure or field that did not fit.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The payload carries bytes after the last structure it may contain.
    #[error("{command:?}: {extra} unexpected bytes after {what}")]
    TrailingBytes {
        /// The command being decoded.
        command: Command,
        /// The last structure decoded.
        what: &'static str,
        /// Number of surplus bytes.
        extra: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{command:?}: {field} = {value:#x} is invalid: {reason}")]
    InvalidField {
        /// The command being decoded.
        command: Command,
        /// The field's name as in the spec.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A size or count exceeds a limit of this implementation or of the negotiated capabilities.
    #[error("{command:?}: {field} = {value} exceeds the limit {limit}")]
    TooLarge {
        /// The command being decoded.
        command: Command,
        /// The field's name as in the spec.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// An address range wraps around the 64-bit address space.
    #[error("{command:?}: {field} range {start:#x} + {len:#x} overflows")]
    Overflow {
        /// The command being decoded.
        command: Command,
        /// The range's name.
        field: &'static str,
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// The command number is unassigned or not supported (including legacy `DIRTY_PAGES`).
    #[error("command {command:?} is not supported")]
    UnsupportedCommand {
        /// The command in the header.
        command: Command,
    },
    /// A recognised but unsupported option of a command.
    #[error("{command:?}: {field} = {value:#x} is not supported")]
    Unsupported {
        /// The command being decoded.
        command: Command,
        /// The field selecting the option.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// `DEVICE_FEATURE` for a feature index this codec does not know.
    #[error("DEVICE_FEATURE: feature index {feature} is not supported")]
    UnsupportedFeature {
        /// The feature index (flags bits 0–15).
        feature: u16,
    },
    /// The VERSION capabilities are not valid UTF-8 JSON of the expected shape.
    #[error("VERSION: capabilities JSON is invalid: {reason}")]
    Json {
        /// The parser's message.
        reason: String,
    },
    /// VERSION negotiation failed: the peers have no common version or capability.
    #[error("VERSION: {field} {offered} is incompatible with the proposal {proposed}")]
    Incompatible {
        /// The field that does not agree.
        field: &'static str,
        /// The proposing side's value.
        proposed: u64,
        /// The answering side's value.
        offered: u64,
    },
    /// A message arrived with a number of file descriptors its content does not allow.
    #[error("{command:?}: {got} file descriptors attached, expected {expected}")]
    FdCount {
        /// The command being decoded.
        command: Command,
        /// The number of descriptors that arrived.
        got: usize,
        /// What the message allows, in words (e.g. "0 or 1").
        expected: String,
    },
}

impl DecodeError {
    /// The errno a server answers this error with (in the error reply's header).
    pub fn errno(&self) -> u32 {
        match self {
            Self::MsgSizeTooLarge { .. } | Self::TooLarge { .. } => errno::E2BIG,
            Self::Overflow { .. } => errno::EOVERFLOW,
            Self::UnsupportedCommand { .. }
            | Self::Unsupported { .. }
            | Self::Incompatible { .. } => errno::ENOTSUP,
            Self::UnsupportedFeature { .. } => errno::ENOTTY,
            Self::MsgSizeTooSmall { .. }
            | Self::BadMessageType { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::InvalidField { .. }
            | Self::Json { .. }
            | Self::FdCount { .. } => errno::EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_follow_the_kind_of_error() {
        let c = Command::REGION_WRITE;
        let too_large = DecodeError::TooLarge {
            command: c,
            field: "count",
            value: 9,
            limit: 8,
        };
        assert_eq!(too_large.errno(), errno::E2BIG);
        assert!(too_large.to_string().contains("count = 9"));
        let truncated = DecodeError::Truncated {
            command: c,
            what: "access",
            need: 16,
            have: 3,
        };
        assert_eq!(truncated.errno(), errno::EINVAL);
        assert_eq!(
            DecodeError::UnsupportedCommand {
                command: Command::DIRTY_PAGES
            }
            .errno(),
            errno::ENOTSUP
        );
        assert_eq!(
            DecodeError::UnsupportedFeature { feature: 3 }.errno(),
            errno::ENOTTY
        );
        let overflow = DecodeError::Overflow {
            command: c,
            field: "dma",
            start: 1,
            len: 2,
        };
        assert_eq!(overflow.errno(), errno::EOVERFLOW);
    }
}
