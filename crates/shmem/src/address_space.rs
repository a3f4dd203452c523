//! [`AddressSpace`]: guest-physical addresses resolved onto a set of [`Mapping`]s.
//!
//! A vfio-user client hands the server its guest RAM as several windows (`DMA_MAP`), each a file
//! descriptor mapped at a guest address, some read-only. The device then addresses that memory by
//! guest-physical address. This type keeps the windows, resolves an access to the one window that
//! holds it (accesses spanning two windows are split), records what the device writes in an
//! optional [`WriteObserver`] (dirty logging for live migration), and lets an unmap wait until no
//! access to the removed window is still in flight.
//!
//! A window is either mapped memory ([`WindowMemory::Mapped`], the fast path: plain copies) or
//! memory reached by explicit calls ([`WindowMemory::Io`], an [`IoMemory`]: file I/O on a
//! client file that may shrink, or messages to the client). An I/O window that cannot be reached
//! fails the access with [`DmaError::Fault`]; nothing an access does can raise a signal.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use crate::AccessError;
use crate::Mapping;

/// Bytes an I/O window moves per call when data comes from or goes to a [`Mapping`] (through a
/// per-thread bounce buffer).
const IO_CHUNK: usize = 64 * 1024;

thread_local! {
    /// One reusable bounce buffer per thread for I/O windows, so no access allocates.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a `len`-byte scratch slice (`len <= IO_CHUNK`).
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < IO_CHUNK {
            buf.resize(IO_CHUNK, 0);
        }
        f(&mut buf[..len])
    })
}

/// Why memory behind an [`IoMemory`] window could not be reached (the client shrank its file,
/// refused or did not answer a DMA message, or went away).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MemoryFault {
    reason: String,
}

impl MemoryFault {
    /// A fault described by `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Guest memory that is not reached through a mapping of this process: every access is an
/// explicit call that reports failure as a [`MemoryFault`] instead of faulting.
///
/// Called on the I/O path; implementations must bound how long a call can take.
pub trait IoMemory: Send + Sync + fmt::Debug {
    /// Size of the window in bytes.
    fn len(&self) -> u64;
    /// Whether the window is empty (never, for a window that was mapped).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether device writes are allowed.
    fn writable(&self) -> bool;
    /// Fills `buf` from offset `offset` of the window (the range lies inside it).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryFault>;
    /// Stores `data` at offset `offset` of the window (the range lies inside it; the window is
    /// writable).
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), MemoryFault>;
}

/// What backs one window of an [`AddressSpace`].
#[derive(Debug)]
pub enum WindowMemory {
    /// Memory mapped into this process that cannot vanish under the mapping (the server's own
    /// memfds, client files sealed against shrinking): accessed with plain copies.
    Mapped(Mapping),
    /// Memory reached by explicit calls.
    Io(Arc<dyn IoMemory>),
}

impl WindowMemory {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Mapped(mapping) => mapping.len(),
            Self::Io(io) => io.len(),
        }
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the device reaches this memory through a mapping (the fast path).
    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped(_))
    }
}

impl From<Mapping> for WindowMemory {
    fn from(mapping: Mapping) -> Self {
        Self::Mapped(mapping)
    }
}

/// Receives the guest-physical ranges the device writes, for dirty-page logging.
///
/// Called on the I/O path for every write, so implementations must be cheap and lock-free.
pub trait WriteObserver: Send + Sync {
    /// `len` bytes starting at guest-physical address `gpa` were written.
    fn written(&self, gpa: u64, len: u64);
}

/// An access to guest memory that cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// No mapped window holds (part of) the range.
    #[error("guest-physical range {gpa:#x}+{len:#x} is not mapped")]
    Unmapped {
        /// First unmapped guest-physical address of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
    },
    /// The window holding the range is mapped read-only.
    #[error("guest-physical address {gpa:#x} is mapped read-only")]
    ReadOnly {
        /// Guest-physical address of the rejected write.
        gpa: u64,
    },
    /// The window is mapped but the memory behind it could not be reached.
    #[error("cannot reach guest-physical range {gpa:#x}+{len:#x}: {fault}")]
    Fault {
        /// First guest-physical address of the failed piece.
        gpa: u64,
        /// Length of the failed piece.
        len: u64,
        /// Why.
        fault: MemoryFault,
    },
}

