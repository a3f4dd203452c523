//! Collecting completions into statistics without locks on the hot path: each queue's worker
//! records into its own [`Interval`] (one uncontended lock per batch of completions), and the
//! collector on the calling thread swaps the intervals out once per timeline bucket.

use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::config::Op;
use super::report::Bucket;
use super::report::LatencySummary;
use super::report::Snapshot;

/// Latencies above this (100 s, beyond any timeout in use) are recorded as this.
const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// An empty latency histogram (nanoseconds, three significant digits).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Completions of one queue since the collector last took them.
pub(crate) struct Interval {
    reads: u64,
    writes: u64,
    errors: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Interval {
    fn new() -> Self {
        Self {
            reads: 0,
            writes: 0,
            errors: 0,
            bytes: 0,
            latency: latency_histogram(),
        }
    }

    /// Records one completion of `bytes` that took `latency`; `ok` when it succeeded.
    pub(crate) fn record(&mut self, op: Op, bytes: u64, latency: Duration, ok: bool) {
        match op {
            Op::Read => self.reads += 1,
            Op::Write => self.writes += 1,
        }
        if ok {
            self.bytes += bytes;
        } else {
            self.errors += 1;
        }
        self.latency.saturating_record(nanos(latency).max(1));
    }

    fn clear(&mut self) {
        self.reads = 0;
        self.writes = 0;
        self.errors = 0;
        self.bytes = 0;
        self.latency.reset();
    }
}

/// The longest gap between completions seen so far.
#[derive(Clone, Copy, Debug, Default)]
struct Stall {
    length_ns: u64,
    end_ns: u64,
}

/// State shared by the workers and the collector.
pub(crate) struct Live {
    start: Instant,
    intervals: Vec<Mutex<Interval>>,
    last_completion_ns: AtomicU64,
    longest_stall_ns: AtomicU64,
    stall: Mutex<Stall>,
    /// The longest gap that ended since the collector's last tick.
    bucket_gap_ns: AtomicU64,
}

impl Live {
    /// Statistics for `queues` workers of a run that started at `start`.
    pub(crate) fn new(queues: usize, start: Instant) -> Self {
        Self {
            start,
            intervals: (0..queues).map(|_| Mutex::new(Interval::new())).collect(),
            last_completion_ns: AtomicU64::new(0),
            longest_stall_ns: AtomicU64::new(0),
            stall: Mutex::new(Stall::default()),
            bucket_gap_ns: AtomicU64::new(0),
        }
    }

    fn since_start(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.start))
    }

    /// Worker `worker`'s interval, to record a batch of completions.
    pub(crate) fn interval(&self, worker: usize) -> MutexGuard<'_, Interval> {
        self.intervals[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that completions arrived at `now`, tracking the longest gap between completions
    /// on any queue.
    pub(crate) fn completed(&self, now: Instant) {
        let t = self.since_start(now);
        let previous = self.last_completion_ns.fetch_max(t, Ordering::AcqRel);
        let gap = t.saturating_sub(previous);
        if gap > self.bucket_gap_ns.load(Ordering::Relaxed) {
            self.bucket_gap_ns.fetch_max(gap, Ordering::Relaxed);
        }
        if gap > self.longest_stall_ns.load(Ordering::Relaxed) {
            let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
            if gap > stall.length_ns {
                *stall = Stall {
                    length_ns: gap,
                    end_ns: t,
                };
                self.longest_stall_ns.store(gap, Ordering::Relaxed);
            }
        }
    }

    /// The longest stall as of `now`, counting a stall still going on.
    fn stall_at(&self, now: Instant) -> Stall {
        let t = self.since_start(now);
        let recorded = *self.stall.lock().unwrap_or_else(|p| p.into_inner());
        let open = t.saturating_sub(self.last_completion_ns.load(Ordering::Acquire));
        if open > recorded.length_ns {
            Stall {
                length_ns: open,
                end_ns: t,
            }
        } else {
            recorded
        }
    }
}

/// Totals over a finished run.
pub(crate) struct Totals {
    pub elapsed: Duration,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency: LatencySummary,
    pub longest_stall: Duration,
    pub longest_stall_end: Duration,
    pub timeline: Vec<Bucket>,
}

/// Turns the workers' intervals into timeline buckets, snapshots and totals (calling thread).
pub(crate) struct Collector {
    spare: Interval,
    bucket: Histogram<u64>,
    total: Histogram<u64>,
    reads: u64,
    writes: u64,
    errors: u64,
    bytes: u64,
    last_tick_ns: u64,
    timeline: Vec<Bucket>,
}

impl Collector {
    /// A collector with nothing collected.
    pub(crate) fn new() -> Self {
        Self {
            spare: Interval::new(),
            bucket: latency_histogram(),
            total: latency_histogram(),
            reads: 0,
            writes: 0,
            errors: 0,
            bytes: 0,
            last_tick_ns: 0,
            timeline: Vec::new(),
        }
    }

