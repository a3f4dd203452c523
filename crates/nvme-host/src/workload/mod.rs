//! A verifying I/O workload over the user-space driver: the guest's view of a migration.
//!
//! [`run`] creates `queues` I/O queue pairs on a [`Driver`] and drives each from its own thread,
//! keeping `queue_depth` commands in flight with data buffers and PRP lists allocated once up
//! front (no allocation per I/O). It polls for completions. The driver's [`Bar`] may be swapped
//! underneath a running workload (the migration orchestrator moves the device to another
//! server); the workload only requires that every command completes within a generous timeout
//! (30 s by default), so a pause of a few hundred milliseconds shows up as a stall in the
//! statistics, not as an error.
//!
//! In verify mode every written block carries a header (LBA, generation, writer's queue and
//! sequence, run identifier, CRC32; see [`BlockHeader`]) and a [`Ledger`] keeps, per I/O
//! unit, the newest acknowledged generation and an in-flight flag, so no two commands touch the
//! same LBAs at once and every read is checked ([`check_unit`]) against the newest write
//! acknowledged before the read was submitted: lost, stale, torn, misplaced and unexpected
//! (never-written) data are told apart. A run judges only what it wrote: units it never wrote
//! hold whatever was there before (an earlier run's data is no failure) unless the caller says
//! the namespace started empty ([`Baseline`]). [`verify_all`] reads back everything the ledger
//! knows of — the end-of-run and after-migration check — and [`layout`] saves a ledger to a
//! file so another process can re-verify a server later.
//!
//! The [`Report`] has IOPS and MB/s, latency percentiles (HdrHistogram), a timeline of
//! per-interval buckets, the longest stall without any completion, and the verdict.
//!
//! [`Bar`]: nvme_driver::driver::Bar

mod block;
mod check;
mod config;
mod engine;
mod error;
pub mod layout;
mod ledger;
mod rate;
mod report;
mod rng;
mod stats;
mod worker;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use block::BLOCK_MAGIC;
pub use block::BlockHeader;
pub use block::BlockState;
pub use block::HEADER_LEN;
pub use block::inspect;
pub use block::stamp;
pub use block::stamp_block;
pub use check::Failure;
pub use check::FailureKind;
pub use check::Found;
pub use check::check_unit;
pub use config::Limit;
pub use config::MAX_QUEUE_DEPTH;
pub use config::MAX_QUEUES;
pub use config::Op;
pub use config::Pattern;
pub use config::WorkloadConfig;
pub use error::WorkloadError;
pub use ledger::Baseline;
pub use ledger::Expected;
pub use ledger::Ledger;
use nvme_driver::driver::Driver;
pub use report::Bucket;
pub use report::LatencySummary;
pub use report::Report;
pub use report::Snapshot;

use self::config::Geometry;
use self::engine::Job;
use self::engine::execute;
use self::worker::Plan;

/// Runs `config` on `driver` with a fresh [`Ledger`] (returned in the report) until its limit,
/// the `stop` flag, or — with `stop_on_failure` — the first failure. `progress` is called on
/// the calling thread once per interval.
pub fn run(
    driver: &Driver,
    config: &WorkloadConfig,
    stop: &AtomicBool,
    progress: impl Fn(&Snapshot),
) -> Result<Report, WorkloadError> {
    let ledger = ledger_for(driver, config)?;
    run_with_ledger(driver, config, &ledger, stop, progress)
}

/// A fresh [`Ledger`] for `config` on `driver`'s namespace (its range cut into units of the
/// block size, judged by `config.baseline`), for [`run_with_ledger`]: a caller that keeps the
/// ledger still has it when the run fails (to save what was written, say).
pub fn ledger_for(driver: &Driver, config: &WorkloadConfig) -> Result<Arc<Ledger>, WorkloadError> {
    config.validate()?;
    let geometry = Geometry::resolve(
        driver,
        config.nsid,
        config.block_size,
        config.lba_range.as_ref(),
    )?;
    Ok(Arc::new(Ledger::new(
        geometry.lbas,
        geometry.lba_bytes,
        geometry.unit_blocks,
        config.baseline,
    )))
}

/// Like [`run`], continuing with `ledger` from an earlier run (for example the same workload
/// after a migration): reads are checked against what earlier runs wrote. The configuration's
/// namespace, `block_size` and `lba_range` must describe the ledger's units.
pub fn run_with_ledger(
    driver: &Driver,
    config: &WorkloadConfig,
    ledger: &Arc<Ledger>,
    stop: &AtomicBool,
    progress: impl Fn(&Snapshot),
) -> Result<Report, WorkloadError> {
    config.validate()?;
    let range = config.lba_range.clone().unwrap_or(ledger.lbas());
    let geometry = Geometry::resolve(driver, config.nsid, config.block_size, Some(&range))?;
    start(driver, config, &geometry, ledger, stop, progress)
}

