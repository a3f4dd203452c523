//! `DEVICE_GET_REGION_INFO` (command 5) with its capability chain, and
//! `DEVICE_GET_REGION_IO_FDS` (command 6).
//!
//! Region info mirrors the kernel's `struct vfio_region_info` (32 bytes) followed by a chain of
//! capabilities, each starting with `struct vfio_info_cap_header {id u16, version u16, next
//! u32}`. `cap_offset` and every `next` are offsets from the start of the region info structure
//! (payload offset 0); `next == 0` ends the chain.

use bitflags::bitflags;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire;

bitflags! {
    /// `vfio_region_info.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RegionInfoFlags: u32 {
        /// The client may read the region.
        const READ = 1 << 0;
        /// The client may write the region.
        const WRITE = 1 << 1;
        /// The client may mmap the region (an fd comes with the reply).
        const MMAP = 1 << 2;
        /// A capability chain exists (it may have been left out of a truncated reply).
        const CAPS = 1 << 3;
    }
}

/// Capability id of the sparse-mmap capability (`VFIO_REGION_INFO_CAP_SPARSE_MMAP`).
pub const CAP_SPARSE_MMAP: u16 = 1;
/// Capability id of the region type capability (`VFIO_REGION_INFO_CAP_TYPE`).
pub const CAP_TYPE: u16 = 2;
/// Capability id of the "MSI-X table may be mmapped" capability
/// (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`, header only).
pub const CAP_MSIX_MAPPABLE: u16 = 3;

/// The fixed part of a region info request or reply (`struct vfio_region_info`, 32 bytes).
///
/// Offsets: argsz 0, flags 4, index 8, cap_offset 12, size 16, offset 24.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct VfioRegionInfo {
    /// Request: largest reply accepted. Reply: size of the full reply including capabilities.
    pub argsz: u32,
    /// [`RegionInfoFlags`] bits.
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// Offset of the first capability from the start of this structure, or 0.
    pub cap_offset: u32,
    /// Region size in bytes.
    pub size: u64,
    /// Offset to pass to mmap for this region (base of sparse-mmap area offsets).
    pub offset: u64,
}

const _: () = assert!(size_of::<VfioRegionInfo>() == 32);

/// Why an `argsz` below [`VfioRegionInfo`] is refused.
const SHORT_REGION_INFO: &str = "smaller than the 32-byte region info";

/// Capability header (`struct vfio_info_cap_header`, 8 bytes): id 0, version 2, next 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct CapHeader {
    /// Capability id.
    pub id: u16,
    /// Capability-specific version.
    pub version: u16,
    /// Offset of the next capability from the start of the region info, 0 for the last.
    pub next: u32,
}

const _: () = assert!(size_of::<CapHeader>() == 8);

/// Fixed part of the sparse-mmap capability (16 bytes): header, nr_areas at 8, reserved at 12;
/// `nr_areas` [`SparseMmapArea`]s follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SparseMmapCap {
    /// id [`CAP_SPARSE_MMAP`], version 1.
    pub header: CapHeader,
    /// Number of areas that follow.
    pub nr_areas: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(size_of::<SparseMmapCap>() == 16);

/// One mmappable area of a region (16 bytes): offset 0, size 8. The offset is relative to the
/// region's mmap `offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SparseMmapArea {
    /// Start of the area within the region.
    pub offset: u64,
    /// Length of the area.
    pub size: u64,
}

const _: () = assert!(size_of::<SparseMmapArea>() == 16);

/// The region type capability (16 bytes): header, type at 8, subtype at 12.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct RegionTypeCap {
    /// id [`CAP_TYPE`], version 1.
    pub header: CapHeader,
    /// Region type (vendor or `VFIO_REGION_TYPE_*`).
    pub region_type: u32,
    /// Region subtype.
    pub subtype: u32,
}

const _: () = assert!(size_of::<RegionTypeCap>() == 16);

