//! Adaptive polling: how an I/O worker waits between passes.
//!
//! With shared doorbells ([`DoorbellDelivery::Shared`](super::DoorbellDelivery::Shared)) the
//! doorbells live in memory shared with the guest, so a doorbell write cannot wake a worker: it
//! must look. (With trapped doorbells a worker spins the same way, but then sleeps until a
//! doorbell write wakes it, and such a sleep longer than [`PollPolicy::sleep_min`] counts as a
//! gap below; only a worker whose completion queue is full, or whose host has shadow doorbells
//! while the worker meets its rhythm (below), still sleeps as below, see
//! `worker::sleep_until_doorbell`.) A worker keeps looking (spinning) for a while after the
//! last pass that found work, then sleeps, starting at [`PollPolicy::sleep_min`] and doubling up to
//! [`PollPolicy::sleep_max`] while nothing arrives. Spinning buys latency with CPU; the longest
//! sleep bounds the latency of the first command after a quiet period. A worker quiet for
//! [`IDLE_AFTER`] longest sleeps is idle: its sleeps go on doubling up to
//! [`PollPolicy::idle_max`], so an attached guest that does nothing costs fewer wake-ups (each
//! one a thread switch, tens of microseconds of a vCPU on some hosts), and only the first
//! command after such a pause can wait that long.
//!
//! The spin adapts to the load: it starts at [`PollPolicy::spin`], doubles (up to
//! [`SPIN_GROWTH`] times that) whenever the first sleep after a spin already finds work — the
//! guest is busy but its submissions come a little further apart than the spin, e.g. because
//! its vCPU was descheduled — and falls back to [`PollPolicy::spin`] when work comes only after
//! two sleeps or more (or never). A trickle of commands, each after a quiet period, so costs a short
//! spin per command, while a busy guest keeps a spinning worker.
//!
//! The sleeps adapt to the guest's rhythm too. A guest that submits one command (or one
//! batch) at a time, each some time after the last completed — `dd`, a database's log writer —
//! comes back after about the same gap every time, and plain doubling would have the worker
//! asleep for its longest sleeps just when the next command arrives (up to half a gap of added
//! latency). So a worker remembers the recent gap between the end of one burst and the next
//! work ([`Backoff`] keeps a moving average, when the work came after sleeping and within
//! [`RHYTHM_LIMIT`] longest sleeps): until one and a half such gaps have passed, its sleeps
//! double only up to twice [`PollPolicy::sleep_min`]; after that they go on doubling to the
//! longest. This costs a few more wake-ups per gap and bounds the added latency of a regular
//! guest by twice the shortest sleep; a quiet controller still ends up at the longest sleep.
//! A trapped worker whose host has shadow doorbells replaces the short sleeps of the first
//! three quarters of the gap by one sleep armed for a doorbell write ([`Backoff::until_due`]),
//! so only the end of the gap costs wake-ups.
//! (Sleeping through the first half of the gap instead was tried and lost more than it won:
//! gaps vary, and a command that came early waited for the long first sleep.) A worker with
//! backend requests in flight sleeps on their queues' notifiers, so a backend completion wakes
//! it at once, and a controller that cannot run (disabled, failed, offline, suspended) with
//! nothing in flight parks until it is kicked (a register write, resume, an event, drop).

use std::os::fd::RawFd;
use std::time::Duration;
use std::time::Instant;

/// The most a worker's spin grows, as a multiple of [`PollPolicy::spin`].
pub const SPIN_GROWTH: u32 = 8;

/// Gaps longer than this many longest sleeps are quiet periods, not a rhythm to follow.
pub const RHYTHM_LIMIT: u32 = 8;

/// A worker without work for this many longest sleeps ([`PollPolicy::sleep_max`]) is idle: its
/// sleeps may grow up to [`PollPolicy::idle_max`].
pub const IDLE_AFTER: u32 = 100;

/// The fewest shortest sleeps [`Backoff::until_due`] replaces by one armed sleep.
pub const ARMED_SLEEP_MIN: u32 = 8;

