//! Our vendor-specific controller state (TP4159 CSUUIDI 1, UUID [`crate::lm::VENDOR_STATE_UUID`]):
//! everything a guest can observe that NVMECS v0 leaves out.
//!
//! NVMECS v0 carries only the I/O queues. A controller restored from it alone would come up with
//! the destination's registers, admin queue, features, pending asynchronous events, error log,
//! counters and identity, all of which the guest can see — the objection that sank the 2022 RFC.
//! This block carries the rest, so that a controller restored into another subsystem is
//! indistinguishable to its guest.
//!
//! # Layout (all integers little-endian)
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `"VFNVMEVS"` |
//! | 8 | 2 | version (3; versions 1 and 2 are still read) |
//! | 10 | 2 | reserved (0) |
//! | 12 | 4 | body length in bytes |
//! | 16 | 4 | CRC32 (IEEE) of the body |
//! | 20 | length | body, below |
//! | 20 + length | 0..3 | zero padding to a whole dword (VSS counts dwords) |
//!
//! The body is a fixed sequence of fields; strings are a u16 length plus bytes, lists a u16 count
//! plus entries:
//!
//! 1. identity: NQN, serial, model, firmware (strings), CNTLID (u16);
//! 2. limits: I/O queue pairs (u16), max queue entries (u32), MDTS (u8), MSI-X vectors (u16);
//! 3. registers: CC, CSTS, AQA (u32), ASQ, ACQ (u64), INTMS (u32);
//! 4. admin SQ: present (u8), base (u64), size, head (u32);
//! 5. admin CQ: present (u8), base (u64), size, tail, head (u32), phase (u8), vector (u16),
//!    interrupts (u8);
//! 6. doorbells: count, then per queue SQ tail and CQ head (u32 each), as the guest wrote them
//!    (valid or not: NVMECS v0 cannot hold an out-of-range value, this can);
//! 7. reported invalid doorbells (version 2): count, then per doorbell its index (u16, 2 × QID,
//!    plus 1 for a CQ head) and the invalid value already reported to the host (u32), ascending;
//! 8. features: arbitration, power management (u32), over/under temperature (u16), error
//!    recovery (u32), write cache (u8), NSQA, NCQA (u16), queues set (u8), interrupt coalescing
//!    (u32), coalescing disabled (count + u8 each), write atomicity disable normal (u8), async
//!    event config (u32), timestamp present (u8) + value in ms (u64) + stopped since it was
//!    set, Synch (u8, version 2), keep alive (u32);
//! 9. asynchronous events: outstanding CIDs (count + u16 each), queued events (count + type,
//!    info, log page (u8) and dword 1 (u32) each), mask (u8);
//! 10. error log: error count (u64), entries (count + 64-byte Error Information entries);
//! 11. SMART counters: bytes read, bytes written, reads, writes, media errors, error count, then
//!     (version 2) power cycles, unsafe shutdowns, busy time in ns, power-on time in ms (u64);
//! 12. namespaces: count, then NSID (u32), LBADS (u8), blocks (u64), NGUID (16), EUI64 (8),
//!     UUID (16) each;
//! 13. shadow doorbells (version 3): configured (u8), then if so the shadow doorbell and
//!     EventIdx buffer addresses (u64 each) the host gave in Doorbell Buffer Config.
//!
//! Version 1 lacks the fields marked version 2 or 3, version 2 those marked version 3; a
//! version 1 state is read with no reported doorbells, a Timestamp that counted continuously,
//! one power cycle, no unsafe shutdown, no busy time and no power-on time (a version 1
//! destination restarted those too), and a version 1 or 2 state without shadow doorbells
//! (those versions did not offer them).
//!
//! With shadow doorbells configured, the doorbell values of the I/O queues (field 6) are the
//! shadow values: those are what the host last wrote and the controller acts on.
//!
//! # Modules
//!
//! This module holds the format's types; `encode` and `decode` write and parse its bytes
//! (through the little-endian field primitives of `wire`), and [`VendorStateError`] names what
//! `decode` refused.

mod decode;
mod encode;
mod error;
#[cfg(test)]
pub(crate) mod tests;
mod wire;

pub use error::VendorStateError;
use nvme_spec::log::ErrorInformation;

use crate::controller::AsyncEvent;
use crate::controller::Counters;
use crate::controller::ShadowBuffers;
use crate::controller::SubsystemIdentity;
use crate::namespace::NamespaceIdentity;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// The magic that starts our vendor-specific state.
pub const MAGIC: [u8; 8] = *b"VFNVMEVS";
/// The version of the layout this crate writes.
pub const VERSION: u16 = 3;
/// The oldest version this crate still reads.
pub const OLDEST_VERSION: u16 = 1;
/// Size of the fixed header (magic, version, reserved, length, CRC).
pub const HEADER_LEN: usize = 20;

