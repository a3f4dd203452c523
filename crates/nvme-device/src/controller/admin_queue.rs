//! The admin step of worker 0's pass: asynchronous events and the admin queue, with the
//! controller-wide `State` held.
//!
//! Admin commands are fetched and run one at a time (each may change the queue set: creating
//! or deleting an I/O queue takes the owning worker's lock, between that worker's passes).

use nvme_spec::status::Status;

use super::Inner;
use super::State;
use super::admin;
use super::aer;
use super::worker::BATCH;

/// What running one admin command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Post a completion with this status and command-specific dword 0.
    Complete(Status, u32),
    /// The command completes later (an Asynchronous Event Request).
    Deferred,
}

impl From<Result<u32, Status>> for Outcome {
    fn from(result: Result<u32, Status>) -> Self {
        match result {
            Ok(dw0) => Outcome::Complete(Status::SUCCESS, dw0),
            Err(status) => Outcome::Complete(status, 0),
        }
    }
}

/// Events and the admin queue. Returns whether anything happened.
pub(super) fn admin_pass(inner: &Inner, state: &mut State) -> bool {
    // A suspended controller changes nothing: no fetch, no event delivery, so its state stays
    // exactly as Suspend left it until Resume (events raised meanwhile wait in `events`).
    if !inner.running() {
        return false;
    }
    let mut progressed = false;
    aer::collect_posted(inner, state);
    progressed |= aer::deliver(inner, state);
    progressed |= admin_queue(inner, state);
    // Events the pass raised (an invalid doorbell) go out with it, so a pass that makes no
    // progress leaves nothing deliverable behind.
    aer::collect_posted(inner, state);
    progressed |= aer::deliver(inner, state);
    state.q.signal(inner);
    progressed
}

/// Fetches and runs admin commands, one at a time (each may change the queue set).
fn admin_queue(inner: &Inner, state: &mut State) -> bool {
    let mut done = 0;
    while done < BATCH {
        let (pending, bad_sq) = state.q.sq_pending(inner, 0);
        if bad_sq {
            state.aer.queue(aer::AsyncEvent::invalid_doorbell());
        }
        let Some(pending) = pending else {
            break;
        };
        if pending == 0 {
            break;
        }
        // Room for two completions: an Abort may also complete the request it aborts.
        let (room, bad_cq) = state.q.cq_room(inner, 0);
        if bad_cq {
            state.aer.queue(aer::AsyncEvent::invalid_doorbell());
        }
        if room.unwrap_or(0) < 2 {
            break;
        }
        let Some(sq) = state.q.sqs[0].as_mut() else {
            break;
        };
        let Ok(cmd) = sq.fetch(inner.mem.as_ref()) else {
            inner.fatal();
            break;
        };
        done += 1;
        match admin::execute(inner, state, &cmd) {
            Outcome::Complete(status, dw0) => state.q.complete(inner, 0, 0, &cmd, status, dw0),
            Outcome::Deferred => {}
        }
        // A command may have disabled, reset or failed the controller.
        if !inner.csts().rdy() || state.q.sqs[0].is_none() {
            break;
        }
    }
    done > 0
}
