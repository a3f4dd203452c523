//! File seals (`fcntl(F_GET_SEALS / F_ADD_SEALS)`): what keeps a file shared with another
//! process from changing size under this process's mappings.
//!
//! A mapping of a file that the other process truncates raises SIGBUS on the next access of the
//! vanished pages, which kills the whole process. `F_SEAL_SHRINK` makes such a truncation fail
//! (EPERM) for everyone, for as long as the file exists; seals can be added but never removed.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;

/// The seals that fix a file's size: no shrinking, no growing.
pub(crate) const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// Creates a memfd named `name`, close-on-exec; with `sealable` it accepts seals
/// (`MFD_ALLOW_SEALING`).
pub(crate) fn memfd_create(name: &str, sealable: bool) -> io::Result<OwnedFd> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name contains NUL"))?;
    let mut flags = libc::MFD_CLOEXEC;
    if sealable {
        flags |= libc::MFD_ALLOW_SEALING;
    }
    // SAFETY: `cname` is a valid NUL-terminated string; the flags are valid.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The seals of the file behind `fd` (`F_GET_SEALS`); EINVAL for files that cannot carry seals
/// (anything but shmem and hugetlbfs files).
pub(crate) fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS only reads the descriptor's file; no memory is passed.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(seals)
    }
}

/// Adds `seals` to the file behind `fd` (`F_ADD_SEALS`). Fails with EPERM when the file was not
/// created to accept seals or is sealed against new seals (`F_SEAL_SEAL`).
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS only changes the descriptor's file; no memory is passed.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes sure the file behind `fd` can never shrink: true if it already carried
/// `F_SEAL_SHRINK` or accepted it now, false if it cannot be sealed (a regular file on disk, a
/// memfd created without `MFD_ALLOW_SEALING`, or one sealed with `F_SEAL_SEAL` but not against
/// shrinking).
///
/// Adding the seal changes the file for every process that shares it: nobody can truncate it
/// any more (it may still grow). That is what a guest RAM file needs while a device uses it, and
/// what QEMU's memfd backend does to guest RAM by default.
pub(crate) fn seal_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    match seals(fd) {
        Ok(seals) if seals & libc::F_SEAL_SHRINK != 0 => true,
        Ok(seals) if seals & libc::F_SEAL_SEAL != 0 => false,
        Ok(_) => add_seals(fd, libc::F_SEAL_SHRINK).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_sealable_memfd_accepts_the_shrink_seal_and_then_refuses_truncation() {
        let fd = memfd_create("sealable", true).unwrap();
        let file = File::from(fd.try_clone().unwrap());
        file.set_len(8192).unwrap();
        assert_eq!(seals(fd.as_fd()).unwrap() & libc::F_SEAL_SHRINK, 0);
        assert!(seal_against_shrinking(fd.as_fd()));
        assert_ne!(seals(fd.as_fd()).unwrap() & libc::F_SEAL_SHRINK, 0);
        let err = file.set_len(0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        // Growing is still allowed; sealing again is a no-op.
        file.set_len(16384).unwrap();
        assert!(seal_against_shrinking(fd.as_fd()));
    }

    #[test]
    fn files_that_cannot_be_sealed_are_reported() {
        let fd = memfd_create("unsealable", false).unwrap();
        assert!(!seal_against_shrinking(fd.as_fd()));
        let sealed_seal = memfd_create("sealed", true).unwrap();
        add_seals(sealed_seal.as_fd(), libc::F_SEAL_SEAL).unwrap();
        assert!(!seal_against_shrinking(sealed_seal.as_fd()));
        let dir = std::env::temp_dir().join(format!("shmem-seal-{}", std::process::id()));
        let disk = File::create(&dir).unwrap();
        assert!(!seal_against_shrinking(disk.as_fd()));
        std::fs::remove_file(&dir).unwrap();
    }
}
