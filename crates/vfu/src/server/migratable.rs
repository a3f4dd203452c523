//! The migration handle a device offers the server ([`Migratable`]) and the adapter that makes
//! any [`vfio_migration::MigrationDriver`] one ([`DeviceMigration`]): the state machine
//! runner with its open data session, and DMA logging through a dirty-page log that watches the
//! device's writes to guest memory. Nothing here knows what the device is.
//!
//! The server maps `DEVICE_FEATURE` (MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE,
//! DMA_LOGGING_START/STOP/REPORT) and `MIG_DATA_READ`/`MIG_DATA_WRITE` onto the handle; tools
//! that are not vfio-user clients (an operator's control socket) read [`Migratable::status`].
//!
//! What the adapter does, following the kernel's drivers:
//!
//! * `MIG_DEVICE_STATE` SET walks to the target one driver arc at a time
//!   ([`vfio_migration::Migration::set_state`]); a failed walk answers with the driver error's
//!   errno and is kept as [`MigrationStatus::last_failure`].
//! * `MIG_DATA_READ` fills the reply as far as the saving session allows. PRE_COPY with nothing
//!   pending is an empty reply (vfio-user has no ENOMSG "no data yet"); in STOP_COPY a short
//!   reply is the end of the stream. `MIG_DATA_WRITE` hands the data to the resuming session.
//!   Data requests without a session of their kind are EINVAL.
//! * A device reset ([`DeviceMigration::reset`], which the device calls from its own reset)
//!   invalidates the session and returns to RUNNING.
//! * When the client disconnects ([`Migratable::disconnected`], called by the server after the
//!   device dropped the client's memory and interrupt fds) the seed's open/close semantics
//!   apply: DMA logging stops (the log belonged to that client's migration attempt), the
//!   client's data session ends (its reads and writes fail with ENODEV), and the device returns
//!   to RUNNING through the driver's own arcs (a suspension lifted, logging stopped, the UDMQ
//!   deleted) — or by the driver's reset from RESUMING, whose partial stream must not be
//!   loaded, from ERROR, and when the walk fails ([`vfio_migration::Migration::close`]). The
//!   device's other state stays (vfio-user keeps it across reconnects).
//! * DMA logging: one log at a time (a second START is EBUSY); a START without ranges logs every
//!   window mapped at that moment; STOP or REPORT without a log is EINVAL.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use shmem::AddressSpace;
use shmem::WriteObserver;
use vfio_migration::Closed;
use vfio_migration::DeviceState;
use vfio_migration::DirtyLog;
use vfio_migration::DmaLogRange;
use vfio_migration::Errno;
use vfio_migration::FlagsError;
use vfio_migration::LogScope;
use vfio_migration::LoggingMode;
use vfio_migration::Migration;
use vfio_migration::MigrationDriver;
use vfio_migration::MigrationFlags;
use vfio_migration::SavePhase;
use vfio_migration::Session;
use vfio_migration::SessionError;
use vfio_migration::ToErrno;

/// A device's live migration and DMA logging, as the vfio-user server drives them.
///
/// [`DeviceMigration`] implements it over any migration driver. Every method is called from the
/// server's connection thread while the device's own threads run, hence `&self`.
pub trait Migratable: Send + Sync {
    /// The capabilities the device advertises (MIGRATION GET).
    fn flags(&self) -> MigrationFlags;
    /// The current state (MIG_DEVICE_STATE GET).
    fn state(&self) -> DeviceState;
    /// Moves to `target`, completely, before returning (MIG_DEVICE_STATE SET).
    fn set_state(&self, target: DeviceState) -> Result<(), Errno>;
    /// The estimated length of the STOP_COPY stream (MIG_DATA_SIZE GET).
    fn stop_copy_length(&self) -> Result<u64, Errno>;
    /// MIG_DATA_READ: fills `buf` as far as the saving stream allows and returns the byte count;
    /// fewer than `buf.len()` means "no more data now" (the end of the stream in STOP_COPY).
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno>;
    /// MIG_DATA_WRITE: appends `data` to the resuming stream.
    fn write(&self, data: &[u8]) -> Result<(), Errno>;
    /// DMA_LOGGING_START at `page_size` for `ranges`; no ranges logs every device write
    /// (vfio-user's rule).
    fn dma_logging_start(&self, page_size: u64, ranges: &[DmaLogRange]) -> Result<(), Errno>;
    /// DMA_LOGGING_STOP.
    fn dma_logging_stop(&self) -> Result<(), Errno>;
    /// DMA_LOGGING_REPORT: ORs the dirty bits of `[iova, iova + length)` at `page_size` into
    /// `bitmap` (bit i = page i) and clears them in the log.
    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno>;
    /// The vfio-user client disconnected: its data session ends and the device returns to
    /// RUNNING (see the module docs). The server calls this after
    /// [`super::Device::disconnected`].
    fn disconnected(&self);
    /// What the migration is doing now, for tools that are not vfio-user clients.
    fn status(&self) -> MigrationStatus;
}

