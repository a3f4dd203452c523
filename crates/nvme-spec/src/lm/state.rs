//! The Controller State data structure that Get Controller State returns and Set Controller State
//! consumes: a 48-byte header, the NVMe-defined state (NVMECS, see [`super::NvmeControllerStateV0`])
//! and vendor-specific state.

use bitfield_struct::bitfield;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::error::LmDecodeError;
use super::error::LmEncodeError;

/// Upper bound this crate puts on a whole controller state (header included), in bytes.
///
/// NVMECSS and VSS are 128-bit dword counts taken from a device or a migration stream, so they
/// must be bounded before anything is sized from them. NVMECS v0 with 65535 SQs and 65535 CQs is
/// about 3 MiB; 64 MiB leaves ample room for vendor-specific state. Not a TP4159 limit.
pub const MAX_CONTROLLER_STATE_LEN: usize = 64 << 20;

/// CSATTR, the Controller State Attributes byte.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct ControllerStateAttributes {
    /// The controller was suspended when the state was captured.
    pub suspended: bool,
    /// Bits 7:1, meaning not public.
    #[bits(7)]
    pub reserved: u8,
}

/// The 48-byte Controller State header.
///
/// Consensus layout (libnvme, nvme-cli, libvfn, QEMU): VER u16 @0, CSATTR @2, 13 reserved bytes,
/// NVMECSS @16 and VSS @32 as 128-bit little-endian **dword** counts, data from byte 48. The 2025
/// RFC's 20-byte header with u16 sizes at 16/18 is wrong (pre-ratification).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct ControllerStateHeader {
    /// Version of this data structure (0).
    pub ver: u16,
    /// Controller State Attributes.
    pub csattr: ControllerStateAttributes,
    /// Reserved, zero when written.
    pub reserved: [u8; 13],
    /// NVMe Controller State Size: length of the NVMECS block in dwords.
    pub nvmecss: u128,
    /// Vendor Specific Size: length of the vendor-specific block in dwords.
    pub vss: u128,
}

const _: () = assert!(size_of::<ControllerStateHeader>() == 48);

/// Converts a dword count from the header into bytes, within [`MAX_CONTROLLER_STATE_LEN`].
fn dwords_to_len(field: &'static str, dwords: u128) -> Result<usize, LmDecodeError> {
    let too_large = LmDecodeError::TooLarge {
        field,
        dwords,
        max: MAX_CONTROLLER_STATE_LEN,
    };
    dwords
        .checked_mul(4)
        .and_then(|len| usize::try_from(len).ok())
        .filter(|&len| len <= MAX_CONTROLLER_STATE_LEN)
        .ok_or(too_large)
}

impl ControllerStateHeader {
    /// Size of the header; the NVMECS block starts here.
    pub const SIZE: usize = 48;

    /// Reads the header from the start of `bytes` (the rest may be absent, e.g. when a host
    /// fetched only the header to learn the total size).
    pub fn decode(bytes: &[u8]) -> Result<Self, LmDecodeError> {
        Self::read_from_prefix(bytes)
            .map(|(header, _)| header)
            .map_err(|_| LmDecodeError::Truncated {
                what: "Controller State header",
                needed: Self::SIZE,
                got: bytes.len(),
            })
    }

    /// Length of the NVMECS block in bytes (NVMECSS × 4), bounded.
    pub fn nvmecs_len(&self) -> Result<usize, LmDecodeError> {
        dwords_to_len("NVMECSS", self.nvmecss)
    }

    /// Length of the vendor-specific block in bytes (VSS × 4), bounded.
    pub fn vendor_len(&self) -> Result<usize, LmDecodeError> {
        dwords_to_len("VSS", self.vss)
    }

    /// Total length of the Controller State data structure: 48 + 4 × (NVMECSS + VSS), bounded by
    /// [`MAX_CONTROLLER_STATE_LEN`].
    pub fn total_len(&self) -> Result<usize, LmDecodeError> {
        let total = Self::SIZE + self.nvmecs_len()? + self.vendor_len()?;
        if total > MAX_CONTROLLER_STATE_LEN {
            return Err(LmDecodeError::TooLarge {
                field: "NVMECSS + VSS",
                dwords: self.nvmecss + self.vss,
                max: MAX_CONTROLLER_STATE_LEN,
            });
        }
        Ok(total)
    }
}

