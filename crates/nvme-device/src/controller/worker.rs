//! An I/O worker: the thread that owns a group of I/O queue pairs (a completion queue and every
//! submission queue bound to it) and serves them.
//!
//! Completion queue `cqid` belongs to worker `(cqid − 1) mod workers`, and a submission queue to
//! the worker of its completion queue, so one worker posts every completion of a queue and no
//! two workers touch the same queue. Worker 0 also runs the admin queue and delivers
//! asynchronous events (the controller-wide `State`, taken once per pass for that step).
//!
//! A pass takes the worker's own lock once: it reaps what its asynchronous backend queues
//! finished and posts those completions, then visits each of its submission queues, fetching up
//! to [`BATCH`] entries from each — never more than its completion queue has room for beyond
//! the slots reserved for commands already in flight. A command on a namespace whose backend
//! offers an [`IoQueue`](crate::backend::IoQueue) (Read, Write, Flush of one namespace) is
//! submitted and completes when reaped; everything else runs to completion in the pass. LBA
//! changes logged during the pass go to the User Data Migration Queue in one append at its end,
//! and each interrupt vector that got a completion is signalled once.
//!
//! # Commands in flight across control operations
//!
//! A control path holds the worker's lock between passes and may then [`drain`] it, reaping
//! on the worker's behalf until the commands it cares about are done (bounded by the backend):
//!
//! * TP4159 Suspend posts every completion (the host sees them complete before the state is
//!   captured; a capture never sees a command in flight);
//! * Delete I/O Submission Queue posts the completions of that queue's commands while the
//!   queue still exists, and completes a command the backend had not taken yet with Command
//!   Aborted due to SQ Deletion;
//! * a controller reset (CC.EN = 0, FLR, offline) and dropping the controller discard them:
//!   the queues go away, so no completion is ever written into a deleted or re-created queue,
//!   and since the drain waits for the backend, no request touches guest memory afterwards.
//!   A write that finished is still logged as an LBA change (its data did change).

use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_spec::command::Command;
use nvme_spec::command::NvmOpcode;
use nvme_spec::command::ReadWriteCdw12;
use nvme_spec::command::slba;
use nvme_spec::status::Status;

use super::DoorbellDelivery;
use super::Inner;
use super::admin_queue;
use super::inflight::InFlight;
use super::inflight::Slot;
use super::io;
use super::lba_log::LbaLog;
use super::poll::Backoff;
use super::poll::Wait;
use super::poll::wait_readable;
use super::queue_set::QueueSet;
use crate::backend::BackendError;
use crate::backend::IoKind;
use crate::backend::IoQueue;
use crate::backend::IoRequest;

/// Most commands fetched from one submission queue in one pass.
pub(super) const BATCH: u32 = 32;
/// Requests one asynchronous backend queue of a worker takes at once.
const BACKEND_DEPTH: u32 = 128;
/// Longest wait of a drain between two looks at its backend queues (a missed notification
/// costs this much, never a hang).
const DRAIN_WAIT: Duration = Duration::from_millis(10);

/// How a worker runs the commands of one namespace.
enum Engine {
    /// Not decided yet: the backend is asked for a queue at the first command.
    Unopened,
    /// Synchronously in the pass (RAM, null, or a backend that could not open a queue).
    Sync,
    /// Through the backend's asynchronous queue.
    Async(Box<dyn IoQueue>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Unopened => f.write_str("Unopened"),
            Engine::Sync => f.write_str("Sync"),
            Engine::Async(q) => write!(f, "Async({q:?})"),
        }
    }
}

/// One worker's state, under its own lock.
#[derive(Debug)]
pub(super) struct Worker {
    /// The I/O queues this worker owns, with their counters and pending interrupts.
    pub q: QueueSet,
    /// This worker's side of TP4159 LBA change logging (the controller's queue and whether
    /// logging is on, and what the current pass collected).
    pub lba: LbaLog,
    /// Commands in flight on asynchronous backends.
    inflight: InFlight,
    /// Per namespace (NSID − 1), how its commands run.
    engines: Vec<Engine>,
    /// Reused buffer of reaped results.
    done: Vec<(u64, Result<(), BackendError>)>,
    /// Reused buffer of tags.
    tags: Vec<usize>,
    /// Whether the last pass left commands in a submission queue that it could not fetch (no
    /// room in their completion queue, or the backend queue full).
    stalled: bool,
}

/// What a drain does with the commands it finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Drain {
    /// Post every completion and wait until nothing is in flight (Suspend).
    Post,
    /// Post completions, abort what submission queue `sqid` has not handed to the backend yet,
    /// and wait until nothing of it is in flight (Delete I/O Submission Queue).
    Sq(u16),
    /// Wait until nothing is in flight and post nothing (reset, drop).
    Discard,
}

