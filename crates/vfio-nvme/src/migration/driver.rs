//! The VFIO migration driver of one NVMe secondary controller.
//!
//! Every arc of the VFIO migration v2 state machine is carried out with TP4159 commands on the
//! primary controller's admin queue ([`LmAdmin`]):
//!
//! | arc | what happens |
//! |---|---|
//! | RUNNING → PRE_COPY | Create a User Data Migration Queue for the VF, Track Send start, open the saving session: first all allocated user data, then the ranges the queue reports changed |
//! | RUNNING → RUNNING_P2P, PRE_COPY → PRE_COPY_P2P | Suspend: stop fetching, let fetched commands finish (NVMe has no other peer traffic to stop) |
//! | RUNNING_P2P → STOP | Suspend again (idempotent): the controller is stopped |
//! | PRE_COPY_P2P / STOP → STOP_COPY | Drain the queue to its "suspended" marker, then Get Controller State (NVMe state + our vendor state) and the function's PCI face |
//! | STOP_COPY → STOP, PRE_COPY(_P2P) → RUNNING(_P2P) | End the session: stop logging, delete the queue |
//! | STOP → RESUMING | Open the resuming session: records are checked and applied as they arrive |
//! | RESUMING → STOP | Validate the stream's completeness and the PCI face, then Set Controller State in chunks, then take the PCI face |
//! | RUNNING_P2P → RUNNING, PRE_COPY_P2P → PRE_COPY | Resume |
//!
//! A device reset returns the VF to RUNNING, deletes the queue and drops every session (the
//! kernel's semantics; libvfio-user since 2026 keeps the migration state over a reset instead).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::LbaChangeInfo;
use nvme_spec::lm::LbaMigrationQueueEntry;
use vfio_migration::ArcFailure;
use vfio_migration::DeviceState;
use vfio_migration::MigrationDriver;
use vfio_migration::MigrationFlags;
use vfio_migration::NewSession;

use super::admin::LmAdmin;
use super::admin::LmError;
use super::error::MigrationError;
use super::error::Refusal;
use super::loader::Loader;
use super::saver::Saver;
use super::tp4159;
use super::tp4159::StateFormats;
use super::tp4159::Udmq;
use super::user_data::UserData;
use crate::pci::face::PciFace;
use crate::stream::StreamHeader;

/// Entries of the User Data Migration Queue (32 bytes each: 2 MiB of PF memory). Should it
/// fill up anyway, the controller stops logging until the host catches up, and the driver then
/// treats every allocated range as changed.
const UDMQ_ENTRIES: u32 = 65536;
/// How long the driver waits, after Suspend completed, for the "suspended" marker (ESA 3) in
/// the User Data Migration Queue: a real device may post it later, and changes it logs before
/// the marker must make the last round.
const SUSPEND_MARKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// State shared by the driver's arcs and its open session.
pub(crate) struct Core {
    pub admin: Arc<dyn LmAdmin>,
    pub user: Arc<dyn UserData>,
    /// The stream header this device writes, and the geometry it checks incoming streams
    /// against (namespaces come from `user`).
    pub identity: StreamHeader,
    pub cntlid: u16,
    pub formats: StateFormats,
    /// Whether the primary controller logs user data changes (User Data Migration Queues).
    pub logging: bool,
    /// The User Data Migration Queue while logging.
    pub udmq: Option<Udmq>,
    /// Whether the queue's "suspended" marker (ESA 3) of the current suspension was drained.
    pub suspend_marker: bool,
    /// The saving session's progress.
    pub saver: Option<Saver>,
    /// The resuming session's progress.
    pub loader: Option<Loader>,
}

