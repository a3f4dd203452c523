//! Checking a saved state against the controller that is to take it, changing nothing: every
//! queue, limit, identity string, feature, list length and the namespaces; [`SnapshotError`]
//! names what does not fit.

use std::collections::HashSet;

use nvme_spec::lm::NvmeControllerStateV0;

use super::vendor::NamespaceState;
use super::vendor::VendorState;
use crate::controller::Inner;
use crate::controller::aer;
use crate::controller::log::ERROR_LOG_ENTRIES;

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

fn queue_err(qid: u16, field: &'static str, value: impl Into<u64>) -> SnapshotError {
    SnapshotError::Queue {
        qid,
        field,
        value: value.into(),
    }
}

/// Checks that I/O queue identifier `qid` is in 1..=`max` and not in `seen`, and adds it.
fn new_qid(
    what: &'static str,
    qid: u16,
    max: u16,
    seen: &mut HashSet<u16>,
) -> Result<(), SnapshotError> {
    if qid == 0 || qid > max || !seen.insert(qid) {
        return Err(SnapshotError::QueueId { what, qid, max });
    }
    Ok(())
}

/// Checks a queue's size against `max_entries`, its base alignment (page aligned; guest
/// address 0 is a valid I/O queue base, as Create I/O SQ/CQ accepts it), and that `positions`
/// are slots of the queue.
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
    // Enabling the controller refuses an admin queue at 0 (CSTS.CFS), so one never exists.
    if base & 0xFFF != 0 || (qid == 0 && base == 0) {
        return Err(queue_err(qid, "base", base));
    }
    for (field, value) in positions {
        if value >= entries {
            return Err(queue_err(qid, field, value));
        }
    }
    Ok(())
}

/// [`check_queue`] for an I/O queue as NVMECS v0 describes it: a 0's based size, and head and
/// tail pointers.
fn check_io_queue(
    qid: u16,
    base: u64,
    qsize: u16,
    (head, tail): (u16, u16),
    max_entries: u32,
) -> Result<(), SnapshotError> {
    let positions = [("head", head.into()), ("tail", tail.into())];
    check_queue(qid, base, u32::from(qsize) + 1, positions, max_entries)
}

/// Checks NVMECS v0 against `inner`: identifiers in range (of the queue pairs the controller
/// offers) and unique, sizes within CAP.MQES, every SQ's CQ present, vectors within those the
/// controller offers, bases page aligned, positions within the queue.
fn validate_nvmecs(inner: &Inner, nvmecs: &NvmeControllerStateV0) -> Result<(), SnapshotError> {
    let config = &inner.config;
    let max = inner.offered_queue_pairs();
    let mut cq_ids = HashSet::new();
    for cq in nvmecs.cqs() {
        new_qid("completion", cq.qid, max, &mut cq_ids)?;
        let attr = cq.attr;
        if !attr.pc() || attr.reserved() != 0 {
            return Err(queue_err(cq.qid, "attributes", u32::from(attr)));
        }
        if attr.iv() >= inner.offered_vectors() {
            return Err(queue_err(cq.qid, "interrupt vector", attr.iv()));
        }
        check_io_queue(
            cq.qid,
            cq.prp1,
            cq.qsize,
            (cq.hp, cq.tp),
            config.max_queue_entries,
        )?;
    }
    let mut sq_ids = HashSet::new();
    for sq in nvmecs.sqs() {
        new_qid("submission", sq.qid, max, &mut sq_ids)?;
        if !sq.attr.pc() || sq.attr.reserved() != 0 {
            return Err(queue_err(sq.qid, "attributes", u16::from(sq.attr)));
        }
        if !cq_ids.contains(&sq.cqid) {
            return Err(queue_err(sq.qid, "completion queue", sq.cqid));
        }
        check_io_queue(
            sq.qid,
            sq.prp1,
            sq.qsize,
            (sq.hp, sq.tp),
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
    for (field, source, target) in [
        (
            "io_queue_pairs",
            l.io_queue_pairs.into(),
            config.io_queue_pairs.into(),
        ),
        (
            "max_queue_entries",
            l.max_queue_entries.into(),
            config.max_queue_entries.into(),
        ),
        (
            "msix_vectors",
            l.msix_vectors.into(),
            config.msix_vectors.into(),
        ),
        ("mdts", l.mdts.into(), config.mdts.into()),
    ] {
        limit(field, source, target)?;
    }
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
    if let Some(shadow) = v.shadow {
        for (field, base) in [
            ("shadow doorbell buffer", shadow.doorbells),
            ("EventIdx buffer", shadow.event_indices),
        ] {
            if base & 0xFFF != 0 {
                return Err(value_err(field, base));
            }
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
    let queues = usize::from(config.io_queue_pairs) + 1;
    if v.doorbells.len() > queues {
        return Err(value_err("doorbells", v.doorbells.len() as u64));
    }
    let mut previous = None;
    for d in &v.reported_doorbells {
        if usize::from(d.doorbell) >= 2 * queues || previous.is_some_and(|p| p >= d.doorbell) {
            return Err(value_err("reported doorbell", d.doorbell));
        }
        previous = Some(d.doorbell);
    }
    let f = &v.features;
    let max_qid = inner.offered_queue_pairs().saturating_sub(1);
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

/// Checks that the doorbells as written (vendor state) agree with the ones NVMECS says the
/// controller acts on: equal where the written value is valid; where it is beyond the queue, an
/// SQ tail acts as the head and a CQ head leaves any valid head in force.
fn validate_doorbells(
    v: &VendorState,
    nvmecs: &NvmeControllerStateV0,
) -> Result<(), SnapshotError> {
    let doorbell = |qid: u16| v.doorbells.get(usize::from(qid)).copied();
    for sq in nvmecs.sqs() {
        let Some((tail, _)) = doorbell(sq.qid) else {
            return Err(SnapshotError::Doorbells { qid: sq.qid });
        };
        let acted_on = if tail <= u32::from(sq.qsize) {
            tail
        } else {
            sq.hp.into()
        };
        if acted_on != u32::from(sq.tp) {
            return Err(SnapshotError::Doorbells { qid: sq.qid });
        }
    }
    for cq in nvmecs.cqs() {
        let Some((_, head)) = doorbell(cq.qid) else {
            return Err(SnapshotError::Doorbells { qid: cq.qid });
        };
        if head <= u32::from(cq.qsize) && head != u32::from(cq.hp) {
            return Err(SnapshotError::Doorbells { qid: cq.qid });
        }
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
            validate_doorbells(v, nvmecs)?;
        }
    }
    Ok(())
}
