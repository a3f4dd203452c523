//! Controller Data Queues (45h), Feature 21h and Track Send (3Dh): User Data Migration Queues
//! that the primary controller creates in its own host memory and into which a secondary
//! controller logs the LBA ranges it changes.
//!
//! A [`Cdq`] is shared by the primary controller (which lists it in its [`PrimaryLm`]) and the
//! secondary controller it logs (whose [`LbaLog`] points at it). The ring sits behind the CDQ's
//! own lock, a leaf lock: the secondary's poller appends the entries it collected during a pass
//! once at the end of the pass, without touching the primary's `state`; events the ring raises
//! (full, tail pointer trigger) go to the primary through its event list, also a leaf lock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;

use nvme_spec::command::Command;
use nvme_spec::features::AsyncEventInfoOneShot;
use nvme_spec::features::AsyncEventType;
use nvme_spec::lm::CdqFeatureData;
use nvme_spec::lm::CreateCdq;
use nvme_spec::lm::DeleteCdq;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::GetCdqFeature;
use nvme_spec::lm::LbaMigrationQueueEntry;
use nvme_spec::lm::LogUserDataChanges;
use nvme_spec::lm::LoggingAction;
use nvme_spec::lm::QueueType;
use nvme_spec::lm::SetCdqFeature;
use nvme_spec::log::LogPageId;
use nvme_spec::status::Status;
use zerocopy::IntoBytes;

use super::decode;
use super::ring::ENTRY_BYTES;
use super::ring::Raised;
use super::ring::Ring;
use super::target;
use crate::controller::AsyncEvent;
use crate::controller::Inner;
use crate::controller::State;
use crate::memory::DmaMemory;

/// Smallest CDQSIZE (dwords) accepted: one 32-byte entry. Sizes must be a multiple of it.
const MIN_CDQ_DWORDS: u32 = 8;

/// One Controller Data Queue of type User Data Migration Queue.
pub(crate) struct Cdq {
    /// CDQID, unique among the primary controller's CDQs.
    pub id: u16,
    /// CNTLID of the secondary controller whose changes are logged.
    pub target: u16,
    /// The primary controller, which receives the CDQ's asynchronous events.
    owner: Weak<Inner>,
    /// The primary controller's host memory, where the ring lives.
    mem: Arc<dyn DmaMemory>,
    ring: Mutex<Ring>,
}

impl std::fmt::Debug for Cdq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdq")
            .field("id", &self.id)
            .field("target", &self.target)
            .finish()
    }
}

impl Cdq {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `entries` under the ring's lock, then reports what they raised to the owner.
    fn append(&self, entries: &[LbaMigrationQueueEntry]) {
        let mut raised = Raised::default();
        {
            let mut ring = self.ring();
            for entry in entries {
                match ring.push(self.mem.as_ref(), *entry) {
                    Ok(r) => raised = raised.merge(r),
                    // The host unmapped its ring: the entries are lost, as they would be on
                    // hardware whose DMA faults. The host sees the missing markers.
                    Err(_) => break,
                }
            }
        }
        self.raise(raised);
    }

    /// Posts a marker entry (no range) with sequence attribute `esa`.
    fn marker(&self, esa: EntrySequence) {
        if let Ok(entry) = LbaMigrationQueueEntry::marker(esa, false) {
            self.append(&[entry]);
        }
    }

    /// Sends the asynchronous events `raised` to the owning primary controller.
    fn raise(&self, raised: Raised) {
        let Some(owner) = self.owner.upgrade() else {
            return;
        };
        for (happened, info) in [
            (
                raised.tail_trigger,
                AsyncEventInfoOneShot::CDQ_TAIL_POINTER_TRIGGER,
            ),
            (raised.full, AsyncEventInfoOneShot::CDQ_FULL),
        ] {
            if happened {
                owner.post_event(AsyncEvent {
                    event_type: AsyncEventType::ONE_SHOT,
                    info: info.0,
                    log_page: LogPageId(0),
                    dw1: u32::from(self.id),
                });
            }
        }
    }
}

