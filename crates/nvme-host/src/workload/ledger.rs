//! The ledger: what every I/O unit of the range should hold, and which units have a command in
//! flight.
//!
//! Per I/O unit it keeps the newest *acknowledged* write generation (a lock-free array of
//! `u64`) and an in-flight flag. A command is only issued to a unit whose flag it could claim,
//! so no two commands ever touch the same LBAs at once, and a read is checked against the
//! generation acknowledged before it was submitted. The ledger outlives a run: the read-back
//! after a migration ([`verify_all`](super::verify_all)) and later runs use the same one.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::rng::SplitMix64;

/// Encodes [`Expected::Never`].
const NEVER: u64 = 0;
/// Encodes [`Expected::Unknown`].
const UNKNOWN: u64 = u64::MAX;

/// What a unit should hold, as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expected {
    /// Never written: must read as zeros.
    Never,
    /// The newest acknowledged write had this generation.
    Generation(u64),
    /// A write failed, timed out or was not stamped (verify off): any content is accepted
    /// until the next acknowledged verified write.
    Unknown,
}

impl Expected {
    fn decode(raw: u64) -> Self {
        match raw {
            NEVER => Expected::Never,
            UNKNOWN => Expected::Unknown,
            generation => Expected::Generation(generation),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Never => f.write_str("never written (zeros)"),
            Expected::Generation(g) => write!(f, "generation {g}"),
            Expected::Unknown => f.write_str("unknown (a write failed)"),
        }
    }
}

/// The per-unit record of one namespace range.
pub struct Ledger {
    lbas: Range<u64>,
    lba_bytes: u64,
    unit_blocks: u64,
    run: u64,
    generations: Box<[AtomicU64]>,
    busy: Box<[AtomicBool]>,
    next_generation: AtomicU64,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("lbas", &self.lbas)
            .field("lba_bytes", &self.lba_bytes)
            .field("unit_blocks", &self.unit_blocks)
            .field("run", &format_args!("{:#x}", self.run))
            .field("written_units", &self.written_units())
            .finish()
    }
}

impl Ledger {
    /// A ledger for `lbas` (whole units of `unit_blocks` blocks of `lba_bytes` bytes; a partial
    /// unit at the end is left out), nothing written yet, with a fresh run identifier.
    pub fn new(lbas: Range<u64>, lba_bytes: u64, unit_blocks: u64) -> Self {
        let unit_blocks = unit_blocks.max(1);
        let units = lbas.end.saturating_sub(lbas.start) / unit_blocks;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let run = SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(40)).next_u64();
        Self {
            lbas: lbas.start..lbas.start + units * unit_blocks,
            lba_bytes,
            unit_blocks,
            run,
            generations: (0..units).map(|_| AtomicU64::new(NEVER)).collect(),
            busy: (0..units).map(|_| AtomicBool::new(false)).collect(),
            next_generation: AtomicU64::new(1),
        }
    }

    /// The LBAs covered (whole units).
    pub fn lbas(&self) -> Range<u64> {
        self.lbas.clone()
    }

    /// Logical block size in bytes.
    pub fn lba_bytes(&self) -> u64 {
        self.lba_bytes
    }

    /// Logical blocks per I/O unit.
    pub fn unit_blocks(&self) -> u64 {
        self.unit_blocks
    }

    /// Number of I/O units.
    pub fn units(&self) -> u64 {
        self.generations.len() as u64
    }

    /// The run identifier stamped into every block written under this ledger.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The first LBA of unit `unit`.
    pub fn lba(&self, unit: u64) -> u64 {
        self.lbas.start + unit * self.unit_blocks
    }

    /// The unit holding `lba`, if the ledger covers it.
    pub fn unit_of(&self, lba: u64) -> Option<u64> {
        self.lbas
            .contains(&lba)
            .then(|| (lba - self.lbas.start) / self.unit_blocks)
    }

    /// What unit `unit` should hold now.
    pub fn expected(&self, unit: u64) -> Expected {
        Expected::decode(self.generations[unit as usize].load(Ordering::Acquire))
    }

    /// Units with a write recorded (acknowledged or unknown).
    pub fn written_units(&self) -> u64 {
        self.generations
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) != NEVER)
            .count() as u64
    }

    /// Every unit with a write recorded, in order.
    pub fn written(&self) -> impl Iterator<Item = u64> + '_ {
        self.generations
            .iter()
            .enumerate()
            .filter(|(_, g)| g.load(Ordering::Acquire) != NEVER)
            .map(|(unit, _)| unit as u64)
    }

    /// Claims unit `unit` for one command; false when another command has it.
    pub(crate) fn try_claim(&self, unit: u64) -> bool {
        self.busy[unit as usize]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases a unit claimed with [`try_claim`](Self::try_claim).
    pub(crate) fn release(&self, unit: u64) {
        self.busy[unit as usize].store(false, Ordering::Release);
    }

    /// A generation newer than every one handed out before.
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that the write of `generation` to `unit` completed successfully.
    pub(crate) fn acknowledge(&self, unit: u64, generation: u64) {
        self.generations[unit as usize].store(generation, Ordering::Release);
    }

    /// Records that `unit`'s content is unknown (a failed or unverified write).
    pub(crate) fn mark_unknown(&self, unit: u64) {
        self.generations[unit as usize].store(UNKNOWN, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_claims_and_generations() {
        let ledger = Ledger::new(10..45, 512, 8);
        assert_eq!(ledger.units(), 4);
        assert_eq!(ledger.lbas(), 10..42);
        assert_eq!(ledger.lba(3), 34);
        assert_eq!(ledger.unit_of(41), Some(3));
        assert_eq!(ledger.unit_of(42), None);
        assert_eq!(ledger.unit_of(9), None);
        assert!(ledger.try_claim(1));
        assert!(!ledger.try_claim(1));
        ledger.release(1);
        assert!(ledger.try_claim(1));
        let a = ledger.next_generation();
        let b = ledger.next_generation();
        assert!(a >= 1 && b > a);
        assert_eq!(ledger.expected(1), Expected::Never);
        ledger.acknowledge(1, b);
        ledger.mark_unknown(2);
        assert_eq!(ledger.expected(1), Expected::Generation(b));
        assert_eq!(ledger.expected(2), Expected::Unknown);
        assert_eq!(ledger.written().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(ledger.written_units(), 2);
        assert_ne!(Ledger::new(0..8, 512, 1).run(), 0);
    }
}
