//! TP4159 LBA change logging, the secondary controller's side: while logging is on, the I/O path
//! records every change of user data here, and the log hands what a pass collected, in one
//! append at the end of the pass, to the User Data Migration Queue its primary controller created
//! for it.
//!
//! The queue itself (its ring in the primary's memory, its events) belongs to the primary's
//! TP4159 code; this side sees it only as a [`ChangeQueue`].

use std::sync::Arc;
use std::sync::MutexGuard;

use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::LbaMigrationQueueEntry;

use super::worker::Worker;

/// Where a secondary controller's LBA changes go: a User Data Migration Queue of its primary
/// controller.
pub(crate) trait ChangeQueue: Send + Sync + std::fmt::Debug {
    /// The queue's CDQID.
    fn id(&self) -> u16;
    /// Appends `entries` at the queue's tail, by the queue's rules (a full queue drops them).
    fn append(&self, entries: &[LbaMigrationQueueEntry]);
}

/// One I/O worker's side of a secondary controller's LBA change log: the queue it logs to,
/// whether logging is on, and the entries collected during the current pass.
#[derive(Debug, Default)]
pub(crate) struct LbaLog {
    udmq: Option<Arc<dyn ChangeQueue>>,
    active: bool,
    /// Entries collected during the current pass; the buffer is reused from pass to pass.
    pending: Vec<LbaMigrationQueueEntry>,
}

impl LbaLog {
    /// Records a change of `nlb` + 1 blocks at `slba` of namespace `nsid` if logging is on; one
    /// branch when it is off.
    #[inline]
    pub fn record(&mut self, nsid: u32, slba: u64, nlb: u32, deallocated: bool) {
        if self.active {
            self.pending.push(LbaMigrationQueueEntry::range(
                nsid,
                slba,
                nlb,
                deallocated,
                false,
            ));
        }
    }

    /// Appends the collected entries to the queue (end of a pass, and Suspend).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(udmq) = &self.udmq {
            udmq.append(&self.pending);
        }
        self.pending.clear();
    }

    /// The CDQID of the queue this controller logs to.
    pub fn udmq_id(&self) -> Option<u16> {
        self.udmq.as_ref().map(|q| q.id())
    }

    /// Makes `udmq` the queue this controller logs to, with logging off. Returns false, and
    /// changes nothing, if the controller already has one (one User Data Migration Queue per
    /// controller).
    pub fn attach(&mut self, udmq: Arc<dyn ChangeQueue>) -> bool {
        if self.udmq.is_some() {
            return false;
        }
        self.udmq = Some(udmq);
        self.active = false;
        true
    }

    /// Whether logging is on.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Turns logging on or off (the caller flushes and posts the markers the change calls for).
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// Posts a marker entry (no range) with sequence attribute `esa` to the queue, if there is
    /// one.
    pub fn marker(&self, esa: EntrySequence) {
        if let Some(udmq) = &self.udmq
            && let Ok(entry) = LbaMigrationQueueEntry::marker(esa, false)
        {
            udmq.append(&[entry]);
        }
    }

    /// Detaches the queue `cdqid` (deleted): what was collected goes to it first, then logging
    /// stops.
    pub fn detach(&mut self, cdqid: u16) {
        if self.udmq_id() == Some(cdqid) {
            self.flush();
            self.udmq = None;
            self.active = false;
        }
    }
}

/// A secondary controller's LBA change log as its primary controller's TP4159 code sees it:
/// one log per I/O worker (each collects what its passes change), all with the same queue and
/// the same on/off state, held between passes.
pub(crate) struct LbaLogs<'s, 'a>(pub(super) &'s mut [MutexGuard<'a, Worker>]);

impl LbaLogs<'_, '_> {
    /// Appends what every worker collected to the queue.
    pub fn flush(&mut self) {
        self.0.iter_mut().for_each(|w| w.lba.flush());
    }

    /// The CDQID of the queue this controller logs to.
    pub fn udmq_id(&self) -> Option<u16> {
        self.0.first().and_then(|w| w.lba.udmq_id())
    }

    /// Makes `udmq` the queue this controller logs to, with logging off; false, and nothing
    /// changed, if it already has one.
    pub fn attach(&mut self, udmq: Arc<dyn ChangeQueue>) -> bool {
        if self.udmq_id().is_some() {
            return false;
        }
        self.0.iter_mut().for_each(|w| {
            w.lba.attach(udmq.clone());
        });
        true
    }

    /// Whether logging is on.
    pub fn active(&self) -> bool {
        self.0.first().is_some_and(|w| w.lba.active())
    }

    /// Turns logging on or off (the caller flushes and posts the markers the change calls for).
    pub fn set_active(&mut self, active: bool) {
        self.0.iter_mut().for_each(|w| w.lba.set_active(active));
    }

    /// Posts a marker entry with sequence attribute `esa` to the queue, if there is one.
    pub fn marker(&self, esa: EntrySequence) {
        if let Some(w) = self.0.first() {
            w.lba.marker(esa);
        }
    }

    /// Detaches the queue `cdqid` (deleted): what was collected goes to it first, then logging
    /// stops.
    pub fn detach(&mut self, cdqid: u16) {
        self.0.iter_mut().for_each(|w| w.lba.detach(cdqid));
    }
}
