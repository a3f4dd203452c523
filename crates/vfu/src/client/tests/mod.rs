//! Client tests against a fake server ([`fake`]) on a socket pair.

mod end_to_end;
mod fake;
mod relay;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::EventfdFlags;
use shmem::Mapping;
use shmem::Protection;
use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfio_migration::MigrationFlags;
use zerocopy::IntoBytes;

use self::fake::Answer;
use self::fake::Logged;
use self::fake::ServedDevice;
use self::fake::start;
use super::Client;
use super::ClientError;
use crate::access::RegionReadReply;
use crate::access::RegionWriteMultiReply;
use crate::access::WriteMultiEntry;
use crate::command::Command;
use crate::device::DeviceReset;
use crate::dma::DmaAccess;
use crate::dma::DmaMapReply;
use crate::dma::DmaUnmapReply;
use crate::feature::DeviceFeature;
use crate::feature::DmaLoggingReport;
use crate::feature::Feature;
use crate::feature::FeatureMigration;
use crate::feature::FeatureRequest;
use crate::feature::MigDataSize;
use crate::feature::MigDeviceState;
use crate::framing::ReplyBody;
use crate::framing::encode_request;
use crate::irq::IrqAction;
use crate::irq::IrqInfo;
use crate::irq::IrqSet;
use crate::irq::IrqSetData;
use crate::irq::IrqSetReply;
use crate::limits::Limits;
use crate::message::Reply;
use crate::message::Request;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWriteReply;
use crate::region::RegionCap;
use crate::region::RegionInfo;
use crate::region::RegionInfoFlags;
use crate::region::SparseMmapArea;
use crate::version::Capabilities;

/// A handler for tests whose requests all happen at connect time.
fn no_requests(
    _: &mut fake::Conn,
    _: &crate::header::Header,
    r: &Request,
    _: Vec<OwnedFd>,
) -> Answer {
    panic!("unexpected request {r:?}")
}

/// A BAR0-like region: 16 KiB, read/write/mmap, doorbell page 0x1000 mappable, backed by a
/// memfd the test keeps to look at the server's side.
fn bar0(areas: Vec<SparseMmapArea>, size: u64) -> (RegionInfo, Option<OwnedFd>, Mapping) {
    let memory = Mapping::memfd("fake-bar0", size as usize).unwrap();
    let fd = memory.fd().unwrap().try_clone_to_owned().unwrap();
    let info = RegionInfo {
        flags: RegionInfoFlags::READ | RegionInfoFlags::WRITE | RegionInfoFlags::MMAP,
        index: 0,
        size,
        offset: 0,
        caps: vec![RegionCap::SparseMmap(areas)],
    };
    (info, Some(fd), memory)
}

fn plain_region(index: u32, size: u64) -> (RegionInfo, Option<OwnedFd>) {
    let info = RegionInfo {
        flags: RegionInfoFlags::READ,
        index,
        size,
        offset: 0,
        caps: vec![],
    };
    (info, None)
}

fn commands(log: &[Logged]) -> Vec<Command> {
    log.iter().map(|l| l.request.command()).collect()
}

#[test]
fn the_client_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<ClientError>();
}

#[test]
fn connect_negotiates_and_learns_every_region() {
    let (info, fd, _memory) = bar0(
        vec![SparseMmapArea {
            offset: 0x1000,
            size: 0x1000,
        }],
        0x4000,
    );
    let device = ServedDevice {
        regions: vec![(info.clone(), fd), plain_region(1, 0x100)],
        ..ServedDevice::default()
    };
    let (client, server) = start(device, no_requests);
    let client = client.unwrap();
    assert_eq!(client.negotiated().minor, 2);
    assert_eq!(client.negotiated().capabilities.max_msg_fds, 8);
    assert_eq!(client.device_info().num_regions, 2);
    assert_eq!(client.device_info().num_irqs, 5);
    assert_eq!(client.region_info(0).unwrap().caps, info.caps);
    assert!(
        client
            .region_info(0)
            .unwrap()
            .flags
            .contains(RegionInfoFlags::CAPS)
    );
    assert_eq!(client.region_info(1).unwrap().size, 0x100);
    assert!(client.region_info(2).is_none());
    assert!(client.region_fd(0).is_some());
    assert!(client.region_fd(1).is_none());
    assert_eq!(client.max_data_xfer_size(), 1 << 20);
    assert_eq!(client.timeout(), Duration::from_secs(2));
    drop(client);

    let log = server.join();
    assert_eq!(
        commands(&log),
        [
            Command::VERSION,
            Command::DEVICE_GET_INFO,
            Command::DEVICE_GET_REGION_INFO,
            Command::DEVICE_GET_REGION_INFO
        ]
    );
    let Request::Version(proposal) = &log[0].request else {
        panic!("first request is not VERSION");
    };
    assert_eq!((proposal.major, proposal.minor), (0, 2));
    assert_eq!(
        proposal.capabilities,
        Capabilities {
            max_msg_fds: 16,
            write_multiple: true,
            ..Capabilities::default()
        }
    );
    assert!(matches!(
        log[3].request,
        Request::DeviceGetRegionInfo(r) if r.index == 1 && r.argsz == 128
    ));
}

