//! Waking a worker that sleeps until a doorbell write ([`DoorbellDelivery::Trapped`]).
//!
//! A worker about to sleep raises its flag, looks at its queues once more, then waits on the
//! eventfd (with its backend queues' notifiers). Whoever writes a doorbell first stores it,
//! then wakes the worker if the flag is up. Both sides put a full fence between their store
//! and their load, so either the worker's last look sees the doorbell or the writer sees the
//! flag: a write is never left unseen by a sleeping worker. The writer clears the flag as it
//! signals, so a burst of writes costs one `write(2)`; a worker that is not asleep costs the
//! writer a fence and a load. The worker drains the eventfd (one `read(2)`) each time it
//! wakes.
//!
//! [`DoorbellDelivery::Trapped`]: super::DoorbellDelivery::Trapped

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::atomic::fence;

use crate::notifier::Notifier;

/// One worker's wake-up: its eventfd and whether it is (about to be) asleep on it.
#[derive(Debug)]
pub(super) struct Waker {
    notifier: Notifier,
    asleep: AtomicBool,
    /// Whether the worker sleeps with commands it could not fetch for want of completion
    /// queue room: only then does a completion queue head doorbell wake it.
    stalled: AtomicBool,
}

impl Waker {
    /// A waker for a worker that is awake.
    pub(super) fn new() -> io::Result<Self> {
        Ok(Self {
            notifier: Notifier::new("an I/O worker's wake-up eventfd")?,
            asleep: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
        })
    }

    /// The descriptor the worker waits on.
    pub(super) fn fd(&self) -> RawFd {
        self.notifier.as_fd().as_raw_fd()
    }

    /// The worker is about to sleep: raises the flag. Its next look at the doorbells sees
    /// every write whose writer did not see the flag.
    pub(super) fn prepare(&self) {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The worker's last look left commands it cannot fetch until the host frees completion
    /// queue entries (`stalled`), or not.
    pub(super) fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// The worker is awake again (woken, or it found work in its last look): lowers the flag
    /// and drains any signal. Always: a writer that lowered the flag during an earlier sleep
    /// may have signalled only after that sleep ended (the worker woke for a backend
    /// completion), and a signal left behind would end every later sleep at once.
    pub(super) fn awake(&self) {
        self.asleep.store(false, Ordering::Relaxed);
        self.notifier.drain();
    }

    /// A completion queue head doorbell was just written: signals the worker if it is asleep
    /// waiting for completion queue room. (One that is not sees the head at its next pass.)
    pub(super) fn wake_if_stalled(&self) {
        fence(Ordering::SeqCst);
        if self.stalled.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// A doorbell (or anything else the worker must see) was just written: signals the worker
    /// if it is asleep.
    pub(super) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::Relaxed) {
            self.notifier.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the waker's eventfd is readable now.
    fn signalled(waker: &Waker) -> bool {
        let mut pollfd = libc::pollfd {
            fd: waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        unsafe { libc::poll(&mut pollfd, 1, 0) == 1 }
    }

    #[test]
    fn a_wake_signals_only_a_sleeping_worker_and_no_signal_outlives_its_sleep() {
        let waker = Waker::new().unwrap();
        waker.wake();
        assert!(!signalled(&waker), "an awake worker is not signalled");
        waker.prepare();
        waker.wake();
        waker.wake();
        assert!(signalled(&waker));
        waker.awake();
        assert!(!signalled(&waker));
        // A writer lowers the flag, the worker wakes for something else and drains, and only
        // then does the writer's signal land: the worker's next sleep ends at once, and the
        // wake-up after it must leave nothing behind.
        waker.prepare();
        assert!(waker.asleep.swap(false, Ordering::Relaxed));
        waker.awake();
        waker.notifier.signal();
        waker.prepare();
        assert!(signalled(&waker), "the late signal ends this sleep");
        waker.awake();
        assert!(
            !signalled(&waker),
            "a stale signal would end every later sleep"
        );
    }
}
