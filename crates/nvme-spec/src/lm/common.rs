//! Pieces shared by every TP4159 command: the SEL/MOS dword, the UUID index dword, identifier
//! dwords, reserved-bit reporting and the [`LmCommand`] codec trait.

use bitfield_struct::bitfield;

use super::error::LmCommandError;
use super::error::LmEncodeError;
use crate::command::AdminOpcode;
use crate::command::Cdw0;
use crate::command::Command;

/// CDW10 of every TP4159 command: SEL (Select) in bits 7:0 picks the management operation, MOS
/// (Management Operation Specific) in bits 31:16 carries that operation's parameters.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct LmCdw10 {
    /// Select: which management operation.
    pub sel: u8,
    #[bits(8)]
    _reserved: u8,
    /// Management Operation Specific; its layout depends on SEL.
    pub mos: u16,
}

impl LmCdw10 {
    /// Bits of CDW10 that no TP4159 command uses (15:8).
    pub const RESERVED: u32 = !Self::new().with_sel(u8::MAX).with_mos(u16::MAX).into_bits();

    /// Builds CDW10 from SEL and an already encoded MOS.
    pub const fn from_parts(sel: u8, mos: u16) -> u32 {
        Self::new().with_sel(sel).with_mos(mos).into_bits()
    }

    /// Reserved bits set in a raw CDW10, given the bits of MOS the operation reserves.
    pub const fn reserved_bits(cdw10: u32, mos_reserved: u16) -> u32 {
        cdw10 & (Self::RESERVED | ((mos_reserved as u32) << 16))
    }
}

/// CDW14 of Migration Send and Migration Receive: UIDX, the UUID Index into the Identify UUID
/// List (0 = none), in bits 6:0.
///
/// nvme-cli's help text says "CDW14\[16:00\]"; that is a typo, its code masks with 7Fh.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct UuidIndexCdw14 {
    /// UUID index, 0 = no UUID.
    #[bits(7)]
    pub uidx: u8,
    #[bits(25)]
    _reserved: u32,
}

impl UuidIndexCdw14 {
    /// Bits of CDW14 that are reserved (31:7).
    pub const RESERVED: u32 = !Self::new().with_uidx(0x7F).into_bits();

    /// Encodes UIDX, rejecting values wider than 7 bits.
    pub fn encode(uidx: u8) -> Result<u32, LmEncodeError> {
        Self::new()
            .with_uidx_checked(uidx)
            .map(Self::into_bits)
            .map_err(|()| too_wide("UIDX", uidx.into(), 7))
    }
}

/// A CDW11 that carries only a 16-bit identifier in bits 15:0: the CNTLID of Resume, the CDQID
/// of Track Send, Delete CDQ and Get Features 21h.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct IdentifierCdw11 {
    /// CNTLID or CDQID, depending on the command.
    pub id: u16,
    _reserved: u16,
}

impl IdentifierCdw11 {
    /// Bits of CDW11 that are reserved (31:16).
    pub const RESERVED: u32 = !Self::new().with_id(u16::MAX).into_bits();
}

/// Reserved bits found set while decoding a command, per dword (0 = none).
///
/// Only the dwords an operation defines are checked; dwords an operation does not use at all are
/// left to the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReservedBits {
    /// Reserved bits set in CDW10.
    pub cdw10: u32,
    /// Reserved bits set in CDW11.
    pub cdw11: u32,
    /// Reserved bits set in CDW14.
    pub cdw14: u32,
}

impl ReservedBits {
    /// True if no reserved bit was set; otherwise a device answers Invalid Field in Command.
    pub const fn is_empty(&self) -> bool {
        self.cdw10 == 0 && self.cdw11 == 0 && self.cdw14 == 0
    }
}

/// A decoded command: its typed fields plus the reserved bits that were set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The typed command.
    pub op: T,
    /// Reserved bits that were set in the entry.
    pub reserved: ReservedBits,
}

impl<T> Decoded<T> {
    /// Converts the typed command, keeping the reserved-bit report.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        Decoded {
            op: f(self.op),
            reserved: self.reserved,
        }
    }
}

/// A TP4159 command (or Feature 21h request) in typed, data-only form, with the codec shared by
/// the device (decode) and the host (encode).
pub trait LmCommand: Sized {
    /// The admin opcode the command is sent with.
    const OPCODE: AdminOpcode;

    /// Decodes a submission queue entry. Any dword values are accepted: set reserved bits are
    /// reported in [`Decoded::reserved`]; only a wrong opcode, SEL or FID is an error.
    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError>;

    /// Encodes into a new submission queue entry: opcode, CDW10–CDW15 and, where the command
    /// defines it, PRP1. The caller sets the command identifier and the data pointer of commands
    /// that transfer data. Fails only if a field value is wider than its wire field.
    fn encode(&self) -> Result<Command, LmEncodeError>;
}

