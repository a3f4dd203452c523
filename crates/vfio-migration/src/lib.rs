//! VFIO migration v2, independent of any device: the states and capability flags of the uAPI,
//! the kernel's next-state walk, a runner that drives a device's per-arc driver, the data
//! sessions that carry the migration stream, and the DMA-logging (dirty page) types.
//!
//! * [`state`] — [`DeviceState`] (uAPI values), the saving group and which arcs open or close a
//!   data session;
//! * [`flags`] — [`MigrationFlags`] and which states a flag set supports;
//! * [`fsm`] — [`next_state`] and [`path`]: `vfio_mig_get_next_state()` with the 2026 fix that
//!   stops the skip loop on ERROR;
//! * [`driver`] — the [`MigrationDriver`] trait a device implements, one arc at a time;
//! * [`machine`] — [`Migration`], the runner: walks arcs, opens/keeps/invalidates sessions,
//!   handles failures, ERROR, reset, and the user closing the device ([`Migration::close`]);
//! * [`session`] — [`SavingSession`] and [`ResumingSession`], the data-fd semantics (ENOMSG
//!   "no data yet" in PRE_COPY, latched end of stream in STOP_COPY, ENODEV once invalidated);
//! * [`precopy`] — [`PrecopyInfo`] and [`SavePhase`];
//! * [`dma_log`] — DMA_LOGGING_START/REPORT validation ([`validate_start`]);
//! * [`dirty_log`] — [`DirtyLog`], the lock-free dirty-page tracker with report-and-clear;
//! * [`errno`] — [`Errno`] (Linux values) and [`ToErrno`], implemented by every error here;
//! * `test_support` (feature `test-utils`) — scripted save sources and recording resume sinks
//!   for tests of code that drives sessions.
//!
//! Two users build on it: a device's migration driver (implementing [`MigrationDriver`], which
//! streams its state through [`SaveSource`]/[`ResumeSink`] without buffering it whole), and the
//! vfio-user server (`vfu`), whose generic adapter maps DEVICE_FEATURE MIGRATION /
//! MIG_DEVICE_STATE / DMA_LOGGING_* and MIG_DATA_READ/WRITE onto [`Migration`], the sessions and
//! [`DirtyLog`] for any driver, with these types end to end, answering every error with its
//! [`ToErrno::errno`].
#![forbid(unsafe_code)]

pub mod dirty_log;
pub mod dma_log;
pub mod driver;
pub mod errno;
pub mod flags;
pub mod fsm;
pub mod machine;
pub mod precopy;
pub mod session;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_support;

pub use dirty_log::DirtyLog;
pub use dma_log::{
    DmaLogError, DmaLogRange, LogScope, LoggingMode, MAX_LOG_RANGES, MAX_TRACKED_PAGES,
    MIN_PAGE_SIZE, check_page_size, validate_start,
};
pub use driver::{ArcFailure, MigrationDriver, NewSession};
pub use errno::{Errno, ToErrno};
pub use flags::{FlagsError, MigrationFlags};
pub use fsm::{FsmError, MAX_PATH_LEN, next_state, path};
pub use machine::{Closed, DriverBug, Migration, ResetError, SetStateError};
pub use precopy::{PrecopyInfo, SavePhase};
pub use session::{
    ResumeSink, ResumingSession, SaveSource, SavingSession, Session, SessionError, StreamError,
};
pub use state::{
    DeviceState, SessionKind, UnknownStateError, closes_session, opens_resuming_session,
    opens_saving_session, session_opened_by,
};
