//! Save → restore → save round trips and every validation failure, on real controllers.

use std::sync::Arc;

use nvme_spec::lm::IoCqAttributes;
use nvme_spec::lm::IoCqState;
use nvme_spec::lm::IoSqAttributes;
use nvme_spec::lm::IoSqState;
use nvme_spec::lm::NvmeControllerStateV0;
use shmem::AddressSpace;

use super::vendor::ReportedDoorbell;
use super::vendor::VendorState;
use super::vendor::tests::sample;
use super::*;
use crate::backend::NullBackend;
use crate::controller::Controller;
use crate::controller::ControllerConfig;
use crate::controller::Role;
use crate::controller::SubsystemIdentity;
use crate::namespace::BlockSize;
use crate::namespace::Namespace;
use crate::namespace::NamespaceIdentity;

fn controller(blocks: u64) -> Controller {
    let mut config = ControllerConfig::new(2, Role::Secondary { vfn: 1 });
    config.io_queue_pairs = 4;
    config.max_queue_entries = 256;
    config.mdts = 5;
    config.msix_vectors = 5;
    let ns = Namespace::new(
        1,
        Arc::new(NullBackend::new(blocks * 4096)),
        BlockSize::B4096,
        true,
        NamespaceIdentity::derive("target", 1),
    )
    .unwrap();
    let identity = SubsystemIdentity {
        nqn: "nqn.target".to_owned(),
        serial: "TARGET".to_owned(),
        model: "m".to_owned(),
        firmware: "f".to_owned(),
    };
    let controller = Controller::new(
        config,
        Arc::new(identity),
        vec![Some(Arc::new(ns))],
        Arc::new(AddressSpace::new()),
    )
    .unwrap();
    // Suspended, as the target of a restore is: its clock stands still, so two captures agree
    // to the millisecond.
    controller.inner.set_suspended(true);
    controller
}

fn snapshot(c: &Controller) -> (NvmeControllerStateV0, VendorState) {
    capture(
        &c.inner,
        &mut c.inner.lock_state(),
        &mut c.inner.lock_workers(),
    )
}

fn sq(qid: u16, cqid: u16, hp: u16, tp: u16) -> IoSqState {
    IoSqState {
        prp1: 0x10_0000 * u64::from(qid),
        qsize: 63,
        qid,
        cqid,
        attr: IoSqAttributes::new().with_pc(true).with_qprio(2),
        hp,
        tp,
        reserved: [0; 4],
    }
}

fn cq(qid: u16, hp: u16, tp: u16, iv: u16) -> IoCqState {
    IoCqState {
        prp1: 0x10_0000 * u64::from(qid) + 0x8000,
        qsize: 31,
        qid,
        hp,
        tp,
        attr: IoCqAttributes::new()
            .with_pc(true)
            .with_ien(true)
            .with_s0pt(false)
            .with_iv(iv),
        reserved: [0; 4],
    }
}

/// A source state that fits [`controller`]: two queue pairs and the vendor sample.
fn source() -> (Vec<IoSqState>, Vec<IoCqState>, VendorState) {
    let mut vendor = sample();
    vendor.namespaces[0].blocks = 256;
    vendor.doorbells = vec![(5, 3), (7, 6), (1, 2), (0, 0), (0, 0)];
    // These controllers are not suspended, so their clock runs and a Timestamp with it: a round
    // trip compares equal only without one (suspended controllers are covered by the TP4159
    // tests, the encoding by the vendor codec tests).
    vendor.features.timestamp = None;
    (
        vec![sq(1, 1, 4, 7), sq(2, 2, 0, 1)],
        vec![cq(1, 6, 9, 1), cq(2, 2, 3, 4)],
        vendor,
    )
}

fn nvmecs(sqs: &[IoSqState], cqs: &[IoCqState]) -> NvmeControllerStateV0 {
    NvmeControllerStateV0::new(sqs.to_vec(), cqs.to_vec()).unwrap()
}

