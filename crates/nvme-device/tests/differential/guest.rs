//! The guest: its view of its queues, how it carries out an action on one target, and what it
//! sees afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use nvme_device::backend::Backend;
use nvme_device::backend::RamBackend;
use nvme_device::controller::Controller;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Cdw0;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::features::Timestamp;
use nvme_spec::registers::Register;
use nvme_spec::status::Status;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use crate::ADMIN_CQ_PAGE;
use crate::ADMIN_SQ_PAGE;
use crate::BLOCK;
use crate::BLOCKS;
use crate::DATA_PAGE;
use crate::DATA_PAGES;
use crate::DOORBELLS;
use crate::FIRST_RING_PAGE;
use crate::GUEST_BYTES;
use crate::GUEST_PAGES;
use crate::IO_QUEUE_PAIRS;
use crate::MAX_QUEUE_ENTRIES;
use crate::MDTS;
use crate::PAGE;
use crate::PRP_LIST_PAGE;
use crate::SPARE_PAGE;
use crate::TIMESTAMP_PAGE;
use crate::TIMESTAMP_TOLERANCE;
use crate::UNMAPPED;
use crate::VECTORS;
use crate::actions::Action;
use crate::actions::Admin;
use crate::actions::Buffer;
use crate::actions::Io;
use crate::actions::Place;
use crate::actions::Target;

#[derive(Clone, Copy, Debug)]
pub(crate) struct SqView {
    base: u64,
    entries: u32,
    tail: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CqView {
    base: u64,
    entries: u32,
    head: u32,
    phase: bool,
}

/// What the guest believes: its queues (qid 0 is the admin queue pair) and the admin commands
/// whose completion changes them. Cloned to each target at the migration.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    sqs: BTreeMap<u16, SqView>,
    cqs: BTreeMap<u16, CqView>,
    /// Admin CID → what its success means.
    pending: BTreeMap<u16, Change>,
    next_cid: u16,
    /// (SQID, CID) of the latest commands, for Abort to name.
    recent: Vec<(u16, u16)>,
}

/// What an admin command's success changes in the guest's view.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change {
    NewSq(u16, SqView),
    NewCq(u16, CqView),
    GoneSq(u16),
    GoneCq(u16),
}

/// Everything one action let the guest see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observation {
    /// New completions, by completion queue, as the guest reads them.
    completions: Vec<(u16, Completion)>,
    /// The registers (CAP, VS, INTMS, CC, CSTS, AQA, ASQ, ACQ) and every doorbell.
    registers: Vec<u64>,
    /// Interrupts raised, per vector.
    interrupts: Vec<u64>,
    /// CRC of every guest page but the Timestamp's.
    pages: Vec<u32>,
    /// The Timestamp page: value and attribute bits (compared within a tolerance).
    timestamp: (u64, bool, u8),
}

pub(crate) fn same(a: &Observation, b: &Observation) -> bool {
    let clock = |o: &Observation| Observation {
        timestamp: (0, false, 0),
        ..o.clone()
    };
    let (ta, tb) = (a.timestamp, b.timestamp);
    clock(a) == clock(b)
        && ta.1 == tb.1
        && ta.2 == tb.2
        && ta.0.abs_diff(tb.0) <= TIMESTAMP_TOLERANCE
}

/// One subsystem whose VF 1 a guest drives.
pub(crate) struct Side {
    host: TestHost,
    /// The host driver on the primary controller, for TP4159.
    pub pf: Driver,
    namespace: Arc<RamBackend>,
    mem: Arc<HostMemory>,
    bar: Arc<ControllerBar>,
    view: View,
    interrupts: Vec<u64>,
}

pub(crate) fn config(name: &str) -> SubsystemConfig {
    let mut config = SubsystemConfig::new(name, 1);
    config.limits.io_queue_pairs = IO_QUEUE_PAIRS;
    config.limits.max_queue_entries = MAX_QUEUE_ENTRIES;
    config.limits.mdts = MDTS;
    config.limits.msix_vectors = VECTORS;
    config
}

