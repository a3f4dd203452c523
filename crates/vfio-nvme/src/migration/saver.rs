//! The saving side of the stream: what the source still has to send, and the
//! [`vfio_migration::SaveSource`] that produces it on demand.
//!
//! Nothing is buffered beyond one record: each read produces the next record from the current
//! namespace contents. Order of the stream: the header; every allocated range of every namespace
//! not on shared storage (the "initial" data); the ranges the User Data Migration Queue reported
//! changed ("dirty"), repeatedly, for as long as PRE_COPY lasts; and in STOP_COPY the last
//! changes, the controller state, the function's PCI face and the end record.

use std::sync::Arc;
use std::sync::Mutex;

use nvme_spec::lm::LbaMigrationQueueEntry;
use vfio_migration::PrecopyInfo;
use vfio_migration::SavePhase;
use vfio_migration::SaveSource;

use super::driver::Core;
use super::driver::changed_bytes;
use super::error::MigrationError;
use super::ranges::RangeSet;
use super::user_data::UserData;
use crate::stream::NamespaceGeometry;
use crate::stream::PciFaceState;
use crate::stream::StreamEncoder;
use crate::stream::StreamHeader;

/// Largest user-data record the source writes.
const CHUNK: u64 = 256 * 1024;
/// Records produced between two drains of the User Data Migration Queue (across reads), so the
/// queue keeps up with a guest writing while a large namespace is copied: 16 MiB of data, a few
/// milliseconds of copying.
const DRAIN_EVERY: u32 = 64;

/// One namespace's copy progress.
#[derive(Debug)]
struct Progress {
    geometry: NamespaceGeometry,
    /// Allocated ranges not yet sent.
    initial: RangeSet,
    /// Ranges changed since they were sent.
    dirty: RangeSet,
}

/// The source's progress through the stream.
#[derive(Debug)]
pub(crate) struct Saver {
    encoder: Option<StreamEncoder>,
    /// Encoded bytes not yet read, from `pos`.
    out: Vec<u8>,
    pos: usize,
    namespaces: Vec<Progress>,
    /// The controller state, once STOP_COPY captured it; taken when its record is written.
    state: Option<Vec<u8>>,
    /// The function's PCI face, captured with the controller state; taken when written.
    pci_face: Option<PciFaceState>,
    stop_copy: bool,
    /// Records produced since the User Data Migration Queue was last drained.
    since_drain: u32,
}

impl Saver {
    /// Starts a stream for `header`'s device: the header is ready to read and every allocated
    /// range of every local namespace is pending.
    pub fn new(header: &StreamHeader, user: &dyn UserData) -> Result<Self, MigrationError> {
        let mut out = Vec::new();
        let encoder =
            StreamEncoder::new(header.clone(), &mut out).map_err(MigrationError::Encode)?;
        let mut namespaces = Vec::new();
        for geometry in user.namespaces().into_iter().filter(|g| !g.shared) {
            namespaces.push(Progress {
                initial: allocated(&geometry, user)?,
                geometry,
                dirty: RangeSet::new(),
            });
        }
        Ok(Self {
            encoder: Some(encoder),
            out,
            pos: 0,
            namespaces,
            state: None,
            pci_face: None,
            stop_copy: false,
            since_drain: 0,
        })
    }

    /// Records an LBA change reported by the User Data Migration Queue.
    pub fn note_change(&mut self, entry: &LbaMigrationQueueEntry, _user: &dyn UserData) {
        let Some(ns) = self
            .namespaces
            .iter_mut()
            .find(|p| p.geometry.nsid == entry.nsid)
        else {
            // Markers, and changes to shared namespaces (nothing to copy).
            return;
        };
        if let Some(range) = changed_bytes(entry, ns.geometry.lba_shift, ns.geometry.bytes()) {
            ns.dirty.insert(range);
        }
    }

    /// Marks every allocated range of every namespace as changed (after the queue overflowed and
    /// changes went unlogged).
    pub fn mark_all_dirty(&mut self, user: &dyn UserData) -> Result<(), MigrationError> {
        for ns in &mut self.namespaces {
            for r in allocated(&ns.geometry, user)?.iter() {
                ns.dirty.insert(r);
            }
        }
        Ok(())
    }

    /// STOP_COPY captured the controller state and the function's PCI face (if it has one):
    /// after the remaining changes, the stream ends with them.
    pub fn finish_with(&mut self, state: Vec<u8>, pci_face: Option<PciFaceState>) {
        self.state = Some(state);
        self.pci_face = pci_face;
        self.stop_copy = true;
    }

