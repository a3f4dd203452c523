//! The kernel's `vfio_mig_get_next_state()`: the 8×8 next-step table for a device with every
//! optional state, and the skip loop that adapts it to the device's flags.
//!
//! The table is written for STOP_COPY|P2P|PRE_COPY. For a device lacking some optional states,
//! each unsupported step is replaced by the table's next step from that state towards the same
//! target, until a supported state is reached. The resulting walks are the shortest paths over
//! the arcs the device must implement (reference §1.3), and never pass *through* a saving-group
//! state unless both ends are in the group: PRE_COPY→STOP_COPY goes through PRE_COPY_P2P on a
//! P2P device, but RUNNING→STOP_COPY never goes through PRE_COPY.
//!
//! **The 2026 fix.** ERROR is never supported, so the kernel's original skip loop spun forever
//! once the table yielded ERROR while the device supported PRE_COPY (a SET from STOP_COPY to
//! PRE_COPY or PRE_COPY_P2P locked up the CPU). The fix posted in June 2026 stops the loop at
//! ERROR; this implementation does the same and additionally bounds the loop by the number of
//! states.

use crate::errno::{Errno, ToErrno};
use crate::flags::MigrationFlags;
use crate::state::DeviceState;

/// Why the state machine refuses a (current, target) pair. Every variant maps to EINVAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsmError {
    /// The device is in ERROR, which no SET can leave.
    #[error("the device is in ERROR; only a device reset (which returns it to RUNNING) leaves it")]
    InError,
    /// ERROR was requested as a target.
    #[error("ERROR cannot be requested as a target state; it is only entered when an arc fails")]
    ErrorRequested,
    /// The current or target state needs flags the device does not advertise.
    #[error(
        "device state {state} is not supported by this device's migration flags {flags:?}; request one of the states those flags allow"
    )]
    Unsupported {
        /// The unsupported state.
        state: DeviceState,
        /// The device's flags.
        flags: MigrationFlags,
    },
    /// The table blocks the transition, e.g. STOP_COPY→PRE_COPY.
    #[error(
        "there is no transition from {current} to {target}; the uAPI forbids returning from STOP_COPY to a PRE_COPY state (go to STOP first, which ends the saving session)"
    )]
    NoPath {
        /// The state the walk starts from.
        current: DeviceState,
        /// The requested state.
        target: DeviceState,
    },
}

impl ToErrno for FsmError {
    fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

/// The kernel's `vfio_from_fsm_table[current][target]` for a device with all optional states:
/// the next state on the way from `current` to `target`, ERROR where the transition is blocked.
const fn from_fsm(current: DeviceState, target: DeviceState) -> DeviceState {
    use DeviceState::{
        Error as E, PreCopy as Pc, PreCopyP2p as PcP, Resuming as Res, Running as R,
        RunningP2p as RP, Stop as S, StopCopy as Sc,
    };
    // Columns in uAPI order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P,
    // PRE_COPY, PRE_COPY_P2P.
    let row: [DeviceState; 8] = match current {
        S => [E, S, RP, Sc, Res, RP, RP, RP],
        R => [E, RP, R, RP, RP, RP, Pc, RP],
        Sc => [E, S, S, Sc, S, S, E, E],
        Res => [E, S, S, S, Res, S, S, S],
        RP => [E, S, R, S, S, RP, R, PcP],
        Pc => [E, R, R, PcP, R, R, Pc, PcP],
        PcP => [E, RP, RP, Sc, RP, RP, Pc, PcP],
        E => [E; 8],
    };
    row[target as usize]
}

/// Checks that the device supports `current` and `target` as a SET requires.
fn check_endpoints(
    current: DeviceState,
    target: DeviceState,
    flags: MigrationFlags,
) -> Result<(), FsmError> {
    if current == DeviceState::Error {
        return Err(FsmError::InError);
    }
    if target == DeviceState::Error {
        return Err(FsmError::ErrorRequested);
    }
    for state in [current, target] {
        if !flags.supports(state) {
            return Err(FsmError::Unsupported { state, flags });
        }
    }
    Ok(())
}

/// The next single arc's destination on the way from `current` to `target` for a device with
/// `flags` (`vfio_mig_get_next_state()`, with the 2026 stop-at-ERROR fix).
///
/// `next_state(s, s, _)` is `s` for a supported `s`.
///
/// # Errors
/// [`FsmError`] (EINVAL) when `current` is ERROR, `target` is ERROR, either is unsupported by
/// `flags`, or the table blocks the transition (STOP_COPY→PRE_COPY, STOP_COPY→PRE_COPY_P2P).
pub fn next_state(
    current: DeviceState,
    target: DeviceState,
    flags: MigrationFlags,
) -> Result<DeviceState, FsmError> {
    check_endpoints(current, target, flags)?;
    let mut next = from_fsm(current, target);
    // The skip loop. Each pass moves one table step closer to `target`; the bound is the number
    // of states, which the table never needs.
    for _ in 0..DeviceState::ALL.len() {
        if next == DeviceState::Error {
            break;
        }
        if flags.supports(next) {
            return Ok(next);
        }
        next = from_fsm(next, target);
    }
    Err(FsmError::NoPath { current, target })
}

/// The longest walk [`path`] will take; the longest real path has four arcs
/// (RESUMING→STOP→RUNNING_P2P→RUNNING→PRE_COPY).
pub const MAX_PATH_LEN: usize = DeviceState::ALL.len();

/// The states the walk from `current` to `target` visits, one per driver arc, ending with
/// `target`; empty when `current == target`.
///
/// # Errors
/// As [`next_state`]; also [`FsmError::NoPath`] if the walk would exceed [`MAX_PATH_LEN`]
/// arcs, which the kernel table never does.
pub fn path(
    current: DeviceState,
    target: DeviceState,
    flags: MigrationFlags,
) -> Result<Vec<DeviceState>, FsmError> {
    check_endpoints(current, target, flags)?;
    let mut steps = Vec::new();
    let mut at = current;
    while at != target {
        if steps.len() == MAX_PATH_LEN {
            return Err(FsmError::NoPath { current, target });
        }
        at = next_state(at, target, flags)?;
        steps.push(at);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests;
