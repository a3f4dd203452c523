//! The sparse RAM backend.

use std::io;
use std::ops::Range;
use std::time::Duration;

use shmem::Mapping;

use super::Backend;
use super::BackendError;
use super::Held;
use super::hold::Stripes;
use crate::memory::DmaMemory;

/// A namespace held in sparse anonymous memory. Reads and writes copy directly between this
/// memory and guest memory, with no bounce buffer.
///
/// Ranges can be held unchanged for a zero-copy migration send ([`Backend::hold`]); every
/// method that changes bytes therefore counts itself in the stripes of its range while it
/// does (see the `hold` module).
#[derive(Debug)]
pub struct RamBackend {
    memory: Mapping,
    stripes: Stripes,
}

impl RamBackend {
    /// Reserves `size` bytes of address space; no RAM is used until data is written.
    pub fn new(size: u64) -> io::Result<Self> {
        let len = usize::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a RAM namespace of {size} bytes does not fit in this address space"),
            )
        })?;
        Ok(Self {
            memory: Mapping::anonymous(len)?,
            stripes: Stripes::new(size),
        })
    }

    /// Like [`Self::new`], with every page backed by memory at once (one thread per CPU doing
    /// the kernel's zeroing): later writes — a migration into this namespace above all — take
    /// no page faults, at the cost of the whole size in RAM from the start. Every page then
    /// counts as allocated, so a migration *from* this namespace reads all of it (unwritten
    /// pages travel as deallocations).
    ///
    /// A size beyond the memory the kernel reports available (`MemAvailable`) is refused before
    /// anything is touched: populating it would end in the OOM killer, not in an error.
    pub fn preallocated(size: u64) -> io::Result<Self> {
        if let Some(available) = available_memory()
            && size > available
        {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot preallocate a {} MiB RAM namespace: only {} MiB of memory is \
                     available (MemAvailable in /proc/meminfo); drop ,prealloc (the namespace \
                     is then allocated as it is written) or give a smaller size",
                    size >> 20,
                    available >> 20
                ),
            ));
        }
        let backend = Self::new(size)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        backend.memory.populate(threads)?;
        Ok(backend)
    }
}

/// Bytes of memory the kernel reports available for new allocations, if it says.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn io_error(e: shmem::AccessError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

