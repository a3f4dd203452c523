//! The migration state machine runner: owns a [`MigrationDriver`], the current state and the
//! open data session, and applies the kernel's rules for a `MIG_DEVICE_STATE` SET.
//!
//! * The walk to the target is computed with [`next_state`] **one arc at a time**, and each arc
//!   is run by the driver before the next is computed (the mlx5 pattern).
//! * On the first failing arc the walk stops; the device stays in the last state reached, or
//!   moves to ERROR when the driver says it could restore no valid state. The error names the
//!   failing arc.
//! * Only the final arc may produce a session, and only an arc that enters the saving group or
//!   RESUMING may; an arc that does must. A driver that breaks this is buggy: the arc fails with
//!   [`DriverBug`] and the device moves to ERROR, since the runner can no longer vouch for the
//!   session.
//! * Arcs leaving the saving group or RESUMING invalidate the session; arcs within the saving
//!   group keep it and switch its [`SavePhase`].
//! * ERROR is never a valid target, and is left only by [`Migration::reset`].
//!
//! **Reset semantics.** [`Migration::reset`] follows the kernel (`migration_reset_state()`,
//! reference §1.7): the session is invalidated and the state becomes RUNNING. libvfio-user
//! diverged in May 2026 (commit 4f4fce4, "do not reset migration state on device reset") and
//! keeps the FSM state across a reset, only discarding captured data; a vfio-user server that
//! wants that behaviour must not call [`Migration::reset`] on DEVICE_RESET.

use crate::driver::{ArcFailure, MigrationDriver, NewSession};
use crate::errno::{Errno, ToErrno};
use crate::flags::{FlagsError, MigrationFlags};
use crate::fsm::{FsmError, MAX_PATH_LEN, next_state};
use crate::precopy::SavePhase;
use crate::session::{ResumingSession, SavingSession, Session};
use crate::state::{DeviceState, SessionKind, closes_session, session_opened_by};

/// A driver that broke the session rules of [`MigrationDriver::arc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverBug {
    /// A session came from an arc that is not the last of the walk.
    #[error("driver bug: an arc that is not the last of the transition returned a data session")]
    SessionBeforeFinalArc,
    /// A session came from an arc that neither enters the saving group nor RESUMING.
    #[error(
        "driver bug: the arc returned a data session although it enters neither the saving group nor RESUMING"
    )]
    UnexpectedSession,
    /// A session-opening arc returned no session.
    #[error("driver bug: the arc opens a {kind:?} session but returned none")]
    MissingSession {
        /// The kind the arc should have opened.
        kind: SessionKind,
    },
    /// A session-opening arc returned the other kind of session.
    #[error("driver bug: the arc opens a {expected:?} session but returned a {got:?} session")]
    WrongSessionKind {
        /// The kind the arc should have opened.
        expected: SessionKind,
        /// The kind it returned.
        got: SessionKind,
    },
}

/// Why [`Migration::set_state`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SetStateError<E: std::error::Error + 'static> {
    /// The request itself is invalid (ERROR or unsupported target, device in ERROR, forbidden
    /// transition); no arc was run. EINVAL.
    #[error("invalid migration state change: {0}")]
    Fsm(#[from] FsmError),
    /// The driver failed an arc; the walk stopped there.
    #[error("the {from} -> {to} arc failed and the device is now in {state}: {error}")]
    Arc {
        /// The failing arc's start.
        from: DeviceState,
        /// The failing arc's end.
        to: DeviceState,
        /// The state the device is in now: `from`, or ERROR.
        state: DeviceState,
        /// The driver's error.
        #[source]
        error: E,
    },
    /// The driver completed an arc but broke the session rules; the device is now in ERROR.
    #[error("the {from} -> {to} arc left the device in ERROR (reset it to recover): {bug}")]
    DriverBug {
        /// The arc's start.
        from: DeviceState,
        /// The arc's end.
        to: DeviceState,
        /// What the driver did wrong.
        #[source]
        bug: DriverBug,
    },
}

impl<E: std::error::Error + ToErrno + 'static> ToErrno for SetStateError<E> {
    fn errno(&self) -> Errno {
        match self {
            Self::Fsm(err) => err.errno(),
            Self::Arc { error, .. } => error.errno(),
            Self::DriverBug { .. } => Errno::EIO,
        }
    }
}

/// A device reset that the driver could not carry out; the device is now in ERROR.
#[derive(Debug, thiserror::Error)]
#[error("the device reset failed and the device is now in ERROR (reset it again): {0}")]
pub struct ResetError<E: std::error::Error + 'static>(#[source] pub E);

impl<E: std::error::Error + ToErrno + 'static> ToErrno for ResetError<E> {
    fn errno(&self) -> Errno {
        self.0.errno()
    }
}