/// One capability of a region's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCap {
    /// Only these areas may be mmapped (e.g. an NVMe doorbell page inside BAR0).
    SparseMmap(Vec<SparseMmapArea>),
    /// A typed device-specific region.
    Type {
        /// Region type.
        region_type: u32,
        /// Region subtype.
        subtype: u32,
    },
    /// The MSI-X table in this region may be mmapped.
    MsixMappable,
    /// A capability this codec does not know; its body (of unknown size) is skipped.
    Unknown {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
    },
}

impl RegionCap {
    /// Encoded size of this capability including its header.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::SparseMmap(areas) => size_of::<SparseMmapCap>() + 16 * areas.len(),
            Self::Type { .. } => size_of::<RegionTypeCap>(),
            Self::MsixMappable | Self::Unknown { .. } => size_of::<CapHeader>(),
        }
    }

    fn encode(&self, next: u32, out: &mut Vec<u8>) {
        match self {
            Self::SparseMmap(areas) => {
                let cap = SparseMmapCap {
                    header: CapHeader {
                        id: CAP_SPARSE_MMAP,
                        version: 1,
                        next,
                    },
                    nr_areas: wire::len_u32(areas.len()),
                    reserved: 0,
                };
                wire::put(out, &cap);
                wire::put(out, areas.as_slice());
            }
            Self::Type {
                region_type,
                subtype,
            } => wire::put(
                out,
                &RegionTypeCap {
                    header: CapHeader {
                        id: CAP_TYPE,
                        version: 1,
                        next,
                    },
                    region_type: *region_type,
                    subtype: *subtype,
                },
            ),
            Self::MsixMappable => {
                wire::put(
                    out,
                    &CapHeader {
                        id: CAP_MSIX_MAPPABLE,
                        version: 1,
                        next,
                    },
                );
            }
            Self::Unknown { id, version } => {
                wire::put(
                    out,
                    &CapHeader {
                        id: *id,
                        version: *version,
                        next,
                    },
                );
            }
        }
    }
}

/// Appends a capability chain whose first capability sits at `base` (offset from the start of
/// the region info) and returns nothing; `next` offsets are computed from `base`.
fn encode_chain(caps: &[RegionCap], base: usize, out: &mut Vec<u8>) {
    let mut at = base;
    for (i, cap) in caps.iter().enumerate() {
        at += cap.encoded_len();
        let next = if i + 1 == caps.len() {
            0
        } else {
            wire::len_u32(at)
        };
        cap.encode(next, out);
    }
}

/// Walks a capability chain in `info` (the whole region info payload) starting at `first`.
///
/// Every offset is bounds-checked, may not point into the fixed part, and the walk stops with an
/// error after `info.len() / 8` capabilities, so a `next` loop cannot spin.
pub fn walk_chain(
    command: Command,
    info: &[u8],
    first: u32,
) -> Result<Vec<RegionCap>, DecodeError> {
    let fixed = size_of::<VfioRegionInfo>();
    let max_caps = info.len() / size_of::<CapHeader>();
    let mut caps = Vec::new();
    let mut offset = first;
    while offset != 0 {
        if caps.len() >= max_caps {
            return Err(DecodeError::invalid(
                command,
                "next",
                offset.into(),
                "capability chain loops",
            ));
        }
        let at = offset as usize;
        if at < fixed {
            return Err(DecodeError::invalid(
                command,
                "cap next",
                offset.into(),
                "points into the fixed part",
            ));
        }
        let Some(body) = info.get(at..) else {
            return Err(DecodeError::Truncated {
                command,
                what: "capability",
                need: at + size_of::<CapHeader>(),
                have: info.len(),
            });
        };
        let (header, _) = wire::read::<CapHeader>(command, "capability header", body)?;
        let cap = match (header.id, header.version) {
            (CAP_SPARSE_MMAP, 1) => {
                let (cap, rest) = wire::read::<SparseMmapCap>(command, "sparse mmap cap", body)?;
                let len = (cap.nr_areas as usize).saturating_mul(size_of::<SparseMmapArea>());
                let (areas, _) = wire::take(command, "sparse mmap areas", rest, len)?;
                RegionCap::SparseMmap(read_areas(areas))
            }
            (CAP_TYPE, 1) => {
                let (cap, _) = wire::read::<RegionTypeCap>(command, "region type cap", body)?;
                RegionCap::Type {
                    region_type: cap.region_type,
                    subtype: cap.subtype,
                }
            }
            (CAP_MSIX_MAPPABLE, _) => RegionCap::MsixMappable,
            (id, version) => RegionCap::Unknown { id, version },
        };
        caps.push(cap);
        offset = header.next;
    }
    Ok(caps)
}

