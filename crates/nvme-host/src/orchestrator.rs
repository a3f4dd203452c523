//! The migration orchestrator: the VMM's part of a live migration of a vfio-user NVMe function.
//!
//! The orchestrator holds the guest memory (a memfd both servers map) and the connection to the
//! server the guest's device lives on. [`Orchestrator::migrate`] moves the device to another
//! server while the guest keeps doing I/O:
//!
//! 1. connect to the destination and DMA-map the guest memory there, before anything stops;
//! 2. start DMA logging on the source (checked even though the memory is shared);
//! 3. destination → RESUMING; source → PRE_COPY; stream pre-copy rounds (each what the device
//!    reports pending, MIG_DATA_SIZE, when it starts) in slices, paced to `max_bandwidth`,
//!    measuring the stream and dirty rates; [`converge`] decides when to switch over (what is
//!    left fits the downtime limit), how hard to throttle a guest that dirties faster than the
//!    stream moves (its submissions are admitted at a bounded rate through [`SwitchableBar`],
//!    so it slows but keeps completing I/O) and when to give up (the timeout);
//! 4. **blackout**: pause the guest's doorbell writes (what pausing vCPUs does), source →
//!    STOP_COPY (which suspends the controller), stream the rest, destination → STOP (validates
//!    the stream and sets the controller state) → RUNNING, point the guest's doorbells at the
//!    destination and let the buffered doorbell writes through;
//! 5. collect the dirty-page report, stop logging, end the source's session and disconnect; a
//!    failure here is reported ([`MigrationReport::source_release_error`]) but does not fail
//!    the migration: the device already runs on the destination.
//!
//! Any failure before the destination runs aborts: the source goes back to RUNNING, the
//! doorbells go back to the source, and nothing the guest did is lost. A destination that does
//! not answer STOP → RUNNING is asked whether it started before anything is resumed: if it
//! runs, the migration completes; if it stays silent, neither side is resumed
//! ([`OrchestratorError::Undecided`]), since running the device on both would complete the
//! guest's commands twice.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use nvme_spec::registers::Cap;
use nvme_spec::registers::Register;
use vfio_migration::DeviceState;
use vfu::client::Client;
use vfu::client::ClientError;
use vfu::client::PendingMigData;

use crate::memory::HostMemory;
use crate::vfio_user_bar::TransportError;
use crate::vfio_user_bar::VfioUserBar;
use crate::vfio_user_bar::dma_map_host_memory;
use vfu::pci::BAR0_REGION_INDEX;

pub mod converge;
mod gate;
mod report;

pub use converge::SwitchReason;
pub use gate::SwitchableBar;
pub use report::MigrationPhase;
pub use report::MigrationProgress;
pub use report::MigrationReport;
pub use report::Round;

use converge::Converge;
use converge::ConvergeLimits;
use converge::Decision;
use converge::Rates;
use converge::Sample;

/// Page size of the DMA-logging bitmap.
const LOG_PAGE: u64 = 4096;
/// How many times a destination that did not answer STOP → RUNNING is asked for its state
/// (each waits the client's timeout) before the outcome is declared unknown.
const START_CONFIRM_ATTEMPTS: u32 = 3;

