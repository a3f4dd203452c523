//! Identify data structures (NVMe Base 2.1 §5.1.13 and NVM Command Set 1.1 §4.1.5).
//!
//! Every structure is 4096 bytes. The ones the Linux nvme driver reads while probing a controller
//! are all here: Identify Controller (CNS 01h), Identify Namespace (00h), the active namespace
//! list (02h), the namespace identification descriptors (03h), the NVM command set specific
//! namespace and controller structures (05h/06h), the CSI active namespace list (07h), the
//! command set independent namespace structure (08h) and the I/O Command Set data structure
//! (1Ch). The Primary Controller Capabilities (14h) and the Secondary Controller List (15h)
//! describe SR-IOV: the flexible resources a primary controller shares and which controller
//! identifier each VF has. The TP4159 Supported Controller State Formats structure (CNS 20h)
//! lives in [`crate::lm`].

use bitfield_struct::bitfield;
use open_enum::open_enum;
use thiserror::Error;
use zerocopy::FromBytes;
use zerocopy::FromZeros;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::registers::Vs;

/// The size of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// Controller or Namespace Structure (Identify CDW10.CNS).
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum Cns {
    /// 00h: Identify Namespace ([`IdentifyNamespace`]).
    NAMESPACE = 0x00,
    /// 01h: Identify Controller ([`IdentifyController`]).
    CONTROLLER = 0x01,
    /// 02h: Active Namespace ID list ([`NamespaceList`]).
    ACTIVE_NAMESPACE_LIST = 0x02,
    /// 03h: Namespace Identification Descriptor list.
    NAMESPACE_ID_DESCRIPTORS = 0x03,
    /// 04h: NVM Set List.
    NVM_SET_LIST = 0x04,
    /// 05h: I/O command set specific Identify Namespace ([`IdentifyNamespaceNvm`] for CSI 0).
    CSI_NAMESPACE = 0x05,
    /// 06h: I/O command set specific Identify Controller ([`IdentifyControllerNvm`] for CSI 0).
    CSI_CONTROLLER = 0x06,
    /// 07h: Active Namespace ID list for one I/O command set.
    CSI_ACTIVE_NAMESPACE_LIST = 0x07,
    /// 08h: I/O Command Set Independent Identify Namespace ([`IdentifyNamespaceIndependent`]).
    CS_INDEPENDENT_NAMESPACE = 0x08,
    /// 10h: Allocated Namespace ID list.
    ALLOCATED_NAMESPACE_LIST = 0x10,
    /// 11h: Identify Namespace for an allocated namespace.
    ALLOCATED_NAMESPACE = 0x11,
    /// 12h: Controllers attached to a namespace.
    NAMESPACE_ATTACHED_CONTROLLERS = 0x12,
    /// 13h: Controllers in the NVM subsystem.
    CONTROLLER_LIST = 0x13,
    /// 14h: Primary Controller Capabilities ([`PrimaryControllerCapabilities`]).
    PRIMARY_CONTROLLER_CAPABILITIES = 0x14,
    /// 15h: Secondary Controller List ([`SecondaryControllerList`]).
    SECONDARY_CONTROLLER_LIST = 0x15,
    /// 16h: Namespace Granularity List.
    NAMESPACE_GRANULARITY = 0x16,
    /// 17h: UUID List.
    UUID_LIST = 0x17,
    /// 18h: Domain List.
    DOMAIN_LIST = 0x18,
    /// 19h: Endurance Group List.
    ENDURANCE_GROUP_LIST = 0x19,
    /// 1Ah: Allocated Namespace ID list for one I/O command set.
    CSI_ALLOCATED_NAMESPACE_LIST = 0x1A,
    /// 1Bh: I/O command set specific Identify Namespace for an allocated namespace.
    CSI_ALLOCATED_NAMESPACE = 0x1B,
    /// 1Ch: I/O Command Set data structure ([`IoCommandSetList`]).
    IO_COMMAND_SET = 0x1C,
    /// 20h: TP4159 Supported Controller State Formats (see [`crate::lm`]).
    SUPPORTED_CONTROLLER_STATE_FORMATS = 0x20,
}
bitfield_enum!(Cns, u8);

/// Command Set Identifier of the NVM command set.
pub const CSI_NVM: u8 = 0;

/// Copies `s` into a fixed-size ASCII field, truncating and padding with spaces, as Identify's
/// SN, MN and FR fields require.
pub fn pad_ascii<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (dst, src) in out.iter_mut().zip(s.bytes()) {
        *dst = src;
    }
    out
}

/// CMIC: Controller Multi-Path I/O and Namespace Sharing Capabilities.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Cmic {
    /// The NVM subsystem may contain more than one port.
    pub multi_port: bool,
    /// The NVM subsystem may contain more than one controller.
    pub multi_controller: bool,
    /// The controller is associated with an SR-IOV virtual function.
    pub sriov: bool,
    /// Asymmetric Namespace Access reporting is supported.
    pub ana: bool,
    #[bits(4)]
    _reserved: u8,
}

/// OAES: Optional Asynchronous Events Supported. The same bit positions are used by the
/// Asynchronous Event Configuration feature ([`crate::features::AsyncEventConfig`]).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Oaes {
    #[bits(8)]
    _reserved: u8,
    /// Namespace Attribute Notices.
    pub namespace_attribute: bool,
    /// Firmware Activation Notices.
    pub firmware_activation: bool,
    #[bits(1)]
    _reserved2: u8,
    /// Asymmetric Namespace Access Change Notices.
    pub ana_change: bool,
    /// Predictable Latency Event Aggregate Log Change Notices.
    pub ple_aggregate_log_change: bool,
    /// LBA Status Information Notices.
    pub lba_status_information: bool,
    /// Endurance Group Event Aggregate Log Page Change Notices.
    pub eg_aggregate_log_change: bool,
    /// Normal NVM Subsystem Shutdown event.
    pub normal_nss_shutdown: bool,
    #[bits(15)]
    _reserved3: u16,
    /// Discovery Log Page Change Notification.
    pub discovery_log_change: bool,
}

/// OACS: Optional Admin Command Support.
#[bitfield(u16)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Oacs {
    /// Security Send / Security Receive.
    pub security: bool,
    /// Format NVM.
    pub format: bool,
    /// Firmware Commit / Firmware Image Download.
    pub firmware: bool,
    /// Namespace Management.
    pub namespace_management: bool,
    /// Device Self-test.
    pub self_test: bool,
    /// Directives.
    pub directives: bool,
    /// NVMe-MI Send / Receive.
    pub nvme_mi: bool,
    /// Virtualization Management.
    pub virtualization_management: bool,
    /// Doorbell Buffer Config.
    pub doorbell_buffer_config: bool,
    /// Get LBA Status.
    pub get_lba_status: bool,
    /// Command and Feature Lockdown.
    pub lockdown: bool,
    /// HMLMS (TP4159): Host Managed Live Migration — Track Send/Receive, Migration
    /// Send/Receive and Controller Data Queue.
    pub hmlms: bool,
    #[bits(4)]
    _reserved: u8,
}

/// SQES / CQES: required and maximum queue entry sizes as powers of two.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct QueueEntrySize {
    /// Required (minimum) entry size: `2 ^ value` bytes.
    #[bits(4)]
    pub required: u8,
    /// Maximum entry size: `2 ^ value` bytes.
    #[bits(4)]
    pub maximum: u8,
}

