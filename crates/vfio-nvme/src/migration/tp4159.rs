//! The TP4159 operations the migration driver performs, each built from real admin commands.

use nvme_driver::memory::DmaBuffer;
use nvme_spec::command::Command;
use nvme_spec::command::SetFeaturesCdw10;
use nvme_spec::features::FeatureId;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IDENTIFY_DATA_SIZE;
use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::SecondaryControllerEntry;
use nvme_spec::identify::SecondaryControllerList;
use nvme_spec::lm::ControllerStateHeader;
use nvme_spec::lm::CreateCdq;
use nvme_spec::lm::DeleteCdq;
use nvme_spec::lm::GetControllerState;
use nvme_spec::lm::LbaMigrationQueueEntry;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::LogUserDataChanges;
use nvme_spec::lm::LoggingAction;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetCdqFeature;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::SupportedControllerStateFormats;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::lm::Uuid;
use zerocopy::FromBytes;

use super::admin::LmAdmin;
use super::admin::LmError;
use super::admin::Transfer;

/// Size of one LBA migration queue entry.
const ENTRY_BYTES: u64 = 32;
/// Size of the controller state header.
const HEADER_BYTES: usize = 48;

fn encode(
    what: &str,
    cmd: Result<Command, nvme_spec::lm::LmEncodeError>,
) -> Result<Command, LmError> {
    cmd.map_err(|e| LmError::Protocol(format!("cannot encode {what}: {e}")))
}

/// Which state formats to ask for: CSVI (1-based index of NVMe state version 0) and CSUUIDI
/// (1-based index of our vendor UUID), both found through Identify CNS 20h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateFormats {
    /// Index of the NVMe controller state version 0 (0 when not offered).
    pub csvi: u8,
    /// Index of the vendor-specific state (0 when not offered).
    pub csuuidi: u8,
}

impl StateFormats {
    /// The formats the driver uses with a PF that offers `offered`: NVMe state version 0
    /// (required: it holds the I/O queues) and, when listed, the vendor format `vendor`. Other
    /// vendors' formats are not used: the stream does not name the format, so both ends must
    /// agree on it through its UUID, and only ours is known to be the same on both ends.
    pub fn choose(offered: &SupportedControllerStateFormats, vendor: Uuid) -> Option<Self> {
        let index = |pos: Option<usize>| pos.and_then(|p| u8::try_from(p + 1).ok());
        Some(Self {
            csvi: index(offered.versions.iter().position(|&v| v == 0))?,
            csuuidi: index(offered.uuids.iter().position(|u| *u == vendor)).unwrap_or(0),
        })
    }

    /// The formats a Set Controller State of `state` (a Controller State data structure) names:
    /// those of the parts its header says it carries. `None` if it carries a part this PF does
    /// not offer, or is not a controller state.
    pub fn carried_by(self, state: &[u8]) -> Option<Self> {
        let header = ControllerStateHeader::decode(state.get(..HEADER_BYTES)?).ok()?;
        let csvi = if header.nvmecss != 0 { self.csvi } else { 0 };
        let csuuidi = if header.vss != 0 { self.csuuidi } else { 0 };
        let offered = (header.nvmecss == 0 || csvi != 0) && (header.vss == 0 || csuuidi != 0);
        offered.then_some(Self { csvi, csuuidi })
    }
}

/// Reads Identify CNS 20h, the Supported Controller State Formats of the primary controller.
pub fn supported_formats(admin: &dyn LmAdmin) -> Result<SupportedControllerStateFormats, LmError> {
    let mut page = vec![0u8; IDENTIFY_DATA_SIZE];
    admin.execute(
        "Identify Supported Controller State Formats",
        Command::identify(0, Cns::SUPPORTED_CONTROLLER_STATE_FORMATS, 0, 0, 0),
        Transfer::FromController(&mut page),
    )?;
    SupportedControllerStateFormats::decode(&page)
        .map_err(|e| LmError::Protocol(format!("bad Supported Controller State Formats: {e}")))
}

