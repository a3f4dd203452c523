//! Get/Set Features identifiers and the per-feature dword layouts (NVMe Base 2.1 §5.1.25), plus
//! the Asynchronous Event Request completion.
//!
//! Each feature's value travels in Set Features CDW11 and comes back in the Get Features
//! completion's DW0; the bitfield types here name its bits. The TP4159 Controller Data Queue
//! feature (21h) is only named here; its dwords live in [`crate::lm`].

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::log::LogPageId;

/// Feature Identifiers (Get/Set Features CDW10.FID).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum FeatureId {
    /// 01h: Arbitration ([`Arbitration`]).
    ARBITRATION = 0x01,
    /// 02h: Power Management ([`PowerManagement`]).
    POWER_MANAGEMENT = 0x02,
    /// 03h: LBA Range Type.
    LBA_RANGE_TYPE = 0x03,
    /// 04h: Temperature Threshold ([`TemperatureThreshold`]).
    TEMPERATURE_THRESHOLD = 0x04,
    /// 05h: Error Recovery ([`ErrorRecovery`]).
    ERROR_RECOVERY = 0x05,
    /// 06h: Volatile Write Cache ([`VolatileWriteCache`]).
    VOLATILE_WRITE_CACHE = 0x06,
    /// 07h: Number of Queues ([`NumberOfQueuesRequest`] / [`NumberOfQueuesAllocated`]).
    NUMBER_OF_QUEUES = 0x07,
    /// 08h: Interrupt Coalescing ([`InterruptCoalescing`]).
    INTERRUPT_COALESCING = 0x08,
    /// 09h: Interrupt Vector Configuration ([`InterruptVectorConfig`]).
    INTERRUPT_VECTOR_CONFIG = 0x09,
    /// 0Ah: Write Atomicity Normal ([`WriteAtomicity`]).
    WRITE_ATOMICITY_NORMAL = 0x0A,
    /// 0Bh: Asynchronous Event Configuration ([`AsyncEventConfig`]).
    ASYNC_EVENT_CONFIG = 0x0B,
    /// 0Ch: Autonomous Power State Transition.
    AUTONOMOUS_POWER_STATE_TRANSITION = 0x0C,
    /// 0Dh: Host Memory Buffer.
    HOST_MEMORY_BUFFER = 0x0D,
    /// 0Eh: Timestamp ([`Timestamp`], 8 bytes of data).
    TIMESTAMP = 0x0E,
    /// 0Fh: Keep Alive Timer ([`KeepAliveTimer`]).
    KEEP_ALIVE_TIMER = 0x0F,
    /// 10h: Host Controlled Thermal Management ([`HostThermalManagement`]).
    HOST_CONTROLLED_THERMAL_MANAGEMENT = 0x10,
    /// 11h: Non-Operational Power State Config.
    NON_OPERATIONAL_POWER_STATE = 0x11,
    /// 12h: Read Recovery Level Config.
    READ_RECOVERY_LEVEL = 0x12,
    /// 13h: Predictable Latency Mode Config.
    PREDICTABLE_LATENCY_MODE_CONFIG = 0x13,
    /// 14h: Predictable Latency Mode Window.
    PREDICTABLE_LATENCY_MODE_WINDOW = 0x14,
    /// 16h: Host Behavior Support.
    HOST_BEHAVIOR_SUPPORT = 0x16,
    /// 17h: Sanitize Config.
    SANITIZE_CONFIG = 0x17,
    /// 18h: Endurance Group Event Configuration.
    ENDURANCE_GROUP_EVENT_CONFIG = 0x18,
    /// 19h: I/O Command Set Profile.
    IO_COMMAND_SET_PROFILE = 0x19,
    /// 1Ah: Spinup Control.
    SPINUP_CONTROL = 0x1A,
    /// 21h: TP4159 Controller Data Queue (dword layout in [`crate::lm`]).
    CONTROLLER_DATA_QUEUE = 0x21,
    /// 7Dh: Enhanced Controller Metadata.
    ENHANCED_CONTROLLER_METADATA = 0x7D,
    /// 7Eh: Controller Metadata.
    CONTROLLER_METADATA = 0x7E,
    /// 7Fh: Namespace Metadata.
    NAMESPACE_METADATA = 0x7F,
    /// 80h: Software Progress Marker.
    SOFTWARE_PROGRESS_MARKER = 0x80,
    /// 81h: Host Identifier.
    HOST_IDENTIFIER = 0x81,
    /// 82h: Reservation Notification Mask.
    RESERVATION_NOTIFICATION_MASK = 0x82,
    /// 83h: Reservation Persistence.
    RESERVATION_PERSISTENCE = 0x83,
    /// 84h: Namespace Write Protection Config.
    NAMESPACE_WRITE_PROTECTION = 0x84,
}
bitfield_enum!(FeatureId, u8);