/// A snapshot of a device's migration, from [`Migratable::status`].
#[derive(Clone, Debug)]
pub struct MigrationStatus {
    /// The advertised capabilities.
    pub flags: MigrationFlags,
    /// The current state.
    pub state: DeviceState,
    /// The open data session, if the state has one.
    pub session: Option<SessionStatus>,
    /// DMA logging, while it runs.
    pub logging: Option<LoggingStatus>,
    /// The most recent failed state change or data request, kept until another one fails (a
    /// reset does not clear it, so the reason outlives the VMM's clean-up).
    pub last_failure: Option<MigrationFailure>,
}

/// The open data session of a [`MigrationStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// PRE_COPY, PRE_COPY_P2P or STOP_COPY: the device state flows out.
    Saving {
        /// The saving-group state the session is in.
        phase: SavePhase,
        /// Bytes read so far.
        bytes_read: u64,
        /// Whether the STOP_COPY end of stream was reached.
        ended: bool,
    },
    /// RESUMING: a device state flows in.
    Resuming {
        /// Bytes accepted so far.
        written: u64,
        /// The most the session accepts.
        max_bytes: u64,
    },
}

/// DMA logging of a [`MigrationStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingStatus {
    /// The tracking page size.
    pub page_size: u64,
    /// The logged ranges, by IOVA.
    pub ranges: Vec<DmaLogRange>,
}

/// Which request failed, in a [`MigrationFailure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedRequest {
    /// MIG_DEVICE_STATE SET from `from` towards `target`.
    SetState {
        /// The state the walk started from.
        from: DeviceState,
        /// The requested state.
        target: DeviceState,
    },
    /// MIG_DATA_READ.
    Read,
    /// MIG_DATA_WRITE.
    Write,
}

impl fmt::Display for FailedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetState { from, target } => {
                write!(f, "migration state change {from} -> {target}")
            }
            Self::Read => f.write_str("MIG_DATA_READ"),
            Self::Write => f.write_str("MIG_DATA_WRITE"),
        }
    }
}

/// A failed migration request and why: the errno the client got and the typed error behind it
/// (for a destination refusing a stream, the reason it was refused).
#[derive(Clone)]
pub struct MigrationFailure {
    /// The request.
    pub request: FailedRequest,
    /// The errno the client was answered with.
    pub errno: Errno,
    error: Arc<dyn Error + Send + Sync>,
}

impl MigrationFailure {
    fn new(request: FailedRequest, error: impl Error + ToErrno + Send + Sync + 'static) -> Self {
        Self {
            request,
            errno: error.errno(),
            error: Arc::new(error),
        }
    }

    /// The error, with its cause chain.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.error.as_ref()
    }

    /// The first error of type `T` in the cause chain (e.g. a device driver's own error type,
    /// to tell which check refused a stream).
    pub fn cause<T: Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn Error + 'static)> = Some(self.error());
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<T>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

impl fmt::Debug for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrationFailure")
            .field("request", &self.request)
            .field("errno", &self.errno)
            .field("error", &self.error.to_string())
            .finish()
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed ({}): {}",
            self.request, self.errno, self.error
        )
    }
}

/// Marks every guest write of the device in a [`DirtyLog`].
struct LogObserver(Arc<DirtyLog>);

