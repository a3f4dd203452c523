//! What a run reports: totals, latency percentiles, the per-interval timeline, the longest
//! stall, and the verification outcome; and the progress snapshots handed out while it runs.

use std::fmt;
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::check::Failure;
use super::ledger::Ledger;

/// Nanoseconds in a microsecond, for histogram values (recorded in nanoseconds).
const NS_PER_US: f64 = 1_000.0;

/// Latency percentiles over a set of commands, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Commands measured.
    pub samples: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest command.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram of latencies in nanoseconds.
    pub(crate) fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let at = |q: f64| hist.value_at_quantile(q) as f64 / NS_PER_US;
        Self {
            samples: hist.len(),
            mean_us: hist.mean() / NS_PER_US,
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: hist.max() as f64 / NS_PER_US,
        }
    }
}

/// One interval of the timeline (all queues together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the interval, in milliseconds since the run started.
    pub start_ms: f64,
    /// Length of the interval in milliseconds.
    pub duration_ms: f64,
    /// Reads completed in the interval.
    pub reads: u64,
    /// Writes completed in the interval.
    pub writes: u64,
    /// Commands that completed with an error status in the interval.
    pub errors: u64,
    /// Completions per second over the interval.
    pub iops: f64,
    /// Megabytes (10^6 bytes) per second successfully transferred over the interval.
    pub mb_per_s: f64,
    /// Median latency of the interval's completions (0 without completions).
    pub p50_us: f64,
    /// 99th percentile latency of the interval's completions (0 without completions).
    pub p99_us: f64,
    /// The longest time without any completion (on any queue) that ended inside the interval
    /// or was still going on at its end, in milliseconds, at the clock's resolution: the
    /// interval's worst stall, which a gap shorter than the interval would hide in its counts.
    pub longest_gap_ms: f64,
}

/// Progress while a run goes on, handed to the progress callback once per interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Time since the run started, in seconds.
    pub elapsed_s: f64,
    /// Reads completed so far.
    pub reads: u64,
    /// Writes completed so far.
    pub writes: u64,
    /// Commands completed with an error status so far.
    pub errors: u64,
    /// Verification failures so far.
    pub failures: u64,
    /// The interval that just ended.
    pub last: Bucket,
    /// The longest time without any completion so far, including a stall going on now, in
    /// milliseconds.
    pub longest_stall_ms: f64,
}

/// The outcome of a run or a read-back.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The access pattern (`verify` for a read-back).
    pub pattern: String,
    /// Bytes per command.
    pub block_size: u64,
    /// I/O queues used.
    pub queues: u16,
    /// Commands in flight per queue.
    pub queue_depth: u32,
    /// The cap on submissions per second over all queues (`WorkloadConfig::rate`), if any.
    pub rate: Option<u32>,
    /// Wall time from the first submission to the last completion, in seconds.
    pub elapsed_s: f64,
    /// Completed commands (reads + writes, including failed ones).
    pub ios: u64,
    /// Completed reads.
    pub reads: u64,
    /// Completed writes.
    pub writes: u64,
    /// Commands completed with an error status.
    pub errors: u64,
    /// Bytes successfully transferred.
    pub bytes: u64,
    /// Completions per second over the run.
    pub iops: f64,
    /// Megabytes (10^6 bytes) per second over the run.
    pub mb_per_s: f64,
    /// Latency percentiles over the run.
    pub latency: LatencySummary,
    /// The longest interval with no completion at all on any queue — the I/O stall a guest
    /// sees during a migration — in milliseconds.
    pub longest_stall_ms: f64,
    /// When that stall ended, in milliseconds since the run started.
    pub longest_stall_end_ms: f64,
    /// The timeline: one bucket per interval.
    pub timeline: Vec<Bucket>,
    /// Whether data was stamped and checked.
    pub verify: bool,
    /// True when verification was on and found no failure and no command error.
    pub verified: bool,
    /// Every verification failure counted.
    pub failure_count: u64,
    /// The first failures.
    pub failures: Vec<Failure>,
    /// The first command errors.
    pub error_messages: Vec<String>,
    /// The ledger the run checked against and updated: hand it to
    /// [`verify_all`](super::verify_all) or a later run.
    #[serde(skip)]
    pub ledger: Arc<Ledger>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} B x {} queue(s) x depth {}{}: {} I/Os in {:.2} s, {:.0} IOPS, {:.1} MB/s \
             ({} reads, {} writes, {} errors)",
            self.pattern,
            self.block_size,
            self.queues,
            self.queue_depth,
            self.rate
                .map(|r| format!(" capped at {r} IOPS"))
                .unwrap_or_default(),
            self.ios,
            self.elapsed_s,
            self.iops,
            self.mb_per_s,
            self.reads,
            self.writes,
            self.errors
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency us: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}; longest stall \
             {:.1} ms (ended at {:.0} ms)",
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            self.longest_stall_ms,
            self.longest_stall_end_ms
        )?;
        if !self.verify {
            return write!(f, "verify: off");
        }
        if self.verified {
            return write!(f, "verify: passed");
        }
        write!(
            f,
            "verify: FAILED, {} failure(s), {} command error(s)",
            self.failure_count, self.errors
        )?;
        if let Some(first) = self.failures.first() {
            write!(f, "; first: {first}")?;
        }
        if let Some(first) = self.error_messages.first() {
            write!(f, "; first error: {first}")?;
        }
        Ok(())
    }
}