/// Longest list of any kind accepted (doorbells of 65536 queues is the largest legitimate one).
const MAX_LIST: usize = 65536;

/// A controller's limits, which the destination must be able to hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Maximum I/O queue pairs.
    pub io_queue_pairs: u16,
    /// Maximum entries per queue (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// MDTS.
    pub mdts: u8,
    /// MSI-X vectors.
    pub msix_vectors: u16,
}

/// The register file (values as the host reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterValues {
    /// Controller Configuration.
    pub cc: u32,
    /// Controller Status (RDY, CFS, SHST).
    pub csts: u32,
    /// Admin Queue Attributes.
    pub aqa: u32,
    /// Admin Submission Queue base.
    pub asq: u64,
    /// Admin Completion Queue base.
    pub acq: u64,
    /// Interrupt mask.
    pub intms: u32,
}

/// Feature values, with the Timestamp as its value at capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureValues {
    /// 01h Arbitration.
    pub arbitration: u32,
    /// 02h Power Management.
    pub power_management: u32,
    /// 04h over-temperature threshold (kelvin).
    pub over_temperature: u16,
    /// 04h under-temperature threshold (kelvin).
    pub under_temperature: u16,
    /// 05h Error Recovery.
    pub error_recovery: u32,
    /// 06h Volatile Write Cache.
    pub write_cache: bool,
    /// 07h Number of Queues allocated (NSQA, NCQA), 0's based.
    pub queues: (u16, u16),
    /// Whether Number of Queues was set since the last reset.
    pub queues_set: bool,
    /// 08h Interrupt Coalescing.
    pub interrupt_coalescing: u32,
    /// 09h Coalescing Disable per vector.
    pub coalescing_disabled: Vec<bool>,
    /// 0Ah Write Atomicity Normal.
    pub write_atomicity_disable_normal: bool,
    /// 0Bh Asynchronous Event Configuration.
    pub async_event_config: u32,
    /// 0Eh Timestamp at capture, if the host set it.
    pub timestamp: Option<TimestampValue>,
    /// 0Fh Keep Alive Timer.
    pub keep_alive: u32,
}

/// A Timestamp the host set, as saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimestampValue {
    /// Its value at capture, milliseconds.
    pub ms: u64,
    /// Whether the controller's clock stopped since it was set (Synch).
    pub stopped: bool,
}

/// A doorbell whose invalid value the controller has reported to the host already (one
/// Invalid Doorbell Write Value event per value written, not one per look at it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportedDoorbell {
    /// The doorbell: 2 × QID for an SQ tail, 2 × QID + 1 for a CQ head.
    pub doorbell: u16,
    /// The invalid value it holds.
    pub value: u32,
}

/// Asynchronous event state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventState {
    /// CIDs of outstanding Asynchronous Event Requests, oldest first.
    pub outstanding: Vec<u16>,
    /// Undelivered events, oldest first.
    pub queued: Vec<AsyncEvent>,
    /// Event types masked until their log page is read.
    pub masked: u8,
}

/// One attached namespace as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceState {
    /// Namespace identifier.
    pub nsid: u32,
    /// log2 of the block size.
    pub lbads: u8,
    /// Size in blocks.
    pub blocks: u64,
    /// Identifiers reported in Identify.
    pub identity: NamespaceIdentity,
}

/// Everything our vendor-specific state carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorState {
    /// Subsystem identity strings the controller reports.
    pub identity: SubsystemIdentity,
    /// CNTLID reported in Identify Controller.
    pub cntlid: u16,
    /// The source controller's limits.
    pub limits: Limits,
    /// Registers.
    pub registers: RegisterValues,
    /// Admin submission queue, if the controller is enabled.
    pub admin_sq: Option<SubmissionQueue>,
    /// Admin completion queue, if the controller is enabled.
    pub admin_cq: Option<CompletionQueue>,
    /// Doorbell values per queue identifier, as the guest wrote them: (SQ tail, CQ head).
    pub doorbells: Vec<(u32, u32)>,
    /// Doorbells whose invalid value was reported, ascending.
    pub reported_doorbells: Vec<ReportedDoorbell>,
    /// Feature values.
    pub features: FeatureValues,
    /// Asynchronous event requests and events.
    pub events: EventState,
    /// Error log: the count of the newest entry and the entries, newest first.
    pub error_log: (u64, Vec<ErrorInformation>),
    /// SMART counters.
    pub counters: Counters,
    /// How long the controller has been running, in milliseconds (Power On Hours).
    pub power_on_ms: u64,
    /// Attached namespaces in NSID order.
    pub namespaces: Vec<NamespaceState>,
    /// The host's shadow doorbell buffers, if it configured them.
    pub shadow: Option<ShadowBuffers>,
}
