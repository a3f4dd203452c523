//! Every command over a real socket, the error paths (each followed by a request that still
//! works), split messages, No_reply, reconnection, `stop`, and the socket file rules.

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use rustix::event::EventfdFlags;
use shmem::Mapping;
use shmem::Protection;
use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfu::access::RegionAccess;
use vfu::access::RegionWrite;
use vfu::access::RegionWriteMulti;
use vfu::access::WriteMultiEntry;
use vfu::command::Command;
use vfu::device::DeviceInfo;
use vfu::device::DeviceInfoFlags;
use vfu::device::DeviceReset;
use vfu::dma::DmaAccess;
use vfu::dma::DmaMap;
use vfu::dma::DmaMapFlags;
use vfu::dma::DmaUnmap;
use vfu::dma::DmaUnmapFlags;
use vfu::fake::FakeWindow;
use vfu::feature::DeviceFeature;
use vfu::feature::DmaLoggingReport;
use vfu::feature::DmaLoggingReportRequest;
use vfu::feature::DmaLoggingStart;
use vfu::feature::Feature;
use vfu::feature::FeatureFlags;
use vfu::feature::FeatureMigration;
use vfu::feature::MigDataSize;
use vfu::feature::MigDeviceState;
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
use vfu::region::RegionCap;
use vfu::region::RegionInfoFlags;
use vfu::region::RegionInfoRequest;
use vfu::region::RegionIoFdsRequest;
use vfu::server::Server;
use vfu::server::ServerError;
use vfu::version::Capabilities;
use vfu::version::LegacyMigration;
use zerocopy::IntoBytes;

use crate::TestServer;
use crate::client::TestClient;
use crate::client::proposal;
use crate::device;
use crate::socket_path;

/// QEMU 10.1's VERSION proposal, byte for byte (reference §2.4).
const QEMU_PROPOSAL_JSON: &str = r#"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#;

