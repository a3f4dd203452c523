//! Running workers: queue creation, one thread per queue pair, the collector on the calling
//! thread (timeline buckets and progress), queue deletion and the report.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use std::time::Instant;

use nvme_driver::driver::Driver;
use nvme_driver::driver::DriverError;
use nvme_driver::driver::QueuePair;
use nvme_spec::features::FeatureId;
use nvme_spec::features::NumberOfQueuesAllocated;

use super::check::FailureLog;
use super::error::WorkloadError;
use super::ledger::Ledger;
use super::rate::Pacer;
use super::report::Report;
use super::report::Snapshot;
use super::stats::Collector;
use super::stats::Live;
use super::worker::Budget;
use super::worker::Plan;
use super::worker::Shared;
use super::worker::Slot;
use super::worker::Worker;

/// One run: a plan per queue and how to carry it out.
pub(crate) struct Job<'a> {
    pub driver: &'a Driver,
    pub ledger: &'a Arc<Ledger>,
    pub nsid: u32,
    /// The pattern's name, for the report.
    pub pattern: String,
    /// One plan per queue.
    pub plans: Vec<Plan>,
    pub first_qid: u16,
    pub queue_depth: u32,
    /// Submissions stop after this long (from the first submission)...
    pub duration: Option<Duration>,
    /// ...or after this many commands.
    pub max_ios: Option<u64>,
    /// Total submissions per second over all queues, when capped.
    pub rate: Option<u32>,
    pub verify: bool,
    pub stop_on_failure: bool,
    pub max_failures: usize,
    pub timeout: Duration,
    pub interval: Duration,
    pub seed: u64,
}

/// Makes sure the controller allocated I/O queues up to `last_qid` (for `queues` queues):
/// Set Features Number of Queues, or — when queues already exist and the allocation can no
/// longer change — Get Features.
fn ensure_queue_count(driver: &Driver, queues: u16, last_qid: u16) -> Result<(), WorkloadError> {
    let allocated = match driver.set_queue_count(last_qid) {
        Ok(n) => n,
        Err(DriverError::Status { .. }) => {
            let current =
                NumberOfQueuesAllocated::from(driver.get_feature(FeatureId::NUMBER_OF_QUEUES, 0)?);
            current.nsqa().min(current.ncqa()) + 1
        }
        Err(err) => return Err(err.into()),
    };
    if allocated < last_qid {
        return Err(WorkloadError::config(
            "queues",
            queues,
            format!(
                "the controller allocated only {allocated} I/O queue pairs (queue identifiers \
                 1..={allocated}; this run needs up to {last_qid})"
            ),
        ));
    }
    Ok(())
}

/// Fails unless every queue of `queue_depth` commands (plus the entry a queue keeps empty)
/// fits the controller's CAP.MQES.
fn check_queue_depth(driver: &Driver, queue_depth: u32) -> Result<(), WorkloadError> {
    let entries = driver.cap().max_queue_entries();
    if queue_depth >= entries {
        return Err(WorkloadError::config(
            "queue_depth",
            queue_depth,
            format!(
                "the controller's queues hold at most {entries} entries (CAP.MQES {}) and one \
                 always stays empty: at most {} commands in flight per queue",
                entries - 1,
                entries - 1
            ),
        ));
    }
    Ok(())
}

/// Deletes queue pairs, returning the first error.
fn delete_all(
    driver: &Driver,
    qps: impl IntoIterator<Item = QueuePair>,
) -> Result<(), WorkloadError> {
    let mut result = Ok(());
    for qp in qps {
        let deleted = driver.delete_queue_pair(qp);
        if result.is_ok() {
            result = deleted.map_err(WorkloadError::from);
        }
    }
    result
}

