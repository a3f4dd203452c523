//! How the device raises interrupts: the [`Interrupt`] trait.
//!
//! The device only knows vector numbers (the IV of each completion queue). The transport maps a
//! vector to whatever delivers it: an eventfd the VMM gave for that MSI-X entry, or a counter in a
//! test. Masking (MSI-X table and PBA) is the transport's business, not the device's.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Delivers interrupts for one controller.
pub trait Interrupt: Send + Sync {
    /// Raises interrupt vector `vector`. Called at most once per completion queue per batch of
    /// completions, from I/O threads; must not block.
    fn signal(&self, vector: u16);
}

/// An [`Interrupt`] that counts signals per vector; for tests and for controllers nobody is
/// attached to yet.
#[derive(Debug)]
pub struct CountingInterrupt {
    counts: Vec<AtomicU64>,
}

impl CountingInterrupt {
    /// Counts signals for vectors `0..vectors`; others are ignored.
    pub fn new(vectors: u16) -> Self {
        Self {
            counts: (0..vectors).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// How often `vector` was signalled.
    pub fn count(&self, vector: u16) -> u64 {
        self.counts
            .get(usize::from(vector))
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

impl Interrupt for CountingInterrupt {
    fn signal(&self, vector: u16) {
        if let Some(c) = self.counts.get(usize::from(vector)) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }
}
