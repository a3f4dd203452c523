//! What `serve` reports while it runs: one [`Event`] per line, JSON on stdout with `--json`
//! (schema in docs/CONTROL.md, "serve --json events"), a sentence on stderr otherwise; and
//! [`Observed`], the device wrapper that sees a client attach and leave and the migration
//! change state or fail, and keeps the control socket's "client attached" flags.

use std::io::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use serde::Serialize;
use vfio_migration::DeviceState;
use vfio_migration::DmaLogRange;
use vfio_migration::Errno;
use vfio_migration::MigrationFlags;
use vfu::control::FailureView;
use vfu::server::Device;
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::Migratable;
use vfu::server::MigrationStatus;
use vfu::server::RegionDescription;

use crate::control::inspect::Functions;

/// One thing that happened in the server.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A socket listens.
    Listening {
        /// `VF n`, `PF` or `control`.
        function: &'a str,
        /// The socket.
        socket: &'a Path,
        /// The subsystem NQN.
        nqn: &'a str,
    },
    /// Every socket listens (after the last `listening`; READY=1 goes to systemd then).
    Ready {
        /// The subsystem NQN.
        nqn: &'a str,
    },
    /// A vfio-user client was accepted.
    ClientAttached {
        /// `VF n` or `PF`.
        function: &'a str,
        /// The socket.
        socket: &'a Path,
    },
    /// The client's connection ended.
    ClientDetached {
        /// `VF n` or `PF`.
        function: &'a str,
        /// The socket.
        socket: &'a Path,
        /// Why the server dropped it, if it did (the client closing is no error).
        error: Option<String>,
    },
    /// The function's migration state changed.
    MigrationState {
        /// `VF n`.
        function: &'a str,
        /// The socket.
        socket: &'a Path,
        /// The state before, e.g. `RUNNING`.
        from: String,
        /// The state now, e.g. `PRE_COPY`.
        to: String,
    },
    /// A migration request failed; `reason` is what the client's errno stands for.
    MigrationFailed {
        /// `VF n`.
        function: &'a str,
        /// The socket.
        socket: &'a Path,
        /// The failure.
        #[serde(flatten)]
        failure: FailureView,
    },
    /// Something failed that ends the server.
    Error {
        /// What, in words.
        message: String,
    },
}

impl Event<'_> {
    /// The event as a sentence, for stderr.
    fn text(&self) -> String {
        match self {
            Self::Listening {
                function,
                socket,
                nqn,
            } if *function == "control" => {
                format!("control socket of {nqn} on {}", socket.display())
            }
            Self::Listening {
                function,
                socket,
                nqn,
            } => format!("serving {function} of {nqn} on {}", socket.display()),
            Self::Ready { nqn } => format!("{nqn}: every socket listens"),
            Self::ClientAttached { function, socket } => {
                format!("{function} ({}): client attached", socket.display())
            }
            Self::ClientDetached {
                function,
                socket,
                error,
            } => match error {
                None => format!("{function} ({}): client detached", socket.display()),
                Some(error) => {
                    format!("{function} ({}): client dropped: {error}", socket.display())
                }
            },
            Self::MigrationState {
                function,
                socket,
                from,
                to,
            } => format!(
                "{function} ({}): migration {from} -> {to}",
                socket.display()
            ),
            Self::MigrationFailed {
                function,
                socket,
                failure,
            } => format!(
                "{function} ({}): {} failed ({}): {}",
                socket.display(),
                failure.request,
                failure.errno_name.as_deref().unwrap_or("errno"),
                failure.reason
            ),
            Self::Error { message } => format!("error: {message}"),
        }
    }
}

/// Where events go: JSON lines on stdout, or sentences on stderr.
#[derive(Debug)]
pub struct Events {
    json: bool,
    /// One line at a time, whichever thread reports.
    lock: Mutex<()>,
}

impl Events {
    /// Events as JSON lines on stdout (`json`) or sentences on stderr.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            lock: Mutex::new(()),
        }
    }

    /// Reports `event`. A closed stdout is no reason to stop serving, so write errors are
    /// ignored.
    pub fn emit(&self, event: &Event<'_>) {
        let _line = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
            }
        } else {
            eprintln!("{}", event.text());
        }
    }
}

/// A served function's identity in events.
#[derive(Debug)]
struct Seen {
    events: Arc<Events>,
    functions: Arc<Functions>,
    /// 0 the PF, else the VFN.
    index: u16,
    name: String,
    socket: PathBuf,
}

