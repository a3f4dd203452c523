//! Decode errors and the errno each one is answered with.
//!
//! Every decoder in this crate returns a [`DecodeError`] instead of panicking. Each error names the
//! command and the offending field or value, and [`DecodeError::errno`] gives the errno a server
//! puts into its error reply so that it can keep serving the connection. The only errors after
//! which a stream cannot be trusted are the framing errors ([`DecodeError::MsgSizeTooSmall`],
//! [`DecodeError::MsgSizeTooLarge`]): the message boundary is lost and the connection must be
//! closed.

use vfio_migration::Errno;

use crate::command::Command;

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
    /// [`DecodeError::InvalidField`]: `field` of a `command` body holds `value`, which the
    /// protocol does not allow (`reason` says why).
    pub fn invalid(
        command: Command,
        field: &'static str,
        value: u64,
        reason: &'static str,
    ) -> Self {
        Self::InvalidField {
            command,
            field,
            value,
            reason,
        }
    }

    /// The errno a server answers this error with (in the error reply's header).
    pub fn errno(&self) -> Errno {
        match self {
            Self::MsgSizeTooLarge { .. } | Self::TooLarge { .. } => Errno::E2BIG,
            Self::Overflow { .. } => Errno::EOVERFLOW,
            Self::UnsupportedCommand { .. }
            | Self::Unsupported { .. }
            | Self::Incompatible { .. } => Errno::ENOTSUP,
            Self::UnsupportedFeature { .. } => Errno::ENOTTY,
            Self::MsgSizeTooSmall { .. }
            | Self::BadMessageType { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::InvalidField { .. }
            | Self::Json { .. }
            | Self::FdCount { .. } => Errno::EINVAL,
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
        assert_eq!(too_large.errno(), Errno::E2BIG);
        assert!(too_large.to_string().contains("count = 9"));
        let truncated = DecodeError::Truncated {
            command: c,
            what: "access",
            need: 16,
            have: 3,
        };
        assert_eq!(truncated.errno(), Errno::EINVAL);
        assert_eq!(
            DecodeError::UnsupportedCommand {
                command: Command::DIRTY_PAGES
            }
            .errno(),
            Errno::ENOTSUP
        );
        assert_eq!(
            DecodeError::UnsupportedFeature { feature: 3 }.errno(),
            Errno::ENOTTY
        );
        let overflow = DecodeError::Overflow {
            command: c,
            field: "dma",
            start: 1,
            len: 2,
        };
        assert_eq!(overflow.errno(), Errno::EOVERFLOW);
    }
}
