//! What a primary controller's TP4159 commands may do to one of its secondary controllers: the
//! suspend and resume handshake, taking and restoring its state, and its LBA change log.
//!
//! This is the whole surface through which `lm` reaches a secondary controller; the
//! controller's queue state stays private to this module's parent. Lock order (see the parent
//! module): the caller may hold its primary controller's `state`; a [`LockedSecondary`] holds
//! the secondary's.

use std::sync::Arc;
use std::sync::MutexGuard;

use nvme_spec::lm::NvmeControllerStateV0;

use super::Inner;
use super::State;
use super::lba_log::LbaLog;
use super::snapshot;
use super::snapshot::SnapshotError;
use super::snapshot::vendor::VendorState;

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

    /// TP4159 Suspend, the handshake of `DESIGN.md`: stops fetching, then waits for the pass in
    /// progress, in which every fetched command ran to completion and posted its completion.
    /// Returns the controller with its state held; nothing of it changes until Resume.
    pub(crate) fn suspend(&self) -> LockedSecondary<'_> {
        self.0.set_suspended(true);
        let mut locked = self.lock();
        locked.state.features.clock_stopped();
        locked
    }

    /// Holds its queue state, between two passes of its poller: nothing of it moves until the
    /// guard is dropped.
    pub(crate) fn lock(&self) -> LockedSecondary<'_> {
        LockedSecondary {
            inner: &self.0,
            state: self.0.lock_state(),
        }
    }
}

/// A secondary controller with its queue state held.
pub(crate) struct LockedSecondary<'a> {
    inner: &'a Inner,
    state: MutexGuard<'a, State>,
}

impl LockedSecondary<'_> {
    /// Whether it is suspended (TP4159).
    pub(crate) fn is_suspended(&self) -> bool {
        self.inner.is_suspended()
    }

    /// TP4159 Resume: lifts the suspension, releases the state and wakes the poller.
    pub(crate) fn resume(self) {
        let Self { inner, state } = self;
        inner.set_suspended(false);
        drop(state);
        inner.kick();
    }

    /// Its state as NVMECS v0 (I/O queues) and our vendor state; the same state gives the same
    /// bytes.
    pub(crate) fn capture(&mut self) -> (NvmeControllerStateV0, VendorState) {
        snapshot::capture(self.inner, &mut self.state)
    }

    /// Makes it take a saved state: everything is checked first, and on a refusal nothing has
    /// changed.
    pub(crate) fn restore(
        &mut self,
        nvmecs: Option<&NvmeControllerStateV0>,
        vendor: Option<&VendorState>,
    ) -> Result<(), SnapshotError> {
        snapshot::validate(self.inner, nvmecs, vendor)?;
        snapshot::apply(self.inner, &mut self.state, nvmecs, vendor);
        Ok(())
    }

    /// Its LBA change log.
    pub(crate) fn lba_log(&mut self) -> &mut LbaLog {
        &mut self.state.lba_log
    }
}
