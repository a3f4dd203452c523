//! The io_uring engine of the file backend: one ring per queue, an eventfd registered with it as
//! the queue's notifier, and the [`Slots`]' vectors (guest memory in place, or a bounce buffer)
//! as the buffers of its `readv`s and `writev`s.
//!
//! Every submit enters the kernel once (`io_uring_enter`), so a request is under way when
//! `submit` returns and a worker that then sleeps on the notifier is woken by its completion.
//! Reap drains the eventfd first and the completion ring after, so a completion posted in
//! between signals the eventfd again and is never missed. Short transfers are continued from
//! where they stopped, `-EAGAIN`/`-EINTR` are retried, and end of file is an error (the file
//! was truncated under the namespace).
//!
//! Buffered writes are carried out by the worker itself (`pwritev2` on the same vectors) while
//! they do not block it ([`super::inline`]): ext4 cannot say in advance that a buffered write
//! would not block, so io_uring would hand every one of them to a kernel worker thread.
//!
//! Buffers: a slot is given to the kernel by one submission queue entry at a time and not
//! touched again until that entry's completion is reaped ([`Slots::progress`]). Dropping the
//! queue waits for every entry the kernel still holds before the slots (and the guest memory
//! they pin) are released; if the kernel cannot be asked, they are leaked rather than freed.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::IoUring;
use io_uring::opcode;
use io_uring::types;

use super::super::BackendError;
use super::super::IoKind;
use super::super::IoQueue;
use super::super::IoRequest;
use super::super::QueueFull;
use super::inline::InlineWrites;
use super::slots::Admitted;
use super::slots::Slots;
use super::slots::Step;
use crate::memory::DmaMemory;
use crate::notifier::Notifier;

/// Passes over the completion ring per reap (see [`UringQueue::reap`]).
const REAP_PASSES: usize = 4;

/// Makes the ring of a queue of `depth`; failing here (no io_uring in this kernel, seccomp,
/// `kernel.io_uring_disabled`) is what makes the backend fall back to the thread engine.
pub(super) fn ring(depth: usize) -> io::Result<IoUring> {
    let entries = depth.clamp(1, super::slots::MAX_DEPTH).next_power_of_two();
    IoUring::builder().build(entries as u32)
}

/// An io_uring submission context (see the module documentation).
pub(super) struct UringQueue {
    ring: IoUring,
    /// The backend's file, duplicated so the queue keeps it open while entries are in flight.
    file: File,
    notifier: Notifier,
    slots: Slots,
    mem: Arc<dyn DmaMemory>,
    /// Entries handed to the kernel (pushed to the ring) whose completion is not reaped yet.
    in_kernel: usize,
    /// Completions taken from the ring, then handled (a scratch list, never reallocated).
    completions: Vec<(u64, i32)>,
    /// Whether buffered writes are done inline now.
    inline: InlineWrites,
}

impl std::fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringQueue")
            .field("depth", &self.slots.depth())
            .field("in_flight", &self.slots.in_flight())
            .field("in_kernel", &self.in_kernel)
            .finish_non_exhaustive()
    }
}

impl UringQueue {
    /// A queue of `depth` slots on `ring` for `file` (opened with `O_DIRECT` if `direct`),
    /// moving data through `mem`; with `inline_writes` (and not `direct`) buffered writes are
    /// done inline while they do not block.
    pub(super) fn new(
        ring: IoUring,
        file: &File,
        mem: Arc<dyn DmaMemory>,
        depth: usize,
        direct: bool,
        inline_writes: bool,
    ) -> io::Result<Self> {
        let notifier = Notifier::new("the file backend's completion eventfd")?;
        ring.submitter()
            .register_eventfd(notifier.as_fd().as_raw_fd())?;
        let slots = Slots::new(depth, direct)?;
        let completions = Vec::with_capacity(ring.params().cq_entries() as usize);
        Ok(Self {
            ring,
            file: file.try_clone()?,
            notifier,
            slots,
            mem,
            in_kernel: 0,
            completions,
            inline: InlineWrites::new(inline_writes && !direct),
        })
    }

