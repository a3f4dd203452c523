//! `vfio-nvme workload`: the verifying workload against a served VF, optionally live-migrated
//! mid-run (and back); shared by `demo`.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::orchestrator::MigrationProgress;
use nvme_host::orchestrator::MigrationReport;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::orchestrator::OrchestratorError;
use nvme_host::orchestrator::Round;
use nvme_host::orchestrator::SwitchReason;
use nvme_host::workload;
use nvme_host::workload::Ledger;
use nvme_host::workload::Report;
use nvme_host::workload::Snapshot;
use nvme_host::workload::VerifyOptions;
use nvme_host::workload::WorkloadConfig;
use serde::Serialize;

use crate::exit::VerificationFailed;
use crate::output::Output;
use crate::output::Verdict;

/// I/O virtual address of the guest memory the workload uses.
const GUEST_IOVA: u64 = 0x1_0000_0000;
/// `WorkloadConfig::nsid` meaning "the controller's first active namespace".
pub const AUTO_NSID: u32 = 0;

/// One planned migration: where to, and how long after the previous event.
#[derive(Clone, Debug)]
pub struct PlannedMigration {
    /// Destination socket.
    pub to: PathBuf,
    /// Delay after the workload start (first) or the previous migration's end.
    pub after: Duration,
    /// How it converges, and where to save a copy of its stream.
    pub options: MigrateOptions,
}

/// One pre-copy round as reported; rates in MB/s (10^6 bytes per second).
#[derive(Clone, Debug, Serialize)]
pub struct RoundRecord {
    /// Bytes streamed in the round.
    pub bytes: u64,
    /// How long it took, ms.
    pub duration_ms: f64,
    /// The data the device reported left at its end.
    pub remaining_bytes: u64,
    /// The stream rate measured at its end.
    pub stream_mb_s: f64,
    /// The dirty rate measured at its end.
    pub dirty_mb_s: f64,
    /// The throttle level at its end, percent.
    pub throttle_percent: u8,
}

impl From<&Round> for RoundRecord {
    fn from(r: &Round) -> Self {
        Self {
            bytes: r.bytes,
            duration_ms: ms(r.duration),
            remaining_bytes: r.remaining,
            stream_mb_s: r.stream_rate / 1e6,
            dirty_mb_s: r.dirty_rate / 1e6,
            throttle_percent: r.throttle_percent,
        }
    }
}

/// One migration as it happened, on the workload's clock; durations in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationRecord {
    /// Source socket.
    pub from: PathBuf,
    /// Destination socket.
    pub to: PathBuf,
    /// From the start of the migration to the source's disconnect.
    pub total_ms: f64,
    /// Device blackout: the source leaving RUNNING to the destination running.
    pub blackout_ms: f64,
    /// Pre-copy rounds streamed.
    pub precopy_rounds: u32,
    /// Bytes streamed during pre-copy.
    pub precopy_bytes: u64,
    /// Each pre-copy round.
    pub rounds: Vec<RoundRecord>,
    /// Pre-copy rounds that ended with the guest throttled.
    pub throttled_rounds: u32,
    /// The highest throttle level, percent.
    pub throttle_percent: u8,
    /// How long the guest was throttled, ms.
    pub throttled_ms: f64,
    /// I/O the guest completed while it was throttled (timeline buckets wholly inside).
    pub ios_while_throttled: u64,
    /// From the start to the switch-over, ms.
    pub precopy_ms: f64,
    /// The stream rate last measured in pre-copy, MB/s.
    pub stream_mb_s: f64,
    /// The dirty rate last measured in pre-copy, MB/s.
    pub dirty_mb_s: f64,
    /// The downtime limit, ms.
    pub downtime_limit_ms: f64,
    /// The blackout expected at the switch-over (what was left at the stream rate), ms.
    pub expected_downtime_ms: f64,
    /// Why pre-copy ended: `settled`, `converged` or `timeout`.
    pub switch_reason: Option<SwitchReason>,
    /// Bytes streamed in STOP_COPY.
    pub stop_copy_bytes: u64,
    /// Whole stream size.
    pub stream_bytes: u64,
    /// Guest pages the source device reported dirty.
    pub dirty_pages: u64,
    /// When it started, seconds after the workload started.
    pub start_s: f64,
    /// When it ended, seconds after the workload started.
    pub end_s: f64,
    /// The longest interval without any I/O completion during the migration window, ms (at the
    /// workload's clock resolution, from the timeline buckets that overlap the window).
    pub longest_stall_ms: f64,
    /// IOPS in the second before the migration.
    pub iops_before: f64,
    /// IOPS during the migration window.
    pub iops_during: f64,
    /// IOPS in the second after the migration.
    pub iops_after: f64,
}

