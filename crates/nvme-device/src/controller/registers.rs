//! The register file in BAR0: reads, writes and their side effects (enable, reset, shutdown).

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use nvme_spec::registers::Aqa;
use nvme_spec::registers::Cap;
use nvme_spec::registers::CapCss;
use nvme_spec::registers::Cc;
use nvme_spec::registers::Csts;
use nvme_spec::registers::Register;
use nvme_spec::registers::ShutdownNotification;
use nvme_spec::registers::ShutdownStatus;
use nvme_spec::registers::Vs;

use super::Inner;
use super::Role;
use super::State;
use super::worker;
use super::worker::Drain;
use super::worker::Worker;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// The NVMe version the controller reports.
pub(crate) const VERSION: Vs = Vs::V2_0;

/// Worst-case time from CC.EN = 1 to CSTS.RDY = 1, in 500 ms units (CAP.TO).
const READY_TIMEOUT: u8 = 30;

/// The Controller Capabilities register for `inner`'s configuration.
pub(crate) fn cap(inner: &Inner) -> Cap {
    Cap::new()
        .with_mqes((inner.config.max_queue_entries - 1) as u16)
        .with_cqr(true)
        .with_to(READY_TIMEOUT)
        .with_dstrd(0)
        .with_css(CapCss::new().with_nvm(true))
        .with_mpsmin(0)
        .with_mpsmax(0)
}

/// Reads `size` bytes at `offset`. An offline secondary controller reads as QEMU's model does:
/// CSTS has CFS set and everything else, CAP included, is zero.
pub(super) fn read(inner: &Inner, offset: u64, size: u8) -> u64 {
    if inner.offered.offline() {
        return match (Register(offset), size) {
            (Register::CSTS, 4) => u64::from(u32::from(Csts::new().with_cfs(true))),
            _ => 0,
        };
    }
    if offset >= Register::DOORBELLS.0 {
        return u64::from(inner.doorbells.read_offset(offset - Register::DOORBELLS.0));
    }
    let regs = &inner.regs;
    // Each register as (offset, width in bytes, value).
    let value64 = |reg: Register| -> Option<u64> {
        Some(match reg {
            Register::CAP => cap(inner).into(),
            Register::ASQ => regs.asq.load(Ordering::Acquire),
            Register::ACQ => regs.acq.load(Ordering::Acquire),
            _ => return None,
        })
    };
    let base = offset & !7;
    if let Some(v) = value64(Register(base)) {
        return match (size, offset - base) {
            (8, 0) => v,
            (4, 0) => v & 0xFFFF_FFFF,
            (4, 4) => v >> 32,
            _ => 0,
        };
    }
    if size != 4 || !offset.is_multiple_of(4) {
        return 0;
    }
    u64::from(match Register(offset) {
        Register::VS => VERSION.into(),
        Register::INTMS | Register::INTMC => regs.intms.load(Ordering::Acquire),
        Register::CC => regs.cc.load(Ordering::Acquire),
        Register::CSTS => regs.csts.load(Ordering::Acquire),
        Register::AQA => regs.aqa.load(Ordering::Acquire),
        _ => 0,
    })
}