fn qemu_version_message(msg_id: u16) -> Vec<u8> {
    let mut payload = vec![0, 0, 0, 0];
    payload.extend_from_slice(QEMU_PROPOSAL_JSON.as_bytes());
    payload.push(0);
    let header = Header::command(msg_id, Command::VERSION, payload.len(), false);
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

pub(crate) fn get_info(client: &mut TestClient) -> DeviceInfo {
    match client.request(&DeviceInfo::request(), &[]).ok() {
        Reply::DeviceGetInfo(info) => info,
        other => panic!("{other:?}"),
    }
}

fn read_region(client: &mut TestClient, region: u32, offset: u64, count: u32) -> Vec<u8> {
    let access = RegionAccess {
        offset,
        region,
        count,
    };
    match client.request(&access, &[]).ok() {
        Reply::RegionRead(read) => {
            assert_eq!((read.offset, read.region), (offset, region));
            read.data
        }
        other => panic!("{other:?}"),
    }
}

fn write_region(region: u32, offset: u64, data: &[u8]) -> RegionWrite {
    RegionWrite {
        offset,
        region,
        data: data.to_vec(),
    }
}

pub(crate) fn feature_reply(client: &mut TestClient, request: &DeviceFeature) -> DeviceFeature {
    match client.request(request, &[]).ok() {
        Reply::DeviceFeature(reply) => reply,
        other => panic!("{other:?}"),
    }
}

pub(crate) fn set_state(client: &mut TestClient, state: u32) -> vfu::framing::ReplyBody {
    let request = DeviceFeature::set(&MigDeviceState {
        device_state: state,
        data_fd: -1,
    });
    client.request(&request, &[]).body
}

pub(crate) fn eventfd() -> OwnedFd {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd")
}

/// The eventfd's counter (0 if it was not signalled).
pub(crate) fn eventfd_count(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

pub(crate) fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn socket_is_0600_busy_sockets_are_refused_and_stale_ones_replaced() {
    let mut server = TestServer::start("busy");
    let mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let err = Server::bind(&server.path).unwrap_err();
    assert!(matches!(err, ServerError::SocketBusy { .. }), "{err}");
    assert!(
        err.to_string().contains(&*server.path.to_string_lossy()),
        "{err}"
    );
    // The failed bind left the running server's socket alone.
    TestClient::negotiated(&server.path);
    server.stop().unwrap();

    // A socket file nobody listens on is replaced.
    let stale = socket_path("stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let replaced = Server::bind(&stale).expect("a stale socket is replaced");
    drop(replaced);
    assert!(
        !stale.exists(),
        "the server removes its socket file on drop"
    );

    // A regular file is not touched.
    let file = socket_path("file");
    std::fs::write(&file, b"not a socket").unwrap();
    let err = Server::bind(&file).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn qemu_proposal_negotiates_and_version_rules_hold() {
    let server = TestServer::start("qemu");
    let mut client = TestClient::connect(&server.path);

    // Anything before VERSION is refused, and the connection stays usable.
    let id = client.send(&DeviceInfo::request(), &[], false);
    assert_eq!(client.reply_to(id).errno(), Errno::EINVAL);

    client.send_raw(&qemu_version_message(7), &[]).unwrap();
    let reply = match client.reply_to(7).ok() {
        Reply::Version(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!((reply.major, reply.minor), (0, 0));
    let caps = reply.capabilities;
    assert_eq!(caps.max_msg_fds, 8);
    assert_eq!(caps.max_data_xfer_size, 1 << 20);
    assert_eq!(caps.pgsizes, 4096);
    assert_eq!(caps.max_dma_maps, 65535);
    assert!(caps.write_multiple);
    assert_eq!(
        caps.migration,
        Some(LegacyMigration {
            pgsize: 4096,
            max_bitmap_size: Some(268_435_456)
        }),
        "the legacy migration capability is echoed for QEMU"
    );

    // VERSION only once.
    client.send_raw(&qemu_version_message(8), &[]).unwrap();
    assert_eq!(client.reply_to(8).errno(), Errno::EINVAL);
    assert_eq!(get_info(&mut client).num_regions, device::NUM_REGIONS);
}

#[test]
fn incompatible_versions_are_refused_and_a_device_without_migration_gets_no_migration_capability() {
    let server = TestServer::start_with("nomig", device::without_migration());
    let mut client = TestClient::connect(&server.path);
    let mut bad = proposal(Capabilities::default());
    bad.major = 1;
    assert_eq!(client.request(&bad, &[]).errno(), Errno::ENOTSUP);
    // Malformed JSON.
    let mut payload = vec![0, 0, 0, 0];
    payload.extend_from_slice(b"{\"capabilities\": 5}\0");
    let header = Header::command(40, Command::VERSION, payload.len(), false);
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    client.send_raw(&bytes, &[]).unwrap();
    assert_eq!(client.reply_to(40).errno(), Errno::EINVAL);

    client.send_raw(&qemu_version_message(41), &[]).unwrap();
    match client.reply_to(41).ok() {
        Reply::Version(v) => assert_eq!(v.capabilities.migration, None),
        other => panic!("{other:?}"),
    }

    // Migration and logging features answer ENOTTY; so does the data stream.
    for request in [
        DeviceFeature::get(Feature::MIGRATION, 8),
        DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8),
        DeviceFeature::probe(Feature::MIGRATION, true, false),
        DeviceFeature::probe(Feature::DMA_LOGGING_START, false, true),
        DeviceFeature::set(&DmaLoggingStart {
            page_size: 4096,
            ranges: Vec::new(),
        }),
    ] {
        assert_eq!(
            client.request(&request, &[]).errno(),
            Errno::ENOTTY,
            "{request:?}"
        );
    }
    assert_eq!(
        client.request(&MigDataHead::read(16), &[]).errno(),
        Errno::ENOTTY
    );
    assert_eq!(get_info(&mut client).num_irqs, 5);
}

#[test]
fn device_info_regions_and_the_sparse_mmap_area_shares_memory_with_the_device() {
    let server = TestServer::start("regions");
    let mut client = TestClient::negotiated(&server.path);
    let info = get_info(&mut client);
    assert_eq!(info.flags(), DeviceInfoFlags::RESET | DeviceInfoFlags::PCI);
    assert_eq!((info.num_regions, info.num_irqs), (9, 5));

    // argsz too small for the capability chain: fixed part only, full argsz, no fd.
    let small = client.request(
        &RegionInfoRequest {
            argsz: 32,
            index: device::BAR0,
        },
        &[],
    );
    assert!(small.fds.is_empty());
    let Reply::DeviceGetRegionInfo(small) = small.ok() else {
        panic!("region info")
    };
    assert!(small.is_truncated());
    // QEMU refuses a truncated reply with CAPS set and cap_offset inside the fixed part.
    assert!(!small.info.flags.contains(RegionInfoFlags::CAPS));
    let full_argsz = small.argsz;
    assert_eq!(full_argsz, 32 + 16 + 16);

    let mut full = client.request(
        &RegionInfoRequest {
            argsz: full_argsz,
            index: device::BAR0,
        },
        &[],
    );
    assert_eq!(full.fds.len(), 1, "the BAR's fd comes with the full reply");
    let fd = full.fds.pop().unwrap();
    let Reply::DeviceGetRegionInfo(full) = full.ok() else {
        panic!("region info")
    };
    assert_eq!(full.info.size, device::BAR0_SIZE);
    let RegionCap::SparseMmap(areas) = &full.info.caps[0] else {
        panic!("{:?}", full.info.caps)
    };
    assert_eq!((areas[0].offset, areas[0].size), device::MMAP_AREA);

    // Map the area as a client would, and see the device's memory through it.
    let area = Mapping::from_fd(
        fd,
        full.info.offset + areas[0].offset,
        areas[0].size as usize,
        Protection::ReadWrite,
    )
    .unwrap();
    area.write(0x10, &0xdead_beef_u32.to_ne_bytes()).unwrap();
    let mut seen = [0; 4];
    server
        .device
        .region_memory(device::BAR0)
        .unwrap()
        .read(0x1010, &mut seen)
        .unwrap();
    assert_eq!(
        u32::from_ne_bytes(seen),
        0xdead_beef,
        "device sees the client's store"
    );
    assert_eq!(
        read_region(&mut client, device::BAR0, 0x1010, 4),
        0xdead_beef_u32.to_ne_bytes()
    );
    server
        .device
        .region_memory(device::BAR0)
        .unwrap()
        .write(0x1020, &[1, 2, 3])
        .unwrap();
    let mut back = [0; 3];
    area.read(0x20, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3], "client sees the device's store");

    // Config space has no fd; a region past the end is EINVAL.
    let config = client.request(
        &RegionInfoRequest {
            argsz: 64,
            index: device::CONFIG,
        },
        &[],
    );
    assert!(config.fds.is_empty());
    let request = RegionInfoRequest {
        argsz: 64,
        index: 9,
    };
    assert_eq!(client.request(&request, &[]).errno(), Errno::EINVAL);
    assert_eq!(
        client
            .request(
                &RegionIoFdsRequest {
                    argsz: 64,
                    flags: 0,
                    index: 0,
                    count: 0
                },
                &[]
            )
            .errno(),
        Errno::ENOTSUP
    );
    assert_eq!(get_info(&mut client).num_regions, 9);
}

#[test]
fn region_access_is_bounds_checked_and_limited_to_the_negotiated_transfer_size() {
    let server = TestServer::start("access");
    let mut client = TestClient::connect(&server.path);
    let caps = Capabilities {
        max_data_xfer_size: 4096,
        ..Capabilities::default()
    };
    client.request(&proposal(caps), &[]).ok();

    let ids = read_region(&mut client, device::CONFIG, 0, 4);
    assert_eq!(ids[..2], device::VENDOR_ID.to_le_bytes());
    assert_eq!(ids[2..], device::DEVICE_ID.to_le_bytes());

    let write = write_region(device::CONFIG, 0x40, &[9, 8, 7, 6]);
    match client.request(&write, &[]).ok() {
        Reply::RegionWrite(reply) => assert_eq!(reply.0.count, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read_region(&mut client, device::CONFIG, 0x40, 4),
        [9, 8, 7, 6]
    );

    let out_of_bounds = [
        (device::CONFIG, 252, 8),
        (device::CONFIG, u64::MAX - 2, 4),
        (device::BAR0, device::BAR0_SIZE, 1),
        (3, 0, 1),
        (99, 0, 1),
    ];
    for (region, offset, count) in out_of_bounds {
        let access = RegionAccess {
            offset,
            region,
            count,
        };
        let answer = client.request(&access, &[]);
        assert!(
            matches!(answer.body, vfu::framing::ReplyBody::Error(e) if e == Errno::EINVAL || e == Errno::EOVERFLOW),
            "{region}/{offset}/{count}: {answer:?}"
        );
        let write = write_region(region, offset, &vec![0; count as usize]);
        assert_ne!(client.request(&write, &[]).errno(), Errno::new(0));
    }
    // Above the negotiated 4 KiB: E2BIG, for reads and writes.
    let big = RegionAccess {
        offset: 0,
        region: device::BAR0,
        count: 8192,
    };
    assert_eq!(client.request(&big, &[]).errno(), Errno::E2BIG);
    let big_write = write_region(device::BAR0, 0, &[0; 8192]);
    assert_eq!(client.request(&big_write, &[]).errno(), Errno::E2BIG);
    assert_eq!(read_region(&mut client, device::BAR0, 0, 4096).len(), 4096);

    // REGION_WRITE_MULTI: every entry applied, wr_cnt in the reply; a bad entry is EINVAL.
    let multi = RegionWriteMulti {
        writes: vec![
            WriteMultiEntry::new(0x50, device::CONFIG, &[1, 2]),
            WriteMultiEntry::new(0x100, device::BAR0, &[3, 4, 5, 6, 7, 8, 9, 10]),
        ],
    };
    match client.request(&multi, &[]).ok() {
        Reply::RegionWriteMulti(reply) => assert_eq!(reply.wr_cnt, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_region(&mut client, device::CONFIG, 0x50, 2), [1, 2]);
    assert_eq!(
        read_region(&mut client, device::BAR0, 0x100, 8),
        [3, 4, 5, 6, 7, 8, 9, 10]
    );
    let bad = RegionWriteMulti {
        writes: vec![WriteMultiEntry::new(255, device::CONFIG, &[1, 2])],
    };
    assert_eq!(client.request(&bad, &[]).errno(), Errno::EINVAL);
    assert_eq!(get_info(&mut client).num_irqs, 5);
}

#[test]
fn no_reply_requests_get_no_reply_even_when_they_fail() {
    let server = TestServer::start("noreply");
    let mut client = TestClient::negotiated(&server.path);
    client.send(&write_region(device::CONFIG, 0x60, &[0xaa]), &[], true);
    client.send(&write_region(device::CONFIG, 0x1000, &[0xbb]), &[], true);
    let multi = RegionWriteMulti {
        writes: vec![WriteMultiEntry::new(0x61, device::CONFIG, &[0xcc])],
    };
    client.send(&multi, &[], true);
    // The next message on the wire is the reply to this read.
    assert_eq!(
        read_region(&mut client, device::CONFIG, 0x60, 2),
        [0xaa, 0xcc]
    );
}

#[test]
fn writes_that_return_at_once_are_carried_out_by_the_reader_but_never_ahead_of_earlier_requests() {
    // BAR0 as a slow register file, BAR2 as doorbells.
    const DOORBELLS: u32 = 2;
    let fake = vfu::fake::FakeDevice::builder()
        .region(device::BAR0, vfu::fake::FakeRegion::new(4096))
        .region(DOORBELLS, vfu::fake::FakeRegion::new(4096).writes_at_once())
        .regions(device::NUM_REGIONS)
        .build()
        .expect("the device");
    let server = TestServer::start_with("at-once", fake);
    let mut client = TestClient::negotiated(&server.path);
    let on = |i: usize| server.device.region_writes()[i].clone();
    let reader = Some("vfio-user-reader".to_owned());
    // Nothing ahead: the reader does it, with the reply a dispatched write gets. Right after
    // an exchange the dispatcher may still hold the session for a moment (its reply is out),
    // and then the write is dispatched, which is as correct: repeat it until the reader
    // carries one out, as it must once the dispatcher is idle.
    let mut done = 0;
    loop {
        client
            .request(&write_region(DOORBELLS, 8, &[1, 0, 0, 0]), &[])
            .ok();
        assert_eq!((on(done).region, on(done).offset), (DOORBELLS, 8));
        done += 1;
        if on(done - 1).thread == reader {
            break;
        }
        assert!(
            done < 100,
            "the reader never carried out a write with nothing ahead"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    client
        .request(&write_region(device::BAR0, 0, &[2]), &[])
        .ok();
    assert_ne!(on(done).thread, reader, "other writes are dispatched");
    // Out of bounds: refused the same way, not carried out.
    let id = client.send(&write_region(DOORBELLS, 4096, &[0; 4]), &[], false);
    assert_eq!(client.reply_to(id).errno(), Errno::EINVAL);
    // Malformed (a count that is not the data's length): the dispatcher refuses it.
    let id = client.next_id();
    let mut bytes = encode_request(id, &write_region(DOORBELLS, 8, &[9, 0, 0, 0]), false);
    bytes[16 + 12..16 + 16].copy_from_slice(&8u32.to_le_bytes());
    client.send_raw(&bytes, &[]).unwrap();
    assert_eq!(client.reply_to(id).errno(), Errno::EINVAL);
    assert_eq!(
        server.device.region_writes().len(),
        done + 1,
        "neither was carried out"
    );
    // Behind a write the device is still busy with, a doorbell waits its turn.
    server.device.hold_writes(device::BAR0, true);
    let slow = client.send(&write_region(device::BAR0, 4, &[3]), &[], false);
    let quick = client.send(&write_region(DOORBELLS, 12, &[4, 0, 0, 0]), &[], false);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.device.region_writes().len(),
        done + 1,
        "nothing overtook the slow write"
    );
    server.device.hold_writes(device::BAR0, false);
    client.reply_to(slow).ok();
    client.reply_to(quick).ok();
    assert_eq!(
        (
            on(done + 1).region,
            on(done + 1).offset,
            on(done + 2).region,
            on(done + 2).offset
        ),
        (device::BAR0, 4, DOORBELLS, 12)
    );
    assert_ne!(on(done + 2).thread, reader);
    let mut value = [0; 4];
    let memory = server.device.region_memory(DOORBELLS).unwrap();
    memory.read(12, &mut value).unwrap();
    assert_eq!(value, [4, 0, 0, 0]);
    // Posted doorbells (No_reply) are carried out, and get nothing back.
    client.send(&write_region(DOORBELLS, 16, &[5, 0, 0, 0]), &[], true);
    assert_eq!(read_region(&mut client, DOORBELLS, 16, 4), [5, 0, 0, 0]);
}

#[test]
fn irq_info_and_set_irqs_with_eventfds() {
    let server = TestServer::start("irqs");
    let mut client = TestClient::negotiated(&server.path);
    let info = IrqInfo {
        argsz: 16,
        flags: 0,
        index: device::MSIX,
        count: 0,
    };
    match client.request(&info, &[]).ok() {
        Reply::DeviceGetIrqInfo(reply) => {
            assert_eq!(reply.count, device::MSIX_VECTORS);
            assert_eq!(reply.index, device::MSIX);
            assert!(reply.flags().contains(vfu::irq::IrqInfoFlags::EVENTFD));
        }
        other => panic!("{other:?}"),
    }
    let missing = IrqInfo { index: 5, ..info };
    assert_eq!(client.request(&missing, &[]).errno(), Errno::EINVAL);

    let fds: Vec<OwnedFd> = (0..4).map(|_| eventfd()).collect();
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let assign = IrqSet {
        action: IrqAction::Trigger,
        data: IrqSetData::Eventfd,
        index: device::MSIX,
        start: 0,
        count: 4,
    };
    client.request(&assign, &borrowed).ok();
    assert_eq!(server.device.eventfd_count(device::MSIX), 4);
    assert!(server.device.signal(device::MSIX, 2));
    assert_eq!(
        eventfd_count(&fds[2]),
        1,
        "the device signals the client's eventfd"
    );
    assert_eq!(eventfd_count(&fds[1]), 0);

    // DATA_NONE trigger of vector 1; DATA_BOOL mask of vector 0 only.
    let trigger = IrqSet {
        action: IrqAction::Trigger,
        data: IrqSetData::None,
        index: device::MSIX,
        start: 1,
        count: 1,
    };
    client.request(&trigger, &[]).ok();
    assert_eq!(eventfd_count(&fds[1]), 1);
    assert_eq!(server.device.triggered(device::MSIX, 1), 1);
    let mask = IrqSet {
        action: IrqAction::Mask,
        data: IrqSetData::Bool(vec![true, false]),
        index: device::MSIX,
        start: 0,
        count: 2,
    };
    client.request(&mask, &[]).ok();
    assert_eq!(server.device.masked(device::MSIX), [0]);

    // Invalid: beyond the vectors, missing index, wrong number of fds, mask with count 0.
    let beyond = IrqSet {
        start: 3,
        count: 2,
        ..trigger.clone()
    };
    assert_eq!(client.request(&beyond, &[]).errno(), Errno::EINVAL);
    let no_index = IrqSet {
        index: 7,
        ..trigger.clone()
    };
    assert_eq!(client.request(&no_index, &[]).errno(), Errno::EINVAL);
    assert_eq!(
        client.request(&assign, &borrowed[..2]).errno(),
        Errno::EINVAL
    );
    let empty_mask = IrqSet {
        action: IrqAction::Mask,
        data: IrqSetData::None,
        index: device::MSIX,
        start: 0,
        count: 0,
    };
    assert_eq!(client.request(&empty_mask, &[]).errno(), Errno::EINVAL);
    assert_eq!(server.device.eventfd_count(device::MSIX), 4);

    // Eventfd data without fds de-assigns; DATA_NONE count 0 disables the whole index.
    let deassign = IrqSet {
        start: 3,
        count: 1,
        ..assign.clone()
    };
    client.request(&deassign, &[]).ok();
    assert_eq!(server.device.eventfd_count(device::MSIX), 3);
    let disable = IrqSet {
        action: IrqAction::Trigger,
        data: IrqSetData::None,
        index: device::MSIX,
        start: 0,
        count: 0,
    };
    client.request(&disable, &[]).ok();
    assert_eq!(server.device.eventfd_count(device::MSIX), 0);
}

pub(crate) fn dma_map(address: u64, size: u64, offset: u64, flags: DmaMapFlags) -> DmaMap {
    DmaMap {
        argsz: 32,
        flags: flags.bits(),
        offset,
        address,
        size,
    }
}

/// A DMA window as the device records it.
fn window(iova: u64, size: u64, writable: bool, mapped: bool) -> FakeWindow {
    FakeWindow {
        iova,
        size,
        writable,
        mapped,
    }
}

fn dma_unmap(address: u64, size: u64) -> DmaUnmap {
    DmaUnmap {
        argsz: 24,
        flags: 0,
        address,
        size,
    }
}

#[test]
fn dma_map_hands_client_memory_to_the_device_and_unmap_must_match() {
    let server = TestServer::start("dma");
    let mut client = TestClient::negotiated(&server.path);
    let memory = Mapping::memfd("guest-ram", 0x10000).unwrap();
    memory.write(0x2000, b"guest data").unwrap();
    let fd = memory.fd().unwrap();
    let rw = DmaMapFlags::READ | DmaMapFlags::WRITE;

    client
        .request(&dma_map(0x10_0000, 0x8000, 0, rw), &[fd])
        .ok();
    let mut buf = [0; 10];
    server.device.dma_read(0x10_2000, &mut buf).unwrap();
    assert_eq!(&buf, b"guest data", "the device reads the client's memory");
    server.device.dma_write(0x10_3000, b"from device").unwrap();
    let mut back = [0; 11];
    memory.read(0x3000, &mut back).unwrap();
    assert_eq!(&back, b"from device");

    // Overlaps are EEXIST, wherever they touch.
    for (address, size) in [(0x10_0000, 0x8000), (0xf_f000, 0x2000), (0x10_7000, 0x1000)] {
        let answer = client.request(&dma_map(address, size, 0, rw), &[fd]);
        assert_eq!(answer.errno(), Errno::EEXIST, "{address:#x}+{size:#x}");
    }
    // Beyond the end of the file, two fds, or an fd that cannot be mapped: EINVAL / the
    // mmap errno, and nothing is mapped.
    let beyond = client.request(&dma_map(0x20_0000, 0x10000, 0x8000, rw), &[fd]);
    assert_eq!(beyond.errno(), Errno::EINVAL);
    let two = client.request(&dma_map(0x20_0000, 0x1000, 0, rw), &[fd, fd]);
    assert_eq!(two.errno(), Errno::EINVAL);
    let socket = client.socket().try_clone_to_owned().unwrap();
    let unmappable = client.request(&dma_map(0x20_0000, 0x1000, 0, rw), &[socket.as_fd()]);
    assert_ne!(unmappable.errno(), Errno::new(0));
    assert_eq!(server.device.windows().len(), 1);

    // Read-only window: the device cannot write it. A window without an fd is reached with
    // DMA_READ/DMA_WRITE (see the trust tests).
    client
        .request(
            &dma_map(0x30_0000, 0x1000, 0x8000, DmaMapFlags::READ),
            &[fd],
        )
        .ok();
    assert_eq!(server.device.dma_write(0x30_0000, b"x"), Err(Errno::EFAULT));
    client.request(&dma_map(0x40_0000, 0x1000, 0, rw), &[]).ok();
    assert_eq!(
        server.device.windows(),
        [
            window(0x10_0000, 0x8000, true, true),
            window(0x30_0000, 0x1000, false, true),
            window(0x40_0000, 0x1000, true, false)
        ]
    );

    // Unmap must match a window exactly.
    for (address, size) in [
        (0x10_0000, 0x1000),
        (0x10_1000, 0x7000),
        (0x50_0000, 0x1000),
    ] {
        let answer = client.request(&dma_unmap(address, size), &[]);
        assert_eq!(answer.errno(), Errno::EINVAL);
    }
    match client.request(&dma_unmap(0x10_0000, 0x8000), &[]).ok() {
        Reply::DmaUnmap(reply) => assert_eq!(reply.0, Some(dma_unmap(0x10_0000, 0x8000))),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.device.windows().len(), 2);
    // The range is free again.
    client
        .request(&dma_map(0x10_0000, 0x1000, 0, rw), &[fd])
        .ok();
    let all = DmaUnmap {
        flags: DmaUnmapFlags::ALL.bits(),
        ..dma_unmap(0, 0)
    };
    client.request(&all, &[]).ok();
    assert!(server.device.windows().is_empty());
}

#[test]
fn reset_and_commands_the_server_does_not_take() {
    let server = TestServer::start("misc");
    let mut client = TestClient::negotiated(&server.path);
    client.request(&DeviceReset, &[]).ok();
    assert_eq!(server.device.resets(), 1);
    let dma_read = DmaAccess {
        address: 0,
        count: 8,
    };
    assert_eq!(client.request(&dma_read, &[]).errno(), Errno::EINVAL);
    for command in [
        Command::DIRTY_PAGES,
        Command(0),
        Command(19),
        Command(0xffff),
    ] {
        let header = Header::command(500, command, 0, false);
        client.send_raw(header.as_bytes(), &[]).unwrap();
        assert_eq!(client.reply_to(500).errno(), Errno::ENOTSUP, "{command:?}");
    }
    // A reply to nothing the server sent (replies are for its DMA_READ/DMA_WRITE) is dropped
    // without an answer; the next request is served. Bad type bits are an error.
    let mut reply = Header::command(501, Command::DEVICE_RESET, 0, false);
    reply.flags.set_msg_type(1);
    client.send_raw(reply.as_bytes(), &[]).unwrap();
    let mut bad_type = Header::command(503, Command::DEVICE_RESET, 0, false);
    bad_type.flags.set_msg_type(7);
    client.send_raw(bad_type.as_bytes(), &[]).unwrap();
    assert_eq!(client.reply_to(503).errno(), Errno::EINVAL);
    let fd = eventfd();
    assert_eq!(
        client.request(&DeviceReset, &[fd.as_fd()]).errno(),
        Errno::EINVAL
    );
    assert_eq!(server.device.resets(), 1);
    // Truncated body.
    let header = Header::command(502, Command::DEVICE_GET_INFO, 3, false);
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[1, 2, 3]);
    client.send_raw(&bytes, &[]).unwrap();
    assert_eq!(client.reply_to(502).errno(), Errno::EINVAL);
    assert_eq!(get_info(&mut client).num_regions, 9);
}

#[test]
fn migration_features_and_data_stream() {
    let server = TestServer::start("migration");
    let mut client = TestClient::negotiated(&server.path);
    let limits = Limits::default();

    let probe = DeviceFeature::probe(Feature::MIGRATION, true, false);
    assert_eq!(feature_reply(&mut client, &probe), probe, "probe echoes");
    let flags = feature_reply(&mut client, &DeviceFeature::get(Feature::MIGRATION, 8))
        .data_as::<FeatureMigration>(&limits)
        .unwrap();
    assert_eq!(flags.flags, 0b101, "STOP_COPY | PRE_COPY");
    let state = feature_reply(
        &mut client,
        &DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8),
    )
    .data_as::<MigDeviceState>(&limits)
    .unwrap();
    assert_eq!(
        state,
        MigDeviceState {
            device_state: DeviceState::Running.value(),
            data_fd: -1
        }
    );
    let size = feature_reply(&mut client, &DeviceFeature::get(Feature::MIG_DATA_SIZE, 8))
        .data_as::<MigDataSize>(&limits)
        .unwrap();
    assert_eq!(size.stop_copy_length, device::MIGRATION_BLOB.len() as u64);

    // Reading outside a saving state, writing outside RESUMING: EINVAL.
    assert_eq!(
        client.request(&MigDataHead::read(16), &[]).errno(),
        Errno::EINVAL
    );
    let write = MigDataWrite::new(vec![1, 2, 3]);
    assert_eq!(client.request(&write, &[]).errno(), Errno::EINVAL);

    // PRE_COPY: the blob in pieces, then short reads.
    assert!(matches!(
        set_state(&mut client, 6),
        vfu::framing::ReplyBody::Ok(_)
    ));
    let mut stream = Vec::new();
    loop {
        let Reply::MigDataRead(chunk) = client.request(&MigDataHead::read(64), &[]).ok() else {
            panic!("mig data")
        };
        let short = chunk.is_short(64);
        stream.extend_from_slice(&chunk.data);
        if short {
            break;
        }
    }
    assert_eq!(stream, device::MIGRATION_BLOB);
    // Above max_data_xfer_size: E2BIG.
    let huge = MigDataHead::read((1 << 20) + 1);
    assert_eq!(client.request(&huge, &[]).errno(), Errno::E2BIG);

    // STOP_COPY → PRE_COPY is refused by the device; the error reaches the client.
    assert!(matches!(
        set_state(&mut client, 3),
        vfu::framing::ReplyBody::Ok(_)
    ));
    assert_eq!(
        set_state(&mut client, 6),
        vfu::framing::ReplyBody::Error(Errno::EINVAL)
    );
    assert_eq!(
        set_state(&mut client, 9),
        vfu::framing::ReplyBody::Error(Errno::EINVAL)
    );
    let Reply::MigDataRead(end) = client.request(&MigDataHead::read(64), &[]).ok() else {
        panic!("mig data")
    };
    assert!(end.data.is_empty(), "end of stream in STOP_COPY");

    // RESUMING takes the stream.
    assert!(matches!(
        set_state(&mut client, 1),
        vfu::framing::ReplyBody::Ok(_)
    ));
    assert!(matches!(
        set_state(&mut client, 4),
        vfu::framing::ReplyBody::Ok(_)
    ));
    client.request(&MigDataWrite::new(vec![5; 10]), &[]).ok();
    client.request(&MigDataWrite::new(vec![6; 3]), &[]).ok();
    assert_eq!(server.device.resumed(), [vec![5; 10], vec![6; 3]].concat());
    assert_eq!(
        client.request(&MigDataHead::read(8), &[]).errno(),
        Errno::EINVAL
    );

    // Unknown feature: ENOTTY; a method the feature lacks: EINVAL.
    let unknown = DeviceFeature::get(Feature(3), 8);
    assert_eq!(client.request(&unknown, &[]).errno(), Errno::ENOTTY);
    let set_migration = DeviceFeature::probe(Feature::MIGRATION, false, true);
    assert_eq!(client.request(&set_migration, &[]).errno(), Errno::EINVAL);
}

#[test]
fn dma_logging_reports_device_writes() {
    let server = TestServer::start("logging");
    let mut client = TestClient::negotiated(&server.path);
    let limits = Limits::default();
    let memory = Mapping::memfd("logged-ram", 0x10000).unwrap();
    let rw = DmaMapFlags::READ | DmaMapFlags::WRITE;
    client
        .request(&dma_map(0, 0x10000, 0, rw), &[memory.fd().unwrap()])
        .ok();

    let probe = DeviceFeature::probe(Feature::DMA_LOGGING_REPORT, true, false);
    assert_eq!(feature_reply(&mut client, &probe), probe);
    let start = DeviceFeature::set(&DmaLoggingStart {
        page_size: 4096,
        ranges: Vec::new(),
    });
    feature_reply(&mut client, &start);
    server.device.dma_write(0x3008, &[1; 8]).unwrap();
    server.device.dma_write(0x9000, &[1; 8]).unwrap();

    let range = DmaLoggingReportRequest {
        iova: 0,
        length: 0x10000,
        page_size: 4096,
    };
    let report = feature_reply(&mut client, &DeviceFeature::get_report(&range))
        .data_as::<DmaLoggingReport>(&limits)
        .unwrap();
    assert_eq!(report.bitmap, [(1 << 3) | (1 << 9)]);
    // Read and clear.
    let again = feature_reply(&mut client, &DeviceFeature::get_report(&range))
        .data_as::<DmaLoggingReport>(&limits)
        .unwrap();
    assert_eq!(again.bitmap, [0]);
    // A bad page size is EINVAL; stop works.
    let bad = DmaLoggingReportRequest {
        page_size: 1000,
        ..range
    };
    assert_eq!(
        client
            .request(&DeviceFeature::get_report(&bad), &[])
            .errno(),
        Errno::EINVAL
    );
    let stop = DeviceFeature {
        argsz: 8,
        flags: FeatureFlags::new()
            .with_index(Feature::DMA_LOGGING_STOP.0)
            .with_set(true),
        data: Vec::new(),
    };
    assert_eq!(feature_reply(&mut client, &stop), stop);
    assert_eq!(
        client
            .request(&DeviceFeature::get_report(&range), &[])
            .errno(),
        Errno::EINVAL
    );
}

#[test]
fn messages_split_into_single_bytes_are_reassembled_with_their_fds() {
    let server = TestServer::start("split");
    let mut client = TestClient::negotiated(&server.path);
    let read = encode_request(
        900,
        &RegionAccess {
            offset: 0,
            region: device::CONFIG,
            count: 2,
        },
        false,
    );
    let memory = Mapping::memfd("split-ram", 0x1000).unwrap();
    memory.write(0, b"split").unwrap();
    let map = encode_request(901, &dma_map(0x1000, 0x1000, 0, DmaMapFlags::READ), false);
    for (i, byte) in read.iter().enumerate() {
        client.send_raw(std::slice::from_ref(byte), &[]).unwrap();
        if i % 7 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (i, byte) in map.iter().enumerate() {
        let fds = if i == 0 {
            vec![memory.fd().unwrap()]
        } else {
            Vec::new()
        };
        client.send_raw(std::slice::from_ref(byte), &fds).unwrap();
    }
    let Reply::RegionRead(ids) = client.reply_to(900).ok() else {
        panic!("region read")
    };
    assert_eq!(ids.data, device::VENDOR_ID.to_le_bytes());
    client.reply_to(901).ok();
    let mut buf = [0; 5];
    server.device.dma_read(0x1000, &mut buf).unwrap();
    assert_eq!(&buf, b"split");
}

#[test]
fn framing_errors_end_the_connection_and_the_next_client_is_served() {
    let server = TestServer::start("framing");
    for msg_size in [8, 15, u32::MAX] {
        let mut client = TestClient::negotiated(&server.path);
        let mut header = Header::command(1, Command::DEVICE_GET_INFO, 16, false);
        header.msg_size = msg_size;
        client.send_raw(header.as_bytes(), &[]).unwrap();
        assert!(
            client.wait_closed(),
            "msg_size {msg_size} closes the connection"
        );
    }
    let mut client = TestClient::negotiated(&server.path);
    assert_eq!(get_info(&mut client).num_regions, 9);
}

#[test]
fn reconnecting_keeps_device_state_drops_the_clients_resources_and_returns_to_running() {
    let server = TestServer::start("reconnect");
    let memory = Mapping::memfd("reconnect-ram", 0x1000).unwrap();
    let fd = eventfd();
    {
        let mut client = TestClient::negotiated(&server.path);
        client
            .request(&write_region(device::CONFIG, 0x80, &[0x5a]), &[])
            .ok();
        client
            .request(
                &dma_map(0, 0x1000, 0, DmaMapFlags::READ),
                &[memory.fd().unwrap()],
            )
            .ok();
        let assign = IrqSet {
            action: IrqAction::Trigger,
            data: IrqSetData::Eventfd,
            index: device::MSIX,
            start: 0,
            count: 1,
        };
        client.request(&assign, &[fd.as_fd()]).ok();
        assert!(matches!(
            set_state(&mut client, 1),
            vfu::framing::ReplyBody::Ok(_)
        ));
        assert_eq!(server.device.windows().len(), 1);
    }
    wait_for("disconnected()", || server.device.disconnects() == 1);
    assert!(server.device.windows().is_empty());
    assert_eq!(server.device.eventfd_count(device::MSIX), 0);

    let mut client = TestClient::negotiated(&server.path);
    assert_eq!(read_region(&mut client, device::CONFIG, 0x80, 1), [0x5a]);
    let state = feature_reply(
        &mut client,
        &DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8),
    )
    .data_as::<MigDeviceState>(&Limits::default())
    .unwrap();
    assert_eq!(
        state.device_state,
        DeviceState::Running.value(),
        "a client leaving in STOP leaves a running device (the seed's close semantics)"
    );
    // The window is gone for the server too: the same range maps again.
    client
        .request(
            &dma_map(0, 0x1000, 0, DmaMapFlags::READ),
            &[memory.fd().unwrap()],
        )
        .ok();
}

#[test]
fn stop_ends_serve_promptly_with_and_without_a_client() {
    let mut idle = TestServer::start("stop-idle");
    let started = Instant::now();
    idle.stop().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut busy = TestServer::start("stop-busy");
    let mut client = TestClient::negotiated(&busy.path);
    let started = Instant::now();
    busy.stop().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(busy.device.disconnects(), 1);
    assert!(client.wait_closed());
}

#[test]
fn serve_refuses_a_second_thread() {
    let path = socket_path("twice");
    let server = Arc::new(Server::bind(&path).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let device = Arc::new(device::new());
    let thread = {
        let (server, stop, device) = (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&device));
        std::thread::spawn(move || server.serve(device, &stop))
    };
    // Once the first serve runs, a client is answered.
    TestClient::negotiated(&path);
    let err = server.serve(device, &stop).unwrap_err();
    assert!(matches!(err, ServerError::AlreadyServing { .. }), "{err}");
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap().unwrap();
    assert_eq!(server.path(), path);
}
