//! The host side of a TP4159 User Data Migration Queue.

use std::time::Instant;

use nvme_driver::memory::DmaBuffer;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::LbaMigrationQueueEntry;

use super::PATIENCE;

/// Reads the entries a controller writes into a User Data Migration Queue, tracking the phase
/// tag as a host does.
#[derive(Debug)]
pub struct CdqReader {
    /// The ring.
    pub buf: DmaBuffer,
    /// Slots.
    pub slots: u32,
    /// Next slot to read.
    pub head: u32,
    /// Phase tag of new entries.
    pub phase: bool,
}

impl CdqReader {
    /// A reader over a zeroed ring of `slots` entries in `buf`.
    pub fn new(buf: DmaBuffer, slots: u32) -> Self {
        Self {
            buf,
            slots,
            head: 0,
            phase: true,
        }
    }

    /// Entries up to and including the first with sequence attribute `esa`, waiting up to
    /// [`PATIENCE`].
    ///
    /// # Panics
    ///
    /// If no such entry arrives in time.
    pub fn drain_until(&mut self, esa: EntrySequence) -> Vec<LbaMigrationQueueEntry> {
        let deadline = Instant::now() + PATIENCE;
        let mut out = Vec::new();
        loop {
            match self.next() {
                Some(e) => {
                    out.push(e);
                    if e.attr.esa() == esa {
                        return out;
                    }
                }
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "no ESA {esa:?} entry; got {out:?}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

/// Reads the entries the controller wrote, oldest first.
impl Iterator for CdqReader {
    type Item = LbaMigrationQueueEntry;

    /// The next new entry, if the controller wrote one; `None` when there is none yet (a later
    /// call may find one).
    ///
    /// # Panics
    ///
    /// If the entry does not decode.
    fn next(&mut self) -> Option<LbaMigrationQueueEntry> {
        let mut raw = [0u8; 32];
        self.buf.read(u64::from(self.head) * 32, &mut raw);
        let entry = LbaMigrationQueueEntry::decode(&raw).expect("a 32-byte queue entry");
        if entry.attr.cdqp() != self.phase {
            return None;
        }
        self.head = (self.head + 1) % self.slots;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        Some(entry)
    }
}
