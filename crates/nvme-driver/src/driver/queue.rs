//! The host side of a submission/completion queue pair.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::registers::DoorbellStride;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::Bar;
use super::DriverError;
use super::shadow::ShadowPages;
use crate::memory::DmaBuffer;
use crate::memory::HostMemory;

/// A submission queue and the completion queue it posts to, as the host sees them.
///
/// Command identifiers are slot numbers `0..depth-1`, handed out by [`QueuePair::push`] and
/// returned when the completion is reaped, so at most `depth - 1` commands are outstanding and
/// the submission queue can never overflow.
pub struct QueuePair {
    qid: u16,
    depth: u32,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
    sq_doorbell: u64,
    cq_doorbell: u64,
    bar: Arc<dyn Bar>,
    /// The controller's shadow doorbells, when the host configured them for this queue.
    shadow: Option<Arc<ShadowPages>>,
    free_cids: Vec<u16>,
    in_flight: Vec<bool>,
    outstanding: u32,
    unrung: bool,
}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePair")
            .field("qid", &self.qid)
            .field("depth", &self.depth)
            .field("outstanding", &self.outstanding)
            .field("shadow", &self.shadow.is_some())
            .finish()
    }
}

impl QueuePair {
    /// Allocates the rings of queue pair `qid` with `depth` entries each in `mem`. Its doorbells
    /// sit where CAP.DSTRD's `stride` puts them; with `shadow`, its doorbell values go through
    /// their shadow entries (reset to zero here, before the controller learns of the queue).
    pub(crate) fn new(
        qid: u16,
        depth: u32,
        mem: &Arc<HostMemory>,
        bar: Arc<dyn Bar>,
        stride: DoorbellStride,
        shadow: Option<Arc<ShadowPages>>,
    ) -> Result<Self, DriverError> {
        let sq = mem.alloc(u64::from(depth) * 64)?;
        let cq = mem.alloc(u64::from(depth) * 16)?;
        if let Some(pages) = &shadow {
            pages.reset_entry(stride.sq_tail(qid));
            pages.reset_entry(stride.cq_head(qid));
        }
        Ok(Self {
            qid,
            depth,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            sq_doorbell: stride.sq_tail(qid),
            cq_doorbell: stride.cq_head(qid),
            bar,
            shadow,
            free_cids: (0..depth.saturating_sub(1) as u16).rev().collect(),
            in_flight: vec![false; depth as usize],
            outstanding: 0,
            unrung: false,
        })
    }

    /// The queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries per queue.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// IOVA of the submission queue.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    /// IOVA of the completion queue.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Commands submitted and not yet reaped.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// How many more commands can be pushed now.
    pub fn free_slots(&self) -> u32 {
        self.free_cids.len() as u32
    }

    /// Writes `cmd` (its CID replaced by a free slot number) at the tail without ringing the
    /// doorbell; returns the CID. Call [`ring`](Self::ring) after a batch.
    pub fn push(&mut self, mut cmd: Command) -> Result<u16, DriverError> {
        let cid = self
            .free_cids
            .pop()
            .ok_or(DriverError::QueueFull { qid: self.qid })?;
        cmd.cdw0 = cmd.cdw0.with_cid(cid);
        self.in_flight[usize::from(cid)] = true;
        self.sq.write(u64::from(self.sq_tail) * 64, cmd.as_bytes());
        self.sq_tail = (self.sq_tail + 1) % self.depth;
        self.outstanding += 1;
        self.unrung = true;
        Ok(cid)
    }

    /// Whether this queue's doorbells go through shadow doorbells.
    pub fn shadowed(&self) -> bool {
        self.shadow.is_some()
    }

    /// Tells the controller about every pushed command (one doorbell write, or a shadow
    /// doorbell update and a write only if the controller asks for it).
    pub fn ring(&mut self) {
        if std::mem::take(&mut self.unrung) {
            std::sync::atomic::fence(Ordering::Release);
            self.write_doorbell(self.sq_doorbell, self.sq_tail);
        }
    }