/// Reads areas from possibly unaligned bytes whose length is a multiple of 16.
fn read_areas(bytes: &[u8]) -> Vec<SparseMmapArea> {
    bytes
        .chunks_exact(16)
        .filter_map(|chunk| SparseMmapArea::read_from_bytes(chunk).ok())
        .collect()
}

/// `DEVICE_GET_REGION_INFO` request: which region, and how large a reply the client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfoRequest {
    /// Largest reply payload accepted (at least 32).
    pub argsz: u32,
    /// Region index.
    pub index: u32,
}

impl Payload for RegionInfoRequest {
    const COMMAND: Command = Command::DEVICE_GET_REGION_INFO;

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put(
            out,
            &VfioRegionInfo {
                argsz: self.argsz,
                flags: 0,
                index: self.index,
                cap_offset: 0,
                size: 0,
                offset: 0,
            },
        );
    }

    /// Decodes the request; only `argsz` and `index` are meaningful, the other fields (which must
    /// be zero) are ignored.
    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let c = Self::COMMAND;
        let info: VfioRegionInfo = wire::read_exact(c, "region_info", bytes)?;
        wire::check_argsz(
            c,
            info.argsz,
            size_of::<VfioRegionInfo>(),
            SHORT_REGION_INFO,
        )?;
        Ok(Self {
            argsz: info.argsz,
            index: info.index,
        })
    }
}

/// A region's description, as a server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// READ/WRITE/MMAP (CAPS is set by the encoder when `caps` is not empty).
    pub flags: RegionInfoFlags,
    /// Region index.
    pub index: u32,
    /// Region size.
    pub size: u64,
    /// mmap offset of the region (with the fd sent alongside).
    pub offset: u64,
    /// Capability chain.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Size of the complete reply payload: the fixed part plus every capability.
    pub fn full_size(&self) -> usize {
        size_of::<VfioRegionInfo>() + self.caps.iter().map(RegionCap::encoded_len).sum::<usize>()
    }
}

/// `DEVICE_GET_REGION_INFO` reply.
///
/// `argsz` is the size of the complete reply. When the client's request allowed less, the reply
/// carries only the fixed part, with `argsz` still the full size, and **CAPS clear** and
/// `cap_offset` 0; `info.caps` is then empty and the client retries with a larger argsz.
///
/// CAPS must not be set without capabilities in the reply: QEMU's client rejects a reply whose
/// CAPS flag is set while `cap_offset` points into the fixed part (it answers "failed to get
/// region 0 info: Invalid argument" and the VM does not start). libvfio-user behaves the same
/// way; a client learns that capabilities exist from `argsz`, not from CAPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfoReply {
    /// Size of the complete reply payload.
    pub argsz: u32,
    /// The region; `caps` is empty when the reply is truncated.
    pub info: RegionInfo,
}

impl RegionInfoReply {
    /// Builds the reply to a request that accepts `request_argsz` bytes, applying the argsz rule:
    /// full reply if it fits, otherwise the fixed part only.
    pub fn for_request(mut info: RegionInfo, request_argsz: u32) -> Self {
        let full = info.full_size();
        if full > request_argsz as usize {
            info.caps.clear();
        }
        info.flags.set(RegionInfoFlags::CAPS, !info.caps.is_empty());
        Self {
            argsz: wire::len_u32(full),
            info,
        }
    }

    /// Whether the capabilities were left out because the request's argsz was too small.
    pub fn is_truncated(&self) -> bool {
        self.argsz as usize > self.info.full_size()
    }
}

