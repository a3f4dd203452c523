//! Every request and reply of commands 1–18 as one enum each, dispatched on the header's
//! command, plus the file-descriptor rules of each message.

use crate::access::RegionAccess;
use crate::access::RegionReadReply;
use crate::access::RegionWrite;
use crate::access::RegionWriteMulti;
use crate::access::RegionWriteMultiReply;
use crate::access::RegionWriteReply;
use crate::command::Command;
use crate::device::DeviceInfo;
use crate::device::DeviceReset;
use crate::dma::DmaAccess;
use crate::dma::DmaMap;
use crate::dma::DmaMapReply;
use crate::dma::DmaReadReply;
use crate::dma::DmaUnmap;
use crate::dma::DmaUnmapReply;
use crate::dma::DmaWrite;
use crate::dma::DmaWriteReply;
use crate::error::DecodeError;
use crate::feature::DeviceFeature;
use crate::irq::IrqInfo;
use crate::irq::IrqSet;
use crate::irq::IrqSetReply;
use crate::limits::Limits;
use crate::migration::MigDataHead;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWrite;
use crate::migration::MigDataWriteReply;
use crate::payload::Payload;
use crate::region::RegionInfoReply;
use crate::region::RegionInfoRequest;
use crate::region::RegionIoFdsReply;
use crate::region::RegionIoFdsRequest;
use crate::version::Version;

/// Declares an enum with one variant per command, each wrapping that command's [`Payload`]
/// type, with `decode` (dispatch on the command), `encode` and `command`.
macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident($ty:ty),)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant($ty),)*
        }

        impl $name {
            /// Decodes the payload of a message whose header carries `command`. Unassigned
            /// commands and the legacy `DIRTY_PAGES` fail with ENOTSUP.
            pub fn decode(command: Command, payload: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
                $(
                    if command == <$ty as Payload>::COMMAND {
                        return <$ty as Payload>::decode(payload, limits).map(Self::$variant);
                    }
                )*
                Err(DecodeError::UnsupportedCommand { command })
            }

            /// Appends the payload bytes.
            pub fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $(Self::$variant(body) => body.encode(out),)*
                }
            }

            /// The command this message belongs to.
            pub fn command(&self) -> Command {
                match self {
                    $(Self::$variant(_) => <$ty as Payload>::COMMAND,)*
                }
            }
        }
    };
}

message_enum! {
    /// A command message's body (client → server for all but `DMA_READ`/`DMA_WRITE`).
    Request {
        /// `VERSION` proposal.
        Version(Version),
        /// `DMA_MAP`.
        DmaMap(DmaMap),
        /// `DMA_UNMAP`.
        DmaUnmap(DmaUnmap),
        /// `DEVICE_GET_INFO`.
        DeviceGetInfo(DeviceInfo),
        /// `DEVICE_GET_REGION_INFO`.
        DeviceGetRegionInfo(RegionInfoRequest),
        /// `DEVICE_GET_REGION_IO_FDS`.
        DeviceGetRegionIoFds(RegionIoFdsRequest),
        /// `DEVICE_GET_IRQ_INFO`.
        DeviceGetIrqInfo(IrqInfo),
        /// `DEVICE_SET_IRQS`.
        DeviceSetIrqs(IrqSet),
        /// `REGION_READ`.
        RegionRead(RegionAccess),
        /// `REGION_WRITE`.
        RegionWrite(RegionWrite),
        /// `DMA_READ` (server → client).
        DmaRead(DmaAccess),
        /// `DMA_WRITE` (server → client).
        DmaWrite(DmaWrite),
        /// `DEVICE_RESET`.
        DeviceReset(DeviceReset),
        /// `REGION_WRITE_MULTI`.
        RegionWriteMulti(RegionWriteMulti),
        /// `DEVICE_FEATURE`.
        DeviceFeature(DeviceFeature),
        /// `MIG_DATA_READ`.
        MigDataRead(MigDataHead),
        /// `MIG_DATA_WRITE`.
        MigDataWrite(MigDataWrite),
    }
}