/// A request to add a window that conflicts with the existing ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The new window overlaps an existing one (vfio-user answers EEXIST).
    #[error(
        "window {new_start:#x}..{new_end:#x} overlaps the mapped window {old_start:#x}..{old_end:#x}"
    )]
    Overlap {
        /// Start of the requested window.
        new_start: u64,
        /// End (exclusive) of the requested window.
        new_end: u64,
        /// Start of the existing window.
        old_start: u64,
        /// End (exclusive) of the existing window.
        old_end: u64,
    },
    /// The window's end does not fit in 64 bits.
    #[error("window at {gpa:#x} of {len:#x} bytes wraps around the address space")]
    Wraps {
        /// Requested start.
        gpa: u64,
        /// Requested length.
        len: u64,
    },
    /// No window starts at exactly this address with exactly this length.
    #[error("no window is mapped at exactly {gpa:#x} with {len:#x} bytes")]
    NotMapped {
        /// Requested start.
        gpa: u64,
        /// Requested length.
        len: u64,
    },
}

#[derive(Clone, Debug)]
struct Window {
    gpa: u64,
    memory: Arc<WindowMemory>,
}

impl Window {
    fn range(&self) -> Range<u64> {
        self.gpa..self.gpa + self.memory.len()
    }
}

/// A snapshot of the windows, sorted by guest address.
type Windows = Arc<Vec<Window>>;

/// Guest memory held in place for I/O that the kernel carries out on it directly (a file
/// backend reading into or writing from the guest's buffers with no bounce copy), from
/// [`AddressSpace::pin`].
///
/// While it lives, the windows it was resolved on stay mapped: an unmap of one of them waits
/// until it is dropped, so the kernel never reads or writes memory the client has taken back.
/// Drop it as soon as the I/O has completed, before the completion reaches the guest.
pub struct Pinned {
    _windows: Windows,
}

impl fmt::Debug for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// Guest-physical memory made of mapped windows. Cheap to share (`Arc`) between the control
/// thread that maps and unmaps and the I/O threads that access it.
#[derive(Default)]
pub struct AddressSpace {
    windows: RwLock<Windows>,
    observer: RwLock<Option<Arc<dyn WriteObserver>>>,
    /// Whether `observer` is set, so the write path skips the lock when nobody observes.
    observed: AtomicBool,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let windows = self.snapshot();
        f.debug_list()
            .entries(windows.iter().map(|w| w.range()))
            .finish()
    }
}

impl AddressSpace {
    /// An empty address space: every access fails until windows are mapped.
    pub fn new() -> Self {
        Self::default()
    }

