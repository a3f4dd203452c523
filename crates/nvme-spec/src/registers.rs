//! The controller register file in BAR0 (NVMe Base 2.1, "Controller Registers") and the doorbell
//! page that follows it.
//!
//! [`Register`] names each register's byte offset; [`Cap`], [`Vs`], [`Cc`], [`Csts`] and [`Aqa`]
//! are the registers' bit layouts. [`DoorbellStride`] maps queue identifiers to doorbell offsets
//! and back, for any CAP.DSTRD.

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// Byte offsets of the controller registers in BAR0.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u64)]
pub enum Register {
    /// Controller Capabilities (64 bits, read-only).
    CAP = 0x00,
    /// Version (32 bits).
    VS = 0x08,
    /// Interrupt Mask Set (32 bits; INTx/MSI only).
    INTMS = 0x0C,
    /// Interrupt Mask Clear (32 bits; INTx/MSI only).
    INTMC = 0x10,
    /// Controller Configuration (32 bits).
    CC = 0x14,
    /// Controller Status (32 bits).
    CSTS = 0x1C,
    /// NVM Subsystem Reset (32 bits, write "NVMe" = 4E564D65h to reset).
    NSSR = 0x20,
    /// Admin Queue Attributes (32 bits).
    AQA = 0x24,
    /// Admin Submission Queue base address (64 bits).
    ASQ = 0x28,
    /// Admin Completion Queue base address (64 bits).
    ACQ = 0x30,
    /// Controller Memory Buffer Location (32 bits).
    CMBLOC = 0x38,
    /// Controller Memory Buffer Size (32 bits).
    CMBSZ = 0x3C,
    /// Boot Partition Information (32 bits).
    BPINFO = 0x40,
    /// Boot Partition Read Select (32 bits).
    BPRSEL = 0x44,
    /// Boot Partition Memory Buffer Location (64 bits).
    BPMBL = 0x48,
    /// Controller Memory Buffer Memory Space Control (64 bits).
    CMBMSC = 0x50,
    /// Controller Memory Buffer Status (32 bits).
    CMBSTS = 0x58,
    /// Controller Memory Buffer Elasticity Buffer Size (32 bits).
    CMBEBS = 0x5C,
    /// Controller Memory Buffer Sustained Write Throughput (32 bits).
    CMBSWTP = 0x60,
    /// NVM Subsystem Shutdown (32 bits).
    NSSD = 0x64,
    /// Controller Ready Timeouts (32 bits).
    CRTO = 0x68,
    /// Persistent Memory Region Capabilities (32 bits).
    PMRCAP = 0xE00,
    /// Start of the doorbell registers: SQ 0 tail doorbell.
    DOORBELLS = 0x1000,
}

/// The value written to NSSR to request an NVM subsystem reset ("NVMe" in ASCII).
pub const NSSR_RESET_VALUE: u32 = 0x4E56_4D65;

/// CAP.CSS: the command sets the controller supports.
#[bitfield(u8)]
#[derive(PartialEq, Eq)]
pub struct CapCss {
    /// Bit 0: NVM command set.
    pub nvm: bool,
    #[bits(5)]
    _reserved: u8,
    /// Bit 6: one or more I/O command sets (CC.CSS = 110b is allowed).
    pub io_command_sets: bool,
    /// Bit 7: no I/O command set (admin only).
    pub no_io: bool,
}

/// Controller Capabilities (CAP, offset 00h, 64 bits).
#[bitfield(u64)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Cap {
    /// Maximum Queue Entries Supported, 0's based (a value of 63 means 64 entries).
    pub mqes: u16,
    /// Contiguous Queues Required.
    pub cqr: bool,
    /// Arbitration Mechanism Supported: bit 0 weighted round robin with urgent, bit 1 vendor.
    #[bits(2)]
    pub ams: u8,
    #[bits(5)]
    _reserved: u8,
    /// Timeout: worst-case time to become ready after CC.EN changes, in 500 ms units.
    pub to: u8,
    /// Doorbell Stride: doorbells are `4 << DSTRD` bytes apart.
    #[bits(4)]
    pub dstrd: u8,
    /// NVM Subsystem Reset Supported.
    pub nssrs: bool,
    /// Command Sets Supported.
    #[bits(8)]
    pub css: CapCss,
    /// Boot Partition Support.
    pub bps: bool,
    /// Controller Power Scope.
    #[bits(2)]
    pub cps: u8,
    /// Memory Page Size Minimum: `2 ^ (12 + MPSMIN)` bytes.
    #[bits(4)]
    pub mpsmin: u8,
    /// Memory Page Size Maximum: `2 ^ (12 + MPSMAX)` bytes.
    #[bits(4)]
    pub mpsmax: u8,
    /// Persistent Memory Region Supported.
    pub pmrs: bool,
    /// Controller Memory Buffer Supported.
    pub cmbs: bool,
    /// NVM Subsystem Shutdown Supported.
    pub nsss: bool,
    /// Controller Ready Modes Supported: bit 0 with media (CRWMS), bit 1 independent (CRIMS).
    #[bits(2)]
    pub crms: u8,
    /// NVM Subsystem Shutdown Enhancements Supported.
    pub nsses: bool,
    #[bits(2)]
    _reserved2: u8,
}