impl WriteObserver for LogObserver {
    fn written(&self, gpa: u64, len: u64) {
        self.0.mark(gpa, len);
    }
}

/// The state machine and the most recent failure, behind one lock.
struct Slot<D: MigrationDriver> {
    machine: Migration<D>,
    last_failure: Option<MigrationFailure>,
}

/// [`Migratable`] over a [`MigrationDriver`]: the state machine runner, its data session, and
/// DMA logging of the device's writes to `space`.
pub struct DeviceMigration<D: MigrationDriver> {
    slot: Mutex<Slot<D>>,
    space: Arc<AddressSpace>,
    dirty: Mutex<Option<Arc<DirtyLog>>>,
}

impl<D: MigrationDriver> fmt::Debug for DeviceMigration<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceMigration")
            .field("state", &self.slot().machine.state())
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, ignoring poisoning: every update here is complete before a driver call can
/// panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: MigrationDriver + Send> DeviceMigration<D> {
    /// Wraps `driver`, in RUNNING; DMA logging watches the device's writes to `space` (the
    /// address space the device reaches guest memory through).
    ///
    /// # Errors
    /// The driver's flags are not a valid capability set.
    pub fn new(driver: D, space: Arc<AddressSpace>) -> Result<Self, FlagsError> {
        Ok(Self {
            slot: Mutex::new(Slot {
                machine: Migration::new(driver)?,
                last_failure: None,
            }),
            space,
            dirty: Mutex::new(None),
        })
    }

    /// A device reset (DEVICE_RESET or a function-level reset): back to RUNNING, the session
    /// invalidated (kernel semantics). A failing driver reset leaves the device in ERROR, which
    /// only another reset leaves.
    pub fn reset(&self) {
        if let Err(err) = self.slot().machine.reset() {
            tracing::warn!("resetting the migration state failed: {err}");
        }
    }

    /// Whether the device sits in STOP after a complete save (`Migration::handed_over`): a
    /// device whose client leaves it so should be reset, not resumed.
    pub fn handed_over(&self) -> bool {
        self.slot().machine.handed_over()
    }
}

impl<D: MigrationDriver> DeviceMigration<D> {
    fn slot(&self) -> MutexGuard<'_, Slot<D>> {
        lock(&self.slot)
    }

    fn dirty(&self) -> MutexGuard<'_, Option<Arc<DirtyLog>>> {
        lock(&self.dirty)
    }
}

/// Keeps a failed session call as the most recent failure and returns its errno.
fn session_failure(
    slot: &mut Option<MigrationFailure>,
    request: FailedRequest,
    err: SessionError,
) -> Errno {
    let errno = err.errno();
    *slot = Some(MigrationFailure::new(request, err));
    errno
}

impl<D: MigrationDriver + Send> Migratable for DeviceMigration<D> {
    fn flags(&self) -> MigrationFlags {
        self.slot().machine.flags()
    }

    fn state(&self) -> DeviceState {
        self.slot().machine.state()
    }

    fn set_state(&self, target: DeviceState) -> Result<(), Errno> {
        let mut slot = self.slot();
        let from = slot.machine.state();
        match slot.machine.set_state(target) {
            Ok(_) => Ok(()),
            Err(err) => {
                tracing::warn!("migration to {target} failed: {err}");
                let failure = MigrationFailure::new(FailedRequest::SetState { from, target }, err);
                let errno = failure.errno;
                slot.last_failure = Some(failure);
                Err(errno)
            }
        }
    }

    fn stop_copy_length(&self) -> Result<u64, Errno> {
        self.slot()
            .machine
            .stop_copy_length()
            .map_err(|err| err.errno())
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut slot = self.slot();
        let Some(saving) = slot.machine.session().and_then(Session::as_saving) else {
            return Err(Errno::EINVAL);
        };
        match saving.fill(buf) {
            Ok(n) => Ok(n),
            // vfio-user has no "no data yet": a short (here empty) read in PRE_COPY says so.
            Err(SessionError::NoDataYet) => Ok(0),
            Err(err) => Err(session_failure(
                &mut slot.last_failure,
                FailedRequest::Read,
                err,
            )),
        }
    }

