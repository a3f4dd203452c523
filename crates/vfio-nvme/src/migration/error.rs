//! Errors of the migration driver.

use vfio_migration::Errno;
use vfio_migration::ToErrno;

use super::admin::LmError;

/// Why an arc or a data-session call of the NVMe migration driver failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A TP4159 command on the primary controller failed.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// Namespace data could not be read or written.
    #[error("namespace data: {0}")]
    Io(#[from] std::io::Error),
    /// The incoming stream is invalid, incomplete or from an incompatible device.
    #[error("migration stream rejected: {0}")]
    Stream(String),
    /// The arc needs a session that does not exist.
    #[error("no migration data session is open")]
    NoSession,
    /// The device cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

impl ToErrno for MigrationError {
    fn errno(&self) -> Errno {
        match self {
            Self::Lm(_) | Self::Io(_) => Errno::EIO,
            Self::Stream(_) | Self::NoSession => Errno::EINVAL,
            Self::Unsupported(_) => Errno::EOPNOTSUPP,
        }
    }
}

impl From<MigrationError> for vfio_migration::StreamError {
    fn from(err: MigrationError) -> Self {
        let errno = err.errno();
        vfio_migration::StreamError::new(errno, err)
    }
}
