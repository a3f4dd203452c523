//! A host's side of shadow doorbells (Doorbell Buffer Config), as Linux's nvme driver has it,
//! for [`RawQueue`](super::RawQueue)s whose doorbells a test wants to go through them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;

/// The two pages a host hands the controller, and how often the host still had to write a
/// doorbell register.
#[derive(Debug)]
pub struct HostShadow {
    doorbells: DmaBuffer,
    event_indices: DmaBuffer,
    register_writes: AtomicU64,
}

impl HostShadow {
    /// Zeroed shadow doorbell and EventIdx pages in `mem`.
    ///
    /// # Panics
    ///
    /// If `mem` has no room for two pages.
    pub fn new(mem: &Arc<HostMemory>) -> Arc<Self> {
        let page = || mem.alloc(4096).expect("room for a shadow doorbell page");
        Arc::new(Self {
            doorbells: page(),
            event_indices: page(),
            register_writes: AtomicU64::new(0),
        })
    }

    /// The Doorbell Buffer Config command that hands these pages to the controller.
    pub fn config_command(&self, cid: u16) -> Command {
        Command::doorbell_buffer_config(cid, self.doorbells.iova(), self.event_indices.iova())
    }

    fn offset(qid: u16, cq: bool) -> u64 {
        (2 * u64::from(qid) + u64::from(cq)) * 4
    }

    fn word(buffer: &DmaBuffer, qid: u16, cq: bool) -> u32 {
        let mut word = [0u8; 4];
        buffer.read(Self::offset(qid, cq), &mut word);
        u32::from_le_bytes(word)
    }

    /// The shadow value of queue `qid`'s SQ tail (`cq` false) or CQ head.
    pub fn value(&self, qid: u16, cq: bool) -> u32 {
        Self::word(&self.doorbells, qid, cq)
    }

    /// The EventIdx the controller set for queue `qid`'s SQ tail or CQ head.
    pub fn event_index(&self, qid: u16, cq: bool) -> u32 {
        Self::word(&self.event_indices, qid, cq)
    }

    /// Register writes the host could not skip so far.
    pub fn register_writes(&self) -> u64 {
        self.register_writes.load(Ordering::Relaxed)
    }

    /// Writes `value` as the shadow value, then says whether the register must be written too:
    /// whether the value moved past the EventIdx (Linux's `nvme_dbbuf_update_and_check_event`
    /// and `nvme_dbbuf_need_event`, with a full fence between the store and the load).
    pub(super) fn update(&self, qid: u16, cq: bool, value: u32) -> bool {
        let old = self.value(qid, cq) as u16;
        self.doorbells
            .write(Self::offset(qid, cq), &value.to_le_bytes());
        std::sync::atomic::fence(Ordering::SeqCst);
        let event = self.event_index(qid, cq) as u16;
        let new = value as u16;
        let needed = new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old);
        if needed {
            self.register_writes.fetch_add(1, Ordering::Relaxed);
        }
        needed
    }
}
