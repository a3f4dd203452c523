//! The vfio-user client: drives any device a vfio-user server hosts.
//!
//! [`Client::connect`] negotiates the protocol version (proposing 0.2 with our capabilities),
//! then learns the device: `DEVICE_GET_INFO` and every region's info, including the capability
//! chain (retrying with the larger `argsz` the server asks for when the chain did not fit) and
//! the file descriptor of mmappable regions. After that every request of the protocol has a
//! method:
//!
//! * device access (`access.rs`): region read/write/write-multi, DMA map/unmap, IRQ info and
//!   `SET_IRQS` with eventfds, reset, and [`Client::map_sparse`] for the mmappable areas;
//! * features (`feature.rs`): `DEVICE_FEATURE` probe/get/set, the migration helpers (state,
//!   flags, `MIG_DATA_READ`/`WRITE` chunked to the negotiated transfer size) and DMA logging.
//!
//! Every request waits for its reply with a timeout (5 s by default, like QEMU's client). An
//! error reply becomes [`ClientError::Errno`] naming the command; a server that refuses the
//! connection because another client is attached (EBUSY to VERSION) is [`ClientError::Busy`].
//! A request larger than the server negotiated is refused before anything is sent. Framing
//! errors, disconnects and failed sends close the client; later requests fail with
//! [`ClientError::Closed`].
//!
//! A reader thread (`link.rs`) reads the socket all the time, so the server's own commands are
//! answered whenever they come: `DMA_READ`/`DMA_WRITE` from the memory of windows mapped with
//! [`Client::dma_map_served`] (the spec's path for memory without a file descriptor), EFAULT
//! outside them, ENOTSUP for anything else.
//!
//! `Client` is `Send`; methods take `&mut self`, so callers that share one wrap it in a `Mutex`.

mod access;
mod channel;
mod error;
mod feature;
mod link;
mod mig_data;
mod posted;
mod reply;

#[cfg(test)]
mod tests;

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

pub use channel::MAX_RECV_FDS;
pub use error::ClientError;
pub use mig_data::MigDataChunk;
pub use mig_data::PendingMigData;
pub use mig_data::RelayChunk;
pub use posted::PostedWriter;

use vfio_migration::Errno;

use self::channel::RecvError;
use self::link::Link;
use self::link::Reply;
use self::reply::FromReply;
use crate::command::Command;
use crate::device::DeviceInfo;
use crate::error::DecodeError;
use crate::framing::Frame;
use crate::framing::ReplyBody;
use crate::framing::encode_request;
use crate::limits::DEFAULT_MAX_BITMAP_SIZE;
use crate::limits::DEFAULT_MAX_DATA_XFER_SIZE;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::region::RegionInfo;
use crate::region::RegionInfoReply;
use crate::region::RegionInfoRequest;
use crate::version::Capabilities;
use crate::version::PROTOCOL_MAJOR;
use crate::version::PROTOCOL_MINOR;
use crate::version::Version;

/// Default reply timeout: QEMU's client default (`x-msg-timeout`, 5000 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most regions the client accepts from `DEVICE_GET_INFO`: a PCI device has 9 plus a few
/// device-specific ones; a larger count is a broken or hostile server.
pub const MAX_REGIONS: u32 = 64;

/// `argsz` of the first `DEVICE_GET_REGION_INFO` request: the fixed part plus room for a
/// sparse-mmap capability of a few areas. Larger chains are fetched again at the size the server
/// names.
const REGION_INFO_ARGSZ: u32 = 128;

/// The wait used when the configured timeout is too large to add to the clock.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Region info requests per region before giving up on a chain that keeps growing.
const REGION_INFO_ATTEMPTS: usize = 3;

/// What the client proposes and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long each request waits for its reply.
    pub timeout: Duration,
    /// Largest data transfer the client accepts in one reply (`max_data_xfer_size` proposed).
    pub max_data_xfer_size: u32,
    /// Largest DMA-logging report bitmap, in bytes, the client asks for. It also bounds the
    /// largest message the client buffers from the server.
    pub max_bitmap_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_data_xfer_size: DEFAULT_MAX_DATA_XFER_SIZE,
            max_bitmap_size: DEFAULT_MAX_BITMAP_SIZE,
        }
    }
}

