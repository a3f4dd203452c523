//! Live progress for long runs (workloads, migrations): a progress line when stdout is a
//! terminal, and with `--json` a stream of migration events on stdout, one JSON object per
//! line before the result (schema in docs/MIGRATION.md, "Progress events").

use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use nvme_host::orchestrator::MigrationPhase;
use nvme_host::orchestrator::MigrationProgress;
use nvme_host::workload::Snapshot;
use serde::Serialize;

/// A migration's line stays on the bar this long after its last event, over the workload's.
const MIGRATION_LINE_HOLD: Duration = Duration::from_millis(500);

/// A progress bar over the expected run time (when stdout is a terminal and the output is not
/// JSON), or JSON events (with `--json`), or nothing.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    json: bool,
    /// When the bar last showed a migration event.
    migration_shown: Mutex<Option<Instant>>,
}

/// A migration progress event as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct MigrationEvent<'a> {
    /// Always `"migration"`.
    pub event: &'static str,
    /// The destination socket.
    pub to: &'a Path,
    /// `pre_copy` or `stop_copy` (the blackout starts).
    pub phase: MigrationPhase,
    /// The pre-copy round under way (1-based).
    pub round: u32,
    /// Since the migration started.
    pub elapsed_ms: f64,
    /// Bytes streamed so far.
    pub sent_bytes: u64,
    /// The data the device reports left.
    pub remaining_bytes: u64,
    /// The stream rate last measured, MB/s.
    pub stream_mb_s: f64,
    /// The dirty rate last measured, MB/s.
    pub dirty_mb_s: f64,
    /// The throttle level, percent.
    pub throttle_percent: u8,
    /// When pre-copy is expected to be done at this pace; null while the stream gains nothing.
    pub eta_s: Option<f64>,
}

impl<'a> MigrationEvent<'a> {
    /// The event for `progress` of a migration to `to`.
    pub fn new(to: &'a Path, progress: &MigrationProgress) -> Self {
        Self {
            event: "migration",
            to,
            phase: progress.phase,
            round: progress.round,
            elapsed_ms: progress.elapsed.as_secs_f64() * 1e3,
            sent_bytes: progress.sent,
            remaining_bytes: progress.remaining,
            stream_mb_s: progress.stream_rate / 1e6,
            dirty_mb_s: progress.dirty_rate / 1e6,
            throttle_percent: progress.throttle_percent,
            eta_s: progress.eta.map(|d| d.as_secs_f64()),
        }
    }

    /// The one-line human form, for the progress bar.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        match self.phase {
            MigrationPhase::PreCopy => format!(
                "migrating to {}: round {}, {:.0} MiB sent, {:.0} MiB left, {:.0} MB/s, dirty \
                 {:.0} MB/s, throttle {} %, ETA {}",
                self.to.display(),
                self.round,
                mib(self.sent_bytes),
                mib(self.remaining_bytes),
                self.stream_mb_s,
                self.dirty_mb_s,
                self.throttle_percent,
                self.eta_s
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
            ),
            MigrationPhase::StopCopy => format!(
                "migrating to {}: switching over with {:.1} MiB left",
                self.to.display(),
                mib(self.remaining_bytes)
            ),
        }
    }
}

impl Progress {
    /// A bar expecting the run to take about `expected`; with `json`, events instead.
    pub fn new(expected: Duration, json: bool) -> Self {
        let bar = (!json && std::io::stdout().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(expected.as_millis() as u64);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            json,
            migration_shown: Mutex::new(None),
        }
    }

    /// Shows a workload snapshot and the current phase (e.g. "migrating to …"), unless a
    /// migration event is on show.
    pub fn update(&self, snapshot: &Snapshot, phase: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position((snapshot.elapsed_s * 1000.0) as u64);
            let shown = *self
                .migration_shown
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if shown.is_some_and(|t| t.elapsed() < MIGRATION_LINE_HOLD) {
                return;
            }
            bar.set_message(format!(
                "{phase}: {:.0} IOPS, p99 {:.0} µs, {} failures",
                snapshot.last.iops, snapshot.last.p99_us, snapshot.failures
            ));
        }
    }

    /// Shows a migration's progress: on the bar, or as a JSON event line on stdout.
    pub fn migration(&self, to: &Path, progress: &MigrationProgress) {
        let event = MigrationEvent::new(to, progress);
        if let Some(bar) = &self.bar {
            bar.set_message(event.line());
            *self
                .migration_shown
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        } else if self.json
            && let Ok(line) = serde_json::to_string(&event)
        {
            let mut out = std::io::stdout().lock();
            // A closed stdout shows in the result's own print.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_units_in_their_keys() {
        let progress = MigrationProgress {
            phase: MigrationPhase::PreCopy,
            round: 2,
            elapsed: Duration::from_millis(1500),
            sent: 3 << 20,
            remaining: 1 << 20,
            stream_rate: 280e6,
            dirty_rate: 70e6,
            throttle_percent: 30,
            eta: None,
        };
        let event = MigrationEvent::new(Path::new("/b.sock"), &progress);
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "migration");
        assert_eq!(json["phase"], "pre_copy");
        assert_eq!(json["elapsed_ms"], 1500.0);
        assert_eq!(json["sent_bytes"], 3 << 20);
        assert_eq!(json["stream_mb_s"], 280.0);
        assert_eq!(json["eta_s"], serde_json::Value::Null);
        let line = event.line();
        assert!(
            line.contains("round 2, 3 MiB sent, 1 MiB left, 280 MB/s"),
            "{line}"
        );
        assert!(line.contains("throttle 30 %, ETA -"), "{line}");
    }
}
