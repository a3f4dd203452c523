//! Hostile and careless clients against a live server: a second connection while one is attached,
//! stalls mid-message and before negotiation, interrupt fds that are not eventfds, the kernel's
//! and the spec's rules for DEVICE_FEATURE, VERSION and DMA_MAP, a disconnect in every migration
//! state, and DMA windows without a file descriptor served through DMA_READ/DMA_WRITE.

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::time::Duration;
use std::time::Instant;

use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfu::command::Command;
use vfu::dma::DmaMapFlags;
use vfu::dma::DmaReadReply;
use vfu::dma::DmaWriteReply;
use vfu::feature::DeviceFeature;
use vfu::feature::Feature;
use vfu::feature::FeatureFlags;
use vfu::feature::MigDeviceState;
use vfu::framing::Frame;
use vfu::framing::ReplyBody;
use vfu::framing::encode_error_reply;
use vfu::framing::encode_reply;
use vfu::header::Header;
use vfu::irq::IrqAction;
use vfu::irq::IrqSet;
use vfu::irq::IrqSetData;
use vfu::limits::Limits;
use vfu::message::Reply;
use vfu::message::Request;
use vfu::migration::MigDataHead;
use vfu::migration::MigDataWrite;
use vfu::version::Capabilities;
use zerocopy::IntoBytes;

use crate::TestServer;
use crate::client::TestClient;
use crate::client::proposal;
use crate::device;
use crate::protocol::dma_map;
use crate::protocol::feature_reply;
use crate::protocol::get_info;
use crate::protocol::set_state;
use crate::protocol::wait_for;

/// Longest the tests wait for the server to give up on a stalled client (its timeouts are a few
/// seconds; the machine may be loaded).
const GENEROUS: Duration = Duration::from_secs(60);

/// Connects and sends VERSION; the reply (or `None` if none came within 5 s).
fn try_negotiate(server: &TestServer) -> (TestClient, Option<ReplyBody>) {
    let mut client = TestClient::connect(&server.path);
    let id = client.send(&proposal(Capabilities::default()), &[], false);
    let reply = client.recv_within(Duration::from_secs(5)).map(|frame| {
        assert_eq!(frame.header.msg_id, id);
        frame.decode_reply(&Limits::default()).unwrap()
    });
    (client, reply)
}