/// ONCS: Optional NVM Command Support.
#[bitfield(u16)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Oncs {
    /// Compare.
    pub compare: bool,
    /// Write Uncorrectable.
    pub write_uncorrectable: bool,
    /// Dataset Management.
    pub dataset_management: bool,
    /// Write Zeroes.
    pub write_zeroes: bool,
    /// Save field in Set Features and Select field in Get Features.
    pub save_select: bool,
    /// Reservations.
    pub reservations: bool,
    /// Timestamp feature.
    pub timestamp: bool,
    /// Verify.
    pub verify: bool,
    /// Copy.
    pub copy: bool,
    /// Copy Single Atomicity.
    pub copy_single_atomicity: bool,
    /// All Fast Copy.
    pub all_fast_copy: bool,
    /// Write Zeroes with Deallocate Limit (NVM 1.1).
    pub write_zeroes_deallocate: bool,
    #[bits(4)]
    _reserved: u8,
}

/// VWC: Volatile Write Cache.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Vwc {
    /// A volatile write cache is present.
    pub present: bool,
    /// Flush with NSID FFFFFFFFh: 10b not supported, 11b supported.
    #[bits(2)]
    pub flush_broadcast: u8,
    #[bits(5)]
    _reserved: u8,
}

/// TRATTR (TP4159): Tracking Attributes.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Trattr {
    /// THMCS: Track Host Memory Changes Support.
    pub thmcs: bool,
    /// TUDCS: Track User Data Changes Support.
    pub tudcs: bool,
    /// MRTLL: Memory Range Tracking Length Limit.
    pub mrtll: bool,
    #[bits(5)]
    _reserved: u8,
}

/// A power state descriptor (32 bytes; Identify Controller holds 32 of them at byte 2048).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct PowerStateDescriptor {
    /// Maximum Power, in units given by MXPS (0.01 W or 0.0001 W).
    pub mp: u16,
    _reserved2: u8,
    /// Bit 0 MXPS (max power scale), bit 1 NOPS (non-operational state).
    pub flags: u8,
    /// Entry Latency, µs.
    pub enlat: u32,
    /// Exit Latency, µs.
    pub exlat: u32,
    /// Relative Read Throughput.
    pub rrt: u8,
    /// Relative Read Latency.
    pub rrl: u8,
    /// Relative Write Throughput.
    pub rwt: u8,
    /// Relative Write Latency.
    pub rwl: u8,
    /// Idle Power.
    pub idlp: u16,
    /// Idle Power Scale (bits 7:6).
    pub ips: u8,
    _reserved19: u8,
    /// Active Power.
    pub actp: u16,
    /// Active Power Workload (bits 2:0) and Active Power Scale (bits 7:6).
    pub apw_aps: u8,
    _reserved23: [u8; 9],
}

const _: () = assert!(size_of::<PowerStateDescriptor>() == 32);

/// Identify Controller data structure (CNS 01h), 4096 bytes.
///
/// The TP4159 fields sit at 570–587 as in libnvme and the QEMU TP4159 model (the 2025 RFC's
/// offset 352 is wrong; see `tp4159.md` §4.1). 128-bit capacities at unaligned offsets are kept
/// as little-endian byte arrays with accessors.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: u16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// Serial Number (ASCII, space padded).
    pub sn: [u8; 20],
    /// Model Number (ASCII, space padded).
    pub mn: [u8; 40],
    /// Firmware Revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI Identifier.
    pub ieee: [u8; 3],
    /// Multi-path I/O and namespace sharing capabilities.
    pub cmic: Cmic,
    /// Maximum Data Transfer Size: `2 ^ MDTS` minimum pages (0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version (same layout as the VS register).
    pub ver: Vs,
    /// RTD3 Resume Latency, µs.
    pub rtd3r: u32,
    /// RTD3 Entry Latency, µs.
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported.
    pub oaes: Oaes,
    /// Controller Attributes.
    pub ctratt: u32,
    /// Read Recovery Levels Supported.
    pub rrls: u16,
    _reserved102: [u8; 9],
    /// Controller Type: 1 I/O, 2 discovery, 3 administrative.
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// Command Retry Delay Time 1, 100 ms units.
    pub crdt1: u16,
    /// Command Retry Delay Time 2.
    pub crdt2: u16,
    /// Command Retry Delay Time 3.
    pub crdt3: u16,
    _reserved134: [u8; 119],
    /// NVM Subsystem Report (NVMe-MI).
    pub nvmsr: u8,
    /// VPD Write Cycle Information (NVMe-MI).
    pub vwci: u8,
    /// Management Endpoint Capabilities (NVMe-MI).
    pub mec: u8,
    /// Optional Admin Command Support.
    pub oacs: Oacs,
    /// Abort Command Limit, 0's based.
    pub acl: u8,
    /// Asynchronous Event Request Limit, 0's based.
    pub aerl: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries, 0's based.
    pub elpe: u8,
    /// Number of Power States Support, 0's based.
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// Warning Composite Temperature Threshold, kelvin.
    pub wctemp: u16,
    /// Critical Composite Temperature Threshold, kelvin.
    pub cctemp: u16,
    /// Maximum Time for Firmware Activation, 100 ms units.
    pub mtfa: u16,
    /// Host Memory Buffer Preferred Size, 4 KiB units.
    pub hmpre: u32,
    /// Host Memory Buffer Minimum Size, 4 KiB units.
    pub hmmin: u32,
    /// Total NVM Capacity, bytes (little-endian u128; see [`Self::tnvmcap`]).
    pub tnvmcap: [u8; 16],
    /// Unallocated NVM Capacity, bytes (little-endian u128; see [`Self::unvmcap`]).
    pub unvmcap: [u8; 16],
    /// Replay Protected Memory Block Support.
    pub rpmbs: u32,
    /// Extended Device Self-test Time, minutes.
    pub edstt: u16,
    /// Device Self-test Options.
    pub dsto: u8,
    /// Firmware Update Granularity, 4 KiB units.
    pub fwug: u8,
    /// Keep Alive Support: granularity of the keep alive timer in 100 ms units (0 = none).
    pub kas: u16,
    /// Host Controlled Thermal Management Attributes.
    pub hctma: u16,
    /// Minimum Thermal Management Temperature.
    pub mntmt: u16,
    /// Maximum Thermal Management Temperature.
    pub mxtmt: u16,
    /// Sanitize Capabilities.
    pub sanicap: u32,
    /// Host Memory Buffer Minimum Descriptor Entry Size.
    pub hmminds: u32,
    /// Host Memory Maximum Descriptors Entries.
    pub hmmaxd: u16,
    /// NVM Set Identifier Maximum.
    pub nsetidmax: u16,
    /// Endurance Group Identifier Maximum.
    pub endgidmax: u16,
    /// ANA Transition Time, seconds.
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: u32,
    /// Persistent Event Log Size, 64 KiB units.
    pub pels: u32,
    /// Domain Identifier.
    pub domainid: u16,
    _reserved358: [u8; 10],
    /// Max Endurance Group Capacity (little-endian u128).
    pub megcap: [u8; 16],
    _reserved384: [u8; 128],
    /// Submission Queue Entry Size (6 = 64 bytes).
    pub sqes: QueueEntrySize,
    /// Completion Queue Entry Size (4 = 16 bytes).
    pub cqes: QueueEntrySize,
    /// Maximum Outstanding Commands (fabrics).
    pub maxcmd: u16,
    /// Number of Namespaces: the largest valid NSID.
    pub nn: u32,
    /// Optional NVM Command Support.
    pub oncs: Oncs,
    /// Fused Operation Support.
    pub fuses: u16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache.
    pub vwc: Vwc,
    /// Atomic Write Unit Normal, 0's based blocks.
    pub awun: u16,
    /// Atomic Write Unit Power Fail, 0's based blocks.
    pub awupf: u16,
    /// I/O Command Set Vendor Specific Command Configuration.
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// Atomic Compare & Write Unit, 0's based blocks.
    pub acwu: u16,
    /// Optional Copy Formats Supported.
    pub ocfs: u16,
    /// SGL Support (0 = SGLs not supported).
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// Maximum Domain Namespace Attachments (little-endian u128).
    pub maxdna: [u8; 16],
    /// Maximum I/O Controller Namespace Attachments.
    pub maxcna: u32,
    /// Optimal Aggregated Queue Depth.
    pub oaqd: u32,
    /// Recommended Host-Initiated Refresh Interval.
    pub rhiri: u8,
    /// Host-Initiated Refresh Time.
    pub hirt: u8,
    /// TP4159 CMMRTD: Controller Maximum Memory Range Tracking Descriptors.
    pub cmmrtd: u16,
    /// TP4159 NMMRTD: NVM Subsystem Maximum Memory Range Tracking Descriptors.
    pub nmmrtd: u16,
    /// TP4159 MINMRTG: Minimum Memory Range Tracking Granularity.
    pub minmrtg: u8,
    /// TP4159 MAXMRTG: Maximum Memory Range Tracking Granularity.
    pub maxmrtg: u8,
    /// TP4159 TRATTR: Tracking Attributes.
    pub trattr: Trattr,
    _reserved577: u8,
    /// TP4159 MCUDMQ: Maximum Controller User Data Migration Queues.
    pub mcudmq: u16,
    /// TP4159 MNSUDMQ: Maximum NVM Subsystem User Data Migration Queues.
    pub mnsudmq: u16,
    /// TP4159 MCMR: Maximum CDQ Memory Ranges per Controller Data Queue command.
    pub mcmr: u16,
    /// TP4159 NMCMR: NVM Subsystem Maximum CDQ Memory Ranges.
    pub nmcmr: u16,
    /// TP4159 MCDQPC: Maximum Controller Data Queue PRP Count.
    pub mcdqpc: u16,
    _reserved588: [u8; 180],
    /// NVM Subsystem NVMe Qualified Name (UTF-8, NUL padded).
    pub subnqn: [u8; 256],
    _reserved1024: [u8; 768],
    /// I/O Queue Command Capsule Supported Size (fabrics).
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size (fabrics).
    pub iorcsz: u32,
    /// In Capsule Data Offset (fabrics).
    pub icdoff: u16,
    /// Fabrics Controller Attributes.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors (fabrics).
    pub msdbd: u8,
    /// Optional Fabric Commands Support.
    pub ofcs: u16,
    /// Discovery Controller Type.
    pub dctype: u8,
    _reserved1807: [u8; 241],
    /// Power State Descriptors 0–31.
    pub psd: [PowerStateDescriptor; 32],
    /// Vendor Specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyController>() == IDENTIFY_DATA_SIZE);

