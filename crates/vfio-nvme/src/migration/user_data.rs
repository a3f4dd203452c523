//! How the migration driver reads and writes namespace contents: the [`UserData`] trait.
//!
//! TP4159 tells the driver *which* LBAs changed (through the User Data Migration Queue); the
//! data itself is copied by the host. On real hardware that is done with Read commands through
//! the primary controller on a namespace attached to it; in-process the driver reads the
//! namespace's backend directly ([`InProcessUserData`]).

use std::io;
use std::ops::Range;
use std::sync::Arc;

use nvme_device::namespace::Namespace;

use crate::stream::NamespaceGeometry;

/// Access to the contents of the namespaces attached to the migrating controller.
pub trait UserData: Send + Sync {
    /// The attached namespaces, in NSID order.
    fn namespaces(&self) -> Vec<NamespaceGeometry>;
    /// Byte ranges of namespace `nsid` that may hold data (everything else reads as zeros).
    fn allocated(&self, nsid: u32) -> io::Result<Vec<Range<u64>>>;
    /// Reads `buf.len()` bytes at byte `offset` of namespace `nsid`.
    fn read(&self, nsid: u32, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at byte `offset` of namespace `nsid`.
    fn write(&self, nsid: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` of namespace `nsid` read as zeros.
    fn deallocate(&self, nsid: u32, offset: u64, len: u64) -> io::Result<()>;
}

/// [`UserData`] over the backends of in-process namespaces.
#[derive(Debug, Clone)]
pub struct InProcessUserData {
    namespaces: Vec<Arc<Namespace>>,
}

impl InProcessUserData {
    /// Access to `namespaces` (those attached to the migrating controller).
    pub fn new(mut namespaces: Vec<Arc<Namespace>>) -> Self {
        namespaces.sort_by_key(|ns| ns.nsid());
        Self { namespaces }
    }

    fn find(&self, nsid: u32) -> io::Result<&Namespace> {
        self.namespaces
            .iter()
            .find(|ns| ns.nsid() == nsid)
            .map(|ns| ns.as_ref())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("namespace {nsid} is not attached to this controller"),
                )
            })
    }

    fn check(&self, nsid: u32, offset: u64, len: u64) -> io::Result<&Namespace> {
        let ns = self.find(nsid)?;
        if offset.checked_add(len).is_none_or(|end| end > ns.bytes()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset:#x}+{len:#x} is outside namespace {nsid} ({} bytes)",
                    ns.bytes()
                ),
            ));
        }
        Ok(ns)
    }
}

impl UserData for InProcessUserData {
    fn namespaces(&self) -> Vec<NamespaceGeometry> {
        self.namespaces
            .iter()
            .map(|ns| NamespaceGeometry {
                nsid: ns.nsid(),
                lba_shift: ns.block_size().shift(),
                blocks: ns.blocks(),
                shared: ns.shared(),
            })
            .collect()
    }

    fn allocated(&self, nsid: u32) -> io::Result<Vec<Range<u64>>> {
        let ns = self.find(nsid)?;
        let end = ns.bytes();
        Ok(ns
            .backend()
            .allocated()?
            .into_iter()
            .filter_map(|r| (r.start < end).then(|| r.start..r.end.min(end)))
            .collect())
    }

    fn read(&self, nsid: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(nsid, offset, buf.len() as u64)?
            .backend()
            .read(offset, buf)
    }

    fn write(&self, nsid: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(nsid, offset, data.len() as u64)?
            .backend()
            .write(offset, data)
    }

    fn deallocate(&self, nsid: u32, offset: u64, len: u64) -> io::Result<()> {
        self.check(nsid, offset, len)?
            .backend()
            .deallocate(offset, len)
    }
}
