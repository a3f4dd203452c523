//! A scripted vfio-user server on one end of a socket pair, for the client's error paths: it
//! answers VERSION, DEVICE_GET_INFO and DEVICE_GET_REGION_INFO from a description, hands every
//! other request to the test's handler (which may answer anything, or nothing), and records every
//! request it received.

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use vfio_migration::Errno;
use zerocopy::IntoBytes;

use crate::client::Client;
use crate::client::ClientError;
use crate::client::ClientOptions;
use crate::client::channel::Channel;
use crate::client::channel::Incoming;
use crate::client::channel::RecvError;
use crate::device::DeviceInfo;
use crate::device::DeviceInfoFlags;
use crate::framing::encode_error_reply;
use crate::header::Header;
use crate::limits::Limits;
use crate::message::Reply;
use crate::message::Request;
use crate::region::RegionInfo;
use crate::region::RegionInfoReply;
use crate::version::Capabilities;
use crate::version::PROTOCOL_MAJOR;
use crate::version::PROTOCOL_MINOR;
use crate::version::Version;

/// What the handler wants sent back.
pub(super) enum Answer {
    /// A successful reply with descriptors.
    Reply(Reply, Vec<OwnedFd>),
    /// An error reply.
    Error(Errno),
    /// Nothing (the client will time out).
    Silent,
    /// These bytes instead of a reply.
    Raw(Vec<u8>),
    /// Close the connection.
    Hangup,
}

impl Answer {
    /// A reply without descriptors.
    pub(super) fn ok(reply: Reply) -> Self {
        Self::Reply(reply, Vec::new())
    }
}

/// The server side of the connection, as the handler sees it.
pub(super) struct Conn {
    channel: Channel,
    socket: UnixStream,
}

impl Conn {
    /// Sends raw bytes with descriptors.
    pub(super) fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        crate::socket::send_all(self.socket.as_fd(), bytes, fds).expect("fake server send");
    }

    /// Sends raw bytes, reporting failure (the client went away) instead of panicking.
    pub(super) fn try_send(&self, bytes: &[u8]) -> std::io::Result<()> {
        crate::socket::send_all(self.socket.as_fd(), bytes, &[])
    }

    /// Sends a reply to `request`.
    pub(super) fn reply(&self, request: &Header, reply: &Reply, fds: &[BorrowedFd<'_>]) {
        let mut payload = Vec::new();
        reply.encode(&mut payload);
        let mut bytes = request.reply(payload.len()).as_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        self.send(&bytes, fds);
    }

    /// Waits for the next message (used to see the client's answer to a server command).
    pub(super) fn next_message(&mut self) -> crate::framing::Frame<OwnedFd> {
        match self
            .channel
            .recv(Instant::now() + Duration::from_secs(5))
            .expect("fake server receive")
            .expect("a message within 5 s")
        {
            Incoming::Frame(frame) => frame,
            Incoming::Relay(_) => unreachable!("the fake server relays nothing"),
        }
    }
}

/// A request as the fake server received it.
#[derive(Debug)]
pub(super) struct Logged {
    /// The decoded request.
    pub(super) request: Request,
    /// How many descriptors came with it.
    pub(super) fds: usize,
}

/// What the fake server presents.
pub(super) struct ServedDevice {
    /// The capabilities the server answers VERSION with.
    pub(super) capabilities: Capabilities,
    /// The protocol minor version the server answers with.
    pub(super) minor: u16,
    /// Regions and the fd sent with each region's info.
    pub(super) regions: Vec<(RegionInfo, Option<OwnedFd>)>,
}

impl Default for ServedDevice {
    fn default() -> Self {
        Self {
            capabilities: Capabilities {
                max_msg_fds: 8,
                write_multiple: true,
                ..Capabilities::default()
            },
            minor: PROTOCOL_MINOR,
            regions: Vec::new(),
        }
    }
}