const _: () = assert!(size_of::<Cap>() == 8);

impl Cap {
    /// The number of entries the largest queue may have (MQES + 1).
    pub const fn max_queue_entries(&self) -> u32 {
        self.mqes() as u32 + 1
    }

    /// CAP.TO converted to milliseconds.
    pub const fn timeout_ms(&self) -> u32 {
        self.to() as u32 * 500
    }

    /// The smallest memory page size the controller supports, in bytes.
    pub const fn min_page_size(&self) -> u64 {
        1 << (12 + self.mpsmin() as u32)
    }

    /// The largest memory page size the controller supports, in bytes.
    pub const fn max_page_size(&self) -> u64 {
        1 << (12 + self.mpsmax() as u32)
    }

    /// The doorbell layout CAP.DSTRD describes.
    pub const fn doorbell_stride(&self) -> DoorbellStride {
        DoorbellStride(self.dstrd())
    }
}

/// Version (VS, offset 08h): major, minor and tertiary version of the specification.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Vs {
    /// Tertiary version number.
    pub ter: u8,
    /// Minor version number.
    pub mnr: u8,
    /// Major version number.
    pub mjr: u16,
}

const _: () = assert!(size_of::<Vs>() == 4);

impl Vs {
    /// NVMe 1.4 (00010400h).
    pub const V1_4: Self = Self::new().with_mjr(1).with_mnr(4);
    /// NVMe 2.0 (00020000h).
    pub const V2_0: Self = Self::new().with_mjr(2);
    /// NVMe 2.1 (00020100h), the revision that contains TP4159.
    pub const V2_1: Self = Self::new().with_mjr(2).with_mnr(1);
}

/// CC.CSS: the I/O command set selected when the controller is enabled.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum CommandSetSelected {
    /// 000b: NVM command set.
    NVM = 0,
    /// 110b: all supported I/O command sets (selected per namespace by CSI).
    ALL_IO = 6,
    /// 111b: admin command set only.
    ADMIN_ONLY = 7,
}
bitfield_enum!(CommandSetSelected, u8);

/// CC.AMS: the arbitration mechanism selected.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum ArbitrationMechanism {
    /// 000b: round robin.
    ROUND_ROBIN = 0,
    /// 001b: weighted round robin with urgent priority class.
    WEIGHTED_ROUND_ROBIN_URGENT = 1,
    /// 111b: vendor specific.
    VENDOR_SPECIFIC = 7,
}
bitfield_enum!(ArbitrationMechanism, u8);

/// CC.SHN: the shutdown notification a host writes.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum ShutdownNotification {
    /// 00b: no notification, no effect.
    NONE = 0,
    /// 01b: normal shutdown notification.
    NORMAL = 1,
    /// 10b: abrupt shutdown notification.
    ABRUPT = 2,
}
bitfield_enum!(ShutdownNotification, u8);

/// CSTS.SHST: shutdown processing status reported by the controller.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum ShutdownStatus {
    /// 00b: normal operation, no shutdown requested.
    NORMAL = 0,
    /// 01b: shutdown processing occurring.
    OCCURRING = 1,
    /// 10b: shutdown processing complete.
    COMPLETE = 2,
}
bitfield_enum!(ShutdownStatus, u8);

