//! The sparse RAM backend.

use std::io;
use std::ops::Range;

use shmem::Mapping;

use super::Backend;
use super::BackendError;
use crate::memory::DmaMemory;

/// A namespace held in sparse anonymous memory. Reads and writes copy directly between this
/// memory and guest memory, with no bounce buffer.
#[derive(Debug)]
pub struct RamBackend {
    memory: Mapping,
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
        Ok(mem.read_into(gpa, &self.memory, offset, len)?)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.memory.read(offset, buf).map_err(io_error)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.memory.write(offset, data).map_err(io_error)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.memory.discard(offset, len).map_err(io_error)
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.memory.discard(offset, len).map_err(io_error)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        self.memory.resident_ranges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
