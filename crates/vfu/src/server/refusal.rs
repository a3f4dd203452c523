//! Connections that arrive while a client is attached: each gets an error reply carrying EBUSY to
//! its first request and is then closed, so a second client can tell "busy" from "dead" at once
//! instead of waiting in the listen backlog without an answer. (The reader leaves a newcomer in
//! the backlog for half a second first: if the attached client was only just hanging up, the
//! newcomer is the next client, not a second one.)
//!
//! A connection whose first bytes are the control protocol's hello ([`crate::control`]) is not
//! refused: it goes to the server's control port, when it has one.
//!
//! The refused connections are served by the attached connection's reader thread between its own
//! reads, never blocking it: every socket is non-blocking, a refusal waits at most
//! [`REFUSAL_WAIT`] for the first header, and at most [`MAX_REFUSALS`] wait at once (further
//! ones are closed straight away).

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::time::Duration;
use std::time::Instant;

use rustix::net::RecvFlags;
use rustix::net::SendFlags;
use vfio_migration::Errno;
use zerocopy::FromBytes;

use super::control::ControlPort;
use super::control::MAX_CONTROL_BYTES;
use crate::control::FirstBytes;
use crate::control::classify;
use crate::framing::encode_error_reply;
use crate::header::HEADER_SIZE;
use crate::header::Header;

/// How long a refused connection may take to send its first header.
pub(super) const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Most refused connections waiting for their first header at once.
pub(super) const MAX_REFUSALS: usize = 16;

/// One refused connection waiting for its first request.
struct Refusal {
    socket: OwnedFd,
    /// What it sent so far: at most a header's worth, or a control hello and request.
    first: Vec<u8>,
    deadline: Instant,
}

/// The refused connections of one attached connection.
pub(super) struct Refusals {
    waiting: Vec<Refusal>,
    /// Where control connections go instead of being refused, if anywhere.
    control: Option<ControlPort>,
}

impl Refusals {
    /// No connection refused yet; control connections (if `control`) are handed to it.
    pub fn new(control: Option<ControlPort>) -> Self {
        Self {
            waiting: Vec::new(),
            control,
        }
    }

    /// Takes a connection accepted while a client is attached (a non-blocking socket).
    pub fn add(&mut self, socket: OwnedFd) {
        if self.waiting.len() >= MAX_REFUSALS {
            tracing::warn!(
                max = MAX_REFUSALS,
                "too many connections waiting to be refused; closing one without a reply"
            );
            return;
        }
        self.waiting.push(Refusal {
            socket,
            first: Vec::with_capacity(HEADER_SIZE),
            deadline: Instant::now() + REFUSAL_WAIT,
        });
    }

    /// The sockets to poll for readability.
    pub fn sockets(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.waiting.iter().map(|r| r.socket.as_fd())
    }

    /// Reads what the refused connections sent; answers those whose first header is in and
    /// closes them, hands control connections to the control port, and closes those that hung
    /// up or waited too long.
    pub fn serve(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.waiting.len() {
            match self.waiting[i].progress(now, self.control.is_some()) {
                Next::Wait => i += 1,
                Next::Close => {
                    self.waiting.swap_remove(i);
                }
                Next::Control => {
                    let refusal = self.waiting.swap_remove(i);
                    if let Some(port) = &self.control {
                        port.hand_off(refusal.socket, refusal.first);
                    }
                }
            }
        }
    }
}

/// What becomes of a waiting connection.
enum Next {
    /// It still waits for its first bytes.
    Wait,
    /// It was answered (or hung up, or waited too long): close it.
    Close,
    /// It is a control connection.
    Control,
}

impl Refusal {
    /// Reads what arrived; `control` says whether control connections are taken.
    fn progress(&mut self, now: Instant, control: bool) -> Next {
        let mut buf = [0u8; 4096];
        // A control connection may send its request with its hello: keep all of it.
        let keep = if control {
            MAX_CONTROL_BYTES
        } else {
            HEADER_SIZE
        };
        loop {
            match rustix::net::recv(&self.socket, &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Next::Close,
                Ok((n, _)) => {
                    let want = keep.saturating_sub(self.first.len()).min(n);
                    self.first.extend_from_slice(&buf[..want]);
                    // Nothing past `keep` is used: stop reading, so a newcomer that writes
                    // without pause cannot hold this (the attached client's) reader thread.
                    if self.first.len() >= keep {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => return Next::Close,
            }
        }
        if control {
            match classify(&self.first) {
                FirstBytes::Control => return Next::Control,
                FirstBytes::Undecided if now < self.deadline => return Next::Wait,
                FirstBytes::Undecided => return Next::Close,
                FirstBytes::VfioUser => {}
            }
        }
        match refusal(&self.first[..self.first.len().min(HEADER_SIZE)]) {
            Refused::Waiting if now < self.deadline => Next::Wait,
            Refused::Waiting => Next::Close,
            Refused::Answer(reply) => {
                tracing::info!("refusing a vfio-user client: another client is attached (EBUSY)");
                // An error reply is 16 bytes into an empty socket buffer: it cannot block.
                let _ = rustix::net::send(
                    &self.socket,
                    &reply,
                    SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                );
                Next::Close
            }
            Refused::Silently => Next::Close,
        }
    }
}

/// What to do with a refused connection that has sent `first` (its first bytes, at most a
/// header's worth).
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The header is not complete yet.
    Waiting,
    /// Send this error reply (EBUSY, the request's msg_id and command), then close.
    Answer([u8; HEADER_SIZE]),
    /// Close without a reply (the request asked for none).
    Silently,
}

fn refusal(first: &[u8]) -> Refused {
    match Header::read_from_prefix(first) {
        Ok((header, _)) if header.flags.no_reply() => Refused::Silently,
        Ok((header, _)) => Refused::Answer(encode_error_reply(&header, Errno::EBUSY)),
        Err(_) => Refused::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::framing::Framer;
    use crate::framing::ReplyBody;
    use crate::limits::Limits;

    #[test]
    fn the_first_header_gets_ebusy_with_its_msg_id() {
        let request = Header::command(42, Command::VERSION, 30, false);
        let bytes = zerocopy::IntoBytes::as_bytes(&request).to_vec();
        assert_eq!(refusal(&bytes[..15]), Refused::Waiting);
        let Refused::Answer(reply) = refusal(&bytes) else {
            panic!("a complete header is answered");
        };
        let mut framer = Framer::<()>::new(64);
        framer.push(&reply, None);
        let frame = framer.next_frame().unwrap().unwrap();
        assert_eq!(frame.header.msg_id, 42);
        assert_eq!(frame.header.command, Command::VERSION);
        assert_eq!(
            frame.decode_reply(&Limits::default()).unwrap(),
            ReplyBody::Error(Errno::EBUSY)
        );
        let quiet = Header::command(1, Command::VERSION, 0, true);
        assert_eq!(
            refusal(zerocopy::IntoBytes::as_bytes(&quiet)),
            Refused::Silently
        );
    }

    #[test]
    fn fuzz_refusals() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                let first = &bytes[..bytes.len().min(HEADER_SIZE)];
                if let Refused::Answer(reply) = refusal(first) {
                    let mut framer = Framer::<()>::new(64);
                    framer.push(&reply, None);
                    let frame = framer.next_frame().unwrap().unwrap();
                    assert_eq!(
                        frame.decode_reply(&Limits::default()).unwrap(),
                        ReplyBody::Error(Errno::EBUSY)
                    );
                }
            });
    }
}