impl Side {
    pub(crate) fn new(name: &str) -> Self {
        let namespace = Arc::new(RamBackend::new(BLOCKS * BLOCK).unwrap());
        let host = TestHost::new(
            config(name),
            vec![NamespaceSpec {
                backend: namespace.clone(),
                block_size: BlockSize::B512,
                attachment: Attachment::Private { vfn: 1 },
            }],
        );
        // The VF's passes run on the test's thread only, so two equal controllers given the
        // same actions do the same things in the same order, however loaded the machine is.
        testing::drive_manually(host.controller(Function::Vf(1)));
        let pf = host.driver(Function::Primary, 1 << 20, 0x8000_0000);
        let mem = host.memory(Function::Vf(1), GUEST_BYTES, 0);
        let bar = host.bar(Function::Vf(1));
        Self {
            pf,
            namespace,
            mem,
            bar,
            view: View::default(),
            interrupts: vec![0; usize::from(VECTORS)],
            host,
        }
    }

    /// A side named `name` whose guest memory and namespace hold what `source`'s do, and whose
    /// guest believes what `source`'s does.
    pub(crate) fn copy_of(name: &str, source: &Side) -> Self {
        let side = Self::new(name);
        let mut bytes = vec![0u8; GUEST_BYTES as usize];
        source.mem.read(0, &mut bytes).unwrap();
        side.mem.write(0, &bytes).unwrap();
        let mut data = vec![0u8; (BLOCKS * BLOCK) as usize];
        source.namespace.read(0, &mut data).unwrap();
        side.namespace.write(0, &data).unwrap();
        Self {
            view: source.view.clone(),
            ..side
        }
    }

    fn vf(&self) -> &Controller {
        self.host.controller(Function::Vf(1))
    }

    fn write_mem(&self, iova: u64, bytes: &[u8]) {
        // A ring or buffer outside guest memory: the guest's write goes nowhere.
        let _ = self.mem.write(iova, bytes);
    }

    fn doorbell(&self, index: u16, value: u32) {
        self.bar
            .doorbell(Register::DOORBELLS.0 + 4 * u64::from(index), value);
    }

    /// Where `at` puts something whose own place is page `own`.
    fn address(at: Place, own: u64) -> u64 {
        match at {
            Place::Own => own * PAGE,
            Place::Page(n) => {
                // Any page but the Timestamp's, whose contents are a clock.
                let page = u64::from(n) % (GUEST_PAGES - 1);
                let page = if page >= TIMESTAMP_PAGE {
                    page + 1
                } else {
                    page
                };
                page * PAGE
            }
            Place::Unmapped => UNMAPPED,
            Place::Misaligned => own * PAGE + 0x48,
        }
    }

    /// Points `cmd`'s PRPs at `len` bytes from `iova`, with a PRP list when it spans more than
    /// two pages.
    fn prps(&self, cmd: &mut Command, iova: u64, len: u64) {
        cmd.prp1 = iova;
        let first = PAGE - iova % PAGE;
        cmd.prp2 = if len <= first {
            0
        } else if len <= first + PAGE {
            iova + first
        } else {
            let pages = (len - first).div_ceil(PAGE);
            let list: Vec<u8> = (0..pages)
                .flat_map(|i| (iova + first + i * PAGE).to_le_bytes())
                .collect();
            self.write_mem(PRP_LIST_PAGE * PAGE, &list);
            PRP_LIST_PAGE * PAGE
        };
    }

