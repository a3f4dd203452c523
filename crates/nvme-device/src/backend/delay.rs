//! [`DelayBackend`]: a backend that wraps another and runs its Reads, Writes and Flushes through
//! an asynchronous [`IoQueue`] whose requests a test can hold back, so tests can show — by
//! counting completions, never by timing — what a slow backend command does and does not stop.
//!
//! Every request of the wrapped backend's data path is run when it is submitted, unless it
//! overlaps the byte range the backend's [`DelayGate`] holds: then it waits, untouched (its data is
//! not yet moved), until [`DelayGate::release`], which runs it on the releasing thread. Either way
//! the result is reaped later, after the queue's notifier (a pipe) became readable, as with a
//! real asynchronous backend. Everything else (Write Zeroes, deallocation, host-buffer copies)
//! goes straight to the wrapped backend.

use std::io;
use std::io::PipeReader;
use std::io::PipeWriter;
use std::io::Read;
use std::io::Write;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use super::Backend;
use super::BackendError;
use super::IoKind;
use super::IoQueue;
use super::IoRequest;
use super::QueueFull;
use crate::memory::DmaMemory;

/// A backend whose data path is asynchronous and can be held (see the module docs).
#[derive(Debug)]
pub struct DelayBackend {
    inner: Arc<dyn Backend>,
    gate: Arc<DelayGate>,
    depth: Option<u32>,
}

impl DelayBackend {
    /// Wraps `inner`; nothing is held until the gate says so.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            gate: Arc::new(DelayGate::default()),
            depth: None,
        }
    }

    /// Makes every queue take at most `depth` requests at once (what the worker asks for
    /// otherwise), so a test can fill it and see [`QueueFull`] handled.
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = Some(depth.max(1));
        self
    }

    /// The gate that holds this backend's requests.
    pub fn gate(&self) -> Arc<DelayGate> {
        self.gate.clone()
    }
}

/// Holds back the requests that overlap a byte range until released. A request held forever
/// is a backend that never finishes: resets, Suspend and dropping the controller wait for it,
/// so a test releases what it held.
#[derive(Debug, Default)]
pub struct DelayGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    range: Option<Range<u64>>,
    held: Vec<Held>,
}

/// A request the gate holds, with what it needs to run later.
struct Held {
    request: IoRequest,
    backend: Arc<dyn Backend>,
    mem: Arc<dyn DmaMemory>,
    to: Arc<Completions>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("request", &self.request)
            .finish()
    }
}

impl DelayGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds every request submitted from now on whose bytes overlap `bytes` (a Flush has
    /// none), until [`release`](DelayGate::release).
    pub fn hold(&self, bytes: Range<u64>) {
        self.lock().range = Some(bytes);
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Stops holding and runs every held request (on this thread), in submission order.
    pub fn release(&self) {
        let held = {
            let mut state = self.lock();
            state.range = None;
            std::mem::take(&mut state.held)
        };
        for h in held {
            let result = run(h.backend.as_ref(), h.mem.as_ref(), &h.request);
            h.to.push(h.request.tag, result);
        }
    }

    /// Keeps `held` if its request overlaps the held range; gives it back otherwise.
    fn try_hold(&self, held: Held) -> Option<Held> {
        let mut state = self.lock();
        let r = &held.request;
        let overlaps = state.range.as_ref().is_some_and(|range| {
            r.len > 0 && r.offset < range.end && range.start < r.offset + r.len
        });
        if !overlaps {
            return Some(held);
        }
        state.held.push(held);
        None
    }
}

/// Runs `request` against `backend`, moving data through `mem`.
fn run(
    backend: &dyn Backend,
    mem: &dyn DmaMemory,
    request: &IoRequest,
) -> Result<(), BackendError> {
    let mut offset = request.offset;
    match request.kind {
        IoKind::Flush => return Ok(backend.flush()?),
        IoKind::Read => {
            for seg in request.segments.as_slice() {
                backend.read_to_guest(offset, mem, seg.gpa, seg.len)?;
                offset += seg.len;
            }
        }
        IoKind::Write { fua } => {
            for seg in request.segments.as_slice() {
                backend.write_from_guest(offset, mem, seg.gpa, seg.len)?;
                offset += seg.len;
            }
            if fua {
                backend.flush()?;
            }
        }
    }
    Ok(())
}

/// Finished requests of one queue, and the pipe that tells its worker about them.
#[derive(Debug)]
struct Completions {
    ready: Mutex<Vec<(u64, Result<(), BackendError>)>>,
    signal: Mutex<PipeWriter>,
}

impl Completions {
    /// Adds a result; the first one since the last reap makes the notifier readable (one byte,
    /// so the pipe never fills).
    fn push(&self, tag: u64, result: Result<(), BackendError>) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let first = ready.is_empty();
        ready.push((tag, result));
        if first {
            let mut signal = self.signal.lock().unwrap_or_else(|p| p.into_inner());
            let _ = signal.write_all(&[1]);
        }
    }
}

/// One worker's queue on a [`DelayBackend`].
struct DelayQueue {
    backend: Arc<dyn Backend>,
    mem: Arc<dyn DmaMemory>,
    gate: Arc<DelayGate>,
    completions: Arc<Completions>,
    notifier: PipeReader,
    depth: usize,
    in_flight: usize,
}

impl std::fmt::Debug for DelayQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayQueue")
            .field("backend", &self.backend)
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl IoQueue for DelayQueue {
    fn submit(&mut self, request: &IoRequest) -> Result<(), QueueFull> {
        if self.in_flight >= self.depth {
            return Err(QueueFull);
        }
        self.in_flight += 1;
        let held = Held {
            request: request.clone(),
            backend: self.backend.clone(),
            mem: self.mem.clone(),
            to: self.completions.clone(),
        };
        if let Some(h) = self.gate.try_hold(held) {
            let result = run(h.backend.as_ref(), h.mem.as_ref(), &h.request);
            self.completions.push(h.request.tag, result);
        }
        Ok(())
    }

    fn reap(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>) {
        let mut ready = self
            .completions
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ready.is_empty() {
            return;
        }
        // The byte the first result wrote is there: reading it cannot block.
        let _ = self.notifier.read_exact(&mut [0]);
        self.in_flight -= ready.len();
        done.append(&mut ready);
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn notifier(&self) -> BorrowedFd<'_> {
        self.notifier.as_fd()
    }
}

impl Backend for DelayBackend {
    fn kind(&self) -> &'static str {
        "delay"
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_to_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        self.inner.read_to_guest(offset, mem, gpa, len)
    }

    fn write_from_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        self.inner.write_from_guest(offset, mem, gpa, len)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, buf)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.write_zeroes(offset, len)
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.deallocate(offset, len)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        self.inner.allocated()
    }

    fn io_queue(
        &self,
        mem: Arc<dyn DmaMemory>,
        depth: u32,
    ) -> io::Result<Option<Box<dyn IoQueue>>> {
        let (notifier, signal) = std::io::pipe()?;
        Ok(Some(Box::new(DelayQueue {
            backend: self.inner.clone(),
            mem,
            gate: self.gate.clone(),
            completions: Arc::new(Completions {
                ready: Mutex::new(Vec::new()),
                signal: Mutex::new(signal),
            }),
            notifier,
            depth: self.depth.unwrap_or(depth).min(depth).max(1) as usize,
            in_flight: 0,
        })))
    }
}
