//! Control connections ([`crate::control`]): told apart from vfio-user clients by their first
//! bytes, answered each on a thread of its own so that neither the accept loop nor an attached
//! client's reader ever waits for one.
//!
//! A control client is as hostile as any: at most [`MAX_ACTIVE`] connections are answered at
//! once (further ones are closed), a request must arrive within
//! [`crate::control::EXCHANGE_TIMEOUT`] and fit in [`crate::control::MAX_REQUEST_BYTES`], and a
//! reply that is not read within the same time is dropped.

use std::fmt;
use std::os::fd::AsFd as _;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use rustix::net::RecvFlags;

use crate::control::ControlHandler;
use crate::control::EXCHANGE_TIMEOUT;
use crate::control::FirstBytes;
use crate::control::HELLO;
use crate::control::MAX_REQUEST_BYTES;
use crate::control::Reply;
use crate::control::RequestLine;
use crate::control::classify;
use crate::control::request_line;
use crate::socket::wait_readable;

/// Most control connections answered at once per server.
pub(super) const MAX_ACTIVE: usize = 8;

/// How long the accept loop waits for a new connection's first bytes before taking it for a
/// vfio-user client (which speaks first, at once; a control client sends its hello at once too).
const CLASSIFY_WAIT: Duration = Duration::from_millis(500);

/// Most bytes a control connection may send: the hello and one request line.
pub(super) const MAX_CONTROL_BYTES: usize = HELLO.len() + MAX_REQUEST_BYTES;

/// Where a server's control connections go: the handler, and how many are being answered.
#[derive(Clone)]
pub(super) struct ControlPort {
    handler: Arc<dyn ControlHandler>,
    active: Arc<AtomicUsize>,
}

impl fmt::Debug for ControlPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPort")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Gives the count back when an answering thread ends, however it ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ControlPort {
    /// Control connections go to `handler`.
    pub fn new(handler: Arc<dyn ControlHandler>) -> Self {
        Self {
            handler,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Answers the connection on `socket` on a thread of its own; `received` holds what was
    /// already read from it (from its first byte). Beyond [`MAX_ACTIVE`] the connection is
    /// closed unanswered.
    pub fn hand_off(&self, socket: OwnedFd, received: Vec<u8>) {
        if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE {
            self.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                max = MAX_ACTIVE,
                "too many control connections; closing one"
            );
            return;
        }
        let active = Active(self.active.clone());
        let handler = self.handler.clone();
        let spawned = std::thread::Builder::new()
            .name("vfu-control".into())
            .spawn(move || {
                let _active = active;
                answer(handler.as_ref(), &socket, received);
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start a thread for a control connection: {err}");
        }
    }
}

/// Looks at a newly accepted connection's first bytes without taking them, for up to
/// [`CLASSIFY_WAIT`]; a connection that says nothing in time is a vfio-user client's.
pub(super) fn classify_new(socket: &OwnedFd) -> FirstBytes {
    let deadline = Instant::now() + CLASSIFY_WAIT;
    let mut buf = [0u8; HELLO.len()];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return FirstBytes::VfioUser;
        }
        match wait_readable(socket.as_fd(), left) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return FirstBytes::VfioUser,
        }
        match rustix::net::recv(socket, &mut buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            // A hang-up: the vfio-user session sees it and ends at once.
            Ok((0, _)) => return FirstBytes::VfioUser,
            Ok((n, _)) => match classify(&buf[..n]) {
                // Past the command field, a hello's prefix is no vfio-user header.
                FirstBytes::Undecided if n >= 4 => return FirstBytes::Control,
                FirstBytes::Undecided => {
                    // Part of a hello: readable stays true until more arrives.
                    std::thread::sleep(Duration::from_millis(5));
                }
                decided => return decided,
            },
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(_) => return FirstBytes::VfioUser,
        }
    }
}

/// Reads the hello and the request line (after `received`), asks `handler`, sends the reply.
fn answer(handler: &dyn ControlHandler, socket: &OwnedFd, mut received: Vec<u8>) {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let reply = match read_request(socket, &mut received, deadline) {
        Ok(line) => {
            let line = line.to_owned();
            Reply::line(handler.answer(&line))
        }
        Err(Unanswerable::Silent) => return,
        Err(Unanswerable::Invalid(reason)) => Reply::line(Err(reason.to_owned())),
    };
    if let Err(err) = crate::control::send_all(socket, &reply, Instant::now() + EXCHANGE_TIMEOUT) {
        tracing::info!("a control client did not take its reply: {err}");
    }
    discard_unread(socket);
}

/// Reads away (without waiting, at most 64 KiB) what the client sent beyond its request:
/// closing a socket with unread bytes resets the connection, which can cost the client the
/// reply it has not read yet.
fn discard_unread(socket: &OwnedFd) {
    let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Write);
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match rustix::net::recv(socket, &mut buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Why a control connection gets no result.
enum Unanswerable {
    /// It hung up, failed or took too long: nothing to answer.
    Silent,
    /// It sent something that is no request: answer with this reason.
    Invalid(&'static str),
}

/// Reads from the non-blocking `socket` into `received` until it holds the hello and a request
/// line, before `deadline`.
fn read_request<'a>(
    socket: &OwnedFd,
    received: &'a mut Vec<u8>,
    deadline: Instant,
) -> Result<&'a str, Unanswerable> {
    rustix::io::ioctl_fionbio(socket, true).map_err(|_| Unanswerable::Silent)?;
    let mut buf = [0u8; 4096];
    loop {
        match classify(received) {
            FirstBytes::VfioUser => {
                return Err(Unanswerable::Invalid(
                    "this is a control socket: a connection starts with VFIO-NVME-CTL/1 and a newline",
                ));
            }
            FirstBytes::Control => match request_line(&received[HELLO.len()..]) {
                RequestLine::Complete(_) => break,
                RequestLine::Invalid(reason) => return Err(Unanswerable::Invalid(reason)),
                RequestLine::Incomplete => {}
            },
            FirstBytes::Undecided => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unanswerable::Silent);
        }
        match wait_readable(socket.as_fd(), left) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return Err(Unanswerable::Silent),
        }
        let room = MAX_CONTROL_BYTES
            .saturating_sub(received.len())
            .min(buf.len());
        match rustix::net::recv(socket, &mut buf[..room.max(1)], RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Err(Unanswerable::Silent),
            Ok((n, _)) => received.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(_) => return Err(Unanswerable::Silent),
        }
    }
    match request_line(&received[HELLO.len()..]) {
        RequestLine::Complete(line) => Ok(line),
        _ => Err(Unanswerable::Silent),
    }
}