    fn snapshot(&self) -> Windows {
        self.windows
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Adds `mapping` at guest-physical address `gpa`. Overlapping an existing window fails.
    pub fn map(&self, gpa: u64, mapping: Mapping) -> Result<(), MapError> {
        self.map_memory(gpa, WindowMemory::Mapped(mapping))
    }

    /// Adds `memory` (mapped or reached by I/O) at guest-physical address `gpa`. Overlapping an
    /// existing window fails.
    pub fn map_memory(&self, gpa: u64, memory: WindowMemory) -> Result<(), MapError> {
        let len = memory.len();
        let end = gpa.checked_add(len).ok_or(MapError::Wraps { gpa, len })?;
        let mut guard = self
            .windows
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = guard.iter().find(|w| w.gpa < end && gpa < w.range().end) {
            return Err(MapError::Overlap {
                new_start: gpa,
                new_end: end,
                old_start: old.gpa,
                old_end: old.range().end,
            });
        }
        let mut next: Vec<Window> = guard.as_ref().clone();
        let at = next.partition_point(|w| w.gpa < gpa);
        next.insert(
            at,
            Window {
                gpa,
                memory: Arc::new(memory),
            },
        );
        *guard = Arc::new(next);
        Ok(())
    }

    /// Removes the window mapped at exactly `gpa` with exactly `len` bytes and waits until no
    /// access that started before the call still uses it, so that when this returns the device
    /// holds no reference to that memory (the vfio-user `DMA_UNMAP` contract).
    pub fn unmap(&self, gpa: u64, len: u64) -> Result<(), MapError> {
        let removed = {
            let mut guard = self
                .windows
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(index) = guard
                .iter()
                .position(|w| w.gpa == gpa && w.memory.len() == len)
            else {
                return Err(MapError::NotMapped { gpa, len });
            };
            let mut next: Vec<Window> = guard.as_ref().clone();
            let removed = next.remove(index).memory;
            *guard = Arc::new(next);
            removed
        };
        wait_until_unique(removed);
        Ok(())
    }

    /// Removes every window, waiting for in-flight accesses as [`unmap`](Self::unmap) does.
    pub fn unmap_all(&self) {
        let old = std::mem::take(
            &mut *self
                .windows
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let memories: Vec<Arc<WindowMemory>> = old.iter().map(|w| w.memory.clone()).collect();
        drop(old);
        for memory in memories {
            wait_until_unique(memory);
        }
    }

    /// The guest-physical ranges currently mapped, in address order.
    pub fn windows(&self) -> Vec<Range<u64>> {
        self.snapshot().iter().map(Window::range).collect()
    }

    /// Installs (or with `None` removes) the observer told about every write.
    pub fn set_write_observer(&self, observer: Option<Arc<dyn WriteObserver>>) {
        let mut slot = self
            .observer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.observed.store(observer.is_some(), Ordering::Release);
        *slot = observer;
    }

    /// Walks `[gpa, gpa + len)` window by window, calling `f(memory, offset_in_window,
    /// offset_in_access, chunk_len)` for each piece; fails on the first unmapped byte.
    fn for_each_piece(
        &self,
        gpa: u64,
        len: u64,
        mut f: impl FnMut(&WindowMemory, u64, u64, u64) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        let windows = self.snapshot();
        let mut done = 0u64;
        while done < len {
            let at = gpa
                .checked_add(done)
                .ok_or(DmaError::Unmapped { gpa, len })?;
            let window = window_at(&windows, at).ok_or(DmaError::Unmapped { gpa: at, len })?;
            let offset = at - window.gpa;
            let chunk = (window.memory.len() - offset).min(len - done);
            f(&window.memory, offset, done, chunk)?;
            done += chunk;
        }
        Ok(())
    }

    fn observe(&self, gpa: u64, len: u64) {
        if len == 0 || !self.observed.load(Ordering::Acquire) {
            return;
        }
        let guard = self
            .observer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(observer) = guard.as_ref() {
            observer.written(gpa, len);
        }
    }

    /// Resolves the guest ranges `(gpa, len)` onto this process's memory for I/O the kernel
    /// does on it directly, calling `piece(host_address, len)` for each window-sized piece in
    /// order, and holds the windows until the returned [`Pinned`] is dropped.
    ///
    /// `None` means: do it with copies instead. That is the answer when a range is not mapped,
    /// lies in a window reached by I/O calls ([`WindowMemory::Io`]), is read-only while
    /// `writable` (the device is to write it) is asked for, or when `piece` returns false (the
    /// caller cannot take that piece: out of room, misaligned for `O_DIRECT`); the copying path
    /// then reports any error with its exact address. Device writes done through the pin are
    /// not seen by the write observer: report them with [`record_write`](Self::record_write)
    /// once they have completed.
    pub fn pin(
        &self,
        ranges: impl IntoIterator<Item = (u64, u64)>,
        writable: bool,
        mut piece: impl FnMut(NonNull<u8>, usize) -> bool,
    ) -> Option<Pinned> {
        let windows = self.snapshot();
        for (gpa, len) in ranges {
            let mut done = 0u64;
            while done < len {
                let at = gpa.checked_add(done)?;
                let window = window_at(&windows, at)?;
                let WindowMemory::Mapped(mapping) = window.memory.as_ref() else {
                    return None;
                };
                let offset = at - window.gpa;
                let chunk = (mapping.len() - offset).min(len - done);
                let host = mapping.host_range(offset, chunk, writable).ok()?;
                if !piece(host, usize::try_from(chunk).ok()?) {
                    return None;
                }
                done += chunk;
            }
        }
        Some(Pinned { _windows: windows })
    }

    /// Tells the write observer (dirty logging) that the device wrote `len` bytes at `gpa`
    /// through a [`Pinned`] range: call it when that I/O has completed, before the guest learns
    /// of it.
    pub fn record_write(&self, gpa: u64, len: u64) {
        self.observe(gpa, len);
    }

    /// Copies guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len() as u64;
        self.for_each_piece(gpa, len, |memory, off, at, n| {
            let piece = &mut buf[at as usize..(at + n) as usize];
            match memory {
                WindowMemory::Mapped(m) => m.read(off, piece).map_err(|e| access(e, gpa + at)),
                WindowMemory::Io(io) => io.read_at(off, piece).map_err(|f| fault(f, gpa + at, n)),
            }
        })
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), DmaError> {
        let len = data.len() as u64;
        self.for_each_piece(gpa, len, |memory, off, at, n| {
            let piece = &data[at as usize..(at + n) as usize];
            match memory {
                WindowMemory::Mapped(m) => m.write(off, piece).map_err(|e| access(e, gpa + at)),
                WindowMemory::Io(io) => io_write(io.as_ref(), off, piece, gpa + at),
            }
        })?;
        self.observe(gpa, len);
        Ok(())
    }

    /// Sets `len` bytes of guest memory at `gpa` to `byte`.
    pub fn fill(&self, gpa: u64, len: u64, byte: u8) -> Result<(), DmaError> {
        self.for_each_piece(gpa, len, |memory, off, at, n| match memory {
            WindowMemory::Mapped(m) => m.fill(off, n, byte).map_err(|e| access(e, gpa + at)),
            WindowMemory::Io(io) => io_chunks(n, |done, chunk| {
                with_bounce(chunk, |buf| {
                    buf.fill(byte);
                    io_write(io.as_ref(), off + done, buf, gpa + at + done)
                })
            }),
        })?;
        self.observe(gpa, len);
        Ok(())
    }

    /// Stores a naturally aligned `u32` at `gpa` with release ordering, as one indivisible write:
    /// everything written before it is visible to a reader that sees the new value. Completion
    /// queue entries end with such a store of their status word, so a host never sees the new
    /// phase tag before the rest of the entry. (An I/O window gets one 4-byte write after every
    /// earlier write has completed.)
    pub fn store_u32_release(&self, gpa: u64, value: u32) -> Result<(), DmaError> {
        if !gpa.is_multiple_of(4) {
            return Err(DmaError::Unmapped { gpa, len: 4 });
        }
        self.for_each_piece(gpa, 4, |memory, off, _, n| {
            if n != 4 {
                return Err(DmaError::Unmapped { gpa, len: 4 });
            }
            match memory {
                WindowMemory::Mapped(m) => {
                    m.atomic_u32(off)
                        .map_err(|e| access(e, gpa))?
                        .store(value, Ordering::Release);
                    Ok(())
                }
                WindowMemory::Io(io) => io_write(io.as_ref(), off, &value.to_ne_bytes(), gpa),
            }
        })?;
        self.observe(gpa, 4);
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_offset` into guest memory at `gpa` with no bounce
    /// buffer for mapped windows (a RAM namespace serving a Read).
    pub fn write_from(
        &self,
        gpa: u64,
        src: &Mapping,
        src_offset: u64,
        len: u64,
    ) -> Result<(), DmaError> {
        self.for_each_piece(gpa, len, |memory, off, at, n| match memory {
            WindowMemory::Mapped(m) => src
                .copy_to(src_offset + at, m, off, n)
                .map_err(|e| access(e, gpa + at)),
            WindowMemory::Io(io) => io_chunks(n, |done, chunk| {
                with_bounce(chunk, |buf| {
                    src.read(src_offset + at + done, buf)
                        .map_err(|e| access(e, gpa + at + done))?;
                    io_write(io.as_ref(), off + done, buf, gpa + at + done)
                })
            }),
        })?;
        self.observe(gpa, len);
        Ok(())
    }

    /// Copies `len` bytes of guest memory at `gpa` into `dst` at `dst_offset` with no bounce
    /// buffer for mapped windows (a RAM namespace serving a Write).
    pub fn read_into(
        &self,
        gpa: u64,
        dst: &Mapping,
        dst_offset: u64,
        len: u64,
    ) -> Result<(), DmaError> {
        self.for_each_piece(gpa, len, |memory, off, at, n| match memory {
            WindowMemory::Mapped(m) => m
                .copy_to(off, dst, dst_offset + at, n)
                .map_err(|e| access(e, gpa + at)),
            WindowMemory::Io(io) => io_chunks(n, |done, chunk| {
                with_bounce(chunk, |buf| {
                    io.read_at(off + done, buf)
                        .map_err(|f| fault(f, gpa + at + done, chunk as u64))?;
                    dst.write(dst_offset + at + done, buf)
                        .map_err(|e| access(e, gpa + at + done))
                })
            }),
        })
    }
}

/// The window of the sorted `windows` that holds guest address `at`, if any.
fn window_at(windows: &[Window], at: u64) -> Option<&Window> {
    let index = windows.partition_point(|w| w.gpa <= at);
    index
        .checked_sub(1)
        .map(|i| &windows[i])
        .filter(|w| at < w.range().end)
}

/// Splits `len` bytes into [`IO_CHUNK`]-sized pieces and calls `f(done, chunk_len)` for each.
fn io_chunks(
    len: u64,
    mut f: impl FnMut(u64, usize) -> Result<(), DmaError>,
) -> Result<(), DmaError> {
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(IO_CHUNK as u64) as usize;
        f(done, chunk)?;
        done += chunk as u64;
    }
    Ok(())
}

/// A write to an I/O window: refused when the window is read-only.
fn io_write(io: &dyn IoMemory, offset: u64, data: &[u8], gpa: u64) -> Result<(), DmaError> {
    if !io.writable() {
        return Err(DmaError::ReadOnly { gpa });
    }
    io.write_at(offset, data)
        .map_err(|f| fault(f, gpa, data.len() as u64))
}

/// A fault of an I/O window as a guest-level error at `gpa`.
fn fault(fault: MemoryFault, gpa: u64, len: u64) -> DmaError {
    DmaError::Fault { gpa, len, fault }
}

/// Translates a mapping-level error into a guest-level one at `gpa`.
fn access(error: AccessError, gpa: u64) -> DmaError {
    match error {
        AccessError::ReadOnly { .. } => DmaError::ReadOnly { gpa },
        AccessError::OutOfBounds { len, .. } | AccessError::Misaligned { align: len, .. } => {
            DmaError::Unmapped { gpa, len }
        }
    }
}

/// Blocks until `memory` is the last reference, i.e. every access that took a snapshot holding
/// it has finished, then drops (unmaps) it.
fn wait_until_unique(mut memory: Arc<WindowMemory>) {
    let mut spins = 0u32;
    loop {
        match Arc::try_unwrap(memory) {
            Ok(_last) => return,
            Err(shared) => {
                memory = shared;
                spins += 1;
                if spins < 100 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    fn space() -> AddressSpace {
        let s = AddressSpace::new();
        s.map(0x10000, Mapping::memfd("a", 0x2000).unwrap())
            .unwrap();
        s.map(0x12000, Mapping::memfd("b", 0x1000).unwrap())
            .unwrap();
        s
    }

    #[test]
    fn access_spans_adjacent_windows() {
        let s = space();
        let data: Vec<u8> = (0..=255).cycle().take(0x1800).collect();
        s.write(0x11400, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read(0x11400, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn unmapped_and_read_only_accesses_fail() {
        let s = space();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(0x12FF8, &mut buf),
            Err(DmaError::Unmapped {
                gpa: 0x13000,
                len: 16
            })
        );
        assert!(s.read(0xFFF8, &mut buf).is_err());
        assert!(s.read(u64::MAX - 4, &mut buf).is_err());
        let ro = Mapping::memfd("ro", 0x1000).unwrap();
        let fd = ro.fd().unwrap().try_clone_to_owned().unwrap();
        let view = Mapping::from_fd(fd, 0, 0x1000, crate::Protection::ReadOnly).unwrap();
        s.map(0x20000, view).unwrap();
        assert_eq!(
            s.write(0x20010, &[1]),
            Err(DmaError::ReadOnly { gpa: 0x20010 })
        );
        s.read(0x20010, &mut buf).unwrap();
    }

    #[test]
    fn overlapping_map_and_inexact_unmap_are_refused() {
        let s = space();
        let err = s
            .map(0x11000, Mapping::anonymous(0x1000).unwrap())
            .unwrap_err();
        assert!(matches!(err, MapError::Overlap { .. }), "{err}");
        assert_eq!(
            s.unmap(0x10000, 0x1000),
            Err(MapError::NotMapped {
                gpa: 0x10000,
                len: 0x1000
            })
        );
        s.unmap(0x10000, 0x2000).unwrap();
        assert_eq!(s.windows(), vec![0x12000..0x13000]);
        s.unmap_all();
        assert!(s.windows().is_empty());
    }

    #[test]
    fn writes_are_observed() {
        #[derive(Default)]
        struct Sum(AtomicU64);
        impl WriteObserver for Sum {
            fn written(&self, _gpa: u64, len: u64) {
                self.0.fetch_add(len, Ordering::Relaxed);
            }
        }
        let s = space();
        let sum = Arc::new(Sum::default());
        s.set_write_observer(Some(sum.clone()));
        s.write(0x10000, &[1; 100]).unwrap();
        s.fill(0x10000, 28, 0).unwrap();
        let src = Mapping::anonymous(4096).unwrap();
        s.write_from(0x12000, &src, 0, 512).unwrap();
        s.read_into(0x12000, &src, 0, 512).unwrap();
        s.store_u32_release(0x12004, 0xABCD).unwrap();
        assert_eq!(sum.0.load(Ordering::Relaxed), 644);
        let mut word = [0u8; 4];
        s.read(0x12004, &mut word).unwrap();
        assert_eq!(u32::from_ne_bytes(word), 0xABCD);
        assert!(s.store_u32_release(0x12002, 1).is_err());
        assert!(s.store_u32_release(0x11FFE, 1).is_err());
        s.set_write_observer(None);
        s.write(0x10000, &[1; 100]).unwrap();
        assert_eq!(sum.0.load(Ordering::Relaxed), 644);
    }

    #[test]
    fn unmap_waits_for_in_flight_access() {
        let s = Arc::new(space());
        let windows = s.snapshot();
        assert_unmap_waits_for(&s, windows, "a snapshot");
    }

    /// Unmaps the window at 0x12000 while `held` lives: the unmap must wait until it is dropped.
    fn assert_unmap_waits_for(s: &Arc<AddressSpace>, held: impl Sized, what: &str) {
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.unmap(0x12000, 0x1000));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "unmap returned while {what} was held");
        drop(held);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn pin_resolves_pieces_and_holds_the_windows() {
        let s = Arc::new(space());
        s.write(0x11FFE, &[7, 8, 9, 10]).unwrap();
        let mut pieces = Vec::new();
        let pinned = s
            .pin([(0x11FFE, 4), (0x10000, 2)], true, |host, len| {
                pieces.push((host, len));
                true
            })
            .expect("mapped, writable windows can be pinned");
        assert_eq!(
            pieces.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![2, 2, 2],
            "a range across two windows is two pieces"
        );
        // SAFETY: the pieces lie inside the live windows that `pinned` holds.
        let bytes: Vec<u8> = pieces[..2]
            .iter()
            .flat_map(|&(host, len)| (0..len).map(move |i| unsafe { host.add(i).read() }))
            .collect();
        assert_eq!(bytes, [7, 8, 9, 10]);
        assert_unmap_waits_for(&s, pinned, "a pin");
    }

    #[test]
    fn pin_declines_what_needs_copies() {
        let s = space();
        let ro = Mapping::memfd("ro", 0x1000).unwrap();
        let fd = ro.fd().unwrap().try_clone_to_owned().unwrap();
        s.map(
            0x20000,
            Mapping::from_fd(fd, 0, 0x1000, crate::Protection::ReadOnly).unwrap(),
        )
        .unwrap();
        #[derive(Debug)]
        struct Io;
        impl IoMemory for Io {
            fn len(&self) -> u64 {
                0x1000
            }
            fn writable(&self) -> bool {
                true
            }
            fn read_at(&self, _: u64, _: &mut [u8]) -> Result<(), MemoryFault> {
                Ok(())
            }
            fn write_at(&self, _: u64, _: &[u8]) -> Result<(), MemoryFault> {
                Ok(())
            }
        }
        s.map_memory(0x30000, WindowMemory::Io(Arc::new(Io)))
            .unwrap();
        let any = |_: NonNull<u8>, _: usize| true;
        assert!(s.pin([(0x20000, 16)], false, any).is_some());
        assert!(s.pin([(0x20000, 16)], true, any).is_none(), "read-only");
        assert!(s.pin([(0x30000, 16)], false, any).is_none(), "I/O window");
        assert!(s.pin([(0x12FF0, 32)], false, any).is_none(), "runs off");
        assert!(s.pin([(u64::MAX - 4, 8)], false, any).is_none(), "wraps");
        assert!(
            s.pin([(0x10000, 16)], false, |_, _| false).is_none(),
            "declined"
        );
    }

    #[test]
    fn writes_through_a_pin_are_recorded_when_reported() {
        #[derive(Default)]
        struct Last(AtomicU64);
        impl WriteObserver for Last {
            fn written(&self, gpa: u64, len: u64) {
                self.0.store(gpa << 16 | len, Ordering::Relaxed);
            }
        }
        let s = space();
        let last = Arc::new(Last::default());
        s.set_write_observer(Some(last.clone()));
        let pinned = s.pin([(0x10010, 0x20)], true, |_, _| true).unwrap();
        assert_eq!(last.0.load(Ordering::Relaxed), 0, "pinning writes nothing");
        s.record_write(0x10010, 0x20);
        drop(pinned);
        assert_eq!(last.0.load(Ordering::Relaxed), 0x10010 << 16 | 0x20);
    }
}
