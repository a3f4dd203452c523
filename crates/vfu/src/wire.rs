//! Private helpers shared by the decoders: bounds-checked structure reads and appends, and the
//! [`Payload`](crate::payload::Payload) impls of fixed-layout and empty bodies.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;

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

/// Fails with [`DecodeError::InvalidField`] naming `argsz` and `reason` if `argsz` is below
/// `min`, the size of the structure it must cover.
pub(crate) fn check_argsz(
    command: Command,
    argsz: u32,
    min: usize,
    reason: &'static str,
) -> Result<(), DecodeError> {
    if (argsz as usize) < min {
        return Err(DecodeError::invalid(command, "argsz", argsz.into(), reason));
    }
    Ok(())
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

/// A decoder's check of a structure it read.
pub(crate) type Check<T> = fn(&T, &Limits) -> Result<(), DecodeError>;

/// Reads a `T` that must be the whole payload and runs `check` on it.
pub(crate) fn read_checked<T: FromBytes + KnownLayout + Immutable>(
    command: Command,
    what: &'static str,
    bytes: &[u8],
    limits: &Limits,
    check: Check<T>,
) -> Result<T, DecodeError> {
    let value = read_exact::<T>(command, what, bytes)?;
    check(&value, limits)?;
    Ok(value)
}

/// A `check` for [`read_checked`] that accepts every value.
pub(crate) fn any_value<T>(_value: &T, _limits: &Limits) -> Result<(), DecodeError> {
    Ok(())
}

/// Implements [`Payload`](crate::payload::Payload) (or, with `feature`,
/// [`FeatureData`](crate::feature::FeatureData)) for a body that is one fixed-layout structure:
/// encoding appends its bytes; decoding reads exactly one (a shorter or longer body is an error)
/// and runs the optional `$check`, a `fn(&Self, &Limits) -> Result<(), DecodeError>`, on it.
macro_rules! fixed_payload {
    ($ty:ty, $command:expr, $what:literal $(, $check:expr)?) => {
        impl $crate::payload::Payload for $ty {
            const COMMAND: $crate::command::Command = $command;

            fn encode(&self, out: &mut Vec<u8>) {
                $crate::wire::put(out, self);
            }

            fn decode(
                bytes: &[u8],
                limits: &$crate::limits::Limits,
            ) -> Result<Self, $crate::error::DecodeError> {
                let check: $crate::wire::Check<Self> =
                    $crate::wire::fixed_payload!(@check $($check)?);
                $crate::wire::read_checked(Self::COMMAND, $what, bytes, limits, check)
            }
        }
    };
    (feature $ty:ty, $feature:expr, $what:literal $(, $check:expr)?) => {
        impl $crate::feature::FeatureData for $ty {
            const FEATURE: $crate::feature::Feature = $feature;

            fn encode_data(&self, out: &mut Vec<u8>) {
                $crate::wire::put(out, self);
            }

            fn decode_data(
                bytes: &[u8],
                limits: &$crate::limits::Limits,
            ) -> Result<Self, $crate::error::DecodeError> {
                let check: $crate::wire::Check<Self> =
                    $crate::wire::fixed_payload!(@check $($check)?);
                let command = $crate::command::Command::DEVICE_FEATURE;
                $crate::wire::read_checked(command, $what, bytes, limits, check)
            }
        }
    };
    (@check) => {
        $crate::wire::any_value
    };
    (@check $check:expr) => {
        $check
    };
}

/// Implements [`Payload`](crate::payload::Payload) for a body-less message (a request or reply
/// that is the header alone): any payload byte is an error.
macro_rules! empty_payload {
    ($ty:ty, $command:expr) => {
        impl $crate::payload::Payload for $ty {
            const COMMAND: $crate::command::Command = $command;

            fn encode(&self, _out: &mut Vec<u8>) {}

            fn decode(
                bytes: &[u8],
                _limits: &$crate::limits::Limits,
            ) -> Result<Self, $crate::error::DecodeError> {
                $crate::wire::expect_end(Self::COMMAND, "header", bytes)?;
                Ok(Self)
            }
        }
    };
}

pub(crate) use empty_payload;
pub(crate) use fixed_payload;
