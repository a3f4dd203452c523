//! The [`Mapping`] type: one `mmap`ed range and safe, bounds-checked operations on it.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

/// Whether a mapping may be written through this process's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Read-only: writes fail with [`AccessError::ReadOnly`].
    ReadOnly,
    /// Readable and writable.
    ReadWrite,
}

/// A rejected access to a [`Mapping`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The range `[offset, offset + len)` does not lie inside the mapping.
    #[error("access of {len} bytes at offset {offset:#x} is outside the {size:#x}-byte mapping")]
    OutOfBounds {
        /// Offset of the access within the mapping.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the mapping.
        size: u64,
    },
    /// A write to a read-only mapping.
    #[error("write of {len} bytes at offset {offset:#x} to a read-only mapping")]
    ReadOnly {
        /// Offset of the write within the mapping.
        offset: u64,
        /// Length of the write.
        len: u64,
    },
    /// An atomic access at an offset that is not naturally aligned.
    #[error("atomic access at offset {offset:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Offset of the access.
        offset: u64,
        /// Required alignment.
        align: u64,
    },
}

/// One memory mapping owned by this process.
///
/// The mapping is unmapped when the value is dropped. If it was created from or with a file
/// descriptor, the descriptor is kept open for the mapping's lifetime and can be shared with
/// another process through [`Mapping::fd`].
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    protection: Protection,
    fd: Option<OwnedFd>,
    anonymous_private: bool,
}

