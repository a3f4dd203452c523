//! The slots of one asynchronous file queue: where each request's data is, and the bookkeeping
//! both engines share.
//!
//! A request's data moves between the file and guest memory in one of two ways:
//!
//! * **in place** (the common case): the guest's buffers are pinned
//!   ([`DmaMemory::pin`]) and the kernel reads into or writes from them directly, so the data
//!   is copied once, by the kernel, as QEMU does with its `aio` engines. The pin keeps the
//!   client's memory mapped until the request finishes: a `DMA_UNMAP` waits for it.
//! * **through a bounce buffer**, when the guest memory cannot be given to the kernel: a window
//!   reached by I/O calls (a client file that could shrink, DMA messages), more pieces than a
//!   slot's vector holds, or under `O_DIRECT` a piece not aligned to [`DIRECT_ALIGN`].
//!
//! A queue of depth `n` owns `n` slots. Each has a vector of up to [`MAX_SEGMENTS`] `iovec`s
//! that the engines hand to `preadv`/`pwritev2` or io_uring, and a bounce buffer of
//! [`SLOT_BYTES`], 4096-aligned, in one anonymous mapping made when the queue is opened (pages
//! are faulted in only when a bounce first uses them; free slots are reused last-in first-out).
//! Nothing is allocated per request.
//!
//! The life of a slot: [`Slots::admit`] takes a free one, pins the guest buffers or (for a
//! bounced Write) copies the data in, and hands it to the engine, which gives the vector to the
//! kernel or a pool thread one operation at a time; each operation's outcome goes to
//! [`Slots::progress`], which continues a short transfer or ends the request (copying a bounced
//! Read's data out, reporting a pinned Read's data to dirty logging, releasing the pin) before
//! [`Slots::drain_ready`] reports it and frees the slot. Neither the vector nor the memory it
//! points at is touched here while an operation is out, which is what makes the raw-pointer I/O
//! of the engines sound.

use std::io;
use std::ptr::NonNull;

use super::super::BackendError;
use super::super::IoKind;
use super::super::IoRequest;
use super::super::QueueFull;
use crate::memory::DmaMemory;
use crate::memory::Pinned;
use crate::prp::MAX_SEGMENTS;
use crate::prp::Segments;

/// Largest transfer a slot carries: the controller's maximum data transfer size (MDTS, 256 KiB
/// at 4 KiB pages; see [`crate::prp::MAX_SEGMENTS`]).
pub(super) const SLOT_BYTES: usize = 256 * 1024;

/// Most requests one queue takes at once (ring entries and slots; 64 MiB of address space).
pub(super) const MAX_DEPTH: usize = 256;

/// Alignment of address and length that a guest buffer piece needs to be read or written in
/// place under `O_DIRECT` (the bounce buffers' alignment, enough for any common device).
pub(super) const DIRECT_ALIGN: usize = 4096;

/// One request in a slot.
#[derive(Debug)]
pub(super) struct Request {
    tag: u64,
    /// What the request does.
    pub(super) kind: IoKind,
    /// Byte offset in the file.
    pub(super) offset: u64,
    /// Bytes to move.
    pub(super) len: usize,
    /// Bytes moved so far (short reads and writes are continued from here).
    pub(super) done: usize,
    /// The slot's `iovec`s in use, and the first one not wholly moved yet.
    iov_count: usize,
    iov_first: usize,
    /// The guest buffers held for in-place I/O, until the request finishes.
    pinned: Option<Pinned>,
    /// A Read's guest segments: filled from the bounce buffer, or reported to dirty logging,
    /// when it completes.
    segments: Segments,
    /// Set when the request has finished, until it is reaped.
    result: Option<Result<(), BackendError>>,
}

impl Request {
    /// Releases the request's pinned guest memory, if it has any (true then), before its
    /// completion can reach the guest; a Read's buffers are reported to dirty logging first,
    /// whatever its outcome (even a failed or abandoned Read may have written part of them).
    fn unpin(&mut self, mem: &dyn DmaMemory) -> bool {
        let Some(pinned) = self.pinned.take() else {
            return false;
        };
        if self.kind == IoKind::Read {
            for segment in self.segments.as_slice() {
                mem.record_write(segment.gpa, segment.len);
            }
        }
        drop(pinned);
        true
    }
}

/// What [`Slots::admit`] made of a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// The request holds this slot and is ready for the backend.
    Go(usize),
    /// The request finished at once (nothing to move, or a guest-memory error); it is reported
    /// by the next [`Slots::drain_ready`].
    Finished,
}

