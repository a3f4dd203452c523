//! Issue 10's differential property test: whatever a guest does, its VF's state migrates.
//!
//! A random, often hostile guest drives VF 1 of a source subsystem: register writes (CC enable,
//! disable and shutdown among them), admin commands (queue creation and deletion with random
//! and invalid parameters, Identify, logs, Set/Get Features, Asynchronous Event Requests,
//! Abort), I/O commands, and doorbells with any value. The source is then suspended (the guest
//! may go on ringing doorbells, which nothing fetches) and its state taken with Get Controller
//! State; two fresh destinations take the same bytes with Set Controller State and Resume, and
//! the source resumes in place. The same random follow-up actions then go to all three, and
//! after each one every completion (CID, status, DW0, DW1, SQ head, phase), every register and
//! doorbell read, every interrupt raised and every byte of guest memory must agree. Each
//! destination gives Get Controller State back byte for byte before it resumes.
//!
//! Each target has its own copy of guest memory and namespace data, taken when the source was
//! suspended (what a VMM copies), and its own view of the guest (the same positions, so the
//! same actions write the same bytes). The VF's worker threads run no passes
//! (`testing::drive_manually`): after every action the test's thread settles the controller,
//! and the guest's writes reach it between two passes, so what it does next never depends on
//! timing. The one clock a guest can read with milliseconds, the Timestamp feature, is compared
//! within a tolerance.

use nvme_device::controller::snapshot::vendor::VendorState;
use nvme_device::testing::lm;
use nvme_spec::lm::ControllerState;
use nvme_spec::lm::NvmeControllerStateV0;
use nvme_spec::status::Status;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::actions::Action;
use crate::actions::action;
use crate::actions::bring_up;
use crate::actions::read_back;
use crate::guest::Observation;
use crate::guest::Side;
use crate::guest::same;

/// CNTLID of VF 1.
const VF: u16 = 2;
const PAGE: u64 = 4096;
/// Guest memory: 32 pages from guest address 0.
const GUEST_PAGES: u64 = 32;
const GUEST_BYTES: u64 = GUEST_PAGES * PAGE;
/// The guest's own ring pages of I/O queue pair `qid` (1..=3) are 2 (qid − 1) and the next: SQ 1
/// is at guest address 0, which is legal.
const FIRST_RING_PAGE: u64 = 0;
/// Where the guest's admin queues go when it enables the controller (an admin queue at 0 is
/// not: enabling fails).
const ADMIN_SQ_PAGE: u64 = 6;
const ADMIN_CQ_PAGE: u64 = 7;
/// Data buffers: pages 8..16.
const DATA_PAGE: u64 = 8;
const DATA_PAGES: u64 = 8;
/// The PRP list of a transfer over more than two pages.
const PRP_LIST_PAGE: u64 = 16;
/// Timestamp transfers only; left out of the memory comparison (its value is a clock).
const TIMESTAMP_PAGE: u64 = 17;
/// Spare pages for queues with other identifiers.
const SPARE_PAGE: u64 = 18;
/// A guest address outside the guest's memory.
const UNMAPPED: u64 = 0x4000_0000;
/// The controllers' limits: small, so random values hit their edges.
const IO_QUEUE_PAIRS: u16 = 3;
const MAX_QUEUE_ENTRIES: u32 = 32;
const MDTS: u8 = 1;
const VECTORS: u16 = 4;
/// Doorbells of the queues that exist (SQ tail and CQ head of qid 0..=3).
const DOORBELLS: u16 = 2 * (IO_QUEUE_PAIRS + 1);
/// Namespace 1: 256 blocks of 512 bytes.
const BLOCK: u64 = 512;
const BLOCKS: u64 = 256;
/// How far apart two Timestamp reads of equivalent controllers may be, in milliseconds.
const TIMESTAMP_TOLERANCE: u64 = 60_000;

mod actions;
mod guest;

/// A controller state decoded: NVMECS v0 and the vendor state.
fn decoded(state: &[u8]) -> (NvmeControllerStateV0, VendorState) {
    let cs = ControllerState::decode(state).unwrap();
    let nvmecs = NvmeControllerStateV0::decode(cs.nvmecs()).unwrap();
    (nvmecs, VendorState::decode(cs.vendor()).unwrap())
}

/// Checks that two controller states are the same bytes; if not, shows them decoded.
fn same_state(got: &[u8], want: &[u8], what: &str) -> Result<(), TestCaseError> {
    if got != want {
        prop_assert_eq!(decoded(got), decoded(want), "{}", what);
        prop_assert!(false, "{}, in bytes only", what);
    }
    Ok(())
}

