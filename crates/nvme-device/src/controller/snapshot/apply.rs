//! Making a controller take a saved state that validation accepted; it cannot fail.

use std::sync::Arc;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nvme_spec::lm::NvmeControllerStateV0;

use super::vendor::VendorState;
use crate::controller::Inner;
use crate::controller::State;
use crate::controller::aer;
use crate::controller::features::Features;
use crate::controller::worker::Worker;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// Makes controller `inner` take a state that [`validate()`](super::validate()) accepted: the
/// I/O queues of NVMECS first, then the vendor state, whose doorbells are the values the guest
/// wrote (NVMECS holds the ones the controller acts on).
pub(crate) fn apply(
    inner: &Inner,
    state: &mut State,
    workers: &mut [MutexGuard<'_, Worker>],
    nvmecs: Option<&NvmeControllerStateV0>,
    vendor: Option<&VendorState>,
) {
    if let Some(nvmecs) = nvmecs {
        let db = &inner.doorbells;
        // Suspended, so nothing is in flight: only the queues go.
        workers.iter_mut().for_each(|w| w.q.clear());
        state.q.shadow = None;
        for cq in nvmecs.cqs() {
            workers[inner.owner(cq.qid)].q.cqs[usize::from(cq.qid)] = Some(CompletionQueue {
                qid: cq.qid,
                base: cq.prp1,
                size: u32::from(cq.qsize) + 1,
                tail: cq.tp.into(),
                phase: cq.attr.s0pt(),
                head: cq.hp.into(),
                vector: cq.attr.iv(),
                interrupts: cq.attr.ien(),
            });
            db.set_cq_head(cq.qid, cq.hp.into());
        }
        for sq in nvmecs.sqs() {
            workers[inner.owner(sq.cqid)].q.sqs[usize::from(sq.qid)] = Some(SubmissionQueue {
                qid: sq.qid,
                cqid: sq.cqid,
                base: sq.prp1,
                size: u32::from(sq.qsize) + 1,
                head: sq.hp.into(),
                priority: sq.attr.qprio(),
            });
            db.set_sq_tail(sq.qid, sq.tp.into());
        }
    }
    state.q.irq_pending.iter_mut().for_each(|p| *p = false);
    state.q.bad_doorbells.iter_mut().for_each(|d| *d = None);
    for w in workers.iter_mut() {
        w.q.irq_pending.iter_mut().for_each(|p| *p = false);
        w.q.bad_doorbells.iter_mut().for_each(|d| *d = None);
    }
    if let Some(v) = vendor {
        apply_vendor(inner, state, workers, v);
    }
}

fn apply_vendor(
    inner: &Inner,
    state: &mut State,
    workers: &mut [MutexGuard<'_, Worker>],
    v: &VendorState,
) {
    *inner
        .identity
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(v.identity.clone());
    inner.reported_cntlid.store(v.cntlid, Ordering::Release);
    {
        let mut ids = inner
            .namespace_identities
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for ns in &v.namespaces {
            if let Some(slot) = ids.get_mut(ns.nsid as usize - 1) {
                *slot = Some(ns.identity);
            }
        }
    }
    let regs = &inner.regs;
    let r = &v.registers;
    regs.cc.store(r.cc, Ordering::Release);
    regs.csts.store(r.csts, Ordering::Release);
    regs.aqa.store(r.aqa, Ordering::Release);
    regs.asq.store(r.asq, Ordering::Release);
    regs.acq.store(r.acq, Ordering::Release);
    regs.intms.store(r.intms, Ordering::Release);
    state.q.sqs[0] = v.admin_sq.clone();
    state.q.cqs[0] = v.admin_cq.clone();
    inner.doorbells.clear();
    for (qid, &(sq_tail, cq_head)) in v.doorbells.iter().enumerate() {
        inner.doorbells.set_sq_tail(qid as u16, sq_tail);
        inner.doorbells.set_cq_head(qid as u16, cq_head);
    }
    // A reported doorbell value goes to whoever polls its queue: the worker owning an I/O
    // queue, else the controller-wide set (the admin queue, or no queue at all).
    for d in &v.reported_doorbells {
        let (qid, cq) = (usize::from(d.doorbell / 2), d.doorbell % 2 == 1);
        let holder = workers.iter().position(|w| {
            if cq {
                w.q.cqs.get(qid).is_some_and(Option::is_some)
            } else {
                w.q.sqs.get(qid).is_some_and(Option::is_some)
            }
        });
        let q = match holder {
            Some(i) if qid > 0 => &mut workers[i].q,
            _ => &mut state.q,
        };
        if let Some(slot) = q.bad_doorbells.get_mut(usize::from(d.doorbell)) {
            *slot = Some(d.value);
        }
    }
    state.q.shadow = v.shadow;
    for w in workers.iter_mut() {
        w.q.shadow = v.shadow;
    }
    inner.set_uptime(Duration::from_millis(v.power_on_ms));
    state.features = Features::from_values(&v.features, &inner.config, inner.uptime());
    // The target's own undelivered events are replaced by the source's.
    aer::discard_posted(inner);
    state.aer.outstanding = v.events.outstanding.iter().copied().collect();
    state.aer.queued = v.events.queued.iter().copied().collect();
    state.aer.masked = v.events.masked;
    {
        let mut errors = inner.lock_errors();
        errors.count = v.error_log.0;
        errors.entries = v.error_log.1.iter().copied().collect();
    }
    // The saved counters become the controller-wide share; the workers' start again from zero.
    state.q.counters = v.counters;
    for w in workers.iter_mut() {
        w.q.counters = crate::controller::Counters::default();
    }
}
