//! The migration orchestrator: the VMM's part of a live migration of a vfio-user NVMe function.
//!
//! The orchestrator holds the guest memory (a memfd both servers map) and the connection to the
//! server the guest's device lives on. [`Orchestrator::migrate`] moves the device to another
//! server while the guest keeps doing I/O:
//!
//! 1. connect to the destination and DMA-map the guest memory there, before anything stops;
//! 2. start DMA logging on the source (checked even though the memory is shared);
//! 3. destination → RESUMING; source → PRE_COPY; stream rounds of pre-copy data, each as much
//!    as the device reports pending when it starts, until a round carries little or the round
//!    limit is hit; from the third round the guest's doorbells are held while a round streams
//!    (auto-converge, like throttling vCPUs), so a guest dirtying data faster than it can be
//!    copied still converges;
//! 4. **blackout**: pause the guest's doorbell writes (what pausing vCPUs does), source →
//!    STOP_COPY (which suspends the controller), stream the rest, destination → STOP (validates
//!    the stream and sets the controller state) → RUNNING, point the guest's doorbells at the
//!    destination and let the buffered doorbell writes through;
//! 5. collect the dirty-page report, stop logging, end the source's session and disconnect.
//!
//! Any failure before the destination runs aborts: the source goes back to RUNNING, the
//! doorbells go back to the source, and nothing the guest did is lost.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use vfio_migration::DeviceState;
use vfu::client::Client;
use vfu::client::ClientError;

use crate::driver::Bar;
use crate::memory::HostMemory;
use crate::vfio_user_bar::TransportError;
use crate::vfio_user_bar::VfioUserBar;
use crate::vfio_user_bar::dma_map_host_memory;

/// Page size of the DMA-logging bitmap.
const LOG_PAGE: u64 = 4096;
/// Bytes asked for per MIG_DATA read loop.
const READ_CHUNK: usize = 4 << 20;
/// A pre-copy round's budget when the source cannot estimate its remaining data.
const DEFAULT_ROUND_BUDGET: u64 = 64 << 20;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A step on one of the servers failed.
    #[error("{step} on {side} ({socket}): {source}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// "source" or "destination".
        side: &'static str,
        /// The server's socket.
        socket: PathBuf,
        /// The cause.
        source: TransportError,
    },
    /// The copy of the stream could not be written.
    #[error("cannot write the stream copy {path}: {source}")]
    StreamCopy {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No server answers at a socket: it does not exist, or nobody listens on it.
    #[error("no server on the {side} socket {socket}: {detail}; start `vfio-nvme serve --socket {socket}` there, or check the path", socket = socket.display())]
    NoServer {
        /// "source" or "destination".
        side: &'static str,
        /// The socket.
        socket: PathBuf,
        /// What is there instead.
        detail: &'static str,
    },
    /// Another vfio-user client is attached to the server (EBUSY).
    #[error("the {side} server ({socket}) is busy: another client is attached to its VF; detach that client (`vfio-nvme ctl {socket} status` shows the function) and try again", socket = socket.display())]
    Busy {
        /// "source" or "destination".
        side: &'static str,
        /// The socket.
        socket: PathBuf,
    },
    /// The destination is the socket the device already lives on.
    #[error("the destination {destination} is the source's own socket ({source_socket}): a device cannot migrate onto itself; give the socket of another server", destination = destination.display(), source_socket = source_socket.display())]
    SameSocket {
        /// The destination as given.
        destination: PathBuf,
        /// The source's socket.
        source_socket: PathBuf,
    },
    /// A server refused a request with an errno and said why on its control endpoint.
    #[error("{failure}; the {side} says: {reason}")]
    Refused {
        /// The failed step (an errno reply).
        failure: Box<OrchestratorError>,
        /// "source" or "destination".
        side: &'static str,
        /// The server's reason, in words.
        reason: String,
    },
    /// The migration failed and the source was resumed; the guest continues there.
    #[error("migration aborted, the device keeps running on the source: {0}")]
    Aborted(Box<OrchestratorError>),
    /// The migration failed and the source could not be resumed either.
    #[error("migration failed ({failure}) and the source could not be resumed: {resume}")]
    Stranded {
        /// The original failure.
        failure: Box<OrchestratorError>,
        /// Why the resume failed.
        resume: Box<OrchestratorError>,
    },
}

/// The guest's view of BAR0: registers and doorbells go to the device's current location;
/// doorbell writes can be paused (buffered, latest value per doorbell) while the device moves.
pub struct SwitchableBar {
    current: RwLock<Arc<dyn Bar>>,
    paused: Mutex<Option<BTreeMap<u64, u32>>>,
}

impl std::fmt::Debug for SwitchableBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchableBar").finish()
    }
}