impl IdentifyController {
    /// Total NVM Capacity in bytes.
    pub fn tnvmcap(&self) -> u128 {
        u128::from_le_bytes(self.tnvmcap)
    }

    /// Unallocated NVM Capacity in bytes.
    pub fn unvmcap(&self) -> u128 {
        u128::from_le_bytes(self.unvmcap)
    }

    /// The largest transfer the controller accepts, in bytes, given the host memory page size
    /// (CAP.MPSMIN's page size); `None` when MDTS is 0 (no limit) or the result overflows.
    pub fn max_transfer_bytes(&self, min_page_size: u64) -> Option<u64> {
        if self.mdts == 0 {
            return None;
        }
        1u64.checked_shl(u32::from(self.mdts))?
            .checked_mul(min_page_size)
    }
}

/// An LBA Format descriptor: metadata size, LBA data size and relative performance.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct LbaFormat {
    /// Metadata Size per LBA, bytes.
    pub ms: u16,
    /// LBA Data Size: `2 ^ LBADS` bytes (at least 9; 0 = format not available).
    pub lbads: u8,
    /// Relative Performance (bits 1:0; 0 best … 3 degraded).
    pub rp: u8,
}

const _: () = assert!(size_of::<LbaFormat>() == 4);

impl LbaFormat {
    /// The LBA data size in bytes, or `None` if LBADS is below 9 (512 bytes) or too large to be
    /// a `u64` shift.
    pub fn lba_size(&self) -> Option<u64> {
        if self.lbads < 9 {
            return None;
        }
        1u64.checked_shl(u32::from(self.lbads))
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 00h), 4096 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespace {
    /// Namespace Size, in logical blocks.
    pub nsze: u64,
    /// Namespace Capacity, in logical blocks.
    pub ncap: u64,
    /// Namespace Utilization, in logical blocks.
    pub nuse: u64,
    /// Namespace Features (bit 0 thin provisioning, bit 4 optimal performance fields valid, …).
    pub nsfeat: u8,
    /// Number of LBA Formats, 0's based.
    pub nlbaf: u8,
    /// Formatted LBA Size: bits 3:0 index low, bit 4 extended metadata, bits 6:5 index high.
    pub flbas: u8,
    /// Metadata Capabilities.
    pub mc: u8,
    /// End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// Deallocate Logical Block Features (bits 2:0 read-after-deallocate value).
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal, 0's based.
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail, 0's based.
    pub nawupf: u16,
    /// Namespace Atomic Compare & Write Unit, 0's based.
    pub nacwu: u16,
    /// Namespace Atomic Boundary Size Normal.
    pub nabsn: u16,
    /// Namespace Atomic Boundary Offset.
    pub nabo: u16,
    /// Namespace Atomic Boundary Size Power Fail.
    pub nabspf: u16,
    /// Namespace Optimal I/O Boundary.
    pub noiob: u16,
    /// NVM Capacity in bytes (little-endian u128).
    pub nvmcap: [u8; 16],
    /// Namespace Preferred Write Granularity, 0's based.
    pub npwg: u16,
    /// Namespace Preferred Write Alignment, 0's based.
    pub npwa: u16,
    /// Namespace Preferred Deallocate Granularity, 0's based.
    pub npdg: u16,
    /// Namespace Preferred Deallocate Alignment, 0's based.
    pub npda: u16,
    /// Namespace Optimal Write Size, 0's based.
    pub nows: u16,
    /// Maximum Single Source Range Length (Copy).
    pub mssrl: u16,
    /// Maximum Copy Length (Copy).
    pub mcl: u32,
    /// Maximum Source Range Count, 0's based (Copy).
    pub msrc: u8,
    _reserved81: [u8; 11],
    /// ANA Group Identifier.
    pub anagrpid: u32,
    _reserved96: [u8; 3],
    /// Namespace Attributes (bit 0 write protected).
    pub nsattr: u8,
    /// NVM Set Identifier.
    pub nvmsetid: u16,
    /// Endurance Group Identifier.
    pub endgid: u16,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA Format descriptors 0–63.
    pub lbaf: [LbaFormat; 64],
    /// Vendor Specific.
    pub vs: [u8; 3712],
}

const _: () = assert!(size_of::<IdentifyNamespace>() == IDENTIFY_DATA_SIZE);

impl IdentifyNamespace {
    /// The index of the formatted LBA format (FLBAS bits 3:0, plus bits 6:5 as bits 5:4).
    pub fn lba_format_index(&self) -> usize {
        usize::from(self.flbas & 0xF) | usize::from((self.flbas >> 5) & 0x3) << 4
    }

    /// Whether metadata is transferred at the end of each LBA (FLBAS bit 4).
    pub fn extended_metadata(&self) -> bool {
        self.flbas & 0x10 != 0
    }

    /// The active LBA format, or `None` if FLBAS names a format beyond NLBAF.
    pub fn active_lba_format(&self) -> Option<LbaFormat> {
        let index = self.lba_format_index();
        if index > usize::from(self.nlbaf) {
            return None;
        }
        self.lbaf.get(index).copied()
    }

