//! The convergence policy: when pre-copy switches over, how hard the guest is throttled, when
//! the migration gives up. It sees only numbers — the bytes moved, the data the device reports
//! left (MIG_DATA_SIZE), the commands the guest submitted, the time — so it is tested with a
//! model of a guest and a stream (see the tests).
//!
//! * **Rates**, measured over periods of at least [`MIN_PERIOD`]: the stream rate is the bytes
//!   moved per second (pacing by `--max-bandwidth` included); the dirty rate is what the
//!   device's remaining data grew by on top of what was moved, per second.
//! * **Switch-over** (QEMU's `downtime-limit`): at the end of a round, when what is left would
//!   stream within the downtime limit at the measured stream rate, *and* another round would
//!   not be worth it — what is left is at most [`SETTLED_BYTES`], or the round did not shrink
//!   what was left when it started by a quarter and the guest cannot be slowed further. A
//!   round costs the guest only a slowdown, the blackout stops it, so the policy keeps copying
//!   while rounds still shrink what is left, and when they stop it raises the throttle first.
//! * **Throttle** (QEMU's auto-converge and dirty-limit): while the dirty rate is above the
//!   trigger — `--dirty-limit` if given, else half the stream rate (QEMU's
//!   `throttle-trigger-threshold` of 50 %), or while rounds that fit the downtime limit stop
//!   shrinking what is left — the level rises once per [`THROTTLE_PERIOD`]:
//!   20 %, then 10 points at a time, at most 99 % (QEMU's `cpu-throttle-initial`,
//!   `-increment`, the 99 % maximum). At level L the guest's I/O commands are admitted at
//!   (100 − L) % of the rate it submitted them before it was first throttled. The level never
//!   drops during a migration.
//! * **Give up** when the timeout passes and what is left does not fit the downtime limit.

use std::time::Duration;

/// Rates are measured over at least this long (shorter rounds add to the next measurement):
/// the device notes dirty data in batches, so shorter periods see bursts, not rates. Until the
/// first such period has passed, the rates are over all of pre-copy so far.
pub const MIN_PERIOD: Duration = Duration::from_millis(500);
/// The throttle level rises at most once per this period (QEMU's dirty-limit period).
pub const THROTTLE_PERIOD: Duration = Duration::from_secs(1);
/// At most this much left and another round is not worth its overhead.
pub const SETTLED_BYTES: u64 = 1 << 20;
/// The first throttle level, in percent (QEMU's `cpu-throttle-initial`).
pub const THROTTLE_INITIAL: u8 = 20;
/// Each further step, in percentage points (QEMU's `cpu-throttle-increment`).
pub const THROTTLE_INCREMENT: u8 = 10;
/// The highest level, in percent (QEMU's maximum).
pub const THROTTLE_MAX: u8 = 99;
/// Without `--dirty-limit`, the guest is throttled while it dirties faster than this share of
/// the stream rate (QEMU's `throttle-trigger-threshold`).
pub const THROTTLE_TRIGGER: f64 = 0.5;

/// The limits one migration converges within; QEMU's migration parameters of the same names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvergeLimits {
    /// The longest blackout to accept: switch over only when what is left would stream within
    /// it at the measured stream rate.
    pub downtime_limit: Duration,
    /// Throttle the guest while it dirties more than this many bytes per second (`None`: more
    /// than half the stream rate).
    pub dirty_limit: Option<f64>,
    /// Give up (and resume on the source) when pre-copy has not converged within this.
    pub timeout: Duration,
}

/// One observation of pre-copy, counted from its start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Time since pre-copy started.
    pub elapsed: Duration,
    /// Bytes moved since pre-copy started.
    pub sent: u64,
    /// The data the source reports left (MIG_DATA_SIZE).
    pub remaining: u64,
    /// I/O commands the guest submitted since pre-copy started.
    pub commands: u64,
}

/// Rates measured between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Bytes moved per second.
    pub stream: f64,
    /// Bytes the guest made the device send again (or anew), per second.
    pub dirty: f64,
    /// I/O commands the guest submitted per second.
    pub commands: f64,
}