impl SwitchableBar {
    /// Starts with `bar`.
    pub fn new(bar: Arc<dyn Bar>) -> Self {
        Self {
            current: RwLock::new(bar),
            paused: Mutex::new(None),
        }
    }

    fn bar(&self) -> Arc<dyn Bar> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Holds back doorbell writes from now on, as pausing the guest's vCPUs would.
    pub fn pause(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        paused.get_or_insert_with(BTreeMap::new);
    }

    /// Makes `bar` the device's BAR (if given) and releases the held-back doorbell writes to it.
    pub fn resume(&self, bar: Option<Arc<dyn Bar>>) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bar {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = bar;
        }
        if let Some(held) = paused.take() {
            let bar = self.bar();
            for (offset, value) in held {
                bar.doorbell(offset, value);
            }
        }
    }
}

impl Bar for SwitchableBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        self.bar().read32(offset)
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        self.bar().read64(offset)
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.bar().write32(offset, value)
    }

    fn doorbell(&self, offset: u64, value: u32) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        match paused.as_mut() {
            Some(held) => {
                held.insert(offset, value);
            }
            None => {
                drop(paused);
                self.bar().doorbell(offset, value);
            }
        }
    }
}

/// A file the migration stream is copied into.
struct StreamCopy {
    path: PathBuf,
    file: std::fs::File,
}

impl StreamCopy {
    fn create(path: &Path) -> Result<Self, OrchestratorError> {
        let file = std::fs::File::create(path).map_err(|source| OrchestratorError::StreamCopy {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), OrchestratorError> {
        use std::io::Write as _;
        self.file
            .write_all(data)
            .map_err(|source| OrchestratorError::StreamCopy {
                path: self.path.clone(),
                source,
            })
    }
}

/// A connection to one server, with the guest memory mapped.
struct Endpoint {
    socket: PathBuf,
    client: Arc<Mutex<Client>>,
    bar: Arc<VfioUserBar>,
}

impl Endpoint {
    fn connect(
        socket: &Path,
        memory: &HostMemory,
        side: &'static str,
    ) -> Result<Self, OrchestratorError> {
        let step = |step, source| OrchestratorError::Step {
            step,
            side,
            socket: socket.to_owned(),
            source,
        };
        let mut client = Client::connect(socket).map_err(|e| match e {
            ClientError::Connect { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                OrchestratorError::NoServer {
                    side,
                    socket: socket.to_owned(),
                    detail: if source.kind() == io::ErrorKind::NotFound {
                        "the socket does not exist"
                    } else {
                        "nobody listens on the socket (a server that exited?)"
                    },
                }
            }
            ClientError::Busy => OrchestratorError::Busy {
                side,
                socket: socket.to_owned(),
            },
            e => step("connecting", TransportError::Client(e)),
        })?;
        dma_map_host_memory(&mut client, memory).map_err(|e| step("mapping guest memory", e))?;
        let client = Arc::new(Mutex::new(client));
        let bar = Arc::new(VfioUserBar::new(client.clone()).map_err(|e| step("mapping BAR0", e))?);
        Ok(Self {
            socket: socket.to_owned(),
            client,
            bar,
        })
    }

    fn call<T>(
        &self,
        step: &'static str,
        side: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, OrchestratorError> {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut client).map_err(|e| OrchestratorError::Step {
            step,
            side,
            socket: self.socket.clone(),
            source: TransportError::Client(e),
        })
    }
}

/// Knobs of one migration.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Stop pre-copy once a round carries fewer bytes than this (the data left for the blackout).
    pub precopy_threshold: u64,
    /// At most this many pre-copy rounds.
    pub max_rounds: u32,
    /// Pause between pre-copy rounds, letting the guest dirty data the next round sends.
    pub round_pause: Duration,
    /// Also write the migration stream to this file (for `vfio-nvme state decode`).
    pub save_stream: Option<PathBuf>,
    /// Auto-converge: from this pre-copy round on, the guest's doorbells are held while the
    /// round streams (what throttling vCPUs does), so a guest that dirties data faster than it
    /// can be copied cannot keep pre-copy from converging. `None` never throttles.
    pub throttle_from_round: Option<u32>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            precopy_threshold: 4 << 20,
            max_rounds: 8,
            round_pause: Duration::from_millis(20),
            save_stream: None,
            throttle_from_round: Some(3),
        }
    }
}

/// What a migration measured.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct MigrationReport {
    /// Source socket.
    pub from: PathBuf,
    /// Destination socket.
    pub to: PathBuf,
    /// From the start of `migrate` to the source's disconnect.
    pub total: Duration,
    /// Pre-copy rounds streamed.
    pub precopy_rounds: u32,
    /// Bytes streamed during pre-copy.
    pub precopy_bytes: u64,
    /// Pre-copy rounds during which the guest was throttled (auto-converge).
    pub throttled_rounds: u32,
    /// Bytes streamed in STOP_COPY.
    pub stop_copy_bytes: u64,
    /// Whole stream size.
    pub stream_bytes: u64,
    /// Device blackout: source leaves RUNNING (doorbells paused, STOP_COPY requested) →
    /// destination RUNNING with doorbells released.
    pub blackout: Duration,
    /// Guest pages the source device reported dirty (DMA logging).
    pub dirty_pages: u64,
}