// SAFETY: `Mapping` owns its mapping; all access goes through methods that copy bytes or use
// atomics, so sharing the handle between threads cannot create aliasing Rust references.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent copies into the same bytes can tear, which is the documented
// behaviour of DMA, but never produce undefined behaviour in this process's Rust state.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates private, zero-filled anonymous memory of `len` bytes that the kernel backs lazily
    /// (`MAP_NORESERVE`): untouched pages cost nothing, so a 1 TiB sparse namespace is fine.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        let ptr = map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )?;
        Ok(Self {
            ptr,
            len,
            protection: Protection::ReadWrite,
            fd: None,
            anonymous_private: true,
        })
    }

    /// Creates a shared memory file (`memfd_create`) of `len` bytes, maps it read-write and keeps
    /// the descriptor so it can be passed to another process (guest RAM, doorbell pages).
    ///
    /// The file is sealed at its size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, as QEMU's
    /// memfd backend seals guest RAM): a process it is shared with can neither truncate it, which
    /// would make every access through this mapping raise SIGBUS and kill this process, nor
    /// remove the seals. Its contents stay writable by everyone who maps it.
    pub fn memfd(name: &str, len: usize) -> io::Result<Self> {
        let fd = crate::seal::memfd_create(name, true)?;
        File::from(fd.try_clone()?).set_len(len as u64)?;
        crate::seal::add_seals(fd.as_fd(), crate::seal::SIZE_SEALS | libc::F_SEAL_SEAL)?;
        Self::from_fd(fd, 0, len, Protection::ReadWrite)
    }

    /// Maps `len` bytes of the file behind `fd`, starting at file offset `offset`, shared with
    /// every other mapping of that file. `fd` is kept open while the mapping lives.
    pub fn from_fd(
        fd: OwnedFd,
        offset: u64,
        len: usize,
        protection: Protection,
    ) -> io::Result<Self> {
        let prot = match protection {
            Protection::ReadOnly => libc::PROT_READ,
            Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping offset too large"))?;
        let ptr = map(len, prot, libc::MAP_SHARED, fd.as_raw_fd(), offset)?;
        Ok(Self {
            ptr,
            len,
            protection,
            fd: Some(fd),
            anonymous_private: false,
        })
    }

    /// The size of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True for a zero-length mapping (never produced by the constructors, which reject it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The protection this process mapped the memory with.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The file descriptor behind the mapping, if it has one (memfd or file mappings).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Checks that `[offset, offset + len)` is inside the mapping and returns it as a `usize` range.
    fn check(&self, offset: u64, len: u64) -> Result<Range<usize>, AccessError> {
        let err = AccessError::OutOfBounds {
            offset,
            len,
            size: self.len as u64,
        };
        let end = offset.checked_add(len).ok_or(err.clone())?;
        if end > self.len as u64 {
            return Err(err);
        }
        // Both fit in `self.len`, which is a `usize`.
        Ok(offset as usize..end as usize)
    }

    fn check_writable(&self, offset: u64, len: u64) -> Result<Range<usize>, AccessError> {
        let range = self.check(offset, len)?;
        if self.protection == Protection::ReadOnly {
            return Err(AccessError::ReadOnly { offset, len });
        }
        Ok(range)
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the mapping.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let range = self.check(offset, buf.len() as u64)?;
        // SAFETY: `range` lies inside the live mapping (checked above) and `buf` is a distinct
        // Rust allocation, so the regions do not overlap. No reference to mapped bytes is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(range.start),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        let range = self.check_writable(offset, data.len() as u64)?;
        // SAFETY: `range` lies inside the live, writable mapping (checked above) and `data` is a
        // distinct Rust allocation. No reference to mapped bytes is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(range.start),
                data.len(),
            );
        }
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), AccessError> {
        let range = self.check_writable(offset, len)?;
        // SAFETY: `range` lies inside the live, writable mapping (checked above).
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr().add(range.start), byte, range.len());
        }
        Ok(())
    }

    /// Copies `len` bytes from `self` at `offset` into `dst` at `dst_offset` without a bounce
    /// buffer. The two mappings may be the same object only if the ranges do not overlap; an
    /// overlapping self-copy is carried out as a `memmove`.
    pub fn copy_to(
        &self,
        offset: u64,
        dst: &Mapping,
        dst_offset: u64,
        len: u64,
    ) -> Result<(), AccessError> {
        let src = self.check(offset, len)?;
        let dst_range = dst.check_writable(dst_offset, len)?;
        // SAFETY: both ranges lie inside live mappings (checked above); `copy` tolerates
        // overlap, which can only happen when `self` and `dst` are the same mapping.
        unsafe {
            std::ptr::copy(
                self.ptr.as_ptr().add(src.start),
                dst.ptr.as_ptr().add(dst_range.start),
                src.len(),
            );
        }
        Ok(())
    }

    /// The address in this process of `[offset, offset + len)`, checked to lie inside the mapping
    /// (and, with `writable`, that the mapping may be written), for I/O the kernel carries out on
    /// the memory itself (`readv`/`writev`, io_uring). The pointer is only valid while the
    /// mapping lives; keeping it alive for the I/O is the caller's part (see
    /// [`AddressSpace::pin`](crate::AddressSpace::pin)).
    pub fn host_range(
        &self,
        offset: u64,
        len: u64,
        writable: bool,
    ) -> Result<NonNull<u8>, AccessError> {
        let range = if writable {
            self.check_writable(offset, len)?
        } else {
            self.check(offset, len)?
        };
        // SAFETY: `range.start <= self.len` (checked above), so the pointer stays inside (or one
        // past the end of) the mapping.
        Ok(unsafe { self.ptr.add(range.start) })
    }

    /// The naturally aligned `u32` at `offset` of a writable mapping as an atomic: doorbells and
    /// other words shared with another process that must be read or written whole. Read-only
    /// mappings are refused, because a store through the returned reference would fault.
    pub fn atomic_u32(&self, offset: u64) -> Result<&AtomicU32, AccessError> {
        let range = self.check_writable(offset, 4)?;
        let addr = self.ptr.as_ptr() as usize + range.start;
        if !addr.is_multiple_of(align_of::<AtomicU32>()) {
            return Err(AccessError::Misaligned { offset, align: 4 });
        }
        // SAFETY: the 4 bytes lie inside the live, writable mapping and are aligned for
        // `AtomicU32`, which has the same layout as `u32`. All access to these bytes from this
        // process is atomic or a byte copy; the returned reference lives no longer than `self`,
        // which keeps the mapping alive.
        Ok(unsafe { &*(addr as *const AtomicU32) })
    }

    /// Returns `len` bytes at `offset` to the "never written" state: they read as zeros and, for
    /// sparse memory, stop occupying RAM. Only whole pages inside the range are released; the
    /// partial pages at either end are zero-filled.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), AccessError> {
        let range = self.check_writable(offset, len)?;
        let page = page_size();
        let first_full = range.start.next_multiple_of(page);
        let last_full = range.end / page * page;
        if first_full >= last_full {
            return self.fill(offset, len, 0);
        }
        self.fill(offset, (first_full - range.start) as u64, 0)?;
        self.fill(last_full as u64, (range.end - last_full) as u64, 0)?;
        let released = if self.anonymous_private {
            // SAFETY: the page-aligned range lies inside our private anonymous mapping; after
            // MADV_DONTNEED its pages read as zeros, which is the documented effect.
            unsafe {
                libc::madvise(
                    self.ptr.as_ptr().add(first_full).cast(),
                    last_full - first_full,
                    libc::MADV_DONTNEED,
                )
            }
        } else {
            // SAFETY: as above; MADV_REMOVE frees the backing store of a shared mapping, after
            // which the range reads as zeros in every process that maps it.
            unsafe {
                libc::madvise(
                    self.ptr.as_ptr().add(first_full).cast(),
                    last_full - first_full,
                    libc::MADV_REMOVE,
                )
            }
        };
        if released != 0 {
            // The kernel refused to release (e.g. a file system without hole punching): zeroing
            // gives the same contents, only without freeing memory.
            self.fill(first_full as u64, (last_full - first_full) as u64, 0)?;
        }
        Ok(())
    }

    /// Backs every page of the mapping with memory now, so later writes take no page faults:
    /// what QEMU's `prealloc=on` does for guest RAM. The kernel zeroes each new page, which is
    /// most of the cost of a first write; `threads` threads share the work, each populating one
    /// slice (`MADV_POPULATE_WRITE`, or an atomic no-op write of each page's first byte on
    /// kernels before 5.14). Contents are unchanged. Fails if the memory cannot be had (the
    /// error names how much was asked for) or the mapping is read-only.
    pub fn populate(&self, threads: usize) -> io::Result<()> {
        if self.protection == Protection::ReadOnly {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a read-only mapping cannot be preallocated",
            ));
        }
        let page = page_size();
        let slice = self
            .len
            .div_ceil(threads.max(1))
            .next_multiple_of(page)
            .max(page);
        let base = self.ptr.as_ptr() as usize;
        let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.len)
                .step_by(slice)
                .map(|start| {
                    let len = slice.min(self.len - start);
                    scope.spawn(move || populate_range(base + start, len, page))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a thread panicked")))
                })
                .collect()
        });
        results
            .into_iter()
            .collect::<io::Result<()>>()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot preallocate {} MiB: {e}", self.len >> 20),
                )
            })
    }

    /// The page-aligned ranges of the mapping that are backed by memory (have been written or
    /// read since creation or the last [`discard`](Self::discard)); every byte outside them reads
    /// as zero. Adjacent pages are merged. For sparse namespaces this is "all allocated data".
    pub fn resident_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        /// Pages asked about per `mincore` call, so the status vector stays small even for a
        /// terabyte-sized sparse mapping.
        const PAGES_PER_CALL: usize = 1 << 16;
        let page = page_size();
        let pages = self.len.div_ceil(page);
        let mut status = vec![0u8; PAGES_PER_CALL.min(pages)];
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut first = 0;
        while first < pages {
            let count = PAGES_PER_CALL.min(pages - first);
            let bytes = (count * page).min(self.len - first * page);
            // SAFETY: the queried range starts page-aligned inside the mapping (mmap returns a
            // page-aligned address) and `status` has at least one byte per page queried.
            let rc = unsafe {
                libc::mincore(
                    self.ptr.as_ptr().add(first * page).cast(),
                    bytes,
                    status.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            for (i, v) in status[..count].iter().enumerate() {
                if v & 1 == 0 {
                    continue;
                }
                let start = ((first + i) * page) as u64;
                let end = ((first + i + 1) * page).min(self.len) as u64;
                match out.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => out.push(start..end),
                }
            }
            first += count;
        }
        Ok(out)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `map` and owned by `self`; nothing
        // can reference it after drop because every borrow is tied to `&self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The system page size.
/// Populates the `len` bytes at address `addr` (page-aligned, inside a live writable mapping
/// owned by the caller) for writing.
fn populate_range(addr: usize, len: usize, page: usize) -> io::Result<()> {
    loop {
        // SAFETY: the range lies inside the caller's live mapping; MADV_POPULATE_WRITE only
        // faults its pages in (as writes would), leaving their contents unchanged.
        let rc =
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Before Linux 5.14: fault each page in with an atomic no-op write of its first
            // byte (atomic, so a concurrent writer's byte is never lost).
            Some(libc::EINVAL) => break,
            _ => return Err(e),
        }
    }
    for at in (0..len).step_by(page) {
        // SAFETY: the byte lies inside the caller's live writable mapping (page-aligned, so
        // aligned for a u8), which is only ever accessed with copies and atomics, never
        // through Rust references.
        let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr((addr + at) as *mut u8) };
        byte.fetch_or(0, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

fn map(
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot map zero bytes",
        ));
    }
    // SAFETY: a fresh mapping at a kernel-chosen address cannot alias anything; the arguments
    // are checked by the kernel, which reports failure as MAP_FAILED.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn read_write_bounds() {
        let m = Mapping::anonymous(8192).unwrap();
        m.write(4090, b"hello!").unwrap();
        let mut buf = [0u8; 6];
        m.read(4090, &mut buf).unwrap();
        assert_eq!(&buf, b"hello!");
        assert_eq!(
            m.write(8190, b"abc"),
            Err(AccessError::OutOfBounds {
                offset: 8190,
                len: 3,
                size: 8192
            })
        );
        assert!(m.read(u64::MAX, &mut buf).is_err());
        assert!(m.fill(0, 8193, 1).is_err());
        m.fill(0, 8192, 0xAA).unwrap();
        m.read(8186, &mut buf).unwrap();
        assert_eq!(buf, [0xAA; 6]);
    }

    #[test]
    fn memfd_is_shared_between_mappings() {
        let a = Mapping::memfd("test", 4096).unwrap();
        let fd = a.fd().unwrap().try_clone_to_owned().unwrap();
        let b = Mapping::from_fd(fd, 0, 4096, Protection::ReadOnly).unwrap();
        let fd = a.fd().unwrap().try_clone_to_owned().unwrap();
        let c = Mapping::from_fd(fd, 0, 4096, Protection::ReadWrite).unwrap();
        a.write(100, &[1, 2, 3]).unwrap();
        let mut buf = [0u8; 3];
        b.read(100, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(
            b.write(0, &[1]),
            Err(AccessError::ReadOnly { offset: 0, len: 1 })
        );
        a.atomic_u32(8)
            .unwrap()
            .store(0xDEAD_BEEF, Ordering::Release);
        assert_eq!(
            c.atomic_u32(8).unwrap().load(Ordering::Acquire),
            0xDEAD_BEEF
        );
        let mut word = [0u8; 4];
        b.read(8, &mut word).unwrap();
        assert_eq!(u32::from_ne_bytes(word), 0xDEAD_BEEF);
        assert_eq!(
            c.atomic_u32(6).unwrap_err(),
            AccessError::Misaligned {
                offset: 6,
                align: 4
            }
        );
        assert!(c.atomic_u32(4094).is_err());
        assert_eq!(
            b.atomic_u32(8).unwrap_err(),
            AccessError::ReadOnly { offset: 8, len: 4 }
        );
    }

    #[test]
    fn memfds_are_sealed_at_their_size_for_good() {
        let m = Mapping::memfd("sealed", 8192).unwrap();
        let file = File::from(m.fd().unwrap().try_clone_to_owned().unwrap());
        for len in [0, 4096, 16384] {
            let err = file.set_len(len).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "set_len({len})");
        }
        let seals = crate::seal::seals(m.fd().unwrap()).unwrap();
        assert_eq!(
            seals,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL
        );
        // The contents stay writable through every mapping.
        m.write(8191, &[1]).unwrap();
    }

    #[test]
    fn sparse_memory_tracks_resident_pages() {
        let len = 64 << 20;
        let m = Mapping::anonymous(len).unwrap();
        assert!(m.resident_ranges().unwrap().is_empty());
        m.write(4096 * 3, &[7; 10]).unwrap();
        m.write(4096 * 4 + 5, &[7; 10]).unwrap();
        m.write(len as u64 - 1, &[9]).unwrap();
        let ranges = m.resident_ranges().unwrap();
        assert_eq!(
            ranges,
            vec![4096 * 3..4096 * 5, len as u64 - 4096..len as u64]
        );
        m.discard(4096 * 3, 4096 * 2).unwrap();
        assert_eq!(
            m.resident_ranges().unwrap(),
            vec![len as u64 - 4096..len as u64]
        );
        let mut buf = [1u8; 10];
        m.read(4096 * 3, &mut buf).unwrap();
        assert_eq!(buf, [0; 10]);
    }

    #[test]
    fn populate_backs_every_page_and_keeps_contents() {
        // An odd number of pages over three threads: the last slice is shorter.
        let len = 4096 * 37;
        let m = Mapping::anonymous(len).unwrap();
        m.write(4096 * 5 + 1, &[0xAB; 3]).unwrap();
        m.populate(3).unwrap();
        assert_eq!(m.resident_ranges().unwrap(), vec![0..len as u64]);
        let mut buf = [0u8; 5];
        m.read(4096 * 5, &mut buf).unwrap();
        assert_eq!(buf, [0, 0xAB, 0xAB, 0xAB, 0]);
        // More threads than pages, and a shared mapping.
        let shared = Mapping::memfd("populate", 2 * 4096).unwrap();
        shared.populate(8).unwrap();
        assert_eq!(shared.resident_ranges().unwrap(), vec![0..2 * 4096]);
    }

    #[test]
    fn discard_partial_pages_zeroes() {
        let m = Mapping::memfd("discard", 3 * 4096).unwrap();
        m.fill(0, 3 * 4096, 0xFF).unwrap();
        m.discard(100, 2 * 4096).unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        m.read(0, &mut buf).unwrap();
        assert!(buf[..100].iter().all(|&b| b == 0xFF));
        assert!(buf[100..100 + 2 * 4096].iter().all(|&b| b == 0));
        assert!(buf[100 + 2 * 4096..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn copy_between_mappings() {
        let a = Mapping::anonymous(4096).unwrap();
        let b = Mapping::memfd("copy", 4096).unwrap();
        a.write(0, b"abcdef").unwrap();
        a.copy_to(1, &b, 10, 4).unwrap();
        let mut buf = [0u8; 4];
        b.read(10, &mut buf).unwrap();
        assert_eq!(&buf, b"bcde");
        assert!(a.copy_to(4095, &b, 0, 2).is_err());
        assert!(a.copy_to(0, &b, 4095, 2).is_err());
        // Overlapping self-copy behaves like memmove.
        a.copy_to(0, &a, 2, 4).unwrap();
        let mut buf = [0u8; 6];
        a.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"ababcd");
    }

    proptest::proptest! {
        #[test]
        fn any_access_is_checked(offset in proptest::num::u64::ANY, len in 0u64..10_000) {
            let m = Mapping::anonymous(4096).unwrap();
            let mut buf = vec![0u8; len as usize];
            let inside = offset.checked_add(len).is_some_and(|end| end <= 4096);
            proptest::prop_assert_eq!(m.read(offset, &mut buf).is_ok(), inside);
            proptest::prop_assert_eq!(m.write(offset, &buf).is_ok(), inside);
            proptest::prop_assert_eq!(m.fill(offset, len, 3).is_ok(), inside);
            proptest::prop_assert_eq!(m.discard(offset, len).is_ok(), inside);
        }
    }
}