    /// User-data bytes still to send plus buffered stream bytes.
    pub fn pending_bytes(&self) -> u64 {
        let data: u64 = self
            .namespaces
            .iter()
            .map(|p| p.initial.bytes() + p.dirty.bytes())
            .sum();
        let pci_face = self.pci_face.as_ref().map_or(0, |f| {
            crate::stream::pci_face_payload_len(f.vectors()) as u64
        });
        data + (self.out.len() - self.pos) as u64
            + self.state.as_ref().map_or(0, |s| s.len() as u64)
            + pci_face
    }

    /// What PRE_COPY reports: initial bytes left (plus unread stream bytes) and dirty bytes.
    pub fn precopy_info(&self) -> PrecopyInfo {
        let initial: u64 = self.namespaces.iter().map(|p| p.initial.bytes()).sum();
        let dirty: u64 = self.namespaces.iter().map(|p| p.dirty.bytes()).sum();
        PrecopyInfo {
            initial_bytes: initial + (self.out.len() - self.pos) as u64,
            dirty_bytes: dirty,
        }
    }

    /// Counts a produced record; true when the queue is due for a drain.
    fn drain_due(&mut self) -> bool {
        self.since_drain += 1;
        if self.since_drain >= DRAIN_EVERY {
            self.since_drain = 0;
            return true;
        }
        false
    }

    /// Copies buffered bytes into `buf`; returns how many.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.out.len() {
            self.out.clear();
            self.pos = 0;
        }
        n
    }

    /// Appends the next record to the buffer. Returns false when nothing is left for now.
    fn produce(&mut self, user: &dyn UserData) -> Result<bool, MigrationError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(false);
        };
        for ns in &mut self.namespaces {
            let set = if ns.initial.is_empty() {
                &mut ns.dirty
            } else {
                &mut ns.initial
            };
            let Some(range) = set.pop_front(CHUNK) else {
                continue;
            };
            let mut data = vec![0u8; (range.end - range.start) as usize];
            user.read(ns.geometry.nsid, range.start, &mut data)?;
            if data.iter().all(|&b| b == 0) {
                encoder
                    .deallocate(
                        ns.geometry.nsid,
                        range.start,
                        data.len() as u64,
                        &mut self.out,
                    )
                    .map_err(MigrationError::Encode)?;
            } else {
                encoder
                    .user_data(ns.geometry.nsid, range.start, &data, &mut self.out)
                    .map_err(MigrationError::Encode)?;
            }
            return Ok(true);
        }
        if !self.stop_copy {
            return Ok(false);
        }
        if let Some(state) = self.state.take() {
            encoder
                .controller_state(&state, &mut self.out)
                .map_err(MigrationError::Encode)?;
            return Ok(true);
        }
        if let Some(face) = self.pci_face.take() {
            encoder
                .pci_face(&face, &mut self.out)
                .map_err(MigrationError::Encode)?;
            return Ok(true);
        }
        if let Some(encoder) = self.encoder.take() {
            encoder.end(&mut self.out).map_err(MigrationError::Encode)?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The allocated ranges of a namespace, widened to whole blocks (backends report page-granular
/// ranges).
fn allocated(
    geometry: &NamespaceGeometry,
    user: &dyn UserData,
) -> Result<RangeSet, MigrationError> {
    let mut set = RangeSet::new();
    let block = geometry.block_size();
    for r in user.allocated(geometry.nsid)? {
        let start = r.start / block * block;
        let end = r
            .end
            .div_ceil(block)
            .saturating_mul(block)
            .min(geometry.bytes());
        set.insert(start..end);
    }
    Ok(set)
}

/// The saving session's data source: reads produce records from the shared driver state.
pub(crate) struct Source(pub Arc<Mutex<Core>>);

impl Source {
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SaveSource for Source {
    fn read(
        &mut self,
        buf: &mut [u8],
        phase: SavePhase,
    ) -> Result<usize, vfio_migration::StreamError> {
        let mut core = self.core();
        let mut n = 0;
        let mut drained = false;
        loop {
            let Core { saver, user, .. } = &mut *core;
            let saver = saver.as_mut().ok_or(MigrationError::NoSession)?;
            n += saver.take(&mut buf[n..]);
            if n == buf.len() {
                return Ok(n);
            }
            if saver.produce(user.as_ref())? {
                if saver.drain_due() {
                    core.drain_changes()?;
                }
                continue;
            }
            // Nothing left for now: in pre-copy, collect the latest changes once per read.
            if phase != SavePhase::StopCopy && !drained {
                drained = true;
                core.drain_changes()?;
                continue;
            }
            return Ok(n);
        }
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo, vfio_migration::StreamError> {
        let mut core = self.core();
        core.drain_changes()?;
        let saver = core.saver.as_ref().ok_or(MigrationError::NoSession)?;
        Ok(saver.precopy_info())
    }
}
