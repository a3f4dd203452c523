//! Controller Data Queue (45h) create/delete, and Feature 21h (Controller Data Queue) that moves
//! the head pointer and arms the tail pointer trigger.

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::common::Decoded;
use super::common::IdentifierCdw11;
use super::common::LmCdw10;
use super::common::LmCommand;
use super::common::ReservedBits;
use super::common::decode_identifier;
use super::common::encode_identifier;
use super::common::expect_select;
use super::common::lm_cdw10;
use super::common::new_command;
use super::error::LmCommandError;
use super::error::LmEncodeError;
use crate::command::AdminOpcode;
use crate::command::Command;
use crate::features::FeatureId;

/// Controller Data Queue SEL values (CDW10\[7:0\]).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum CdqSelect {
    /// Create a Controller Data Queue.
    CREATE = 0,
    /// Delete a Controller Data Queue.
    DELETE = 1,
}

/// Queue Type (QT, MOS\[7:0\] of Create CDQ).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum QueueType {
    /// User Data Migration Queue: 32-byte LBA migration queue entries.
    USER_DATA_MIGRATION_QUEUE = 0,
}

bitfield_enum!(QueueType, u8);

/// MOS of Create CDQ.
///
/// QEMU's TP4159 model extracts MOS as CDW10 >> 15 (a bug, harmless for QT 0); the field is
/// CDW10\[23:16\].
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct CreateCdqMos {
    /// Queue Type.
    #[bits(8)]
    pub qt: QueueType,
    _reserved: u8,
}

impl CreateCdqMos {
    /// Bits of MOS that Create CDQ reserves (15:8, i.e. CDW10\[31:24\]).
    pub const RESERVED: u16 = !Self::new().with_qt(QueueType(u8::MAX)).into_bits();
}

/// CDW11 of Create CDQ.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateCdqCdw11 {
    /// Physically Contiguous: PRP1 is the queue base; otherwise PRP1 points at a PRP list.
    pub pc: bool,
    #[bits(15)]
    _reserved: u16,
    /// Create Queue Specific: for a User Data Migration Queue, the CNTLID whose user-data changes
    /// are logged.
    pub cqs: u16,
}

impl CreateCdqCdw11 {
    /// Bits of CDW11 that Create CDQ reserves (15:1).
    pub const RESERVED: u32 = !Self::new().with_pc(true).with_cqs(u16::MAX).into_bits();
}

/// Dword 0 of the completion of Create CDQ.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateCdqDw0 {
    /// The identifier of the created queue.
    pub cdqid: u16,
    _reserved: u16,
}

/// Controller Data Queue, SEL 0: Create. The queue memory (PRP1) stays in host memory and is
/// DMA-written by the controller; it must be mapped for the primary controller, not the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CreateCdq {
    /// Queue Type.
    pub qt: QueueType,
    /// Physically contiguous queue memory.
    pub pc: bool,
    /// Create Queue Specific (the logged CNTLID for a User Data Migration Queue).
    pub cqs: u16,
    /// Queue size **in dwords** (CDW12); libvfn uses 1024 (4 KiB, 128 LBA entries).
    pub cdqsize: u32,
    /// Queue base (PC) or PRP list pointer (not PC).
    pub prp1: u64,
}

impl CreateCdq {
    /// A physically contiguous User Data Migration Queue logging the changes of `cntlid`.
    pub const fn user_data_migration_queue(cntlid: u16, prp1: u64, cdqsize: u32) -> Self {
        Self {
            qt: QueueType::USER_DATA_MIGRATION_QUEUE,
            pc: true,
            cqs: cntlid,
            cdqsize,
            prp1,
        }
    }

    /// The queue size in bytes: CDQSIZE × 4.
    pub const fn len_bytes(&self) -> u64 {
        self.cdqsize as u64 * 4
    }
}

