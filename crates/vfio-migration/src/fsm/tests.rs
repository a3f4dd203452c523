//! The FSM against the reference's tables (§1.3, §1.4 of `vfio-migration.md`), written out
//! literally here rather than computed by the code under test.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;
use DeviceState::{
    Error as E, PreCopy as PC, PreCopyP2p as PCP, Resuming as RES, Running as R, RunningP2p as RP,
    Stop as S, StopCopy as SC,
};

const SC_ONLY: MigrationFlags = MigrationFlags::STOP_COPY;
const SC_P2P: MigrationFlags = MigrationFlags::STOP_COPY.union(MigrationFlags::P2P);
const SC_PRE: MigrationFlags = MigrationFlags::STOP_COPY.union(MigrationFlags::PRE_COPY);
const ALL_FLAGS: MigrationFlags = MigrationFlags::all();

/// The kernel's `from_fsm` table exactly as the reference prints it: rows are the current
/// state, columns the target, in the reference's order (not the uAPI order).
#[test]
fn first_step_with_all_flags_is_the_kernel_table() {
    let order = [S, R, PC, PCP, SC, RES, RP, E];
    let table: [[DeviceState; 8]; 8] = [
        /* STOP         */ [S, RP, RP, RP, SC, RES, RP, E],
        /* RUNNING      */ [RP, R, PC, RP, RP, RP, RP, E],
        /* PRE_COPY     */ [R, R, PC, PCP, PCP, R, R, E],
        /* PRE_COPY_P2P */ [RP, RP, PC, PCP, SC, RP, RP, E],
        /* STOP_COPY    */ [S, S, E, E, SC, S, S, E],
        /* RESUMING     */ [S, S, S, S, S, RES, S, E],
        /* RUNNING_P2P  */ [S, R, R, PCP, S, S, RP, E],
        /* ERROR        */ [E; 8],
    ];
    for (row, &current) in order.iter().enumerate() {
        for (column, &target) in order.iter().enumerate() {
            let expected = table[row][column];
            let got = next_state(current, target, ALL_FLAGS);
            if current == E {
                assert_eq!(got, Err(FsmError::InError));
            } else if target == E {
                assert_eq!(got, Err(FsmError::ErrorRequested));
            } else if expected == E {
                assert_eq!(got, Err(FsmError::NoPath { current, target }));
            } else {
                assert_eq!(got, Ok(expected), "{current} -> {target}");
            }
        }
    }
}

/// Checks `path()` and `next_state()` for every (current, target) pair against the expected
/// full paths (one entry per supported off-diagonal pair) and blocked pairs.
fn check_flag_set(
    flags: MigrationFlags,
    supported: &[DeviceState],
    paths: &[(DeviceState, DeviceState, &[DeviceState])],
    blocked: &[(DeviceState, DeviceState)],
) {
    let n = supported.len();
    assert_eq!(
        paths.len() + blocked.len(),
        n * (n - 1),
        "the expected table must list every supported off-diagonal pair"
    );
    for current in DeviceState::ALL {
        for target in DeviceState::ALL {
            let got = path(current, target, flags);
            let first = next_state(current, target, flags);
            let expected: Result<Vec<DeviceState>, FsmError> = if current == E {
                Err(FsmError::InError)
            } else if target == E {
                Err(FsmError::ErrorRequested)
            } else if !supported.contains(&current) {
                Err(FsmError::Unsupported {
                    state: current,
                    flags,
                })
            } else if !supported.contains(&target) {
                Err(FsmError::Unsupported {
                    state: target,
                    flags,
                })
            } else if current == target {
                Ok(Vec::new())
            } else if blocked.contains(&(current, target)) {
                Err(FsmError::NoPath { current, target })
            } else {
                let (_, _, steps) = paths
                    .iter()
                    .find(|(from, to, _)| (*from, *to) == (current, target))
                    .unwrap_or_else(|| panic!("no expected path for {current} -> {target}"));
                Ok(steps.to_vec())
            };
            assert_eq!(got, expected, "{flags:?}: {current} -> {target}");
            let expected_first = expected.map(|steps| steps.first().copied().unwrap_or(current));
            assert_eq!(
                first, expected_first,
                "{flags:?}: first step {current} -> {target}"
            );
        }
    }
}

