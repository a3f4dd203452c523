//! The mechanics of a Controller Data Queue ring in host memory: where the next entry goes, its
//! phase tag, the full condition and the head/tail-pointer-trigger rules of Feature 21h.
//!
//! The ring has `n` slots of 32 bytes. The controller writes at the tail and advances it; the
//! phase tag starts at 1 (the host zeroes the ring before Create) and flips each time the tail
//! wraps. The ring is full when `(tail + 1) % n == head`: the entry that made it full is re-marked
//! ESA 7 ("last entry; queue full") and nothing more is logged until the host moves the head.

use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::LbaMigrationQueueEntry;
use zerocopy::IntoBytes;

use crate::memory::DmaError;
use crate::memory::DmaMemory;

/// Size of one entry in bytes.
pub const ENTRY_BYTES: u64 = LbaMigrationQueueEntry::SIZE as u64;

/// What one append caused, for the owner to turn into asynchronous events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raised {
    /// The tail reached the armed tail pointer trigger (which is now disarmed).
    pub tail_trigger: bool,
    /// The ring became full (logging is now suppressed).
    pub full: bool,
}

impl Raised {
    /// Combines what two appends raised.
    pub fn merge(self, other: Self) -> Self {
        Self {
            tail_trigger: self.tail_trigger || other.tail_trigger,
            full: self.full || other.full,
        }
    }
}

/// A head pointer Set Features 21h may not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// HP is not a slot of the ring.
    #[error("head pointer {hp} is outside the {slots}-slot queue")]
    OutOfRange {
        /// The requested head.
        hp: u32,
        /// Slots in the ring.
        slots: u32,
    },
    /// HP would pass entries the controller has not written.
    #[error("head pointer {hp} is ahead of the tail {tail} (head {head})")]
    AheadOfTail {
        /// The requested head.
        hp: u32,
        /// The current head.
        head: u32,
        /// The current tail.
        tail: u32,
    },
    /// TPT is not a slot of the ring.
    #[error("tail pointer trigger {tpt} is outside the {slots}-slot queue")]
    TriggerOutOfRange {
        /// The requested trigger.
        tpt: u32,
        /// Slots in the ring.
        slots: u32,
    },
}

/// One ring's producer state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    base: u64,
    slots: u32,
    head: u32,
    tail: u32,
    phase: bool,
    suppressed: bool,
    etpt: bool,
    tpt: u32,
}

impl Ring {
    /// A ring of `slots` entries (at least 2) at `base` in host memory, empty, phase 1.
    pub fn new(base: u64, slots: u32) -> Self {
        Self {
            base,
            slots,
            head: 0,
            tail: 0,
            phase: true,
            suppressed: false,
            etpt: false,
            tpt: 0,
        }
    }

    /// The host's head pointer as last set.
    pub fn head(&self) -> u32 {
        self.head
    }

    /// The slot the next entry goes to.
    #[cfg(test)]
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// Whether the tail pointer trigger is armed, and its slot.
    pub fn trigger(&self) -> (bool, u32) {
        (self.etpt, self.tpt)
    }

    /// Whether logging is suppressed because the ring filled up.
    #[cfg(test)]
    pub fn suppressed(&self) -> bool {
        self.suppressed
    }

    /// Writes `entry` at the tail with the current phase tag and advances the tail, unless the
    /// ring is full. The first 28 bytes are written first and the dword holding the phase tag
    /// last, with release ordering, so a host that sees the new phase sees the whole entry.
    pub fn push(
        &mut self,
        mem: &dyn DmaMemory,
        mut entry: LbaMigrationQueueEntry,
    ) -> Result<Raised, DmaError> {
        let mut raised = Raised::default();
        if self.suppressed {
            return Ok(raised);
        }
        entry.attr = entry.attr.with_cdqp(self.phase);
        let slot = self.tail;
        let next = (slot + 1) % self.slots;
        let full = (next + 1) % self.slots == self.head;
        if full {
            entry.attr = entry.attr.with_esa(EntrySequence::LAST_FULL);
        }
        let gpa = self.base + u64::from(slot) * ENTRY_BYTES;
        let bytes = entry.as_bytes();
        mem.write(gpa, &bytes[..28])?;
        let last = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
        mem.store_u32_release(gpa + 28, last)?;
        self.tail = next;
        if next == 0 {
            self.phase = !self.phase;
        }
        if self.etpt && self.tail == self.tpt {
            self.etpt = false;
            raised.tail_trigger = true;
        }
        if full {
            self.suppressed = true;
            raised.full = true;
        }
        Ok(raised)
    }