/// A handler for requests other than the connect-time ones.
pub(super) type Handler =
    Box<dyn FnMut(&mut Conn, &Header, &Request, Vec<OwnedFd>) -> Answer + Send>;

/// The running fake server; `join` returns the log of every request.
pub(super) struct FakeServer {
    thread: JoinHandle<Vec<Logged>>,
}

impl FakeServer {
    /// Waits for the server thread (the client must be dropped first) and returns its log.
    pub(super) fn join(self) -> Vec<Logged> {
        self.thread.join().expect("fake server thread panicked")
    }

    /// Starts a server for `device` on a new socket pair and returns the client end.
    pub(super) fn spawn(device: ServedDevice, mut handler: Handler) -> (UnixStream, Self) {
        let (client, server) = UnixStream::pair().expect("socketpair");
        let thread = std::thread::spawn(move || {
            let mut conn = Conn {
                socket: server.try_clone().expect("a second handle on the socket"),
                channel: Channel::new(server, Limits::default().max_msg_size()),
            };
            let mut log = Vec::new();
            loop {
                let frame = match conn.channel.recv(Instant::now() + Duration::from_secs(30)) {
                    Ok(Some(Incoming::Frame(frame))) => frame,
                    Ok(Some(Incoming::Relay(_))) => unreachable!("the fake server relays nothing"),
                    Ok(None) | Err(RecvError::Eof) => return log,
                    // The client closed with messages of ours unread.
                    Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return log;
                    }
                    Err(e) => panic!("fake server: {e:?}"),
                };
                let header = frame.header;
                let request = frame
                    .decode_request(&Limits::default())
                    .expect("the client sent a valid request");
                log.push(Logged {
                    request: request.clone(),
                    fds: frame.fds.len(),
                });
                let answer = match &request {
                    // The fake answers with its own capabilities verbatim, so tests can make
                    // the reply break the negotiation rules.
                    Request::Version(_) => Answer::ok(Reply::Version(Version {
                        major: PROTOCOL_MAJOR,
                        minor: device.minor,
                        capabilities: device.capabilities,
                    })),
                    Request::DeviceGetInfo(_) => {
                        Answer::ok(Reply::DeviceGetInfo(DeviceInfo::reply(
                            DeviceInfoFlags::PCI | DeviceInfoFlags::RESET,
                            device.regions.len() as u32,
                            5,
                        )))
                    }
                    Request::DeviceGetRegionInfo(req) => {
                        match device.regions.get(req.index as usize) {
                            Some((info, fd)) => {
                                let reply = RegionInfoReply::for_request(info.clone(), req.argsz);
                                let fds: Vec<BorrowedFd<'_>> = fd.iter().map(AsFd::as_fd).collect();
                                conn.reply(&header, &Reply::DeviceGetRegionInfo(reply), &fds);
                                Answer::Silent
                            }
                            None => Answer::Error(Errno::EINVAL),
                        }
                    }
                    _ => handler(&mut conn, &header, &request, frame.fds),
                };
                match answer {
                    Answer::Reply(reply, fds) => {
                        let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
                        conn.reply(&header, &reply, &fds);
                    }
                    Answer::Error(errno) => conn.send(&encode_error_reply(&header, errno), &[]),
                    Answer::Silent => {}
                    Answer::Raw(bytes) => conn.send(&bytes, &[]),
                    Answer::Hangup => return log,
                }
            }
        });
        (client, Self { thread })
    }
}

/// Options with a short timeout so failing tests fail fast.
pub(super) fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Starts a fake server and connects a client to it.
pub(super) fn start(
    device: ServedDevice,
    handler: impl FnMut(&mut Conn, &Header, &Request, Vec<OwnedFd>) -> Answer + Send + 'static,
) -> (Result<Client, ClientError>, FakeServer) {
    let (stream, server) = FakeServer::spawn(device, Box::new(handler));
    (Client::from_stream(stream, options()), server)
}
