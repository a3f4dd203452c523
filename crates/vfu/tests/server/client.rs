//! A raw vfio-user client for the tests, built from the codec: `encode_request`, the `Framer`,
//! and rustix `sendmsg`/`recvmsg` with SCM_RIGHTS.

use std::io::IoSlice;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::net::RecvAncillaryBuffer;
use rustix::net::RecvAncillaryMessage;
use rustix::net::RecvFlags;
use rustix::net::SendAncillaryBuffer;
use rustix::net::SendAncillaryMessage;
use rustix::net::SendFlags;
use vfio_migration::Errno;
use vfu::framing::Frame;
use vfu::framing::Framer;
use vfu::framing::ReplyBody;
use vfu::framing::encode_request;
use vfu::limits::Limits;
use vfu::message::Reply;
use vfu::payload::Payload;
use vfu::version::Capabilities;
use vfu::version::Version;

/// How long the client waits for a reply before failing the test.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A decoded reply with the descriptors that came with it.
#[derive(Debug)]
pub struct Answer {
    /// The reply (or the server's errno).
    pub body: ReplyBody,
    /// Descriptors attached to the reply.
    pub fds: Vec<OwnedFd>,
}

impl Answer {
    /// The successful reply; panics (failing the test) on an error reply.
    pub fn ok(self) -> Reply {
        match self.body {
            ReplyBody::Ok(reply) => reply,
            ReplyBody::Error(errno) => panic!("unexpected error reply, errno {errno}"),
        }
    }

    /// The errno of an error reply; panics on success.
    pub fn errno(&self) -> Errno {
        match &self.body {
            ReplyBody::Error(errno) => *errno,
            ReplyBody::Ok(reply) => panic!("expected an error reply, got {reply:?}"),
        }
    }
}

/// One client connection.
pub struct TestClient {
    stream: UnixStream,
    framer: Framer<OwnedFd>,
    next_id: u16,
}

impl TestClient {
    /// Connects without negotiating.
    pub fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect to the server");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("read timeout");
        Self {
            stream,
            framer: Framer::new(u32::MAX),
            next_id: 1,
        }
    }

    /// Connects and negotiates with default capabilities.
    pub fn negotiated(path: &Path) -> Self {
        let mut client = Self::connect(path);
        let reply = client.request(&proposal(Capabilities::default()), &[]).ok();
        assert!(matches!(reply, Reply::Version(_)), "{reply:?}");
        client
    }

    /// Hangs up and connects again (negotiated): the server only accepts the new connection
    /// once it has finished with this one.
    pub fn reconnect(&mut self, path: &Path) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        *self = Self::negotiated(path);
    }

    /// The next message id.
    pub fn next_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends raw bytes, with `fds` attached to the first byte.
    pub fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if sent == 0 && !fds.is_empty() {
                assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
            }
            sent += rustix::net::sendmsg(
                &self.stream,
                &[IoSlice::new(&bytes[sent..])],
                &mut control,
                SendFlags::NOSIGNAL,
            )?;
        }
        Ok(())
    }

    /// Sends a request; returns its msg_id.
    pub fn send<P: Payload>(&mut self, body: &P, fds: &[BorrowedFd<'_>], no_reply: bool) -> u16 {
        let id = self.next_id();
        self.send_raw(&encode_request(id, body, no_reply), fds)
            .expect("send request");
        id
    }

    /// Receives the next message, `None` when the server closed the connection or `timeout`
    /// passed.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Frame<OwnedFd>> {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        loop {
            if let Some(frame) = self.framer.next_frame().expect("server framing") {
                return Some(frame);
            }
            let mut buf = vec![0; 64 * 1024];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = match rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(received) => received,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return None,
            };
            if received.bytes == 0 {
                return None;
            }
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                    fds.extend(received_fds);
                }
            }
            self.framer.push(&buf[..received.bytes], fds);
        }
    }

    /// Receives the reply to `id` (which must be the next message).
    pub fn reply_to(&mut self, id: u16) -> Answer {
        let frame = self
            .recv_within(REPLY_TIMEOUT)
            .expect("a reply before the timeout");
        assert_eq!(frame.header.msg_id, id, "reply to the request just sent");
        let body = frame
            .decode_reply(&Limits::default())
            .expect("a well-formed reply");
        Answer {
            body,
            fds: frame.fds,
        }
    }

    /// Sends a request and waits for its reply.
    pub fn request<P: Payload>(&mut self, body: &P, fds: &[BorrowedFd<'_>]) -> Answer {
        let id = self.send(body, fds, false);
        self.reply_to(id)
    }

    /// Whether the server closed the connection (reads to EOF within the timeout).
    pub fn wait_closed(&mut self) -> bool {
        while self.recv_within(REPLY_TIMEOUT).is_some() {}
        let mut byte = [0u8; 1];
        matches!(
            rustix::net::recv(&self.stream, &mut byte, RecvFlags::DONTWAIT),
            Ok((0, _))
        )
    }

    /// The socket, to send from other helpers.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// A VERSION proposal for 0.0 with `capabilities`.
pub fn proposal(capabilities: Capabilities) -> Version {
    Version {
        major: 0,
        minor: 0,
        capabilities,
    }
}
