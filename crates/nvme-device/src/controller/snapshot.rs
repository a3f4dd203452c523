//! Capturing, validating and restoring the whole state of one controller for TP4159 Get/Set
//! Controller State: the I/O queues as NVMECS v0, everything else as our vendor-specific state.
//!
//! Every function runs with the controller's `state` held while it is suspended, so nothing
//! moves underneath. Capture is deterministic (queues in identifier order, events in queue
//! order), so save → restore → save gives the same bytes; the one exception is a Timestamp
//! feature the host set, which is saved as its current value and keeps counting after a restore,
//! as a clock must. Restore is two steps: [`validate`]
//! checks everything against the target controller and changes nothing; [`apply`] cannot fail.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nvme_spec::lm::IoCqAttributes;
use nvme_spec::lm::IoCqState;
use nvme_spec::lm::IoSqAttributes;
use nvme_spec::lm::IoSqState;
use nvme_spec::lm::NvmeControllerStateV0;

use super::Counters;
use super::Inner;
use super::State;
use super::aer;
use super::features::Features;
use super::log::ERROR_LOG_ENTRIES;
use crate::lm::vendor::CounterValues;
use crate::lm::vendor::EventState;
use crate::lm::vendor::Limits;
use crate::lm::vendor::NamespaceState;
use crate::lm::vendor::RegisterValues;
use crate::lm::vendor::VendorState;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// Largest admin queue (AQA.ASQS/ACQS are 12-bit, 0's based).
const MAX_ADMIN_ENTRIES: u32 = 4096;
/// Longest strings Identify Controller can report: SN, MN, FR, SUBNQN.
const MAX_SERIAL: usize = 20;
const MAX_MODEL: usize = 40;
const MAX_FIRMWARE: usize = 8;
const MAX_NQN: usize = 223;

