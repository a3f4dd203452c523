//! The NVMe Controller State (NVMECS) block, version 0, selected by CSVI 1 when VERS\[0\] is 0:
//! an 8-byte header, then every I/O submission queue's state, then every I/O completion queue's.
//! The admin queue is not part of it.

use bitfield_struct::bitfield;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::error::LmDecodeError;
use super::error::LmEncodeError;

/// The 8-byte NVMECS header.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct NvmeControllerStateHeader {
    /// Version of the NVMECS block (0).
    pub ver: u16,
    /// Number of I/O submission queue state entries.
    pub niosq: u16,
    /// Number of I/O completion queue state entries.
    pub niocq: u16,
    /// Reserved.
    pub reserved: u16,
}

const _: () = assert!(size_of::<NvmeControllerStateHeader>() == 8);

/// IOSQA, the attributes of an I/O submission queue state entry.
#[bitfield(u16)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct IoSqAttributes {
    /// Physically contiguous.
    pub pc: bool,
    /// Queue priority (as in Create I/O SQ).
    #[bits(2)]
    pub qprio: u8,
    /// Bits 15:3, reserved.
    #[bits(13)]
    pub reserved: u16,
}

/// An I/O submission queue state entry (24 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct IoSqState {
    /// IOSQPRP1: the queue's base address (PRP1 of Create I/O SQ).
    pub prp1: u64,
    /// IOSQQSIZE: queue size, 0's based.
    pub qsize: u16,
    /// IOSQQID: the queue identifier.
    pub qid: u16,
    /// IOSQCQID: the completion queue the SQ posts to.
    pub cqid: u16,
    /// IOSQA: attributes.
    pub attr: IoSqAttributes,
    /// IOSQHP: head pointer, the controller's next fetch slot.
    pub hp: u16,
    /// IOSQTP: tail pointer, the last doorbell value.
    pub tp: u16,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<IoSqState>() == 24);

/// IOCQA, the attributes of an I/O completion queue state entry.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct IoCqAttributes {
    /// Physically contiguous.
    pub pc: bool,
    /// Interrupts enabled.
    pub ien: bool,
    /// Slot 0 Phase Tag: the phase tag the controller writes into slot 0 on its current pass,
    /// which is what phase generation resumes from.
    pub s0pt: bool,
    /// Bits 15:3, reserved.
    #[bits(13)]
    pub reserved: u16,
    /// Interrupt vector.
    pub iv: u16,
}

/// An I/O completion queue state entry (24 bytes).
///
/// The 2025 RFC declares IOCQA as a u16, making a 22-byte entry that misplaces every entry after
/// the first CQ; libnvme, libvfn, nvme-cli and QEMU use a u32 IOCQA at 16 and 24 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct IoCqState {
    /// IOCQPRP1: the queue's base address.
    pub prp1: u64,
    /// IOCQQSIZE: queue size, 0's based.
    pub qsize: u16,
    /// IOCQQID: the queue identifier.
    pub qid: u16,
    /// IOCQHP: head pointer, the host's last doorbell value.
    pub hp: u16,
    /// IOCQTP: tail pointer, the controller's next post slot.
    pub tp: u16,
    /// IOCQA: attributes.
    pub attr: IoCqAttributes,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<IoCqState>() == 24);

/// Copies fixed-size entries out of `bytes`, which holds a whole number of them.
fn read_entries<T: FromBytes>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(size_of::<T>())
        .filter_map(|chunk| T::read_from_bytes(chunk).ok())
        .collect()
}

/// A parsed NVMECS v0 block. Queue counts always fit the header's u16 fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvmeControllerStateV0 {
    sqs: Vec<IoSqState>,
    cqs: Vec<IoCqState>,
}

impl NvmeControllerStateV0 {
    /// The NVMECS VER this type encodes.
    pub const VERSION: u16 = 0;

    /// Builds the block from queue states; at most 65535 of each.
    pub fn new(sqs: Vec<IoSqState>, cqs: Vec<IoCqState>) -> Result<Self, LmEncodeError> {
        for (field, count) in [("NIOSQ", sqs.len()), ("NIOCQ", cqs.len())] {
            if count > usize::from(u16::MAX) {
                return Err(LmEncodeError::TooMany {
                    field,
                    count,
                    max: u16::MAX.into(),
                });
            }
        }
        Ok(Self { sqs, cqs })
    }

    /// The I/O submission queue states.
    pub fn sqs(&self) -> &[IoSqState] {
        &self.sqs
    }

    /// The I/O completion queue states.
    pub fn cqs(&self) -> &[IoCqState] {
        &self.cqs
    }

    /// Byte length of a block with these queue counts: 8 + 24 × (NIOSQ + NIOCQ). A multiple of 4,
    /// so NVMECSS = len / 4.
    pub const fn len_for(niosq: u16, niocq: u16) -> usize {
        size_of::<NvmeControllerStateHeader>()
            + size_of::<IoSqState>() * niosq as usize
            + size_of::<IoCqState>() * niocq as usize
    }

