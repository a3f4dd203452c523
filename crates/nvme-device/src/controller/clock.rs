//! The controller's clock: how long it has been powered on and running.
//!
//! It counts from the controller's creation and stops while TP4159 has the controller
//! suspended, so a suspended controller's saved state does not change with time (Get Controller
//! State twice gives the same bytes, and save → restore → save is byte-identical). It travels
//! with the controller: the SMART / Health log's Power On Hours and a host-set Timestamp
//! continue on the destination from the source's values instead of restarting.

use std::time::Duration;
use std::time::Instant;

/// Running time that stops while the controller is suspended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Uptime {
    /// Time counted before the current run.
    counted: Duration,
    /// When the current run started; `None` while stopped.
    since: Option<Instant>,
}

impl Uptime {
    /// A clock that starts counting now, from zero.
    pub fn started() -> Self {
        Self {
            counted: Duration::ZERO,
            since: Some(Instant::now()),
        }
    }

    /// Time counted so far.
    pub fn elapsed(&self) -> Duration {
        self.counted + self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Stops counting (no-op if stopped).
    pub fn stop(&mut self) {
        if let Some(since) = self.since.take() {
            self.counted += since.elapsed();
        }
    }

    /// Counts again from now (no-op if running).
    pub fn start(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Takes `elapsed` as the time counted so far (a state restore), running or stopped as
    /// before.
    pub fn set(&mut self, elapsed: Duration) {
        self.counted = elapsed;
        if self.since.is_some() {
            self.since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_and_restarts_where_it_stopped() {
        let mut clock = Uptime::started();
        clock.set(Duration::from_secs(7200));
        assert!(clock.elapsed() >= Duration::from_secs(7200));
        clock.stop();
        let frozen = clock.elapsed();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.elapsed(), frozen, "a stopped clock does not move");
        clock.stop();
        assert_eq!(clock.elapsed(), frozen);
        clock.set(Duration::from_millis(5));
        assert_eq!(
            clock.elapsed(),
            Duration::from_millis(5),
            "restored while stopped"
        );
        clock.start();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.elapsed() > Duration::from_millis(5));
    }
}