    /// Writes `cmd` at the tail of the guest's SQ `qid` and rings its doorbell; returns false if
    /// the guest has no such queue.
    fn submit(&mut self, qid: u16, mut cmd: Command, change: Option<Change>) -> bool {
        let Some(sq) = self.view.sqs.get_mut(&qid) else {
            return false;
        };
        let cid = self.view.next_cid;
        self.view.next_cid = cid.wrapping_add(1);
        cmd.cdw0 = cmd.cdw0.with_cid(cid);
        let at = sq.base + u64::from(sq.tail) * 64;
        sq.tail = (sq.tail + 1) % sq.entries;
        let tail = sq.tail;
        self.write_mem(at, cmd.as_bytes());
        self.doorbell(2 * qid, tail);
        if let Some(change) = change {
            self.view.pending.insert(cid, change);
        }
        self.view.recent.push((qid, cid));
        if self.view.recent.len() > 8 {
            self.view.recent.remove(0);
        }
        true
    }

    fn admin(&mut self, admin: &Admin) {
        let op = |opcode: u8| Command {
            cdw0: Cdw0::new().with_opcode(opcode),
            ..Command::default()
        };
        let data = DATA_PAGE * PAGE;
        let (cmd, change) = match *admin {
            Admin::CreateCq {
                qid,
                qsize,
                at,
                ien,
                iv,
                pc,
            } => {
                let own = ring_page(qid) + 1;
                let base = Self::address(at, own);
                let mut cmd = op(0x05);
                cmd.prp1 = base;
                cmd.cdw10 = u32::from(qid) | u32::from(qsize) << 16;
                cmd.cdw11 = u32::from(pc) | u32::from(ien) << 1 | u32::from(iv) << 16;
                let view = CqView {
                    base,
                    entries: u32::from(qsize) + 1,
                    head: 0,
                    phase: true,
                };
                (cmd, Some(Change::NewCq(qid, view)))
            }
            Admin::CreateSq {
                qid,
                qsize,
                at,
                cqid,
                qprio,
                pc,
            } => {
                let base = Self::address(at, ring_page(qid));
                let mut cmd = op(0x01);
                cmd.prp1 = base;
                cmd.cdw10 = u32::from(qid) | u32::from(qsize) << 16;
                cmd.cdw11 = u32::from(pc) | u32::from(qprio) << 1 | u32::from(cqid) << 16;
                let view = SqView {
                    base,
                    entries: u32::from(qsize) + 1,
                    tail: 0,
                };
                (cmd, Some(Change::NewSq(qid, view)))
            }
            Admin::DeleteSq(qid) => {
                let mut cmd = op(0x00);
                cmd.cdw10 = qid.into();
                (cmd, Some(Change::GoneSq(qid)))
            }
            Admin::DeleteCq(qid) => {
                let mut cmd = op(0x04);
                cmd.cdw10 = qid.into();
                (cmd, Some(Change::GoneCq(qid)))
            }
            Admin::Identify {
                cns,
                nsid,
                cntid,
                at,
            } => {
                let mut cmd = op(0x06);
                cmd.nsid = nsid;
                cmd.cdw10 = u32::from(cns) | u32::from(cntid) << 16;
                self.prps(&mut cmd, Self::address(at, DATA_PAGE), PAGE);
                (cmd, None)
            }
            Admin::GetLogPage {
                lid,
                dwords,
                offset,
                rae,
                at,
            } => {
                let numd = dwords.saturating_sub(1);
                let mut cmd = op(0x02);
                cmd.nsid = u32::MAX;
                cmd.cdw10 = u32::from(lid) | u32::from(rae) << 15 | (numd & 0xFFFF) << 16;
                cmd.cdw11 = numd >> 16;
                cmd.cdw12 = offset;
                let len = (u64::from(dwords) * 4).min(2 * PAGE);
                self.prps(&mut cmd, Self::address(at, DATA_PAGE), len);
                (cmd, None)
            }
            Admin::SetFeatures { fid, cdw11, save } => {
                let mut cmd = op(0x09);
                cmd.cdw10 = u32::from(fid) | u32::from(save) << 31;
                cmd.cdw11 = cdw11;
                cmd.prp1 = data;
                (cmd, None)
            }
            Admin::SetTimestamp(value) => {
                self.write_mem(TIMESTAMP_PAGE * PAGE, &value.to_le_bytes());
                let mut cmd = op(0x09);
                cmd.cdw10 = 0x0E;
                cmd.prp1 = TIMESTAMP_PAGE * PAGE;
                (cmd, None)
            }
            Admin::GetFeatures { fid, sel, cdw11 } => {
                let mut cmd = op(0x0A);
                cmd.cdw10 = u32::from(fid) | u32::from(sel) << 8;
                cmd.cdw11 = cdw11;
                cmd.prp1 = if fid == 0x0E {
                    TIMESTAMP_PAGE * PAGE
                } else {
                    data
                };
                (cmd, None)
            }
            Admin::AsyncEventRequest => (op(0x0C), None),
            Admin::Abort { sqid, target } => {
                let cid = match target {
                    Target::Recent(i) if !self.view.recent.is_empty() => {
                        self.view.recent[usize::from(i) % self.view.recent.len()].1
                    }
                    Target::Recent(i) => i.into(),
                    Target::Cid(cid) => cid,
                };
                let mut cmd = op(0x08);
                cmd.cdw10 = u32::from(sqid) | u32::from(cid) << 16;
                (cmd, None)
            }
            Admin::KeepAlive => (op(0x18), None),
            Admin::Other { opcode, fuse } => {
                let mut cmd = op(opcode);
                cmd.cdw0 = cmd.cdw0.with_fuse(fuse);
                cmd.prp1 = data;
                (cmd, None)
            }
        };
        self.submit(0, cmd, change);
    }

