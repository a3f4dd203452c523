//! Migration Receive (42h): Get Controller State.

use bitfield_struct::bitfield;
use open_enum::open_enum;

use super::common::Decoded;
use super::common::LmCdw10;
use super::common::LmCommand;
use super::common::ReservedBits;
use super::common::UuidIndexCdw14;
use super::common::expect_select;
use super::common::new_command;
use super::common::offset_from;
use super::common::set_offset;
use super::error::LmCommandError;
use super::error::LmEncodeError;
use crate::command::AdminOpcode;
use crate::command::Command;

/// Migration Receive SEL values (CDW10\[7:0\]).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum MigrationReceiveSelect {
    /// Return (a chunk of) the Controller State data structure.
    GET_CONTROLLER_STATE = 0,
}

/// MOS of Get Controller State.
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct GetControllerStateMos {
    /// Controller State Version Index (CDW10\[23:16\]), 1-based; 0 returns only the header.
    pub csvi: u8,
    _reserved: u8,
}

impl GetControllerStateMos {
    /// Bits of MOS that Get Controller State reserves (15:8, i.e. CDW10\[31:24\]).
    pub const RESERVED: u16 = !Self::new().with_csvi(u8::MAX).into_bits();
}

/// CDW11 of Get Controller State.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct GetControllerStateCdw11 {
    /// CNTLID of the controller whose state is returned.
    pub cntlid: u16,
    /// Controller State UUID Index: 1-based index of the vendor-specific format, 0 = none.
    pub csuuidi: u8,
    /// Controller State UUID Index Parameter, vendor specific.
    pub csuidxp: u8,
}

/// Dword 0 of the completion of Get Controller State.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct GetControllerStateDw0 {
    /// CSUP: the controller was suspended when the state was captured.
    pub csup: bool,
    #[bits(31)]
    _reserved: u32,
}

/// Migration Receive, SEL 0: Get Controller State. The controller writes (a chunk of) the
/// Controller State data structure, starting at byte `offset`, to PRP1/PRP2 (set by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GetControllerState {
    /// Controller State Version Index (1-based; 1 selects VERS\[0\]). The RFC sends the version
    /// (0) here, which returns a header-only state.
    pub csvi: u8,
    /// Target controller.
    pub cntlid: u16,
    /// Controller State UUID Index (1-based; 0 = no vendor-specific state).
    pub csuuidi: u8,
    /// Controller State UUID Index Parameter, vendor specific.
    pub csuidxp: u8,
    /// Byte offset into the controller state to start from (CDW12 low, CDW13 high); a device
    /// requires it dword aligned.
    pub offset: u64,
    /// UUID index (CDW14\[6:0\]).
    pub uidx: u8,
    /// Number of dwords to return, **0's based** (libvfn sends 4096/4 − 1 for a 4 KiB buffer).
    pub numd: u32,
}

impl GetControllerState {
    /// The size of the host buffer the command describes: (NUMD + 1) × 4 bytes.
    pub const fn data_len(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }

    /// The 0's based NUMD for a buffer of `len` bytes, which must be a non-zero whole number of
    /// dwords.
    pub fn numd_for_len(len: u64) -> Result<u32, LmEncodeError> {
        let bad = LmEncodeError::BadLength { field: "NUMD", len };
        if len == 0 || !len.is_multiple_of(4) {
            return Err(bad);
        }
        u32::try_from(len / 4 - 1).map_err(|_| bad)
    }
}

impl LmCommand for GetControllerState {
    const OPCODE: AdminOpcode = AdminOpcode::MIGRATION_RECEIVE;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        let mos = expect_select(
            cmd,
            Self::OPCODE,
            "Get Controller State",
            MigrationReceiveSelect::GET_CONTROLLER_STATE.0,
        )?;
        let cdw11 = GetControllerStateCdw11::from(cmd.cdw11);
        Ok(Decoded {
            op: Self {
                csvi: GetControllerStateMos::from(mos).csvi(),
                cntlid: cdw11.cntlid(),
                csuuidi: cdw11.csuuidi(),
                csuidxp: cdw11.csuidxp(),
                offset: offset_from(cmd),
                uidx: UuidIndexCdw14::from(cmd.cdw14).uidx(),
                numd: cmd.cdw15,
            },
            reserved: ReservedBits {
                cdw10: LmCdw10::reserved_bits(cmd.cdw10, GetControllerStateMos::RESERVED),
                cdw11: 0,
                cdw14: cmd.cdw14 & UuidIndexCdw14::RESERVED,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = LmCdw10::from_parts(
            MigrationReceiveSelect::GET_CONTROLLER_STATE.0,
            GetControllerStateMos::new()
                .with_csvi(self.csvi)
                .into_bits(),
        );
        cmd.cdw11 = GetControllerStateCdw11::new()
            .with_cntlid(self.cntlid)
            .with_csuuidi(self.csuuidi)
            .with_csuidxp(self.csuidxp)
            .into();
        set_offset(&mut cmd, self.offset);
        cmd.cdw14 = UuidIndexCdw14::encode(self.uidx)?;
        cmd.cdw15 = self.numd;
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_mask() {
        assert_eq!(GetControllerStateMos::RESERVED, 0xFF00);
    }

    #[test]
    fn numd_is_zeros_based() {
        assert_eq!(GetControllerState::numd_for_len(4096), Ok(1023));
        assert_eq!(GetControllerState::numd_for_len(4), Ok(0));
        assert!(GetControllerState::numd_for_len(0).is_err());
        assert!(GetControllerState::numd_for_len(10).is_err());
        assert_eq!(GetControllerState::numd_for_len(4 << 32), Ok(u32::MAX));
        assert!(GetControllerState::numd_for_len((4 << 32) + 4).is_err());
        let op = GetControllerState {
            csvi: 1,
            cntlid: 2,
            csuuidi: 0,
            csuidxp: 0,
            offset: 0,
            uidx: 0,
            numd: u32::MAX,
        };
        assert_eq!(op.data_len(), 4 << 32);
    }

    #[test]
    fn csup_bit() {
        assert!(GetControllerStateDw0::from(1).csup());
        assert!(!GetControllerStateDw0::from(0xFFFF_FFFE).csup());
        assert_eq!(u32::from(GetControllerStateDw0::new().with_csup(true)), 1);
    }

    #[test]
    fn reserved_bits_are_reported() {
        let mut cmd = GetControllerState {
            csvi: 1,
            cntlid: 2,
            csuuidi: 0,
            csuidxp: 0,
            offset: 0,
            uidx: 0,
            numd: 0,
        }
        .encode()
        .unwrap();
        cmd.cdw10 |= 0x8000_0000;
        cmd.cdw14 |= 0x80;
        let d = GetControllerState::decode(&cmd).unwrap();
        assert_eq!(d.reserved.cdw10, 0x8000_0000);
        assert_eq!(d.reserved.cdw14, 0x80);
        assert_eq!(d.op.csvi, 1);
    }
}
