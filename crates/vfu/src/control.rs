//! The control protocol: how a tool that is not a vfio-user client (an operator's `ctl`, a
//! migration orchestrator asking why a destination refused a stream) talks to a server,
//! version 1. Documented for users in `docs/CONTROL.md`.
//!
//! A connection carries one exchange and is then closed:
//!
//! 1. the client sends the 16-byte [`HELLO`] `VFIO-NVME-CTL/1\n`;
//! 2. then one request: a JSON object on one line (at most [`MAX_REQUEST_BYTES`], ended by
//!    `\n`), e.g. `{"command":"status"}`;
//! 3. the server answers with one JSON line (at most [`MAX_REPLY_BYTES`]): `{"version":1,
//!    "ok":true,"result":…}` or `{"version":1,"ok":false,"error":"…"}`, and closes.
//!
//! The same protocol is answered on a standalone control socket and, when the server was given
//! a [`ControlHandler`], on the vfio-user socket itself: a hello cannot be a vfio-user header
//! (its bytes 2–3, the header's command field, read `IO`, no vfio-user command), so the server
//! tells the two apart from a connection's first bytes, also while a client is attached (a
//! second vfio-user client gets EBUSY, a control connection its answer). What QEMU or any
//! vfio-user client sees does not change.
//!
//! This module holds what both ends share and what is NVMe-free: the framing
//! ([`classify`], [`request_line`]), the reply envelope, the client ([`request`]) and the
//! JSON view of a device's migration ([`MigrationView`]). What requests mean is the
//! handler's business.

use std::io;
use std::os::fd::AsFd as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;
use vfio_migration::SavePhase;

use crate::server::FailedRequest;
use crate::server::MigrationFailure;
use crate::server::MigrationStatus;
use crate::server::SessionStatus;

/// The first bytes of every control connection: the protocol's name and version.
pub const HELLO: &[u8; 16] = b"VFIO-NVME-CTL/1\n";

/// The protocol version in [`HELLO`] and in every reply.
pub const VERSION: u32 = 1;

/// Longest request line, its `\n` included.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Longest reply line a client accepts, its `\n` included.
pub const MAX_REPLY_BYTES: usize = 4 << 20;

/// How long the server waits for a control connection's request, and a client for its reply.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// Too few bytes to tell (they are a prefix of [`HELLO`]).
    Undecided,
    /// A control connection; the request starts after the [`HELLO`].
    Control,
    /// Anything else: a vfio-user client (or garbage the vfio-user session answers).
    VfioUser,
}

/// Tells a control connection from a vfio-user one by its first bytes.
pub fn classify(first: &[u8]) -> FirstBytes {
    if first.starts_with(HELLO) {
        FirstBytes::Control
    } else if HELLO.starts_with(first) {
        FirstBytes::Undecided
    } else {
        FirstBytes::VfioUser
    }
}

/// What the bytes after the hello hold so far.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestLine<'a> {
    /// No `\n` yet, and room for more.
    Incomplete,
    /// The request line, without its `\n`.
    Complete(&'a str),
    /// No request can come of these bytes; the reason, for the error reply.
    Invalid(&'static str),
}

/// Finds the request line in `received` (the bytes after the hello).
pub fn request_line(received: &[u8]) -> RequestLine<'_> {
    match received.iter().position(|&b| b == b'\n') {
        Some(end) if end < MAX_REQUEST_BYTES => match std::str::from_utf8(&received[..end]) {
            Ok(line) => RequestLine::Complete(line),
            Err(_) => RequestLine::Invalid("the request line is not UTF-8"),
        },
        Some(_) => RequestLine::Invalid("the request line is longer than 4096 bytes"),
        None if received.len() >= MAX_REQUEST_BYTES => {
            RequestLine::Invalid("the request line is longer than 4096 bytes")
        }
        None => RequestLine::Incomplete,
    }
}

/// Answers control requests. The server calls it on a thread of its own, one call per
/// connection, with the request line; it must only read device state (never wait on anything
/// a vfio-user client's request holds).
pub trait ControlHandler: Send + Sync {
    /// The result of `request` (a line that should be a JSON object), or why there is none.
    fn answer(&self, request: &str) -> Result<serde_json::Value, String>;
}

/// The reply envelope, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The protocol version ([`VERSION`]).
    pub version: u32,
    /// Whether there is a result.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why the request failed, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// The envelope of `answer`, as the line to send (with its `\n`).
    pub fn line(answer: Result<serde_json::Value, String>) -> Vec<u8> {
        let reply = match answer {
            Ok(result) => Self {
                version: VERSION,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(error) => Self {
                version: VERSION,
                ok: false,
                result: None,
                error: Some(error),
            },
        };
        let mut line = serde_json::to_vec(&reply).unwrap_or_else(|_| {
            br#"{"version":1,"ok":false,"error":"the reply could not be encoded"}"#.to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// Why a control request got no result.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing at the path.
    #[error(
        "no server at {path}: the socket does not exist; start `vfio-nvme serve` there or check the path"
    )]
    NoSocket {
        /// The path.
        path: PathBuf,
    },
    /// A socket file nobody listens on (a server that exited without removing it).
    #[error(
        "no server at {path}: nobody listens on the socket (a server that exited?); start `vfio-nvme serve` there"
    )]
    NotListening {
        /// The path.
        path: PathBuf,
    },
    /// Connecting, sending or receiving failed otherwise.
    #[error("control request to {path} failed while {action}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// No complete reply within [`EXCHANGE_TIMEOUT`].
    #[error(
        "no control reply from {path} within {timeout:?}: the server there does not speak the control protocol (an older vfio-nvme, another vfio-user server?)"
    )]
    NoReply {
        /// The path.
        path: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The reply was not a reply of this protocol.
    #[error("the control reply from {path} is malformed: {reason}")]
    Malformed {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered that the request failed.
    #[error("{path}: {error}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// The server's reason.
        error: String,
    },
}

