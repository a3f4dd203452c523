//! Queues a test drives entry by entry, and bringing a controller up by hand.

use std::sync::Arc;

use nvme_driver::driver::Bar;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::registers::Cap;
use nvme_spec::registers::DoorbellStride;
use nvme_spec::registers::Register;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::HostShadow;
use super::eventually;
use super::phase::PhaseCursor;

/// A queue pair the test drives entry by entry: its own SQ and CQ sizes, CIDs chosen by the
/// caller, and the CQ head doorbell written only when the test says so.
pub struct RawQueue {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_entries: u32,
    tail: u32,
    /// Where the next completion is read.
    cq_cursor: PhaseCursor,
    /// Entries pushed whose completions were not seen yet.
    outstanding: u32,
    stride: DoorbellStride,
    bar: Arc<dyn Bar>,
    /// The host's shadow doorbells, once the test made this (I/O) queue use them.
    shadow: Option<Arc<HostShadow>>,
}

impl RawQueue {
    /// Zeroed rings for queue pair `qid` in `mem`, reached through `bar` (whose CAP.DSTRD places
    /// the doorbells).
    ///
    /// # Panics
    ///
    /// If `mem` has no room for the rings or CAP cannot be read.
    pub fn new(
        mem: &Arc<HostMemory>,
        bar: Arc<dyn Bar>,
        qid: u16,
        sq_entries: u32,
        cq_entries: u32,
    ) -> Self {
        let cap = Cap::from(bar.read64(Register::CAP.0).expect("CAP"));
        Self {
            qid,
            sq: mem
                .alloc(u64::from(sq_entries) * 64)
                .expect("room for the SQ"),
            cq: mem
                .alloc(u64::from(cq_entries) * 16)
                .expect("room for the CQ"),
            sq_entries,
            tail: 0,
            cq_cursor: PhaseCursor::new(cq_entries),
            outstanding: 0,
            stride: cap.doorbell_stride(),
            bar,
            shadow: None,
        }
    }

    /// Rings this I/O queue's doorbells through `shadow` from now on, as a host that
    /// configured shadow doorbells does: the shadow value always, the register only when the
    /// controller's EventIdx asks for it.
    pub fn use_shadow(&mut self, shadow: Arc<HostShadow>) {
        assert_ne!(self.qid, 0, "the admin queue has no shadow doorbells");
        self.shadow = Some(shadow);
    }

    /// Writes doorbell `cq` of this queue: through the shadow if it uses one, else the
    /// register.
    fn write_doorbell(&self, cq: bool, value: u32) {
        let needed = self
            .shadow
            .as_ref()
            .is_none_or(|shadow| shadow.update(self.qid, cq, value));
        if needed {
            let offset = if cq {
                self.cq_doorbell()
            } else {
                self.sq_doorbell()
            };
            self.bar.doorbell(offset, value);
        }
    }

    /// IOVA of the submission queue.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    /// IOVA of the completion queue.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Submission queue entries.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// The SQ tail doorbell's BAR offset.
    pub fn sq_doorbell(&self) -> u64 {
        self.stride.sq_tail(self.qid)
    }

    /// The CQ head doorbell's BAR offset.
    pub fn cq_doorbell(&self) -> u64 {
        self.stride.cq_head(self.qid)
    }

    /// Entries pushed whose completions the queue's iterator has not returned yet.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Whether the submission queue holds as many outstanding entries as it can (one slot stays
    /// empty).
    pub fn is_full(&self) -> bool {
        self.outstanding >= self.sq_entries - 1
    }

    /// Writes `cmd` at the tail without ringing.
    pub fn push(&mut self, cmd: Command) {
        self.sq.write(u64::from(self.tail) * 64, cmd.as_bytes());
        self.tail = (self.tail + 1) % self.sq_entries;
        self.outstanding += 1;
    }

    /// Writes the SQ tail doorbell (see [`use_shadow`](Self::use_shadow)).
    pub fn ring(&self) {
        self.write_doorbell(false, self.tail);
    }

    /// Pushes `cmd` and rings.
    pub fn submit(&mut self, cmd: Command) {
        self.push(cmd);
        self.ring();
    }

    /// Writes the CQ head doorbell with the entries consumed so far (see
    /// [`use_shadow`](Self::use_shadow)).
    pub fn ring_head(&self) {
        self.write_doorbell(true, self.cq_cursor.head());
    }

    /// Waits for the next completion and acknowledges it.
    ///
    /// # Panics
    ///
    /// If none comes within [`super::PATIENCE`].
    pub fn wait(&mut self) -> Completion {
        let entry = eventually("a completion", || self.next());
        self.ring_head();
        entry
    }

    /// Submits `cmd` and waits for its completion, which must be the next one.
    ///
    /// # Panics
    ///
    /// If no completion comes in time, or another command's comes first.
    pub fn run(&mut self, cmd: Command) -> Completion {
        self.submit(cmd);
        let done = self.wait();
        assert_eq!(done.cid, cmd.cdw0.cid(), "completion out of order");
        done
    }
}

/// Reads the completions the controller posted, oldest first.
impl Iterator for RawQueue {
    type Item = Completion;

    /// The next new completion, if the controller posted one; `None` when there is none yet
    /// (a later call may find one). The head doorbell is not written.
    fn next(&mut self) -> Option<Completion> {
        let mut raw = [0u8; 16];
        self.cq
            .read(u64::from(self.cq_cursor.head()) * 16, &mut raw);
        let entry = Completion::read_from_bytes(&raw).expect("a 16-byte completion");
        if !self.cq_cursor.take(entry.status.phase()) {
            return None;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        Some(entry)
    }
}

/// Brings a controller up by hand, as the Linux driver does: AQA, ASQ and ACQ, then CC.EN with
/// 64-byte SQ and 16-byte CQ entries, then wait for CSTS.RDY. Returns the admin queue, of
/// `entries` entries each way, in `mem`.
///
/// # Panics
///
/// If a register access fails or CSTS.RDY does not come within [`super::PATIENCE`].
pub fn raw_enable<B: Bar + 'static>(bar: &Arc<B>, mem: &Arc<HostMemory>, entries: u32) -> RawQueue {
    let admin = RawQueue::new(mem, bar.clone(), 0, entries, entries);
    let size = entries - 1;
    bar.write32(Register::AQA.0, size | size << 16)
        .expect("AQA write");
    bar.write64(Register::ASQ.0, admin.sq_iova())
        .expect("ASQ write");
    bar.write64(Register::ACQ.0, admin.cq_iova())
        .expect("ACQ write");
    bar.write32(Register::CC.0, 1 | 6 << 16 | 4 << 20)
        .expect("CC write");
    eventually("CSTS.RDY", || {
        (bar.read32(Register::CSTS.0).expect("CSTS read") & 1 == 1).then_some(())
    });
    admin
}
