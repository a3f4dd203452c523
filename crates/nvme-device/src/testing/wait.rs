//! Waiting for a controller, with generous timeouts (the machine running the tests may be
//! loaded), and unwrapping what the host driver returns.

use std::time::Duration;
use std::time::Instant;

use nvme_driver::driver::DriverError;
use nvme_driver::driver::QueuePair;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::status::Status;

use crate::controller::Controller;

/// How long a test waits for the controller before declaring it stuck.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
///
/// # Panics
///
/// If `f` keeps returning `None`, naming `what` was awaited.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Submits `cmd` on `qp` and waits for its completion.
///
/// # Panics
///
/// If the queue is full or the completion does not come within [`PATIENCE`].
pub fn io(qp: &mut QueuePair, cmd: Command) -> Completion {
    let cid = qp.submit(cmd).expect("room in the submission queue");
    wait_for(qp, cid, PATIENCE).expect("no I/O completion")
}

/// Waits up to `timeout` for the completion of `cid` on `qp`.
///
/// # Panics
///
/// If another command completes meanwhile.
pub fn wait_for(qp: &mut QueuePair, cid: u16, timeout: Duration) -> Option<Completion> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut found = None;
        qp.poll(|e| {
            assert_eq!(e.cid, cid, "unexpected completion");
            found = Some(e);
        });
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The NVMe status of an admin command's result (SUCCESS for `Ok`).
///
/// # Panics
///
/// If the command failed outside NVMe (the transport, a timeout).
pub fn status(result: Result<Completion, DriverError>) -> Status {
    match result {
        Ok(_) => Status::SUCCESS,
        Err(DriverError::Status { status, .. }) => status,
        Err(other) => panic!("admin command failed outside NVMe: {other}"),
    }
}

/// Runs `controller`'s worker passes on this thread until a round of them finds nothing to
/// do: every command a doorbell made fetchable has run (or, on an asynchronous backend, been
/// submitted) and every completion ready has been posted, every deliverable event went out.
/// The worker threads may run passes meanwhile; a pass is the same whoever runs it, so what
/// the test sees next does not depend on timing (commands still in flight on an asynchronous
/// backend are the test's to wait for).
///
/// # Panics
///
/// If the controller is still making progress after a million passes.
pub fn settle(controller: &Controller) {
    assert!(
        controller.run_until_idle(1_000_000),
        "the controller kept making progress"
    );
}

/// Stops `controller`'s worker threads from running passes: from now on only [`settle`] (and
/// the other calls that run passes on the caller's thread) does, so everything the controller
/// does happens in the order of the test's calls, whatever the machine's load. For tests that
/// compare controllers step by step; the worker threads' own scheduling is what the other
/// tests exercise.
///
/// # Panics
///
/// If a worker thread does not park within [`PATIENCE`].
pub fn drive_manually(controller: &Controller) {
    eventually("the worker threads to park", || {
        controller.drive_manually().then_some(())
    });
}

/// Runs `f` while no worker pass of `controller` is under way, so the next pass sees all of
/// what `f` did (doorbells and guest memory written together) or none of it. `f` must not
/// write a controller register other than a doorbell: CC writes wait for the same lock.
pub fn between_passes<T>(controller: &Controller, f: impl FnOnce() -> T) -> T {
    controller.between_passes(f)
}

/// Commands of `controller` in flight on asynchronous backends (taken between passes), so a
/// test can show that a control operation left none behind.
pub fn in_flight(controller: &Controller) -> usize {
    controller.in_flight()
}

/// Controller resets of `controller` so far; one counts as soon as the reset holds the
/// controller's locks, before it waits for commands in flight, so a test can release a held
/// command knowing that the reset, not a worker, sees it finish.
pub fn resets(controller: &Controller) -> u64 {
    controller.resets()
}
