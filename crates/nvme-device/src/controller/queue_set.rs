//! A set of queues with what their passes touch: the queues, per-queue counters, the vectors to
//! signal at the end of a pass, the doorbell values already reported as invalid, and a share of
//! the SMART counters.
//!
//! A set also holds the shadow doorbell buffers once the host configured them (Doorbell Buffer
//! Config): the doorbells of its I/O queues are then read from guest memory.
//!
//! The controller-wide state holds one (the admin queue pair, index 0) and every I/O worker one
//! (the I/O queue pairs it owns). Every table is indexed by queue identifier over the
//! controller's whole range, so a queue keeps its index whichever set holds it; a set only has
//! entries for the queues it holds.

use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::command::CompletionStatus;
use nvme_spec::status::Status;

use super::Counters;
use super::Inner;
use super::shadow::ShadowBuffers;
use super::status::QueueCounters;
use crate::queue::CompletionQueue;
use crate::queue::InvalidDoorbell;
use crate::queue::SubmissionQueue;

/// Queues and what a pass over them touches.
#[derive(Debug)]
pub(super) struct QueueSet {
    /// Submission queues indexed by queue identifier (0 = admin).
    pub sqs: Vec<Option<SubmissionQueue>>,
    /// Completion queues indexed by queue identifier (0 = admin).
    pub cqs: Vec<Option<CompletionQueue>>,
    /// Per submission queue, what it completed since it was created; operator figures, not
    /// saved.
    pub queue_counters: Vec<QueueCounters>,
    /// Vectors to signal at the end of the current pass.
    pub irq_pending: Vec<bool>,
    /// Per doorbell (index `2 * qid + is_cq`), the invalid value last reported to the host, so
    /// one bad write raises one event rather than one per pass while the value stays there.
    pub bad_doorbells: Vec<Option<u32>>,
    /// This set's share of the SMART counters (the controller's are the sum of all shares).
    pub counters: Counters,
    /// The host's shadow doorbell buffers, if it configured them (every set of the controller
    /// holds the same value).
    pub shadow: Option<ShadowBuffers>,
}

impl QueueSet {
    /// An empty set for `queue_count` queue identifiers and `vectors` interrupt vectors.
    pub fn new(queue_count: usize, vectors: usize, counters: Counters) -> Self {
        Self {
            sqs: vec![None; queue_count],
            cqs: vec![None; queue_count],
            queue_counters: vec![QueueCounters::default(); queue_count],
            irq_pending: vec![false; vectors],
            bad_doorbells: vec![None; 2 * queue_count],
            counters,
            shadow: None,
        }
    }

    /// Drops every queue, pending interrupt, reported doorbell and the shadow doorbell buffers
    /// (a reset); counters stay.
    pub fn clear(&mut self) {
        self.shadow = None;
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
        self.irq_pending.iter_mut().for_each(|p| *p = false);
        self.bad_doorbells.iter_mut().for_each(|d| *d = None);
    }

    /// Notes the value of a doorbell that passed validation, so a later bad value is reported.
    fn valid_doorbell(&mut self, qid: u16, cq: bool) {
        if let Some(slot) = self
            .bad_doorbells
            .get_mut(2 * usize::from(qid) + usize::from(cq))
        {
            *slot = None;
        }
    }

    /// Notes a garbage doorbell value; returns whether it is new and must be reported to the
    /// host (as an asynchronous error event): the doorbell keeps the value (it lives in shared
    /// memory) until the host writes a new one, and every pass sees it again.
    fn invalid_doorbell(&mut self, err: InvalidDoorbell, cq: bool) -> bool {
        let Some(slot) = self
            .bad_doorbells
            .get_mut(2 * usize::from(err.qid) + usize::from(cq))
        else {
            return false;
        };
        if *slot == Some(err.value) {
            return false;
        }
        *slot = Some(err.value);
        true
    }

    /// The host's latest SQ tail (`cq` false) or CQ head of queue `qid`: the shadow doorbell
    /// of an I/O queue once the host configured shadow doorbells, else the register. `None`:
    /// the shadow buffer is not mapped, so nothing new can be read.
    pub fn doorbell(&self, inner: &Inner, qid: u16, cq: bool) -> Option<u32> {
        match self.shadow {
            Some(shadow) if qid > 0 => shadow.read(inner.mem.as_ref(), qid, cq),
            _ => Some(inner.doorbells.value(qid, cq)),
        }
    }

