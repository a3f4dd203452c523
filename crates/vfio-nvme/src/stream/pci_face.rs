//! The `PciFace` record: the PCI face of the migrated function — its configuration space and
//! its MSI-X table, masks and pending bits — which the destination function takes over.
//!
//! The controller state (TP4159) is NVMe's; this is the PCI function's, owned by the VF driver
//! (`crate::pci`). The payload is laid out as the module table of [`super`] gives; every field
//! is checked here, so a function is only ever handed a state of the right shape.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// Bytes of configuration space the record carries: the conventional space, 00h–FFh (the
/// extended space of a vfio-nvme function holds no capability).
pub const PCI_FACE_CONFIG_BYTES: usize = 256;
/// Most MSI-X vectors a function can have (Table Size is 11 bits, 0's based).
pub const MAX_MSIX_VECTORS: usize = 2048;
/// The payload layout version this build writes and reads.
pub const PCI_FACE_VERSION: u16 = 1;
/// Bytes per MSI-X table entry.
const TABLE_ENTRY_BYTES: usize = 16;
/// PCI capability identifier of MSI-X.
const MSIX_CAPABILITY_ID: u8 = 0x11;

/// The first 8 bytes of a `PciFace` payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(super) struct PciFacePrefix {
    pub version: u16,
    pub vectors: u16,
    pub reserved: u32,
}

const _: () = assert!(size_of::<PciFacePrefix>() == 8);

/// A function's PCI face as it travels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciFaceState {
    /// Configuration space bytes 00h–FFh, as the guest and the VMM left them.
    pub config: Vec<u8>,
    /// The MSI-X table: message address, data and vector control, 16 bytes per vector.
    pub msix_table: Vec<u8>,
    /// Per vector: masked (by its Vector Control word or by `DEVICE_SET_IRQS` MASK).
    pub masked: Vec<bool>,
    /// Per vector: an interrupt fired while it was masked and waits for the unmask (the PBA).
    pub pending: Vec<bool>,
}

/// A `PciFace` payload that does not have the layout of its version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PciFaceError {
    /// A layout version this build does not read.
    #[error(
        "PCI face layout version {found} is not supported (this build reads {PCI_FACE_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The vector count is 0 or over [`MAX_MSIX_VECTORS`].
    #[error("PCI face has {found} MSI-X vectors, outside 1..={MAX_MSIX_VECTORS}")]
    Vectors {
        /// The count found.
        found: usize,
    },
    /// The reserved dword is not zero.
    #[error("PCI face reserved field is {value:#x}, must be zero")]
    Reserved {
        /// Its value.
        value: u32,
    },
    /// The payload (or a part of a state to encode) is not as long as its vector count makes it.
    #[error("PCI face {field} is {given} bytes, but {vectors} vectors make it {expected}")]
    Length {
        /// "payload", "configuration space", "MSI-X table", "mask bits" or "pending bits".
        field: &'static str,
        /// The vector count.
        vectors: usize,
        /// The length the count implies.
        expected: usize,
        /// The length given.
        given: usize,
    },
    /// A mask or pending bit is set for a vector the function does not have.
    #[error("PCI face {field} are set beyond vector {vectors}")]
    StrayBits {
        /// "mask bits" or "pending bits".
        field: &'static str,
        /// The vector count.
        vectors: usize,
    },
}

/// Bytes of a bit array with one bit per vector, in whole qwords (the PBA's layout).
fn bit_array_bytes(vectors: usize) -> usize {
    vectors.div_ceil(64) * 8
}

/// The payload length of a `PciFace` record for a function with `vectors` MSI-X vectors.
pub fn pci_face_payload_len(vectors: usize) -> usize {
    size_of::<PciFacePrefix>()
        + PCI_FACE_CONFIG_BYTES
        + vectors * TABLE_ENTRY_BYTES
        + 2 * bit_array_bytes(vectors)
}

fn bits_to_bytes(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bit_array_bytes(bits.len())];
    for (i, _) in bits.iter().enumerate().filter(|(_, set)| **set) {
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

fn bytes_to_bits(bytes: &[u8], vectors: usize) -> Vec<bool> {
    (0..vectors)
        .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
        .collect()
}

/// Checks that no bit of `bytes` beyond vector `vectors` is set.
fn check_stray(bytes: &[u8], vectors: usize, field: &'static str) -> Result<(), PciFaceError> {
    let stray = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| (0..8).any(|bit| b & (1 << bit) != 0 && i * 8 + bit >= vectors));
    if stray {
        return Err(PciFaceError::StrayBits { field, vectors });
    }
    Ok(())
}

impl PciFaceState {
    /// Number of MSI-X vectors.
    pub fn vectors(&self) -> usize {
        self.masked.len()
    }

