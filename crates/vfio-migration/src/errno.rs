//! Linux errno values and the [`ToErrno`] trait every error of this crate implements.
//!
//! The VFIO uAPI and the vfio-user protocol both report failures as Linux errno numbers (the
//! vfio-user reply header carries one in its `error` field). The values here are the Linux
//! numbers, fixed regardless of the build target, because they travel over the wire: a
//! `libc::ENOMSG` on macOS would be 91, not 42. [`Errno`] is the one errno type of the
//! workspace: the vfio-user codec, server and client use it too.

use core::fmt;

/// A Linux errno value, as carried in a VFIO ioctl return or a vfio-user error reply.
///
/// Only the constants this crate and its users need are named; any other value can still be
/// carried with [`Errno::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Self = Self(1);
    /// I/O error: the device failed to carry out a request.
    pub const EIO: Self = Self(5);
    /// Argument list too long: more DMA-logging ranges than allowed, or a size or count over a
    /// limit.
    pub const E2BIG: Self = Self(7);
    /// Bad file descriptor.
    pub const EBADF: Self = Self(9);
    /// Try again: no data is available right now on a non-blocking stream.
    pub const EAGAIN: Self = Self(11);
    /// Out of memory: a bound on buffered migration data or a bitmap was exceeded.
    pub const ENOMEM: Self = Self(12);
    /// Bad address: an access outside the memory a request may reach.
    pub const EFAULT: Self = Self(14);
    /// Device or resource busy.
    pub const EBUSY: Self = Self(16);
    /// File exists: an overlapping DMA mapping.
    pub const EEXIST: Self = Self(17);
    /// No such device: the data session was invalidated (reset, or the session was left).
    pub const ENODEV: Self = Self(19);
    /// Invalid argument: an unsupported state, a forbidden transition, a bad request field.
    pub const EINVAL: Self = Self(22);
    /// Inappropriate ioctl: the device has no migration (or no DMA-logging) support at all.
    pub const ENOTTY: Self = Self(25);
    /// No space left: every allowed DMA window is already mapped.
    pub const ENOSPC: Self = Self(28);
    /// Illegal seek: positioned I/O on a migration data stream, which is stream-only.
    pub const ESPIPE: Self = Self(29);
    /// Function not implemented.
    pub const ENOSYS: Self = Self(38);
    /// No message of desired type: PRE_COPY has no data right now (not the end of the stream).
    pub const ENOMSG: Self = Self(42);
    /// Value too large: an IOVA range whose end overflows 64 bits.
    pub const EOVERFLOW: Self = Self(75);
    /// Operation not supported: an unknown command or an option this side does not implement.
    pub const EOPNOTSUPP: Self = Self(95);
    /// The same number as [`Errno::EOPNOTSUPP`] on Linux, under the name vfio-user uses.
    pub const ENOTSUP: Self = Self::EOPNOTSUPP;

    /// Wraps a raw Linux errno value (positive, as in `errno`, not the kernel's negated return).
    #[must_use]
    pub const fn new(value: i32) -> Self {
        Self(value)
    }

    /// The raw positive errno number, e.g. 22 for `EINVAL`.
    #[must_use]
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The symbolic name (`"EINVAL"`), or `None` for a value without a constant here.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::EPERM => "EPERM",
            Self::EIO => "EIO",
            Self::E2BIG => "E2BIG",
            Self::EBADF => "EBADF",
            Self::EAGAIN => "EAGAIN",
            Self::ENOMEM => "ENOMEM",
            Self::EFAULT => "EFAULT",
            Self::EBUSY => "EBUSY",
            Self::EEXIST => "EEXIST",
            Self::ENODEV => "ENODEV",
            Self::EINVAL => "EINVAL",
            Self::ENOTTY => "ENOTTY",
            Self::ENOSPC => "ENOSPC",
            Self::ESPIPE => "ESPIPE",
            Self::ENOSYS => "ENOSYS",
            Self::ENOMSG => "ENOMSG",
            Self::EOVERFLOW => "EOVERFLOW",
            Self::EOPNOTSUPP => "EOPNOTSUPP",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// An error that knows which Linux errno reports it to a VFIO or vfio-user client.
///
/// Every error type of this crate implements it, and a [`crate::MigrationDriver`]'s error type
/// must too, so the vfio-user server can answer every failure with a meaningful errno.
pub trait ToErrno {
    /// The errno a client sees for this error.
    fn errno(&self) -> Errno;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_linux_numbers() {
        let expected = [
            (Errno::EPERM, 1),
            (Errno::EIO, 5),
            (Errno::E2BIG, 7),
            (Errno::EBADF, 9),
            (Errno::EAGAIN, 11),
            (Errno::ENOMEM, 12),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::ENODEV, 19),
            (Errno::EINVAL, 22),
            (Errno::ENOTTY, 25),
            (Errno::ENOSPC, 28),
            (Errno::ESPIPE, 29),
            (Errno::ENOSYS, 38),
            (Errno::ENOMSG, 42),
            (Errno::EOVERFLOW, 75),
            (Errno::EOPNOTSUPP, 95),
            (Errno::ENOTSUP, 95),
        ];
        for (errno, value) in expected {
            assert_eq!(errno.get(), value, "{errno}");
            assert!(errno.name().is_some());
        }
    }

    #[test]
    fn display_names_known_values_and_numbers_others() {
        assert_eq!(Errno::ENOMSG.to_string(), "ENOMSG (42)");
        assert_eq!(Errno::new(200).to_string(), "errno 200");
        assert_eq!(Errno::new(200).name(), None);
    }
}
