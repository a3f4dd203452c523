//! Namespace storage backends.
//!
//! A backend is a flat byte array of fixed size. The namespace layer above it translates LBAs to
//! byte offsets and checks ranges, so a backend only ever sees in-range, block-aligned requests.
//!
//! * [`RamBackend`] — sparse anonymous memory: pages cost RAM only once written, deallocation
//!   returns them, and the allocated ranges are known (the bulk phase of user-data pre-copy).
//! * [`FileBackend`] — a regular file or block device, optionally `O_DIRECT`; guest I/O runs
//!   asynchronously on io_uring (or I/O threads, see [`FileAio`]); holes are reported through
//!   `SEEK_DATA`/`SEEK_HOLE`.
//! * [`NullBackend`] — reads return zeros and writes are dropped: measures protocol overhead.
//! * [`DelayBackend`] — another backend behind an asynchronous queue whose requests a test can
//!   hold ([`DelayGate`]), to show what a slow command does and does not stop.

mod delay;
mod file;
mod io_queue;
mod null;
mod ram;

use std::fmt;
use std::io;
use std::ops::Range;

pub use delay::DelayBackend;
pub use delay::DelayGate;
pub use file::FileAio;
pub use file::FileBackend;
pub use io_queue::IoKind;
pub use io_queue::IoQueue;
pub use io_queue::IoRequest;
pub use io_queue::QueueFull;
pub use null::NullBackend;
pub use ram::RamBackend;

use std::sync::Arc;

use crate::memory::DmaError;
use crate::memory::DmaMemory;

/// A failed backend operation, split by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Guest memory named by the command could not be accessed (→ Data Transfer Error).
    #[error("guest memory access failed: {0}")]
    Dma(#[from] DmaError),
    /// The storage itself failed (→ Write Fault / Unrecovered Read Error).
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// Storage for one namespace.
///
/// Every method takes byte offsets and lengths that the caller has checked against
/// [`size`](Backend::size) and aligned to the namespace's block size.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Short name of the backend kind, for reports (`ram`, `file`, `null`).
    fn kind(&self) -> &'static str;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Copies `len` bytes at `offset` into guest memory at `gpa` (a Read).
    fn read_to_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError>;
    /// Copies `len` bytes of guest memory at `gpa` to `offset` (a Write).
    fn write_from_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError>;
    /// Reads into a host buffer (migration copies, verification).
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes a host buffer (migration copies, pre-filling).
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read as zeros (Write Zeroes).
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Releases `len` bytes at `offset`; they then read as zeros (Dataset Management deallocate).
    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes every completed write durable (Flush).
    fn flush(&self) -> io::Result<()>;
    /// Byte ranges that may hold non-zero data; everything else reads as zeros. Conservative:
    /// a backend that cannot tell reports the whole size.
    fn allocated(&self) -> io::Result<Vec<Range<u64>>>;
    /// Opens an asynchronous submission context for one I/O worker of a controller whose guest
    /// memory is `mem`, taking up to `depth` requests at once (see [`IoQueue`]). `None`: the
    /// backend's operations are quick memory copies and run synchronously in the worker's pass.
    fn io_queue(
        &self,
        mem: Arc<dyn DmaMemory>,
        depth: u32,
    ) -> io::Result<Option<Box<dyn IoQueue>>> {
        let _ = (mem, depth);
        Ok(None)
    }
}