/// Connects until the server negotiates (EBUSY answers are retried), within [`GENEROUS`].
/// Returns the client and the number of EBUSY refusals it got first.
fn negotiate_when_free(server: &TestServer) -> (TestClient, usize) {
    let deadline = Instant::now() + GENEROUS;
    let mut refusals = 0;
    loop {
        let (client, reply) = try_negotiate(server);
        match reply {
            Some(ReplyBody::Ok(Reply::Version(_))) => return (client, refusals),
            Some(ReplyBody::Error(Errno::EBUSY)) => refusals += 1,
            other => panic!("VERSION answered with {other:?}"),
        }
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_client_is_refused_with_ebusy_and_the_first_is_not_disturbed() {
    let server = TestServer::start("busy-refusal");
    let mut first = TestClient::negotiated(&server.path);
    for _ in 0..3 {
        let (mut second, reply) = try_negotiate(&server);
        assert_eq!(
            reply,
            Some(ReplyBody::Error(Errno::EBUSY)),
            "a second client gets a readable refusal, not silence"
        );
        assert!(second.wait_closed(), "and is then disconnected");
        assert_eq!(get_info(&mut first).num_regions, device::NUM_REGIONS);
    }
    assert_eq!(server.device.disconnects(), 0, "the attached client stays");
    // Once the first client leaves, the next one is served.
    drop(first);
    let (mut next, _) = negotiate_when_free(&server);
    assert_eq!(get_info(&mut next).num_irqs, 5);
}

#[test]
fn a_client_stalling_inside_a_message_is_dropped_and_the_next_client_served() {
    let server = TestServer::start("stall");
    let mut staller = TestClient::negotiated(&server.path);
    let header = Header::command(1, Command::DEVICE_GET_INFO, 16, false);
    staller.send_raw(&header.as_bytes()[..8], &[]).unwrap();
    let (mut next, refusals) = negotiate_when_free(&server);
    assert!(refusals > 0, "the staller was attached at first");
    assert!(staller.wait_closed(), "the server dropped the staller");
    assert_eq!(server.device.disconnects(), 1);
    assert_eq!(get_info(&mut next).num_regions, device::NUM_REGIONS);
}

#[test]
fn a_client_that_never_negotiates_is_dropped() {
    let server = TestServer::start("handshake");
    let mut silent = TestClient::connect(&server.path);
    let (mut next, _) = negotiate_when_free(&server);
    assert!(
        silent.wait_closed(),
        "no VERSION: the connection is dropped"
    );
    assert_eq!(get_info(&mut next).num_regions, device::NUM_REGIONS);
}

#[test]
fn interrupt_fds_must_be_eventfds() {
    let server = TestServer::start("pipe-irq");
    let mut client = TestClient::negotiated(&server.path);
    let (_read, write) = std::io::pipe().unwrap();
    let write: OwnedFd = write.into();
    let assign = IrqSet {
        action: IrqAction::Trigger,
        data: IrqSetData::Eventfd,
        index: device::MSIX,
        start: 1,
        count: 1,
    };
    assert_eq!(
        client.request(&assign, &[write.as_fd()]).errno(),
        Errno::EINVAL
    );
    assert_eq!(server.device.eventfd_count(device::MSIX), 0);
    let eventfd = crate::protocol::eventfd();
    client.request(&assign, &[eventfd.as_fd()]).ok();
    assert_eq!(server.device.eventfd_count(device::MSIX), 1);
}

#[test]
fn device_feature_needs_get_set_or_probe() {
    let server = TestServer::start("feature-methods");
    let mut client = TestClient::negotiated(&server.path);
    for feature in [Feature::MIGRATION, Feature::MIG_DEVICE_STATE] {
        // The kernel's vfio_check_feature: without PROBE, one of GET or SET.
        let neither = DeviceFeature {
            argsz: 16,
            flags: FeatureFlags::new().with_index(feature.0),
            data: MigDeviceState::new(DeviceState::Stop).as_bytes().to_vec(),
        };
        assert_eq!(client.request(&neither, &[]).errno(), Errno::EINVAL);
    }
    let state = feature_reply(
        &mut client,
        &DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8),
    )
    .data_as::<MigDeviceState>(&Limits::default())
    .unwrap();
    assert_eq!(
        state.device_state,
        DeviceState::Running.value(),
        "no SET ran"
    );
}

/// A VERSION request whose JSON text is `json`.
fn raw_version(msg_id: u16, json: &str) -> Vec<u8> {
    let mut payload = vec![0, 0, 0, 0];
    payload.extend_from_slice(json.as_bytes());
    payload.push(0);
    let header = Header::command(msg_id, Command::VERSION, payload.len(), false);
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

#[test]
fn version_refuses_a_zero_transfer_size_and_capabilities_of_the_wrong_type() {
    let server = TestServer::start("version-rules");
    let mut client = TestClient::connect(&server.path);
    for (id, json) in [
        (1, r#"{"capabilities": {"max_data_xfer_size": 0}}"#),
        (2, r#"{"capabilities": [1]}"#),
        (3, r#"{"capabilities": {"twin_socket": [true]}}"#),
        (4, r#"{"capabilities": {"migration": [4096]}}"#),
        (5, r#"[{"capabilities": {}}]"#),
    ] {
        client.send_raw(&raw_version(id, json), &[]).unwrap();
        assert_eq!(client.reply_to(id).errno(), Errno::EINVAL, "{json}");
    }
    // The connection is still waiting for a valid VERSION.
    client
        .send_raw(
            &raw_version(6, r#"{"capabilities": {"max_data_xfer_size": 4096}}"#),
            &[],
        )
        .unwrap();
    match client.reply_to(6).ok() {
        Reply::Version(v) => assert_eq!(v.capabilities.max_data_xfer_size, 4096),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dma_map_needs_page_aligned_addresses_sizes_and_offsets() {
    let server = TestServer::start("dma-align");
    let mut client = TestClient::negotiated(&server.path);
    let memory = shmem::Mapping::memfd("aligned-ram", 0x10000).unwrap();
    let fd = memory.fd().unwrap();
    let rw = DmaMapFlags::READ | DmaMapFlags::WRITE;
    for (address, size, offset) in [
        (0x10_0800, 0x1000, 0),
        (0x10_0000, 0x1800, 0),
        (0x10_0000, 0x1000, 0x200),
        (0x10_0001, 0x1000, 0),
    ] {
        let answer = client.request(&dma_map(address, size, offset, rw), &[fd]);
        assert_eq!(
            answer.errno(),
            Errno::EINVAL,
            "{address:#x}+{size:#x} at {offset:#x}"
        );
        let without_fd = client.request(&dma_map(address, size, offset, rw), &[]);
        assert_eq!(without_fd.errno(), Errno::EINVAL, "without an fd");
    }
    assert!(server.device.windows().is_empty());
    client
        .request(&dma_map(0x10_0000, 0x2000, 0x1000, rw), &[fd])
        .ok();
    assert_eq!(server.device.windows().len(), 1);
}

/// Moves the device from RUNNING to `state` (through STOP for RESUMING) and reads or writes a
/// little of the session's data.
fn enter(client: &mut TestClient, state: DeviceState) {
    if state == DeviceState::Resuming {
        assert!(matches!(set_state(client, 1), ReplyBody::Ok(_)));
    }
    assert!(
        matches!(set_state(client, state.value()), ReplyBody::Ok(_)),
        "{state}"
    );
    if state.is_saving() {
        let Reply::MigDataRead(chunk) = client.request(&MigDataHead::read(10), &[]).ok() else {
            panic!("mig data");
        };
        assert_eq!(chunk.data.len(), 10);
    }
    if state == DeviceState::Resuming {
        client.request(&MigDataWrite::new(vec![7; 12]), &[]).ok();
    }
}

#[test]
fn a_disconnect_in_any_state_ends_the_session_and_the_next_client_finds_running() {
    let server = TestServer::start_with("leave", device::with_every_migration_state());
    for state in [
        DeviceState::PreCopy,
        DeviceState::PreCopyP2p,
        DeviceState::StopCopy,
        DeviceState::Stop,
        DeviceState::Resuming,
        DeviceState::RunningP2p,
    ] {
        let entered = {
            let mut client = TestClient::negotiated(&server.path);
            enter(&mut client, state);
            server.device.arcs().len()
        };
        let (mut next, _) = negotiate_when_free(&server);
        let found = feature_reply(&mut next, &DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8))
            .data_as::<MigDeviceState>(&Limits::default())
            .unwrap();
        assert_eq!(
            found.device_state,
            DeviceState::Running.value(),
            "after leaving in {state}"
        );
        // The old session is gone: nothing to read, nothing to write.
        assert_eq!(
            next.request(&MigDataHead::read(10), &[]).errno(),
            Errno::EINVAL
        );
        assert_eq!(
            next.request(&MigDataWrite::new(vec![1]), &[]).errno(),
            Errno::EINVAL
        );
        let walk = server.device.arcs()[entered..].to_vec();
        if state == DeviceState::Resuming {
            // Not given its half stream: RESUMING → STOP never ran; the driver's reset did it.
            assert!(walk.is_empty(), "{walk:?}");
        } else {
            assert_eq!(
                walk.last().map(|&(_, to)| to),
                Some(DeviceState::Running),
                "the walk back ran the driver's arcs: {walk:?}"
            );
        }
    }
}

/// Answers the next server command, which must be `command`, with `answer(request)`.
fn serve_one(
    client: &mut TestClient,
    command: Command,
    answer: impl FnOnce(&Frame<OwnedFd>, Request) -> Vec<u8>,
) {
    let frame = client
        .recv_within(Duration::from_secs(10))
        .expect("a server command");
    assert_eq!(frame.header.command, command);
    assert!(!frame.header.is_reply().unwrap(), "a command, not a reply");
    let limits = Limits {
        max_data_xfer_size: 4096,
        ..Limits::default()
    };
    let request = frame
        .decode_request(&limits)
        .expect("a well-formed command");
    let reply = answer(&frame, request);
    client.send_raw(&reply, &[]).unwrap();
}

#[test]
fn fd_less_windows_are_reached_through_dma_read_and_write_in_negotiated_chunks() {
    let server = TestServer::start("fdless");
    let mut client = TestClient::connect(&server.path);
    let caps = Capabilities {
        max_data_xfer_size: 4096,
        ..Capabilities::default()
    };
    client.request(&proposal(caps), &[]).ok();
    let rw = DmaMapFlags::READ | DmaMapFlags::WRITE;
    client.request(&dma_map(0x40_0000, 0x4000, 0, rw), &[]).ok();
    let mut guest = vec![0u8; 0x4000];
    for (i, byte) in guest.iter_mut().enumerate() {
        *byte = i as u8;
    }

    // A device read of 10000 bytes: three DMA_READs of at most 4096 bytes.
    let device = server.device.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 10000];
        device.dma_read(0x40_0100, &mut buf).map(|()| buf)
    });
    let mut served = 0;
    while served < 10000 {
        serve_one(&mut client, Command::DMA_READ, |frame, request| {
            let Request::DmaRead(access) = request else {
                panic!("{request:?}")
            };
            assert!(access.count <= 4096);
            let at = (access.address - 0x40_0000) as usize;
            served += access.count as usize;
            let data = guest[at..at + access.count as usize].to_vec();
            encode_reply(
                &frame.header,
                &DmaReadReply {
                    address: access.address,
                    data,
                },
            )
        });
    }
    let read = reader.join().unwrap().expect("the device read the window");
    assert_eq!(read, guest[0x100..0x100 + 10000]);

    // A device write arrives as DMA_WRITE with the data.
    let device = server.device.clone();
    let writer = std::thread::spawn(move || device.dma_write(0x40_2000, b"device data"));
    serve_one(&mut client, Command::DMA_WRITE, |frame, request| {
        let Request::DmaWrite(write) = request else {
            panic!("{request:?}")
        };
        assert_eq!(
            (write.address, write.data.as_slice()),
            (0x40_2000, &b"device data"[..])
        );
        encode_reply(&frame.header, &DmaWriteReply { access: None })
    });
    writer.join().unwrap().expect("the device wrote the window");

    // A refused access fails the device's access.
    let device = server.device.clone();
    let refused = std::thread::spawn(move || device.dma_read(0x40_0000, &mut [0; 8]));
    serve_one(&mut client, Command::DMA_READ, |frame, _| {
        encode_error_reply(&frame.header, Errno::EFAULT).to_vec()
    });
    assert!(refused.join().unwrap().is_err());
    assert_eq!(get_info(&mut client).num_regions, device::NUM_REGIONS);

    // The client vanishing with an access outstanding fails it instead of hanging the device.
    let device = server.device.clone();
    let orphan = std::thread::spawn(move || device.dma_read(0x40_0000, &mut [0; 8]));
    let frame = client
        .recv_within(Duration::from_secs(10))
        .expect("DMA_READ");
    assert_eq!(frame.header.command, Command::DMA_READ);
    drop(client);
    assert!(orphan.join().unwrap().is_err());
    wait_for("the disconnect", || server.device.disconnects() == 1);
}

#[test]
fn an_unanswered_dma_read_times_out_and_the_connection_keeps_serving() {
    let server = TestServer::start("fdless-silent");
    let mut client = TestClient::negotiated(&server.path);
    let rw = DmaMapFlags::READ | DmaMapFlags::WRITE;
    client.request(&dma_map(0x40_0000, 0x1000, 0, rw), &[]).ok();
    let device = server.device.clone();
    let waiting = std::thread::spawn(move || device.dma_read(0x40_0000, &mut [0; 8]));
    let frame = client
        .recv_within(Duration::from_secs(10))
        .expect("DMA_READ");
    assert_eq!(frame.header.command, Command::DMA_READ);
    // Never answered: the access fails after the server's bounded wait.
    assert!(waiting.join().unwrap().is_err());
    // A late answer is dropped; requests are still served.
    let late = encode_reply(
        &frame.header,
        &DmaReadReply {
            address: 0x40_0000,
            data: vec![0; 8],
        },
    );
    client.send_raw(&late, &[]).unwrap();
    assert_eq!(get_info(&mut client).num_regions, device::NUM_REGIONS);
}

#[test]
fn the_client_library_reports_a_busy_server_as_such() {
    let server = TestServer::start("busy-client");
    let mut first = vfu::client::Client::connect(&server.path).unwrap();
    let err = vfu::client::Client::connect(&server.path).unwrap_err();
    assert!(matches!(err, vfu::client::ClientError::Busy), "{err}");
    assert!(
        err.to_string()
            .contains("the server is busy: another client is attached"),
        "{err}"
    );
    assert_eq!(first.device_info().num_regions, device::NUM_REGIONS);
    first.reset().unwrap();
}

#[test]
fn the_client_library_serves_fd_less_windows_to_the_device() {
    let server = TestServer::start("served-client");
    let mut client = vfu::client::Client::connect(&server.path).unwrap();
    let memory = std::sync::Arc::new(shmem::Mapping::anonymous(0x4000).unwrap());
    memory.write(0x10, b"guest bytes").unwrap();
    client
        .dma_map_served(0x80_0000, memory.clone(), true)
        .unwrap();
    assert_eq!(
        server.device.windows(),
        [vfu::fake::FakeWindow {
            iova: 0x80_0000,
            size: 0x4000,
            writable: true,
            mapped: false
        }]
    );
    // The device reads and writes while the client does nothing.
    let mut buf = [0u8; 11];
    server.device.dma_read(0x80_0010, &mut buf).unwrap();
    assert_eq!(&buf, b"guest bytes");
    let big: Vec<u8> = (0..0x3000).map(|i| (i % 251) as u8).collect();
    server.device.dma_write(0x80_1000, &big).unwrap();
    let mut back = vec![0u8; big.len()];
    memory.read(0x1000, &mut back).unwrap();
    assert_eq!(back, big);
    // Beyond the window the device gets an error, not memory.
    assert!(server.device.dma_read(0x80_3ff8, &mut [0; 16]).is_err());
    client.dma_unmap(0x80_0000, 0x4000).unwrap();
    assert!(server.device.windows().is_empty());
}

#[test]
fn requests_sent_just_before_a_hang_up_are_carried_out() {
    let server = TestServer::start("hang-up");
    for value in 1..=5u8 {
        let mut client = TestClient::negotiated(&server.path);
        let write = vfu::access::RegionWrite {
            offset: 0x90,
            region: device::CONFIG,
            data: vec![value],
        };
        client.send(&write, &[], true);
        drop(client);
        let (mut next, _) = negotiate_when_free(&server);
        let access = vfu::access::RegionAccess {
            offset: 0x90,
            region: device::CONFIG,
            count: 1,
        };
        match next.request(&access, &[]).ok() {
            Reply::RegionRead(read) => assert_eq!(read.data, [value]),
            other => panic!("{other:?}"),
        }
    }
}
