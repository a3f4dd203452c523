//! The codec's tests: round trips, the pinned bytes of a sample, and every refusal.

use nvme_spec::features::AsyncEventType;
use nvme_spec::log::LogPageId;
use zerocopy::FromZeros;

use super::*;

/// A state with every field set to something other than its default.
pub(crate) fn sample() -> VendorState {
    let mut entry = ErrorInformation::new_zeroed();
    entry.error_count = 7;
    entry.cid = 9;
    VendorState {
        identity: SubsystemIdentity {
            nqn: "nqn.2026-11.io.vfio-nvme:a".to_owned(),
            serial: "VFNVME-a".to_owned(),
            model: "model".to_owned(),
            firmware: "0.1.0".to_owned(),
        },
        cntlid: 2,
        limits: Limits {
            io_queue_pairs: 4,
            max_queue_entries: 256,
            mdts: 5,
            msix_vectors: 5,
        },
        registers: RegisterValues {
            cc: 0x0046_0001,
            csts: 1,
            aqa: 0x001F_001F,
            asq: 0x1000_0000,
            acq: 0x1000_1000,
            intms: 2,
        },
        admin_sq: Some(SubmissionQueue {
            qid: 0,
            cqid: 0,
            base: 0x1000_0000,
            size: 32,
            head: 5,
            priority: 0,
        }),
        admin_cq: Some(CompletionQueue {
            qid: 0,
            base: 0x1000_1000,
            size: 32,
            tail: 4,
            phase: false,
            head: 3,
            vector: 0,
            interrupts: true,
        }),
        doorbells: vec![(5, 3), (7, 6), (0, 0), (0, 0), (0, 0)],
        reported_doorbells: vec![ReportedDoorbell {
            doorbell: 3,
            value: 99,
        }],
        features: FeatureValues {
            arbitration: 3,
            power_management: 0,
            over_temperature: 350,
            under_temperature: 270,
            error_recovery: 4,
            write_cache: false,
            queues: (3, 2),
            queues_set: true,
            interrupt_coalescing: 0x0102,
            coalescing_disabled: vec![false, true, false, false, true],
            write_atomicity_disable_normal: true,
            async_event_config: 0x100,
            timestamp: Some(TimestampValue {
                ms: 123_456,
                stopped: true,
            }),
            keep_alive: 5000,
        },
        events: EventState {
            outstanding: vec![10, 11],
            queued: vec![AsyncEvent {
                event_type: AsyncEventType::NOTICE,
                info: 0,
                log_page: LogPageId::CHANGED_NAMESPACE_LIST,
                dw1: 77,
            }],
            masked: 0b100,
        },
        error_log: (7, vec![entry]),
        counters: Counters {
            bytes_read: 1,
            bytes_written: 2,
            read_commands: 3,
            write_commands: 4,
            media_errors: 5,
            error_count: 6,
            power_cycles: 8,
            unsafe_shutdowns: 9,
            busy_ns: 10,
        },
        power_on_ms: 11,
        namespaces: vec![NamespaceState {
            nsid: 1,
            lbads: 12,
            blocks: 256,
            identity: NamespaceIdentity::derive("VFNVME-a", 1),
        }],
        shadow: Some(ShadowBuffers {
            doorbells: 0x2000_0000,
            event_indices: 0x2000_1000,
        }),
    }
}

#[test]
fn round_trip_and_layout() {
    let state = sample();
    let bytes = state.encode();
    assert_eq!(&bytes[..8], b"VFNVMEVS");
    assert_eq!(&bytes[8..10], &[3, 0]);
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), (HEADER_LEN + len).next_multiple_of(4));
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&bytes[HEADER_LEN..HEADER_LEN + len]));
    // The body starts with the NQN as a u16 length and its bytes.
    assert_eq!(
        &bytes[20..22],
        &(state.identity.nqn.len() as u16).to_le_bytes()
    );
    assert_eq!(VendorState::decode(&bytes), Ok(state.clone()));
    assert_eq!(VendorState::decode(&bytes).unwrap().encode(), bytes);
    let empty = VendorState {
        admin_sq: None,
        admin_cq: None,
        doorbells: vec![],
        namespaces: vec![],
        shadow: None,
        ..state
    };
    assert_eq!(VendorState::decode(&empty.encode()), Ok(empty));
}