/// Whether the primary controller logs user data changes into User Data Migration Queues
/// (Identify Controller TRATTR.TUDCS with at least one queue, MCUDMQ).
pub fn user_data_logging(admin: &dyn LmAdmin) -> Result<bool, LmError> {
    let id = identify_controller(admin)?;
    Ok(id.trattr.tudcs() && id.mcudmq > 0)
}

/// The primary controller's Identify Controller data (CNS 01h).
pub fn identify_controller(admin: &dyn LmAdmin) -> Result<IdentifyController, LmError> {
    let mut page = vec![0u8; IDENTIFY_DATA_SIZE];
    admin.execute(
        "Identify Controller",
        Command::identify(0, Cns::CONTROLLER, 0, 0, 0),
        Transfer::FromController(&mut page),
    )?;
    IdentifyController::read_from_bytes(&page)
        .map_err(|_| LmError::Protocol("short Identify Controller data".to_owned()))
}

/// Reads the whole Secondary Controller List (Identify CNS 15h), asking again from the next
/// CNTLID while a page comes back full (127 entries).
pub fn secondary_controllers(
    admin: &dyn LmAdmin,
) -> Result<Vec<SecondaryControllerEntry>, LmError> {
    let mut all: Vec<SecondaryControllerEntry> = Vec::new();
    let mut first = 0u16;
    loop {
        let mut page = vec![0u8; IDENTIFY_DATA_SIZE];
        admin.execute(
            &format!("Identify Secondary Controller List from CNTLID {first}"),
            Command::identify(0, Cns::SECONDARY_CONTROLLER_LIST, 0, first, 0),
            Transfer::FromController(&mut page),
        )?;
        let list = SecondaryControllerList::read_from_bytes(&page)
            .map_err(|_| LmError::Protocol("short Secondary Controller List".to_owned()))?;
        let entries = list.valid_entries();
        // Entries at or after `first` only: a device that ignores CNTID cannot make this loop.
        all.extend(entries.iter().filter(|e| e.scid >= first));
        let full = entries.len() == SecondaryControllerList::MAX_ENTRIES;
        match entries.iter().map(|e| e.scid).max() {
            Some(last) if full && last >= first && last < u16::MAX => first = last + 1,
            _ => break,
        }
    }
    all.sort_by_key(|e| e.scid);
    all.dedup_by_key(|e| e.scid);
    Ok(all)
}

/// The CNTLID of the secondary controller behind virtual function `vfn` (1-based), from the
/// Secondary Controller List.
pub fn secondary_cntlid(admin: &dyn LmAdmin, vfn: u16) -> Result<u16, LmError> {
    let list = secondary_controllers(admin)?;
    list.iter()
        .find(|e| e.vfn == vfn)
        .map(|e| e.scid)
        .ok_or_else(|| LmError::NoSuchSecondary {
            vfn,
            listed: list.iter().map(|e| e.vfn).collect(),
        })
}

/// Reads Identify CNS 20h and chooses the formats to migrate with (see
/// [`StateFormats::choose`]); a PF without NVMe state version 0 cannot migrate.
pub fn state_formats(admin: &dyn LmAdmin, vendor: Uuid) -> Result<StateFormats, LmError> {
    let offered = supported_formats(admin)?;
    StateFormats::choose(&offered, vendor).ok_or_else(|| {
        LmError::Protocol(format!(
            "the primary controller does not offer NVMe controller state version 0 (Identify \
             CNS 20h lists versions {:?} and {} vendor formats); this driver needs it",
            offered.versions,
            offered.uuids.len()
        ))
    })
}

/// Migration Send Suspend (STYPE 1) of controller `cntlid`, optionally deleting its User Data
/// Migration Queue.
pub fn suspend(admin: &dyn LmAdmin, cntlid: u16, delete_udmq: bool) -> Result<(), LmError> {
    let what = format!("Migration Send (Suspend) of controller {cntlid}");
    let cmd = encode(
        &what,
        Suspend {
            cntlid,
            stype: SuspendType::SUSPEND,
            dudmq: delete_udmq,
        }
        .encode(),
    )?;
    admin.execute(&what, cmd, Transfer::None).map(drop)
}

