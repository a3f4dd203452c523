//! DMA windows: `DMA_MAP` (map the client's fd and hand the window to the device) and
//! `DMA_UNMAP` (exact match only), with the bookkeeping that rejects overlapping windows.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use shmem::Mapping;
use shmem::Protection;
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
use super::session::io_errno;
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
    /// `DMA_MAP`: refuses overlaps (EEXIST, as the spec says) and more than `max_dma_maps`
    /// windows (ENOSPC), maps the fd (read-only unless the client granted WRITE) and hands the
    /// window to the device.
    pub(super) fn dma_map(&mut self, header: &Header, map: &DmaMap, fds: Vec<OwnedFd>) -> Handled {
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
        let mapping = match fds.into_iter().next() {
            Some(fd) => Some(map_fd(fd, map.offset, map.size, writable)?),
            None => None,
        };
        self.device.dma_map(DmaRegion {
            iova: map.address,
            size: map.size,
            writable,
            mapping,
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

/// Maps `size` bytes at `offset` of the client's fd. For a regular file (memfd, tmpfs,
/// hugetlbfs) the range must lie inside the file: touching a mapping beyond the end of a file
/// raises SIGBUS, which would kill the server.
fn map_fd(fd: OwnedFd, offset: u64, size: u64, writable: bool) -> Result<Mapping, Errno> {
    let len = usize::try_from(size).map_err(|_| Errno::EINVAL)?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_errno(&e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile {
        let file_size = u64::try_from(stat.st_size).unwrap_or(0);
        if offset.checked_add(size).is_none_or(|end| end > file_size) {
            tracing::warn!(
                offset,
                size,
                file_size,
                "DMA_MAP range extends beyond the end of the client's file"
            );
            return Err(Errno::EINVAL);
        }
    }
    let protection = if writable {
        Protection::ReadWrite
    } else {
        Protection::ReadOnly
    };
    Mapping::from_fd(fd, offset, len, protection).map_err(|e| {
        tracing::warn!("DMA_MAP cannot map the client's fd: {e}");
        io_errno(&e)
    })
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
