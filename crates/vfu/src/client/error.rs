//! [`ClientError`]: what went wrong with a request, naming the command.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use vfio_migration::Errno;

use crate::command::Command;
use crate::error::DecodeError;

/// A failed client operation. Every variant that concerns a request names its command.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected.
    #[error("cannot connect to the vfio-user socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The socket could not be configured.
    #[error("cannot configure the vfio-user socket: {0}")]
    Socket(#[source] io::Error),
    /// The server refused the connection because it serves another client (an error reply
    /// carrying EBUSY to VERSION); it closed the connection.
    #[error("the server is busy: another client is attached; try again once it has disconnected")]
    Busy,
    /// VERSION negotiation failed: the server's reply breaks the rules or offers nothing usable.
    #[error("VERSION negotiation failed: {0}")]
    Negotiation(#[source] DecodeError),
    /// The server answered with an error reply.
    #[error(
        "{command:?} failed on the server with errno {} ({})",
        errno.get(),
        errno.name().unwrap_or("unknown errno")
    )]
    Errno {
        /// The command that failed.
        command: Command,
        /// The errno from the reply header.
        errno: Errno,
    },
    /// No reply arrived in time. The connection stays usable: a late reply is recognised by its
    /// message id and dropped.
    #[error("{command:?}: no reply within {timeout:?}")]
    Timeout {
        /// The command that timed out.
        command: Command,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The reply could not be decoded.
    #[error("{command:?}: malformed reply: {source}")]
    BadReply {
        /// The command whose reply was malformed.
        command: Command,
        /// The decoder's error.
        source: DecodeError,
    },
    /// The reply decoded but does not answer the request (wrong command, echo or size).
    #[error("{command:?}: unexpected reply: {reason}")]
    UnexpectedReply {
        /// The command that was answered wrongly.
        command: Command,
        /// What does not match.
        reason: String,
    },
    /// The request exceeds what the server negotiated; it was not sent.
    #[error(
        "{command:?}: {field} = {value} exceeds the negotiated limit {limit}; the request was not sent"
    )]
    TooLarge {
        /// The command refused.
        command: Command,
        /// The field or quantity that is too large.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The caller passed an argument the protocol cannot carry; nothing was sent.
    #[error("{command:?}: invalid argument: {reason}")]
    InvalidArgument {
        /// The command that was not sent.
        command: Command,
        /// What is wrong.
        reason: String,
    },
    /// Sending failed; the connection is closed because a partial message breaks the stream.
    #[error("{command:?}: sending the request failed, connection closed: {source}")]
    Send {
        /// The command being sent.
        command: Command,
        /// The OS error.
        source: io::Error,
    },
    /// Receiving failed; the connection is closed.
    #[error("{command:?}: receiving the reply failed, connection closed: {source}")]
    Receive {
        /// The command waiting for its reply.
        command: Command,
        /// The OS error.
        source: io::Error,
    },
    /// The server closed the connection.
    #[error("{command:?}: the server closed the connection; reconnect to continue")]
    Disconnected {
        /// The command waiting for its reply.
        command: Command,
    },
    /// The server sent a message with an impossible size: the stream cannot be resynchronised.
    #[error("{command:?}: framing error from the server, connection closed: {source}")]
    Framing {
        /// The command waiting for its reply.
        command: Command,
        /// The framer's error.
        source: DecodeError,
    },
    /// An earlier failure closed the connection; nothing was sent.
    #[error("{command:?}: the connection is closed ({reason}); reconnect to continue")]
    Closed {
        /// The command that was not sent.
        command: Command,
        /// Why the connection was closed.
        reason: String,
    },
    /// A region cannot be used as asked (absent, not mmappable, no fd, bad area).
    #[error("region {index}: {reason}")]
    Region {
        /// The region index.
        index: u32,
        /// What is wrong.
        reason: String,
    },
    /// Mapping a sparse-mmap area failed.
    #[error("region {index}: cannot map the area at {offset:#x} (+{size:#x}): {source}")]
    Map {
        /// The region index.
        index: u32,
        /// Offset of the area in the region.
        offset: u64,
        /// Size of the area.
        size: u64,
        /// The OS error.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_command_and_the_errno() {
        let err = ClientError::Errno {
            command: Command::REGION_READ,
            errno: Errno::EINVAL,
        };
        assert_eq!(
            err.to_string(),
            "REGION_READ failed on the server with errno 22 (EINVAL)"
        );
        let err = ClientError::Errno {
            command: Command::DMA_MAP,
            errno: Errno::new(1000),
        };
        assert!(err.to_string().contains("1000 (unknown errno)"));
    }
}
