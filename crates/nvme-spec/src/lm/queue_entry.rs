//! The LBA Migration Queue Entry, Type 0: what a controller posts to a User Data Migration Queue
//! for every logged user-data change and for the start/stop/suspend/full markers.

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::common::too_wide;
use super::error::LmDecodeError;
use super::error::LmEncodeError;

/// Entry Sequence Attribute (ESA, attribute bits 3:1).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum EntrySequence {
    /// An ordinary entry.
    MIDDLE = 0,
    /// First entry: logging started, or resumed with logging active.
    FIRST = 1,
    /// Last entry: logging stopped.
    LAST_STOPPED = 2,
    /// Last entry: the controller was suspended.
    LAST_SUSPENDED = 3,
    /// Last entry: the queue became full; logging is suppressed until the host frees space.
    LAST_FULL = 7,
}

bitfield_enum!(EntrySequence, u8);

/// LBA Change Information Attribute (LBACIR, attribute bits 7:6; QEMU calls it LBACIA).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum LbaChangeInfo {
    /// NSID, SLBA and NLB describe a changed range.
    RANGE = 0,
    /// Every LBA of namespace NSID changed.
    ALL = 1,
    /// The entry carries no range (markers).
    NONE = 2,
}

bitfield_enum!(LbaChangeInfo, u8);

/// The attribute byte (offset 31) of an LBA migration queue entry.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct LbaMqAttributes {
    /// CDQP, the Controller Data Queue phase tag (1 on the first pass over a zeroed queue).
    pub cdqp: bool,
    /// Entry Sequence Attribute.
    #[bits(3)]
    pub esa: EntrySequence,
    /// Bit 4, reserved.
    pub reserved: bool,
    /// DLBA: the range was deallocated rather than written.
    pub dlba: bool,
    /// LBA Change Information.
    #[bits(2)]
    pub lbacir: LbaChangeInfo,
}

/// An LBA Migration Queue Entry, Type 0 (32 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct LbaMigrationQueueEntry {
    /// Namespace of the change.
    pub nsid: u32,
    /// Number of logical blocks, **0's based** like Read/Write NLB.
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
    /// Reserved.
    pub reserved: [u8; 15],
    /// Attributes: phase, sequence, deallocation, change information.
    pub attr: LbaMqAttributes,
}

const _: () = assert!(size_of::<LbaMigrationQueueEntry>() == 32);

impl LbaMigrationQueueEntry {
    /// Size of the entry; a queue of CDQSIZE dwords holds CDQSIZE × 4 / 32 of them.
    pub const SIZE: usize = 32;

    /// A changed (or, with `deallocated`, deallocated) range of `nlb` + 1 blocks at `slba`.
    pub fn range(nsid: u32, slba: u64, nlb: u32, deallocated: bool, phase: bool) -> Self {
        Self {
            nsid,
            nlb,
            slba,
            reserved: [0; 15],
            attr: LbaMqAttributes::new()
                .with_cdqp(phase)
                .with_dlba(deallocated)
                .with_lbacir(LbaChangeInfo::RANGE),
        }
    }

    /// A marker entry (no range) with the given sequence attribute. Fails if `esa` does not fit
    /// in 3 bits.
    pub fn marker(esa: EntrySequence, phase: bool) -> Result<Self, LmEncodeError> {
        let attr = LbaMqAttributes::new()
            .with_cdqp(phase)
            .with_lbacir(LbaChangeInfo::NONE)
            .with_esa_checked(esa)
            .map_err(|()| too_wide("ESA", esa.0.into(), 3))?;
        Ok(Self {
            attr,
            ..Self::default()
        })
    }

    /// Number of blocks the entry covers: NLB + 1.
    pub const fn blocks(&self) -> u64 {
        self.nlb as u64 + 1
    }

