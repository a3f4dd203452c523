//! Byte-exact submission queue entries for every TP4159 command, written by hand from the
//! tables in `reference/tp4159.md`, and encode/decode properties over all commands.

use core::fmt::Debug;

use proptest::prelude::*;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::*;
use crate::command::Command;

/// Encodes `op`, compares with the hand-written entry, decodes the entry back.
fn check_vector<T: LmCommand + PartialEq + Debug>(op: T, sqe: &[u8; 64]) {
    let cmd = op.encode().unwrap();
    assert_eq!(cmd.as_bytes(), sqe, "encoding of {op:?}");
    let parsed = Command::read_from_bytes(sqe).unwrap();
    let decoded = T::decode(&parsed).unwrap();
    assert_eq!(decoded.op, op);
    assert!(decoded.reserved.is_empty(), "{:?}", decoded.reserved);
}

#[rustfmt::skip]
const SUSPEND: [u8; 64] = [
    0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // PRP2, CDW10 = SEL 0, CDW11 = CNTLID 2 | STYPE 1 << 16 | DUDMQ << 31
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn suspend_vector() {
    let op = Suspend {
        cntlid: 2,
        stype: SuspendType::SUSPEND,
        dudmq: true,
    };
    check_vector(op, &SUSPEND);
    check_vector(MigrationSend::Suspend(op), &SUSPEND);
}

#[test]
fn resume_vector() {
    #[rustfmt::skip]
    let sqe = [
        0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 1, CDW11 = CNTLID 2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    check_vector(Resume { cntlid: 2 }, &sqe);
    check_vector(MigrationSend::Resume(Resume { cntlid: 2 }), &sqe);
}

#[test]
fn set_controller_state_single_vector() {
    // libvfn step 13: SEQIND 11b, CSVI 1, one SQ + one CQ: NUMD = (48 + 8 + 48) / 4 = 26.
    #[rustfmt::skip]
    let sqe = [
        0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 2 | SEQIND 3 << 16, CDW11 = CNTLID 2 | CSVI 1 << 16
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x03, 0x00, 0x02, 0x00, 0x01, 0x00,
        // CDW12/13 offset 0, CDW14 UIDX 0, CDW15 NUMD 26 (plain count)
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1A, 0x00, 0x00, 0x00,
    ];
    let op = SetControllerState {
        seqind: SequenceIndicator::ONLY,
        cntlid: 2,
        csvi: 1,
        csuuidi: 0,
        offset: 0,
        uidx: 0,
        numd: 26,
    };
    check_vector(op, &sqe);
    check_vector(MigrationSend::SetControllerState(op), &sqe);
}

#[test]
fn set_controller_state_chunk_vector() {
    #[rustfmt::skip]
    let sqe = [
        0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 2 | SEQIND 0 (middle), CDW11 = CNTLID 0x0102 | CSVI 1 << 16 | CSUUIDI 1 << 24
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x01,
        // offset 0x1_0000_0040, UIDX 5, NUMD 0x400
        0x40, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
    ];
    check_vector(
        SetControllerState {
            seqind: SequenceIndicator::MIDDLE,
            cntlid: 0x0102,
            csvi: 1,
            csuuidi: 1,
            offset: 0x1_0000_0040,
            uidx: 5,
            numd: 0x400,
        },
        &sqe,
    );
}

#[test]
fn get_controller_state_vector() {
    // libvfn: CDW10 = 1 << 16 (CSVI 1), CDW15 = 4096 / 4 - 1.
    #[rustfmt::skip]
    let sqe = [
        0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 0 | CSVI 1 << 16, CDW11 = CNTLID 2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        // CDW15 NUMD 1023 (0's based)
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x03, 0x00, 0x00,
    ];
    let op = GetControllerState {
        csvi: 1,
        cntlid: 2,
        csuuidi: 0,
        csuidxp: 0,
        offset: 0,
        uidx: 0,
        numd: 1023,
    };
    assert_eq!(GetControllerState::numd_for_len(4096), Ok(op.numd));
    check_vector(op, &sqe);
}

#[test]
fn get_controller_state_chunk_vector() {
    #[rustfmt::skip]
    let sqe = [
        0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = CSVI 1 << 16, CDW11 = CNTLID 2 | CSUUIDI 1 << 16 | CSUIDXP 0xAB << 24
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x01, 0xAB,
        // offset 48 (after the header), UIDX 0x7F, NUMD 15 (64 bytes)
        0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7F, 0x00, 0x00, 0x00, 0x0F, 0x00, 0x00, 0x00,
    ];
    check_vector(
        GetControllerState {
            csvi: 1,
            cntlid: 2,
            csuuidi: 1,
            csuidxp: 0xAB,
            offset: 48,
            uidx: 0x7F,
            numd: 15,
        },
        &sqe,
    );
}

#[test]
fn track_send_vectors() {
    #[rustfmt::skip]
    let start = [
        0x3D, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 0 | LACT 1 << 16, CDW11 = CDQID 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    #[rustfmt::skip]
    let stop = [
        0x3D, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 0 | LACT 0, CDW11 = CDQID 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    check_vector(
        LogUserDataChanges {
            lact: LoggingAction::START,
            cdqid: 1,
        },
        &start,
    );
    check_vector(
        LogUserDataChanges {
            lact: LoggingAction::STOP,
            cdqid: 1,
        },
        &stop,
    );
}

#[test]
fn create_cdq_vector() {
    #[rustfmt::skip]
    let sqe = [
        0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // MPTR, PRP1 = 0x1234_5000
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x34, 0x12, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 0 | QT 0, CDW11 = PC | CQS 2 << 16
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00,
        // CDW12 CDQSIZE 1024 dwords
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let op = CreateCdq::user_data_migration_queue(2, 0x1234_5000, 1024);
    check_vector(op, &sqe);
    check_vector(ControllerDataQueue::Create(op), &sqe);
}

#[test]
fn delete_cdq_vector() {
    #[rustfmt::skip]
    let sqe = [
        0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = SEL 1, CDW11 = CDQID 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    check_vector(DeleteCdq { cdqid: 1 }, &sqe);
    check_vector(ControllerDataQueue::Delete(DeleteCdq { cdqid: 1 }), &sqe);
}

#[test]
fn cdq_feature_vectors() {
    #[rustfmt::skip]
    let set = [
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = FID 21h, CDW11 = CDQID 1 | ETPT << 31
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x80,
        // CDW12 HP 5, CDW13 TPT 100
        0x05, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    #[rustfmt::skip]
    let get = [
        0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CDW10 = FID 21h, CDW11 = CDQID 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    check_vector(
        SetCdqFeature {
            cdqid: 1,
            etpt: true,
            hp: 5,
            tpt: 100,
        },
        &set,
    );
    check_vector(GetCdqFeature { cdqid: 1 }, &get);
}

/// Command dword `n` (10..=15) of an entry.
fn dword(cmd: &Command, n: usize) -> u32 {
    [
        cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13, cmd.cdw14, cmd.cdw15,
    ][n - 10]
}

/// Reserved bits reported for dword `n`.
fn reserved(r: &ReservedBits, n: usize) -> u32 {
    match n {
        10 => r.cdw10,
        11 => r.cdw11,
        14 => r.cdw14,
        _ => 0,
    }
}

/// Decodes arbitrary dwords under `T`'s opcode and selector byte, re-encodes, and checks that
/// every dword `T` defines comes back with exactly its reserved bits cleared.
fn check_raw<T: LmCommand + PartialEq + Debug>(
    raw: [u32; 6],
    prp1: u64,
    sel: u8,
    dwords: &[usize],
) -> Result<(), TestCaseError> {
    let mut cmd = super::common::new_command(T::OPCODE);
    [
        cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13, cmd.cdw14, cmd.cdw15,
    ] = raw;
    cmd.cdw10 = (cmd.cdw10 & !0xFF) | u32::from(sel);
    cmd.prp1 = prp1;
    let decoded = T::decode(&cmd).unwrap();
    let again = decoded.op.encode().unwrap();
    for &n in dwords {
        prop_assert_eq!(
            dword(&again, n),
            dword(&cmd, n) & !reserved(&decoded.reserved, n),
            "CDW{}",
            n
        );
    }
    let redecoded = T::decode(&again).unwrap();
    prop_assert_eq!(redecoded.op, decoded.op);
    prop_assert!(redecoded.reserved.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn raw_dwords_round_trip(raw in any::<[u32; 6]>(), prp1 in any::<u64>()) {
        check_raw::<Suspend>(raw, prp1, 0, &[10, 11])?;
        check_raw::<Resume>(raw, prp1, 1, &[10, 11])?;
        check_raw::<SetControllerState>(raw, prp1, 2, &[10, 11, 12, 13, 14, 15])?;
        check_raw::<MigrationSend>(raw, prp1, 2, &[10, 11, 12, 13, 14, 15])?;
        check_raw::<GetControllerState>(raw, prp1, 0, &[10, 11, 12, 13, 14, 15])?;
        check_raw::<LogUserDataChanges>(raw, prp1, 0, &[10, 11])?;
        check_raw::<CreateCdq>(raw, prp1, 0, &[10, 11, 12])?;
        check_raw::<ControllerDataQueue>(raw, prp1, 1, &[10, 11])?;
        check_raw::<SetCdqFeature>(raw, prp1, 0x21, &[11, 12, 13])?;
        check_raw::<GetCdqFeature>(raw, prp1, 0x21, &[11])?;
    }

    #[test]
    fn set_controller_state_round_trip(
        seqind in 0u8..4,
        cntlid in any::<u16>(),
        csvi in any::<u8>(),
        csuuidi in any::<u8>(),
        offset in any::<u64>(),
        uidx in 0u8..0x80,
        numd in any::<u32>(),
    ) {
        let op = SetControllerState {
            seqind: SequenceIndicator(seqind),
            cntlid,
            csvi,
            csuuidi,
            offset,
            uidx,
            numd,
        };
        let d = SetControllerState::decode(&op.encode().unwrap()).unwrap();
        prop_assert_eq!(d.op, op);
        prop_assert!(d.reserved.is_empty());
    }

    #[test]
    fn get_controller_state_round_trip(
        csvi in any::<u8>(),
        cntlid in any::<u16>(),
        csuuidi in any::<u8>(),
        csuidxp in any::<u8>(),
        offset in any::<u64>(),
        uidx in 0u8..0x80,
        numd in any::<u32>(),
    ) {
        let op = GetControllerState { csvi, cntlid, csuuidi, csuidxp, offset, uidx, numd };
        let d = GetControllerState::decode(&op.encode().unwrap()).unwrap();
        prop_assert_eq!(d.op, op);
        prop_assert!(d.reserved.is_empty());
    }

    #[test]
    fn small_commands_round_trip(
        id in any::<u16>(),
        byte in any::<u8>(),
        flag in any::<bool>(),
        lact in 0u8..16,
        words in any::<[u32; 2]>(),
        prp1 in any::<u64>(),
    ) {
        fn same<T: LmCommand + PartialEq + Debug>(op: T) -> Result<(), TestCaseError> {
            let d = T::decode(&op.encode().unwrap()).unwrap();
            prop_assert_eq!(d.op, op);
            prop_assert!(d.reserved.is_empty());
            Ok(())
        }
        same(MigrationSend::Suspend(Suspend { cntlid: id, stype: SuspendType(byte), dudmq: flag }))?;
        same(MigrationSend::Resume(Resume { cntlid: id }))?;
        same(LogUserDataChanges { lact: LoggingAction(lact), cdqid: id })?;
        same(ControllerDataQueue::Create(CreateCdq {
            qt: QueueType(byte),
            pc: flag,
            cqs: id,
            cdqsize: words[0],
            prp1,
        }))?;
        same(ControllerDataQueue::Delete(DeleteCdq { cdqid: id }))?;
        same(SetCdqFeature { cdqid: id, etpt: flag, hp: words[0], tpt: words[1] })?;
        same(GetCdqFeature { cdqid: id })?;
    }
}

#[test]
fn fuzz_command_decoders() {
    fn reencodes<T: LmCommand>(cmd: &Command) {
        if let Ok(d) = T::decode(cmd) {
            assert!(d.op.encode().is_ok(), "a decoded command always re-encodes");
        }
    }
    bolero::check!()
        .with_type::<Vec<u8>>()
        .with_iterations(2000)
        .for_each(|bytes: &Vec<u8>| {
            let mut sqe = [0u8; 64];
            let n = bytes.len().min(64);
            sqe[..n].copy_from_slice(&bytes[..n]);
            let Ok(mut cmd) = Command::read_from_bytes(&sqe[..]) else {
                return;
            };
            // Steer the opcode to the LM commands so the interesting paths run.
            let opcodes = [0x09, 0x0A, 0x3D, 0x41, 0x42, 0x45];
            let opcode = opcodes[usize::from(cmd.cdw0.opcode()) % opcodes.len()];
            cmd.cdw0 = cmd.cdw0.with_opcode(opcode);
            reencodes::<MigrationSend>(&cmd);
            reencodes::<GetControllerState>(&cmd);
            reencodes::<LogUserDataChanges>(&cmd);
            reencodes::<ControllerDataQueue>(&cmd);
            reencodes::<SetCdqFeature>(&cmd);
            reencodes::<GetCdqFeature>(&cmd);
        });
}

#[test]
fn whole_state_from_parts() {
    // Controller state of one queue pair, assembled from NVMECS v0 and split again.
    let v0 = NvmeControllerStateV0::new(
        vec![IoSqState {
            qid: 1,
            cqid: 1,
            qsize: 63,
            ..Default::default()
        }],
        vec![IoCqState {
            qid: 1,
            qsize: 63,
            ..Default::default()
        }],
    )
    .unwrap();
    let cs = ControllerState::new(
        0,
        ControllerStateAttributes::new().with_suspended(true),
        v0.encode(),
        vec![],
    )
    .unwrap();
    let bytes = cs.encode();
    assert_eq!(bytes.len(), 104);
    assert_eq!(cs.header().nvmecss, 14);
    assert_eq!(SetControllerState::numd_for_len(bytes.len() as u64), Ok(26));
    let back = ControllerState::decode(&bytes).unwrap();
    assert_eq!(NvmeControllerStateV0::decode(back.nvmecs()), Ok(v0));
}