/// Milliseconds in `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl MigrationRecord {
    /// The record of `report`, which ran from `start_s` to `end_s` of `workload`'s clock.
    fn new(report: MigrationReport, start_s: f64, end_s: f64, workload: &Report) -> Self {
        let switch_s = start_s + report.precopy.as_secs_f64();
        let throttled_from_s = switch_s - report.throttled.as_secs_f64();
        Self {
            total_ms: ms(report.total),
            blackout_ms: ms(report.blackout),
            precopy_rounds: report.precopy_rounds,
            precopy_bytes: report.precopy_bytes,
            rounds: report.rounds.iter().map(RoundRecord::from).collect(),
            throttled_rounds: report.throttled_rounds,
            throttle_percent: report.throttle_percent,
            throttled_ms: ms(report.throttled),
            ios_while_throttled: if report.throttled.is_zero() {
                0
            } else {
                ios_within(workload, throttled_from_s, switch_s)
            },
            precopy_ms: ms(report.precopy),
            stream_mb_s: report.stream_rate / 1e6,
            dirty_mb_s: report.dirty_rate / 1e6,
            downtime_limit_ms: ms(report.downtime_limit),
            expected_downtime_ms: ms(report.expected_downtime),
            switch_reason: report.switch_reason,
            stop_copy_bytes: report.stop_copy_bytes,
            stream_bytes: report.stream_bytes,
            dirty_pages: report.dirty_pages,
            longest_stall_ms: stall_between(workload, start_s, end_s),
            iops_before: iops_between(workload, start_s - 1.0, start_s),
            iops_during: iops_between(workload, start_s, end_s.max(start_s + 0.1)),
            iops_after: iops_between(workload, end_s, end_s + 1.0),
            from: report.from,
            to: report.to,
            start_s,
            end_s,
        }
    }
}

/// The outcome of a workload run.
#[derive(Debug, Serialize)]
pub struct RunOutcome {
    /// The workload's report.
    pub workload: Report,
    /// The migrations, in order.
    pub migrations: Vec<MigrationRecord>,
    /// The read-back of every written block after the run (verify mode).
    pub readback: Option<Report>,
    /// Where the run's layout was saved (`--save-layout`).
    pub layout: Option<PathBuf>,
    /// Why a planned migration failed (the run stopped there); the device kept running on
    /// the server it was on, and `readback` was read from there.
    pub migration_error: Option<String>,
    /// The server the device ran on at the end (where `readback` was read).
    pub socket: PathBuf,
}

impl RunOutcome {
    /// Whether every check passed and every planned migration happened.
    pub fn passed(&self) -> bool {
        self.migration_error.is_none() && self.data_verified()
    }

    /// Whether the workload and the read-back found no bad data and no command error.
    fn data_verified(&self) -> bool {
        self.workload.errors == 0
            && (!self.workload.verify || self.workload.verified)
            && self
                .readback
                .as_ref()
                .is_none_or(|r| r.verified && r.errors == 0)
    }