/// A secondary controller's side of LBA change logging, kept in its `State`: the queue it logs
/// to, whether logging is on, and the entries collected during the current pass.
#[derive(Debug, Default)]
pub(crate) struct LbaLog {
    udmq: Option<Arc<Cdq>>,
    active: bool,
    /// Entries collected during the current pass; the buffer is reused from pass to pass.
    pending: Vec<LbaMigrationQueueEntry>,
}

impl LbaLog {
    /// Records a change of `nlb` + 1 blocks at `slba` of namespace `nsid` if logging is on; one
    /// branch when it is off.
    #[inline]
    pub fn record(&mut self, nsid: u32, slba: u64, nlb: u32, deallocated: bool) {
        if self.active {
            self.pending.push(LbaMigrationQueueEntry::range(
                nsid,
                slba,
                nlb,
                deallocated,
                false,
            ));
        }
    }

    /// Appends the collected entries to the queue (end of a pass, and Suspend).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(udmq) = &self.udmq {
            udmq.append(&self.pending);
        }
        self.pending.clear();
    }

    /// The queue this controller logs to.
    pub fn udmq(&self) -> Option<&Arc<Cdq>> {
        self.udmq.as_ref()
    }

    /// Whether logging is on.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Posts a marker to the queue, if there is one.
    pub fn marker(&self, esa: EntrySequence) {
        if let Some(udmq) = &self.udmq {
            udmq.marker(esa);
        }
    }

    /// Detaches the queue `cdqid` (deleted): logging stops.
    pub fn detach(&mut self, cdqid: u16) {
        if self.udmq.as_ref().is_some_and(|q| q.id == cdqid) {
            self.flush();
            self.udmq = None;
            self.active = false;
        }
    }
}

/// TP4159 state a primary controller keeps in its `State`.
#[derive(Debug, Default)]
pub(crate) struct PrimaryLm {
    /// The CDQs this controller created.
    pub cdqs: Vec<Arc<Cdq>>,
    /// Set Controller State transfers in progress, per target CNTLID.
    pub incoming: Vec<(u16, super::migration::Incoming)>,
}

impl PrimaryLm {
    fn find(&self, cdqid: u16) -> Result<&Arc<Cdq>, Status> {
        self.cdqs
            .iter()
            .find(|q| q.id == cdqid)
            .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)
    }
}

/// Removes CDQ `cdqid` from `lm` and stops the logging into it. With the primary's `state` held.
fn delete(inner: &Inner, lm: &mut PrimaryLm, cdqid: u16) -> Result<(), Status> {
    let index = lm
        .cdqs
        .iter()
        .position(|q| q.id == cdqid)
        .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)?;
    let cdq = lm.cdqs.remove(index);
    if let Some(vf) = inner.secondary(cdq.target) {
        vf.lock_state().lba_log.detach(cdqid);
    }
    Ok(())
}

/// Deletes every CDQ the primary controller created (its controller reset).
pub(crate) fn delete_all(inner: &Inner, state: &mut State) {
    while let Some(id) = state.lm.cdqs.first().map(|q| q.id) {
        let _ = delete(inner, &mut state.lm, id);
    }
}

/// Deletes the UDMQ that logs `vf` (Suspend with DUDMQ), with the primary's `state` and then the
/// secondary's `vf_state` held.
pub(crate) fn delete_udmq_of(lm: &mut PrimaryLm, vf_state: &mut State) {
    if let Some(id) = vf_state.lba_log.udmq().map(|q| q.id) {
        vf_state.lba_log.detach(id);
        lm.cdqs.retain(|q| q.id != id);
    }
}

/// Controller Data Queue (45h): Create or Delete.
pub(crate) fn controller_data_queue(
    inner: &Inner,
    state: &mut State,
    cmd: &Command,
) -> Result<u32, Status> {
    match nvme_spec::lm::CdqSelect(nvme_spec::lm::LmCdw10::from(cmd.cdw10).sel()) {
        nvme_spec::lm::CdqSelect::CREATE => create(inner, state, cmd),
        nvme_spec::lm::CdqSelect::DELETE => {
            let op = decode::<DeleteCdq>(cmd)?;
            delete(inner, &mut state.lm, op.cdqid)?;
            Ok(0)
        }
        _ => Err(Status::INVALID_FIELD_IN_COMMAND),
    }
}

