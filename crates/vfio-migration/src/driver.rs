//! The trait a device implements to be migratable: one method per single FSM arc, plus the
//! stop-copy size estimate and the reset hook. The [`crate::Migration`] runner decides which
//! arcs to run; the driver only carries them out.

use crate::errno::ToErrno;
use crate::flags::MigrationFlags;
use crate::session::{ResumeSink, SaveSource};
use crate::state::DeviceState;

/// A device's migration driver: carries out single arcs of the VFIO migration state machine.
///
/// The runner calls [`MigrationDriver::arc`] once per arc of the walk computed by
/// [`crate::next_state`], never with ERROR on either side and only with arcs the device's flags
/// require (reference §1.3). What each arc must do is the uAPI's device behaviour (§1.2): for
/// example RUNNING→STOP stops DMA and interrupts, STOP→STOP_COPY starts the full saving stream,
/// RESUMING→STOP absorbs and validates the resumed stream and fails if it is incomplete.
pub trait MigrationDriver {
    /// The driver's error; its errno is what a VFIO or vfio-user client sees.
    type Error: std::error::Error + ToErrno + Send + Sync + 'static;

    /// The migration capabilities the device advertises. Read once, when the runner is built.
    fn flags(&self) -> MigrationFlags;

    /// Carries out exactly the single arc `from → to`.
    ///
    /// An arc that enters the saving group from outside (RUNNING→PRE_COPY,
    /// RUNNING_P2P→PRE_COPY_P2P, STOP→STOP_COPY) must return [`NewSession::Saving`]; STOP→RESUMING
    /// must return [`NewSession::Resuming`]; every other arc must return `None`. Anything else is
    /// a driver bug, and the runner then puts the device in ERROR. Arcs that leave a session's
    /// state need not touch the session: the runner invalidates it after the arc succeeds.
    ///
    /// # Errors
    /// [`ArcFailure::Recovered`] if the device is still in `from`, [`ArcFailure::Broken`] if it
    /// could restore no valid state (the runner then moves to ERROR).
    fn arc(
        &mut self,
        from: DeviceState,
        to: DeviceState,
    ) -> Result<Option<NewSession>, ArcFailure<Self::Error>>;

    /// The estimated length in bytes of the STOP_COPY stream
    /// (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`); valid in any state.
    ///
    /// # Errors
    /// The device could not estimate it.
    fn stop_copy_length(&mut self) -> Result<u64, Self::Error>;

    /// The device was reset: return it to RUNNING and drop any saved or partially resumed data.
    /// The runner has already invalidated the open session.
    ///
    /// # Errors
    /// The device could not be returned to RUNNING (the runner then moves to ERROR).
    fn reset(&mut self) -> Result<(), Self::Error>;
}

/// The data session an arc opens, handed from the driver to the runner.
pub enum NewSession {
    /// A saving session (the arc entered the saving group): the driver's stream producer.
    Saving(Box<dyn SaveSource>),
    /// A resuming session (STOP→RESUMING): the driver's stream consumer and the most bytes it
    /// accepts in total (writes beyond it fail with ENOMEM).
    Resuming {
        /// Receives the incoming stream.
        sink: Box<dyn ResumeSink>,
        /// Bound on the total bytes written.
        max_bytes: u64,
    },
}

impl core::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Saving(_) => f.write_str("NewSession::Saving"),
            Self::Resuming { max_bytes, .. } => f
                .debug_struct("NewSession::Resuming")
                .field("max_bytes", max_bytes)
                .finish_non_exhaustive(),
        }
    }
}

/// How an arc failed: whether the device is still in the arc's `from` state or broken.
///
/// A failed arc does not by itself mean ERROR (reference §1.6): ERROR is only for a device that
/// could neither complete the arc nor restore a valid state. `?` on the driver's own error gives
/// [`ArcFailure::Recovered`].
#[derive(Debug)]
pub enum ArcFailure<E> {
    /// The arc failed and the device is still in `from`.
    Recovered(E),
    /// The arc failed and the device is in no valid state; the runner moves to ERROR.
    Broken(E),
}

impl<E> ArcFailure<E> {
    /// The underlying error.
    pub fn into_error(self) -> E {
        match self {
            Self::Recovered(error) | Self::Broken(error) => error,
        }
    }
}

impl<E> From<E> for ArcFailure<E> {
    fn from(error: E) -> Self {
        Self::Recovered(error)
    }
}