/// Whether `e` is the server's refusal (an errno reply), as opposed to silence or a broken
/// connection that leaves open whether the request was carried out.
fn is_errno(e: &OrchestratorError) -> bool {
    matches!(
        e,
        OrchestratorError::Step {
            source: TransportError::Client(ClientError::Errno { .. }),
            ..
        }
    )
}
/// A pre-copy slice (one pump call between measurements) is about this long's worth of
/// stream at the measured (or capped) rate.
const SLICE_TIME: Duration = Duration::from_millis(100);
/// The first slice, before any rate is measured (without a bandwidth cap).
const FIRST_SLICE: u64 = 16 << 20;
/// Slices are at least this (so pacing a low cap does not turn into a request per page).
const MIN_SLICE: u64 = 64 << 10;
/// Slices are at most this.
const MAX_SLICE: u64 = 256 << 20;
/// A pre-copy round that found nothing to send waits this long before the next one.
const IDLE_ROUND_PAUSE: Duration = Duration::from_millis(10);
/// MIG_DATA_READ requests kept outstanding on the source while relaying, and MIG_DATA_WRITE
/// requests on the destination.
const IN_FLIGHT: usize = 4;
/// Reads per batch of a pump, during which both connections are held (see `pump_batch`).
const BATCH_CHUNKS: u32 = 16;

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
    /// Pre-copy did not converge in time: what is left would not stream within the downtime
    /// limit.
    #[error(
        "pre-copy did not converge within {timeout:?}: {} MiB left would take {} at the \
         measured {:.0} MB/s, above the downtime limit of {downtime_limit:?} (the guest was \
         throttled up to {} %); allow a longer downtime limit or timeout, or slow the guest \
         with a lower dirty limit",
        remaining >> 20,
        expected_downtime.map_or("unknown time".to_owned(), |d| format!("{d:.0?}")),
        report.stream_rate / 1e6,
        report.throttle_percent
    )]
    GaveUp {
        /// The timeout that passed.
        timeout: Duration,
        /// The data left (MIG_DATA_SIZE).
        remaining: u64,
        /// How long streaming it was expected to take.
        expected_downtime: Option<Duration>,
        /// The downtime limit it did not fit.
        downtime_limit: Duration,
        /// What pre-copy did until then.
        report: Box<MigrationReport>,
    },
    /// The migration failed and the source was resumed; the guest continues there.
    #[error("migration aborted, the device keeps running on the source: {0}")]
    Aborted(Box<OrchestratorError>),
    /// The destination got STOP → RUNNING but neither answered nor closed the connection, so
    /// whether it runs the device is unknown; neither side was resumed (resuming the source
    /// could run the device twice on the same guest memory). Ask the destination's state: if it
    /// runs, the device lives there; otherwise reset it and resume the source.
    #[error(
        "the destination did not confirm whether it started the device ({0}); neither side was \
         resumed: check the destination's migration state, then resume the side that is not running"
    )]
    Undecided(Box<OrchestratorError>),
    /// The migration failed and the source could not be resumed either.
    #[error("migration failed ({failure}) and the source could not be resumed: {resume}")]
    Stranded {
        /// The original failure.
        failure: Box<OrchestratorError>,
        /// Why the resume failed.
        resume: Box<OrchestratorError>,
    },
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

    /// The error of a failed `step` on this `side`.
    fn failure(&self, step: &'static str, side: &'static str, e: ClientError) -> OrchestratorError {
        OrchestratorError::Step {
            step,
            side,
            socket: self.socket.clone(),
            source: TransportError::Client(e),
        }
    }

    fn call<T>(
        &self,
        step: &'static str,
        side: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, OrchestratorError> {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut client).map_err(|e| self.failure(step, side, e))
    }
}

/// Knobs of one migration; the first four are QEMU's migration parameters of the same names.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// The longest blackout to accept: switch over only when what is left would stream within
    /// it at the measured stream rate (QEMU's `downtime-limit`, 300 ms by default).
    pub downtime_limit: Duration,
    /// Cap on the pre-copy stream, bytes per second (QEMU's `max-bandwidth`); `None` streams
    /// as fast as the servers go. The blackout streams uncapped.
    pub max_bandwidth: Option<u64>,
    /// Throttle the guest while it dirties more than this many bytes per second (QEMU's
    /// `vcpu-dirty-limit`); `None` throttles while it dirties more than half the stream rate
    /// (QEMU's auto-converge with its 50 % trigger).
    pub dirty_limit: Option<u64>,
    /// Give up (resume on the source, nothing lost) when pre-copy has not converged within
    /// this.
    pub timeout: Duration,
    /// Also write the migration stream to this file (for `vfio-nvme state decode`).
    pub save_stream: Option<PathBuf>,
}

