//! What a migration tells while it runs ([`MigrationProgress`], after every slice of
//! pre-copy) and when it is done ([`MigrationReport`], with one [`Round`] per pre-copy round).

use std::path::PathBuf;
use std::time::Duration;

use super::converge::SwitchReason;

/// One pre-copy round: a pass over what the device had pending when it started.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Round {
    /// Bytes streamed in the round.
    pub bytes: u64,
    /// How long it took.
    pub duration: Duration,
    /// The data the device reported left at its end (MIG_DATA_SIZE).
    pub remaining: u64,
    /// The round's stream rate (its bytes over its duration), bytes per second.
    pub stream_rate: f64,
    /// What the guest dirtied during the round (what was left at its end, less what was left
    /// at its start, plus its bytes) over its duration, bytes per second. Short rounds see the
    /// device's batches of dirty data, not a steady rate.
    pub dirty_rate: f64,
    /// The throttle level at its end, in percent.
    pub throttle_percent: u8,
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationPhase {
    /// Streaming pre-copy rounds while the guest runs (perhaps throttled).
    PreCopy,
    /// The blackout: the guest's doorbells are held while the rest streams.
    StopCopy,
}

/// A live view of a migration, handed to the caller after every slice of pre-copy and once
/// when the blackout starts.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MigrationProgress {
    /// Where the migration is.
    pub phase: MigrationPhase,
    /// The pre-copy round under way (1-based).
    pub round: u32,
    /// Time since the migration started.
    pub elapsed: Duration,
    /// Bytes streamed so far.
    pub sent: u64,
    /// The data the device reports left (MIG_DATA_SIZE).
    pub remaining: u64,
    /// The stream rate last measured, bytes per second (0 before the first measurement).
    pub stream_rate: f64,
    /// The dirty rate last measured, bytes per second.
    pub dirty_rate: f64,
    /// The throttle level, in percent.
    pub throttle_percent: u8,
    /// When pre-copy is expected to be done at this pace (`None` while the stream gains
    /// nothing on the guest).
    pub eta: Option<Duration>,
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
    /// From the start of `migrate` to the switch-over (the blackout's start).
    pub precopy: Duration,
    /// Pre-copy rounds streamed.
    pub precopy_rounds: u32,
    /// Bytes streamed during pre-copy.
    pub precopy_bytes: u64,
    /// Each pre-copy round.
    pub rounds: Vec<Round>,
    /// Pre-copy rounds that ended with the guest throttled.
    pub throttled_rounds: u32,
    /// The highest throttle level, in percent.
    pub throttle_percent: u8,
    /// How long the guest was throttled.
    pub throttled: Duration,
    /// The stream rate last measured in pre-copy, bytes per second.
    pub stream_rate: f64,
    /// The dirty rate last measured in pre-copy, bytes per second.
    pub dirty_rate: f64,
    /// The downtime limit the migration switched over within.
    pub downtime_limit: Duration,
    /// The blackout expected at the switch-over: what was left at the measured stream rate.
    pub expected_downtime: Duration,
    /// Why pre-copy ended.
    pub switch_reason: Option<SwitchReason>,
    /// Bytes streamed in STOP_COPY.
    pub stop_copy_bytes: u64,
    /// Whole stream size.
    pub stream_bytes: u64,
    /// Device blackout: source leaves RUNNING (doorbells paused, STOP_COPY requested) →
    /// destination RUNNING with doorbells released.
    pub blackout: Duration,
    /// Guest pages the source device reported dirty (DMA logging).
    pub dirty_pages: u64,
    /// Why releasing the source after the switch-over failed (dirty-page report, stopping DMA
    /// logging, ending its saving session), if it did: the migration still succeeded, the
    /// device runs on the destination.
    pub source_release_error: Option<String>,
}
