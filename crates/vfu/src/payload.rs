//! The [`Payload`] trait: one message body (request or reply) of one command.

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;

/// A typed message body: the bytes after the 16-byte header of one command's request or reply.
///
/// `decode` accepts any byte slice and either returns a value or a [`DecodeError`]; it never
/// panics and never allocates more than the input's length (attacker-controlled counts are
/// checked against the input and the [`Limits`] first).
pub trait Payload: Sized {
    /// The command this body belongs to.
    const COMMAND: Command;

    /// Appends the body's wire bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Parses a body.
    fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError>;

    /// The body's wire bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}
