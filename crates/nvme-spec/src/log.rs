//! Log pages returned by Get Log Page (NVMe Base 2.1 §5.1.12).

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::CompletionStatus;
use crate::features::CriticalWarning;

/// Log Page Identifiers (Get Log Page CDW10.LID).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum LogPageId {
    /// 00h: Supported Log Pages.
    SUPPORTED_LOG_PAGES = 0x00,
    /// 01h: Error Information ([`ErrorInformation`] entries).
    ERROR_INFORMATION = 0x01,
    /// 02h: SMART / Health Information ([`SmartHealth`]).
    SMART_HEALTH = 0x02,
    /// 03h: Firmware Slot Information ([`FirmwareSlotInformation`]).
    FIRMWARE_SLOT = 0x03,
    /// 04h: Changed Namespace List ([`ChangedNamespaceList`]).
    CHANGED_NAMESPACE_LIST = 0x04,
    /// 05h: Commands Supported and Effects ([`CommandsSupportedEffects`]).
    COMMANDS_SUPPORTED_EFFECTS = 0x05,
    /// 06h: Device Self-test.
    DEVICE_SELF_TEST = 0x06,
    /// 07h: Telemetry Host-Initiated.
    TELEMETRY_HOST = 0x07,
    /// 08h: Telemetry Controller-Initiated.
    TELEMETRY_CONTROLLER = 0x08,
    /// 09h: Endurance Group Information.
    ENDURANCE_GROUP = 0x09,
    /// 0Ah: Predictable Latency Per NVM Set.
    PREDICTABLE_LATENCY_NVM_SET = 0x0A,
    /// 0Bh: Predictable Latency Event Aggregate.
    PREDICTABLE_LATENCY_AGGREGATE = 0x0B,
    /// 0Ch: Asymmetric Namespace Access.
    ASYMMETRIC_NAMESPACE_ACCESS = 0x0C,
    /// 0Dh: Persistent Event Log.
    PERSISTENT_EVENT = 0x0D,
    /// 0Fh: Endurance Group Event Aggregate.
    ENDURANCE_GROUP_EVENT_AGGREGATE = 0x0F,
    /// 10h: Media Unit Status.
    MEDIA_UNIT_STATUS = 0x10,
    /// 11h: Supported Capacity Configuration List.
    SUPPORTED_CAPACITY_CONFIGURATION = 0x11,
    /// 12h: Feature Identifiers Supported and Effects.
    FEATURE_IDS_SUPPORTED_EFFECTS = 0x12,
    /// 13h: NVMe-MI Commands Supported and Effects.
    NVME_MI_COMMANDS_SUPPORTED_EFFECTS = 0x13,
    /// 14h: Command and Feature Lockdown.
    COMMAND_FEATURE_LOCKDOWN = 0x14,
    /// 15h: Boot Partition.
    BOOT_PARTITION = 0x15,
    /// 16h: Rotational Media Information.
    ROTATIONAL_MEDIA = 0x16,
    /// 70h: Discovery (fabrics).
    DISCOVERY = 0x70,
    /// 80h: Reservation Notification.
    RESERVATION_NOTIFICATION = 0x80,
    /// 81h: Sanitize Status.
    SANITIZE_STATUS = 0x81,
}
bitfield_enum!(LogPageId, u8);

/// Parameter Error Location: where in the command the error was found.
#[bitfield(u16)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct ParameterErrorLocation {
    /// Byte in the submission queue entry (0–63).
    pub byte: u8,
    /// Bit within that byte (0–7).
    #[bits(3)]
    pub bit: u8,
    #[bits(5)]
    _reserved: u8,
}

/// One Error Information log entry (64 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct ErrorInformation {
    /// Error Count: a unique, incrementing identifier of this error (0 = entry invalid).
    pub error_count: u64,
    /// Submission Queue ID of the failed command.
    pub sqid: u16,
    /// Command ID of the failed command.
    pub cid: u16,
    /// Status Field of the completion (phase tag bit included).
    pub status: CompletionStatus,
    /// Parameter Error Location (FFFFh if not applicable).
    pub parameter_error_location: ParameterErrorLocation,
    /// First LBA that experienced the error.
    pub lba: u64,
    /// Namespace of the error.
    pub nsid: u32,
    /// Vendor Specific Information Available: log page id holding more, or 0.
    pub vs: u8,
    /// Transport Type.
    pub trtype: u8,
    /// Command Set Indicator of the failed command.
    pub csi: u8,
    /// Opcode of the failed command.
    pub opcode: u8,
    /// Command Specific Information.
    pub command_specific: u64,
    /// Transport Type Specific Information.
    pub trtype_specific: u16,
    _reserved42: [u8; 21],
    /// Log Page Version.
    pub log_page_version: u8,
}

const _: () = assert!(size_of::<ErrorInformation>() == 64);