    /// Why the run did not pass: bad data or command errors (see [`failure_of`]), else the
    /// failed migration with what the read-back on the source found; `None` when it passed.
    pub fn failure(&self) -> Option<anyhow::Error> {
        if self.passed() {
            return None;
        }
        let mut failure = if self.data_verified() {
            let kept = match &self.readback {
                Some(r) => format!(
                    "; the device kept running on {}, where all {} acknowledged block(s) read \
                     back correct",
                    self.socket.display(),
                    r.ios
                ),
                None => format!("; the device kept running on {}", self.socket.display()),
            };
            anyhow::anyhow!(
                "live migration failed: {}{kept}",
                self.migration_error.as_deref().unwrap_or_default()
            )
        } else {
            let failure = failure_of(
                "verification",
                core::iter::once(&self.workload).chain(&self.readback),
            );
            match &self.migration_error {
                Some(e) => failure.context(format!("after a failed live migration ({e})")),
                None => failure,
            }
        };
        if let (Some(path), Some(_)) = (&self.layout, &self.migration_error) {
            failure = failure.context(format!(
                "what the run wrote is saved in {0}: re-verify a server with `vfio-nvme \
                 workload --verify-layout {0} --socket PATH`",
                path.display()
            ));
        }
        Some(failure)
    }
}

/// Why `reports` did not pass, for `what`: a [`VerificationFailed`] naming the first bad
/// block (exit status 3) when a read found bad data, else their command errors (status 1).
fn failure_of<'a>(what: &str, reports: impl Iterator<Item = &'a Report> + Clone) -> anyhow::Error {
    let failures: u64 = reports.clone().map(|r| r.failure_count).sum();
    let errors: u64 = reports.clone().map(|r| r.errors).sum();
    match reports.clone().find_map(|r| r.failures.first()) {
        Some(first) => anyhow::Error::new(VerificationFailed(format!(
            "{what} failed: {failures} block(s) read back wrong; first: {first}"
        ))),
        None => anyhow::anyhow!("{what} failed: {errors} command error(s); see the report above"),
    }
}

/// Host memory for `config`: data buffers and PRP lists of every command slot, queue rings,
/// and headroom for admin buffers.
fn memory_for(config: &WorkloadConfig) -> u64 {
    let per_queue = u64::from(config.queue_depth) * (config.block_size + 4096) + 128 * 1024;
    u64::from(config.queues + 1) * per_queue + (16 << 20)
}

/// IOPS over `[from_s, to_s)` of the workload's timeline.
fn iops_between(report: &Report, from_s: f64, to_s: f64) -> f64 {
    let (mut ios, mut span) = (0u64, 0f64);
    for b in &report.timeline {
        let start = b.start_ms / 1000.0;
        if start >= from_s && start < to_s {
            ios += b.reads + b.writes;
            span += b.duration_ms / 1000.0;
        }
    }
    if span > 0.0 { ios as f64 / span } else { 0.0 }
}

/// I/O completed in the timeline buckets lying wholly inside `[from_s, to_s]`.
fn ios_within(report: &Report, from_s: f64, to_s: f64) -> u64 {
    report
        .timeline
        .iter()
        .filter(|b| b.start_ms / 1000.0 >= from_s && (b.start_ms + b.duration_ms) / 1000.0 <= to_s)
        .map(|b| b.reads + b.writes)
        .sum()
}

/// The longest time without a completion in any timeline bucket that overlaps `from_s ..
/// to_s` (seconds since the run started): a gap that ended inside, or was still open at the end
/// of, a bucket of the window.
fn stall_between(report: &Report, from_s: f64, to_s: f64) -> f64 {
    report
        .timeline
        .iter()
        .filter(|b| {
            let start = b.start_ms / 1000.0;
            start + b.duration_ms / 1000.0 >= from_s && start <= to_s
        })
        .map(|b| b.longest_gap_ms)
        .fold(0.0, f64::max)
}