    /// Reads an entry from exactly 32 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LmDecodeError> {
        Self::read_from_bytes(bytes).map_err(|_| LmDecodeError::LengthMismatch {
            what: "LBA Migration Queue Entry",
            expected: Self::SIZE,
            got: bytes.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use proptest::prelude::*;

    #[test]
    fn offsets() {
        assert_eq!(offset_of!(LbaMigrationQueueEntry, nsid), 0);
        assert_eq!(offset_of!(LbaMigrationQueueEntry, nlb), 4);
        assert_eq!(offset_of!(LbaMigrationQueueEntry, slba), 8);
        assert_eq!(offset_of!(LbaMigrationQueueEntry, reserved), 16);
        assert_eq!(offset_of!(LbaMigrationQueueEntry, attr), 31);
    }

    #[test]
    fn attribute_bits() {
        // CDQP 1, ESA 3 (suspended), LBACIR 2 (none): 1 | 3 << 1 | 2 << 6.
        let a = LbaMqAttributes::from(0x87);
        assert!(a.cdqp());
        assert_eq!(a.esa(), EntrySequence::LAST_SUSPENDED);
        assert_eq!(a.lbacir(), LbaChangeInfo::NONE);
        assert!(!a.dlba());
        assert!(!a.reserved());
        let b = LbaMqAttributes::from(0b0111_1110);
        assert_eq!(b.esa(), EntrySequence::LAST_FULL);
        assert!(b.reserved() && b.dlba());
        assert_eq!(b.lbacir(), LbaChangeInfo::ALL);
    }

    #[test]
    fn constructors_bytes() {
        let e = LbaMigrationQueueEntry::range(1, 0x10, 7, false, true);
        let mut expected = [0u8; 32];
        expected[0] = 0x01;
        expected[4] = 0x07;
        expected[8] = 0x10;
        expected[31] = 0x01;
        assert_eq!(e.as_bytes(), &expected);
        assert_eq!(e.blocks(), 8);

        let m = LbaMigrationQueueEntry::marker(EntrySequence::LAST_FULL, false).unwrap();
        let mut expected = [0u8; 32];
        expected[31] = 0x8E; // ESA 7 << 1 | LBACIR 2 << 6
        assert_eq!(m.as_bytes(), &expected);

        let d = LbaMigrationQueueEntry::range(2, 0, 0, true, false);
        assert_eq!(d.as_bytes()[31], 0x20);
        assert!(matches!(
            LbaMigrationQueueEntry::marker(EntrySequence(8), true),
            Err(LmEncodeError::FieldTooWide { field: "ESA", .. })
        ));
    }

    #[test]
    fn decode_length() {
        assert!(LbaMigrationQueueEntry::decode(&[0; 31]).is_err());
        assert!(LbaMigrationQueueEntry::decode(&[0; 33]).is_err());
        assert_eq!(
            LbaMigrationQueueEntry::decode(&[0; 32]),
            Ok(LbaMigrationQueueEntry::default())
        );
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_type::<Vec<u8>>()
            .with_iterations(2000)
            .for_each(|bytes: &Vec<u8>| {
                if let Ok(e) = LbaMigrationQueueEntry::decode(bytes) {
                    assert_eq!(e.as_bytes(), bytes.as_slice());
                    let _ = (e.attr.esa(), e.attr.lbacir(), e.blocks());
                }
            });
    }

    proptest! {
        #[test]
        fn attr_round_trip(cdqp in any::<bool>(), esa in 0u8..8, dlba in any::<bool>(), lbacir in 0u8..4) {
            let a = LbaMqAttributes::new()
                .with_cdqp(cdqp)
                .with_esa(EntrySequence(esa))
                .with_dlba(dlba)
                .with_lbacir(LbaChangeInfo(lbacir));
            let raw = u8::from(a);
            prop_assert_eq!(raw, u8::from(cdqp) | esa << 1 | u8::from(dlba) << 5 | lbacir << 6);
            let back = LbaMqAttributes::from(raw);
            prop_assert_eq!(back.esa(), EntrySequence(esa));
            prop_assert_eq!(back.lbacir(), LbaChangeInfo(lbacir));
            prop_assert_eq!(back.cdqp(), cdqp);
            prop_assert_eq!(back.dlba(), dlba);
        }
    }
}
