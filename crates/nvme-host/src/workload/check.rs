//! Checking what a read returned against the ledger, and collecting the failures.
//!
//! The checks, in order, for each logical block of a unit:
//!
//! * **torn** — a block that is non-zero but not an intact block of ours (bad magic, checksum
//!   mismatch), or a unit whose blocks come from different writes (mixed sectors);
//! * **misplaced** — an intact block carrying another LBA;
//!
//! and then for the unit as a whole, against what the ledger expected when the read was
//! submitted:
//!
//! * **never-written** — a unit never written, on a namespace that started empty
//!   ([`Baseline::Zeros`](super::ledger::Baseline)), must read as zeros;
//! * **lost** — zeros where a write was acknowledged: the write vanished;
//! * **stale** — an intact block older than the newest acknowledged write (an old generation,
//!   or a block from an earlier run);
//! * **unacknowledged** — a generation newer than any acknowledged write to the unit.
//!
//! A unit the run never wrote on a namespace with earlier content ([`Expected::Earlier`]) is
//! not judged — it holds what an earlier run or another client left — except that a block
//! stamped by this run found there is misplaced (another LBA's) or unacknowledged (its own).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::block::BlockState;
use super::block::inspect;
use super::ledger::Expected;

/// Which check a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FailureKind {
    /// Zeros where a write was acknowledged.
    Lost,
    /// An intact block older than the newest acknowledged write.
    Stale,
    /// A generation no acknowledged write produced.
    Unacknowledged,
    /// A damaged block (checksum, magic) or blocks of different writes in one unit.
    Torn,
    /// An intact block that belongs to another LBA.
    Misplaced,
    /// Non-zero data in a unit never written.
    NeverWritten,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Lost => "lost write",
            FailureKind::Stale => "stale data",
            FailureKind::Unacknowledged => "unacknowledged write",
            FailureKind::Torn => "torn block",
            FailureKind::Misplaced => "misplaced block",
            FailureKind::NeverWritten => "never-written block not zero",
        })
    }
}

/// What a failing block held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Found {
    /// All zeros.
    Zeros,
    /// An intact block of ours (possibly of another run).
    Block {
        /// The LBA it was written to.
        lba: u64,
        /// Its generation.
        generation: u64,
        /// Its run identifier.
        run: u64,
        /// The queue that wrote it.
        queue: u16,
        /// That queue's sequence number.
        seq: u64,
    },
    /// Damaged data; the reason says which check failed.
    Corrupt {
        /// Which check failed.
        reason: &'static str,
    },
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Zeros => f.write_str("zeros"),
            Found::Block {
                lba,
                generation,
                run,
                queue,
                seq,
            } => write!(
                f,
                "LBA {lba} generation {generation} (run {run:#x}, queue {queue} seq {seq})"
            ),
            Found::Corrupt { reason } => write!(f, "damaged data ({reason})"),
        }
    }
}

/// One verification failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Which check failed.
    pub kind: FailureKind,
    /// The logical block that failed it.
    pub lba: u64,
    /// The queue whose read found it.
    pub queue: u16,
    /// What the ledger expected for the block's unit when the read was submitted.
    pub expected: Expected,
    /// What the block held.
    pub found: Found,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LBA {}: {} (queue {}): expected {}, found {}",
            self.lba, self.kind, self.queue, self.expected, self.found
        )
    }
}

fn found(state: BlockState) -> Found {
    match state {
        BlockState::Zeros => Found::Zeros,
        BlockState::Valid(h) => Found::Block {
            lba: h.lba,
            generation: h.generation,
            run: h.run,
            queue: h.queue,
            seq: h.seq,
        },
        BlockState::Corrupt(reason) => Found::Corrupt { reason },
    }
}

/// True when two blocks of one unit come from the same write.
fn same_write(a: BlockState, b: BlockState) -> bool {
    match (a, b) {
        (BlockState::Zeros, BlockState::Zeros) => true,
        (BlockState::Valid(a), BlockState::Valid(b)) => {
            (a.run, a.generation, a.queue, a.seq) == (b.run, b.generation, b.queue, b.seq)
        }
        _ => false,
    }
}

