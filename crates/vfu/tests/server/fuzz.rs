//! Robustness: random, mutated and truncated messages sent to a live server. After each input a
//! VERSION-negotiated connection must still answer DEVICE_GET_INFO; when the input broke the
//! framing (or left half a message behind) the server must close the connection, and the next
//! connection must work.

use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;

use shmem::Mapping;
use vfu::access::RegionAccess;
use vfu::access::RegionWrite;
use vfu::access::RegionWriteMulti;
use vfu::access::WriteMultiEntry;
use vfu::command::Command;
use vfu::device::DeviceInfo;
use vfu::device::DeviceReset;
use vfu::dma::DmaMap;
use vfu::dma::DmaUnmap;
use vfu::feature::DeviceFeature;
use vfu::feature::DmaLoggingReportRequest;
use vfu::feature::Feature;
use vfu::feature::MigDeviceState;
use vfu::framing::Framer;
use vfu::framing::ReplyBody;
use vfu::framing::encode_request;
use vfu::header::Header;
use vfu::irq::IrqAction;
use vfu::irq::IrqInfo;
use vfu::irq::IrqSet;
use vfu::irq::IrqSetData;
use vfu::limits::Limits;
use vfu::message::Reply;
use vfu::migration::MigDataHead;
use vfu::migration::MigDataWrite;
use vfu::region::RegionInfoRequest;
use zerocopy::IntoBytes;

use crate::TestServer;
use crate::client::REPLY_TIMEOUT;
use crate::client::TestClient;
use crate::device;

/// msg_id of the health-check request (fuzz inputs may reuse it; their GET_INFO replies are
/// just as valid).
const CHECK_ID: u16 = 0xfffe;

/// One valid request of (almost) every command, encoded. DMA logging START is left out so that
/// a mutated report cannot make the server build huge bitmaps for the whole run.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = vec![
        encode_request(1, &DeviceInfo::request(), false),
        encode_request(
            2,
            &RegionInfoRequest {
                argsz: 64,
                index: 0,
            },
            false,
        ),
        encode_request(
            3,
            &RegionAccess {
                offset: 0,
                region: device::CONFIG,
                count: 4,
            },
            false,
        ),
        encode_request(
            4,
            &RegionWrite {
                offset: 0x40,
                region: device::CONFIG,
                data: vec![1, 2, 3, 4],
            },
            false,
        ),
        encode_request(
            5,
            &RegionWriteMulti {
                writes: vec![WriteMultiEntry::new(0x10, device::BAR0, &[1, 2])],
            },
            true,
        ),
        encode_request(
            6,
            &IrqInfo {
                argsz: 16,
                flags: 0,
                index: device::MSIX,
                count: 0,
            },
            false,
        ),
        encode_request(
            7,
            &IrqSet {
                action: IrqAction::Trigger,
                data: IrqSetData::Bool(vec![true, true]),
                index: device::MSIX,
                start: 0,
                count: 2,
            },
            false,
        ),
        encode_request(
            8,
            &DmaMap {
                argsz: 32,
                flags: 3,
                offset: 0,
                address: 0x1_0000_0000,
                size: 0x1000,
            },
            false,
        ),
        encode_request(
            9,
            &DmaUnmap {
                argsz: 24,
                flags: 0,
                address: 0x1_0000_0000,
                size: 0x1000,
            },
            false,
        ),
        encode_request(10, &DeviceReset, false),
        encode_request(11, &DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8), false),
        encode_request(
            12,
            &DeviceFeature::set(&MigDeviceState {
                device_state: 4,
                data_fd: -1,
            }),
            false,
        ),
        encode_request(
            13,
            &DeviceFeature::get_report(&DmaLoggingReportRequest {
                iova: 0,
                length: 1 << 20,
                page_size: 4096,
            }),
            false,
        ),
        encode_request(14, &MigDataHead::read(32), false),
        encode_request(15, &MigDataWrite::new(vec![7; 12]), false),
    ];
    out.push(
        Header::command(16, Command::DIRTY_PAGES, 0, false)
            .as_bytes()
            .to_vec(),
    );
    out
}

/// What the server must do with an input, predicted by framing it the way the server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Whole messages: each is answered and the connection stays.
    Served,
    /// Half a message is left: the server waits for the rest (the client then hangs up).
    Partial,
    /// A framing error: the server closes the connection.
    Closed,
}