/// [`sample`] as layout version 1 wrote it, byte for byte (without the fields version 2 added).
const SAMPLE_V1_BYTES: &str = concat!(
    "56464e564d45565301000000a701000043230f6b1a006e716e2e323032362d31312e696f2e766669",
    "6f2d6e766d653a61080056464e564d452d6105006d6f64656c0500302e312e300200040000010000",
    "05050001004600010000001f001f0000000010000000000010001000000000020000000100000010",
    "00000000200000000500000001001000100000000020000000040000000300000000000001050005",
    "00000003000000070000000600000000000000000000000000000000000000000000000000000003",
    "000000000000005e010e0104000000000300020001020100000500000100000101000100000140e2",
    "0100000000008813000002000a000b0001000200044d000000040700000000000000010007000000",
    "00000000000009000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000100000000000000020000000000000003000000",
    "000000000400000000000000050000000000000006000000000000000100010000000c0001000000",
    "0000001b45772ffbc38454e6253faace178afae6253faace178afa1b45772ffbc38454a6253faace",
    "178afa00",
);

/// [`sample`] as layout version 2 wrote it, byte for byte (without the fields version 3 added).
const SAMPLE_V2_BYTES: &str = concat!(
    "56464e564d45565302000000d0010000a054f06c1a006e716e2e323032362d31312e696f2e766669",
    "6f2d6e766d653a61080056464e564d452d6105006d6f64656c0500302e312e300200040000010000",
    "05050001004600010000001f001f0000000010000000000010001000000000020000000100000010",
    "00000000200000000500000001001000100000000020000000040000000300000000000001050005",
    "00000003000000070000000600000000000000000000000000000000000000000000000000000001",
    "0003006300000003000000000000005e010e01040000000003000200010201000005000001000001",
    "01000100000140e2010000000000018813000002000a000b0001000200044d000000040700000000",
    "00000001000700000000000000000009000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000100000000000000020000",
    "00000000000300000000000000040000000000000005000000000000000600000000000000080000",
    "000000000009000000000000000a000000000000000b000000000000000100010000000c00010000",
    "000000001b45772ffbc38454e6253faace178afae6253faace178afa1b45772ffbc38454a6253faa",
    "ce178afa",
);

/// [`sample`] as layout version 3 writes it, byte for byte: a change to the format shows here.
const SAMPLE_BYTES: &str = concat!(
    "56464e564d45565303000000e1010000238b9c3d1a006e716e2e323032362d31312e696f2e766669",
    "6f2d6e766d653a61080056464e564d452d6105006d6f64656c0500302e312e300200040000010000",
    "05050001004600010000001f001f0000000010000000000010001000000000020000000100000010",
    "00000000200000000500000001001000100000000020000000040000000300000000000001050005",
    "00000003000000070000000600000000000000000000000000000000000000000000000000000001",
    "0003006300000003000000000000005e010e01040000000003000200010201000005000001000001",
    "01000100000140e2010000000000018813000002000a000b0001000200044d000000040700000000",
    "00000001000700000000000000000009000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000100000000000000020000",
    "00000000000300000000000000040000000000000005000000000000000600000000000000080000",
    "000000000009000000000000000a000000000000000b000000000000000100010000000c00010000",
    "000000001b45772ffbc38454e6253faace178afae6253faace178afa1b45772ffbc38454a6253faa",
    "ce178afa0100000020000000000010002000000000000000",
);

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sample_encoding_is_pinned() {
    assert_eq!(to_hex(&sample().encode()), SAMPLE_BYTES);
}

/// A version 1 state is still read: the fields versions 2 and 3 added take the values of a
/// controller that never had them, and writing it again gives version 3.
#[test]
fn version_1_is_still_read() {
    let mut expected = sample();
    expected.reported_doorbells.clear();
    expected.features.timestamp = Some(TimestampValue {
        ms: 123_456,
        stopped: false,
    });
    expected.counters.power_cycles = 1;
    expected.counters.unsafe_shutdowns = 0;
    expected.counters.busy_ns = 0;
    expected.power_on_ms = 0;
    expected.shadow = None;
    let v1 = from_hex(SAMPLE_V1_BYTES);
    assert_eq!(&v1[8..10], &[1, 0]);
    let decoded = VendorState::decode(&v1).unwrap();
    assert_eq!(decoded, expected);
    assert_eq!(&decoded.encode()[8..10], &[3, 0]);
}