/// Get Features CDW10.SEL: which value to return.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum Select {
    /// 000b: current value.
    CURRENT = 0,
    /// 001b: default value.
    DEFAULT = 1,
    /// 010b: saved value.
    SAVED = 2,
    /// 011b: supported capabilities ([`FeatureCapabilities`] in DW0).
    SUPPORTED_CAPABILITIES = 3,
}
bitfield_enum!(Select, u8);

/// Completion DW0 of Get Features with SEL = supported capabilities.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct FeatureCapabilities {
    /// The feature is saveable.
    pub saveable: bool,
    /// The feature is namespace specific.
    pub namespace_specific: bool,
    /// The feature is changeable.
    pub changeable: bool,
    #[bits(29)]
    _reserved: u32,
}

/// Arbitration (01h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Arbitration {
    /// Arbitration Burst: `2 ^ AB` commands (111b = no limit).
    #[bits(3)]
    pub ab: u8,
    #[bits(5)]
    _reserved: u8,
    /// Low Priority Weight, 0's based.
    pub lpw: u8,
    /// Medium Priority Weight, 0's based.
    pub mpw: u8,
    /// High Priority Weight, 0's based.
    pub hpw: u8,
}

/// Power Management (02h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct PowerManagement {
    /// Power State.
    #[bits(5)]
    pub ps: u8,
    /// Workload Hint.
    #[bits(3)]
    pub wh: u8,
    #[bits(24)]
    _reserved: u32,
}

/// Temperature Threshold (04h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct TemperatureThreshold {
    /// Temperature Threshold, kelvin.
    pub tmpth: u16,
    /// Threshold Temperature Select: 0 composite, 1–8 sensor, Fh all.
    #[bits(4)]
    pub tmpsel: u8,
    /// Threshold Type Select: 00b over-temperature, 01b under-temperature.
    #[bits(2)]
    pub thsel: u8,
    #[bits(10)]
    _reserved: u16,
}

/// Error Recovery (05h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct ErrorRecovery {
    /// Time Limited Error Recovery, 100 ms units.
    pub tler: u16,
    /// Deallocated or Unwritten Logical Block Error Enable.
    pub dulbe: bool,
    #[bits(15)]
    _reserved: u16,
}

/// Volatile Write Cache (06h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct VolatileWriteCache {
    /// Volatile Write Cache Enable.
    pub wce: bool,
    #[bits(31)]
    _reserved: u32,
}

/// Number of Queues (07h), Set Features CDW11: the counts the host asks for.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct NumberOfQueuesRequest {
    /// Number of I/O Submission Queues Requested, 0's based (FFFFh is invalid).
    pub nsqr: u16,
    /// Number of I/O Completion Queues Requested, 0's based (FFFFh is invalid).
    pub ncqr: u16,
}

/// Number of Queues (07h), completion DW0: the counts the controller allocated.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct NumberOfQueuesAllocated {
    /// Number of I/O Submission Queues Allocated, 0's based.
    pub nsqa: u16,
    /// Number of I/O Completion Queues Allocated, 0's based.
    pub ncqa: u16,
}

/// Interrupt Coalescing (08h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct InterruptCoalescing {
    /// Aggregation Threshold, 0's based completion entries.
    pub thr: u8,
    /// Aggregation Time, 100 µs units.
    pub time: u8,
    #[bits(16)]
    _reserved: u16,
}

/// Interrupt Vector Configuration (09h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct InterruptVectorConfig {
    /// Interrupt Vector this configuration applies to.
    pub iv: u16,
    /// Coalescing Disable.
    pub cd: bool,
    #[bits(15)]
    _reserved: u16,
}

/// Write Atomicity Normal (0Ah).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct WriteAtomicity {
    /// Disable Normal: only AWUPF/NAWUPF atomicity applies.
    pub dn: bool,
    #[bits(31)]
    _reserved: u32,
}