/// Runs `config` against the VF at `socket`, migrating as `plan` says, then reads back every
/// written block when verifying. With `tail`, the workload is stopped that long after the last
/// migration (whatever its own limit says), so every planned migration happens under load.
/// `progress` sees workload snapshots and phase messages, `migrating` each migration's
/// progress events with its destination. A migration that fails and leaves the device
/// running where it was (an abort) ends the plan: the workload stops, the read-back runs
/// there, and the outcome carries the failure (`migration_error`, not passed). With
/// `save_layout`, what the run wrote is saved there once the workload has stopped, also
/// when a migration or the workload failed (the error then says where it is).
pub fn run(
    socket: &Path,
    config: &WorkloadConfig,
    plan: &[PlannedMigration],
    tail: Option<Duration>,
    save_layout: Option<&Path>,
    progress: &(dyn Fn(&Snapshot, &str) + Sync),
    migrating: &dyn Fn(&Path, &MigrationProgress),
) -> anyhow::Result<RunOutcome> {
    let memory =
        HostMemory::new(memory_for(config), GUEST_IOVA).context("cannot allocate guest memory")?;
    let mut orch = Orchestrator::connect(socket, memory.clone())
        .with_context(|| format!("cannot attach to the VF at {}", socket.display()))?;
    let driver =
        Driver::new(orch.bar(), memory.clone()).context("cannot bring up the NVMe controller")?;
    if config.shadow_doorbells {
        driver
            .use_shadow_doorbells()
            .context("cannot set up shadow doorbells (Doorbell Buffer Config)")?;
    }
    if !orch.doorbells_mapped() && !driver.shadow_doorbells() {
        tracing::warn!(
            "the server traps doorbell writes (serve --doorbells trapped) and this client rings \
             without shadow doorbells: every doorbell is a message, a fifth to a third of the IOPS \
             at depth; leave out --no-shadow-doorbells, or serve with --doorbells shared"
        );
    }
    driver
        .set_queue_count(config.queues)
        .context("Set Features (Number of Queues) failed")?;
    let resolved;
    let config = if config.nsid == AUTO_NSID {
        let nsid = *driver
            .active_namespaces()
            .context("Identify (active namespace list) failed")?
            .first()
            .context("the controller has no active namespace")?;
        resolved = WorkloadConfig {
            nsid,
            ..config.clone()
        };
        &resolved
    } else {
        config
    };
    let ledger = workload::ledger_for(&driver, config).context("the workload cannot start")?;
    let stop = AtomicBool::new(false);
    let phase = std::sync::Mutex::new(String::from("running"));
    let started = Instant::now();
    let (workload, migrations) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let result = workload::run_with_ledger(&driver, config, &ledger, &stop, |snapshot| {
                let phase = phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
                progress(snapshot, &phase);
            });
            stop.store(true, Ordering::Release);
            result
        });
        let mut migrations = Vec::new();
        let mut failure = None;
        for step in plan {
            let deadline = Instant::now() + step.after;
            while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
            *phase.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("migrating to {}", step.to.display());
            let start_s = started.elapsed().as_secs_f64();
            match orch.migrate_with_progress(&step.to, &step.options, &mut |event| {
                migrating(&step.to, event)
            }) {
                Ok(report) => migrations.push((report, start_s, started.elapsed().as_secs_f64())),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            *phase.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("running on {}", orch.socket().display());
        }
        if let (Some(tail), None) = (tail, &failure) {
            let deadline = Instant::now() + tail;
            while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if failure.is_some() || tail.is_some() {
            stop.store(true, Ordering::Release);
        }
        let workload = worker.join();
        (workload, (migrations, failure))
    });
    // The workload has stopped: every write is acknowledged or marked unknown in the ledger.
    let saved = save_layout
        .map(|path| save(&ledger, config.nsid, path).map(|()| path.to_owned()))
        .transpose()?;
    let where_saved = |err: anyhow::Error| match &saved {
        Some(path) => err.context(format!(
            "what the run wrote is saved in {0}: re-verify a server with `vfio-nvme workload \
             --verify-layout {0} --socket PATH`",
            path.display()
        )),
        None => err,
    };
    let workload = workload
        .map_err(|_| anyhow::anyhow!("the workload thread panicked"))?
        .context("the workload failed")
        .map_err(where_saved)?;
    let (migrations, failure) = migrations;
    // An aborted migration leaves the device running where it was: the read-back below checks
    // there that nothing acknowledged was lost. A source that could not be resumed, or a
    // migration whose outcome is unknown (neither side resumed, the doorbells held), leaves
    // nothing to read.
    let migration_error = match failure {
        Some(e @ (OrchestratorError::Stranded { .. } | OrchestratorError::Undecided(_))) => {
            return Err(where_saved(
                anyhow::Error::new(e).context("live migration failed"),
            ));
        }
        Some(e) => Some(e.to_string()),
        None => None,
    };
    let migrations = migrations
        .into_iter()
        .map(|(report, start_s, end_s)| MigrationRecord::new(report, start_s, end_s, &workload))
        .collect();
    let readback = if config.verify {
        progress(&Snapshot::default(), "reading back every written block");
        Some(readback(
            &driver,
            config.nsid,
            &ledger,
            config.queues,
            config.queue_depth,
        )?)
    } else {
        None
    };
    Ok(RunOutcome {
        workload,
        migrations,
        readback,
        layout: saved,
        migration_error,
        socket: orch.socket().to_owned(),
    })
}