    fn io(&mut self, sq: u8, io: &Io) {
        let io_sqs: Vec<u16> = self.view.sqs.keys().copied().filter(|&q| q > 0).collect();
        if io_sqs.is_empty() {
            return;
        }
        let qid = io_sqs[usize::from(sq) % io_sqs.len()];
        let op = |opcode: u8, nsid: u32| Command {
            cdw0: Cdw0::new().with_opcode(opcode),
            nsid,
            ..Command::default()
        };
        let lba = |cmd: &mut Command, slba: u64, nlb: u16| {
            cmd.cdw10 = slba as u32;
            cmd.cdw11 = (slba >> 32) as u32;
            cmd.cdw12 = u32::from(nlb);
        };
        let cmd = match *io {
            Io::Read {
                nsid,
                slba,
                nlb,
                to,
            } => {
                let mut cmd = op(0x02, nsid);
                lba(&mut cmd, slba, nlb);
                self.buffer(&mut cmd, to, nlb);
                cmd
            }
            Io::Write {
                nsid,
                slba,
                nlb,
                from,
                fill,
            } => {
                let mut cmd = op(0x01, nsid);
                lba(&mut cmd, slba, nlb);
                let start = DATA_PAGE * PAGE + u64::from(from.page) % DATA_PAGES * PAGE;
                let len = (u64::from(nlb) + 1) * BLOCK;
                let end = (start + len).min((DATA_PAGE + DATA_PAGES) * PAGE);
                let pattern: Vec<u8> = (start..end).map(|i| fill ^ (i as u8)).collect();
                self.write_mem(start, &pattern);
                self.buffer(&mut cmd, from, nlb);
                cmd
            }
            Io::Flush { nsid } => op(0x00, nsid),
            Io::WriteZeroes {
                nsid,
                slba,
                nlb,
                deallocate,
            } => {
                let mut cmd = op(0x08, nsid);
                lba(&mut cmd, slba, nlb);
                cmd.cdw12 |= u32::from(deallocate) << 25;
                cmd
            }
            Io::DatasetManagement {
                nsid,
                ref ranges,
                deallocate,
            } => {
                let list: Vec<u8> = ranges
                    .iter()
                    .flat_map(|&(slba, nlb)| {
                        let mut range = [0u8; 16];
                        range[4..8].copy_from_slice(&nlb.to_le_bytes());
                        range[8..].copy_from_slice(&slba.to_le_bytes());
                        range
                    })
                    .collect();
                let at = (DATA_PAGE + DATA_PAGES - 1) * PAGE;
                self.write_mem(at, &list);
                let mut cmd = op(0x09, nsid);
                cmd.prp1 = at;
                cmd.cdw10 = ranges.len() as u32 - 1;
                cmd.cdw11 = u32::from(deallocate) << 2;
                cmd
            }
            Io::Other { opcode } => op(opcode, 1),
        };
        self.submit(qid, cmd, None);
    }

