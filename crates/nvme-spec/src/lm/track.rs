//! Track Send (3Dh): start and stop logging of user-data (LBA) changes into a User Data
//! Migration Queue.
//!
//! Track Receive (3Eh) and Track Send SEL 1 (Track Memory Changes) have no public layout; no
//! implementation examined (libnvme, nvme-cli, libvfn, QEMU) carries one, so they are not decoded.

use bitfield_struct::bitfield;
use open_enum::open_enum;

use super::common::Decoded;
use super::common::IdentifierCdw11;
use super::common::LmCdw10;
use super::common::LmCommand;
use super::common::ReservedBits;
use super::common::expect_select;
use super::common::new_command;
use super::common::too_wide;
use super::error::LmCommandError;
use super::error::LmEncodeError;
use crate::command::AdminOpcode;
use crate::command::Command;

/// Track Send SEL values (CDW10\[7:0\]).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum TrackSendSelect {
    /// Log User Data Changes into a User Data Migration Queue.
    LOG_USER_DATA_CHANGES = 0,
    /// Track Memory Changes (host-memory dirty tracking); layout not public, never decoded here.
    TRACK_MEMORY_CHANGES = 1,
}

/// Logging Action (LACT, MOS\[3:0\] of Log User Data Changes).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum LoggingAction {
    /// Stop logging; the controller posts a "last entry, logging stopped" marker.
    STOP = 0,
    /// Start logging; the controller posts a "first entry" marker.
    START = 1,
}

bitfield_enum!(LoggingAction, u8);

/// MOS of Log User Data Changes.
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct LogUserDataChangesMos {
    /// Logging Action (CDW10\[19:16\]).
    #[bits(4)]
    pub lact: LoggingAction,
    #[bits(12)]
    _reserved: u16,
}

impl LogUserDataChangesMos {
    /// Bits of MOS that Log User Data Changes reserves (15:4, i.e. CDW10\[31:20\]).
    pub const RESERVED: u16 = !Self::new().with_lact(LoggingAction(0xF)).into_bits();
}

/// Track Send, SEL 0: Log User Data Changes. The migratable controller is the one the queue was
/// created for (CQS of Create CDQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogUserDataChanges {
    /// Start or stop.
    pub lact: LoggingAction,
    /// CDQID of the User Data Migration Queue (CDW11\[15:0\]).
    pub cdqid: u16,
}

impl LmCommand for LogUserDataChanges {
    const OPCODE: AdminOpcode = AdminOpcode::TRACK_SEND;

    fn decode(cmd: &Command) -> Result<Decoded<Self>, LmCommandError> {
        let mos = expect_select(
            cmd,
            Self::OPCODE,
            "Track Send",
            TrackSendSelect::LOG_USER_DATA_CHANGES.0,
        )?;
        Ok(Decoded {
            op: Self {
                lact: LogUserDataChangesMos::from(mos).lact(),
                cdqid: IdentifierCdw11::from(cmd.cdw11).id(),
            },
            reserved: ReservedBits {
                cdw10: LmCdw10::reserved_bits(cmd.cdw10, LogUserDataChangesMos::RESERVED),
                cdw11: cmd.cdw11 & IdentifierCdw11::RESERVED,
                cdw14: 0,
            },
        })
    }

    fn encode(&self) -> Result<Command, LmEncodeError> {
        let mos = LogUserDataChangesMos::new()
            .with_lact_checked(self.lact)
            .map_err(|()| too_wide("LACT", self.lact.0.into(), 4))?;
        let mut cmd = new_command(Self::OPCODE);
        cmd.cdw10 = LmCdw10::from_parts(TrackSendSelect::LOG_USER_DATA_CHANGES.0, mos.into_bits());
        cmd.cdw11 = IdentifierCdw11::new().with_id(self.cdqid).into();
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_mask() {
        assert_eq!(LogUserDataChangesMos::RESERVED, 0xFFF0);
    }

    #[test]
    fn memory_tracking_is_not_decoded() {
        let mut cmd = LogUserDataChanges {
            lact: LoggingAction::START,
            cdqid: 1,
        }
        .encode()
        .unwrap();
        cmd.cdw10 = LmCdw10::from_parts(TrackSendSelect::TRACK_MEMORY_CHANGES.0, 0);
        assert_eq!(
            LogUserDataChanges::decode(&cmd),
            Err(LmCommandError::UnsupportedSelect {
                command: "Track Send",
                sel: 1
            })
        );
    }

    #[test]
    fn reserved_lact_values_decode_and_wide_ones_do_not_encode() {
        let mut cmd = LogUserDataChanges {
            lact: LoggingAction(0xF),
            cdqid: 9,
        }
        .encode()
        .unwrap();
        assert_eq!(cmd.cdw10, 0x000F_0000);
        cmd.cdw10 |= 0x0010_0000;
        let d = LogUserDataChanges::decode(&cmd).unwrap();
        assert_eq!(d.op.lact, LoggingAction(0xF));
        assert_eq!(d.reserved.cdw10, 0x0010_0000);
        assert!(matches!(
            LogUserDataChanges {
                lact: LoggingAction(0x10),
                cdqid: 9
            }
            .encode(),
            Err(LmEncodeError::FieldTooWide { field: "LACT", .. })
        ));
    }
}
