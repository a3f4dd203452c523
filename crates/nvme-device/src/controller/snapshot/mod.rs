//! The controller's save format and the code that takes and restores it, for TP4159 Get/Set
//! Controller State: the I/O queues as NVMECS v0 (the layout of `nvme_spec::lm`), everything else
//! as our vendor-specific state ([`vendor`]).
//!
//! * [`vendor`] is the vendor-specific format: what it holds and its bytes;
//! * `capture` takes the state of a controller;
//! * `validate` checks a saved state against a target controller and changes nothing
//!   ([`SnapshotError`] says why it refused);
//! * `apply` makes the controller take a state that validation accepted; it cannot fail.
//!
//! Every function runs with the controller's `state` held while it is suspended, so nothing
//! moves underneath. Capture is deterministic (queues in identifier order, events in queue
//! order, doorbells as written) and the controller's clock (power-on time, a host-set
//! Timestamp) stops while it is suspended, so save → restore → save gives the same bytes. The
//! primary controller's TP4159 commands reach these through `controller::LockedSecondary`.

mod apply;
mod capture;
#[cfg(test)]
mod tests;
mod validate;
pub mod vendor;

pub(super) use apply::apply;
pub(super) use capture::capture;
pub use validate::SnapshotError;
pub(super) use validate::validate;
