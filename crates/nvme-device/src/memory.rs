//! How the device reaches guest memory: the [`DmaMemory`] trait.
//!
//! The device never touches guest memory directly. Every fetch of a submission queue entry, PRP
//! list or data buffer and every completion or read-data write goes through this trait, whose
//! implementations check every access against what the guest actually mapped. The transport
//! supplies the implementation; [`shmem::AddressSpace`] (the windows a vfio-user client mapped)
//! is the one used in production and in tests. Dirty logging of device writes happens inside the
//! implementation (see [`shmem::WriteObserver`]), so every path that writes guest memory is logged
//! without the device having to remember to do it.

use std::ptr::NonNull;

pub use shmem::DmaError;
use shmem::Mapping;
pub use shmem::Pinned;

use crate::prp::Segment;

/// Bounds-checked access to guest-physical memory.
pub trait DmaMemory: Send + Sync {
    /// Copies guest memory at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Copies `data` into guest memory at `gpa`.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), DmaError>;
    /// Sets `len` bytes of guest memory at `gpa` to `byte`.
    fn fill(&self, gpa: u64, len: u64, byte: u8) -> Result<(), DmaError>;
    /// Stores an aligned `u32` at `gpa` as one indivisible write with release ordering (the
    /// final status dword of a completion queue entry).
    fn store_u32_release(&self, gpa: u64, value: u32) -> Result<(), DmaError>;
    /// Copies `len` bytes of `src` at `src_offset` into guest memory at `gpa`.
    fn write_from(
        &self,
        gpa: u64,
        src: &Mapping,
        src_offset: u64,
        len: u64,
    ) -> Result<(), DmaError>;
    /// Copies `len` bytes of guest memory at `gpa` into `dst` at `dst_offset`.
    fn read_into(&self, gpa: u64, dst: &Mapping, dst_offset: u64, len: u64)
    -> Result<(), DmaError>;
    /// Resolves `segments` onto host memory for I/O the kernel does on guest memory directly
    /// (no bounce copy), calling `piece(host_address, len)` for each piece in order; the memory
    /// stays mapped until the [`Pinned`] is dropped. `None`: use copies instead (see
    /// [`shmem::AddressSpace::pin`]). `writable`: the device writes the memory (a Read).
    fn pin(
        &self,
        segments: &[Segment],
        writable: bool,
        piece: &mut dyn FnMut(NonNull<u8>, usize) -> bool,
    ) -> Option<Pinned>;
    /// Reports a completed device write done through a [`Pinned`] range to dirty logging.
    fn record_write(&self, gpa: u64, len: u64);
}

impl DmaMemory for shmem::AddressSpace {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        shmem::AddressSpace::read(self, gpa, buf)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), DmaError> {
        shmem::AddressSpace::write(self, gpa, data)
    }

    fn fill(&self, gpa: u64, len: u64, byte: u8) -> Result<(), DmaError> {
        shmem::AddressSpace::fill(self, gpa, len, byte)
    }

    fn store_u32_release(&self, gpa: u64, value: u32) -> Result<(), DmaError> {
        shmem::AddressSpace::store_u32_release(self, gpa, value)
    }

    fn write_from(
        &self,
        gpa: u64,
        src: &Mapping,
        src_offset: u64,
        len: u64,
    ) -> Result<(), DmaError> {
        shmem::AddressSpace::write_from(self, gpa, src, src_offset, len)
    }

    fn read_into(
        &self,
        gpa: u64,
        dst: &Mapping,
        dst_offset: u64,
        len: u64,
    ) -> Result<(), DmaError> {
        shmem::AddressSpace::read_into(self, gpa, dst, dst_offset, len)
    }

    fn pin(
        &self,
        segments: &[Segment],
        writable: bool,
        piece: &mut dyn FnMut(NonNull<u8>, usize) -> bool,
    ) -> Option<Pinned> {
        shmem::AddressSpace::pin(
            self,
            segments.iter().map(|s| (s.gpa, s.len)),
            writable,
            piece,
        )
    }

    fn record_write(&self, gpa: u64, len: u64) {
        shmem::AddressSpace::record_write(self, gpa, len);
    }
}
