//! Tests of the stream as a whole: a byte-exact vector, round trips under every segmentation,
//! each error, corruption and truncation, compatibility, the report, and a fuzz test.

use proptest::prelude::*;

use super::*;
use crate::stream::pci_face::PciFaceView;
use crate::stream::pci_face::tests::sample as pci_face_sample;
use crate::stream::record::RecordView;
use crate::stream::wire::write_record;

fn ns(nsid: u32, lba_shift: u8, blocks: u64, shared: bool) -> NamespaceGeometry {
    NamespaceGeometry {
        nsid,
        lba_shift,
        blocks,
        shared,
    }
}

/// Two local namespaces (512-byte and 4 KiB blocks) and a shared one.
fn header() -> StreamHeader {
    StreamHeader {
        subsystem_nqn: "nqn.2014-08.org.example:vfio-nvme".into(),
        serial: "VFNVME0001".into(),
        geometry: DeviceGeometry {
            io_queue_pairs: 4,
            mqes: 255,
            msix_vectors: 5,
            mdts: 6,
            namespaces: vec![
                ns(1, 9, 64, false),
                ns(2, 12, 16, false),
                ns(3, 12, 1 << 20, true),
            ],
        },
    }
}

/// A small complete stream with every record type, and the records it holds.
fn small_stream() -> (Vec<u8>, Vec<Record>) {
    let mut out = Vec::new();
    let mut enc = StreamEncoder::new(header(), &mut out).unwrap();
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
    enc.user_data(1, 512, &data, &mut out).unwrap();
    enc.deallocate(2, 4096, 8192, &mut out).unwrap();
    enc.controller_state(b"controller state", &mut out).unwrap();
    enc.pci_face(&pci_face_sample(), &mut out).unwrap();
    enc.end(&mut out).unwrap();
    let records = vec![
        Record::UserData {
            nsid: 1,
            offset: 512,
            data,
        },
        Record::Deallocate {
            nsid: 2,
            offset: 4096,
            length: 8192,
        },
        Record::ControllerState(b"controller state".to_vec()),
        Record::PciFace(pci_face_sample()),
        Record::End {
            records: 4,
            user_data_bytes: 512,
        },
    ];
    (out, records)
}

fn header_len() -> usize {
    header().encode().unwrap().len()
}

/// Decodes `bytes` pushed in pieces of the given sizes (cycled); returns the items and the outcome.
fn decode_chunked(bytes: &[u8], sizes: &[usize]) -> (Vec<Item>, Result<Summary, StreamError>) {
    let mut decoder = StreamDecoder::new();
    let mut items = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    let outcome = loop {
        if rest.is_empty() {
            break decoder.finish();
        }
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let pushed = decoder.push(chunk);
        while let Some(item) = decoder.next_item() {
            items.push(item);
        }
        if let Err(e) = pushed {
            assert_eq!(decoder.finish(), Err(e.clone()), "errors are sticky");
            break Err(e);
        }
    };
    (items, outcome)
}

fn decode(bytes: &[u8]) -> (Vec<Item>, Result<Summary, StreamError>) {
    decode_chunked(bytes, &[bytes.len().max(1)])
}

fn error_of(bytes: &[u8]) -> StreamError {
    decode(bytes).1.expect_err("the stream must be rejected")
}