impl Worker {
    /// An idle worker of a controller with `queue_count` queue identifiers, `vectors`
    /// interrupt vectors and `namespaces` namespace slots.
    pub fn new(queue_count: usize, vectors: usize, namespaces: usize) -> Self {
        Self {
            q: QueueSet::new(queue_count, vectors, super::Counters::default()),
            lba: LbaLog::default(),
            inflight: InFlight::new(queue_count),
            engines: (0..namespaces).map(|_| Engine::Unopened).collect(),
            done: Vec::new(),
            tags: Vec::new(),
            stalled: false,
        }
    }

    /// Commands in flight on asynchronous backends.
    #[cfg(feature = "test-utils")]
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Sets the EventIdx of every submission queue of this worker that has a shadow doorbell
    /// to the tail it has consumed, so the host's next submission writes the register (and,
    /// trapped, wakes the worker). The caller fences, then looks at the queues once more.
    fn arm(&self, inner: &Inner) {
        let Some(shadow) = self.q.shadow else {
            return;
        };
        for sq in self.q.sqs.iter().flatten() {
            shadow.set_event(inner.mem.as_ref(), sq.qid, false, sq.head);
        }
    }

    /// Leaves the EventIdx of each shadowed submission queue one behind what it consumed, so
    /// the host writes no register for its next commands: the worker watches the shadow.
    fn disarm(&self, inner: &Inner) {
        let Some(shadow) = self.q.shadow else {
            return;
        };
        for sq in self.q.sqs.iter().flatten() {
            shadow.set_event_behind(inner.mem.as_ref(), sq.qid, false, sq.head, sq.size);
        }
    }

    /// Whether the worker owns any I/O submission queue.
    fn has_queues(&self) -> bool {
        self.q.sqs.iter().any(Option::is_some)
    }

    /// The notifiers of its asynchronous backend queues, into `out` (cleared first). They stay
    /// open while the controller lives (queues are never closed before it is dropped).
    fn notifiers(&self, out: &mut Vec<RawFd>) {
        out.clear();
        out.extend(self.engines.iter().filter_map(|e| match e {
            Engine::Async(q) => Some(q.notifier().as_raw_fd()),
            _ => None,
        }));
    }
}

/// Worker `index`'s thread: passes, then waits as the controller's [`PollPolicy`] says.
///
/// [`PollPolicy`]: super::PollPolicy
pub(super) fn run(inner: &Arc<Inner>, index: usize) {
    let mut backoff = Backoff::new(inner.config.poll);
    let mut fds = Vec::new();
    #[cfg(feature = "test-utils")]
    let mut parked_manually = false;
    while !inner.stop.load(Ordering::Acquire) {
        #[cfg(feature = "test-utils")]
        if inner.manual.load(Ordering::Acquire) {
            if !parked_manually {
                parked_manually = true;
                inner.manual_parked.fetch_add(1, Ordering::AcqRel);
            }
            std::thread::park();
            continue;
        }
        let progress = pass(inner, index);
        if inner.control_waiting.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
        // Nothing can arrive: a controller that cannot run, or a worker without queues (the
        // admin path kicks the workers when it creates one).
        if progress.in_flight == 0 && (!inner.running() || (index > 0 && !progress.has_queues)) {
            backoff.reset();
            std::thread::park();
            continue;
        }
        match backoff.next(progress.progressed) {
            Wait::Spin => std::thread::yield_now(),
            Wait::Sleep(sleep)
                if inner.config.doorbells == DoorbellDelivery::Trapped
                    && !(progress.shadowed && backoff.meeting_rhythm()) =>
            {
                sleep_until_doorbell(inner, index, sleep, None, &mut backoff, &mut fds);
            }
            // A regular guest with shadow doorbells, its next command not due yet: sleep armed
            // until it is, then watch the shadow with EventIdx left behind (no register write
            // for a command that comes on time).
            Wait::Sleep(sleep)
                if inner.config.doorbells == DoorbellDelivery::Trapped
                    && let Some(due) = backoff.until_due() =>
            {
                sleep_until_doorbell(inner, index, sleep, Some(due), &mut backoff, &mut fds);
                inner.lock_worker_from_worker(index).disarm(inner);
            }
            Wait::Sleep(sleep) if progress.in_flight > 0 => {
                inner.lock_worker_from_worker(index).notifiers(&mut fds);
                wait_readable(&fds, Some(sleep));
            }
            Wait::Sleep(sleep) => std::thread::park_timeout(sleep),
        }
    }
    drain(
        inner,
        &mut inner.lock_worker_from_worker(index),
        Drain::Discard,
    );
}

