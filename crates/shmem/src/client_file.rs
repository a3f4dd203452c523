//! Memory in a file another process handed over (vfio-user `DMA_MAP`), made safe to use however
//! that process treats its file afterwards.
//!
//! [`client_window`] decides how a window of such a file is reached:
//!
//! * a file sealed against shrinking (`F_SEAL_SHRINK`; QEMU's memfd backend seals guest RAM by
//!   default) is mapped: its size was checked after the seal, so the mapping can never lose
//!   pages (the fast path);
//! * a file that accepts the seal (a memfd created with `MFD_ALLOW_SEALING` and not sealed with
//!   `F_SEAL_SEAL`) is sealed against shrinking and then mapped. The seal is the file's, so the
//!   other process can no longer truncate it either (it may still grow it); that is the rule
//!   QEMU applies to its own guest RAM, and a file a device uses must not shrink anyway;
//! * any other regular file (on disk, tmpfs or hugetlbfs, or a memfd that cannot be sealed) is
//!   never mapped: it is reached with `pread`/`pwrite` ([`FileMemory`]), so a file truncated
//!   under a device access makes that access fail (the device reports an error) instead of
//!   raising SIGBUS in this process. File systems without `write()` (hugetlbfs) then refuse
//!   device writes; such guest RAM should come as a sealed memfd.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::Mapping;
use crate::MemoryFault;
use crate::Protection;
use crate::WindowMemory;
use crate::address_space::IoMemory;
use crate::seal;

/// Why a client's file cannot back a window.
#[derive(Debug, thiserror::Error)]
pub enum ClientFileError {
    /// The descriptor is not a regular file (a socket, pipe, device node, ...).
    #[error(
        "the file descriptor is not a regular file (a memfd or a file on tmpfs, hugetlbfs or disk)"
    )]
    NotAFile,
    /// The window extends beyond the end of the file.
    #[error(
        "the window {offset:#x}+{len:#x} extends beyond the end of the {file_size:#x}-byte file"
    )]
    BeyondEnd {
        /// File offset of the window.
        offset: u64,
        /// Window length.
        len: u64,
        /// The file's size.
        file_size: u64,
    },
    /// Inspecting or mapping the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ClientFileError {
    /// The errno a vfio-user server answers with.
    pub fn raw_os_error(&self) -> i32 {
        match self {
            Self::NotAFile | Self::BeyondEnd { .. } => libc::EINVAL,
            Self::Io(err) => err.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// The window `[offset, offset + len)` of the client's file `fd`, reached as the module docs
/// describe: mapped when the file cannot shrink (sealing it against shrinking if it accepts the
/// seal), by file I/O otherwise. `protection` is what the client allows the device.
pub fn client_window(
    fd: OwnedFd,
    offset: u64,
    len: u64,
    protection: Protection,
) -> Result<WindowMemory, ClientFileError> {
    let stat = fstat(&fd)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ClientFileError::NotAFile);
    }
    // Seal first, then check the size: once sealed the file can no longer shrink below it.
    let sealed = seal::seal_against_shrinking(fd.as_fd());
    let file_size = file_size(&fd)?;
    if offset.checked_add(len).is_none_or(|end| end > file_size) {
        return Err(ClientFileError::BeyondEnd {
            offset,
            len,
            file_size,
        });
    }
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "window too large");
    if sealed {
        let len = usize::try_from(len).map_err(|_| too_large())?;
        return Ok(WindowMemory::Mapped(Mapping::from_fd(
            fd, offset, len, protection,
        )?));
    }
    libc::off_t::try_from(offset + len).map_err(|_| too_large())?;
    Ok(WindowMemory::Io(Arc::new(FileMemory {
        fd,
        offset,
        len,
        writable: protection == Protection::ReadWrite,
    })))
}

/// A window of a client file that may shrink at any time, reached with `pread`/`pwrite` only.
/// A read past the file's current end, or a write that would land there, is a
/// [`MemoryFault`].
#[derive(Debug)]
pub struct FileMemory {
    fd: OwnedFd,
    offset: u64,
    len: u64,
    writable: bool,
}

impl IoMemory for FileMemory {
    fn len(&self) -> u64 {
        self.len
    }

    fn writable(&self) -> bool {
        self.writable
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        let mut done = 0;
        while done < buf.len() {
            let at = self.offset + offset + done as u64;
            let rest = &mut buf[done..];
            // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes owned by the
            // caller; pread writes at most that many bytes into it.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    at as libc::off_t,
                )
            };
            match n {
                0 => return Err(self.truncated(at)),
                n if n < 0 => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(MemoryFault::new(format!(
                            "reading the client's file at {at:#x} failed: {err}"
                        )));
                    }
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), MemoryFault> {
        let start = self.offset + offset;
        // pwrite beyond the end would grow the file back instead of failing; a file that
        // shrinks between this check and the write merely grows again, which harms nobody here.
        let size = file_size(&self.fd)
            .map_err(|e| MemoryFault::new(format!("cannot inspect the client's file: {e}")))?;
        if start + data.len() as u64 > size {
            return Err(self.truncated(size.max(start)));
        }
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            // SAFETY: `rest` is a live buffer of `rest.len()` bytes; pwrite only reads it.
            let n = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    (start + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(MemoryFault::new(format!(
                        "writing the client's file at {:#x} failed: {err}",
                        start + done as u64
                    )));
                }
            } else if n == 0 {
                return Err(MemoryFault::new("the client's file takes no more data"));
            } else {
                done += n as usize;
            }
        }
        Ok(())
    }
}

