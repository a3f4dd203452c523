//! Why vendor-specific state bytes were refused: one variant per check, naming the field.

use super::OLDEST_VERSION;
use super::VERSION;

/// Why vendor-specific state bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VendorStateError {
    /// The bytes end inside a field.
    #[error("vendor state truncated in field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The magic is not ours.
    #[error("vendor state magic {found:02x?} is not \"VFNVMEVS\"")]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A layout version this crate does not read.
    #[error(
        "vendor state version {found} is not supported (this build reads versions \
         {OLDEST_VERSION} to {VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The length field disagrees with the bytes given.
    #[error("vendor state body length {declared} does not match the {given} bytes given")]
    Length {
        /// Body length in the header.
        declared: u32,
        /// Bytes given (header and padding included).
        given: usize,
    },
    /// The CRC does not match the body.
    #[error("vendor state CRC {found:#010x} does not match the body's {computed:#010x}")]
    Crc {
        /// CRC in the header.
        found: u32,
        /// CRC of the body.
        computed: u32,
    },
    /// A reserved field or padding byte is not zero.
    #[error("vendor state field {field} must be zero")]
    Reserved {
        /// The field.
        field: &'static str,
    },
    /// A list has more entries than allowed.
    #[error("vendor state list {field} has {count} entries, more than {max}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Entries found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not valid UTF-8.
    #[error("vendor state string {field} is not UTF-8")]
    BadString {
        /// The field.
        field: &'static str,
    },
    /// A boolean is neither 0 nor 1.
    #[error("vendor state flag {field} is {value}, not 0 or 1")]
    BadFlag {
        /// The field.
        field: &'static str,
        /// The value.
        value: u8,
    },
    /// Bytes are left after the last field.
    #[error("vendor state has {extra} bytes after its last field")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}
