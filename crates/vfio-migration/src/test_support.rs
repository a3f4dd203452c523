//! Scripted save sources and recording resume sinks: the driver side of data sessions, for tests
//! (this crate's, and with the `test-utils` feature other crates').

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::errno::{Errno, ToErrno};
use crate::precopy::{PrecopyInfo, SavePhase};
use crate::session::{ResumeSink, SaveSource, StreamError};

/// What one `read` of a [`ScriptedSource`] does.
#[derive(Clone, Debug)]
pub enum Step {
    /// Return these bytes (as many as fit; the rest stays for the next read).
    Data(Vec<u8>),
    /// Return 0.
    Nothing,
    /// Fail with EIO.
    Fail,
    /// Claim one byte more than the buffer holds.
    Overrun,
}

/// A save source that follows a script; an exhausted script returns 0. Its PRE_COPY info is
/// always 100 initial and 7 dirty bytes.
pub struct ScriptedSource {
    script: VecDeque<Step>,
    /// Reads so far.
    pub calls: Arc<AtomicUsize>,
    /// The phase of every read so far.
    pub phases: Arc<Mutex<Vec<SavePhase>>>,
    info: PrecopyInfo,
}

impl ScriptedSource {
    /// A source that plays `script`, one step per read.
    pub fn new(script: impl IntoIterator<Item = Step>) -> Self {
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

    /// A handle on the read counter.
    pub fn calls(&self) -> Arc<AtomicUsize> {
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

/// A resume sink that appends into a shared buffer and can be told to fail. Clones share both.
#[derive(Clone, Default)]
pub struct RecordingSink {
    /// Everything written so far.
    pub data: Arc<Mutex<Vec<u8>>>,
    /// While set, writes fail with this errno and append nothing.
    pub fail_with: Arc<Mutex<Option<Errno>>>,
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
pub fn assert_errno<T: core::fmt::Debug, E: ToErrno + core::fmt::Debug>(
    result: Result<T, E>,
    errno: Errno,
) {
    match result {
        Ok(value) => panic!("expected {errno}, got Ok({value:?})"),
        Err(err) => assert_eq!(err.errno(), errno, "{err:?}"),
    }
}