/// SMART / Health Information log page (512 bytes). The 128-bit counters sit at 16-byte aligned
/// offsets, so they are native `u128`s.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SmartHealth {
    /// Critical Warning bits.
    pub critical_warning: CriticalWarning,
    /// Composite Temperature in kelvin (little-endian u16 at an odd offset; see
    /// [`Self::composite_temperature`]).
    pub composite_temperature: [u8; 2],
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub available_spare_threshold: u8,
    /// Percentage Used (may exceed 100).
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary.
    pub endurance_group_summary: u8,
    _reserved7: [u8; 25],
    /// Data Units Read, thousands of 512-byte units.
    pub data_units_read: u128,
    /// Data Units Written, thousands of 512-byte units.
    pub data_units_written: u128,
    /// Host Read Commands.
    pub host_read_commands: u128,
    /// Host Write Commands.
    pub host_write_commands: u128,
    /// Controller Busy Time, minutes.
    pub controller_busy_time: u128,
    /// Power Cycles.
    pub power_cycles: u128,
    /// Power On Hours.
    pub power_on_hours: u128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors.
    pub media_errors: u128,
    /// Number of Error Information Log Entries over the controller's life.
    pub error_log_entries: u128,
    /// Warning Composite Temperature Time, minutes.
    pub warning_temperature_time: u32,
    /// Critical Composite Temperature Time, minutes.
    pub critical_temperature_time: u32,
    /// Temperature Sensors 1–8, kelvin (0 = not implemented).
    pub temperature_sensors: [u16; 8],
    /// Thermal Management Temperature 1 Transition Count.
    pub tmt1_transition_count: u32,
    /// Thermal Management Temperature 2 Transition Count.
    pub tmt2_transition_count: u32,
    /// Total Time For Thermal Management Temperature 1, seconds.
    pub tmt1_total_time: u32,
    /// Total Time For Thermal Management Temperature 2, seconds.
    pub tmt2_total_time: u32,
    _reserved232: [u8; 280],
}

const _: () = assert!(size_of::<SmartHealth>() == 512);

impl SmartHealth {
    /// Composite Temperature in kelvin.
    pub fn composite_temperature(&self) -> u16 {
        u16::from_le_bytes(self.composite_temperature)
    }

    /// Sets the Composite Temperature in kelvin.
    pub fn set_composite_temperature(&mut self, kelvin: u16) {
        self.composite_temperature = kelvin.to_le_bytes();
    }
}

/// Firmware Slot Information log page (512 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct FirmwareSlotInformation {
    /// Active Firmware Info: bits 2:0 active slot, bits 6:4 slot activated at next reset.
    pub afi: u8,
    _reserved1: [u8; 7],
    /// Firmware Revision for slots 1–7 (ASCII, space padded; zero for empty slots).
    pub frs: [[u8; 8]; 7],
    _reserved64: [u8; 448],
}

const _: () = assert!(size_of::<FirmwareSlotInformation>() == 512);

/// Changed Namespace List log page: up to 1024 NSIDs whose attributes changed since the last
/// read; FFFFFFFFh in the first entry means more than 1024 changed.
pub type ChangedNamespaceList = crate::identify::NamespaceList;

/// One Commands Supported and Effects entry.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CommandEffects {
    /// Command Supported.
    pub csupp: bool,
    /// Logical Block Content Change.
    pub lbcc: bool,
    /// Namespace Capability Change.
    pub ncc: bool,
    /// Namespace Inventory Change.
    pub nic: bool,
    /// Controller Capability Change.
    pub ccc: bool,
    #[bits(9)]
    _reserved: u16,
    /// Command Submission and Execution Relaxations.
    #[bits(2)]
    pub cser: u8,
    /// Command Submission and Execution: 0 none, 1 one at a time per namespace, 2 one at a time
    /// per controller.
    #[bits(3)]
    pub cse: u8,
    /// UUID Selection Supported.
    pub uuid_select: bool,
    /// Command Scope.
    #[bits(12)]
    pub csp: u16,
}

/// Commands Supported and Effects log page (4096 bytes): one [`CommandEffects`] per admin
/// opcode, then one per I/O opcode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct CommandsSupportedEffects {
    /// Admin Command Supported entries, indexed by opcode.
    pub admin: [CommandEffects; 256],
    /// I/O Command Supported entries, indexed by opcode.
    pub io: [CommandEffects; 256],
    _reserved2048: [u8; 2048],
}

