//! How the device reaches guest memory: the [`DmaMemory`] trait.
//!
//! The device never touches guest memory directly. Every fetch of a submission queue entry, PRP
//! list or data buffer and every completion or read-data write goes through this trait, whose
//! implementations check every access against what the guest actually mapped. The transport
//! supplies the implementation; [`shmem::AddressSpace`] (the windows a vfio-user client mapped)
//! is the one used in production and in tests. Dirty logging of device writes happens inside the
//! implementation (see [`shmem::WriteObserver`]), so every path that writes guest memory is logged
//! without the device having to remember to do it.

pub use shmem::DmaError;
use shmem::Mapping;

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
}
