//! The thread-pool engine of the file backend, for kernels or sandboxes without io_uring (or
//! when asked for with `aio=threads`): a few threads per queue run `pread`, `pwritev2`
//! (`RWF_DSYNC` for FUA) and `fdatasync` on the queue's bounce [`Slots`], and hand each result
//! back through a bounded channel, signalling the queue's eventfd.
//!
//! Buffers: a slot's buffer is lent to the one job that carries it, and the worker does not
//! touch it again until the job's result has come back ([`Slots::finish`]). Dropping the queue
//! tells the threads to skip jobs not started yet, closes the job channel and joins them before
//! the slots are unmapped.

use std::fs::File;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rustix::io::ReadWriteFlags;

use super::super::BackendError;
use super::super::IoKind;
use super::super::IoQueue;
use super::super::IoRequest;
use super::super::QueueFull;
use super::notifier::Notifier;
use super::slots::Admitted;
use super::slots::Slots;
use crate::memory::DmaMemory;

/// Threads per queue (fewer for a shallower queue): enough to overlap a few slow operations.
const THREADS: usize = 4;

/// A slot's remaining transfer, lent to one pool thread.
struct Job {
    slot: usize,
    kind: IoKind,
    offset: u64,
    buf: *mut u8,
    len: usize,
}

// SAFETY: `buf` points into the queue's slot mapping, which outlives the threads (Drop joins
// them first), and the slot is used by this job alone until its result is sent back.
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
    results: mpsc::Receiver<(usize, io::Result<()>)>,
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
    /// A queue of `depth` slots for `file`, moving data through `mem`.
    pub(super) fn new(file: &File, mem: Arc<dyn DmaMemory>, depth: usize) -> io::Result<Self> {
        let slots = Slots::new(depth)?;
        let depth = slots.depth();
        let shared = Arc::new(Shared {
            file: file.try_clone()?,
            notifier: Notifier::new()?,
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
fn serve(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    results: &mpsc::SyncSender<(usize, io::Result<()>)>,
    shared: &Shared,
) {
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

/// Carries out `job` to the end: short transfers are continued, `EINTR`/`EAGAIN` retried.
fn run(file: &File, job: &Job) -> io::Result<()> {
    let fd = file.as_fd();
    let write_flags = match job.kind {
        IoKind::Flush => return retry(|| rustix::fs::fdatasync(fd).map(|()| 1)).map(drop),
        IoKind::Read => None,
        IoKind::Write { fua: true } => Some(ReadWriteFlags::DSYNC),
        IoKind::Write { fua: false } => Some(ReadWriteFlags::empty()),
    };
    // SAFETY: the job's buffer is `len` bytes of its slot, lent to this thread alone until the
    // result is sent (see `Job`); the mapping is initialized memory.
    let buf = unsafe { std::slice::from_raw_parts_mut(job.buf, job.len) };
    let mut done = 0;
    while done < buf.len() {
        let at = job.offset + done as u64;
        let n = match write_flags {
            None => retry(|| rustix::io::pread(fd, &mut buf[done..], at))?,
            Some(flags) => {
                retry(|| rustix::io::pwritev2(fd, &[IoSlice::new(&buf[done..])], at, flags))?
            }
        };
        if n == 0 {
            return Err(super::short_transfer(job.kind));
        }
        done += n;
    }
    Ok(())
}

/// Runs `op` again while it is interrupted or would block.
fn retry(mut op: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

impl IoQueue for ThreadQueue {
    fn submit(&mut self, request: &IoRequest) -> Result<(), QueueFull> {
        match self.slots.admit(request, self.mem.as_ref())? {
            Admitted::Go(slot) => {
                let (buf, len) = self.slots.remaining(slot);
                let job = Job {
                    slot,
                    kind: request.kind,
                    offset: request.offset,
                    buf: buf.as_ptr(),
                    len,
                };
                let sent = self.jobs.as_ref().map(|jobs| jobs.try_send(job));
                if !matches!(sent, Some(Ok(()))) {
                    let gone = io::Error::other("the file backend's I/O threads have stopped");
                    // SAFETY: the job was not sent, so no thread has the buffer.
                    unsafe { self.slots.finish(slot, self.mem.as_ref(), Err(gone)) };
                    self.shared.notifier.signal();
                }
            }
            Admitted::Finished => self.shared.notifier.signal(),
        }
        Ok(())
    }

    fn reap(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>) {
        self.shared.notifier.drain();
        while let Ok((slot, outcome)) = self.results.try_recv() {
            // SAFETY: the thread that ran the slot's job sent its result: it is done with it.
            unsafe { self.slots.finish(slot, self.mem.as_ref(), outcome) };
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
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                // A thread that panicked may have left a slot mid-transfer: keep the memory.
                self.slots.leak();
            }
        }
    }
}
