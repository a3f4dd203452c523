//! Migration Send (41h): Suspend, Resume and Set Controller State.

use bitfield_struct::bitfield;
use open_enum::open_enum;

use super::common::Decoded;
use super::common::LmCdw10;
use super::common::LmCommand;
use super::common::ReservedBits;
use super::common::UuidIndexCdw14;
use super::common::decode_identifier;
use super::common::encode_identifier;
use super::common::expect_select;
use super::common::lm_cdw10;
use super::common::new_command;
use super::common::offset_from;
use super::common::set_offset;
use super::common::too_wide;
use super::error::LmCommandError;
use super::error::LmEncodeError;
use crate::command::AdminOpcode;
use crate::command::Command;

/// Migration Send SEL values (CDW10\[7:0\]).
///
/// The 2025 RFC's `enum nvme_lm_send_select` has Resume = 2 and Set Controller State = 3; that is
/// wrong (its Resume would be decoded as Set Controller State, its Set hits a reserved value).
/// libnvme, nvme-cli, libvfn and the QEMU TP4159 model all use 0/1/2.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum MigrationSendSelect {
    /// Suspend the migratable controller (or notify that it will be suspended).
    SUSPEND = 0,
    /// Resume a suspended controller.
    RESUME = 1,
    /// Load (a chunk of) a Controller State data structure into a controller.
    SET_CONTROLLER_STATE = 2,
}

/// Suspend Type (STYPE, CDW11\[23:16\] of Suspend). Older nvme-cli and libvfn call it "pause type".
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum SuspendType {
    /// Suspend Notification: the controller will be suspended by a later Suspend.
    NOTIFICATION = 0,
    /// Suspend now: stop fetching, drain in-flight commands, then complete.
    SUSPEND = 1,
}

bitfield_enum!(SuspendType, u8);

/// Sequence Indicator (SEQIND, MOS\[1:0\] of Set Controller State): where this command's chunk
/// sits in a multi-command transfer of the controller state.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum SequenceIndicator {
    /// Neither the first nor the last chunk.
    MIDDLE = 0,
    /// The first chunk.
    FIRST = 1,
    /// The last chunk.
    LAST = 2,
    /// This command carries the whole state.
    ONLY = 3,
}

bitfield_enum!(SequenceIndicator, u8);

/// CDW11 of Suspend.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct SuspendCdw11 {
    /// CNTLID of the controller to suspend.
    pub cntlid: u16,
    /// Suspend Type. The RFC's comment says "cdw11\[17:16\]"; it only ever writes 1, which encodes
    /// the same.
    #[bits(8)]
    pub stype: SuspendType,
    #[bits(7)]
    _reserved: u8,
    /// Delete the User Data Migration Queue as part of the suspend.
    pub dudmq: bool,
}

impl SuspendCdw11 {
    /// Bits of CDW11 that Suspend reserves (30:24).
    pub const RESERVED: u32 = !Self::new()
        .with_cntlid(u16::MAX)
        .with_stype(SuspendType(u8::MAX))
        .with_dudmq(true)
        .into_bits();
}

/// MOS of Set Controller State.
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct SetControllerStateMos {
    /// Sequence Indicator (CDW10\[17:16\]).
    #[bits(2)]
    pub seqind: SequenceIndicator,
    #[bits(14)]
    _reserved: u16,
}

impl SetControllerStateMos {
    /// Bits of MOS that Set Controller State reserves (15:2, i.e. CDW10\[31:18\]).
    pub const RESERVED: u16 = !Self::new().with_seqind(SequenceIndicator::ONLY).into_bits();
}

/// CDW11 of Set Controller State. Note that CSVI and CSUUIDI sit at other places than in
/// Migration Receive, where CSVI is in MOS and CSUUIDI at CDW11\[23:16\].
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct SetControllerStateCdw11 {
    /// CNTLID of the controller whose state is set.
    pub cntlid: u16,
    /// Controller State Version Index: 1-based index into VERS of Identify CNS 20h, 0 = no
    /// NVMe-defined state.
    pub csvi: u8,
    /// Controller State UUID Index: 1-based index into the UUIDs of Identify CNS 20h, 0 = no
    /// vendor-specific state.
    pub csuuidi: u8,
}

/// Migration Send, SEL 0: Suspend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Suspend {
    /// Target controller.
    pub cntlid: u16,
    /// Notification or actual suspend.
    pub stype: SuspendType,
    /// Delete the User Data Migration Queue after the final marker.
    pub dudmq: bool,
}