/// Creates the queues and workers, runs them to the end and reports.
pub(crate) fn execute(
    job: Job<'_>,
    stop: &AtomicBool,
    progress: impl Fn(&Snapshot),
) -> Result<Report, WorkloadError> {
    let driver = job.driver;
    let ledger = job.ledger;
    let queues = u16::try_from(job.plans.len())
        .map_err(|_| WorkloadError::config("queues", job.plans.len(), "at most 65535"))?;
    let last_qid = job.first_qid.checked_add(queues - 1).ok_or_else(|| {
        WorkloadError::config("first_qid", job.first_qid, "queue identifiers past 65535")
    })?;
    check_queue_depth(driver, job.queue_depth)?;
    ensure_queue_count(driver, queues, last_qid)?;

    // Buffers first: running out of DMA memory then leaves no queue behind.
    let unit_bytes = ledger.lba_bytes() * ledger.unit_blocks();
    let slots = (0..queues)
        .map(|_| Slot::allocate(driver.memory(), job.queue_depth, unit_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let mut qps = Vec::with_capacity(usize::from(queues));
    for qid in job.first_qid..=last_qid {
        match driver.create_queue_pair(qid, job.queue_depth + 1, None) {
            Ok(qp) => qps.push(qp),
            Err(err) => {
                let _ = delete_all(driver, qps);
                return Err(err.into());
            }
        }
    }
    let workers: Vec<Worker> = qps
        .into_iter()
        .zip(slots)
        .zip(job.plans)
        .enumerate()
        .map(|(index, ((qp, slots), plan))| {
            let seed = job.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            Worker::new(index, qp, slots, unit_bytes, plan, seed)
        })
        .collect();

    let start = Instant::now();
    let live = Live::new(workers.len(), start);
    let log = FailureLog::new(job.max_failures);
    let budget = Budget::new(job.duration.map(|d| start + d), job.max_ios);
    let pacer = job.rate.map(|rate| Pacer::new(start, rate));
    let abort = AtomicBool::new(false);
    let shared = Shared {
        ledger,
        live: &live,
        log: &log,
        budget: &budget,
        pacer: pacer.as_ref(),
        stop,
        abort: &abort,
        nsid: job.nsid,
        timeout: job.timeout,
        verify: job.verify,
        stop_on_failure: job.stop_on_failure,
    };
    let mut collector = Collector::new();
    let outcomes: Vec<(Option<QueuePair>, Result<(), WorkloadError>)> = std::thread::scope(|s| {
        let shared = &shared;
        let handles: Vec<_> = workers
            .into_iter()
            .map(|worker| s.spawn(move || worker.run(shared)))
            .collect();
        let mut next_tick = start + job.interval;
        while !handles.iter().all(|h| h.is_finished()) {
            let now = Instant::now();
            if now >= next_tick {
                let bucket = collector.tick(&live, now);
                progress(&collector.snapshot(&live, now, bucket, log.failure_count()));
                while next_tick <= now {
                    next_tick += job.interval;
                }
            } else {
                std::thread::sleep((next_tick - now).min(Duration::from_millis(2)));
            }
        }
        handles
            .into_iter()
            .zip(job.first_qid..)
            .map(|(handle, qid)| match handle.join() {
                Ok((qp, result)) => (Some(qp), result),
                Err(_) => (None, Err(WorkloadError::WorkerPanicked { qid })),
            })
            .collect()
    });
    let end = Instant::now();

    let mut first_error = None;
    let mut done = Vec::with_capacity(outcomes.len());
    for (qp, result) in outcomes {
        done.extend(qp);
        if let Err(err) = result {
            first_error.get_or_insert(err);
        }
    }
    let deleted = delete_all(driver, done);
    if let Some(err) = first_error {
        return Err(err);
    }
    deleted?;

    let totals = collector.finish(&live, end);
    let failure_count = log.failure_count();
    let (failures, error_messages) = log.into_kept();
    let ios = totals.reads + totals.writes;
    let secs = totals.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(Report {
        pattern: job.pattern,
        block_size: unit_bytes,
        queues,
        queue_depth: job.queue_depth,
        rate: job.rate,
        elapsed_s: totals.elapsed.as_secs_f64(),
        ios,
        reads: totals.reads,
        writes: totals.writes,
        errors: totals.errors,
        bytes: totals.bytes,
        iops: ios as f64 / secs,
        mb_per_s: totals.bytes as f64 / secs / 1e6,
        latency: totals.latency,
        longest_stall_ms: totals.longest_stall.as_secs_f64() * 1e3,
        longest_stall_end_ms: totals.longest_stall_end.as_secs_f64() * 1e3,
        timeline: totals.timeline,
        verify: job.verify,
        verified: job.verify && failure_count == 0 && totals.errors == 0,
        failure_count,
        failures,
        error_messages,
        ledger: ledger.clone(),
    })
}