impl Rates {
    /// The rates from `from` to `to` (`None` when no time passed between them). What the
    /// guest dirtied is what was left at `to`, less what was left at `from`, plus what was sent
    /// meanwhile.
    pub fn between(from: Sample, to: Sample) -> Option<Self> {
        let dt = to.elapsed.saturating_sub(from.elapsed);
        if dt.is_zero() {
            return None;
        }
        let secs = dt.as_secs_f64();
        let sent = to.sent.saturating_sub(from.sent) as f64;
        let grown = to.remaining as f64 - from.remaining as f64;
        Some(Self {
            stream: sent / secs,
            dirty: ((grown + sent) / secs).max(0.0),
            commands: to.commands.saturating_sub(from.commands) as f64 / secs,
        })
    }
}

/// Why pre-copy ended with a switch-over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// At most [`SETTLED_BYTES`] were left.
    Settled,
    /// What was left fitted the downtime limit and the last round did not shrink it by a
    /// quarter, with the guest throttled as far as it goes (or not throttleable).
    Converged,
    /// The timeout came with what was left fitting the downtime limit.
    Timeout,
}

impl std::fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Settled => "settled: at most 1 MiB was left",
            Self::Converged => {
                "converged: what was left fitted the downtime limit and rounds stopped shrinking it at the \
                 highest throttle"
            }
            Self::Timeout => "the timeout came with what was left fitting the downtime limit",
        })
    }
}

/// What to do after an observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Keep copying.
    Continue,
    /// Stop the guest and stream the rest (the blackout).
    SwitchOver(SwitchReason),
    /// The timeout passed and what is left does not fit the downtime limit: abort.
    GiveUp,
}

/// The policy's state during one migration.
#[derive(Clone, Debug)]
pub struct Converge {
    limits: ConvergeLimits,
    /// Where the current measurement period started.
    period: Sample,
    /// Whether a whole [`MIN_PERIOD`] has been measured yet.
    full_period: bool,
    /// Where the current round started.
    round: Sample,
    rates: Option<Rates>,
    throttle: u8,
    /// The guest's command rate before it was first throttled.
    baseline: Option<f64>,
    /// When the throttle last rose.
    raised: Option<Duration>,
}

impl Converge {
    /// A policy within `limits`, starting at `start` (the first round starts there too).
    pub fn new(limits: ConvergeLimits, start: Sample) -> Self {
        Self {
            limits,
            period: start,
            full_period: false,
            round: start,
            rates: None,
            throttle: 0,
            baseline: None,
            raised: None,
        }
    }

    /// The throttle level, in percent (0: not throttled).
    pub fn throttle_percent(&self) -> u8 {
        self.throttle
    }

    /// The rate to admit the guest's I/O commands at (`None`: unthrottled).
    pub fn admit_rate(&self) -> Option<f64> {
        let baseline = self.baseline?;
        (self.throttle > 0).then(|| baseline * f64::from(100 - self.throttle) / 100.0)
    }

    /// The last measured rates (`None` before the first measurement).
    pub fn rates(&self) -> Option<Rates> {
        self.rates
    }