impl Seen {
    fn state_change(&self, from: DeviceState, to: DeviceState) {
        if from != to {
            self.events.emit(&Event::MigrationState {
                function: &self.name,
                socket: &self.socket,
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }

    fn failed(&self, status: &MigrationStatus) {
        if let Some(failure) = &status.last_failure {
            self.events.emit(&Event::MigrationFailed {
                function: &self.name,
                socket: &self.socket,
                failure: FailureView::new(failure),
            });
        }
    }
}

/// A device whose client and migration events are reported; everything else goes straight to
/// the device (doorbells do not pass here at all: they are in shared memory).
pub struct Observed {
    device: Arc<dyn Device>,
    seen: Arc<Seen>,
    migration: Option<ObservedMigration>,
}

/// The migration handle of an [`Observed`] device.
struct ObservedMigration {
    device: Arc<dyn Device>,
    seen: Arc<Seen>,
}

impl Observed {
    /// `device`, function `index` (0 the PF, else the VFN) called `name`, served on `socket`.
    pub fn new(
        device: Arc<dyn Device>,
        index: u16,
        name: String,
        socket: PathBuf,
        events: Arc<Events>,
        functions: Arc<Functions>,
    ) -> Self {
        let seen = Arc::new(Seen {
            events,
            functions,
            index,
            name,
            socket,
        });
        let migration = device.migration().is_some().then(|| ObservedMigration {
            device: device.clone(),
            seen: seen.clone(),
        });
        Self {
            device,
            seen,
            migration,
        }
    }
}

impl Device for Observed {
    fn num_regions(&self) -> u32 {
        self.device.num_regions()
    }

    fn num_irqs(&self) -> u32 {
        self.device.num_irqs()
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        self.device.region(index)
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.device.region_read(index, offset, buf)
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        // A doorbell cannot move the migration state: no state lock taken per doorbell.
        if self.write_returns_at_once(index, offset, data.len() as u64) {
            return self.device.region_write(index, offset, data);
        }
        // A function-level reset through configuration space moves the migration state too.
        let before = self.device.migration().map(|m| m.state());
        let result = self.device.region_write(index, offset, data);
        if let (Some(from), Some(m)) = (before, self.device.migration()) {
            self.seen.state_change(from, m.state());
        }
        result
    }

    fn write_returns_at_once(&self, index: u32, offset: u64, len: u64) -> bool {
        // Such a write cannot move the migration state: nothing to observe.
        self.device.write_returns_at_once(index, offset, len)
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        self.device.irq_info(index)
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        self.device.set_irqs(index, request)
    }

    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.device.dma_map(region)
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        self.device.dma_unmap(iova, size)
    }

    fn reset(&self) -> Result<(), Errno> {
        let before = self.device.migration().map(|m| m.state());
        let result = self.device.reset();
        if let (Some(from), Some(m)) = (before, self.device.migration()) {
            self.seen.state_change(from, m.state());
        }
        result
    }

    fn disconnected(&self) {
        self.device.disconnected();
    }

    fn migration(&self) -> Option<&dyn Migratable> {
        self.migration.as_ref().map(|m| m as &dyn Migratable)
    }

    fn client_attached(&self) {
        self.seen.functions.set_attached(self.seen.index, true);
        self.seen.events.emit(&Event::ClientAttached {
            function: &self.seen.name,
            socket: &self.seen.socket,
        });
        self.device.client_attached();
    }

    fn client_detached(&self, error: Option<&dyn std::error::Error>) {
        self.seen.functions.set_attached(self.seen.index, false);
        self.seen.events.emit(&Event::ClientDetached {
            function: &self.seen.name,
            socket: &self.seen.socket,
            error: error.map(ToString::to_string),
        });
        self.device.client_detached(error);
    }
}

impl ObservedMigration {
    /// The wrapped device's handle (present: an `ObservedMigration` exists only then).
    fn inner(&self) -> Result<&dyn Migratable, Errno> {
        self.device.migration().ok_or(Errno::ENOTTY)
    }

    /// `result` of a data request, reporting the failure.
    fn data<T>(&self, inner: &dyn Migratable, result: Result<T, Errno>) -> Result<T, Errno> {
        if result.is_err() {
            self.seen.failed(&inner.status());
        }
        result
    }
}

impl Migratable for ObservedMigration {
    fn flags(&self) -> MigrationFlags {
        self.inner().map_or(MigrationFlags::empty(), |m| m.flags())
    }

    fn state(&self) -> DeviceState {
        self.inner().map_or(DeviceState::Error, |m| m.state())
    }

    fn set_state(&self, target: DeviceState) -> Result<(), Errno> {
        let inner = self.inner()?;
        let from = inner.state();
        let result = inner.set_state(target);
        if result.is_err() {
            self.seen.failed(&inner.status());
        }
        self.seen.state_change(from, inner.state());
        result
    }

    fn stop_copy_length(&self) -> Result<u64, Errno> {
        self.inner()?.stop_copy_length()
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let inner = self.inner()?;
        let result = inner.read(buf);
        self.data(inner, result)
    }

    fn write(&self, data: &[u8]) -> Result<(), Errno> {
        let inner = self.inner()?;
        let result = inner.write(data);
        self.data(inner, result)
    }

    fn dma_logging_start(&self, page_size: u64, ranges: &[DmaLogRange]) -> Result<(), Errno> {
        self.inner()?.dma_logging_start(page_size, ranges)
    }

    fn dma_logging_stop(&self) -> Result<(), Errno> {
        self.inner()?.dma_logging_stop()
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        self.inner()?
            .dma_logging_report(iova, length, page_size, bitmap)
    }

    fn disconnected(&self) {
        if let Ok(inner) = self.inner() {
            let from = inner.state();
            inner.disconnected();
            self.seen.state_change(from, inner.state());
        }
    }

    fn status(&self) -> MigrationStatus {
        match self.inner() {
            Ok(inner) => inner.status(),
            Err(_) => unreachable_status(),
        }
    }
}

/// The status of a handle whose device has no migration: cannot happen (an
/// `ObservedMigration` exists only for a device with one), answered as an idle device.
fn unreachable_status() -> MigrationStatus {
    MigrationStatus {
        flags: MigrationFlags::empty(),
        state: DeviceState::Running,
        session: None,
        logging: None,
        last_failure: None,
    }
}
