//! The guest's doorbells during a migration: [`SwitchableBar`], the BAR0 the guest's driver
//! sees. It follows the device from server to server, holds doorbell writes back during the
//! blackout (what pausing vCPUs does) and, while pre-copy runs, counts the commands the guest
//! submits and can admit them at a bounded rate (what QEMU's dirty-limit does to vCPUs): the
//! guest thread that rings a submission queue doorbell waits for its commands' tokens, so a
//! guest that dirties data faster than the stream moves it is slowed, never stopped.
//!
//! Outside a migration a doorbell write costs one uncontended read lock and an atomic load;
//! while metering, so do all but the I/O submission queue tail doorbells, and none of them
//! writes to the device under the gate's mutex.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_spec::registers::Doorbell;
use nvme_spec::registers::DoorbellStride;

use crate::driver::Bar;
use crate::driver::ShadowEntry;

/// The longest one doorbell write waits for its tokens. Debt beyond it is forgiven, so however
/// hard the guest is throttled each of its queues still submits at least every this often (the
/// guest keeps completing I/O; the throttle's level, not the wait, sets its rate).
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_millis(50);
/// The bucket holds at most this long's worth of tokens, so a guest idle for a while cannot
/// then burst past its rate.
const BURST: Duration = Duration::from_millis(10);
/// Queue entries are counted modulo at most this (the largest NVMe queue).
const MAX_QUEUE_ENTRIES: u32 = 1 << 16;
/// [`SwitchableBar::metered_stride`] when not metering (CAP.DSTRD is 4 bits).
const NOT_METERING: u8 = u8::MAX;

/// The guest's view of BAR0: registers and doorbells go to the device's current location;
/// doorbell writes can be paused (buffered, latest value per doorbell) while the device moves,
/// and submissions counted and rate-limited while pre-copy runs (see the module docs).
pub struct SwitchableBar {
    current: RwLock<Arc<dyn Bar>>,
    /// Whether doorbell writes take the slow path through `gate` (paused or metered).
    gated: AtomicBool,
    /// Whether doorbell writes are held back (set before `gate.held`, cleared after it).
    paused: AtomicBool,
    /// CAP.DSTRD of the metered doorbells, [`NOT_METERING`] when not metering: which writes
    /// are I/O submission queue tails, decoded before the gate is taken.
    metered_stride: AtomicU8,
    gate: Mutex<Gate>,
    /// Wakes doorbell writers waiting for tokens when the throttle is lifted or changed.
    wake: Condvar,
}

impl std::fmt::Debug for SwitchableBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchableBar").finish()
    }
}

/// The slow path's state.
#[derive(Default)]
struct Gate {
    /// Held-back doorbell writes while paused (latest value per offset).
    held: Option<BTreeMap<u64, u32>>,
    /// The migration ended with the device running nowhere known (stranded or undecided):
    /// doorbell writes stay held until a resume (a recovered device), and shadowed writers no
    /// longer wait for one.
    abandoned: bool,
    /// Counting (and perhaps throttling) submissions.
    meter: Option<Meter>,
}

/// Counts the commands the guest submits: the advance of each I/O submission queue's tail.
struct Meter {
    stride: DoorbellStride,
    tails: BTreeMap<u16, SqTail>,
    admitted: u64,
    bucket: Option<TokenBucket>,
}

/// What the meter knows of one submission queue: the last tail written and the queue size
/// learnt from the tails seen (one more than the largest; the doorbell does not carry it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SqTail {
    last: u32,
    size: u32,
}

impl SqTail {
    /// The first tail seen.
    fn new(tail: u32) -> Self {
        Self {
            last: tail,
            size: tail + 1,
        }
    }