/// A version 2 state is still read, without shadow doorbells (version 2 did not offer them).
#[test]
fn version_2_is_still_read() {
    let expected = VendorState {
        shadow: None,
        ..sample()
    };
    let v2 = from_hex(SAMPLE_V2_BYTES);
    assert_eq!(&v2[8..10], &[2, 0]);
    assert_eq!(VendorState::decode(&v2), Ok(expected));
}

#[test]
fn every_corruption_is_named() {
    let bytes = sample().encode();
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(
        VendorState::decode(&bad),
        Err(VendorStateError::BadMagic { .. })
    ));
    for version in [0, 4] {
        let mut bad = bytes.clone();
        bad[8] = version;
        assert_eq!(
            VendorState::decode(&bad),
            Err(VendorStateError::UnsupportedVersion {
                found: version.into()
            })
        );
    }
    let mut bad = bytes.clone();
    bad[10] = 1;
    assert_eq!(
        VendorState::decode(&bad),
        Err(VendorStateError::Reserved { field: "reserved" })
    );
    let mut bad = bytes.clone();
    bad[12] = bad[12].wrapping_add(8);
    assert!(matches!(
        VendorState::decode(&bad),
        Err(VendorStateError::Length { .. })
    ));
    assert!(matches!(
        VendorState::decode(&bytes[..bytes.len() - 4]),
        Err(VendorStateError::Length { .. })
    ));
    let mut bad = bytes.clone();
    bad[40] ^= 0x55;
    assert!(matches!(
        VendorState::decode(&bad),
        Err(VendorStateError::Crc { .. })
    ));
    assert!(matches!(
        VendorState::decode(&bytes[..10]),
        Err(VendorStateError::Truncated { field: "reserved" })
    ));
}

/// Re-frames a body with a correct header, so body-level checks are reached.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

#[test]
fn body_errors() {
    let bytes = sample().encode();
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let body = &bytes[HEADER_LEN..HEADER_LEN + len];
    assert!(matches!(
        VendorState::decode(&framed(&body[..len - 1])),
        Err(VendorStateError::Truncated { .. })
    ));
    let mut longer = body.to_vec();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(
        VendorState::decode(&framed(&longer)),
        Err(VendorStateError::TrailingBytes { extra: 4 })
    );
    // A non-UTF-8 NQN.
    let mut bad = body.to_vec();
    bad[2] = 0xFF;
    assert_eq!(
        VendorState::decode(&framed(&bad)),
        Err(VendorStateError::BadString { field: "nqn" })
    );
    // Padding that is not zero.
    let mut padded = framed(&body[..len - 1]);
    let last = padded.len() - 1;
    padded[last] = 1;
    assert!(VendorState::decode(&padded).is_err());
}

#[test]
fn fuzz_decode() {
    bolero::check!()
        .with_type::<Vec<u8>>()
        .with_iterations(3000)
        .for_each(|bytes: &Vec<u8>| {
            if let Ok(state) = VendorState::decode(bytes)
                && bytes[8..10] == VERSION.to_le_bytes()
            {
                assert_eq!(&state.encode(), bytes);
            }
        });
}

#[test]
fn fuzz_decode_framed_bodies() {
    // Random bytes never pass the CRC; frame them so the body parser is exercised too.
    let body = {
        let bytes = sample().encode();
        let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        bytes[HEADER_LEN..HEADER_LEN + len].to_vec()
    };
    bolero::check!()
        .with_type::<(u16, u8, Vec<u8>)>()
        .with_iterations(3000)
        .for_each(|(at, value, tail): &(u16, u8, Vec<u8>)| {
            let mut mutated = body.clone();
            let at = usize::from(*at) % mutated.len();
            mutated[at] = *value;
            mutated.truncate(at + 1 + tail.len() % 8);
            mutated.extend_from_slice(tail);
            let _ = VendorState::decode(&framed(&mutated));
        });
}