message_enum! {
    /// A successful reply message's body.
    Reply {
        /// `VERSION` answer.
        Version(Version),
        /// `DMA_MAP` (empty).
        DmaMap(DmaMapReply),
        /// `DMA_UNMAP`.
        DmaUnmap(DmaUnmapReply),
        /// `DEVICE_GET_INFO`.
        DeviceGetInfo(DeviceInfo),
        /// `DEVICE_GET_REGION_INFO`.
        DeviceGetRegionInfo(RegionInfoReply),
        /// `DEVICE_GET_REGION_IO_FDS`.
        DeviceGetRegionIoFds(RegionIoFdsReply),
        /// `DEVICE_GET_IRQ_INFO`.
        DeviceGetIrqInfo(IrqInfo),
        /// `DEVICE_SET_IRQS` (empty).
        DeviceSetIrqs(IrqSetReply),
        /// `REGION_READ`.
        RegionRead(RegionReadReply),
        /// `REGION_WRITE`.
        RegionWrite(RegionWriteReply),
        /// `DMA_READ`.
        DmaRead(DmaReadReply),
        /// `DMA_WRITE`.
        DmaWrite(DmaWriteReply),
        /// `DEVICE_RESET` (empty).
        DeviceReset(DeviceReset),
        /// `REGION_WRITE_MULTI`.
        RegionWriteMulti(RegionWriteMultiReply),
        /// `DEVICE_FEATURE`.
        DeviceFeature(DeviceFeature),
        /// `MIG_DATA_READ`.
        MigDataRead(MigDataReadReply),
        /// `MIG_DATA_WRITE` (empty).
        MigDataWrite(MigDataWriteReply),
    }
}

/// Fails with [`DecodeError::FdCount`] unless `got` descriptors is within `allowed`.
pub(crate) fn fd_count(
    command: Command,
    got: usize,
    allowed: core::ops::RangeInclusive<usize>,
) -> Result<(), DecodeError> {
    if allowed.contains(&got) {
        return Ok(());
    }
    let expected = if allowed.start() == allowed.end() {
        allowed.start().to_string()
    } else {
        format!("{} to {}", allowed.start(), allowed.end())
    };
    Err(DecodeError::FdCount {
        command,
        got,
        expected,
    })
}

impl Request {
    /// Checks the number of fds received with this request: `DMA_MAP` 0 or 1, `DEVICE_SET_IRQS`
    /// per [`IrqSet::check_fds`], every other request none.
    pub fn check_fds(&self, fds: usize) -> Result<(), DecodeError> {
        match self {
            Self::DmaMap(_) => fd_count(Command::DMA_MAP, fds, 0..=1),
            Self::DeviceSetIrqs(set) => set.check_fds(fds),
            other => fd_count(other.command(), fds, 0..=0),
        }
    }
}

impl Reply {
    /// Checks the number of fds received with this reply: a region info reply 0 or 1 (the region
    /// fd of an mmappable region), an IO-fds reply any number, a VERSION reply enough to hold the
    /// twin-socket index it names, every other reply none.
    pub fn check_fds(&self, fds: usize) -> Result<(), DecodeError> {
        match self {
            Self::DeviceGetRegionInfo(_) => fd_count(Command::DEVICE_GET_REGION_INFO, fds, 0..=1),
            Self::DeviceGetRegionIoFds(_) => Ok(()),
            Self::Version(v) => {
                let needed = v
                    .capabilities
                    .twin_socket
                    .and_then(|t| t.fd_index)
                    .map_or(0, |i| i as usize + 1);
                fd_count(Command::VERSION, fds, needed..=needed)
            }
            other => fd_count(other.command(), fds, 0..=0),
        }
    }
}

#[cfg(test)]
mod tests {
    use vfio_migration::Errno;

    use super::*;
    use crate::region::RegionInfo;
    use crate::region::RegionInfoFlags;
    use crate::version::Capabilities;

    #[test]
    fn dispatch_and_unsupported_commands() {
        let l = Limits::default();
        let req = Request::decode(Command::DEVICE_RESET, &[], &l).unwrap();
        assert_eq!(req, Request::DeviceReset(DeviceReset));
        assert_eq!(req.command(), Command::DEVICE_RESET);
        for command in [
            Command(0),
            Command::DIRTY_PAGES,
            Command(19),
            Command(0xffff),
        ] {
            let err = Request::decode(command, &[], &l).unwrap_err();
            assert_eq!(err.errno(), Errno::ENOTSUP);
            assert_eq!(
                Reply::decode(command, &[], &l).unwrap_err().errno(),
                Errno::ENOTSUP
            );
        }
        let info = RegionInfo {
            flags: RegionInfoFlags::READ,
            index: 1,
            size: 4096,
            offset: 0,
            caps: vec![],
        };
        let reply = Reply::DeviceGetRegionInfo(RegionInfoReply::for_request(info, 32));
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        assert_eq!(
            Reply::decode(Command::DEVICE_GET_REGION_INFO, &bytes, &l).unwrap(),
            reply
        );
    }

