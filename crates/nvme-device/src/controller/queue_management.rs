//! Creating and deleting I/O submission and completion queues (admin opcodes 00h, 01h, 04h,
//! 05h), with the checks and statuses the base specification gives.

use nvme_spec::command::Command;
use nvme_spec::command::CreateIoCqCdw11;
use nvme_spec::command::CreateIoSqCdw11;
use nvme_spec::command::CreateQueueCdw10;
use nvme_spec::command::DeleteQueueCdw10;
use nvme_spec::status::Status;

use super::Inner;
use super::State;
use super::worker;
use super::worker::Drain;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// Checks an I/O queue identifier for creation: in range, within the allocated number of
/// queues, and not in use.
fn new_qid<T>(queues: &[Option<T>], qid: u16, allocated: u16) -> Result<usize, Status> {
    let index = usize::from(qid);
    if qid == 0
        || qid > allocated.saturating_add(1)
        || queues.get(index).is_none_or(Option::is_some)
    {
        return Err(Status::INVALID_QUEUE_IDENTIFIER);
    }
    Ok(index)
}

/// Checks a 0's based queue size against CAP.MQES.
fn queue_entries(inner: &Inner, qsize: u16) -> Result<u32, Status> {
    let entries = u32::from(qsize) + 1;
    if entries < 2 || entries > inner.config.max_queue_entries {
        return Err(Status::INVALID_QUEUE_SIZE);
    }
    Ok(entries)
}

/// Checks a queue base address: physically contiguous queues must start on a page boundary.
fn queue_base(prp1: u64) -> Result<u64, Status> {
    if prp1 & 0xFFF != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    Ok(prp1)
}

/// The checks Create I/O Completion Queue and Create I/O Submission Queue share, in the order
/// their statuses are given: the identifier (free in `queues`, within `allocated`), the size,
/// and physical contiguity (CAP.CQR = 1). Returns the queue's index and entries.
fn new_queue<T>(
    inner: &Inner,
    queues: &[Option<T>],
    allocated: u16,
    cdw10: CreateQueueCdw10,
    contiguous: bool,
) -> Result<(usize, u32), Status> {
    let index = new_qid(queues, cdw10.qid(), allocated)?;
    let size = queue_entries(inner, cdw10.qsize())?;
    if !contiguous {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    Ok((index, size))
}

/// Create I/O Completion Queue (05h), into the worker that owns its identifier; the workers are
/// kicked so a parked one starts polling it.
pub(super) fn create_cq(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = CreateQueueCdw10::from(cmd.cdw10);
    let cdw11 = CreateIoCqCdw11::from(cmd.cdw11);
    let allocated = state.features.queues.1;
    let mut w = inner.lock_worker(inner.owner(cdw10.qid()));
    let (index, size) = new_queue(inner, &w.q.cqs, allocated, cdw10, cdw11.pc())?;
    if cdw11.iv() >= inner.offered_vectors() {
        return Err(Status::INVALID_INTERRUPT_VECTOR);
    }
    let base = queue_base(cmd.prp1)?;
    inner.doorbells.set_cq_head(cdw10.qid(), 0);
    w.q.cqs[index] = Some(CompletionQueue {
        qid: cdw10.qid(),
        base,
        size,
        tail: 0,
        phase: true,
        head: 0,
        vector: cdw11.iv(),
        interrupts: cdw11.ien(),
    });
    drop(w);
    inner.kick();
    Ok(0)
}

/// Create I/O Submission Queue (01h).
pub(super) fn create_sq(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = CreateQueueCdw10::from(cmd.cdw10);
    let cdw11 = CreateIoSqCdw11::from(cmd.cdw11);
    let allocated = state.features.queues.0;
    // The identifier must be free in every worker; the queue goes to its completion queue's.
    let mut workers = inner.lock_workers();
    let taken = workers.iter().any(|w| {
        w.q.sqs
            .get(usize::from(cdw10.qid()))
            .is_some_and(Option::is_some)
    });
    // A taken identifier is checked against no table at all: it is refused as invalid.
    let free: &[Option<SubmissionQueue>] = if taken { &[] } else { &workers[0].q.sqs };
    let (index, size) = new_queue(inner, free, allocated, cdw10, cdw11.pc())?;
    let cqid = cdw11.cqid();
    let w = &mut workers[inner.owner(cqid)];
    if cqid == 0 || w.q.cqs.get(usize::from(cqid)).is_none_or(Option::is_none) {
        return Err(Status::COMPLETION_QUEUE_INVALID);
    }
    let base = queue_base(cmd.prp1)?;
    inner.doorbells.set_sq_tail(cdw10.qid(), 0);
    if let Some(counters) = w.q.queue_counters.get_mut(index) {
        *counters = super::status::QueueCounters::default();
    }
    w.q.sqs[index] = Some(SubmissionQueue {
        qid: cdw10.qid(),
        cqid,
        base,
        size,
        head: 0,
        priority: cdw11.qprio(),
    });
    drop(workers);
    inner.kick();
    Ok(0)
}

/// The index of existing I/O queue `qid`.
fn existing_qid<T>(queues: &[Option<T>], qid: u16) -> Result<usize, Status> {
    let index = usize::from(qid);
    if qid == 0 || queues.get(index).is_none_or(Option::is_none) {
        return Err(Status::INVALID_QUEUE_IDENTIFIER);
    }
    Ok(index)
}

/// Delete I/O Submission Queue (00h). Its commands in flight on an asynchronous backend are
/// waited for and complete first, while the queue still exists (see `worker`); entries the host
/// submitted but the controller never fetched are simply dropped.
pub(super) fn delete_sq(inner: &Inner, _state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let qid = DeleteQueueCdw10::from(cmd.cdw10).qid();
    let mut workers = inner.lock_workers();
    let Some(w) = workers
        .iter_mut()
        .find(|w| w.q.sqs.get(usize::from(qid)).is_some_and(Option::is_some))
    else {
        return Err(Status::INVALID_QUEUE_IDENTIFIER);
    };
    let index = existing_qid(&w.q.sqs, qid)?;
    worker::drain(inner, w, Drain::Sq(qid));
    w.q.sqs[index] = None;
    inner.doorbells.set_sq_tail(qid, 0);
    Ok(0)
}

/// Delete I/O Completion Queue (04h): refused while a submission queue still uses it (those
/// are all in the same worker).
pub(super) fn delete_cq(inner: &Inner, _state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let qid = DeleteQueueCdw10::from(cmd.cdw10).qid();
    let mut w = inner.lock_worker(inner.owner(qid));
    let index = existing_qid(&w.q.cqs, qid)?;
    if w.q.sqs.iter().flatten().any(|sq| sq.cqid == qid) {
        return Err(Status::INVALID_QUEUE_DELETION);
    }
    w.q.cqs[index] = None;
    inner.doorbells.set_cq_head(qid, 0);
    Ok(0)
}