/// Sends `request` (a JSON object) to the control endpoint at `path` (a control socket or a
/// vfio-user socket of a server with a [`ControlHandler`]) and returns the result.
///
/// # Errors
/// See [`ControlError`]: no socket, nobody listening, no reply in time (each told apart at
/// once or within [`EXCHANGE_TIMEOUT`]), a malformed reply, or the server's refusal.
pub fn request(
    path: &Path,
    request: &serde_json::Value,
) -> Result<serde_json::Value, ControlError> {
    let io_error = |action, source| ControlError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NoSocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ControlError::NotListening {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io_error("connecting", e)),
    };
    let mut message = HELLO.to_vec();
    message.extend_from_slice(request.to_string().as_bytes());
    message.push(b'\n');
    let socket = OwnedFd::from(stream);
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let no_reply = || ControlError::NoReply {
        path: path.to_owned(),
        timeout: EXCHANGE_TIMEOUT,
    };
    match exchange(&socket, &message, deadline, MAX_REPLY_BYTES) {
        Ok(Some(reply)) => {
            let reply: Reply =
                serde_json::from_slice(&reply).map_err(|e| ControlError::Malformed {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            match reply {
                Reply {
                    ok: true,
                    result: Some(result),
                    ..
                } => Ok(result),
                Reply {
                    ok: false,
                    error: Some(error),
                    ..
                } => Err(ControlError::Refused {
                    path: path.to_owned(),
                    error,
                }),
                _ => Err(ControlError::Malformed {
                    path: path.to_owned(),
                    reason: "neither a result nor an error".to_owned(),
                }),
            }
        }
        Ok(None) => Err(no_reply()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(no_reply()),
        // A vfio-user server without the control protocol drops the connection on the
        // framing error the hello is to it.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(no_reply()),
        Err(e) => Err(io_error("exchanging the request", e)),
    }
}

/// Sends `message` on `socket` and reads one line back (at most `max` bytes), all before
/// `deadline`; `None` when the line did not end in time (too long counts as malformed: `Ok` of
/// an unterminated line is never returned).
fn exchange(
    socket: &OwnedFd,
    message: &[u8],
    deadline: Instant,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    rustix::io::ioctl_fionbio(socket, true)?;
    send_all(socket, message, deadline)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(end) = reply.iter().position(|&b| b == b'\n') {
            reply.truncate(end);
            return Ok(Some(reply));
        }
        if reply.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the reply is longer than {max} bytes"),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        if !crate::socket::wait_readable(socket.as_fd(), left)? {
            continue;
        }
        match rustix::net::recv(socket, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without a reply",
                ));
            }
            Ok((n, _)) => reply.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::CONNRESET) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server reset the connection without a reply",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `bytes` to the non-blocking `socket` before `deadline`.
pub(crate) fn send_all(socket: &OwnedFd, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(
            socket,
            bytes,
            rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
        ) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer does not read",
                    ));
                }
                crate::socket::wait_writable(socket.as_fd(), left.min(Duration::from_millis(50)))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A device's migration as the control protocol shows it (the `migration` result, and part of
/// `status`), built from [`MigrationStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationView {
    /// The VFIO device state, e.g. `RUNNING`, `PRE_COPY`, `RESUMING`.
    pub state: String,
    /// The open data session, if any.
    pub session: Option<SessionView>,
    /// DMA logging, while it runs.
    pub logging: Option<LoggingView>,
    /// The most recent failed migration request (kept across resets, until another fails).
    pub last_failure: Option<FailureView>,
}

/// The open data session of a [`MigrationView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// `saving` or `resuming`.
    pub kind: String,
    /// Saving: the phase (`PRE_COPY`, `PRE_COPY_P2P`, `STOP_COPY`).
    pub phase: Option<String>,
    /// Bytes read (saving) or written (resuming) so far.
    pub bytes: u64,
    /// Saving: the end of the STOP_COPY stream was reached.
    pub ended: Option<bool>,
    /// Resuming: the most the session accepts.
    pub max_bytes: Option<u64>,
}

/// DMA logging of a [`MigrationView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingView {
    /// Tracking page size in bytes.
    pub page_size: u64,
    /// Logged ranges as `[iova, length]`.
    pub ranges: Vec<[u64; 2]>,
}

