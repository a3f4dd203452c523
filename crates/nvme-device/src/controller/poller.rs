//! The controller's I/O thread: watches the doorbells, fetches and runs commands, posts
//! completions and raises interrupts.
//!
//! A pass takes the queue-state lock once, visits every submission queue, fetches up to
//! [`BATCH`] entries from each (never more than its completion queue has room for), runs them to
//! completion and posts their completions, then signals each interrupt vector that got one, once.
//! Between passes the thread spins briefly while work keeps arriving and then backs off to short
//! sleeps, so an idle controller costs little CPU while a busy one never sleeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::command::CompletionStatus;
use nvme_spec::status::Status;

use super::Inner;
use super::State;
use super::admin;
use super::aer;
use super::io;
use crate::queue::InvalidDoorbell;

/// Most commands fetched from one submission queue in one pass.
pub(super) const BATCH: u32 = 32;
/// How long the thread keeps polling without sleeping after the last piece of work.
const SPIN: Duration = Duration::from_micros(200);
/// Longest sleep of an idle controller, which bounds the latency of the first command after a
/// quiet period (doorbells written through shared memory cannot wake the thread).
const MAX_SLEEP: Duration = Duration::from_micros(1000);

/// What running one command produced.
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

/// The poller thread's main loop.
pub(super) fn run(inner: &Arc<Inner>) {
    let mut last_work = Instant::now();
    let mut sleep = Duration::from_micros(20);
    while !inner.stop.load(Ordering::Acquire) {
        let progressed = {
            let mut state = inner
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pass(inner, &mut state)
        };
        if inner.control_waiting.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
        if progressed {
            last_work = Instant::now();
            sleep = Duration::from_micros(20);
        } else if last_work.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::park_timeout(sleep);
            sleep = (sleep * 2).min(MAX_SLEEP);
        }
    }
}

/// One pass over every queue. Returns whether anything happened.
pub(super) fn pass(inner: &Inner, state: &mut State) -> bool {
    let csts = inner.csts();
    // A suspended controller changes nothing: no fetch, no event delivery, so its state stays
    // exactly as Suspend left it until Resume (events raised meanwhile wait in `events`).
    if !csts.rdy() || csts.cfs() || inner.suspended.load(Ordering::Acquire) {
        return false;
    }
    let mut progressed = false;
    aer::collect_posted(inner, state);
    progressed |= aer::deliver(inner, state);
    progressed |= admin_queue(inner, state);
    for qid in 1..state.sqs.len() {
        if state.sqs[qid].is_some() {
            progressed |= io_queue(inner, state, qid as u16);
        }
    }
    // Events the pass raised (an invalid doorbell) go out with it, so a pass that makes no
    // progress leaves nothing deliverable behind.
    progressed |= aer::deliver(inner, state);
    // LBA changes logged during the pass go to the UDMQ in one append.
    state.lba_log.flush();
    signal(inner, state);
    progressed
}

/// Raises every interrupt vector that received a completion in this pass.
fn signal(inner: &Inner, state: &mut State) {
    if !state.irq_pending.contains(&true) {
        return;
    }
    let irq = inner
        .irq
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    for (vector, pending) in state.irq_pending.iter_mut().enumerate() {
        if std::mem::take(pending) {
            irq.signal(vector as u16);
        }
    }
}

/// Notes the value of a doorbell that passed validation, so a later bad value is reported.
fn valid_doorbell(state: &mut State, qid: u16, cq: bool) {
    if let Some(slot) = state
        .bad_doorbells
        .get_mut(2 * usize::from(qid) + usize::from(cq))
    {
        *slot = None;
    }
}

/// Reports a garbage doorbell value to the host as an asynchronous error event, once per value
/// written: the doorbell keeps the value (it lives in shared memory) until the host writes a
/// new one, and every pass sees it again.
fn invalid_doorbell(state: &mut State, err: InvalidDoorbell, cq: bool) {
    let Some(slot) = state
        .bad_doorbells
        .get_mut(2 * usize::from(err.qid) + usize::from(cq))
    else {
        return;
    };
    if *slot != Some(err.value) {
        *slot = Some(err.value);
        state.aer.queue(aer::AsyncEvent::invalid_doorbell());
    }
}

/// Marks the controller fatally failed (CSTS.CFS): the host must reset it.
pub(super) fn fatal(inner: &Inner) {
    inner.set_csts(inner.csts().with_cfs(true));
}

