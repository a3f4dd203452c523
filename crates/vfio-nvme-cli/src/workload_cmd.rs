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
use nvme_host::orchestrator::MigrationReport;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::workload;
use nvme_host::workload::Report;
use nvme_host::workload::Snapshot;
use nvme_host::workload::VerifyOptions;
use nvme_host::workload::WorkloadConfig;
use serde::Serialize;

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
    /// Save a copy of the stream here.
    pub save_stream: Option<PathBuf>,
}

/// One migration as it happened, on the workload's clock.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationRecord {
    /// What the orchestrator measured.
    #[serde(flatten)]
    pub report: MigrationReport,
    /// When it started, seconds after the workload started.
    pub start_s: f64,
    /// When it ended, seconds after the workload started.
    pub end_s: f64,
    /// The longest interval without any I/O completion inside the migration window, ms.
    pub longest_stall_ms: f64,
    /// IOPS in the second before the migration.
    pub iops_before: f64,
    /// IOPS during the migration window.
    pub iops_during: f64,
    /// IOPS in the second after the migration.
    pub iops_after: f64,
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
}

impl RunOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.workload.errors == 0
            && (!self.workload.verify || self.workload.verified)
            && self
                .readback
                .as_ref()
                .is_none_or(|r| r.verified && r.errors == 0)
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

/// The longest run of completion-free timeline buckets inside `[from_s, to_s]`, in ms, bounded
/// below by nothing and above by the window.
fn stall_between(report: &Report, from_s: f64, to_s: f64) -> f64 {
    let (mut longest, mut current) = (0f64, 0f64);
    for b in &report.timeline {
        let start = b.start_ms / 1000.0;
        let end = start + b.duration_ms / 1000.0;
        if end < from_s || start > to_s {
            continue;
        }
        if b.reads + b.writes == 0 {
            current += b.duration_ms;
            longest = longest.max(current);
        } else {
            current = 0.0;
        }
    }
    longest
}

/// Runs `config` against the VF at `socket`, migrating as `plan` says, then reads back every
/// written block when verifying. With `tail`, the workload is stopped that long after the last
/// migration (whatever its own limit says), so every planned migration happens under load.
/// `progress` sees workload snapshots and phase messages.
pub fn run(
    socket: &Path,
    config: &WorkloadConfig,
    plan: &[PlannedMigration],
    tail: Option<Duration>,
    progress: &(dyn Fn(&Snapshot, &str) + Sync),
) -> anyhow::Result<RunOutcome> {
    let memory =
        HostMemory::new(memory_for(config), GUEST_IOVA).context("cannot allocate guest memory")?;
    let mut orch = Orchestrator::connect(socket, memory.clone())
        .with_context(|| format!("cannot attach to the VF at {}", socket.display()))?;
    let driver =
        Driver::new(orch.bar(), memory.clone()).context("cannot bring up the NVMe controller")?;
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
    let stop = AtomicBool::new(false);
    let phase = std::sync::Mutex::new(String::from("running"));
    let started = Instant::now();
    let (workload, migrations) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let result = workload::run(&driver, config, &stop, |snapshot| {
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
            let options = MigrateOptions {
                save_stream: step.save_stream.clone(),
                ..MigrateOptions::default()
            };
            match orch.migrate(&step.to, &options) {
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
    let workload = workload
        .map_err(|_| anyhow::anyhow!("the workload thread panicked"))?
        .context("the workload failed")?;
    let (migrations, failure) = migrations;
    if let Some(e) = failure {
        return Err(anyhow::Error::new(e).context("live migration failed"));
    }
    let migrations = migrations
        .into_iter()
        .map(|(report, start_s, end_s)| MigrationRecord {
            longest_stall_ms: stall_between(&workload, start_s, end_s),
            iops_before: iops_between(&workload, start_s - 1.0, start_s),
            iops_during: iops_between(&workload, start_s, end_s.max(start_s + 0.1)),
            iops_after: iops_between(&workload, end_s, end_s + 1.0),
            report,
            start_s,
            end_s,
        })
        .collect();
    let readback = if config.verify {
        progress(&Snapshot::default(), "reading back every written block");
        Some(
            workload::verify_all(
                &driver,
                config.nsid,
                &workload.ledger,
                &VerifyOptions {
                    queues: config.queues,
                    queue_depth: config.queue_depth,
                    ..VerifyOptions::default()
                },
            )
            .context("the read-back failed")?,
        )
    } else {
        None
    };
    Ok(RunOutcome {
        workload,
        migrations,
        readback,
    })
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
        let r = &m.report;
        let _ = writeln!(
            s,
            "migration {}: {} -> {} at {:.2}s: total {:.1} ms, blackout {:.2} ms, longest I/O \
             stall {:.0} ms, {} pre-copy round(s) of {} KiB, stop-copy {} KiB, stream {} KiB, \
             {} dirty page(s); IOPS before/during/after {:.0}/{:.0}/{:.0}",
            i + 1,
            r.from.display(),
            r.to.display(),
            m.start_s,
            r.total.as_secs_f64() * 1000.0,
            r.blackout.as_secs_f64() * 1000.0,
            m.longest_stall_ms,
            r.precopy_rounds,
            r.precopy_bytes / 1024,
            r.stop_copy_bytes / 1024,
            r.stream_bytes / 1024,
            r.dirty_pages,
            m.iops_before,
            m.iops_during,
            m.iops_after,
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
    let _ = writeln!(
        s,
        "verification: {}",
        if outcome.passed() { "PASSED" } else { "FAILED" }
    );
    s
}

/// `vfio-nvme workload` from its arguments.
pub fn run_cli(args: &crate::cli::WorkloadArgs, json: bool) -> anyhow::Result<String> {
    use nvme_host::workload::Limit;
    use nvme_host::workload::Pattern;
    let rw = match args.rw.as_str() {
        "read" => Pattern::Read,
        "write" => Pattern::Write,
        "randread" => Pattern::RandRead,
        "randwrite" => Pattern::RandWrite,
        "randrw" => Pattern::RandRw {
            read_percent: args.rwmixread,
        },
        "rw" | "readwrite" => Pattern::SeqRw {
            read_percent: args.rwmixread,
        },
        other => anyhow::bail!(
            "unknown --rw `{other}` (use read, write, randread, randwrite, randrw or rw)"
        ),
    };
    let config = WorkloadConfig {
        rw,
        block_size: args.bs,
        queue_depth: args.qd,
        queues: args.queues,
        limit: args.ios.map_or(Limit::Duration(args.time), Limit::Ios),
        verify: args.verify,
        nsid: args.nsid.unwrap_or(AUTO_NSID),
        ..WorkloadConfig::default()
    };
    let mut plan = Vec::new();
    if let Some(to) = &args.migrate_to {
        plan.push(PlannedMigration {
            to: to.clone(),
            after: args.migrate_after,
            save_stream: args.save_stream.clone(),
        });
        if args.migrate_back {
            plan.push(PlannedMigration {
                to: args.socket.clone(),
                after: args.migrate_after,
                save_stream: None,
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
    let outcome = run(&args.socket, &config, &plan, tail, &|snapshot, phase| {
        progress.update(snapshot, phase)
    });
    drop(progress);
    let outcome = outcome?;
    let text = if json {
        serde_json::to_string_pretty(&outcome)?
    } else {
        describe(&outcome)
    };
    if !outcome.passed() {
        println!("{text}");
        anyhow::bail!("the workload reported errors or verification failures");
    }
    Ok(text)
}