    /// Writes `value` to the doorbell at `offset`, through its shadow entry if there is one.
    fn write_doorbell(&self, offset: u64, value: u32) {
        match self.shadow.as_ref().and_then(|pages| pages.entry(offset)) {
            Some(entry) => self.bar.shadow_doorbell(offset, value, entry),
            None => self.bar.doorbell(offset, value),
        }
    }

    /// Pushes one command and rings the doorbell.
    pub fn submit(&mut self, cmd: Command) -> Result<u16, DriverError> {
        let cid = self.push(cmd)?;
        self.ring();
        Ok(cid)
    }

    /// Reaps every new completion, calling `f` for each, then writes the CQ head doorbell once.
    /// Returns how many were reaped.
    pub fn poll(&mut self, mut f: impl FnMut(Completion)) -> usize {
        let mut reaped = 0;
        while let Some(word) = self.status_word_at_head() {
            if phase_bit(word) != u32::from(self.phase) {
                break;
            }
            let mut raw = [0u8; 16];
            self.cq.read(u64::from(self.cq_head) * 16, &mut raw);
            raw[12..].copy_from_slice(&word.to_le_bytes());
            let Ok(entry) = Completion::read_from_bytes(&raw) else {
                break;
            };
            self.cq_head += 1;
            if self.cq_head == self.depth {
                self.cq_head = 0;
                self.phase = !self.phase;
            }
            if let Some(flag) = self.in_flight.get_mut(usize::from(entry.cid))
                && std::mem::take(flag)
            {
                self.free_cids.push(entry.cid);
                self.outstanding -= 1;
            }
            reaped += 1;
            f(entry);
        }
        if reaped > 0 {
            self.write_doorbell(self.cq_doorbell, self.cq_head);
        }
        reaped
    }

    /// What the host sees of this queue pair, for an error about a command that got no
    /// completion: its SQ tail, CQ head and phase, the phase bit of the CQ entry at the head
    /// (whether a completion waits there), and with shadow doorbells each doorbell's shadow
    /// value and the EventIdx the controller set. Reads host memory only.
    pub fn describe(&self) -> String {
        let at_head = self.status_word_at_head().map(phase_bit);
        let mut out = format!(
            "SQ tail {}, CQ head {} phase {}, phase bit at the head {}, {} outstanding",
            self.sq_tail,
            self.cq_head,
            u8::from(self.phase),
            at_head.map_or_else(|| "unreadable".to_string(), |p| p.to_string()),
            self.outstanding,
        );
        if let Some(pages) = &self.shadow {
            for (name, doorbell) in [("SQ tail", self.sq_doorbell), ("CQ head", self.cq_doorbell)] {
                if let Some(entry) = pages.entry(doorbell) {
                    let (value, event) = entry.values();
                    out.push_str(&format!("; shadow {name} {value} EventIdx {event}"));
                }
            }
        }
        out
    }

    /// The last dword (status and phase) of the completion queue entry at the head, loaded
    /// with acquire ordering (the controller writes it last); `None` if the ring is unreadable.
    fn status_word_at_head(&self) -> Option<u32> {
        let entry_iova = self.cq.iova() + u64::from(self.cq_head) * 16;
        let word = self.cq.memory().atomic_u32(entry_iova + 12).ok()?;
        Some(word.load(Ordering::Acquire))
    }

    /// Forgets every outstanding command (after a controller reset they will never complete).
    pub(crate) fn abandon(&mut self) {
        self.free_cids = (0..self.depth.saturating_sub(1) as u16).rev().collect();
        self.in_flight.iter_mut().for_each(|f| *f = false);
        self.outstanding = 0;
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
        self.sq.fill(0);
        self.cq.fill(0);
    }
}

/// The phase tag of a completion queue entry's last dword (bit 16).
fn phase_bit(word: u32) -> u32 {
    (word >> 16) & 1
}
