//! What a workload does: the access pattern, transfer size, queues, limit and verification, and
//! how a configuration is checked against the controller and namespace it runs on.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use nvme_driver::driver::Driver;
use nvme_driver::driver::DriverError;
use serde::Serialize;

use super::block::HEADER_LEN;
use super::error::WorkloadError;
use super::ledger::Baseline;

/// Read or write: the two commands a workload issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// NVM Read.
    Read,
    /// NVM Write.
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
        })
    }
}

/// The access pattern, named as fio names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Pattern {
    /// Sequential reads (each queue walks its own slice of the range).
    Read,
    /// Sequential writes (each queue walks its own slice of the range).
    Write,
    /// Reads at random I/O units of the range.
    RandRead,
    /// Writes at random I/O units of the range.
    RandWrite,
    /// A random mix at random I/O units: `read_percent` of the commands are reads.
    RandRw {
        /// Share of reads, 0..=100.
        read_percent: u8,
    },
    /// A random mix walking each queue's slice sequentially: `read_percent` of the commands
    /// are reads.
    SeqRw {
        /// Share of reads, 0..=100.
        read_percent: u8,
    },
}

impl Pattern {
    /// Share of reads in percent.
    pub fn read_percent(self) -> u8 {
        match self {
            Pattern::Read | Pattern::RandRead => 100,
            Pattern::Write | Pattern::RandWrite => 0,
            Pattern::RandRw { read_percent } | Pattern::SeqRw { read_percent } => read_percent,
        }
    }

    /// True when addresses are picked at random over the whole range (shared by all queues);
    /// false when each queue walks its own slice in order.
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Pattern::RandRead | Pattern::RandWrite | Pattern::RandRw { .. }
        )
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Read => f.write_str("read"),
            Pattern::Write => f.write_str("write"),
            Pattern::RandRead => f.write_str("randread"),
            Pattern::RandWrite => f.write_str("randwrite"),
            Pattern::RandRw { read_percent } => write!(f, "randrw({read_percent}% reads)"),
            Pattern::SeqRw { read_percent } => write!(f, "rw({read_percent}% reads)"),
        }
    }
}

/// When a workload ends (besides the caller's stop flag and stop-on-failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Limit {
    /// After this much time: no command is submitted later, outstanding ones are drained.
    Duration(Duration),
    /// After this many commands over all queues.
    Ios(u64),
}

/// A workload: what to issue, where, how much and whether to verify the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Access pattern.
    pub rw: Pattern,
    /// Bytes per command: a multiple of the namespace's logical block size, at most MDTS.
    /// Commands are aligned to it (the range is cut into I/O units of this size).
    pub block_size: u64,
    /// Commands each queue keeps in flight.
    pub queue_depth: u32,
    /// I/O queue pairs, each driven by its own thread.
    pub queues: u16,
    /// The first I/O queue identifier; queues use `first_qid..first_qid + queues`.
    pub first_qid: u16,
    /// When to stop.
    pub limit: Limit,
    /// Cap on submissions per second over all queues together (`None`: as fast as the queues
    /// go). A worker that finds no token sleeps until the next one: a capped run at queue
    /// depth 1 costs the client little CPU, which is what measuring a server's cost under a
    /// trickle of I/O needs. The bucket holds 10 ms of tokens (at least one) and starts full.
    pub rate: Option<u32>,
    /// Stamp every written block and check every read one (see the `check` module).
    pub verify: bool,
    /// What the units the run never writes hold: earlier content (the default; not judged)
    /// or zeros (a namespace known to start empty, checked).
    pub baseline: Baseline,
    /// Stop all queues at the first verification failure or command error instead of
    /// carrying on.
    pub stop_on_failure: bool,
    /// How many failures (and command errors) to keep in the report; all are counted.
    pub max_failures: usize,
    /// Namespace to run on.
    pub nsid: u32,
    /// LBAs to use; `None` for the whole namespace. Only whole I/O units are used.
    pub lba_range: Option<Range<u64>>,
    /// How long one command may take before the run fails. Generous by default (30 s): a
    /// migration pauses the device for hundreds of milliseconds, and that is not an error.
    pub timeout: Duration,
    /// Length of one timeline bucket (and the progress callback period).
    pub interval: Duration,
    /// Seed for address and read/write choices.
    pub seed: u64,
    /// Whether the host hands the controller shadow doorbell buffers when it offers them
    /// (Doorbell Buffer Config), as Linux's nvme driver does; see
    /// [`Driver::use_shadow_doorbells`](crate::driver::Driver::use_shadow_doorbells). The
    /// caller that brings the controller up honours it.
    pub shadow_doorbells: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            rw: Pattern::RandRw { read_percent: 50 },
            block_size: 4096,
            queue_depth: 16,
            queues: 1,
            first_qid: 1,
            limit: Limit::Duration(Duration::from_secs(1)),
            rate: None,
            verify: true,
            baseline: Baseline::default(),
            stop_on_failure: false,
            max_failures: 32,
            nsid: 1,
            lba_range: None,
            timeout: Duration::from_secs(30),
            interval: Duration::from_millis(100),
            seed: 0x5eed,
            shadow_doorbells: true,
        }
    }
}