impl LmCommand for Suspend {
    const OPCODE: AdminOpcode = AdminOpcode::MIGRATION_SEND;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        expect_select(cmd, Self::OPCODE, "Suspend", MigrationSendSelect::SUSPEND.0)?;
        let cdw11 = SuspendCdw11::from(cmd.cdw11);
        Ok(Decoded {
            op: Self {
                cntlid: cdw11.cntlid(),
                stype: cdw11.stype(),
                dudmq: cdw11.dudmq(),
            },
            reserved: ReservedBits {
                cdw10: LmCdw10::reserved_bits(cmd.cdw10, u16::MAX),
                cdw11: cmd.cdw11 & SuspendCdw11::RESERVED,
                cdw14: 0,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = LmCdw10::from_parts(MigrationSendSelect::SUSPEND.0, 0);
        cmd.cdw11 = SuspendCdw11::new()
            .with_cntlid(self.cntlid)
            .with_stype(self.stype)
            .with_dudmq(self.dudmq)
            .into();
        Ok(cmd)
    }
}

/// Migration Send, SEL 1: Resume. A device answers Controller Not Suspended (13Ah) if the target
/// is not suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resume {
    /// Target controller.
    pub cntlid: u16,
}

impl LmCommand for Resume {
    const OPCODE: AdminOpcode = AdminOpcode::MIGRATION_SEND;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        Ok(
            decode_identifier(cmd, Self::OPCODE, "Resume", MigrationSendSelect::RESUME.0)?
                .map(|cntlid| Self { cntlid }),
        )
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        Ok(encode_identifier(
            Self::OPCODE,
            MigrationSendSelect::RESUME.0,
            self.cntlid,
        ))
    }
}

/// Migration Send, SEL 2: Set Controller State. The data (PRP1/PRP2, set by the caller) is the
/// chunk of the Controller State data structure that starts at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetControllerState {
    /// Where this chunk sits in the transfer.
    pub seqind: SequenceIndicator,
    /// Target controller.
    pub cntlid: u16,
    /// Controller State Version Index (1-based; 1 selects VERS\[0\]). The RFC passes the version
    /// itself (0) here, which is wrong.
    pub csvi: u8,
    /// Controller State UUID Index (1-based; 0 = no vendor-specific state).
    pub csuuidi: u8,
    /// Byte offset of this chunk within the controller state (CDW12 low, CDW13 high).
    pub offset: u64,
    /// UUID index (CDW14\[6:0\]).
    pub uidx: u8,
    /// Number of dwords of data, a **plain count** (libnvme, nvme-cli, libvfn and QEMU agree; the
    /// RFC encodes it 0's based, which is wrong).
    pub numd: u32,
}

impl SetControllerState {
    /// The number of data bytes the command transfers: NUMD × 4.
    pub const fn data_len(&self) -> u64 {
        self.numd as u64 * 4
    }

    /// NUMD for a chunk of `len` bytes, which must be a whole number of dwords.
    pub fn numd_for_len(len: u64) -> Result<u32, LmEncodeError> {
        if !len.is_multiple_of(4) {
            return Err(LmEncodeError::BadLength { field: "NUMD", len });
        }
        u32::try_from(len / 4).map_err(|_| LmEncodeError::BadLength { field: "NUMD", len })
    }
}