    /// Points an I/O command's PRPs at `buffer`, for `nlb` + 1 blocks.
    fn buffer(&self, cmd: &mut Command, buffer: Buffer, nlb: u16) {
        let len = ((u64::from(nlb) + 1) * BLOCK).min(4 * PAGE);
        let page = DATA_PAGE + u64::from(buffer.page) % DATA_PAGES;
        match buffer.fault {
            Some(Place::Unmapped) => self.prps(cmd, UNMAPPED, len),
            Some(_) => {
                self.prps(cmd, page * PAGE, len);
                cmd.prp2 |= 0x3;
            }
            None => self.prps(cmd, page * PAGE + u64::from(buffer.offset) % PAGE, len),
        }
    }

    /// Does `action`; the guest's writes reach the controller between two of its passes.
    pub(crate) fn act(&mut self, action: &Action) {
        let reg = |side: &Self, offset: u64, value: u32| {
            side.bar.write32(offset, value).unwrap();
        };
        match action {
            Action::Enable {
                sq_entries,
                cq_entries,
                at,
            } => {
                let acq = Self::address(*at, ADMIN_CQ_PAGE);
                reg(self, Register::CC.0, 0);
                reg(
                    self,
                    Register::AQA.0,
                    (sq_entries - 1) | (cq_entries - 1) << 16,
                );
                reg(self, Register::ASQ.0, (ADMIN_SQ_PAGE * PAGE) as u32);
                reg(self, Register::ASQ.0 + 4, 0);
                reg(self, Register::ACQ.0, acq as u32);
                reg(self, Register::ACQ.0 + 4, (acq >> 32) as u32);
                reg(self, Register::CC.0, 1 | 6 << 16 | 4 << 20);
            }
            // Register writes may reset or enable the controller, which takes the lock
            // `between_passes` holds; each does so at once.
            Action::Cc(value) => reg(self, Register::CC.0, *value),
            Action::Register { offset, value } => reg(self, *offset, *value),
            _ => {
                let vf = self.host.subsystem().secondary(1).unwrap().clone();
                testing::between_passes(&vf, || match action {
                    Action::Admin(admin) => self.admin(admin),
                    Action::Io { sq, cmd } => self.io(*sq, cmd),
                    Action::Doorbell { index, value } => self.doorbell(*index, *value),
                    Action::Ack { cq } => {
                        let cqs: Vec<(u16, u32)> =
                            self.view.cqs.iter().map(|(&q, v)| (q, v.head)).collect();
                        if !cqs.is_empty() {
                            let (qid, head) = cqs[usize::from(*cq) % cqs.len()];
                            self.doorbell(2 * qid + 1, head);
                        }
                    }
                    _ => unreachable!("register writes are handled above"),
                });
            }
        }
    }

