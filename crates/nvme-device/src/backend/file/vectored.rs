//! The one vectored file operation both asynchronous engines run outside io_uring: a pool
//! thread's job ([`super::threads`]) and an inline buffered write ([`super::uring`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::super::IoKind;

/// Carries out one operation of `kind` at file `offset` on the `count` vectors at `iovecs`
/// (`preadv2`, `pwritev2` with `RWF_DSYNC` for FUA, `fdatasync` for a Flush): the bytes moved.
///
/// # Safety
///
/// `iovecs` points at `count` vectors (at most `MAX_SEGMENTS`) that, with the memory they
/// point at, belong to the caller alone until this returns: no kernel entry or other thread
/// uses them meanwhile.
pub(super) unsafe fn transfer(
    file: &File,
    kind: IoKind,
    offset: u64,
    iovecs: *const libc::iovec,
    count: usize,
) -> io::Result<usize> {
    let flags = match kind {
        IoKind::Flush => return rustix::fs::fdatasync(file).map(|()| 0).map_err(Into::into),
        IoKind::Read | IoKind::Write { fua: false } => 0,
        IoKind::Write { fua: true } => libc::RWF_DSYNC,
    };
    // At most `MAX_SEGMENTS` vectors, and offsets inside the namespace.
    let (count, offset) = (count as libc::c_int, offset as libc::off64_t);
    let fd = file.as_raw_fd();
    // SAFETY: the caller's contract; the kernel checks every address it is given.
    let n = unsafe {
        if kind == IoKind::Read {
            libc::preadv2(fd, iovecs, count, offset, flags)
        } else {
            libc::pwritev2(fd, iovecs, count, offset, flags)
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
