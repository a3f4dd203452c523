//! [`Eventfd`]: an interrupt file descriptor from `DEVICE_SET_IRQS`, checked to be an eventfd and
//! signalled without ever blocking.
//!
//! A client may pass any descriptor as an "eventfd". A pipe or socket fills up after a few
//! thousand writes and then blocks the writer for good (the device's I/O thread, and with it the
//! server and its shutdown), and even a real eventfd blocks a writer once its counter is near
//! 2^64 - 1, which a client can arrange by writing to it. So the server accepts only eventfds
//! ([`Eventfd::new`]) and puts them in non-blocking mode; a signal that finds the counter full is
//! dropped, which loses nothing: the client has not consumed the earlier ones, and the fd is
//! readable anyway.
//!
//! Non-blocking mode is a property of the file description, which the client shares: its own
//! reads of the eventfd no longer block either. VMMs create their eventfds non-blocking already
//! (QEMU's event notifiers, Cloud Hypervisor's `EventFd`), and KVM's irqfds do not read at all.
//! A client that clears the flag again (`F_SETFL`) and then fills the counter can still block
//! the writer of that vector; it can only do that to its own device's interrupts.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use rustix::fs::OFlags;

/// An eventfd the server signals an interrupt vector on; see the module docs.
#[derive(Debug)]
pub struct Eventfd(OwnedFd);

/// A descriptor refused as an interrupt eventfd.
#[derive(Debug, thiserror::Error)]
pub enum NotAnEventfd {
    /// The descriptor is some other kind of file (pipe, socket, regular file, ...).
    #[error("the descriptor is {kind}, not an eventfd")]
    OtherFile {
        /// What `/proc/self/fd` says it is.
        kind: String,
    },
    /// Its kind could not be determined or it could not be made non-blocking.
    #[error("cannot check the descriptor: {0}")]
    Io(#[from] io::Error),
}

/// What `/proc/self/fd/N` links to for an eventfd.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

impl Eventfd {
    /// Takes `fd` if it is an eventfd, switched to non-blocking mode.
    ///
    /// # Errors
    /// The descriptor is not an eventfd, or its flags cannot be read or set.
    pub fn new(fd: OwnedFd) -> Result<Self, NotAnEventfd> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if link.as_os_str() != EVENTFD_LINK {
            return Err(NotAnEventfd::OtherFile {
                kind: link.display().to_string(),
            });
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(io::Error::from)?;
        if !flags.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK).map_err(io::Error::from)?;
        }
        Ok(Self(fd))
    }

    /// Adds 1 to the counter, never blocking. Returns false when the signal was dropped (the
    /// counter is full, or the write failed).
    pub fn signal(&self) -> bool {
        match rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(_) => true,
            Err(rustix::io::Errno::AGAIN) => false,
            Err(err) => {
                tracing::debug!("signalling an interrupt eventfd failed: {err}");
                false
            }
        }
    }
}

impl AsFd for Eventfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use rustix::event::EventfdFlags;

    use super::*;

    fn counter(fd: &Eventfd) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(fd, &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    #[test]
    fn eventfds_are_accepted_and_made_non_blocking() {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let eventfd = Eventfd::new(fd).unwrap();
        assert!(
            rustix::fs::fcntl_getfl(&eventfd)
                .unwrap()
                .contains(OFlags::NONBLOCK)
        );
        assert!(eventfd.signal());
        assert!(eventfd.signal());
        assert_eq!(counter(&eventfd), 2);
        assert_eq!(counter(&eventfd), 0, "reading no longer blocks either");
    }

    #[test]
    fn a_full_counter_drops_the_signal_instead_of_blocking() {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let eventfd = Eventfd::new(fd).unwrap();
        assert!(!eventfd.signal());
        assert_eq!(counter(&eventfd), u64::MAX - 1);
    }

    #[test]
    fn other_descriptors_are_refused_naming_what_they_are() {
        let (read, write) = std::io::pipe().unwrap();
        let err = Eventfd::new(write.into()).unwrap_err();
        assert!(err.to_string().contains("pipe:"), "{err}");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Eventfd::new(a.into()).is_err());
        drop(read);
    }
}