#[test]
fn save_restore_save_is_identical() {
    let (sqs, cqs, vendor) = source();
    let target = controller(256);
    let n = nvmecs(&sqs, &cqs);
    validate(&target.inner, Some(&n), Some(&vendor)).unwrap();
    apply(
        &target.inner,
        &mut target.inner.lock_state(),
        &mut target.inner.lock_workers(),
        Some(&n),
        Some(&vendor),
    );
    let (n2, v2) = snapshot(&target);
    assert_eq!(n2, n);
    assert_eq!(v2.encode(), vendor.encode());
    // Identity and doorbells were adopted.
    assert_eq!(target.inner.identity().serial, "VFNVME-a");
    assert_eq!(target.doorbells().sq_tail(1), 7);
    assert_eq!(target.doorbells().cq_head(2), 2);
    let other = controller(256);
    apply(
        &other.inner,
        &mut other.inner.lock_state(),
        &mut other.inner.lock_workers(),
        Some(&n2),
        Some(&v2),
    );
    assert_eq!(snapshot(&other).1.encode(), vendor.encode());
}

#[test]
fn every_validation_failure_leaves_the_target_unchanged() {
    type Mutation = fn(&mut Vec<IoSqState>, &mut Vec<IoCqState>, &mut VendorState);
    let cases: Vec<(&str, Mutation)> = vec![
        ("CQ qid 0", |_, c, _| c[0].qid = 0),
        ("CQ qid repeated", |_, c, _| c[1].qid = 1),
        ("CQ qid beyond the queues", |_, c, _| c[1].qid = 5),
        ("CQ larger than MQES", |_, c, _| c[0].qsize = 256),
        ("CQ vector", |_, c, _| c[0].attr = c[0].attr.with_iv(5)),
        ("CQ base", |_, c, _| c[0].prp1 += 8),
        ("CQ head", |_, c, _| c[0].hp = 32),
        ("CQ not contiguous", |_, c, _| {
            c[0].attr = c[0].attr.with_pc(false)
        }),
        ("SQ without CQ", |s, _, _| s[1].cqid = 3),
        ("SQ qid repeated", |s, _, _| s[1].qid = 1),
        ("SQ tail", |s, _, _| s[0].tp = 64),
        ("SQ attributes", |s, _, _| {
            s[0].attr = s[0].attr.with_reserved(1)
        }),
        ("doorbells disagree", |_, _, v| v.doorbells[1].0 = 8),
        ("queue pairs", |_, _, v| v.limits.io_queue_pairs = 5),
        ("MQES", |_, _, v| v.limits.max_queue_entries = 512),
        ("vectors", |_, _, v| v.limits.msix_vectors = 6),
        ("MDTS", |_, _, v| v.limits.mdts = 6),
        ("serial", |_, _, v| v.identity.serial = "x".repeat(21)),
        ("model", |_, _, v| v.identity.model = "\u{7}".to_owned()),
        ("admin SQ alone", |_, _, v| v.admin_cq = None),
        ("admin CQ vector", |_, _, v| {
            if let Some(cq) = &mut v.admin_cq {
                cq.vector = 1;
            }
        }),
        ("admin SQ head", |_, _, v| {
            if let Some(sq) = &mut v.admin_sq {
                sq.head = sq.size;
            }
        }),
        ("doorbell count", |_, _, v| v.doorbells.resize(6, (0, 0))),
        ("reported doorbell beyond the queues", |_, _, v| {
            v.reported_doorbells[0].doorbell = 10
        }),
        ("reported doorbells out of order", |_, _, v| {
            let again = v.reported_doorbells[0];
            v.reported_doorbells.push(again);
        }),
        ("invalid SQ tail, NVMECS tail not the head", |_, _, v| {
            v.doorbells[1].0 = 1000
        }),
        ("number of queues", |_, _, v| v.features.queues = (4, 0)),
        ("coalescing vectors", |_, _, v| {
            v.features.coalescing_disabled.push(false)
        }),
        ("outstanding AERs", |_, _, v| {
            v.events.outstanding = vec![1; 5]
        }),
        ("queued events", |_, _, v| {
            v.events.queued = vec![crate::controller::AsyncEvent::invalid_doorbell(); 65]
        }),
        ("error log", |_, _, v| {
            let entry = v.error_log.1[0];
            v.error_log.1 = vec![entry; 65];
        }),
        ("namespace size", |_, _, v| v.namespaces[0].blocks = 255),
        ("namespace block size", |_, _, v| v.namespaces[0].lbads = 9),
        ("namespace missing", |_, _, v| v.namespaces.clear()),
    ];
    let target = controller(256);
    let before = snapshot(&target);
    for (name, mutate) in cases {
        let (mut sqs, mut cqs, mut vendor) = source();
        mutate(&mut sqs, &mut cqs, &mut vendor);
        let n = nvmecs(&sqs, &cqs);
        // What the wire carries must survive the codec, then fail validation.
        let vendor = VendorState::decode(&vendor.encode()).unwrap();
        let result = validate(&target.inner, Some(&n), Some(&vendor));
        assert!(result.is_err(), "{name} was accepted");
        assert_eq!(snapshot(&target), before, "{name} changed the target");
    }
    let (sqs, cqs, vendor) = source();
    validate(&target.inner, Some(&nvmecs(&sqs, &cqs)), Some(&vendor)).unwrap();
    // The error names the field.
    let (mut sqs, cqs, vendor) = source();
    sqs[1].cqid = 3;
    let err = validate(&target.inner, Some(&nvmecs(&sqs, &cqs)), Some(&vendor)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue 2: completion queue 0x3 is invalid for this controller"
    );
    let small = controller(128);
    assert!(matches!(
        validate(&small.inner, None, Some(&vendor)),
        Err(SnapshotError::Namespaces { .. })
    ));
}

