//! The host side of a TP4159 User Data Migration Queue.

use std::time::Instant;

use nvme_driver::memory::DmaBuffer;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::LbaMigrationQueueEntry;

use super::PATIENCE;
use super::phase::PhaseCursor;

/// Reads the entries a controller writes into a User Data Migration Queue, tracking the phase
/// tag as a host does.
#[derive(Debug)]
pub struct CdqReader {
    /// The ring.
    buf: DmaBuffer,
    /// Where the next entry is read.
    cursor: PhaseCursor,
}

impl CdqReader {
    /// A reader over a zeroed ring of `slots` entries in `buf`.
    pub fn new(buf: DmaBuffer, slots: u32) -> Self {
        Self {
            buf,
            cursor: PhaseCursor::new(slots),
        }
    }

    /// The slot the next entry is read from: the head pointer to give the controller (Set
    /// Features 21h) once the entries before it are consumed.
    pub fn head(&self) -> u32 {
        self.cursor.head()
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
        self.buf.read(u64::from(self.cursor.head()) * 32, &mut raw);
        let entry = LbaMigrationQueueEntry::decode(&raw).expect("a 32-byte queue entry");
        self.cursor.take(entry.attr.cdqp()).then_some(entry)
    }
}
