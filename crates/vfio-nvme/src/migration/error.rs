//! Errors of the migration driver and the errno each one reaches a VFIO or vfio-user client with.
//!
//! The errnos follow the kernel's variant drivers (mlx5, hisi_acc, virtio): EIO when the device
//! itself failed (a TP4159 command on the primary controller, reading or writing namespace
//! data), EINVAL for a stream that is corrupt, truncated or from an incompatible device. A stream
//! larger than the destination accepts is ENOMEM, answered by the resuming session's bound
//! ([`vfio_migration::SessionError::TooMuchData`]) before the data reaches the driver.

use std::sync::Arc;

use vfio_migration::Errno;
use vfio_migration::ToErrno;

use super::admin::LmError;
use super::tp4159::StateFormats;
use crate::pci::face::PciFaceMismatch;
use crate::stream::StreamError;

/// Why an arc or a data-session call of the NVMe migration driver failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A TP4159 command on the primary controller failed.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// Namespace data could not be read (source).
    #[error("namespace data: {0}")]
    Io(#[from] std::io::Error),
    /// The source could not encode its stream (a record the format cannot carry).
    #[error("cannot write the migration stream: {0}")]
    Encode(#[source] StreamError),
    /// The destination refused the incoming stream.
    #[error("migration stream rejected: {0}")]
    Refused(#[from] Refusal),
    /// The arc needs a session that does not exist.
    #[error("no migration data session is open")]
    NoSession,
    /// The device cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// The primary controller does not log user data changes, and the controller has
    /// namespaces whose data would have to be copied.
    #[error(
        "the primary controller does not log user data changes (Identify Controller TRATTR.TUDCS \
         is 0), so controller {cntlid} can only migrate namespaces on shared storage; namespaces \
         {private:?} are private: put them on shared storage or use a PF that logs changes"
    )]
    NoUserDataLogging {
        /// The secondary controller.
        cntlid: u16,
        /// Its private namespaces.
        private: Vec<u32>,
    },
    /// The User Data Migration Queue's "suspended" marker never came, so changes the
    /// controller made before it suspended may be missing from the stream.
    #[error(
        "the primary controller posted no 'suspended' marker (ESA 3) for controller {cntlid} in \
         its User Data Migration Queue within {waited:?} of Suspend; the last changes are not \
         known, so the state is not saved (retry, or check the PF's firmware)"
    )]
    NoSuspendMarker {
        /// The secondary controller.
        cntlid: u16,
        /// How long the driver waited.
        waited: std::time::Duration,
    },
}

/// Why the destination refused an incoming stream. The first refusal sticks: every later write
/// of the session and RESUMING → STOP answer it again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refusal {
    /// The stream is malformed, corrupt or truncated.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream comes from a device this one cannot become.
    #[error("incompatible source device: {0}")]
    Incompatible(#[source] StreamError),
    /// A record's data could not be written to the namespace.
    #[error("writing namespace {nsid}: {source}")]
    Write {
        /// The namespace.
        nsid: u32,
        /// The backend's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A record's range could not be deallocated in the namespace.
    #[error("deallocating in namespace {nsid}: {source}")]
    Deallocate {
        /// The namespace.
        nsid: u32,
        /// The backend's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The complete stream carried no controller state.
    #[error("the stream carries no controller state")]
    NoControllerState,
    /// The stream's PCI face is another kind of function's.
    #[error("incompatible source function: {0}")]
    PciFace(#[source] PciFaceMismatch),
    /// The controller state carries a part (e.g. the vfio-nvme vendor state) this primary
    /// controller does not offer, or no valid header.
    #[error(
        "the source's controller state carries a format this primary controller does not offer \
         (it offers {0:?}); migrate between PFs that list the same state formats"
    )]
    StateFormat(StateFormats),
}

impl ToErrno for Refusal {
    fn errno(&self) -> Errno {
        match self {
            Self::Write { .. } | Self::Deallocate { .. } => Errno::EIO,
            Self::Stream(_)
            | Self::Incompatible(_)
            | Self::NoControllerState
            | Self::PciFace(_)
            | Self::StateFormat(_) => Errno::EINVAL,
        }
    }
}

impl ToErrno for MigrationError {
    fn errno(&self) -> Errno {
        match self {
            Self::Lm(_) | Self::Io(_) | Self::Encode(_) => Errno::EIO,
            Self::Refused(refusal) => refusal.errno(),
            Self::NoSession => Errno::EINVAL,
            Self::Unsupported(_) | Self::NoUserDataLogging { .. } => Errno::EOPNOTSUPP,
            Self::NoSuspendMarker { .. } => Errno::EIO,
        }
    }
}

impl From<MigrationError> for vfio_migration::StreamError {
    fn from(err: MigrationError) -> Self {
        let errno = err.errno();
        vfio_migration::StreamError::new(errno, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_failures_are_eio_and_bad_streams_einval() {
        let io = || Arc::new(std::io::Error::other("storage failed"));
        let truncated = StreamError::MissingEnd {
            records: 3,
            offset: 100,
        };
        let cases = [
            (
                Refusal::Write {
                    nsid: 1,
                    source: io(),
                },
                Errno::EIO,
            ),
            (
                Refusal::Deallocate {
                    nsid: 1,
                    source: io(),
                },
                Errno::EIO,
            ),
            (Refusal::Stream(truncated.clone()), Errno::EINVAL),
            (Refusal::Incompatible(truncated), Errno::EINVAL),
            (Refusal::NoControllerState, Errno::EINVAL),
            (
                Refusal::PciFace(PciFaceMismatch::Vectors {
                    source_vectors: 5,
                    destination_vectors: 65,
                }),
                Errno::EINVAL,
            ),
        ];
        for (refusal, errno) in cases {
            let err = MigrationError::from(refusal);
            assert_eq!(err.errno(), errno, "{err}");
            assert!(err.to_string().starts_with("migration stream rejected: "));
        }
        let read = MigrationError::Io(std::io::Error::other("read failed"));
        assert_eq!(read.errno(), Errno::EIO);
        assert_eq!(
            MigrationError::Encode(StreamError::DataAfterEnd { offset: 1 }).errno(),
            Errno::EIO
        );
    }
}