    /// Commands a write of `tail` submits. Before the queue's size is learnt a wrap-around
    /// undercounts by the entries past the largest tail seen; the count is for rates, and the
    /// convergence policy measures the dirty rate the device reports, not this.
    fn advance(&mut self, tail: u32) -> u64 {
        self.size = self.size.max(tail + 1);
        let n = if tail >= self.last {
            tail - self.last
        } else {
            self.size - self.last + tail
        };
        self.last = tail;
        u64::from(n)
    }
}

/// Admits commands at `rate` per second (reserving: a writer takes its tokens at once and
/// waits off the debt, so writers are served in arrival order).
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: 0.0,
            refilled: now,
        }
    }

    /// Takes `cost` tokens at `now`; returns how long the writer waits for them.
    fn take(&mut self, cost: u64, now: Instant) -> Duration {
        let burst = (self.rate * BURST.as_secs_f64()).max(1.0);
        let refill = now.saturating_duration_since(self.refilled).as_secs_f64() * self.rate;
        self.refilled = now;
        self.tokens = (self.tokens + refill).min(burst) - cost as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        self.tokens = self
            .tokens
            .max(-self.rate * MAX_THROTTLE_WAIT.as_secs_f64());
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
}

impl Meter {
    /// Counts a write of `value` to the doorbell at `offset`; returns how long it must wait.
    fn admit(&mut self, offset: u64, value: u32, now: Instant) -> Duration {
        // Admin commands (queue 0) do not write user data: never counted nor throttled.
        let Some(Doorbell::SqTail(qid @ 1..)) = self.stride.decode(offset) else {
            return Duration::ZERO;
        };
        // A tail past any queue is refused by the device; it submits nothing.
        if value >= MAX_QUEUE_ENTRIES {
            return Duration::ZERO;
        }
        let cost = match self.tails.get_mut(&qid) {
            Some(tail) => tail.advance(value),
            None => {
                self.tails.insert(qid, SqTail::new(value));
                1
            }
        };
        self.admitted += cost;
        match &mut self.bucket {
            Some(bucket) if cost > 0 => bucket.take(cost, now),
            _ => Duration::ZERO,
        }
    }
}

impl SwitchableBar {
    /// Starts with `bar`.
    pub fn new(bar: Arc<dyn Bar>) -> Self {
        Self {
            current: RwLock::new(bar),
            gated: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            metered_stride: AtomicU8::new(NOT_METERING),
            gate: Mutex::new(Gate::default()),
            wake: Condvar::new(),
        }
    }