    /// The active LBA data size in bytes, or `None` if the active format is invalid.
    pub fn lba_size(&self) -> Option<u64> {
        self.active_lba_format()?.lba_size()
    }

    /// NVM Capacity in bytes.
    pub fn nvmcap(&self) -> u128 {
        u128::from_le_bytes(self.nvmcap)
    }
}

/// Extended LBA Format (NVM command set Identify Namespace, one per LBA format).
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct ExtendedLbaFormat {
    /// Storage Tag Size, bits.
    #[bits(7)]
    pub sts: u8,
    /// Protection Information Format: 0 16-bit guard, 1 32-bit, 2 64-bit, 3 qualified.
    #[bits(2)]
    pub pif: u8,
    /// Qualified Protection Information Format.
    #[bits(4)]
    pub qpif: u8,
    #[bits(19)]
    _reserved: u32,
}

/// I/O command set specific Identify Namespace for the NVM command set (CNS 05h, CSI 00h).
///
/// Byte 9 is reserved here: the QEMU TP4159 model puts LBAMQF there, but libnvme (citing NVM
/// Command Set 1.1) places it in [`IdentifyControllerNvm::lbamqf`]; we follow libnvme
/// (`tp4159.md` §4.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespaceNvm {
    /// Logical Block Storage Tag Mask.
    pub lbstm: u64,
    /// Protection Information Capabilities.
    pub pic: u8,
    _reserved9: [u8; 3],
    /// Extended LBA Formats 0–63.
    pub elbaf: [ExtendedLbaFormat; 64],
    /// Namespace Preferred Deallocate Granularity Large.
    pub npdgl: u32,
    /// Namespace Preferred Read Granularity.
    pub nprg: u32,
    /// Namespace Preferred Read Alignment.
    pub npra: u32,
    /// Namespace Optimal Read Size.
    pub nors: u32,
    /// Namespace Preferred Deallocate Alignment Large.
    pub npdal: u32,
    _reserved288: [u8; 3808],
}

const _: () = assert!(size_of::<IdentifyNamespaceNvm>() == IDENTIFY_DATA_SIZE);

/// LBAMQF value for the NVMe-defined Type 0 LBA migration queue entry.
pub const LBAMQF_TYPE0: u8 = 0;

/// I/O command set specific Identify Controller for the NVM command set (CNS 06h, CSI 00h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IdentifyControllerNvm {
    /// Verify Size Limit: `2 ^ VSL` minimum pages (0 = no limit).
    pub vsl: u8,
    /// Write Zeroes Size Limit.
    pub wzsl: u8,
    /// Write Uncorrectable Size Limit.
    pub wusl: u8,
    /// Dataset Management Ranges Limit (0 = none reported).
    pub dmrl: u8,
    /// Dataset Management Range Size Limit, logical blocks.
    pub dmrsl: u32,
    /// Dataset Management Size Limit, logical blocks.
    pub dmsl: u64,
    /// Key Per I/O Capabilities.
    pub kpiocap: u8,
    /// Write Zeroes With Deallocate Size Limit.
    pub wzdsl: u8,
    /// Admin Optional Command Support (bit 0 RALBAS, TP4165).
    pub aocs: u16,
    _reserved20: [u8; 4],
    /// TP4159 LBAMQF: LBA Migration Queue Format (0 = Type 0, C0h–FFh vendor specific).
    /// Byte 24 per libnvme / NVM Command Set 1.1, not the QEMU model's namespace byte 9.
    pub lbamqf: u8,
    _reserved25: [u8; 4071],
}

const _: () = assert!(size_of::<IdentifyControllerNvm>() == IDENTIFY_DATA_SIZE);

/// I/O Command Set Independent Identify Namespace (CNS 08h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespaceIndependent {
    /// Namespace Features.
    pub nsfeat: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Namespace Attributes.
    pub nsattr: u8,
    _reserved9: u8,
    /// NVM Set Identifier.
    pub nvmsetid: u16,
    /// Endurance Group Identifier.
    pub endgid: u16,
    /// Namespace Status (bit 0: namespace ready).
    pub nstat: u8,
    _reserved15: [u8; 4081],
}

const _: () = assert!(size_of::<IdentifyNamespaceIndependent>() == IDENTIFY_DATA_SIZE);

/// A list of up to 1024 namespace identifiers in increasing order, zero-terminated (Active
/// Namespace ID list, CNS 02h/07h; also the Changed Namespace List log page).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct NamespaceList {
    /// The identifiers; the first 0 ends the list.
    pub ids: [u32; 1024],
}

const _: () = assert!(size_of::<NamespaceList>() == IDENTIFY_DATA_SIZE);

impl NamespaceList {
    /// A list holding the first 1024 of `ids` (the caller supplies them in increasing order).
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut list = Self::new_zeroed();
        for (slot, id) in list.ids.iter_mut().zip(ids) {
            *slot = id;
        }
        list
    }

    /// The identifiers up to the first zero.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.iter().copied().take_while(|&id| id != 0)
    }
}

/// One I/O command set combination (CNS 1Ch lists 512 of them).
#[bitfield(u64)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct IoCommandSetVector {
    /// NVM command set.
    pub nvm: bool,
    /// Key Value command set.
    pub key_value: bool,
    /// Zoned Namespace command set.
    pub zoned: bool,
    #[bits(61)]
    _reserved: u64,
}

/// I/O Command Set data structure (CNS 1Ch): the command set combinations the controller
/// supports; the host selects one by index with the I/O Command Set Profile feature.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IoCommandSetList {
    /// Combinations 0–511.
    pub vectors: [IoCommandSetVector; 512],
}

const _: () = assert!(size_of::<IoCommandSetList>() == IDENTIFY_DATA_SIZE);

/// CRT: Controller Resource Types a primary controller supports.
#[bitfield(u8)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct Crt {
    /// VQ Resources (submission/completion queue pairs) are supported.
    pub vq: bool,
    /// VI Resources (interrupt vectors) are supported.
    pub vi: bool,
    #[bits(6)]
    _reserved: u8,
}

/// Primary Controller Capabilities (CNS 14h): the primary controller's resources and how its
/// flexible ones are shared with its secondary controllers (Virtualization Management).
///
/// Per resource type (VQ: queue pairs, VI: interrupt vectors): the flexible total, how much of
/// it is assigned to secondaries and allocated to the primary, the primary's private resources,
/// the most one secondary may be assigned and the preferred granularity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct PrimaryControllerCapabilities {
    /// This primary controller's CNTLID.
    pub cntlid: u16,
    /// NVM subsystem port identifier.
    pub portid: u16,
    /// Controller Resource Types supported.
    pub crt: Crt,
    _reserved5: [u8; 27],
    /// VQFRT: VQ Resources Flexible Total.
    pub vqfrt: u32,
    /// VQRFA: VQ Resources Flexible Assigned (to secondary controllers).
    pub vqrfa: u32,
    /// VQRFAP: VQ Resources Flexible Allocated to Primary.
    pub vqrfap: u16,
    /// VQPRT: VQ Resources Private Total.
    pub vqprt: u16,
    /// VQFRSM: VQ Flexible Resources Secondary Maximum (per secondary controller).
    pub vqfrsm: u16,
    /// VQGRAN: VQ Flexible Resource Preferred Granularity.
    pub vqgran: u16,
    _reserved48: [u8; 16],
    /// VIFRT: VI Resources Flexible Total.
    pub vifrt: u32,
    /// VIRFA: VI Resources Flexible Assigned (to secondary controllers).
    pub virfa: u32,
    /// VIRFAP: VI Resources Flexible Allocated to Primary.
    pub virfap: u16,
    /// VIPRT: VI Resources Private Total.
    pub viprt: u16,
    /// VIFRSM: VI Flexible Resources Secondary Maximum (per secondary controller).
    pub vifrsm: u16,
    /// VIGRAN: VI Flexible Resource Preferred Granularity.
    pub vigran: u16,
    _reserved80: [u8; 4016],
}

