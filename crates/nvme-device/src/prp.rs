//! Walking a command's PRPs into guest-memory segments.
//!
//! The walk turns PRP1/PRP2 (and the PRP list PRP2 may point at) into a short list of
//! `(guest address, length)` segments, merging pages that happen to be contiguous. Everything
//! here is guest-controlled: offsets are checked as the specification requires (PRP Offset
//! Invalid), list pages that are not mapped give Data Transfer Error, and the number of segments
//! is bounded by the controller's maximum data transfer size, so the walk needs no allocation.

use nvme_spec::prp::PageSize;
use nvme_spec::status::Status;

use crate::memory::DmaMemory;

/// The most pages one command may touch: the device's MDTS (256 KiB at 4 KiB pages) plus one
/// for a buffer that does not start on a page boundary.
pub const MAX_SEGMENTS: usize = 65;

/// One physically contiguous piece of a data buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The segments of one data buffer, in transfer order.
#[derive(Clone, Debug)]
pub struct Segments {
    items: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl Default for Segments {
    /// No pieces (a request without data, e.g. a Flush).
    fn default() -> Self {
        Self::new()
    }
}

impl Segments {
    fn new() -> Self {
        Self {
            items: [Segment::default(); MAX_SEGMENTS],
            count: 0,
        }
    }

    /// Appends a page-sized (or shorter) piece, merging it into the previous segment when it
    /// continues it.
    fn push(&mut self, gpa: u64, len: u64) -> Result<(), Status> {
        if let Some(last) = self.items[..self.count].last_mut()
            && last.gpa.checked_add(last.len) == Some(gpa)
        {
            last.len += len;
            return Ok(());
        }
        let slot = self
            .items
            .get_mut(self.count)
            .ok_or(Status::INVALID_FIELD_IN_COMMAND)?;
        *slot = Segment { gpa, len };
        self.count += 1;
        Ok(())
    }

    /// The segments.
    pub fn as_slice(&self) -> &[Segment] {
        &self.items[..self.count]
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.as_slice().iter().map(|s| s.len).sum()
    }

