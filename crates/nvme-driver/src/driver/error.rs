//! Driver errors.

use std::io;
use std::time::Duration;

use nvme_spec::status::Status;

/// What went wrong talking to a controller.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The transport failed (socket, register access).
    #[error("controller access failed: {0}")]
    Io(#[from] io::Error),
    /// The controller did not become ready (or not-ready) within CAP.TO.
    #[error("controller did not {what} within {timeout:?} (CSTS {csts:#x})")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long the driver waited.
        timeout: Duration,
        /// The last CSTS value read.
        csts: u32,
    },
    /// The controller reported a fatal error (CSTS.CFS).
    #[error("controller fatal status (CSTS.CFS) set; it must be reset")]
    Fatal,
    /// A command completed with an error status.
    #[error("{command} failed with status {status:?} (SCT {sct:#x}, SC {sc:#x})", sct = status.sct(), sc = status.sc())]
    Status {
        /// What the command was.
        command: String,
        /// The completion status.
        status: Status,
    },
    /// A command got no completion in time.
    #[error("{command} got no completion within {timeout:?}")]
    NoCompletion {
        /// What the command was.
        command: String,
        /// How long the driver waited.
        timeout: Duration,
    },
    /// The host memory pool is exhausted.
    #[error("cannot allocate {requested} bytes of DMA memory from a {total}-byte pool")]
    OutOfMemory {
        /// Requested size.
        requested: u64,
        /// Pool size.
        total: u64,
    },
    /// A submission queue has no free slot.
    #[error("submission queue {qid} is full")]
    QueueFull {
        /// Queue identifier.
        qid: u16,
    },
    /// The controller does not offer what was asked.
    #[error("{0}")]
    Unsupported(String),
}
