//! Taking the state of a controller: its I/O queues as NVMECS v0 and everything else as our
//! vendor-specific state, in a fixed order so the same state always gives the same bytes.

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
use super::vendor::VendorState;
use crate::controller::Inner;
use crate::controller::State;
use crate::controller::aer;

/// The state of `inner`, with its `state` held: NVMECS v0 (I/O queues) and our vendor state.
pub(crate) fn capture(inner: &Inner, state: &mut State) -> (NvmeControllerStateV0, VendorState) {
    // Events raised while suspended wait in `events`; they are part of the state.
    aer::collect_posted(inner, state);
    let db = &inner.doorbells;
    let sqs = state
        .sqs
        .iter()
        .skip(1)
        .flatten()
        .map(|sq| IoSqState {
            prp1: sq.base,
            qsize: (sq.size - 1) as u16,
            qid: sq.qid,
            cqid: sq.cqid,
            attr: IoSqAttributes::new().with_pc(true).with_qprio(sq.priority),
            hp: sq.head as u16,
            tp: db.sq_tail(sq.qid) as u16,
            reserved: [0; 4],
        })
        .collect();
    let cqs = state
        .cqs
        .iter()
        .skip(1)
        .flatten()
        .map(|cq| IoCqState {
            prp1: cq.base,
            qsize: (cq.size - 1) as u16,
            qid: cq.qid,
            hp: db.cq_head(cq.qid) as u16,
            tp: cq.tail as u16,
            attr: IoCqAttributes::new()
                .with_pc(true)
                .with_ien(cq.interrupts)
                .with_s0pt(cq.phase)
                .with_iv(cq.vector),
            reserved: [0; 4],
        })
        .collect();
    // At most 64 queues of each kind: always within NIOSQ/NIOCQ.
    let nvmecs = NvmeControllerStateV0::new(sqs, cqs).unwrap_or_default();
    let config = &inner.config;
    let regs = &inner.regs;
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
        admin_sq: state.sqs[0].clone(),
        admin_cq: state.cqs[0].clone(),
        doorbells: (0..=config.io_queue_pairs)
            .map(|qid| (db.sq_tail(qid), db.cq_head(qid)))
            .collect(),
        features: state.features.to_values(),
        events: EventState {
            outstanding: state.aer.outstanding.iter().copied().collect(),
            queued: state.aer.queued.iter().copied().collect(),
            masked: state.aer.masked,
        },
        error_log: (
            state.errors.count,
            state.errors.entries.iter().copied().collect(),
        ),
        counters: state.counters,
        namespaces: inner
            .attached()
            .map(|ns| NamespaceState {
                nsid: ns.nsid(),
                lbads: ns.block_size().shift(),
                blocks: ns.blocks(),
                identity: inner.namespace_identity(ns),
            })
            .collect(),
    };
    (nvmecs, vendor)
}
