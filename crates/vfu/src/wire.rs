//! Private helpers shared by the decoders: bounds-checked structure reads and appends.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;

/// Reads a `T` from the front of `bytes`, returning it and the rest.
pub(crate) fn read<'a, T: FromBytes + KnownLayout + Immutable>(
    command: Command,
    what: &'static str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), DecodeError> {
    T::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        command,
        what,
        need: size_of::<T>(),
        have: bytes.len(),
    })
}

/// Fails if `rest` is not empty.
pub(crate) fn expect_end(
    command: Command,
    what: &'static str,
    rest: &[u8],
) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            command,
            what,
            extra: rest.len(),
        })
    }
}

/// Reads a `T` that must be the whole payload.
pub(crate) fn read_exact<T: FromBytes + KnownLayout + Immutable>(
    command: Command,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (value, rest) = read::<T>(command, what, bytes)?;
    expect_end(command, what, rest)?;
    Ok(value)
}

/// Splits `len` bytes off the front of `bytes`.
pub(crate) fn take<'a>(
    command: Command,
    what: &'static str,
    bytes: &'a [u8],
    len: usize,
) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
    if bytes.len() < len {
        return Err(DecodeError::Truncated {
            command,
            what,
            need: len,
            have: bytes.len(),
        });
    }
    Ok(bytes.split_at(len))
}

/// Appends a structure's bytes.
pub(crate) fn put<T: IntoBytes + Immutable + ?Sized>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(value.as_bytes());
}

/// Fails with [`DecodeError::TooLarge`] if `value > limit`.
pub(crate) fn check_limit(
    command: Command,
    field: &'static str,
    value: u64,
    limit: u64,
) -> Result<(), DecodeError> {
    if value > limit {
        Err(DecodeError::TooLarge {
            command,
            field,
            value,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Fails with [`DecodeError::Overflow`] if `start + len` wraps.
pub(crate) fn check_range(
    command: Command,
    field: &'static str,
    start: u64,
    len: u64,
) -> Result<(), DecodeError> {
    match start.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(DecodeError::Overflow {
            command,
            field,
            start,
            len,
        }),
    }
}

/// A `u32` length field for an encoder. Payloads never approach 4 GiB (the framer's maximum
/// message size is a `u32`), so saturation only guards against misuse.
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
