//! DMA windows: `DMA_MAP` (reach the client's memory and hand the window to the device) and
//! `DMA_UNMAP` (exact match only), with the bookkeeping that rejects overlapping windows.
//!
//! How a window is reached:
//!
//! * with a file descriptor: through [`shmem::client_window`], which maps the file only once it
//!   cannot shrink (it carries `F_SEAL_SHRINK`, or accepted it now) and otherwise reaches it
//!   with file I/O, so a client truncating its guest RAM fails device accesses instead of
//!   killing the server with SIGBUS;
//! * without one: through `DMA_READ`/`DMA_WRITE` messages to the client (the connection's
//!   [`super::client_dma`] channel).
//!
//! The IOVA, size and file offset must be multiples of the DMA page size (the smallest
//! negotiated `pgsizes`, 4 KiB by default), as the kernel's type-1 IOMMU requires of
//! `VFIO_IOMMU_MAP_DMA` (EINVAL otherwise); an fd-less window has file offset 0 (spec:
//! "zero if the region is not mappable").

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use shmem::Protection;
use shmem::WindowMemory;
use vfio_migration::Errno;

use crate::dma::DmaMap;
use crate::dma::DmaMapFlags;
use crate::dma::DmaMapReply;
use crate::dma::DmaUnmap;
use crate::dma::DmaUnmapFlags;
use crate::dma::DmaUnmapReply;
use crate::framing::encode_reply;
use crate::header::Header;

use super::device::DmaRegion;
use super::session::Handled;
use super::session::Session;
use super::transport::Outgoing;

/// The client's DMA windows of one connection, by start address (`iova → size`).
#[derive(Debug, Default)]
pub(super) struct DmaWindows {
    windows: BTreeMap<u64, u64>,
}

impl DmaWindows {
    /// Whether `[iova, iova + size)` overlaps a window (`iova + size` must not wrap; the codec
    /// checked).
    fn overlaps(&self, iova: u64, size: u64) -> bool {
        let end = iova + size;
        self.windows
            .range(..end)
            .next_back()
            .is_some_and(|(&start, &len)| start + len > iova)
    }

    /// Whether a window is exactly `[iova, iova + size)`.
    fn is_window(&self, iova: u64, size: u64) -> bool {
        self.windows.get(&iova) == Some(&size)
    }
}

impl Session<'_> {
    /// `DMA_MAP`: refuses misaligned windows (EINVAL), overlaps (EEXIST, as the spec says) and
    /// more than `max_dma_maps` windows (ENOSPC), reaches the memory (read-only unless the
    /// client granted WRITE) and hands the window to the device.
    pub(super) fn dma_map(&mut self, header: &Header, map: &DmaMap, fds: Vec<OwnedFd>) -> Handled {
        let page = self.dma_page_size;
        let misaligned = (map.address | map.size | map.offset) & (page - 1) != 0;
        if misaligned || (fds.is_empty() && map.offset != 0) {
            tracing::warn!(
                iova = map.address,
                size = map.size,
                offset = map.offset,
                page,
                "DMA_MAP not aligned to the DMA page size (or an fd-less window with a file offset)"
            );
            return Err(Errno::EINVAL);
        }
        if self.windows.overlaps(map.address, map.size) {
            tracing::warn!(
                iova = map.address,
                size = map.size,
                "DMA_MAP overlaps an existing window"
            );
            return Err(Errno::EEXIST);
        }
        if self.windows.windows.len() >= self.max_dma_maps as usize {
            tracing::warn!(
                max = self.max_dma_maps,
                "DMA_MAP beyond the negotiated max_dma_maps"
            );
            return Err(Errno::ENOSPC);
        }
        let writable = map.flags().contains(DmaMapFlags::WRITE);
        let memory = match fds.into_iter().next() {
            Some(fd) => client_file(fd, map, writable)?,
            None => self.client_dma.window(map.address, map.size, writable),
        };
        self.device.dma_map(DmaRegion {
            iova: map.address,
            size: map.size,
            writable,
            memory,
        })?;
        self.windows.windows.insert(map.address, map.size);
        Ok(Outgoing::new(encode_reply(header, &DmaMapReply)))
    }

    /// `DMA_UNMAP`: the range must be exactly a mapped window (or, with the ALL flag and a zero
    /// range, every window); the device drops its references before the reply.
    pub(super) fn dma_unmap(&mut self, header: &Header, unmap: &DmaUnmap) -> Handled {
        if unmap.flags().contains(DmaUnmapFlags::ALL) {
            if unmap.address != 0 || unmap.size != 0 {
                tracing::warn!("DMA_UNMAP with ALL needs address and size 0");
                return Err(Errno::EINVAL);
            }
            while let Some((&iova, &size)) = self.windows.windows.first_key_value() {
                self.device.dma_unmap(iova, size)?;
                self.windows.windows.remove(&iova);
            }
        } else {
            if !self.windows.is_window(unmap.address, unmap.size) {
                tracing::warn!(
                    iova = unmap.address,
                    size = unmap.size,
                    "DMA_UNMAP of a range that is not a mapped window"
                );
                return Err(Errno::EINVAL);
            }
            self.device.dma_unmap(unmap.address, unmap.size)?;
            self.windows.windows.remove(&unmap.address);
        }
        Ok(Outgoing::new(encode_reply(
            header,
            &DmaUnmapReply(Some(*unmap)),
        )))
    }
}

/// The window `map` describes in the client's file `fd`.
fn client_file(fd: OwnedFd, map: &DmaMap, writable: bool) -> Result<WindowMemory, Errno> {
    let protection = if writable {
        Protection::ReadWrite
    } else {
        Protection::ReadOnly
    };
    let memory = shmem::client_window(fd, map.offset, map.size, protection).map_err(|err| {
        tracing::warn!(
            iova = map.address,
            size = map.size,
            offset = map.offset,
            "DMA_MAP cannot use the client's file: {err}"
        );
        Errno::new(err.raw_os_error())
    })?;
    if !memory.is_mapped() {
        tracing::warn!(
            iova = map.address,
            size = map.size,
            "the client's guest RAM file cannot be sealed against shrinking; the device reaches \
             it with file I/O (slower; pass a memfd created with MFD_ALLOW_SEALING for the fast path)"
        );
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_exact_match() {
        let mut w = DmaWindows::default();
        w.windows.insert(0x1000, 0x1000);
        w.windows.insert(0x4000, 0x2000);
        assert!(!w.overlaps(0, 0x1000), "ends where the first begins");
        assert!(!w.overlaps(0x2000, 0x2000), "fills the gap exactly");
        assert!(w.overlaps(0x1fff, 1));
        assert!(w.overlaps(0, 0x1001));
        assert!(w.overlaps(0x5fff, 0x10));
        assert!(w.overlaps(0, 0x10000), "covers both");
        assert!(!w.overlaps(0x6000, 0x1000));
        assert!(w.is_window(0x4000, 0x2000));
        assert!(!w.is_window(0x4000, 0x1000));
        assert!(!w.is_window(0x5000, 0x1000));
    }
}
