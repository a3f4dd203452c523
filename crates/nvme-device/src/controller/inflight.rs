//! An I/O worker's commands in flight on asynchronous backends: what each needs to complete
//! when its backend request comes back, and how many completion-queue slots each completion
//! queue has reserved for them.
//!
//! Slots are reused through a free list and the table only grows (to the most commands ever in
//! flight at once), so a steady stream of commands allocates nothing. A request's tag is its
//! slot index.

use nvme_spec::command::Command;

use crate::backend::IoRequest;

/// One command whose backend request is in flight (or waits to be submitted).
#[derive(Debug)]
pub(super) struct Slot {
    /// The command as fetched (CID, opcode, NSID, LBA range for logging).
    pub cmd: Command,
    /// Submission queue it came from.
    pub sqid: u16,
    /// Completion queue its completion goes to.
    pub cqid: u16,
    /// Index of the namespace (NSID − 1) whose queue runs it.
    pub ns_index: usize,
    /// The request; kept until it is submitted (a full backend queue makes it wait).
    pub request: IoRequest,
    /// Whether the backend took the request (else it waits for room).
    pub submitted: bool,
}

/// The table of commands in flight.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    busy: usize,
    /// Per submission queue (by identifier), its commands waiting to be submitted: it fetches
    /// nothing more until they are, so commands are never reordered.
    waiting: Vec<u32>,
    /// Commands waiting to be submitted, over all submission queues.
    waiting_total: usize,
    /// Per completion queue (by identifier), the slots reserved for commands in flight.
    reserved: Vec<u32>,
}

impl InFlight {
    /// A table for `queue_count` queue identifiers.
    pub fn new(queue_count: usize) -> Self {
        Self {
            reserved: vec![0; queue_count],
            waiting: vec![0; queue_count],
            ..Self::default()
        }
    }

    /// Commands in flight.
    pub fn len(&self) -> usize {
        self.busy
    }

    /// Completion-queue slots reserved on `cqid` for commands in flight.
    pub fn reserved(&self, cqid: u16) -> u32 {
        self.reserved.get(usize::from(cqid)).copied().unwrap_or(0)
    }

    /// Whether commands wait to be submitted.
    pub fn any_waiting(&self) -> bool {
        self.waiting_total > 0
    }

    /// Whether a command of submission queue `sqid` waits to be submitted.
    pub fn sq_waiting(&self, sqid: u16) -> bool {
        self.waiting.get(usize::from(sqid)).is_some_and(|&n| n > 0)
    }

    fn count_waiting(&mut self, sqid: u16, up: bool) {
        if let Some(w) = self.waiting.get_mut(usize::from(sqid)) {
            if up {
                *w += 1;
                self.waiting_total += 1;
            } else {
                *w -= 1;
                self.waiting_total -= 1;
            }
        }
    }

    /// Takes a slot for `slot`, reserving a completion on its queue; returns its tag.
    pub fn insert(&mut self, slot: Slot) -> usize {
        if !slot.submitted {
            self.count_waiting(slot.sqid, true);
        }
        if let Some(r) = self.reserved.get_mut(usize::from(slot.cqid)) {
            *r += 1;
        }
        self.busy += 1;
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    /// The command with tag `tag`, if one is in flight.
    pub fn get_mut(&mut self, tag: usize) -> Option<&mut Slot> {
        self.slots.get_mut(tag)?.as_mut()
    }

    /// Notes that the backend took the request of command `tag`.
    pub fn submitted(&mut self, tag: usize) {
        let Some(slot) = self.slots.get_mut(tag).and_then(Option::as_mut) else {
            return;
        };
        if !slot.submitted {
            slot.submitted = true;
            let sqid = slot.sqid;
            self.count_waiting(sqid, false);
        }
    }

    /// Ends command `tag`, releasing its reservation.
    pub fn remove(&mut self, tag: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(tag)?.take()?;
        if !slot.submitted {
            self.count_waiting(slot.sqid, false);
        }
        if let Some(r) = self.reserved.get_mut(usize::from(slot.cqid)) {
            *r -= 1;
        }
        self.busy -= 1;
        self.free.push(tag);
        Some(slot)
    }

    /// Tags of the commands that wait to be submitted, lowest (oldest reused) first, into
    /// `out` (cleared first).
    pub fn waiting(&self, out: &mut Vec<usize>) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| !s.submitted))
                .map(|(i, _)| i),
        );
    }

    /// Whether a command from submission queue `sqid` is in flight.
    pub fn has_sq(&self, sqid: u16) -> bool {
        self.busy > 0 && self.slots.iter().flatten().any(|s| s.sqid == sqid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::IoKind;
    use crate::prp::Segments;

    fn slot(sqid: u16, cqid: u16) -> Slot {
        Slot {
            cmd: Command::default(),
            sqid,
            cqid,
            ns_index: 0,
            request: IoRequest {
                tag: 0,
                kind: IoKind::Flush,
                offset: 0,
                len: 0,
                segments: Segments::default(),
                batched: false,
            },
            submitted: true,
        }
    }

    #[test]
    fn slots_are_reused_and_reservations_follow_them() {
        let mut t = InFlight::new(4);
        let a = t.insert(slot(1, 1));
        let b = t.insert(slot(2, 1));
        let c = t.insert(slot(3, 3));
        assert_eq!((t.len(), t.reserved(1), t.reserved(3)), (3, 2, 1));
        assert!(t.has_sq(2));
        assert_eq!(t.remove(b).map(|s| s.sqid), Some(2));
        assert!(t.remove(b).is_none(), "a tag ends once");
        assert!(!t.has_sq(2));
        assert_eq!((t.len(), t.reserved(1)), (2, 1));
        assert_eq!(t.insert(slot(2, 3)), b, "the free slot is reused");
        assert_eq!(t.reserved(3), 2);
        let d = t.insert(Slot {
            submitted: false,
            ..slot(3, 3)
        });
        assert!(t.any_waiting() && t.sq_waiting(3) && !t.sq_waiting(1));
        let mut waiting = Vec::new();
        t.waiting(&mut waiting);
        assert_eq!(waiting, [d]);
        t.submitted(d);
        assert!(!t.any_waiting() && !t.sq_waiting(3));
        assert!(t.get_mut(c).is_some());
        assert!(t.get_mut(a).is_some() && t.get_mut(99).is_none());
    }
}
