//! The VFIO migration device states (`enum vfio_device_mig_state`) and the rules about which
//! single arcs open or close a data session.
//!
//! The saving group — PRE_COPY, PRE_COPY_P2P and STOP_COPY — shares one data session: an arc
//! that *enters* the group from outside opens it, moving inside the group keeps it (only its
//! phase changes), and an arc that *leaves* the group ends it. RESUMING has its own session,
//! opened by STOP→RESUMING and ended by RESUMING→STOP.

use core::fmt;

use crate::errno::{Errno, ToErrno};

/// A VFIO migration device state, with the uAPI's numeric values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum DeviceState {
    /// The device failed an arc and could not restore any valid state; only a reset leaves it.
    Error = 0,
    /// Stopped: no DMA, no interrupts, no internal state change.
    Stop = 1,
    /// Fully operational.
    Running = 2,
    /// Stopped, and the saving session streams the complete device state.
    StopCopy = 3,
    /// Stopped, and the resuming session absorbs a state saved elsewhere.
    Resuming = 4,
    /// Running, but starting no new peer-to-peer DMA.
    RunningP2p = 5,
    /// Running while the saving session streams state ahead of the stop.
    PreCopy = 6,
    /// PRE_COPY, but starting no new peer-to-peer DMA.
    PreCopyP2p = 7,
}

impl DeviceState {
    /// Every state, in uAPI numeric order (index = value).
    pub const ALL: [Self; 8] = [
        Self::Error,
        Self::Stop,
        Self::Running,
        Self::StopCopy,
        Self::Resuming,
        Self::RunningP2p,
        Self::PreCopy,
        Self::PreCopyP2p,
    ];