/// What [`Slots::progress`] made of an operation's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The request is not done: hand [`Slots::remaining`] to the backend again.
    Continue,
    /// The request has finished; [`Slots::drain_ready`] reports it.
    Finished,
}

/// The slots of one queue (see the module documentation).
#[derive(Debug)]
pub(super) struct Slots {
    memory: SlotMemory,
    /// `MAX_SEGMENTS` vectors per slot.
    iovecs: Iovecs,
    requests: Vec<Request>,
    /// Free slot indexes, used as a stack.
    free: Vec<usize>,
    /// Finished slots not reaped yet, in finishing order.
    ready: Vec<usize>,
    /// The file is open with `O_DIRECT`: in-place pieces must be [`DIRECT_ALIGN`]ed.
    direct: bool,
}

impl Slots {
    /// `depth` slots (1 to [`MAX_DEPTH`]), mapped but not yet faulted in, for a file opened
    /// with `O_DIRECT` if `direct`.
    pub(super) fn new(depth: usize, direct: bool) -> io::Result<Self> {
        let depth = depth.clamp(1, MAX_DEPTH);
        let memory = SlotMemory::new(depth * SLOT_BYTES)?;
        let requests = (0..depth)
            .map(|_| Request {
                tag: 0,
                kind: IoKind::Flush,
                offset: 0,
                len: 0,
                done: 0,
                iov_count: 0,
                iov_first: 0,
                pinned: None,
                segments: Segments::default(),
                result: None,
            })
            .collect();
        Ok(Self {
            memory,
            iovecs: Iovecs::new(depth),
            requests,
            free: (0..depth).rev().collect(),
            ready: Vec::with_capacity(depth),
            direct,
        })
    }

    /// Number of slots (the queue's depth).
    pub(super) fn depth(&self) -> usize {
        self.requests.len()
    }

    /// Requests admitted and not drained yet.
    pub(super) fn in_flight(&self) -> usize {
        self.depth() - self.free.len()
    }