impl Payload for RegionInfoReply {
    const COMMAND: Command = Command::DEVICE_GET_REGION_INFO;

    fn encode(&self, out: &mut Vec<u8>) {
        let fixed = size_of::<VfioRegionInfo>();
        let mut flags = self.info.flags;
        // CAPS exactly when capabilities follow (see the type's docs).
        flags.set(RegionInfoFlags::CAPS, !self.info.caps.is_empty());
        let cap_offset = if self.info.caps.is_empty() {
            0
        } else {
            fixed as u32
        };
        wire::put(
            out,
            &VfioRegionInfo {
                argsz: self.argsz,
                flags: flags.bits(),
                index: self.info.index,
                cap_offset,
                size: self.info.size,
                offset: self.info.offset,
            },
        );
        encode_chain(&self.info.caps, fixed, out);
    }

    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let c = Self::COMMAND;
        let (fixed, _) = wire::read::<VfioRegionInfo>(c, "region_info", bytes)?;
        let fixed_len = size_of::<VfioRegionInfo>();
        wire::check_argsz(c, fixed.argsz, fixed_len, SHORT_REGION_INFO)?;
        let argsz = fixed.argsz as usize;
        let truncated = bytes.len() == fixed_len && argsz > fixed_len;
        if !truncated && bytes.len() != argsz {
            return Err(DecodeError::invalid(
                c,
                "argsz",
                argsz as u64,
                "differs from the payload length",
            ));
        }
        let caps = if truncated {
            Vec::new()
        } else {
            walk_chain(c, bytes, fixed.cap_offset)?
        };
        Ok(Self {
            argsz: fixed.argsz,
            info: RegionInfo {
                flags: RegionInfoFlags::from_bits_retain(fixed.flags),
                index: fixed.index,
                size: fixed.size,
                offset: fixed.offset,
                caps,
            },
        })
    }
}

/// `DEVICE_GET_REGION_IO_FDS` request and reply head (16 bytes): argsz 0, flags 4, index 8,
/// count 12.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct RegionIoFdsRequest {
    /// Request: largest reply accepted. Reply: size of the full reply.
    pub argsz: u32,
    /// Must be zero.
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// Request: zero. Reply: number of sub-regions.
    pub count: u32,
}

const _: () = assert!(size_of::<RegionIoFdsRequest>() == 16);

wire::fixed_payload!(
    RegionIoFdsRequest,
    Command::DEVICE_GET_REGION_IO_FDS,
    "region_io_fds",
    RegionIoFdsRequest::check
);

impl RegionIoFdsRequest {
    /// The decoder's checks of a request: no flags, `argsz` covering the 16-byte head.
    fn check(&self, _limits: &Limits) -> Result<(), DecodeError> {
        let c = Command::DEVICE_GET_REGION_IO_FDS;
        if self.flags != 0 {
            return Err(DecodeError::invalid(
                c,
                "flags",
                self.flags.into(),
                "must be zero",
            ));
        }
        wire::check_argsz(
            c,
            self.argsz,
            size_of::<Self>(),
            "smaller than the 16-byte head",
        )
    }
}

/// Sub-region type: an ioeventfd (`VFIO_USER_IO_FD_TYPE_IOEVENTFD` in libvfio-user).
pub const IO_FD_TYPE_IOEVENTFD: u32 = 0;
/// Sub-region type: an ioregionfd (`VFIO_USER_IO_FD_TYPE_IOREGIONFD` in libvfio-user).
pub const IO_FD_TYPE_IOREGIONFD: u32 = 1;

/// One sub-region of a `DEVICE_GET_REGION_IO_FDS` reply (40 bytes): offset 0, size 8,
/// fd_index 16, type 20, flags 24, padding 28, datamatch/user_data 32.
///
/// The spec says entry *i* sits at `i * ((argsz - 32) / count)`; the head is 16 bytes, not 32, so
/// that formula is off. Entries are packed 40-byte structures right after the 16-byte head.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IoFdSubRegion {
    /// Start of the sub-region within the region.
    pub offset: u64,
    /// Length (may be 0).
    pub size: u64,
    /// Index of the fd in the reply's ancillary data.
    pub fd_index: u32,
    /// [`IO_FD_TYPE_IOEVENTFD`] or [`IO_FD_TYPE_IOREGIONFD`].
    pub fd_type: u32,
    /// KVM ioeventfd/ioregion flags.
    pub flags: u32,
    /// Zero.
    pub padding: u32,
    /// ioeventfd datamatch or ioregionfd user data.
    pub data: u64,
}