#[test]
fn negotiation_rejects_replies_that_break_the_rules() {
    let bad = [
        (
            "minor",
            ServedDevice {
                minor: 3,
                ..ServedDevice::default()
            },
        ),
        (
            "pgsizes",
            ServedDevice {
                capabilities: Capabilities {
                    pgsizes: 8192,
                    ..Capabilities::default()
                },
                ..ServedDevice::default()
            },
        ),
        (
            "max_data_xfer_size",
            ServedDevice {
                capabilities: Capabilities {
                    max_data_xfer_size: 0,
                    ..Capabilities::default()
                },
                ..ServedDevice::default()
            },
        ),
    ];
    for (field, device) in bad {
        let (client, server) = start(device, no_requests);
        let err = client.unwrap_err();
        assert!(matches!(err, ClientError::Negotiation(_)), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert_eq!(commands(&server.join()), [Command::VERSION], "{field}");
    }
}

#[test]
fn map_sparse_maps_the_area_through_the_region_fd() {
    let (info, fd, memory) = bar0(
        vec![SparseMmapArea {
            offset: 0x1000,
            size: 0x1000,
        }],
        0x4000,
    );
    let whole = Mapping::memfd("fake-whole", 0x2000).unwrap();
    let whole_info = RegionInfo {
        flags: RegionInfoFlags::READ | RegionInfoFlags::MMAP,
        index: 2,
        size: 0x2000,
        offset: 0,
        caps: vec![],
    };
    let device = ServedDevice {
        regions: vec![
            (info, fd),
            plain_region(1, 0x100),
            (
                whole_info,
                Some(whole.fd().unwrap().try_clone_to_owned().unwrap()),
            ),
        ],
        ..ServedDevice::default()
    };
    let (client, server) = start(device, no_requests);
    let client = client.unwrap();

    memory.write(0x1010, b"doorbell page").unwrap();
    let areas = client.map_sparse(0).unwrap();
    assert_eq!(areas.len(), 1);
    let (offset, mapping) = &areas[0];
    assert_eq!(*offset, 0x1000);
    assert_eq!(mapping.len(), 0x1000);
    assert_eq!(mapping.protection(), Protection::ReadWrite);
    let mut seen = [0; 13];
    mapping.read(0x10, &mut seen).unwrap();
    assert_eq!(&seen, b"doorbell page");
    // A doorbell store through the client's mapping lands in the server's memory.
    mapping
        .atomic_u32(0x8)
        .unwrap()
        .store(0xabcd, std::sync::atomic::Ordering::Release);
    let mut word = [0; 4];
    memory.read(0x1008, &mut word).unwrap();
    assert_eq!(u32::from_ne_bytes(word), 0xabcd);

    // No sparse capability: the whole region, read-only as the region is.
    whole.write(0x1ff0, b"end").unwrap();
    let areas = client.map_sparse(2).unwrap();
    assert_eq!(areas.len(), 1);
    assert_eq!(areas[0].0, 0);
    assert_eq!(areas[0].1.protection(), Protection::ReadOnly);
    let mut end = [0; 3];
    areas[0].1.read(0x1ff0, &mut end).unwrap();
    assert_eq!(&end, b"end");

    let err = client.map_sparse(1).unwrap_err();
    assert!(
        err.to_string()
            .contains("region 1: the region is not mmappable"),
        "{err}"
    );
    let err = client.map_sparse(7).unwrap_err();
    assert!(err.to_string().contains("no such region"), "{err}");
    drop(client);
    server.join();
}

#[test]
fn map_sparse_refuses_areas_outside_the_region() {
    let (info, fd, _memory) = bar0(
        vec![SparseMmapArea {
            offset: 0x3000,
            size: 0x2000,
        }],
        0x4000,
    );
    let device = ServedDevice {
        regions: vec![(info, fd)],
        ..ServedDevice::default()
    };
    let (client, server) = start(device, no_requests);
    let err = client.unwrap().map_sparse(0).unwrap_err();
    assert!(
        err.to_string().contains("outside the 0x4000-byte region"),
        "{err}"
    );
    server.join();
}

#[test]
fn truncated_region_info_is_asked_again_with_the_larger_argsz() {
    let areas: Vec<SparseMmapArea> = (0..20)
        .map(|i| SparseMmapArea {
            offset: i * 0x1000,
            size: 0x800,
        })
        .collect();
    let (info, fd, _memory) = bar0(areas.clone(), 0x20000);
    let device = ServedDevice {
        regions: vec![(info, fd)],
        ..ServedDevice::default()
    };
    let (client, server) = start(device, no_requests);
    let client = client.unwrap();
    assert_eq!(
        client.region_info(0).unwrap().caps,
        vec![RegionCap::SparseMmap(areas)]
    );
    assert!(client.region_fd(0).is_some());
    assert_eq!(client.map_sparse(0).unwrap().len(), 20);
    drop(client);
    let argsz: Vec<u32> = server
        .join()
        .iter()
        .filter_map(|l| match l.request {
            Request::DeviceGetRegionInfo(r) => Some(r.argsz),
            _ => None,
        })
        .collect();
    assert_eq!(argsz, [128, 32 + 16 + 20 * 16]);
}

#[test]
fn dma_map_passes_the_memory_fd() {
    let (tx, rx) = mpsc::channel();
    let (client, server) =
        start(
            ServedDevice::default(),
            move |_, _, request, mut fds| match request {
                Request::DmaMap(map) => {
                    if let Some(fd) = fds.pop() {
                        let mapping = Mapping::from_fd(
                            fd,
                            map.offset,
                            map.size as usize,
                            Protection::ReadOnly,
                        )
                        .unwrap();
                        let mut head = [0; 6];
                        mapping.read(0, &mut head).unwrap();
                        tx.send(head).unwrap();
                    }
                    Answer::ok(Reply::DmaMap(DmaMapReply))
                }
                Request::DmaUnmap(unmap) => {
                    Answer::ok(Reply::DmaUnmap(DmaUnmapReply(Some(*unmap))))
                }
                other => panic!("unexpected {other:?}"),
            },
        );
    let mut client = client.unwrap();
    let memory = Mapping::memfd("guest-ram", 0x3000).unwrap();
    memory.write(0x1000, b"guest!").unwrap();
    client
        .dma_map(0x10_0000, 0x2000, true, memory.fd(), 0x1000)
        .unwrap();
    assert_eq!(&rx.recv().unwrap(), b"guest!");
    client
        .dma_map(0x20_0000, 0x1000, false, None, 0x55)
        .unwrap();
    client.dma_unmap(0x10_0000, 0x2000).unwrap();
    drop(client);

    let log = server.join();
    let maps: Vec<_> = log
        .iter()
        .filter_map(|l| match &l.request {
            Request::DmaMap(m) => Some((m.address, m.size, m.flags, m.offset, l.fds)),
            _ => None,
        })
        .collect();
    assert_eq!(
        maps,
        [
            (0x10_0000, 0x2000, 3, 0x1000, 1),
            (0x20_0000, 0x1000, 1, 0, 0)
        ]
    );
    assert!(matches!(
        log.last().unwrap().request,
        Request::DmaUnmap(u) if u.address == 0x10_0000 && u.size == 0x2000
    ));
}

fn eventfd() -> OwnedFd {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()
}

fn read_eventfd(fd: &OwnedFd) -> u64 {
    let mut value = [0; 8];
    rustix::io::read(fd, &mut value).unwrap();
    u64::from_ne_bytes(value)
}

#[test]
fn set_irqs_passes_eventfds_the_server_signals() {
    let device = ServedDevice {
        capabilities: Capabilities {
            max_msg_fds: 2,
            ..ServedDevice::default().capabilities
        },
        ..ServedDevice::default()
    };
    let (client, server) = start(device, |_, _, request, fds| match request {
        Request::DeviceSetIrqs(set) => {
            for (vector, fd) in set.eventfd_slots(fds).unwrap() {
                if let Some(fd) = fd {
                    let value = u64::from(vector) + 1;
                    rustix::io::write(&fd, &value.to_ne_bytes()).unwrap();
                }
            }
            Answer::ok(Reply::DeviceSetIrqs(IrqSetReply))
        }
        Request::DeviceGetIrqInfo(info) => Answer::ok(Reply::DeviceGetIrqInfo(IrqInfo {
            argsz: 16,
            flags: 3,
            index: info.index,
            count: 4,
        })),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    assert_eq!(client.irq_info(2).unwrap().count, 4);
    let fds: Vec<OwnedFd> = (0..3).map(|_| eventfd()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    client.set_irq_eventfds(2, 0, &borrowed).unwrap();
    for (vector, fd) in fds.iter().enumerate() {
        assert_eq!(read_eventfd(fd), vector as u64 + 1, "vector {vector}");
    }
    client.irq_action(2, IrqAction::Mask, 1, 1).unwrap();
    client.disable_irqs(2).unwrap();
    let wrong = IrqSet {
        action: IrqAction::Trigger,
        data: IrqSetData::Eventfd,
        index: 2,
        start: 0,
        count: 2,
    };
    let err = client.set_irqs(&wrong, &borrowed).unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument { .. }), "{err}");
    drop(client);

    let sets: Vec<(IrqSet, usize)> = server
        .join()
        .into_iter()
        .filter_map(|l| match l.request {
            Request::DeviceSetIrqs(set) => Some((set, l.fds)),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 4, "the wrong request was not sent");
    assert_eq!((sets[0].0.start, sets[0].0.count, sets[0].1), (0, 2, 2));
    assert_eq!((sets[1].0.start, sets[1].0.count, sets[1].1), (2, 1, 1));
    assert_eq!(sets[2].0.action, IrqAction::Mask);
    assert_eq!((sets[2].0.start, sets[2].0.count), (1, 1));
    assert!(sets[3].0.disables_all());
}

#[test]
fn error_replies_name_the_command_and_keep_the_connection() {
    let (client, server) = start(ServedDevice::default(), |_, _, request, _| match request {
        Request::RegionRead(_) => Answer::Error(Errno::EINVAL),
        Request::DeviceReset(_) => Answer::ok(Reply::DeviceReset(DeviceReset)),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    let err = client.region_read(0, 0x1c, 4).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Errno {
                command: Command::REGION_READ,
                errno: Errno::EINVAL
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "REGION_READ failed on the server with errno 22 (EINVAL)"
    );
    // A timeout too large for the clock waits as long as it can instead of panicking.
    client.set_timeout(Duration::MAX).unwrap();
    client.reset().unwrap();
    drop(client);
    server.join();
}

#[test]
fn a_timed_out_request_fails_and_its_late_reply_is_dropped() {
    let mut late = None;
    let (client, server) =
        start(
            ServedDevice::default(),
            move |conn, header, request, _| match request {
                Request::DeviceReset(_) => {
                    late = Some(*header);
                    Answer::Silent
                }
                Request::RegionRead(access) => {
                    let reset = late.take().expect("the reset came first");
                    conn.reply(&reset, &Reply::DeviceReset(DeviceReset), &[]);
                    Answer::ok(Reply::RegionRead(RegionReadReply {
                        offset: access.offset,
                        region: access.region,
                        data: vec![7; access.count as usize],
                    }))
                }
                other => panic!("unexpected {other:?}"),
            },
        );
    let mut client = client.unwrap();
    client.set_timeout(Duration::from_millis(100)).unwrap();
    let err = client.reset().unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                command: Command::DEVICE_RESET,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("DEVICE_RESET: no reply within 100ms"),
        "{err}"
    );
    assert!(!client.is_closed());
    assert_eq!(client.region_read(0, 8, 4).unwrap(), [7; 4]);
    drop(client);
    server.join();
}

#[test]
fn a_server_flooding_other_messages_cannot_hold_a_request_past_its_timeout() {
    let (client, server) = start(
        ServedDevice::default(),
        |conn, _, request, _| match request {
            Request::DeviceReset(_) => {
                let dma_read = DmaAccess {
                    address: 0,
                    count: 8,
                };
                let flood = encode_request(1, &dma_read, true);
                while conn.try_send(&flood).is_ok() {}
                Answer::Silent
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let mut client = client.unwrap();
    client.set_timeout(Duration::from_millis(100)).unwrap();
    let started = std::time::Instant::now();
    let err = client.reset().unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
    server.join();
}

#[test]
fn server_commands_outside_served_memory_get_efault_and_others_enotsup() {
    let (client, server) = start(
        ServedDevice::default(),
        |conn, _, request, _| match request {
            Request::DeviceReset(_) => {
                let dma_read = DmaAccess {
                    address: 0x1000,
                    count: 8,
                };
                conn.send(&encode_request(77, &dma_read, false), &[]);
                let answer = conn.next_message();
                assert_eq!(answer.header.msg_id, 77);
                assert_eq!(answer.header.command, Command::DMA_READ);
                assert_eq!(
                    answer.decode_reply(&Limits::default()).unwrap(),
                    ReplyBody::Error(Errno::EFAULT)
                );
                conn.send(&encode_request(78, &DeviceReset, false), &[]);
                let answer = conn.next_message();
                assert_eq!(
                    answer.decode_reply(&Limits::default()).unwrap(),
                    ReplyBody::Error(Errno::ENOTSUP)
                );
                Answer::ok(Reply::DeviceReset(DeviceReset))
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let mut client = client.unwrap();
    client.reset().unwrap();
    drop(client);
    server.join();
}

#[test]
fn served_windows_answer_dma_read_and_write_while_the_client_is_idle() {
    let (done_tx, done_rx) = mpsc::channel();
    let (client, server) =
        start(
            ServedDevice::default(),
            move |conn, header, request, _| match request {
                Request::DmaMap(map) => {
                    assert_eq!((map.address, map.size), (0x10_0000, 0x2000));
                    assert_eq!(map.offset, 0);
                    conn.reply(header, &Reply::DmaMap(DmaMapReply), &[]);
                    // The client has its reply and is idle: its reader answers anyway.
                    let write = crate::dma::DmaWrite {
                        address: 0x10_1ff0,
                        data: b"from the server!".to_vec(),
                    };
                    conn.send(&encode_request(5, &write, false), &[]);
                    let answer = conn.next_message();
                    assert!(matches!(
                        answer.decode_reply(&Limits::default()).unwrap(),
                        ReplyBody::Ok(Reply::DmaWrite(_))
                    ));
                    let read = DmaAccess {
                        address: 0x10_1ff0,
                        count: 16,
                    };
                    conn.send(&encode_request(6, &read, false), &[]);
                    match conn
                        .next_message()
                        .decode_reply(&Limits::default())
                        .unwrap()
                    {
                        ReplyBody::Ok(Reply::DmaRead(reply)) => {
                            assert_eq!(reply.data, b"from the server!");
                        }
                        other => panic!("{other:?}"),
                    }
                    // Spanning the window's end: EFAULT.
                    let beyond = DmaAccess {
                        address: 0x10_1ff8,
                        count: 16,
                    };
                    conn.send(&encode_request(7, &beyond, false), &[]);
                    assert_eq!(
                        conn.next_message()
                            .decode_reply(&Limits::default())
                            .unwrap(),
                        ReplyBody::Error(Errno::EFAULT)
                    );
                    done_tx.send(()).unwrap();
                    Answer::Silent
                }
                Request::DeviceReset(_) => Answer::ok(Reply::DeviceReset(DeviceReset)),
                Request::DmaUnmap(unmap) => {
                    Answer::ok(Reply::DmaUnmap(DmaUnmapReply(Some(*unmap))))
                }
                other => panic!("unexpected {other:?}"),
            },
        );
    let mut client = client.unwrap();
    let memory = std::sync::Arc::new(Mapping::anonymous(0x2000).unwrap());
    client
        .dma_map_served(0x10_0000, memory.clone(), true)
        .unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server's DMA exchange completed");
    let mut back = [0u8; 16];
    memory.read(0x1ff0, &mut back).unwrap();
    assert_eq!(&back, b"from the server!");
    client.reset().unwrap();
    client.dma_unmap(0x10_0000, 0x2000).unwrap();
    drop(client);
    server.join();
}

#[test]
fn a_framing_error_closes_the_client() {
    let (client, server) = start(
        ServedDevice::default(),
        |_, header, request, _| match request {
            Request::DeviceReset(_) => {
                let mut bad = header.reply(0);
                bad.msg_size = 8;
                Answer::Raw(bad.as_bytes().to_vec())
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let mut client = client.unwrap();
    let err = client.reset().unwrap_err();
    assert!(matches!(err, ClientError::Framing { .. }), "{err}");
    assert!(err.to_string().contains("msg_size 8"), "{err}");
    assert!(client.is_closed());
    let err = client.region_read(0, 0, 4).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                command: Command::REGION_READ,
                ..
            }
        ),
        "{err}"
    );
    drop(client);
    assert_eq!(
        server.join().last().unwrap().request.command(),
        Command::DEVICE_RESET
    );
}

#[test]
fn a_disconnect_closes_the_client() {
    let (client, server) = start(ServedDevice::default(), |_, _, _, _| Answer::Hangup);
    let mut client = client.unwrap();
    let err = client.reset().unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Disconnected {
                command: Command::DEVICE_RESET
            }
        ),
        "{err}"
    );
    assert!(matches!(
        client.reset().unwrap_err(),
        ClientError::Closed { .. }
    ));
    server.join();
}

/// `err` refuses a 4,097-byte REGION_WRITE against a 4,096-byte `max_data_xfer_size`.
fn assert_region_write_count_too_large(err: &ClientError) {
    assert!(
        matches!(
            err,
            ClientError::TooLarge {
                command: Command::REGION_WRITE,
                field: "count",
                value: 4097,
                limit: 4096
            }
        ),
        "{err}"
    );
}

#[test]
fn requests_beyond_the_negotiated_limits_are_not_sent() {
    let device = ServedDevice {
        capabilities: Capabilities {
            max_data_xfer_size: 4096,
            write_multiple: false,
            ..ServedDevice::default().capabilities
        },
        ..ServedDevice::default()
    };
    let (client, server) = start(device, |_, _, request, _| match request {
        Request::RegionWrite(write) => Answer::ok(Reply::RegionWrite(write.reply())),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    assert_eq!(client.max_data_xfer_size(), 4096);
    let err = client.region_write(0, 0, &[0; 4097]).unwrap_err();
    assert_region_write_count_too_large(&err);
    assert!(err.to_string().contains("was not sent"));
    assert!(matches!(
        client.region_read(0, 0, 4097).unwrap_err(),
        ClientError::TooLarge {
            command: Command::REGION_READ,
            ..
        }
    ));
    let entry = WriteMultiEntry::new(0x14, 0, &[1, 0, 0, 0]);
    assert!(matches!(
        client.region_write_multi(&[entry]).unwrap_err(),
        ClientError::InvalidArgument {
            command: Command::REGION_WRITE_MULTI,
            ..
        }
    ));
    client.region_write(0, 0x14, &[0; 4096]).unwrap();
    assert!(!client.is_closed());
    drop(client);
    let log = server.join();
    assert_eq!(commands(&log).last(), Some(&Command::REGION_WRITE));
    assert_eq!(
        commands(&log)
            .iter()
            .filter(|&&c| c == Command::REGION_WRITE)
            .count(),
        1
    );
}

#[test]
fn posted_writes_arrive_as_no_reply_region_writes_in_order() {
    let device = ServedDevice {
        capabilities: Capabilities {
            max_data_xfer_size: 4096,
            ..ServedDevice::default().capabilities
        },
        ..ServedDevice::default()
    };
    let (client, server) = start(device, |_, header, request, _| match request {
        Request::RegionWrite(_) if header.flags.no_reply() => Answer::Silent,
        Request::RegionWrite(write) => Answer::ok(Reply::RegionWrite(write.reply())),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    let posted = client.posted_writer();
    for tail in 0..3u32 {
        posted.region_write(0, 0x1008, &tail.to_le_bytes()).unwrap();
    }
    let err = posted.region_write(0, 0x1008, &[0; 4097]).unwrap_err();
    assert_region_write_count_too_large(&err);
    // A synchronous request after the posted ones is answered after them.
    client.region_write(0, 0x100c, &[9, 0, 0, 0]).unwrap();
    drop(client);
    drop(posted);
    let writes: Vec<(u64, Vec<u8>)> = server
        .join()
        .into_iter()
        .filter_map(|l| match l.request {
            Request::RegionWrite(w) => Some((w.offset, w.data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes,
        [
            (0x1008, vec![0, 0, 0, 0]),
            (0x1008, vec![1, 0, 0, 0]),
            (0x1008, vec![2, 0, 0, 0]),
            (0x100c, vec![9, 0, 0, 0]),
        ]
    );
}

#[test]
fn a_full_size_transfer_crosses_the_socket_in_pieces() {
    let (client, server) = start(ServedDevice::default(), |_, _, request, _| match request {
        Request::RegionWrite(write) => Answer::ok(Reply::RegionWrite(write.reply())),
        Request::RegionRead(access) => Answer::ok(Reply::RegionRead(RegionReadReply {
            offset: access.offset,
            region: access.region,
            data: (0..access.count).map(|i| (i % 253) as u8).collect(),
        })),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    let max = client.max_data_xfer_size();
    let data: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    client.region_write(1, 0, &data).unwrap();
    let read = client.region_read(1, 0, max).unwrap();
    assert_eq!(read.len(), 1 << 20);
    assert!(read.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
    drop(client);
    let log = server.join();
    assert!(matches!(&log[log.len() - 2].request, Request::RegionWrite(w) if w.data == data));
}

#[test]
fn region_write_multi_is_batched() {
    let (client, server) = start(ServedDevice::default(), |_, _, request, _| match request {
        Request::RegionWriteMulti(multi) => {
            Answer::ok(Reply::RegionWriteMulti(RegionWriteMultiReply {
                wr_cnt: multi.writes.len() as u64,
            }))
        }
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    let writes: Vec<WriteMultiEntry> = (0..250u32)
        .map(|i| WriteMultiEntry::new(u64::from(i) * 4, 0, &i.to_ne_bytes()))
        .collect();
    client.region_write_multi(&writes).unwrap();
    drop(client);
    let batches: Vec<Vec<WriteMultiEntry>> = server
        .join()
        .into_iter()
        .filter_map(|l| match l.request {
            Request::RegionWriteMulti(m) => Some(m.writes),
            _ => None,
        })
        .collect();
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [200, 50]);
    assert_eq!(batches.concat(), writes);
}

/// A migration source/destination: state, a 9000-byte outgoing stream, the incoming bytes.
#[test]
fn migration_helpers_chunk_the_stream_and_stop_at_a_short_read() {
    let device = ServedDevice {
        capabilities: Capabilities {
            max_data_xfer_size: 4096,
            ..ServedDevice::default().capabilities
        },
        ..ServedDevice::default()
    };
    let stream: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    let outgoing = stream.clone();
    let mut position = 0;
    let mut state = DeviceState::Running;
    let (client, server) = start(device, move |_, _, request, _| match request {
        Request::DeviceFeature(feature) => {
            match feature.parse_request(&Limits::default()).unwrap() {
                FeatureRequest::GetMigration => {
                    let flags = MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY;
                    let data = FeatureMigration {
                        flags: flags.bits(),
                    };
                    Answer::ok(Reply::DeviceFeature(DeviceFeature::get_reply(
                        feature, &data,
                    )))
                }
                FeatureRequest::GetMigDeviceState => {
                    let data = MigDeviceState::new(state);
                    Answer::ok(Reply::DeviceFeature(DeviceFeature::get_reply(
                        feature, &data,
                    )))
                }
                FeatureRequest::SetMigDeviceState(new) => {
                    state = new;
                    Answer::ok(Reply::DeviceFeature(feature.clone()))
                }
                FeatureRequest::GetMigDataSize => {
                    let data = MigDataSize {
                        stop_copy_length: 9000,
                    };
                    Answer::ok(Reply::DeviceFeature(DeviceFeature::get_reply(
                        feature, &data,
                    )))
                }
                FeatureRequest::Probe {
                    feature: Feature::MIG_DATA_SIZE,
                    ..
                } => Answer::ok(Reply::DeviceFeature(feature.clone())),
                FeatureRequest::Probe { .. } => Answer::Error(Errno::ENOTTY),
                other => panic!("unexpected {other:?}"),
            }
        }
        Request::MigDataRead(head) => {
            let end = (position + head.size as usize).min(outgoing.len());
            let data = outgoing[position..end].to_vec();
            position = end;
            Answer::ok(Reply::MigDataRead(MigDataReadReply { data }))
        }
        Request::MigDataWrite(_) => Answer::ok(Reply::MigDataWrite(MigDataWriteReply)),
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    assert_eq!(
        client.migration_flags().unwrap(),
        MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY
    );
    assert_eq!(client.migration_state().unwrap(), DeviceState::Running);
    client.set_migration_state(DeviceState::StopCopy).unwrap();
    assert_eq!(client.migration_state().unwrap(), DeviceState::StopCopy);
    assert_eq!(client.mig_data_size().unwrap(), 9000);
    assert!(
        client
            .feature_probe(Feature::MIG_DATA_SIZE, true, false)
            .unwrap()
    );
    assert!(
        !client
            .feature_probe(Feature::DMA_LOGGING_START, false, true)
            .unwrap()
    );

    assert_eq!(client.mig_data_read(100_000).unwrap(), stream);
    assert!(
        client.mig_data_read(10).unwrap().is_empty(),
        "end of stream"
    );
    assert!(client.mig_data_read(0).unwrap().is_empty());
    let incoming: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
    client.mig_data_write(&incoming).unwrap();
    client.mig_data_write(&[]).unwrap();
    drop(client);

    let log = server.join();
    let reads: Vec<u32> = log
        .iter()
        .filter_map(|l| match l.request {
            Request::MigDataRead(h) => Some(h.size),
            _ => None,
        })
        .collect();
    assert_eq!(
        reads,
        [4096, 4096, 4096, 10],
        "the 808-byte reply ends the first read"
    );
    let writes: Vec<&[u8]> = log
        .iter()
        .filter_map(|l| match &l.request {
            Request::MigDataWrite(w) => Some(w.data.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes.iter().map(|w| w.len()).collect::<Vec<_>>(),
        [4096, 4096, 1808]
    );
    assert_eq!(writes.concat(), incoming);
    assert!(log.iter().any(|l| matches!(
        &l.request,
        Request::DeviceFeature(f) if f.data_as::<MigDeviceState>(&Limits::default())
            == Ok(MigDeviceState { device_state: 3, data_fd: -1 })
    )));
}

#[test]
fn dma_logging_start_report_and_stop() {
    let (client, server) = start(ServedDevice::default(), |_, _, request, _| match request {
        Request::DeviceFeature(feature) => match feature.parse_request(&Limits::default()).unwrap()
        {
            FeatureRequest::DmaLoggingStart(_) | FeatureRequest::DmaLoggingStop => {
                Answer::ok(Reply::DeviceFeature(feature.clone()))
            }
            FeatureRequest::DmaLoggingReport(request) => {
                let mut report = DmaLoggingReport::new(request, &Limits::default()).unwrap();
                let page = request.page_size;
                for n in [0, 5, 70] {
                    report.mark_dirty(request.iova + n * page);
                }
                Answer::ok(Reply::DeviceFeature(DeviceFeature::get_reply(
                    feature, &report,
                )))
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    });
    let mut client = client.unwrap();
    client
        .dma_logging_start(4096, &[(0x10_0000, 0x10_0000)])
        .unwrap();
    let bitmap = client
        .dma_logging_report(0x10_0000, 128 * 4096, 4096)
        .unwrap();
    assert_eq!(bitmap, [1 | 1 << 5, 1 << 6]);
    let err = client.dma_logging_report(0, 4096, 1000).unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("page_size"), "{err}");
    client.dma_logging_stop().unwrap();
    drop(client);

    let features: Vec<FeatureRequest> = server
        .join()
        .into_iter()
        .filter_map(|l| match l.request {
            Request::DeviceFeature(f) => Some(f.parse_request(&Limits::default()).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(features.len(), 3, "the invalid report was not sent");
    let FeatureRequest::DmaLoggingStart(start) = &features[0] else {
        panic!("{:?}", features[0]);
    };
    assert_eq!(start.page_size, 4096);
    assert_eq!(
        (start.ranges[0].iova, start.ranges[0].length),
        (0x10_0000, 0x10_0000)
    );
    assert_eq!(features[2], FeatureRequest::DmaLoggingStop);
}

/// Arbitrary bytes from the server, at connect time and in reply to requests, produce errors,
/// never a panic or a hang.
#[test]
fn fuzz_server_bytes() {
    bolero::check!()
        .with_iterations(400)
        .for_each(|input: &[u8]| {
            let (client_end, mut server_end) = UnixStream::pair().unwrap();
            let _ = server_end.write_all(input);
            drop(server_end);
            let _ = Client::from_stream(client_end, fake::options());

            let (client_end, mut server_end) = UnixStream::pair().unwrap();
            let _ = server_end.write_all(input);
            drop(server_end);
            let mut client = Client::unnegotiated(client_end, fake::options()).unwrap();
            let _ = client.region_read(0, 0, 8);
            let _ = client.reset();
        });
}
