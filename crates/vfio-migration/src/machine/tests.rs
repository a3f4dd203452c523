//! The runner against a mock driver that records arcs, fails on demand and can misbehave.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::session::SessionError;
use crate::test_support::{RecordingSink, ScriptedSource, Step, assert_errno};
use DeviceState::{
    Error as E, PreCopy as PC, PreCopyP2p as PCP, Resuming as RES, Running as R, RunningP2p as RP,
    Stop as S, StopCopy as SC,
};

#[derive(Debug, thiserror::Error)]
#[error("mock driver failure ({0})")]
struct MockError(Errno);

impl ToErrno for MockError {
    fn errno(&self) -> Errno {
        self.0
    }
}

/// How the mock fails or misbehaves on a chosen arc.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Fail, device still in `from`.
    Recovered,
    /// Fail, device broken.
    Broken,
    /// Succeed but return a saving session the arc does not open.
    ExtraSaving,
    /// Succeed but return no session.
    NoSession,
    /// Succeed but return the other kind of session.
    WrongKind,
}

struct MockDriver {
    flags: MigrationFlags,
    arcs: Vec<(DeviceState, DeviceState)>,
    /// Fault to apply on the given arc (or on the next arc when the arc is `None`).
    fault: Option<(Option<(DeviceState, DeviceState)>, Fault)>,
    sink: RecordingSink,
    /// RESUMING→STOP succeeds only if the resumed data equals this.
    expected_resume: Vec<u8>,
    resets: usize,
    reset_fails: bool,
}

impl MockDriver {
    fn new(flags: MigrationFlags) -> Self {
        Self {
            flags,
            arcs: Vec::new(),
            fault: None,
            sink: RecordingSink::default(),
            expected_resume: Vec::new(),
            resets: 0,
            reset_fails: false,
        }
    }

    fn saving_session() -> NewSession {
        NewSession::Saving(Box::new(ScriptedSource::new([
            Step::Data(b"state".to_vec()),
            Step::Nothing,
        ])))
    }

    fn resuming_session(&self) -> NewSession {
        NewSession::Resuming {
            sink: Box::new(self.sink.clone()),
            max_bytes: 64,
        }
    }
}

impl MigrationDriver for MockDriver {
    type Error = MockError;

    fn flags(&self) -> MigrationFlags {
        self.flags
    }

    fn arc(
        &mut self,
        from: DeviceState,
        to: DeviceState,
    ) -> Result<Option<NewSession>, ArcFailure<MockError>> {
        assert!(
            self.flags.supports(from) && self.flags.supports(to),
            "{from} -> {to}"
        );
        self.arcs.push((from, to));
        let fault = match self.fault {
            Some((None, fault)) => {
                self.fault = None;
                Some(fault)
            }
            Some((Some(arc), fault)) if arc == (from, to) => {
                self.fault = None;
                Some(fault)
            }
            _ => None,
        };
        let correct = match session_opened_by(from, to) {
            Some(SessionKind::Saving) => Some(Self::saving_session()),
            Some(SessionKind::Resuming) => Some(self.resuming_session()),
            None => None,
        };
        match fault {
            Some(Fault::Recovered) => Err(ArcFailure::Recovered(MockError(Errno::EBUSY))),
            Some(Fault::Broken) => Err(ArcFailure::Broken(MockError(Errno::EIO))),
            Some(Fault::ExtraSaving) => Ok(Some(Self::saving_session())),
            Some(Fault::NoSession) => Ok(None),
            Some(Fault::WrongKind) => Ok(Some(match correct {
                Some(NewSession::Saving(_)) => self.resuming_session(),
                _ => Self::saving_session(),
            })),
            None => {
                if (from, to) == (RES, S) && *self.sink.data.lock().unwrap() != self.expected_resume
                {
                    // Incomplete or invalid data: fail, still in RESUMING.
                    return Err(MockError(Errno::EINVAL).into());
                }
                Ok(correct)
            }
        }
    }

    fn stop_copy_length(&mut self) -> Result<u64, MockError> {
        Ok(4096)
    }

    fn reset(&mut self) -> Result<(), MockError> {
        self.resets += 1;
        self.sink.data.lock().unwrap().clear();
        if self.reset_fails {
            Err(MockError(Errno::EIO))
        } else {
            Ok(())
        }
    }
}

fn machine(flags: MigrationFlags) -> Migration<MockDriver> {
    Migration::new(MockDriver::new(flags)).unwrap()
}