impl LmCommand for CreateCdq {
    const OPCODE: AdminOpcode = AdminOpcode::CONTROLLER_DATA_QUEUE;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        let mos = expect_select(cmd, Self::OPCODE, "Create CDQ", CdqSelect::CREATE.0)?;
        let cdw11 = CreateCdqCdw11::from(cmd.cdw11);
        Ok(Decoded {
            op: Self {
                qt: CreateCdqMos::from(mos).qt(),
                pc: cdw11.pc(),
                cqs: cdw11.cqs(),
                cdqsize: cmd.cdw12,
                prp1: cmd.prp1,
            },
            reserved: ReservedBits {
                cdw10: LmCdw10::reserved_bits(cmd.cdw10, CreateCdqMos::RESERVED),
                cdw11: cmd.cdw11 & CreateCdqCdw11::RESERVED,
                cdw14: 0,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = LmCdw10::from_parts(
            CdqSelect::CREATE.0,
            CreateCdqMos::new().with_qt(self.qt).into_bits(),
        );
        cmd.cdw11 = CreateCdqCdw11::new()
            .with_pc(self.pc)
            .with_cqs(self.cqs)
            .into();
        cmd.cdw12 = self.cdqsize;
        cmd.prp1 = self.prp1;
        Ok(cmd)
    }
}

/// Controller Data Queue, SEL 1: Delete. An unknown CDQID gets Invalid Controller Data Queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeleteCdq {
    /// The queue to delete.
    pub cdqid: u16,
}

impl LmCommand for DeleteCdq {
    const OPCODE: AdminOpcode = AdminOpcode::CONTROLLER_DATA_QUEUE;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        Ok(
            decode_identifier(cmd, Self::OPCODE, "Delete CDQ", CdqSelect::DELETE.0)?
                .map(|cdqid| Self { cdqid }),
        )
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        Ok(encode_identifier(
            Self::OPCODE,
            CdqSelect::DELETE.0,
            self.cdqid,
        ))
    }
}

/// Any Controller Data Queue operation, chosen by SEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerDataQueue {
    /// SEL 0.
    Create(CreateCdq),
    /// SEL 1.
    Delete(DeleteCdq),
}

impl LmCommand for ControllerDataQueue {
    const OPCODE: AdminOpcode = AdminOpcode::CONTROLLER_DATA_QUEUE;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        match CdqSelect(lm_cdw10(cmd, Self::OPCODE)?.sel()) {
            CdqSelect::CREATE => Ok(CreateCdq::decode(cmd)?.map(Self::Create)),
            CdqSelect::DELETE => Ok(DeleteCdq::decode(cmd)?.map(Self::Delete)),
            other => Err(LmCommandError::UnsupportedSelect {
                command: "Controller Data Queue",
                sel: other.0,
            }),
        }
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        match self {
            Self::Create(op) => op.encode(),
            Self::Delete(op) => op.encode(),
        }
    }
}

/// CDW11 of Set Features 21h. The QEMU model returns the same layout in CQE dword 0.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct SetCdqFeatureCdw11 {
    /// The queue whose head pointer is updated.
    pub cdqid: u16,
    #[bits(15)]
    _reserved: u16,
    /// Enable Tail Pointer Trigger: raise an asynchronous event once when the tail reaches TPT.
    pub etpt: bool,
}

impl SetCdqFeatureCdw11 {
    /// Bits of CDW11 that Set Features 21h reserves (30:16).
    pub const RESERVED: u32 = !Self::new().with_cdqid(u16::MAX).with_etpt(true).into_bits();
}

/// Checks the opcode and that CDW10\[7:0\] names Feature 21h. The rest of CDW10 (Save, or the Get
/// Features select) is the generic Set/Get Features handling's business.
fn expect_cdq_feature(cmd: &Command, opcode: AdminOpcode) -> Result<(), LmCommandError> {
    let found = lm_cdw10(cmd, opcode)?.sel();
    if found != FeatureId::CONTROLLER_DATA_QUEUE.0 {
        return Err(LmCommandError::WrongFeature { found });
    }
    Ok(())
}

/// Set Features, FID 21h: tell the controller how far the host has consumed a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetCdqFeature {
    /// The queue.
    pub cdqid: u16,
    /// Enable the tail pointer trigger at `tpt`.
    pub etpt: bool,
    /// Head Pointer: the slot of the next entry the host has not consumed (CDW12).
    pub hp: u32,
    /// Tail Pointer Trigger slot (CDW13).
    pub tpt: u32,
}