/// Descriptors one [`wait_readable`] watches.
pub(super) const MAX_WAIT_FDS: usize = 16;

/// The longest sleep of a [`wait_readable`] given more than [`MAX_WAIT_FDS`] descriptors.
pub(super) const OVERFLOW_WAIT: Duration = Duration::from_millis(1);

/// How an I/O worker trades CPU for latency between passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PollPolicy {
    /// How long a worker keeps polling without sleeping after the last pass that found work, at
    /// least (it grows while work keeps arriving, see the module docs).
    pub spin: Duration,
    /// The first sleep after spinning; sleeps double from here while the worker stays idle.
    pub sleep_min: Duration,
    /// The longest sleep while the worker has had work in the last [`IDLE_AFTER`] such
    /// sleeps: the worst extra latency of a command that arrives after a quiet period.
    pub sleep_max: Duration,
    /// The longest sleep of an idle worker (quiet for [`IDLE_AFTER`] longest sleeps): the rate
    /// at which an idle enabled controller looks at its doorbells, and the worst extra latency
    /// of the first command after such a pause. At most `sleep_max` keeps them equal.
    pub idle_max: Duration,
    /// Whether sleeps stay short around the gap after which a regular guest comes back (see
    /// the module docs): lower latency for one-at-a-time guests, a few more wake-ups per gap.
    pub follow_rhythm: bool,
}

impl Default for PollPolicy {
    /// 20 µs of spinning, then sleeps from 50 µs to 1 ms, following the guest's rhythm, and up
    /// to 2 ms after 100 ms without work: a QD1 trickle of 1,000 IOPS costs about ten wake-ups
    /// per command (11 % of a core on the Intel host of docs/BENCHMARKS.md, where a wake-up is
    /// expensive; 9 % there without the rhythm, 4–5 % on the AMD host), an idle enabled
    /// controller about five hundred wake-ups a second.
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(20),
            sleep_min: Duration::from_micros(50),
            sleep_max: Duration::from_millis(1),
            idle_max: Duration::from_millis(2),
            follow_rhythm: true,
        }
    }
}

/// One worker's position in its policy: when it last found work and how long it sleeps next.
#[derive(Debug)]
pub(super) struct Backoff {
    policy: PollPolicy,
    last_work: Instant,
    sleep: Duration,
    /// The spin now, between `policy.spin` and `SPIN_GROWTH` times it.
    spin: Duration,
    /// Sleeps since the last pass that found work.
    sleeps: u32,
    /// Moving average of the recent gaps between bursts (see the module docs), if there is a
    /// rhythm.
    gap: Option<Duration>,
    /// The last sleep returned was kept short by the rhythm.
    meeting: bool,
}

/// What a worker should do after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Look again at once (spinning).
    Spin,
    /// Sleep at most this long.
    Sleep(Duration),
}

impl Backoff {
    /// A worker that just found work.
    pub(super) fn new(policy: PollPolicy) -> Self {
        Self {
            policy,
            last_work: Instant::now(),
            sleep: policy.sleep_min,
            spin: policy.spin,
            sleeps: 0,
            gap: None,
            meeting: false,
        }
    }

    /// What to do after a pass that found work (`progressed`) or not.
    pub(super) fn next(&mut self, progressed: bool) -> Wait {
        self.next_at(progressed, Instant::now())
    }

