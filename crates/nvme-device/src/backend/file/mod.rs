//! The file backend: a regular file or block device.
//!
//! Host-side accesses (migration copies, Write Zeroes, deallocation) and the `sync` engine use
//! `pread`/`pwrite` through a per-thread bounce buffer. Guest Reads, Writes and Flushes go
//! through an asynchronous [`IoQueue`] per I/O worker, chosen by [`FileAio`]:
//!
//! * [`uring`]: an io_uring per queue (the default);
//! * [`threads`]: a few threads per queue, used where io_uring cannot be set up (with one
//!   warning naming why) or when asked for;
//! * `sync`: no queue, the worker runs `pread`/`pwrite` itself.
//!
//! Both asynchronous engines have the kernel read into and write from guest memory in place
//! (one copy, the kernel's), through the [`slots`] of their queue, which fall back to a
//! 4096-aligned bounce buffer where guest memory cannot be handed to the kernel; they signal
//! completions on an eventfd (`crate::notifier`).

mod inline;
mod slots;
mod threads;
mod uring;
mod vectored;

use std::cell::RefCell;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Seek;
use std::io::SeekFrom;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;

use super::Backend;
use super::BackendError;
use super::IoKind;
use super::IoQueue;
use crate::memory::DmaMemory;

/// How a file namespace carries out guest Reads, Writes and Flushes (`aio=` of a namespace
/// specification).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileAio {
    /// An io_uring per I/O worker, falling back to [`Threads`](Self::Threads) when the kernel
    /// or a sandbox refuses io_uring.
    #[default]
    Uring,
    /// A few `pread`/`pwrite` threads per I/O worker.
    Threads,
    /// `pread`/`pwrite` inside the worker's pass (blocks its queues while the file works).
    Sync,
}

impl FileAio {
    /// The name used in namespace specifications (`uring`, `threads`, `sync`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Threads => "threads",
            Self::Sync => "sync",
        }
    }

    /// The engine named `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Uring, Self::Threads, Self::Sync]
            .into_iter()
            .find(|aio| aio.name() == name)
    }
}

/// The error of a transfer that stopped early: end of file on a read (the file is shorter than
/// the namespace: truncated behind our back), nothing written on a write.
fn short_transfer(kind: IoKind) -> io::Error {
    match kind {
        IoKind::Read => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "end of file inside the namespace: the file was truncated",
        ),
        _ => io::Error::new(io::ErrorKind::WriteZero, "the file accepted no more bytes"),
    }
}

/// Size of the per-thread bounce buffer between guest memory and the file; larger transfers are
/// carried out in pieces of this size.
const BOUNCE_BYTES: usize = 256 * 1024;
/// Alignment of the bounce buffer, enough for `O_DIRECT` on any common device.
const BOUNCE_ALIGN: usize = 4096;

thread_local! {
    /// One reusable bounce buffer per I/O thread, so the I/O path allocates nothing per command.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with an aligned, `len`-byte scratch slice (`len <= BOUNCE_BYTES`).
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.is_empty() {
            buf.resize(BOUNCE_BYTES + BOUNCE_ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(BOUNCE_ALIGN);
        f(&mut buf[start..start + len])
    })
}

/// Runs `f(done, piece)` over `len` bytes in bounce-buffer pieces (`done` bytes before each),
/// stopping at the first error.
fn in_bounce_pieces(
    len: u64,
    mut f: impl FnMut(u64, &mut [u8]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(BOUNCE_BYTES as u64) as usize;
        with_bounce(n, |buf| f(done, buf))?;
        done += n as u64;
    }
    Ok(())
}

/// A namespace stored in a file or block device.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    path: PathBuf,
    size: u64,
    direct: bool,
    aio: FileAio,
    /// Whether io_uring queues of a buffered file write inline while that does not block.
    inline_writes: bool,
    /// Why io_uring could not be set up, once it failed (later queues use threads at once).
    uring_refused: OnceLock<String>,
}