/// Checks one unit read back from the device (`data`: untrusted bytes, split into
/// `lba_bytes` blocks starting at `first_lba`) against `expected`, for a ledger whose run
/// identifier is `run`. Returns the first failure, reported as found by queue `queue`.
pub fn check_unit(
    data: &[u8],
    first_lba: u64,
    lba_bytes: usize,
    run: u64,
    expected: Expected,
    queue: u16,
) -> Option<Failure> {
    let fail = |kind, lba, state| {
        Some(Failure {
            kind,
            lba,
            queue,
            expected,
            found: found(state),
        })
    };
    match expected {
        Expected::Unknown => return None,
        Expected::Earlier => {
            return data
                .chunks(lba_bytes.max(1))
                .enumerate()
                .find_map(|(i, block)| {
                    let lba = first_lba.wrapping_add(i as u64);
                    match inspect(block) {
                        state @ BlockState::Valid(h) if h.run == run && h.lba != lba => {
                            fail(FailureKind::Misplaced, lba, state)
                        }
                        state @ BlockState::Valid(h) if h.run == run => {
                            fail(FailureKind::Unacknowledged, lba, state)
                        }
                        _ => None,
                    }
                });
        }
        Expected::Never | Expected::Generation(_) => {}
    }
    // Damage in a unit that should be zeros is first of all data where none belongs.
    let damaged = if expected == Expected::Never {
        FailureKind::NeverWritten
    } else {
        FailureKind::Torn
    };
    let mut first: Option<BlockState> = None;
    for (i, block) in data.chunks(lba_bytes.max(1)).enumerate() {
        let lba = first_lba.wrapping_add(i as u64);
        let state = inspect(block);
        match state {
            BlockState::Corrupt(_) => return fail(damaged, lba, state),
            BlockState::Valid(h) if h.lba != lba => {
                return fail(FailureKind::Misplaced, lba, state);
            }
            _ => {}
        }
        match first {
            None => first = Some(state),
            Some(head) if !same_write(head, state) => return fail(damaged, lba, state),
            Some(_) => {}
        }
    }
    let state = first?;
    match (expected, state) {
        (Expected::Never, BlockState::Zeros) => None,
        (Expected::Never, _) => fail(FailureKind::NeverWritten, first_lba, state),
        (Expected::Generation(_), BlockState::Zeros) => fail(FailureKind::Lost, first_lba, state),
        (Expected::Generation(_), BlockState::Valid(h)) if h.run != run => {
            fail(FailureKind::Stale, first_lba, state)
        }
        (Expected::Generation(g), BlockState::Valid(h)) if h.generation < g => {
            fail(FailureKind::Stale, first_lba, state)
        }
        (Expected::Generation(g), BlockState::Valid(h)) if h.generation > g => {
            fail(FailureKind::Unacknowledged, first_lba, state)
        }
        _ => None,
    }
}