/// A whole Controller State data structure, split into its blocks. The header's sizes always
/// match the blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerState {
    header: ControllerStateHeader,
    nvmecs: Vec<u8>,
    vendor: Vec<u8>,
}

impl ControllerState {
    /// Builds a state from its blocks, filling NVMECSS and VSS. Each block must be a whole number
    /// of dwords and the whole must stay within [`MAX_CONTROLLER_STATE_LEN`].
    pub fn new(
        ver: u16,
        csattr: ControllerStateAttributes,
        nvmecs: Vec<u8>,
        vendor: Vec<u8>,
    ) -> Result<Self, LmEncodeError> {
        let dwords = |field, block: &[u8]| {
            if !block.len().is_multiple_of(4) || block.len() > MAX_CONTROLLER_STATE_LEN {
                return Err(LmEncodeError::BadLength {
                    field,
                    len: block.len() as u64,
                });
            }
            Ok((block.len() / 4) as u128)
        };
        let header = ControllerStateHeader {
            ver,
            csattr,
            reserved: [0; 13],
            nvmecss: dwords("NVMECSS", &nvmecs)?,
            vss: dwords("VSS", &vendor)?,
        };
        let total = ControllerStateHeader::SIZE + nvmecs.len() + vendor.len();
        if total > MAX_CONTROLLER_STATE_LEN {
            return Err(LmEncodeError::BadLength {
                field: "NVMECSS + VSS",
                len: total as u64,
            });
        }
        Ok(Self {
            header,
            nvmecs,
            vendor,
        })
    }

    /// The header.
    pub fn header(&self) -> &ControllerStateHeader {
        &self.header
    }

    /// The NVMe Controller State block (format chosen by CSVI; v0 is
    /// [`super::NvmeControllerStateV0`]).
    pub fn nvmecs(&self) -> &[u8] {
        &self.nvmecs
    }

    /// The vendor-specific block (format chosen by CSUUIDI).
    pub fn vendor(&self) -> &[u8] {
        &self.vendor
    }

