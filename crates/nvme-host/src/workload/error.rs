//! Workload errors: a configuration the namespace cannot run, a driver failure, or a command
//! that never completed.

use std::time::Duration;

use nvme_driver::driver::DriverError;

use super::config::Op;

/// Why a workload (or a read-back) could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A configuration value the controller or namespace cannot honour.
    #[error("invalid workload configuration: {field} = {value}: {reason}")]
    Config {
        /// The configuration field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it and what would work.
        reason: String,
    },
    /// The driver failed (admin command, queue creation, DMA memory).
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A command got no completion within the per-command timeout.
    #[error(
        "{op} of LBA {lba} on queue {qid} got no completion within {timeout:?}; the device \
         stopped answering (a migration that never resumed?); the host saw: {host_view}"
    )]
    Timeout {
        /// The I/O queue.
        qid: u16,
        /// The command's starting LBA.
        lba: u64,
        /// Read or write.
        op: Op,
        /// The timeout that expired.
        timeout: Duration,
        /// The host's view of the queue pair then ([`QueuePair::describe`]).
        ///
        /// [`QueuePair::describe`]: nvme_driver::driver::QueuePair::describe
        host_view: String,
    },
    /// The controller completed a command identifier that has no command outstanding.
    #[error("queue {qid} completed CID {cid}, which has no command outstanding")]
    UnexpectedCompletion {
        /// The I/O queue.
        qid: u16,
        /// The completion's command identifier.
        cid: u16,
    },
    /// A worker thread panicked.
    #[error("the worker thread of queue {qid} panicked")]
    WorkerPanicked {
        /// The I/O queue the worker drove.
        qid: u16,
    },
}

impl WorkloadError {
    /// A [`WorkloadError::Config`] for `field` with `value`.
    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        Self::Config {
            field,
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
}
