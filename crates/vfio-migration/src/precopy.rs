//! PRE_COPY progress information (`struct vfio_precopy_info`) and the phases of a saving
//! session.

use crate::state::DeviceState;

/// How much PRE_COPY data is waiting (`VFIO_MIG_GET_PRECOPY_INFO`).
///
/// `initial_bytes` starts at the size of the initial data and only shrinks as it is read;
/// `dirty_bytes` starts at 0 and follows device activity. When both are 0 a PRE_COPY read
/// reports "no data yet" (ENOMSG) rather than end of stream. Neither predicts the STOP_COPY size;
/// that is [`crate::MigrationDriver::stop_copy_length`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrecopyInfo {
    /// Bytes of the initial (first-pass) data not yet read.
    pub initial_bytes: u64,
    /// Bytes of data that changed since it was read and are ready to be read again.
    pub dirty_bytes: u64,
}

/// Which saving-group state a saving session is in; decides what a read of 0 bytes means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SavePhase {
    /// PRE_COPY: the device runs; a read of 0 means "nothing now", not the end.
    PreCopy,
    /// PRE_COPY_P2P: as PRE_COPY, with peer-to-peer DMA quiesced.
    PreCopyP2p,
    /// STOP_COPY: the device is stopped; a read of 0 is the end of the stream.
    StopCopy,
}

impl SavePhase {
    /// The phase of a saving-group state, `None` for any other state.
    #[must_use]
    pub const fn of(state: DeviceState) -> Option<Self> {
        match state {
            DeviceState::PreCopy => Some(Self::PreCopy),
            DeviceState::PreCopyP2p => Some(Self::PreCopyP2p),
            DeviceState::StopCopy => Some(Self::StopCopy),
            _ => None,
        }
    }

    /// The device state this phase corresponds to.
    #[must_use]
    pub const fn state(self) -> DeviceState {
        match self {
            Self::PreCopy => DeviceState::PreCopy,
            Self::PreCopyP2p => DeviceState::PreCopyP2p,
            Self::StopCopy => DeviceState::StopCopy,
        }
    }

    /// Whether this is one of the PRE_COPY phases, in which PRE_COPY info is available and an
    /// empty read means "no data yet".
    #[must_use]
    pub const fn is_precopy(self) -> bool {
        matches!(self, Self::PreCopy | Self::PreCopyP2p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_cover_exactly_the_saving_group() {
        for state in DeviceState::ALL {
            match SavePhase::of(state) {
                Some(phase) => {
                    assert!(state.is_saving());
                    assert_eq!(phase.state(), state);
                    assert_eq!(phase.is_precopy(), state != DeviceState::StopCopy);
                }
                None => assert!(!state.is_saving()),
            }
        }
    }
}