const _: () = assert!(size_of::<CommandsSupportedEffects>() == 4096);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;
    use core::mem::offset_of;
    use zerocopy::FromZeros;

    #[test]
    fn error_information_offsets() {
        type E = ErrorInformation;
        assert_eq!(offset_of!(E, error_count), 0);
        assert_eq!(offset_of!(E, sqid), 8);
        assert_eq!(offset_of!(E, cid), 10);
        assert_eq!(offset_of!(E, status), 12);
        assert_eq!(offset_of!(E, parameter_error_location), 14);
        assert_eq!(offset_of!(E, lba), 16);
        assert_eq!(offset_of!(E, nsid), 24);
        assert_eq!(offset_of!(E, vs), 28);
        assert_eq!(offset_of!(E, trtype), 29);
        assert_eq!(offset_of!(E, csi), 30);
        assert_eq!(offset_of!(E, opcode), 31);
        assert_eq!(offset_of!(E, command_specific), 32);
        assert_eq!(offset_of!(E, trtype_specific), 40);
        assert_eq!(offset_of!(E, log_page_version), 63);
    }

    #[test]
    fn error_information_bytes() {
        let entry = ErrorInformation {
            error_count: 7,
            sqid: 1,
            cid: 0x42,
            status: CompletionStatus::new_with(Status::LBA_OUT_OF_RANGE, false),
            parameter_error_location: ParameterErrorLocation::new().with_byte(40).with_bit(3),
            ..Default::default()
        };
        let bytes = entry.as_bytes();
        assert_eq!(bytes[0], 7);
        assert_eq!(&bytes[12..14], &u16::to_le_bytes(0x80 << 1 | 1 << 15));
        assert_eq!(&bytes[14..16], &[40, 3]);
    }

    #[test]
    fn smart_offsets() {
        type S = SmartHealth;
        let expected = [
            (offset_of!(S, critical_warning), 0),
            (offset_of!(S, composite_temperature), 1),
            (offset_of!(S, available_spare), 3),
            (offset_of!(S, available_spare_threshold), 4),
            (offset_of!(S, percentage_used), 5),
            (offset_of!(S, endurance_group_summary), 6),
            (offset_of!(S, data_units_read), 32),
            (offset_of!(S, data_units_written), 48),
            (offset_of!(S, host_read_commands), 64),
            (offset_of!(S, host_write_commands), 80),
            (offset_of!(S, controller_busy_time), 96),
            (offset_of!(S, power_cycles), 112),
            (offset_of!(S, power_on_hours), 128),
            (offset_of!(S, unsafe_shutdowns), 144),
            (offset_of!(S, media_errors), 160),
            (offset_of!(S, error_log_entries), 176),
            (offset_of!(S, warning_temperature_time), 192),
            (offset_of!(S, critical_temperature_time), 196),
            (offset_of!(S, temperature_sensors), 200),
            (offset_of!(S, tmt1_transition_count), 216),
            (offset_of!(S, tmt2_transition_count), 220),
            (offset_of!(S, tmt1_total_time), 224),
            (offset_of!(S, tmt2_total_time), 228),
        ];
        for (i, (actual, want)) in expected.into_iter().enumerate() {
            assert_eq!(actual, want, "entry {i}");
        }
    }

    #[test]
    fn smart_bytes() {
        let mut smart = SmartHealth::new_zeroed();
        smart.set_composite_temperature(310);
        smart.critical_warning = CriticalWarning::new().with_temperature(true);
        smart.data_units_written = 1 << 64 | 5;
        let bytes = smart.as_bytes();
        assert_eq!(bytes[0], 0b10);
        assert_eq!(&bytes[1..3], &[0x36, 0x01]);
        assert_eq!(bytes[48], 5);
        assert_eq!(bytes[56], 1);
        assert_eq!(smart.composite_temperature(), 310);
    }

    #[test]
    fn firmware_slot_offsets() {
        assert_eq!(offset_of!(FirmwareSlotInformation, afi), 0);
        assert_eq!(offset_of!(FirmwareSlotInformation, frs), 8);
        let mut fw = FirmwareSlotInformation::new_zeroed();
        fw.frs[1] = *b"1.0     ";
        assert_eq!(&fw.as_bytes()[16..24], b"1.0     ");
    }

    #[test]
    fn command_effects() {
        assert_eq!(offset_of!(CommandsSupportedEffects, admin), 0);
        assert_eq!(offset_of!(CommandsSupportedEffects, io), 1024);
        let e = CommandEffects::new()
            .with_csupp(true)
            .with_lbcc(true)
            .with_ccc(true)
            .with_cse(2)
            .with_uuid_select(true)
            .with_csp(1);
        assert_eq!(
            u32::from(e),
            1 | 1 << 1 | 1 << 4 | 2 << 16 | 1 << 19 | 1 << 20
        );
        let mut log = CommandsSupportedEffects::new_zeroed();
        log.io[0x01] = CommandEffects::new().with_csupp(true).with_lbcc(true);
        assert_eq!(&log.as_bytes()[1024 + 4..1024 + 8], &[3, 0, 0, 0]);
        assert_eq!(LogPageId::COMMANDS_SUPPORTED_EFFECTS.0, 5);
        assert_eq!(LogPageId::CHANGED_NAMESPACE_LIST.0, 4);
    }
}