    fn bar(&self) -> Arc<dyn Bar> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends doorbell writes through the gate from now on. Taking the write lock waits out any
    /// writer still on the fast path, so none reaches the device after this returns.
    fn close_fast_path(&self) {
        self.gated.store(true, Ordering::SeqCst);
        drop(self.current.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Lets doorbell writes take the fast path again when nothing needs the gate.
    fn reopen_fast_path(&self, gate: &Gate) {
        if gate.held.is_none() && gate.meter.is_none() {
            self.gated.store(false, Ordering::SeqCst);
        }
    }

    /// Holds back doorbell writes from now on, as pausing the guest's vCPUs would.
    pub fn pause(&self) {
        self.gated.store(true, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
        self.gate().held.get_or_insert_with(BTreeMap::new);
        // Writers that looked before are still writing under the read lock: wait them out.
        self.close_fast_path();
    }

    /// Makes `bar` the device's BAR (if given) and releases the held-back doorbell writes to it.
    pub fn resume(&self, bar: Option<Arc<dyn Bar>>) {
        let mut gate = self.gate();
        if let Some(bar) = bar {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = bar;
        }
        gate.abandoned = false;
        if let Some(held) = gate.held.take() {
            let bar = self.bar();
            for (offset, value) in held {
                bar.doorbell(offset, value);
            }
        }
        self.paused.store(false, Ordering::SeqCst);
        self.reopen_fast_path(&gate);
        // Shadowed writers waiting for the resume go on to the (new) device.
        self.wake.notify_all();
    }

    /// Gives up waiting for the device: the migration left it running nowhere known (neither
    /// side could be resumed, or whether the destination started is unknown), so no doorbell
    /// write may reach either side. Writes stay held until a [`resume`](Self::resume) once the
    /// caller has brought a side back (each queue's latest value, replayed then), and shadowed
    /// writers waiting for a resume store their shadow values and return, so the guest's
    /// threads are not blocked for good.
    pub fn abandon(&self) {
        let mut gate = self.gate();
        gate.abandoned = true;
        gate.held.get_or_insert_with(BTreeMap::new);
        self.paused.store(true, Ordering::SeqCst);
        self.gated.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Starts counting the commands the guest submits to its I/O queues, whose doorbells lie
    /// where `stride` (CAP.DSTRD) puts them; see [`admitted`](Self::admitted).
    pub fn start_metering(&self, stride: DoorbellStride) {
        self.metered_stride.store(stride.dstrd(), Ordering::SeqCst);
        self.close_fast_path();
        self.gate().meter = Some(Meter {
            stride,
            tails: BTreeMap::new(),
            admitted: 0,
            bucket: None,
        });
    }

    /// Commands the guest submitted to its I/O queues since metering started (0 when not
    /// metering).
    pub fn admitted(&self) -> u64 {
        self.gate().meter.as_ref().map_or(0, |m| m.admitted)
    }

    /// Admits the guest's I/O commands at `rate` per second from now on (`None`: as fast as
    /// the guest submits). Only while metering; waiting writers see the new rate at once.
    pub fn throttle(&self, rate: Option<f64>) {
        let mut gate = self.gate();
        if let Some(meter) = &mut gate.meter {
            let now = Instant::now();
            meter.bucket = rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| match meter.bucket {
                    Some(bucket) => TokenBucket { rate: r, ..bucket },
                    None => TokenBucket::new(r, now),
                });
        }
        self.wake.notify_all();
    }

    /// Stops counting and throttling; waiting writers go on at once.
    pub fn stop_metering(&self) {
        let mut gate = self.gate();
        gate.meter = None;
        self.metered_stride.store(NOT_METERING, Ordering::SeqCst);
        self.wake.notify_all();
        self.reopen_fast_path(&gate);
    }

    /// Whether a write to the doorbell at `offset` is counted: an I/O submission queue's tail
    /// while metering.
    fn metered(&self, offset: u64) -> bool {
        DoorbellStride::new(self.metered_stride.load(Ordering::SeqCst))
            .and_then(|stride| stride.decode(offset))
            .is_some_and(|doorbell| matches!(doorbell, Doorbell::SqTail(1..)))
    }

    /// The slow path: count, wait for tokens, then hold or write. The write happens under the
    /// read lock taken before the gate is let go, so that a pause never overtakes it (pausing
    /// waits for the lock), but not under the gate: other doorbells go on meanwhile.
    ///
    /// While paused, a register write is held (replayed on resume) and its writer goes on; a
    /// shadowed write (`entry`) cannot be held that way, since its value lives in host memory
    /// the suspended device reads when its state is saved: storing it there during the
    /// blackout would change the saved doorbells between two reads of them. Its writer waits
    /// for the resume instead, as the vCPU of a paused guest does, and then stores the shadow
    /// value and writes the register of the device the guest runs on.
    fn gated_doorbell(&self, offset: u64, value: u32, entry: Option<ShadowEntry<'_>>) {
        let mut gate = self.gate();
        let now = Instant::now();
        let wait = gate
            .meter
            .as_mut()
            .map_or(Duration::ZERO, |m| m.admit(offset, value, now));
        let mut until = now + wait;
        let mut rate = gate.meter.as_ref().and_then(|m| m.bucket).map(|b| b.rate);
        // Wait until the tokens are there or the throttle is lifted.
        while let Some(bucket) = gate.meter.as_ref().and_then(|m| m.bucket) {
            let now = Instant::now();
            // A new rate pays the rest of the debt at that rate, from now.
            if let Some(old) = rate
                && old != bucket.rate
            {
                until = now + rescaled(until.saturating_duration_since(now), old, bucket.rate);
            }
            rate = Some(bucket.rate);
            let left = until.saturating_duration_since(now);
            if left.is_zero() {
                break;
            }
            gate = self
                .wake
                .wait_timeout(gate, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let waits = entry.is_some() && gate.held.is_some();
        while waits && gate.held.is_some() && !gate.abandoned {
            gate = self.wake.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        // Like a held register write, one that waited reaches the device it waited for whatever
        // EventIdx says (that device may not have looked at the shadow since it started). On an
        // abandoned gate it stores its value (no state of the device is saved any more) and its
        // register write is held: a device recovered later sees the command, which would
        // otherwise be lost for good when nothing is submitted behind it.
        let entry = match entry {
            Some(entry) if waits => {
                entry.store(value);
                None
            }
            entry => entry,
        };
        match gate.held.as_mut() {
            Some(held) => {
                held.insert(offset, value);
            }
            None => {
                let bar = self.current.read().unwrap_or_else(|p| p.into_inner());
                drop(gate);
                write_to(bar.as_ref(), offset, value, entry);
            }
        }
    }
}

/// The rest `left` of a wait for tokens at `old` per second, paid at `new` per second instead
/// (never longer than [`MAX_THROTTLE_WAIT`]).
fn rescaled(left: Duration, old: f64, new: f64) -> Duration {
    if !(new > 0.0 && old > 0.0) {
        return Duration::ZERO;
    }
    left.mul_f64(old / new).min(MAX_THROTTLE_WAIT)
}

impl Bar for SwitchableBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        self.bar().read32(offset)
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        self.bar().read64(offset)
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.bar().write32(offset, value)
    }

    fn doorbell(&self, offset: u64, value: u32) {
        if !self.direct(offset, value, None) {
            self.gated_doorbell(offset, value, None);
        }
    }

    fn shadow_doorbell(&self, offset: u64, value: u32, entry: ShadowEntry<'_>) {
        if !self.direct(offset, value, Some(entry)) {
            self.gated_doorbell(offset, value, Some(entry));
        }
    }
}

impl SwitchableBar {
    /// The fast path: a write that is not paused and not metered goes straight to the device
    /// (through `entry` if shadowed); `false` if it must take the gate instead.
    fn direct(&self, offset: u64, value: u32, entry: Option<ShadowEntry<'_>>) -> bool {
        let bar = self.current.read().unwrap_or_else(|p| p.into_inner());
        let direct = !self.gated.load(Ordering::SeqCst)
            || !self.paused.load(Ordering::SeqCst) && !self.metered(offset);
        if direct {
            write_to(bar.as_ref(), offset, value, entry);
        }
        direct
    }
}

/// Writes `value` to the doorbell at `offset` of `bar`, through its shadow `entry` if any.
fn write_to(bar: &dyn Bar, offset: u64, value: u32, entry: Option<ShadowEntry<'_>>) {
    match entry {
        Some(entry) => bar.shadow_doorbell(offset, value, entry),
        None => bar.doorbell(offset, value),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A BAR that records doorbell writes.
    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<(u64, u32)>>,
        count: AtomicU64,
    }

    impl Bar for Recorder {
        fn read32(&self, _: u64) -> io::Result<u32> {
            Ok(0)
        }
        fn read64(&self, _: u64) -> io::Result<u64> {
            Ok(0)
        }
        fn write32(&self, _: u64, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn doorbell(&self, offset: u64, value: u32) {
            self.writes.lock().unwrap().push((offset, value));
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    const STRIDE: DoorbellStride = match DoorbellStride::new(0) {
        Some(s) => s,
        None => unreachable!(),
    };

    #[test]
    fn tails_count_commands_across_wrap_arounds() {
        let mut tail = SqTail::new(0);
        assert_eq!(tail.advance(5), 5);
        assert_eq!(tail.advance(32), 27);
        // The size is learnt as 33: 32 → 2 wraps over one entry and two more.
        assert_eq!(tail.advance(2), 3);
        assert_eq!(tail.advance(2), 0);
        assert_eq!(tail.size, 33);
    }

    #[test]
    fn metering_counts_io_submissions_only() {
        let rec = Arc::new(Recorder::default());
        let bar = SwitchableBar::new(rec.clone());
        bar.start_metering(STRIDE);
        bar.doorbell(STRIDE.sq_tail(0), 3); // admin: not counted
        bar.doorbell(STRIDE.sq_tail(1), 0); // first sight of queue 1: one command
        bar.doorbell(STRIDE.sq_tail(1), 8);
        bar.doorbell(STRIDE.cq_head(1), 8); // completion doorbell: not counted
        bar.doorbell(STRIDE.sq_tail(2), 0xFFFF_FFFF); // nonsense: nothing submitted
        assert_eq!(bar.admitted(), 9);
        assert_eq!(
            rec.count.load(Ordering::SeqCst),
            5,
            "every write reached the device"
        );
        bar.stop_metering();
        assert_eq!(bar.admitted(), 0);
        assert!(!bar.gated.load(Ordering::SeqCst));
    }

    #[test]
    fn a_bucket_makes_writers_wait_for_their_tokens_but_never_long() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, start);
        // 5 commands at 1000/s: 5 ms of debt.
        let wait = bucket.take(5, start);
        assert!((wait.as_secs_f64() - 0.005).abs() < 1e-9, "{wait:?}");
        // A huge batch waits at most MAX_THROTTLE_WAIT.
        assert_eq!(bucket.take(1_000_000, start), MAX_THROTTLE_WAIT);
        // After the debt's time has passed, tokens accrue again, up to the burst.
        let later = start + Duration::from_secs(1);
        assert_eq!(bucket.take(10, later), Duration::ZERO);
        assert!(bucket.tokens <= 1000.0 * BURST.as_secs_f64());
    }

    #[test]
    fn lifting_the_throttle_releases_a_waiting_writer() {
        let rec = Arc::new(Recorder::default());
        let bar = Arc::new(SwitchableBar::new(rec.clone()));
        bar.start_metering(STRIDE);
        bar.throttle(Some(1.0)); // one command per second: a batch of 30 waits the maximum
        bar.doorbell(STRIDE.sq_tail(1), 0);
        let writer = {
            let bar = bar.clone();
            std::thread::spawn(move || bar.doorbell(STRIDE.sq_tail(1), 30))
        };
        while bar.admitted() < 31 {
            std::thread::yield_now();
        }
        bar.stop_metering();
        writer.join().unwrap();
        assert_eq!(
            rec.writes.lock().unwrap().last(),
            Some(&(STRIDE.sq_tail(1), 30))
        );
    }

    /// A BAR whose I/O submission queue doorbell writes block until released.
    struct Slow {
        entered: std::sync::mpsc::Sender<()>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        writes: AtomicU64,
    }

    impl Bar for Slow {
        fn read32(&self, _: u64) -> io::Result<u32> {
            Ok(0)
        }
        fn read64(&self, _: u64) -> io::Result<u64> {
            Ok(0)
        }
        fn write32(&self, _: u64, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn doorbell(&self, offset: u64, _: u32) {
            if offset == STRIDE.sq_tail(1) {
                self.entered.send(()).unwrap();
                self.release.lock().unwrap().recv().unwrap();
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn while_metering_other_doorbells_do_not_wait_for_a_submission_being_written() {
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        let slow = Arc::new(Slow {
            entered,
            release: Mutex::new(release),
            writes: AtomicU64::new(0),
        });
        let bar = Arc::new(SwitchableBar::new(slow.clone()));
        bar.start_metering(STRIDE);
        let submitter = {
            let bar = bar.clone();
            std::thread::spawn(move || bar.doorbell(STRIDE.sq_tail(1), 4))
        };
        // The submission is being written to the device (and stays so until released).
        entered_rx.recv().unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        let others = {
            let bar = bar.clone();
            std::thread::spawn(move || {
                bar.doorbell(STRIDE.cq_head(1), 4);
                bar.doorbell(STRIDE.sq_tail(0), 1);
                bar.doorbell(STRIDE.cq_head(0), 1);
                done_tx.send(()).unwrap();
            })
        };
        // A failure would leave these waiting for the submitter's write: bounded only so the
        // test fails rather than hangs.
        let finished = done.recv_timeout(Duration::from_secs(10)).is_ok();
        release_tx.send(()).unwrap();
        submitter.join().unwrap();
        others.join().unwrap();
        assert!(
            finished,
            "the other doorbells waited for the submission's write"
        );
        assert_eq!(slow.writes.load(Ordering::SeqCst), 4);
        assert_eq!(bar.admitted(), 1, "only the I/O submission was counted");
    }

    #[test]
    fn a_new_rate_rescales_the_rest_of_a_wait() {
        let left = Duration::from_millis(40);
        assert_eq!(rescaled(left, 100.0, 400.0), Duration::from_millis(10));
        assert_eq!(rescaled(left, 100.0, 50.0), MAX_THROTTLE_WAIT);
        assert_eq!(rescaled(left, 100.0, 0.0), Duration::ZERO);
    }

    #[test]
    fn paused_writes_are_held_and_released_in_order_of_offset() {
        let rec = Arc::new(Recorder::default());
        let bar = SwitchableBar::new(rec.clone());
        bar.pause();
        bar.doorbell(STRIDE.sq_tail(1), 1);
        bar.doorbell(STRIDE.sq_tail(1), 2);
        bar.doorbell(STRIDE.cq_head(1), 7);
        assert_eq!(rec.count.load(Ordering::SeqCst), 0);
        let other = Arc::new(Recorder::default());
        bar.resume(Some(other.clone()));
        assert_eq!(
            *other.writes.lock().unwrap(),
            vec![(STRIDE.sq_tail(1), 2), (STRIDE.cq_head(1), 7)]
        );
        bar.doorbell(STRIDE.sq_tail(1), 3);
        assert_eq!(other.count.load(Ordering::SeqCst), 3);
        assert!(!bar.gated.load(Ordering::SeqCst));
    }

    #[test]
    fn shadowed_writes_are_metered_and_held_like_register_writes() {
        use std::sync::atomic::AtomicU32;
        let rec = Arc::new(Recorder::default());
        let bar = SwitchableBar::new(rec.clone());
        let (value, event) = (AtomicU32::new(0), AtomicU32::new(0));
        let entry = ShadowEntry::new(&value, &event);
        // Outside a migration: the register is written only when EventIdx asks for it.
        bar.shadow_doorbell(STRIDE.sq_tail(1), 1, entry);
        bar.shadow_doorbell(STRIDE.sq_tail(1), 2, entry);
        assert_eq!(*rec.writes.lock().unwrap(), vec![(STRIDE.sq_tail(1), 1)]);
        // Metering counts every submission, written to the register or not.
        bar.start_metering(STRIDE);
        bar.shadow_doorbell(STRIDE.sq_tail(1), 2, entry);
        bar.shadow_doorbell(STRIDE.sq_tail(1), 6, entry);
        assert_eq!(bar.admitted(), 5);
        assert_eq!(rec.count.load(Ordering::SeqCst), 1, "EventIdx still behind");
        assert_eq!(value.load(Ordering::SeqCst), 6);
        // Paused: the writer waits for the resume without touching the shadow (the suspended
        // device's saved doorbells must not change), then writes to the new device.
        bar.pause();
        let other = Arc::new(Recorder::default());
        let writing = AtomicBool::new(false);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                writing.store(true, Ordering::SeqCst);
                bar.shadow_doorbell(STRIDE.sq_tail(1), 9, entry);
            });
            while !writing.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(
                value.load(Ordering::SeqCst),
                6,
                "the shadow changed while paused"
            );
            assert_eq!(rec.count.load(Ordering::SeqCst), 1);
            assert!(
                !writer.is_finished(),
                "the writer did not wait for the resume"
            );
            bar.resume(Some(other.clone()));
        });
        assert_eq!(value.load(Ordering::SeqCst), 9);
        // The new device is told through the register too, whatever EventIdx says.
        assert_eq!(*other.writes.lock().unwrap(), vec![(STRIDE.sq_tail(1), 9)]);
        assert_eq!(rec.count.load(Ordering::SeqCst), 1);
        assert_eq!(bar.admitted(), 8);
        bar.stop_metering();
        assert!(!bar.gated.load(Ordering::SeqCst));
    }

    #[test]
    fn an_abandoned_gate_holds_every_write_until_a_recovered_device_resumes() {
        use std::sync::atomic::AtomicU32;
        let rec = Arc::new(Recorder::default());
        let bar = SwitchableBar::new(rec.clone());
        let (value, event) = (AtomicU32::new(3), AtomicU32::new(0));
        let entry = ShadowEntry::new(&value, &event);
        bar.start_metering(STRIDE);
        bar.pause();
        std::thread::scope(|s| {
            let writer = s.spawn(|| bar.shadow_doorbell(STRIDE.sq_tail(1), 4, entry));
            bar.abandon();
            writer.join().unwrap();
        });
        bar.shadow_doorbell(STRIDE.sq_tail(1), 5, entry);
        bar.doorbell(STRIDE.cq_head(1), 1);
        bar.stop_metering();
        // Nothing reached the device, but the guest's submissions are in its memory.
        assert_eq!(rec.count.load(Ordering::SeqCst), 0);
        assert_eq!(value.load(Ordering::SeqCst), 5);
        assert!(bar.gated.load(Ordering::SeqCst));
        // The source is recovered: the held writes reach it, and later writes go straight on,
        // metered ones too (an abandoned gate that stayed so would drop them).
        bar.resume(None);
        assert_eq!(
            *rec.writes.lock().unwrap(),
            vec![(STRIDE.sq_tail(1), 5), (STRIDE.cq_head(1), 1)]
        );
        assert!(!bar.gated.load(Ordering::SeqCst));
        bar.start_metering(STRIDE);
        event.store(5, Ordering::SeqCst);
        bar.shadow_doorbell(STRIDE.sq_tail(1), 6, entry);
        assert_eq!(bar.admitted(), 1);
        bar.stop_metering();
        assert_eq!(value.load(Ordering::SeqCst), 6);
        assert_eq!(
            rec.writes.lock().unwrap().last(),
            Some(&(STRIDE.sq_tail(1), 6)),
            "the device armed at 5 is written to"
        );
    }

    #[test]
    fn fuzz_doorbell_writes_never_panic_nor_wait_past_the_bound() {
        bolero::check!()
            .with_iterations(2000)
            .with_type::<Vec<(u16, u32, bool)>>()
            .for_each(|writes| {
                let mut meter = Meter {
                    stride: STRIDE,
                    tails: BTreeMap::new(),
                    admitted: 0,
                    bucket: Some(TokenBucket::new(10.0, Instant::now())),
                };
                let now = Instant::now();
                for &(qid, value, cq) in writes {
                    let offset = if cq {
                        STRIDE.cq_head(qid)
                    } else {
                        STRIDE.sq_tail(qid)
                    };
                    assert!(meter.admit(offset, value, now) <= MAX_THROTTLE_WAIT);
                }
            });
    }
}