/// Controller Configuration (CC, offset 14h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Cc {
    /// Enable: 0→1 starts the controller, 1→0 resets it.
    pub en: bool,
    #[bits(3)]
    _reserved: u8,
    /// I/O Command Set Selected.
    #[bits(3)]
    pub css: CommandSetSelected,
    /// Memory Page Size: `2 ^ (12 + MPS)` bytes.
    #[bits(4)]
    pub mps: u8,
    /// Arbitration Mechanism Selected.
    #[bits(3)]
    pub ams: ArbitrationMechanism,
    /// Shutdown Notification.
    #[bits(2)]
    pub shn: ShutdownNotification,
    /// I/O Submission Queue Entry Size: `2 ^ IOSQES` bytes (6 for 64-byte entries).
    #[bits(4)]
    pub iosqes: u8,
    /// I/O Completion Queue Entry Size: `2 ^ IOCQES` bytes (4 for 16-byte entries).
    #[bits(4)]
    pub iocqes: u8,
    /// Controller Ready Independent of Media Enable.
    pub crime: bool,
    #[bits(7)]
    _reserved2: u8,
}

const _: () = assert!(size_of::<Cc>() == 4);

impl Cc {
    /// The host memory page size selected by CC.MPS, in bytes.
    pub const fn page_size(&self) -> u64 {
        1 << (12 + self.mps() as u32)
    }
}

/// Controller Status (CSTS, offset 1Ch).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Csts {
    /// Ready: the controller processes commands.
    pub rdy: bool,
    /// Controller Fatal Status.
    pub cfs: bool,
    /// Shutdown Status.
    #[bits(2)]
    pub shst: ShutdownStatus,
    /// NVM Subsystem Reset Occurred.
    pub nssro: bool,
    /// Processing Paused.
    pub pp: bool,
    /// Shutdown Type: 1 when the shutdown reported in SHST is an NVM subsystem shutdown.
    pub st: bool,
    #[bits(25)]
    _reserved: u32,
}

const _: () = assert!(size_of::<Csts>() == 4);

/// Admin Queue Attributes (AQA, offset 24h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Aqa {
    /// Admin Submission Queue Size, 0's based.
    #[bits(12)]
    pub asqs: u16,
    #[bits(4)]
    _reserved: u8,
    /// Admin Completion Queue Size, 0's based.
    #[bits(12)]
    pub acqs: u16,
    #[bits(4)]
    _reserved2: u8,
}

const _: () = assert!(size_of::<Aqa>() == 4);

impl Aqa {
    /// Number of admin submission queue entries (ASQS + 1).
    pub const fn sq_entries(&self) -> u16 {
        self.asqs() + 1
    }

    /// Number of admin completion queue entries (ACQS + 1).
    pub const fn cq_entries(&self) -> u16 {
        self.acqs() + 1
    }
}

/// Which doorbell a BAR0 offset addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Doorbell {
    /// Submission queue `y` tail doorbell.
    SqTail(u16),
    /// Completion queue `y` head doorbell.
    CqHead(u16),
}

/// The doorbell layout for one CAP.DSTRD value: doorbell `n` lives at
/// `1000h + n * (4 << DSTRD)`, with SQ `y` tail at `n = 2y` and CQ `y` head at `n = 2y + 1`.
///
/// DSTRD is a 4-bit field, so every arithmetic result fits in a `u64` and nothing here can panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DoorbellStride(u8);

impl DoorbellStride {
    /// The layout for `dstrd`, or `None` if it does not fit CAP.DSTRD's four bits.
    pub const fn new(dstrd: u8) -> Option<Self> {
        if dstrd <= 0xF {
            Some(Self(dstrd))
        } else {
            None
        }
    }

    /// The DSTRD value.
    pub const fn dstrd(self) -> u8 {
        self.0
    }

    /// The distance between consecutive doorbells, in bytes.
    pub const fn bytes(self) -> u64 {
        4 << self.0
    }

    /// BAR0 offset of the tail doorbell of submission queue `qid`.
    pub const fn sq_tail(self, qid: u16) -> u64 {
        Register::DOORBELLS.0 + (2 * qid as u64) * self.bytes()
    }

    /// BAR0 offset of the head doorbell of completion queue `qid`.
    pub const fn cq_head(self, qid: u16) -> u64 {
        Register::DOORBELLS.0 + (2 * qid as u64 + 1) * self.bytes()
    }

