//! Migration data sessions: the user-space twin of the VFIO migration data fd.
//!
//! A session is opened by the arc that enters the saving group or RESUMING, and invalidated by
//! the arc that leaves it or by a device reset. Sessions are clonable handles onto one shared
//! stream: the [`crate::Migration`] runner keeps one so it can switch the phase and invalidate
//! it, and the consumer (a vfio-user connection serving MIG_DATA_READ/WRITE, or a test) keeps
//! another. The data itself comes from, or goes to, the driver through [`SaveSource`] and
//! [`ResumeSink`], pulled or pushed a chunk at a time, so a saving stream of any size (whole
//! namespaces in PRE_COPY) is never buffered here.
//!
//! Semantics, following the kernel's data fd (reference §1.6):
//!
//! * **Saving.** [`SavingSession::read`] returns up to `buf.len()` bytes. In the PRE_COPY phases
//!   a source that has nothing makes the read fail with [`SessionError::NoDataYet`] (ENOMSG):
//!   that is *not* the end of the stream. In STOP_COPY a source read of 0 is the end of the
//!   stream, which is latched: every later read returns `Ok(0)` without asking the source.
//!   [`SavingSession::precopy_info`] works only in the PRE_COPY phases (else EINVAL).
//! * **Resuming.** [`ResumingSession::write`] appends to the driver's sink; the total is bounded
//!   by the `max_bytes` the driver chose (exceeding it is ENOMEM and writes nothing). The driver
//!   finishes and validates the data on the RESUMING→STOP arc.
//! * **Invalidated** sessions fail every call with [`SessionError::Invalidated`] (ENODEV), for
//!   ever; the driver's source or sink is dropped at invalidation.
//! * **Streams only.** There is no positioned I/O. A consumer offering a file-like interface
//!   should answer `pread`/`pwrite` with an offset, or `lseek`, with [`Errno::ESPIPE`], as the
//!   kernel drivers do.
//!
//! Calls on one session are serialised by a mutex held for the duration of the driver's
//! `read`/`write`; the runner takes the same mutex to switch phase or invalidate.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::errno::{Errno, ToErrno};
use crate::precopy::{PrecopyInfo, SavePhase};
use crate::state::SessionKind;

/// A driver's failure while producing or absorbing migration data, with the errno a client
/// should see (for example EIO for a failed device command, EINVAL for an incompatible or
/// corrupt resume stream, as the kernel's variant drivers answer).
#[derive(Debug, thiserror::Error)]
#[error("the device failed on the migration data stream ({errno}): {source}")]
pub struct StreamError {
    errno: Errno,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StreamError {
    /// Wraps the driver's own error (or a message) with the errno to report.
    pub fn new(errno: Errno, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            errno,
            source: source.into(),
        }
    }
}

impl ToErrno for StreamError {
    fn errno(&self) -> Errno {
        self.errno
    }
}

/// The driver's side of a saving session: produces the device's state stream on demand.
pub trait SaveSource: Send {
    /// Copies the next bytes of the stream into `buf` and returns how many (at most
    /// `buf.len()`; `buf` is never empty). Returning 0 means "nothing right now" in the PRE_COPY
    /// phases and "end of stream" in [`SavePhase::StopCopy`].
    ///
    /// # Errors
    /// The device could not produce the data.
    fn read(&mut self, buf: &mut [u8], phase: SavePhase) -> Result<usize, StreamError>;

    /// How much PRE_COPY data is waiting. Called only in the PRE_COPY phases.
    ///
    /// # Errors
    /// The device could not tell.
    fn precopy_info(&mut self) -> Result<PrecopyInfo, StreamError>;
}