/// SMART / Health critical warning bits: the Critical Warning byte of the SMART log, and the
/// low byte of the Asynchronous Event Configuration feature (which warnings raise an event).
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct CriticalWarning {
    /// Available spare below threshold.
    pub available_spare: bool,
    /// Temperature beyond a threshold.
    pub temperature: bool,
    /// NVM subsystem reliability degraded.
    pub reliability: bool,
    /// Media placed in read-only mode.
    pub read_only: bool,
    /// Volatile memory backup device failed.
    pub volatile_backup: bool,
    /// Persistent memory region became read-only.
    pub pmr_read_only: bool,
    #[bits(2)]
    _reserved: u8,
}

/// Asynchronous Event Configuration (0Bh): which events the controller may report. Bits 8 and
/// up match Identify Controller OAES ([`crate::identify::Oaes`]).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct AsyncEventConfig {
    /// SMART / Health Critical Warnings that raise an event.
    #[bits(8)]
    pub smart: CriticalWarning,
    /// Namespace Attribute Notices.
    pub nan: bool,
    /// Firmware Activation Notices.
    pub fan: bool,
    /// Telemetry Log Notices.
    pub tln: bool,
    /// Asymmetric Namespace Access Change Notices.
    pub anacn: bool,
    /// Predictable Latency Event Aggregate Log Change Notices.
    pub plealcn: bool,
    /// LBA Status Information Notices.
    pub lsin: bool,
    /// Endurance Group Event Aggregate Log Change Notices.
    pub egealcn: bool,
    /// Normal NVM Subsystem Shutdown Notices.
    pub nnsshdn: bool,
    #[bits(11)]
    _reserved: u16,
    /// Zone Descriptor Changed Notices (zoned namespaces).
    pub zdcn: bool,
    #[bits(3)]
    _reserved2: u8,
    /// Discovery Log Page Change Notices.
    pub dlpcn: bool,
}

/// Keep Alive Timer (0Fh).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct KeepAliveTimer {
    /// Keep Alive Timeout, milliseconds (0 = disabled).
    pub kato: u32,
}

/// Host Controlled Thermal Management (10h).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct HostThermalManagement {
    /// Thermal Management Temperature 2, kelvin.
    pub tmt2: u16,
    /// Thermal Management Temperature 1, kelvin.
    pub tmt1: u16,
}

/// Timestamp (0Eh) data: the 8-byte buffer Set/Get Features transfers.
#[bitfield(u64)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Timestamp {
    /// Milliseconds since 1970-01-01 00:00 UTC.
    #[bits(48)]
    pub timestamp: u64,
    /// Synch: the timestamp may have stopped counting (e.g. during a low-power state).
    pub synch: bool,
    /// Timestamp Origin: 000b reset/never set, 001b set by Set Features.
    #[bits(3)]
    pub origin: u8,
    #[bits(12)]
    _reserved: u16,
}

const _: () = assert!(size_of::<Timestamp>() == 8);

/// Asynchronous Event Type (AER completion DW0 bits 2:0).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum AsyncEventType {
    /// 0h: Error status ([`AsyncEventInfoError`]).
    ERROR = 0,
    /// 1h: SMART / Health status ([`AsyncEventInfoSmart`]).
    SMART_HEALTH = 1,
    /// 2h: Notice ([`AsyncEventInfoNotice`]).
    NOTICE = 2,
    /// 3h: Immediate.
    IMMEDIATE = 3,
    /// 4h: One-shot. The QEMU TP4159 model uses it for Controller Data Queue events
    /// ([`AsyncEventInfoOneShot`]); provisional per `tp4159.md` §1.10.
    ONE_SHOT = 4,
    /// 6h: I/O command set specific status.
    IO_COMMAND_SET = 6,
    /// 7h: Vendor specific.
    VENDOR = 7,
}
bitfield_enum!(AsyncEventType, u8);

/// Asynchronous event information for [`AsyncEventType::ERROR`].
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum AsyncEventInfoError {
    /// 00h: Write to Invalid Doorbell Register.
    INVALID_DOORBELL_REGISTER = 0x00,
    /// 01h: Invalid Doorbell Write Value.
    INVALID_DOORBELL_VALUE = 0x01,
    /// 02h: Diagnostic Failure.
    DIAGNOSTIC_FAILURE = 0x02,
    /// 03h: Persistent Internal Error.
    PERSISTENT_INTERNAL_ERROR = 0x03,
    /// 04h: Transient Internal Error.
    TRANSIENT_INTERNAL_ERROR = 0x04,
    /// 05h: Firmware Image Load Error.
    FIRMWARE_IMAGE_LOAD_ERROR = 0x05,
}

