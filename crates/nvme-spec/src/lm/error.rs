//! Errors of the TP4159 codecs.

use thiserror::Error;

use crate::command::AdminOpcode;

/// A submission queue entry is not the TP4159 command (or operation) the caller asked to decode.
///
/// Reserved bits are *not* errors: they are reported in [`ReservedBits`](super::ReservedBits).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LmCommandError {
    /// CDW0 carries another opcode.
    #[error("opcode {found:#04x} is not {expected:?} ({:#04x})", expected.0)]
    WrongOpcode {
        /// The opcode the decoder handles.
        expected: AdminOpcode,
        /// The opcode found in CDW0.
        found: u8,
    },
    /// SEL (CDW10\[7:0\]) is reserved, selects another operation, or selects an operation whose
    /// layout is not public (Track Send "Track Memory Changes").
    #[error("{command}: SEL {sel:#04x} in CDW10[7:0] is not supported")]
    UnsupportedSelect {
        /// The command or operation being decoded.
        command: &'static str,
        /// The SEL value found.
        sel: u8,
    },
    /// A Set/Get Features command names another Feature Identifier than 21h.
    #[error("Feature Identifier {found:#04x} in CDW10[7:0] is not 21h (Controller Data Queue)")]
    WrongFeature {
        /// The FID found.
        found: u8,
    },
}

/// A value cannot be encoded into its wire field or structure.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LmEncodeError {
    /// A value is wider than the bit field that carries it.
    #[error("{field} value {value:#x} does not fit in its {bits}-bit field")]
    FieldTooWide {
        /// Field name as in TP4159 (e.g. "UIDX").
        field: &'static str,
        /// The value that does not fit.
        value: u64,
        /// The width of the field in bits.
        bits: u32,
    },
    /// A data length cannot be expressed as a NUMD or size in dwords.
    #[error("{field}: a length of {len} bytes is not a representable whole number of dwords")]
    BadLength {
        /// The field that would carry the length (e.g. "NUMD").
        field: &'static str,
        /// The length in bytes.
        len: u64,
    },
    /// A list has more entries than its count field or its page can hold.
    #[error("{field}: {count} entries do not fit (at most {max})")]
    TooMany {
        /// The list (e.g. "VERS" or "NIOSQ").
        field: &'static str,
        /// Entries given.
        count: usize,
        /// Entries that fit.
        max: usize,
    },
}

/// Bytes from a guest, a device or a migration stream do not form a valid TP4159 structure.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LmDecodeError {
    /// The buffer ends before the structure does.
    #[error("{what} needs {needed} bytes but only {got} were given")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The buffer is longer than the structure it must hold exactly.
    #[error("{what} is {expected} bytes but {got} were given")]
    LengthMismatch {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes the structure occupies.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A size field names more data than this crate accepts (or than memory can address).
    #[error("{field} of {dwords} dwords exceeds the {max}-byte bound on controller state")]
    TooLarge {
        /// The size field (NVMECSS or VSS).
        field: &'static str,
        /// Its value, in dwords.
        dwords: u128,
        /// The bound, in bytes.
        max: usize,
    },
    /// A version field holds a version this crate does not know.
    #[error("{field} {found} is not supported (expected {expected})")]
    UnsupportedVersion {
        /// The version field (e.g. "NVMECS VER").
        field: &'static str,
        /// The version found.
        found: u16,
        /// The version this crate decodes.
        expected: u16,
    },
    /// A list does not fit in its page.
    #[error("{what} lists {needed} bytes of entries, more than its {max}-byte page")]
    ListTooLong {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes the counted entries need.
        needed: usize,
        /// Bytes the page holds.
        max: usize,
    },
}