/// A zeroed submission queue entry with the given opcode.
pub(super) fn new_command(opcode: AdminOpcode) -> Command {
    Command {
        cdw0: Cdw0::new().with_opcode(opcode.0),
        ..Command::default()
    }
}

/// Checks the opcode and returns the SEL/MOS view of CDW10.
pub(super) fn lm_cdw10(cmd: &Command, expected: AdminOpcode) -> Result<LmCdw10, LmCommandError> {
    let found = cmd.cdw0.opcode();
    if found != expected.0 {
        return Err(LmCommandError::WrongOpcode { expected, found });
    }
    Ok(LmCdw10::from(cmd.cdw10))
}

/// Checks the opcode and that SEL selects `sel`; returns MOS.
pub(super) fn expect_select(
    cmd: &Command,
    expected: AdminOpcode,
    command: &'static str,
    sel: u8,
) -> Result<u16, LmCommandError> {
    let cdw10 = lm_cdw10(cmd, expected)?;
    if cdw10.sel() != sel {
        return Err(LmCommandError::UnsupportedSelect {
            command,
            sel: cdw10.sel(),
        });
    }
    Ok(cdw10.mos())
}

/// Decodes a command whose only field is an identifier in CDW11[15:0] (a CNTLID or a CDQID)
/// under SEL `sel`, with every other bit of CDW10 and CDW11 reserved.
pub(super) fn decode_identifier(
    cmd: &Command,
    opcode: AdminOpcode,
    command: &'static str,
    sel: u8,
) -> Result<Decoded<u16>, LmCommandError> {
    expect_select(cmd, opcode, command, sel)?;
    Ok(Decoded {
        op: IdentifierCdw11::from(cmd.cdw11).id(),
        reserved: ReservedBits {
            cdw10: LmCdw10::reserved_bits(cmd.cdw10, u16::MAX),
            cdw11: cmd.cdw11 & IdentifierCdw11::RESERVED,
            cdw14: 0,
        },
    })
}

/// Encodes a command whose only field is identifier `id` in CDW11[15:0] under SEL `sel`.
pub(super) fn encode_identifier(opcode: AdminOpcode, sel: u8, id: u16) -> Command {
    let mut cmd = new_command(opcode);
    cmd.cdw10 = LmCdw10::from_parts(sel, 0);
    cmd.cdw11 = IdentifierCdw11::new().with_id(id).into();
    cmd
}

/// The error for a value wider than its field.
pub(super) fn too_wide(field: &'static str, value: u64, bits: u32) -> LmEncodeError {
    LmEncodeError::FieldTooWide { field, value, bits }
}

/// The 64-bit byte offset carried in CDW12 (low) and CDW13 (high).
pub(super) const fn offset_from(cmd: &Command) -> u64 {
    (cmd.cdw12 as u64) | ((cmd.cdw13 as u64) << 32)
}

/// Stores a 64-bit byte offset into CDW12 (low) and CDW13 (high).
pub(super) fn set_offset(cmd: &mut Command, offset: u64) {
    cmd.cdw12 = offset as u32;
    cmd.cdw13 = (offset >> 32) as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_masks() {
        assert_eq!(LmCdw10::RESERVED, 0x0000_FF00);
        assert_eq!(UuidIndexCdw14::RESERVED, 0xFFFF_FF80);
        assert_eq!(IdentifierCdw11::RESERVED, 0xFFFF_0000);
        assert_eq!(LmCdw10::reserved_bits(0xFFFF_FFFF, 0xFFFC), 0xFFFC_FF00);
        assert_eq!(LmCdw10::reserved_bits(0x0003_0002, 0xFFFC), 0);
    }

    #[test]
    fn cdw10_parts() {
        assert_eq!(LmCdw10::from_parts(0x02, 0x0003), 0x0003_0002);
        let v = LmCdw10::from(0xABCD_1234);
        assert_eq!(v.sel(), 0x34);
        assert_eq!(v.mos(), 0xABCD);
    }

    #[test]
    fn uidx_width() {
        assert_eq!(UuidIndexCdw14::encode(0x7F), Ok(0x7F));
        assert_eq!(
            UuidIndexCdw14::encode(0x80),
            Err(LmEncodeError::FieldTooWide {
                field: "UIDX",
                value: 0x80,
                bits: 7
            })
        );
    }

    #[test]
    fn offset_split() {
        let mut cmd = Command::default();
        set_offset(&mut cmd, 0x1122_3344_5566_7788);
        assert_eq!(cmd.cdw12, 0x5566_7788);
        assert_eq!(cmd.cdw13, 0x1122_3344);
        assert_eq!(offset_from(&cmd), 0x1122_3344_5566_7788);
    }
}
