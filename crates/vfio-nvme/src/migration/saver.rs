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
use crate::stream::MAX_USER_DATA_BYTES;
use crate::stream::NamespaceGeometry;
use crate::stream::PciFaceState;
use crate::stream::StreamEncoder;
use crate::stream::StreamError;
use crate::stream::StreamHeader;
use crate::stream::USER_DATA_OVERHEAD;

/// Largest user-data record the source writes (the format's limit); a record is also cut to
/// fit the MIG_DATA_READ reply it goes into.
const CHUNK: u64 = MAX_USER_DATA_BYTES as u64;
/// User-data bytes produced between two drains of the User Data Migration Queue (across
/// reads), so the queue keeps up with a guest writing while a large namespace is copied: a few
/// milliseconds of copying.
const DRAIN_EVERY_BYTES: u64 = 16 << 20;

/// One namespace's copy progress.
#[derive(Debug)]
struct Progress {
    geometry: NamespaceGeometry,
    /// Allocated ranges not yet sent.
    initial: RangeSet,
    /// Ranges changed since they were sent.
    dirty: RangeSet,
}

/// What [`Saver::produce`] did.
#[derive(Debug, PartialEq, Eq)]
enum Produced {
    /// A record of this many bytes went straight into the reader's buffer.
    Direct(usize),
    /// A record went into the saver's own buffer (it did not fit, or it is not user data).
    Buffered,
    /// Nothing is left for now.
    Nothing,
}

/// An error while a record is produced: the encoder's or the backend's.
struct ProduceError(MigrationError);

impl From<StreamError> for ProduceError {
    fn from(e: StreamError) -> Self {
        Self(MigrationError::Encode(e))
    }
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
    /// User-data bytes produced since the User Data Migration Queue was last drained.
    since_drain: u64,
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

    /// Counts produced user-data bytes; true when the queue is due for a drain.
    fn drain_due(&mut self, bytes: u64) -> bool {
        self.since_drain += bytes;
        if self.since_drain >= DRAIN_EVERY_BYTES {
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

    /// Produces the next record. User data goes straight into `space` (the rest of the
    /// reader's buffer, which the saver's own buffer has been emptied into) as the largest
    /// whole-block record that fits; when not even one block fits, one block is buffered and
    /// continues in the next read. Every other record is buffered (they are small, except
    /// the controller state).
    fn produce(
        &mut self,
        space: &mut [u8],
        user: &dyn UserData,
    ) -> Result<Produced, MigrationError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(Produced::Nothing);
        };
        for ns in &mut self.namespaces {
            let set = if ns.initial.is_empty() {
                &mut ns.dirty
            } else {
                &mut ns.initial
            };
            let block = ns.geometry.block_size();
            let fits = space.len().saturating_sub(USER_DATA_OVERHEAD) as u64 / block * block;
            let Some(range) = set.pop_front(fits.clamp(block, CHUNK)) else {
                continue;
            };
            let (nsid, start) = (ns.geometry.nsid, range.start);
            let len = usize::try_from(range.end - start).unwrap_or(usize::MAX);
            let fill = |at: u64, piece: &mut [u8]| {
                user.read(nsid, start + at, piece)
                    .map_err(|e| ProduceError(MigrationError::Io(e)))
            };
            if len + USER_DATA_OVERHEAD <= space.len() {
                let n = encoder
                    .user_data_in_place(nsid, start, len, space, fill)
                    .map_err(|e| e.0)?;
                return Ok(Produced::Direct(n));
            }
            let at = self.out.len();
            self.out.resize(at + len + USER_DATA_OVERHEAD, 0);
            let written = encoder.user_data_in_place(nsid, start, len, &mut self.out[at..], fill);
            match written {
                Ok(n) => self.out.truncate(at + n),
                Err(e) => {
                    self.out.truncate(at);
                    return Err(e.0);
                }
            }
            return Ok(Produced::Buffered);
        }
        if !self.stop_copy {
            return Ok(Produced::Nothing);
        }
        if let Some(state) = self.state.take() {
            encoder
                .controller_state(&state, &mut self.out)
                .map_err(MigrationError::Encode)?;
            return Ok(Produced::Buffered);
        }
        if let Some(face) = self.pci_face.take() {
            encoder
                .pci_face(&face, &mut self.out)
                .map_err(MigrationError::Encode)?;
            return Ok(Produced::Buffered);
        }
        if let Some(encoder) = self.encoder.take() {
            encoder.end(&mut self.out).map_err(MigrationError::Encode)?;
            return Ok(Produced::Buffered);
        }
        Ok(Produced::Nothing)
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
            let before = n;
            match saver.produce(&mut buf[n..], user.as_ref())? {
                Produced::Direct(len) => n += len,
                Produced::Buffered => {}
                Produced::Nothing => {
                    // Nothing left for now: in pre-copy, collect the latest changes once per
                    // read.
                    if phase != SavePhase::StopCopy && !drained {
                        drained = true;
                        core.drain_changes()?;
                        continue;
                    }
                    return Ok(n);
                }
            }
            if saver.drain_due((n - before) as u64) {
                core.drain_changes()?;
            }
        }
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo, vfio_migration::StreamError> {
        let mut core = self.core();
        core.drain_changes()?;
        let saver = core.saver.as_ref().ok_or(MigrationError::NoSession)?;
        Ok(saver.precopy_info())
    }
}
