//! Parsing vendor state bytes, which are untrusted (they come from a migration stream): every
//! header field, the CRC, each field of the body and the padding are checked, and a refusal names
//! the field.

use nvme_spec::features::AsyncEventType;
use nvme_spec::log::ErrorInformation;
use nvme_spec::log::LogPageId;
use zerocopy::FromBytes;

use super::EventState;
use super::FeatureValues;
use super::HEADER_LEN;
use super::Limits;
use super::MAGIC;
use super::MAX_LIST;
use super::NamespaceState;
use super::OLDEST_VERSION;
use super::RegisterValues;
use super::ReportedDoorbell;
use super::TimestampValue;
use super::VERSION;
use super::VendorState;
use super::VendorStateError;
use super::wire::Reader;
use crate::controller::AsyncEvent;
use crate::controller::Counters;
use crate::controller::ShadowBuffers;
use crate::controller::SubsystemIdentity;
use crate::namespace::NamespaceIdentity;
use crate::queue::CompletionQueue;
use crate::queue::SubmissionQueue;

impl VendorState {
    /// Parses and checks vendor-specific state bytes (untrusted: from a migration stream), of
    /// layout version [`VERSION`] or an older one down to [`OLDEST_VERSION`].
    pub fn decode(bytes: &[u8]) -> Result<Self, VendorStateError> {
        let mut header = Reader(bytes);
        let magic: [u8; 8] = header.array("magic")?;
        if magic != MAGIC {
            return Err(VendorStateError::BadMagic { found: magic });
        }
        let version = header.u16("version")?;
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
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
        let state = Self::decode_body(&mut r, version)?;
        if !r.0.is_empty() {
            return Err(VendorStateError::TrailingBytes { extra: r.0.len() });
        }
        Ok(state)
    }

    /// The body of layout `version`; fields a version lacks take the values of a controller
    /// that never had them (see the module's layout).
    fn decode_body(r: &mut Reader<'_>, version: u16) -> Result<Self, VendorStateError> {
        let v2 = version >= 2;
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
        let n = if v2 {
            r.count("reported_doorbells", MAX_LIST)?
        } else {
            0
        };
        let mut reported_doorbells = Vec::new();
        for _ in 0..n {
            reported_doorbells.push(ReportedDoorbell {
                doorbell: r.u16("reported_doorbell.doorbell")?,
                value: r.u32("reported_doorbell.value")?,
            });
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
        let timestamp = TimestampValue {
            ms: r.u64("timestamp.value")?,
            stopped: v2 && r.flag("timestamp.stopped")?,
        };
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
            timestamp: has_timestamp.then_some(timestamp),
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
        let mut counters = Counters {
            bytes_read: r.u64("bytes_read")?,
            bytes_written: r.u64("bytes_written")?,
            read_commands: r.u64("read_commands")?,
            write_commands: r.u64("write_commands")?,
            media_errors: r.u64("media_errors")?,
            error_count: r.u64("error_count")?,
            ..Counters::powered_on()
        };
        let mut power_on_ms = 0;
        if v2 {
            counters.power_cycles = r.u64("power_cycles")?;
            counters.unsafe_shutdowns = r.u64("unsafe_shutdowns")?;
            counters.busy_ns = r.u64("busy_ns")?;
            power_on_ms = r.u64("power_on_ms")?;
        }
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
        let shadow = if version >= 3 && r.flag("shadow_doorbells")? {
            Some(ShadowBuffers {
                doorbells: r.u64("shadow_doorbells.buffer")?,
                event_indices: r.u64("shadow_doorbells.event_indices")?,
            })
        } else {
            None
        };
        Ok(Self {
            identity,
            cntlid,
            limits,
            registers,
            admin_sq,
            admin_cq,
            doorbells,
            reported_doorbells,
            features,
            events,
            error_log: (error_count, entries),
            counters,
            power_on_ms,
            namespaces,
            shadow,
        })
    }
}