    /// [`Self::next`] for a pass that ended at `now`.
    fn next_at(&mut self, progressed: bool, now: Instant) -> Wait {
        let longest = self.policy.sleep_max.max(self.policy.sleep_min);
        let elapsed = now.saturating_duration_since(self.last_work);
        // The cap of the doubling: higher once the worker is idle.
        let cap = if elapsed >= longest * IDLE_AFTER {
            self.policy.idle_max.max(longest)
        } else {
            longest
        };
        if progressed {
            if self.sleeps > 0 {
                self.follow_rhythm(elapsed, longest);
            }
            match self.sleeps {
                0 => {}
                // Work came right after the spin ended: spin longer.
                1 => self.spin = (self.spin * 2).min(self.policy.spin * SPIN_GROWTH),
                // Work after a real gap (a trickle): back to the shortest spin.
                _ => self.spin = self.policy.spin,
            }
            self.last_work = now;
            self.sleep = self.policy.sleep_min;
            self.sleeps = 0;
            return Wait::Spin;
        }
        if elapsed < self.spin {
            return Wait::Spin;
        }
        let shortest = self.policy.sleep_min;
        let rhythm = self
            .gap
            .filter(|gap| self.policy.follow_rhythm && elapsed < *gap + *gap / 2);
        // The sleep plain doubling gives; it goes on doubling while the rhythm caps it.
        let plain = self.sleep;
        self.sleep = (self.sleep * 2).min(cap);
        self.meeting = rhythm.is_some();
        let sleep = match rhythm {
            Some(_) => plain.min(shortest * 2),
            None => {
                if plain >= longest {
                    // A quiet period: the next burst starts from the shortest spin.
                    self.spin = self.policy.spin;
                }
                plain
            }
        };
        self.sleeps = self.sleeps.saturating_add(1);
        Wait::Sleep(sleep)
    }

    /// Takes the gap of work that came after sleeping into the rhythm: gaps of a few shortest
    /// sleeps are served by doubling anyway, and quiet periods are no rhythm.
    fn follow_rhythm(&mut self, gap: Duration, longest: Duration) {
        if gap > longest * RHYTHM_LIMIT {
            self.gap = None;
            return;
        }
        if gap < self.policy.sleep_min * 4 {
            return;
        }
        self.gap = Some(match self.gap {
            Some(average) => (average * 3 + gap) / 4,
            None => gap,
        });
    }

    /// Whether the sleep just returned was kept short to meet a regular guest's next command
    /// (see the module docs). A worker that could sleep until a doorbell write wakes it
    /// (trapped doorbells) takes such a sleep as a timed one instead when the host has shadow
    /// doorbells, watching them: the host then need not write the register at all (EventIdx
    /// stays behind), and its command is met as soon as with shared doorbells.
    pub(super) fn meeting_rhythm(&self) -> bool {
        self.meeting
    }

    /// While meeting the rhythm, how long until the guest's next command is due: the window
    /// from three quarters of its gap on, where short sleeps watch for it. `None` outside the
    /// rhythm, inside the window, or when less than [`ARMED_SLEEP_MIN`] shortest sleeps are
    /// left before it (a busy guest's short gaps: an early command would cost the host a
    /// register write, which saves fewer wake-ups than it costs). A worker that can be woken by a doorbell write (trapped,
    /// with shadow doorbells armed) sleeps until then instead of waking every short sleep, so
    /// a command that comes early still wakes it at once and one that comes on time finds it
    /// watching the shadow.
    pub(super) fn until_due(&self) -> Option<Duration> {
        self.until_due_at(Instant::now())
    }

    /// [`Self::until_due`] at `now`.
    fn until_due_at(&self, now: Instant) -> Option<Duration> {
        let gap = self.gap.filter(|_| self.meeting)?;
        let due = self.last_work + gap * 3 / 4;
        let left = due.saturating_duration_since(now);
        (left >= self.policy.sleep_min * ARMED_SLEEP_MIN).then_some(left)
    }

    /// A sleep that ended by a wake-up (a trapped doorbell write), not at a time this backoff
    /// chose, lasted `slept`. Work that comes after it came after the first timed sleep would
    /// have ended: a real gap, as after two timed sleeps, so the spin does not grow (it would
    /// otherwise grow at every command of a trickle, each one woken after one sleep).
    pub(super) fn woken_after(&mut self, slept: Duration) {
        if slept >= self.policy.sleep_min {
            self.sleeps = self.sleeps.max(2);
        }
    }