/// Doorbells the guest set beyond their queues: NVMECS holds what the controller acts on (an SQ
/// tail equal to the head, the last valid CQ head), the vendor state the values as written and
/// which of them were reported; the target takes both and gives the same state back.
#[test]
fn invalid_doorbells_round_trip() {
    let (mut sqs, cqs, mut vendor) = source();
    sqs[0].tp = sqs[0].hp;
    vendor.doorbells[1] = (1000, 0xFFFF_FFFF);
    vendor.reported_doorbells = vec![
        ReportedDoorbell {
            doorbell: 2,
            value: 1000,
        },
        ReportedDoorbell {
            doorbell: 3,
            value: 77,
        },
    ];
    let target = controller(256);
    let n = nvmecs(&sqs, &cqs);
    validate(&target.inner, Some(&n), Some(&vendor)).unwrap();
    apply(
        &target.inner,
        &mut target.inner.lock_state(),
        &mut target.inner.lock_workers(),
        Some(&n),
        Some(&vendor),
    );
    assert_eq!(target.doorbells().sq_tail(1), 1000);
    assert_eq!(target.doorbells().cq_head(1), 0xFFFF_FFFF);
    let (n2, v2) = snapshot(&target);
    assert_eq!(n2, n);
    assert_eq!(v2.encode(), vendor.encode());
}

#[test]
fn nvmecs_alone_replaces_only_the_io_queues() {
    let (sqs, cqs, _) = source();
    let target = controller(256);
    let (_, vendor_before) = snapshot(&target);
    let n = nvmecs(&sqs[..1], &cqs[..1]);
    validate(&target.inner, Some(&n), None).unwrap();
    apply(
        &target.inner,
        &mut target.inner.lock_state(),
        &mut target.inner.lock_workers(),
        Some(&n),
        None,
    );
    let (n2, vendor_after) = snapshot(&target);
    assert_eq!(n2, n);
    assert_eq!(vendor_after.identity, vendor_before.identity);
    assert_eq!(vendor_after.registers, vendor_before.registers);
    assert_eq!(target.doorbells().sq_tail(1), 7);
    assert_eq!(target.doorbells().cq_head(1), 6);
}
