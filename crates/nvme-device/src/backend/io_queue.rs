//! Asynchronous backend I/O: the seam between a controller's I/O workers and a backend whose
//! operations take long enough that running them inside a worker's pass would stall its queues.
//!
//! A backend that wants its Reads, Writes and Flushes run asynchronously offers an [`IoQueue`]
//! per (I/O worker, namespace) through [`Backend::io_queue`](super::Backend::io_queue). The
//! worker hands each such command over with [`IoQueue::submit`] and goes on serving its queues;
//! finished operations come back, in any order, from [`IoQueue::reap`], and only then does the
//! worker post the command's completion (and log its LBA change). A backend without an
//! `IoQueue` (RAM, null) is run synchronously in the pass, as before.
//!
//! The queue moves the data between guest memory and the backend itself (through the
//! [`DmaMemory`] it was opened with, so bounds checks and dirty logging stay where they are);
//! the worker only resolves the command's PRPs into [`Segments`] and checks the LBA range.
//!
//! One queue is used by one worker thread only: nothing in this interface needs a lock, and
//! nothing in it may allocate per request (buffers are taken from a pool sized by the queue's
//! depth when it is opened).

use std::os::fd::BorrowedFd;

use super::BackendError;
use crate::prp::Segments;

/// What one asynchronous request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// Backend → guest memory.
    Read,
    /// Guest memory → backend; with `fua`, durable before it completes (Force Unit Access).
    Write {
        /// Force Unit Access: the data is on stable storage when the request completes.
        fua: bool,
    },
    /// Every completed write durable (Flush); `offset`, `len` and `segments` are unused.
    Flush,
}

/// One request handed to an [`IoQueue`].
#[derive(Clone, Debug)]
pub struct IoRequest {
    /// The worker's identifier for the request, returned by [`IoQueue::reap`].
    pub tag: u64,
    /// Read, Write or Flush.
    pub kind: IoKind,
    /// Byte offset in the backend, checked against its size and aligned to the namespace's
    /// block size by the caller.
    pub offset: u64,
    /// Bytes to move; the sum of `segments` lengths.
    pub len: u64,
    /// The guest-memory pieces of the data buffer, in transfer order.
    pub segments: Segments,
    /// More requests follow at once (the worker fetched them in the same pass): a hint that
    /// the queue may carry this one out in the background rather than in the submit call, so
    /// that several run side by side.
    pub batched: bool,
}

/// A request the queue cannot take now: it has `depth` requests in flight already. The caller
/// keeps the command and offers it again after a [`reap`](IoQueue::reap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// One I/O worker's asynchronous submission context for one backend.
pub trait IoQueue: Send + std::fmt::Debug {
    /// Starts `request` without waiting for the backend; the queue copies what it keeps of it
    /// (the segments of a Read, to fill at completion) into its own slot. Data of a Write is taken from guest
    /// memory before this returns or by the time the request completes (the guest must not
    /// change a buffer it submitted, as with real DMA). Guest-memory errors on a Write found
    /// here are reported through `reap` like any other result, never by blocking or panicking.
    fn submit(&mut self, request: &IoRequest) -> Result<(), QueueFull>;
    /// Appends `(tag, result)` of every request that finished since the last call to `done`,
    /// without blocking. A Read's data is in guest memory when it is reaped.
    fn reap(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>);
    /// Requests submitted and not reaped yet.
    fn in_flight(&self) -> usize;
    /// A descriptor that becomes readable when a request has finished (an eventfd), so a worker
    /// with requests in flight and nothing else to do can sleep until one is ready. Reading it
    /// is the queue's business (`reap` drains it).
    fn notifier(&self) -> BorrowedFd<'_>;
}
