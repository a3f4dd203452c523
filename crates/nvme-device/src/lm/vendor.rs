//! Our vendor-specific controller state (TP4159 CSUUIDI 1, UUID [`super::VENDOR_STATE_UUID`]):
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
//! | 8 | 2 | version (1) |
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
//! 6. doorbells: count, then per queue SQ tail and CQ head (u32 each);
//! 7. features: arbitration, power management (u32), over/under temperature (u16), error
//!    recovery (u32), write cache (u8), NSQA, NCQA (u16), queues set (u8), interrupt coalescing
//!    (u32), coalescing disabled (count + u8 each), write atomicity disable normal (u8), async
//!    event config (u32), timestamp present (u8) + value in ms (u64), keep alive (u32);
//! 8. asynchronous events: outstanding CIDs (count + u16 each), queued events (count + type,
//!    info, log page (u8) and dword 1 (u32) each), mask (u8);
//! 9. error log: error count (u64), entries (count + 64-byte Error Information entries);
//! 10. SMART counters: bytes read, bytes written, reads, writes, media errors, error count (u64);
//! 11. namespaces: count, then NSID (u32), LBADS (u8), blocks (u64), NGUID (16), EUI64 (8),
//!     UUID (16) each.

use nvme_spec::features::AsyncEventType;
use nvme_spec::log::ErrorInformation;
use nvme_spec::log::LogPageId;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use crate::controller::AsyncEvent;
use crate::controller::SubsystemIdentity;
use crate::namespace::NamespaceIdentity;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

/// The magic that starts our vendor-specific state.
pub const MAGIC: [u8; 8] = *b"VFNVMEVS";
/// The version of the layout this crate writes and reads.
pub const VERSION: u16 = 1;
/// Size of the fixed header (magic, version, reserved, length, CRC).
pub const HEADER_LEN: usize = 20;

/// Longest list of any kind accepted (doorbells of 65536 queues is the largest legitimate one).
const MAX_LIST: usize = 65536;

/// Why vendor-specific state bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VendorStateError {
    /// The bytes end inside a field.
    #[error("vendor state truncated in field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The magic is not ours.
    #[error("vendor state magic {found:02x?} is not \"VFNVMEVS\"")]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A layout version this crate does not read.
    #[error("vendor state version {found} is not supported (expected {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The length field disagrees with the bytes given.
    #[error("vendor state body length {declared} does not match the {given} bytes given")]
    Length {
        /// Body length in the header.
        declared: u32,
        /// Bytes given (header and padding included).
        given: usize,
    },
    /// The CRC does not match the body.
    #[error("vendor state CRC {found:#010x} does not match the body's {computed:#010x}")]
    Crc {
        /// CRC in the header.
        found: u32,
        /// CRC of the body.
        computed: u32,
    },
    /// A reserved field or padding byte is not zero.
    #[error("vendor state field {field} must be zero")]
    Reserved {
        /// The field.
        field: &'static str,
    },
    /// A list has more entries than allowed.
    #[error("vendor state list {field} has {count} entries, more than {max}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Entries found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not valid UTF-8.
    #[error("vendor state string {field} is not UTF-8")]
    BadString {
        /// The field.
        field: &'static str,
    },
    /// A boolean is neither 0 nor 1.
    #[error("vendor state flag {field} is {value}, not 0 or 1")]
    BadFlag {
        /// The field.
        field: &'static str,
        /// The value.
        value: u8,
    },
    /// Bytes are left after the last field.
    #[error("vendor state has {extra} bytes after its last field")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

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
    /// 0Eh Timestamp in milliseconds at capture, if the host set it.
    pub timestamp: Option<u64>,
    /// 0Fh Keep Alive Timer.
    pub keep_alive: u32,
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