/// How [`Migration::close`] returned the device to RUNNING.
#[derive(Debug)]
pub enum Closed<E: std::error::Error + 'static> {
    /// It was in RUNNING already.
    Running,
    /// The driver's arcs took it from `from` to RUNNING.
    Walked {
        /// The state the user left it in.
        from: DeviceState,
    },
    /// A reset took it from `from` to RUNNING: `from` was RESUMING or ERROR (`walk` is `None`),
    /// or the walk failed with `walk`.
    Reset {
        /// The state the user left it in.
        from: DeviceState,
        /// Why the walk did not get there, if it was tried.
        walk: Option<SetStateError<E>>,
    },
}

/// The session an arc is required to open.
enum Expected {
    Nothing,
    Saving(SavePhase),
    Resuming,
}

impl Expected {
    fn of(from: DeviceState, to: DeviceState) -> Self {
        match (session_opened_by(from, to), SavePhase::of(to)) {
            (Some(SessionKind::Resuming), _) => Self::Resuming,
            (Some(SessionKind::Saving), Some(phase)) => Self::Saving(phase),
            _ => Self::Nothing,
        }
    }
}

/// Checks the session an arc returned against the rules and wraps it.
fn accept_session(
    from: DeviceState,
    to: DeviceState,
    is_final: bool,
    new: Option<NewSession>,
) -> Result<Option<Session>, DriverBug> {
    let got_kind = |new: &NewSession| match new {
        NewSession::Saving(_) => SessionKind::Saving,
        NewSession::Resuming { .. } => SessionKind::Resuming,
    };
    match (Expected::of(from, to), new) {
        (Expected::Nothing, None) => Ok(None),
        (_, Some(_)) if !is_final => Err(DriverBug::SessionBeforeFinalArc),
        (Expected::Nothing, Some(_)) => Err(DriverBug::UnexpectedSession),
        (Expected::Saving(_), None) => Err(DriverBug::MissingSession {
            kind: SessionKind::Saving,
        }),
        (Expected::Resuming, None) => Err(DriverBug::MissingSession {
            kind: SessionKind::Resuming,
        }),
        (Expected::Saving(phase), Some(NewSession::Saving(source))) => {
            Ok(Some(Session::Saving(SavingSession::new(source, phase))))
        }
        (Expected::Resuming, Some(NewSession::Resuming { sink, max_bytes })) => Ok(Some(
            Session::Resuming(ResumingSession::new(sink, max_bytes)),
        )),
        (Expected::Saving(_), Some(other)) => Err(DriverBug::WrongSessionKind {
            expected: SessionKind::Saving,
            got: got_kind(&other),
        }),
        (Expected::Resuming, Some(other)) => Err(DriverBug::WrongSessionKind {
            expected: SessionKind::Resuming,
            got: got_kind(&other),
        }),
    }
}

/// The VFIO migration state machine of one device: the driver, the current state (RUNNING
/// initially, as the kernel drivers and libvfio-user choose) and the open data session.
#[derive(Debug)]
pub struct Migration<D: MigrationDriver> {
    driver: D,
    flags: MigrationFlags,
    state: DeviceState,
    session: Option<Session>,
    /// In STOP after STOP_COPY with the saving session read to its end: the device's whole
    /// state went to a destination (see [`Self::handed_over`]).
    handed_over: bool,
}

impl<D: MigrationDriver> Migration<D> {
    /// Wraps a driver; the device starts in RUNNING with no session.
    ///
    /// # Errors
    /// The driver's [`MigrationDriver::flags`] are not a valid capability set.
    pub fn new(driver: D) -> Result<Self, FlagsError> {
        let flags = MigrationFlags::validate(driver.flags().bits())?;
        Ok(Self {
            driver,
            flags,
            state: DeviceState::Running,
            session: None,
            handed_over: false,
        })
    }

    /// Whether the device sits in STOP after a complete save: STOP_COPY → STOP once the
    /// saving session had been read to its end. Its guest's device now lives wherever the
    /// stream went, so a user leaving it there should reset it, not resume it: resumed, it
    /// would go on with the guest's queues and could act on memory that the guest shares with
    /// the destination. Any later arc, and a reset, clear it.
    #[must_use]
    pub const fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// The current device state (`MIG_DEVICE_STATE` GET).
    #[must_use]
    pub const fn state(&self) -> DeviceState {
        self.state
    }

    /// The device's migration flags (MIGRATION GET).
    #[must_use]
    pub const fn flags(&self) -> MigrationFlags {
        self.flags
    }