    /// How long `remaining` bytes would take at the measured stream rate (`None` before a
    /// rate is measured, or when nothing moves).
    pub fn expected_downtime(&self, remaining: u64) -> Option<Duration> {
        let stream = self.rates?.stream;
        (stream > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / stream))
    }

    /// When at this pace pre-copy is expected to be done: what is left over what the stream
    /// gains on the guest per second (`None` while it gains nothing).
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        let rates = self.rates?;
        let gain = rates.stream - rates.dirty;
        (gain > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / gain))
    }

    /// An observation inside a round: measures, perhaps raises the throttle. At the timeout it
    /// switches over if what is left fits the downtime limit at the measured rate and gives up
    /// only if it does not.
    pub fn tick(&mut self, now: Sample) -> Decision {
        self.measure(now);
        if now.elapsed < self.limits.timeout {
            Decision::Continue
        } else if self.fits(now.remaining) {
            Decision::SwitchOver(SwitchReason::Timeout)
        } else {
            Decision::GiveUp
        }
    }

    /// Whether `remaining` bytes stream within the downtime limit at the measured rate (before
    /// a rate is measured: whether they are no more than settled data).
    fn fits(&self, remaining: u64) -> bool {
        match self.expected_downtime(remaining) {
            Some(expected) => expected <= self.limits.downtime_limit,
            None => remaining <= SETTLED_BYTES,
        }
    }

    /// The end of a round at `now`: measures, then decides; the next round starts at `now`.
    pub fn round_end(&mut self, now: Sample) -> Decision {
        self.measure(now);
        let start = std::mem::replace(&mut self.round, now);
        // A round that moved nothing found nothing more to pre-copy: what is left is stop-copy
        // data (the controller state), and a rate measured from a few header bytes says
        // nothing about it. Settled data then fits whatever the rate.
        let idle = now.sent == start.sent;
        let fits = (idle && now.remaining <= SETTLED_BYTES) || self.fits(now.remaining);
        let timed_out = now.elapsed >= self.limits.timeout;
        if !fits {
            return if timed_out {
                Decision::GiveUp
            } else {
                Decision::Continue
            };
        }
        let shrinking = now.remaining.saturating_mul(4) <= start.remaining.saturating_mul(3);
        if now.remaining <= SETTLED_BYTES {
            Decision::SwitchOver(SwitchReason::Settled)
        } else if !shrinking && !self.can_raise() {
            Decision::SwitchOver(SwitchReason::Converged)
        } else if timed_out {
            Decision::SwitchOver(SwitchReason::Timeout)
        } else {
            if !shrinking {
                // Rounds stopped paying off while the guest could still be slowed: slow it
                // (a step per period) rather than stop it for what is left.
                self.raise(now.elapsed);
            }
            Decision::Continue
        }
    }

    /// Whether the throttle can still rise: below its maximum, with a guest that submits
    /// commands through its doorbells.
    fn can_raise(&self) -> bool {
        self.throttle < THROTTLE_MAX
            && (self.baseline.is_some() || self.rates.is_some_and(|r| r.commands > 0.0))
    }

    /// Raises the throttle a step at `elapsed` if it can and its period has passed.
    fn raise(&mut self, elapsed: Duration) {
        let due = self
            .raised
            .is_none_or(|at| elapsed.saturating_sub(at) >= THROTTLE_PERIOD);
        if !due || !self.can_raise() {
            return;
        }
        if self.throttle == 0 {
            self.baseline = self.rates.map(|r| r.commands);
            self.throttle = THROTTLE_INITIAL;
        } else {
            self.throttle = (self.throttle + THROTTLE_INCREMENT).min(THROTTLE_MAX);
        }
        self.raised = Some(elapsed);
    }

    /// Measures the rates since the period started — once it is [`MIN_PERIOD`] long, and
    /// until the first one is, over pre-copy so far (a first figure from a few milliseconds
    /// would stand for the whole first period) — and raises the throttle when the guest
    /// dirties too fast.
    fn measure(&mut self, now: Sample) {
        let full = now.elapsed.saturating_sub(self.period.elapsed) >= MIN_PERIOD;
        if !full && self.full_period {
            return;
        }
        let Some(rates) = Rates::between(self.period, now) else {
            return;
        };
        self.rates = Some(rates);
        if full {
            self.period = now;
            self.full_period = true;
        }
        let trigger = self
            .limits
            .dirty_limit
            .unwrap_or(rates.stream * THROTTLE_TRIGGER);
        if rates.dirty > trigger {
            self.raise(now.elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    /// A guest that submits `commands` 4 KiB writes per second, each dirtying a block not yet
    /// dirty (the worst case), as fast as it is admitted; a stream of `stream` bytes per
    /// second; and the policy driving both, stepped every 10 ms of simulated time.
    struct Model {
        stream: f64,
        commands: f64,
        remaining: f64,
        sent: f64,
        submitted: f64,
        elapsed: Duration,
        policy: Converge,
        rounds: u32,
    }

    const STEP: Duration = Duration::from_millis(10);
    const BLOCK: f64 = 4096.0;

    impl Model {
        fn new(limits: ConvergeLimits, stream: f64, commands: f64, data: f64) -> Self {
            let start = Sample {
                remaining: data as u64,
                ..Sample::default()
            };
            Self {
                stream,
                commands,
                remaining: data,
                sent: 0.0,
                submitted: 0.0,
                elapsed: Duration::ZERO,
                policy: Converge::new(limits, start),
                rounds: 0,
            }
        }

        fn sample(&self) -> Sample {
            Sample {
                elapsed: self.elapsed,
                sent: self.sent as u64,
                remaining: self.remaining as u64,
                commands: self.submitted as u64,
            }
        }

        /// Streams rounds (each what was left when it started) until a decision other than
        /// Continue; returns it.
        fn run(&mut self) -> Decision {
            loop {
                self.rounds += 1;
                let mut budget = self.remaining;
                loop {
                    let s = STEP.as_secs_f64();
                    let moved = (self.stream * s).min(budget);
                    let rate = self.policy.admit_rate().unwrap_or(self.commands);
                    let dirtied = rate.min(self.commands) * s;
                    budget -= moved;
                    self.sent += moved;
                    self.submitted += dirtied;
                    self.remaining = (self.remaining - moved + dirtied * BLOCK).max(0.0);
                    self.elapsed += STEP;
                    if budget <= 0.0 {
                        break;
                    }
                    match self.policy.tick(self.sample()) {
                        Decision::Continue => {}
                        d => return d,
                    }
                }
                match self.policy.round_end(self.sample()) {
                    Decision::Continue => {}
                    d => return d,
                }
            }
        }
    }

    fn limits(downtime_ms: u64, timeout_s: u64) -> ConvergeLimits {
        ConvergeLimits {
            downtime_limit: Duration::from_millis(downtime_ms),
            dirty_limit: None,
            timeout: Duration::from_secs(timeout_s),
        }
    }

    /// The first figures come from a slice of a few milliseconds in which the device may not
    /// have noted any dirty data yet: until a whole period has passed, every observation
    /// measures pre-copy so far; after it, the figures stand until the next whole period.
    #[test]
    fn the_first_period_measures_all_of_pre_copy_so_far_then_whole_periods() {
        let start = Sample {
            remaining: 100_000_000,
            ..Sample::default()
        };
        let mut policy = Converge::new(limits(300, 60), start);
        let at = |ms: u64, sent: u64, remaining: u64| Sample {
            elapsed: Duration::from_millis(ms),
            sent,
            remaining,
            commands: ms * 100,
        };
        // 20 ms, 16 MB sent, nothing noted dirty yet.
        assert_eq!(
            policy.tick(at(20, 16_000_000, 84_000_000)),
            Decision::Continue
        );
        assert_eq!(policy.rates().unwrap().dirty, 0.0);
        // 200 ms: 80 MB sent and 70 MB left, so 50 MB dirtied since the start.
        policy.tick(at(200, 80_000_000, 70_000_000));
        let rates = policy.rates().unwrap();
        assert!((rates.stream - 400.0 * MB).abs() < 1.0, "{rates:?}");
        assert!((rates.dirty - 250.0 * MB).abs() < 1.0, "{rates:?}");
        assert!((rates.commands - 100_000.0).abs() < 1.0, "{rates:?}");
        // 500 ms closes the first period; what comes within the next one does not move the
        // figures.
        policy.tick(at(500, 200_000_000, 50_000_000));
        let whole = policy.rates().unwrap();
        assert!((whole.dirty - 300.0 * MB).abs() < 1.0, "{whole:?}");
        policy.tick(at(600, 200_000_000, 90_000_000));
        assert_eq!(policy.rates(), Some(whole));
        policy.tick(at(1000, 400_000_000, 50_000_000));
        let next = policy.rates().unwrap();
        assert!((next.stream - 400.0 * MB).abs() < 1.0, "{next:?}");
        assert!((next.dirty - 400.0 * MB).abs() < 1.0, "{next:?}");
    }

    #[test]
    fn rates_between_two_samples() {
        let from = Sample {
            elapsed: Duration::from_millis(100),
            sent: 1_000,
            remaining: 5_000,
            commands: 10,
        };
        assert_eq!(Rates::between(from, from), None);
        let to = Sample {
            elapsed: Duration::from_millis(600),
            sent: 3_000,
            remaining: 1_000,
            commands: 60,
        };
        // 2,000 bytes sent, what was left shrank by 4,000: nothing dirtied (not below zero).
        let rates = Rates::between(from, to).unwrap();
        assert_eq!(rates.stream, 4_000.0);
        assert_eq!(rates.dirty, 0.0);
        assert_eq!(rates.commands, 100.0);
        let grew = Sample {
            remaining: 6_000,
            ..to
        };
        assert_eq!(Rates::between(from, grew).unwrap().dirty, 6_000.0);
    }

    #[test]
    fn switches_over_once_what_is_left_fits_the_limit_at_the_stream_rate() {
        let mut policy = Converge::new(
            limits(300, 60),
            Sample {
                remaining: 1_000_000_000,
                ..Sample::default()
            },
        );
        // 280 MB/s over a second; 100 MB left: 357 ms at 280 MB/s, above 300 ms.
        let second = Sample {
            elapsed: Duration::from_secs(1),
            sent: 280_000_000,
            remaining: 100_000_000,
            commands: 0,
        };
        assert_eq!(policy.round_end(second), Decision::Continue);
        // 80 MB left (286 ms) fits; the round went from 100 to 80 MB, shrinking it by less
        // than a quarter.
        let third = Sample {
            elapsed: Duration::from_secs(2),
            sent: 560_000_000,
            remaining: 80_000_000,
            commands: 0,
        };
        assert_eq!(
            policy.round_end(third),
            Decision::SwitchOver(SwitchReason::Converged)
        );
        let expected = policy.expected_downtime(80_000_000).unwrap();
        assert!(
            (expected.as_secs_f64() - 80.0 / 280.0).abs() < 1e-6,
            "{expected:?}"
        );
    }

    /// An empty namespace: pre-copy moves nothing, so no rate is measured, and what is left
    /// (the controller state, sent in STOP_COPY) is settled at the first round's end.
    #[test]
    fn a_device_with_nothing_to_send_switches_over_without_a_measured_rate() {
        let mut policy = Converge::new(
            limits(300, 60),
            Sample {
                remaining: 2_508,
                ..Sample::default()
            },
        );
        let first = Sample {
            elapsed: Duration::from_millis(1),
            sent: 0,
            remaining: 2_508,
            commands: 0,
        };
        assert_eq!(
            policy.round_end(first),
            Decision::SwitchOver(SwitchReason::Settled)
        );
    }

    /// The first round moved the stream header (86 bytes in 0.4 ms, a "rate" of 200 kB/s at
    /// which 64 KiB would take 320 ms); the next moves nothing: what is left is settled.
    #[test]
    fn a_round_that_finds_nothing_to_pre_copy_settles_whatever_rate_a_header_gave() {
        let mut policy = Converge::new(
            limits(300, 60),
            Sample {
                remaining: 65_536,
                ..Sample::default()
            },
        );
        let header = Sample {
            elapsed: Duration::from_micros(423),
            sent: 86,
            remaining: 65_536,
            commands: 0,
        };
        assert_eq!(policy.round_end(header), Decision::Continue);
        let idle = Sample {
            elapsed: Duration::from_micros(800),
            ..header
        };
        assert_eq!(
            policy.round_end(idle),
            Decision::SwitchOver(SwitchReason::Settled)
        );
    }

    #[test]
    fn rounds_that_stop_shrinking_a_throttleable_guest_raise_the_throttle_first() {
        let mut policy = Converge::new(
            limits(300, 60),
            Sample {
                remaining: 1_000_000_000,
                ..Sample::default()
            },
        );
        // 280 MB/s with 10,000 commands per second; then a round from 100 to 80 MB left: it
        // fits, but shrank it by less than a quarter.
        let mut now = Sample {
            elapsed: Duration::from_secs(1),
            sent: 280_000_000,
            remaining: 100_000_000,
            commands: 10_000,
        };
        assert_eq!(policy.round_end(now), Decision::Continue);
        now.elapsed += Duration::from_millis(300);
        now.sent += 80_000_000;
        now.remaining = 80_000_000;
        now.commands += 3_000;
        assert_eq!(policy.round_end(now), Decision::Continue);
        assert_eq!(policy.throttle_percent(), THROTTLE_INITIAL);
        let rate = policy.admit_rate().unwrap();
        assert!((rate - 10_000.0 * 0.8).abs() < 1.0, "{rate}");
    }

    #[test]
    fn rounds_that_still_shrink_what_is_left_go_on_until_it_settles() {
        // A guest that dirties a sixth of the stream rate is never throttled; rounds shrink
        // six-fold until at most a MiB is left.
        let mut model = Model::new(limits(300, 60), 280.0 * MB, 280.0 * MB / 6.0 / BLOCK, 1e9);
        assert_eq!(model.run(), Decision::SwitchOver(SwitchReason::Settled));
        assert_eq!(model.policy.throttle_percent(), 0);
        assert!(model.rounds >= 3, "{}", model.rounds);
        assert!(model.remaining <= SETTLED_BYTES as f64);
    }

    #[test]
    fn the_throttle_rises_step_by_step_while_the_guest_dirties_faster_than_the_stream() {
        // The guest dirties 400 MB/s against a 280 MB/s stream: unthrottled it never converges.
        let mut model = Model::new(limits(300, 60), 280.0 * MB, 400.0 * MB / BLOCK, 1e9);
        let decision = model.run();
        assert!(
            matches!(decision, Decision::SwitchOver(_)),
            "{decision:?} at {:?}, throttle {}",
            model.elapsed,
            model.policy.throttle_percent()
        );
        // It had to throttle at least to where the guest dirties below half the stream rate:
        // 400 × (100 − L) % < 140 needs L ≥ 65 %.
        let level = model.policy.throttle_percent();
        assert!(level >= 70, "{level}");
        assert!(
            model.elapsed < Duration::from_secs(30),
            "{:?}",
            model.elapsed
        );
        // Admission follows the level, from the rate the guest had before.
        let rate = model.policy.admit_rate().unwrap();
        let baseline = 400.0 * MB / BLOCK;
        assert!(
            (rate - baseline * f64::from(100 - level) / 100.0).abs() < baseline * 0.01,
            "{rate} vs {baseline}"
        );
    }

    #[test]
    fn levels_follow_qemu_steps_and_stop_at_99() {
        let mut policy = Converge::new(limits(300, 3600), Sample::default());
        let mut levels = Vec::new();
        // A guest dirtying 10× the stream rate, measured each second.
        for s in 1..=12u64 {
            policy.tick(Sample {
                elapsed: Duration::from_secs(s),
                sent: s * 100,
                remaining: s * 1000,
                commands: s * 50,
            });
            levels.push(policy.throttle_percent());
        }
        assert_eq!(levels, [20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99, 99]);
    }

    #[test]
    fn a_dirty_limit_throttles_a_guest_the_stream_could_outrun() {
        // 100 MB/s dirty against 280 MB/s: below half, so only the user's limit throttles.
        let dirty = 100.0 * MB;
        let mut free = Model::new(limits(300, 60), 280.0 * MB, dirty / BLOCK, 1e9);
        assert!(matches!(free.run(), Decision::SwitchOver(_)));
        assert_eq!(free.policy.throttle_percent(), 0);
        let mut capped = Model::new(
            ConvergeLimits {
                dirty_limit: Some(20.0 * MB),
                ..limits(300, 60)
            },
            280.0 * MB,
            dirty / BLOCK,
            1e9,
        );
        assert!(matches!(capped.run(), Decision::SwitchOver(_)));
        // It rose a step per period while the guest stayed above the limit (80 % would reach
        // it; the migration converged before that).
        let level = capped.policy.throttle_percent();
        assert!(
            (THROTTLE_INITIAL + THROTTLE_INCREMENT..=80).contains(&level),
            "{level}"
        );
    }

    #[test]
    fn gives_up_at_the_timeout_when_what_is_left_never_fits() {
        // A downtime limit nothing can meet: the device always has its state left.
        let mut model = Model::new(limits(0, 5), 280.0 * MB, 100.0, 1e8);
        assert_eq!(model.run(), Decision::GiveUp);
        assert!(model.elapsed >= Duration::from_secs(5));
        assert!(
            model.elapsed < Duration::from_secs(6),
            "{:?}",
            model.elapsed
        );
    }

    #[test]
    fn a_timeout_inside_a_round_switches_over_when_what_is_left_fits() {
        let mut policy = Converge::new(limits(300, 5), Sample::default());
        // 100 MB/s measured; at the timeout 3 MiB are left (about 31 ms) in a round that is
        // still going: what is left fits, so the migration switches over rather than abort.
        let sample = |secs, sent, remaining| Sample {
            elapsed: Duration::from_secs(secs),
            sent,
            remaining,
            commands: 1000,
        };
        assert_eq!(
            policy.tick(sample(4, 400_000_000, 3 << 20)),
            Decision::Continue
        );
        assert_eq!(
            policy.tick(sample(5, 500_000_000, 3 << 20)),
            Decision::SwitchOver(SwitchReason::Timeout)
        );
        // A remainder that would take longer than the limit still gives up.
        assert_eq!(
            policy.tick(sample(6, 600_000_000, 1 << 30)),
            Decision::GiveUp
        );
    }

    #[test]
    fn nothing_to_throttle_when_the_dirtying_bypasses_the_doorbells() {
        let mut policy = Converge::new(limits(300, 60), Sample::default());
        policy.tick(Sample {
            elapsed: Duration::from_secs(1),
            sent: 100,
            remaining: 10_000,
            commands: 0,
        });
        assert_eq!(policy.throttle_percent(), 0);
        assert_eq!(policy.admit_rate(), None);
    }
}