/// The SMART / Health counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Read commands.
    pub read_commands: u64,
    /// Write commands.
    pub write_commands: u64,
    /// Media errors.
    pub media_errors: u64,
    /// Error log entries ever created.
    pub error_count: u64,
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
    /// Doorbell values per queue identifier: (SQ tail, CQ head).
    pub doorbells: Vec<(u32, u32)>,
    /// Feature values.
    pub features: FeatureValues,
    /// Asynchronous event requests and events.
    pub events: EventState,
    /// Error log: the count of the newest entry and the entries, newest first.
    pub error_log: (u64, Vec<ErrorInformation>),
    /// SMART counters.
    pub counters: CounterValues,
    /// Attached namespaces in NSID order.
    pub namespaces: Vec<NamespaceState>,
}

/// Appends little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn flag(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A list count; lists are bounded by construction (queues, vectors, log entries).
    fn count(&mut self, n: usize) {
        self.u16(n.min(MAX_LIST) as u16);
    }
    fn str(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        self.u16(bytes.len() as u16);
        self.bytes(bytes);
    }
}

/// Reads little-endian fields, naming the field on failure.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], VendorStateError> {
        if self.0.len() < n {
            return Err(VendorStateError::Truncated { field });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], VendorStateError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, VendorStateError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, VendorStateError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(VendorStateError::BadFlag { field, value }),
        }
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, VendorStateError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, VendorStateError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, VendorStateError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// A list count, checked against `max`.
    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, VendorStateError> {
        let count = usize::from(self.u16(field)?);
        if count > max {
            return Err(VendorStateError::TooMany { field, count, max });
        }
        Ok(count)
    }
    fn str(&mut self, field: &'static str) -> Result<String, VendorStateError> {
        let len = usize::from(self.u16(field)?);
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| VendorStateError::BadString { field })
    }
}

