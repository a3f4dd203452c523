//! Device access requests: regions (read, write, write-multi, sparse mmap), DMA windows, IRQs
//! and reset.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use shmem::Mapping;
use shmem::Protection;

use super::Client;
use super::ClientError;
use crate::access::RegionAccess;
use crate::access::RegionReadReply;
use crate::access::RegionWrite;
use crate::access::RegionWriteMulti;
use crate::access::RegionWriteMultiReply;
use crate::access::RegionWriteReply;
use crate::access::WriteMultiEntry;
use crate::command::Command;
use crate::device::DeviceReset;
use crate::dma::DmaMap;
use crate::dma::DmaMapFlags;
use crate::dma::DmaMapReply;
use crate::dma::DmaUnmap;
use crate::dma::DmaUnmapReply;
use crate::irq::IrqAction;
use crate::irq::IrqInfo;
use crate::irq::IrqSet;
use crate::irq::IrqSetData;
use crate::irq::IrqSetReply;
use crate::limits::DEFAULT_MAX_WRITE_MULTI_ENTRIES;
use crate::region::RegionCap;
use crate::region::RegionInfoFlags;
use crate::region::SparseMmapArea;
use crate::wire;

impl Client {
    /// Reads `count` bytes at `offset` of region `region` (REGION_READ). `count` may not exceed
    /// [`Client::max_data_xfer_size`].
    pub fn region_read(
        &mut self,
        region: u32,
        offset: u64,
        count: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let command = Command::REGION_READ;
        Self::check_limit(
            command,
            "count",
            count.into(),
            self.max_data_xfer_size().into(),
        )?;
        let request = RegionAccess {
            offset,
            region,
            count,
        };
        let (reply, _) = self.call::<RegionReadReply>(&request, &[])?;
        if (reply.offset, reply.region, reply.data.len()) != (offset, region, count as usize) {
            return Err(ClientError::UnexpectedReply {
                command,
                reason: format!(
                    "asked for {count} bytes at {offset:#x} of region {region}, got {} bytes at \
                     {:#x} of region {}",
                    reply.data.len(),
                    reply.offset,
                    reply.region
                ),
            });
        }
        Ok(reply.data)
    }

    /// Writes `data` at `offset` of region `region` (REGION_WRITE). `data` may not exceed
    /// [`Client::max_data_xfer_size`].
    pub fn region_write(
        &mut self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let request = self.region_write_request(region, offset, data)?;
        let expected = request.reply();
        let (reply, _) = self.call::<RegionWriteReply>(&request, &[])?;
        if reply != expected {
            return Err(ClientError::UnexpectedReply {
                command: Command::REGION_WRITE,
                reason: format!("the echo {:?} differs from {:?}", reply.0, expected.0),
            });
        }
        Ok(())
    }