    /// The payload bytes; refuses a state whose parts disagree with its vector count.
    pub fn encode(&self) -> Result<Vec<u8>, PciFaceError> {
        let vectors = self.vectors();
        if vectors == 0 || vectors > MAX_MSIX_VECTORS {
            return Err(PciFaceError::Vectors { found: vectors });
        }
        for (field, given, expected) in [
            (
                "configuration space",
                self.config.len(),
                PCI_FACE_CONFIG_BYTES,
            ),
            (
                "MSI-X table",
                self.msix_table.len(),
                vectors * TABLE_ENTRY_BYTES,
            ),
            ("pending bits", self.pending.len(), vectors),
        ] {
            if given != expected {
                return Err(PciFaceError::Length {
                    field,
                    vectors,
                    expected,
                    given,
                });
            }
        }
        let prefix = PciFacePrefix {
            version: PCI_FACE_VERSION,
            vectors: vectors as u16,
            reserved: 0,
        };
        let mut out = Vec::with_capacity(pci_face_payload_len(vectors));
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&self.config);
        out.extend_from_slice(&self.msix_table);
        out.extend_from_slice(&bits_to_bytes(&self.masked));
        out.extend_from_slice(&bits_to_bytes(&self.pending));
        Ok(out)
    }

    /// Parses and checks a payload (untrusted: from a migration stream).
    pub fn decode(payload: &[u8]) -> Result<Self, PciFaceError> {
        PciFaceView::parse(payload).map(PciFaceView::to_state)
    }

    /// The PCI Command register (configuration offset 04h).
    pub fn command(&self) -> u16 {
        self.config_u16(0x04)
    }

    /// The MSI-X capability found by walking the configuration space's capability list: its
    /// offset and its Message Control word. `None` when the list has no MSI-X capability (or
    /// loops, or leaves the conventional space).
    pub fn msix_capability(&self) -> Option<(u8, u16)> {
        const STATUS_CAPABILITIES: u16 = 1 << 4;
        if self.config_u16(0x06) & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut at = *self.config.get(0x34)? & !3;
        // At most 48 capabilities fit between 40h and FFh: a longer walk is a loop.
        for _ in 0..48 {
            if at < 0x40 {
                return None;
            }
            let offset = usize::from(at);
            if *self.config.get(offset)? == MSIX_CAPABILITY_ID {
                return Some((at, self.config_u16(offset + 2)));
            }
            at = *self.config.get(offset + 1)? & !3;
        }
        None
    }

    fn config_u16(&self, offset: usize) -> u16 {
        match self.config.get(offset..offset + 2) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => 0,
        }
    }
}

/// A `PciFace` payload that passed every check of [`PciFaceState::decode`], borrowed from the
/// stream: what the decoder keeps until the record is complete.
#[derive(Clone, Copy, Debug)]
pub(super) struct PciFaceView<'a> {
    payload: &'a [u8],
    vectors: usize,
}

