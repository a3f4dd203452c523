//! Scripted save sources and recording resume sinks shared by the unit tests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::errno::{Errno, ToErrno};
use crate::precopy::{PrecopyInfo, SavePhase};
use crate::session::{ResumeSink, SaveSource, StreamError};

/// What one `read` of a [`ScriptedSource`] does.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Return these bytes (as many as fit; the rest stays for the next read).
    Data(Vec<u8>),
    /// Return 0.
    Nothing,
    /// Fail with EIO.
    Fail,
    /// Claim one byte more than the buffer holds.
    Overrun,
}

/// A save source that follows a script; an exhausted script returns 0.
pub(crate) struct ScriptedSource {
    script: VecDeque<Step>,
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) phases: Arc<Mutex<Vec<SavePhase>>>,
    info: PrecopyInfo,
}

impl ScriptedSource {
    pub(crate) fn new(script: impl IntoIterator<Item = Step>) -> Self {
        Self {
            script: script.into_iter().collect(),
            calls: Arc::default(),
            phases: Arc::default(),
            info: PrecopyInfo {
                initial_bytes: 100,
                dirty_bytes: 7,
            },
        }
    }

    pub(crate) fn calls(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.calls)
    }
}

impl SaveSource for ScriptedSource {
    fn read(&mut self, buf: &mut [u8], phase: SavePhase) -> Result<usize, StreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.phases.lock().unwrap().push(phase);
        match self.script.pop_front() {
            None | Some(Step::Nothing) => Ok(0),
            Some(Step::Data(data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.script.push_front(Step::Data(data[n..].to_vec()));
                }
                Ok(n)
            }
            Some(Step::Fail) => Err(StreamError::new(Errno::EIO, "scripted read failure")),
            Some(Step::Overrun) => Ok(buf.len() + 1),
        }
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo, StreamError> {
        Ok(self.info)
    }
}

/// A resume sink that appends into a shared buffer and can be told to fail.
#[derive(Clone, Default)]
pub(crate) struct RecordingSink {
    pub(crate) data: Arc<Mutex<Vec<u8>>>,
    pub(crate) fail_with: Arc<Mutex<Option<Errno>>>,
}

impl ResumeSink for RecordingSink {
    fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if let Some(errno) = *self.fail_with.lock().unwrap() {
            return Err(StreamError::new(errno, "scripted write failure"));
        }
        self.data.lock().unwrap().extend_from_slice(data);
        Ok(())
    }
}

/// Asserts that `result` failed with `errno`.
pub(crate) fn assert_errno<T: core::fmt::Debug, E: ToErrno + core::fmt::Debug>(
    result: Result<T, E>,
    errno: Errno,
) {
    match result {
        Ok(value) => panic!("expected {errno}, got Ok({value:?})"),
        Err(err) => assert_eq!(err.errno(), errno, "{err:?}"),
    }
}