    /// Takes a slot for `request`: its guest buffers are pinned for in-place I/O, or else a
    /// Write's data is copied from guest memory into the slot's bounce buffer now.
    pub(super) fn admit(
        &mut self,
        request: &IoRequest,
        mem: &dyn DmaMemory,
    ) -> Result<Admitted, QueueFull> {
        let slot = self.free.pop().ok_or(QueueFull)?;
        let entry = &mut self.requests[slot];
        entry.tag = request.tag;
        entry.kind = request.kind;
        entry.offset = request.offset;
        entry.done = 0;
        entry.result = None;
        entry.len = 0;
        entry.iov_count = 0;
        entry.iov_first = 0;
        if request.kind == IoKind::Flush {
            return Ok(Admitted::Go(slot));
        }
        let len = request.segments.len();
        if len != request.len || len > SLOT_BYTES as u64 {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a transfer of {} bytes (segments of {len}) is more than the file \
                     backend's {SLOT_BYTES}-byte limit",
                    request.len
                ),
            );
            self.complete(slot, Err(error.into()));
            return Ok(Admitted::Finished);
        }
        entry.len = len as usize;
        if len == 0 {
            self.complete(slot, Ok(()));
            return Ok(Admitted::Finished);
        }
        let read = request.kind == IoKind::Read;
        if read {
            entry.segments.clone_from(&request.segments);
        }
        let row = self.iovecs.row_mut(slot);
        let align = if self.direct { DIRECT_ALIGN } else { 1 };
        let mut count = 0;
        entry.pinned = mem.pin(request.segments.as_slice(), read, &mut |host, n| {
            push_piece(row, &mut count, host, n, align)
        });
        if entry.pinned.is_some() {
            entry.iov_count = count;
            return Ok(Admitted::Go(slot));
        }
        let buf = self.memory.slot_ptr(slot);
        row[0] = libc::iovec {
            iov_base: buf.as_ptr().cast(),
            iov_len: entry.len,
        };
        entry.iov_count = 1;
        if !read {
            // SAFETY: the slot was free, so neither the kernel nor a pool thread uses its buffer.
            let buf = unsafe { self.memory.slot_mut(slot, len as usize) };
            if let Err(e) = gather(mem, &request.segments, buf) {
                self.complete(slot, Err(e.into()));
                return Ok(Admitted::Finished);
            }
        }
        Ok(Admitted::Go(slot))
    }

    /// The request in `slot`.
    pub(super) fn request(&self, slot: usize) -> &Request {
        &self.requests[slot]
    }

    /// Where the backend's I/O for `slot` continues: the `iovec`s of the bytes not moved yet
    /// (none for a Flush). The engine may hand them, and the memory they point at, to the
    /// kernel or a pool thread until it passes the outcome to [`progress`](Self::progress).
    pub(super) fn remaining(&mut self, slot: usize) -> (*mut libc::iovec, usize) {
        let entry = &self.requests[slot];
        let row = self.iovecs.row_mut(slot);
        let (first, count) = (entry.iov_first, entry.iov_count);
        (row[first..].as_mut_ptr(), count - first)
    }

    /// Takes the outcome of `slot`'s last operation (bytes moved, or the error): continues a
    /// short transfer or an operation interrupted (`EINTR`, `EAGAIN`), or ends the request. At
    /// its end a successful bounced Read's data is copied into guest memory, a pinned Read's
    /// buffers are reported to dirty logging (even when it failed: it may have written part of
    /// them), and the pin is released.
    ///
    /// # Safety
    ///
    /// The engine no longer uses the slot's vector or the memory it points at: the operation's
    /// completion was reaped from the kernel, or the pool thread that ran it has handed it back.
    pub(super) unsafe fn progress(
        &mut self,
        slot: usize,
        mem: &dyn DmaMemory,
        outcome: io::Result<usize>,
    ) -> Step {
        let kind = self.requests[slot].kind;
        let outcome = match outcome {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {
                return Step::Continue;
            }
            Err(e) => Err(e),
            Ok(_) if kind == IoKind::Flush => Ok(()),
            Ok(0) => Err(super::short_transfer(kind)),
            Ok(n) if self.advance(slot, n) => Ok(()),
            Ok(_) => return Step::Continue,
        };
        // SAFETY: the caller's contract.
        unsafe { self.finish(slot, mem, outcome) };
        Step::Finished
    }

    /// Records `n` more bytes moved for `slot` and moves its vector past them; true when the
    /// transfer is complete.
    fn advance(&mut self, slot: usize, n: usize) -> bool {
        let entry = &mut self.requests[slot];
        entry.done = (entry.done + n).min(entry.len);
        let row = self.iovecs.row_mut(slot);
        let mut left = n;
        while left > 0 && entry.iov_first < entry.iov_count {
            let iov = &mut row[entry.iov_first];
            if left < iov.iov_len {
                // SAFETY: `left < iov_len`, so the base stays inside the piece.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left).cast() };
                iov.iov_len -= left;
                break;
            }
            left -= iov.iov_len;
            entry.iov_first += 1;
        }
        entry.done == entry.len
    }

    /// Ends the backend's part of `slot`'s request with `outcome` (see
    /// [`progress`](Self::progress)).
    ///
    /// # Safety
    ///
    /// As for [`progress`](Self::progress).
    pub(super) unsafe fn finish(
        &mut self,
        slot: usize,
        mem: &dyn DmaMemory,
        outcome: io::Result<()>,
    ) {
        let entry = &mut self.requests[slot];
        let bounced = !entry.unpin(mem);
        let result = match outcome {
            Ok(()) if entry.kind == IoKind::Read && bounced => {
                // SAFETY: the caller guarantees the backend is done with the buffer.
                let buf = unsafe { self.memory.slot_mut(slot, entry.len) };
                scatter(mem, &entry.segments, buf).map_err(BackendError::from)
            }
            Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        };
        self.complete(slot, result);
    }

    /// Releases the guest memory of every request still out, for a queue being dropped once
    /// the kernel and its threads are done with all of them: what a pinned Read wrote is
    /// reported to dirty logging all the same (see [`Request::unpin`]).
    pub(super) fn abandon(&mut self, mem: &dyn DmaMemory) {
        for entry in &mut self.requests {
            entry.unpin(mem);
        }
    }

    fn complete(&mut self, slot: usize, result: Result<(), BackendError>) {
        self.requests[slot].result = Some(result);
        self.ready.push(slot);
    }

    /// Appends `(tag, result)` of every finished request to `done` and frees their slots.
    pub(super) fn drain_ready(&mut self, done: &mut Vec<(u64, Result<(), BackendError>)>) {
        for slot in self.ready.drain(..) {
            let entry = &mut self.requests[slot];
            let result = entry.result.take().unwrap_or(Ok(()));
            done.push((entry.tag, result));
            self.free.push(slot);
        }
    }

    /// Gives up the slot memory without unmapping it, and the guest memory of requests still
    /// out without releasing it, for a queue that could not make sure the kernel is done with
    /// them (better a leak, and an unmap of that guest memory that never completes, than
    /// memory reused under a DMA).
    pub(super) fn leak(&mut self) {
        self.memory.leaked = true;
        for entry in &mut self.requests {
            std::mem::forget(entry.pinned.take());
        }
    }
}