    /// Settles the controller and returns what the guest sees now, updating its view.
    pub(crate) fn observe(&mut self) -> Observation {
        testing::settle(self.vf());
        let vf = self.vf();
        let mut registers: Vec<u64> = [
            (Register::CAP.0, 8),
            (Register::VS.0, 4),
            (Register::INTMS.0, 4),
            (Register::CC.0, 4),
            (Register::CSTS.0, 4),
            (Register::AQA.0, 4),
            (Register::ASQ.0, 8),
            (Register::ACQ.0, 8),
        ]
        .iter()
        .map(|&(offset, size)| vf.read_register(offset, size))
        .collect();
        registers.extend(
            (0..DOORBELLS).map(|i| vf.read_register(Register::DOORBELLS.0 + 4 * u64::from(i), 4)),
        );
        let csts = registers[4];
        let ready = csts & 1 == 1;
        if !ready {
            // Disabled or reset: every queue is gone.
            self.view.sqs.clear();
            self.view.cqs.clear();
            self.view.pending.clear();
        } else if let std::collections::btree_map::Entry::Vacant(admin) = self.view.sqs.entry(0) {
            // Just enabled: the admin queues are where AQA, ASQ and ACQ said.
            let aqa = registers[5] as u32;
            admin.insert(SqView {
                base: registers[6],
                entries: (aqa & 0xFFF) + 1,
                tail: 0,
            });
            self.view.cqs.insert(
                0,
                CqView {
                    base: registers[7],
                    entries: (aqa >> 16 & 0xFFF) + 1,
                    head: 0,
                    phase: true,
                },
            );
        }
        let completions = self.reap();
        let counts: Vec<u64> = (0..VECTORS)
            .map(|v| self.host.interrupts(Function::Vf(1)).count(v))
            .collect();
        let interrupts = counts
            .iter()
            .zip(&self.interrupts)
            .map(|(now, before)| now - before)
            .collect();
        self.interrupts = counts;
        let mut bytes = vec![0u8; GUEST_BYTES as usize];
        self.mem.read(0, &mut bytes).unwrap();
        let pages = bytes
            .chunks(PAGE as usize)
            .enumerate()
            .filter(|&(i, _)| i as u64 != TIMESTAMP_PAGE)
            .map(|(_, page)| crc32fast::hash(page))
            .collect();
        let at = (TIMESTAMP_PAGE * PAGE) as usize;
        let ts = Timestamp::read_from_bytes(&bytes[at..at + 8]).unwrap();
        Observation {
            completions,
            registers,
            interrupts,
            pages,
            timestamp: (ts.timestamp(), ts.synch(), ts.origin()),
        }
    }

    /// Reads every new completion of every queue the guest knows, applying the admin ones to
    /// its view.
    fn reap(&mut self) -> Vec<(u16, Completion)> {
        let mut out = Vec::new();
        for (&qid, cq) in self.view.cqs.iter_mut() {
            for _ in 0..cq.entries {
                let mut raw = [0u8; 16];
                if self
                    .mem
                    .read(cq.base + u64::from(cq.head) * 16, &mut raw)
                    .is_err()
                {
                    break;
                }
                let entry = Completion::read_from_bytes(&raw).unwrap();
                if entry.status.phase() != cq.phase {
                    break;
                }
                cq.head = (cq.head + 1) % cq.entries;
                if cq.head == 0 {
                    cq.phase = !cq.phase;
                }
                out.push((qid, entry));
            }
        }
        for &(qid, entry) in &out {
            if qid != 0 {
                continue;
            }
            let Some(change) = self.view.pending.remove(&entry.cid) else {
                continue;
            };
            if entry.status.status() != Status::SUCCESS {
                continue;
            }
            match change {
                Change::NewSq(q, view) => {
                    self.view.sqs.insert(q, view);
                }
                Change::NewCq(q, view) => {
                    self.view.cqs.insert(q, view);
                }
                Change::GoneSq(q) => {
                    self.view.sqs.remove(&q);
                }
                Change::GoneCq(q) => {
                    self.view.cqs.remove(&q);
                }
            }
        }
        out
    }
}

/// The guest's own ring page of I/O SQ `qid` (its CQ's is the next): queue pairs 1..=3 have
/// theirs, other identifiers share the spare pages.
pub(crate) fn ring_page(qid: u16) -> u64 {
    if (1..=IO_QUEUE_PAIRS).contains(&qid) {
        FIRST_RING_PAGE + 2 * u64::from(qid - 1)
    } else {
        SPARE_PAGE + 2 * (u64::from(qid) % 6)
    }
}