    /// The doorbell that starts exactly at `offset`, or `None` for offsets below the doorbell
    /// area, offsets between doorbells (misaligned for this stride) and queue identifiers beyond
    /// 65535. Whether the queue exists, and whether the offset lies inside the BAR, is the
    /// caller's business.
    pub const fn decode(self, offset: u64) -> Option<Doorbell> {
        let Some(rel) = offset.checked_sub(Register::DOORBELLS.0) else {
            return None;
        };
        if !rel.is_multiple_of(self.bytes()) {
            return None;
        }
        let index = rel / self.bytes();
        let qid = index / 2;
        if qid > u16::MAX as u64 {
            return None;
        }
        let qid = qid as u16;
        Some(if index.is_multiple_of(2) {
            Doorbell::SqTail(qid)
        } else {
            Doorbell::CqHead(qid)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn register_offsets() {
        let expected = [
            (Register::CAP, 0x00),
            (Register::VS, 0x08),
            (Register::INTMS, 0x0C),
            (Register::INTMC, 0x10),
            (Register::CC, 0x14),
            (Register::CSTS, 0x1C),
            (Register::NSSR, 0x20),
            (Register::AQA, 0x24),
            (Register::ASQ, 0x28),
            (Register::ACQ, 0x30),
            (Register::CMBLOC, 0x38),
            (Register::CMBSZ, 0x3C),
            (Register::DOORBELLS, 0x1000),
        ];
        for (reg, offset) in expected {
            assert_eq!(reg.0, offset, "{reg:?}");
        }
    }

    #[test]
    fn cap_fields() {
        // MQES 1023, CQR, AMS=01b, TO=20 (10 s), DSTRD 2, NSSRS, CSS NVM + I/O sets,
        // MPSMIN 0, MPSMAX 4, CMBS.
        let raw: u64 = 0x3FF
            | 1 << 16
            | 1 << 17
            | 20 << 24
            | 2 << 32
            | 1 << 36
            | (0b0100_0001 << 37)
            | 4 << 52
            | 1 << 57;
        let cap = Cap::from(raw);
        assert_eq!(cap.mqes(), 0x3FF);
        assert_eq!(cap.max_queue_entries(), 1024);
        assert!(cap.cqr());
        assert_eq!(cap.ams(), 1);
        assert_eq!(cap.to(), 20);
        assert_eq!(cap.timeout_ms(), 10_000);
        assert_eq!(cap.dstrd(), 2);
        assert!(cap.nssrs());
        assert!(cap.css().nvm());
        assert!(cap.css().io_command_sets());
        assert!(!cap.css().no_io());
        assert!(!cap.bps());
        assert_eq!(cap.mpsmin(), 0);
        assert_eq!(cap.mpsmax(), 4);
        assert_eq!(cap.min_page_size(), 4096);
        assert_eq!(cap.max_page_size(), 65536);
        assert!(cap.cmbs());
        assert!(!cap.pmrs());
        assert_eq!(cap.doorbell_stride().bytes(), 16);
        let built = Cap::new()
            .with_mqes(0x3FF)
            .with_cqr(true)
            .with_ams(1)
            .with_to(20)
            .with_dstrd(2)
            .with_nssrs(true)
            .with_css(CapCss::new().with_nvm(true).with_io_command_sets(true))
            .with_mpsmax(4)
            .with_cmbs(true);
        assert_eq!(u64::from(built), raw);
    }

    #[test]
    fn vs_constants() {
        assert_eq!(u32::from(Vs::V1_4), 0x0001_0400);
        assert_eq!(u32::from(Vs::V2_0), 0x0002_0000);
        assert_eq!(u32::from(Vs::V2_1), 0x0002_0100);
        let vs = Vs::from(0x0001_0302);
        assert_eq!((vs.mjr(), vs.mnr(), vs.ter()), (1, 3, 2));
    }

    #[test]
    fn cc_fields() {
        // Linux writes EN | CSS=NVM | MPS=0 | AMS=RR | IOSQES=6 | IOCQES=4 = 0x0046_0001.
        let cc = Cc::from(0x0046_0001);
        assert!(cc.en());
        assert_eq!(cc.css(), CommandSetSelected::NVM);
        assert_eq!(cc.mps(), 0);
        assert_eq!(cc.page_size(), 4096);
        assert_eq!(cc.ams(), ArbitrationMechanism::ROUND_ROBIN);
        assert_eq!(cc.shn(), ShutdownNotification::NONE);
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(cc.iocqes(), 4);
        let built = Cc::new()
            .with_en(true)
            .with_css(CommandSetSelected::ALL_IO)
            .with_mps(1)
            .with_ams(ArbitrationMechanism::WEIGHTED_ROUND_ROBIN_URGENT)
            .with_shn(ShutdownNotification::ABRUPT)
            .with_iosqes(6)
            .with_iocqes(4)
            .with_crime(true);
        assert_eq!(
            u32::from(built),
            1 | 6 << 4 | 1 << 7 | 1 << 11 | 2 << 14 | 6 << 16 | 4 << 20 | 1 << 24
        );
        assert_eq!(built.page_size(), 8192);
        // SHN = normal is bits 15:14 = 01b.
        assert_eq!(
            Cc::from(1 << 14).shn(),
            ShutdownNotification::NORMAL,
            "SHN field position"
        );
    }

    #[test]
    fn csts_fields() {
        let csts = Csts::new()
            .with_rdy(true)
            .with_shst(ShutdownStatus::COMPLETE)
            .with_pp(true);
        assert_eq!(u32::from(csts), 1 | 2 << 2 | 1 << 5);
        let csts = Csts::from(0b1_0010);
        assert!(!csts.rdy());
        assert!(csts.cfs());
        assert_eq!(csts.shst(), ShutdownStatus::NORMAL);
        assert!(csts.nssro());
        assert_eq!(Csts::from(1 << 2).shst(), ShutdownStatus::OCCURRING);
    }

    #[test]
    fn aqa_fields() {
        let aqa = Aqa::from(0x001F_003F);
        assert_eq!(aqa.asqs(), 63);
        assert_eq!(aqa.acqs(), 31);
        assert_eq!(aqa.sq_entries(), 64);
        assert_eq!(aqa.cq_entries(), 32);
        assert_eq!(
            u32::from(Aqa::new().with_asqs(0xFFF).with_acqs(0xFFF)),
            0x0FFF_0FFF
        );
    }

    #[test]
    fn doorbell_offsets() {
        for dstrd in 0..=3u8 {
            let s = DoorbellStride::new(dstrd).unwrap();
            let stride = 4u64 << dstrd;
            assert_eq!(s.sq_tail(0), 0x1000);
            assert_eq!(s.cq_head(0), 0x1000 + stride);
            assert_eq!(s.sq_tail(1), 0x1000 + 2 * stride);
            assert_eq!(s.cq_head(1), 0x1000 + 3 * stride);
            assert_eq!(s.sq_tail(7), 0x1000 + 14 * stride);
            assert_eq!(s.cq_head(u16::MAX), 0x1000 + (2 * 65535 + 1) * stride);
            assert_eq!(
                s.decode(s.cq_head(u16::MAX)),
                Some(Doorbell::CqHead(u16::MAX))
            );
        }
        assert_eq!(DoorbellStride::new(0).unwrap().cq_head(1), 0x100C);
        assert_eq!(DoorbellStride::new(15), Some(DoorbellStride(15)));
        assert_eq!(DoorbellStride::new(16), None);
    }

    #[test]
    fn doorbell_reverse_mapping_covers_a_bar() {
        // A 16 KiB BAR0: registers, then doorbells; every offset in it (and a little beyond the
        // last queue's slot) must decode to exactly what the forward mapping says.
        for dstrd in 0..=3u8 {
            let s = DoorbellStride::new(dstrd).unwrap();
            let mut forward = HashMap::new();
            for qid in 0..=u16::MAX {
                if s.sq_tail(qid) >= 0x4000 {
                    break;
                }
                forward.insert(s.sq_tail(qid), Doorbell::SqTail(qid));
                forward.insert(s.cq_head(qid), Doorbell::CqHead(qid));
            }
            for offset in 0..0x4000u64 {
                assert_eq!(
                    s.decode(offset),
                    forward.get(&offset).copied(),
                    "dstrd {dstrd} offset {offset:#x}"
                );
            }
        }
    }

    #[test]
    fn doorbell_decode_extremes() {
        for dstrd in 0..=15u8 {
            let s = DoorbellStride::new(dstrd).unwrap();
            assert_eq!(s.decode(u64::MAX), None);
            assert_eq!(s.decode(0), None);
            assert_eq!(s.decode(0xFFF), None);
            assert_eq!(s.decode(s.cq_head(u16::MAX) + s.bytes()), None);
            assert_eq!(s.decode(s.sq_tail(300)), Some(Doorbell::SqTail(300)));
        }
    }
}
