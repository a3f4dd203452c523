//! Taking the state of a controller: its I/O queues as NVMECS v0 and everything else as our
//! vendor-specific state, in a fixed order so the same state always gives the same bytes.
//!
//! Doorbells hold whatever the guest wrote (in the registers, or in its shadow doorbell buffer
//! for the I/O queues once it configured one). NVMECS v0 gets the values the controller acts on
//! (an SQ tail beyond the queue fetches nothing, as if the tail were the head; a CQ head beyond
//! the queue leaves the last valid head in force), and the vendor state the values as written,
//! with the invalid ones already reported, so the destination acts exactly as the source.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use nvme_spec::lm::IoCqAttributes;
use nvme_spec::lm::IoCqState;
use nvme_spec::lm::IoSqAttributes;
use nvme_spec::lm::IoSqState;
use nvme_spec::lm::NvmeControllerStateV0;

use super::vendor::EventState;
use super::vendor::Limits;
use super::vendor::NamespaceState;
use super::vendor::RegisterValues;
use super::vendor::ReportedDoorbell;
use super::vendor::VendorState;
use crate::controller::Inner;
use crate::controller::State;
use crate::controller::aer;
use crate::controller::worker::Worker;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// The state of `inner`, with its `state` and every worker held: NVMECS v0 (I/O queues, from
/// whichever worker owns each) and our vendor state.
pub(crate) fn capture(
    inner: &Inner,
    state: &mut State,
    workers: &mut [MutexGuard<'_, Worker>],
) -> (NvmeControllerStateV0, VendorState) {
    // Events raised while suspended wait in `events`; they are part of the state.
    aer::collect_posted(inner, state);
    // The doorbells as the host last wrote them: the shadow values of I/O queues once it
    // configured shadow doorbells (a shadow buffer it unmapped leaves the registers' values).
    // Each is read once: the host may write its shadow page even now, and NVMECS and the
    // vendor state must agree on the values.
    let db = &inner.doorbells;
    let doorbells: Vec<(u32, u32)> = (0..=inner.config.io_queue_pairs)
        .map(|qid| {
            let read = |cq| {
                state
                    .q
                    .doorbell(inner, qid, cq)
                    .unwrap_or_else(|| db.value(qid, cq))
            };
            (read(false), read(true))
        })
        .collect();
    let doorbell = |qid: u16| doorbells.get(usize::from(qid)).copied().unwrap_or_default();
    let queue_count = state.q.sqs.len();
    let sqs = (1..queue_count)
        .filter_map(|qid| workers.iter().find_map(|w| w.q.sqs[qid].as_ref()))
        .map(|sq| sq_state(sq, doorbell(sq.qid).0))
        .collect();
    let cqs = (1..queue_count)
        .filter_map(|qid| workers.iter().find_map(|w| w.q.cqs[qid].as_ref()))
        .map(|cq| cq_state(cq, doorbell(cq.qid).1))
        .collect();
    // A doorbell value reported as invalid is noted by whoever polls its queue.
    let reported = |doorbell: usize| {
        workers
            .iter()
            .map(|w| &w.q)
            .chain([&state.q])
            .find_map(|q| q.bad_doorbells[doorbell])
    };
    let errors = inner.lock_errors();
    // At most 64 queues of each kind: always within NIOSQ/NIOCQ.
    let nvmecs = NvmeControllerStateV0::new(sqs, cqs).unwrap_or_default();
    let config = &inner.config;
    let regs = &inner.regs;
    let uptime = inner.uptime();
    let vendor = VendorState {
        identity: (*inner.identity()).clone(),
        cntlid: inner.reported_cntlid.load(Ordering::Acquire),
        limits: Limits {
            io_queue_pairs: config.io_queue_pairs,
            max_queue_entries: config.max_queue_entries,
            mdts: config.mdts,
            msix_vectors: config.msix_vectors,
        },
        registers: RegisterValues {
            cc: regs.cc.load(Ordering::Acquire),
            csts: regs.csts.load(Ordering::Acquire),
            aqa: regs.aqa.load(Ordering::Acquire),
            asq: regs.asq.load(Ordering::Acquire),
            acq: regs.acq.load(Ordering::Acquire),
            intms: regs.intms.load(Ordering::Acquire),
        },
        admin_sq: state.q.sqs[0].clone(),
        admin_cq: state.q.cqs[0].clone(),
        doorbells,
        reported_doorbells: (0..state.q.bad_doorbells.len())
            .filter_map(|doorbell| {
                Some(ReportedDoorbell {
                    doorbell: doorbell as u16,
                    value: reported(doorbell)?,
                })
            })
            .collect(),
        features: state.features.to_values(uptime),
        events: EventState {
            outstanding: state.aer.outstanding.iter().copied().collect(),
            queued: state.aer.queued.iter().copied().collect(),
            masked: state.aer.masked,
        },
        error_log: (errors.count, errors.entries.iter().copied().collect()),
        counters: crate::controller::total_counters(state, workers),
        power_on_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        namespaces: inner
            .attached()
            .map(|ns| NamespaceState {
                nsid: ns.nsid(),
                lbads: ns.block_size().shift(),
                blocks: ns.blocks(),
                identity: inner.namespace_identity(ns),
            })
            .collect(),
        shadow: state.q.shadow,
    };
    (nvmecs, vendor)
}

/// NVMECS v0 of I/O submission queue `sq`, whose tail doorbell holds `tail`: a tail beyond the
/// queue is invalid and fetches nothing, which NVMECS expresses as a tail equal to the head.
fn sq_state(sq: &SubmissionQueue, tail: u32) -> IoSqState {
    let tail = if tail < sq.size { tail } else { sq.head };
    IoSqState {
        prp1: sq.base,
        qsize: (sq.size - 1) as u16,
        qid: sq.qid,
        cqid: sq.cqid,
        attr: IoSqAttributes::new().with_pc(true).with_qprio(sq.priority),
        hp: sq.head as u16,
        tp: tail as u16,
        reserved: [0; 4],
    }
}

/// NVMECS v0 of I/O completion queue `cq`, whose head doorbell holds `head`: a head beyond the
/// queue is invalid and leaves the last valid one in force.
fn cq_state(cq: &CompletionQueue, head: u32) -> IoCqState {
    let head = if head < cq.size { head } else { cq.head };
    IoCqState {
        prp1: cq.base,
        qsize: (cq.size - 1) as u16,
        qid: cq.qid,
        hp: head as u16,
        tp: cq.tail as u16,
        attr: IoCqAttributes::new()
            .with_pc(true)
            .with_ien(cq.interrupts)
            .with_s0pt(cq.phase)
            .with_iv(cq.vector),
        reserved: [0; 4],
    }
}
