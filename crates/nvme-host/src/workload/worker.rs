//! One queue's worker: keeps `queue_depth` commands in flight on its queue pair with
//! preallocated data buffers and PRP lists, picks units through its [`Plan`], claims them in
//! the ledger, stamps writes, checks reads and records every completion.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_driver::driver::DriverError;
use nvme_driver::driver::QueuePair;
use nvme_driver::driver::build_prps;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_driver::memory::PAGE;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;

use super::block::BlockHeader;
use super::block::stamp;
use super::check::FailureLog;
use super::check::check_unit;
use super::config::Op;
use super::error::WorkloadError;
use super::ledger::Expected;
use super::ledger::Ledger;
use super::rate::Pacer;
use super::rng::SplitMix64;
use super::stats::Live;

/// Polls without finding a completion before the worker starts sleeping between polls (and
/// checking for timeouts).
const SPIN_POLLS: u32 = 64;
/// Sleep between idle polls.
const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// The longest a worker with nothing in flight sleeps waiting for a rate token before it looks
/// at the stop flag again.
const TOKEN_SLEEP_MAX: Duration = Duration::from_millis(10);
/// Random picks tried before a worker waits for a completion to free a unit.
const PICK_TRIES: u32 = 8;

/// How a worker chooses the next unit and command.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    /// Random units over the whole ledger.
    Random {
        /// Share of reads in percent.
        read_percent: u8,
    },
    /// Units `start..end` in order, wrapping around.
    Sequential {
        /// First unit of the slice.
        start: u64,
        /// End of the slice.
        end: u64,
        /// Next unit.
        next: u64,
        /// Share of reads in percent.
        read_percent: u8,
    },
    /// Read each listed unit once, then stop.
    Once {
        /// The units.
        units: Vec<u64>,
        /// The next position.
        pos: usize,
    },
}

/// What the plan offers next.
enum Next {
    /// Issue `op` to `unit` (claimed).
    Io(u64, Op),
    /// No unit can be claimed now.
    Busy,
    /// The plan is exhausted.
    Done,
}

fn pick_op(rng: &mut SplitMix64, read_percent: u8) -> Op {
    match read_percent {
        0 => Op::Write,
        100.. => Op::Read,
        p if rng.below(100) < u64::from(p) => Op::Read,
        _ => Op::Write,
    }
}

impl Plan {
    fn next(&mut self, rng: &mut SplitMix64, ledger: &Ledger) -> Next {
        match self {
            Plan::Random { read_percent } => {
                for _ in 0..PICK_TRIES {
                    let unit = rng.below(ledger.units());
                    if ledger.try_claim(unit) {
                        return Next::Io(unit, pick_op(rng, *read_percent));
                    }
                }
                Next::Busy
            }
            Plan::Sequential {
                start,
                end,
                next,
                read_percent,
            } => {
                if !ledger.try_claim(*next) {
                    return Next::Busy;
                }
                let unit = *next;
                *next = if unit + 1 >= *end { *start } else { unit + 1 };
                Next::Io(unit, pick_op(rng, *read_percent))
            }
            Plan::Once { units, pos } => match units.get(*pos) {
                None => Next::Done,
                Some(&unit) if ledger.try_claim(unit) => {
                    *pos += 1;
                    Next::Io(unit, Op::Read)
                }
                Some(_) => Next::Busy,
            },
        }
    }
}

/// When the run stops submitting, shared by all workers.
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: Option<Instant>,
    max_ios: Option<u64>,
    issued: AtomicU64,
}

impl Budget {
    /// Submissions stop at `deadline` or after `max_ios` commands, whichever comes first.
    pub(crate) fn new(deadline: Option<Instant>, max_ios: Option<u64>) -> Self {
        Self {
            deadline,
            max_ios,
            issued: AtomicU64::new(0),
        }
    }

    /// Takes one command from the budget; false when it is spent.
    fn take(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        self.max_ios
            .is_none_or(|max| self.issued.fetch_add(1, Ordering::Relaxed) < max)
    }
}

/// Everything the workers of one run share.
pub(crate) struct Shared<'a> {
    pub ledger: &'a Ledger,
    pub live: &'a Live,
    pub log: &'a FailureLog,
    pub budget: &'a Budget,
    /// The rate cap's bucket, when the run has one.
    pub pacer: Option<&'a Pacer>,
    pub stop: &'a AtomicBool,
    pub abort: &'a AtomicBool,
    pub nsid: u32,
    pub timeout: Duration,
    pub verify: bool,
    pub stop_on_failure: bool,
}

/// A data buffer and the PRPs that describe it: one per command a worker keeps in flight.
pub(crate) struct Slot {
    buf: DmaBuffer,
    /// Keeps the PRP list page alive.
    _list: Option<DmaBuffer>,
    prp1: u64,
    prp2: u64,
}