/// The sleep of a worker whose doorbell writes are trapped ([`DoorbellDelivery::Trapped`]):
/// raises its wake-up flag, arms its shadowed submission queues (see `shadow`), takes one more
/// look, and if that finds nothing sleeps until a doorbell write, a kick or a backend
/// completion wakes it, or `timeout` passes. A queue with commands it cannot fetch yet (its
/// completion queue is full, and the host's shadow head updates wake nobody) bounds the sleep
/// by `sleep`.
fn sleep_until_doorbell(
    inner: &Inner,
    index: usize,
    sleep: Duration,
    timeout: Option<Duration>,
    backoff: &mut Backoff,
    fds: &mut Vec<RawFd>,
) {
    let waker = &inner.wakers[index];
    waker.prepare();
    inner.lock_worker_from_worker(index).arm(inner);
    std::sync::atomic::fence(Ordering::SeqCst);
    let last_look = pass(inner, index);
    // The controller's drop stores `stop` and then wakes the workers: one that raised its
    // flag after that wake-up looked sees `stop` here (both sides fence between store and
    // load), so it never sleeps through the drop with no timeout.
    if last_look.progressed || inner.stop.load(Ordering::Acquire) {
        waker.awake();
        backoff.next(true);
        return;
    }
    let stalled = {
        let w = inner.lock_worker_from_worker(index);
        w.notifiers(fds);
        w.stalled
    };
    waker.set_stalled(stalled);
    // First, so that it is watched however many backend queues there are.
    fds.insert(0, waker.fd());
    let asleep = Instant::now();
    let bound = match (stalled.then_some(sleep), timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    wait_readable(fds, bound);
    waker.awake();
    backoff.woken_after(asleep.elapsed());
}

/// What one pass of a worker found.
#[derive(Clone, Copy, Debug)]
pub(super) struct Progress {
    /// Whether anything happened.
    pub progressed: bool,
    /// Commands in flight after it.
    pub in_flight: usize,
    /// Whether the worker owns I/O submission queues.
    pub has_queues: bool,
    /// Whether the host configured shadow doorbells.
    pub shadowed: bool,
}

/// One pass of worker `index`: for worker 0 the admin queue and events first, then its I/O
/// queues.
pub(super) fn pass(inner: &Inner, index: usize) -> Progress {
    let mut progressed = false;
    if index == 0 {
        progressed |= admin_queue::admin_pass(inner, &mut inner.lock_state_from_worker());
    }
    let mut w = inner.lock_worker_from_worker(index);
    progressed |= io_pass(inner, &mut w);
    Progress {
        progressed,
        in_flight: w.inflight.len(),
        has_queues: w.has_queues(),
        shadowed: w.q.shadow.is_some(),
    }
}

/// One pass over a worker's I/O queues, with its lock held.
pub(super) fn io_pass(inner: &Inner, w: &mut Worker) -> bool {
    w.stalled = false;
    let mut progressed = reap(inner, w, true);
    if inner.running() {
        if w.inflight.any_waiting() {
            progressed |= submit_waiting(w, None);
        }
        for qid in 1..w.q.sqs.len() {
            if w.q.sqs[qid].is_some() {
                progressed |= io_queue(inner, w, qid as u16);
            }
        }
    }
    w.lba.flush();
    w.q.signal(inner);
    progressed
}

/// Reaps every asynchronous queue and completes what finished (posting the completions if
/// `post`). Returns whether anything finished.
fn reap(inner: &Inner, w: &mut Worker, post: bool) -> bool {
    if w.inflight.len() == 0 {
        return false;
    }
    let mut done = std::mem::take(&mut w.done);
    done.clear();
    for engine in &mut w.engines {
        if let Engine::Async(q) = engine
            && q.in_flight() > 0
        {
            q.reap(&mut done);
        }
    }
    let any = !done.is_empty();
    for (tag, result) in done.drain(..) {
        let Some(slot) = usize::try_from(tag)
            .ok()
            .and_then(|tag| w.inflight.remove(tag))
        else {
            continue;
        };
        finish(inner, w, &slot, result, post);
    }
    w.done = done;
    any
}

/// Completes a command whose backend request finished with `result`: counters, the LBA change
/// of a successful write (before its completion is posted), and the completion if `post`.
fn finish(
    inner: &Inner,
    w: &mut Worker,
    slot: &Slot,
    result: Result<(), BackendError>,
    post: bool,
) {
    let request = &slot.request;
    let write = matches!(request.kind, IoKind::Write { .. });
    let status = match (result, request.kind) {
        (Ok(()), IoKind::Flush) => Status::SUCCESS,
        (Ok(()), kind) => {
            let c = &mut w.q.counters;
            if write {
                c.write_commands += 1;
                c.bytes_written += request.len;
                let nlb = ReadWriteCdw12::from(slot.cmd.cdw12).nlb();
                w.lba.record(
                    slot.cmd.nsid,
                    slba(slot.cmd.cdw10, slot.cmd.cdw11),
                    nlb.into(),
                    false,
                );
            } else {
                debug_assert_eq!(kind, IoKind::Read);
                c.read_commands += 1;
                c.bytes_read += request.len;
            }
            Status::SUCCESS
        }
        (Err(_), IoKind::Flush) => Status::WRITE_FAULT,
        (Err(err), _) => {
            let status = io::storage_error(err, write);
            if status != Status::DATA_TRANSFER_ERROR {
                w.q.counters.media_errors += 1;
            }
            status
        }
    };
    if post {
        w.q.complete(inner, slot.sqid, slot.cqid, &slot.cmd, status, 0);
    }
}

/// Offers the backend the commands that wait for room (all, or only those of `sqid`), oldest
/// slot first. Returns whether any was taken.
fn submit_waiting(w: &mut Worker, sqid: Option<u16>) -> bool {
    let mut tags = std::mem::take(&mut w.tags);
    w.inflight.waiting(&mut tags);
    let mut any = false;
    for &tag in &tags {
        if sqid.is_none_or(|s| w.inflight.get_mut(tag).is_some_and(|slot| slot.sqid == s)) {
            any |= submit(w, tag);
        }
    }
    w.tags = tags;
    any
}

/// Hands command `tag` to its backend queue; false if the queue is full (it waits).
fn submit(w: &mut Worker, tag: usize) -> bool {
    let Some(slot) = w.inflight.get_mut(tag) else {
        return false;
    };
    let Some(Engine::Async(queue)) = w.engines.get_mut(slot.ns_index) else {
        return false;
    };
    if queue.submit(&slot.request).is_err() {
        return false;
    }
    w.inflight.submitted(tag);
    true
}

/// The namespace index whose asynchronous queue runs `cmd`, if it is a Read, Write or Flush of
/// one namespace whose backend offers a queue (opened at the namespace's first command).
fn async_namespace(inner: &Inner, w: &mut Worker, cmd: &Command) -> Option<usize> {
    let op = NvmOpcode(cmd.cdw0.opcode());
    if !matches!(op, NvmOpcode::READ | NvmOpcode::WRITE | NvmOpcode::FLUSH) || cmd.cdw0.fuse() != 0
    {
        return None;
    }
    let index = usize::try_from(cmd.nsid).ok()?.checked_sub(1)?;
    let engine = w.engines.get_mut(index)?;
    if let Engine::Unopened = engine {
        let ns = inner.namespace(cmd.nsid)?;
        *engine = match ns.backend().io_queue(inner.mem.clone(), BACKEND_DEPTH) {
            Ok(Some(queue)) => Engine::Async(queue),
            // A backend that could not open a queue still works, synchronously.
            Ok(None) | Err(_) => Engine::Sync,
        };
    }
    matches!(engine, Engine::Async(_)).then_some(index)
}

/// Fetches and starts a batch of I/O commands from submission queue `qid`, counting the time
/// it takes as controller busy time (one clock read per batch, none per command).
fn io_queue(inner: &Inner, w: &mut Worker, qid: u16) -> bool {
    // A command the backend could not take yet keeps its queue's place: nothing behind it is
    // fetched.
    if w.inflight.sq_waiting(qid) {
        w.stalled = true;
        return false;
    }
    let (pending, bad_sq) = w.q.sq_pending(inner, qid);
    let mut progressed = report_bad_doorbell(inner, bad_sq);
    let Some(pending) = pending.filter(|&n| n > 0) else {
        return progressed;
    };
    let Some(cqid) = w.q.sqs[usize::from(qid)].as_ref().map(|q| q.cqid) else {
        return progressed;
    };
    let (room, bad_cq) = w.q.cq_room(inner, cqid);
    progressed |= report_bad_doorbell(inner, bad_cq);
    // Every command in flight has a completion slot reserved.
    let room = room.unwrap_or(0).saturating_sub(w.inflight.reserved(cqid));
    let n = pending.min(room).min(BATCH);
    if n == 0 {
        w.stalled = true;
        return progressed;
    }
    // The worker is awake and consuming: the EventIdx follows the head it is about to reach,
    // set before any of these commands completes (the host submits more as completions
    // arrive), or the host would pass a value left behind and write the register for nothing
    // (with trapped doorbells a message per lap of the queue).
    match (w.q.shadow, w.q.sqs[usize::from(qid)].as_ref()) {
        (Some(shadow), Some(sq)) => {
            shadow.set_event_behind(inner.mem.as_ref(), qid, false, sq.head + n, sq.size);
        }
        (None, _) if inner.config.doorbells == DoorbellDelivery::Trapped => {
            note_register_doorbells(inner);
        }
        _ => {}
    }
    let started = Instant::now();
    for i in 0..n {
        let Some(sq) = w.q.sqs[usize::from(qid)].as_mut() else {
            break;
        };
        let Ok(cmd) = sq.fetch(inner.mem.as_ref()) else {
            inner.fatal();
            break;
        };
        let Some(ns_index) = async_namespace(inner, w, &cmd) else {
            let (status, dw0) = io::execute(inner, &mut w.q.counters, &mut w.lba, &cmd);
            w.q.complete(inner, qid, cqid, &cmd, status, dw0);
            continue;
        };
        let (kind, offset, len, segments) = match io::request(inner, &cmd) {
            Ok(parts) => parts,
            Err(status) => {
                w.q.complete(inner, qid, cqid, &cmd, status, 0);
                continue;
            }
        };
        let tag = w.inflight.insert(Slot {
            cmd,
            sqid: qid,
            cqid,
            ns_index,
            request: IoRequest {
                tag: 0,
                kind,
                offset,
                len,
                segments,
                batched: i + 1 < n,
            },
            submitted: false,
        });
        if let Some(slot) = w.inflight.get_mut(tag) {
            slot.request.tag = tag as u64;
        }
        if !submit(w, tag) {
            break;
        }
    }
    let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    w.q.counters.busy_ns = w.q.counters.busy_ns.saturating_add(busy);
    true
}

/// Warns, once per controller, that its host rings trapped I/O doorbell registers without
/// shadow doorbells: every doorbell is then a message to the server, which costs such a host
/// most of its IOPS at depth; shared doorbell delivery serves it better.
fn note_register_doorbells(inner: &Inner) {
    let noted = &inner.register_doorbells_noted;
    if !noted.load(Ordering::Relaxed) && !noted.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            cntlid = inner.config.cntlid,
            "the host writes I/O doorbell registers without shadow doorbells (it did not send \
             Doorbell Buffer Config): with trapped doorbell delivery each write is a message to \
             the server, a fifth to a third of the IOPS of shared delivery at queue depth 32; serve \
             such hosts with shared doorbells"
        );
    }
}