/// Asynchronous event information for [`AsyncEventType::SMART_HEALTH`].
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum AsyncEventInfoSmart {
    /// 00h: NVM Subsystem Reliability.
    RELIABILITY = 0x00,
    /// 01h: Temperature Threshold.
    TEMPERATURE_THRESHOLD = 0x01,
    /// 02h: Spare Below Threshold.
    SPARE_BELOW_THRESHOLD = 0x02,
}

/// Asynchronous event information for [`AsyncEventType::NOTICE`].
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum AsyncEventInfoNotice {
    /// 00h: Namespace Attribute Changed (read the Changed Namespace List log).
    NAMESPACE_ATTRIBUTE_CHANGED = 0x00,
    /// 01h: Firmware Activation Starting.
    FIRMWARE_ACTIVATION_STARTING = 0x01,
    /// 02h: Telemetry Log Changed.
    TELEMETRY_LOG_CHANGED = 0x02,
    /// 03h: Asymmetric Namespace Access Change.
    ANA_CHANGE = 0x03,
    /// 04h: Predictable Latency Event Aggregate Log Change.
    PREDICTABLE_LATENCY_AGGREGATE_CHANGE = 0x04,
    /// 05h: LBA Status Information Alert.
    LBA_STATUS_INFORMATION = 0x05,
    /// 06h: Endurance Group Event Aggregate Log Page Change.
    ENDURANCE_GROUP_AGGREGATE_CHANGE = 0x06,
    /// 07h: Normal NVM Subsystem Shutdown.
    NORMAL_NSS_SHUTDOWN = 0x07,
    /// F0h: Discovery Log Page Change.
    DISCOVERY_LOG_CHANGE = 0xF0,
}

/// Asynchronous event information for [`AsyncEventType::ONE_SHOT`] as the QEMU TP4159 model
/// posts it for Controller Data Queues (the CDQID goes in completion DW1). Provisional
/// (`tp4159.md` §1.10).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash)]
#[repr(u8)]
pub enum AsyncEventInfoOneShot {
    /// 00h: the CDQ tail reached the tail pointer trigger.
    CDQ_TAIL_POINTER_TRIGGER = 0x00,
    /// 01h: the CDQ is full.
    CDQ_FULL = 0x01,
}