/// Reads back every block `ledger` has a write for from namespace `nsid`.
fn readback(
    driver: &Driver,
    nsid: u32,
    ledger: &std::sync::Arc<Ledger>,
    queues: u16,
    queue_depth: u32,
) -> anyhow::Result<Report> {
    workload::verify_all(
        driver,
        nsid,
        ledger,
        &VerifyOptions {
            queues,
            queue_depth,
            ..VerifyOptions::default()
        },
    )
    .context("the read-back failed")
}

/// Writes `ledger`'s layout (for namespace `nsid`) to `path`, through a temporary file
/// renamed into place so a reader never sees half a layout.
fn save(ledger: &Ledger, nsid: u32, path: &Path) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, workload::layout::encode(ledger, nsid))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot save the layout to {}", path.display()))
}

/// The outcome of `--verify-layout`: an earlier run's layout read back from a server.
#[derive(Debug, Serialize)]
pub struct LayoutCheck {
    /// The layout file.
    pub layout: PathBuf,
    /// The server read.
    pub socket: PathBuf,
    /// The namespace read (the layout's).
    pub nsid: u32,
    /// The read-back of every block the layout's run wrote.
    pub readback: Report,
}

/// Reads back from the VF at `socket` every block the run saved in `layout` wrote.
pub fn verify_layout(
    socket: &Path,
    layout: &Path,
    queues: u16,
    queue_depth: u32,
) -> anyhow::Result<LayoutCheck> {
    let bad_layout = |reason: String| {
        anyhow::Error::new(crate::exit::UsageError {
            option: "--verify-layout".to_owned(),
            value: layout.display().to_string(),
            reason,
        })
    };
    let bytes = std::fs::read(layout).map_err(|e| bad_layout(format!("cannot read it: {e}")))?;
    let saved = workload::layout::decode(&bytes).map_err(|e| bad_layout(e.to_string()))?;
    let ledger = std::sync::Arc::new(saved.ledger);
    let config = WorkloadConfig {
        queues,
        queue_depth,
        block_size: ledger.lba_bytes() * ledger.unit_blocks(),
        ..WorkloadConfig::default()
    };
    let memory =
        HostMemory::new(memory_for(&config), GUEST_IOVA).context("cannot allocate guest memory")?;
    let orch = Orchestrator::connect(socket, memory.clone())
        .with_context(|| format!("cannot attach to the VF at {}", socket.display()))?;
    let driver = Driver::new(orch.bar(), memory).context("cannot bring up the NVMe controller")?;
    driver
        .set_queue_count(queues)
        .context("Set Features (Number of Queues) failed")?;
    let readback = workload::verify_all(
        &driver,
        saved.nsid,
        &ledger,
        &VerifyOptions {
            queues,
            queue_depth,
            ..VerifyOptions::default()
        },
    )
    .map_err(|err| match err {
        // --qd and --queues are the user's; the rest of the configuration is the layout's.
        workload::WorkloadError::Config { field, .. }
            if field != "queue_depth" && field != "queues" =>
        {
            bad_layout(format!(
                "it does not fit namespace {} of {}: {err}",
                saved.nsid,
                socket.display()
            ))
        }
        err => anyhow::Error::new(err).context("the read-back failed"),
    })?;
    Ok(LayoutCheck {
        layout: layout.to_owned(),
        socket: socket.to_owned(),
        nsid: saved.nsid,
        readback,
    })
}