impl<'a> PciFaceView<'a> {
    /// Checks a payload: version, vector count, reserved field, length, and no bit for a vector
    /// the function does not have.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PciFaceError> {
        let (prefix, _) =
            PciFacePrefix::read_from_prefix(payload).map_err(|_| PciFaceError::Length {
                field: "payload",
                vectors: 0,
                expected: size_of::<PciFacePrefix>(),
                given: payload.len(),
            })?;
        if prefix.version != PCI_FACE_VERSION {
            return Err(PciFaceError::UnsupportedVersion {
                found: prefix.version,
            });
        }
        let vectors = usize::from(prefix.vectors);
        if vectors == 0 || vectors > MAX_MSIX_VECTORS {
            return Err(PciFaceError::Vectors { found: vectors });
        }
        if prefix.reserved != 0 {
            return Err(PciFaceError::Reserved {
                value: prefix.reserved,
            });
        }
        let expected = pci_face_payload_len(vectors);
        if payload.len() != expected {
            return Err(PciFaceError::Length {
                field: "payload",
                vectors,
                expected,
                given: payload.len(),
            });
        }
        let view = Self { payload, vectors };
        let (_, _, masked, pending) = view.parts();
        check_stray(masked, vectors, "mask bits")?;
        check_stray(pending, vectors, "pending bits")?;
        Ok(view)
    }

    /// The payload.
    pub fn payload(self) -> &'a [u8] {
        self.payload
    }

    /// Configuration space, MSI-X table, mask bits and pending bits.
    fn parts(self) -> (&'a [u8], &'a [u8], &'a [u8], &'a [u8]) {
        let rest = &self.payload[size_of::<PciFacePrefix>()..];
        let (config, rest) = rest.split_at(PCI_FACE_CONFIG_BYTES);
        let (table, rest) = rest.split_at(self.vectors * TABLE_ENTRY_BYTES);
        let (masked, pending) = rest.split_at(bit_array_bytes(self.vectors));
        (config, table, masked, pending)
    }

    /// The state the payload holds.
    pub fn to_state(self) -> PciFaceState {
        let (config, table, masked, pending) = self.parts();
        PciFaceState {
            config: config.to_vec(),
            msix_table: table.to_vec(),
            masked: bytes_to_bits(masked, self.vectors),
            pending: bytes_to_bits(pending, self.vectors),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use core::mem::offset_of;

    use super::*;

    /// Five vectors; vector 1 masked and pending, vector 3 masked; MSI-X at 40h, enabled.
    pub(crate) fn sample() -> PciFaceState {
        let mut config = vec![0u8; PCI_FACE_CONFIG_BYTES];
        config[0x04] = 0x06;
        config[0x06] = 0x10;
        config[0x34] = 0x40;
        config[0x40] = MSIX_CAPABILITY_ID;
        config[0x41] = 0x50;
        config[0x42..0x44].copy_from_slice(&(0x8000u16 | 4).to_le_bytes());
        config[0x50] = 0x10;
        let msix_table = (0..5 * 16).map(|i| i as u8).collect();
        PciFaceState {
            config,
            msix_table,
            masked: vec![false, true, false, true, false],
            pending: vec![false, true, false, false, false],
        }
    }

    #[test]
    fn layout_offsets() {
        assert_eq!(offset_of!(PciFacePrefix, version), 0);
        assert_eq!(offset_of!(PciFacePrefix, vectors), 2);
        assert_eq!(offset_of!(PciFacePrefix, reserved), 4);
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes.len(), pci_face_payload_len(5));
        assert_eq!(bytes.len(), 8 + 256 + 80 + 8 + 8);
        assert_eq!(&bytes[0..8], &[1, 0, 5, 0, 0, 0, 0, 0]);
        // Configuration space from byte 8: the Command register at 8 + 04h.
        assert_eq!(&bytes[8 + 4..8 + 6], &[0x06, 0x00]);
        assert_eq!(&bytes[8 + 0x42..8 + 0x44], &[0x04, 0x80]);
        // The table from 264, one 16-byte entry per vector.
        assert_eq!(bytes[264], 0);
        assert_eq!(bytes[264 + 79], 79);
        // Mask bits from 344 (vectors 1 and 3), pending bits from 352 (vector 1).
        assert_eq!(&bytes[344..352], &[0b1010, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[352..360], &[0b0010, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(PciFaceState::decode(&bytes), Ok(sample()));
        assert_eq!(pci_face_payload_len(65), 8 + 256 + 65 * 16 + 16 + 16);
    }

    #[test]
    fn the_msix_capability_is_found_through_the_list() {
        let state = sample();
        assert_eq!(state.msix_capability(), Some((0x40, 0x8004)));
        assert_eq!(state.command(), 0x0006);
        let mut looped = sample();
        looped.config[0x40] = 0x10;
        looped.config[0x41] = 0x40;
        assert_eq!(looped.msix_capability(), None);
        let mut none = sample();
        none.config[0x06] = 0;
        assert_eq!(none.msix_capability(), None);
    }

    #[test]
    fn every_bad_payload_is_named() {
        let bytes = sample().encode().unwrap();
        let edited = |at: usize, value: u8| {
            let mut bad = bytes.clone();
            bad[at] = value;
            PciFaceState::decode(&bad).unwrap_err()
        };
        assert_eq!(edited(0, 2), PciFaceError::UnsupportedVersion { found: 2 });
        assert_eq!(edited(2, 0), PciFaceError::Vectors { found: 0 });
        assert_eq!(edited(4, 1), PciFaceError::Reserved { value: 1 });
        assert!(matches!(
            edited(2, 6),
            PciFaceError::Length {
                field: "payload",
                vectors: 6,
                ..
            }
        ));
        assert_eq!(
            edited(344, 0b100000),
            PciFaceError::StrayBits {
                field: "mask bits",
                vectors: 5
            }
        );
        assert_eq!(
            edited(359, 1),
            PciFaceError::StrayBits {
                field: "pending bits",
                vectors: 5
            }
        );
        assert!(PciFaceState::decode(&bytes[..7]).is_err());
        assert!(PciFaceState::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut over = bytes.clone();
        over[2..4].copy_from_slice(&2049u16.to_le_bytes());
        assert_eq!(
            PciFaceState::decode(&over),
            Err(PciFaceError::Vectors { found: 2049 })
        );
        let mut short = sample();
        short.msix_table.pop();
        assert!(matches!(
            short.encode(),
            Err(PciFaceError::Length {
                field: "MSI-X table",
                ..
            })
        ));
    }

    #[test]
    fn fuzz_decode() {
        let valid = sample().encode().unwrap();
        bolero::check!()
            .with_type::<(Vec<u8>, Vec<(u16, u8)>)>()
            .with_iterations(3000)
            .for_each(|(raw, edits): &(Vec<u8>, Vec<(u16, u8)>)| {
                let _ = PciFaceState::decode(raw);
                let mut bytes = valid.clone();
                for &(at, value) in edits.iter().take(4) {
                    let at = usize::from(at) % bytes.len();
                    bytes[at] = value;
                }
                if let Ok(state) = PciFaceState::decode(&bytes) {
                    assert_eq!(state.encode().unwrap(), bytes);
                    let _ = state.msix_capability();
                }
            });
    }
}