impl Slot {
    /// Allocates `count` slots of `unit_bytes` (plus a PRP list page each when a transfer
    /// spans more than two pages) from `mem`, PRPs computed once.
    pub(crate) fn allocate(
        mem: &Arc<HostMemory>,
        count: u32,
        unit_bytes: u64,
    ) -> Result<Vec<Self>, DriverError> {
        (0..count)
            .map(|_| {
                let buf = mem.alloc(unit_bytes)?;
                let list = if unit_bytes > 2 * PAGE {
                    Some(mem.alloc(PAGE)?)
                } else {
                    None
                };
                let mut template = Command::read(0, 0, 0, 0, 0, 0);
                build_prps(&mut template, buf.iova(), list.as_ref(), unit_bytes);
                Ok(Self {
                    buf,
                    _list: list,
                    prp1: template.prp1,
                    prp2: template.prp2,
                })
            })
            .collect()
    }
}

/// A command in flight.
#[derive(Clone, Copy)]
struct InFlight {
    slot: usize,
    unit: u64,
    op: Op,
    /// The generation a write stamped (0 when not verifying).
    generation: u64,
    /// What a read must find.
    expected: Expected,
    submitted: Instant,
}

/// One queue's worker.
pub(crate) struct Worker {
    index: usize,
    qp: QueuePair,
    slots: Vec<Slot>,
    plan: Plan,
    rng: SplitMix64,
    unit_bytes: u64,
    /// Indexed by CID.
    in_flight: Vec<Option<InFlight>>,
    free: Vec<usize>,
    reaped: Vec<Completion>,
    staging: Vec<u8>,
    seq: u64,
    /// When the rate cap's next token arrives, after a submission found the bucket empty.
    token_at: Option<Instant>,
}

impl Worker {
    /// A worker for queue pair `qp` (worker number `index`) keeping one command in flight
    /// per slot, each moving `unit_bytes`.
    pub(crate) fn new(
        index: usize,
        qp: QueuePair,
        slots: Vec<Slot>,
        unit_bytes: u64,
        plan: Plan,
        seed: u64,
    ) -> Self {
        let depth = slots.len();
        let cids = qp.depth() as usize;
        Self {
            index,
            qp,
            slots,
            plan,
            rng: SplitMix64::new(seed),
            unit_bytes,
            in_flight: vec![None; cids],
            free: (0..depth).rev().collect(),
            reaped: Vec::with_capacity(cids),
            staging: vec![0; unit_bytes as usize],
            seq: 0,
            token_at: None,
        }
    }

