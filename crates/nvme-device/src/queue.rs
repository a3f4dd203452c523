//! Submission and completion queue rings in guest memory.
//!
//! These types hold the device's side of a queue (base address, size, head or tail, phase) and
//! move entries between guest memory and the device. They trust nothing the guest wrote:
//! doorbell values are checked against the queue size before use, and every memory access goes
//! through [`DmaMemory`], which rejects addresses the guest did not map.

use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use zerocopy::IntoBytes;

use crate::memory::DmaError;
use crate::memory::DmaMemory;

/// Size of a submission queue entry in bytes.
pub const SQE_BYTES: u64 = 64;
/// Size of a completion queue entry in bytes.
pub const CQE_BYTES: u64 = 16;

/// A doorbell value at or beyond the queue size: the host wrote garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("doorbell value {value} is outside queue {qid} of {size} entries")]
pub struct InvalidDoorbell {
    /// Queue identifier.
    pub qid: u16,
    /// The value written.
    pub value: u32,
    /// The queue size in entries.
    pub size: u32,
}

/// The guest-physical address of entry `index` of a queue at `base`. The base is
/// guest-controlled: a queue that would run past the end of the address space is unmapped
/// memory, not an arithmetic overflow.
fn entry_address(base: u64, index: u32, entry_bytes: u64) -> Result<u64, DmaError> {
    base.checked_add(u64::from(index) * entry_bytes)
        .ok_or(DmaError::Unmapped {
            gpa: base,
            len: entry_bytes,
        })
}

/// The device's view of one submission queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionQueue {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    /// Identifier of the completion queue this queue posts to.
    pub cqid: u16,
    /// Guest-physical base address (physically contiguous).
    pub base: u64,
    /// Number of entries (2..=65536).
    pub size: u32,
    /// Index of the next entry the device will fetch.
    pub head: u32,
    /// Queue priority (QPRIO) from Create I/O SQ, kept for state save/restore.
    pub priority: u8,
}

impl SubmissionQueue {
    /// Number of entries between the device's head and the host's `tail`, after checking that
    /// `tail` is a valid index.
    pub fn pending(&self, tail: u32) -> Result<u32, InvalidDoorbell> {
        if tail >= self.size {
            return Err(InvalidDoorbell {
                qid: self.qid,
                value: tail,
                size: self.size,
            });
        }
        Ok((tail + self.size - self.head) % self.size)
    }

    /// Reads the entry at the head and advances the head. The caller has checked
    /// [`pending`](Self::pending) first.
    pub fn fetch(&mut self, mem: &dyn DmaMemory) -> Result<Command, DmaError> {
        let mut cmd = Command::default();
        mem.read(
            entry_address(self.base, self.head, SQE_BYTES)?,
            cmd.as_mut_bytes(),
        )?;
        self.head = (self.head + 1) % self.size;
        Ok(cmd)
    }
}

/// The device's view of one completion queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletionQueue {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    /// Guest-physical base address (physically contiguous).
    pub base: u64,
    /// Number of entries (2..=65536).
    pub size: u32,
    /// Index of the slot the next completion goes to.
    pub tail: u32,
    /// Phase tag written with the next completion; flips each time the tail wraps.
    pub phase: bool,
    /// The last valid head the host reported.
    pub head: u32,
    /// MSI-X vector to signal.
    pub vector: u16,
    /// Whether interrupts are enabled for this queue.
    pub interrupts: bool,
}

impl CompletionQueue {
    /// Takes a new head doorbell value from the host, after checking it is a valid index.
    pub fn update_head(&mut self, head: u32) -> Result<(), InvalidDoorbell> {
        if head >= self.size {
            return Err(InvalidDoorbell {
                qid: self.qid,
                value: head,
                size: self.size,
            });
        }
        self.head = head;
        Ok(())
    }

    /// Slots that can take a completion without overwriting one the host has not consumed.
    pub fn free_slots(&self) -> u32 {
        let used = (self.tail + self.size - self.head) % self.size;
        self.size - 1 - used
    }