/// Migration Send Resume of controller `cntlid`.
pub fn resume(admin: &dyn LmAdmin, cntlid: u16) -> Result<(), LmError> {
    let what = format!("Migration Send (Resume) of controller {cntlid}");
    let cmd = encode(&what, Resume { cntlid }.encode())?;
    admin.execute(&what, cmd, Transfer::None).map(drop)
}

/// Migration Receive Get Controller State of `cntlid` in `formats`, read in chunks that respect
/// the primary controller's MDTS: the header first, then the rest by offset.
pub fn get_state(
    admin: &dyn LmAdmin,
    cntlid: u16,
    formats: StateFormats,
) -> Result<Vec<u8>, LmError> {
    let what = format!("Migration Receive (Get Controller State) of controller {cntlid}");
    let read = |offset: u64, buf: &mut [u8]| -> Result<u32, LmError> {
        let cmd = encode(
            &what,
            GetControllerState {
                csvi: formats.csvi,
                cntlid,
                csuuidi: formats.csuuidi,
                csuidxp: 0,
                offset,
                uidx: 0,
                numd: GetControllerState::numd_for_len(buf.len() as u64)
                    .map_err(|e| LmError::Protocol(e.to_string()))?,
            }
            .encode(),
        )?;
        admin.execute(&what, cmd, Transfer::FromController(buf))
    };
    let mut header = [0u8; HEADER_BYTES];
    read(0, &mut header)?;
    let total = ControllerStateHeader::decode(&header)
        .and_then(|h| h.total_len())
        .map_err(|e| LmError::Protocol(format!("{what}: bad state header: {e}")))?;
    let chunk = (admin.max_transfer() as usize).max(4096) & !3;
    let mut state = vec![0u8; total];
    state[..HEADER_BYTES].copy_from_slice(&header);
    let mut offset = HEADER_BYTES;
    while offset < total {
        let n = chunk.min(total - offset);
        // Dword multiples only; the total is a multiple of 4 by construction.
        read(offset as u64, &mut state[offset..offset + n])?;
        offset += n;
    }
    Ok(state)
}

/// Migration Send Set Controller State of `cntlid` with `state`, in chunks under MDTS with
/// SEQIND first/middle/last (or "only" when one chunk suffices).
pub fn set_state(
    admin: &dyn LmAdmin,
    cntlid: u16,
    formats: StateFormats,
    state: &[u8],
) -> Result<(), LmError> {
    let what = format!("Migration Send (Set Controller State) of controller {cntlid}");
    if !state.len().is_multiple_of(4) {
        return Err(LmError::Protocol(format!(
            "{what}: state length {} is not a whole number of dwords",
            state.len()
        )));
    }
    let chunk = (admin.max_transfer() as usize).max(4096) & !3;
    let chunks: Vec<&[u8]> = state.chunks(chunk).collect();
    let last = chunks.len().saturating_sub(1);
    let mut offset = 0u64;
    for (i, data) in chunks.iter().enumerate() {
        let seqind = match (i == 0, i == last) {
            (true, true) => SequenceIndicator::ONLY,
            (true, false) => SequenceIndicator::FIRST,
            (false, true) => SequenceIndicator::LAST,
            (false, false) => SequenceIndicator::MIDDLE,
        };
        let cmd = encode(
            &what,
            SetControllerState {
                seqind,
                cntlid,
                csvi: formats.csvi,
                csuuidi: formats.csuuidi,
                offset,
                uidx: 0,
                numd: SetControllerState::numd_for_len(data.len() as u64)
                    .map_err(|e| LmError::Protocol(e.to_string()))?,
            }
            .encode(),
        )?;
        admin.execute(&what, cmd, Transfer::ToController(data))?;
        offset += data.len() as u64;
    }
    Ok(())
}

/// A User Data Migration Queue the primary controller fills with the LBA changes of one
/// secondary controller, and the host's consumer position in it.
#[derive(Debug)]
pub struct Udmq {
    cdqid: u16,
    ring: DmaBuffer,
    entries: u32,
    head: u32,
    /// Phase tag of a new entry at the current head.
    phase: bool,
}

