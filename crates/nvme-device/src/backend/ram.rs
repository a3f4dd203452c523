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
    pub fn preallocated(size: u64) -> io::Result<Self> {
        let backend = Self::new(size)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        backend.memory.populate(threads)?;
        Ok(backend)
    }
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
}