    /// Pushes the (rest of the) operation of `slot` to the submission ring, unless it is a
    /// buffered write that finishes inline (`batched`: more requests follow it at once).
    fn push(&mut self, slot: usize, batched: bool) {
        if self.write_inline(slot, batched) {
            return;
        }
        let fd = types::Fd(self.file.as_raw_fd());
        let (iovecs, count) = self.slots.remaining(slot);
        let request = self.slots.request(slot);
        let at = request.offset + request.done as u64;
        // A slot has at most `MAX_SEGMENTS` vectors, so `count` fits.
        let count = count as u32;
        let entry = match request.kind {
            IoKind::Read => opcode::Readv::new(fd, iovecs, count).offset(at).build(),
            IoKind::Write { fua } => opcode::Writev::new(fd, iovecs, count)
                .offset(at)
                .rw_flags(if fua { libc::RWF_DSYNC } else { 0 })
                .build(),
            IoKind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(slot as u64);
        // SAFETY: the entry's vector and the memory it points at are the slot's (its bounce
        // buffer, or guest memory it pins), which stay mapped and untouched until the entry's
        // completion is reaped (Slots' protocol; Drop waits for every entry the kernel holds);
        // the file descriptor is owned by this queue and outlives the entry likewise.
        // The ring has at least `depth` entries and a slot has one entry at a time, so it has
        // room.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_ok() {
            self.in_kernel += 1;
        } else {
            let full = io::Error::other("the io_uring submission ring is unexpectedly full");
            // SAFETY: the entry was not pushed, so the kernel never saw the buffer.
            unsafe { self.slots.finish(slot, self.mem.as_ref(), Err(full)) };
            self.notifier.signal();
        }
    }

    /// Writes the rest of `slot`'s buffered, non-FUA Write with `pwritev2` now, if the policy
    /// admits it; true when the request has finished (its completion is then ready to reap).
    /// A write that stops short goes on through the ring.
    fn write_inline(&mut self, slot: usize, batched: bool) -> bool {
        let request = self.slots.request(slot);
        let (kind, at) = (request.kind, request.offset + request.done as u64);
        if kind != (IoKind::Write { fua: false }) {
            return false;
        }
        let Some(start) = self.inline.start(request.len - request.done, batched) else {
            return false;
        };
        let (iovecs, count) = self.slots.remaining(slot);
        // SAFETY: no ring entry for the slot is out (it is being pushed), so its vectors and
        // the memory they point at are this queue's alone during the call.
        let outcome = unsafe { super::vectored::transfer(&self.file, kind, at, iovecs, count) };
        self.inline.record(start, Instant::now());
        // SAFETY: the operation has returned; nothing else holds the slot.
        let step = unsafe { self.slots.progress(slot, self.mem.as_ref(), outcome) };
        if step == Step::Finished {
            // As for any finished request: a worker (or a drain) waiting on the notifier reaps it.
            self.notifier.signal();
        }
        step == Step::Finished
    }

    /// Hands what was pushed to the kernel. A refusal that may pass (`EAGAIN`, `EBUSY`) leaves
    /// the entries in the ring for the next reap and signals the notifier so there is one.
    fn enter(&mut self) {
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.notifier.signal();
                    return;
                }
            }
        }
    }

    /// Handles the completion `res` of `slot`'s operation: done, continued, or failed.
    fn complete(&mut self, slot: usize, res: i32) {
        self.in_kernel -= 1;
        let outcome = usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res));
        // SAFETY: this was the slot's only entry and its completion has just been reaped.
        if unsafe { self.slots.progress(slot, self.mem.as_ref(), outcome) } == Step::Continue {
            self.push(slot, false);
        }
    }
}

impl IoQueue for UringQueue {
    fn submit(&mut self, request: &IoRequest) -> Result<(), QueueFull> {
        match self.slots.admit(request, self.mem.as_ref())? {
            Admitted::Go(slot) => {
                self.push(slot, request.batched);
                // Nothing to enter for a write that finished inline.
                if !self.ring.submission().is_empty() {
                    self.enter();
                }
            }
            Admitted::Finished => self.notifier.signal(),
        }
        Ok(())
    }

    fn reap(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>) {
        self.notifier.drain();
        if !self.ring.submission().is_empty() {
            self.enter();
        }
        // Continued transfers can complete within the enter that sends them; a few passes take
        // those too, and a file that keeps answering EAGAIN is left for the next reap.
        for _ in 0..REAP_PASSES {
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            let empty = completions.is_empty();
            for &(slot, res) in &completions {
                self.complete(slot as usize, res);
            }
            completions.clear();
            self.completions = completions;
            if empty {
                break;
            }
            if !self.ring.submission().is_empty() {
                self.enter();
            }
        }
        if !self.ring.completion().is_empty() {
            self.notifier.signal();
        }
        self.slots.drain_ready(done);
    }

    fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    fn notifier(&self) -> BorrowedFd<'_> {
        self.notifier.as_fd()
    }
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        // The kernel may still read or write the slots of entries in flight (regular file I/O
        // cannot be cancelled once started): wait for each before the slots are unmapped.
        while self.in_kernel > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.slots.leak();
                    return;
                }
            }
            let reaped = self.ring.completion().count();
            self.in_kernel = self.in_kernel.saturating_sub(reaped);
        }
        self.slots.abandon(self.mem.as_ref());
    }
}