/// Adds the in-place piece `(host, len)` to `row` (merged into the last one when it continues
/// it); false when it does not fit or is not `align`ed.
fn push_piece(
    row: &mut [libc::iovec],
    count: &mut usize,
    host: NonNull<u8>,
    len: usize,
    align: usize,
) -> bool {
    let base = host.as_ptr();
    if !(base as usize).is_multiple_of(align) || !len.is_multiple_of(align) {
        return false;
    }
    if let Some(last) = count.checked_sub(1).map(|i| &mut row[i])
        && last.iov_base.cast::<u8>().wrapping_add(last.iov_len) == base
    {
        last.iov_len += len;
        return true;
    }
    let Some(next) = row.get_mut(*count) else {
        return false;
    };
    *next = libc::iovec {
        iov_base: base.cast(),
        iov_len: len,
    };
    *count += 1;
    true
}

/// Copies the guest segments into `buf` (a bounced Write's data).
fn gather(mem: &dyn DmaMemory, segments: &Segments, buf: &mut [u8]) -> Result<(), shmem::DmaError> {
    let mut at = 0;
    for segment in segments.as_slice() {
        let len = segment.len as usize;
        mem.read(segment.gpa, &mut buf[at..at + len])?;
        at += len;
    }
    Ok(())
}

/// Copies `buf` into the guest segments (a bounced Read's data).
fn scatter(mem: &dyn DmaMemory, segments: &Segments, buf: &[u8]) -> Result<(), shmem::DmaError> {
    let mut at = 0;
    for segment in segments.as_slice() {
        let len = segment.len as usize;
        mem.write(segment.gpa, &buf[at..at + len])?;
        at += len;
    }
    Ok(())
}

/// The `iovec`s of every slot, [`MAX_SEGMENTS`] per slot, allocated once with the queue.
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the vectors are plain data (addresses of guest memory and bounce buffers); which
// thread, or the kernel, may use a slot's vector is governed by `Slots`' protocol.
unsafe impl Send for Iovecs {}

impl std::fmt::Debug for Iovecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iovecs")
            .field("slots", &(self.0.len() / MAX_SEGMENTS))
            .finish()
    }
}

impl Iovecs {
    fn new(depth: usize) -> Self {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self(vec![empty; depth * MAX_SEGMENTS])
    }

    fn row_mut(&mut self, slot: usize) -> &mut [libc::iovec] {
        &mut self.0[slot * MAX_SEGMENTS..(slot + 1) * MAX_SEGMENTS]
    }
}

/// An anonymous, page-aligned mapping holding every slot's buffer.
#[derive(Debug)]
struct SlotMemory {
    base: NonNull<u8>,
    len: usize,
    /// Set by [`Slots::leak`]: not unmapped on drop.
    leaked: bool,
}

// SAFETY: the mapping is plain memory owned by the queue; which thread (or the kernel) may use
// which slot is governed by `Slots`' protocol, not by the thread the owner runs on.
unsafe impl Send for SlotMemory {}

impl SlotMemory {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping chosen by the kernel aliases nothing of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot map {len} bytes of bounce buffers for the file backend: {e}"),
            ));
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self {
            base,
            len,
            leaked: false,
        })
    }

    fn slot_ptr(&self, slot: usize) -> NonNull<u8> {
        assert!(
            (slot + 1) * SLOT_BYTES <= self.len,
            "slot {slot} out of range"
        );
        // SAFETY: checked just above to be within the mapping.
        unsafe { self.base.add(slot * SLOT_BYTES) }
    }

    /// The first `len` bytes of `slot`.
    ///
    /// # Safety
    ///
    /// Neither the kernel nor another thread uses the slot's buffer for as long as the slice
    /// lives.
    unsafe fn slot_mut(&mut self, slot: usize, len: usize) -> &mut [u8] {
        let len = len.min(SLOT_BYTES);
        // SAFETY: the slot lies within the mapping (checked by `slot_ptr`), the memory is
        // initialized (anonymous mappings read as zeros) and exclusively ours by the contract.
        unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(slot).as_ptr(), len) }
    }
}

impl Drop for SlotMemory {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: the mapping is ours, and every user of a slot is done with it (the queues
            // wait for the kernel and join their threads before their slots are dropped).
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}