/// Raises the Invalid Doorbell Write Value event for a value newly found invalid (through the
/// controller's event list: worker 0 delivers it). Returns whether it did.
fn report_bad_doorbell(inner: &Inner, new: bool) -> bool {
    if new {
        inner.post_event(super::AsyncEvent::invalid_doorbell());
    }
    new
}

/// Waits, with the worker's lock held, until the commands `mode` names are no longer in flight,
/// reaping on the worker's behalf and treating what finishes as `mode` says (see the module
/// docs). Bounded by the backend: it never gives up on a request that still runs.
pub(super) fn drain(inner: &Inner, w: &mut Worker, mode: Drain) {
    let mut fds = Vec::new();
    loop {
        reap(inner, w, mode != Drain::Discard);
        if w.inflight.any_waiting() {
            let mut tags = std::mem::take(&mut w.tags);
            w.inflight.waiting(&mut tags);
            for &tag in &tags {
                let sqid = w.inflight.get_mut(tag).map(|slot| slot.sqid);
                match mode {
                    Drain::Discard => {
                        w.inflight.remove(tag);
                    }
                    Drain::Sq(target) if sqid == Some(target) => {
                        if let Some(slot) = w.inflight.remove(tag) {
                            w.q.complete(
                                inner,
                                slot.sqid,
                                slot.cqid,
                                &slot.cmd,
                                Status::ABORTED_SQ_DELETION,
                                0,
                            );
                        }
                    }
                    Drain::Post | Drain::Sq(_) => {
                        submit(w, tag);
                    }
                }
            }
            w.tags = tags;
        }
        let done = match mode {
            Drain::Sq(sqid) => !w.inflight.has_sq(sqid),
            Drain::Post | Drain::Discard => w.inflight.len() == 0,
        };
        if done {
            break;
        }
        w.notifiers(&mut fds);
        wait_readable(&fds, Some(DRAIN_WAIT));
    }
    w.lba.flush();
    if mode != Drain::Discard {
        w.q.signal(inner);
    }
}
