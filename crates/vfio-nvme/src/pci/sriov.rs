//! The PF's SR-IOV extended capability (PCI Express SR-IOV), at [`SRIOV_CAP`] in extended
//! configuration space, where Linux's `sriov_init()` and QEMU's model have it.
//!
//! It describes the served VFs: TotalVFs = InitialVFs = how many VFs the subsystem has, First
//! VF Offset 1 and VF Stride 1 (so VF n's routing ID is the PF's + n, as VFN n is in the
//! Secondary Controller List), VF Device ID that of the VFs, 4 KiB pages, and VF BAR0 a 64-bit
//! memory BAR the size of each VF's BAR0.
//!
//! What the PF's host may change, and what it does:
//!
//! * **NumVFs** is writable (0 after reset), as the specification has it and Linux needs: its
//!   enumeration writes every value from TotalVFs down to compute the VFs' bus numbers. It
//!   changes nothing else.
//! * **VF Enable** and **VF Memory Space Enable** are hard-wired to 0. The VFs are not behind
//!   this function: each is a vfio-user device of its own, on its own socket, always present,
//!   usually in another guest. Whether a VF's *controller* works is SR-IOV's NVMe side —
//!   Virtualization Management's Secondary Controller Online and Offline — not VF Enable.
//!   Linux writing VF Enable (`echo N > sriov_numvfs`) therefore enables nothing; its attempt
//!   to add the VFs then fails on their missing configuration spaces.
//! * System Page Size, the VF BARs and ARI Capable Hierarchy are plain registers.
//!
//! QEMU's vfio-pci (and so `vfio-user-pci`) hides an SR-IOV capability from its guest ("read-only
//! VF BARs confuse OVMF"), and a `pc` machine has no extended configuration space at all: the
//! capability is for vfio-user clients that read configuration space themselves.

use zerocopy::FromZeros;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use super::BAR0_SIZE;

/// Offset of the SR-IOV capability: the first extended capability.
pub const SRIOV_CAP: usize = 0x100;
/// PCI Express extended capability ID of SR-IOV.
pub const SRIOV_CAP_ID: u16 = 0x0010;
/// SR-IOV Control: VF Enable.
pub const SRIOV_CTRL_VFE: u16 = 1 << 0;
/// SR-IOV Control: VF Memory Space Enable.
pub const SRIOV_CTRL_MSE: u16 = 1 << 3;
/// SR-IOV Control: ARI Capable Hierarchy.
pub const SRIOV_CTRL_ARI: u16 = 1 << 4;
/// Supported Page Sizes bit 0: 4 KiB.
const PAGE_4K: u32 = 1;

/// The SR-IOV extended capability's registers (64 bytes; offsets as in Linux's `pci_regs.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromZeros, Immutable, KnownLayout)]
pub struct SriovRegisters {
    /// Extended capability header: ID, version, next capability offset.
    pub header: u32,
    /// SR-IOV Capabilities (VF Migration Capable, ARI Capable Hierarchy Preserved).
    pub capabilities: u32,
    /// SR-IOV Control.
    pub control: u16,
    /// SR-IOV Status.
    pub status: u16,
    /// InitialVFs.
    pub initial_vfs: u16,
    /// TotalVFs.
    pub total_vfs: u16,
    /// NumVFs.
    pub num_vfs: u16,
    /// Function Dependency Link.
    pub function_link: u8,
    _reserved13: u8,
    /// First VF Offset (routing ID of VF 1 less the PF's).
    pub first_vf_offset: u16,
    /// VF Stride.
    pub vf_stride: u16,
    _reserved18: u16,
    /// VF Device ID.
    pub vf_device_id: u16,
    /// Supported Page Sizes (bit n: 2^(n+12) bytes).
    pub supported_page_sizes: u32,
    /// System Page Size.
    pub system_page_size: u32,
    /// VF BAR0–BAR5.
    pub vf_bars: [u32; 6],
    /// VF Migration State Array Offset.
    pub vf_migration_state: u32,
}

const _: () = assert!(size_of::<SriovRegisters>() == 0x40);

/// The SR-IOV capability of a PF whose subsystem has `total_vfs` VFs with Device ID
/// `vf_device_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SriovCapability {
    /// How many VFs the subsystem has.
    pub total_vfs: u16,
    /// The VFs' PCI Device ID.
    pub vf_device_id: u16,
}

impl SriovCapability {
    /// The registers after reset.
    pub fn registers(&self) -> SriovRegisters {
        let mut r = SriovRegisters::new_zeroed();
        // Version 1, last capability.
        r.header = u32::from(SRIOV_CAP_ID) | 1 << 16;
        r.initial_vfs = self.total_vfs;
        r.total_vfs = self.total_vfs;
        r.first_vf_offset = 1;
        r.vf_stride = 1;
        r.vf_device_id = self.vf_device_id;
        r.supported_page_sizes = PAGE_4K;
        r.system_page_size = PAGE_4K;
        // VF BAR0: 64-bit non-prefetchable memory, BAR0_SIZE per VF.
        r.vf_bars[0] = 0x4;
        r
    }

    /// Which bits the host may change (see the module documentation).
    pub fn writable(&self) -> SriovRegisters {
        let mut w = SriovRegisters::new_zeroed();
        w.control = SRIOV_CTRL_ARI;
        w.num_vfs = u16::MAX;
        w.system_page_size = u32::MAX;
        w.vf_bars[0] = !(BAR0_SIZE as u32 - 1) & !0xF;
        w.vf_bars[1] = u32::MAX;
        w
    }
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn register_offsets_are_the_kernels() {
        // include/uapi/linux/pci_regs.h: PCI_SRIOV_* (pf-interop.md §b.3).
        type R = SriovRegisters;
        for (offset, want) in [
            (offset_of!(R, capabilities), 0x04),
            (offset_of!(R, control), 0x08),
            (offset_of!(R, status), 0x0A),
            (offset_of!(R, initial_vfs), 0x0C),
            (offset_of!(R, total_vfs), 0x0E),
            (offset_of!(R, num_vfs), 0x10),
            (offset_of!(R, function_link), 0x12),
            (offset_of!(R, first_vf_offset), 0x14),
            (offset_of!(R, vf_stride), 0x16),
            (offset_of!(R, vf_device_id), 0x1A),
            (offset_of!(R, supported_page_sizes), 0x1C),
            (offset_of!(R, system_page_size), 0x20),
            (offset_of!(R, vf_bars), 0x24),
            (offset_of!(R, vf_migration_state), 0x3C),
        ] {
            assert_eq!(offset, want);
        }
    }

    #[test]
    fn describes_the_served_vfs() {
        let cap = SriovCapability {
            total_vfs: 2,
            vf_device_id: 0x4C4D,
        };
        let bytes = cap.registers().as_bytes().to_vec();
        assert_eq!(&bytes[0..4], &[0x10, 0x00, 0x01, 0x00]);
        assert_eq!(&bytes[0x0C..0x12], &[2, 0, 2, 0, 0, 0]);
        assert_eq!(&bytes[0x14..0x18], &[1, 0, 1, 0]);
        assert_eq!(&bytes[0x1A..0x1C], &[0x4D, 0x4C]);
        let writable = cap.writable();
        assert_eq!(writable.control & (SRIOV_CTRL_VFE | SRIOV_CTRL_MSE), 0);
        assert_eq!(writable.num_vfs, u16::MAX);
        assert_eq!(writable.total_vfs, 0);
    }
}