    #[test]
    fn fd_rules() {
        let map = Request::DmaMap(DmaMap {
            argsz: 32,
            flags: 3,
            offset: 0,
            address: 0,
            size: 4096,
        });
        assert!(map.check_fds(0).is_ok());
        assert!(map.check_fds(1).is_ok());
        assert_eq!(map.check_fds(2).unwrap_err().errno(), Errno::EINVAL);
        assert!(Request::DeviceReset(DeviceReset).check_fds(1).is_err());
        let version = Reply::Version(Version {
            major: 0,
            minor: 0,
            capabilities: Capabilities::default(),
        });
        assert!(version.check_fds(0).is_ok());
        assert!(version.check_fds(1).is_err());
    }

    /// One valid request and reply for every command.
    fn corpus() -> (Vec<Request>, Vec<Reply>) {
        use crate::access::WriteMultiEntry;
        use crate::feature::DmaLoggingReportRequest;
        use crate::feature::Feature;
        use crate::irq::IrqAction;
        use crate::irq::IrqSetData;
        use crate::region::RegionCap;
        use crate::region::SparseMmapArea;

        let version = Version {
            major: 0,
            minor: 0,
            capabilities: Capabilities::default(),
        };
        let unmap = DmaUnmap {
            argsz: 24,
            flags: 0,
            address: 0x1000,
            size: 0x1000,
        };
        let access = RegionAccess {
            offset: 0x10,
            region: 0,
            count: 4,
        };
        let info = RegionInfo {
            flags: RegionInfoFlags::READ | RegionInfoFlags::MMAP,
            index: 0,
            size: 0x4000,
            offset: 0,
            caps: vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x1000,
                size: 0x1000,
            }])],
        };
        let report = DmaLoggingReportRequest {
            iova: 0,
            length: 1 << 20,
            page_size: 4096,
        };
        let requests = vec![
            Request::Version(version.clone()),
            Request::DmaMap(DmaMap {
                argsz: 32,
                flags: 3,
                offset: 0,
                address: 0x1000,
                size: 0x1000,
            }),
            Request::DmaUnmap(unmap),
            Request::DeviceGetInfo(DeviceInfo::request()),
            Request::DeviceGetRegionInfo(RegionInfoRequest {
                argsz: 64,
                index: 0,
            }),
            Request::DeviceGetRegionIoFds(RegionIoFdsRequest {
                argsz: 256,
                flags: 0,
                index: 0,
                count: 0,
            }),
            Request::DeviceGetIrqInfo(IrqInfo {
                argsz: 16,
                flags: 0,
                index: 2,
                count: 0,
            }),
            Request::DeviceSetIrqs(IrqSet {
                action: IrqAction::Trigger,
                data: IrqSetData::Bool(vec![true, false]),
                index: 2,
                start: 0,
                count: 2,
            }),
            Request::RegionRead(access),
            Request::RegionWrite(RegionWrite {
                offset: 0x10,
                region: 0,
                data: vec![1, 2, 3, 4],
            }),
            Request::DmaRead(DmaAccess {
                address: 0x1000,
                count: 8,
            }),
            Request::DmaWrite(DmaWrite {
                address: 0x1000,
                data: vec![9; 8],
            }),
            Request::DeviceReset(DeviceReset),
            Request::RegionWriteMulti(RegionWriteMulti {
                writes: vec![WriteMultiEntry::new(0x1000, 0, &[1, 0, 0, 0])],
            }),
            Request::DeviceFeature(DeviceFeature::get_report(&report)),
            Request::MigDataRead(MigDataHead::read(4096)),
            Request::MigDataWrite(MigDataWrite::new(vec![5; 16])),
        ];
        let replies = vec![
            Reply::Version(version),
            Reply::DmaMap(DmaMapReply),
            Reply::DmaUnmap(DmaUnmapReply(Some(unmap))),
            Reply::DeviceGetInfo(DeviceInfo::reply(crate::device::DeviceInfoFlags::PCI, 9, 5)),
            Reply::DeviceGetRegionInfo(RegionInfoReply::for_request(info, 64)),
            Reply::DeviceGetRegionIoFds(RegionIoFdsReply {
                argsz: 16,
                index: 0,
                count: 0,
                sub_regions: vec![],
            }),
            Reply::DeviceGetIrqInfo(IrqInfo {
                argsz: 16,
                flags: 1,
                index: 2,
                count: 4,
            }),
            Reply::DeviceSetIrqs(IrqSetReply),
            Reply::RegionRead(RegionReadReply {
                offset: 0x10,
                region: 0,
                data: vec![1, 2, 3, 4],
            }),
            Reply::RegionWrite(RegionWriteReply(access)),
            Reply::DmaRead(DmaReadReply {
                address: 0x1000,
                data: vec![7; 8],
            }),
            Reply::DmaWrite(DmaWriteReply {
                access: Some(DmaAccess {
                    address: 0x1000,
                    count: 8,
                }),
            }),
            Reply::DeviceReset(DeviceReset),
            Reply::RegionWriteMulti(RegionWriteMultiReply { wr_cnt: 1 }),
            Reply::DeviceFeature(DeviceFeature::probe(Feature::MIGRATION, true, false)),
            Reply::MigDataRead(MigDataReadReply { data: vec![1; 10] }),
            Reply::MigDataWrite(MigDataWriteReply),
        ];
        (requests, replies)
    }

    #[test]
    fn every_command_round_trips_and_survives_truncation_and_corruption() {
        let l = Limits::default();
        let (requests, replies) = corpus();
        let mut commands: Vec<u16> = requests.iter().map(|r| r.command().0).collect();
        commands.sort_unstable();
        assert_eq!(commands, (1..=18).filter(|&c| c != 14).collect::<Vec<_>>());
        for request in &requests {
            let mut bytes = Vec::new();
            request.encode(&mut bytes);
            assert_eq!(
                &Request::decode(request.command(), &bytes, &l).unwrap(),
                request
            );
            mutate_all(&bytes, |b| drop(Request::decode(request.command(), b, &l)));
        }
        for reply in &replies {
            let mut bytes = Vec::new();
            reply.encode(&mut bytes);
            assert_eq!(&Reply::decode(reply.command(), &bytes, &l).unwrap(), reply);
            mutate_all(&bytes, |b| drop(Reply::decode(reply.command(), b, &l)));
        }
    }

    /// Calls `f` on every truncation and every single-byte corruption of `bytes`.
    fn mutate_all(bytes: &[u8], f: impl Fn(&[u8])) {
        for len in 0..bytes.len() {
            f(&bytes[..len]);
        }
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = bytes.to_vec();
                b[i] ^= x;
                f(&b);
            }
        }
    }

    #[test]
    fn fuzz_mutated_valid_messages() {
        let l = Limits::default();
        let (requests, replies) = corpus();
        let encoded: Vec<(Command, Vec<u8>)> = requests
            .iter()
            .map(|r| {
                (r.command(), {
                    let mut b = Vec::new();
                    r.encode(&mut b);
                    b
                })
            })
            .chain(replies.iter().map(|r| {
                (r.command(), {
                    let mut b = Vec::new();
                    r.encode(&mut b);
                    b
                })
            }))
            .collect();
        bolero::check!()
            .with_iterations(3000)
            .for_each(|input: &[u8]| {
                let Some((&which, edits)) = input.split_first() else {
                    return;
                };
                let (command, base) = &encoded[usize::from(which) % encoded.len()];
                let mut bytes = base.clone();
                for pair in edits.chunks_exact(2) {
                    if !bytes.is_empty() {
                        let at = usize::from(pair[0]) % bytes.len();
                        bytes[at] = pair[1];
                    }
                }
                let _ = Request::decode(*command, &bytes, &l);
                let _ = Reply::decode(*command, &bytes, &l);
            });
    }

    #[test]
    fn fuzz_every_command() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(3000)
            .for_each(|input: &[u8]| {
                let Some((&selector, payload)) = input.split_first() else {
                    return;
                };
                let command = Command(u16::from(selector % 20));
                if let Ok(request) = Request::decode(command, payload, &l) {
                    let _ = request.check_fds(usize::from(selector));
                }
                if let Ok(reply) = Reply::decode(command, payload, &l) {
                    let _ = reply.check_fds(usize::from(selector));
                }
            });
    }
}
