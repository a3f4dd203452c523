//! The vfio-user migration and DMA-logging features of a VF: the state machine, its data
//! session and the dirty-page log, behind the [`vfu::server::Device`] methods.

use std::sync::Arc;
use std::sync::Mutex;

use shmem::AddressSpace;
use shmem::WriteObserver;
use vfio_migration::DeviceState;
use vfio_migration::DirtyLog;
use vfio_migration::DmaLogRange;
use vfio_migration::LogScope;
use vfio_migration::LoggingMode;
use vfio_migration::Migration;
use vfio_migration::Session;
use vfio_migration::SessionError;
use vfio_migration::ToErrno;
use vfu::error::errno;
use vfu::server::Errno;

use super::driver::NvmeMigration;

fn to_errno(e: &impl ToErrno) -> Errno {
    e.errno().get() as u32
}

/// Marks every guest write of the device in a [`DirtyLog`].
struct LogObserver(Arc<DirtyLog>);

impl WriteObserver for LogObserver {
    fn written(&self, gpa: u64, len: u64) {
        self.0.mark(gpa, len);
    }
}

struct Slot {
    machine: Migration<NvmeMigration>,
    session: Option<Session>,
}

/// Migration state of one VF as a vfio-user device sees it.
pub struct VfMigration {
    slot: Mutex<Slot>,
    space: Arc<AddressSpace>,
    dirty: Mutex<Option<Arc<DirtyLog>>>,
}

impl std::fmt::Debug for VfMigration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfMigration").finish()
    }
}

impl VfMigration {
    /// Wraps `driver`; DMA logging watches device writes to `space`.
    pub fn new(driver: NvmeMigration, space: Arc<AddressSpace>) -> Result<Self, String> {
        let machine = Migration::new(driver).map_err(|e| e.to_string())?;
        Ok(Self {
            slot: Mutex::new(Slot {
                machine,
                session: None,
            }),
            space,
            dirty: Mutex::new(None),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `VFIO_MIGRATION_*` flags.
    pub fn flags(&self) -> u64 {
        self.slot().machine.flags().bits()
    }

    /// The current state (uAPI numbering).
    pub fn state(&self) -> u32 {
        self.slot().machine.state() as u32
    }

    /// Moves to `state`.
    pub fn set_state(&self, state: u32) -> Result<(), Errno> {
        let target = DeviceState::try_from(state).map_err(|e| to_errno(&e))?;
        let mut slot = self.slot();
        match slot.machine.set_state(target) {
            Ok(Some(session)) => {
                slot.session = Some(session);
                Ok(())
            }
            Ok(None) => {
                if slot.session.as_ref().is_some_and(|s| !s.is_valid()) {
                    slot.session = None;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!("migration to {target} failed: {e}");
                if slot.session.as_ref().is_some_and(|s| !s.is_valid()) {
                    slot.session = None;
                }
                Err(to_errno(&e))
            }
        }
    }

    /// MIG_DATA_READ: as many bytes as are available now, up to `buf.len()`.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let slot = self.slot();
        let Some(saving) = slot.session.as_ref().and_then(Session::as_saving) else {
            return Err(errno::EINVAL);
        };
        match saving.fill(buf) {
            Ok(n) => Ok(n),
            // vfio-user has no "no data yet": a short (here empty) read in PRE_COPY says so.
            Err(SessionError::NoDataYet) => Ok(0),
            Err(e) => Err(to_errno(&e)),
        }
    }

    /// MIG_DATA_WRITE.
    pub fn write(&self, data: &[u8]) -> Result<(), Errno> {
        let slot = self.slot();
        let Some(resuming) = slot.session.as_ref().and_then(Session::as_resuming) else {
            return Err(errno::EINVAL);
        };
        resuming.write(data).map_err(|e| {
            tracing::warn!("migration data rejected: {e}");
            to_errno(&e)
        })
    }

    /// Estimated STOP_COPY bytes.
    pub fn data_size(&self) -> Result<u64, Errno> {
        self.slot()
            .machine
            .stop_copy_length()
            .map_err(|e| to_errno(&e))
    }

    /// A device reset: back to RUNNING, sessions gone.
    pub fn reset(&self) {
        let mut slot = self.slot();
        if let Err(e) = slot.machine.reset() {
            tracing::warn!("resetting the migration state failed: {e}");
        }
        slot.session = None;
    }

    /// DMA_LOGGING_START.
    pub fn logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<(), Errno> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if dirty.is_some() {
            return Err(errno::EBUSY);
        }
        let ranges: Vec<DmaLogRange> = ranges
            .iter()
            .map(|&(iova, length)| DmaLogRange { iova, length })
            .collect();
        let scope = vfio_migration::validate_start(page_size, &ranges, LoggingMode::VfioUser)
            .map_err(|e| to_errno(&e))?;
        let log = match scope {
            LogScope::All => {
                let windows: Vec<DmaLogRange> = self
                    .space
                    .windows()
                    .into_iter()
                    .map(|w| DmaLogRange {
                        iova: w.start,
                        length: w.end - w.start,
                    })
                    .collect();
                DirtyLog::covering(page_size, &windows)
            }
            LogScope::Ranges(ranges) => DirtyLog::new(page_size, &ranges),
        }
        .map_err(|e| to_errno(&e))?;
        let log = Arc::new(log);
        self.space
            .set_write_observer(Some(Arc::new(LogObserver(log.clone()))));
        *dirty = Some(log);
        Ok(())
    }

    /// DMA_LOGGING_STOP.
    pub fn logging_stop(&self) -> Result<(), Errno> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if dirty.take().is_none() {
            return Err(errno::EINVAL);
        }
        self.space.set_write_observer(None);
        Ok(())
    }

    /// DMA_LOGGING_REPORT.
    pub fn logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        let dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let log = dirty.as_ref().ok_or(errno::EINVAL)?;
        log.report_and_clear(iova, length, page_size, bitmap)
            .map_err(|e| to_errno(&e))
    }

    /// The client went away: logging stops (the log belonged to its migration attempt).
    pub fn disconnected(&self) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if dirty.take().is_some() {
            self.space.set_write_observer(None);
        }
    }
}