    /// The header this block encodes with.
    pub fn header(&self) -> NvmeControllerStateHeader {
        NvmeControllerStateHeader {
            ver: Self::VERSION,
            // `new` and `decode` keep both counts within u16.
            niosq: self.sqs.len() as u16,
            niocq: self.cqs.len() as u16,
            reserved: 0,
        }
    }

    /// The block's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = self.header();
        let mut out = Vec::with_capacity(Self::len_for(header.niosq, header.niocq));
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.sqs.as_bytes());
        out.extend_from_slice(self.cqs.as_bytes());
        out
    }

    /// Parses a whole NVMECS block (NVMECSS × 4 bytes, e.g. [`super::ControllerState::nvmecs`]).
    /// The length must be exactly 8 + 24 × (NIOSQ + NIOCQ), which is the check that NVMECSS
    /// matches the queue counts, and VER must be 0. The header's reserved field is ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, LmDecodeError> {
        const WHAT: &str = "NVMECS v0";
        let (header, entries) =
            NvmeControllerStateHeader::read_from_prefix(bytes).map_err(|_| {
                LmDecodeError::Truncated {
                    what: WHAT,
                    needed: size_of::<NvmeControllerStateHeader>(),
                    got: bytes.len(),
                }
            })?;
        if header.ver != Self::VERSION {
            return Err(LmDecodeError::UnsupportedVersion {
                field: "NVMECS VER",
                found: header.ver,
                expected: Self::VERSION,
            });
        }
        let expected = Self::len_for(header.niosq, header.niocq);
        let got = bytes.len();
        if got < expected {
            return Err(LmDecodeError::Truncated {
                what: WHAT,
                needed: expected,
                got,
            });
        }
        if got > expected {
            return Err(LmDecodeError::LengthMismatch {
                what: WHAT,
                expected,
                got,
            });
        }
        let (sq_bytes, cq_bytes) =
            entries.split_at(size_of::<IoSqState>() * usize::from(header.niosq));
        Ok(Self {
            sqs: read_entries(sq_bytes),
            cqs: read_entries(cq_bytes),
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
        assert_eq!(offset_of!(NvmeControllerStateHeader, ver), 0);
        assert_eq!(offset_of!(NvmeControllerStateHeader, niosq), 2);
        assert_eq!(offset_of!(NvmeControllerStateHeader, niocq), 4);
        assert_eq!(offset_of!(NvmeControllerStateHeader, reserved), 6);

        assert_eq!(offset_of!(IoSqState, prp1), 0);
        assert_eq!(offset_of!(IoSqState, qsize), 8);
        assert_eq!(offset_of!(IoSqState, qid), 10);
        assert_eq!(offset_of!(IoSqState, cqid), 12);
        assert_eq!(offset_of!(IoSqState, attr), 14);
        assert_eq!(offset_of!(IoSqState, hp), 16);
        assert_eq!(offset_of!(IoSqState, tp), 18);
        assert_eq!(offset_of!(IoSqState, reserved), 20);

        assert_eq!(offset_of!(IoCqState, prp1), 0);
        assert_eq!(offset_of!(IoCqState, qsize), 8);
        assert_eq!(offset_of!(IoCqState, qid), 10);
        assert_eq!(offset_of!(IoCqState, hp), 12);
        assert_eq!(offset_of!(IoCqState, tp), 14);
        assert_eq!(offset_of!(IoCqState, attr), 16);
        assert_eq!(offset_of!(IoCqState, reserved), 20);
    }

    #[test]
    fn attribute_bits() {
        let sqa = IoSqAttributes::from(0b101);
        assert!(sqa.pc());
        assert_eq!(sqa.qprio(), 0b10);
        assert_eq!(u16::from(IoSqAttributes::new().with_qprio(3)), 0b110);

        let cqa = IoCqAttributes::from(0x0005_0007);
        assert!(cqa.pc() && cqa.ien() && cqa.s0pt());
        assert_eq!(cqa.iv(), 5);
        assert_eq!(
            u32::from(IoCqAttributes::new().with_ien(true).with_iv(0x1234)),
            0x1234_0002
        );
    }

    /// One SQ and one CQ, bytes written by hand from the tables (libvfn's single queue pair).
    #[test]
    fn one_queue_pair_bytes() {
        #[rustfmt::skip]
        let bytes: [u8; 56] = [
            // header: VER 0, NIOSQ 1, NIOCQ 1, reserved
            0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
            // SQ: PRP1 0x0000_0001_2345_6000, QSIZE 63, QID 1, CQID 1, IOSQA PC | QPRIO 2,
            //     HP 3, TP 5, reserved
            0x00, 0x60, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00,
            0x3F, 0x00, 0x01, 0x00, 0x01, 0x00, 0x05, 0x00,
            0x03, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
            // CQ: PRP1 0x0000_0000_89AB_C000, QSIZE 63, QID 1, HP 2, TP 4,
            //     IOCQA PC | IEN | S0PT, IV 1, reserved
            0x00, 0xC0, 0xAB, 0x89, 0x00, 0x00, 0x00, 0x00,
            0x3F, 0x00, 0x01, 0x00, 0x02, 0x00, 0x04, 0x00,
            0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let v0 = NvmeControllerStateV0::decode(&bytes).unwrap();
        let sq = v0.sqs()[0];
        assert_eq!(sq.prp1, 0x1_2345_6000);
        assert_eq!((sq.qsize, sq.qid, sq.cqid, sq.hp, sq.tp), (63, 1, 1, 3, 5));
        assert!(sq.attr.pc());
        assert_eq!(sq.attr.qprio(), 2);
        let cq = v0.cqs()[0];
        assert_eq!(cq.prp1, 0x89AB_C000);
        assert_eq!((cq.qsize, cq.qid, cq.hp, cq.tp), (63, 1, 2, 4));
        assert!(cq.attr.pc() && cq.attr.ien() && cq.attr.s0pt());
        assert_eq!(cq.attr.iv(), 1);
        assert_eq!(v0.encode(), bytes);
        // libvfn's NUMD for this state: (48 + 8 + 24 × 2) / 4 = 26.
        assert_eq!((48 + NvmeControllerStateV0::len_for(1, 1)) / 4, 26);
    }

    #[test]
    fn length_and_version_checks() {
        let v0 = NvmeControllerStateV0::new(vec![IoSqState::default()], vec![]).unwrap();
        let bytes = v0.encode();
        assert_eq!(bytes.len(), 32);
        assert!(matches!(
            NvmeControllerStateV0::decode(&bytes[..31]),
            Err(LmDecodeError::Truncated { needed: 32, .. })
        ));
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(matches!(
            NvmeControllerStateV0::decode(&long),
            Err(LmDecodeError::LengthMismatch { expected: 32, .. })
        ));
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert!(matches!(
            NvmeControllerStateV0::decode(&v1),
            Err(LmDecodeError::UnsupportedVersion { found: 1, .. })
        ));
        assert!(matches!(
            NvmeControllerStateV0::decode(&[0; 7]),
            Err(LmDecodeError::Truncated { needed: 8, .. })
        ));
        assert!(matches!(
            NvmeControllerStateV0::new(vec![IoSqState::default(); 65536], vec![]),
            Err(LmEncodeError::TooMany { field: "NIOSQ", .. })
        ));
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_type::<Vec<u8>>()
            .with_iterations(2000)
            .for_each(|bytes: &Vec<u8>| {
                if let Ok(v0) = NvmeControllerStateV0::decode(bytes) {
                    // Only the header's reserved field may differ.
                    assert_eq!(v0.encode()[8..], bytes[8..]);
                }
            });
    }

    #[test]
    fn fuzz_decode_with_small_counts() {
        bolero::check!()
            .with_type::<(u8, u8, Vec<u8>)>()
            .with_iterations(2000)
            .for_each(|(niosq, niocq, body): &(u8, u8, Vec<u8>)| {
                let mut bytes = vec![0, 0, *niosq, 0, *niocq, 0, 0, 0];
                bytes.extend_from_slice(body);
                let ok = NvmeControllerStateV0::decode(&bytes).is_ok();
                let len = NvmeControllerStateV0::len_for((*niosq).into(), (*niocq).into());
                assert_eq!(ok, bytes.len() == len);
            });
    }

    fn sq() -> impl Strategy<Value = IoSqState> {
        (any::<u64>(), any::<[u16; 6]>(), any::<[u8; 4]>()).prop_map(|(prp1, w, reserved)| {
            IoSqState {
                prp1,
                qsize: w[0],
                qid: w[1],
                cqid: w[2],
                attr: IoSqAttributes::from(w[3]),
                hp: w[4],
                tp: w[5],
                reserved,
            }
        })
    }

    fn cq() -> impl Strategy<Value = IoCqState> {
        (
            any::<u64>(),
            any::<[u16; 4]>(),
            any::<u32>(),
            any::<[u8; 4]>(),
        )
            .prop_map(|(prp1, w, attr, reserved)| IoCqState {
                prp1,
                qsize: w[0],
                qid: w[1],
                hp: w[2],
                tp: w[3],
                attr: IoCqAttributes::from(attr),
                reserved,
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            sqs in proptest::collection::vec(sq(), 0..16),
            cqs in proptest::collection::vec(cq(), 0..16),
        ) {
            let v0 = NvmeControllerStateV0::new(sqs, cqs).unwrap();
            let bytes = v0.encode();
            prop_assert_eq!(
                bytes.len(),
                NvmeControllerStateV0::len_for(v0.header().niosq, v0.header().niocq)
            );
            prop_assert_eq!(bytes.len() % 4, 0);
            prop_assert_eq!(NvmeControllerStateV0::decode(&bytes), Ok(v0));
        }
    }
}