const _: () = assert!(size_of::<PrimaryControllerCapabilities>() == IDENTIFY_DATA_SIZE);

/// Secondary Controller Entry (32 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct SecondaryControllerEntry {
    /// Secondary Controller Identifier: the CNTLID to use in TP4159 commands.
    pub scid: u16,
    /// Primary Controller Identifier.
    pub pcid: u16,
    /// Secondary Controller State: bit 0 set when online.
    pub scs: u8,
    _reserved5: [u8; 3],
    /// Virtual Function Number, 1-based (Linux `virtfn0` is VFN 1).
    pub vfn: u16,
    /// Number of VQ Flexible Resources Assigned.
    pub nvq: u16,
    /// Number of VI Flexible Resources Assigned.
    pub nvi: u16,
    _reserved14: [u8; 18],
}

const _: () = assert!(size_of::<SecondaryControllerEntry>() == 32);

impl SecondaryControllerEntry {
    /// Whether the secondary controller is online (SCS bit 0).
    pub fn online(&self) -> bool {
        self.scs & 1 != 0
    }
}

/// Secondary Controller List (CNS 15h): count at byte 0, up to 127 entries from byte 32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SecondaryControllerList {
    /// Number of Identifiers: how many entries are valid.
    pub numid: u8,
    _reserved1: [u8; 31],
    /// The entries; only the first `numid` are meaningful.
    pub entries: [SecondaryControllerEntry; 127],
}

const _: () = assert!(size_of::<SecondaryControllerList>() == IDENTIFY_DATA_SIZE);

impl SecondaryControllerList {
    /// The most entries one list holds.
    pub const MAX_ENTRIES: usize = 127;

    /// A list of the first 127 of `entries`.
    pub fn from_entries(entries: &[SecondaryControllerEntry]) -> Self {
        let mut list = Self::new_zeroed();
        let n = entries.len().min(Self::MAX_ENTRIES);
        list.entries[..n].copy_from_slice(&entries[..n]);
        list.numid = n as u8;
        list
    }

    /// The valid entries (NUMID, capped at 127 so a bad count from a device cannot overrun).
    pub fn valid_entries(&self) -> &[SecondaryControllerEntry] {
        let n = usize::from(self.numid).min(Self::MAX_ENTRIES);
        &self.entries[..n]
    }

    /// The entry for virtual function `vfn` (1-based).
    pub fn find_vfn(&self, vfn: u16) -> Option<&SecondaryControllerEntry> {
        self.valid_entries().iter().find(|e| e.vfn == vfn)
    }
}

/// Namespace Identifier Type (NIDT) of a namespace identification descriptor.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u8)]
pub enum NidType {
    /// 1h: IEEE EUI-64, 8 bytes.
    EUI64 = 1,
    /// 2h: NGUID, 16 bytes.
    NGUID = 2,
    /// 3h: UUID, 16 bytes.
    UUID = 3,
    /// 4h: Command Set Identifier, 1 byte.
    CSI = 4,
}

/// The 4-byte header of a namespace identification descriptor; NIDL bytes of value follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct NidHeader {
    /// Namespace Identifier Type.
    pub nidt: NidType,
    /// Namespace Identifier Length, bytes.
    pub nidl: u8,
    _reserved: u16,
}

const _: () = assert!(size_of::<NidHeader>() == 4);

/// One decoded namespace identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceIdentifier {
    /// IEEE EUI-64.
    Eui64([u8; 8]),
    /// Namespace Globally Unique Identifier.
    Nguid([u8; 16]),
    /// UUID.
    Uuid([u8; 16]),
    /// Command Set Identifier.
    Csi(u8),
}

impl NamespaceIdentifier {
    fn nidt(&self) -> NidType {
        match self {
            Self::Eui64(_) => NidType::EUI64,
            Self::Nguid(_) => NidType::NGUID,
            Self::Uuid(_) => NidType::UUID,
            Self::Csi(_) => NidType::CSI,
        }
    }

    fn value(&self) -> &[u8] {
        match self {
            Self::Eui64(v) => v,
            Self::Nguid(v) | Self::Uuid(v) => v,
            Self::Csi(v) => core::slice::from_ref(v),
        }
    }
}

/// Errors from encoding or decoding a namespace identification descriptor list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum NidError {
    /// A descriptor's value runs past the end of the list.
    #[error(
        "namespace identification descriptor at byte {offset} has NIDL {nidl}, \
         which runs past the end of the {len}-byte list"
    )]
    Truncated {
        /// Byte offset of the descriptor.
        offset: usize,
        /// Its NIDL.
        nidl: u8,
        /// Length of the list.
        len: usize,
    },
    /// A known type with the wrong length.
    #[error(
        "namespace identification descriptor at byte {offset}: NIDT {nidt:#x} needs \
         NIDL {expected}, got {nidl}"
    )]
    BadLength {
        /// Byte offset of the descriptor.
        offset: usize,
        /// Its NIDT.
        nidt: u8,
        /// Its NIDL.
        nidl: u8,
        /// The length the type requires.
        expected: u8,
    },
    /// The descriptors do not fit in one Identify page.
    #[error("namespace identification descriptors need {needed} bytes; the page holds 4096")]
    TooLong {
        /// Bytes the descriptors need.
        needed: usize,
    },
}

/// Encodes `ids` as a CNS 03h page: each descriptor is a [`NidHeader`] followed by its value,
/// packed back to back, and the zero-filled remainder terminates the list.
pub fn encode_namespace_descriptors(
    ids: &[NamespaceIdentifier],
) -> Result<[u8; IDENTIFY_DATA_SIZE], NidError> {
    let needed: usize = ids
        .iter()
        .map(|id| size_of::<NidHeader>() + id.value().len())
        .sum();
    if needed > IDENTIFY_DATA_SIZE {
        return Err(NidError::TooLong { needed });
    }
    let mut page = [0u8; IDENTIFY_DATA_SIZE];
    let mut at = 0;
    for id in ids {
        let value = id.value();
        let header = NidHeader {
            nidt: id.nidt(),
            nidl: value.len() as u8,
            _reserved: 0,
        };
        page[at..at + 4].copy_from_slice(header.as_bytes());
        page[at + 4..at + 4 + value.len()].copy_from_slice(value);
        at += 4 + value.len();
    }
    Ok(page)
}