fn saving(session: Option<&Session>) -> SavingSession {
    session
        .and_then(Session::as_saving)
        .cloned()
        .expect("a saving session")
}

#[test]
fn starts_running_without_a_session_and_validates_flags() {
    let m = machine(MigrationFlags::all());
    assert_eq!(m.state(), R);
    assert!(m.session().is_none());
    assert_eq!(m.flags(), MigrationFlags::all());
    let Err(err) = Migration::new(MockDriver::new(MigrationFlags::P2P)) else {
        panic!("flags without STOP_COPY must be refused");
    };
    assert_eq!(err, FlagsError::MissingStopCopy { bits: 2 });
}

#[test]
fn walks_one_arc_at_a_time_and_the_final_arc_opens_the_session() {
    let mut m = machine(MigrationFlags::all());
    let session = m
        .set_state(SC)
        .unwrap()
        .expect("STOP->STOP_COPY opens a session");
    assert_eq!(m.driver().arcs, [(R, RP), (RP, S), (S, SC)]);
    assert_eq!(m.state(), SC);
    let saving_session = saving(Some(&session));
    assert_eq!(saving_session.phase(), Some(SavePhase::StopCopy));
    assert!(saving_session.is_same_session(&saving(m.session())));
    let mut buf = [0u8; 16];
    assert_eq!(saving_session.read(&mut buf).unwrap(), 5);
    assert_eq!(saving_session.read(&mut buf).unwrap(), 0);
    assert_eq!(m.stop_copy_length().unwrap(), 4096);
}

#[test]
fn moving_within_the_saving_group_keeps_the_session_and_switches_its_phase() {
    let mut m = machine(MigrationFlags::all());
    let first = saving(m.set_state(PC).unwrap().as_ref());
    assert_eq!(first.phase(), Some(SavePhase::PreCopy));
    let mut buf = [0u8; 16];
    assert_eq!(first.read(&mut buf).unwrap(), 5);
    assert_errno(first.read(&mut buf), Errno::ENOMSG);
    assert_eq!(first.precopy_info().unwrap().initial_bytes, 100);

    assert!(m.set_state(PCP).unwrap().is_none());
    assert_eq!(first.phase(), Some(SavePhase::PreCopyP2p));
    assert!(m.set_state(SC).unwrap().is_none());
    assert_eq!(first.phase(), Some(SavePhase::StopCopy));
    assert!(first.is_same_session(&saving(m.session())));
    assert_errno(first.precopy_info(), Errno::EINVAL);
    assert_eq!(first.read(&mut buf).unwrap(), 0);

    // Leaving the group invalidates it.
    assert!(m.set_state(S).unwrap().is_none());
    assert!(m.session().is_none());
    assert_errno(first.read(&mut buf), Errno::ENODEV);
    assert_eq!(m.driver().arcs, [(R, PC), (PC, PCP), (PCP, SC), (SC, S)]);

    // Entering again opens a new session; the old one stays invalid.
    let second = saving(m.set_state(SC).unwrap().as_ref());
    assert!(!second.is_same_session(&first));
    assert!(second.is_valid());
    assert!(!first.is_valid());
}

#[test]
fn pre_copy_to_stop_copy_in_one_set_keeps_the_session() {
    let mut m = machine(MigrationFlags::all());
    let first = saving(m.set_state(PC).unwrap().as_ref());
    assert!(m.set_state(SC).unwrap().is_none());
    assert_eq!(m.driver().arcs, [(R, PC), (PC, PCP), (PCP, SC)]);
    assert!(first.is_same_session(&saving(m.session())));
    assert_eq!(first.phase(), Some(SavePhase::StopCopy));
}

#[test]
fn leaving_pre_copy_for_running_invalidates_the_session() {
    let mut m = machine(MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY);
    let session = saving(m.set_state(PC).unwrap().as_ref());
    assert!(m.set_state(R).unwrap().is_none());
    assert!(!session.is_valid());
    assert!(m.session().is_none());
}

