//! Holding backend bytes unchanged: [`Held`] and the RAM backend's stripe table ([`Stripes`]).
//!
//! # Why
//!
//! A migration source sends namespace data to the destination with a CRC over each piece. For
//! the RAM backend the bytes are already in this process's memory, so instead of copying them
//! into a buffer first, the source can point a `sendmsg` iovec straight into the namespace
//! mapping. That is only correct if the bytes do not change between the CRC and the kernel's
//! copy in `sendmsg`: a guest Write landing in between would put data on the wire that does not
//! match its CRC (or, worse, matches a CRC computed over the new bytes with the old ones sent).
//! [`Backend::hold`](super::Backend::hold) closes that window: while a range is held, every
//! command that would change it waits.
//!
//! # How
//!
//! The namespace is cut into stripes of a power-of-two size, at least 1 MiB and large enough
//! that there are at most 65536 of them. Each stripe is one `AtomicU64` in its own cache line:
//! bit 63 ([`HELD`]) says the stripe is held, the low bits count the commands currently
//! changing bytes in it.
//!
//! * A mutating command ([`Stripes::enter`]) adds 1 to each stripe of its range. If a stripe
//!   turns out to be held, it takes back what it added, waits until the stripe is released and
//!   starts over. When it has finished its memory access, the [`Entered`] guard subtracts the 1s
//!   again.
//! * A hold ([`Stripes::hold`]) sets [`HELD`] on each stripe of its range and then waits, for a
//!   bounded time, until the counts drop to zero: commands that entered before it finish, every
//!   later one backs out.
//!
//! Both sides use read-modify-write operations on the same word, which are totally ordered, so
//! for every pair of a command and a hold either the command's add comes first (the hold sees
//! its count and waits for its subtract, whose release ordering makes the command's writes
//! visible before the holder reads) or the hold's bit comes first (the command sees it and
//! writes nothing). Releasing is a release-ordered clear of the bit, and a command's add has
//! acquire ordering, so every read done under the hold happens before any later write.
//!
//! # Cost when no migration runs
//!
//! One uncontended atomic add and one subtract per stripe per mutating command (almost always a
//! single stripe), on a cache line that only commands on that same megabyte-or-more touch. No
//! lock is taken; the mutex and condition variable are used only by commands that found a
//! stripe held.
//!
//! # Safety of the bytes
//!
//! While a range is held, no method of the backend writes it, so a `&[u8]` over it
//! ([`Held::as_slice`]) and the kernel's read in `sendmsg` see stable bytes. The backend's
//! mapping is private anonymous memory that no other process can write, and it lives as long
//! as the backend, so the pointer stays valid while the backend does.

use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// Where held backend bytes are ([`Backend::hold`](super::Backend::hold)); valid until the
/// hold is released.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Held` is only an address and a length; it reads nothing itself. Reading through it
// is `unsafe` (`as_slice`) and its contract — the hold is still in place, the backend alive —
// holds on any thread, because the bytes are then written by no thread at all.
unsafe impl Send for Held {}
// SAFETY: as above: shared access to a `Held` only copies the address and length.
unsafe impl Sync for Held {}

impl Held {
    /// Describes `len` held bytes at `ptr`, which must lie in one live mapping.
    pub(super) fn new(ptr: NonNull<u8>, len: usize) -> Self {
        Self { ptr, len }
    }