/// Recomputes the header CRC after a test edited header bytes.
fn reseal_header(bytes: &mut [u8], header_len: usize) {
    let crc = crc32fast::hash(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
}

/// The valid header followed by hand-framed records (bypassing the encoder's checks).
fn with_records(records: &[RecordView<'_>]) -> Vec<u8> {
    let mut out = header().encode().unwrap();
    for record in records {
        record.write(&mut out);
    }
    out
}

/// Hex digits to bytes; whitespace separates groups and `//` starts a comment to end of line.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .lines()
        .flat_map(|line| line.split("//").next().unwrap_or("").bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn tiny_stream_matches_hand_written_bytes() {
    let header = StreamHeader {
        subsystem_nqn: "n".into(),
        serial: "s".into(),
        geometry: DeviceGeometry {
            io_queue_pairs: 1,
            mqes: 63,
            msix_vectors: 2,
            mdts: 5,
            namespaces: vec![ns(1, 9, 8, false)],
        },
    };
    let mut out = Vec::new();
    let mut enc = StreamEncoder::new(header.clone(), &mut out).unwrap();
    enc.user_data(1, 1024, &[0xAB; 512], &mut out).unwrap();
    enc.deallocate(1, 0, 512, &mut out).unwrap();
    enc.controller_state(b"abc", &mut out).unwrap();
    let summary = enc.end(&mut out).unwrap();

    let mut expected = hex("
        56464e564d494700 0100 0000 36000000        // magic, version, reserved, header length 54
        0100 3f00 0200 05 00 0100 0100 01000000    // qpairs 1, MQES 63, 2 vectors, MDTS 5, lengths, 1 ns
        01000000 09 00 0000 0800000000000000       // nsid 1, shift 9, local, 8 blocks
        6e 73                                      // 'n' 's'
        bf6c5555                                   // header CRC
        01 000000 0c020000 01000000 0004000000000000   // UserData, 524-byte payload, nsid 1, offset 1024
    ");
    expected.extend_from_slice(&[0xAB; 512]);
    expected.extend(hex("
        6d39e237                                   // UserData CRC
        02 000000 14000000 01000000 0000000000000000 0002000000000000 de468e67   // Deallocate 1, 0, 512
        03 000000 03000000 616263 a055e809         // ControllerState 'abc'
        04 000000 10000000 0300000000000000 0002000000000000 815a5694   // End: 3 records, 512 bytes
    "));
    assert_eq!(out, expected);
    assert_eq!(summary.records, 3);
    assert_eq!(summary.stream_bytes, expected.len() as u64);

    let (items, outcome) = decode(&out);
    assert_eq!(outcome, Ok(summary));
    assert_eq!(items[0], Item::Header(header));
    assert_eq!(items.len(), 5);
}

#[test]
fn small_stream_round_trips_one_byte_at_a_time() {
    let (bytes, records) = small_stream();
    for sizes in [
        &[1usize][..],
        &[3, 1, 8],
        &[bytes.len()],
        &[header_len(), 7],
    ] {
        let (items, outcome) = decode_chunked(&bytes, sizes);
        let summary = outcome.unwrap();
        assert_eq!(items[0], Item::Header(header()));
        let decoded: Vec<Record> = items[1..]
            .iter()
            .map(|item| match item {
                Item::Record(r) => r.clone(),
                Item::Header(_) => panic!("a second header"),
            })
            .collect();
        assert_eq!(decoded, records);
        assert_eq!(summary.records, 4);
        assert_eq!(summary.user_data_bytes, 512);
        assert_eq!(summary.deallocated_bytes, 8192);
        assert_eq!(summary.controller_state_bytes, Some(16));
        assert_eq!(summary.pci_face_bytes, Some(360));
        assert_eq!(summary.stream_bytes, bytes.len() as u64);
    }
}

#[test]
fn record_type_reports_each_variant() {
    let (_, records) = small_stream();
    let types: Vec<RecordType> = records.iter().map(Record::record_type).collect();
    assert_eq!(
        types,
        [
            RecordType::UserData,
            RecordType::Deallocate,
            RecordType::ControllerState,
            RecordType::PciFace,
            RecordType::End
        ]
    );
    assert_eq!(RecordType::from_raw(0), None);
    assert_eq!(RecordType::from_raw(5), Some(RecordType::PciFace));
    assert_eq!(RecordType::from_raw(6), None);
}

/// Any operation a source might emit, drawn at random and mapped into the header's geometry.
#[derive(Clone, Debug)]
enum Op {
    Data {
        ns: usize,
        block: u64,
        blocks: u64,
        fill: u8,
    },
    Dealloc {
        ns: usize,
        block: u64,
        blocks: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..64u64, 1..9u64, any::<u8>()).prop_map(|(ns, block, blocks, fill)| {
            Op::Data {
                ns,
                block,
                blocks,
                fill,
            }
        }),
        (0..2usize, 0..64u64, 1..64u64).prop_map(|(ns, block, blocks)| Op::Dealloc {
            ns,
            block,
            blocks
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_under_any_segmentation(
        ops in proptest::collection::vec(op(), 0..12),
        state_len in 1..3000usize,
        state_at in 0..12usize,
        sizes in proptest::collection::vec(1..700usize, 1..8),
    ) {
        let header = header();
        let mut out = Vec::new();
        let mut enc = StreamEncoder::new(header.clone(), &mut out).unwrap();
        let mut expected = Vec::new();
        let state: Vec<u8> = (0..state_len).map(|i| i as u8).collect();
        for (i, op) in ops.iter().enumerate() {
            if i == state_at.min(ops.len()) {
                enc.controller_state(&state, &mut out).unwrap();
                expected.push(Record::ControllerState(state.clone()));
            }
            let local = [&header.geometry.namespaces[0], &header.geometry.namespaces[1]];
            match *op {
                Op::Data { ns, block, blocks, fill } => {
                    let g = local[ns];
                    let blocks = blocks.min(g.blocks - block % g.blocks);
                    let offset = (block % g.blocks) * g.block_size();
                    let data = vec![fill; (blocks * g.block_size()) as usize];
                    enc.user_data(g.nsid, offset, &data, &mut out).unwrap();
                    expected.push(Record::UserData { nsid: g.nsid, offset, data });
                }
                Op::Dealloc { ns, block, blocks } => {
                    let g = local[ns];
                    let blocks = blocks.min(g.blocks - block % g.blocks);
                    let offset = (block % g.blocks) * g.block_size();
                    let length = blocks * g.block_size();
                    enc.deallocate(g.nsid, offset, length, &mut out).unwrap();
                    expected.push(Record::Deallocate { nsid: g.nsid, offset, length });
                }
            }
        }
        if state_at >= ops.len() {
            enc.controller_state(&state, &mut out).unwrap();
            expected.push(Record::ControllerState(state.clone()));
        }
        let written = enc.end(&mut out).unwrap();
        expected.push(Record::End { records: written.records, user_data_bytes: written.user_data_bytes });

        let (items, outcome) = decode_chunked(&out, &sizes);
        prop_assert_eq!(outcome, Ok(written));
        prop_assert_eq!(&items[0], &Item::Header(header));
        let records: Vec<Record> = items[1..].iter().filter_map(|item| match item {
            Item::Record(r) => Some(r.clone()),
            Item::Header(_) => None,
        }).collect();
        prop_assert_eq!(records.len(), items.len() - 1);
        prop_assert_eq!(records, expected);
    }
}

#[test]
fn every_corrupted_byte_is_an_error_whatever_the_segmentation() {
    let (bytes, _) = small_stream();
    for position in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = bytes.clone();
            bad[position] ^= mask;
            let whole = decode(&bad).1;
            let bytewise = decode_chunked(&bad, &[1]).1;
            assert!(
                whole.is_err(),
                "flipping byte {position} with {mask:#x} went unnoticed"
            );
            assert_eq!(
                whole, bytewise,
                "byte {position} mask {mask:#x}: segmentation changed the error"
            );
        }
    }
}

#[test]
fn every_truncation_is_an_error_from_finish() {
    let (bytes, _) = small_stream();
    for len in 0..bytes.len() {
        let mut decoder = StreamDecoder::new();
        decoder
            .push(&bytes[..len])
            .expect("a prefix of a valid stream is valid so far");
        let error = decoder
            .finish()
            .expect_err("a truncated stream must not finish");
        assert!(
            matches!(
                error,
                StreamError::Truncated { .. } | StreamError::MissingEnd { .. }
            ),
            "length {len}: {error}"
        );
    }
}

#[test]
fn truncation_messages_name_the_incomplete_item() {
    let (bytes, _) = small_stream();
    let h = header_len();
    assert_eq!(
        error_of(&[]).to_string(),
        "truncated stream: stream header is incomplete: 0 of 8 bytes present, 8 missing"
    );
    assert_eq!(
        error_of(&bytes[..h + 100]).to_string(),
        format!(
            "truncated stream: UserData record 0 at byte {h} (524-byte payload) is incomplete: \
             100 of 536 bytes present, 436 missing"
        )
    );
    assert_eq!(
        error_of(&bytes[..h + 3]).to_string(),
        format!(
            "truncated stream: header of record 0 at byte {h} is incomplete: 3 of 8 bytes present, 5 missing"
        )
    );
    assert_eq!(
        error_of(&bytes[..h + 536]),
        StreamError::MissingEnd {
            records: 1,
            offset: (h + 536) as u64
        }
    );
}

#[test]
fn data_after_end_is_rejected() {
    let (mut bytes, _) = small_stream();
    let len = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(error_of(&bytes), StreamError::DataAfterEnd { offset: len });
    assert!(
        error_of(&bytes)
            .to_string()
            .contains("after the End record")
    );
}

#[test]
fn bad_magic_shows_the_bytes() {
    let (mut bytes, _) = small_stream();
    bytes[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    let error = error_of(&bytes);
    assert_eq!(
        error,
        StreamError::BadMagic {
            found: *b"QFI\xfb\0\0\0\x03"
        }
    );
    assert!(
        error
            .to_string()
            .contains("[51, 46, 49, fb, 00, 00, 00, 03]"),
        "{error}"
    );
    // Garbage shorter than the fixed header is still recognised as not a stream.
    assert!(matches!(
        error_of(b"GARBAGE!!"),
        StreamError::BadMagic { .. }
    ));
}

#[test]
fn unsupported_version_is_named() {
    let (mut bytes, _) = small_stream();
    bytes[8] = 2;
    let error = error_of(&bytes);
    assert_eq!(error, StreamError::UnsupportedVersion { found: 2 });
    assert!(error.to_string().contains("version 2"));
}

#[test]
fn header_field_errors() {
    let (bytes, _) = small_stream();
    let h = header_len();

    let mut bad = bytes.clone();
    bad[12] += 1;
    assert_eq!(
        error_of(&bad),
        StreamError::HeaderLengthMismatch {
            declared: h as u32 + 1,
            computed: h as u64
        }
    );

    let mut bad = bytes.clone();
    bad[28..32].copy_from_slice(&1025u32.to_le_bytes());
    assert_eq!(
        error_of(&bad).to_string(),
        "stream header: namespace count is 1025, more than the limit of 1024"
    );

    let mut bad = bytes.clone();
    bad[24..26].copy_from_slice(&257u16.to_le_bytes());
    assert!(matches!(
        error_of(&bad),
        StreamError::HeaderFieldTooLarge { value: 257, .. }
    ));

    let mut bad = bytes.clone();
    bad[10] = 1;
    assert!(matches!(
        error_of(&bad),
        StreamError::HeaderReserved { value: 1, .. }
    ));

    let mut bad = bytes.clone();
    bad[h - 10] ^= 0x20; // a serial-number byte
    let error = error_of(&bad);
    assert!(matches!(error, StreamError::HeaderCrc { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("stream header CRC mismatch: stored 0x")
    );
}

/// A header edited after encoding, resealed so only the edited rule can fail.
fn edited_header(edit: impl FnOnce(&mut [u8])) -> StreamError {
    let mut bytes = header().encode().unwrap();
    let h = bytes.len();
    edit(&mut bytes);
    reseal_header(&mut bytes, h);
    error_of(&bytes)
}

#[test]
fn namespace_table_errors() {
    // Entries start at 32; entry i at 32 + 16 i.
    assert_eq!(
        edited_header(|b| b[36] = 10),
        StreamError::BadLbaShift { nsid: 1, shift: 10 }
    );
    assert_eq!(
        edited_header(|b| b[37] = 2),
        StreamError::NamespaceFlags { nsid: 1, flags: 2 }
    );
    assert!(matches!(
        edited_header(|b| b[38] = 1),
        StreamError::HeaderReserved { .. }
    ));
    assert_eq!(
        edited_header(|b| b[48..52].copy_from_slice(&1u32.to_le_bytes())),
        StreamError::NamespaceOrder {
            nsid: 1,
            previous: 1
        }
    );
    assert_eq!(
        edited_header(|b| b[32..36].copy_from_slice(&0u32.to_le_bytes())),
        StreamError::InvalidNsid { index: 0, nsid: 0 }
    );
    assert_eq!(
        edited_header(|b| b[40..48].copy_from_slice(&0u64.to_le_bytes())),
        StreamError::NamespaceSize {
            nsid: 1,
            blocks: 0,
            block_size: 512
        }
    );
    assert_eq!(
        edited_header(|b| b[40..48].copy_from_slice(&u64::MAX.to_le_bytes())),
        StreamError::NamespaceSize {
            nsid: 1,
            blocks: u64::MAX,
            block_size: 512
        }
    );
    let nqn_at = 32 + 3 * 16;
    assert_eq!(
        edited_header(|b| b[nqn_at] = 0xFF),
        StreamError::BadString {
            field: "subsystem NQN"
        }
    );
}

#[test]
fn encoder_refuses_invalid_headers() {
    let mut long = header();
    long.subsystem_nqn = "n".repeat(257);
    assert!(matches!(
        long.encode(),
        Err(StreamError::HeaderFieldTooLarge {
            value: 257,
            limit: 256,
            ..
        })
    ));
    let mut many = header();
    many.geometry.namespaces = (1..=1025).map(|nsid| ns(nsid, 9, 1, false)).collect();
    assert!(matches!(
        many.encode(),
        Err(StreamError::HeaderFieldTooLarge { value: 1025, .. })
    ));
    let mut out = Vec::new();
    let mut unordered = header();
    unordered.geometry.namespaces.reverse();
    assert!(StreamEncoder::new(unordered, &mut out).is_err());
    assert!(out.is_empty(), "nothing written for an invalid header");
}

#[test]
fn record_framing_errors() {
    let h = header_len() as u64;
    let mut bytes = header().encode().unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        error_of(&bytes),
        StreamError::UnknownRecordType {
            index: 0,
            offset: h,
            record_type: 9
        }
    );

    let at = RecordAt {
        index: 0,
        offset: h,
        record_type: RecordType::UserData,
    };
    let mut bytes = header().encode().unwrap();
    bytes.extend_from_slice(&[1, 0, 7, 0, 0, 2, 0, 0]);
    assert_eq!(
        error_of(&bytes),
        StreamError::RecordReserved {
            at,
            value: [0, 7, 0]
        }
    );

    // The length bound is checked from the 8-byte record header alone, before any payload.
    let mut bytes = header().encode().unwrap();
    bytes.extend_from_slice(&[1, 0, 0, 0]);
    bytes.extend_from_slice(&(12 + (1u32 << 20) + 1).to_le_bytes());
    let error = error_of(&bytes);
    assert_eq!(
        error,
        StreamError::RecordTooLarge {
            at,
            length: 12 + (1 << 20) + 1,
            limit: 12 + (1 << 20)
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "UserData record 0 at byte {h}: payload length 1048589 exceeds the limit of 1048588 bytes"
        )
    );

    let mut bytes = header().encode().unwrap();
    bytes.extend_from_slice(&[3, 0, 0, 0]);
    bytes.extend_from_slice(&((64u32 << 20) + 1).to_le_bytes());
    assert!(matches!(
        error_of(&bytes),
        StreamError::RecordTooLarge {
            limit: 67_108_864,
            ..
        }
    ));

    let mut bytes = header().encode().unwrap();
    write_record(&mut bytes, RecordType::Deallocate, &[&[0; 19]]);
    assert!(matches!(
        error_of(&bytes),
        StreamError::RecordTooShort {
            length: 19,
            min: 20,
            ..
        }
    ));

    let mut bytes = with_records(&[RecordView::ControllerState(b"abc")]);
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    let error = error_of(&bytes);
    let at = RecordAt {
        index: 0,
        offset: h,
        record_type: RecordType::ControllerState,
    };
    assert!(
        matches!(error, StreamError::RecordCrc { at: a, .. } if a == at),
        "{error}"
    );
    assert!(error.to_string().starts_with(&format!(
        "ControllerState record 0 at byte {h}: CRC mismatch"
    )));
}

#[test]
fn range_errors_name_record_namespace_and_range() {
    let h = header_len() as u64;
    let at = |record_type| RecordAt {
        index: 0,
        offset: h,
        record_type,
    };
    let ud = at(RecordType::UserData);
    let da = at(RecordType::Deallocate);
    let cases: Vec<(RecordView<'_>, StreamError)> = vec![
        (
            RecordView::UserData {
                nsid: 7,
                offset: 0,
                data: &[0; 512],
            },
            StreamError::UnknownNamespace { at: ud, nsid: 7 },
        ),
        (
            RecordView::UserData {
                nsid: 3,
                offset: 0,
                data: &[0; 4096],
            },
            StreamError::SharedNamespaceData { at: ud, nsid: 3 },
        ),
        (
            RecordView::UserData {
                nsid: 1,
                offset: 0,
                data: &[],
            },
            StreamError::EmptyRange {
                at: ud,
                nsid: 1,
                offset: 0,
            },
        ),
        (
            RecordView::UserData {
                nsid: 2,
                offset: 512,
                data: &[0; 4096],
            },
            StreamError::Misaligned {
                at: ud,
                nsid: 2,
                offset: 512,
                length: 4096,
                block_size: 4096,
            },
        ),
        (
            RecordView::UserData {
                nsid: 1,
                offset: 63 * 512,
                data: &[0; 1024],
            },
            StreamError::OutsideNamespace {
                at: ud,
                nsid: 1,
                offset: 63 * 512,
                length: 1024,
                namespace_bytes: 32768,
            },
        ),
        (
            RecordView::Deallocate {
                nsid: 1,
                offset: 512,
                length: u64::MAX - 511,
            },
            StreamError::OutsideNamespace {
                at: da,
                nsid: 1,
                offset: 512,
                length: u64::MAX - 511,
                namespace_bytes: 32768,
            },
        ),
        (
            RecordView::Deallocate {
                nsid: 1,
                offset: 0,
                length: 100,
            },
            StreamError::Misaligned {
                at: da,
                nsid: 1,
                offset: 0,
                length: 100,
                block_size: 512,
            },
        ),
    ];
    for (record, expected) in cases {
        assert_eq!(error_of(&with_records(&[record])), expected);
        // The encoder refuses the same record with the same error and writes nothing.
        let mut out = Vec::new();
        let mut enc = StreamEncoder::new(header(), &mut out).unwrap();
        let before = out.len();
        let refused = match record {
            RecordView::UserData { nsid, offset, data } => {
                enc.user_data(nsid, offset, data, &mut out)
            }
            RecordView::Deallocate {
                nsid,
                offset,
                length,
            } => enc.deallocate(nsid, offset, length, &mut out),
            _ => unreachable!("only range records above"),
        };
        assert_eq!(refused, Err(expected));
        assert_eq!(out.len(), before);
    }
    let message = error_of(&with_records(&[RecordView::UserData {
        nsid: 1,
        offset: 63 * 512,
        data: &[0; 1024],
    }]))
    .to_string();
    assert_eq!(
        message,
        format!(
            "UserData record 0 at byte {h}: byte range 32256+1024 lies outside namespace 1, which has 32768 bytes"
        )
    );
}

#[test]
fn controller_state_and_end_rules() {
    let h = header_len() as u64;
    let state = RecordView::ControllerState(b"s");
    let state_len = 8 + 1 + 4;

    let error = error_of(&with_records(&[state, state]));
    let at = RecordAt {
        index: 1,
        offset: h + state_len,
        record_type: RecordType::ControllerState,
    };
    assert_eq!(
        error,
        StreamError::DuplicateControllerState { at, first: 0 }
    );

    let end = RecordView::End {
        records: 0,
        user_data_bytes: 0,
    };
    let error = error_of(&with_records(&[end]));
    assert!(
        matches!(error, StreamError::MissingControllerState { .. }),
        "{error}"
    );

    let end = RecordView::End {
        records: 2,
        user_data_bytes: 0,
    };
    let error = error_of(&with_records(&[state, end]));
    assert!(matches!(
        error,
        StreamError::EndMismatch {
            field: "records",
            declared: 2,
            counted: 1,
            ..
        }
    ));
    assert!(
        error
            .to_string()
            .contains("End record says 2 records, but the stream held 1"),
        "{error}"
    );

    let end = RecordView::End {
        records: 1,
        user_data_bytes: 4096,
    };
    let error = error_of(&with_records(&[state, end]));
    assert!(matches!(
        error,
        StreamError::EndMismatch {
            field: "user-data bytes",
            declared: 4096,
            counted: 0,
            ..
        }
    ));

    let end = RecordView::End {
        records: 1,
        user_data_bytes: 0,
    };
    assert!(decode(&with_records(&[state, end])).1.is_ok());

    let mut out = Vec::new();
    let enc = StreamEncoder::new(header(), &mut out).unwrap();
    let before = out.len();
    assert!(matches!(
        enc.end(&mut out),
        Err(StreamError::MissingControllerState { .. })
    ));
    assert_eq!(out.len(), before);

    let mut enc = StreamEncoder::new(header(), &mut out).unwrap();
    let big = vec![0u8; MAX_USER_DATA_BYTES + 512];
    assert!(matches!(
        enc.user_data(1, 0, &big, &mut out),
        Err(StreamError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        enc.controller_state(&[], &mut out),
        Err(StreamError::RecordTooShort { .. })
    ));
}

#[test]
fn items_before_an_error_remain_available() {
    let (mut bytes, _) = small_stream();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF; // End's CRC
    let (items, outcome) = decode(&bytes);
    assert!(matches!(
        outcome,
        Err(StreamError::RecordCrc {
            at: RecordAt {
                record_type: RecordType::End,
                index: 4,
                ..
            },
            ..
        })
    ));
    assert_eq!(items.len(), 5, "header and four records decoded before End");
}

/// The `PciFace` record on the wire: type 5, its payload (the layout tested in `pci_face`),
/// CRC; at most one per stream, optional, and a bad payload is named with the record.
#[test]
fn pci_face_record_framing_and_rules() {
    let face = pci_face_sample();
    let payload = face.encode().unwrap();
    let h = header_len() as u64;
    let mut out = Vec::new();
    let mut enc = StreamEncoder::new(header(), &mut out).unwrap();
    enc.pci_face(&face, &mut out).unwrap();
    let record = &out[h as usize..];
    assert_eq!(
        &record[..8],
        &[5, 0, 0, 0, 0x68, 0x01, 0, 0],
        "type 5, 360 bytes"
    );
    assert_eq!(&record[8..8 + payload.len()], &payload[..]);
    let crc = crc32fast::hash(&record[..8 + payload.len()]);
    assert_eq!(&record[8 + payload.len()..], &crc.to_le_bytes());
    assert_eq!(
        enc.pci_face(&face, &mut out),
        Err(StreamError::DuplicatePciFace {
            at: RecordAt {
                index: 1,
                offset: h + 372,
                record_type: RecordType::PciFace
            },
            first: 0
        })
    );
    let view = PciFaceView::parse(&payload).unwrap();
    let state = RecordView::ControllerState(b"s");
    let end = RecordView::End {
        records: 1,
        user_data_bytes: 0,
    };
    // Optional: a stream without one is complete.
    assert!(decode(&with_records(&[state, end])).1.is_ok());
    let twice = with_records(&[RecordView::PciFace(view), RecordView::PciFace(view)]);
    assert!(matches!(
        error_of(&twice),
        StreamError::DuplicatePciFace { first: 0, .. }
    ));
    // A payload with a stray pending bit, framed with a good CRC: named, at its record.
    let mut bad = payload.clone();
    let last = bad.len() - 1;
    bad[last] = 0x80;
    let mut stream = header().encode().unwrap();
    write_record(&mut stream, RecordType::PciFace, &[&bad]);
    let error = error_of(&stream);
    assert_eq!(
        error.to_string(),
        format!("PciFace record 0 at byte {h}: PCI face pending bits are set beyond vector 5")
    );
    // A length outside the bounds of any vector count is refused before the payload arrives.
    let mut short = header().encode().unwrap();
    write_record(&mut short, RecordType::PciFace, &[&payload[..100]]);
    assert!(matches!(
        error_of(&short),
        StreamError::RecordTooShort { .. }
    ));
    let too_big = StreamEncoder::new(header(), &mut Vec::new())
        .unwrap()
        .pci_face(&PciFaceState::default(), &mut Vec::new());
    assert!(matches!(
        too_big,
        Err(StreamError::PciFace {
            error: PciFaceError::Vectors { found: 0 },
            ..
        })
    ));
}

fn destination() -> DeviceGeometry {
    header().geometry
}

#[test]
fn compatible_destinations_pass() {
    check_compatible(&header(), &destination()).unwrap();
    let mut bigger = destination();
    bigger.io_queue_pairs = 64;
    bigger.mqes = 4095;
    bigger.msix_vectors = 65;
    bigger.mdts = 0;
    check_compatible(&header(), &bigger).unwrap();
    bigger.mdts = 7;
    check_compatible(&header(), &bigger).unwrap();
}

#[test]
fn incompatible_destinations_are_named() {
    let src = header();
    let check = |edit: fn(&mut DeviceGeometry)| {
        let mut dst = destination();
        edit(&mut dst);
        check_compatible(&src, &dst).unwrap_err().to_string()
    };
    assert_eq!(
        check(|d| d.io_queue_pairs = 3),
        "device mismatch: destination supports 3 I/O queue pairs, the source has 4"
    );
    assert!(
        check(|d| d.mqes = 127)
            .contains("127 maximum queue entries (MQES, zero-based), the source has 255")
    );
    assert!(check(|d| d.msix_vectors = 2).contains("2 MSI-X vectors"));
    assert!(check(|d| d.mdts = 5).contains("destination MDTS 5"));
    assert_eq!(
        check(|d| {
            d.namespaces.pop();
        }),
        "device mismatch: source has 3 namespaces, destination has 2"
    );
    assert_eq!(
        check(|d| d.namespaces[2].nsid = 9),
        "device mismatch: namespace 3 of the source does not exist on the destination"
    );
    assert_eq!(
        check(|d| d.namespaces[2].blocks = 1 << 19),
        "device mismatch: namespace 3: source has 1048576 blocks of 4096 bytes, destination has 524288 blocks of 4096 bytes"
    );
    assert!(
        check(|d| d.namespaces[0].lba_shift = 12)
            .contains("64 blocks of 512 bytes, destination has 64 blocks of 4096 bytes")
    );
    assert_eq!(
        check(|d| d.namespaces[2].shared = false),
        "device mismatch: namespace 3 is shared on the source but local on the destination"
    );

    let mut unlimited = header();
    unlimited.geometry.mdts = 0;
    let err = check_compatible(&unlimited, &destination()).unwrap_err();
    assert_eq!(
        err,
        StreamError::MdtsTooSmall {
            source_mdts: 0,
            destination_mdts: 6
        }
    );
}

#[test]
fn describe_reports_a_valid_stream() {
    let mut out = Vec::new();
    let mut enc = StreamEncoder::new(header(), &mut out).unwrap();
    enc.user_data(1, 0, &[1; 512], &mut out).unwrap();
    enc.user_data(1, 1024, &[2; 512], &mut out).unwrap();
    enc.user_data(1, 512, &[3; 1024], &mut out).unwrap(); // overlaps and joins the two
    enc.user_data(2, 8192, &[4; 4096], &mut out).unwrap();
    enc.deallocate(2, 0, 4096, &mut out).unwrap();
    enc.controller_state(&[0; 300], &mut out).unwrap();
    enc.end(&mut out).unwrap();

    let report = describe(&out).unwrap();
    assert!(report.is_valid());
    assert_eq!(report.valid_bytes, out.len() as u64);
    assert_eq!(report.summary.user_data_records, 4);
    assert_eq!(report.summary.user_data_bytes, 512 + 512 + 1024 + 4096);
    assert_eq!(
        report.end,
        Some(EndTotals {
            records: 6,
            user_data_bytes: 6144
        })
    );
    let ns1 = &report.namespaces[0];
    assert_eq!(
        ns1.user_data.ranges,
        [ByteRange {
            offset: 0,
            length: 1536
        }]
    );
    assert_eq!(ns1.user_data.bytes, 1536);
    let ns2 = &report.namespaces[1];
    assert_eq!(
        ns2.user_data.ranges,
        [ByteRange {
            offset: 8192,
            length: 4096
        }]
    );
    assert_eq!(
        ns2.deallocated.ranges,
        [ByteRange {
            offset: 0,
            length: 4096
        }]
    );
    assert_eq!(report.namespaces[2].user_data, RangeSummary::default());

    let text = report.to_string();
    for line in [
        "vfio-nvme migration stream, format version 1,",
        "source subsystem NQN: nqn.2014-08.org.example:vfio-nvme",
        "controller limits: 4 I/O queue pairs, MQES 255 (zero-based), MDTS 6, 5 MSI-X vectors",
        "  nsid 1: 64 blocks of 512 bytes (32768 bytes), local",
        "    user data: 1536 bytes in 1 ranges: 0..1536",
        "  nsid 3: 1048576 blocks of 4096 bytes (4294967296 bytes), shared (data not in the stream)",
        "  ControllerState: 300 bytes",
        "  PciFace: none",
        "End: 6 records, 6144 user-data bytes",
        "status: valid",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["summary"]["controller_state_bytes"], 300);
    assert_eq!(
        json["namespaces"][0]["user_data"]["ranges"][0]["length"],
        1536
    );
    assert_eq!(json["header"]["geometry"]["namespaces"][2]["shared"], true);
    assert!(json["error"].is_null());
}

#[test]
fn describe_shows_the_pci_face() {
    let (bytes, _) = small_stream();
    let report = describe(&bytes).unwrap();
    assert!(report.is_valid());
    let face = report.pci_face.clone().unwrap();
    assert_eq!(
        face,
        PciFaceReport {
            vectors: 5,
            command: 0x0006,
            msix_capability: Some(0x40),
            msix_enabled: true,
            function_masked: false,
            masked: vec![1, 3],
            pending: vec![1],
        }
    );
    let text = report.to_string();
    let line = "  PciFace: 5 MSI-X vectors, command register 0006h, MSI-X capability at 40h \
                enabled, function unmasked; masked vectors: 1, 3; pending vectors: 1";
    assert!(text.contains(line), "missing {line:?} in\n{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["pci_face"]["pending"][0], 1);
    assert_eq!(json["summary"]["pci_face_bytes"], 360);
}

#[test]
fn describe_reports_the_valid_part_of_a_bad_stream() {
    let (bytes, _) = small_stream();
    let h = header_len();
    let mut bad = bytes.clone();
    bad[h + 536 + 10] ^= 1; // inside the Deallocate record
    let report = describe(&bad).unwrap();
    assert!(!report.is_valid());
    assert_eq!(report.summary.user_data_records, 1);
    assert_eq!(report.valid_bytes, (h + 536) as u64);
    assert_eq!(report.end, None);
    let error = report.error.clone().unwrap();
    assert!(
        error.starts_with(&format!(
            "Deallocate record 1 at byte {}: CRC mismatch",
            h + 536
        )),
        "{error}"
    );
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "status: INVALID after {} valid bytes: Deallocate record 1",
            h + 536
        )),
        "{text}"
    );
    assert!(text.contains("End: not reached"));

    let truncated = describe(&bytes[..bytes.len() - 2]).unwrap();
    assert!(
        truncated
            .error
            .unwrap()
            .starts_with("truncated stream: End record 4")
    );

    let many: Vec<ByteRange> = (0..10)
        .map(|i| ByteRange {
            offset: i * 1024,
            length: 512,
        })
        .collect();
    let summary = RangeSummary {
        bytes: 5120,
        ranges: many,
    };
    assert!(
        summary.to_string().ends_with("7168..7680, … (2 more)"),
        "{summary}"
    );

    assert!(matches!(
        describe(b"not a stream at all"),
        Err(StreamError::BadMagic { .. })
    ));
    assert!(matches!(
        describe(&bytes[..20]),
        Err(StreamError::Truncated { .. })
    ));
}

#[test]
fn describe_reader_matches_describe_and_stops_at_the_first_invalid_byte() {
    let (bytes, _) = small_stream();
    let from_reader = describe_reader(bytes.as_slice()).unwrap().unwrap();
    assert_eq!(from_reader, describe(&bytes).unwrap());
    // An endless input that is not a stream is refused after its first chunk.
    let mut counted = CountingReader {
        inner: std::io::repeat(0),
        read: 0,
    };
    let refused = describe_reader(&mut counted).unwrap();
    assert!(
        matches!(refused, Err(StreamError::BadMagic { .. })),
        "{refused:?}"
    );
    assert!(counted.read <= 64 << 10, "read {} bytes", counted.read);
}

/// Counts the bytes a reader hands out.
struct CountingReader<R> {
    inner: R,
    read: usize,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

#[test]
fn fuzz_decoder_with_arbitrary_bytes() {
    bolero::check!()
        .with_type::<Vec<u8>>()
        .with_iterations(3000)
        .for_each(|bytes: &Vec<u8>| {
            let split = bytes.first().map_or(1, |&b| usize::from(b % 16) + 1);
            let _ = decode_chunked(bytes, &[split]);
            let _ = describe(bytes);
        });
}

#[test]
fn fuzz_decoder_with_mutated_streams() {
    let (valid, _) = small_stream();
    bolero::check!()
        .with_type::<Vec<(u16, u8)>>()
        .with_iterations(3000)
        .for_each(|edits: &Vec<(u16, u8)>| {
            let mut bytes = valid.clone();
            for &(at, value) in edits.iter().take(8) {
                // Mostly overwrite a byte; sometimes truncate at a position derived from it.
                let at = usize::from(at) % (bytes.len() + 32);
                match bytes.get_mut(at) {
                    Some(byte) => *byte = value,
                    None => bytes.truncate(usize::from(value) * 3),
                }
            }
            let (_, outcome) = decode_chunked(&bytes, &[7, 1, 64]);
            if bytes != valid {
                assert!(outcome.is_err(), "a modified stream was accepted");
            }
            let _ = describe(&bytes);
        });
}

/// Records handed out in place (whole inside a pushed piece) and records buffered (cut by the
/// segmentation; one byte at a time buffers every one) give the same items and the same error,
/// for mutated streams cut anywhere.
#[test]
fn fuzz_in_place_records_match_buffered_ones() {
    let (valid, _) = small_stream();
    bolero::check!()
        .with_type::<(Vec<(u16, u8)>, Vec<u16>)>()
        .with_iterations(3000)
        .for_each(|(edits, cuts): &(Vec<(u16, u8)>, Vec<u16>)| {
            let mut bytes = valid.clone();
            for &(at, value) in edits.iter().take(4) {
                let at = usize::from(at) % (bytes.len() + 8);
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = value;
                }
            }
            let sizes: Vec<usize> = cuts
                .iter()
                .take(6)
                .map(|&c| usize::from(c) % 4096 + 1)
                .collect();
            let sizes = if sizes.is_empty() {
                vec![bytes.len().max(1)]
            } else {
                sizes
            };
            let in_place = decode_chunked(&bytes, &sizes);
            let buffered = decode_chunked(&bytes, &[1]);
            assert_eq!(in_place, buffered);
        });
}

/// The in-place encoder writes the bytes the appending one does (large data crosses its
/// 64 KiB pieces), carries all-zero data as a `Deallocate` record, and refuses a buffer too
/// small or a range the stream cannot hold without counting anything.
#[test]
fn in_place_user_data_matches_the_appending_encoder() {
    let header = StreamHeader {
        geometry: DeviceGeometry {
            namespaces: vec![ns(1, 12, 1024, false)],
            ..header().geometry
        },
        ..header()
    };
    let data: Vec<u8> = (0..(200u32 << 10)).map(|i| (i % 251) as u8).collect();
    let fill_from = |source: &[u8]| {
        let source = source.to_vec();
        move |at: u64, piece: &mut [u8]| {
            let at = at as usize;
            piece.copy_from_slice(&source[at..at + piece.len()]);
            Ok::<(), StreamError>(())
        }
    };
    let mut expected = Vec::new();
    let mut appending = StreamEncoder::new(header.clone(), &mut expected).unwrap();
    appending.user_data(1, 4096, &data, &mut expected).unwrap();
    appending.deallocate(1, 0, 8192, &mut expected).unwrap();

    let mut got = Vec::new();
    let mut in_place = StreamEncoder::new(header, &mut got).unwrap();
    let mut room = vec![0xEE; data.len() + USER_DATA_OVERHEAD + 100];
    let n = in_place
        .user_data_in_place(1, 4096, data.len(), &mut room, fill_from(&data))
        .unwrap();
    got.extend_from_slice(&room[..n]);
    let zeros = vec![0u8; 8192];
    let n = in_place
        .user_data_in_place(1, 0, zeros.len(), &mut room, fill_from(&zeros))
        .unwrap();
    assert_eq!(n, DEALLOCATE_RECORD_BYTES);
    got.extend_from_slice(&room[..n]);
    assert!(got == expected, "in-place encoding differs");
    assert_eq!(in_place.summary(), appending.summary());

    let small = in_place.user_data_in_place(1, 0, 4096, &mut room[..4096], fill_from(&data));
    assert!(
        matches!(small, Err(StreamError::RecordTooLarge { .. })),
        "{small:?}"
    );
    let outside = in_place.user_data_in_place(1, 1024 * 4096, 4096, &mut room, fill_from(&data));
    assert!(
        matches!(outside, Err(StreamError::OutsideNamespace { .. })),
        "{outside:?}"
    );
    assert_eq!(
        in_place.summary(),
        appending.summary(),
        "a refusal counted something"
    );
}