    /// The whole structure's bytes: header, NVMECS, vendor-specific state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(ControllerStateHeader::SIZE + self.nvmecs.len() + self.vendor.len());
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(&self.nvmecs);
        out.extend_from_slice(&self.vendor);
        out
    }

    /// Splits a buffer at the sizes in its header. The buffer must hold exactly
    /// [`ControllerStateHeader::total_len`] bytes: slice off any padding first.
    pub fn decode(bytes: &[u8]) -> Result<Self, LmDecodeError> {
        const WHAT: &str = "Controller State";
        let header = ControllerStateHeader::decode(bytes)?;
        let total = header.total_len()?;
        if bytes.len() < total {
            return Err(LmDecodeError::Truncated {
                what: WHAT,
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(LmDecodeError::LengthMismatch {
                what: WHAT,
                expected: total,
                got: bytes.len(),
            });
        }
        let (nvmecs, vendor) = bytes[ControllerStateHeader::SIZE..].split_at(header.nvmecs_len()?);
        Ok(Self {
            header,
            nvmecs: nvmecs.to_vec(),
            vendor: vendor.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use proptest::prelude::*;

    #[test]
    fn header_offsets() {
        assert_eq!(offset_of!(ControllerStateHeader, ver), 0);
        assert_eq!(offset_of!(ControllerStateHeader, csattr), 2);
        assert_eq!(offset_of!(ControllerStateHeader, reserved), 3);
        assert_eq!(offset_of!(ControllerStateHeader, nvmecss), 16);
        assert_eq!(offset_of!(ControllerStateHeader, vss), 32);
        assert_eq!(ControllerStateHeader::SIZE, 48);
    }

    #[test]
    fn header_bytes() {
        let mut bytes = [0u8; 48];
        bytes[0] = 0x01; // VER 1
        bytes[2] = 0x01; // CSATTR: suspended
        bytes[16] = 0x1A; // NVMECSS 26 dwords
        bytes[32] = 0x02; // VSS 2 dwords
        let h = ControllerStateHeader::decode(&bytes).unwrap();
        assert_eq!(h.ver, 1);
        assert!(h.csattr.suspended());
        assert_eq!(h.nvmecss, 26);
        assert_eq!(h.vss, 2);
        assert_eq!(h.total_len(), Ok(48 + 104 + 8));
        assert_eq!(h.as_bytes(), &bytes);
    }

    #[test]
    fn huge_sizes_are_bounded() {
        let mut h = ControllerStateHeader {
            nvmecss: u128::MAX,
            ..Default::default()
        };
        assert!(matches!(
            h.total_len(),
            Err(LmDecodeError::TooLarge {
                field: "NVMECSS",
                ..
            })
        ));
        h.nvmecss = (MAX_CONTROLLER_STATE_LEN / 4) as u128;
        h.vss = 1;
        assert!(matches!(
            h.total_len(),
            Err(LmDecodeError::TooLarge {
                field: "NVMECSS + VSS",
                ..
            })
        ));
        h.nvmecss = 0;
        h.vss = u128::MAX / 4 + 1;
        assert!(matches!(
            h.total_len(),
            Err(LmDecodeError::TooLarge { field: "VSS", .. })
        ));
    }

    #[test]
    fn split_and_lengths() {
        let cs = ControllerState::new(
            0,
            ControllerStateAttributes::new().with_suspended(true),
            vec![1; 8],
            vec![2; 4],
        )
        .unwrap();
        let bytes = cs.encode();
        assert_eq!(bytes.len(), 60);
        assert_eq!(&bytes[16..20], &[2, 0, 0, 0]);
        assert_eq!(&bytes[32..36], &[1, 0, 0, 0]);
        assert_eq!(ControllerState::decode(&bytes), Ok(cs.clone()));
        assert!(matches!(
            ControllerState::decode(&bytes[..59]),
            Err(LmDecodeError::Truncated { needed: 60, .. })
        ));
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            ControllerState::decode(&padded),
            Err(LmDecodeError::LengthMismatch { expected: 60, .. })
        ));
        assert!(matches!(
            ControllerState::decode(&bytes[..47]),
            Err(LmDecodeError::Truncated { needed: 48, .. })
        ));
        assert!(
            ControllerState::new(0, ControllerStateAttributes::new(), vec![0; 3], vec![]).is_err()
        );
        assert!(
            ControllerState::new(0, ControllerStateAttributes::new(), vec![], vec![0; 5]).is_err()
        );
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_type::<Vec<u8>>()
            .with_iterations(2000)
            .for_each(|bytes: &Vec<u8>| {
                if let Ok(cs) = ControllerState::decode(bytes) {
                    assert_eq!(&cs.encode(), bytes);
                }
            });
    }

    #[test]
    fn fuzz_decode_with_small_sizes() {
        // Random bytes rarely carry sizes that fit; build the header from small counts instead.
        bolero::check!()
            .with_type::<(u8, u8, u8, Vec<u8>)>()
            .with_iterations(2000)
            .for_each(|(nvmecss, vss, csattr, body): &(u8, u8, u8, Vec<u8>)| {
                let header = ControllerStateHeader {
                    ver: 0,
                    csattr: ControllerStateAttributes::from(*csattr),
                    reserved: [0; 13],
                    nvmecss: (*nvmecss).into(),
                    vss: (*vss).into(),
                };
                let mut bytes = header.as_bytes().to_vec();
                bytes.extend_from_slice(body);
                let expected = 48 + 4 * (usize::from(*nvmecss) + usize::from(*vss));
                match ControllerState::decode(&bytes) {
                    Ok(cs) => {
                        assert_eq!(bytes.len(), expected);
                        assert_eq!(cs.nvmecs().len(), 4 * usize::from(*nvmecss));
                        assert_eq!(cs.encode(), bytes);
                    }
                    Err(_) => assert_ne!(bytes.len(), expected),
                }
            });
    }

    proptest! {
        #[test]
        fn round_trip(
            ver in any::<u16>(),
            csattr in any::<u8>(),
            nvmecs in proptest::collection::vec(any::<[u8; 4]>(), 0..64),
            vendor in proptest::collection::vec(any::<[u8; 4]>(), 0..64),
        ) {
            let cs = ControllerState::new(
                ver,
                ControllerStateAttributes::from(csattr),
                nvmecs.concat(),
                vendor.concat(),
            ).unwrap();
            prop_assert_eq!(cs.header().nvmecss, nvmecs.len() as u128);
            prop_assert_eq!(cs.header().vss, vendor.len() as u128);
            let bytes = cs.encode();
            prop_assert_eq!(bytes.len(), cs.header().total_len().unwrap());
            prop_assert_eq!(ControllerState::decode(&bytes), Ok(cs));
        }
    }
}