fn predict(bytes: &[u8]) -> Expect {
    let mut framer = Framer::<()>::new(Limits::default().max_msg_size());
    framer.push(bytes, None);
    loop {
        match framer.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) if framer.buffered() > 0 => return Expect::Partial,
            Ok(None) => return Expect::Served,
            Err(_) => return Expect::Closed,
        }
    }
}

/// Sends DEVICE_GET_INFO and reads messages until its reply; the answers to earlier fuzz
/// messages come first.
fn check_alive(client: &mut TestClient) {
    client
        .send_raw(
            &encode_request(CHECK_ID, &DeviceInfo::request(), false),
            &[],
        )
        .expect("send GET_INFO");
    loop {
        let frame = client
            .recv_within(REPLY_TIMEOUT)
            .expect("the server still answers");
        if frame.header.msg_id != CHECK_ID || frame.header.command != Command::DEVICE_GET_INFO {
            continue;
        }
        match frame.decode_reply(&Limits::default()) {
            Ok(ReplyBody::Ok(Reply::DeviceGetInfo(info))) => {
                assert_eq!(info.num_regions, device::NUM_REGIONS);
                return;
            }
            other => panic!("GET_INFO answered with {other:?}"),
        }
    }
}

/// Builds the message an input stands for: its first byte picks the kind.
fn message(corpus: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let Some((&kind, rest)) = input.split_first() else {
        return Vec::new();
    };
    let pick = |i: usize| &corpus[usize::from(*rest.get(i).unwrap_or(&0)) % corpus.len()];
    match kind % 4 {
        // Random bytes.
        0 => rest.to_vec(),
        // A valid header for any command, random payload.
        1 => {
            let command = Command(u16::from(*rest.first().unwrap_or(&0) % 20));
            let payload = rest.get(1..).unwrap_or_default();
            let no_reply = kind & 0x40 != 0;
            let mut bytes = Header::command(0x100, command, payload.len(), no_reply)
                .as_bytes()
                .to_vec();
            bytes.extend_from_slice(payload);
            bytes
        }
        // A valid message cut short.
        2 => {
            let base = pick(0);
            let cut = usize::from(*rest.get(1).unwrap_or(&0)) % base.len();
            base[..cut].to_vec()
        }
        // A valid message with bytes overwritten.
        _ => {
            let mut bytes = pick(0).clone();
            for pair in rest.get(1..).unwrap_or_default().chunks_exact(2) {
                let at = usize::from(pair[0]) % bytes.len();
                bytes[at] = pair[1];
            }
            bytes
        }
    }
}

#[test]
fn fuzz_live_server() {
    let server = TestServer::start("fuzz");
    let corpus = corpus();
    let memory = Mapping::memfd("fuzz-ram", 0x1000).unwrap();
    let mut client = TestClient::negotiated(&server.path);
    let path = server.path.clone();
    // How often each outcome was seen: [served, partial, closed].
    let mut seen = [0usize; 3];
    let mut state = AssertUnwindSafe((&mut client, &memory, &mut seen));
    bolero::check!()
        .with_iterations(4000)
        .with_max_len(512)
        .for_each(move |input: &[u8]| {
            let (client, memory, seen) = &mut *state;
            let bytes = message(&corpus, input);
            if bytes.is_empty() {
                return;
            }
            // Sometimes an fd rides along (a stray fd must be closed, a DMA_MAP may use it).
            let fd = memory.fd().unwrap();
            let fds = if input[0] & 0x80 != 0 {
                vec![fd.as_fd()]
            } else {
                Vec::new()
            };
            let expect = predict(&bytes);
            seen[expect as usize] += 1;
            // The server may already have closed the connection; that is checked below.
            let _ = client.send_raw(&bytes, &fds);
            match expect {
                Expect::Served => check_alive(client),
                Expect::Partial => {
                    client.reconnect(&path);
                    check_alive(client);
                }
                Expect::Closed => {
                    assert!(
                        client.wait_closed(),
                        "a framing error closes the connection"
                    );
                    client.reconnect(&path);
                    check_alive(client);
                }
            }
        });
    // The device state machine and counters went through random changes; the server still
    // serves a fresh client once the fuzzing one hangs up.
    drop(client);
    assert!(
        seen.iter().all(|&n| n > 0),
        "every outcome was exercised: {seen:?}"
    );
    let mut fresh = TestClient::negotiated(&server.path);
    check_alive(&mut fresh);
}
