//! The null backend.

use std::io;
use std::ops::Range;

use super::Backend;
use super::BackendError;
use crate::memory::DmaMemory;

/// A namespace that stores nothing: reads return zeros, writes are dropped without reading
/// guest memory. It measures the protocol and queueing overhead of the device alone.
#[derive(Debug)]
pub struct NullBackend {
    size: u64,
}

impl NullBackend {
    /// A null namespace of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self { size }
    }
}

impl Backend for NullBackend {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_to_guest(
        &self,
        _offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        Ok(mem.fill(gpa, len, 0)?)
    }

    fn write_from_guest(
        &self,
        _offset: u64,
        _mem: &dyn DmaMemory,
        _gpa: u64,
        _len: u64,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn read(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn deallocate(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        Ok(Vec::new())
    }
}
