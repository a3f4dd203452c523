//! The consumer's side of a ring whose producer tags each entry with a phase bit that flips
//! each time the producer wraps: completion queues and Controller Data Queues alike.

/// Where the next entry of a phase-tagged ring is, and the tag a new one carries.
#[derive(Clone, Copy, Debug)]
pub(super) struct PhaseCursor {
    head: u32,
    slots: u32,
    phase: bool,
}

impl PhaseCursor {
    /// The start of a zeroed ring of `slots` entries: new entries carry phase 1.
    pub(super) fn new(slots: u32) -> Self {
        Self {
            head: 0,
            slots,
            phase: true,
        }
    }

    /// The slot the next entry is read from.
    pub(super) fn head(&self) -> u32 {
        self.head
    }

    /// Whether the entry at the head, whose phase tag is `tag`, is new; if it is, moves past it
    /// (expecting the other tag after a wrap).
    pub(super) fn take(&mut self, tag: bool) -> bool {
        if tag != self.phase {
            return false;
        }
        self.head = (self.head + 1) % self.slots;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        true
    }
}