/// Runs the scenario of the module documentation; returns the state that migrated.
fn migrate_and_compare(
    before: &[Action],
    during: &[Action],
    after: &[Action],
) -> Result<Vec<u8>, TestCaseError> {
    let mut source = Side::new("source");
    for action in bring_up().iter().chain(before) {
        source.act(action);
        source.observe();
    }
    prop_assert_eq!(lm::suspend(&source.pf, VF, false), Status::SUCCESS);
    for action in during {
        source.act(action);
        source.observe();
    }
    let (state, csup) = lm::get_state(&source.pf, VF, 4096);
    prop_assert!(csup, "the source reports itself suspended");
    same_state(
        &lm::get_state(&source.pf, VF, 4096).0,
        &state,
        "a suspended controller's state changed",
    )?;
    let mut targets = vec![
        Side::copy_of("destination-1", &source),
        Side::copy_of("destination-2", &source),
    ];
    for (i, target) in targets.iter().enumerate() {
        prop_assert_eq!(lm::suspend(&target.pf, VF, false), Status::SUCCESS);
        let status = lm::set_state(&target.pf, VF, &state, 1024);
        prop_assert_eq!(
            status,
            Status::SUCCESS,
            "destination {} refused the state",
            i + 1
        );
        same_state(
            &lm::get_state(&target.pf, VF, 4096).0,
            &state,
            &format!("save → restore → save on destination {} differs", i + 1),
        )?;
        prop_assert_eq!(lm::resume(&target.pf, VF), Status::SUCCESS);
    }
    prop_assert_eq!(lm::resume(&source.pf, VF), Status::SUCCESS);
    targets.push(source);
    let step = |what: &str, targets: &mut Vec<Side>| -> Result<(), TestCaseError> {
        let seen: Vec<Observation> = targets.iter_mut().map(Side::observe).collect();
        let names = ["destination 2", "the source resumed in place"];
        for (other, name) in seen[1..].iter().zip(names) {
            prop_assert!(
                same(&seen[0], other),
                "after {}, destination 1 and {} differ:\n{:?}\n{:?}",
                what,
                name,
                seen[0],
                other
            );
        }
        Ok(())
    };
    step("the resume", &mut targets)?;
    for (i, action) in after.iter().chain(&read_back()).enumerate() {
        for target in targets.iter_mut() {
            target.act(action);
        }
        step(&format!("follow-up action {i} ({action:?})"), &mut targets)?;
    }
    Ok(state)
}

/// A state the generator must reach, judged from the migrated state.
type Feature = (
    &'static str,
    fn(&NvmeControllerStateV0, &VendorState) -> bool,
);

/// The states issue 10 names, each of which the run must have migrated a few times.
const FEATURES: &[Feature] = &[
    ("an invalid doorbell already reported", |_, v| {
        !v.reported_doorbells.is_empty()
    }),
    ("an I/O doorbell beyond its queue", |n, v| {
        let db = |qid: u16| v.doorbells[usize::from(qid)];
        n.sqs().iter().any(|q| db(q.qid).0 > u32::from(q.qsize))
            || n.cqs().iter().any(|q| db(q.qid).1 > u32::from(q.qsize))
    }),
    ("outstanding event requests", |_, v| {
        !v.events.outstanding.is_empty()
    }),
    ("queued events", |_, v| !v.events.queued.is_empty()),
    ("masked event types", |_, v| v.events.masked != 0),
    ("error log entries", |_, v| !v.error_log.1.is_empty()),
    ("CSTS.CFS", |_, v| v.registers.csts & 2 != 0),
    ("a completed shutdown", |_, v| {
        v.registers.csts >> 2 & 3 == 2
    }),
    ("a disabled controller", |_, v| v.registers.cc & 1 == 0),
    ("admin commands not fetched", |_, v| {
        v.admin_sq
            .as_ref()
            .is_some_and(|sq| v.doorbells[0].0 < sq.size && v.doorbells[0].0 != sq.head)
    }),
    ("I/O commands not fetched", |n, _| {
        n.sqs().iter().any(|q| q.tp != q.hp)
    }),
    ("an I/O completion queue two SQs share", |n, _| {
        let cqids: Vec<u16> = n.sqs().iter().map(|q| q.cqid).collect();
        (1..cqids.len()).any(|i| cqids[..i].contains(&cqids[i]))
    }),
    ("a host Timestamp", |_, v| v.features.timestamp.is_some()),
];

/// Fewest cases that must have migrated each of [`FEATURES`].
const MIN_CASES_PER_FEATURE: usize = 3;

#[test]
fn a_migrated_vf_behaves_like_the_source() {
    let config = ProptestConfig {
        cases: 300,
        // A failure prints its shrunk case; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let counts = std::cell::RefCell::new(vec![0usize; FEATURES.len()]);
    let actions = |n| prop::collection::vec(action(), 0..n);
    let result = TestRunner::new(config).run(
        &(actions(40), actions(6), actions(30)),
        |(before, during, after)| {
            let state = migrate_and_compare(&before, &during, &after)?;
            let (nvmecs, vendor) = decoded(&state);
            for (count, (_, reached)) in counts.borrow_mut().iter_mut().zip(FEATURES) {
                *count += usize::from(reached(&nvmecs, &vendor));
            }
            Ok(())
        },
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let counts = counts.into_inner();
    for ((name, _), count) in FEATURES.iter().zip(&counts) {
        eprintln!("{count:4} cases migrated {name}");
    }
    for ((name, _), &count) in FEATURES.iter().zip(&counts) {
        assert!(
            count >= MIN_CASES_PER_FEATURE,
            "only {count} cases migrated {name}: the generator no longer reaches it"
        );
    }
}