    /// The REGION_WRITE of `data` at `offset` of `region`, checked against
    /// [`Client::max_data_xfer_size`].
    fn region_write_request(
        &self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<RegionWrite, ClientError> {
        Self::checked_region_write(self.max_data_xfer_size(), region, offset, data)
    }

    /// The REGION_WRITE of `data` at `offset` of `region`, checked against a
    /// `max_data_xfer_size` (the client's, or the one a [`super::PostedWriter`] took).
    pub(super) fn checked_region_write(
        max_data_xfer_size: u32,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<RegionWrite, ClientError> {
        Self::checked_region_access(max_data_xfer_size, region, offset, data)?;
        Ok(RegionWrite {
            offset,
            region,
            data: data.to_vec(),
        })
    }

    /// The head of a REGION_WRITE of `data` at `offset` of `region`, checked against a
    /// `max_data_xfer_size`: what [`Self::checked_region_write`] checks, without copying the
    /// data (a [`super::PostedWriter`] sends the head and `data` as they are).
    pub(super) fn checked_region_access(
        max_data_xfer_size: u32,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<RegionAccess, ClientError> {
        Self::check_limit(
            Command::REGION_WRITE,
            "count",
            data.len() as u64,
            max_data_xfer_size.into(),
        )?;
        Ok(RegionAccess {
            offset,
            region,
            count: wire::len_u32(data.len()),
        })
    }

    /// Performs small writes (at most 8 bytes each) in order with REGION_WRITE_MULTI, in
    /// batches of QEMU's 200 entries. Needs the server's `write_multiple` capability.
    pub fn region_write_multi(&mut self, writes: &[WriteMultiEntry]) -> Result<(), ClientError> {
        let command = Command::REGION_WRITE_MULTI;
        if !self.server.capabilities.write_multiple {
            return Err(ClientError::InvalidArgument {
                command,
                reason: "the server did not negotiate write_multiple".to_owned(),
            });
        }
        for batch in writes.chunks(DEFAULT_MAX_WRITE_MULTI_ENTRIES as usize) {
            let request = RegionWriteMulti {
                writes: batch.to_vec(),
            };
            let (reply, _) = self.call::<RegionWriteMultiReply>(&request, &[])?;
            if reply.wr_cnt != batch.len() as u64 {
                return Err(ClientError::UnexpectedReply {
                    command,
                    reason: format!(
                        "the server completed {} of {} writes",
                        reply.wr_cnt,
                        batch.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Maps the sparse-mmap areas of region `index` (or the whole region when it has no
    /// sparse-mmap capability) through the file descriptor the server sent with the region
    /// info. Returns each area's offset in the region with its mapping; writable regions are
    /// mapped read-write. Sends nothing.
    pub fn map_sparse(&self, index: u32) -> Result<Vec<(u64, Mapping)>, ClientError> {
        let region_error = |reason: &str| ClientError::Region {
            index,
            reason: reason.to_owned(),
        };
        let region = self
            .region(index)
            .ok_or_else(|| region_error("no such region"))?;
        let info = &region.info;
        if !info.flags.contains(RegionInfoFlags::MMAP) {
            return Err(region_error("the region is not mmappable"));
        }
        let fd = region
            .fd
            .as_ref()
            .ok_or_else(|| region_error("the server sent no file descriptor for it"))?;
        let areas = info
            .caps
            .iter()
            .find_map(|cap| match cap {
                RegionCap::SparseMmap(areas) => Some(areas.clone()),
                _ => None,
            })
            .unwrap_or_else(|| {
                vec![SparseMmapArea {
                    offset: 0,
                    size: info.size,
                }]
            });
        let protection = if info.flags.contains(RegionInfoFlags::WRITE) {
            Protection::ReadWrite
        } else {
            Protection::ReadOnly
        };
        let mut mappings = Vec::with_capacity(areas.len());
        for area in areas.into_iter().filter(|a| a.size != 0) {
            let end = area.offset.checked_add(area.size);
            if end.is_none_or(|end| end > info.size) {
                return Err(ClientError::Region {
                    index,
                    reason: format!(
                        "sparse-mmap area {:#x} (+{:#x}) lies outside the {:#x}-byte region",
                        area.offset, area.size, info.size
                    ),
                });
            }
            let map_error = |source| ClientError::Map {
                index,
                offset: area.offset,
                size: area.size,
                source,
            };
            let file_offset = info.offset.checked_add(area.offset).ok_or_else(|| {
                map_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "file offset overflows",
                ))
            })?;
            let len = usize::try_from(area.size).map_err(|_| {
                map_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "area larger than the address space",
                ))
            })?;
            let fd = fd.try_clone().map_err(map_error)?;
            let mapping = Mapping::from_fd(fd, file_offset, len, protection).map_err(map_error)?;
            mappings.push((area.offset, mapping));
        }
        Ok(mappings)
    }

    /// Makes `[iova, iova + size)` available for device DMA (DMA_MAP), backed by `fd` at
    /// `file_offset` when given (the server maps it, or reaches it with file I/O). Without an fd
    /// the server reaches the window with DMA_READ/WRITE messages; this client answers those
    /// only for windows mapped with [`Client::dma_map_served`] (EFAULT otherwise).
    pub fn dma_map(
        &mut self,
        iova: u64,
        size: u64,
        writable: bool,
        fd: Option<BorrowedFd<'_>>,
        file_offset: u64,
    ) -> Result<(), ClientError> {
        let mut flags = DmaMapFlags::READ;
        if writable {
            flags |= DmaMapFlags::WRITE;
        }
        let request = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: flags.bits(),
            offset: if fd.is_some() { file_offset } else { 0 },
            address: iova,
            size,
        };
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        self.call::<DmaMapReply>(&request, &fds)?;
        Ok(())
    }

    /// Makes `memory` available for device DMA at `iova` without passing a file descriptor
    /// (DMA_MAP with none, the spec's path for memory the server cannot map): the server reaches
    /// it with DMA_READ/DMA_WRITE messages, which this client's reader answers from `memory`
    /// whenever they come (refusing writes unless `writable`). The window is `memory.len()`
    /// bytes; the server requires page-aligned IOVAs and sizes.
    pub fn dma_map_served(
        &mut self,
        iova: u64,
        memory: Arc<Mapping>,
        writable: bool,
    ) -> Result<(), ClientError> {
        let size = memory.len();
        // Served before the map is sent: the server may access the window at once.
        self.link.served().insert(iova, memory, writable);
        let mapped = self.dma_map(iova, size, writable, None, 0);
        if mapped.is_err() {
            self.link.served().remove(iova, size);
        }
        mapped
    }

    /// Withdraws the DMA window mapped at exactly `iova`/`size` (DMA_UNMAP); a window served
    /// with DMA_READ/WRITE is no longer served once the server confirmed.
    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Result<(), ClientError> {
        let request = DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            address: iova,
            size,
        };
        let (reply, _) = self.call::<DmaUnmapReply>(&request, &[])?;
        if let Some(echo) = reply.0
            && (echo.address, echo.size) != (iova, size)
        {
            return Err(ClientError::UnexpectedReply {
                command: Command::DMA_UNMAP,
                reason: format!(
                    "unmapped {:#x} (+{:#x}) instead of {iova:#x} (+{size:#x})",
                    echo.address, echo.size
                ),
            });
        }
        self.link.served().remove(iova, size);
        Ok(())
    }

    /// Flags and vector count of IRQ index `index` (DEVICE_GET_IRQ_INFO; PCI: 0 INTx, 1 MSI,
    /// 2 MSI-X, 3 ERR, 4 REQ).
    pub fn irq_info(&mut self, index: u32) -> Result<IrqInfo, ClientError> {
        let request = IrqInfo {
            argsz: size_of::<IrqInfo>() as u32,
            flags: 0,
            index,
            count: 0,
        };
        let (reply, _) = self.call::<IrqInfo>(&request, &[])?;
        if reply.index != index {
            return Err(ClientError::UnexpectedReply {
                command: Command::DEVICE_GET_IRQ_INFO,
                reason: format!("asked for IRQ index {index}, got {}", reply.index),
            });
        }
        Ok(reply)
    }

    /// Sends one DEVICE_SET_IRQS as given, with `fds` (one per vector for eventfd data, or none
    /// to de-assign). The descriptor count is checked before sending.
    pub fn set_irqs(
        &mut self,
        request: &IrqSet,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        request
            .check_fds(fds.len())
            .map_err(|e| ClientError::InvalidArgument {
                command: Command::DEVICE_SET_IRQS,
                reason: e.to_string(),
            })?;
        self.call::<IrqSetReply>(request, fds)?;
        Ok(())
    }

    /// Has the server signal `fds[i]` for vector `start + i` of IRQ index `index` (eventfd
    /// data, trigger action). Split into several messages when there are more eventfds than the
    /// server accepts in one (`max_msg_fds`).
    pub fn set_irq_eventfds(
        &mut self,
        index: u32,
        start: u32,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        let per_message = self.server.capabilities.max_msg_fds as usize;
        if per_message == 0 && !fds.is_empty() {
            return Err(ClientError::TooLarge {
                command: Command::DEVICE_SET_IRQS,
                field: "file descriptors",
                value: fds.len() as u64,
                limit: 0,
            });
        }
        let mut vector = start;
        for batch in fds.chunks(per_message.max(1)) {
            let count = batch.len() as u32;
            let request = IrqSet {
                action: IrqAction::Trigger,
                data: IrqSetData::Eventfd,
                index,
                start: vector,
                count,
            };
            self.set_irqs(&request, batch)?;
            vector = vector.saturating_add(count);
        }
        Ok(())
    }

    /// Applies `action` (mask, unmask or trigger) to vectors `start..start + count` of IRQ index
    /// `index` (DATA_NONE).
    pub fn irq_action(
        &mut self,
        index: u32,
        action: IrqAction,
        start: u32,
        count: u32,
    ) -> Result<(), ClientError> {
        let request = IrqSet {
            action,
            data: IrqSetData::None,
            index,
            start,
            count,
        };
        self.set_irqs(&request, &[])
    }

    /// Disables every vector of IRQ index `index` and drops its eventfds (DATA_NONE with
    /// trigger, start 0, count 0, as the kernel defines it).
    pub fn disable_irqs(&mut self, index: u32) -> Result<(), ClientError> {
        self.irq_action(index, IrqAction::Trigger, 0, 0)
    }

    /// Resets the device (DEVICE_RESET).
    pub fn reset(&mut self) -> Result<(), ClientError> {
        self.call::<DeviceReset>(&DeviceReset, &[])?;
        Ok(())
    }
}