    /// The uAPI value (`VFIO_DEVICE_STATE_*`).
    #[must_use]
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The uAPI name without its `VFIO_DEVICE_STATE_` prefix, e.g. `"STOP_COPY"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Stop => "STOP",
            Self::Running => "RUNNING",
            Self::StopCopy => "STOP_COPY",
            Self::Resuming => "RESUMING",
            Self::RunningP2p => "RUNNING_P2P",
            Self::PreCopy => "PRE_COPY",
            Self::PreCopyP2p => "PRE_COPY_P2P",
        }
    }

    /// Whether the state belongs to the saving group (PRE_COPY, PRE_COPY_P2P, STOP_COPY), whose
    /// states share one saving session.
    #[must_use]
    pub const fn is_saving(self) -> bool {
        matches!(self, Self::PreCopy | Self::PreCopyP2p | Self::StopCopy)
    }

    /// The kind of data session that exists while the device is in this state, if any.
    #[must_use]
    pub const fn session_kind(self) -> Option<SessionKind> {
        match self {
            Self::PreCopy | Self::PreCopyP2p | Self::StopCopy => Some(SessionKind::Saving),
            Self::Resuming => Some(SessionKind::Resuming),
            Self::Error | Self::Stop | Self::Running | Self::RunningP2p => None,
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `device_state` value that is not one of the eight uAPI states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("device_state {0} is not a VFIO migration state (valid values are 0..=7)")]
pub struct UnknownStateError(pub u32);

impl ToErrno for UnknownStateError {
    fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

impl TryFrom<u32> for DeviceState {
    type Error = UnknownStateError;

    fn try_from(value: u32) -> Result<Self, UnknownStateError> {
        usize::try_from(value)
            .ok()
            .and_then(|index| Self::ALL.get(index).copied())
            .ok_or(UnknownStateError(value))
    }
}

impl From<DeviceState> for u32 {
    fn from(state: DeviceState) -> Self {
        state.value()
    }
}

/// The two kinds of data session: the saving stream of the saving group and the resuming
/// stream of RESUMING.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// Device state flows out (PRE_COPY, PRE_COPY_P2P, STOP_COPY).
    Saving,
    /// Device state flows in (RESUMING).
    Resuming,
}

/// Whether the single arc `from → to` enters the saving group from outside (RUNNING→PRE_COPY,
/// RUNNING_P2P→PRE_COPY_P2P, STOP→STOP_COPY) and so opens a new saving session.
#[must_use]
pub const fn opens_saving_session(from: DeviceState, to: DeviceState) -> bool {
    !from.is_saving() && to.is_saving()
}

/// Whether the single arc `from → to` enters RESUMING (STOP→RESUMING) and so opens a new
/// resuming session.
#[must_use]
pub const fn opens_resuming_session(from: DeviceState, to: DeviceState) -> bool {
    !matches!(from, DeviceState::Resuming) && matches!(to, DeviceState::Resuming)
}

/// The session kind the single arc `from → to` opens, if it opens one.
#[must_use]
pub const fn session_opened_by(from: DeviceState, to: DeviceState) -> Option<SessionKind> {
    if opens_saving_session(from, to) {
        Some(SessionKind::Saving)
    } else if opens_resuming_session(from, to) {
        Some(SessionKind::Resuming)
    } else {
        None
    }
}

/// Whether the single arc `from → to` ends the current session: it leaves the saving group
/// (PRE_COPY→RUNNING, PRE_COPY_P2P→RUNNING_P2P, STOP_COPY→STOP) or leaves RESUMING.
#[must_use]
pub const fn closes_session(from: DeviceState, to: DeviceState) -> bool {
    (from.is_saving() && !to.is_saving())
        || (matches!(from, DeviceState::Resuming) && !matches!(to, DeviceState::Resuming))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceState::*;

    #[test]
    fn values_match_the_uapi() {
        let expected = [
            (Error, 0, "ERROR"),
            (Stop, 1, "STOP"),
            (Running, 2, "RUNNING"),
            (StopCopy, 3, "STOP_COPY"),
            (Resuming, 4, "RESUMING"),
            (RunningP2p, 5, "RUNNING_P2P"),
            (PreCopy, 6, "PRE_COPY"),
            (PreCopyP2p, 7, "PRE_COPY_P2P"),
        ];
        for (state, value, name) in expected {
            assert_eq!(state.value(), value);
            assert_eq!(u32::from(state), value);
            assert_eq!(DeviceState::try_from(value), Ok(state));
            assert_eq!(state.to_string(), name);
        }
    }

    #[test]
    fn values_are_the_kernels() {
        use vfio_bindings::bindings::vfio as uapi;
        let kernel = [
            (Error, uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_ERROR),
            (Stop, uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP),
            (
                Running,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING,
            ),
            (
                StopCopy,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP_COPY,
            ),
            (
                Resuming,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_RESUMING,
            ),
            (
                RunningP2p,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING_P2P,
            ),
            (
                PreCopy,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY,
            ),
            (
                PreCopyP2p,
                uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY_P2P,
            ),
        ];
        for (state, value) in kernel {
            assert_eq!(state.value(), value, "{state}");
        }
        assert_eq!(
            DeviceState::ALL.len() as u32,
            uapi::vfio_device_mig_state_VFIO_DEVICE_STATE_NR
        );
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_value() {
        for value in [8, 9, 255, u32::MAX] {
            let err = DeviceState::try_from(value).unwrap_err();
            assert_eq!(err, UnknownStateError(value));
            assert!(err.to_string().contains(&value.to_string()));
            assert_eq!(err.errno(), Errno::EINVAL);
        }
    }

    #[test]
    fn saving_group_and_session_kinds() {
        let saving: Vec<_> = DeviceState::ALL
            .into_iter()
            .filter(|s| s.is_saving())
            .collect();
        assert_eq!(saving, [StopCopy, PreCopy, PreCopyP2p]);
        assert_eq!(Resuming.session_kind(), Some(SessionKind::Resuming));
        assert_eq!(PreCopyP2p.session_kind(), Some(SessionKind::Saving));
        assert_eq!(RunningP2p.session_kind(), None);
    }

    #[test]
    fn arcs_that_open_and_close_sessions() {
        // The session-opening arcs named in §1.2 of the reference, and nothing else among the
        // direct arcs any flag set allows.
        assert!(opens_saving_session(Running, PreCopy));
        assert!(opens_saving_session(RunningP2p, PreCopyP2p));
        assert!(opens_saving_session(Stop, StopCopy));
        assert!(!opens_saving_session(PreCopy, PreCopyP2p));
        assert!(!opens_saving_session(PreCopyP2p, StopCopy));
        assert!(!opens_saving_session(PreCopy, StopCopy));
        assert!(opens_resuming_session(Stop, Resuming));
        assert!(!opens_resuming_session(Resuming, Stop));
        assert_eq!(
            session_opened_by(Stop, Resuming),
            Some(SessionKind::Resuming)
        );
        assert_eq!(session_opened_by(Stop, StopCopy), Some(SessionKind::Saving));
        assert_eq!(session_opened_by(Running, Stop), None);

        assert!(closes_session(PreCopy, Running));
        assert!(closes_session(PreCopyP2p, RunningP2p));
        assert!(closes_session(StopCopy, Stop));
        assert!(closes_session(Resuming, Stop));
        assert!(!closes_session(PreCopy, PreCopyP2p));
        assert!(!closes_session(PreCopyP2p, PreCopy));
        assert!(!closes_session(PreCopy, StopCopy));
        assert!(!closes_session(Stop, Running));
    }
}