#[test]
fn paths_with_stop_copy_only() {
    check_flag_set(
        SC_ONLY,
        &[R, S, SC, RES],
        &[
            (R, S, &[S]),
            (R, SC, &[S, SC]),
            (R, RES, &[S, RES]),
            (S, R, &[R]),
            (S, SC, &[SC]),
            (S, RES, &[RES]),
            (SC, R, &[S, R]),
            (SC, S, &[S]),
            (SC, RES, &[S, RES]),
            (RES, R, &[S, R]),
            (RES, S, &[S]),
            (RES, SC, &[S, SC]),
        ],
        &[],
    );
}

#[test]
fn paths_with_stop_copy_and_p2p() {
    check_flag_set(
        SC_P2P,
        &[R, S, SC, RES, RP],
        &[
            (R, S, &[RP, S]),
            (R, SC, &[RP, S, SC]),
            (R, RES, &[RP, S, RES]),
            (R, RP, &[RP]),
            (S, R, &[RP, R]),
            (S, SC, &[SC]),
            (S, RES, &[RES]),
            (S, RP, &[RP]),
            (SC, R, &[S, RP, R]),
            (SC, S, &[S]),
            (SC, RES, &[S, RES]),
            (SC, RP, &[S, RP]),
            (RES, R, &[S, RP, R]),
            (RES, S, &[S]),
            (RES, SC, &[S, SC]),
            (RES, RP, &[S, RP]),
            (RP, R, &[R]),
            (RP, S, &[S]),
            (RP, SC, &[S, SC]),
            (RP, RES, &[S, RES]),
        ],
        &[],
    );
}

#[test]
fn paths_with_stop_copy_and_pre_copy() {
    check_flag_set(
        SC_PRE,
        &[R, S, SC, RES, PC],
        &[
            (R, S, &[S]),
            (R, SC, &[S, SC]),
            (R, RES, &[S, RES]),
            (R, PC, &[PC]),
            (S, R, &[R]),
            (S, SC, &[SC]),
            (S, RES, &[RES]),
            (S, PC, &[R, PC]),
            (SC, R, &[S, R]),
            (SC, S, &[S]),
            (SC, RES, &[S, RES]),
            (RES, R, &[S, R]),
            (RES, S, &[S]),
            (RES, SC, &[S, SC]),
            (RES, PC, &[S, R, PC]),
            (PC, R, &[R]),
            (PC, S, &[R, S]),
            (PC, SC, &[SC]),
            (PC, RES, &[R, S, RES]),
        ],
        &[(SC, PC)],
    );
}

#[test]
fn paths_with_all_flags() {
    check_flag_set(
        ALL_FLAGS,
        &[R, S, SC, RES, RP, PC, PCP],
        &[
            (S, R, &[RP, R]),
            (S, PC, &[RP, R, PC]),
            (S, PCP, &[RP, PCP]),
            (S, SC, &[SC]),
            (S, RES, &[RES]),
            (S, RP, &[RP]),
            (R, S, &[RP, S]),
            (R, PC, &[PC]),
            (R, PCP, &[RP, PCP]),
            (R, SC, &[RP, S, SC]),
            (R, RES, &[RP, S, RES]),
            (R, RP, &[RP]),
            (PC, S, &[R, RP, S]),
            (PC, R, &[R]),
            (PC, PCP, &[PCP]),
            (PC, SC, &[PCP, SC]),
            (PC, RES, &[R, RP, S, RES]),
            (PC, RP, &[R, RP]),
            (PCP, S, &[RP, S]),
            (PCP, R, &[RP, R]),
            (PCP, PC, &[PC]),
            (PCP, SC, &[SC]),
            (PCP, RES, &[RP, S, RES]),
            (PCP, RP, &[RP]),
            (SC, S, &[S]),
            (SC, R, &[S, RP, R]),
            (SC, RES, &[S, RES]),
            (SC, RP, &[S, RP]),
            (RES, S, &[S]),
            (RES, R, &[S, RP, R]),
            (RES, PC, &[S, RP, R, PC]),
            (RES, PCP, &[S, RP, PCP]),
            (RES, SC, &[S, SC]),
            (RES, RP, &[S, RP]),
            (RP, S, &[S]),
            (RP, R, &[R]),
            (RP, PC, &[R, PC]),
            (RP, PCP, &[PCP]),
            (RP, SC, &[S, SC]),
            (RP, RES, &[S, RES]),
        ],
        &[(SC, PC), (SC, PCP)],
    );
}