    /// Writes `entry` (phase tag taken from the queue) at the tail and advances the tail. The
    /// first 12 bytes are written first and the status dword last, with release ordering, so a
    /// host that sees the new phase tag sees the whole entry. The caller has checked
    /// [`free_slots`](Self::free_slots).
    pub fn post(&mut self, mem: &dyn DmaMemory, mut entry: Completion) -> Result<(), DmaError> {
        entry.status = entry.status.with_phase(self.phase);
        let gpa = entry_address(self.base, self.tail, CQE_BYTES)?;
        let bytes = entry.as_bytes();
        mem.write(gpa, &bytes[..12])?;
        let last = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        mem.store_u32_release(gpa + 12, last)?;
        self.tail += 1;
        if self.tail == self.size {
            self.tail = 0;
            self.phase = !self.phase;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::command::CompletionStatus;
    use nvme_spec::status::Status;
    use shmem::AddressSpace;
    use shmem::Mapping;
    use zerocopy::FromBytes;

    fn mem() -> AddressSpace {
        let m = AddressSpace::new();
        m.map(0x10000, Mapping::memfd("q", 0x4000).unwrap())
            .unwrap();
        m
    }

    #[test]
    fn sq_pending_and_fetch_wrap() {
        let mem = mem();
        let mut sq = SubmissionQueue {
            qid: 1,
            cqid: 1,
            base: 0x10000,
            size: 4,
            head: 3,
            priority: 0,
        };
        assert_eq!(sq.pending(3), Ok(0));
        assert_eq!(sq.pending(1), Ok(2));
        assert_eq!(
            sq.pending(4),
            Err(InvalidDoorbell {
                qid: 1,
                value: 4,
                size: 4
            })
        );
        let cmd = Command {
            cdw10: 0x1234,
            ..Default::default()
        };
        mem.write(0x10000 + 3 * 64, cmd.as_bytes()).unwrap();
        assert_eq!(sq.fetch(&mem).unwrap().cdw10, 0x1234);
        assert_eq!(sq.head, 0);
        sq.base = 0x20000;
        assert!(sq.fetch(&mem).is_err());
    }

    #[test]
    fn queues_at_the_top_of_the_address_space_do_not_overflow() {
        let mem = mem();
        let base = !0xFFF_u64;
        let mut sq = SubmissionQueue {
            qid: 1,
            cqid: 1,
            base,
            size: 1024,
            head: 100,
            priority: 0,
        };
        assert!(sq.fetch(&mem).is_err());
        let mut cq = CompletionQueue {
            qid: 1,
            base,
            size: 1024,
            tail: 1000,
            phase: true,
            head: 0,
            vector: 0,
            interrupts: true,
        };
        assert!(cq.post(&mem, Completion::default()).is_err());
        assert_eq!((sq.head, cq.tail), (100, 1000));
    }

    #[test]
    fn cq_post_phase_and_full() {
        let mem = mem();
        let mut cq = CompletionQueue {
            qid: 1,
            base: 0x11000,
            size: 3,
            tail: 0,
            phase: true,
            head: 0,
            vector: 0,
            interrupts: true,
        };
        assert_eq!(cq.free_slots(), 2);
        for cid in 0..2u16 {
            let entry = Completion {
                cid,
                status: CompletionStatus::new_with(Status::SUCCESS, false),
                ..Default::default()
            };
            cq.post(&mem, entry).unwrap();
        }
        assert_eq!(cq.free_slots(), 0);
        assert!(cq.update_head(3).is_err());
        cq.update_head(2).unwrap();
        assert_eq!(cq.free_slots(), 2);
        cq.post(&mem, Completion::default()).unwrap();
        assert_eq!((cq.tail, cq.phase), (0, false));
        let mut raw = [0u8; 16];
        mem.read(0x11000 + 16, &mut raw).unwrap();
        let entry = Completion::read_from_bytes(&raw).unwrap();
        assert_eq!(entry.cid, 1);
        assert!(entry.status.phase());
        mem.read(0x11000 + 32, &mut raw).unwrap();
        assert!(Completion::read_from_bytes(&raw).unwrap().status.phase());
    }
}