/// The driver's side of a resuming session: absorbs the incoming state stream incrementally.
/// Final validation happens on the RESUMING→STOP arc, not here.
pub trait ResumeSink: Send {
    /// Appends `data` (never empty) to the stream being resumed; takes all of it or fails.
    ///
    /// # Errors
    /// The data cannot be accepted (for example it is from an incompatible device).
    fn write(&mut self, data: &[u8]) -> Result<(), StreamError>;
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session was invalidated (its state was left, or the device was reset).
    #[error(
        "the {kind:?} data session is no longer valid: the device left its state or was reset; start a new session with a state change"
    )]
    Invalidated {
        /// Which kind of session it was.
        kind: SessionKind,
    },
    /// PRE_COPY has no data right now; more may come. Not the end of the stream.
    #[error(
        "no PRE_COPY data is available right now (this is not the end of the stream); read again later or move to STOP_COPY"
    )]
    NoDataYet,
    /// PRE_COPY info was asked for outside the PRE_COPY phases.
    #[error("PRE_COPY info is only available in PRE_COPY and PRE_COPY_P2P, not in {phase:?}")]
    NotPreCopy {
        /// The phase the session is in.
        phase: SavePhase,
    },
    /// A write would take the resuming stream beyond the driver's bound.
    #[error(
        "writing {len} bytes after {written} would exceed the resume limit of {max_bytes} bytes; the stream is too large for this device"
    )]
    TooMuchData {
        /// Bytes already written.
        written: u64,
        /// Bytes in the refused write.
        len: usize,
        /// The driver's bound.
        max_bytes: u64,
    },
    /// The driver's source claimed to return more bytes than the buffer holds (a driver bug).
    #[error("driver bug: the save source returned {returned} bytes for a {len}-byte buffer")]
    SourceOverrun {
        /// What the source returned.
        returned: usize,
        /// The buffer length.
        len: usize,
    },
    /// The driver failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl ToErrno for SessionError {
    fn errno(&self) -> Errno {
        match self {
            Self::Invalidated { .. } => Errno::ENODEV,
            Self::NoDataYet => Errno::ENOMSG,
            Self::NotPreCopy { .. } => Errno::EINVAL,
            Self::TooMuchData { .. } => Errno::ENOMEM,
            Self::SourceOverrun { .. } => Errno::EIO,
            Self::Stream(err) => err.errno(),
        }
    }
}

/// Locks a session, ignoring poisoning: a panicking driver leaves the session data consistent
/// (every field is updated only after the driver call returns).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct SavingInner {
    /// `None` once invalidated.
    source: Option<Box<dyn SaveSource>>,
    phase: SavePhase,
    /// STOP_COPY end of stream seen; latched.
    ended: bool,
    bytes_read: u64,
}

impl SavingInner {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SessionError> {
        let source = self.source.as_mut().ok_or(SessionError::Invalidated {
            kind: SessionKind::Saving,
        })?;
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        let n = source.read(buf, self.phase)?;
        if n > buf.len() {
            return Err(SessionError::SourceOverrun {
                returned: n,
                len: buf.len(),
            });
        }
        if n == 0 {
            if self.phase.is_precopy() {
                return Err(SessionError::NoDataYet);
            }
            self.ended = true;
        }
        self.bytes_read += n as u64;
        Ok(n)
    }
}

/// A handle on a saving session (PRE_COPY, PRE_COPY_P2P, STOP_COPY). Clones share the stream.
#[derive(Clone)]
pub struct SavingSession(Arc<Mutex<SavingInner>>);

impl core::fmt::Debug for SavingSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let inner = lock(&self.0);
        f.debug_struct("SavingSession")
            .field("valid", &inner.source.is_some())
            .field("phase", &inner.phase)
            .field("ended", &inner.ended)
            .field("bytes_read", &inner.bytes_read)
            .finish()
    }
}

impl SavingSession {
    pub(crate) fn new(source: Box<dyn SaveSource>, phase: SavePhase) -> Self {
        Self(Arc::new(Mutex::new(SavingInner {
            source: Some(source),
            phase,
            ended: false,
            bytes_read: 0,
        })))
    }

    /// Reads the next chunk of the stream, at most `buf.len()` bytes (kernel `read()` on the
    /// data fd). `Ok(0)` for a non-empty `buf` is the end of the stream (STOP_COPY only, and
    /// latched); an empty `buf` also gives `Ok(0)` and is no end.
    ///
    /// # Errors
    /// [`SessionError::NoDataYet`] (ENOMSG) in PRE_COPY when the source has nothing now;
    /// [`SessionError::Invalidated`] (ENODEV); the driver's [`StreamError`].
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, SessionError> {
        lock(&self.0).read(buf)
    }