/// Why a saved state cannot be restored into a controller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A queue identifier is 0, beyond the controller's queues, or used twice.
    #[error("{what} queue identifier {qid} is out of range 1..={max} or repeated")]
    QueueId {
        /// "submission" or "completion".
        what: &'static str,
        /// The identifier.
        qid: u16,
        /// The largest I/O queue identifier the target has.
        max: u16,
    },
    /// A queue field is invalid for the target.
    #[error("queue {qid}: {field} {value:#x} is invalid for this controller")]
    Queue {
        /// The queue.
        qid: u16,
        /// The field (size, base, head, tail, vector, attributes, completion queue).
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The vendor state's doorbells disagree with NVMECS.
    #[error("queue {qid}: NVMECS and vendor state disagree on the doorbells")]
    Doorbells {
        /// The queue.
        qid: u16,
    },
    /// The source controller's limits exceed the target's.
    #[error("the source's {field} {source_value} exceeds this controller's {target}")]
    Limit {
        /// The limit.
        field: &'static str,
        /// The source's value.
        source_value: u64,
        /// The target's value.
        target: u64,
    },
    /// A value in the vendor state is out of range.
    #[error("vendor state {field} {value} is out of range")]
    Value {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The namespaces differ.
    #[error("the source's namespaces {source_list:?} differ from this controller's {target:?}")]
    Namespaces {
        /// (NSID, LBADS, blocks) of the source.
        source_list: Vec<(u32, u8, u64)>,
        /// (NSID, LBADS, blocks) of the target.
        target: Vec<(u32, u8, u64)>,
    },
}

/// The state of `inner`, with its `state` held: NVMECS v0 (I/O queues) and our vendor state.
pub(crate) fn capture(inner: &Inner, state: &mut State) -> (NvmeControllerStateV0, VendorState) {
    // Events raised while suspended wait in `events`; they are part of the state.
    if inner.events_pending.swap(false, Ordering::AcqRel) {
        let events = std::mem::take(
            &mut *inner
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for event in events {
            state.aer.queue(event);
        }
    }
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
    let c = &state.counters;
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
        counters: CounterValues {
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
            read_commands: c.read_commands,
            write_commands: c.write_commands,
            media_errors: c.media_errors,
            error_count: c.error_count,
        },
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

fn queue_err(qid: u16, field: &'static str, value: impl Into<u64>) -> SnapshotError {
    SnapshotError::Queue {
        qid,
        field,
        value: value.into(),
    }
}

/// Checks a queue's size against `max_entries`, its base alignment, and that `positions` are
/// slots of the queue.
fn check_queue(
    qid: u16,
    base: u64,
    entries: u32,
    positions: [(&'static str, u32); 2],
    max_entries: u32,
) -> Result<(), SnapshotError> {
    if entries < 2 || entries > max_entries {
        return Err(queue_err(qid, "size", entries));
    }
    if base & 0xFFF != 0 || base == 0 {
        return Err(queue_err(qid, "base", base));
    }
    for (field, value) in positions {
        if value >= entries {
            return Err(queue_err(qid, field, value));
        }
    }
    Ok(())
}

/// Checks NVMECS v0 against `inner`: identifiers in range and unique, sizes within CAP.MQES,
/// every SQ's CQ present, vectors within the controller's, bases page aligned, positions within
/// the queue.
fn validate_nvmecs(inner: &Inner, nvmecs: &NvmeControllerStateV0) -> Result<(), SnapshotError> {
    let config = &inner.config;
    let max = config.io_queue_pairs;
    let mut cq_ids = HashSet::new();
    for cq in nvmecs.cqs() {
        if cq.qid == 0 || cq.qid > max || !cq_ids.insert(cq.qid) {
            return Err(SnapshotError::QueueId {
                what: "completion",
                qid: cq.qid,
                max,
            });
        }
        let attr = cq.attr;
        if !attr.pc() || attr.reserved() != 0 {
            return Err(queue_err(cq.qid, "attributes", u32::from(attr)));
        }
        if attr.iv() >= config.msix_vectors {
            return Err(queue_err(cq.qid, "interrupt vector", attr.iv()));
        }
        check_queue(
            cq.qid,
            cq.prp1,
            u32::from(cq.qsize) + 1,
            [("head", cq.hp.into()), ("tail", cq.tp.into())],
            config.max_queue_entries,
        )?;
    }
    let mut sq_ids = HashSet::new();
    for sq in nvmecs.sqs() {
        if sq.qid == 0 || sq.qid > max || !sq_ids.insert(sq.qid) {
            return Err(SnapshotError::QueueId {
                what: "submission",
                qid: sq.qid,
                max,
            });
        }
        if !sq.attr.pc() || sq.attr.reserved() != 0 {
            return Err(queue_err(sq.qid, "attributes", u16::from(sq.attr)));
        }
        if !cq_ids.contains(&sq.cqid) {
            return Err(queue_err(sq.qid, "completion queue", sq.cqid));
        }
        check_queue(
            sq.qid,
            sq.prp1,
            u32::from(sq.qsize) + 1,
            [("head", sq.hp.into()), ("tail", sq.tp.into())],
            config.max_queue_entries,
        )?;
    }
    Ok(())
}

fn limit(field: &'static str, source: u64, target: u64) -> Result<(), SnapshotError> {
    if source > target {
        return Err(SnapshotError::Limit {
            field,
            source_value: source,
            target,
        });
    }
    Ok(())
}

fn value_err(field: &'static str, value: impl Into<u64>) -> SnapshotError {
    SnapshotError::Value {
        field,
        value: value.into(),
    }
}

/// Checks the vendor state against `inner`: limits, identity strings, admin queues, features,
/// event and log sizes, and that the namespaces are the same.
fn validate_vendor(inner: &Inner, v: &VendorState) -> Result<(), SnapshotError> {
    let config = &inner.config;
    let l = &v.limits;
    limit(
        "io_queue_pairs",
        l.io_queue_pairs.into(),
        config.io_queue_pairs.into(),
    )?;
    limit(
        "max_queue_entries",
        l.max_queue_entries.into(),
        config.max_queue_entries.into(),
    )?;
    limit(
        "msix_vectors",
        l.msix_vectors.into(),
        config.msix_vectors.into(),
    )?;
    limit("mdts", l.mdts.into(), config.mdts.into())?;
    let id = &v.identity;
    for (field, s, max) in [
        ("serial", &id.serial, MAX_SERIAL),
        ("model", &id.model, MAX_MODEL),
        ("firmware", &id.firmware, MAX_FIRMWARE),
        ("nqn", &id.nqn, MAX_NQN),
    ] {
        if s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(value_err(field, s.len() as u64));
        }
    }
    match (&v.admin_sq, &v.admin_cq) {
        (Some(sq), Some(cq)) => {
            check_queue(
                0,
                sq.base,
                sq.size,
                [("head", sq.head), ("head", sq.head)],
                MAX_ADMIN_ENTRIES,
            )?;
            check_queue(
                0,
                cq.base,
                cq.size,
                [("tail", cq.tail), ("head", cq.head)],
                MAX_ADMIN_ENTRIES,
            )?;
            if cq.vector != 0 {
                return Err(queue_err(0, "interrupt vector", cq.vector));
            }
        }
        (None, None) => {}
        _ => return Err(value_err("admin queues", 1u8)),
    }
    if v.doorbells.len() > usize::from(config.io_queue_pairs) + 1 {
        return Err(value_err("doorbells", v.doorbells.len() as u64));
    }
    let f = &v.features;
    let max_qid = config.io_queue_pairs.saturating_sub(1);
    if f.queues.0 > max_qid || f.queues.1 > max_qid {
        return Err(value_err("number of queues", f.queues.0.max(f.queues.1)));
    }
    if f.coalescing_disabled.len() > usize::from(config.msix_vectors) {
        return Err(value_err(
            "coalescing disabled vectors",
            f.coalescing_disabled.len() as u64,
        ));
    }
    if v.events.outstanding.len() > aer::MAX_OUTSTANDING {
        return Err(value_err(
            "outstanding event requests",
            v.events.outstanding.len() as u64,
        ));
    }
    if v.events.queued.len() > aer::MAX_QUEUED {
        return Err(value_err("queued events", v.events.queued.len() as u64));
    }
    if v.error_log.1.len() > ERROR_LOG_ENTRIES {
        return Err(value_err("error log entries", v.error_log.1.len() as u64));
    }
    let key = |ns: &NamespaceState| (ns.nsid, ns.lbads, ns.blocks);
    let source: Vec<_> = v.namespaces.iter().map(key).collect();
    let target: Vec<_> = inner
        .attached()
        .map(|ns| (ns.nsid(), ns.block_size().shift(), ns.blocks()))
        .collect();
    if source != target {
        return Err(SnapshotError::Namespaces {
            source_list: source,
            target,
        });
    }
    Ok(())
}

/// Checks a saved state against controller `inner` without changing anything.
pub(crate) fn validate(
    inner: &Inner,
    nvmecs: Option<&NvmeControllerStateV0>,
    vendor: Option<&VendorState>,
) -> Result<(), SnapshotError> {
    if let Some(nvmecs) = nvmecs {
        validate_nvmecs(inner, nvmecs)?;
    }
    if let Some(v) = vendor {
        validate_vendor(inner, v)?;
        if let Some(nvmecs) = nvmecs {
            let doorbell = |qid: u16| v.doorbells.get(usize::from(qid)).copied();
            for sq in nvmecs.sqs() {
                if doorbell(sq.qid).map(|d| d.0) != Some(sq.tp.into()) {
                    return Err(SnapshotError::Doorbells { qid: sq.qid });
                }
            }
            for cq in nvmecs.cqs() {
                if doorbell(cq.qid).map(|d| d.1) != Some(cq.hp.into()) {
                    return Err(SnapshotError::Doorbells { qid: cq.qid });
                }
            }
        }
    }
    Ok(())
}

/// Makes controller `inner` take a state that [`validate`] accepted.
pub(crate) fn apply(
    inner: &Inner,
    state: &mut State,
    nvmecs: Option<&NvmeControllerStateV0>,
    vendor: Option<&VendorState>,
) {
    if let Some(v) = vendor {
        apply_vendor(inner, state, v);
    }
    if let Some(nvmecs) = nvmecs {
        let db = &inner.doorbells;
        state.sqs.iter_mut().skip(1).for_each(|q| *q = None);
        state.cqs.iter_mut().skip(1).for_each(|q| *q = None);
        for cq in nvmecs.cqs() {
            state.cqs[usize::from(cq.qid)] = Some(CompletionQueue {
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
            state.sqs[usize::from(sq.qid)] = Some(SubmissionQueue {
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
    state.irq_pending.iter_mut().for_each(|p| *p = false);
    state.bad_doorbells.iter_mut().for_each(|d| *d = None);
}

fn apply_vendor(inner: &Inner, state: &mut State, v: &VendorState) {
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
    state.sqs[0] = v.admin_sq.clone();
    state.cqs[0] = v.admin_cq.clone();
    inner.doorbells.clear();
    for (qid, &(sq_tail, cq_head)) in v.doorbells.iter().enumerate() {
        inner.doorbells.set_sq_tail(qid as u16, sq_tail);
        inner.doorbells.set_cq_head(qid as u16, cq_head);
    }
    state.features = Features::from_values(&v.features, &inner.config);
    // The target's own undelivered events are replaced by the source's.
    inner
        .events
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
    inner.events_pending.store(false, Ordering::Release);
    state.aer.outstanding = v.events.outstanding.iter().copied().collect();
    state.aer.queued = v.events.queued.iter().copied().collect();
    state.aer.masked = v.events.masked;
    state.errors.count = v.error_log.0;
    state.errors.entries = v.error_log.1.iter().copied().collect();
    let c = &v.counters;
    state.counters = Counters {
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        read_commands: c.read_commands,
        write_commands: c.write_commands,
        media_errors: c.media_errors,
        error_count: c.error_count,
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nvme_spec::lm::IoCqAttributes;
    use nvme_spec::lm::IoSqAttributes;
    use shmem::AddressSpace;

    use super::*;
    use crate::backend::NullBackend;
    use crate::controller::Controller;
    use crate::controller::ControllerConfig;
    use crate::controller::Role;
    use crate::controller::SubsystemIdentity;
    use crate::lm::vendor::tests::sample;
    use crate::namespace::BlockSize;
    use crate::namespace::Namespace;
    use crate::namespace::NamespaceIdentity;

    fn controller(blocks: u64) -> Controller {
        let mut config = ControllerConfig::new(2, Role::Secondary { vfn: 1 });
        config.io_queue_pairs = 4;
        config.max_queue_entries = 256;
        config.mdts = 5;
        config.msix_vectors = 5;
        let ns = Namespace::new(
            1,
            Arc::new(NullBackend::new(blocks * 4096)),
            BlockSize::B4096,
            true,
            NamespaceIdentity::derive("target", 1),
        )
        .unwrap();
        let identity = SubsystemIdentity {
            nqn: "nqn.target".to_owned(),
            serial: "TARGET".to_owned(),
            model: "m".to_owned(),
            firmware: "f".to_owned(),
        };
        Controller::new(
            config,
            Arc::new(identity),
            vec![Some(Arc::new(ns))],
            Arc::new(AddressSpace::new()),
        )
        .unwrap()
    }

    fn snapshot(c: &Controller) -> (NvmeControllerStateV0, VendorState) {
        capture(&c.inner, &mut c.inner.lock_state())
    }

    fn sq(qid: u16, cqid: u16, hp: u16, tp: u16) -> IoSqState {
        IoSqState {
            prp1: 0x10_0000 * u64::from(qid),
            qsize: 63,
            qid,
            cqid,
            attr: IoSqAttributes::new().with_pc(true).with_qprio(2),
            hp,
            tp,
            reserved: [0; 4],
        }
    }

    fn cq(qid: u16, hp: u16, tp: u16, iv: u16) -> IoCqState {
        IoCqState {
            prp1: 0x10_0000 * u64::from(qid) + 0x8000,
            qsize: 31,
            qid,
            hp,
            tp,
            attr: IoCqAttributes::new()
                .with_pc(true)
                .with_ien(true)
                .with_s0pt(false)
                .with_iv(iv),
            reserved: [0; 4],
        }
    }

    /// A source state that fits [`controller`]: two queue pairs and the vendor sample.
    fn source() -> (Vec<IoSqState>, Vec<IoCqState>, VendorState) {
        let mut vendor = sample();
        vendor.namespaces[0].blocks = 256;
        vendor.doorbells = vec![(5, 3), (7, 6), (1, 2), (0, 0), (0, 0)];
        // The Timestamp keeps counting after a restore, so a round trip compares equal only
        // without one (its encoding is covered by the vendor codec tests).
        vendor.features.timestamp = None;
        (
            vec![sq(1, 1, 4, 7), sq(2, 2, 0, 1)],
            vec![cq(1, 6, 9, 1), cq(2, 2, 3, 4)],
            vendor,
        )
    }

    fn nvmecs(sqs: &[IoSqState], cqs: &[IoCqState]) -> NvmeControllerStateV0 {
        NvmeControllerStateV0::new(sqs.to_vec(), cqs.to_vec()).unwrap()
    }

    #[test]
    fn save_restore_save_is_identical() {
        let (sqs, cqs, vendor) = source();
        let target = controller(256);
        let n = nvmecs(&sqs, &cqs);
        validate(&target.inner, Some(&n), Some(&vendor)).unwrap();
        apply(
            &target.inner,
            &mut target.inner.lock_state(),
            Some(&n),
            Some(&vendor),
        );
        let (n2, v2) = snapshot(&target);
        assert_eq!(n2, n);
        assert_eq!(v2.encode(), vendor.encode());
        // Identity and doorbells were adopted.
        assert_eq!(target.inner.identity().serial, "VFNVME-a");
        assert_eq!(target.doorbells().sq_tail(1), 7);
        assert_eq!(target.doorbells().cq_head(2), 2);
        let other = controller(256);
        apply(
            &other.inner,
            &mut other.inner.lock_state(),
            Some(&n2),
            Some(&v2),
        );
        assert_eq!(snapshot(&other).1.encode(), vendor.encode());
    }

    #[test]
    fn every_validation_failure_leaves_the_target_unchanged() {
        type Mutation = fn(&mut Vec<IoSqState>, &mut Vec<IoCqState>, &mut VendorState);
        let cases: Vec<(&str, Mutation)> = vec![
            ("CQ qid 0", |_, c, _| c[0].qid = 0),
            ("CQ qid repeated", |_, c, _| c[1].qid = 1),
            ("CQ qid beyond the queues", |_, c, _| c[1].qid = 5),
            ("CQ larger than MQES", |_, c, _| c[0].qsize = 256),
            ("CQ vector", |_, c, _| c[0].attr = c[0].attr.with_iv(5)),
            ("CQ base", |_, c, _| c[0].prp1 += 8),
            ("CQ head", |_, c, _| c[0].hp = 32),
            ("CQ not contiguous", |_, c, _| {
                c[0].attr = c[0].attr.with_pc(false)
            }),
            ("SQ without CQ", |s, _, _| s[1].cqid = 3),
            ("SQ qid repeated", |s, _, _| s[1].qid = 1),
            ("SQ tail", |s, _, _| s[0].tp = 64),
            ("SQ attributes", |s, _, _| {
                s[0].attr = s[0].attr.with_reserved(1)
            }),
            ("doorbells disagree", |_, _, v| v.doorbells[1].0 = 8),
            ("queue pairs", |_, _, v| v.limits.io_queue_pairs = 5),
            ("MQES", |_, _, v| v.limits.max_queue_entries = 512),
            ("vectors", |_, _, v| v.limits.msix_vectors = 6),
            ("MDTS", |_, _, v| v.limits.mdts = 6),
            ("serial", |_, _, v| v.identity.serial = "x".repeat(21)),
            ("model", |_, _, v| v.identity.model = "\u{7}".to_owned()),
            ("admin SQ alone", |_, _, v| v.admin_cq = None),
            ("admin CQ vector", |_, _, v| {
                if let Some(cq) = &mut v.admin_cq {
                    cq.vector = 1;
                }
            }),
            ("admin SQ head", |_, _, v| {
                if let Some(sq) = &mut v.admin_sq {
                    sq.head = sq.size;
                }
            }),
            ("doorbell count", |_, _, v| v.doorbells.resize(6, (0, 0))),
            ("number of queues", |_, _, v| v.features.queues = (4, 0)),
            ("coalescing vectors", |_, _, v| {
                v.features.coalescing_disabled.push(false)
            }),
            ("outstanding AERs", |_, _, v| {
                v.events.outstanding = vec![1; 5]
            }),
            ("queued events", |_, _, v| {
                v.events.queued = vec![crate::controller::AsyncEvent::invalid_doorbell(); 65]
            }),
            ("error log", |_, _, v| {
                let entry = v.error_log.1[0];
                v.error_log.1 = vec![entry; 65];
            }),
            ("namespace size", |_, _, v| v.namespaces[0].blocks = 255),
            ("namespace block size", |_, _, v| v.namespaces[0].lbads = 9),
            ("namespace missing", |_, _, v| v.namespaces.clear()),
        ];
        let target = controller(256);
        let before = snapshot(&target);
        for (name, mutate) in cases {
            let (mut sqs, mut cqs, mut vendor) = source();
            mutate(&mut sqs, &mut cqs, &mut vendor);
            let n = nvmecs(&sqs, &cqs);
            // What the wire carries must survive the codec, then fail validation.
            let vendor = VendorState::decode(&vendor.encode()).unwrap();
            let result = validate(&target.inner, Some(&n), Some(&vendor));
            assert!(result.is_err(), "{name} was accepted");
            assert_eq!(snapshot(&target), before, "{name} changed the target");
        }
        let (sqs, cqs, vendor) = source();
        validate(&target.inner, Some(&nvmecs(&sqs, &cqs)), Some(&vendor)).unwrap();
        // The error names the field.
        let (mut sqs, cqs, vendor) = source();
        sqs[1].cqid = 3;
        let err = validate(&target.inner, Some(&nvmecs(&sqs, &cqs)), Some(&vendor)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "queue 2: completion queue 0x3 is invalid for this controller"
        );
        let small = controller(128);
        assert!(matches!(
            validate(&small.inner, None, Some(&vendor)),
            Err(SnapshotError::Namespaces { .. })
        ));
    }

    #[test]
    fn nvmecs_alone_replaces_only_the_io_queues() {
        let (sqs, cqs, _) = source();
        let target = controller(256);
        let (_, vendor_before) = snapshot(&target);
        let n = nvmecs(&sqs[..1], &cqs[..1]);
        validate(&target.inner, Some(&n), None).unwrap();
        apply(
            &target.inner,
            &mut target.inner.lock_state(),
            Some(&n),
            None,
        );
        let (n2, vendor_after) = snapshot(&target);
        assert_eq!(n2, n);
        assert_eq!(vendor_after.identity, vendor_before.identity);
        assert_eq!(vendor_after.registers, vendor_before.registers);
        assert_eq!(target.doorbells().sq_tail(1), 7);
        assert_eq!(target.doorbells().cq_head(1), 6);
    }
}