/// The VMM: guest memory and the device's current server.
pub struct Orchestrator {
    memory: Arc<HostMemory>,
    current: Endpoint,
    bar: Arc<SwitchableBar>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("socket", &self.current.socket)
            .finish()
    }
}

impl Orchestrator {
    /// Connects to the server at `socket` and maps `memory` (the guest's RAM) there.
    pub fn connect(socket: &Path, memory: Arc<HostMemory>) -> Result<Self, OrchestratorError> {
        let current = Endpoint::connect(socket, &memory, "source")?;
        let bar = Arc::new(SwitchableBar::new(current.bar.clone()));
        Ok(Self {
            memory,
            current,
            bar,
        })
    }

    /// The guest's BAR0, to hand to the NVMe driver; it follows the device across migrations.
    pub fn bar(&self) -> Arc<SwitchableBar> {
        self.bar.clone()
    }

    /// The connection to the server the device currently lives on (for requests the
    /// orchestrator does not wrap, e.g. a test driving the migration states by hand).
    pub fn client(&self) -> &Arc<Mutex<Client>> {
        &self.current.client
    }

    /// The socket of the server the device currently lives on.
    pub fn socket(&self) -> &Path {
        &self.current.socket
    }

    /// Live-migrates the device to the server at `destination`; see the module docs.
    pub fn migrate(
        &mut self,
        destination: &Path,
        options: &MigrateOptions,
    ) -> Result<MigrationReport, OrchestratorError> {
        let started = Instant::now();
        if same_socket(destination, &self.current.socket) {
            return Err(OrchestratorError::SameSocket {
                destination: destination.to_owned(),
                source_socket: self.current.socket.clone(),
            });
        }
        let dest = Endpoint::connect(destination, &self.memory, "destination")?;
        let src = &self.current;
        let guest = (self.memory.iova(), self.memory.len());
        src.call("starting DMA logging", "source", |c| {
            c.dma_logging_start(LOG_PAGE, &[guest])
        })?;
        let mut report = MigrationReport {
            from: src.socket.clone(),
            to: dest.socket.clone(),
            ..MigrationReport::default()
        };
        let mut blackout_start = None;
        let mut copy = options
            .save_stream
            .as_deref()
            .map(StreamCopy::create)
            .transpose()?;
        let result = Self::transfer(
            src,
            &dest,
            &self.bar,
            options,
            &mut report,
            &mut blackout_start,
            copy.as_mut(),
        );
        if let Err(failure) = result {
            return Err(self.abort(failure, &dest));
        }
        let blackout = blackout_start.map_or(Duration::ZERO, |t: Instant| t.elapsed());
        self.bar.resume(Some(dest.bar.clone()));
        report.blackout = blackout;
        // The source's device wrote guest memory up to the switch-over; a VMM copying guest RAM
        // would send these pages. Here the memory is shared, so they are only counted.
        let bitmap = src.call("collecting the dirty-page report", "source", |c| {
            c.dma_logging_report(guest.0, guest.1, LOG_PAGE)
        })?;
        report.dirty_pages = bitmap.iter().map(|w| u64::from(w.count_ones())).sum();
        src.call("stopping DMA logging", "source", |c| c.dma_logging_stop())?;
        src.call("ending the saving session", "source", |c| {
            c.set_migration_state(DeviceState::Stop)
        })?;
        self.current = dest;
        report.total = started.elapsed();
        Ok(report)
    }