impl MigrateOptions {
    /// The default downtime limit (QEMU's).
    pub const DEFAULT_DOWNTIME_LIMIT: Duration = Duration::from_millis(300);
    /// The default timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    fn limits(&self) -> ConvergeLimits {
        ConvergeLimits {
            downtime_limit: self.downtime_limit,
            dirty_limit: self.dirty_limit.map(|b| b as f64),
            timeout: self.timeout,
        }
    }
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            downtime_limit: Self::DEFAULT_DOWNTIME_LIMIT,
            max_bandwidth: None,
            dirty_limit: None,
            timeout: Self::DEFAULT_TIMEOUT,
            save_stream: None,
        }
    }
}

/// One migration's bookkeeping while [`Orchestrator::transfer`] runs.
struct Transfer<'a> {
    started: Instant,
    report: &'a mut MigrationReport,
    blackout_start: &'a mut Option<Instant>,
    progress: &'a mut dyn FnMut(&MigrationProgress),
}

impl Transfer<'_> {
    /// Hands the caller the progress event for `phase` at `now`.
    fn tell(&mut self, phase: MigrationPhase, policy: &Converge, now: Sample) {
        let rates = policy.rates().unwrap_or_default();
        let event = MigrationProgress {
            phase,
            round: self.report.precopy_rounds + u32::from(phase == MigrationPhase::PreCopy),
            elapsed: self.started.elapsed(),
            sent: now.sent,
            remaining: now.remaining,
            stream_rate: rates.stream,
            dirty_rate: rates.dirty,
            throttle_percent: policy.throttle_percent(),
            eta: policy.eta(now.remaining),
        };
        (self.progress)(&event);
    }
}

/// The next pre-copy slice: about [`SLICE_TIME`] of stream at the measured rate, or at the
/// cap when that is lower.
fn slice(policy: &Converge, cap: Option<u64>) -> u64 {
    let measured = policy.rates().map(|r| r.stream).filter(|r| *r > 0.0);
    let rate = match (measured, cap) {
        (Some(m), Some(c)) => m.min(c as f64),
        (Some(m), None) => m,
        (None, Some(c)) => c as f64,
        (None, None) => return FIRST_SLICE,
    };
    ((rate * SLICE_TIME.as_secs_f64()) as u64).clamp(MIN_SLICE, MAX_SLICE)
}

