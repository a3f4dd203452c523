//! The ledger: what every I/O unit of the range should hold, and which units have a command in
//! flight.
//!
//! Per I/O unit it keeps the newest *acknowledged* write generation (a lock-free array of
//! `u64`) and an in-flight flag. A command is only issued to a unit whose flag it could claim,
//! so no two commands ever touch the same LBAs at once, and a read is checked against the
//! generation acknowledged before it was submitted. The ledger outlives a run: the read-back
//! after a migration ([`verify_all`](super::verify_all)) and later runs use the same one, and
//! it can be saved to a file and loaded again ([`layout`](super::layout)) to re-verify a
//! server from another process.
//!
//! A ledger judges only what its own run wrote. What the units it never wrote hold is its
//! [`Baseline`]: by default earlier content nobody recorded (an earlier run's blocks, a guest's
//! file system), which is not judged — except that a block stamped with this run's identifier
//! must not appear where this run acknowledged no write. A caller that knows the namespace
//! started empty (a fresh server) asks for [`Baseline::Zeros`] instead.

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

/// What the units a run never wrote hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Baseline {
    /// Unknown earlier content (the default): a namespace that an earlier run, another
    /// client or a guest may have written. Units this run never wrote are not judged, except
    /// that they must not hold a block of this run.
    #[default]
    Earlier,
    /// The namespace was all zeros when the run started (a freshly started server): units
    /// this run never wrote must read as zeros.
    Zeros,
}

/// What a unit should hold, as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expected {
    /// Never written, on a namespace that started empty ([`Baseline::Zeros`]): must read as
    /// zeros.
    Never,
    /// Not written by this run, on a namespace with earlier content ([`Baseline::Earlier`]):
    /// anything but a block of this run is accepted.
    Earlier,
    /// The newest acknowledged write had this generation.
    Generation(u64),
    /// A write failed, timed out or was not stamped (verify off): any content is accepted
    /// until the next acknowledged verified write.
    Unknown,
}

impl Expected {
    fn decode(raw: u64, baseline: Baseline) -> Self {
        match raw {
            NEVER if baseline == Baseline::Zeros => Expected::Never,
            NEVER => Expected::Earlier,
            UNKNOWN => Expected::Unknown,
            generation => Expected::Generation(generation),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Never => f.write_str("never written (zeros)"),
            Expected::Earlier => f.write_str("not written by this run (earlier content)"),
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
    baseline: Baseline,
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
            .field("baseline", &self.baseline)
            .field("written_units", &self.written_units())
            .finish()
    }
}

impl Ledger {
    /// A ledger for `lbas` (whole units of `unit_blocks` blocks of `lba_bytes` bytes; a partial
    /// unit at the end is left out), nothing written yet, with a fresh run identifier; units it
    /// never writes are judged by `baseline`.
    pub fn new(lbas: Range<u64>, lba_bytes: u64, unit_blocks: u64, baseline: Baseline) -> Self {
        let unit_blocks = unit_blocks.max(1);
        let units = lbas.end.saturating_sub(lbas.start) / unit_blocks;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let run = SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(40)).next_u64();
        Self::from_parts(
            lbas.start..lbas.start + units * unit_blocks,
            lba_bytes,
            unit_blocks,
            run,
            baseline,
            (0..units).map(|_| NEVER),
        )
    }

    /// A ledger with the given state (one raw generation per unit of `lbas`, which the caller
    /// has checked): what [`layout::decode`](super::layout::decode) rebuilds. New generations
    /// continue after the largest recorded one.
    pub(crate) fn from_parts(
        lbas: Range<u64>,
        lba_bytes: u64,
        unit_blocks: u64,
        run: u64,
        baseline: Baseline,
        generations: impl IntoIterator<Item = u64>,
    ) -> Self {
        let generations: Box<[AtomicU64]> = generations.into_iter().map(AtomicU64::new).collect();
        let newest = generations
            .iter()
            .map(|g| g.load(Ordering::Relaxed))
            .filter(|&g| g != UNKNOWN)
            .max()
            .unwrap_or(NEVER);
        Self {
            lbas,
            lba_bytes,
            unit_blocks,
            run,
            baseline,
            busy: generations.iter().map(|_| AtomicBool::new(false)).collect(),
            generations,
            next_generation: AtomicU64::new(newest + 1),
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

    /// What the units this run never wrote hold.
    pub fn baseline(&self) -> Baseline {
        self.baseline
    }

    /// The raw generation word of every unit, in order (for saving the ledger).
    pub(crate) fn raw_generations(&self) -> impl Iterator<Item = u64> + '_ {
        self.generations.iter().map(|g| g.load(Ordering::Acquire))
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
        Expected::decode(
            self.generations[unit as usize].load(Ordering::Acquire),
            self.baseline,
        )
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
        let ledger = Ledger::new(10..45, 512, 8, Baseline::Zeros);
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
        assert_ne!(Ledger::new(0..8, 512, 1, Baseline::Zeros).run(), 0);
    }

    #[test]
    fn unwritten_units_follow_the_baseline() {
        let earlier = Ledger::new(0..8, 512, 1, Baseline::default());
        assert_eq!(earlier.baseline(), Baseline::Earlier);
        assert_eq!(earlier.expected(0), Expected::Earlier);
        let g = earlier.next_generation();
        earlier.acknowledge(0, g);
        assert_eq!(earlier.expected(0), Expected::Generation(g));
        assert_eq!(earlier.written().collect::<Vec<_>>(), vec![0]);
        let zeros = Ledger::new(0..8, 512, 1, Baseline::Zeros);
        assert_eq!(zeros.expected(0), Expected::Never);
    }

    #[test]
    fn rebuilt_ledgers_continue_after_the_newest_generation() {
        let ledger = Ledger::from_parts(0..3, 512, 1, 7, Baseline::Earlier, [0, 9, UNKNOWN]);
        assert_eq!(ledger.units(), 3);
        assert_eq!(ledger.run(), 7);
        assert_eq!(ledger.expected(1), Expected::Generation(9));
        assert_eq!(ledger.expected(2), Expected::Unknown);
        assert_eq!(ledger.next_generation(), 10);
        assert!(ledger.try_claim(2));
        assert_eq!(
            ledger.raw_generations().collect::<Vec<_>>(),
            [0, 9, UNKNOWN]
        );
    }
}
