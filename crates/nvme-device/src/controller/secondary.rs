//! What a primary controller may do to one of its secondary controllers: the TP4159 suspend
//! and resume handshake, taking and restoring its state, its LBA change log, and SR-IOV's
//! Secondary Controller Offline and Online.
//!
//! This is the whole surface through which `lm` and `sriov` reach a secondary controller; the
//! controller's queue state stays private to this module's parent. Lock order (see the parent
//! module): the caller may hold its primary controller's `state` (and the SR-IOV state); a
//! [`LockedSecondary`] holds the secondary's.

use std::sync::Arc;
use std::sync::MutexGuard;

use nvme_spec::lm::NvmeControllerStateV0;

use super::Inner;
use super::State;
use super::lba_log::LbaLogs;
use super::registers;
use super::snapshot;
use super::snapshot::SnapshotError;
use super::snapshot::vendor::VendorState;
use super::worker;
use super::worker::Drain;
use super::worker::Worker;

/// A secondary controller, as its primary controller's TP4159 commands reach it.
#[derive(Debug)]
pub(crate) struct Secondary(Arc<Inner>);

impl Secondary {
    /// The secondary controller `inner`.
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self(inner)
    }

    /// Whether it is suspended (TP4159).
    pub(crate) fn is_suspended(&self) -> bool {
        self.0.is_suspended()
    }

    /// Whether it is online (SR-IOV).
    pub(crate) fn is_online(&self) -> bool {
        !self.0.offered.offline()
    }

    /// How many times it was reset so far.
    pub(crate) fn resets(&self) -> u64 {
        self.0.resets()
    }

    /// Secondary Controller Offline: a function-level reset, after which it offers nothing and
    /// reads as failed until it is brought online.
    pub(crate) fn take_offline(&self) {
        self.0.offered.assign(None);
        registers::function_reset(&self.0);
    }

    /// Secondary Controller Online: a function-level reset, after which it offers
    /// `queue_pairs` I/O queue pairs and `vectors` interrupt vectors.
    pub(crate) fn bring_online(&self, queue_pairs: u16, vectors: u16) {
        self.0.offered.assign(Some((queue_pairs, vectors)));
        registers::function_reset(&self.0);
    }

    /// TP4159 Suspend, the handshake of `DESIGN.md`: stops fetching, waits for the passes in
    /// progress, then for every command in flight on an asynchronous backend, posting its
    /// completion (see `worker`); only this controller waits, bounded by its backends. Returns
    /// the controller with its state held, nothing in flight (nothing of it changes until
    /// Resume), and whether this call suspended it (false when it was suspended already).
    pub(crate) fn suspend(&self) -> (LockedSecondary<'_>, bool) {
        let newly = !self.0.set_suspended(true);
        let mut locked = self.lock();
        for w in &mut locked.workers {
            worker::drain(&self.0, w, Drain::Post);
        }
        locked.state.features.clock_stopped();
        (locked, newly)
    }

    /// Holds its queue state, between two passes of its workers: nothing of it moves until the
    /// guard is dropped.
    pub(crate) fn lock(&self) -> LockedSecondary<'_> {
        LockedSecondary {
            inner: &self.0,
            state: self.0.lock_state(),
            workers: self.0.lock_workers(),
        }
    }
}

/// A secondary controller with its queue state held: the controller-wide state and every
/// worker's.
pub(crate) struct LockedSecondary<'a> {
    inner: &'a Inner,
    state: MutexGuard<'a, State>,
    workers: Vec<MutexGuard<'a, Worker>>,
}

impl<'a> LockedSecondary<'a> {
    /// Its CNTLID.
    pub(crate) fn cntlid(&self) -> u16 {
        self.inner.config.cntlid
    }

    /// Whether it is suspended (TP4159).
    pub(crate) fn is_suspended(&self) -> bool {
        self.inner.is_suspended()
    }

    /// How many times it was reset so far (it cannot be reset while locked).
    pub(crate) fn resets(&self) -> u64 {
        self.inner.resets()
    }

    /// TP4159 Resume: lifts the suspension, releases the state and wakes the workers.
    pub(crate) fn resume(self) {
        let Self {
            inner,
            state,
            workers,
        } = self;
        inner.set_suspended(false);
        drop(workers);
        drop(state);
        inner.kick();
    }

    /// Its state as NVMECS v0 (I/O queues) and our vendor state; the same state gives the same
    /// bytes.
    pub(crate) fn capture(&mut self) -> (NvmeControllerStateV0, VendorState) {
        snapshot::capture(self.inner, &mut self.state, &mut self.workers)
    }

    /// Makes it take a saved state: everything is checked first, and on a refusal nothing has
    /// changed.
    pub(crate) fn restore(
        &mut self,
        nvmecs: Option<&NvmeControllerStateV0>,
        vendor: Option<&VendorState>,
    ) -> Result<(), SnapshotError> {
        snapshot::validate(self.inner, nvmecs, vendor)?;
        snapshot::apply(
            self.inner,
            &mut self.state,
            &mut self.workers,
            nvmecs,
            vendor,
        );
        self.inner.kick();
        Ok(())
    }

    /// Its LBA change log (every worker's side of it).
    pub(crate) fn lba_log(&mut self) -> LbaLogs<'_, 'a> {
        LbaLogs(&mut self.workers)
    }
}