impl ClientOptions {
    /// The limits replies are decoded with.
    fn limits(&self) -> Limits {
        Limits {
            max_data_xfer_size: self.max_data_xfer_size,
            max_bitmap_size: self.max_bitmap_size,
            ..Limits::default()
        }
    }

    /// Largest message the client accepts: any reply its limits allow, including a full
    /// DMA-logging report (header, feature head, report request and bitmap).
    fn max_msg_size(&self) -> u32 {
        let report = 16 + 8 + 24 + self.max_bitmap_size;
        let max = u64::from(self.limits().max_msg_size()).max(report);
        u32::try_from(max).unwrap_or(u32::MAX)
    }

    /// The capabilities proposed in VERSION.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_msg_fds: MAX_RECV_FDS as u32,
            max_data_xfer_size: self.max_data_xfer_size,
            write_multiple: true,
            ..Capabilities::default()
        }
    }
}

/// One region as learned at connect time.
#[derive(Debug)]
struct Region {
    info: RegionInfo,
    fd: Option<OwnedFd>,
}

/// A connection to a vfio-user server, negotiated and with the device's regions known.
#[derive(Debug)]
pub struct Client {
    link: Link,
    options: ClientOptions,
    limits: Limits,
    /// The server's VERSION reply (spec defaults until negotiation).
    server: Version,
    device: DeviceInfo,
    regions: Vec<Region>,
    next_id: u16,
    /// Set when the connection can no longer be used, with the reason.
    closed: Option<String>,
}

