//! The eventfd a file queue signals when a request has finished.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use rustix::event::EventfdFlags;

/// A non-blocking eventfd: signalled by whoever finishes a request, drained by the reaper.
#[derive(Debug)]
pub(super) struct Notifier(OwnedFd);

impl Notifier {
    /// A fresh, unsignalled eventfd.
    pub(super) fn new() -> io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot create the file backend's completion eventfd: {e}"),
                )
            })?;
        Ok(Self(fd))
    }

    /// Makes the eventfd readable. Cannot fail in a way worth reporting: the counter only
    /// overflows after 2^64 - 1 unreaped signals.
    pub(super) fn signal(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets the eventfd to unreadable.
    pub(super) fn drain(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut count);
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
