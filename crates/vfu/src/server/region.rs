//! Regions: `DEVICE_GET_REGION_INFO`, `REGION_READ`, `REGION_WRITE` and `REGION_WRITE_MULTI`,
//! with every access checked against the region's size and permissions before the device sees
//! it.

use vfio_migration::Errno;

use crate::access::RegionAccess;
use crate::access::RegionReadReply;
use crate::access::RegionWrite;
use crate::access::RegionWriteMulti;
use crate::access::RegionWriteMultiReply;
use crate::access::RegionWriteReply;
use crate::framing::encode_reply;
use crate::header::Header;
use crate::region::RegionCap;
use crate::region::RegionInfo;
use crate::region::RegionInfoFlags;
use crate::region::RegionInfoReply;
use crate::region::RegionInfoRequest;

use super::device::Device;
use super::session::Handled;
use super::session::Session;
use super::session::io_errno;
use super::transport::Outgoing;

/// Size and permissions of every region, read once per connection so that the access path does
/// not ask the device (which builds a whole [`super::RegionDescription`]) for each access. Region
/// layouts are fixed for a device's lifetime.
#[derive(Debug, Default)]
pub(super) struct RegionTable {
    regions: Vec<(u64, RegionInfoFlags)>,
}

impl RegionTable {
    /// Reads the table from the device.
    pub fn read(device: &dyn Device) -> Self {
        let regions = (0..device.num_regions())
            .map(|index| {
                device
                    .region(index)
                    .map_or((0, RegionInfoFlags::empty()), |r| (r.size, r.flags))
            })
            .collect();
        Self { regions }
    }

    /// Checks that `[offset, offset + len)` lies inside region `index` and that the region
    /// allows `access` (READ or WRITE); EINVAL otherwise.
    fn check(
        &self,
        index: u32,
        offset: u64,
        len: u64,
        access: RegionInfoFlags,
    ) -> Result<(), Errno> {
        let Some(&(size, flags)) = self.regions.get(index as usize) else {
            tracing::warn!(index, "access to a region the device does not have");
            return Err(Errno::EINVAL);
        };
        if !flags.contains(access) {
            tracing::warn!(index, ?access, "region does not allow this access");
            return Err(Errno::EINVAL);
        }
        if offset.checked_add(len).is_none_or(|end| end > size) {
            tracing::warn!(index, offset, len, size, "access outside the region");
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

impl Session<'_> {
    /// `DEVICE_GET_REGION_INFO`: the argsz rule, and the region's fd when the full reply (with
    /// its sparse-mmap areas) is sent. A truncated reply is only a size probe: the client asks
    /// again with a larger argsz, and that reply carries the fd.
    pub(super) fn region_info(&self, header: &Header, request: &RegionInfoRequest) -> Handled {
        let index = request.index;
        if index >= self.device.num_regions() {
            return Err(Errno::EINVAL);
        }
        let region = self.device.region(index).ok_or(Errno::EINVAL)?;
        let mmappable = region.flags.contains(RegionInfoFlags::MMAP)
            || region
                .caps
                .iter()
                .any(|cap| matches!(cap, RegionCap::SparseMmap(_)));
        let info = RegionInfo {
            flags: region.flags,
            index,
            size: region.size,
            offset: region.file_offset,
            caps: region.caps,
        };
        let reply = RegionInfoReply::for_request(info, request.argsz);
        let fds = match region.fd {
            Some(fd) if mmappable && !reply.is_truncated() => {
                vec![fd.try_clone_to_owned().map_err(|e| io_errno(&e))?]
            }
            _ => Vec::new(),
        };
        Ok(Outgoing {
            bytes: encode_reply(header, &reply),
            fds,
        })
    }

    /// `REGION_READ`.
    pub(super) fn region_read(&self, header: &Header, access: &RegionAccess) -> Handled {
        let count = u64::from(access.count);
        self.regions
            .check(access.region, access.offset, count, RegionInfoFlags::READ)?;
        let mut data = vec![0; access.count as usize];
        self.device
            .region_read(access.region, access.offset, &mut data)?;
        let reply = RegionReadReply {
            offset: access.offset,
            region: access.region,
            data,
        };
        Ok(Outgoing::new(encode_reply(header, &reply)))
    }

    /// `REGION_WRITE`.
    pub(super) fn region_write(&self, header: &Header, write: &RegionWrite) -> Handled {
        self.write(write.region, write.offset, &write.data)?;
        Ok(Outgoing::new(encode_reply(header, &write.reply())))
    }

    /// A `REGION_WRITE` carried out straight from its received `payload` (no copy of the data)
    /// if the device says it returns at once ([`Device::write_returns_at_once`]); `None`, with
    /// nothing done, for any other write and for a malformed one (the usual path answers it,
    /// with its warning). A posted write's reply is not built.
    pub(super) fn region_write_at_once(&self, header: &Header, payload: &[u8]) -> Option<Handled> {
        let (head, data) = RegionWrite::view(payload, &self.limits).ok()?;
        let len = data.len() as u64;
        if !self
            .device
            .write_returns_at_once(head.region, head.offset, len)
        {
            return None;
        }
        let written = self.write(head.region, head.offset, data);
        Some(written.map(|()| {
            if header.flags.no_reply() {
                Outgoing::new(Vec::new())
            } else {
                Outgoing::new(encode_reply(header, &RegionWriteReply(head)))
            }
        }))
    }

    /// `REGION_WRITE_MULTI`: the entries in order, each checked like a `REGION_WRITE`. The first
    /// failing entry stops the batch with its errno (the earlier writes stay done).
    pub(super) fn region_write_multi(&self, header: &Header, multi: &RegionWriteMulti) -> Handled {
        for entry in &multi.writes {
            self.write(entry.region, entry.offset, entry.bytes())?;
        }
        let reply = RegionWriteMultiReply {
            wr_cnt: multi.writes.len() as u64,
        };
        Ok(Outgoing::new(encode_reply(header, &reply)))
    }

    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.regions
            .check(region, offset, data.len() as u64, RegionInfoFlags::WRITE)?;
        self.device.region_write(region, offset, data)
    }
}
