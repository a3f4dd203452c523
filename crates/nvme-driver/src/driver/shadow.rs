//! The host's side of shadow doorbells (Doorbell Buffer Config, admin opcode 7Ch), as Linux's
//! nvme driver has it: the host writes every I/O queue's SQ tail and CQ head into a page of its
//! memory the controller reads, and writes the doorbell register only when the controller's
//! EventIdx for that doorbell says it is waiting for one. A controller whose doorbell registers
//! are trapped (each write a message) then costs the host a register write only when its worker
//! is about to sleep, not one per submission.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::atomic::fence;

use nvme_spec::registers::Register;

use super::DriverError;
use crate::memory::DmaBuffer;
use crate::memory::HostMemory;
use crate::memory::PAGE;

/// The two pages handed to the controller: shadow doorbells (PRP1) and EventIdx values (PRP2),
/// both laid out like the doorbell registers (the entry of the register at BAR0 offset `1000h +
/// x` sits at offset `x`).
#[derive(Debug)]
pub(crate) struct ShadowPages {
    doorbells: DmaBuffer,
    event_indices: DmaBuffer,
}

impl ShadowPages {
    /// Two zeroed pages in `mem`.
    pub(crate) fn new(mem: &std::sync::Arc<HostMemory>) -> Result<Self, DriverError> {
        Ok(Self {
            doorbells: mem.alloc(PAGE)?,
            event_indices: mem.alloc(PAGE)?,
        })
    }

    /// IOVA of the shadow doorbell page (PRP1 of Doorbell Buffer Config).
    pub(crate) fn doorbells_iova(&self) -> u64 {
        self.doorbells.iova()
    }

    /// IOVA of the EventIdx page (PRP2).
    pub(crate) fn event_indices_iova(&self) -> u64 {
        self.event_indices.iova()
    }

    /// Zeroes both pages (before they are handed to a controller again after a reset).
    pub(crate) fn clear(&self) {
        self.doorbells.fill(0);
        self.event_indices.fill(0);
    }

    /// The entry of the doorbell register at BAR0 offset `doorbell`, if the pages hold one.
    pub(crate) fn entry(&self, doorbell: u64) -> Option<ShadowEntry<'_>> {
        let offset = doorbell.checked_sub(Register::DOORBELLS.0)?;
        if offset.checked_add(4)? > PAGE {
            return None;
        }
        fn at(buffer: &DmaBuffer, offset: u64) -> Option<&AtomicU32> {
            buffer.memory().atomic_u32(buffer.iova() + offset).ok()
        }
        Some(ShadowEntry {
            value: at(&self.doorbells, offset)?,
            event: at(&self.event_indices, offset)?,
        })
    }

    /// Sets the shadow value of the register at `doorbell` and its EventIdx to zero (a queue
    /// being created starts at zero on both sides).
    pub(crate) fn reset_entry(&self, doorbell: u64) {
        if let Some(entry) = self.entry(doorbell) {
            entry.value.store(0, Ordering::Relaxed);
            entry.event.store(0, Ordering::Relaxed);
        }
    }
}

/// One doorbell's shadow value and EventIdx, in host memory the controller also reads.
#[derive(Clone, Copy, Debug)]
pub struct ShadowEntry<'a> {
    value: &'a AtomicU32,
    event: &'a AtomicU32,
}

impl<'a> ShadowEntry<'a> {
    /// The entry made of shadow word `value` and EventIdx word `event` (both in memory the
    /// controller reads; a test may use plain atomics).
    pub fn new(value: &'a AtomicU32, event: &'a AtomicU32) -> Self {
        Self { value, event }
    }

    /// Stores `new` as the shadow value; returns whether the register must be written too:
    /// whether `new` moved past the EventIdx the controller set (`(u16)(new − ei − 1) <
    /// (u16)(new − old)`, Linux's `nvme_dbbuf_need_event`).
    ///
    /// The store and the EventIdx load are ordered by a full fence, as the controller orders
    /// its EventIdx store before its last look at the shadow value, so at least one side sees
    /// the other: a controller about to sleep either sees `new` or is written to.
    pub fn publish(&self, new: u32) -> bool {
        let old = self.value.swap(new, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let event = self.event.load(Ordering::SeqCst);
        let (new, old, event) = (new as u16, old as u16, event as u16);
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    }

    /// The shadow value and the EventIdx as they are now (for diagnostics).
    pub fn values(&self) -> (u32, u32) {
        (
            self.value.load(Ordering::SeqCst),
            self.event.load(Ordering::SeqCst),
        )
    }

    /// Stores `new` as the shadow value without asking whether the register must be written
    /// (the caller writes it anyway).
    pub fn store(&self, new: u32) {
        self.value.store(new, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_pair() -> (AtomicU32, AtomicU32) {
        (AtomicU32::new(0), AtomicU32::new(0))
    }

    #[test]
    fn the_register_is_written_only_when_the_value_passes_the_event_index() {
        let (value, event) = entry_pair();
        let entry = ShadowEntry {
            value: &value,
            event: &event,
        };
        // EventIdx 0: the controller waits for anything past 0.
        assert!(entry.publish(1));
        // The controller polls (EventIdx stays behind at 0): no register writes.
        assert!(!entry.publish(2));
        assert!(!entry.publish(5));
        assert_eq!(value.load(Ordering::SeqCst), 5);
        // It arms at 5 (it consumed up to 5): the next value passes it.
        event.store(5, Ordering::SeqCst);
        assert!(entry.publish(6));
        // Moving several at once past the index still writes once.
        event.store(7, Ordering::SeqCst);
        assert!(entry.publish(10));
        // Wrapping around the 16-bit index space.
        value.store(0xFFFE, Ordering::SeqCst);
        event.store(0xFFFE, Ordering::SeqCst);
        assert!(entry.publish(0x1_0001));
    }

    #[test]
    fn entries_exist_only_for_doorbells_within_the_page() {
        let mem = HostMemory::new(4 * PAGE, 0x10_0000).unwrap();
        let pages = ShadowPages::new(&mem).unwrap();
        assert!(pages.entry(0x1000).is_some());
        assert!(pages.entry(0x1000 + PAGE - 4).is_some());
        assert!(pages.entry(0x1000 + PAGE - 3).is_none());
        assert!(pages.entry(0x0FFC).is_none());
        let entry = pages.entry(0x1008).unwrap();
        assert!(entry.publish(3));
        let mut word = [0u8; 4];
        pages.doorbells.read(8, &mut word);
        assert_eq!(u32::from_le_bytes(word), 3);
        pages.reset_entry(0x1008);
        pages.doorbells.read(8, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0);
    }
}
