//! Read-only views of a controller for operators (a control socket's `status`, `queues`,
//! `id-ctrl`, `id-ns` and `list-secondary`): what a host would learn with Identify, plus what
//! only the device knows (suspension, queue heads and tails, per-queue counters).
//!
//! Nothing here changes the controller. Register values are atomics, read without waiting; the
//! queue view takes the queue state between two worker passes (as a register write from the
//! transport does), copies it and lets go, so a snapshot costs a worker at most one pass of
//! delay and never holds anything across a host's command.

use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::IdentifyNamespace;
use nvme_spec::identify::SecondaryControllerList;

use super::Controller;

/// Commands completed on one submission queue since it was created on this server (operator
/// figures: they are not guest-visible and restart on a migration's destination).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Completions posted for commands fetched from the queue.
    pub completed: u64,
    /// Of those, completions with an error status (Abort Requested aside).
    pub errors: u64,
}

/// One queue pair as the device sees it, from [`Controller::queues`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// Submission queue identifier (0 = admin).
    pub qid: u16,
    /// The completion queue it posts to.
    pub cqid: u16,
    /// Submission queue entries.
    pub sq_size: u32,
    /// Next entry the device fetches.
    pub sq_head: u32,
    /// The tail the host last rang.
    pub sq_tail: u32,
    /// Completion queue entries.
    pub cq_size: u32,
    /// Next completion slot.
    pub cq_tail: u32,
    /// The head the host last reported for the completion queue.
    pub cq_head: u32,
    /// MSI-X vector of the completion queue, when its interrupts are enabled.
    pub vector: Option<u16>,
    /// What the queue has done.
    pub counters: QueueCounters,
    /// The I/O worker that serves the queue (0 for the admin queue).
    pub worker: u16,
}

/// The controller at a glance, from [`Controller::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerStatus {
    /// Controller identifier.
    pub cntlid: u16,
    /// Online (a secondary controller can be taken offline by Virtualization Management).
    pub online: bool,
    /// Suspended by TP4159 Migration Send.
    pub suspended: bool,
    /// Controller Configuration register.
    pub cc: u32,
    /// Controller Status register.
    pub csts: u32,
    /// I/O queue pairs the controller offers its host now.
    pub offered_queue_pairs: u16,
    /// Interrupt vectors offered now.
    pub offered_vectors: u16,
}

impl Controller {
    /// The controller at a glance; reads registers and atomics only, so it never waits for the
    /// workers.
    pub fn status(&self) -> ControllerStatus {
        let inner = &self.inner;
        ControllerStatus {
            cntlid: self.cntlid(),
            online: self.online(),
            suspended: self.suspended(),
            cc: inner.cc().into(),
            csts: inner.csts().into(),
            offered_queue_pairs: self.offered_queue_pairs(),
            offered_vectors: self.offered_vectors(),
        }
    }

    /// Every existing queue pair with its positions and counters, copied between two worker
    /// passes (see the module docs), in queue identifier order.
    pub fn queues(&self) -> Vec<QueueStatus> {
        let inner = &self.inner;
        let state = inner.lock_state();
        let workers = inner.lock_workers();
        let sets = std::iter::once((0, &state.q)).chain((0u16..).zip(workers.iter().map(|w| &w.q)));
        let mut queues: Vec<QueueStatus> = sets
            .flat_map(|(worker, set)| set.sqs.iter().flatten().map(move |sq| (worker, set, sq)))
            .map(|(worker, set, sq)| {
                let cq = set.cqs.get(usize::from(sq.cqid)).and_then(Option::as_ref);
                QueueStatus {
                    qid: sq.qid,
                    cqid: sq.cqid,
                    sq_size: sq.size,
                    sq_head: sq.head,
                    sq_tail: inner.doorbells.sq_tail(sq.qid),
                    cq_size: cq.map_or(0, |cq| cq.size),
                    cq_tail: cq.map_or(0, |cq| cq.tail),
                    cq_head: cq.map_or(0, |cq| cq.head),
                    vector: cq.filter(|cq| cq.interrupts).map(|cq| cq.vector),
                    counters: set
                        .queue_counters
                        .get(usize::from(sq.qid))
                        .copied()
                        .unwrap_or_default(),
                    worker,
                }
            })
            .collect();
        queues.sort_by_key(|q| q.qid);
        queues
    }

    /// The Identify Controller data structure (CNS 01h) the controller's host would read.
    pub fn identify_controller(&self) -> IdentifyController {
        super::identify::controller(&self.inner)
    }

    /// The Identify Namespace data structure (CNS 00h) of attached namespace `nsid`, as this
    /// controller reports it; `None` if no such namespace is attached.
    pub fn identify_namespace(&self, nsid: u32) -> Option<IdentifyNamespace> {
        let ns = self.inner.namespace(nsid)?;
        Some(super::identify::namespace_structure(&self.inner, ns))
    }

    /// The NSIDs of the attached namespaces, in order.
    pub fn attached_nsids(&self) -> Vec<u32> {
        self.inner.attached().map(|ns| ns.nsid()).collect()
    }

    /// A primary controller's Secondary Controller List (CNS 15h) from CNTLID 0 on; empty for a
    /// secondary controller.
    pub fn secondary_list(&self) -> SecondaryControllerList {
        crate::sriov::secondary_list(&self.inner, 0)
    }
}