impl LmCommand for SetControllerState {
    const OPCODE: AdminOpcode = AdminOpcode::MIGRATION_SEND;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        let mos = expect_select(
            cmd,
            Self::OPCODE,
            "Set Controller State",
            MigrationSendSelect::SET_CONTROLLER_STATE.0,
        )?;
        let cdw11 = SetControllerStateCdw11::from(cmd.cdw11);
        Ok(Decoded {
            op: Self {
                seqind: SetControllerStateMos::from(mos).seqind(),
                cntlid: cdw11.cntlid(),
                csvi: cdw11.csvi(),
                csuuidi: cdw11.csuuidi(),
                offset: offset_from(cmd),
                uidx: UuidIndexCdw14::from(cmd.cdw14).uidx(),
                numd: cmd.cdw15,
            },
            reserved: ReservedBits {
                cdw10: LmCdw10::reserved_bits(cmd.cdw10, SetControllerStateMos::RESERVED),
                cdw11: 0,
                cdw14: cmd.cdw14 & UuidIndexCdw14::RESERVED,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mos = SetControllerStateMos::new()
            .with_seqind_checked(self.seqind)
            .map_err(|()| too_wide("SEQIND", self.seqind.0.into(), 2))?;
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 =
            LmCdw10::from_parts(MigrationSendSelect::SET_CONTROLLER_STATE.0, mos.into_bits());
        cmd.cdw11 = SetControllerStateCdw11::new()
            .with_cntlid(self.cntlid)
            .with_csvi(self.csvi)
            .with_csuuidi(self.csuuidi)
            .into();
        set_offset(&mut cmd, self.offset);
        cmd.cdw14 = UuidIndexCdw14::encode(self.uidx)?;
        cmd.cdw15 = self.numd;
        Ok(cmd)
    }
}

/// Any Migration Send operation, chosen by SEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MigrationSend {
    /// SEL 0.
    Suspend(Suspend),
    /// SEL 1.
    Resume(Resume),
    /// SEL 2.
    SetControllerState(SetControllerState),
}

impl LmCommand for MigrationSend {
    const OPCODE: AdminOpcode = AdminOpcode::MIGRATION_SEND;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        match MigrationSendSelect(lm_cdw10(cmd, Self::OPCODE)?.sel()) {
            MigrationSendSelect::SUSPEND => Ok(Suspend::decode(cmd)?.map(Self::Suspend)),
            MigrationSendSelect::RESUME => Ok(Resume::decode(cmd)?.map(Self::Resume)),
            MigrationSendSelect::SET_CONTROLLER_STATE => {
                Ok(SetControllerState::decode(cmd)?.map(Self::SetControllerState))
            }
            other => Err(LmCommandError::UnsupportedSelect {
                command: "Migration Send",
                sel: other.0,
            }),
        }
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        match self {
            Self::Suspend(op) => op.encode(),
            Self::Resume(op) => op.encode(),
            Self::SetControllerState(op) => op.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_values() {
        assert_eq!(MigrationSendSelect::SUSPEND.0, 0);
        assert_eq!(MigrationSendSelect::RESUME.0, 1);
        assert_eq!(MigrationSendSelect::SET_CONTROLLER_STATE.0, 2);
        assert_eq!(SuspendType::SUSPEND.0, 1);
        assert_eq!(SequenceIndicator::ONLY.0, 3);
    }

    #[test]
    fn reserved_masks() {
        assert_eq!(SuspendCdw11::RESERVED, 0x7F00_0000);
        assert_eq!(SetControllerStateMos::RESERVED, 0xFFFC);
    }

    #[test]
    fn suspend_cdw11_bits() {
        let v = SuspendCdw11::from(0x8001_0007);
        assert_eq!(v.cntlid(), 7);
        assert_eq!(v.stype(), SuspendType::SUSPEND);
        assert!(v.dudmq());
    }

    #[test]
    fn reserved_bits_are_reported() {
        let mut cmd = Suspend {
            cntlid: 1,
            stype: SuspendType::SUSPEND,
            dudmq: false,
        }
        .encode()
        .unwrap();
        cmd.cdw10 |= 0x0001_0100;
        cmd.cdw11 |= 0x0100_0000;
        let d = Suspend::decode(&cmd).unwrap();
        assert_eq!(d.reserved.cdw10, 0x0001_0100);
        assert_eq!(d.reserved.cdw11, 0x0100_0000);
        assert!(!d.reserved.is_empty());
        assert_eq!(d.op.cntlid, 1);
    }

    #[test]
    fn wrong_select_and_opcode() {
        let mut cmd = Resume { cntlid: 3 }.encode().unwrap();
        assert!(matches!(
            Suspend::decode(&cmd),
            Err(LmCommandError::UnsupportedSelect { sel: 1, .. })
        ));
        cmd.cdw10 = 3;
        assert_eq!(
            MigrationSend::decode(&cmd),
            Err(LmCommandError::UnsupportedSelect {
                command: "Migration Send",
                sel: 3
            })
        );
        cmd.cdw0 = cmd.cdw0.with_opcode(0x42);
        assert!(matches!(
            MigrationSend::decode(&cmd),
            Err(LmCommandError::WrongOpcode { found: 0x42, .. })
        ));
    }

    #[test]
    fn set_encode_rejects_wide_fields() {
        let op = SetControllerState {
            seqind: SequenceIndicator(4),
            cntlid: 1,
            csvi: 1,
            csuuidi: 0,
            offset: 0,
            uidx: 0,
            numd: 1,
        };
        assert!(matches!(
            op.encode(),
            Err(LmEncodeError::FieldTooWide {
                field: "SEQIND",
                ..
            })
        ));
        let op = SetControllerState {
            seqind: SequenceIndicator::ONLY,
            uidx: 0x80,
            ..op
        };
        assert!(matches!(
            op.encode(),
            Err(LmEncodeError::FieldTooWide { field: "UIDX", .. })
        ));
    }

    #[test]
    fn numd_is_a_plain_count() {
        assert_eq!(SetControllerState::numd_for_len(104), Ok(26));
        assert_eq!(SetControllerState::numd_for_len(0), Ok(0));
        assert!(SetControllerState::numd_for_len(6).is_err());
        assert!(SetControllerState::numd_for_len(4 * (1 << 32)).is_err());
        let op = SetControllerState {
            seqind: SequenceIndicator::ONLY,
            cntlid: 0,
            csvi: 1,
            csuuidi: 0,
            offset: 0,
            uidx: 0,
            numd: 26,
        };
        assert_eq!(op.data_len(), 104);
    }
}