    /// Closes the bucket ending at `now`: takes every worker's interval, adds the bucket to the
    /// timeline and returns it.
    pub(crate) fn tick(&mut self, live: &Live, now: Instant) -> Bucket {
        let now_ns = live.since_start(now);
        let mut bucket = Bucket {
            start_ms: self.last_tick_ns as f64 / 1e6,
            duration_ms: now_ns.saturating_sub(self.last_tick_ns) as f64 / 1e6,
            ..Bucket::default()
        };
        let mut bytes = 0;
        self.bucket.reset();
        for interval in &live.intervals {
            std::mem::swap(
                &mut *interval.lock().unwrap_or_else(|p| p.into_inner()),
                &mut self.spare,
            );
            bucket.reads += self.spare.reads;
            bucket.writes += self.spare.writes;
            bucket.errors += self.spare.errors;
            bytes += self.spare.bytes;
            // Same bounds on both sides: adding cannot fail.
            let _ = self.bucket.add(&self.spare.latency);
            self.spare.clear();
        }
        let _ = self.total.add(&self.bucket);
        let secs = bucket.duration_ms / 1e3;
        if secs > 0.0 {
            bucket.iops = (bucket.reads + bucket.writes) as f64 / secs;
            bucket.mb_per_s = bytes as f64 / secs / 1e6;
        }
        let ended = live.bucket_gap_ns.swap(0, Ordering::Relaxed);
        let open = now_ns.saturating_sub(live.last_completion_ns.load(Ordering::Acquire));
        bucket.longest_gap_ms = ended.max(open) as f64 / 1e6;
        let latency = LatencySummary::of(&self.bucket);
        bucket.p50_us = latency.p50_us;
        bucket.p99_us = latency.p99_us;
        self.reads += bucket.reads;
        self.writes += bucket.writes;
        self.errors += bucket.errors;
        self.bytes += bytes;
        self.last_tick_ns = now_ns;
        self.timeline.push(bucket);
        bucket
    }

    /// Progress as of `now`, after the bucket `last` closed.
    pub(crate) fn snapshot(
        &self,
        live: &Live,
        now: Instant,
        last: Bucket,
        failures: u64,
    ) -> Snapshot {
        Snapshot {
            elapsed_s: now.saturating_duration_since(live.start).as_secs_f64(),
            reads: self.reads,
            writes: self.writes,
            errors: self.errors,
            failures,
            last,
            longest_stall_ms: live.stall_at(now).length_ns as f64 / 1e6,
        }
    }

    /// Closes the last (partial) bucket at `end` and returns the run's totals.
    pub(crate) fn finish(mut self, live: &Live, end: Instant) -> Totals {
        self.tick(live, end);
        let stall = live.stall_at(end);
        Totals {
            elapsed: end.saturating_duration_since(live.start),
            reads: self.reads,
            writes: self.writes,
            errors: self.errors,
            bytes: self.bytes,
            latency: LatencySummary::of(&self.total),
            longest_stall: Duration::from_nanos(stall.length_ns),
            longest_stall_end: Duration::from_nanos(stall.end_ns),
            timeline: self.timeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_totals_and_stalls() {
        let start = Instant::now();
        let live = Live::new(2, start);
        let mut collector = Collector::new();
        {
            let mut a = live.interval(0);
            a.record(Op::Read, 4096, Duration::from_micros(10), true);
            a.record(Op::Write, 4096, Duration::from_micros(30), true);
        }
        live.interval(1)
            .record(Op::Write, 4096, Duration::from_micros(20), false);
        live.completed(start + Duration::from_millis(5));
        live.completed(start + Duration::from_millis(305));
        live.completed(start + Duration::from_millis(306));
        let b = collector.tick(&live, start + Duration::from_millis(100));
        assert_eq!((b.reads, b.writes, b.errors), (1, 2, 1));
        assert!((b.iops - 30.0).abs() < 1e-6, "{}", b.iops);
        assert!((b.mb_per_s - 8192.0 / 0.1 / 1e6).abs() < 1e-9);
        assert!((b.p50_us - 20.0).abs() < 0.1, "{}", b.p50_us);
        assert!((b.p99_us - 30.0).abs() < 0.1, "{}", b.p99_us);
        // The 5 → 305 ms gap ended before this tick.
        assert!(
            (b.longest_gap_ms - 300.0).abs() < 1e-6,
            "{}",
            b.longest_gap_ms
        );
        // The intervals were emptied.
        let empty = collector.tick(&live, start + Duration::from_millis(200));
        assert_eq!((empty.reads, empty.writes, empty.p99_us), (0, 0, 0.0));
        assert_eq!(empty.start_ms, 100.0);
        assert_eq!(empty.longest_gap_ms, 0.0);
        let snap = collector.snapshot(&live, start + Duration::from_millis(310), empty, 7);
        assert_eq!((snap.reads, snap.writes, snap.failures), (1, 2, 7));
        assert!((snap.longest_stall_ms - 300.0).abs() < 1e-6);
        // A stall going on at the end counts too.
        let totals = collector.finish(&live, start + Duration::from_millis(1000));
        assert_eq!(totals.latency.samples, 3);
        assert!((totals.latency.max_us - 30.0).abs() < 0.1);
        assert_eq!(totals.longest_stall, Duration::from_millis(694));
        assert_eq!(totals.longest_stall_end, Duration::from_millis(1000));
        assert_eq!(totals.timeline.len(), 3);
        // The last bucket holds the gap still open at the end.
        assert!((totals.timeline[2].longest_gap_ms - 694.0).abs() < 1e-6);
        assert_eq!(totals.bytes, 8192);
    }
}
