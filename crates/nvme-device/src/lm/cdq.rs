//! Controller Data Queues (45h), Feature 21h and Track Send (3Dh): User Data Migration Queues
//! that the primary controller creates in its own host memory and into which a secondary
//! controller logs the LBA ranges it changes.
//!
//! A [`Cdq`] is shared by the primary controller (which lists it in its [`PrimaryLm`]) and the
//! secondary controller it logs (whose LBA change log holds it as a [`ChangeQueue`]). The ring
//! sits behind the CDQ's own lock, a leaf lock: the secondary's workers append the entries it
//! collected during a pass once at the end of the pass, without touching the primary's `state`;
//! events the ring raises (full, tail pointer trigger) go to the primary through its event list,
//! also a leaf lock.

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

use super::PrimaryLm;
use super::decode;
use super::ring::ENTRY_BYTES;
use super::ring::Raised;
use super::ring::Ring;
use super::target;
use crate::controller::AsyncEvent;
use crate::controller::ChangeQueue;
use crate::controller::Inner;
use crate::controller::LockedSecondary;
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

impl ChangeQueue for Cdq {
    fn id(&self) -> u16 {
        self.id
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
}

/// Removes CDQ `cdqid` from `lm` and stops the logging into it. With the primary's `state` held.
pub(super) fn delete(inner: &Inner, lm: &mut PrimaryLm, cdqid: u16) -> Result<(), Status> {
    let index = lm
        .cdqs
        .iter()
        .position(|q| q.id == cdqid)
        .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)?;
    let cdq = lm.cdqs.remove(index);
    if let Some(vf) = inner.secondary(cdq.target) {
        vf.lock().lba_log().detach(cdqid);
    }
    Ok(())
}

/// Deletes the UDMQ that logs `vf` (Suspend with DUDMQ) if this primary port created it, with
/// the port's `state` and then the secondary's held. A controller has one UDMQ at most, so the
/// port's CDQ for `vf` is the one it logs to; a UDMQ another port created is that port's.
pub(super) fn delete_udmq_of(lm: &mut PrimaryLm, vf: &mut LockedSecondary<'_>) {
    let cntlid = vf.cntlid();
    if let Some(index) = lm.cdqs.iter().position(|q| q.target == cntlid) {
        let cdq = lm.cdqs.remove(index);
        vf.lba_log().detach(cdq.id);
    }
}

/// Controller Data Queue (45h): Create or Delete.
pub(crate) fn controller_data_queue(
    inner: &Inner,
    lm: &mut PrimaryLm,
    cmd: &Command,
) -> Result<u32, Status> {
    match nvme_spec::lm::CdqSelect(nvme_spec::lm::LmCdw10::from(cmd.cdw10).sel()) {
        nvme_spec::lm::CdqSelect::CREATE => create(inner, lm, cmd),
        nvme_spec::lm::CdqSelect::DELETE => {
            let op = decode::<DeleteCdq>(cmd)?;
            delete(inner, lm, op.cdqid)?;
            Ok(0)
        }
        _ => Err(Status::INVALID_FIELD_IN_COMMAND),
    }
}

fn create(inner: &Inner, lm: &mut PrimaryLm, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<CreateCdq>(cmd)?;
    // A controller without LBA change logging has no User Data Migration Queues.
    if !inner.config.migration.user_data_logging
        || op.qt != QueueType::USER_DATA_MIGRATION_QUEUE
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
        .find(|id| lm.cdqs.iter().all(|q| q.id != *id))
        .ok_or(Status::NOT_ENOUGH_RESOURCES)?;
    let cdq = Arc::new(Cdq {
        id,
        target: op.cqs,
        owner: inner.weak_self(),
        mem: inner.mem.clone(),
        ring: Mutex::new(Ring::new(op.prp1, slots.max(2))),
    });
    let mut vf = vf.lock();
    if !vf.lba_log().attach(cdq.clone()) {
        // One User Data Migration Queue per controller.
        return Err(Status::NOT_ENOUGH_RESOURCES);
    }
    drop(vf);
    lm.cdqs.push(cdq);
    Ok(u32::from(id))
}

/// Track Send (3Dh), SEL 0: start or stop logging into a UDMQ.
pub(crate) fn track_send(inner: &Inner, lm: &mut PrimaryLm, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<LogUserDataChanges>(cmd)?;
    let start = match op.lact {
        LoggingAction::START => true,
        LoggingAction::STOP => false,
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    };
    let cdq = lm.find(op.cdqid)?;
    let vf = inner
        .secondary(cdq.target)
        .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)?;
    if vf.is_suspended() {
        return Err(Status::CONTROLLER_SUSPENDED);
    }
    let mut vf = vf.lock();
    let mut log = vf.lba_log();
    if log.active() != start {
        log.flush();
        log.set_active(start);
        log.marker(if start {
            EntrySequence::FIRST
        } else {
            EntrySequence::LAST_STOPPED
        });
    }
    Ok(0)
}

/// Set Features 21h: move a CDQ's head pointer and arm or disarm its tail pointer trigger.
pub(crate) fn set_feature(lm: &PrimaryLm, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<SetCdqFeature>(cmd)?;
    if nvme_spec::command::SetFeaturesCdw10::from(cmd.cdw10).sv() {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    let cdq = lm.find(op.cdqid)?;
    cdq.ring()
        .set_head(op.hp, op.etpt, op.tpt)
        .map_err(|_| Status::INVALID_FIELD_IN_COMMAND)?;
    Ok(0)
}

/// Get Features 21h: DW0 = CDQID | ETPT << 31, data = {HP, TPT}.
pub(crate) fn get_feature(inner: &Inner, lm: &PrimaryLm, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<GetCdqFeature>(cmd)?;
    let cdq = lm.find(op.cdqid)?;
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
