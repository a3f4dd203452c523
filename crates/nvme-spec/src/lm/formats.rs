//! Identify CNS 20h, Supported Controller State Formats: which NVMe-defined controller state
//! versions and which vendor-specific state formats (by UUID) a controller can save and load.
//!
//! It is requested with [`Cns::SUPPORTED_CONTROLLER_STATE_FORMATS`](crate::identify::Cns). Like
//! every Identify structure it fills a 4096-byte page: the RFC issues it with a 2-byte buffer and
//! then one sized to the lists, which a controller writing a whole page would overrun.

use core::fmt;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::error::LmDecodeError;
use super::error::LmEncodeError;
use crate::identify::IDENTIFY_DATA_SIZE;

/// A 16-byte UUID, in wire byte order. Displays in the canonical 8-4-4-4-12 form.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    IntoBytes,
    FromBytes,
    Immutable,
    KnownLayout,
)]
pub struct Uuid(pub [u8; 16]);

const _: () = assert!(size_of::<Uuid>() == 16);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The first two bytes of CNS 20h: the list counts.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct ControllerStateFormatsHeader {
    /// NV: number of NVMe Controller State versions listed (VERS, 2 bytes each, from byte 2).
    pub nv: u8,
    /// NUUID: number of vendor-specific format UUIDs listed (16 bytes each, after VERS).
    pub nuuid: u8,
}

const _: () = assert!(size_of::<ControllerStateFormatsHeader>() == 2);

/// The Supported Controller State Formats data structure, parsed.
///
/// Layout: NV u8 @0, NUUID u8 @1, VERS\[NV\] u16 @2, UUID\[NUUID\] @2+2·NV. The QEMU model
/// reports NV 1, NUUID 0, VERS\[0\] 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SupportedControllerStateFormats {
    /// NVMe Controller State versions; CSVI n (1-based) selects `versions[n - 1]`.
    pub versions: Vec<u16>,
    /// Vendor-specific controller state formats; CSUUIDI n (1-based) selects `uuids[n - 1]`.
    pub uuids: Vec<Uuid>,
}

impl SupportedControllerStateFormats {
    /// Offset of VERS\[0\].
    pub const VERS_OFFSET: usize = 2;

    /// Offset of UUID\[0\] for a list of `nv` versions.
    pub const fn uuid_offset(nv: usize) -> usize {
        Self::VERS_OFFSET + 2 * nv
    }

    /// Bytes used by lists of `nv` versions and `nuuid` UUIDs.
    pub const fn used_len(nv: usize, nuuid: usize) -> usize {
        Self::uuid_offset(nv) + 16 * nuuid
    }

    /// The version CSVI selects: CSVI is a 1-based index (0 = no NVMe-defined state), not a
    /// version number as the RFC assumes.
    pub fn version(&self, csvi: u8) -> Option<u16> {
        self.versions
            .get(usize::from(csvi).checked_sub(1)?)
            .copied()
    }

    /// The vendor-specific format CSUUIDI selects (1-based; 0 = none).
    pub fn uuid(&self, csuuidi: u8) -> Option<Uuid> {
        self.uuids
            .get(usize::from(csuuidi).checked_sub(1)?)
            .copied()
    }

    /// Encodes the 4096-byte Identify page. Fails if a list has more than 255 entries or the
    /// lists do not fit in the page.
    pub fn encode(&self) -> Result<Vec<u8>, LmEncodeError> {
        let count = |field, len: usize| {
            u8::try_from(len).map_err(|_| LmEncodeError::TooMany {
                field,
                count: len,
                max: u8::MAX.into(),
            })
        };
        let header = ControllerStateFormatsHeader {
            nv: count("VERS", self.versions.len())?,
            nuuid: count("UUID", self.uuids.len())?,
        };
        let max_uuids = (IDENTIFY_DATA_SIZE - Self::uuid_offset(self.versions.len())) / 16;
        if self.uuids.len() > max_uuids {
            return Err(LmEncodeError::TooMany {
                field: "UUID",
                count: self.uuids.len(),
                max: max_uuids,
            });
        }
        let mut page = Vec::with_capacity(IDENTIFY_DATA_SIZE);
        page.extend_from_slice(header.as_bytes());
        page.extend_from_slice(self.versions.as_bytes());
        page.extend_from_slice(self.uuids.as_bytes());
        page.resize(IDENTIFY_DATA_SIZE, 0);
        Ok(page)
    }