    fn write(&self, data: &[u8]) -> Result<(), Errno> {
        let mut slot = self.slot();
        let Some(resuming) = slot.machine.session().and_then(Session::as_resuming) else {
            return Err(Errno::EINVAL);
        };
        resuming.write(data).map_err(|err| {
            tracing::warn!("migration data rejected: {err}");
            session_failure(&mut slot.last_failure, FailedRequest::Write, err)
        })
    }

    fn dma_logging_start(&self, page_size: u64, ranges: &[DmaLogRange]) -> Result<(), Errno> {
        let mut dirty = self.dirty();
        if dirty.is_some() {
            return Err(Errno::EBUSY);
        }
        let scope = vfio_migration::validate_start(page_size, ranges, LoggingMode::VfioUser)
            .map_err(|err| err.errno())?;
        let log = match scope {
            LogScope::All => {
                let windows: Vec<DmaLogRange> = self
                    .space
                    .windows()
                    .into_iter()
                    .map(|w| DmaLogRange::new(w.start, w.end - w.start))
                    .collect();
                DirtyLog::covering(page_size, &windows)
            }
            LogScope::Ranges(ranges) => DirtyLog::new(page_size, &ranges),
        }
        .map_err(|err| err.errno())?;
        let log = Arc::new(log);
        self.space
            .set_write_observer(Some(Arc::new(LogObserver(Arc::clone(&log)))));
        *dirty = Some(log);
        Ok(())
    }

    fn dma_logging_stop(&self) -> Result<(), Errno> {
        if self.dirty().take().is_none() {
            return Err(Errno::EINVAL);
        }
        self.space.set_write_observer(None);
        Ok(())
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        let dirty = self.dirty();
        let log = dirty.as_ref().ok_or(Errno::EINVAL)?;
        log.report_and_clear(iova, length, page_size, bitmap)
            .map_err(|err| err.errno())
    }

    fn disconnected(&self) {
        if self.dirty().take().is_some() {
            self.space.set_write_observer(None);
        }
        match self.slot().machine.close() {
            Ok(Closed::Running) => {}
            Ok(Closed::Walked { from }) => {
                tracing::info!(%from, "the client left the device in {from}; back to RUNNING");
            }
            Ok(Closed::Reset { from, walk: None }) => {
                tracing::info!(%from, "the client left the device in {from}; reset to RUNNING");
            }
            Ok(Closed::Reset {
                from,
                walk: Some(err),
            }) => tracing::warn!(
                %from,
                "the client left the device in {from} and the way back failed ({err}); reset to RUNNING"
            ),
            Err(err) => tracing::error!(
                "returning the device to RUNNING after its client left failed: {err}"
            ),
        }
    }