/// Asynchronous Event Request completion DW0.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct AsyncEventCompletion {
    /// Asynchronous Event Type.
    #[bits(3)]
    pub event_type: AsyncEventType,
    #[bits(5)]
    _reserved: u8,
    /// Asynchronous Event Information; its meaning depends on the type (the
    /// `AsyncEventInfo*` enums).
    pub event_info: u8,
    /// Log page the host reads to clear the event.
    #[bits(8)]
    pub log_page: LogPageId,
    #[bits(8)]
    _reserved2: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_ids() {
        for (fid, v) in [
            (FeatureId::ARBITRATION, 0x01),
            (FeatureId::VOLATILE_WRITE_CACHE, 0x06),
            (FeatureId::NUMBER_OF_QUEUES, 0x07),
            (FeatureId::ASYNC_EVENT_CONFIG, 0x0B),
            (FeatureId::TIMESTAMP, 0x0E),
            (FeatureId::KEEP_ALIVE_TIMER, 0x0F),
            (FeatureId::HOST_CONTROLLED_THERMAL_MANAGEMENT, 0x10),
            (FeatureId::CONTROLLER_DATA_QUEUE, 0x21),
            (FeatureId::HOST_IDENTIFIER, 0x81),
        ] {
            assert_eq!(fid.0, v, "{fid:?}");
        }
        assert_eq!(Select::SUPPORTED_CAPABILITIES.0, 3);
    }

    #[test]
    fn arbitration_and_power() {
        let arb = Arbitration::from(0x0302_0107);
        assert_eq!((arb.ab(), arb.lpw(), arb.mpw(), arb.hpw()), (7, 1, 2, 3));
        assert_eq!(
            u32::from(Arbitration::new().with_ab(2).with_hpw(0xFF)),
            0xFF00_0002
        );
        let pm = PowerManagement::new().with_ps(3).with_wh(2);
        assert_eq!(u32::from(pm), 3 | 2 << 5);
    }

    #[test]
    fn thresholds_and_recovery() {
        let t = TemperatureThreshold::new()
            .with_tmpth(343)
            .with_tmpsel(0xF)
            .with_thsel(1);
        assert_eq!(u32::from(t), 343 | 0xF << 16 | 1 << 20);
        let e = ErrorRecovery::from(1 << 16 | 50);
        assert!(e.dulbe());
        assert_eq!(e.tler(), 50);
        assert_eq!(u32::from(VolatileWriteCache::new().with_wce(true)), 1);
        assert_eq!(u32::from(WriteAtomicity::new().with_dn(true)), 1);
        assert_eq!(
            u32::from(HostThermalManagement::new().with_tmt1(300).with_tmt2(350)),
            300 << 16 | 350
        );
    }

    #[test]
    fn queues_and_interrupts() {
        // Linux asks for 64 SQs and 64 CQs: CDW11 = 003F003Fh.
        let req = NumberOfQueuesRequest::from(0x003F_003F);
        assert_eq!((req.nsqr(), req.ncqr()), (63, 63));
        let alloc = NumberOfQueuesAllocated::new().with_nsqa(15).with_ncqa(7);
        assert_eq!(u32::from(alloc), 0x0007_000F);
        let ic = InterruptCoalescing::new().with_thr(4).with_time(10);
        assert_eq!(u32::from(ic), 0x0A04);
        let ivc = InterruptVectorConfig::from(1 << 16 | 5);
        assert_eq!((ivc.iv(), ivc.cd()), (5, true));
        assert_eq!(u32::from(KeepAliveTimer::new().with_kato(120_000)), 120_000);
    }

    #[test]
    fn async_event_config() {
        let aec = AsyncEventConfig::new()
            .with_smart(
                CriticalWarning::new()
                    .with_available_spare(true)
                    .with_temperature(true),
            )
            .with_nan(true)
            .with_fan(true)
            .with_anacn(true)
            .with_dlpcn(true);
        assert_eq!(u32::from(aec), 0b11 | 1 << 8 | 1 << 9 | 1 << 11 | 1 << 31);
        // Linux enables NAN | FAN | ANACN together with all SMART warnings.
        let linux = AsyncEventConfig::from(0xFF | 1 << 8 | 1 << 9 | 1 << 11);
        assert!(linux.smart().reliability() && linux.smart().pmr_read_only());
        assert!(linux.nan() && linux.fan() && linux.anacn() && !linux.tln());
        assert_eq!(u32::from(AsyncEventConfig::new().with_zdcn(true)), 1 << 27);
    }

    #[test]
    fn timestamp_bytes() {
        let ts = Timestamp::new()
            .with_timestamp(0x0102_0304_0506)
            .with_synch(true)
            .with_origin(1);
        assert_eq!(
            ts.as_bytes(),
            &[0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0b0011, 0x00]
        );
        let back = Timestamp::read_from_bytes(ts.as_bytes()).unwrap();
        assert_eq!(back.timestamp(), 0x0102_0304_0506);
        assert_eq!(back.origin(), 1);
    }

    #[test]
    fn async_event_completion() {
        // Namespace attribute changed: type 2, info 0, log page 04h.
        let ns = AsyncEventCompletion::new()
            .with_event_type(AsyncEventType::NOTICE)
            .with_event_info(AsyncEventInfoNotice::NAMESPACE_ATTRIBUTE_CHANGED.0)
            .with_log_page(LogPageId::CHANGED_NAMESPACE_LIST);
        assert_eq!(u32::from(ns), 0x0004_0002);
        // TP4159 CDQ full: type 4, info 1, log page 0.
        let cdq = AsyncEventCompletion::from(0x0000_0104);
        assert_eq!(cdq.event_type(), AsyncEventType::ONE_SHOT);
        assert_eq!(cdq.event_info(), AsyncEventInfoOneShot::CDQ_FULL.0);
        assert_eq!(cdq.log_page(), LogPageId::SUPPORTED_LOG_PAGES);
        let smart = AsyncEventCompletion::from(0x0002_0101);
        assert_eq!(smart.event_type(), AsyncEventType::SMART_HEALTH);
        assert_eq!(
            smart.event_info(),
            AsyncEventInfoSmart::TEMPERATURE_THRESHOLD.0
        );
        assert_eq!(smart.log_page(), LogPageId::SMART_HEALTH);
        assert_eq!(AsyncEventInfoError::INVALID_DOORBELL_VALUE.0, 1);
    }

    #[test]
    fn feature_capabilities() {
        let caps = FeatureCapabilities::from(0b101);
        assert!(caps.saveable() && !caps.namespace_specific() && caps.changeable());
    }
}
