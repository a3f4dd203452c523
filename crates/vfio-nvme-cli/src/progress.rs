//! A live progress line for long runs (workloads, migrations) when stdout is a terminal.

use std::io::IsTerminal as _;
use std::time::Duration;

use nvme_host::workload::Snapshot;

/// A progress bar over the expected run time, or nothing when output is JSON or not a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar expecting the run to take about `expected`.
    pub fn new(expected: Duration, json: bool) -> Self {
        Self((!json && std::io::stdout().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(expected.as_millis() as u64);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        }))
    }

    /// Shows a workload snapshot and the current phase (e.g. "migrating to …").
    pub fn update(&self, snapshot: &Snapshot, phase: &str) {
        if let Some(bar) = &self.0 {
            bar.set_position((snapshot.elapsed_s * 1000.0) as u64);
            bar.set_message(format!(
                "{phase}: {:.0} IOPS, p99 {:.0} µs, {} failures",
                snapshot.last.iops, snapshot.last.p99_us, snapshot.failures
            ));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