/// Writes `size` bytes of `value` at `offset`; an offline secondary controller ignores every
/// write (so CC.EN never brings it up).
pub(super) fn write(inner: &Inner, offset: u64, size: u8, value: u64) {
    if inner.offered.offline() {
        return;
    }
    if offset >= Register::DOORBELLS.0 {
        inner
            .doorbells
            .write_offset(offset - Register::DOORBELLS.0, value as u32);
        inner.doorbell_written(offset - Register::DOORBELLS.0);
        return;
    }
    let regs = &inner.regs;
    let set_half = |reg: &std::sync::atomic::AtomicU64, high: bool, v: u64| {
        let old = reg.load(Ordering::Acquire);
        let new = if high {
            (old & 0xFFFF_FFFF) | (v << 32)
        } else {
            (old & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
        };
        reg.store(new, Ordering::Release);
    };
    match (Register(offset & !7), size, offset & 7) {
        (Register::ASQ, 8, 0) => return regs.asq.store(value, Ordering::Release),
        (Register::ACQ, 8, 0) => return regs.acq.store(value, Ordering::Release),
        (Register::ASQ, 4, half @ (0 | 4)) => return set_half(&regs.asq, half == 4, value),
        (Register::ACQ, 4, half @ (0 | 4)) => return set_half(&regs.acq, half == 4, value),
        _ => {}
    }
    if size != 4 {
        return;
    }
    let value = value as u32;
    match Register(offset) {
        Register::INTMS => {
            regs.intms.fetch_or(value, Ordering::AcqRel);
        }
        Register::INTMC => {
            regs.intms.fetch_and(!value, Ordering::AcqRel);
        }
        Register::AQA => regs.aqa.store(value, Ordering::Release),
        Register::CC => write_cc(inner, Cc::from(value)),
        // NSSR is not supported (CAP.NSSRS = 0); everything else is read-only or reserved.
        _ => {}
    }
}

/// Applies a write to CC: enable, disable (controller reset) and shutdown notifications.
fn write_cc(inner: &Inner, new: Cc) {
    let old = inner.cc();
    inner.regs.cc.store(new.into(), Ordering::Release);
    if old.en() && !new.en() {
        controller_reset(inner);
        return;
    }
    if !old.en() && new.en() {
        enable(inner, new);
    }
    if new.shn() != ShutdownNotification::NONE && old.shn() == ShutdownNotification::NONE {
        // Complete what is in flight, make every completed write durable, then report the
        // shutdown complete.
        for mut w in inner.lock_workers() {
            worker::drain(inner, &mut w, Drain::Post);
        }
        for ns in inner.attached() {
            let _ = ns.backend().flush();
        }
        inner.set_csts(inner.csts().with_shst(ShutdownStatus::COMPLETE));
    }
}

/// CC.EN 0 → 1: validate the admin queue registers and bring the admin queues up.
fn enable(inner: &Inner, cc: Cc) {
    let aqa = Aqa::from(inner.regs.aqa.load(Ordering::Acquire));
    let asq = inner.regs.asq.load(Ordering::Acquire);
    let acq = inner.regs.acq.load(Ordering::Acquire);
    let valid = cc.mps() == 0
        && aqa.asqs() >= 1
        && aqa.acqs() >= 1
        && asq & 0xFFF == 0
        && acq & 0xFFF == 0
        && asq != 0
        && acq != 0;
    if !valid {
        inner.set_csts(inner.csts().with_cfs(true));
        return;
    }
    {
        let mut state = inner.lock_state();
        state.q.queue_counters[0] = super::status::QueueCounters::default();
        state.q.sqs[0] = Some(SubmissionQueue {
            qid: 0,
            cqid: 0,
            base: asq,
            size: u32::from(aqa.sq_entries()),
            head: 0,
            priority: 0,
        });
        state.q.cqs[0] = Some(CompletionQueue {
            qid: 0,
            base: acq,
            size: u32::from(aqa.cq_entries()),
            tail: 0,
            phase: true,
            head: 0,
            vector: 0,
            interrupts: true,
        });
        inner.doorbells.set_sq_tail(0, 0);
        inner.doorbells.set_cq_head(0, 0);
    }
    inner.set_csts(Csts::new().with_rdy(true).with_shst(ShutdownStatus::NORMAL));
    inner.kick();
}

/// Clears everything a controller reset clears, with `state` and every worker held: commands
/// in flight are waited for and their completions discarded (see `worker`), then every queue
/// goes.
pub(super) fn clear_queues(
    inner: &Inner,
    state: &mut State,
    workers: &mut [MutexGuard<'_, Worker>],
) {
    for w in workers.iter_mut() {
        worker::drain(inner, w, Drain::Discard);
        w.q.clear();
    }
    state.q.clear();
    state.features = super::features::Features::new(&inner.config, inner.offered_queue_pairs());
    state.aer.clear();
    inner.doorbells.clear();
}

/// CC.EN 1 → 0: delete every queue, drop outstanding asynchronous event requests, return
/// features to their defaults and report not ready. A TP4159 suspension stays: only a
/// function-level reset lifts it.
///
/// TP4159: a primary controller also deletes every Controller Data Queue it created and drops
/// the Set Controller State transfers it was collecting; for a secondary controller, a transfer
/// its primary was collecting for it no longer applies (the reset count moves on, see
/// `lm::migration`).
///
/// SR-IOV: the PCI function of a primary controller takes the flexible resources allocated to
/// it since the last reset; queue counts start from what the controller offers.
pub(super) fn controller_reset(inner: &Inner) {
    if let Some(link) = inner.sriov() {
        link.reset_port(&inner.offered);
    }
    {
        let mut state = inner.lock_state();
        let mut workers = inner.lock_workers();
        inner.resets.fetch_add(1, Ordering::AcqRel);
        clear_queues(inner, &mut state, &mut workers);
        drop(workers);
        if inner.config.role == Role::Primary {
            state.lm.reset(inner);
        }
    }
    inner.set_csts(Csts::new());
}

/// A function-level reset: a controller reset plus every register back to its reset value. It
/// is the function's power cycle, and an unsafe shutdown if the controller was enabled and had
/// not completed a shutdown (SMART / Health counts both).
pub(super) fn function_reset(inner: &Inner) {
    let unsafe_shutdown = inner.cc().en() && inner.csts().shst() != ShutdownStatus::COMPLETE;
    controller_reset(inner);
    {
        let counters = &mut inner.lock_state().q.counters;
        counters.power_cycles += 1;
        counters.unsafe_shutdowns += u64::from(unsafe_shutdown);
    }
    // Only a function-level reset lifts a TP4159 suspension. A guest that toggles CC.EN while
    // its controller is suspended for migration must not restart it behind the migration
    // driver's back: the controller comes back ready, but fetches nothing until Resume.
    inner.set_suspended(false);
    let regs = &inner.regs;
    regs.cc.store(0, Ordering::Release);
    regs.aqa.store(0, Ordering::Release);
    regs.asq.store(0, Ordering::Release);
    regs.acq.store(0, Ordering::Release);
    regs.intms.store(0, Ordering::Release);
    regs.csts.store(0, Ordering::Release);
}