    /// Streams the device state; on success the destination runs. Doorbells stay paused.
    fn transfer(
        src: &Endpoint,
        dest: &Endpoint,
        bar: &SwitchableBar,
        options: &MigrateOptions,
        report: &mut MigrationReport,
        blackout_start: &mut Option<Instant>,
        mut copy: Option<&mut StreamCopy>,
    ) -> Result<(), OrchestratorError> {
        dest.call("entering RESUMING", "destination", |c| {
            c.set_migration_state(DeviceState::Resuming)
        })?;
        src.call("entering PRE_COPY", "source", |c| {
            c.set_migration_state(DeviceState::PreCopy)
        })?;
        loop {
            // A round sends what is pending when it starts (the device's estimate of its
            // remaining data, MIG_DATA_SIZE), not what the guest dirties meanwhile: otherwise a
            // guest writing faster than the copy would keep one round going forever.
            let budget = src
                .call("asking the remaining data size", "source", |c| {
                    c.mig_data_size()
                })
                .unwrap_or(DEFAULT_ROUND_BUDGET)
                .max(1);
            let throttle = options
                .throttle_from_round
                .is_some_and(|first| report.precopy_rounds + 1 >= first);
            if throttle {
                bar.pause();
                report.throttled_rounds += 1;
            }
            let pumped = Self::pump(src, dest, copy.as_deref_mut(), budget);
            if throttle {
                bar.resume(None);
            }
            let bytes = pumped?;
            report.precopy_rounds += 1;
            report.precopy_bytes += bytes;
            if bytes < options.precopy_threshold || report.precopy_rounds >= options.max_rounds {
                break;
            }
            if !throttle {
                std::thread::sleep(options.round_pause);
            }
        }
        // Blackout: the guest's doorbells are held from here until the destination runs.
        bar.pause();
        *blackout_start = Some(Instant::now());
        src.call("entering STOP_COPY", "source", |c| {
            c.set_migration_state(DeviceState::StopCopy)
        })?;
        report.stop_copy_bytes = Self::pump(src, dest, copy, u64::MAX)?;
        report.stream_bytes = report.precopy_bytes + report.stop_copy_bytes;
        dest.call(
            "loading the device state (RESUMING → STOP)",
            "destination",
            |c| c.set_migration_state(DeviceState::Stop),
        )?;
        dest.call(
            "starting the device (STOP → RUNNING)",
            "destination",
            |c| c.set_migration_state(DeviceState::Running),
        )?;
        Ok(())
    }

    /// Moves what the source offers now, up to about `budget` bytes, into the destination (and
    /// `copy`); returns the byte count.
    fn pump(
        src: &Endpoint,
        dest: &Endpoint,
        mut copy: Option<&mut StreamCopy>,
        budget: u64,
    ) -> Result<u64, OrchestratorError> {
        let mut total = 0u64;
        loop {
            let want = READ_CHUNK.min(usize::try_from(budget - total).unwrap_or(READ_CHUNK));
            let data = src.call("reading migration data", "source", |c| {
                c.mig_data_read(want)
            })?;
            if !data.is_empty() {
                dest.call("writing migration data", "destination", |c| {
                    c.mig_data_write(&data)
                })?;
                if let Some(copy) = copy.as_deref_mut() {
                    copy.write(&data)?;
                }
            }
            total += data.len() as u64;
            if data.len() < want || total >= budget {
                return Ok(total);
            }
        }
    }

    /// Puts the source back to RUNNING and the doorbells back on it.
    fn abort(&self, failure: OrchestratorError, dest: &Endpoint) -> OrchestratorError {
        // Asked before the reset below, though the server keeps the reason across it.
        let failure = explained(failure);
        // A destination stuck in RESUMING is returned to RUNNING by a reset.
        let _ = dest.call("resetting", "destination", |c| c.reset());
        let src = &self.current;
        let _ = src.call("stopping DMA logging", "source", |c| c.dma_logging_stop());
        match src.call("resuming (→ RUNNING)", "source", |c| {
            c.set_migration_state(DeviceState::Running)
        }) {
            Ok(()) => {
                self.bar.resume(None);
                OrchestratorError::Aborted(Box::new(failure))
            }
            Err(resume) => OrchestratorError::Stranded {
                failure: Box::new(failure),
                resume: Box::new(resume),
            },
        }
    }
}

/// Whether `destination` is the socket file `source` names (the same file under another path
/// too): connecting there would find the device's own server, busy with this orchestrator.
fn same_socket(destination: &Path, source: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(destination), std::fs::metadata(source)) {
        (Ok(d), Ok(s)) => (d.dev(), d.ino()) == (s.dev(), s.ino()),
        _ => destination == source,
    }
}

/// `failure` with the server's reason, when it is an errno reply to a migration request and
/// the server's control endpoint (the same socket; docs/MIGRATION.md, "What a client is told
/// when a step fails") reports a last failure with that errno. Anything else, including a
/// server without the control protocol, leaves `failure` as it is.
fn explained(failure: OrchestratorError) -> OrchestratorError {
    let OrchestratorError::Step {
        side,
        socket,
        source: TransportError::Client(ClientError::Errno { errno, .. }),
        ..
    } = &failure
    else {
        return failure;
    };
    let (side, errno) = (*side, *errno);
    let request = serde_json::json!({ "command": "migration" });
    let reason = vfu::control::request(socket, &request)
        .ok()
        .and_then(|result| {
            let view = result.get("functions")?.get(0)?.get("migration")?.clone();
            serde_json::from_value::<vfu::control::MigrationView>(view).ok()
        })
        .and_then(|view| view.last_failure)
        .filter(|last| last.errno == errno.get())
        .map(|last| last.reason);
    match reason {
        Some(reason) => OrchestratorError::Refused {
            failure: Box::new(failure),
            side,
            reason,
        },
        None => failure,
    }
}