/// Room in completion queue `cqid` after reading its head doorbell, or `None` if the queue is
/// missing or the doorbell was invalid.
fn cq_room(inner: &Inner, state: &mut State, cqid: u16) -> Option<u32> {
    let head = inner.doorbells.cq_head(cqid);
    let cq = state.cqs.get_mut(usize::from(cqid))?.as_mut()?;
    if let Err(err) = cq.update_head(head) {
        invalid_doorbell(state, err, true);
        return None;
    }
    let room = cq.free_slots();
    valid_doorbell(state, cqid, true);
    Some(room)
}

/// Entries waiting in submission queue `qid`, or `None` if the tail doorbell is invalid.
fn sq_pending(inner: &Inner, state: &mut State, qid: u16) -> Option<u32> {
    let tail = inner.doorbells.sq_tail(qid);
    let sq = state.sqs.get(usize::from(qid))?.as_ref()?;
    match sq.pending(tail) {
        Ok(n) => {
            valid_doorbell(state, qid, false);
            Some(n)
        }
        Err(err) => {
            invalid_doorbell(state, err, false);
            None
        }
    }
}

/// Posts a completion for `cmd`, fetched from `sqid`, to completion queue `cqid`.
pub(super) fn complete(
    inner: &Inner,
    state: &mut State,
    sqid: u16,
    cqid: u16,
    cmd: &Command,
    status: Status,
    dw0: u32,
) {
    let failed = !status.is_success() && status != Status::COMMAND_ABORT_REQUESTED;
    if failed {
        state.errors.record(sqid, cmd, status);
        state.counters.error_count += 1;
    }
    if let Some(counters) = state.queue_counters.get_mut(usize::from(sqid)) {
        counters.completed += 1;
        counters.errors += u64::from(failed);
    }
    let sqhd = state
        .sqs
        .get(usize::from(sqid))
        .and_then(|q| q.as_ref())
        .map_or(0, |q| q.head as u16);
    post(
        inner,
        state,
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

/// Writes `entry` to completion queue `cqid` and marks its vector for signalling. A write that
/// fails (the host unmapped its queue) is a fatal controller error.
pub(super) fn post(inner: &Inner, state: &mut State, cqid: u16, entry: Completion) {
    let Some(cq) = state
        .cqs
        .get_mut(usize::from(cqid))
        .and_then(|q| q.as_mut())
    else {
        return;
    };
    if cq.post(inner.mem.as_ref(), entry).is_err() {
        fatal(inner);
        return;
    }
    if cq.interrupts
        && let Some(pending) = state.irq_pending.get_mut(usize::from(cq.vector))
    {
        *pending = true;
    }
}

/// Fetches and runs admin commands, one at a time (each may change the queue set).
fn admin_queue(inner: &Inner, state: &mut State) -> bool {
    let mut done = 0;
    while done < BATCH {
        let Some(pending) = sq_pending(inner, state, 0) else {
            break;
        };
        // Room for two completions: an Abort may also complete the request it aborts.
        if pending == 0 || cq_room(inner, state, 0).unwrap_or(0) < 2 {
            break;
        }
        let Some(sq) = state.sqs[0].as_mut() else {
            break;
        };
        let Ok(cmd) = sq.fetch(inner.mem.as_ref()) else {
            fatal(inner);
            break;
        };
        done += 1;
        match admin::execute(inner, state, &cmd) {
            Outcome::Complete(status, dw0) => complete(inner, state, 0, 0, &cmd, status, dw0),
            Outcome::Deferred => {}
        }
        // A command may have disabled, reset or failed the controller.
        if !inner.csts().rdy() || state.sqs[0].is_none() {
            break;
        }
    }
    done > 0
}

/// Fetches and runs a batch of I/O commands from submission queue `qid`, counting the time it
/// takes as controller busy time (one clock read per batch, none per command).
fn io_queue(inner: &Inner, state: &mut State, qid: u16) -> bool {
    let Some(pending) = sq_pending(inner, state, qid) else {
        return false;
    };
    if pending == 0 {
        return false;
    }
    let Some(cqid) = state.sqs[usize::from(qid)].as_ref().map(|q| q.cqid) else {
        return false;
    };
    let room = cq_room(inner, state, cqid).unwrap_or(0);
    let n = pending.min(room).min(BATCH);
    if n == 0 {
        return false;
    }
    let started = Instant::now();
    for _ in 0..n {
        let Some(sq) = state.sqs[usize::from(qid)].as_mut() else {
            break;
        };
        let Ok(cmd) = sq.fetch(inner.mem.as_ref()) else {
            fatal(inner);
            break;
        };
        let (status, dw0) = io::execute(inner, &mut state.counters, &mut state.lba_log, &cmd);
        complete(inner, state, qid, cqid, &cmd, status, dw0);
    }
    let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    state.counters.busy_ns = state.counters.busy_ns.saturating_add(busy);
    true
}