    /// The address of the first held byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The number of held bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a hold of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The held bytes as a slice.
    ///
    /// # Safety
    ///
    /// The slice may be used only until the hold is released
    /// ([`Backend::release`](super::Backend::release)), and the backend must outlive it.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        // SAFETY: the bytes lie inside the backend's mapping, which is at most `isize::MAX`
        // bytes (an `mmap` length) and, by the caller's promise, still mapped; while the hold
        // lasts no method of the backend writes them and no other process can, so nothing
        // mutates them while the slice exists.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// The bit of a stripe word that marks it held; the bits below count commands in the stripe.
const HELD: u64 = 1 << 63;
/// The smallest stripe: 1 MiB.
const MIN_STRIPE_SHIFT: u32 = 20;
/// The most stripes a table has.
const MAX_STRIPES: u64 = 1 << 16;
/// Busy-wait rounds a hold spends on one stripe before it starts yielding its CPU.
const SPINS: u32 = 64;
/// How long a waiting command sleeps between checks if no wake-up comes: only a safety net.
const WAIT_SLICE: Duration = Duration::from_millis(1);

/// One stripe's word, alone in its cache line so that workers writing different stripes do not
/// contend for a line.
#[repr(align(64))]
struct Stripe(AtomicU64);

/// The hold state of a RAM namespace: one word per stripe (see the module docs).
pub(super) struct Stripes {
    /// Size of the namespace in bytes: ranges beyond it touch no stripe.
    size: u64,
    /// log2 of the stripe size.
    shift: u32,
    stripes: Box<[Stripe]>,
    /// Commands waiting (or about to wait) for a stripe to be released.
    waiters: AtomicUsize,
    /// Guards nothing but the waiting: the condition is the stripes' [`HELD`] bits.
    lock: Mutex<()>,
    released: Condvar,
}

impl fmt::Debug for Stripes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripes")
            .field("stripe_bytes", &(1u64 << self.shift))
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

impl Stripes {
    /// A table for a namespace of `size` bytes, nothing held.
    pub(super) fn new(size: u64) -> Self {
        let stripe = size
            .div_ceil(MAX_STRIPES)
            .checked_next_power_of_two()
            .unwrap_or(1 << 63)
            .max(1 << MIN_STRIPE_SHIFT);
        let shift = stripe.trailing_zeros();
        let count = size.div_ceil(stripe);
        Self {
            size,
            shift,
            stripes: (0..count).map(|_| Stripe(AtomicU64::new(0))).collect(),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            released: Condvar::new(),
        }
    }

    /// The indices of the stripes `len` bytes at `offset` cover: none for an empty range or one
    /// that does not lie inside the namespace (the memory access refuses it then, writing
    /// nothing).
    fn covering(&self, offset: u64, len: u64) -> Range<usize> {
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= self.size => {
                // Both indices are below the stripe count, which fits in a `usize`.
                (offset >> self.shift) as usize..((end - 1) >> self.shift) as usize + 1
            }
            _ => 0..0,
        }
    }

    /// Announces a command about to change `len` bytes at `offset`, first waiting while any of
    /// their stripes is held. The command is counted until the returned guard is dropped.
    #[must_use = "the command counts as in flight only while the guard lives"]
    pub(super) fn enter(&self, offset: u64, len: u64) -> Entered<'_> {
        let range = self.covering(offset, len);
        'again: loop {
            for i in range.clone() {
                let prev = self.stripes[i].0.fetch_add(1, Ordering::Acquire);
                if prev & HELD != 0 {
                    for stripe in &self.stripes[range.start..=i] {
                        stripe.0.fetch_sub(1, Ordering::Release);
                    }
                    self.wait_released(i);
                    continue 'again;
                }
            }
            return Entered {
                stripes: self,
                range,
            };
        }
    }

    /// How many commands wait for a release now.
    #[cfg(test)]
    pub(super) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Blocks until stripe `i` is not held.
    fn wait_released(&self, i: usize) {
        // No lost wake-up: this side increments `waiters`, then (under the lock) checks the bit;
        // the releasing side clears the bit, then reads `waiters`, all SeqCst, so at least one
        // of them sees the other's write. If the releaser sees no waiter, the increment came
        // later in the single total order, so the check below sees the bit cleared. If it sees
        // one, it takes the lock before notifying, so this side is either still before its
        // check (then sees the bit cleared) or already inside `wait_timeout`, which released the
        // lock atomically, and gets the notification. The timeout is a safety net only.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.stripes[i].0.load(Ordering::SeqCst) & HELD != 0 {
            guard = self
                .released
                .wait_timeout(guard, WAIT_SLICE)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Holds the stripes covering `len` bytes at `offset`: from now on commands changing them
    /// wait, and this returns once those already in flight have finished. False, holding
    /// nothing, if the range is outside the namespace, a stripe is already held or the commands
    /// in flight did not finish within `patience`. An empty range holds nothing and succeeds.
    pub(super) fn hold(&self, offset: u64, len: u64, patience: Duration) -> bool {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return false;
        }
        let range = self.covering(offset, len);
        for i in range.clone() {
            let prev = self.stripes[i].0.fetch_or(HELD, Ordering::AcqRel);
            if prev & HELD != 0 {
                self.clear(range.start..i);
                return false;
            }
        }
        // No deadline if `patience` reaches beyond what an `Instant` can express.
        let deadline = Instant::now().checked_add(patience);
        for stripe in &self.stripes[range.clone()] {
            let mut spins = 0;
            while stripe.0.load(Ordering::Acquire) & !HELD != 0 {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.clear(range);
                    return false;
                }
                std::thread::yield_now();
            }
        }
        true
    }

    /// Ends the hold of the stripes covering `len` bytes at `offset` and wakes the commands
    /// waiting for them.
    pub(super) fn release(&self, offset: u64, len: u64) {
        let range = self.covering(offset, len);
        debug_assert!(
            self.stripes[range.clone()]
                .iter()
                .all(|s| s.0.load(Ordering::Relaxed) & HELD != 0),
            "release of {len} bytes at {offset:#x}, which are not held"
        );
        self.clear(range);
    }

    /// Clears the [`HELD`] bit of the stripes `range` and wakes whoever waits for one.
    fn clear(&self, range: Range<usize>) {
        for stripe in &self.stripes[range] {
            // SeqCst: ordered before the read of `waiters` (see `wait_released`); its release
            // half orders the holder's reads before the writes of commands entering later.
            stripe.0.fetch_and(!HELD, Ordering::SeqCst);
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.released.notify_all();
        }
    }
}