#[test]
fn a_failing_arc_stops_the_walk_in_the_last_state_reached() {
    let mut m = machine(MigrationFlags::all());
    m.driver_mut().fault = Some((Some((RP, S)), Fault::Recovered));
    let err = m.set_state(SC).unwrap_err();
    assert!(
        matches!(
            err,
            SetStateError::Arc {
                from: RP,
                to: S,
                state: RP,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), Errno::EBUSY);
    assert!(err.to_string().contains("RUNNING_P2P -> STOP"), "{err}");
    assert_eq!(m.state(), RP);
    assert_eq!(m.driver().arcs, [(R, RP), (RP, S)]);
    // The walk can be retried from there.
    assert!(m.set_state(SC).unwrap().is_some());
    assert_eq!(m.state(), SC);
}

#[test]
fn a_failing_arc_out_of_a_session_state_keeps_the_session() {
    let mut m = machine(MigrationFlags::STOP_COPY);
    let session = saving(m.set_state(SC).unwrap().as_ref());
    m.driver_mut().fault = Some((None, Fault::Recovered));
    assert!(m.set_state(R).is_err());
    assert_eq!(m.state(), SC);
    assert!(session.is_valid());
    assert!(session.is_same_session(&saving(m.session())));
}

#[test]
fn a_broken_arc_moves_to_error_which_only_reset_leaves() {
    let mut m = machine(MigrationFlags::all());
    let session = saving(m.set_state(PC).unwrap().as_ref());
    m.driver_mut().fault = Some((None, Fault::Broken));
    let err = m.set_state(SC).unwrap_err();
    assert!(
        matches!(
            err,
            SetStateError::Arc {
                from: PC,
                to: PCP,
                state: E,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), Errno::EIO);
    assert_eq!(m.state(), E);
    assert!(m.session().is_none());
    assert!(!session.is_valid());

    let arcs_before = m.driver().arcs.len();
    for target in [R, S, E] {
        let err = m.set_state(target).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL);
    }
    assert!(matches!(
        m.set_state(R),
        Err(SetStateError::Fsm(FsmError::InError))
    ));
    assert_eq!(m.driver().arcs.len(), arcs_before);

    m.reset().unwrap();
    assert_eq!(m.state(), R);
    assert_eq!(m.driver().resets, 1);
    assert!(m.set_state(S).is_ok());
}

#[test]
fn invalid_requests_run_no_arc() {
    let mut m = machine(MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY);
    assert!(matches!(
        m.set_state(E),
        Err(SetStateError::Fsm(FsmError::ErrorRequested))
    ));
    assert!(matches!(
        m.set_state(RP),
        Err(SetStateError::Fsm(FsmError::Unsupported { state: RP, .. }))
    ));
    assert!(m.set_state(R).unwrap().is_none());
    assert!(m.driver().arcs.is_empty());
    m.set_state(SC).unwrap();
    let arcs = m.driver().arcs.len();
    let err = m.set_state(PC).unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
    assert!(matches!(
        err,
        SetStateError::Fsm(FsmError::NoPath {
            current: SC,
            target: PC
        })
    ));
    assert_eq!(m.driver().arcs.len(), arcs);
    assert_eq!(m.state(), SC);
    // Setting the current state again runs nothing and returns no new session.
    assert!(m.set_state(SC).unwrap().is_none());
    assert_eq!(m.driver().arcs.len(), arcs);
    assert!(m.session().is_some());
}

fn driver_bug(
    flags: MigrationFlags,
    arc: (DeviceState, DeviceState),
    fault: Fault,
    target: DeviceState,
) -> (Migration<MockDriver>, SetStateError<MockError>) {
    let mut m = machine(flags);
    m.driver_mut().fault = Some((Some(arc), fault));
    let err = m.set_state(target).unwrap_err();
    (m, err)
}

#[test]
fn a_session_before_the_final_arc_is_a_driver_bug() {
    let (m, err) = driver_bug(MigrationFlags::all(), (R, RP), Fault::ExtraSaving, S);
    assert!(
        matches!(
            err,
            SetStateError::DriverBug {
                from: R,
                to: RP,
                bug: DriverBug::SessionBeforeFinalArc
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.errno(), Errno::EIO);
    assert_eq!(m.state(), E);
    assert_eq!(m.driver().arcs, [(R, RP)]);
    assert!(m.session().is_none());
}

#[test]
fn a_session_from_an_arc_that_opens_none_is_a_driver_bug() {
    let (m, err) = driver_bug(MigrationFlags::STOP_COPY, (R, S), Fault::ExtraSaving, S);
    assert!(matches!(
        err,
        SetStateError::DriverBug {
            bug: DriverBug::UnexpectedSession,
            ..
        }
    ));
    assert_eq!(m.state(), E);
}

#[test]
fn no_session_from_a_session_opening_arc_is_a_driver_bug() {
    let (m, err) = driver_bug(MigrationFlags::STOP_COPY, (S, SC), Fault::NoSession, SC);
    assert!(matches!(
        err,
        SetStateError::DriverBug {
            from: S,
            to: SC,
            bug: DriverBug::MissingSession {
                kind: SessionKind::Saving
            }
        }
    ));
    assert_eq!(m.state(), E);
    assert!(m.session().is_none());
    let (_, err) = driver_bug(MigrationFlags::STOP_COPY, (S, RES), Fault::NoSession, RES);
    assert!(matches!(
        err,
        SetStateError::DriverBug {
            bug: DriverBug::MissingSession {
                kind: SessionKind::Resuming
            },
            ..
        }
    ));
}

#[test]
fn the_wrong_kind_of_session_is_a_driver_bug() {
    let (m, err) = driver_bug(MigrationFlags::STOP_COPY, (S, RES), Fault::WrongKind, RES);
    assert!(matches!(
        err,
        SetStateError::DriverBug {
            bug: DriverBug::WrongSessionKind {
                expected: SessionKind::Resuming,
                got: SessionKind::Saving
            },
            ..
        }
    ));
    assert_eq!(m.state(), E);
    let (_, err) = driver_bug(MigrationFlags::STOP_COPY, (S, SC), Fault::WrongKind, SC);
    assert!(matches!(
        err,
        SetStateError::DriverBug {
            bug: DriverBug::WrongSessionKind {
                expected: SessionKind::Saving,
                got: SessionKind::Resuming
            },
            ..
        }
    ));
    assert!(err.to_string().contains("ERROR"), "{err}");
}

#[test]
fn resuming_is_bounded_validated_on_the_way_out_and_invalidated_after() {
    let mut m = machine(MigrationFlags::STOP_COPY);
    m.driver_mut().expected_resume = b"complete state".to_vec();
    let session = m
        .set_state(RES)
        .unwrap()
        .expect("STOP->RESUMING opens a session");
    assert_eq!(m.driver().arcs, [(R, S), (S, RES)]);
    let resuming = session.as_resuming().unwrap().clone();
    assert_eq!(resuming.max_bytes(), 64);
    resuming.write(b"complete").unwrap();

    // Incomplete: RESUMING->STOP fails and the device stays in RESUMING with its session.
    let err = m.set_state(R).unwrap_err();
    assert!(matches!(
        err,
        SetStateError::Arc {
            from: RES,
            to: S,
            state: RES,
            ..
        }
    ));
    assert_eq!(err.errno(), Errno::EINVAL);
    assert_eq!(m.state(), RES);
    assert!(resuming.is_valid());

    resuming.write(b" state").unwrap();
    assert_eq!(resuming.written(), 14);
    assert_errno(resuming.write(&[0; 51]), Errno::ENOMEM);
    m.set_state(R).unwrap();
    assert_eq!(m.state(), R);
    assert!(!resuming.is_valid());
    assert_errno(resuming.write(b"x"), Errno::ENODEV);
}

#[test]
fn reset_invalidates_the_session_and_returns_to_running() {
    let mut m = machine(MigrationFlags::STOP_COPY);
    let session = m.set_state(RES).unwrap().unwrap();
    let resuming = session.as_resuming().unwrap();
    resuming.write(b"partial").unwrap();
    m.reset().unwrap();
    assert_eq!(m.state(), R);
    assert!(m.session().is_none());
    assert!(matches!(
        resuming.write(b"more"),
        Err(SessionError::Invalidated {
            kind: SessionKind::Resuming
        })
    ));
    assert!(m.driver().sink.data.lock().unwrap().is_empty());
}

#[test]
fn a_failed_reset_leaves_the_device_in_error() {
    let mut m = machine(MigrationFlags::STOP_COPY);
    m.driver_mut().reset_fails = true;
    let err = m.reset().unwrap_err();
    assert_eq!(err.errno(), Errno::EIO);
    assert_eq!(m.state(), E);
    m.driver_mut().reset_fails = false;
    m.reset().unwrap();
    assert_eq!(m.state(), R);
}

/// One step of a random run.
#[derive(Clone, Debug)]
enum Op {
    Set(DeviceState),
    SetWithFault(DeviceState, bool),
    Reset,
}

fn any_op() -> impl Strategy<Value = Op> {
    let state = prop::sample::select(DeviceState::ALL.to_vec());
    prop_oneof![
        6 => state.clone().prop_map(Op::Set),
        2 => (state, any::<bool>()).prop_map(|(s, broken)| Op::SetWithFault(s, broken)),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #[test]
    fn random_runs_keep_the_invariants(
        flags in prop::sample::select(MigrationFlags::VALID_SETS.to_vec()),
        ops in prop::collection::vec(any_op(), 1..40),
    ) {
        let mut m = machine(flags);
        let seen: Arc<Mutex<Vec<Session>>> = Arc::default();
        for op in ops {
            let before = m.state();
            let arcs_before = m.driver().arcs.len();
            let result = match op {
                Op::Set(target) => Some((target, m.set_state(target))),
                Op::SetWithFault(target, broken) => {
                    let fault = if broken { Fault::Broken } else { Fault::Recovered };
                    m.driver_mut().fault = Some((None, fault));
                    Some((target, m.set_state(target)))
                }
                Op::Reset => {
                    m.reset().unwrap();
                    prop_assert_eq!(m.state(), R);
                    None
                }
            };
            m.driver_mut().fault = None;
            if let Some((target, result)) = result {
                match result {
                    Ok(opened) => {
                        prop_assert_eq!(m.state(), target);
                        if let Some(session) = opened {
                            prop_assert!(session.is_valid());
                            seen.lock().unwrap().push(session);
                        }
                    }
                    Err(SetStateError::Fsm(_)) => {
                        prop_assert_eq!(m.state(), before);
                        prop_assert_eq!(m.driver().arcs.len(), arcs_before);
                    }
                    Err(SetStateError::Arc { from, to, state, .. }) => {
                        prop_assert!(state == from || state == E);
                        prop_assert_eq!(m.state(), state);
                        prop_assert_eq!(m.driver().arcs.last().copied(), Some((from, to)));
                    }
                    Err(SetStateError::DriverBug { .. }) => prop_assert!(false, "mock is correct"),
                }
            }
            let state = m.state();
            prop_assert!(state == E || flags.supports(state));
            // A session exists exactly in the saving group and RESUMING, of the right kind.
            prop_assert_eq!(m.session().map(Session::kind), state.session_kind());
            if let Some(current) = m.session() {
                prop_assert!(current.is_valid());
                if let Session::Saving(s) = current {
                    prop_assert_eq!(s.phase(), SavePhase::of(state));
                }
            }
            // Every other session ever opened is invalid, for ever.
            for old in seen.lock().unwrap().iter() {
                let is_current = match (old, m.session()) {
                    (Session::Saving(a), Some(Session::Saving(b))) => a.is_same_session(b),
                    (Session::Resuming(a), Some(Session::Resuming(b))) => a.is_same_session(b),
                    _ => false,
                };
                prop_assert_eq!(old.is_valid(), is_current);
            }
        }
    }
}

#[test]
fn close_ends_the_session_and_walks_the_drivers_arcs_back_to_running() {
    for (state, walk) in [
        (PC, vec![(PC, R)]),
        (PCP, vec![(PCP, RP), (RP, R)]),
        (SC, vec![(SC, S), (S, RP), (RP, R)]),
        (S, vec![(S, RP), (RP, R)]),
        (RP, vec![(RP, R)]),
    ] {
        let mut m = machine(MigrationFlags::all());
        let opened = m.set_state(state).unwrap();
        let before = m.driver().arcs.len();
        let closed = m.close().unwrap();
        assert!(
            matches!(closed, Closed::Walked { from } if from == state),
            "{closed:?}"
        );
        assert_eq!(m.state(), R, "closed in {state}");
        assert!(m.session().is_none());
        assert_eq!(m.driver().arcs[before..], walk, "from {state}");
        assert_eq!(m.driver().resets, 0);
        // A session the departed user held is dead: its reads fail like a disabled fd.
        if let Some(session) = opened {
            let mut buf = [0u8; 4];
            assert_errno(saving(Some(&session)).read(&mut buf), Errno::ENODEV);
        }
    }
    let mut m = machine(MigrationFlags::all());
    assert!(matches!(m.close().unwrap(), Closed::Running));
    assert!(m.driver().arcs.is_empty());
}

#[test]
fn close_resets_resuming_without_loading_the_partial_stream_and_resets_error() {
    let mut m = machine(MigrationFlags::all());
    m.set_state(S).unwrap();
    let session = m.set_state(RES).unwrap().expect("a resuming session");
    let resuming = session.as_resuming().cloned().unwrap();
    resuming.write(b"half").unwrap();
    let before = m.driver().arcs.len();
    let closed = m.close().unwrap();
    assert!(
        matches!(
            closed,
            Closed::Reset {
                from: RES,
                walk: None
            }
        ),
        "{closed:?}"
    );
    assert_eq!(m.state(), R);
    assert!(
        m.driver().arcs[before..].is_empty(),
        "RESUMING -> STOP never ran"
    );
    assert_eq!(m.driver().resets, 1);
    assert!(
        m.driver().sink.data.lock().unwrap().is_empty(),
        "data dropped"
    );
    assert_errno(resuming.write(b"more"), Errno::ENODEV);

    let mut m = machine(MigrationFlags::all());
    m.driver_mut().fault = Some((None, Fault::Broken));
    m.set_state(RP).unwrap_err();
    assert_eq!(m.state(), E);
    assert!(matches!(
        m.close().unwrap(),
        Closed::Reset {
            from: E,
            walk: None
        }
    ));
    assert_eq!(m.state(), R);
}

#[test]
fn close_falls_back_to_a_reset_when_the_walk_fails() {
    let mut m = machine(MigrationFlags::all());
    m.set_state(S).unwrap();
    m.driver_mut().fault = Some((Some((RP, R)), Fault::Recovered));
    let closed = m.close().unwrap();
    let Closed::Reset {
        from: S,
        walk: Some(walk),
    } = closed
    else {
        panic!("{closed:?}");
    };
    assert_eq!(walk.errno(), Errno::EBUSY);
    assert_eq!(m.state(), R);
    assert_eq!(m.driver().resets, 1);

    let mut m = machine(MigrationFlags::all());
    m.set_state(S).unwrap();
    m.driver_mut().fault = Some((Some((S, RP)), Fault::Recovered));
    m.driver_mut().reset_fails = true;
    assert!(m.close().is_err());
    assert_eq!(m.state(), E, "a failed reset leaves ERROR");
}

#[test]
fn fuzz_device_state_values_from_the_wire() {
    bolero::check!()
        .with_iterations(2000)
        .for_each(|bytes: &[u8]| {
            let mut m = machine(MigrationFlags::all());
            for (i, chunk) in bytes.chunks_exact(4).enumerate() {
                let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                match DeviceState::try_from(value) {
                    Ok(target) => {
                        if i % 7 == 6 {
                            m.driver_mut().fault = Some((None, Fault::Broken));
                        }
                        match m.set_state(target) {
                            Ok(_) => assert_eq!(m.state(), target),
                            Err(err) => assert_ne!(err.errno().get(), 0),
                        }
                        m.driver_mut().fault = None;
                        if m.state() == E {
                            m.reset().unwrap();
                        }
                    }
                    Err(err) => {
                        assert!(value > 7);
                        assert_eq!(err.errno(), Errno::EINVAL);
                    }
                }
            }
        });
}

#[test]
fn a_device_is_handed_over_only_in_stop_after_its_whole_state_was_read() {
    let read_all = |m: &mut Migration<MockDriver>| {
        let session = m.set_state(SC).unwrap().expect("a saving session");
        let saving = saving(Some(&session));
        let mut buf = [0u8; 64];
        while saving.read(&mut buf).unwrap() > 0 {}
        assert!(saving.is_ended());
    };
    // The whole stream read, then STOP: handed over; any arc after it clears it.
    let mut m = machine(MigrationFlags::all());
    read_all(&mut m);
    assert!(!m.handed_over(), "still in STOP_COPY");
    m.set_state(S).unwrap();
    assert!(m.handed_over());
    m.set_state(R).unwrap();
    assert!(!m.handed_over(), "resumed by its user");
    // A reset clears it too.
    read_all(&mut m);
    m.set_state(S).unwrap();
    assert!(m.handed_over());
    m.reset().unwrap();
    assert!(!m.handed_over());
    // A partial read, or STOP straight from RUNNING, is no hand-over.
    let mut m = machine(MigrationFlags::all());
    let session = m.set_state(SC).unwrap().expect("a saving session");
    let mut buf = [0u8; 2];
    assert_eq!(saving(Some(&session)).read(&mut buf).unwrap(), 2);
    m.set_state(S).unwrap();
    assert!(!m.handed_over(), "the stream was not read to its end");
    m.set_state(R).unwrap();
    m.set_state(S).unwrap();
    assert!(!m.handed_over(), "nothing was saved");
}