impl VendorState {
    /// Serialises the state: header, body, zero padding to a whole dword. The same state always
    /// gives the same bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(1024));
        self.encode_body(&mut w);
        let body = w.0;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 3);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn encode_body(&self, w: &mut Writer) {
        let id = &self.identity;
        for s in [&id.nqn, &id.serial, &id.model, &id.firmware] {
            w.str(s);
        }
        w.u16(self.cntlid);
        let l = &self.limits;
        w.u16(l.io_queue_pairs);
        w.u32(l.max_queue_entries);
        w.u8(l.mdts);
        w.u16(l.msix_vectors);
        let r = &self.registers;
        w.u32(r.cc);
        w.u32(r.csts);
        w.u32(r.aqa);
        w.u64(r.asq);
        w.u64(r.acq);
        w.u32(r.intms);
        w.flag(self.admin_sq.is_some());
        if let Some(sq) = &self.admin_sq {
            w.u64(sq.base);
            w.u32(sq.size);
            w.u32(sq.head);
        }
        w.flag(self.admin_cq.is_some());
        if let Some(cq) = &self.admin_cq {
            w.u64(cq.base);
            w.u32(cq.size);
            w.u32(cq.tail);
            w.u32(cq.head);
            w.flag(cq.phase);
            w.u16(cq.vector);
            w.flag(cq.interrupts);
        }
        w.count(self.doorbells.len());
        for &(sq_tail, cq_head) in self.doorbells.iter().take(MAX_LIST) {
            w.u32(sq_tail);
            w.u32(cq_head);
        }
        let f = &self.features;
        w.u32(f.arbitration);
        w.u32(f.power_management);
        w.u16(f.over_temperature);
        w.u16(f.under_temperature);
        w.u32(f.error_recovery);
        w.flag(f.write_cache);
        w.u16(f.queues.0);
        w.u16(f.queues.1);
        w.flag(f.queues_set);
        w.u32(f.interrupt_coalescing);
        w.count(f.coalescing_disabled.len());
        for &cd in f.coalescing_disabled.iter().take(MAX_LIST) {
            w.flag(cd);
        }
        w.flag(f.write_atomicity_disable_normal);
        w.u32(f.async_event_config);
        w.flag(f.timestamp.is_some());
        w.u64(f.timestamp.unwrap_or(0));
        w.u32(f.keep_alive);
        let e = &self.events;
        w.count(e.outstanding.len());
        for &cid in e.outstanding.iter().take(MAX_LIST) {
            w.u16(cid);
        }
        w.count(e.queued.len());
        for ev in e.queued.iter().take(MAX_LIST) {
            w.u8(ev.event_type.0);
            w.u8(ev.info);
            w.u8(ev.log_page.0);
            w.u32(ev.dw1);
        }
        w.u8(e.masked);
        w.u64(self.error_log.0);
        w.count(self.error_log.1.len());
        for entry in self.error_log.1.iter().take(MAX_LIST) {
            w.bytes(entry.as_bytes());
        }
        let c = &self.counters;
        for v in [
            c.bytes_read,
            c.bytes_written,
            c.read_commands,
            c.write_commands,
            c.media_errors,
            c.error_count,
        ] {
            w.u64(v);
        }
        w.count(self.namespaces.len());
        for ns in self.namespaces.iter().take(MAX_LIST) {
            w.u32(ns.nsid);
            w.u8(ns.lbads);
            w.u64(ns.blocks);
            w.bytes(&ns.identity.nguid);
            w.bytes(&ns.identity.eui64);
            w.bytes(&ns.identity.uuid);
        }
    }

    /// Parses and checks vendor-specific state bytes (untrusted: from a migration stream).
    pub fn decode(bytes: &[u8]) -> Result<Self, VendorStateError> {
        let mut header = Reader(bytes);
        let magic: [u8; 8] = header.array("magic")?;
        if magic != MAGIC {
            return Err(VendorStateError::BadMagic { found: magic });
        }
        let version = header.u16("version")?;
        if version != VERSION {
            return Err(VendorStateError::UnsupportedVersion { found: version });
        }
        if header.u16("reserved")? != 0 {
            return Err(VendorStateError::Reserved { field: "reserved" });
        }
        let declared = header.u32("length")?;
        let crc = header.u32("crc")?;
        let body_len = usize::try_from(declared).unwrap_or(usize::MAX);
        let padded = HEADER_LEN
            .checked_add(body_len)
            .map(|n| n.next_multiple_of(4));
        if padded != Some(bytes.len()) {
            return Err(VendorStateError::Length {
                declared,
                given: bytes.len(),
            });
        }
        let (body, padding) = header.0.split_at(body_len);
        if padding.iter().any(|&b| b != 0) {
            return Err(VendorStateError::Reserved { field: "padding" });
        }
        let computed = crc32fast::hash(body);
        if computed != crc {
            return Err(VendorStateError::Crc {
                found: crc,
                computed,
            });
        }
        let mut r = Reader(body);
        let state = Self::decode_body(&mut r)?;
        if !r.0.is_empty() {
            return Err(VendorStateError::TrailingBytes { extra: r.0.len() });
        }
        Ok(state)
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, VendorStateError> {
        let identity = SubsystemIdentity {
            nqn: r.str("nqn")?,
            serial: r.str("serial")?,
            model: r.str("model")?,
            firmware: r.str("firmware")?,
        };
        let cntlid = r.u16("cntlid")?;
        let limits = Limits {
            io_queue_pairs: r.u16("io_queue_pairs")?,
            max_queue_entries: r.u32("max_queue_entries")?,
            mdts: r.u8("mdts")?,
            msix_vectors: r.u16("msix_vectors")?,
        };
        let registers = RegisterValues {
            cc: r.u32("cc")?,
            csts: r.u32("csts")?,
            aqa: r.u32("aqa")?,
            asq: r.u64("asq")?,
            acq: r.u64("acq")?,
            intms: r.u32("intms")?,
        };
        let admin_sq = if r.flag("admin_sq")? {
            Some(SubmissionQueue {
                qid: 0,
                cqid: 0,
                base: r.u64("admin_sq.base")?,
                size: r.u32("admin_sq.size")?,
                head: r.u32("admin_sq.head")?,
                priority: 0,
            })
        } else {
            None
        };
        let admin_cq = if r.flag("admin_cq")? {
            Some(CompletionQueue {
                qid: 0,
                base: r.u64("admin_cq.base")?,
                size: r.u32("admin_cq.size")?,
                tail: r.u32("admin_cq.tail")?,
                head: r.u32("admin_cq.head")?,
                phase: r.flag("admin_cq.phase")?,
                vector: r.u16("admin_cq.vector")?,
                interrupts: r.flag("admin_cq.interrupts")?,
            })
        } else {
            None
        };
        let n = r.count("doorbells", MAX_LIST)?;
        let mut doorbells = Vec::new();
        for _ in 0..n {
            doorbells.push((r.u32("doorbell.sq_tail")?, r.u32("doorbell.cq_head")?));
        }
        let arbitration = r.u32("arbitration")?;
        let power_management = r.u32("power_management")?;
        let over_temperature = r.u16("over_temperature")?;
        let under_temperature = r.u16("under_temperature")?;
        let error_recovery = r.u32("error_recovery")?;
        let write_cache = r.flag("write_cache")?;
        let queues = (r.u16("nsqa")?, r.u16("ncqa")?);
        let queues_set = r.flag("queues_set")?;
        let interrupt_coalescing = r.u32("interrupt_coalescing")?;
        let n = r.count("coalescing_disabled", MAX_LIST)?;
        let mut coalescing_disabled = Vec::new();
        for _ in 0..n {
            coalescing_disabled.push(r.flag("coalescing_disabled")?);
        }
        let write_atomicity_disable_normal = r.flag("write_atomicity")?;
        let async_event_config = r.u32("async_event_config")?;
        let has_timestamp = r.flag("timestamp")?;
        let timestamp_value = r.u64("timestamp.value")?;
        let features = FeatureValues {
            arbitration,
            power_management,
            over_temperature,
            under_temperature,
            error_recovery,
            write_cache,
            queues,
            queues_set,
            interrupt_coalescing,
            coalescing_disabled,
            write_atomicity_disable_normal,
            async_event_config,
            timestamp: has_timestamp.then_some(timestamp_value),
            keep_alive: r.u32("keep_alive")?,
        };
        let n = r.count("aer.outstanding", MAX_LIST)?;
        let mut outstanding = Vec::new();
        for _ in 0..n {
            outstanding.push(r.u16("aer.outstanding")?);
        }
        let n = r.count("aer.queued", MAX_LIST)?;
        let mut queued = Vec::new();
        for _ in 0..n {
            queued.push(AsyncEvent {
                event_type: AsyncEventType(r.u8("event.type")?),
                info: r.u8("event.info")?,
                log_page: LogPageId(r.u8("event.log_page")?),
                dw1: r.u32("event.dw1")?,
            });
        }
        let events = EventState {
            outstanding,
            queued,
            masked: r.u8("aer.masked")?,
        };
        let error_count = r.u64("error_log.count")?;
        let n = r.count("error_log.entries", MAX_LIST)?;
        let mut entries = Vec::new();
        for _ in 0..n {
            let raw = r.take(size_of::<ErrorInformation>(), "error_log.entry")?;
            entries.push(ErrorInformation::read_from_bytes(raw).map_err(|_| {
                VendorStateError::Truncated {
                    field: "error_log.entry",
                }
            })?);
        }
        let counters = CounterValues {
            bytes_read: r.u64("bytes_read")?,
            bytes_written: r.u64("bytes_written")?,
            read_commands: r.u64("read_commands")?,
            write_commands: r.u64("write_commands")?,
            media_errors: r.u64("media_errors")?,
            error_count: r.u64("error_count")?,
        };
        let n = r.count("namespaces", MAX_LIST)?;
        let mut namespaces = Vec::new();
        for _ in 0..n {
            namespaces.push(NamespaceState {
                nsid: r.u32("namespace.nsid")?,
                lbads: r.u8("namespace.lbads")?,
                blocks: r.u64("namespace.blocks")?,
                identity: NamespaceIdentity {
                    nguid: r.array("namespace.nguid")?,
                    eui64: r.array("namespace.eui64")?,
                    uuid: r.array("namespace.uuid")?,
                },
            });
        }
        Ok(Self {
            identity,
            cntlid,
            limits,
            registers,
            admin_sq,
            admin_cq,
            doorbells,
            features,
            events,
            error_log: (error_count, entries),
            counters,
            namespaces,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use nvme_spec::features::AsyncEventType;
    use zerocopy::FromZeros;

    use super::*;

    /// A state with every field set to something other than its default.
    pub(crate) fn sample() -> VendorState {
        let mut entry = ErrorInformation::new_zeroed();
        entry.error_count = 7;
        entry.cid = 9;
        VendorState {
            identity: SubsystemIdentity {
                nqn: "nqn.2026-11.io.vfio-nvme:a".to_owned(),
                serial: "VFNVME-a".to_owned(),
                model: "model".to_owned(),
                firmware: "0.1.0".to_owned(),
            },
            cntlid: 2,
            limits: Limits {
                io_queue_pairs: 4,
                max_queue_entries: 256,
                mdts: 5,
                msix_vectors: 5,
            },
            registers: RegisterValues {
                cc: 0x0046_0001,
                csts: 1,
                aqa: 0x001F_001F,
                asq: 0x1000_0000,
                acq: 0x1000_1000,
                intms: 2,
            },
            admin_sq: Some(SubmissionQueue {
                qid: 0,
                cqid: 0,
                base: 0x1000_0000,
                size: 32,
                head: 5,
                priority: 0,
            }),
            admin_cq: Some(CompletionQueue {
                qid: 0,
                base: 0x1000_1000,
                size: 32,
                tail: 4,
                phase: false,
                head: 3,
                vector: 0,
                interrupts: true,
            }),
            doorbells: vec![(5, 3), (7, 6), (0, 0), (0, 0), (0, 0)],
            features: FeatureValues {
                arbitration: 3,
                power_management: 0,
                over_temperature: 350,
                under_temperature: 270,
                error_recovery: 4,
                write_cache: false,
                queues: (3, 2),
                queues_set: true,
                interrupt_coalescing: 0x0102,
                coalescing_disabled: vec![false, true, false, false, true],
                write_atomicity_disable_normal: true,
                async_event_config: 0x100,
                timestamp: Some(123_456),
                keep_alive: 5000,
            },
            events: EventState {
                outstanding: vec![10, 11],
                queued: vec![AsyncEvent {
                    event_type: AsyncEventType::NOTICE,
                    info: 0,
                    log_page: LogPageId::CHANGED_NAMESPACE_LIST,
                    dw1: 77,
                }],
                masked: 0b100,
            },
            error_log: (7, vec![entry]),
            counters: CounterValues {
                bytes_read: 1,
                bytes_written: 2,
                read_commands: 3,
                write_commands: 4,
                media_errors: 5,
                error_count: 6,
            },
            namespaces: vec![NamespaceState {
                nsid: 1,
                lbads: 12,
                blocks: 256,
                identity: NamespaceIdentity::derive("VFNVME-a", 1),
            }],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let state = sample();
        let bytes = state.encode();
        assert_eq!(&bytes[..8], b"VFNVMEVS");
        assert_eq!(&bytes[8..10], &[1, 0]);
        let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), (HEADER_LEN + len).next_multiple_of(4));
        let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bytes[HEADER_LEN..HEADER_LEN + len]));
        // The body starts with the NQN as a u16 length and its bytes.
        assert_eq!(
            &bytes[20..22],
            &(state.identity.nqn.len() as u16).to_le_bytes()
        );
        assert_eq!(VendorState::decode(&bytes), Ok(state.clone()));
        assert_eq!(VendorState::decode(&bytes).unwrap().encode(), bytes);
        let empty = VendorState {
            admin_sq: None,
            admin_cq: None,
            doorbells: vec![],
            namespaces: vec![],
            ..state
        };
        assert_eq!(VendorState::decode(&empty.encode()), Ok(empty));
    }

    /// [`sample`] as layout version 1 writes it, byte for byte: a change to the format shows here.
    const SAMPLE_BYTES: &str = concat!(
        "56464e564d45565301000000a701000043230f6b1a006e716e2e323032362d31312e696f2e766669",
        "6f2d6e766d653a61080056464e564d452d6105006d6f64656c0500302e312e300200040000010000",
        "05050001004600010000001f001f0000000010000000000010001000000000020000000100000010",
        "00000000200000000500000001001000100000000020000000040000000300000000000001050005",
        "00000003000000070000000600000000000000000000000000000000000000000000000000000003",
        "000000000000005e010e0104000000000300020001020100000500000100000101000100000140e2",
        "0100000000008813000002000a000b0001000200044d000000040700000000000000010007000000",
        "00000000000009000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000100000000000000020000000000000003000000",
        "000000000400000000000000050000000000000006000000000000000100010000000c0001000000",
        "0000001b45772ffbc38454e6253faace178afae6253faace178afa1b45772ffbc38454a6253faace",
        "178afa00",
    );

    #[test]
    fn sample_encoding_is_pinned() {
        let hex: String = sample()
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, SAMPLE_BYTES);
    }

    #[test]
    fn every_corruption_is_named() {
        let bytes = sample().encode();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            VendorState::decode(&bad),
            Err(VendorStateError::BadMagic { .. })
        ));
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(
            VendorState::decode(&bad),
            Err(VendorStateError::UnsupportedVersion { found: 2 })
        );
        let mut bad = bytes.clone();
        bad[10] = 1;
        assert_eq!(
            VendorState::decode(&bad),
            Err(VendorStateError::Reserved { field: "reserved" })
        );
        let mut bad = bytes.clone();
        bad[12] = bad[12].wrapping_add(8);
        assert!(matches!(
            VendorState::decode(&bad),
            Err(VendorStateError::Length { .. })
        ));
        assert!(matches!(
            VendorState::decode(&bytes[..bytes.len() - 4]),
            Err(VendorStateError::Length { .. })
        ));
        let mut bad = bytes.clone();
        bad[40] ^= 0x55;
        assert!(matches!(
            VendorState::decode(&bad),
            Err(VendorStateError::Crc { .. })
        ));
        assert!(matches!(
            VendorState::decode(&bytes[..10]),
            Err(VendorStateError::Truncated { field: "reserved" })
        ));
    }

    /// Re-frames a body with a correct header, so body-level checks are reached.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn body_errors() {
        let bytes = sample().encode();
        let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let body = &bytes[HEADER_LEN..HEADER_LEN + len];
        assert!(matches!(
            VendorState::decode(&framed(&body[..len - 1])),
            Err(VendorStateError::Truncated { .. })
        ));
        let mut longer = body.to_vec();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(
            VendorState::decode(&framed(&longer)),
            Err(VendorStateError::TrailingBytes { extra: 4 })
        );
        // A non-UTF-8 NQN.
        let mut bad = body.to_vec();
        bad[2] = 0xFF;
        assert_eq!(
            VendorState::decode(&framed(&bad)),
            Err(VendorStateError::BadString { field: "nqn" })
        );
        // Padding that is not zero.
        let mut padded = framed(&body[..len - 1]);
        let last = padded.len() - 1;
        padded[last] = 1;
        assert!(VendorState::decode(&padded).is_err());
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_type::<Vec<u8>>()
            .with_iterations(3000)
            .for_each(|bytes: &Vec<u8>| {
                if let Ok(state) = VendorState::decode(bytes) {
                    assert_eq!(&state.encode(), bytes);
                }
            });
    }

    #[test]
    fn fuzz_decode_framed_bodies() {
        // Random bytes never pass the CRC; frame them so the body parser is exercised too.
        let body = {
            let bytes = sample().encode();
            let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
            bytes[HEADER_LEN..HEADER_LEN + len].to_vec()
        };
        bolero::check!()
            .with_type::<(u16, u8, Vec<u8>)>()
            .with_iterations(3000)
            .for_each(|(at, value, tail): &(u16, u8, Vec<u8>)| {
                let mut mutated = body.clone();
                let at = usize::from(*at) % mutated.len();
                mutated[at] = *value;
                mutated.truncate(at + 1 + tail.len() % 8);
                mutated.extend_from_slice(tail);
                let _ = VendorState::decode(&framed(&mutated));
            });
    }
}