impl Core {
    /// Drains the User Data Migration Queue into the saving session's dirty ranges. Returns
    /// whether the "suspended" marker was seen.
    pub fn drain_changes(&mut self) -> Result<bool, MigrationError> {
        let Some(udmq) = self.udmq.as_mut() else {
            return Ok(false);
        };
        let entries = udmq.drain(self.admin.as_ref())?;
        let mut suspended = false;
        let mut overflowed = false;
        for entry in entries {
            suspended |= entry.attr.esa() == EntrySequence::LAST_SUSPENDED;
            // A Resume starts a new logging pass: an older marker no longer counts.
            if entry.attr.esa() == EntrySequence::FIRST {
                self.suspend_marker = false;
            }
            overflowed |= entry.attr.esa() == EntrySequence::LAST_FULL;
            if let Some(saver) = self.saver.as_mut() {
                saver.note_change(&entry, self.user.as_ref());
            }
        }
        if overflowed && let Some(saver) = self.saver.as_mut() {
            // Changes made while the queue was full were not logged: copy everything again.
            tracing::warn!("the User Data Migration Queue overflowed; re-copying all user data");
            saver.mark_all_dirty(self.user.as_ref())?;
        }
        self.suspend_marker |= suspended;
        Ok(suspended)
    }

    /// Drains the User Data Migration Queue up to the "suspended" marker of the current
    /// suspension, waiting up to [`SUSPEND_MARKER_WAIT`] for it: every change the controller
    /// logged before it suspended is then in the saving session's dirty ranges.
    pub fn drain_to_suspend_marker(&mut self) -> Result<(), MigrationError> {
        if self.udmq.is_none() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + SUSPEND_MARKER_WAIT;
        loop {
            self.drain_changes()?;
            if self.suspend_marker {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(MigrationError::NoSuspendMarker {
                    cntlid: self.cntlid,
                    waited: SUSPEND_MARKER_WAIT,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// The byte range of namespace data an LBA change entry names, for a namespace with blocks of
/// `1 << shift` bytes and `bytes` bytes in all (the whole namespace for an entry naming all LBAs
/// or a range outside it). `None` for markers.
pub(crate) fn changed_bytes(
    entry: &LbaMigrationQueueEntry,
    shift: u8,
    bytes: u64,
) -> Option<std::ops::Range<u64>> {
    match entry.attr.lbacir() {
        LbaChangeInfo::RANGE => {
            let block = 1u64 << shift;
            let start = entry.slba.checked_mul(block);
            let end = start.and_then(|s| s.checked_add((u64::from(entry.nlb) + 1) * block));
            match (start, end) {
                (Some(start), Some(end)) if end <= bytes => Some(start..end),
                // A range the namespace cannot hold: the change is real but its place is not
                // known, so copy everything rather than miss it.
                _ => Some(0..bytes),
            }
        }
        LbaChangeInfo::ALL => Some(0..bytes),
        _ => None,
    }
}

/// The migration driver of one secondary controller.
pub struct NvmeMigration {
    core: Arc<Mutex<Core>>,
    /// Whether this driver suspended the controller (and must resume it).
    suspended: bool,
    /// The function's configuration space and MSI-X state, which travel with the controller.
    pci_face: Option<Arc<PciFace>>,
}

impl std::fmt::Debug for NvmeMigration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeMigration")
            .field("suspended", &self.suspended)
            .finish()
    }
}

impl NvmeMigration {
    /// The driver of secondary controller `cntlid` (see [`tp4159::secondary_cntlid`]), whose
    /// namespaces `user` reaches, managed through `admin` (its primary controller, any TP4159
    /// PF). `identity` is the stream header this device writes (its namespace table is filled
    /// from `user`).
    ///
    /// Reads Identify CNS 20h and migrates with NVMe state version 0 plus this project's vendor
    /// state when the PF lists it ([`StateFormats::choose`]); the controller state travels as
    /// the opaque bytes the PF returns. Reads Identify Controller for LBA change logging: a PF
    /// without it can only migrate namespaces on shared storage, and a private namespace is
    /// refused here ([`MigrationError::NoUserDataLogging`]).
    pub fn new(
        admin: Arc<dyn LmAdmin>,
        user: Arc<dyn UserData>,
        cntlid: u16,
        mut identity: StreamHeader,
    ) -> Result<Self, MigrationError> {
        identity.geometry.namespaces = user.namespaces();
        let formats = tp4159::state_formats(admin.as_ref(), nvme_device::lm::VENDOR_STATE_UUID)?;
        // Logging needs a queue the PF keeps writing to, in memory the driver provides.
        let logging = tp4159::user_data_logging(admin.as_ref())? && admin.memory().is_some();
        if !logging {
            let private: Vec<u32> = identity
                .geometry
                .namespaces
                .iter()
                .filter(|ns| !ns.shared)
                .map(|ns| ns.nsid)
                .collect();
            if !private.is_empty() {
                return Err(MigrationError::NoUserDataLogging { cntlid, private });
            }
            tracing::info!(
                cntlid,
                "the primary controller does not log user data changes: controller {cntlid} \
                 migrates its shared namespaces only (their data stays on shared storage)"
            );
        }
        if formats.csuuidi == 0 {
            tracing::info!(
                cntlid,
                "the primary controller offers NVMe controller state v0 without the vfio-nvme \
                 vendor state: registers, admin queue and features do not travel, and the \
                 destination's host must enable its controller before the state is set"
            );
        }
        Ok(Self {
            core: Arc::new(Mutex::new(Core {
                admin,
                user,
                identity,
                cntlid,
                formats,
                logging,
                suspend_marker: false,
                udmq: None,
                saver: None,
                loader: None,
            })),
            suspended: false,
            pci_face: None,
        })
    }

    /// Makes the function's PCI face travel with the controller: captured in STOP_COPY, taken
    /// on RESUMING → STOP.
    pub fn with_pci_face(mut self, face: Arc<PciFace>) -> Self {
        self.pci_face = Some(face);
        self
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state formats this driver migrates with (from Identify CNS 20h).
    pub fn formats(&self) -> StateFormats {
        self.core().formats
    }

    /// Whether the primary controller logs user data changes; without it only shared
    /// namespaces migrate.
    pub fn user_data_logging(&self) -> bool {
        self.core().logging
    }

    fn suspend(&mut self) -> Result<(), MigrationError> {
        let core = self.core();
        tp4159::suspend(core.admin.as_ref(), core.cntlid, false)?;
        drop(core);
        self.suspended = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), MigrationError> {
        let mut core = self.core();
        // The next suspension posts a marker of its own.
        core.suspend_marker = false;
        match tp4159::resume(core.admin.as_ref(), core.cntlid) {
            Ok(()) => {}
            // Never suspended (e.g. a fresh destination): nothing to resume.
            Err(LmError::Status { status, .. })
                if status == nvme_spec::status::Status::CONTROLLER_NOT_SUSPENDED => {}
            Err(e) => return Err(e.into()),
        }
        drop(core);
        self.suspended = false;
        Ok(())
    }

    /// RUNNING → PRE_COPY: log changes (where the PF can), open the session with all allocated
    /// data pending.
    fn start_pre_copy(&mut self) -> Result<NewSession, MigrationError> {
        let mut core = self.core();
        if core.logging {
            let udmq = Udmq::create(core.admin.as_ref(), core.cntlid, UDMQ_ENTRIES)?;
            if let Err(err) = udmq.track(core.admin.as_ref(), true) {
                let _ = udmq.delete(core.admin.as_ref());
                return Err(err.into());
            }
            core.udmq = Some(udmq);
            core.suspend_marker = false;
        }
        core.saver = Some(Saver::new(&core.identity, core.user.as_ref())?);
        Ok(NewSession::Saving(Box::new(super::saver::Source(
            self.core.clone(),
        ))))
    }

    /// Entering STOP_COPY: final changes, then the controller state.
    fn start_stop_copy(
        &mut self,
        from_pre_copy: bool,
    ) -> Result<Option<NewSession>, MigrationError> {
        let mut core = self.core();
        if !from_pre_copy {
            core.saver = Some(Saver::new(&core.identity, core.user.as_ref())?);
        }
        core.drain_to_suspend_marker()?;
        let state = tp4159::get_state(core.admin.as_ref(), core.cntlid, core.formats)?;
        let face = self.pci_face.as_ref().map(|f| f.capture());
        if let Some(saver) = core.saver.as_mut() {
            saver.finish_with(state, face);
        }
        drop(core);
        Ok((!from_pre_copy)
            .then(|| NewSession::Saving(Box::new(super::saver::Source(self.core.clone())))))
    }

    /// Leaving the saving group: stop logging and forget the session.
    fn end_saving(&mut self) -> Result<(), MigrationError> {
        let mut core = self.core();
        core.saver = None;
        if let Some(udmq) = core.udmq.take() {
            // Deleting the queue also stops logging.
            udmq.delete(core.admin.as_ref())?;
        }
        Ok(())
    }

    fn start_resuming(&mut self) -> Result<NewSession, MigrationError> {
        let mut core = self.core();
        let loader = Loader::new(&core.identity, core.user.as_ref());
        let max_bytes = loader.max_stream_bytes();
        core.loader = Some(loader);
        Ok(NewSession::Resuming {
            sink: Box::new(super::loader::Sink(self.core.clone())),
            max_bytes,
        })
    }

    /// RESUMING → STOP: check the stream and the PCI face, then Set Controller State, then
    /// take the PCI face (so a refusal leaves the function as it was).
    fn finish_resuming(&mut self) -> Result<(), MigrationError> {
        let mut core = self.core();
        let loader = core.loader.take().ok_or(MigrationError::NoSession)?;
        let (state, face) = loader.finish()?;
        let takes_face = self.pci_face.as_ref().zip(face.as_ref());
        if let Some((ours, theirs)) = takes_face {
            ours.check(theirs).map_err(Refusal::PciFace)?;
        }
        let (admin, cntlid, formats) = (core.admin.clone(), core.cntlid, core.formats);
        drop(core);
        // Name exactly the parts the state carries; one this PF does not offer is refused
        // before the controller is touched.
        let formats = formats
            .carried_by(&state)
            .ok_or(Refusal::StateFormat(formats))?;
        if !self.suspended {
            tp4159::suspend(admin.as_ref(), cntlid, false)?;
            self.suspended = true;
        }
        tp4159::set_state(admin.as_ref(), cntlid, formats, &state)?;
        if let Some((ours, theirs)) = takes_face {
            ours.restore(theirs).map_err(Refusal::PciFace)?;
        }
        Ok(())
    }

    fn run_arc(
        &mut self,
        from: DeviceState,
        to: DeviceState,
    ) -> Result<Option<NewSession>, MigrationError> {
        use DeviceState as S;
        match (from, to) {
            (S::Running, S::PreCopy) => self.start_pre_copy().map(Some),
            (S::Running, S::RunningP2p) | (S::PreCopy, S::PreCopyP2p) => {
                self.suspend().map(|()| None)
            }
            (S::RunningP2p, S::Stop) => self.suspend().map(|()| None),
            (S::RunningP2p, S::Running) | (S::PreCopyP2p, S::PreCopy) => {
                self.resume().map(|()| None)
            }
            (S::Stop, S::RunningP2p) => Ok(None),
            (S::RunningP2p, S::PreCopyP2p) => {
                // Track Send needs an active controller (TP4159 answers Controller Suspended
                // otherwise): start logging between a Resume and a new Suspend.
                self.resume()?;
                let session = self.start_pre_copy()?;
                self.suspend()?;
                Ok(Some(session))
            }
            (S::PreCopy, S::Running) | (S::PreCopyP2p, S::RunningP2p) | (S::StopCopy, S::Stop) => {
                self.end_saving().map(|()| None)
            }
            (S::PreCopyP2p, S::StopCopy) | (S::PreCopy, S::StopCopy) => {
                if !self.suspended {
                    self.suspend()?;
                }
                self.start_stop_copy(true)
            }
            (S::Stop, S::StopCopy) => self.start_stop_copy(false),
            (S::Stop, S::Resuming) => self.start_resuming().map(Some),
            (S::Resuming, S::Stop) => self.finish_resuming().map(|()| None),
            // Without P2P the kernel walk has these direct arcs too.
            (S::Running, S::Stop) => self.suspend().map(|()| None),
            (S::Stop, S::Running) => self.resume().map(|()| None),
            _ => Err(MigrationError::Unsupported(format!(
                "no arc from {from} to {to}"
            ))),
        }
    }
}

impl MigrationDriver for NvmeMigration {
    type Error = MigrationError;

    fn flags(&self) -> MigrationFlags {
        MigrationFlags::STOP_COPY | MigrationFlags::P2P | MigrationFlags::PRE_COPY
    }

    fn arc(
        &mut self,
        from: DeviceState,
        to: DeviceState,
    ) -> Result<Option<NewSession>, ArcFailure<Self::Error>> {
        self.run_arc(from, to).map_err(ArcFailure::Recovered)
    }

    fn stop_copy_length(&mut self) -> Result<u64, Self::Error> {
        let core = self.core();
        let pending = core.saver.as_ref().map_or(0, Saver::pending_bytes);
        let data: u64 = if core.saver.is_some() {
            pending
        } else {
            core.user
                .namespaces()
                .iter()
                .filter(|ns| !ns.shared)
                .map(|ns| {
                    core.user
                        .allocated(ns.nsid)
                        .map(|r| r.iter().map(|r| r.end - r.start).sum::<u64>())
                        .unwrap_or(ns.bytes())
                })
                .sum()
        };
        // Controller state: a few KiB (header, queues, vendor state).
        Ok(data + 64 * 1024)
    }

    fn reset(&mut self) -> Result<(), Self::Error> {
        let mut core = self.core();
        core.saver = None;
        core.loader = None;
        let udmq = core.udmq.take();
        let (admin, cntlid) = (core.admin.clone(), core.cntlid);
        drop(core);
        let deleted = udmq.map_or(Ok(()), |q| q.delete(admin.as_ref()));
        self.suspended = false;
        // The controller's own reset lifts a suspension; Resume covers a reset of the
        // migration state alone. Not being suspended is fine.
        match tp4159::resume(admin.as_ref(), cntlid) {
            Ok(()) => {}
            Err(LmError::Status { status, .. })
                if status == nvme_spec::status::Status::CONTROLLER_NOT_SUSPENDED => {}
            Err(e) => return Err(e.into()),
        }
        deleted.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::lm::LbaMigrationQueueEntry;

    #[test]
    fn change_entries_map_to_byte_ranges_conservatively() {
        let entry = |slba, nlb| LbaMigrationQueueEntry::range(1, slba, nlb, false, true);
        assert_eq!(changed_bytes(&entry(2, 0), 12, 1 << 20), Some(8192..12288));
        assert_eq!(changed_bytes(&entry(0, 3), 9, 1 << 20), Some(0..2048));
        // Outside the namespace, or overflowing: everything is copied again.
        assert_eq!(changed_bytes(&entry(255, 1), 12, 1 << 20), Some(0..1 << 20));
        assert_eq!(
            changed_bytes(&entry(u64::MAX, 0), 12, 1 << 20),
            Some(0..1 << 20)
        );
        let marker = LbaMigrationQueueEntry::marker(EntrySequence::FIRST, true).unwrap();
        assert_eq!(changed_bytes(&marker, 12, 1 << 20), None);
    }
}