impl Udmq {
    /// Creates a queue of `entries` 32-byte entries (zeroed, so the first pass carries phase 1)
    /// logging controller `cntlid`.
    pub fn create(admin: &dyn LmAdmin, cntlid: u16, entries: u32) -> Result<Self, LmError> {
        let what = format!("Controller Data Queue (Create) for controller {cntlid}");
        let memory = admin.memory().ok_or_else(|| {
            LmError::Protocol(format!(
                "{what}: the primary controller is reached without memory it can keep writing \
                 to (e.g. through the Linux admin pass-through), so it cannot fill a queue"
            ))
        })?;
        let ring = memory
            .alloc(u64::from(entries) * ENTRY_BYTES)
            .map_err(|source| LmError::Driver {
                what: what.clone(),
                source,
            })?;
        let cdqsize = (u64::from(entries) * ENTRY_BYTES / 4) as u32;
        let cmd = encode(
            &what,
            CreateCdq::user_data_migration_queue(cntlid, ring.iova(), cdqsize).encode(),
        )?;
        let dw0 = admin.execute(&what, cmd, Transfer::None)?;
        Ok(Self {
            cdqid: dw0 as u16,
            ring,
            entries,
            head: 0,
            phase: true,
        })
    }

    /// The queue's identifier.
    pub fn cdqid(&self) -> u16 {
        self.cdqid
    }

    /// Track Send: starts (`true`) or stops LBA change logging into this queue.
    pub fn track(&self, admin: &dyn LmAdmin, start: bool) -> Result<(), LmError> {
        let what = format!(
            "Track Send ({} logging) on queue {}",
            if start { "start" } else { "stop" },
            self.cdqid
        );
        let cmd = encode(
            &what,
            LogUserDataChanges {
                lact: if start {
                    LoggingAction::START
                } else {
                    LoggingAction::STOP
                },
                cdqid: self.cdqid,
            }
            .encode(),
        )?;
        admin.execute(&what, cmd, Transfer::None).map(drop)
    }