    /// Decodes from the start of an Identify page. Bytes after the lists are ignored; the lists
    /// must lie within the given bytes and within one 4096-byte page.
    pub fn decode(bytes: &[u8]) -> Result<Self, LmDecodeError> {
        const WHAT: &str = "Supported Controller State Formats";
        let (header, _) = ControllerStateFormatsHeader::read_from_prefix(bytes).map_err(|_| {
            LmDecodeError::Truncated {
                what: WHAT,
                needed: size_of::<ControllerStateFormatsHeader>(),
                got: bytes.len(),
            }
        })?;
        let (nv, nuuid) = (usize::from(header.nv), usize::from(header.nuuid));
        let needed = Self::used_len(nv, nuuid);
        if needed > IDENTIFY_DATA_SIZE {
            return Err(LmDecodeError::ListTooLong {
                what: WHAT,
                needed,
                max: IDENTIFY_DATA_SIZE,
            });
        }
        let lists = bytes
            .get(Self::VERS_OFFSET..needed)
            .ok_or(LmDecodeError::Truncated {
                what: WHAT,
                needed,
                got: bytes.len(),
            })?;
        let (vers, uuids) = lists.split_at(2 * nv);
        Ok(Self {
            versions: vers
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            uuids: uuids
                .chunks_exact(16)
                .filter_map(|c| Uuid::read_from_bytes(c).ok())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uuid_display() {
        let u = Uuid([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(u.to_string(), "12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn layout_offsets() {
        assert_eq!(SupportedControllerStateFormats::VERS_OFFSET, 2);
        assert_eq!(SupportedControllerStateFormats::uuid_offset(3), 8);
        assert_eq!(SupportedControllerStateFormats::used_len(1, 2), 36);
    }

    #[test]
    fn qemu_page_bytes() {
        // NV 1, NUUID 0, VERS[0] = 0: what the QEMU TP4159 model returns.
        let f = SupportedControllerStateFormats {
            versions: vec![0],
            uuids: vec![],
        };
        let page = f.encode().unwrap();
        assert_eq!(page.len(), 4096);
        assert_eq!(&page[..4], &[0x01, 0x00, 0x00, 0x00]);
        assert!(page[4..].iter().all(|&b| b == 0));
        assert_eq!(f.version(1), Some(0));
        assert_eq!(f.version(0), None);
        assert_eq!(f.version(2), None);
        assert_eq!(f.uuid(0), None);
        assert_eq!(SupportedControllerStateFormats::decode(&page), Ok(f));
    }

    #[test]
    fn hand_built_page() {
        // NV 2 (versions 0x0102, 0x0304), NUUID 1 (bytes 0x10..=0x1f) at offset 2 + 2·2 = 6.
        let mut page = vec![0u8; 4096];
        page[..6].copy_from_slice(&[0x02, 0x01, 0x02, 0x01, 0x04, 0x03]);
        for (i, b) in page[6..22].iter_mut().enumerate() {
            *b = 0x10 + i as u8;
        }
        let f = SupportedControllerStateFormats::decode(&page).unwrap();
        assert_eq!(f.versions, vec![0x0102, 0x0304]);
        assert_eq!(f.version(2), Some(0x0304));
        assert_eq!(f.uuid(1).unwrap().0[0], 0x10);
        assert_eq!(f.uuid(1).unwrap().0[15], 0x1f);
        assert_eq!(f.uuid(2), None);
        assert_eq!(f.encode().unwrap(), page);
    }

    #[test]
    fn lists_that_do_not_fit() {
        let too_many = SupportedControllerStateFormats {
            versions: vec![0; 256],
            uuids: vec![],
        };
        assert!(matches!(
            too_many.encode(),
            Err(LmEncodeError::TooMany { field: "VERS", .. })
        ));
        // 255 versions leave (4096 - 512) / 16 = 224 UUID slots.
        let over_page = SupportedControllerStateFormats {
            versions: vec![0; 255],
            uuids: vec![Uuid::default(); 225],
        };
        assert_eq!(
            over_page.encode(),
            Err(LmEncodeError::TooMany {
                field: "UUID",
                count: 225,
                max: 224
            })
        );
        let fits = SupportedControllerStateFormats {
            versions: vec![7; 255],
            uuids: vec![Uuid([9; 16]); 224],
        };
        let page = fits.encode().unwrap();
        assert_eq!(page.len(), 4096);
        assert_eq!(SupportedControllerStateFormats::decode(&page), Ok(fits));
        // A page header that claims more than a page.
        assert!(matches!(
            SupportedControllerStateFormats::decode(&[255, 255]),
            Err(LmDecodeError::ListTooLong { .. })
        ));
        assert!(matches!(
            SupportedControllerStateFormats::decode(&[1, 0, 0]),
            Err(LmDecodeError::Truncated { needed: 4, .. })
        ));
        assert!(matches!(
            SupportedControllerStateFormats::decode(&[1]),
            Err(LmDecodeError::Truncated { needed: 2, .. })
        ));
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_type::<Vec<u8>>()
            .with_iterations(2000)
            .for_each(|bytes: &Vec<u8>| {
                if let Ok(f) = SupportedControllerStateFormats::decode(bytes) {
                    let page = f.encode().expect("a decoded list fits its page");
                    assert_eq!(SupportedControllerStateFormats::decode(&page), Ok(f));
                }
            });
    }

    proptest! {
        #[test]
        fn round_trip(
            versions in proptest::collection::vec(any::<u16>(), 0..20),
            uuids in proptest::collection::vec(any::<[u8; 16]>(), 0..20),
        ) {
            let f = SupportedControllerStateFormats {
                versions,
                uuids: uuids.into_iter().map(Uuid).collect(),
            };
            let page = f.encode().unwrap();
            prop_assert_eq!(page.len(), IDENTIFY_DATA_SIZE);
            for (i, v) in f.versions.iter().enumerate() {
                prop_assert_eq!(f.version(u8::try_from(i + 1).unwrap()), Some(*v));
            }
            prop_assert_eq!(SupportedControllerStateFormats::decode(&page), Ok(f));
        }
    }
}