    fn status(&self) -> MigrationStatus {
        let slot = self.slot();
        let session = slot.machine.session().and_then(|session| match session {
            Session::Saving(saving) => saving.phase().map(|phase| SessionStatus::Saving {
                phase,
                bytes_read: saving.bytes_read(),
                ended: saving.is_ended(),
            }),
            Session::Resuming(resuming) => Some(SessionStatus::Resuming {
                written: resuming.written(),
                max_bytes: resuming.max_bytes(),
            }),
        });
        let logging = self.dirty().as_ref().map(|log| LoggingStatus {
            page_size: log.page_size(),
            ranges: log.ranges().collect(),
        });
        MigrationStatus {
            flags: slot.machine.flags(),
            state: slot.machine.state(),
            session,
            logging,
            last_failure: slot.last_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use vfio_migration::FsmError;
    use vfio_migration::SessionError;

    use super::*;
    use crate::fake::FakeDevice;
    use crate::fake::FakeMigration;
    use crate::server::Device;

    const BLOB: &[u8] = b"the state of a fake device";

    fn device() -> FakeDevice {
        FakeDevice::builder()
            .migration(FakeMigration::new(MigrationFlags::all(), BLOB))
            .build()
            .unwrap()
    }

    #[test]
    fn status_follows_the_state_the_session_and_logging() {
        let device = device();
        let migration = device.migration().unwrap();
        let status = migration.status();
        assert_eq!(status.flags, MigrationFlags::all());
        assert_eq!(status.state, DeviceState::Running);
        assert_eq!(status.session, None);
        assert_eq!(status.logging, None);
        assert!(status.last_failure.is_none());

        migration.set_state(DeviceState::PreCopy).unwrap();
        let mut buf = [0; 10];
        assert_eq!(migration.read(&mut buf), Ok(10));
        assert_eq!(
            migration.status().session,
            Some(SessionStatus::Saving {
                phase: SavePhase::PreCopy,
                bytes_read: 10,
                ended: false
            })
        );
        let range = DmaLogRange::new(0x10_0000, 0x4000);
        migration.dma_logging_start(4096, &[range]).unwrap();
        assert_eq!(
            migration.status().logging,
            Some(LoggingStatus {
                page_size: 4096,
                ranges: vec![range]
            })
        );

        // A disconnect stops logging, ends the session and walks back to RUNNING.
        migration.disconnected();
        let status = migration.status();
        assert_eq!(status.logging, None);
        assert_eq!(status.state, DeviceState::Running);
        assert_eq!(status.session, None);
        assert_eq!(
            device.arcs().last(),
            Some(&(DeviceState::PreCopy, DeviceState::Running))
        );

        migration.set_state(DeviceState::Stop).unwrap();
        migration.set_state(DeviceState::Resuming).unwrap();
        migration.write(b"incoming").unwrap();
        assert_eq!(
            migration.status().session,
            Some(SessionStatus::Resuming {
                written: 8,
                max_bytes: u64::MAX
            })
        );
        assert_eq!(device.resumed(), b"incoming");
    }

    #[test]
    fn the_last_failure_is_kept_with_its_typed_cause_across_a_reset() {
        let device = device();
        let migration = device.migration().unwrap();
        migration.set_state(DeviceState::StopCopy).unwrap();
        assert_eq!(
            migration.set_state(DeviceState::PreCopy),
            Err(Errno::EINVAL)
        );
        let failure = migration.status().last_failure.unwrap();
        assert_eq!(
            failure.request,
            FailedRequest::SetState {
                from: DeviceState::StopCopy,
                target: DeviceState::PreCopy
            }
        );
        assert_eq!(failure.errno, Errno::EINVAL);
        assert!(matches!(
            failure.cause::<FsmError>(),
            Some(FsmError::NoPath { .. })
        ));
        assert!(
            failure.to_string().contains("STOP_COPY -> PRE_COPY"),
            "{failure}"
        );

        // A refused write replaces it; a reset keeps it for whoever asks afterwards.
        migration.set_state(DeviceState::Stop).unwrap();
        migration.set_state(DeviceState::Resuming).unwrap();
        device.fail_resume_writes(Some(Errno::EIO));
        assert_eq!(migration.write(b"x"), Err(Errno::EIO));
        device.reset().unwrap();
        let status = migration.status();
        assert_eq!(status.state, DeviceState::Running);
        assert_eq!(status.session, None);
        let failure = status.last_failure.unwrap();
        assert_eq!(failure.request, FailedRequest::Write);
        assert_eq!(failure.errno, Errno::EIO);
        assert!(failure.cause::<SessionError>().is_some());
    }

    #[test]
    fn data_requests_without_their_session_are_einval_and_pre_copy_can_be_empty() {
        let device = device();
        let migration = device.migration().unwrap();
        let mut buf = [0; 64];
        assert_eq!(migration.read(&mut buf), Err(Errno::EINVAL));
        assert_eq!(migration.write(b"x"), Err(Errno::EINVAL));
        migration.set_state(DeviceState::PreCopy).unwrap();
        assert_eq!(migration.read(&mut buf), Ok(BLOB.len()));
        assert_eq!(migration.read(&mut buf), Ok(0), "PRE_COPY: nothing yet");
        assert_eq!(migration.write(b"x"), Err(Errno::EINVAL));
        assert!(migration.status().last_failure.is_none());
        migration.set_state(DeviceState::StopCopy).unwrap();
        assert_eq!(migration.read(&mut buf), Ok(0), "STOP_COPY: the end");
    }
}
