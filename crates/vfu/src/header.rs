//! The 16-byte message header that precedes every command and reply (spec "Header").

use bitfield_struct::bitfield;
use vfio_migration::Errno;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;

/// Size of [`Header`] in bytes; `msg_size` counts it.
pub const HEADER_SIZE: usize = 16;

/// Header type bits value of a command (request) message.
pub const TYPE_COMMAND: u8 = 0;
/// Header type bits value of a reply message.
pub const TYPE_REPLY: u8 = 1;

/// The header's `flags` word: message type in bits 0–3, No_reply in bit 4, Error in bit 5.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct HeaderFlags {
    /// Message type: [`TYPE_COMMAND`] or [`TYPE_REPLY`].
    #[bits(4)]
    pub msg_type: u8,
    /// In a command: the sender wants no reply.
    pub no_reply: bool,
    /// In a reply: the command failed and the header's `error` holds an errno (which may be 0).
    pub error: bool,
    #[bits(26)]
    _reserved: u32,
}

/// The message header. `msg_size` includes these 16 bytes.
///
/// Offsets: msg_id 0, command 2, msg_size 4, flags 8, error 12.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct Header {
    /// Chosen by the sender of a command and echoed in its reply; not necessarily unique.
    pub msg_id: u16,
    /// The command, also set in the reply.
    pub command: Command,
    /// Total message size including this header.
    pub msg_size: u32,
    /// Type, No_reply and Error bits.
    pub flags: HeaderFlags,
    /// errno of a failed command (valid in replies with the Error bit; reserved in commands).
    pub error: u32,
}

const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

impl Header {
    /// Header of a command message carrying `payload_len` bytes after the header.
    pub fn command(msg_id: u16, command: Command, payload_len: usize, no_reply: bool) -> Self {
        Self {
            msg_id,
            command,
            msg_size: msg_size(payload_len),
            flags: HeaderFlags::new()
                .with_msg_type(TYPE_COMMAND)
                .with_no_reply(no_reply),
            error: 0,
        }
    }

    /// Header of a successful reply to `self` (same msg_id and command) with `payload_len`
    /// payload bytes.
    pub fn reply(&self, payload_len: usize) -> Self {
        Self {
            msg_id: self.msg_id,
            command: self.command,
            msg_size: msg_size(payload_len),
            flags: HeaderFlags::new().with_msg_type(TYPE_REPLY),
            error: 0,
        }
    }

    /// Header of an error reply to `self`: type reply, Error bit, `errno`, and no payload (the
    /// spec allows nothing but the header in an error reply).
    pub fn error_reply(&self, errno: Errno) -> Self {
        Self {
            msg_id: self.msg_id,
            command: self.command,
            msg_size: msg_size(0),
            flags: HeaderFlags::new()
                .with_msg_type(TYPE_REPLY)
                .with_error(true),
            error: errno.get().cast_unsigned(),
        }
    }

    /// The `error` field as an errno (meaningful in a reply with the Error bit).
    pub fn errno(&self) -> Errno {
        Errno::new(self.error.cast_signed())
    }

    /// Whether this is a reply; an error if the type bits are neither command nor reply.
    pub fn is_reply(&self) -> Result<bool, DecodeError> {
        match self.flags.msg_type() {
            TYPE_COMMAND => Ok(false),
            TYPE_REPLY => Ok(true),
            value => Err(DecodeError::BadMessageType {
                command: self.command,
                value,
            }),
        }
    }

    /// Payload length implied by `msg_size` (0 when `msg_size` is below the header size; the
    /// framer rejects such headers before anyone asks).
    pub fn payload_len(&self) -> usize {
        (self.msg_size as usize).saturating_sub(HEADER_SIZE)
    }
}

/// `msg_size` of a message with `payload_len` payload bytes. Encoders never build payloads
/// beyond `u32::MAX`; the conversion saturates rather than panics.
fn msg_size(payload_len: usize) -> u32 {
    u32::try_from(HEADER_SIZE + payload_len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn layout_matches_the_spec() {
        assert_eq!(offset_of!(Header, msg_id), 0);
        assert_eq!(offset_of!(Header, command), 2);
        assert_eq!(offset_of!(Header, msg_size), 4);
        assert_eq!(offset_of!(Header, flags), 8);
        assert_eq!(offset_of!(Header, error), 12);
    }

    #[test]
    fn flag_bits_are_where_the_spec_puts_them() {
        assert_eq!(
            HeaderFlags::new().with_msg_type(TYPE_REPLY).into_bits(),
            0x1
        );
        assert_eq!(HeaderFlags::new().with_no_reply(true).into_bits(), 0x10);
        assert_eq!(HeaderFlags::new().with_error(true).into_bits(), 0x20);
    }

    #[test]
    fn error_reply_is_byte_exact() {
        let req = Header::command(0x1234, Command::REGION_READ, 16, false);
        let bytes = req.error_reply(Errno::EINVAL).as_bytes().to_vec();
        assert_eq!(
            bytes,
            [0x34, 0x12, 9, 0, 16, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0],
            "msg_id and command echoed, size 16, flags reply|error, errno 22"
        );
    }

    #[test]
    fn type_bits_are_validated() {
        let mut h = Header::command(1, Command::VERSION, 0, true);
        assert_eq!(h.is_reply(), Ok(false));
        assert!(h.flags.no_reply());
        h.flags.set_msg_type(TYPE_REPLY);
        assert_eq!(h.is_reply(), Ok(true));
        h.flags.set_msg_type(7);
        assert_eq!(h.is_reply().unwrap_err().errno(), Errno::EINVAL);
    }
}
