//! A non-blocking eventfd that one thread signals and another waits on: a file queue's
//! "a request finished", a sleeping I/O worker's "a doorbell was written".

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use rustix::event::EventfdFlags;

/// A non-blocking eventfd: signalled by the producer, drained by the thread that waits on it.
#[derive(Debug)]
pub(crate) struct Notifier(OwnedFd);

impl Notifier {
    /// A fresh, unsignalled eventfd; `what` names its use in the error ("the file backend's
    /// completion eventfd").
    pub(crate) fn new(what: &str) -> io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot create {what}: {e}"),
                )
            })?;
        Ok(Self(fd))
    }

    /// Makes the eventfd readable. Cannot fail in a way worth reporting: the counter only
    /// overflows after 2^64 - 1 unreaped signals.
    pub(crate) fn signal(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets the eventfd to unreadable.
    pub(crate) fn drain(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut count);
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