impl FileBackend {
    /// Opens `path` read-write. With `direct`, I/O bypasses the page cache (`O_DIRECT`); the
    /// namespace's block size must then be a multiple of the device's logical block size.
    /// With `size`, a regular file is created or extended to that size; without it the current
    /// size is used and must be non-zero. Every error names the path, and a file this call
    /// created is removed again when it cannot be given its size (nothing is left behind).
    pub fn open(path: &Path, size: Option<u64>, direct: bool) -> io::Result<Self> {
        let named = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot {what} namespace file {}: {e}", path.display()),
            )
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let (mut file, created) = match options.open(path) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound && size.is_some() => {
                let file = options
                    .create_new(true)
                    .open(path)
                    .map_err(|e| named("create", e))?;
                (file, true)
            }
            Err(e) => return Err(named("open", e)),
        };
        let sized = Self::size_to(&mut file, size).map_err(|e| named("size", e));
        let size = match sized {
            Ok(size) => size,
            Err(e) if created => {
                return Err(match std::fs::remove_file(path) {
                    Ok(()) => e,
                    Err(removed) => io::Error::new(
                        e.kind(),
                        format!("{e} (and the file just created could not be removed: {removed})"),
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            direct,
            aio: FileAio::default(),
            inline_writes: true,
            uring_refused: OnceLock::new(),
        })
    }

    /// Uses `aio` for guest I/O (see [`FileAio`]; io_uring by default). For io_uring, a small
    /// ring is made at once, so a kernel or sandbox that refuses it is reported (one warning)
    /// when the namespace is set up rather than at its first I/O.
    pub fn with_aio(mut self, aio: FileAio) -> Self {
        self.aio = aio;
        if aio == FileAio::Uring
            && let Err(e) = uring::ring(1)
        {
            self.refuse_uring(&e);
        }
        self
    }

    /// With `false`, the io_uring engine hands every buffered write to the ring, as it does
    /// under `O_DIRECT`; by default (`true`) the worker writes to the page cache itself while
    /// such writes do not block it (see the `inline` module: on ext4 io_uring would give each
    /// buffered write to a kernel worker thread). No effect on the other engines.
    pub fn with_inline_writes(mut self, inline_writes: bool) -> Self {
        self.inline_writes = inline_writes;
        self
    }

    /// Whether buffered writes may be done inline ([`with_inline_writes`](Self::with_inline_writes)).
    pub fn inline_writes(&self) -> bool {
        self.inline_writes
    }

    /// Records why io_uring cannot be used (the first reason only) and warns once.
    fn refuse_uring(&self, error: &io::Error) {
        if self.uring_refused.set(error.to_string()).is_ok() {
            tracing::warn!(
                path = %self.path.display(),
                "io_uring is not available ({error}; a kernel without it, a seccomp filter or \
                 kernel.io_uring_disabled): namespace file {} uses I/O threads instead; give \
                 aio=threads to choose them and silence this warning",
                self.path.display()
            );
        }
    }

    /// The engine asked for (with [`FileAio::Uring`], queues may still use threads: see
    /// [`uring_refused`](Self::uring_refused)).
    pub fn aio(&self) -> FileAio {
        self.aio
    }

    /// Why io_uring could not be set up for this backend, once a queue found out.
    pub fn uring_refused(&self) -> Option<&str> {
        self.uring_refused.get().map(String::as_str)
    }

    /// An io_uring queue from `ring`, or when `ring` failed the thread engine, warning once.
    fn uring_or_threads(
        &self,
        ring: io::Result<io_uring::IoUring>,
        mem: Arc<dyn DmaMemory>,
        depth: usize,
    ) -> io::Result<Box<dyn IoQueue>> {
        match ring {
            Ok(ring) => Ok(Box::new(uring::UringQueue::new(
                ring,
                &self.file,
                mem,
                depth,
                self.direct,
                self.inline_writes,
            )?)),
            Err(e) => {
                self.refuse_uring(&e);
                Ok(Box::new(threads::ThreadQueue::new(
                    &self.file,
                    mem,
                    depth,
                    self.direct,
                )?))
            }
        }
    }

    /// Extends `file` to `size` if it is smaller and returns the namespace size: `size`, or the
    /// file's current size when none is given (which must then be non-zero).
    fn size_to(file: &mut File, size: Option<u64>) -> io::Result<u64> {
        let current = file.seek(SeekFrom::End(0))?;
        match size {
            Some(size) if size > current => {
                file.set_len(size)?;
                Ok(size)
            }
            Some(size) => Ok(size),
            None if current == 0 => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file is empty: give a size to create it",
            )),
            None => Ok(current),
        }
    }

    /// The path the backend was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was opened with `O_DIRECT`.
    pub fn direct(&self) -> bool {
        self.direct
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range too large",
            ));
        };
        // SAFETY: fallocate only operates on the open descriptor; no memory is passed.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_bytes(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE_BYTES as u64) as usize;
            with_bounce(n, |buf| {
                buf.fill(0);
                self.file.write_all_at(buf, offset + done)
            })?;
            done += n as u64;
        }
        Ok(())
    }

    fn seek_data_hole(&self, whence: libc::c_int, offset: u64) -> io::Result<Option<u64>> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: lseek only operates on the open descriptor. Our I/O uses pread/pwrite, which
        // ignore the file position, so moving it is harmless.
        let pos = unsafe { libc::lseek(self.file.as_raw_fd(), off, whence) };
        if pos >= 0 {
            return Ok(Some(pos as u64));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(err)
        }
    }
}

impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_to_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        in_bounce_pieces(len, |done, buf| {
            self.file.read_exact_at(buf, offset + done)?;
            mem.write(gpa + done, buf)?;
            Ok(())
        })
    }

    fn write_from_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        in_bounce_pieces(len, |done, buf| {
            mem.read(gpa + done, buf)?;
            self.file.write_all_at(buf, offset + done)?;
            Ok(())
        })
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if !self.direct {
            return self.file.read_exact_at(buf, offset);
        }
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(BOUNCE_BYTES);
            with_bounce(n, |bounce| {
                self.file.read_exact_at(bounce, offset + done as u64)?;
                buf[done..done + n].copy_from_slice(bounce);
                io::Result::Ok(())
            })?;
            done += n;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.direct {
            return self.file.write_all_at(data, offset);
        }
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(BOUNCE_BYTES);
            with_bounce(n, |bounce| {
                bounce.copy_from_slice(&data[done..done + n]);
                self.file.write_all_at(bounce, offset + done as u64)
            })?;
            done += n;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
        .or_else(|_| self.write_zero_bytes(offset, len))
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
        .or_else(|_| self.write_zero_bytes(offset, len))
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn io_queue(
        &self,
        mem: Arc<dyn DmaMemory>,
        depth: u32,
    ) -> io::Result<Option<Box<dyn IoQueue>>> {
        let depth = depth as usize;
        let queue = match self.aio {
            FileAio::Sync => return Ok(None),
            FileAio::Threads => Box::new(threads::ThreadQueue::new(
                &self.file,
                mem,
                depth,
                self.direct,
            )?),
            FileAio::Uring if self.uring_refused.get().is_some() => Box::new(
                threads::ThreadQueue::new(&self.file, mem, depth, self.direct)?,
            ),
            FileAio::Uring => self.uring_or_threads(uring::ring(depth), mem, depth)?,
        };
        Ok(Some(queue))
    }

    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < self.size {
            let Some(data) = (match self.seek_data_hole(libc::SEEK_DATA, pos) {
                Ok(found) => found,
                // No hole support (e.g. a block device): everything may hold data.
                Err(_) => return Ok(std::iter::once(0..self.size).collect()),
            }) else {
                break;
            };
            if data >= self.size {
                break;
            }
            let hole = self
                .seek_data_hole(libc::SEEK_HOLE, data)?
                .unwrap_or(self.size)
                .min(self.size);
            out.push(data..hole);
            pos = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::IoRequest;
    use shmem::AddressSpace;
    use shmem::Mapping;

    fn backend(name: &str) -> (FileBackend, PathBuf) {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        (
            FileBackend::open(&path, Some(1 << 20), false).unwrap(),
            path,
        )
    }

    fn guest() -> Arc<AddressSpace> {
        let space = AddressSpace::new();
        space
            .map(0, Mapping::memfd("guest", 1 << 20).unwrap())
            .unwrap();
        Arc::new(space)
    }

    /// Writes a page through `queue` and reads it back into other guest memory.
    fn works(queue: &mut dyn IoQueue, mem: &AddressSpace) {
        mem.write(0x1000, &[0x5A; 4096]).unwrap();
        let page = |gpa| crate::prp::walk(mem, nvme_spec::prp::PageSize::SIZE_4K, gpa, 0, 4096);
        let write = IoRequest {
            tag: 1,
            kind: IoKind::Write { fua: false },
            offset: 8192,
            len: 4096,
            segments: page(0x1000).unwrap(),
            batched: false,
        };
        let read = IoRequest {
            tag: 2,
            kind: IoKind::Read,
            segments: page(0x3000).unwrap(),
            ..write.clone()
        };
        for request in [write, read] {
            queue.submit(&request).unwrap();
            let mut done = Vec::new();
            while done.is_empty() {
                queue.reap(&mut done);
                std::thread::yield_now();
            }
            assert!(done[0].1.is_ok(), "{:?}", done[0]);
        }
        let mut back = [0; 4096];
        mem.read(0x3000, &mut back).unwrap();
        assert_eq!(back, [0x5A; 4096]);
    }

    #[test]
    fn refused_uring_falls_back_to_threads() {
        let (file, path) = backend("uring-refused");
        let mem = guest();
        let refused = io::Error::from_raw_os_error(libc::EPERM);
        let mut queue = file.uring_or_threads(Err(refused), mem.clone(), 4).unwrap();
        assert!(format!("{queue:?}").starts_with("ThreadQueue"), "{queue:?}");
        works(queue.as_mut(), &mem);
        let why = file.uring_refused().expect("the refusal is kept");
        assert!(why.contains("not permitted"), "{why}");
        // Later queues do not try again.
        let again = file.io_queue(mem.clone(), 4).unwrap().unwrap();
        assert!(format!("{again:?}").starts_with("ThreadQueue"), "{again:?}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn engines_are_chosen_by_aio() {
        let (file, path) = backend("aio-choice");
        let mem = guest();
        let file = file.with_aio(FileAio::Threads);
        let queue = file.io_queue(mem.clone(), 4).unwrap().unwrap();
        assert!(format!("{queue:?}").starts_with("ThreadQueue"), "{queue:?}");
        let file = file.with_aio(FileAio::Uring);
        match uring::ring(4) {
            Ok(_) => {
                let mut queue = file.io_queue(mem.clone(), 4).unwrap().unwrap();
                assert!(format!("{queue:?}").starts_with("UringQueue"), "{queue:?}");
                works(queue.as_mut(), &mem);
            }
            Err(e) => println!("io_uring unavailable here ({e}): only the fallback is tested"),
        }
        assert!(
            file.with_aio(FileAio::Sync)
                .io_queue(mem, 4)
                .unwrap()
                .is_none()
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn aio_names_round_trip() {
        for aio in [FileAio::Uring, FileAio::Threads, FileAio::Sync] {
            assert_eq!(FileAio::from_name(aio.name()), Some(aio));
        }
        assert_eq!(FileAio::from_name("aio"), None);
    }
}