/// Failures (all counted) and command errors of a run, the first few of each kept.
#[derive(Debug)]
pub(crate) struct FailureLog {
    max: usize,
    failures: Mutex<Vec<Failure>>,
    failure_count: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl FailureLog {
    /// A log keeping the first `max` failures and `max` error messages.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            failures: Mutex::new(Vec::new()),
            failure_count: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Records a verification failure.
    pub(crate) fn failure(&self, failure: Failure) {
        self.failure_count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < self.max {
            kept.push(failure);
        }
    }

    /// Records a command that completed with an error status (the statistics count them).
    pub(crate) fn error(&self, message: impl FnOnce() -> String) {
        let mut kept = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < self.max {
            kept.push(message());
        }
    }

    /// Failures so far.
    pub(crate) fn failure_count(&self) -> u64 {
        self.failure_count.load(Ordering::Relaxed)
    }

    /// The kept failures and error messages.
    pub(crate) fn into_kept(self) -> (Vec<Failure>, Vec<String>) {
        (
            self.failures
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
            self.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::block::BlockHeader;
    use super::super::block::stamp;
    use super::*;

    const RUN: u64 = 0x77;

    fn unit(lba: u64, generation: u64, blocks: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 512 * blocks];
        stamp(
            &mut buf,
            512,
            BlockHeader {
                magic: 0,
                run: RUN,
                lba,
                generation,
                seq: generation,
                queue: 1,
                reserved: 0,
                crc: 0,
            },
        );
        buf
    }

    /// `blocks` blocks of another run, generation 5, from `lba`.
    fn other_run(lba: u64, blocks: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 512 * blocks];
        stamp(
            &mut buf,
            512,
            BlockHeader {
                magic: 0,
                run: RUN + 1,
                lba,
                generation: 5,
                seq: 0,
                queue: 0,
                reserved: 0,
                crc: 0,
            },
        );
        buf
    }

    fn kind(data: &[u8], lba: u64, expected: Expected) -> Option<(FailureKind, u64)> {
        check_unit(data, lba, 512, RUN, expected, 1).map(|f| (f.kind, f.lba))
    }

    #[test]
    fn every_kind_is_told_apart() {
        let g5 = Expected::Generation(5);
        assert_eq!(kind(&unit(8, 5, 4), 8, g5), None);
        assert_eq!(kind(&[0u8; 2048], 8, Expected::Never), None);
        assert_eq!(kind(&[0xffu8; 2048], 8, Expected::Unknown), None);
        // Earlier content where this run wrote nothing is not judged, but a block of this
        // run there is: its own LBA's (a write never acknowledged) or another's.
        let earlier = Expected::Earlier;
        assert_eq!(kind(&[0xffu8; 2048], 8, earlier), None);
        assert_eq!(kind(&[0u8; 2048], 8, earlier), None);
        let mut mixed_runs = other_run(8, 4);
        mixed_runs[1024..].fill(0x5a);
        assert_eq!(kind(&mixed_runs, 8, earlier), None);
        assert_eq!(
            kind(&unit(8, 5, 4), 8, earlier),
            Some((FailureKind::Unacknowledged, 8))
        );
        let mut stray = other_run(8, 4);
        stray[1536..].copy_from_slice(&unit(40, 5, 1));
        assert_eq!(kind(&stray, 8, earlier), Some((FailureKind::Misplaced, 11)));
        assert_eq!(kind(&[0u8; 2048], 8, g5), Some((FailureKind::Lost, 8)));
        assert_eq!(kind(&unit(8, 4, 4), 8, g5), Some((FailureKind::Stale, 8)));
        assert_eq!(
            kind(&unit(8, 6, 4), 8, g5),
            Some((FailureKind::Unacknowledged, 8))
        );
        assert_eq!(
            kind(&unit(8, 5, 4), 8, Expected::Never),
            Some((FailureKind::NeverWritten, 8))
        );
        assert_eq!(
            kind(&unit(16, 5, 4), 8, g5),
            Some((FailureKind::Misplaced, 8))
        );
        // A flipped byte in the third block.
        let mut torn = unit(8, 5, 4);
        torn[2 * 512 + 100] ^= 1;
        let f = check_unit(&torn, 8, 512, RUN, g5, 2).unwrap();
        assert_eq!((f.kind, f.lba, f.queue), (FailureKind::Torn, 10, 2));
        assert_eq!(
            f.found,
            Found::Corrupt {
                reason: "checksum mismatch"
            }
        );
        // Mixed sectors: the last two blocks from an older write.
        let mut mixed = unit(8, 5, 4);
        mixed[1024..].copy_from_slice(&unit(8, 3, 4)[1024..]);
        assert_eq!(kind(&mixed, 8, g5), Some((FailureKind::Torn, 10)));
        // Half zeros.
        let mut half = unit(8, 5, 4);
        half[1024..].fill(0);
        assert_eq!(kind(&half, 8, g5), Some((FailureKind::Torn, 10)));
        // Another run's intact block.
        let other = other_run(8, 1);
        assert_eq!(kind(&other, 8, g5), Some((FailureKind::Stale, 8)));
        let text = check_unit(&other, 8, 512, RUN, g5, 3).unwrap().to_string();
        assert!(text.contains("LBA 8: stale data"), "{text}");
        assert!(text.contains("expected generation 5"), "{text}");
    }

    #[test]
    fn log_keeps_the_first_and_counts_all() {
        let log = FailureLog::new(2);
        let f = check_unit(&[0u8; 512], 3, 512, RUN, Expected::Generation(1), 1).unwrap();
        for _ in 0..5 {
            log.failure(f);
            log.error(|| "e".to_owned());
        }
        assert_eq!(log.failure_count(), 5);
        let (failures, errors) = log.into_kept();
        assert_eq!(failures.len(), 2);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn fuzz_check_unit() {
        bolero::check!()
            .with_type::<(u8, Vec<u8>)>()
            .with_iterations(2000)
            .for_each(|(expect, data): &(u8, Vec<u8>)| {
                let expected = match expect % 4 {
                    0 => Expected::Never,
                    1 => Expected::Unknown,
                    2 => Expected::Earlier,
                    _ => Expected::Generation(u64::from(*expect)),
                };
                let _ = check_unit(data, u64::MAX - 2, 64, RUN, expected, 0);
            });
    }
}