    /// True when the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Resolves the data buffer of `len` bytes described by `prp1`/`prp2`. `len` must already be
/// checked against the maximum data transfer size (at most `MAX_SEGMENTS - 1` pages).
pub fn walk(
    mem: &dyn DmaMemory,
    page: PageSize,
    prp1: u64,
    prp2: u64,
    len: u64,
) -> Result<Segments, Status> {
    let mut segments = Segments::new();
    if len == 0 {
        return Ok(segments);
    }
    // PRP1 may carry any dword-aligned offset.
    if prp1 & 0x3 != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let first = (page.bytes() - page.offset(prp1)).min(len);
    segments.push(prp1, first)?;
    let mut remaining = len - first;
    if remaining == 0 {
        return Ok(segments);
    }
    if remaining <= page.bytes() {
        // PRP2 is the second (and last) data page.
        if !page.is_page_aligned(prp2) {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        segments.push(prp2, remaining)?;
        return Ok(segments);
    }
    // PRP2 points at a PRP list, which may start at any qword offset within its page.
    if !PageSize::is_list_pointer_aligned(prp2) {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let mut list = prp2;
    let mut entries = [0u64; 512];
    while remaining > 0 {
        let slots = ((page.bytes() - page.offset(list)) / 8).min(entries.len() as u64);
        let needed = remaining.div_ceil(page.bytes());
        // If more pages are needed than this list page holds, its last slot chains onward.
        let (data_slots, chained) = if needed > slots {
            (slots - 1, true)
        } else {
            (needed, false)
        };
        let read = if chained { slots } else { data_slots } as usize;
        let mut raw = [0u8; 4096];
        let bytes = &mut raw[..read * 8];
        mem.read(list, bytes)
            .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            entries[i] = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        for &entry in &entries[..data_slots as usize] {
            if !page.is_page_aligned(entry) {
                return Err(Status::PRP_OFFSET_INVALID);
            }
            let piece = remaining.min(page.bytes());
            segments.push(entry, piece)?;
            remaining -= piece;
        }
        if chained {
            let next = entries[read - 1];
            if !PageSize::is_list_pointer_aligned(next) || page.offset(next) != 0 {
                return Err(Status::PRP_OFFSET_INVALID);
            }
            list = next;
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmem::AddressSpace;
    use shmem::Mapping;

    const PAGE: PageSize = PageSize::SIZE_4K;

    fn mem() -> AddressSpace {
        let m = AddressSpace::new();
        m.map(0, Mapping::memfd("prp", 1 << 20).unwrap()).unwrap();
        m
    }

    fn put_list(mem: &AddressSpace, at: u64, entries: &[u64]) {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write(at, &bytes).unwrap();
    }

    #[test]
    fn single_and_two_pages() {
        let m = mem();
        let s = walk(&m, PAGE, 0x1000, 0, 4096).unwrap();
        assert_eq!(
            s.as_slice(),
            &[Segment {
                gpa: 0x1000,
                len: 4096
            }]
        );
        let s = walk(&m, PAGE, 0x1800, 0x5000, 4096).unwrap();
        assert_eq!(
            s.as_slice(),
            &[
                Segment {
                    gpa: 0x1800,
                    len: 2048
                },
                Segment {
                    gpa: 0x5000,
                    len: 2048
                }
            ]
        );
        assert_eq!(
            walk(&m, PAGE, 0x1800, 0x5008, 4096).unwrap_err(),
            Status::PRP_OFFSET_INVALID
        );
        assert_eq!(
            walk(&m, PAGE, 0x1802, 0, 16).unwrap_err(),
            Status::PRP_OFFSET_INVALID
        );
    }

    #[test]
    fn list_with_merging_and_chaining() {
        let m = mem();
        // 16 KiB at 0x10000: PRP1 page + list of 3 contiguous pages → one merged segment.
        put_list(&m, 0x2000, &[0x11000, 0x12000, 0x13000]);
        let s = walk(&m, PAGE, 0x10000, 0x2000, 16384).unwrap();
        assert_eq!(
            s.as_slice(),
            &[Segment {
                gpa: 0x10000,
                len: 16384
            }]
        );

        // A list that starts 16 bytes before the end of its page chains to a second page.
        put_list(&m, 0x3FF0, &[0x21000, 0x6000]);
        put_list(&m, 0x6000, &[0x30000, 0x40000]);
        let s = walk(&m, PAGE, 0x20000, 0x3FF0, 4 * 4096).unwrap();
        assert_eq!(
            s.as_slice(),
            &[
                Segment {
                    gpa: 0x20000,
                    len: 8192
                },
                Segment {
                    gpa: 0x30000,
                    len: 4096
                },
                Segment {
                    gpa: 0x40000,
                    len: 4096
                }
            ]
        );
        assert_eq!(s.len(), 4 * 4096);
    }

    #[test]
    fn bad_lists_are_rejected() {
        let m = mem();
        put_list(&m, 0x2000, &[0x11001, 0x12000]);
        assert_eq!(
            walk(&m, PAGE, 0x10000, 0x2000, 3 * 4096).unwrap_err(),
            Status::PRP_OFFSET_INVALID
        );
        assert_eq!(
            walk(&m, PAGE, 0x10000, 0x2004, 3 * 4096).unwrap_err(),
            Status::PRP_OFFSET_INVALID
        );
        // A list outside guest memory.
        assert_eq!(
            walk(&m, PAGE, 0x10000, 0x4000_0000, 3 * 4096).unwrap_err(),
            Status::DATA_TRANSFER_ERROR
        );
        // Too many distinct pages for the segment table (beyond MDTS).
        let entries: Vec<u64> = (0..100).map(|i| 0x80000 + i * 0x2000).collect();
        put_list(&m, 0x8000, &entries);
        assert_eq!(
            walk(&m, PAGE, 0x10000, 0x8000, 100 * 4096).unwrap_err(),
            Status::INVALID_FIELD_IN_COMMAND
        );
    }

    proptest::proptest! {
        #[test]
        fn walk_never_panics(prp1 in 0u64..(2 << 20), prp2 in proptest::num::u64::ANY, len in 0u64..(300 * 1024)) {
            let m = mem();
            if let Ok(s) = walk(&m, PAGE, prp1, prp2, len) {
                proptest::prop_assert_eq!(s.len(), len);
            }
        }
    }
}
