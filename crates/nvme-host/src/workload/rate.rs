//! The submission rate cap (`WorkloadConfig::rate`): one token bucket shared by every worker of
//! a run, so the cap is on the total over all queues.
//!
//! The bucket is kept as the generic cell rate algorithm's single number, the theoretical
//! arrival time (TAT) of the next token, in one atomic: taking a token is a compare-and-swap,
//! no lock. It holds at most [`Pacer::burst`] tokens, refills at the rate, and starts full. A
//! worker that finds it empty learns when the next token arrives and sleeps until then (or
//! polls for completions meanwhile); nothing spins waiting for a token.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// How much time's worth of tokens the bucket holds: a worker that slept too long catches up
/// by this much, so the achieved rate stays at the cap despite timer slack.
const BURST_WINDOW: Duration = Duration::from_millis(10);

/// A token bucket of `rate` tokens per second shared by a run's workers.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Time zero of the bucket's clock.
    origin: Instant,
    /// Nanoseconds between tokens.
    interval_ns: u64,
    /// How far ahead of the clock the TAT may run: `(burst - 1) * interval_ns`.
    tolerance_ns: u64,
    /// Theoretical arrival time of the next token, nanoseconds since `origin`.
    tat_ns: AtomicU64,
}

impl Pacer {
    /// A full bucket of [`BURST_WINDOW`]'s worth of tokens (at least one), refilled at
    /// `rate` per second from `origin` on. `rate` must be positive.
    pub(crate) fn new(origin: Instant, rate: u32) -> Self {
        let rate = u64::from(rate.max(1));
        let burst = (rate * BURST_WINDOW.as_nanos() as u64 / 1_000_000_000).max(1);
        Self::with_burst(origin, rate, burst)
    }

    /// A full bucket of `burst` tokens refilled at `rate` per second.
    fn with_burst(origin: Instant, rate: u64, burst: u64) -> Self {
        let interval_ns = (1_000_000_000 / rate.max(1)).max(1);
        Self {
            origin,
            interval_ns,
            tolerance_ns: (burst.max(1) - 1) * interval_ns,
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Tokens the bucket holds when full.
    #[cfg(test)]
    fn burst(&self) -> u64 {
        self.tolerance_ns / self.interval_ns + 1
    }

    /// Takes a token at `now`; when the bucket is empty, says when the next one arrives.
    pub(crate) fn try_take(&self, now: Instant) -> Result<(), Instant> {
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.try_take_at(now_ns)
            .map_err(|at_ns| self.origin + Duration::from_nanos(at_ns))
    }

    /// [`try_take`](Self::try_take) on the bucket's own clock (nanoseconds since `origin`).
    fn try_take_at(&self, now_ns: u64) -> Result<(), u64> {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let allowed_at = tat.saturating_sub(self.tolerance_ns);
            if now_ns < allowed_at {
                return Err(allowed_at);
            }
            let next = tat.max(now_ns) + self.interval_ns;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens granted when `tries` takes are attempted at `now_ns`.
    fn granted(pacer: &Pacer, now_ns: u64, tries: u32) -> u64 {
        (0..tries)
            .filter(|_| pacer.try_take_at(now_ns).is_ok())
            .count() as u64
    }

    #[test]
    fn a_full_bucket_grants_its_burst_then_says_when_the_next_token_comes() {
        let pacer = Pacer::with_burst(Instant::now(), 1000, 5);
        assert_eq!(pacer.burst(), 5);
        assert_eq!(granted(&pacer, 0, 100), 5);
        // The sixth token arrives one interval (1 ms) after the clock started.
        assert_eq!(pacer.try_take_at(0), Err(1_000_000));
        assert_eq!(pacer.try_take_at(999_999), Err(1_000_000));
        assert_eq!(pacer.try_take_at(1_000_000), Ok(()));
        assert_eq!(pacer.try_take_at(1_000_000), Err(2_000_000));
    }

    #[test]
    fn over_any_stretch_of_time_no_more_than_burst_plus_rate_times_time_is_granted() {
        // A hungry taker polling at uneven moments: by every moment t the tokens granted never
        // exceed burst + t * rate, and the bucket refills to exactly that when it waits.
        let burst = 10;
        let pacer = Pacer::with_burst(Instant::now(), 1000, burst);
        let mut total = 0;
        let mut now_ns = 0u64;
        let mut step = 1u64;
        for _ in 0..10_000 {
            total += granted(&pacer, now_ns, 50);
            let allowed = burst + now_ns / pacer.interval_ns;
            assert!(
                total <= allowed,
                "{total} tokens by {now_ns} ns, at most {allowed}"
            );
            step = (step * 7919 + 13) % 3_000_000;
            now_ns += step;
        }
        // After a long pause the bucket is full again, not more.
        now_ns += 1_000_000_000;
        assert_eq!(granted(&pacer, now_ns, 1000), burst);
    }

    #[test]
    fn the_default_burst_is_ten_milliseconds_of_tokens_and_at_least_one() {
        let origin = Instant::now();
        assert_eq!(Pacer::new(origin, 1000).burst(), 10);
        assert_eq!(Pacer::new(origin, 100_000).burst(), 1000);
        assert_eq!(Pacer::new(origin, 1).burst(), 1);
        assert_eq!(Pacer::new(origin, 0).burst(), 1);
    }

    #[test]
    fn takers_on_several_threads_share_one_bucket() {
        let pacer = Pacer::with_burst(Instant::now(), 1, 64);
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| granted(&pacer, 0, 1000)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(total, 64);
    }
}
