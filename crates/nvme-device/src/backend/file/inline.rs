//! When the io_uring engine writes to the page cache itself instead of through the ring.
//!
//! A buffered write is a copy into the page cache. Where the filesystem can tell that such a
//! write would not block (`RWF_NOWAIT`; XFS and btrfs can), io_uring does it inside the submit
//! call; ext4 cannot, so io_uring hands *every* buffered write to one of its worker threads,
//! and a queue-depth-1 guest pays two thread hand-offs per write (on a busy host, two waits for
//! a CPU). Doing the `pwritev2` in the I/O worker instead costs one system call.
//!
//! What a buffered write can still do is block: on a full dirty-page budget the kernel throttles
//! the writer (`balance_dirty_pages`) for up to hundreds of milliseconds, and the I/O worker
//! would stall every queue it serves for that long. So [`InlineWrites`] watches what its writes
//! take: one slower than [`SLOW_WRITE`] sends the writes of the next [`FIRST_PAUSE`] through the
//! ring again, and a slow write soon after the pause (the file is still under pressure) doubles
//! the pause, up to [`LONGEST_PAUSE`]. A stall of the worker is thereby limited to one write
//! per pause while the page cache is under pressure, and costs nothing when it is not.
//! `O_DIRECT` files never write inline: their writes wait for the device.
//!
//! Large writes ([`LARGE_WRITE`] and up) that more requests follow at once
//! ([`IoRequest::batched`](crate::backend::IoRequest::batched)) go through the ring too: a
//! guest's large write comes as several commands of the controller's largest transfer, and the
//! ring's worker threads copy them side by side (and beside the I/O worker, which writes the
//! last one itself), where the I/O worker alone would copy them one after the other. A large
//! write on its own stays inline: there the hand-offs cost as much as the copy.

use std::time::Duration;
use std::time::Instant;

/// An inline write that took longer than this is taken for blocking.
pub(super) const SLOW_WRITE: Duration = Duration::from_millis(1);
/// Writes go through the ring for this long after a slow inline write.
pub(super) const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause.
pub(super) const LONGEST_PAUSE: Duration = Duration::from_secs(10);
/// A slow write within this many pauses of the last slow one doubles the pause.
const PRESSURE_WINDOW: u32 = 4;
/// Batched writes of at least this many bytes go through the ring (see the module
/// documentation).
pub(super) const LARGE_WRITE: usize = 128 * 1024;

/// The inline-write policy of one io_uring queue (see the module documentation).
#[derive(Debug)]
pub(super) struct InlineWrites {
    enabled: bool,
    /// Until when writes go through the ring.
    paused_until: Option<Instant>,
    /// The pause after the next slow write.
    pause: Duration,
    /// When the last slow inline write ended.
    last_slow: Option<Instant>,
}

impl InlineWrites {
    /// The policy of a queue whose file is opened buffered (`enabled`) or with `O_DIRECT`.
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            paused_until: None,
            pause: FIRST_PAUSE,
            last_slow: None,
        }
    }

    /// Whether a buffered, non-FUA write of `len` bytes starting now goes inline, when more
    /// requests follow it at once (`batched`) or not: its start time if so (the clock is not
    /// read for a write that goes through the ring anyway).
    pub(super) fn start(&self, len: usize, batched: bool) -> Option<Instant> {
        if !self.enabled || (batched && len >= LARGE_WRITE) {
            return None;
        }
        let now = Instant::now();
        self.admits(now).then_some(now)
    }

    /// Whether a write starting at `now` goes inline.
    fn admits(&self, now: Instant) -> bool {
        self.enabled && self.paused_until.is_none_or(|until| now >= until)
    }

    /// Records an inline write that ran from `start` to `end`.
    pub(super) fn record(&mut self, start: Instant, end: Instant) {
        if end.saturating_duration_since(start) <= SLOW_WRITE {
            return;
        }
        let under_pressure = self
            .last_slow
            .is_some_and(|last| end.saturating_duration_since(last) < self.pause * PRESSURE_WINDOW);
        self.pause = if under_pressure {
            (self.pause * 2).min(LONGEST_PAUSE)
        } else {
            FIRST_PAUSE
        };
        self.last_slow = Some(end);
        self.paused_until = Some(end + self.pause);
        tracing::debug!(
            took_us = end.saturating_duration_since(start).as_micros() as u64,
            pause_ms = self.pause.as_millis() as u64,
            "a buffered file write blocked the I/O worker; writes go through io_uring for a while"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn direct_files_never_write_inline() {
        let policy = InlineWrites::new(false);
        assert!(!policy.admits(Instant::now()));
        assert_eq!(policy.start(4096, false), None);
        assert!(InlineWrites::new(true).start(4096, false).is_some());
    }

    #[test]
    fn large_writes_that_others_follow_go_through_the_ring() {
        let policy = InlineWrites::new(true);
        assert!(policy.start(LARGE_WRITE - 4096, true).is_some());
        assert_eq!(policy.start(LARGE_WRITE, true), None);
        assert_eq!(policy.start(1 << 20, true), None);
        // On its own, a large write is copied at once.
        assert!(policy.start(1 << 20, false).is_some());
    }

    #[test]
    fn fast_writes_stay_inline() {
        let t0 = Instant::now();
        let mut policy = InlineWrites::new(true);
        for i in 0..1000 {
            let start = t0 + Duration::from_micros(10 * i);
            assert!(policy.admits(start));
            policy.record(start, start + Duration::from_micros(5));
        }
        // Exactly the threshold is not slow.
        policy.record(t0, t0 + SLOW_WRITE);
        assert!(policy.admits(t0 + SLOW_WRITE));
    }

    #[test]
    fn a_slow_write_pauses_inlining_and_pressure_doubles_the_pause_up_to_the_longest() {
        let t0 = Instant::now();
        let mut policy = InlineWrites::new(true);
        // A first slow write: the first pause.
        let end = t0 + ms(5);
        policy.record(t0, end);
        assert!(!policy.admits(end));
        assert!(!policy.admits(end + FIRST_PAUSE - ms(1)));
        assert!(policy.admits(end + FIRST_PAUSE));
        // Slow again right after the pause: twice as long, and so on up to the longest.
        let mut now = end + FIRST_PAUSE;
        let mut expected = FIRST_PAUSE;
        for _ in 0..12 {
            let end = now + ms(2);
            policy.record(now, end);
            expected = (expected * 2).min(LONGEST_PAUSE);
            assert!(!policy.admits(end + expected - ms(1)));
            assert!(policy.admits(end + expected));
            now = end + expected;
        }
        assert_eq!(expected, LONGEST_PAUSE);
        // Long after the last one, a slow write starts over at the first pause.
        let later = now + LONGEST_PAUSE * PRESSURE_WINDOW;
        policy.record(later, later + ms(2));
        assert!(policy.admits(later + ms(2) + FIRST_PAUSE));
    }
}
