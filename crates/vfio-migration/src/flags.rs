//! Migration capability flags (`vfio_device_feature_migration.flags`) and which device states a
//! flag set supports.

use crate::errno::{Errno, ToErrno};
use crate::state::DeviceState;

bitflags::bitflags! {
    /// The migration capabilities a device advertises through the MIGRATION device feature.
    ///
    /// STOP_COPY is mandatory; the documented combinations are STOP_COPY, STOP_COPY|P2P,
    /// STOP_COPY|PRE_COPY and all three. Build one from untrusted bits with
    /// [`MigrationFlags::validate`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MigrationFlags: u64 {
        /// `VFIO_MIGRATION_STOP_COPY`: STOP, RUNNING, STOP_COPY and RESUMING are supported.
        const STOP_COPY = 1 << 0;
        /// `VFIO_MIGRATION_P2P`: RUNNING_P2P (and PRE_COPY_P2P with PRE_COPY) are supported.
        const P2P = 1 << 1;
        /// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY (and PRE_COPY_P2P with P2P) are supported.
        const PRE_COPY = 1 << 2;
    }
}

/// A migration flag word that is not a valid capability set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// Bits outside STOP_COPY|P2P|PRE_COPY are set.
    #[error(
        "migration flags {bits:#x} have unknown bits {unknown:#x}; only STOP_COPY (0x1), P2P (0x2) and PRE_COPY (0x4) are defined"
    )]
    UnknownBits {
        /// The whole flag word.
        bits: u64,
        /// The bits that are not defined.
        unknown: u64,
    },
    /// STOP_COPY is missing, but every migratable device must support it.
    #[error(
        "migration flags {bits:#x} lack STOP_COPY (0x1), which every migratable device must support"
    )]
    MissingStopCopy {
        /// The whole flag word.
        bits: u64,
    },
}

impl ToErrno for FlagsError {
    fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

impl MigrationFlags {
    /// The four documented flag sets, the ones a device may advertise.
    pub const VALID_SETS: [Self; 4] = [
        Self::STOP_COPY,
        Self::STOP_COPY.union(Self::P2P),
        Self::STOP_COPY.union(Self::PRE_COPY),
        Self::all(),
    ];

    /// Checks a raw flag word: no unknown bits, and STOP_COPY present.
    ///
    /// # Errors
    /// [`FlagsError::UnknownBits`] or [`FlagsError::MissingStopCopy`].
    pub const fn validate(bits: u64) -> Result<Self, FlagsError> {
        let unknown = bits & !Self::all().bits();
        if unknown != 0 {
            return Err(FlagsError::UnknownBits { bits, unknown });
        }
        let flags = Self::from_bits_truncate(bits);
        if !flags.contains(Self::STOP_COPY) {
            return Err(FlagsError::MissingStopCopy { bits });
        }
        Ok(flags)
    }

    /// The flags a device needs to support `state` (the kernel's `state_flags_table`), or `None`
    /// for ERROR, which no flag set supports as a target or a current state.
    #[must_use]
    pub const fn required_for(state: DeviceState) -> Option<Self> {
        match state {
            DeviceState::Error => None,
            DeviceState::Stop
            | DeviceState::Running
            | DeviceState::StopCopy
            | DeviceState::Resuming => Some(Self::STOP_COPY),
            DeviceState::RunningP2p => Some(Self::STOP_COPY.union(Self::P2P)),
            DeviceState::PreCopy => Some(Self::STOP_COPY.union(Self::PRE_COPY)),
            DeviceState::PreCopyP2p => Some(Self::all()),
        }
    }

    /// Whether a device with these flags supports `state` (never true for ERROR).
    #[must_use]
    pub const fn supports(self, state: DeviceState) -> bool {
        match Self::required_for(state) {
            Some(required) => self.contains(required),
            None => false,
        }
    }

    /// The supported states, in uAPI numeric order.
    pub fn supported_states(self) -> impl Iterator<Item = DeviceState> {
        DeviceState::ALL
            .into_iter()
            .filter(move |&state| self.supports(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceState::*;

    #[test]
    fn bit_values_match_the_uapi() {
        use vfio_bindings::bindings::vfio as uapi;
        assert_eq!(MigrationFlags::STOP_COPY.bits(), 1);
        assert_eq!(MigrationFlags::P2P.bits(), 2);
        assert_eq!(MigrationFlags::PRE_COPY.bits(), 4);
        let kernel = [
            (MigrationFlags::STOP_COPY, uapi::VFIO_MIGRATION_STOP_COPY),
            (MigrationFlags::P2P, uapi::VFIO_MIGRATION_P2P),
            (MigrationFlags::PRE_COPY, uapi::VFIO_MIGRATION_PRE_COPY),
        ];
        for (flag, value) in kernel {
            assert_eq!(flag.bits(), u64::from(value), "{flag:?}");
        }
    }

    #[test]
    fn validation_accepts_exactly_the_documented_sets() {
        for bits in 0..8u64 {
            let result = MigrationFlags::validate(bits);
            if bits & 1 == 1 {
                assert_eq!(result.map(|f| f.bits()), Ok(bits));
                assert!(MigrationFlags::VALID_SETS.contains(&result.unwrap()));
            } else {
                assert_eq!(result, Err(FlagsError::MissingStopCopy { bits }));
            }
        }
        let err = MigrationFlags::validate(0x11).unwrap_err();
        assert_eq!(
            err,
            FlagsError::UnknownBits {
                bits: 0x11,
                unknown: 0x10
            }
        );
        assert!(err.to_string().contains("0x10"));
        assert_eq!(err.errno(), Errno::EINVAL);
    }

    #[test]
    fn supported_states_follow_the_required_flags_table() {
        let sc = MigrationFlags::STOP_COPY;
        let p2p = sc | MigrationFlags::P2P;
        let pre = sc | MigrationFlags::PRE_COPY;
        let all = MigrationFlags::all();
        let states = |f: MigrationFlags| f.supported_states().collect::<Vec<_>>();
        assert_eq!(states(sc), [Stop, Running, StopCopy, Resuming]);
        assert_eq!(states(p2p), [Stop, Running, StopCopy, Resuming, RunningP2p]);
        assert_eq!(states(pre), [Stop, Running, StopCopy, Resuming, PreCopy]);
        assert_eq!(
            states(all),
            [
                Stop, Running, StopCopy, Resuming, RunningP2p, PreCopy, PreCopyP2p
            ]
        );
        assert!(!all.supports(Error));
        assert_eq!(MigrationFlags::required_for(Error), None);
    }
}