impl LayoutCheck {
    /// A human summary.
    fn describe(&self) -> String {
        format!(
            "{}\nlayout {} on {} (namespace {}): {} written block(s) read back, {}\n",
            self.readback,
            self.layout.display(),
            self.socket.display(),
            self.nsid,
            self.readback.ios,
            if self.passed() {
                "all correct"
            } else {
                "FAILED"
            }
        )
    }

    /// Whether every block read back as the layout's run left it.
    fn passed(&self) -> bool {
        self.readback.verified && self.readback.errors == 0
    }

    /// Why it did not pass (see [`failure_of`]).
    fn failure(&self) -> Option<anyhow::Error> {
        (!self.passed()).then(|| {
            failure_of(
                &format!("verification against {}", self.layout.display()),
                core::iter::once(&self.readback),
            )
        })
    }
}

/// A human summary of an outcome.
pub fn describe(outcome: &RunOutcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = write!(s, "{}", outcome.workload);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    for (i, m) in outcome.migrations.iter().enumerate() {
        let _ = writeln!(
            s,
            "migration {}: {} -> {} at {:.2}s: total {:.1} ms, blackout {:.2} ms (expected \
             {:.2} ms, limit {:.0} ms), longest I/O stall {:.0} ms, {} pre-copy round(s) of {} \
             KiB, stop-copy {} KiB, stream {} KiB, {} dirty page(s); IOPS before/during/after \
             {:.0}/{:.0}/{:.0}",
            i + 1,
            m.from.display(),
            m.to.display(),
            m.start_s,
            m.total_ms,
            m.blackout_ms,
            m.expected_downtime_ms,
            m.downtime_limit_ms,
            m.longest_stall_ms,
            m.precopy_rounds,
            m.precopy_bytes / 1024,
            m.stop_copy_bytes / 1024,
            m.stream_bytes / 1024,
            m.dirty_pages,
            m.iops_before,
            m.iops_during,
            m.iops_after,
        );
        let _ = writeln!(
            s,
            "  switched over: {}; stream {:.0} MB/s, dirty {:.0} MB/s; throttle up to {} % for \
             {:.0} ms ({} I/O completed meanwhile)",
            m.switch_reason
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
            m.stream_mb_s,
            m.dirty_mb_s,
            m.throttle_percent,
            m.throttled_ms,
            m.ios_while_throttled,
        );
        for (n, r) in m.rounds.iter().enumerate() {
            let _ = writeln!(
                s,
                "  round {}: {} KiB in {:.0} ms, {} KiB left, stream {:.0} MB/s, dirty {:.0} MB/s, \
                 throttle {} %",
                n + 1,
                r.bytes / 1024,
                r.duration_ms,
                r.remaining_bytes / 1024,
                r.stream_mb_s,
                r.dirty_mb_s,
                r.throttle_percent,
            );
        }
    }
    if let Some(error) = &outcome.migration_error {
        let _ = writeln!(
            s,
            "migration failed, the device kept running on {}: {error}",
            outcome.socket.display()
        );
    }
    if let Some(readback) = &outcome.readback {
        let _ = writeln!(
            s,
            "read-back of every written block: {} block(s), {}",
            readback.ios,
            if readback.verified {
                "all correct"
            } else {
                "FAILED"
            }
        );
    }
    if let Some(layout) = &outcome.layout {
        let _ = writeln!(s, "layout saved to {}", layout.display());
    }
    let _ = writeln!(
        s,
        "verification: {}",
        if outcome.passed() { "PASSED" } else { "FAILED" }
    );
    s
}