    /// Room in completion queue `cqid` after reading its head doorbell (`None` if the queue is
    /// missing or the doorbell invalid), and whether an invalid value was newly found.
    pub fn cq_room(&mut self, inner: &Inner, cqid: u16) -> (Option<u32>, bool) {
        let head = self.doorbell(inner, cqid, true);
        let Some(cq) = self.cqs.get_mut(usize::from(cqid)).and_then(Option::as_mut) else {
            return (None, false);
        };
        let Some(head) = head else {
            return (Some(cq.free_slots()), false);
        };
        let moved = cq.head != head;
        if let Err(err) = cq.update_head(head) {
            return (None, self.invalid_doorbell(err, true));
        }
        // One entry behind the head just read, set before the worker posts into the room that
        // head leaves, so the host writes no CQ head register while the worker polls (the
        // worker sleeps on a full queue only for a bounded time, see `worker`, so it never
        // needs one). Stored only when the head moved: a store of the same value would still
        // take the cache line the host reads at every update.
        if let Some(shadow) = self.shadow.filter(|_| cqid > 0 && moved) {
            shadow.set_event_behind(inner.mem.as_ref(), cqid, true, cq.head, cq.size);
        }
        let room = cq.free_slots();
        self.valid_doorbell(cqid, true);
        (Some(room), false)
    }

    /// Entries waiting in submission queue `qid` (`None` if it is missing or its tail doorbell
    /// invalid), and whether an invalid value was newly found.
    pub fn sq_pending(&mut self, inner: &Inner, qid: u16) -> (Option<u32>, bool) {
        let Some(sq) = self.sqs.get(usize::from(qid)).and_then(Option::as_ref) else {
            return (None, false);
        };
        let Some(tail) = self.doorbell(inner, qid, false) else {
            return (Some(0), false);
        };
        match sq.pending(tail) {
            Ok(n) => {
                self.valid_doorbell(qid, false);
                (Some(n), false)
            }
            Err(err) => (None, self.invalid_doorbell(err, false)),
        }
    }

    /// Posts a completion for `cmd`, fetched from `sqid`, to completion queue `cqid`; a failure
    /// goes to the Error Information log (a leaf lock: failures are not the hot path).
    pub fn complete(
        &mut self,
        inner: &Inner,
        sqid: u16,
        cqid: u16,
        cmd: &Command,
        status: Status,
        dw0: u32,
    ) {
        let failed = !status.is_success() && status != Status::COMMAND_ABORT_REQUESTED;
        if failed {
            inner.lock_errors().record(sqid, cmd, status);
            self.counters.error_count += 1;
        }
        if let Some(counters) = self.queue_counters.get_mut(usize::from(sqid)) {
            counters.completed += 1;
            counters.errors += u64::from(failed);
        }
        let sqhd = self
            .sqs
            .get(usize::from(sqid))
            .and_then(|q| q.as_ref())
            .map_or(0, |q| q.head as u16);
        self.post(
            inner,
            cqid,
            Completion {
                dw0,
                dw1: 0,
                sqhd,
                sqid,
                cid: cmd.cdw0.cid(),
                status: CompletionStatus::new_with(status, false),
            },
        );
    }

    /// Writes `entry` to completion queue `cqid` and marks its vector for signalling. A write
    /// that fails (the host unmapped its queue) is a fatal controller error.
    pub fn post(&mut self, inner: &Inner, cqid: u16, entry: Completion) {
        let Some(cq) = self.cqs.get_mut(usize::from(cqid)).and_then(|q| q.as_mut()) else {
            return;
        };
        if cq.post(inner.mem.as_ref(), entry).is_err() {
            inner.fatal();
            return;
        }
        if cq.interrupts
            && let Some(pending) = self.irq_pending.get_mut(usize::from(cq.vector))
        {
            *pending = true;
        }
    }

    /// Raises every interrupt vector that received a completion since the last call.
    pub fn signal(&mut self, inner: &Inner) {
        if !self.irq_pending.contains(&true) {
            return;
        }
        let irq = inner
            .irq
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for (vector, pending) in self.irq_pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                irq.signal(vector as u16);
            }
        }
    }
}