/// A command counted in the stripes it changes ([`Stripes::enter`]); dropping it ends the
/// command, on every path out of it.
pub(super) struct Entered<'a> {
    stripes: &'a Stripes,
    range: Range<usize>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        for stripe in &self.stripes.stripes[self.range.clone()] {
            stripe.0.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_a_megabyte_or_enough_for_at_most_65536() {
        let small = Stripes::new(4 << 20);
        assert_eq!((small.shift, small.stripes.len()), (20, 4));
        let odd = Stripes::new((3 << 20) + 512);
        assert_eq!(odd.stripes.len(), 4);
        assert_eq!(odd.covering((3 << 20) + 511, 1), 3..4);
        let large = Stripes::new(1 << 40);
        assert_eq!((large.shift, large.stripes.len()), (24, 1 << 16));
        let uneven = Stripes::new((1 << 40) + 1);
        assert_eq!(uneven.shift, 25);
        assert!(uneven.stripes.len() <= 1 << 16);
        assert_eq!(size_of::<Stripe>(), 64);
    }

    #[test]
    fn ranges_cover_the_stripes_they_touch_and_nothing_outside() {
        let s = Stripes::new(4 << 20);
        assert_eq!(s.covering(0, 0), 0..0);
        assert_eq!(s.covering(0, 1 << 20), 0..1);
        assert_eq!(s.covering((1 << 20) - 1, 2), 0..2);
        assert_eq!(s.covering(0, 4 << 20), 0..4);
        assert_eq!(s.covering(4 << 20, 1), 0..0);
        assert_eq!(s.covering(u64::MAX, 2), 0..0);
        assert!(!s.hold(3 << 20, 2 << 20, Duration::ZERO));
        assert!(!s.hold(u64::MAX, 2, Duration::ZERO));
        // Nothing was left held by the refused holds.
        assert!(s.hold(0, 4 << 20, Duration::ZERO));
        s.release(0, 4 << 20);
    }

    #[test]
    fn a_failed_hold_clears_only_its_own_bits() {
        let s = Stripes::new(4 << 20);
        assert!(s.hold(2 << 20, 1, Duration::ZERO));
        // Stripes 1 and 2: 1 is set, then 2 is found held, so 1 is cleared again.
        assert!(!s.hold(1 << 20, 2 << 20, Duration::ZERO));
        assert!(s.hold(1 << 20, 1, Duration::ZERO));
        assert!(!s.hold(2 << 20, 1, Duration::ZERO));
        s.release(1 << 20, 1);
        s.release(2 << 20, 1);
        assert!(s.stripes.iter().all(|s| s.0.load(Ordering::Relaxed) == 0));
    }
}