/// `vfio-nvme workload` from its arguments.
pub fn run_cli(args: &crate::cli::WorkloadArgs, json: bool) -> anyhow::Result<Output> {
    use nvme_host::workload::Limit;
    use nvme_host::workload::Pattern;

    use crate::cli::RwArg;
    if let Some(layout) = &args.verify_layout {
        let check = verify_layout(&args.socket, layout, args.queues, args.qd)?;
        let text = if json {
            Verdict::json(check.passed(), &check)?
        } else {
            check.describe()
        };
        return Ok(Output {
            text,
            failure: check.failure(),
        });
    }
    let read_percent = args.rwmixread;
    let rw = match args.rw {
        RwArg::Read => Pattern::Read,
        RwArg::Write => Pattern::Write,
        RwArg::Randread => Pattern::RandRead,
        RwArg::Randwrite => Pattern::RandWrite,
        RwArg::Randrw => Pattern::RandRw { read_percent },
        RwArg::Rw => Pattern::SeqRw { read_percent },
    };
    let config = WorkloadConfig {
        rw,
        block_size: args.bs,
        queue_depth: args.qd,
        queues: args.queues,
        limit: args.ios.map_or(Limit::Duration(args.time), Limit::Ios),
        rate: args.rate,
        verify: args.verify,
        nsid: args.nsid.unwrap_or(AUTO_NSID),
        shadow_doorbells: !args.no_shadow_doorbells,
        ..WorkloadConfig::default()
    };
    let mut plan = Vec::new();
    if let Some(to) = &args.migrate_to {
        plan.push(PlannedMigration {
            to: to.clone(),
            after: args.migrate_after,
            options: MigrateOptions {
                save_stream: args.save_stream.clone(),
                ..args.migration.options()
            },
        });
        if args.migrate_back {
            plan.push(PlannedMigration {
                to: args.socket.clone(),
                after: args.migrate_after,
                options: args.migration.options(),
            });
        }
    }
    // With migrations the run lasts until --migrate-after past the last one, so every planned
    // migration happens under load however long migrating takes.
    let (config, tail) = if plan.is_empty() {
        (config, None)
    } else {
        let config = WorkloadConfig {
            limit: Limit::Duration(Duration::from_secs(24 * 3600)),
            ..config
        };
        (config, Some(args.migrate_after))
    };
    let expected = match (config.limit, tail) {
        (_, Some(tail)) => args.migrate_after * plan.len() as u32 + tail,
        (Limit::Duration(d), None) => d,
        (Limit::Ios(_), None) => Duration::from_secs(10),
    };
    let progress = crate::progress::Progress::new(expected, json);
    let outcome = run(
        &args.socket,
        &config,
        &plan,
        tail,
        args.save_layout.as_deref(),
        &|snapshot, phase| progress.update(snapshot, phase),
        &|to, event| progress.migration(to, event),
    );
    drop(progress);
    let outcome = outcome?;
    let text = if json {
        Verdict::json(outcome.passed(), &outcome)?
    } else {
        describe(&outcome)
    };
    Ok(Output {
        text,
        failure: outcome.failure(),
    })
}