    /// Reads until `buf` is full, the stream ends (STOP_COPY), or PRE_COPY has nothing more
    /// right now, and returns the bytes read. This is what a vfio-user MIG_DATA_READ needs,
    /// where a short reply means "no more" while the driver's source may return short chunks.
    ///
    /// # Errors
    /// As [`SavingSession::read`]; [`SessionError::NoDataYet`] only when no byte was read. A
    /// driver error after some bytes were read is returned and those bytes are not delivered;
    /// the stream is unusable after such an error anyway.
    pub fn fill(&self, buf: &mut [u8]) -> Result<usize, SessionError> {
        let mut inner = lock(&self.0);
        let mut filled = 0;
        while filled < buf.len() {
            match inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(SessionError::NoDataYet) if filled > 0 => break,
                Err(err) => return Err(err),
            }
        }
        Ok(filled)
    }

    /// PRE_COPY progress (`VFIO_MIG_GET_PRECOPY_INFO`).
    ///
    /// # Errors
    /// [`SessionError::NotPreCopy`] (EINVAL) in STOP_COPY; [`SessionError::Invalidated`]
    /// (ENODEV); the driver's [`StreamError`].
    pub fn precopy_info(&self) -> Result<PrecopyInfo, SessionError> {
        let mut inner = lock(&self.0);
        let phase = inner.phase;
        let source = inner.source.as_mut().ok_or(SessionError::Invalidated {
            kind: SessionKind::Saving,
        })?;
        if !phase.is_precopy() {
            return Err(SessionError::NotPreCopy { phase });
        }
        Ok(source.precopy_info()?)
    }

    /// The current phase, or `None` once invalidated.
    #[must_use]
    pub fn phase(&self) -> Option<SavePhase> {
        let inner = lock(&self.0);
        inner.source.as_ref().map(|_| inner.phase)
    }

    /// Whether the session is still valid.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        lock(&self.0).source.is_some()
    }

    /// Whether the STOP_COPY end of stream has been reached.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        lock(&self.0).ended
    }

    /// Total bytes read from the session so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        lock(&self.0).bytes_read
    }

    /// Whether `other` is a handle on the same session (a move within the saving group keeps
    /// the session; entering the group anew opens another).
    #[must_use]
    pub fn is_same_session(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn set_phase(&self, phase: SavePhase) {
        lock(&self.0).phase = phase;
    }

    pub(crate) fn invalidate(&self) {
        lock(&self.0).source = None;
    }
}

struct ResumingInner {
    /// `None` once invalidated.
    sink: Option<Box<dyn ResumeSink>>,
    written: u64,
    max_bytes: u64,
}

/// A handle on a resuming session (RESUMING). Clones share the stream.
#[derive(Clone)]
pub struct ResumingSession(Arc<Mutex<ResumingInner>>);

impl core::fmt::Debug for ResumingSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let inner = lock(&self.0);
        f.debug_struct("ResumingSession")
            .field("valid", &inner.sink.is_some())
            .field("written", &inner.written)
            .field("max_bytes", &inner.max_bytes)
            .finish()
    }
}

impl ResumingSession {
    pub(crate) fn new(sink: Box<dyn ResumeSink>, max_bytes: u64) -> Self {
        Self(Arc::new(Mutex::new(ResumingInner {
            sink: Some(sink),
            written: 0,
            max_bytes,
        })))
    }

    /// Appends `data` to the stream (kernel `write()` on the data fd; the whole buffer or
    /// nothing). Segmentation does not matter, only byte order.
    ///
    /// # Errors
    /// [`SessionError::TooMuchData`] (ENOMEM) if the total would exceed the driver's bound,
    /// with nothing written; [`SessionError::Invalidated`] (ENODEV); the driver's
    /// [`StreamError`], in which case nothing is counted as written.
    pub fn write(&self, data: &[u8]) -> Result<(), SessionError> {
        let mut inner = lock(&self.0);
        let (written, max_bytes) = (inner.written, inner.max_bytes);
        let sink = inner.sink.as_mut().ok_or(SessionError::Invalidated {
            kind: SessionKind::Resuming,
        })?;
        if data.is_empty() {
            return Ok(());
        }
        let fits = u64::try_from(data.len())
            .ok()
            .and_then(|len| written.checked_add(len))
            .is_some_and(|total| total <= max_bytes);
        if !fits {
            return Err(SessionError::TooMuchData {
                written,
                len: data.len(),
                max_bytes,
            });
        }
        sink.write(data)?;
        inner.written += data.len() as u64;
        Ok(())
    }

    /// Total bytes accepted so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        lock(&self.0).written
    }

    /// The most bytes this session accepts in total.
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        lock(&self.0).max_bytes
    }

    /// Whether the session is still valid.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        lock(&self.0).sink.is_some()
    }

    /// Whether `other` is a handle on the same session.
    #[must_use]
    pub fn is_same_session(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn invalidate(&self) {
        lock(&self.0).sink = None;
    }
}