/// Decodes a CNS 03h namespace identification descriptor list from untrusted bytes.
///
/// The list ends at a descriptor with NIDL 0 (the zero fill) or at the end of `page`.
/// Descriptors of unknown types are skipped using their NIDL, as hosts must; known types with a
/// wrong length and descriptors running past the end are errors. Never panics.
pub fn decode_namespace_descriptors(page: &[u8]) -> Result<Vec<NamespaceIdentifier>, NidError> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(rest) = page.get(at..) {
        let Ok((header, body)) = NidHeader::read_from_prefix(rest) else {
            break;
        };
        if header.nidl == 0 {
            break;
        }
        let nidl = usize::from(header.nidl);
        let Some(value) = body.get(..nidl) else {
            return Err(NidError::Truncated {
                offset: at,
                nidl: header.nidl,
                len: page.len(),
            });
        };
        let bad_length = |expected: u8| NidError::BadLength {
            offset: at,
            nidt: header.nidt.0,
            nidl: header.nidl,
            expected,
        };
        let id = match header.nidt {
            NidType::EUI64 => Some(NamespaceIdentifier::Eui64(
                value.try_into().map_err(|_| bad_length(8))?,
            )),
            NidType::NGUID => Some(NamespaceIdentifier::Nguid(
                value.try_into().map_err(|_| bad_length(16))?,
            )),
            NidType::UUID => Some(NamespaceIdentifier::Uuid(
                value.try_into().map_err(|_| bad_length(16))?,
            )),
            NidType::CSI => match value {
                [csi] => Some(NamespaceIdentifier::Csi(*csi)),
                _ => return Err(bad_length(1)),
            },
            _ => None,
        };
        out.extend(id);
        at += size_of::<NidHeader>() + nidl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn identify_controller_offsets() {
        type C = IdentifyController;
        let expected = [
            (offset_of!(C, vid), 0),
            (offset_of!(C, ssvid), 2),
            (offset_of!(C, sn), 4),
            (offset_of!(C, mn), 24),
            (offset_of!(C, fr), 64),
            (offset_of!(C, rab), 72),
            (offset_of!(C, ieee), 73),
            (offset_of!(C, cmic), 76),
            (offset_of!(C, mdts), 77),
            (offset_of!(C, cntlid), 78),
            (offset_of!(C, ver), 80),
            (offset_of!(C, rtd3r), 84),
            (offset_of!(C, rtd3e), 88),
            (offset_of!(C, oaes), 92),
            (offset_of!(C, ctratt), 96),
            (offset_of!(C, rrls), 100),
            (offset_of!(C, cntrltype), 111),
            (offset_of!(C, fguid), 112),
            (offset_of!(C, crdt1), 128),
            (offset_of!(C, crdt2), 130),
            (offset_of!(C, crdt3), 132),
            (offset_of!(C, nvmsr), 253),
            (offset_of!(C, vwci), 254),
            (offset_of!(C, mec), 255),
            (offset_of!(C, oacs), 256),
            (offset_of!(C, acl), 258),
            (offset_of!(C, aerl), 259),
            (offset_of!(C, frmw), 260),
            (offset_of!(C, lpa), 261),
            (offset_of!(C, elpe), 262),
            (offset_of!(C, npss), 263),
            (offset_of!(C, avscc), 264),
            (offset_of!(C, apsta), 265),
            (offset_of!(C, wctemp), 266),
            (offset_of!(C, cctemp), 268),
            (offset_of!(C, mtfa), 270),
            (offset_of!(C, hmpre), 272),
            (offset_of!(C, hmmin), 276),
            (offset_of!(C, tnvmcap), 280),
            (offset_of!(C, unvmcap), 296),
            (offset_of!(C, rpmbs), 312),
            (offset_of!(C, edstt), 316),
            (offset_of!(C, dsto), 318),
            (offset_of!(C, fwug), 319),
            (offset_of!(C, kas), 320),
            (offset_of!(C, hctma), 322),
            (offset_of!(C, mntmt), 324),
            (offset_of!(C, mxtmt), 326),
            (offset_of!(C, sanicap), 328),
            (offset_of!(C, hmminds), 332),
            (offset_of!(C, hmmaxd), 336),
            (offset_of!(C, nsetidmax), 338),
            (offset_of!(C, endgidmax), 340),
            (offset_of!(C, anatt), 342),
            (offset_of!(C, anacap), 343),
            (offset_of!(C, anagrpmax), 344),
            (offset_of!(C, nanagrpid), 348),
            (offset_of!(C, pels), 352),
            (offset_of!(C, domainid), 356),
            (offset_of!(C, megcap), 368),
            (offset_of!(C, sqes), 512),
            (offset_of!(C, cqes), 513),
            (offset_of!(C, maxcmd), 514),
            (offset_of!(C, nn), 516),
            (offset_of!(C, oncs), 520),
            (offset_of!(C, fuses), 522),
            (offset_of!(C, fna), 524),
            (offset_of!(C, vwc), 525),
            (offset_of!(C, awun), 526),
            (offset_of!(C, awupf), 528),
            (offset_of!(C, icsvscc), 530),
            (offset_of!(C, nwpc), 531),
            (offset_of!(C, acwu), 532),
            (offset_of!(C, ocfs), 534),
            (offset_of!(C, sgls), 536),
            (offset_of!(C, mnan), 540),
            (offset_of!(C, maxdna), 544),
            (offset_of!(C, maxcna), 560),
            (offset_of!(C, oaqd), 564),
            (offset_of!(C, rhiri), 568),
            (offset_of!(C, hirt), 569),
            (offset_of!(C, cmmrtd), 570),
            (offset_of!(C, nmmrtd), 572),
            (offset_of!(C, minmrtg), 574),
            (offset_of!(C, maxmrtg), 575),
            (offset_of!(C, trattr), 576),
            (offset_of!(C, mcudmq), 578),
            (offset_of!(C, mnsudmq), 580),
            (offset_of!(C, mcmr), 582),
            (offset_of!(C, nmcmr), 584),
            (offset_of!(C, mcdqpc), 586),
            (offset_of!(C, subnqn), 768),
            (offset_of!(C, ioccsz), 1792),
            (offset_of!(C, iorcsz), 1796),
            (offset_of!(C, icdoff), 1800),
            (offset_of!(C, fcatt), 1802),
            (offset_of!(C, msdbd), 1803),
            (offset_of!(C, ofcs), 1804),
            (offset_of!(C, dctype), 1806),
            (offset_of!(C, psd), 2048),
            (offset_of!(C, vs), 3072),
        ];
        for (i, (actual, want)) in expected.into_iter().enumerate() {
            assert_eq!(actual, want, "entry {i}");
        }
    }

    #[test]
    fn power_state_descriptor_offsets() {
        type P = PowerStateDescriptor;
        assert_eq!(offset_of!(P, mp), 0);
        assert_eq!(offset_of!(P, flags), 3);
        assert_eq!(offset_of!(P, enlat), 4);
        assert_eq!(offset_of!(P, exlat), 8);
        assert_eq!(offset_of!(P, rrt), 12);
        assert_eq!(offset_of!(P, rwl), 15);
        assert_eq!(offset_of!(P, idlp), 16);
        assert_eq!(offset_of!(P, ips), 18);
        assert_eq!(offset_of!(P, actp), 20);
        assert_eq!(offset_of!(P, apw_aps), 22);
    }

    #[test]
    fn identify_controller_bytes() {
        let mut id = IdentifyController::new_zeroed();
        id.cntlid = 0x1234;
        id.ver = Vs::V2_1;
        id.oacs = Oacs::new()
            .with_format(true)
            .with_virtualization_management(true)
            .with_hmlms(true);
        id.trattr = Trattr::new().with_tudcs(true);
        id.mcmr = 1;
        id.sqes = QueueEntrySize::new().with_required(6).with_maximum(6);
        id.cqes = QueueEntrySize::new().with_required(4).with_maximum(4);
        id.nn = 256;
        id.sn = pad_ascii("SN1");
        id.tnvmcap = (1u128 << 40).to_le_bytes();
        let bytes = id.as_bytes();
        assert_eq!(&bytes[78..80], &[0x34, 0x12]);
        assert_eq!(&bytes[80..84], &[0x00, 0x01, 0x02, 0x00]);
        assert_eq!(
            u16::from_le_bytes([bytes[256], bytes[257]]),
            1 << 1 | 1 << 7 | 1 << 11
        );
        assert_eq!(bytes[576], 0b10);
        assert_eq!(&bytes[582..584], &[1, 0]);
        assert_eq!(bytes[512], 0x66);
        assert_eq!(bytes[513], 0x44);
        assert_eq!(&bytes[516..520], &[0, 1, 0, 0]);
        assert_eq!(&bytes[4..24], b"SN1                 ");
        assert_eq!(id.tnvmcap(), 1 << 40);
        let back = IdentifyController::read_from_bytes(bytes).unwrap();
        assert!(back.oacs.hmlms());
        assert!(!back.oacs.doorbell_buffer_config());
        assert_eq!(back, id);
    }

    #[test]
    fn oacs_and_oaes_bits() {
        let all = Oacs::from(0x0FFF);
        assert!(all.security() && all.format() && all.firmware() && all.namespace_management());
        assert!(all.self_test() && all.directives() && all.nvme_mi());
        assert!(all.virtualization_management() && all.doorbell_buffer_config());
        assert!(all.get_lba_status() && all.lockdown() && all.hmlms());
        assert_eq!(
            u16::from(Oacs::new().with_doorbell_buffer_config(true)),
            1 << 8
        );
        let oaes = Oaes::new()
            .with_namespace_attribute(true)
            .with_firmware_activation(true)
            .with_ana_change(true)
            .with_discovery_log_change(true);
        assert_eq!(u32::from(oaes), 1 << 8 | 1 << 9 | 1 << 11 | 1 << 31);
        assert_eq!(
            u16::from(
                Oncs::new()
                    .with_dataset_management(true)
                    .with_write_zeroes(true)
            ),
            0b1100
        );
        assert_eq!(
            u8::from(Vwc::new().with_present(true).with_flush_broadcast(3)),
            0b111
        );
        assert_eq!(u8::from(Cmic::new().with_sriov(true)), 0b100);
    }

    #[test]
    fn mdts_bytes() {
        let mut id = IdentifyController::new_zeroed();
        assert_eq!(id.max_transfer_bytes(4096), None);
        id.mdts = 5;
        assert_eq!(id.max_transfer_bytes(4096), Some(128 * 1024));
        id.mdts = 255;
        assert_eq!(id.max_transfer_bytes(4096), None);
    }

    #[test]
    fn identify_namespace_offsets() {
        type N = IdentifyNamespace;
        let expected = [
            (offset_of!(N, nsze), 0),
            (offset_of!(N, ncap), 8),
            (offset_of!(N, nuse), 16),
            (offset_of!(N, nsfeat), 24),
            (offset_of!(N, nlbaf), 25),
            (offset_of!(N, flbas), 26),
            (offset_of!(N, mc), 27),
            (offset_of!(N, dpc), 28),
            (offset_of!(N, dps), 29),
            (offset_of!(N, nmic), 30),
            (offset_of!(N, rescap), 31),
            (offset_of!(N, fpi), 32),
            (offset_of!(N, dlfeat), 33),
            (offset_of!(N, nawun), 34),
            (offset_of!(N, nawupf), 36),
            (offset_of!(N, nacwu), 38),
            (offset_of!(N, nabsn), 40),
            (offset_of!(N, nabo), 42),
            (offset_of!(N, nabspf), 44),
            (offset_of!(N, noiob), 46),
            (offset_of!(N, nvmcap), 48),
            (offset_of!(N, npwg), 64),
            (offset_of!(N, npwa), 66),
            (offset_of!(N, npdg), 68),
            (offset_of!(N, npda), 70),
            (offset_of!(N, nows), 72),
            (offset_of!(N, mssrl), 74),
            (offset_of!(N, mcl), 76),
            (offset_of!(N, msrc), 80),
            (offset_of!(N, anagrpid), 92),
            (offset_of!(N, nsattr), 99),
            (offset_of!(N, nvmsetid), 100),
            (offset_of!(N, endgid), 102),
            (offset_of!(N, nguid), 104),
            (offset_of!(N, eui64), 120),
            (offset_of!(N, lbaf), 128),
            (offset_of!(N, vs), 384),
        ];
        for (i, (actual, want)) in expected.into_iter().enumerate() {
            assert_eq!(actual, want, "entry {i}");
        }
        assert_eq!(offset_of!(LbaFormat, ms), 0);
        assert_eq!(offset_of!(LbaFormat, lbads), 2);
        assert_eq!(offset_of!(LbaFormat, rp), 3);
    }

    #[test]
    fn active_lba_size() {
        let mut ns = IdentifyNamespace::new_zeroed();
        ns.nlbaf = 1;
        ns.lbaf[0] = LbaFormat {
            ms: 0,
            lbads: 9,
            rp: 0,
        };
        ns.lbaf[1] = LbaFormat {
            ms: 8,
            lbads: 12,
            rp: 1,
        };
        assert_eq!(ns.lba_size(), Some(512));
        ns.flbas = 0x11;
        assert_eq!(ns.lba_format_index(), 1);
        assert!(ns.extended_metadata());
        assert_eq!(ns.lba_size(), Some(4096));
        assert_eq!(ns.active_lba_format().unwrap().ms, 8);
        // Index 2 is beyond NLBAF.
        ns.flbas = 0x02;
        assert_eq!(ns.active_lba_format(), None);
        // Upper index bits 6:5 give bits 5:4 of the index: 0x60 | 0xF = index 63.
        ns.flbas = 0x6F;
        assert_eq!(ns.lba_format_index(), 63);
        ns.nlbaf = 63;
        ns.lbaf[63] = LbaFormat {
            ms: 0,
            lbads: 64,
            rp: 0,
        };
        assert_eq!(ns.lba_size(), None, "LBADS 64 must not overflow");
        ns.lbaf[63].lbads = 8;
        assert_eq!(ns.lba_size(), None, "LBADS below 9 is invalid");
    }

    #[test]
    fn nvm_specific_offsets() {
        assert_eq!(offset_of!(IdentifyNamespaceNvm, lbstm), 0);
        assert_eq!(offset_of!(IdentifyNamespaceNvm, pic), 8);
        assert_eq!(offset_of!(IdentifyNamespaceNvm, elbaf), 12);
        assert_eq!(offset_of!(IdentifyNamespaceNvm, npdgl), 268);
        assert_eq!(offset_of!(IdentifyNamespaceNvm, npdal), 284);
        assert_eq!(offset_of!(IdentifyControllerNvm, vsl), 0);
        assert_eq!(offset_of!(IdentifyControllerNvm, wzsl), 1);
        assert_eq!(offset_of!(IdentifyControllerNvm, wusl), 2);
        assert_eq!(offset_of!(IdentifyControllerNvm, dmrl), 3);
        assert_eq!(offset_of!(IdentifyControllerNvm, dmrsl), 4);
        assert_eq!(offset_of!(IdentifyControllerNvm, dmsl), 8);
        assert_eq!(offset_of!(IdentifyControllerNvm, aocs), 18);
        assert_eq!(offset_of!(IdentifyControllerNvm, lbamqf), 24);
        assert_eq!(offset_of!(IdentifyNamespaceIndependent, anagrpid), 4);
        assert_eq!(offset_of!(IdentifyNamespaceIndependent, nsattr), 8);
        assert_eq!(offset_of!(IdentifyNamespaceIndependent, nvmsetid), 10);
        assert_eq!(offset_of!(IdentifyNamespaceIndependent, endgid), 12);
        assert_eq!(offset_of!(IdentifyNamespaceIndependent, nstat), 14);
        let elbaf = ExtendedLbaFormat::from(0x3 << 7 | 0x5 << 9 | 16);
        assert_eq!((elbaf.sts(), elbaf.pif(), elbaf.qpif()), (16, 3, 5));
    }

    #[test]
    fn namespace_list() {
        let list = NamespaceList::from_ids([1, 2, 5]);
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![1, 2, 5]);
        assert_eq!(&list.as_bytes()[8..12], &[5, 0, 0, 0]);
        let full = NamespaceList::from_ids(1..=2000);
        assert_eq!(full.iter().count(), 1024);
    }

    #[test]
    fn io_command_set_list() {
        let mut list = IoCommandSetList::new_zeroed();
        list.vectors[0] = IoCommandSetVector::new().with_nvm(true);
        list.vectors[1] = IoCommandSetVector::new().with_nvm(true).with_zoned(true);
        assert_eq!(
            &list.as_bytes()[0..16],
            &[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn primary_controller_capabilities() {
        type P = PrimaryControllerCapabilities;
        for (offset, want) in [
            (offset_of!(P, cntlid), 0),
            (offset_of!(P, portid), 2),
            (offset_of!(P, crt), 4),
            (offset_of!(P, vqfrt), 32),
            (offset_of!(P, vqrfa), 36),
            (offset_of!(P, vqrfap), 40),
            (offset_of!(P, vqprt), 42),
            (offset_of!(P, vqfrsm), 44),
            (offset_of!(P, vqgran), 46),
            (offset_of!(P, vifrt), 64),
            (offset_of!(P, virfa), 68),
            (offset_of!(P, virfap), 72),
            (offset_of!(P, viprt), 74),
            (offset_of!(P, vifrsm), 76),
            (offset_of!(P, vigran), 78),
        ] {
            assert_eq!(offset, want);
        }
        let mut caps = P::new_zeroed();
        caps.cntlid = 1;
        caps.crt = Crt::new().with_vq(true).with_vi(true);
        caps.vqfrt = 0x0102_0304;
        caps.vigran = 1;
        let bytes = caps.as_bytes();
        assert_eq!(&bytes[0..5], &[1, 0, 0, 0, 3]);
        assert_eq!(&bytes[32..36], &[4, 3, 2, 1]);
        assert_eq!(&bytes[78..80], &[1, 0]);
        assert_eq!(P::read_from_bytes(bytes).unwrap(), caps);
    }

    #[test]
    fn secondary_controller_list() {
        assert_eq!(offset_of!(SecondaryControllerEntry, scid), 0);
        assert_eq!(offset_of!(SecondaryControllerEntry, pcid), 2);
        assert_eq!(offset_of!(SecondaryControllerEntry, scs), 4);
        assert_eq!(offset_of!(SecondaryControllerEntry, vfn), 8);
        assert_eq!(offset_of!(SecondaryControllerEntry, nvq), 10);
        assert_eq!(offset_of!(SecondaryControllerEntry, nvi), 12);
        assert_eq!(offset_of!(SecondaryControllerList, numid), 0);
        assert_eq!(offset_of!(SecondaryControllerList, entries), 32);
        let entry = |scid, vfn| SecondaryControllerEntry {
            scid,
            pcid: 1,
            scs: 1,
            vfn,
            nvq: 2,
            nvi: 2,
            ..Default::default()
        };
        let list = SecondaryControllerList::from_entries(&[entry(2, 1), entry(3, 2)]);
        let bytes = list.as_bytes();
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[32..34], &[2, 0]);
        assert_eq!(&bytes[64 + 8..64 + 10], &[2, 0]);
        assert_eq!(list.find_vfn(2).unwrap().scid, 3);
        assert!(list.find_vfn(2).unwrap().online());
        assert_eq!(list.find_vfn(3), None);
        let mut bad = list;
        bad.numid = 255;
        assert_eq!(bad.valid_entries().len(), 127);
        let many = vec![entry(9, 9); 200];
        assert_eq!(SecondaryControllerList::from_entries(&many).numid, 127);
    }

    #[test]
    fn secondary_controller_list_fuzz() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                if let Ok((list, _)) = SecondaryControllerList::read_from_prefix(bytes) {
                    let _ = list.find_vfn(1);
                    assert!(list.valid_entries().len() <= 127);
                }
            });
    }

    #[test]
    fn namespace_descriptors_round_trip() {
        let ids = [
            NamespaceIdentifier::Eui64([1, 2, 3, 4, 5, 6, 7, 8]),
            NamespaceIdentifier::Nguid([0xAA; 16]),
            NamespaceIdentifier::Uuid([0x55; 16]),
            NamespaceIdentifier::Csi(CSI_NVM),
        ];
        let page = encode_namespace_descriptors(&ids).unwrap();
        assert_eq!(&page[0..4], &[1, 8, 0, 0]);
        assert_eq!(&page[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&page[12..14], &[2, 16]);
        assert_eq!(&page[32..34], &[3, 16]);
        assert_eq!(&page[52..57], &[4, 1, 0, 0, 0]);
        assert!(page[57..].iter().all(|&b| b == 0));
        assert_eq!(decode_namespace_descriptors(&page).unwrap(), ids);
    }

    #[test]
    fn namespace_descriptors_errors() {
        let too_many = vec![NamespaceIdentifier::Uuid([1; 16]); 205];
        assert_eq!(
            encode_namespace_descriptors(&too_many),
            Err(NidError::TooLong { needed: 205 * 20 })
        );
        // EUI-64 with NIDL 16.
        let mut page = [0u8; 64];
        page[0] = 1;
        page[1] = 16;
        assert_eq!(
            decode_namespace_descriptors(&page),
            Err(NidError::BadLength {
                offset: 0,
                nidt: 1,
                nidl: 16,
                expected: 8
            })
        );
        // A descriptor running off the end.
        let page = [3u8, 16, 0, 0, 1, 2];
        assert_eq!(
            decode_namespace_descriptors(&page),
            Err(NidError::Truncated {
                offset: 0,
                nidl: 16,
                len: 6
            })
        );
        // Unknown types are skipped; a short tail (less than a header) ends the list.
        let page = [0x7Fu8, 2, 0, 0, 9, 9, 4, 1, 0, 0, 2, 0xFF];
        assert_eq!(
            decode_namespace_descriptors(&page),
            Ok(vec![NamespaceIdentifier::Csi(2)])
        );
        assert_eq!(decode_namespace_descriptors(&[]), Ok(vec![]));
    }

    #[test]
    fn namespace_descriptors_fuzz() {
        bolero::check!()
            .with_iterations(5000)
            .for_each(|bytes: &[u8]| {
                if let Ok(ids) = decode_namespace_descriptors(bytes) {
                    // Anything that decodes re-encodes (it came from at most `bytes.len()`
                    // bytes) and decodes to the same identifiers.
                    if let Ok(page) = encode_namespace_descriptors(&ids) {
                        assert_eq!(decode_namespace_descriptors(&page).as_ref(), Ok(&ids));
                    }
                }
            });
    }

    #[test]
    fn cns_values() {
        for (cns, v) in [
            (Cns::NAMESPACE, 0x00),
            (Cns::CONTROLLER, 0x01),
            (Cns::ACTIVE_NAMESPACE_LIST, 0x02),
            (Cns::NAMESPACE_ID_DESCRIPTORS, 0x03),
            (Cns::CSI_NAMESPACE, 0x05),
            (Cns::CSI_CONTROLLER, 0x06),
            (Cns::CSI_ACTIVE_NAMESPACE_LIST, 0x07),
            (Cns::CS_INDEPENDENT_NAMESPACE, 0x08),
            (Cns::SECONDARY_CONTROLLER_LIST, 0x15),
            (Cns::IO_COMMAND_SET, 0x1C),
            (Cns::SUPPORTED_CONTROLLER_STATE_FORMATS, 0x20),
        ] {
            assert_eq!(cns.0, v, "{cns:?}");
        }
    }
}