const _: () = assert!(size_of::<IoFdSubRegion>() == 40);

/// `DEVICE_GET_REGION_IO_FDS` reply. This project's server answers the request with ENOTSUP;
/// the type exists so that clients can decode servers that implement it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionIoFdsReply {
    /// Size of the full reply.
    pub argsz: u32,
    /// Region index.
    pub index: u32,
    /// Number of sub-regions (also when the reply is truncated and `sub_regions` is empty).
    pub count: u32,
    /// The sub-regions (empty when truncated).
    pub sub_regions: Vec<IoFdSubRegion>,
}

impl Payload for RegionIoFdsReply {
    const COMMAND: Command = Command::DEVICE_GET_REGION_IO_FDS;

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put(
            out,
            &RegionIoFdsRequest {
                argsz: self.argsz,
                flags: 0,
                index: self.index,
                count: self.count,
            },
        );
        wire::put(out, self.sub_regions.as_slice());
    }

    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let c = Self::COMMAND;
        let (head, rest) = wire::read::<RegionIoFdsRequest>(c, "region_io_fds", bytes)?;
        let truncated = rest.is_empty() && head.argsz as usize > size_of::<RegionIoFdsRequest>();
        let sub_regions = if truncated {
            Vec::new()
        } else {
            let len = (head.count as usize).saturating_mul(size_of::<IoFdSubRegion>());
            let (entries, rest) = wire::take(c, "sub-regions", rest, len)?;
            wire::expect_end(c, "sub-regions", rest)?;
            entries
                .chunks_exact(size_of::<IoFdSubRegion>())
                .filter_map(|chunk| IoFdSubRegion::read_from_bytes(chunk).ok())
                .collect()
        };
        Ok(Self {
            argsz: head.argsz,
            index: head.index,
            count: head.count,
            sub_regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(offset_of!(VfioRegionInfo, flags), 4);
        assert_eq!(offset_of!(VfioRegionInfo, index), 8);
        assert_eq!(offset_of!(VfioRegionInfo, cap_offset), 12);
        assert_eq!(offset_of!(VfioRegionInfo, size), 16);
        assert_eq!(offset_of!(VfioRegionInfo, offset), 24);
        assert_eq!(offset_of!(CapHeader, version), 2);
        assert_eq!(offset_of!(CapHeader, next), 4);
        assert_eq!(offset_of!(SparseMmapCap, nr_areas), 8);
        assert_eq!(offset_of!(SparseMmapCap, reserved), 12);
        assert_eq!(offset_of!(SparseMmapArea, size), 8);
        assert_eq!(offset_of!(RegionTypeCap, region_type), 8);
        assert_eq!(offset_of!(RegionTypeCap, subtype), 12);
        assert_eq!(offset_of!(IoFdSubRegion, fd_index), 16);
        assert_eq!(offset_of!(IoFdSubRegion, fd_type), 20);
        assert_eq!(offset_of!(IoFdSubRegion, flags), 24);
        assert_eq!(offset_of!(IoFdSubRegion, data), 32);
        assert_eq!(
            RegionCap::SparseMmap(vec![SparseMmapArea { offset: 0, size: 1 }; 3]).encoded_len(),
            16 + 48
        );
    }

    /// BAR0 of an NVMe controller: 16 KiB, registers trapped, the doorbell page at 0x1000
    /// mmappable. Written out by hand from the spec's tables.
    fn bar0_reply_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&64u32.to_ne_bytes()); // argsz: 32 + 16 + 16
        b.extend_from_slice(&0xfu32.to_ne_bytes()); // READ | WRITE | MMAP | CAPS
        b.extend_from_slice(&0u32.to_ne_bytes()); // index 0
        b.extend_from_slice(&32u32.to_ne_bytes()); // cap_offset
        b.extend_from_slice(&0x4000u64.to_ne_bytes()); // size
        b.extend_from_slice(&0u64.to_ne_bytes()); // mmap offset
        b.extend_from_slice(&1u16.to_ne_bytes()); // id SPARSE_MMAP
        b.extend_from_slice(&1u16.to_ne_bytes()); // version 1
        b.extend_from_slice(&0u32.to_ne_bytes()); // next: end of chain
        b.extend_from_slice(&1u32.to_ne_bytes()); // nr_areas
        b.extend_from_slice(&0u32.to_ne_bytes()); // reserved
        b.extend_from_slice(&0x1000u64.to_ne_bytes()); // area offset
        b.extend_from_slice(&0x1000u64.to_ne_bytes()); // area size
        b
    }

    fn bar0() -> RegionInfo {
        RegionInfo {
            flags: RegionInfoFlags::READ | RegionInfoFlags::WRITE | RegionInfoFlags::MMAP,
            index: 0,
            size: 0x4000,
            offset: 0,
            caps: vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x1000,
                size: 0x1000,
            }])],
        }
    }

    #[test]
    fn sparse_mmap_reply_is_byte_exact() {
        let reply = RegionInfoReply::for_request(bar0(), 4096);
        assert_eq!(reply.to_bytes(), bar0_reply_bytes());
        let decoded = RegionInfoReply::decode(&bar0_reply_bytes(), &Limits::default()).unwrap();
        assert_eq!(decoded, reply);
        assert!(!decoded.is_truncated());
    }

    #[test]
    fn small_argsz_gets_the_fixed_part_with_the_full_argsz() {
        let reply = RegionInfoReply::for_request(bar0(), 32);
        let bytes = reply.to_bytes();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..4], &64u32.to_ne_bytes(), "argsz is the full size");
        // READ | WRITE | MMAP without CAPS: QEMU rejects CAPS with cap_offset inside the fixed
        // part ("failed to get region 0 info: Invalid argument").
        assert_eq!(&bytes[4..8], &0x7u32.to_ne_bytes(), "CAPS clear");
        assert_eq!(&bytes[12..16], &0u32.to_ne_bytes(), "cap_offset 0");
        let decoded = RegionInfoReply::decode(&bytes, &Limits::default()).unwrap();
        assert!(decoded.is_truncated());
        assert!(decoded.info.caps.is_empty());
    }

    #[test]
    fn chain_of_three_with_offsets_relative_to_the_region_info() {
        let mut info = bar0();
        info.caps.push(RegionCap::Type {
            region_type: 0x8086_0000,
            subtype: 7,
        });
        info.caps.push(RegionCap::MsixMappable);
        let bytes = RegionInfoReply::for_request(info.clone(), 4096).to_bytes();
        // First cap at 32 (16 + 16 bytes), second at 64 (16 bytes), third at 80 (8 bytes).
        assert_eq!(bytes.len(), 88);
        assert_eq!(&bytes[36..40], &64u32.to_ne_bytes());
        assert_eq!(&bytes[68..72], &80u32.to_ne_bytes());
        assert_eq!(&bytes[84..88], &0u32.to_ne_bytes());
        let decoded = RegionInfoReply::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(decoded.info.caps, info.caps);
    }

    #[test]
    fn chain_loops_and_wild_offsets_are_errors() {
        let mut bytes = bar0_reply_bytes();
        bytes[36..40].copy_from_slice(&32u32.to_ne_bytes()); // next points at itself
        let err = RegionInfoReply::decode(&bytes, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
        let mut bytes = bar0_reply_bytes();
        bytes[12..16].copy_from_slice(&8u32.to_ne_bytes()); // into the fixed part
        assert!(RegionInfoReply::decode(&bytes, &Limits::default()).is_err());
        let mut bytes = bar0_reply_bytes();
        bytes[12..16].copy_from_slice(&1000u32.to_ne_bytes()); // beyond the payload
        assert!(RegionInfoReply::decode(&bytes, &Limits::default()).is_err());
        let mut bytes = bar0_reply_bytes();
        bytes[40..44].copy_from_slice(&u32::MAX.to_ne_bytes()); // nr_areas huge
        assert!(RegionInfoReply::decode(&bytes, &Limits::default()).is_err());
    }

    #[test]
    fn request_and_io_fds() {
        let req = RegionInfoRequest {
            argsz: 32,
            index: 7,
        };
        let bytes = req.to_bytes();
        assert_eq!(bytes.len(), 32);
        assert_eq!(
            RegionInfoRequest::decode(&bytes, &Limits::default()).unwrap(),
            req
        );
        let small = RegionInfoRequest {
            argsz: 16,
            index: 7,
        };
        assert!(RegionInfoRequest::decode(&small.to_bytes(), &Limits::default()).is_err());

        let io = RegionIoFdsRequest {
            argsz: 1024,
            flags: 0,
            index: 0,
            count: 0,
        };
        assert_eq!(
            RegionIoFdsRequest::decode(&io.to_bytes(), &Limits::default()).unwrap(),
            io
        );
        let bad = RegionIoFdsRequest { flags: 1, ..io };
        assert!(RegionIoFdsRequest::decode(&bad.to_bytes(), &Limits::default()).is_err());
        let sub = IoFdSubRegion {
            offset: 0x1000,
            size: 4,
            fd_index: 0,
            fd_type: IO_FD_TYPE_IOEVENTFD,
            flags: 0,
            padding: 0,
            data: 0,
        };
        let reply = RegionIoFdsReply {
            argsz: 56,
            index: 0,
            count: 1,
            sub_regions: vec![sub],
        };
        assert_eq!(
            RegionIoFdsReply::decode(&reply.to_bytes(), &Limits::default()).unwrap(),
            reply
        );
        let truncated = RegionIoFdsReply {
            sub_regions: vec![],
            ..reply
        };
        assert_eq!(
            RegionIoFdsReply::decode(&truncated.to_bytes(), &Limits::default()).unwrap(),
            truncated
        );
    }

    fn cap() -> impl Strategy<Value = RegionCap> {
        prop_oneof![
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4).prop_map(|v| {
                RegionCap::SparseMmap(
                    v.into_iter()
                        .map(|(offset, size)| SparseMmapArea { offset, size })
                        .collect(),
                )
            }),
            (any::<u32>(), any::<u32>()).prop_map(|(region_type, subtype)| RegionCap::Type {
                region_type,
                subtype
            }),
            Just(RegionCap::MsixMappable),
            (4u16..100, 2u16..10).prop_map(|(id, version)| RegionCap::Unknown { id, version }),
        ]
    }

    proptest! {
        #[test]
        fn region_info_round_trip(flags in 0u32..8, index: u32, size: u64, offset: u64,
                                  caps in proptest::collection::vec(cap(), 0..4), argsz in 32u32..256) {
            let info = RegionInfo { flags: RegionInfoFlags::from_bits_retain(flags), index, size, offset, caps };
            let reply = RegionInfoReply::for_request(info, argsz);
            let decoded = RegionInfoReply::decode(&reply.to_bytes(), &Limits::default()).unwrap();
            prop_assert_eq!(decoded, reply);
        }
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = RegionInfoRequest::decode(bytes, &l);
                let _ = RegionInfoReply::decode(bytes, &l);
                let _ = RegionIoFdsRequest::decode(bytes, &l);
                let _ = RegionIoFdsReply::decode(bytes, &l);
            });
        // Truncations and single-byte corruptions of a valid chain.
        let valid = bar0_reply_bytes();
        for len in 0..valid.len() {
            let _ = RegionInfoReply::decode(&valid[..len], &l);
        }
        for i in 0..valid.len() {
            let mut bytes = valid.clone();
            bytes[i] ^= 0xff;
            let _ = RegionInfoReply::decode(&bytes, &l);
        }
    }
}