impl Client {
    /// Connects to the server socket at `path` with default options and learns the device.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_with(path, ClientOptions::default())
    }

    /// Connects to the server socket at `path` with `options` and learns the device.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Self::from_stream(stream, options)
    }

    /// Takes an already connected stream (e.g. one end of a socket pair), negotiates and learns
    /// the device.
    pub fn from_stream(stream: UnixStream, options: ClientOptions) -> Result<Self, ClientError> {
        let mut client = Self::unnegotiated(stream, options)?;
        client.negotiate()?;
        client.learn_device()?;
        Ok(client)
    }

    /// A client on `stream` that has not talked to the server yet: spec-default server
    /// capabilities, no device information.
    fn unnegotiated(stream: UnixStream, options: ClientOptions) -> Result<Self, ClientError> {
        let link = Link::new(stream, options.max_msg_size(), options.limits())
            .map_err(ClientError::Socket)?;
        link.set_send_timeout(options.timeout)
            .map_err(ClientError::Socket)?;
        Ok(Self {
            link,
            options,
            limits: options.limits(),
            server: Version {
                major: PROTOCOL_MAJOR,
                minor: 0,
                capabilities: Capabilities::default(),
            },
            device: DeviceInfo::request(),
            regions: Vec::new(),
            next_id: 0,
            closed: None,
        })
    }

    /// VERSION: proposes 0.2 with our capabilities and checks the reply. EBUSY means another
    /// client is attached ([`ClientError::Busy`]).
    fn negotiate(&mut self) -> Result<(), ClientError> {
        let proposal = Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            capabilities: self.options.capabilities(),
        };
        let (reply, _) = self
            .call::<Version>(&proposal, &[])
            .map_err(|err| match err {
                ClientError::Errno {
                    errno: Errno::EBUSY,
                    ..
                } => ClientError::Busy,
                other => other,
            })?;
        proposal
            .check_reply(&reply)
            .map_err(ClientError::Negotiation)?;
        if reply.capabilities.max_data_xfer_size == 0 {
            return Err(ClientError::Negotiation(DecodeError::Incompatible {
                field: "max_data_xfer_size",
                proposed: proposal.capabilities.max_data_xfer_size.into(),
                offered: 0,
            }));
        }
        tracing::debug!(
            major = reply.major,
            minor = reply.minor,
            capabilities = ?reply.capabilities,
            "vfio-user version negotiated"
        );
        self.server = reply;
        Ok(())
    }

    /// DEVICE_GET_INFO, then every region's info.
    fn learn_device(&mut self) -> Result<(), ClientError> {
        let (device, _) = self.call::<DeviceInfo>(&DeviceInfo::request(), &[])?;
        if device.num_regions > MAX_REGIONS {
            return Err(ClientError::UnexpectedReply {
                command: Command::DEVICE_GET_INFO,
                reason: format!(
                    "num_regions = {} is above the {MAX_REGIONS} regions this client accepts",
                    device.num_regions
                ),
            });
        }
        self.device = device;
        self.regions = (0..device.num_regions)
            .map(|index| self.fetch_region(index))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// DEVICE_GET_REGION_INFO for `index`, asking again with the server's `argsz` while the
    /// capability chain does not fit.
    fn fetch_region(&mut self, index: u32) -> Result<Region, ClientError> {
        let command = Command::DEVICE_GET_REGION_INFO;
        let mut argsz = REGION_INFO_ARGSZ;
        for _ in 0..REGION_INFO_ATTEMPTS {
            let (reply, mut fds) =
                self.call::<RegionInfoReply>(&RegionInfoRequest { argsz, index }, &[])?;
            if reply.info.index != index {
                return Err(ClientError::UnexpectedReply {
                    command,
                    reason: format!("asked for region {index}, got region {}", reply.info.index),
                });
            }
            if reply.argsz > argsz {
                tracing::debug!(
                    index,
                    argsz,
                    needed = reply.argsz,
                    "region info truncated; asking again"
                );
                argsz = reply.argsz;
                continue;
            }
            return Ok(Region {
                info: reply.info,
                fd: fds.pop(),
            });
        }
        Err(ClientError::UnexpectedReply {
            command,
            reason: format!(
                "region {index}: capability chain still truncated after {REGION_INFO_ATTEMPTS} requests"
            ),
        })
    }

    /// The server's VERSION reply: negotiated version and capabilities.
    pub fn negotiated(&self) -> &Version {
        &self.server
    }

    /// The `DEVICE_GET_INFO` reply.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.device
    }

    /// Region `index` as the server described it at connect time.
    pub fn region_info(&self, index: u32) -> Option<&RegionInfo> {
        self.region(index).map(|r| &r.info)
    }

    /// The file descriptor the server sent with region `index` (mmappable regions only).
    pub fn region_fd(&self, index: u32) -> Option<BorrowedFd<'_>> {
        self.region(index)?.fd.as_ref().map(AsFd::as_fd)
    }

    fn region(&self, index: u32) -> Option<&Region> {
        self.regions.get(usize::try_from(index).ok()?)
    }

    /// The reply timeout.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Changes the reply timeout (also bounds how long a send may block).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.link
            .set_send_timeout(timeout)
            .map_err(ClientError::Socket)?;
        self.options.timeout = timeout;
        Ok(())
    }

    /// Whether an earlier failure closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Largest data transfer both sides accept: the chunk size of region and migration data.
    pub fn max_data_xfer_size(&self) -> u32 {
        self.server
            .capabilities
            .max_data_xfer_size
            .min(self.options.max_data_xfer_size)
    }

    /// Largest message the server accepts, from its negotiated transfer size.
    fn server_max_msg_size(&self) -> u32 {
        Limits {
            max_data_xfer_size: self.server.capabilities.max_data_xfer_size,
            ..Limits::default()
        }
        .max_msg_size()
    }

    /// Fails with [`ClientError::TooLarge`] if `value > limit`.
    fn check_limit(
        command: Command,
        field: &'static str,
        value: u64,
        limit: u64,
    ) -> Result<(), ClientError> {
        if value > limit {
            return Err(ClientError::TooLarge {
                command,
                field,
                value,
                limit,
            });
        }
        Ok(())
    }

    /// Sends `body` with `fds` and waits for its reply (the reader answers server commands
    /// meanwhile). Returns the reply body and the descriptors that came with it.
    fn call<R: FromReply>(
        &mut self,
        body: &impl Payload,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(R, Vec<OwnedFd>), ClientError> {
        let command = payload_command(body);
        let bytes = encode_request(self.next_id, body, false);
        let msg_id = self.send_message(command, &[&bytes], fds)?;
        let frame = self.wait_reply(command, msg_id)?;
        match frame.decode_reply(&self.limits) {
            Ok(ReplyBody::Error(errno)) => Err(ClientError::Errno { command, errno }),
            Ok(ReplyBody::Ok(reply)) => match R::from_reply(reply) {
                Some(body) => Ok((body, frame.fds)),
                None => Err(ClientError::UnexpectedReply {
                    command,
                    reason: "the reply body has the wrong type".to_owned(),
                }),
            },
            Err(source) => Err(ClientError::BadReply { command, source }),
        }
    }

    /// Sends one request message, the concatenation of `parts` (header first, with the msg_id
    /// `self.next_id`), with `fds`, without waiting for the reply; returns its msg_id.
    fn send_message(
        &mut self,
        command: Command,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
    ) -> Result<u16, ClientError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.send_checked(command, len, fds.len(), |link| link.send_parts(parts, fds))
    }

    /// Sends one request message of `len` bytes with `fds` descriptors through `send`, with
    /// the checks and bookkeeping of [`Self::send_message`]: the message's msg_id is
    /// `self.next_id`, returned.
    fn send_checked(
        &mut self,
        command: Command,
        len: usize,
        fds: usize,
        send: impl FnOnce(&Link) -> std::io::Result<()>,
    ) -> Result<u16, ClientError> {
        if let Some(reason) = &self.closed {
            return Err(ClientError::Closed {
                command,
                reason: reason.clone(),
            });
        }
        let msg_id = self.next_id;
        Self::check_limit(
            command,
            "message size",
            len as u64,
            self.server_max_msg_size().into(),
        )?;
        Self::check_limit(
            command,
            "file descriptors",
            fds as u64,
            self.server.capabilities.max_msg_fds.into(),
        )?;
        self.next_id = msg_id.wrapping_add(1);
        if let Err(source) = send(&self.link) {
            self.close(format!("sending {command:?} failed: {source}"));
            return Err(ClientError::Send { command, source });
        }
        Ok(msg_id)
    }

    /// Waits for the reply to the `command` request sent as `msg_id`, as a whole message.
    fn wait_reply(&mut self, command: Command, msg_id: u16) -> Result<Frame<OwnedFd>, ClientError> {
        match self.wait_any_reply(command, msg_id)? {
            Reply::Frame(frame) => Ok(frame),
            Reply::Piped { .. } => Err(ClientError::UnexpectedReply {
                command,
                reason: "the reply was routed to a relay pipe".to_owned(),
            }),
        }
    }

    /// Waits for the reply to the `command` request sent as `msg_id`: a whole message, or a
    /// relayed reply's pipe. Replies to earlier requests (that arrived after their timeout)
    /// are dropped, so requests sent without waiting must be waited for in the order they
    /// were sent.
    fn wait_any_reply(&mut self, command: Command, msg_id: u16) -> Result<Reply, ClientError> {
        let deadline = self.deadline();
        loop {
            let reply = self.receive(command, deadline)?;
            let header = reply.header();
            if header.msg_id != msg_id {
                tracing::warn!(
                    msg_id = header.msg_id,
                    command = ?header.command,
                    "dropping a reply to an earlier request (it arrived after its timeout)"
                );
                self.check_deadline(command, deadline)?;
                continue;
            }
            if header.command != command {
                return Err(ClientError::UnexpectedReply {
                    command,
                    reason: format!("the reply is for {:?}", header.command),
                });
            }
            return Ok(reply);
        }
    }

    /// When what starts now times out: the reply timeout from now.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.options.timeout)
            .unwrap_or_else(|| now + LONGEST_WAIT)
    }

    /// Fails with [`ClientError::Timeout`] once `deadline` has passed, so that a server sending
    /// other messages without pause cannot hold a request forever.
    fn check_deadline(&self, command: Command, deadline: Instant) -> Result<(), ClientError> {
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout {
                command,
                timeout: self.options.timeout,
            });
        }
        Ok(())
    }

    /// The next message from the server, closing the client on a broken connection.
    fn receive(&mut self, command: Command, deadline: Instant) -> Result<Reply, ClientError> {
        let error = match self.link.recv(deadline) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {
                return Err(ClientError::Timeout {
                    command,
                    timeout: self.options.timeout,
                });
            }
            Err(RecvError::Eof) => ClientError::Disconnected { command },
            Err(RecvError::Io(source)) => ClientError::Receive { command, source },
            Err(RecvError::Framing(source)) => ClientError::Framing { command, source },
        };
        self.close(error.to_string());
        Err(error)
    }

    fn close(&mut self, reason: String) {
        tracing::warn!(%reason, "closing the vfio-user client");
        self.closed.get_or_insert(reason);
    }
}

/// The command of a request body (`Payload::COMMAND` of a value whose type is inferred).
fn payload_command<P: Payload>(_body: &P) -> Command {
    P::COMMAND
}