fn create(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<CreateCdq>(cmd)?;
    if op.qt != QueueType::USER_DATA_MIGRATION_QUEUE
        || !op.pc
        || op.cdqsize < MIN_CDQ_DWORDS
        || !op.cdqsize.is_multiple_of(MIN_CDQ_DWORDS)
        || op.prp1 & 0xFFF != 0
    {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let vf = target(inner, op.cqs)?;
    let slots = op.cdqsize / MIN_CDQ_DWORDS;
    // The whole ring must be in the primary's host memory.
    let last = op.prp1 + u64::from(slots - 1) * ENTRY_BYTES;
    let mut probe = [0u8; 1];
    if inner.mem.read(op.prp1, &mut probe).is_err()
        || inner.mem.read(last + ENTRY_BYTES - 1, &mut probe).is_err()
    {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let id = (1..=u16::MAX)
        .find(|id| state.lm.cdqs.iter().all(|q| q.id != *id))
        .ok_or(Status::NOT_ENOUGH_RESOURCES)?;
    let mut vf_state = vf.lock_state();
    if vf_state.lba_log.udmq.is_some() {
        // One User Data Migration Queue per controller.
        return Err(Status::NOT_ENOUGH_RESOURCES);
    }
    let cdq = Arc::new(Cdq {
        id,
        target: op.cqs,
        owner: inner.weak_self(),
        mem: inner.mem.clone(),
        ring: Mutex::new(Ring::new(op.prp1, slots.max(2))),
    });
    vf_state.lba_log.udmq = Some(cdq.clone());
    vf_state.lba_log.active = false;
    drop(vf_state);
    state.lm.cdqs.push(cdq);
    Ok(u32::from(id))
}

/// Track Send (3Dh), SEL 0: start or stop logging into a UDMQ.
pub(crate) fn track_send(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<LogUserDataChanges>(cmd)?;
    let start = match op.lact {
        LoggingAction::START => true,
        LoggingAction::STOP => false,
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    };
    let cdq = state.lm.find(op.cdqid)?;
    let vf = inner
        .secondary(cdq.target)
        .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)?;
    if vf.is_suspended() {
        return Err(Status::CONTROLLER_SUSPENDED);
    }
    let mut vf_state = vf.lock_state();
    let log = &mut vf_state.lba_log;
    if log.active != start {
        log.flush();
        log.active = start;
        log.marker(if start {
            EntrySequence::FIRST
        } else {
            EntrySequence::LAST_STOPPED
        });
    }
    Ok(0)
}

/// Set Features 21h: move a CDQ's head pointer and arm or disarm its tail pointer trigger.
pub(crate) fn set_feature(state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<SetCdqFeature>(cmd)?;
    if nvme_spec::command::SetFeaturesCdw10::from(cmd.cdw10).sv() {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    let cdq = state.lm.find(op.cdqid)?;
    cdq.ring()
        .set_head(op.hp, op.etpt, op.tpt)
        .map_err(|_| Status::INVALID_FIELD_IN_COMMAND)?;
    Ok(0)
}

/// Get Features 21h: DW0 = CDQID | ETPT << 31, data = {HP, TPT}.
pub(crate) fn get_feature(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<GetCdqFeature>(cmd)?;
    let cdq = state.lm.find(op.cdqid)?;
    let (data, etpt) = {
        let ring = cdq.ring();
        let (etpt, tpt) = ring.trigger();
        (
            CdqFeatureData {
                hp: ring.head(),
                tpt,
            },
            etpt,
        )
    };
    inner.data_to_host(cmd, data.as_bytes())?;
    Ok(u32::from(cdq.id) | u32::from(etpt) << 31)
}
