//! Waking a worker that sleeps until a doorbell write ([`DoorbellDelivery::Trapped`]).
//!
//! A worker about to sleep raises its flag, looks at its queues once more, then waits on the
//! eventfd (with its backend queues' notifiers). Whoever writes a doorbell first stores it,
//! then wakes the worker if the flag is up. Both sides put a full fence between their store
//! and their load, so either the worker's last look sees the doorbell or the writer sees the
//! flag: a write is never left unseen by a sleeping worker. The writer clears the flag as it
//! signals, so a burst of writes costs one `write(2)`; a worker that is not asleep costs the
//! writer a fence and a load.
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
    /// and, if a writer had lowered it first, drains the signal it sent.
    pub(super) fn awake(&self) {
        if !self.asleep.swap(false, Ordering::Relaxed) {
            self.notifier.drain();
        }
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