    /// Set Features 21h: moves the head to `hp` (which may not pass the tail) and arms or disarms
    /// the tail pointer trigger. A full ring with room again resumes logging. Nothing changes on
    /// error.
    pub fn set_head(&mut self, hp: u32, etpt: bool, tpt: u32) -> Result<(), HeadError> {
        if hp >= self.slots {
            return Err(HeadError::OutOfRange {
                hp,
                slots: self.slots,
            });
        }
        let written = (self.tail + self.slots - self.head) % self.slots;
        let advance = (hp + self.slots - self.head) % self.slots;
        if advance > written {
            return Err(HeadError::AheadOfTail {
                hp,
                head: self.head,
                tail: self.tail,
            });
        }
        if etpt && tpt >= self.slots {
            return Err(HeadError::TriggerOutOfRange {
                tpt,
                slots: self.slots,
            });
        }
        self.head = hp;
        self.etpt = etpt;
        self.tpt = if etpt { tpt } else { 0 };
        if self.suppressed && (self.tail + 1) % self.slots != self.head {
            self.suppressed = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nvme_spec::lm::LbaChangeInfo;
    use shmem::AddressSpace;
    use shmem::Mapping;
    use zerocopy::FromBytes;

    use super::*;

    const BASE: u64 = 0x4000;

    fn mem() -> AddressSpace {
        let m = AddressSpace::new();
        m.map(BASE, Mapping::memfd("cdq", 0x1000).unwrap()).unwrap();
        m
    }

    fn read(mem: &AddressSpace, slot: u32) -> LbaMigrationQueueEntry {
        let mut raw = [0u8; 32];
        mem.read(BASE + u64::from(slot) * ENTRY_BYTES, &mut raw)
            .unwrap();
        LbaMigrationQueueEntry::read_from_bytes(&raw).unwrap()
    }

    fn range(slba: u64) -> LbaMigrationQueueEntry {
        LbaMigrationQueueEntry::range(1, slba, 0, false, false)
    }

    #[test]
    fn phase_flips_on_wrap() {
        let mem = mem();
        let mut ring = Ring::new(BASE, 4);
        for slba in 0..3 {
            assert_eq!(
                ring.push(&mem, range(slba)).unwrap(),
                Raised::default(),
                "entry {slba}"
            );
            ring.set_head(ring.tail(), false, 0).unwrap();
        }
        assert_eq!(ring.tail(), 3);
        ring.push(&mem, range(3)).unwrap();
        assert_eq!(ring.tail(), 0);
        ring.set_head(0, false, 0).unwrap();
        ring.push(&mem, range(4)).unwrap();
        let first = read(&mem, 0);
        assert_eq!(first.slba, 4);
        assert!(!first.attr.cdqp(), "second pass carries phase 0");
        let third = read(&mem, 3);
        assert_eq!(third.slba, 3);
        assert!(third.attr.cdqp());
        assert_eq!(third.attr.lbacir(), LbaChangeInfo::RANGE);
        assert_eq!(third.attr.esa(), EntrySequence::MIDDLE);
    }

    #[test]
    fn full_marks_last_entry_and_suppresses_until_head_moves() {
        let mem = mem();
        let mut ring = Ring::new(BASE, 4);
        assert!(!ring.push(&mem, range(0)).unwrap().full);
        assert!(!ring.push(&mem, range(1)).unwrap().full);
        // The third entry leaves (tail + 1) % 4 == head: full.
        assert!(ring.push(&mem, range(2)).unwrap().full);
        assert!(ring.suppressed());
        assert_eq!(read(&mem, 2).attr.esa(), EntrySequence::LAST_FULL);
        assert_eq!(read(&mem, 2).slba, 2);
        // Further entries are dropped.
        assert_eq!(ring.push(&mem, range(9)).unwrap(), Raised::default());
        assert_eq!(ring.tail(), 3);
        assert_eq!(read(&mem, 3), LbaMigrationQueueEntry::default());
        // Consuming one entry frees space.
        ring.set_head(1, false, 0).unwrap();
        assert!(!ring.suppressed());
        ring.push(&mem, range(5)).unwrap();
        assert_eq!(read(&mem, 3).slba, 5);
    }

    #[test]
    fn head_rules() {
        let mem = mem();
        let mut ring = Ring::new(BASE, 8);
        assert_eq!(
            ring.set_head(8, false, 0),
            Err(HeadError::OutOfRange { hp: 8, slots: 8 })
        );
        assert_eq!(
            ring.set_head(1, false, 0),
            Err(HeadError::AheadOfTail {
                hp: 1,
                head: 0,
                tail: 0
            })
        );
        for slba in 0..3 {
            ring.push(&mem, range(slba)).unwrap();
        }
        assert!(ring.set_head(4, false, 0).is_err());
        ring.set_head(2, false, 0).unwrap();
        // Moving backwards would be "ahead" of the tail modulo the ring.
        assert!(ring.set_head(1, false, 0).is_err());
        ring.set_head(3, false, 0).unwrap();
        assert_eq!(ring.head(), 3);
        assert_eq!(
            ring.set_head(3, true, 8),
            Err(HeadError::TriggerOutOfRange { tpt: 8, slots: 8 })
        );
        assert_eq!(ring.trigger(), (false, 0));
    }

    #[test]
    fn tail_pointer_trigger_fires_once() {
        let mem = mem();
        let mut ring = Ring::new(BASE, 8);
        ring.set_head(0, true, 2).unwrap();
        assert!(!ring.push(&mem, range(0)).unwrap().tail_trigger);
        assert!(ring.push(&mem, range(1)).unwrap().tail_trigger);
        assert_eq!(ring.trigger(), (false, 2));
        ring.set_head(2, false, 0).unwrap();
        for slba in 2..9 {
            assert!(!ring.push(&mem, range(slba)).unwrap().tail_trigger);
            ring.set_head(ring.tail(), false, 0).unwrap();
        }
    }

    #[test]
    fn dma_failure_leaves_ring_unchanged() {
        let mem = mem();
        let mut ring = Ring::new(0x10_0000, 4);
        assert!(ring.push(&mem, range(0)).is_err());
        assert_eq!(ring.tail(), 0);
    }
}
