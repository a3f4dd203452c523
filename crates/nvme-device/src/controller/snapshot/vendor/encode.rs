//! Writing the vendor state: header, body in the order of the layout table, zero padding.

use zerocopy::IntoBytes;

use super::HEADER_LEN;
use super::MAGIC;
use super::MAX_LIST;
use super::VERSION;
use super::VendorState;
use super::wire::Writer;

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
        w.count(self.reported_doorbells.len());
        for d in self.reported_doorbells.iter().take(MAX_LIST) {
            w.u16(d.doorbell);
            w.u32(d.value);
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
        let timestamp = f.timestamp.unwrap_or_default();
        w.flag(f.timestamp.is_some());
        w.u64(timestamp.ms);
        w.flag(timestamp.stopped);
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
            c.power_cycles,
            c.unsafe_shutdowns,
            c.busy_ns,
            self.power_on_ms,
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
        w.flag(self.shadow.is_some());
        if let Some(shadow) = self.shadow {
            w.u64(shadow.doorbells);
            w.u64(shadow.event_indices);
        }
    }
}