/// Keeps pre-copy at most at `cap` bytes per second: having moved `sent` bytes since `start`,
/// sleeps until that is what the cap allows.
fn pace(cap: Option<u64>, sent: u64, start: Instant) {
    if let Some(cap) = cap.filter(|c| *c > 0) {
        let due = Duration::from_secs_f64(sent as f64 / cap as f64);
        if let Some(early) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(early);
        }
    }
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

    /// Whether the server the device lives on now lets the client map BAR0's doorbell page
    /// (`false`: its doorbells are trapped, each register write a message).
    pub fn doorbells_mapped(&self) -> bool {
        self.current.bar.doorbells_mapped()
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
        self.migrate_with_progress(destination, options, &mut |_| {})
    }

    /// [`migrate`](Self::migrate), handing `progress` a [`MigrationProgress`] after every
    /// slice of pre-copy and when the blackout starts.
    pub fn migrate_with_progress(
        &mut self,
        destination: &Path,
        options: &MigrateOptions,
        progress: &mut dyn FnMut(&MigrationProgress),
    ) -> Result<MigrationReport, OrchestratorError> {
        let started = Instant::now();
        if same_socket(destination, &self.current.socket) {
            return Err(OrchestratorError::SameSocket {
                destination: destination.to_owned(),
                source_socket: self.current.socket.clone(),
            });
        }
        // Everything that can fail without undoing anything comes before DMA logging starts.
        let mut copy = options
            .save_stream
            .as_deref()
            .map(StreamCopy::create)
            .transpose()?;
        let dest = Endpoint::connect(destination, &self.memory, "destination")?;
        let src = &self.current;
        let guest = (self.memory.iova(), self.memory.len());
        let logging = src.call("starting DMA logging", "source", |c| {
            c.dma_logging_start(LOG_PAGE, &[guest])
        });
        if let Err(failure) = logging {
            // A start that went unanswered (a stopped or slow source) is still carried out
            // when the source gets to it, and would leave logging on: the next migration's
            // start would then be refused (EBUSY). The server takes requests in order, so a
            // stop sent now comes after it and undoes it.
            let _ = src.call("stopping DMA logging", "source", |c| c.dma_logging_stop());
            return Err(failure);
        }
        let mut report = MigrationReport {
            from: src.socket.clone(),
            to: dest.socket.clone(),
            downtime_limit: options.downtime_limit,
            ..MigrationReport::default()
        };
        let mut blackout_start = None;
        let result = Self::transfer(
            src,
            &dest,
            &self.bar,
            options,
            &mut Transfer {
                started,
                report: &mut report,
                blackout_start: &mut blackout_start,
                progress,
            },
            copy.as_mut(),
        );
        // Counting and throttling end with pre-copy, whatever its outcome.
        self.bar.stop_metering();
        match result {
            Ok(()) => {}
            Err(undecided @ OrchestratorError::Undecided(_)) => {
                self.bar.abandon();
                return Err(undecided);
            }
            Err(failure) => return Err(self.abort(failure, &dest)),
        }
        let blackout = blackout_start.map_or(Duration::ZERO, |t: Instant| t.elapsed());
        self.bar.resume(Some(dest.bar.clone()));
        report.blackout = blackout;
        // The device runs on the destination from here on, whatever the source does next: a
        // source that fails to release its side does not undo the migration.
        let src = std::mem::replace(&mut self.current, dest);
        if let Err(e) = Self::release_source(&src, guest, &mut report) {
            tracing::warn!("the device runs on the destination; releasing the source failed: {e}");
            report.source_release_error = Some(e.to_string());
        }
        report.total = started.elapsed();
        Ok(report)
    }

    /// After the switch-over: collects the source's dirty-page report, stops DMA logging and
    /// ends the saving session. (Dropping the endpoint then disconnects from the source.)
    fn release_source(
        src: &Endpoint,
        guest: (u64, u64),
        report: &mut MigrationReport,
    ) -> Result<(), OrchestratorError> {
        // The source's device wrote guest memory up to the switch-over; a VMM copying guest RAM
        // would send these pages. Here the memory is shared, so they are only counted.
        let bitmap = src.call("collecting the dirty-page report", "source", |c| {
            c.dma_logging_report(guest.0, guest.1, LOG_PAGE)
        })?;
        report.dirty_pages = bitmap.iter().map(|w| u64::from(w.count_ones())).sum();
        src.call("stopping DMA logging", "source", |c| c.dma_logging_stop())?;
        src.call("ending the saving session", "source", |c| {
            c.set_migration_state(DeviceState::Stop)
        })
    }

    /// Streams the device state; on success the destination runs. Doorbells stay paused.
    fn transfer(
        src: &Endpoint,
        dest: &Endpoint,
        bar: &SwitchableBar,
        options: &MigrateOptions,
        run: &mut Transfer<'_>,
        mut copy: Option<&mut StreamCopy>,
    ) -> Result<(), OrchestratorError> {
        let cap = src.call("reading CAP (the doorbell stride)", "source", |c| {
            c.region_read(BAR0_REGION_INDEX, Register::CAP.0, 8)
        })?;
        let cap = <[u8; 8]>::try_from(cap.as_slice()).map_or(0, u64::from_le_bytes);
        bar.start_metering(Cap::from(cap).doorbell_stride());
        dest.call("entering RESUMING", "destination", |c| {
            c.set_migration_state(DeviceState::Resuming)
        })?;
        src.call("entering PRE_COPY", "source", |c| {
            c.set_migration_state(DeviceState::PreCopy)
        })?;
        let precopy = Instant::now();
        let sample = |sent: u64| -> Result<Sample, OrchestratorError> {
            let remaining = src.call(
                "asking the remaining data size (MIG_DATA_SIZE)",
                "source",
                |c| c.mig_data_size(),
            )?;
            Ok(Sample {
                elapsed: precopy.elapsed(),
                sent,
                remaining,
                commands: bar.admitted(),
            })
        };
        let mut now = sample(0)?;
        let mut policy = Converge::new(options.limits(), now);
        let mut throttled_since = None;
        let reason = loop {
            // A round sends what is pending when it starts, not what the guest dirties
            // meanwhile: otherwise a guest writing faster than the copy would keep one round
            // going forever.
            let round_start = now;
            let budget = round_start.remaining.max(1);
            let mut moved = 0u64;
            let end = loop {
                let want = slice(&policy, options.max_bandwidth).min(budget - moved);
                let got = Self::pump(src, dest, copy.as_deref_mut(), want)?;
                moved += got;
                pace(options.max_bandwidth, now.sent + got, precopy);
                now = sample(now.sent + got)?;
                if got < want || moved >= budget {
                    break now;
                }
                let decision = policy.tick(now);
                Self::apply_throttle(bar, &policy, &mut throttled_since, run.report);
                run.tell(MigrationPhase::PreCopy, &policy, now);
                match decision {
                    Decision::Continue => {}
                    // Timed out with what is left fitting the limit: the round ends here and
                    // its end switches over.
                    Decision::SwitchOver(_) => break now,
                    Decision::GiveUp => {
                        return Err(Self::gave_up(options, &policy, now, run.report));
                    }
                }
            };
            let decision = policy.round_end(end);
            Self::apply_throttle(bar, &policy, &mut throttled_since, run.report);
            let rates = policy.rates().unwrap_or_default();
            let own = Rates::between(round_start, end).unwrap_or_default();
            run.report.rounds.push(Round {
                bytes: moved,
                duration: end.elapsed.saturating_sub(round_start.elapsed),
                remaining: end.remaining,
                stream_rate: own.stream,
                dirty_rate: own.dirty,
                throttle_percent: policy.throttle_percent(),
            });
            run.report.precopy_rounds += 1;
            run.report.precopy_bytes += moved;
            if policy.throttle_percent() > 0 {
                run.report.throttled_rounds += 1;
            }
            run.report.stream_rate = rates.stream;
            run.report.dirty_rate = rates.dirty;
            run.tell(MigrationPhase::PreCopy, &policy, end);
            match decision {
                Decision::Continue if moved == 0 => std::thread::sleep(IDLE_ROUND_PAUSE),
                Decision::Continue => {}
                Decision::SwitchOver(reason) => break reason,
                Decision::GiveUp => return Err(Self::gave_up(options, &policy, end, run.report)),
            }
        };
        run.report.switch_reason = Some(reason);
        run.report.expected_downtime = policy.expected_downtime(now.remaining).unwrap_or_default();
        run.report.throttled = throttled_since.map_or(Duration::ZERO, |t: Instant| t.elapsed());
        run.tell(MigrationPhase::StopCopy, &policy, now);
        // Blackout: the guest's doorbells are held from here until the destination runs; the
        // throttle is lifted first so no writer waits for tokens meanwhile.
        bar.throttle(None);
        bar.pause();
        *run.blackout_start = Some(Instant::now());
        run.report.precopy = run.started.elapsed();
        src.call("entering STOP_COPY", "source", |c| {
            c.set_migration_state(DeviceState::StopCopy)
        })?;
        run.report.stop_copy_bytes = Self::pump(src, dest, copy, u64::MAX)?;
        run.report.stream_bytes = run.report.precopy_bytes + run.report.stop_copy_bytes;
        dest.call(
            "loading the device state (RESUMING → STOP)",
            "destination",
            |c| c.set_migration_state(DeviceState::Stop),
        )?;
        let started = dest.call(
            "starting the device (STOP → RUNNING)",
            "destination",
            |c| c.set_migration_state(DeviceState::Running),
        );
        match started {
            Ok(()) => Ok(()),
            Err(refused) if is_errno(&refused) => Err(refused),
            // No answer: a slow or stopped destination carries the request out later, and then
            // it runs the device. Resuming the source as well would run the device twice on the
            // same guest memory (commands completed twice), so find out first.
            Err(silent) => match Self::destination_runs(dest) {
                Some(true) => {
                    tracing::warn!("the destination started the device after all: {silent}");
                    Ok(())
                }
                Some(false) => Err(silent),
                None => Err(OrchestratorError::Undecided(Box::new(silent))),
            },
        }
    }

    /// After STOP → RUNNING went unanswered: asks the destination, for a few of its timeouts,
    /// whether it runs the device. `Some(false)` also when its connection is gone (a server that
    /// has gone runs nothing more); `None` when it stays silent.
    fn destination_runs(dest: &Endpoint) -> Option<bool> {
        for _ in 0..START_CONFIRM_ATTEMPTS {
            match dest.call("asking whether the device started", "destination", |c| {
                c.migration_state()
            }) {
                Ok(state) => return Some(state == DeviceState::Running),
                Err(OrchestratorError::Step {
                    source: TransportError::Client(ClientError::Timeout { .. }),
                    ..
                }) => {}
                Err(_) => return Some(false),
            }
        }
        None
    }

    /// Admits the guest's commands at the policy's rate; notes when throttling began and the
    /// highest level.
    fn apply_throttle(
        bar: &SwitchableBar,
        policy: &Converge,
        since: &mut Option<Instant>,
        report: &mut MigrationReport,
    ) {
        let level = policy.throttle_percent();
        if level > report.throttle_percent {
            report.throttle_percent = level;
            bar.throttle(policy.admit_rate());
            since.get_or_insert_with(Instant::now);
        }
    }

    /// The error of a migration that gave up at `now`.
    fn gave_up(
        options: &MigrateOptions,
        policy: &Converge,
        now: Sample,
        report: &MigrationReport,
    ) -> OrchestratorError {
        OrchestratorError::GaveUp {
            timeout: options.timeout,
            remaining: now.remaining,
            expected_downtime: policy.expected_downtime(now.remaining),
            downtime_limit: options.downtime_limit,
            report: Box::new(report.clone()),
        }
    }

    /// Moves what the source offers now, up to about `budget` bytes, into the destination (and
    /// `copy`); returns the byte count.
    ///
    /// Pipelined: [`IN_FLIGHT`] MIG_DATA_READ requests stay outstanding on the source and as
    /// many MIG_DATA_WRITE requests on the destination, so the source produces the next chunks
    /// while this process relays one and the destination applies the previous ones. Each read
    /// reply's data is written on as it arrives without entering this process: it is spliced
    /// from the source's socket through a pipe into the destination's (with a stream copy to
    /// keep, it is received here and sent from the received message instead). Reads issued
    /// before a short reply ("no more data now") may still bring data, which is relayed in
    /// order, so a round can carry a few chunks more than `budget`.
    ///
    /// The source's connection is let go between batches of [`BATCH_CHUNKS`] reads (the
    /// guest's register accesses go there); the destination's is held throughout (nothing else
    /// uses it while the device runs on the source), so its writes stay in flight across a
    /// batch's end and the destination keeps applying while the source starts the next batch.
    fn pump(
        src: &Endpoint,
        dest: &Endpoint,
        mut copy: Option<&mut StreamCopy>,
        budget: u64,
    ) -> Result<u64, OrchestratorError> {
        let mut target = dest.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut writes = VecDeque::with_capacity(IN_FLIGHT);
        let mut total = 0u64;
        loop {
            let (moved, more) = Self::pump_batch(
                src,
                dest,
                &mut target,
                &mut writes,
                copy.as_deref_mut(),
                budget - total,
            )?;
            total += moved;
            if !more || total >= budget {
                break;
            }
        }
        // Every write sent is answered before the connection is let go (replies come in
        // request order); after a failure the abort resets the destination.
        for pending in writes {
            target
                .finish_mig_data_write(pending)
                .map_err(|e| dest.failure("writing migration data", "destination", e))?;
        }
        Ok(total)
    }

    /// One batch of [`pump`](Self::pump): at most [`BATCH_CHUNKS`] reads, with the source's
    /// connection held. Replies come in request order and a request of another thread would
    /// take the reply of one in flight, so the guest's register accesses wait for the end of a
    /// batch (a few milliseconds) instead. Writes to `target` still in flight at the end are
    /// left in `writes` for the next batch. Returns the bytes moved and whether the source may
    /// have more.
    fn pump_batch(
        src: &Endpoint,
        dest: &Endpoint,
        target: &mut Client,
        writes: &mut VecDeque<PendingMigData>,
        mut copy: Option<&mut StreamCopy>,
        budget: u64,
    ) -> Result<(u64, bool), OrchestratorError> {
        let mut source = src.client.lock().unwrap_or_else(|p| p.into_inner());
        let chunk = u64::from(source.max_data_xfer_size().min(target.max_data_xfer_size()));
        let read_failed = |e| src.failure("reading migration data", "source", e);
        let write_failed = |e| dest.failure("writing migration data", "destination", e);
        let mut reads = VecDeque::with_capacity(IN_FLIGHT);
        // Without a copy to keep, the data stays in the kernel (spliced from one socket to
        // the other); a copy needs it here.
        let relay = copy.is_none();
        let (mut asked, mut issued, mut moved, mut ended) = (0u64, 0u32, 0u64, false);
        loop {
            while !ended && reads.len() < IN_FLIGHT && asked < budget && issued < BATCH_CHUNKS {
                // At most the u32 transfer size.
                let want = u32::try_from(chunk.min(budget - asked)).unwrap_or(u32::MAX);
                let sent = if relay {
                    source.send_mig_data_read_relayed(want)
                } else {
                    source.send_mig_data_read(want)
                };
                reads.push_back(sent.map_err(read_failed)?);
                asked += u64::from(want);
                issued += 1;
            }
            let Some(pending) = reads.pop_front() else {
                return Ok((moved, !ended));
            };
            let reply = if relay {
                Relayed::Kernel(source.finish_mig_data_relay(pending).map_err(read_failed)?)
            } else {
                Relayed::Here(source.finish_mig_data_read(pending).map_err(read_failed)?)
            };
            ended |= reply.is_short();
            let len = reply.len();
            if len > 0 {
                if writes.len() == IN_FLIGHT
                    && let Some(oldest) = writes.pop_front()
                {
                    target.finish_mig_data_write(oldest).map_err(write_failed)?;
                }
                let sent = match reply {
                    Relayed::Kernel(chunk) => target.send_mig_data_write_relay(chunk),
                    Relayed::Here(chunk) => {
                        let sent = target.send_mig_data_write(chunk.data());
                        if let Some(copy) = copy.as_deref_mut() {
                            copy.write(chunk.data())?;
                        }
                        sent
                    }
                };
                writes.push_back(sent.map_err(write_failed)?);
            }
            moved += len as u64;
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
            Err(resume) => {
                self.bar.abandon();
                OrchestratorError::Stranded {
                    failure: Box::new(failure),
                    resume: Box::new(resume),
                }
            }
        }
    }
}

/// A chunk of the stream on its way from the source to the destination.
enum Relayed {
    /// Left in the kernel: nothing is copied through this process.
    Kernel(vfu::client::RelayChunk),
    /// Received here, for the stream copy.
    Here(vfu::client::MigDataChunk),
}

impl Relayed {
    fn len(&self) -> usize {
        match self {
            Self::Kernel(chunk) => chunk.len(),
            Self::Here(chunk) => chunk.data().len(),
        }
    }

    fn is_short(&self) -> bool {
        match self {
            Self::Kernel(chunk) => chunk.is_short(),
            Self::Here(chunk) => chunk.is_short(),
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
