//! The thread-pool engine of the file backend, for kernels or sandboxes without io_uring (or
//! when asked for with `aio=threads`): a few threads per queue run `preadv2`, `pwritev2`
//! (`RWF_DSYNC` for FUA) and `fdatasync` on the vectors of the queue's [`Slots`] (guest memory
//! in place, or a bounce buffer), one operation per job, and hand each result back through a
//! bounded channel, signalling the queue's eventfd; a short transfer goes out again as a new
//! job for the rest.
//!
//! Buffers: a slot's vector is lent to the one job that carries it, and the worker does not
//! touch it again until the job's result has come back ([`Slots::progress`]). Dropping the
//! queue tells the threads to skip jobs not started yet, closes the job channel and joins them
//! before the slots (and the guest memory they pin) are released.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::super::BackendError;
use super::super::IoKind;
use super::super::IoQueue;
use super::super::IoRequest;
use super::super::QueueFull;
use super::slots::Admitted;
use super::slots::Slots;
use super::slots::Step;
use crate::memory::DmaMemory;
use crate::notifier::Notifier;

/// Threads per queue (fewer for a shallower queue): enough to overlap a few slow operations.
const THREADS: usize = 4;

/// One operation on a slot's remaining transfer, lent to one pool thread.
struct Job {
    slot: usize,
    kind: IoKind,
    /// File offset of the first byte left.
    offset: u64,
    /// The slot's vectors of the bytes left.
    iovecs: *const libc::iovec,
    count: usize,
}

/// What a pool thread sends back: the job's slot and its operation's outcome.
type Outcome = (usize, io::Result<usize>);

// SAFETY: `iovecs` and the memory they point at belong to the queue's slot (its bounce buffer,
// or guest memory it pins), which outlives the threads (Drop joins them first), and the slot is
// used by this job alone until its result is sent back.
unsafe impl Send for Job {}

/// What the threads share.
#[derive(Debug)]
struct Shared {
    file: File,
    notifier: Notifier,
    /// Set when the queue is dropped: jobs not started yet are skipped.
    closing: AtomicBool,
}

/// A thread-pool submission context (see the module documentation).
pub(super) struct ThreadQueue {
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<Outcome>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    slots: Slots,
    mem: Arc<dyn DmaMemory>,
}

impl std::fmt::Debug for ThreadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadQueue")
            .field("depth", &self.slots.depth())
            .field("in_flight", &self.slots.in_flight())
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl ThreadQueue {
    /// A queue of `depth` slots for `file` (opened with `O_DIRECT` if `direct`), moving data
    /// through `mem`.
    pub(super) fn new(
        file: &File,
        mem: Arc<dyn DmaMemory>,
        depth: usize,
        direct: bool,
    ) -> io::Result<Self> {
        let slots = Slots::new(depth, direct)?;
        let depth = slots.depth();
        let shared = Arc::new(Shared {
            file: file.try_clone()?,
            notifier: Notifier::new("the file backend's completion eventfd")?,
            closing: AtomicBool::new(false),
        });
        // Both channels hold `depth` messages, as many as there can be requests in flight, so
        // neither side ever waits to send.
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(depth);
        let (result_tx, results) = mpsc::sync_channel(depth);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut queue = Self {
            jobs: Some(jobs),
            results,
            threads: Vec::new(),
            shared,
            slots,
            mem,
        };
        for i in 0..THREADS.min(depth) {
            let (job_rx, result_tx, shared) =
                (job_rx.clone(), result_tx.clone(), queue.shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("file-aio-{i}"))
                .spawn(move || serve(&job_rx, &result_tx, &shared))
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot start a file I/O thread: {e}"))
                })?;
            queue.threads.push(thread);
        }
        Ok(queue)
    }
}

/// One pool thread: runs jobs until the queue closes the channel.
fn serve(jobs: &Mutex<mpsc::Receiver<Job>>, results: &mpsc::SyncSender<Outcome>, shared: &Shared) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let outcome = if shared.closing.load(Ordering::Relaxed) {
            Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the queue was closed before the request started",
            ))
        } else {
            run(&shared.file, &job)
        };
        if results.send((job.slot, outcome)).is_err() {
            return;
        }
        shared.notifier.signal();
    }
}

/// Carries out one operation of `job`: the bytes it moved.
fn run(file: &File, job: &Job) -> io::Result<usize> {
    // SAFETY: the job's vectors, and the memory they point at, are lent to this thread alone
    // until the result is sent (see `Job`).
    unsafe { super::vectored::transfer(file, job.kind, job.offset, job.iovecs, job.count) }
}

impl ThreadQueue {
    /// Lends the rest of `slot`'s transfer to a pool thread.
    fn dispatch(&mut self, slot: usize) {
        let (iovecs, count) = self.slots.remaining(slot);
        let request = self.slots.request(slot);
        let job = Job {
            slot,
            kind: request.kind,
            offset: request.offset + request.done as u64,
            iovecs,
            count,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.try_send(job));
        if !matches!(sent, Some(Ok(()))) {
            let gone = io::Error::other("the file backend's I/O threads have stopped");
            // SAFETY: the job was not sent, so no thread has the slot.
            unsafe { self.slots.finish(slot, self.mem.as_ref(), Err(gone)) };
            self.shared.notifier.signal();
        }
    }
}

impl IoQueue for ThreadQueue {
    fn submit(&mut self, request: &IoRequest) -> Result<(), QueueFull> {
        match self.slots.admit(request, self.mem.as_ref())? {
            Admitted::Go(slot) => self.dispatch(slot),
            Admitted::Finished => self.shared.notifier.signal(),
        }
        Ok(())
    }

    fn reap(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>) {
        self.shared.notifier.drain();
        while let Ok((slot, outcome)) = self.results.try_recv() {
            // SAFETY: the thread that ran the slot's job sent its result: it is done with it.
            if unsafe { self.slots.progress(slot, self.mem.as_ref(), outcome) } == Step::Continue {
                self.dispatch(slot);
            }
        }
        self.slots.drain_ready(done);
    }

    fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    fn notifier(&self) -> BorrowedFd<'_> {
        self.shared.notifier.as_fd()
    }
}

impl Drop for ThreadQueue {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        // Closing the channel ends each thread once it has finished (or skipped) what it holds;
        // only then may the slots be unmapped.
        self.jobs = None;
        let mut joined = true;
        for thread in self.threads.drain(..) {
            joined &= thread.join().is_ok();
        }
        if joined {
            self.slots.abandon(self.mem.as_ref());
        } else {
            // A thread that panicked may have left a slot mid-transfer: keep the memory.
            self.slots.leak();
        }
    }
}