/// Fails unless `ledger` tracks exactly `geometry`'s units.
fn check_ledger(geometry: &Geometry, ledger: &Ledger) -> Result<(), WorkloadError> {
    if geometry.lba_bytes != ledger.lba_bytes()
        || geometry.unit_blocks != ledger.unit_blocks()
        || geometry.lbas != ledger.lbas()
    {
        return Err(WorkloadError::config(
            "ledger",
            ledger,
            format!(
                "the namespace and configuration give LBAs {:?} in units of {} x {} bytes",
                geometry.lbas, geometry.unit_blocks, geometry.lba_bytes
            ),
        ));
    }
    Ok(())
}

fn start(
    driver: &Driver,
    config: &WorkloadConfig,
    geometry: &Geometry,
    ledger: &Arc<Ledger>,
    stop: &AtomicBool,
    progress: impl Fn(&Snapshot),
) -> Result<Report, WorkloadError> {
    check_ledger(geometry, ledger)?;
    let units = ledger.units();
    let queues = u64::from(config.queues);
    let read_percent = config.rw.read_percent();
    let plans = if config.rw.is_random() {
        vec![Plan::Random { read_percent }; usize::from(config.queues)]
    } else {
        if units < queues {
            return Err(WorkloadError::config(
                "queues",
                config.queues,
                format!(
                    "a sequential pattern gives each queue its own units; the range has only {units}"
                ),
            ));
        }
        (0..queues)
            .map(|i| Plan::Sequential {
                start: units * i / queues,
                end: units * (i + 1) / queues,
                next: units * i / queues,
                read_percent,
            })
            .collect()
    };
    let (duration, max_ios) = match config.limit {
        Limit::Duration(d) => (Some(d), None),
        Limit::Ios(n) => (None, Some(n)),
    };
    execute(
        Job {
            driver,
            ledger,
            nsid: config.nsid,
            pattern: config.rw.to_string(),
            plans,
            first_qid: config.first_qid,
            queue_depth: config.queue_depth,
            duration,
            max_ios,
            rate: config.rate,
            verify: config.verify,
            stop_on_failure: config.stop_on_failure,
            max_failures: config.max_failures,
            timeout: config.timeout,
            interval: config.interval,
            seed: config.seed,
        },
        stop,
        progress,
    )
}

/// How [`verify_all`] reads back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// `None`: every unit the ledger has a write for. `Some(range)`: every unit overlapping
    /// `range`, written or not (unwritten ones are judged by the ledger's [`Baseline`]).
    pub lbas: Option<Range<u64>>,
    /// I/O queues to read with (the units are split into contiguous slices).
    pub queues: u16,
    /// The first I/O queue identifier.
    pub first_qid: u16,
    /// Reads in flight per queue.
    pub queue_depth: u32,
    /// How long one read may take.
    pub timeout: Duration,
    /// How many failures to keep in the report (all are counted).
    pub max_failures: usize,
    /// Stop at the first failure.
    pub stop_on_failure: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            lbas: None,
            queues: 1,
            first_qid: 1,
            queue_depth: 16,
            timeout: Duration::from_secs(30),
            max_failures: 32,
            stop_on_failure: false,
        }
    }
}

/// Reads back every unit `ledger` has a write for (or every unit of `options.lbas`) from
/// namespace `nsid` and checks each against the ledger: the end-of-run and after-migration
/// verification. The report's `verified` says whether everything matched.
pub fn verify_all(
    driver: &Driver,
    nsid: u32,
    ledger: &Arc<Ledger>,
    options: &VerifyOptions,
) -> Result<Report, WorkloadError> {
    let config = WorkloadConfig {
        rw: Pattern::Read,
        block_size: ledger.lba_bytes() * ledger.unit_blocks(),
        queue_depth: options.queue_depth,
        queues: options.queues,
        first_qid: options.first_qid,
        timeout: options.timeout,
        nsid,
        ..WorkloadConfig::default()
    };
    config.validate()?;
    let geometry = Geometry::resolve(driver, nsid, config.block_size, Some(&ledger.lbas()))?;
    check_ledger(&geometry, ledger)?;
    let units: Vec<u64> = match &options.lbas {
        None => ledger.written().collect(),
        Some(range) => {
            let lbas = ledger.lbas();
            let (start, end) = (range.start.max(lbas.start), range.end.min(lbas.end));
            if start >= end {
                return Err(WorkloadError::config(
                    "lbas",
                    range,
                    format!("does not overlap the ledger's LBAs {lbas:?}"),
                ));
            }
            let unit_blocks = ledger.unit_blocks();
            ((start - lbas.start) / unit_blocks..(end - lbas.start).div_ceil(unit_blocks)).collect()
        }
    };
    let queues = usize::from(options.queues);
    let plans = (0..queues)
        .map(|i| Plan::Once {
            units: units[units.len() * i / queues..units.len() * (i + 1) / queues].to_vec(),
            pos: 0,
        })
        .collect();
    execute(
        Job {
            driver,
            ledger,
            nsid,
            pattern: "verify".to_owned(),
            plans,
            first_qid: options.first_qid,
            queue_depth: options.queue_depth,
            duration: None,
            max_ios: None,
            rate: None,
            verify: true,
            stop_on_failure: options.stop_on_failure,
            max_failures: options.max_failures,
            timeout: options.timeout,
            interval: config.interval,
            seed: config.seed,
        },
        &AtomicBool::new(false),
        |_| {},
    )
}