    /// Consumes every new entry and tells the controller the new head (Set Features 21h).
    pub fn drain(&mut self, admin: &dyn LmAdmin) -> Result<Vec<LbaMigrationQueueEntry>, LmError> {
        let mut out = Vec::new();
        loop {
            let mut raw = [0u8; ENTRY_BYTES as usize];
            self.ring.read(u64::from(self.head) * ENTRY_BYTES, &mut raw);
            // The phase tag is in the attribute byte (31), bit 0: read it before the rest.
            if (raw[31] & 1 != 0) != self.phase {
                break;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            self.ring.read(u64::from(self.head) * ENTRY_BYTES, &mut raw);
            let entry = LbaMigrationQueueEntry::decode(&raw)
                .map_err(|e| LmError::Protocol(format!("bad LBA migration queue entry: {e}")))?;
            out.push(entry);
            self.head += 1;
            if self.head == self.entries {
                self.head = 0;
                self.phase = !self.phase;
            }
        }
        if !out.is_empty() {
            let what = format!(
                "Set Features (Controller Data Queue head) on queue {}",
                self.cdqid
            );
            let cmd = encode(
                &what,
                SetCdqFeature {
                    cdqid: self.cdqid,
                    etpt: false,
                    hp: self.head,
                    tpt: 0,
                }
                .encode(),
            )?;
            debug_assert_eq!(
                SetFeaturesCdw10::from(cmd.cdw10).fid(),
                FeatureId::CONTROLLER_DATA_QUEUE
            );
            admin.execute(&what, cmd, Transfer::None)?;
        }
        Ok(out)
    }

    /// Deletes the queue (which also stops logging).
    pub fn delete(self, admin: &dyn LmAdmin) -> Result<(), LmError> {
        let what = format!("Controller Data Queue (Delete) of queue {}", self.cdqid);
        let cmd = encode(&what, DeleteCdq { cdqid: self.cdqid }.encode())?;
        admin.execute(&what, cmd, Transfer::None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use nvme_driver::memory::HostMemory;
    use nvme_spec::command::IdentifyCdw10;
    use nvme_spec::lm::ControllerState;
    use nvme_spec::lm::ControllerStateAttributes;
    use zerocopy::FromZeros;
    use zerocopy::IntoBytes;

    use super::*;

    const OURS: Uuid = Uuid([7; 16]);

    #[test]
    fn formats_are_v0_plus_ours_when_listed() {
        let offered = |versions: &[u16], uuids: &[Uuid]| SupportedControllerStateFormats {
            versions: versions.to_vec(),
            uuids: uuids.to_vec(),
        };
        let other = Uuid([9; 16]);
        let choose = |o| StateFormats::choose(&o, OURS);
        assert_eq!(
            choose(offered(&[0], &[])),
            Some(StateFormats {
                csvi: 1,
                csuuidi: 0
            })
        );
        assert_eq!(
            choose(offered(&[3, 0], &[other, OURS])),
            Some(StateFormats {
                csvi: 2,
                csuuidi: 2
            })
        );
        // Another vendor's format alone is not used; without v0 there is nothing to migrate.
        assert_eq!(
            choose(offered(&[0], &[other])),
            Some(StateFormats {
                csvi: 1,
                csuuidi: 0
            })
        );
        assert_eq!(choose(offered(&[1], &[OURS])), None);
    }

    #[test]
    fn a_set_names_the_parts_the_state_carries() {
        let state = |nvmecs: usize, vendor: usize| {
            ControllerState::new(
                0,
                ControllerStateAttributes::new(),
                vec![0; nvmecs],
                vec![0; vendor],
            )
            .unwrap()
            .encode()
        };
        let both = StateFormats {
            csvi: 1,
            csuuidi: 2,
        };
        let v0 = StateFormats {
            csvi: 1,
            csuuidi: 0,
        };
        assert_eq!(both.carried_by(&state(8, 0)), Some(v0));
        assert_eq!(both.carried_by(&state(8, 4)), Some(both));
        assert_eq!(v0.carried_by(&state(8, 0)), Some(v0));
        assert_eq!(
            v0.carried_by(&state(8, 4)),
            None,
            "vendor state not offered"
        );
        assert_eq!(v0.carried_by(&[0; 20]), None, "no header");
    }

    /// A PF answering only Identify Secondary Controller List, for `count` secondaries with
    /// CNTLIDs from 10 and VFNs from 1, honouring CNTID; it records the CNTIDs asked for.
    struct ListingPf {
        count: u16,
        asked: Mutex<Vec<u16>>,
        mem: Arc<HostMemory>,
    }

    impl LmAdmin for ListingPf {
        fn execute(&self, _: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError> {
            let cdw10 = IdentifyCdw10::from(cmd.cdw10);
            assert_eq!(cdw10.cns(), Cns::SECONDARY_CONTROLLER_LIST);
            self.asked.lock().unwrap().push(cdw10.cntid());
            let entries: Vec<SecondaryControllerEntry> = (0..self.count)
                .map(|i| {
                    let mut e = SecondaryControllerEntry::new_zeroed();
                    (e.scid, e.vfn, e.scs) = (10 + i, 1 + i, 1);
                    e
                })
                .filter(|e| e.scid >= cdw10.cntid())
                .collect();
            let Transfer::FromController(buf) = data else {
                panic!("Identify reads data");
            };
            buf.copy_from_slice(SecondaryControllerList::from_entries(&entries).as_bytes());
            Ok(0)
        }

        fn memory(&self) -> Option<&Arc<HostMemory>> {
            Some(&self.mem)
        }

        fn max_transfer(&self) -> u64 {
            4096
        }
    }

    #[test]
    fn the_secondary_list_is_read_page_by_page_and_names_the_cntlid() {
        let pf = ListingPf {
            count: 300,
            asked: Mutex::new(Vec::new()),
            mem: HostMemory::new(4096, 0x1000).unwrap(),
        };
        let all = secondary_controllers(&pf).unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(*pf.asked.lock().unwrap(), [0, 137, 264]);
        assert_eq!(secondary_cntlid(&pf, 1).unwrap(), 10);
        assert_eq!(secondary_cntlid(&pf, 200).unwrap(), 209);
        let err = secondary_cntlid(&pf, 301).unwrap_err();
        assert!(
            matches!(err, LmError::NoSuchSecondary { vfn: 301, .. }),
            "{err}"
        );
    }
}