    /// Runs until the plan, the budget, the stop flag or an abort ends it and every command
    /// has completed; returns the queue pair for deletion.
    pub(crate) fn run(mut self, shared: &Shared<'_>) -> (QueuePair, Result<(), WorkloadError>) {
        let result = self.drive(shared);
        if result.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
            self.abandon(shared.ledger);
        }
        (self.qp, result)
    }

    /// Gives up on every command in flight: their units are released, and written ones are
    /// marked unknown (the write may still land).
    fn abandon(&mut self, ledger: &Ledger) {
        for io in self.in_flight.iter_mut().filter_map(Option::take) {
            if io.op == Op::Write {
                ledger.mark_unknown(io.unit);
            }
            ledger.release(io.unit);
        }
    }

    fn drive(&mut self, shared: &Shared<'_>) -> Result<(), WorkloadError> {
        let mut draining = false;
        let mut idle = 0u32;
        loop {
            if !draining
                && (shared.stop.load(Ordering::Relaxed) || shared.abort.load(Ordering::Relaxed))
            {
                draining = true;
            }
            if !draining {
                draining = self.submit(shared)?;
            }
            self.reaped.clear();
            let reaped = &mut self.reaped;
            self.qp.poll(|c| reaped.push(c));
            if !self.reaped.is_empty() {
                idle = 0;
                self.complete(shared)?;
            } else if draining && self.qp.outstanding() == 0 {
                return Ok(());
            } else if let Some(at) = self.token_at.filter(|_| self.qp.outstanding() == 0) {
                // Nothing to poll for: sleep until the rate cap's next token.
                let now = Instant::now();
                std::thread::sleep(at.saturating_duration_since(now).min(TOKEN_SLEEP_MAX));
            } else {
                idle += 1;
                if idle > SPIN_POLLS {
                    self.check_timeouts(shared)?;
                    std::thread::sleep(IDLE_SLEEP);
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Fills free slots with new commands; returns true when the plan or budget is spent.
    fn submit(&mut self, shared: &Shared<'_>) -> Result<bool, WorkloadError> {
        let ledger = shared.ledger;
        let mut spent = false;
        self.token_at = None;
        while let Some(&slot) = self.free.last() {
            let (unit, op) = match self.plan.next(&mut self.rng, ledger) {
                Next::Io(unit, op) => (unit, op),
                Next::Busy => break,
                Next::Done => {
                    spent = true;
                    break;
                }
            };
            let now = Instant::now();
            if let Some(Err(at)) = shared.pacer.map(|p| p.try_take(now)) {
                ledger.release(unit);
                self.token_at = Some(at);
                break;
            }
            if !shared.budget.take(now) {
                ledger.release(unit);
                spent = true;
                break;
            }
            let lba = ledger.lba(unit);
            let nlb0 = (ledger.unit_blocks() - 1) as u16;
            let s = &self.slots[slot];
            let (mut cmd, generation, expected) = match op {
                Op::Write => {
                    let generation = if shared.verify {
                        self.seq += 1;
                        let generation = ledger.next_generation();
                        stamp(
                            &mut self.staging,
                            ledger.lba_bytes() as usize,
                            BlockHeader {
                                magic: 0,
                                run: ledger.run(),
                                lba,
                                generation,
                                seq: self.seq,
                                queue: self.qp.qid(),
                                reserved: 0,
                                crc: 0,
                            },
                        );
                        s.buf.write(0, &self.staging);
                        generation
                    } else {
                        0
                    };
                    let cmd = Command::write(0, shared.nsid, lba, nlb0, 0, 0);
                    (cmd, generation, Expected::Unknown)
                }
                Op::Read => {
                    let cmd = Command::read(0, shared.nsid, lba, nlb0, 0, 0);
                    (cmd, 0, ledger.expected(unit))
                }
            };
            cmd.prp1 = s.prp1;
            cmd.prp2 = s.prp2;
            let cid = match self.qp.push(cmd) {
                Ok(cid) => cid,
                Err(err) => {
                    ledger.release(unit);
                    self.qp.ring();
                    return Err(err.into());
                }
            };
            self.free.pop();
            self.in_flight[usize::from(cid)] = Some(InFlight {
                slot,
                unit,
                op,
                generation,
                expected,
                submitted: Instant::now(),
            });
        }
        self.qp.ring();
        Ok(spent)
    }

    /// Handles the completions in `self.reaped`.
    fn complete(&mut self, shared: &Shared<'_>) -> Result<(), WorkloadError> {
        let now = Instant::now();
        shared.live.completed(now);
        let ledger = shared.ledger;
        let qid = self.qp.qid();
        let mut interval = shared.live.interval(self.index);
        for c in &self.reaped {
            let io = self
                .in_flight
                .get_mut(usize::from(c.cid))
                .and_then(Option::take)
                .ok_or(WorkloadError::UnexpectedCompletion { qid, cid: c.cid })?;
            let status = c.status.status();
            let ok = status.is_success();
            interval.record(
                io.op,
                self.unit_bytes,
                now.saturating_duration_since(io.submitted),
                ok,
            );
            let lba = ledger.lba(io.unit);
            if !ok {
                shared
                    .log
                    .error(|| format!("{} of LBA {lba} on queue {qid} failed: {status:?}", io.op));
                if io.op == Op::Write {
                    ledger.mark_unknown(io.unit);
                }
                if shared.stop_on_failure {
                    shared.abort.store(true, Ordering::Relaxed);
                }
            } else if io.op == Op::Write {
                if shared.verify {
                    ledger.acknowledge(io.unit, io.generation);
                } else {
                    ledger.mark_unknown(io.unit);
                }
            } else if shared.verify {
                self.slots[io.slot].buf.read(0, &mut self.staging);
                if let Some(failure) = check_unit(
                    &self.staging,
                    lba,
                    ledger.lba_bytes() as usize,
                    ledger.run(),
                    io.expected,
                    qid,
                ) {
                    shared.log.failure(failure);
                    if shared.stop_on_failure {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                }
            }
            ledger.release(io.unit);
            self.free.push(io.slot);
        }
        Ok(())
    }

    /// Fails the run when the oldest command has waited longer than the timeout.
    fn check_timeouts(&self, shared: &Shared<'_>) -> Result<(), WorkloadError> {
        let oldest = self
            .in_flight
            .iter()
            .flatten()
            .min_by_key(|io| io.submitted);
        match oldest {
            Some(io) if io.submitted.elapsed() > shared.timeout => Err(WorkloadError::Timeout {
                qid: self.qp.qid(),
                lba: shared.ledger.lba(io.unit),
                op: io.op,
                timeout: shared.timeout,
                host_view: self.qp.describe(),
            }),
            _ => Ok(()),
        }
    }
}