/// A failed migration request of a [`MigrationView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// `MIG_DATA_WRITE`, `MIG_DATA_READ` or `SET_STATE`.
    pub request: String,
    /// For `SET_STATE`: the state the walk started from and the one asked for.
    pub from: Option<String>,
    /// See `from`.
    pub target: Option<String>,
    /// The errno the vfio-user client was answered with.
    pub errno: i32,
    /// Its name, e.g. `EINVAL`.
    pub errno_name: Option<String>,
    /// Why, in words: the error and its causes.
    pub reason: String,
}

impl MigrationView {
    /// The view of `status`.
    pub fn new(status: &MigrationStatus) -> Self {
        let session = status.session.map(|session| match session {
            SessionStatus::Saving {
                phase,
                bytes_read,
                ended,
            } => SessionView {
                kind: "saving".to_owned(),
                phase: Some(
                    match phase {
                        SavePhase::PreCopy => "PRE_COPY",
                        SavePhase::PreCopyP2p => "PRE_COPY_P2P",
                        SavePhase::StopCopy => "STOP_COPY",
                    }
                    .to_owned(),
                ),
                bytes: bytes_read,
                ended: Some(ended),
                max_bytes: None,
            },
            SessionStatus::Resuming { written, max_bytes } => SessionView {
                kind: "resuming".to_owned(),
                phase: None,
                bytes: written,
                ended: None,
                max_bytes: Some(max_bytes),
            },
        });
        Self {
            state: status.state.to_string(),
            session,
            logging: status.logging.as_ref().map(|logging| LoggingView {
                page_size: logging.page_size,
                ranges: logging.ranges.iter().map(|r| [r.iova, r.length]).collect(),
            }),
            last_failure: status.last_failure.as_ref().map(FailureView::new),
        }
    }
}

impl FailureView {
    /// The view of `failure`.
    pub fn new(failure: &MigrationFailure) -> Self {
        let (request, from, target) = match failure.request {
            FailedRequest::SetState { from, target } => (
                "SET_STATE",
                Some(from.to_string()),
                Some(target.to_string()),
            ),
            FailedRequest::Read => ("MIG_DATA_READ", None, None),
            FailedRequest::Write => ("MIG_DATA_WRITE", None, None),
        };
        Self {
            request: request.to_owned(),
            from,
            target,
            errno: failure.errno.get(),
            errno_name: failure.errno.name().map(str::to_owned),
            reason: reason(failure.error()),
        }
    }
}

/// An error and its causes joined by ": ", leaving out a cause an outer message already quotes.
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::header::Header;

    #[test]
    fn a_hello_is_no_vfio_user_header() {
        let command = u16::from_le_bytes([HELLO[2], HELLO[3]]);
        assert!(!Command(command).is_supported(), "{command:#x}");
        let version = Header::command(1, Command::VERSION, 30, false);
        let bytes = zerocopy::IntoBytes::as_bytes(&version);
        assert_eq!(classify(bytes), FirstBytes::VfioUser);
        assert_eq!(classify(&bytes[..2]), FirstBytes::VfioUser);
        assert_eq!(classify(b""), FirstBytes::Undecided);
        assert_eq!(classify(&HELLO[..7]), FirstBytes::Undecided);
        assert_eq!(classify(HELLO), FirstBytes::Control);
        assert_eq!(classify(b"VFIO-NVME-CTL/2\n"), FirstBytes::VfioUser);
    }

    #[test]
    fn request_lines_are_bounded() {
        assert_eq!(request_line(b"{\"command\""), RequestLine::Incomplete);
        assert_eq!(
            request_line(b"{\"command\":\"status\"}\nrest"),
            RequestLine::Complete("{\"command\":\"status\"}")
        );
        assert!(matches!(request_line(b"\xff\n"), RequestLine::Invalid(_)));
        let long = vec![b'x'; MAX_REQUEST_BYTES];
        assert!(matches!(request_line(&long), RequestLine::Invalid(_)));
        let mut line = vec![b'x'; MAX_REQUEST_BYTES - 1];
        line.push(b'\n');
        assert!(matches!(request_line(&line), RequestLine::Complete(_)));
    }

    #[test]
    fn replies_round_trip() {
        let ok = Reply::line(Ok(serde_json::json!({"a": 1})));
        assert_eq!(ok.last(), Some(&b'\n'));
        let reply: Reply = serde_json::from_slice(&ok).unwrap();
        assert!(reply.ok && reply.result.is_some() && reply.version == VERSION);
        let err: Reply = serde_json::from_slice(&Reply::line(Err("no".into()))).unwrap();
        assert_eq!((err.ok, err.error.as_deref()), (false, Some("no")));
    }

    #[test]
    fn fuzz_first_bytes_and_request_lines() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                let kind = classify(bytes);
                assert_eq!(kind == FirstBytes::Control, bytes.starts_with(HELLO));
                match request_line(bytes) {
                    RequestLine::Complete(line) => {
                        assert!(line.len() < MAX_REQUEST_BYTES && !line.contains('\n'));
                    }
                    RequestLine::Incomplete => assert!(bytes.len() < MAX_REQUEST_BYTES),
                    RequestLine::Invalid(_) => {}
                }
            });
    }
}
