//! Shadow doorbells: Doorbell Buffer Config (admin opcode 7Ch) and the EventIdx protocol.
//!
//! A host that finds Identify Controller OACS bit 8 set may give the controller two pages of
//! its memory: the shadow doorbell buffer (PRP1), where it writes every I/O submission queue
//! tail and completion queue head it would write to a doorbell register, and the EventIdx
//! buffer (PRP2), where the controller says which values are worth a register write. Both are
//! laid out like the doorbell registers: the entry of SQ `y` at `2y × (4 << CAP.DSTRD)`, of CQ
//! `y` one stride further. The admin queue keeps its registers (as Linux and SPDK have it).
//!
//! After writing a shadow value the host writes the register only if the new value passed the
//! queue's EventIdx (`(u16)(new − ei − 1) < (u16)(new − old)`, Linux's
//! `nvme_dbbuf_need_event`). That is what makes trapped doorbells cheap
//! ([`DoorbellDelivery::Trapped`](super::DoorbellDelivery::Trapped)): while a worker polls,
//! it keeps each EventIdx one entry behind the head it is about to reach — a submission queue's
//! before it starts the commands it fetched, a completion queue's as it reads the head, before
//! it posts — where no host value can pass it (a tail never passes a full queue, a head never
//! passes the completions posted), and the host writes nothing but memory. (An EventIdx left
//! where it was instead is passed once every lap of the queue, and set only after the
//! commands complete it is passed by the host's next update: with trapped doorbells a
//! message and a wake-up each time, which cut a 33-entry queue's IOPS to a third.) When it is
//! about to sleep it *arms* each submission queue, setting EventIdx to the tail it has
//! consumed, so the host's next submission writes the register and the trapped write wakes
//! it. Arming and the host's submission race like Dekker's flags — the host stores the shadow
//! tail, then loads EventIdx; the worker stores EventIdx, then loads the shadow tail — so with
//! a full fence on both sides at least one sees the other: the worker looks once more after
//! arming and sleeps only if the queue is still empty.
//!
//! Shadow values are guest memory: untrusted and possibly unmapped. A value out of range is an
//! invalid doorbell write, as for the registers; a buffer the host unmapped reads as "nothing
//! new" (the controller acts on the values it had) and a failed EventIdx write only costs the
//! host a register write it would have skipped.

use nvme_spec::command::Command;
use nvme_spec::status::Status;

use super::Inner;
use super::State;
use super::transfer::PAGE;
use crate::memory::DmaMemory;
use crate::prp::Segment;

/// Bytes between two doorbells: CAP.DSTRD is 0 on every controller of this crate.
const STRIDE: u64 = 4;

/// Where a host keeps its shadow doorbells and the controller its EventIdx values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowBuffers {
    /// Guest-physical base of the shadow doorbell buffer (PRP1), page aligned.
    pub doorbells: u64,
    /// Guest-physical base of the EventIdx buffer (PRP2), page aligned.
    pub event_indices: u64,
}

impl ShadowBuffers {
    /// Offset of the entry of queue `qid` (its CQ head entry if `cq`) in either buffer.
    fn offset(qid: u16, cq: bool) -> u64 {
        (2 * u64::from(qid) + u64::from(cq)) * STRIDE
    }

    /// The shadow value of queue `qid`'s SQ tail (`cq` false) or CQ head, if the buffer is
    /// mapped.
    pub(super) fn read(&self, mem: &dyn DmaMemory, qid: u16, cq: bool) -> Option<u32> {
        let mut word = [0u8; 4];
        let gpa = self.doorbells.checked_add(Self::offset(qid, cq))?;
        mem.read(gpa, &mut word).ok()?;
        Some(u32::from_le_bytes(word))
    }

    /// Writes the shadow value of queue `qid`'s SQ tail or CQ head (when the buffer is first
    /// configured, so it starts from the registers' values).
    fn write(&self, mem: &dyn DmaMemory, qid: u16, cq: bool, value: u32) -> bool {
        let Some(gpa) = self.doorbells.checked_add(Self::offset(qid, cq)) else {
            return false;
        };
        mem.write(gpa, &value.to_le_bytes()).is_ok()
    }

    /// Sets the EventIdx of queue `qid`'s SQ tail (`cq` false) or CQ head to `value`: the host
    /// writes that doorbell register once its value moves past it.
    pub(super) fn set_event(&self, mem: &dyn DmaMemory, qid: u16, cq: bool, value: u32) {
        if let Some(gpa) = self.event_indices.checked_add(Self::offset(qid, cq)) {
            let _ = mem.store_u32_release(gpa, value);
        }
    }

    /// Sets that EventIdx one entry behind `head` (modulo the queue's `size`), the head the
    /// polling worker is about to reach: no host value can pass it (a tail never passes a full
    /// queue, a head never passes the completions posted), so the host writes no register.
    pub(super) fn set_event_behind(
        &self,
        mem: &dyn DmaMemory,
        qid: u16,
        cq: bool,
        head: u32,
        size: u32,
    ) {
        self.set_event(mem, qid, cq, (head + size - 1) % size);
    }
}

/// Doorbell Buffer Config (7Ch): PRP1 the shadow doorbell buffer, PRP2 the EventIdx buffer,
/// both memory-page aligned and in guest memory the server maps (Invalid Field otherwise).
/// Every I/O queue from now on (existing ones too) uses the shadow values; the shadow entries
/// of existing queues first get the values their registers hold (as QEMU's controller does),
/// so a host that configures the buffers after creating queues loses nothing. Cleared by a
/// controller reset.
pub(super) fn config(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let buffers = ShadowBuffers {
        doorbells: cmd.prp1,
        event_indices: cmd.prp2,
    };
    if PAGE.offset(buffers.doorbells) != 0 || PAGE.offset(buffers.event_indices) != 0 {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    // Workers read the shadow buffer at every pass, and write EventIdx before each sleep: in
    // memory reached by messages (a client's without a file descriptor) that would be a
    // message per pass, even while the guest is idle. The host keeps its registers instead.
    let mapped = |gpa| {
        let page = [Segment {
            gpa,
            len: PAGE.bytes(),
        }];
        inner.mem.pin(&page, true, &mut |_, _| true).is_some()
    };
    if !mapped(buffers.doorbells) || !mapped(buffers.event_indices) {
        tracing::debug!(
            cntlid = inner.config.cntlid,
            "shadow doorbell buffers outside mapped guest memory: refused"
        );
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let mut workers = inner.lock_workers();
    let mem = inner.mem.as_ref();
    for w in workers.iter() {
        let sqs = w.q.sqs.iter().flatten().map(|sq| (sq.qid, false));
        let cqs = w.q.cqs.iter().flatten().map(|cq| (cq.qid, true));
        for (qid, cq) in sqs.chain(cqs) {
            if !buffers.write(mem, qid, cq, inner.doorbells.value(qid, cq)) {
                return Err(Status::DATA_TRANSFER_ERROR);
            }
        }
    }
    state.q.shadow = Some(buffers);
    for w in workers.iter_mut() {
        w.q.shadow = Some(buffers);
    }
    drop(workers);
    tracing::info!(
        cntlid = inner.config.cntlid,
        doorbells = buffers.doorbells,
        event_indices = buffers.event_indices,
        "the host configured shadow doorbells"
    );
    inner.kick();
    Ok(0)
}