    /// The controller cannot run: the next time it can, start from the shortest sleep and spin.
    pub(super) fn reset(&mut self) {
        self.sleep = self.policy.sleep_min;
        self.spin = self.policy.spin;
        self.sleeps = 0;
        self.gap = None;
    }
}

/// Sleeps until one of `fds` is readable or `timeout` (if any) passed (ppoll(2), microsecond
/// resolution); with no descriptors, just sleeps. Interruptions and errors (a descriptor that
/// is no longer open reports POLLNVAL) just end the sleep: the caller looks again anyway.
/// Only the first [`MAX_WAIT_FDS`] descriptors are watched; with more, the sleep lasts at most
/// [`OVERFLOW_WAIT`], so the caller still looks at the others' work that often (and a sleep
/// without a timeout cannot miss them for good).
pub(super) fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) {
    // At most a handful of namespaces per worker: a fixed array, no allocation.
    const MAX: usize = MAX_WAIT_FDS;
    let timeout = if fds.len() > MAX {
        Some(timeout.map_or(OVERFLOW_WAIT, |t| t.min(OVERFLOW_WAIT)))
    } else {
        timeout
    };
    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    let n = fds.len().min(MAX);
    for (slot, fd) in pollfds.iter_mut().zip(fds) {
        slot.fd = *fd;
        slot.events = libc::POLLIN;
    }
    let ts = timeout.map(|timeout| libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    });
    let ts = ts
        .as_ref()
        .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY: `pollfds` is a valid array of `n` initialised pollfd structures that lives across
    // the call, `ts` null (no timeout) or a valid timespec that outlives it, and the signal
    // mask pointer is null (mask unchanged).
    unsafe {
        libc::ppoll(
            pollfds.as_mut_ptr(),
            n as libc::nfds_t,
            ts,
            std::ptr::null(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spin_grows_while_work_follows_the_first_sleep_and_resets_after_a_quiet_period() {
        // A nanosecond of spin: every look without work sleeps; the spin is what the test reads.
        let policy = PollPolicy {
            spin: Duration::from_nanos(1),
            sleep_min: Duration::from_micros(10),
            sleep_max: Duration::from_micros(40),
            idle_max: Duration::from_micros(40),
            follow_rhythm: true,
        };
        let us = |n| Wait::Sleep(Duration::from_micros(n));
        let mut b = Backoff::new(policy);
        for expected in [2, 4, 8, 8] {
            assert_eq!(b.next(false), us(10));
            assert_eq!(b.next(true), Wait::Spin, "work right after the first sleep");
            assert_eq!(b.spin, policy.spin * expected);
        }
        // Work after two sleeps resets it, and so does sleeping up to the longest sleep.
        assert_eq!(b.next(false), us(10));
        assert_eq!(b.next(false), us(20));
        assert_eq!(b.spin, policy.spin * 8);
        b.next(true);
        assert_eq!(b.spin, policy.spin);
        b.spin = policy.spin * 4;
        let sleeps: Vec<_> = (0..3).map(|_| b.next(false)).collect();
        assert_eq!(sleeps, [us(10), us(20), us(40)]);
        assert_eq!(b.spin, policy.spin);
    }

    /// The sleeps (in µs) of a worker that finds nothing from `from` until `until`.
    fn sleeps_between(b: &mut Backoff, from: Instant, until: Instant) -> Vec<u128> {
        let mut now = from;
        let mut sleeps = Vec::new();
        while now < until {
            let Wait::Sleep(sleep) = b.next_at(false, now) else {
                panic!("spinning after the spin")
            };
            sleeps.push(sleep.as_micros());
            now += sleep;
        }
        sleeps
    }

    #[test]
    fn a_regular_guest_is_met_by_short_sleeps_around_its_gap_and_quiet_ends_the_rhythm() {
        let policy = PollPolicy::default();
        let us = Duration::from_micros;
        let t0 = Instant::now();
        let mut b = Backoff::new(policy);
        assert_eq!(b.next_at(true, t0), Wait::Spin);
        // The first gap of 2 ms is met by plain doubling.
        let sleeps = sleeps_between(&mut b, t0 + us(20), t0 + us(2000));
        assert_eq!(sleeps, [50, 100, 200, 400, 800, 1000]);
        // Work at 2 ms: from now on the sleeps stop growing at 100 µs for 3 ms.
        let t1 = t0 + us(2000);
        assert_eq!(b.next_at(true, t1), Wait::Spin);
        assert_eq!(b.gap, Some(us(2000)));
        let sleeps = sleeps_between(&mut b, t1 + us(20), t1 + us(2000));
        assert_eq!(sleeps[..2], [50, 100]);
        assert!(sleeps[2..].iter().all(|&s| s == 100), "{sleeps:?}");
        // Past one and a half gaps the sleeps double again.
        let t2 = t1 + us(2000);
        b.next_at(true, t2);
        assert_eq!(b.next_at(false, t2 + us(20)), Wait::Sleep(us(50)));
        assert_eq!(b.next_at(false, t2 + us(70)), Wait::Sleep(us(100)));
        assert_eq!(b.next_at(false, t2 + us(170)), Wait::Sleep(us(100)));
        assert!(b.meeting_rhythm(), "a short sleep that meets the guest");
        // Its next command is due from three quarters of the gap (1.5 ms) on.
        assert_eq!(b.until_due_at(t2 + us(170)), Some(us(1330)));
        assert_eq!(
            b.until_due_at(t2 + us(1150)),
            None,
            "too close to be worth a sleep"
        );
        assert_eq!(b.until_due_at(t2 + us(1600)), None, "inside the window");
        let after = t2 + us(3001);
        assert_eq!(b.next_at(false, after), Wait::Sleep(us(400)));
        assert!(!b.meeting_rhythm(), "past the rhythm");
        assert_eq!(b.until_due_at(after), None);
        // A quiet period longer than RHYTHM_LIMIT longest sleeps forgets the rhythm.
        let t3 = after + policy.sleep_max * RHYTHM_LIMIT * 2;
        b.next_at(true, t3);
        assert_eq!(b.gap, None);
        assert_eq!(b.next_at(false, t3 + us(20)), Wait::Sleep(us(50)));
        assert_eq!(b.next_at(false, t3 + us(70)), Wait::Sleep(us(100)));
        // Gaps of a few shortest sleeps leave the rhythm alone.
        b.next_at(true, t3 + us(170));
        assert_eq!(b.gap, None);
        // Without following the rhythm, the same gaps meet plain doubling.
        let mut b = Backoff::new(PollPolicy {
            follow_rhythm: false,
            ..policy
        });
        b.next_at(true, t0);
        b.next_at(false, t0 + us(20));
        // Work after one sleep: the spin doubles to 40 µs.
        b.next_at(true, t0 + us(2000));
        let sleeps: Vec<_> = [40, 90, 190, 390]
            .map(|at| b.next_at(false, t0 + us(2000 + at)))
            .to_vec();
        assert_eq!(sleeps, [50, 100, 200, 400].map(|n| Wait::Sleep(us(n))));
    }

    #[test]
    fn work_woken_after_a_long_untimed_sleep_does_not_grow_the_spin() {
        let policy = PollPolicy {
            spin: Duration::from_nanos(1),
            sleep_min: Duration::from_micros(10),
            sleep_max: Duration::from_micros(40),
            idle_max: Duration::from_micros(40),
            follow_rhythm: true,
        };
        let mut b = Backoff::new(policy);
        // A trickle with trapped doorbells: one sleep, woken well after the shortest sleep.
        for _ in 0..4 {
            assert!(matches!(b.next(false), Wait::Sleep(_)));
            b.woken_after(Duration::from_millis(1));
            assert_eq!(b.next(true), Wait::Spin);
            assert_eq!(b.spin, policy.spin);
        }
        // Woken sooner than the first sleep would have ended: a busy guest, the spin grows.
        assert!(matches!(b.next(false), Wait::Sleep(_)));
        b.woken_after(Duration::from_micros(3));
        assert_eq!(b.next(true), Wait::Spin);
        assert_eq!(b.spin, policy.spin * 2);
    }

    #[test]
    fn a_wait_on_more_descriptors_than_it_watches_ends_anyway() {
        // Nothing is readable and there is no timeout: only the overflow bound ends the wait
        // (the unwatched descriptors might have work).
        let fds: Vec<_> = (0..=MAX_WAIT_FDS)
            .map(|_| crate::notifier::Notifier::new("a test eventfd").unwrap())
            .collect();
        let raw: Vec<RawFd> = fds
            .iter()
            .map(|n| std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(n)))
            .collect();
        wait_readable(&raw, None);
        wait_readable(&raw, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn backoff_spins_after_work_then_doubles_up_to_the_longest_sleep() {
        let policy = PollPolicy {
            spin: Duration::ZERO,
            sleep_min: Duration::from_micros(10),
            sleep_max: Duration::from_micros(35),
            idle_max: Duration::from_micros(35),
            follow_rhythm: true,
        };
        let mut b = Backoff::new(policy);
        assert_eq!(b.next(true), Wait::Spin);
        let sleeps: Vec<_> = (0..4).map(|_| b.next(false)).collect();
        let us = |n| Wait::Sleep(Duration::from_micros(n));
        assert_eq!(sleeps, [us(10), us(20), us(35), us(35)]);
        assert_eq!(b.next(true), Wait::Spin);
        assert_eq!(b.next(false), us(10));
    }

    #[test]
    fn an_idle_worker_sleeps_up_to_the_idle_bound_and_comes_back_at_once() {
        let policy = PollPolicy {
            spin: Duration::ZERO,
            sleep_min: Duration::from_micros(10),
            sleep_max: Duration::from_micros(40),
            idle_max: Duration::from_micros(160),
            follow_rhythm: false,
        };
        let us = Duration::from_micros;
        let t0 = Instant::now();
        let mut b = Backoff::new(policy);
        b.next_at(true, t0);
        // Before IDLE_AFTER longest sleeps of quiet: at most the longest sleep.
        let busy: Vec<_> = [1, 11, 31, 71, 111]
            .map(|at| b.next_at(false, t0 + us(at)))
            .to_vec();
        assert_eq!(busy, [10, 20, 40, 40, 40].map(|n| Wait::Sleep(us(n))));
        // Idle: the sleeps go on doubling to the idle bound.
        let idle = 40 * u64::from(IDLE_AFTER);
        let sleeps: Vec<_> = [0, 40, 120, 280, 440]
            .map(|at| b.next_at(false, t0 + us(idle + at)))
            .to_vec();
        assert_eq!(sleeps, [40, 80, 160, 160, 160].map(|n| Wait::Sleep(us(n))));
        // Work: back to the shortest sleep, and the longest sleep bounds again.
        let t1 = t0 + us(idle + 600);
        assert_eq!(b.next_at(true, t1), Wait::Spin);
        let after: Vec<_> = [1, 11, 31, 71]
            .map(|at| b.next_at(false, t1 + us(at)))
            .to_vec();
        assert_eq!(after, [10, 20, 40, 40].map(|n| Wait::Sleep(us(n))));
        // An idle bound below the longest sleep changes nothing.
        let mut b = Backoff::new(PollPolicy {
            idle_max: Duration::ZERO,
            ..policy
        });
        b.next_at(true, t0);
        b.next_at(false, t0 + us(idle));
        assert_eq!(b.next_at(false, t0 + us(idle + 10)), Wait::Sleep(us(20)));
        assert_eq!(b.next_at(false, t0 + us(idle + 30)), Wait::Sleep(us(40)));
        assert_eq!(b.next_at(false, t0 + us(idle + 70)), Wait::Sleep(us(40)));
    }
}