/// The most I/O units a ledger may track (a 512 MiB generation table); larger namespaces need
/// an `lba_range`.
pub(crate) const MAX_UNITS: u64 = 1 << 26;

/// The most commands a queue can keep in flight on any NVMe controller: the largest queue
/// CAP.MQES can describe (65536 entries) less the entry that always stays empty. A
/// controller's own limit is usually lower and is checked when the run starts.
pub const MAX_QUEUE_DEPTH: u32 = nvme_spec::registers::Cap::new()
    .with_mqes(u16::MAX)
    .max_queue_entries()
    - 1;

/// The most I/O queues a run can use: every queue identifier but the admin queue's 0.
pub const MAX_QUEUES: u16 = u16::MAX;

/// A namespace's layout as a workload uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Logical block size in bytes.
    pub lba_bytes: u64,
    /// Logical blocks per I/O unit (per command).
    pub unit_blocks: u64,
    /// The LBAs in use: whole units only.
    pub lbas: Range<u64>,
}

impl Geometry {
    /// Checks `block_size` and `lba_range` against namespace `nsid` and the controller's MDTS.
    pub fn resolve(
        driver: &Driver,
        nsid: u32,
        block_size: u64,
        lba_range: Option<&Range<u64>>,
    ) -> Result<Self, WorkloadError> {
        let ns = driver.identify_namespace(nsid).map_err(|err| match err {
            DriverError::Status { .. } => WorkloadError::config(
                "nsid",
                nsid,
                format!("the controller refused Identify Namespace: {err}"),
            ),
            err => err.into(),
        })?;
        if ns.nsze == 0 {
            return Err(WorkloadError::config(
                "nsid",
                nsid,
                "the namespace is not active on this controller (NSZE 0)",
            ));
        }
        let lba_bytes = ns.lba_size().ok_or_else(|| {
            WorkloadError::config("nsid", nsid, "the namespace reports no valid LBA format")
        })?;
        if lba_bytes < HEADER_LEN as u64 {
            return Err(WorkloadError::config(
                "nsid",
                nsid,
                format!("{lba_bytes}-byte blocks cannot hold the {HEADER_LEN}-byte block header"),
            ));
        }
        let mdts = driver.max_transfer();
        if block_size == 0 || !block_size.is_multiple_of(lba_bytes) || block_size > mdts {
            return Err(WorkloadError::config(
                "block_size",
                block_size,
                format!(
                    "must be a non-zero multiple of the {lba_bytes}-byte LBA size, at most MDTS ({mdts} bytes)"
                ),
            ));
        }
        let unit_blocks = block_size / lba_bytes;
        if unit_blocks > 1 << 16 {
            return Err(WorkloadError::config(
                "block_size",
                block_size,
                "more than 65536 blocks per command",
            ));
        }
        let range = lba_range.cloned().unwrap_or(0..ns.nsze);
        if range.start >= range.end || range.end > ns.nsze {
            return Err(WorkloadError::config(
                "lba_range",
                &range,
                format!(
                    "must be a non-empty range within the namespace's {} LBAs",
                    ns.nsze
                ),
            ));
        }
        let units = (range.end - range.start) / unit_blocks;
        if units == 0 || units > MAX_UNITS {
            return Err(WorkloadError::config(
                "lba_range",
                &range,
                format!("must hold 1..={MAX_UNITS} I/O units of {unit_blocks} blocks"),
            ));
        }
        Ok(Self {
            lba_bytes,
            unit_blocks,
            lbas: range.start..range.start + units * unit_blocks,
        })
    }
}

impl WorkloadConfig {
    /// Checks the values that do not depend on the controller.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.rw.read_percent() > 100 {
            return Err(WorkloadError::config(
                "rw",
                self.rw,
                "read_percent must be 0..=100",
            ));
        }
        if self.queues == 0 {
            return Err(WorkloadError::config(
                "queues",
                self.queues,
                "must be at least 1",
            ));
        }
        if self.first_qid == 0 || self.first_qid.checked_add(self.queues - 1).is_none() {
            return Err(WorkloadError::config(
                "first_qid",
                self.first_qid,
                "I/O queue identifiers are 1..=65535 (0 is the admin queue)",
            ));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(WorkloadError::config(
                "queue_depth",
                self.queue_depth,
                format!("must be 1..={MAX_QUEUE_DEPTH} (and below the controller's CAP.MQES + 1)"),
            ));
        }
        if self.rate == Some(0) {
            return Err(WorkloadError::config(
                "rate",
                0,
                "a rate cap must be at least 1 I/O per second (leave it unset for no cap)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(WorkloadError::config(
                "timeout",
                self.timeout,
                "must be positive",
            ));
        }
        if self.interval.is_zero() {
            return Err(WorkloadError::config(
                "interval",
                self.interval,
                "must be positive",
            ));
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => Err(WorkloadError::config(
                "limit",
                self.limit,
                "a run needs a positive duration",
            )),
            Limit::Ios(0) => Err(WorkloadError::config(
                "limit",
                self.limit,
                "a run needs at least one I/O",
            )),
            _ => Ok(()),
        }
    }
}
