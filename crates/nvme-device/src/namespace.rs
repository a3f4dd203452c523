//! Namespaces: a backend, a block size and an identity.

use std::fmt;
use std::sync::Arc;

use nvme_spec::status::Status;

use crate::backend::Backend;

/// Logical block sizes a namespace can be formatted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockSize {
    /// 512-byte logical blocks.
    B512,
    /// 4096-byte logical blocks.
    B4096,
}

impl BlockSize {
    /// log2 of the block size (LBADS in the LBA format).
    pub const fn shift(self) -> u8 {
        match self {
            Self::B512 => 9,
            Self::B4096 => 12,
        }
    }

    /// The block size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The block size whose LBADS is `shift`, if supported.
    pub const fn from_shift(shift: u8) -> Option<Self> {
        match shift {
            9 => Some(Self::B512),
            12 => Some(Self::B4096),
            _ => None,
        }
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

/// Identifiers a host uses to recognise a namespace across controllers and reboots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceIdentity {
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// Namespace UUID.
    pub uuid: [u8; 16],
}

impl NamespaceIdentity {
    /// A stable identity derived from a subsystem-wide seed (its serial number) and the NSID,
    /// so the same configuration always produces the same identifiers.
    pub fn derive(seed: &str, nsid: u32) -> Self {
        let mut h1 = fnv1a(seed.as_bytes(), 0xcbf2_9ce4_8422_2325);
        h1 = fnv1a(&nsid.to_le_bytes(), h1);
        let h2 = fnv1a(b"vfio-nvme namespace", h1);
        let mut nguid = [0u8; 16];
        nguid[..8].copy_from_slice(&h1.to_be_bytes());
        nguid[8..].copy_from_slice(&h2.to_be_bytes());
        let mut uuid = nguid;
        // RFC 9562 version 8 (custom) and variant 10b.
        uuid[6] = (uuid[6] & 0x0F) | 0x80;
        uuid[8] = (uuid[8] & 0x3F) | 0x80;
        let mut eui64 = [0u8; 8];
        eui64.copy_from_slice(&h2.to_be_bytes());
        // Locally administered, unicast.
        eui64[0] = (eui64[0] | 0x02) & !0x01;
        Self { nguid, eui64, uuid }
    }
}

fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// One namespace of the subsystem.
#[derive(Clone)]
pub struct Namespace {
    nsid: u32,
    backend: Arc<dyn Backend>,
    block_size: BlockSize,
    blocks: u64,
    shared: bool,
    identity: NamespaceIdentity,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("backend", &self.backend.kind())
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks)
            .field("shared", &self.shared)
            .finish()
    }
}

/// A namespace configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The backend is smaller than one block.
    #[error("namespace {nsid}: a {size}-byte backend holds no {block_size}-byte block")]
    TooSmall {
        /// Namespace identifier.
        nsid: u32,
        /// Backend size in bytes.
        size: u64,
        /// Requested block size.
        block_size: BlockSize,
    },
    /// NSID 0 and FFFFFFFFh are reserved.
    #[error("namespace identifier {0:#x} is reserved")]
    ReservedNsid(u32),
}

impl Namespace {
    /// Builds namespace `nsid` over `backend`. A backend size that is not a multiple of the block
    /// size leaves the tail unused.
    pub fn new(
        nsid: u32,
        backend: Arc<dyn Backend>,
        block_size: BlockSize,
        shared: bool,
        identity: NamespaceIdentity,
    ) -> Result<Self, NamespaceError> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(NamespaceError::ReservedNsid(nsid));
        }
        let blocks = backend.size() >> block_size.shift();
        if blocks == 0 {
            return Err(NamespaceError::TooSmall {
                nsid,
                size: backend.size(),
                block_size,
            });
        }
        Ok(Self {
            nsid,
            backend,
            block_size,
            blocks,
            shared,
            identity,
        })
    }

    /// The namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// The storage behind the namespace.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The logical block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// Size in logical blocks (NSZE = NCAP).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks << self.block_size.shift()
    }

    /// Whether the namespace may be attached to more than one controller (NMIC bit 0), e.g. the
    /// primary controller as well as a secondary one, so the PF can read what the VF wrote.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// The namespace's identifiers.
    pub fn identity(&self) -> &NamespaceIdentity {
        &self.identity
    }

    /// Checks that `blocks` blocks starting at `slba` lie inside the namespace and returns the
    /// byte range as `(offset, length)`.
    pub fn byte_range(&self, slba: u64, blocks: u64) -> Result<(u64, u64), Status> {
        let end = slba.checked_add(blocks).ok_or(Status::LBA_OUT_OF_RANGE)?;
        if end > self.blocks {
            return Err(Status::LBA_OUT_OF_RANGE);
        }
        let shift = self.block_size.shift();
        Ok((slba << shift, blocks << shift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NullBackend;

    #[test]
    fn ranges_are_checked() {
        let ns = Namespace::new(
            1,
            Arc::new(NullBackend::new(1 << 20)),
            BlockSize::B4096,
            false,
            NamespaceIdentity::derive("S", 1),
        )
        .unwrap();
        assert_eq!(ns.blocks(), 256);
        assert_eq!(ns.byte_range(255, 1), Ok((255 << 12, 4096)));
        assert_eq!(ns.byte_range(255, 2), Err(Status::LBA_OUT_OF_RANGE));
        assert_eq!(ns.byte_range(u64::MAX, 2), Err(Status::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let tiny = Arc::new(NullBackend::new(511));
        let id = NamespaceIdentity::derive("S", 1);
        assert!(matches!(
            Namespace::new(1, tiny, BlockSize::B512, false, id),
            Err(NamespaceError::TooSmall { .. })
        ));
        let ok = Arc::new(NullBackend::new(4096));
        assert!(matches!(
            Namespace::new(0, ok.clone(), BlockSize::B512, false, id),
            Err(NamespaceError::ReservedNsid(0))
        ));
        assert!(Namespace::new(u32::MAX, ok, BlockSize::B512, false, id).is_err());
    }

    #[test]
    fn identity_is_stable_and_distinct() {
        let a = NamespaceIdentity::derive("SERIAL", 1);
        assert_eq!(a, NamespaceIdentity::derive("SERIAL", 1));
        assert_ne!(a, NamespaceIdentity::derive("SERIAL", 2));
        assert_ne!(a, NamespaceIdentity::derive("OTHER", 1));
        assert_eq!(a.uuid[6] >> 4, 8);
        assert_eq!(a.eui64[0] & 0x03, 0x02);
    }
}