    /// The open data session: present exactly while the state is in the saving group or
    /// RESUMING.
    #[must_use]
    pub const fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The driver.
    #[must_use]
    pub const fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver, mutably (for device work outside migration; arcs must go through
    /// [`Migration::set_state`]).
    pub const fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// The estimated STOP_COPY length (`MIG_DATA_SIZE` GET); valid in any state.
    ///
    /// # Errors
    /// The driver's error.
    pub fn stop_copy_length(&mut self) -> Result<u64, D::Error> {
        self.driver.stop_copy_length()
    }

    /// Moves the device to `target` (`MIG_DEVICE_STATE` SET), one driver arc at a time, and
    /// returns the session the final arc opened, if any (the kernel's `data_fd`). Setting the
    /// current state again runs no arc and returns `None`.
    ///
    /// # Errors
    /// [`SetStateError::Fsm`] with no arc run; [`SetStateError::Arc`] or
    /// [`SetStateError::DriverBug`] naming the failing arc, with [`Migration::state`] at the
    /// last state reached (or ERROR).
    pub fn set_state(
        &mut self,
        target: DeviceState,
    ) -> Result<Option<Session>, SetStateError<D::Error>> {
        // Validate the request before any arc runs (also when target == current).
        next_state(self.state, target, self.flags)?;
        let mut opened = None;
        for _ in 0..MAX_PATH_LEN {
            if self.state == target {
                return Ok(opened);
            }
            let from = self.state;
            let to = next_state(from, target, self.flags)?;
            let new = match self.driver.arc(from, to) {
                Ok(new) => new,
                Err(failure) => {
                    if matches!(failure, ArcFailure::Broken(_)) {
                        self.enter_error();
                    }
                    return Err(SetStateError::Arc {
                        from,
                        to,
                        state: self.state,
                        error: failure.into_error(),
                    });
                }
            };
            let session = match accept_session(from, to, to == target, new) {
                Ok(session) => session,
                Err(bug) => {
                    self.enter_error();
                    return Err(SetStateError::DriverBug { from, to, bug });
                }
            };
            self.state = to;
            self.handed_over = false;
            if closes_session(from, to) {
                if let Some(old) = self.session.take() {
                    self.handed_over = from == DeviceState::StopCopy
                        && to == DeviceState::Stop
                        && old.as_saving().is_some_and(SavingSession::is_ended);
                    old.invalidate();
                }
            } else if let (Some(Session::Saving(saving)), Some(phase)) =
                (&self.session, SavePhase::of(to))
            {
                saving.set_phase(phase);
            }
            if let Some(session) = session {
                self.session = Some(session.clone());
                opened = Some(session);
            }
        }
        if self.state == target {
            Ok(opened)
        } else {
            Err(FsmError::NoPath {
                current: self.state,
                target,
            }
            .into())
        }
    }

    /// Resets the device (`VFIO_DEVICE_RESET` / vfio-user DEVICE_RESET), kernel semantics:
    /// the session is invalidated, the driver drops its migration data and the state becomes
    /// RUNNING. This is the only way out of ERROR and out of RESUMING without finishing it.
    ///
    /// # Errors
    /// The driver could not reset the device; the state is then ERROR.
    pub fn reset(&mut self) -> Result<(), ResetError<D::Error>> {
        if let Some(session) = self.session.take() {
            session.invalidate();
        }
        self.handed_over = false;
        match self.driver.reset() {
            Ok(()) => {
                self.state = DeviceState::Running;
                Ok(())
            }
            Err(error) => {
                self.state = DeviceState::Error;
                Err(ResetError(error))
            }
        }
    }

    /// The user closed the device (a vfio-user client disconnected; the kernel's
    /// `close_device`): the open data session is invalidated at once, so reads and writes of it
    /// fail with ENODEV, and the device is returned to RUNNING, so that the next user finds it
    /// running (the kernel drivers' `open_device`; the vfio-nvme RFC's `close_device` disables
    /// both migration files). The device's other state stays.
    ///
    /// From a state with a path to RUNNING the driver's own arcs are walked (a suspension is
    /// lifted, dirty tracking stopped). RESUMING is reset instead ([`Migration::reset`]): the
    /// partial stream a departed user fed it must not be loaded, and a reset is the uAPI's only
    /// way out of RESUMING without finishing it. ERROR is reset too, and so is a device whose
    /// walk fails.
    ///
    /// # Errors
    /// The reset could not return the device to RUNNING; it is then in ERROR.
    pub fn close(&mut self) -> Result<Closed<D::Error>, ResetError<D::Error>> {
        if let Some(session) = self.session.take() {
            session.invalidate();
        }
        match self.state {
            DeviceState::Running => Ok(Closed::Running),
            DeviceState::Resuming | DeviceState::Error => {
                let from = self.state;
                self.reset().map(|()| Closed::Reset { from, walk: None })
            }
            from => match self.set_state(DeviceState::Running) {
                Ok(_) => Ok(Closed::Walked { from }),
                Err(walk) => self.reset().map(|()| Closed::Reset {
                    from,
                    walk: Some(walk),
                }),
            },
        }
    }

    fn enter_error(&mut self) {
        self.state = DeviceState::Error;
        if let Some(session) = self.session.take() {
            session.invalidate();
        }
    }
}

#[cfg(test)]
mod tests;