/// A handle on whichever data session is open.
#[derive(Clone, Debug)]
pub enum Session {
    /// The saving group's session.
    Saving(SavingSession),
    /// RESUMING's session.
    Resuming(ResumingSession),
}

impl Session {
    /// Which kind of session this is.
    #[must_use]
    pub const fn kind(&self) -> SessionKind {
        match self {
            Self::Saving(_) => SessionKind::Saving,
            Self::Resuming(_) => SessionKind::Resuming,
        }
    }

    /// Whether the session is still valid.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        match self {
            Self::Saving(session) => session.is_valid(),
            Self::Resuming(session) => session.is_valid(),
        }
    }

    /// The saving session, if this is one.
    #[must_use]
    pub fn as_saving(&self) -> Option<&SavingSession> {
        match self {
            Self::Saving(session) => Some(session),
            Self::Resuming(_) => None,
        }
    }

    /// The resuming session, if this is one.
    #[must_use]
    pub fn as_resuming(&self) -> Option<&ResumingSession> {
        match self {
            Self::Resuming(session) => Some(session),
            Self::Saving(_) => None,
        }
    }

    pub(crate) fn invalidate(&self) {
        match self {
            Self::Saving(session) => session.invalidate(),
            Self::Resuming(session) => session.invalidate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::test_support::{RecordingSink, ScriptedSource, Step, assert_errno};

    fn saving(
        script: Vec<Step>,
        phase: SavePhase,
    ) -> (SavingSession, Arc<std::sync::atomic::AtomicUsize>) {
        let source = ScriptedSource::new(script);
        let calls = source.calls();
        (SavingSession::new(Box::new(source), phase), calls)
    }

    #[test]
    fn pre_copy_empty_read_is_no_data_yet_not_end_of_stream() {
        let (session, calls) = saving(
            vec![
                Step::Data(b"abc".to_vec()),
                Step::Nothing,
                Step::Data(b"de".to_vec()),
            ],
            SavePhase::PreCopy,
        );
        let mut buf = [0u8; 8];
        assert_eq!(session.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        let err = session.read(&mut buf).unwrap_err();
        assert!(matches!(err, SessionError::NoDataYet));
        assert_eq!(err.errno(), Errno::ENOMSG);
        assert!(!session.is_ended());
        assert_eq!(session.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"de");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(session.bytes_read(), 5);
    }

    #[test]
    fn stop_copy_end_of_stream_is_latched_without_asking_the_source_again() {
        let (session, calls) = saving(
            vec![
                Step::Data(b"xy".to_vec()),
                Step::Nothing,
                Step::Data(b"never".to_vec()),
            ],
            SavePhase::StopCopy,
        );
        let mut buf = [0u8; 4];
        assert_eq!(session.read(&mut buf).unwrap(), 2);
        assert_eq!(session.read(&mut buf).unwrap(), 0);
        assert!(session.is_ended());
        for _ in 0..3 {
            assert_eq!(session.read(&mut buf).unwrap(), 0);
            assert_eq!(session.fill(&mut buf).unwrap(), 0);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn empty_buffers_read_nothing_and_do_not_end_the_stream() {
        let (session, calls) = saving(vec![Step::Data(b"a".to_vec())], SavePhase::StopCopy);
        assert_eq!(session.read(&mut []).unwrap(), 0);
        assert!(!session.is_ended());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn fill_gathers_short_source_reads() {
        let (session, _) = saving(
            vec![
                Step::Data(b"ab".to_vec()),
                Step::Data(b"cd".to_vec()),
                Step::Nothing,
                Step::Data(b"0123456789".to_vec()),
            ],
            SavePhase::PreCopy,
        );
        let mut buf = [0u8; 8];
        assert_eq!(session.fill(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(session.fill(&mut buf).unwrap(), 8);
        assert_eq!(&buf, b"01234567");
        session.set_phase(SavePhase::StopCopy);
        assert_eq!(session.fill(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert!(session.is_ended());
        assert_eq!(session.fill(&mut buf).unwrap(), 0);

        let (empty, _) = saving(vec![Step::Nothing], SavePhase::PreCopyP2p);
        assert_errno(empty.fill(&mut buf), Errno::ENOMSG);
    }

    #[test]
    fn the_source_sees_the_current_phase() {
        let source = ScriptedSource::new(vec![
            Step::Data(vec![1]),
            Step::Data(vec![2]),
            Step::Data(vec![3]),
        ]);
        let phases = Arc::clone(&source.phases);
        let session = SavingSession::new(Box::new(source), SavePhase::PreCopy);
        let mut buf = [0u8; 1];
        for phase in [
            SavePhase::PreCopy,
            SavePhase::PreCopyP2p,
            SavePhase::StopCopy,
        ] {
            session.set_phase(phase);
            session.read(&mut buf).unwrap();
        }
        assert_eq!(
            *phases.lock().unwrap(),
            [
                SavePhase::PreCopy,
                SavePhase::PreCopyP2p,
                SavePhase::StopCopy
            ]
        );
    }

    #[test]
    fn precopy_info_only_in_pre_copy_phases() {
        let (session, _) = saving(vec![], SavePhase::PreCopy);
        let expected = PrecopyInfo {
            initial_bytes: 100,
            dirty_bytes: 7,
        };
        assert_eq!(session.precopy_info().unwrap(), expected);
        session.set_phase(SavePhase::PreCopyP2p);
        assert_eq!(session.precopy_info().unwrap(), expected);
        session.set_phase(SavePhase::StopCopy);
        let err = session.precopy_info().unwrap_err();
        assert!(matches!(
            err,
            SessionError::NotPreCopy {
                phase: SavePhase::StopCopy
            }
        ));
        assert_eq!(err.errno(), Errno::EINVAL);
    }

    #[test]
    fn invalidated_sessions_fail_with_enodev_for_ever() {
        let (session, calls) = saving(vec![Step::Data(b"abc".to_vec())], SavePhase::PreCopy);
        let consumer = session.clone();
        assert!(consumer.is_same_session(&session));
        session.invalidate();
        let mut buf = [0u8; 4];
        for _ in 0..2 {
            assert_errno(consumer.read(&mut buf), Errno::ENODEV);
            assert_errno(consumer.fill(&mut buf), Errno::ENODEV);
            assert_errno(consumer.precopy_info(), Errno::ENODEV);
        }
        assert!(!consumer.is_valid());
        assert_eq!(consumer.phase(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // Even an empty read reports the invalidation.
        assert_errno(consumer.read(&mut []), Errno::ENODEV);
    }

    #[test]
    fn driver_failures_and_overruns_are_reported() {
        let (session, _) = saving(vec![Step::Fail, Step::Overrun], SavePhase::StopCopy);
        let mut buf = [0u8; 4];
        let err = session.read(&mut buf).unwrap_err();
        assert_eq!(err.errno(), Errno::EIO);
        assert!(err.to_string().contains("scripted read failure"), "{err}");
        let err = session.read(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            SessionError::SourceOverrun {
                returned: 5,
                len: 4
            }
        ));
        assert_eq!(err.errno(), Errno::EIO);
        assert!(session.is_valid());
        assert!(!session.is_ended());
    }

    #[test]
    fn resuming_writes_are_bounded_and_all_or_nothing() {
        let sink = RecordingSink::default();
        let session = ResumingSession::new(Box::new(sink.clone()), 10);
        session.write(b"abcd").unwrap();
        session.write(&[]).unwrap();
        session.write(b"efghij").unwrap();
        assert_eq!(session.written(), 10);
        let err = session.write(b"k").unwrap_err();
        assert!(matches!(
            err,
            SessionError::TooMuchData {
                written: 10,
                len: 1,
                max_bytes: 10
            }
        ));
        assert_eq!(err.errno(), Errno::ENOMEM);
        assert_eq!(*sink.data.lock().unwrap(), b"abcdefghij");
        assert_eq!(session.written(), 10);
        assert_eq!(session.max_bytes(), 10);
    }

    #[test]
    fn resuming_sink_failures_count_nothing_and_invalidation_is_enodev() {
        let sink = RecordingSink::default();
        let session = ResumingSession::new(Box::new(sink.clone()), 100);
        *sink.fail_with.lock().unwrap() = Some(Errno::EFAULT);
        assert_errno(session.write(b"bad"), Errno::EFAULT);
        assert_eq!(session.written(), 0);
        *sink.fail_with.lock().unwrap() = None;
        session.write(b"good").unwrap();
        let consumer = session.clone();
        session.invalidate();
        assert_errno(consumer.write(b"late"), Errno::ENODEV);
        assert!(!consumer.is_valid());
        assert_eq!(*sink.data.lock().unwrap(), b"good");
    }
}
