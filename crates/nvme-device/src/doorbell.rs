//! The doorbell page: where the host writes SQ tails and CQ heads.
//!
//! Doorbells live in shared memory that the transport maps into the guest (a sparse-mmap area of
//! BAR0 at offset 1000h), so ringing one costs the guest a plain store and the device a load;
//! no message crosses a socket. (With trapped delivery the transport does not map it and
//! writes it on the guest's behalf; once the host configures shadow doorbells, the I/O queues'
//! values come from its shadow buffer instead, see `controller::shadow`.) The values are
//! written by the guest and therefore untrusted: callers validate them against the queue size
//! before use.
//!
//! The shared memory file mirrors BAR0 from its start: its first page stands for the register
//! page and stays unused, and the doorbells begin at file offset [`Doorbells::file_offset`]
//! (1000h). A transport can then describe BAR0 as "file offset 0, mmappable from 1000h" and
//! the client maps exactly the doorbell page.

use std::io;
use std::sync::atomic::Ordering;

use nvme_spec::registers::Register;
use shmem::Mapping;

/// Maximum number of queue pairs (admin + I/O) whose doorbells fit in one page at stride 0.
pub const MAX_QUEUE_PAIRS_PER_PAGE: u16 = 512;

/// Offset of the first doorbell in the shared memory file (and in BAR0).
const FILE_OFFSET: u64 = Register::DOORBELLS.0;

/// The doorbell registers of one controller, backed by a shareable memory page.
#[derive(Debug)]
pub struct Doorbells {
    page: Mapping,
    stride: u64,
    queue_pairs: u16,
}

impl Doorbells {
    /// Creates a zeroed doorbell area for `queue_pairs` queue pairs (admin included) with the
    /// doorbell stride `4 << dstrd` bytes, rounded up to whole pages.
    pub fn new(queue_pairs: u16, dstrd: u8) -> io::Result<Self> {
        let stride = 4u64 << dstrd.min(15);
        let bytes = FILE_OFFSET + (u64::from(queue_pairs) * 2 * stride).next_multiple_of(4096);
        let len = usize::try_from(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "doorbell area too large"))?;
        Ok(Self {
            page: Mapping::memfd("nvme-doorbells", len)?,
            stride,
            queue_pairs,
        })
    }

    /// The shared memory backing the doorbells, for the transport to hand to the guest. The
    /// doorbells start at [`file_offset`](Self::file_offset).
    pub fn mapping(&self) -> &Mapping {
        &self.page
    }

    /// Offset of the first doorbell (SQ 0 tail) in [`mapping`](Self::mapping)'s file: 1000h,
    /// the same as in BAR0.
    pub fn file_offset(&self) -> u64 {
        FILE_OFFSET
    }

    /// Size of the doorbell area in bytes (a whole number of pages).
    pub fn len(&self) -> u64 {
        self.page.len() - FILE_OFFSET
    }

    /// True if the area is empty (never: the constructor rounds up to a page).
    pub fn is_empty(&self) -> bool {
        self.page.is_empty()
    }

    fn offset(&self, qid: u16, cq: bool) -> Option<u64> {
        (qid < self.queue_pairs)
            .then(|| FILE_OFFSET + (2 * u64::from(qid) + u64::from(cq)) * self.stride)
    }

    fn load(&self, offset: Option<u64>) -> u32 {
        offset
            .and_then(|o| self.page.atomic_u32(o).ok())
            .map_or(0, |word| word.load(Ordering::Acquire))
    }

    fn store(&self, offset: Option<u64>, value: u32) {
        if let Some(word) = offset.and_then(|o| self.page.atomic_u32(o).ok()) {
            word.store(value, Ordering::Release);
        }
    }

    /// The last value the host wrote to the tail doorbell of submission queue `qid`.
    pub fn sq_tail(&self, qid: u16) -> u32 {
        self.load(self.offset(qid, false))
    }

    /// The last value the host wrote to the head doorbell of completion queue `qid`.
    pub fn cq_head(&self, qid: u16) -> u32 {
        self.load(self.offset(qid, true))
    }

    /// The last value the host wrote to queue `qid`'s CQ head doorbell (`cq`) or SQ tail
    /// doorbell.
    pub fn value(&self, qid: u16, cq: bool) -> u32 {
        if cq {
            self.cq_head(qid)
        } else {
            self.sq_tail(qid)
        }
    }

    /// Sets the SQ tail doorbell of `qid`, as a register write or a state restore does.
    pub fn set_sq_tail(&self, qid: u16, value: u32) {
        self.store(self.offset(qid, false), value);
    }

    /// Sets the CQ head doorbell of `qid`, as a register write or a state restore does.
    pub fn set_cq_head(&self, qid: u16, value: u32) {
        self.store(self.offset(qid, true), value);
    }

    /// The file offset of the doorbell at byte `offset` within the doorbell area, if there is
    /// one there.
    fn doorbell_at(&self, offset: u64) -> Option<u64> {
        (offset.is_multiple_of(self.stride)
            && offset / self.stride < 2 * u64::from(self.queue_pairs))
        .then_some(FILE_OFFSET + offset)
    }

    /// Writes a doorbell by its byte offset within the area (a register write that reached the
    /// device through the control path instead of the mapped page). Offsets that are not a
    /// doorbell are ignored, as writes to reserved register space must be.
    pub fn write_offset(&self, offset: u64, value: u32) {
        self.store(self.doorbell_at(offset), value);
    }

    /// Reads a doorbell by its byte offset within the area; other offsets read as zero.
    pub fn read_offset(&self, offset: u64) -> u32 {
        self.load(self.doorbell_at(offset))
    }

    /// Zeroes every doorbell (controller reset).
    pub fn clear(&self) {
        for qid in 0..self.queue_pairs {
            self.set_sq_tail(qid, 0);
            self.set_cq_head(qid, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_stride() {
        for dstrd in 0..3u8 {
            let db = Doorbells::new(65, dstrd).unwrap();
            let stride = 4u64 << dstrd;
            db.set_sq_tail(3, 17);
            db.set_cq_head(3, 9);
            let mut word = [0u8; 4];
            let base = db.file_offset();
            db.mapping().read(base + 6 * stride, &mut word).unwrap();
            assert_eq!(u32::from_ne_bytes(word), 17);
            db.mapping().read(base + 7 * stride, &mut word).unwrap();
            assert_eq!(u32::from_ne_bytes(word), 9);
            assert_eq!(db.read_offset(7 * stride), 9);
            db.write_offset(2 * stride, 5);
            assert_eq!(db.sq_tail(1), 5);
            // Out of range or misaligned offsets are ignored.
            db.write_offset(130 * stride, 1);
            db.write_offset(stride + 2, 1);
            assert_eq!(db.read_offset(130 * stride), 0);
            assert_eq!(db.sq_tail(65), 0);
            db.clear();
            assert_eq!(db.sq_tail(3), 0);
            assert_eq!(db.cq_head(3), 0);
        }
    }
}