impl Backend for RamBackend {
    fn kind(&self) -> &'static str {
        "ram"
    }

    fn size(&self) -> u64 {
        self.memory.len()
    }

    fn read_to_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        Ok(mem.write_from(gpa, &self.memory, offset, len)?)
    }

    fn write_from_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        let _entered = self.stripes.enter(offset, len);
        Ok(mem.read_into(gpa, &self.memory, offset, len)?)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.memory.read(offset, buf).map_err(io_error)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let _entered = self.stripes.enter(offset, data.len() as u64);
        self.memory.write(offset, data).map_err(io_error)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let _entered = self.stripes.enter(offset, len);
        self.memory.discard(offset, len).map_err(io_error)
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let _entered = self.stripes.enter(offset, len);
        self.memory.discard(offset, len).map_err(io_error)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        self.memory.resident_ranges()
    }

    fn hold(&self, offset: u64, len: u64, patience: Duration) -> Option<Held> {
        let ptr = self.memory.range_ptr(offset, len).ok()?;
        // In range of the mapping, whose length is a `usize`.
        let len = usize::try_from(len).ok()?;
        self.stripes
            .hold(offset, len as u64, patience)
            .then(|| Held::new(ptr, len))
    }

    fn release(&self, offset: u64, len: u64) {
        self.stripes.release(offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Instant;

    /// Patience for holds expected to succeed, and for things expected to happen at all: long
    /// enough for any loaded machine, only ever used up by a failing test.
    const GENEROUS: Duration = Duration::from_secs(60);
    const MIB: u64 = 1 << 20;

    /// Runs `f` on a new thread; its result arrives on the returned channel. A detached thread,
    /// so a failed assertion ends the test even if `f` never returns.
    fn on_thread<T: Send + 'static>(
        backend: &Arc<RamBackend>,
        f: impl FnOnce(&RamBackend) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel();
        let backend = Arc::clone(backend);
        std::thread::spawn(move || tx.send(f(&backend)));
        rx
    }

    /// Waits until `n` commands wait for a release.
    fn wait_for_waiters(backend: &RamBackend, n: usize) {
        let start = Instant::now();
        while backend.stripes.waiters() != n {
            assert!(start.elapsed() < GENEROUS, "{n} commands never waited");
            std::thread::yield_now();
        }
    }

    /// A backend of 4 MiB (four 1 MiB stripes) with its second MiB filled with `0x11`.
    fn filled() -> Arc<RamBackend> {
        let backend = Arc::new(RamBackend::new(4 * MIB).unwrap());
        backend.write(MIB, &vec![0x11; MIB as usize]).unwrap();
        backend
    }

    #[test]
    fn hold_points_at_the_bytes_of_the_range() {
        let backend = filled();
        backend.write(MIB + 100, b"held bytes").unwrap();
        let held = backend.hold(MIB + 96, 4096, GENEROUS).unwrap();
        assert_eq!(held.len(), 4096);
        assert!(!held.is_empty());
        let mut expected = vec![0; 4096];
        backend.read(MIB + 96, &mut expected).unwrap();
        // SAFETY: the hold is released only after the last use of the slice, and `backend`
        // outlives it.
        let bytes = unsafe { held.as_slice() };
        assert_eq!(bytes, expected);
        assert_eq!(&bytes[4..14], b"held bytes");
        assert_eq!(held.as_ptr(), bytes.as_ptr());
        backend.release(MIB + 96, 4096);
        let empty = backend.hold(0, 0, Duration::ZERO).unwrap();
        assert!(empty.is_empty());
        backend.release(0, 0);
    }

    /// Checks that `change` of bytes inside a held range finishes only once the hold is
    /// released, leaving the held bytes alone meanwhile, and that `check` then holds.
    fn waits_for_release(
        change: impl FnOnce(&RamBackend) -> io::Result<()> + Send + 'static,
        check: impl FnOnce(&RamBackend),
    ) {
        let backend = filled();
        let held = backend.hold(MIB, 8192, GENEROUS).unwrap();
        let done = on_thread(&backend, change);
        wait_for_waiters(&backend, 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.try_recv().unwrap_err(), mpsc::TryRecvError::Empty);
        // SAFETY: the slice is dropped before the release below.
        assert!(unsafe { held.as_slice() }.iter().all(|&b| b == 0x11));
        // A change elsewhere goes on meanwhile.
        let elsewhere = on_thread(&backend, |b| b.write(3 * MIB, &[0x33; 512]));
        elsewhere.recv_timeout(GENEROUS).unwrap().unwrap();
        backend.release(MIB, 8192);
        done.recv_timeout(GENEROUS).unwrap().unwrap();
        wait_for_waiters(&backend, 0);
        check(&backend);
        let mut buf = [0; 512];
        backend.read(3 * MIB, &mut buf).unwrap();
        assert_eq!(buf, [0x33; 512]);
    }

    fn read_back(backend: &RamBackend, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        backend.read(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_write_to_a_held_range_waits_for_the_release() {
        waits_for_release(
            |b| b.write(MIB + 4096, &[0x22; 512]),
            |b| assert_eq!(read_back(b, MIB + 4096, 512), [0x22; 512]),
        );
    }

    #[test]
    fn write_zeroes_to_a_held_range_waits_for_the_release() {
        waits_for_release(
            |b| b.write_zeroes(MIB, 2 * MIB),
            |b| assert!(read_back(b, MIB, MIB as usize).iter().all(|&x| x == 0)),
        );
    }

    #[test]
    fn deallocating_a_held_range_waits_for_the_release() {
        // Starts in the stripe before the held one: the first stripe is entered and left again.
        waits_for_release(
            |b| b.deallocate(MIB - 4096, 8192),
            |b| assert_eq!(read_back(b, MIB - 4096, 8192), [0; 8192]),
        );
    }

    #[test]
    fn a_write_from_the_guest_to_a_held_range_waits_for_the_release() {
        let guest = Arc::new(shmem::AddressSpace::new());
        guest
            .map(0, Mapping::memfd("guest", 1 << 16).unwrap())
            .unwrap();
        guest.fill(0, 4096, 0x44).unwrap();
        waits_for_release(
            move |b| {
                b.write_from_guest(MIB, &*guest, 0, 4096)
                    .map_err(io::Error::other)
            },
            |b| assert_eq!(read_back(b, MIB, 4096), [0x44; 4096]),
        );
    }

    #[test]
    fn overlapping_holds_are_refused_until_released() {
        let backend = filled();
        let _held = backend.hold(MIB, 4096, GENEROUS).unwrap();
        assert!(backend.hold(MIB, 4096, GENEROUS).is_none());
        // Another range in the same stripe, and one spanning it, are refused too.
        assert!(backend.hold(2 * MIB - 512, 512, GENEROUS).is_none());
        assert!(backend.hold(0, 4 * MIB, GENEROUS).is_none());
        // A hold of another stripe is not.
        assert!(backend.hold(2 * MIB, 4096, GENEROUS).is_some());
        backend.release(2 * MIB, 4096);
        backend.release(MIB, 4096);
        assert!(backend.hold(0, 4 * MIB, GENEROUS).is_some());
        backend.release(0, 4 * MIB);
        assert!(backend.hold(4 * MIB, 1, GENEROUS).is_none());
        assert!(backend.hold(u64::MAX, 2, GENEROUS).is_none());
    }

    #[test]
    fn a_hold_waits_for_the_commands_in_flight() {
        let backend = filled();
        let in_flight = backend.stripes.enter(MIB, 512);
        let held = on_thread(&backend, |b| b.hold(MIB, 512, GENEROUS).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(held.try_recv().unwrap_err(), mpsc::TryRecvError::Empty);
        drop(in_flight);
        assert!(held.recv_timeout(GENEROUS).unwrap());
        backend.release(MIB, 512);
    }

    #[test]
    fn a_hold_out_of_patience_holds_nothing() {
        let backend = filled();
        let in_flight = backend.stripes.enter(MIB + 512, 512);
        assert!(
            backend
                .hold(0, 2 * MIB, Duration::from_millis(10))
                .is_none()
        );
        // The range is not held: a write to it does not wait.
        let write = on_thread(&backend, |b| b.write(MIB, &[0x55; 512]));
        write.recv_timeout(GENEROUS).unwrap().unwrap();
        assert_eq!(read_back(&backend, MIB, 512), [0x55; 512]);
        drop(in_flight);
        assert!(backend.hold(0, 2 * MIB, Duration::ZERO).is_some());
        backend.release(0, 2 * MIB);
    }

    #[test]
    fn held_bytes_stay_unchanged_under_concurrent_writers() {
        let backend = filled();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let stop = Arc::clone(&stop);
                on_thread(&backend, move |b| {
                    let mut round = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // Spans stripe boundaries now and then: 12 KiB steps over 4 MiB.
                        let at = (round * 12288 + u64::from(w) * 4096) % (4 * MIB - 8192);
                        b.write(at, &[w.wrapping_add(round as u8); 8192]).unwrap();
                        if round.is_multiple_of(7) {
                            b.write_zeroes(at, 4096).unwrap();
                        }
                        round += 1;
                    }
                    round
                })
            })
            .collect();
        for i in 0..200u64 {
            let offset = (i * 300_000) % (3 * MIB);
            let held = backend.hold(offset, MIB, GENEROUS).unwrap();
            // SAFETY: the slice is dropped before the release below.
            let bytes = unsafe { held.as_slice() };
            let copy = bytes.to_vec();
            for _ in 0..100 {
                std::thread::yield_now();
            }
            assert!(bytes == copy, "held bytes at {offset:#x} changed");
            backend.release(offset, MIB);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.recv_timeout(GENEROUS).unwrap();
        }
    }

    #[test]
    fn reads_of_a_held_range_go_on() {
        let backend = filled();
        let guest = shmem::AddressSpace::new();
        guest
            .map(0, Mapping::memfd("guest", 1 << 16).unwrap())
            .unwrap();
        let _held = backend.hold(MIB, MIB, GENEROUS).unwrap();
        assert_eq!(read_back(&backend, MIB, 4096), [0x11; 4096]);
        backend.read_to_guest(MIB, &guest, 0, 4096).unwrap();
        let mut buf = [0; 4096];
        guest.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0x11; 4096]);
        backend.release(MIB, MIB);
    }

    #[test]
    fn preallocated_namespace_is_all_allocated_zeros() {
        let sparse = RamBackend::new(1 << 20).unwrap();
        assert!(sparse.allocated().unwrap().is_empty());
        let full = RamBackend::preallocated(1 << 20).unwrap();
        assert_eq!(full.allocated().unwrap(), vec![0..1 << 20]);
        let mut buf = vec![1u8; 4096];
        full.read(512 << 10, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        full.write(512 << 10, &[5; 8]).unwrap();
        full.read(512 << 10, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[5; 8]);
    }

    #[test]
    fn preallocating_more_than_available_memory_is_refused() {
        let available = available_memory().expect("MemAvailable");
        let e = RamBackend::preallocated(available + (1 << 30)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("drop ,prealloc"), "{e}");
    }
}