impl FileMemory {
    fn truncated(&self, at: u64) -> MemoryFault {
        MemoryFault::new(format!(
            "the client's file ends before offset {at:#x} (it was truncated after DMA_MAP)"
        ))
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `stat` is a properly sized, writable buffer that fstat fills on success.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it initialised the whole structure.
    Ok(unsafe { stat.assume_init() })
}

fn file_size(fd: &OwnedFd) -> io::Result<u64> {
    Ok(u64::try_from(fstat(fd)?.st_size).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::AddressSpace;
    use crate::DmaError;

    fn memfd(sealable: bool, len: u64) -> (OwnedFd, File) {
        let fd = seal::memfd_create("client", sealable).unwrap();
        let file = File::from(fd.try_clone().unwrap());
        file.set_len(len).unwrap();
        (fd, file)
    }

    #[test]
    fn sealed_and_sealable_files_are_mapped_and_can_no_longer_shrink() {
        let (fd, file) = memfd(true, 0x4000);
        let window = client_window(fd, 0x1000, 0x2000, Protection::ReadWrite).unwrap();
        assert!(window.is_mapped());
        assert_eq!(
            file.set_len(0).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        let space = AddressSpace::new();
        space.map_memory(0x10_0000, window).unwrap();
        space.write(0x10_0000, b"mapped").unwrap();
        let mut back = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 0x1000).unwrap();
        assert_eq!(&back, b"mapped");
    }

    #[test]
    fn an_unsealable_file_is_reached_by_file_io_and_a_truncation_fails_accesses() {
        let (fd, file) = memfd(false, 0x4000);
        let window = client_window(fd, 0x1000, 0x3000, Protection::ReadWrite).unwrap();
        assert!(!window.is_mapped());
        let space = AddressSpace::new();
        space.map_memory(0x10_0000, window).unwrap();
        space.write(0x10_0ffe, b"spans a page").unwrap();
        let mut back = [0u8; 12];
        space.read(0x10_0ffe, &mut back).unwrap();
        assert_eq!(&back, b"spans a page");
        space.store_u32_release(0x10_2000, 0xABCD_1234).unwrap();
        let ram = Mapping::anonymous(0x3000).unwrap();
        ram.fill(0, 0x3000, 7).unwrap();
        space.write_from(0x10_0000, &ram, 0, 0x3000).unwrap();
        space.read_into(0x10_0000, &ram, 0, 0x10).unwrap();
        space.fill(0x10_0000, 0x3000, 9).unwrap();

        // The client shrinks its file: every access past the new end fails, none crashes.
        file.set_len(0x2000).unwrap();
        space.read(0x10_0000, &mut back).unwrap();
        assert!(matches!(
            space.read(0x10_1000, &mut back),
            Err(DmaError::Fault { gpa: 0x10_1000, .. })
        ));
        assert!(matches!(
            space.write(0x10_0ff8, &[1; 16]),
            Err(DmaError::Fault { .. })
        ));
        assert!(space.store_u32_release(0x10_2000, 1).is_err());
        assert!(space.write_from(0x10_0000, &ram, 0, 0x3000).is_err());
        assert!(space.read_into(0x10_0000, &ram, 0, 0x3000).is_err());
        assert!(space.fill(0x10_0000, 0x3000, 0).is_err());
        // The write did not grow the file back.
        assert_eq!(file.metadata().unwrap().len(), 0x2000);
    }

    #[test]
    fn read_only_windows_refuse_writes_and_bad_files_are_refused() {
        let (fd, _file) = memfd(false, 0x1000);
        let window = client_window(fd, 0, 0x1000, Protection::ReadOnly).unwrap();
        let space = AddressSpace::new();
        space.map_memory(0, window).unwrap();
        assert_eq!(
            space.write(0x10, &[1]),
            Err(DmaError::ReadOnly { gpa: 0x10 })
        );
        let (fd, _file) = memfd(true, 0x1000);
        assert!(matches!(
            client_window(fd, 0x800, 0x1000, Protection::ReadOnly),
            Err(ClientFileError::BeyondEnd { .. })
        ));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = client_window(a.into(), 0, 0x1000, Protection::ReadOnly).unwrap_err();
        assert!(matches!(err, ClientFileError::NotAFile));
        assert_eq!(err.raw_os_error(), libc::EINVAL);
    }
}
