//! The bounce slots of one asynchronous file queue, and the bookkeeping both engines share.
//!
//! A queue of depth `n` owns `n` slots of [`SLOT_BYTES`], 4096-aligned (enough for `O_DIRECT` on
//! any common device), in one anonymous mapping made when the queue is opened: nothing is
//! allocated per request, and pages are faulted in only when first used (free slots are reused
//! last-in first-out, so a queue that never has more than a few requests in flight touches only
//! a few slots). Each slot also holds the request it carries (tag, kind, offset, how much of the
//! transfer is done, and for a Read the guest segments to fill when it completes).
//!
//! The life of a slot: [`Slots::admit`] takes a free one, copies a Write's data from guest
//! memory into it and hands it to the engine, which gives the buffer to the kernel or a pool
//! thread; when the engine has it back it calls [`Slots::finish`] (which copies a Read's data to
//! guest memory); [`Slots::drain_ready`] reports it and frees it. The buffer of a slot handed to
//! the engine is not touched here until `finish`, whose contract says the engine no longer uses
//! it; that is what makes the raw-pointer I/O of the engines sound.

use std::io;
use std::ptr::NonNull;

use super::super::BackendError;
use super::super::IoKind;
use super::super::IoRequest;
use super::super::QueueFull;
use crate::memory::DmaMemory;
use crate::prp::Segments;

/// Largest transfer a slot carries: the controller's maximum data transfer size (MDTS, 256 KiB
/// at 4 KiB pages; see [`crate::prp::MAX_SEGMENTS`]).
pub(super) const SLOT_BYTES: usize = 256 * 1024;

/// Most requests one queue takes at once (ring entries and slots; 64 MiB of address space).
pub(super) const MAX_DEPTH: usize = 256;

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
    /// Guest segments a Read fills when it completes.
    segments: Segments,
    /// Set when the request has finished, until it is reaped.
    result: Option<Result<(), BackendError>>,
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

/// The slots of one queue (see the module documentation).
#[derive(Debug)]
pub(super) struct Slots {
    memory: SlotMemory,
    requests: Vec<Request>,
    /// Free slot indexes, used as a stack.
    free: Vec<usize>,
    /// Finished slots not reaped yet, in finishing order.
    ready: Vec<usize>,
}

impl Slots {
    /// `depth` slots (1 to [`MAX_DEPTH`]), mapped but not yet faulted in.
    pub(super) fn new(depth: usize) -> io::Result<Self> {
        let depth = depth.clamp(1, MAX_DEPTH);
        let memory = SlotMemory::new(depth * SLOT_BYTES)?;
        let requests = (0..depth)
            .map(|_| Request {
                tag: 0,
                kind: IoKind::Flush,
                offset: 0,
                len: 0,
                done: 0,
                segments: Segments::default(),
                result: None,
            })
            .collect();
        Ok(Self {
            memory,
            requests,
            free: (0..depth).rev().collect(),
            ready: Vec::with_capacity(depth),
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

    /// Takes a slot for `request`; a Write's data is copied from guest memory into it now.
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
        if request.kind == IoKind::Flush {
            return Ok(Admitted::Go(slot));
        }
        let len = request.segments.len();
        if len != request.len || len > SLOT_BYTES as u64 {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a transfer of {} bytes (segments of {len}) does not fit the file \
                     backend's {SLOT_BYTES}-byte bounce buffer",
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
        if let IoKind::Write { .. } = request.kind {
            // SAFETY: the slot was free, so neither the kernel nor a pool thread uses its buffer.
            let buf = unsafe { self.memory.slot_mut(slot, len as usize) };
            if let Err(e) = gather(mem, &request.segments, buf) {
                self.complete(slot, Err(e.into()));
                return Ok(Admitted::Finished);
            }
        } else {
            entry.segments.clone_from(&request.segments);
        }
        Ok(Admitted::Go(slot))
    }

    /// The request in `slot`.
    pub(super) fn request(&self, slot: usize) -> &Request {
        &self.requests[slot]
    }

    /// Records `n` more bytes moved for `slot`; true when the transfer is complete.
    pub(super) fn advance(&mut self, slot: usize, n: usize) -> bool {
        let entry = &mut self.requests[slot];
        entry.done = (entry.done + n).min(entry.len);
        entry.done == entry.len
    }

    /// Where the backend's I/O for `slot` continues: the buffer at the bytes done so far, and
    /// how many bytes are left. The engine may hand this memory to the kernel or a pool thread
    /// until it calls [`finish`](Self::finish) for the slot.
    pub(super) fn remaining(&self, slot: usize) -> (NonNull<u8>, usize) {
        let entry = &self.requests[slot];
        let base = self.memory.slot_ptr(slot);
        // SAFETY: `done <= len <= SLOT_BYTES`, so the pointer stays within the slot.
        let at = unsafe { base.add(entry.done) };
        (at, entry.len - entry.done)
    }

    /// Ends the backend's part of `slot`'s request with `outcome`; a successful Read's data is
    /// copied into guest memory now.
    ///
    /// # Safety
    ///
    /// The engine no longer uses the slot's buffer: its last operation's completion was reaped
    /// from the kernel, or the pool thread that ran it has handed it back.
    pub(super) unsafe fn finish(
        &mut self,
        slot: usize,
        mem: &dyn DmaMemory,
        outcome: io::Result<()>,
    ) {
        let result = match outcome {
            Ok(()) if self.requests[slot].kind == IoKind::Read => {
                let len = self.requests[slot].len;
                // SAFETY: the caller guarantees the backend is done with the buffer.
                let buf = unsafe { self.memory.slot_mut(slot, len) };
                scatter(mem, &self.requests[slot].segments, buf).map_err(BackendError::from)
            }
            Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        };
        self.complete(slot, result);
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

    /// Gives up the slot memory without unmapping it, for a queue that could not make sure
    /// the kernel is done with its buffers (better a leak than memory reused under a DMA).
    pub(super) fn leak(&mut self) {
        self.memory.leaked = true;
    }
}

/// Copies the guest segments into `buf` (a Write's data).
fn gather(mem: &dyn DmaMemory, segments: &Segments, buf: &mut [u8]) -> Result<(), shmem::DmaError> {
    let mut at = 0;
    for segment in segments.as_slice() {
        let len = segment.len as usize;
        mem.read(segment.gpa, &mut buf[at..at + len])?;
        at += len;
    }
    Ok(())
}

/// Copies `buf` into the guest segments (a Read's data).
fn scatter(mem: &dyn DmaMemory, segments: &Segments, buf: &[u8]) -> Result<(), shmem::DmaError> {
    let mut at = 0;
    for segment in segments.as_slice() {
        let len = segment.len as usize;
        mem.write(segment.gpa, &buf[at..at + len])?;
        at += len;
    }
    Ok(())
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