#[test]
fn stop_copy_to_pre_copy_is_an_error_not_a_hang() {
    // The 2026 kernel fix: the skip loop must stop on ERROR.
    for flags in [SC_PRE, ALL_FLAGS] {
        assert_eq!(
            next_state(SC, PC, flags),
            Err(FsmError::NoPath {
                current: SC,
                target: PC
            })
        );
    }
    let err = path(SC, PCP, ALL_FLAGS).unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
    assert!(
        err.to_string().contains("STOP_COPY to PRE_COPY_P2P"),
        "{err}"
    );
}

/// The direct arcs a driver must implement for `flags`, transcribed from §1.3.
fn allowed_arcs(flags: MigrationFlags) -> Vec<(DeviceState, DeviceState)> {
    let p2p = flags.contains(MigrationFlags::P2P);
    let pre = flags.contains(MigrationFlags::PRE_COPY);
    let mut arcs = vec![(RES, S), (S, RES), (S, SC), (SC, S)];
    if p2p {
        arcs.extend([(R, RP), (RP, R), (RP, S), (S, RP)]);
    } else {
        arcs.extend([(R, S), (S, R)]);
    }
    match (pre, p2p) {
        (true, false) => arcs.extend([(R, PC), (PC, R), (PC, SC)]),
        (true, true) => arcs.extend([
            (R, PC),
            (PC, R),
            (PC, PCP),
            (PCP, PC),
            (PCP, RP),
            (PCP, SC),
            (RP, PCP),
        ]),
        (false, _) => {}
    }
    arcs
}

/// Breadth-first shortest distance over `arcs`, passing *through* a saving-group state only
/// when both ends are in the saving group (the uAPI's rule: PRE_COPY→STOP_COPY may go through
/// PRE_COPY_P2P, but RUNNING→STOP_COPY may not go through PRE_COPY).
fn bfs_distance(
    arcs: &[(DeviceState, DeviceState)],
    from: DeviceState,
    to: DeviceState,
) -> Option<usize> {
    let mut dist = [None; 8];
    dist[from as usize] = Some(0);
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        let d = dist[at as usize]?;
        if at == to {
            return Some(d);
        }
        let within_group = from.is_saving() && to.is_saving();
        if at != from && at.is_saving() && !within_group {
            continue;
        }
        for &(a, b) in arcs {
            if a == at && dist[b as usize].is_none() {
                dist[b as usize] = Some(d + 1);
                queue.push_back(b);
            }
        }
    }
    None
}

fn any_flags() -> impl Strategy<Value = MigrationFlags> {
    prop::sample::select(MigrationFlags::VALID_SETS.to_vec())
}

fn any_state() -> impl Strategy<Value = DeviceState> {
    prop::sample::select(DeviceState::ALL.to_vec())
}

proptest! {
    #[test]
    fn path_is_a_shortest_path_over_the_required_arcs(
        flags in any_flags(),
        from in any_state(),
        to in any_state(),
    ) {
        let arcs = allowed_arcs(flags);
        let supported = |s: DeviceState| arcs.iter().any(|&(a, b)| a == s || b == s);
        let result = path(from, to, flags);
        if !supported(from) || !supported(to) {
            prop_assert!(result.is_err());
            return Ok(());
        }
        if from == SC && matches!(to, PC | PCP) {
            prop_assert_eq!(result, Err(FsmError::NoPath { current: from, target: to }));
            return Ok(());
        }
        let steps = result.unwrap();
        prop_assert_eq!(Some(steps.len()), bfs_distance(&arcs, from, to));
        let mut at = from;
        for (i, &next) in steps.iter().enumerate() {
            prop_assert!(arcs.contains(&(at, next)), "{} -> {} is not a direct arc", at, next);
            prop_assert_ne!(next, E);
            if i + 1 < steps.len() && !(from.is_saving() && to.is_saving()) {
                prop_assert!(!next.is_saving(), "saving state {} inside the path", next);
            }
            at = next;
        }
        prop_assert_eq!(at, to);
    }
}
