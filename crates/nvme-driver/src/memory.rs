//! Host memory the device reaches by DMA: one shared memory file, a page allocator over it, and
//! buffers that return their pages when dropped.
//!
//! The memory is a memfd so it can be handed to a vfio-user server (`DMA_MAP` with the fd) or
//! mapped into an in-process device; the device sees it at I/O virtual address `iova`.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;

use shmem::Mapping;

use crate::driver::DriverError;

/// Allocation granule: one 4 KiB page, the NVMe memory page size the driver uses.
pub const PAGE: u64 = 4096;

/// DMA-able host memory.
#[derive(Debug)]
pub struct HostMemory {
    map: Mapping,
    iova: u64,
    /// One flag per page: true when allocated.
    used: Mutex<Vec<bool>>,
}

impl HostMemory {
    /// Creates `len` bytes (rounded up to pages) of shared memory the device will see at `iova`
    /// (page aligned).
    pub fn new(len: u64, iova: u64) -> io::Result<Arc<Self>> {
        if !iova.is_multiple_of(PAGE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host memory IOVA {iova:#x} is not page aligned"),
            ));
        }
        let len = len.div_ceil(PAGE) * PAGE;
        let map = Mapping::memfd(
            "nvme-host-memory",
            usize::try_from(len).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "host memory too large")
            })?,
        )?;
        Ok(Arc::new(Self {
            map,
            iova,
            used: Mutex::new(vec![false; (len / PAGE) as usize]),
        }))
    }

    /// The mapping (its file descriptor is what a device maps).
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The I/O virtual address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len()
    }

    /// True for an empty memory (never: the constructor rounds up to a page).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn offset(&self, iova: u64, len: u64) -> io::Result<u64> {
        iova.checked_sub(self.iova)
            .filter(|off| off.checked_add(len).is_some_and(|end| end <= self.len()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("IOVA range {iova:#x}+{len:#x} is outside host memory"),
                )
            })
    }

    /// Copies memory at `iova` into `buf`.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> io::Result<()> {
        let off = self.offset(iova, buf.len() as u64)?;
        self.map
            .read(off, buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Copies `data` into memory at `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) -> io::Result<()> {
        let off = self.offset(iova, data.len() as u64)?;
        self.map
            .write(off, data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// The aligned word at `iova` as an atomic (completion queue status words).
    pub fn atomic_u32(&self, iova: u64) -> io::Result<&std::sync::atomic::AtomicU32> {
        let off = self.offset(iova, 4)?;
        self.map
            .atomic_u32(off)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Allocates `len` bytes (rounded up to whole pages) of physically contiguous, zeroed memory.
    pub fn alloc(self: &Arc<Self>, len: u64) -> Result<DmaBuffer, DriverError> {
        let pages = len.max(1).div_ceil(PAGE) as usize;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut run = 0;
        let mut found = None;
        for (i, &u) in used.iter().enumerate() {
            run = if u { 0 } else { run + 1 };
            if run == pages {
                found = Some(i + 1 - pages);
                break;
            }
        }
        let first = found.ok_or(DriverError::OutOfMemory {
            requested: len,
            total: self.len(),
        })?;
        used[first..first + pages]
            .iter_mut()
            .for_each(|u| *u = true);
        drop(used);
        let buf = DmaBuffer {
            mem: self.clone(),
            iova: self.iova + first as u64 * PAGE,
            len: pages as u64 * PAGE,
        };
        buf.fill(0);
        Ok(buf)
    }
}

/// Contiguous pages of [`HostMemory`], freed on drop.
#[derive(Debug)]
pub struct DmaBuffer {
    mem: Arc<HostMemory>,
    iova: u64,
    len: u64,
}

impl DmaBuffer {
    /// The I/O virtual address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes (whole pages).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty buffer (never: allocations are at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory the buffer lives in.
    pub fn memory(&self) -> &Arc<HostMemory> {
        &self.mem
    }

    /// Copies `buf.len()` bytes at `offset` within the buffer into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        assert!(
            offset + buf.len() as u64 <= self.len,
            "read past a DMA buffer"
        );
        // In range of the buffer, hence of the memory: cannot fail.
        let _ = self.mem.read(self.iova + offset, buf);
    }

    /// Copies `data` to `offset` within the buffer.
    pub fn write(&self, offset: u64, data: &[u8]) {
        assert!(
            offset + data.len() as u64 <= self.len,
            "write past a DMA buffer"
        );
        let _ = self.mem.write(self.iova + offset, data);
    }

    /// Sets the whole buffer to `byte`.
    pub fn fill(&self, byte: u8) {
        let off = self.iova - self.mem.iova;
        let _ = self.mem.map.fill(off, self.len, byte);
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        let first = ((self.iova - self.mem.iova) / PAGE) as usize;
        let pages = (self.len / PAGE) as usize;
        let mut used = self.mem.used.lock().unwrap_or_else(|p| p.into_inner());
        used[first..first + pages]
            .iter_mut()
            .for_each(|u| *u = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_contiguous_and_reused() {
        let mem = HostMemory::new(16 * PAGE, 0x1_0000_0000).unwrap();
        let a = mem.alloc(PAGE).unwrap();
        let b = mem.alloc(3 * PAGE + 1).unwrap();
        assert_eq!(a.iova(), 0x1_0000_0000);
        assert_eq!(b.iova(), 0x1_0000_1000);
        assert_eq!(b.len(), 4 * PAGE);
        b.write(100, b"xyz");
        let mut out = [0u8; 3];
        mem.read(b.iova() + 100, &mut out).unwrap();
        assert_eq!(&out, b"xyz");
        drop(a);
        let c = mem.alloc(PAGE).unwrap();
        assert_eq!(c.iova(), 0x1_0000_0000);
        assert!(matches!(
            mem.alloc(12 * PAGE),
            Err(DriverError::OutOfMemory { .. })
        ));
        assert!(mem.read(0x1_0000_0000 + 16 * PAGE, &mut out).is_err());
        assert!(HostMemory::new(PAGE, 0x123).is_err());
    }
}