impl LmCommand for SetCdqFeature {
    const OPCODE: AdminOpcode = AdminOpcode::SET_FEATURES;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        expect_cdq_feature(cmd, Self::OPCODE)?;
        let cdw11 = SetCdqFeatureCdw11::from(cmd.cdw11);
        Ok(Decoded {
            op: Self {
                cdqid: cdw11.cdqid(),
                etpt: cdw11.etpt(),
                hp: cmd.cdw12,
                tpt: cmd.cdw13,
            },
            reserved: ReservedBits {
                cdw10: 0,
                cdw11: cmd.cdw11 & SetCdqFeatureCdw11::RESERVED,
                cdw14: 0,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = FeatureId::CONTROLLER_DATA_QUEUE.0.into();
        cmd.cdw11 = SetCdqFeatureCdw11::new()
            .with_cdqid(self.cdqid)
            .with_etpt(self.etpt)
            .into();
        cmd.cdw12 = self.hp;
        cmd.cdw13 = self.tpt;
        Ok(cmd)
    }
}

/// Get Features, FID 21h: read a queue's head pointer and tail pointer trigger
/// ([`CdqFeatureData`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GetCdqFeature {
    /// The queue.
    pub cdqid: u16,
}

impl LmCommand for GetCdqFeature {
    const OPCODE: AdminOpcode = AdminOpcode::GET_FEATURES;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        expect_cdq_feature(cmd, Self::OPCODE)?;
        Ok(Decoded {
            op: Self {
                cdqid: IdentifierCdw11::from(cmd.cdw11).id(),
            },
            reserved: ReservedBits {
                cdw10: 0,
                cdw11: cmd.cdw11 & IdentifierCdw11::RESERVED,
                cdw14: 0,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = FeatureId::CONTROLLER_DATA_QUEUE.0.into();
        cmd.cdw11 = IdentifierCdw11::new().with_id(self.cdqid).into();
        Ok(cmd)
    }
}

/// The 8-byte data returned by Get Features 21h.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct CdqFeatureData {
    /// Head pointer (slot index).
    pub hp: u32,
    /// Tail pointer trigger (slot index).
    pub tpt: u32,
}

const _: () = assert!(size_of::<CdqFeatureData>() == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn reserved_masks() {
        assert_eq!(CreateCdqMos::RESERVED, 0xFF00);
        assert_eq!(CreateCdqCdw11::RESERVED, 0x0000_FFFE);
        assert_eq!(SetCdqFeatureCdw11::RESERVED, 0x7FFF_0000);
    }

    #[test]
    fn feature_data_layout() {
        assert_eq!(offset_of!(CdqFeatureData, hp), 0);
        assert_eq!(offset_of!(CdqFeatureData, tpt), 4);
        let d = CdqFeatureData::read_from_bytes(&[5, 0, 0, 0, 0x64, 0, 0, 0]).unwrap();
        assert_eq!(d, CdqFeatureData { hp: 5, tpt: 100 });
    }

    #[test]
    fn create_dw0_and_size() {
        assert_eq!(CreateCdqDw0::from(0xFFFF_0003).cdqid(), 3);
        let op = CreateCdq::user_data_migration_queue(2, 0x1000, 1024);
        assert_eq!(op.len_bytes(), 4096);
        assert!(op.pc);
    }

    #[test]
    fn wrong_feature_and_select() {
        let mut cmd = GetCdqFeature { cdqid: 1 }.encode().unwrap();
        cmd.cdw10 = 0x20;
        assert_eq!(
            GetCdqFeature::decode(&cmd),
            Err(LmCommandError::WrongFeature { found: 0x20 })
        );
        let mut cmd = DeleteCdq { cdqid: 1 }.encode().unwrap();
        cmd.cdw10 = 2;
        assert!(matches!(
            ControllerDataQueue::decode(&cmd),
            Err(LmCommandError::UnsupportedSelect { sel: 2, .. })
        ));
    }

    #[test]
    fn feature_cdw10_upper_bits_are_left_to_the_caller() {
        let mut cmd = SetCdqFeature {
            cdqid: 1,
            etpt: false,
            hp: 0,
            tpt: 0,
        }
        .encode()
        .unwrap();
        // Save (bit 31) is a Set Features field, not a Feature 21h one.
        cmd.cdw10 |= 1 << 31;
        cmd.cdw11 |= 1 << 16;
        let d = SetCdqFeature::decode(&cmd).unwrap();
        assert_eq!(d.reserved.cdw10, 0);
        assert_eq!(d.reserved.cdw11, 1 << 16);
    }
}
