//! Every VFIO uAPI value this crate defines, checked against the kernel's `linux/vfio.h` as
//! rust-vmm's `vfio-bindings` carries it: PCI region and IRQ indices, the flag words of region
//! info, IRQ info, SET_IRQS, DMA map/unmap, device info and DEVICE_FEATURE, the feature
//! indices, and the layouts of the structures vfio-user borrows from the kernel.
//!
//! Where vfio-user changes a structure (DMA-logging ranges and bitmaps travel inline instead of
//! behind a pointer; device info has no capability chain) the shared prefix is compared field by
//! field and the difference is named. The device states and migration flags are
//! `vfio-migration`'s and are checked there.

use core::mem::offset_of;

use vfio_bindings::bindings::vfio as uapi;

use crate::device::DeviceInfo;
use crate::device::DeviceInfoFlags;
use crate::dma::DmaMap;
use crate::dma::DmaMapFlags;
use crate::dma::DmaUnmap;
use crate::dma::DmaUnmapFlags;
use crate::feature::DmaLoggingControl;
use crate::feature::DmaLoggingRange;
use crate::feature::DmaLoggingReportRequest;
use crate::feature::Feature;
use crate::feature::FeatureFlags;
use crate::feature::FeatureMigration;
use crate::feature::MigDataSize;
use crate::feature::MigDeviceState;
use crate::feature::VfioDeviceFeature;
use crate::irq;
use crate::irq::IrqInfo;
use crate::irq::IrqInfoFlags;
use crate::irq::VfioIrqSet;
use crate::pci;
use crate::region;
use crate::region::CapHeader;
use crate::region::RegionInfoFlags;
use crate::region::RegionTypeCap;
use crate::region::SparseMmapArea;
use crate::region::SparseMmapCap;
use crate::region::VfioRegionInfo;

#[test]
fn pci_region_and_irq_indices() {
    let pairs = [
        (pci::BAR0_REGION_INDEX, uapi::VFIO_PCI_BAR0_REGION_INDEX),
        (pci::BAR1_REGION_INDEX, uapi::VFIO_PCI_BAR1_REGION_INDEX),
        (pci::BAR2_REGION_INDEX, uapi::VFIO_PCI_BAR2_REGION_INDEX),
        (pci::BAR3_REGION_INDEX, uapi::VFIO_PCI_BAR3_REGION_INDEX),
        (pci::BAR4_REGION_INDEX, uapi::VFIO_PCI_BAR4_REGION_INDEX),
        (pci::BAR5_REGION_INDEX, uapi::VFIO_PCI_BAR5_REGION_INDEX),
        (pci::ROM_REGION_INDEX, uapi::VFIO_PCI_ROM_REGION_INDEX),
        (pci::CONFIG_REGION_INDEX, uapi::VFIO_PCI_CONFIG_REGION_INDEX),
        (pci::VGA_REGION_INDEX, uapi::VFIO_PCI_VGA_REGION_INDEX),
        (pci::NUM_REGIONS, uapi::VFIO_PCI_NUM_REGIONS),
        (pci::INTX_IRQ_INDEX, uapi::VFIO_PCI_INTX_IRQ_INDEX),
        (pci::MSI_IRQ_INDEX, uapi::VFIO_PCI_MSI_IRQ_INDEX),
        (pci::MSIX_IRQ_INDEX, uapi::VFIO_PCI_MSIX_IRQ_INDEX),
        (pci::ERR_IRQ_INDEX, uapi::VFIO_PCI_ERR_IRQ_INDEX),
        (pci::REQ_IRQ_INDEX, uapi::VFIO_PCI_REQ_IRQ_INDEX),
        (pci::NUM_IRQS, uapi::VFIO_PCI_NUM_IRQS),
    ];
    for (ours, kernel) in pairs {
        assert_eq!(ours, kernel);
    }
}

#[test]
fn region_info_flags_and_capability_ids() {
    assert_eq!(
        RegionInfoFlags::READ.bits(),
        uapi::VFIO_REGION_INFO_FLAG_READ
    );
    assert_eq!(
        RegionInfoFlags::WRITE.bits(),
        uapi::VFIO_REGION_INFO_FLAG_WRITE
    );
    assert_eq!(
        RegionInfoFlags::MMAP.bits(),
        uapi::VFIO_REGION_INFO_FLAG_MMAP
    );
    assert_eq!(
        RegionInfoFlags::CAPS.bits(),
        uapi::VFIO_REGION_INFO_FLAG_CAPS
    );
    assert_eq!(
        u32::from(region::CAP_SPARSE_MMAP),
        uapi::VFIO_REGION_INFO_CAP_SPARSE_MMAP
    );
    assert_eq!(u32::from(region::CAP_TYPE), uapi::VFIO_REGION_INFO_CAP_TYPE);
    assert_eq!(
        u32::from(region::CAP_MSIX_MAPPABLE),
        uapi::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
    );
}

#[test]
fn irq_info_and_set_irqs_flags() {
    assert_eq!(IrqInfoFlags::EVENTFD.bits(), uapi::VFIO_IRQ_INFO_EVENTFD);
    assert_eq!(IrqInfoFlags::MASKABLE.bits(), uapi::VFIO_IRQ_INFO_MASKABLE);
    assert_eq!(
        IrqInfoFlags::AUTOMASKED.bits(),
        uapi::VFIO_IRQ_INFO_AUTOMASKED
    );
    assert_eq!(IrqInfoFlags::NORESIZE.bits(), uapi::VFIO_IRQ_INFO_NORESIZE);
    let set = [
        (irq::IRQ_SET_DATA_NONE, uapi::VFIO_IRQ_SET_DATA_NONE),
        (irq::IRQ_SET_DATA_BOOL, uapi::VFIO_IRQ_SET_DATA_BOOL),
        (irq::IRQ_SET_DATA_EVENTFD, uapi::VFIO_IRQ_SET_DATA_EVENTFD),
        (irq::IRQ_SET_ACTION_MASK, uapi::VFIO_IRQ_SET_ACTION_MASK),
        (irq::IRQ_SET_ACTION_UNMASK, uapi::VFIO_IRQ_SET_ACTION_UNMASK),
        (
            irq::IRQ_SET_ACTION_TRIGGER,
            uapi::VFIO_IRQ_SET_ACTION_TRIGGER,
        ),
    ];
    for (ours, kernel) in set {
        assert_eq!(ours, kernel);
    }
}

#[test]
fn dma_map_unmap_and_device_info_flags() {
    // READ and WRITE are the kernel's type1 flags; MMAP and FILE_IO are libvfio-user's own.
    assert_eq!(DmaMapFlags::READ.bits(), uapi::VFIO_DMA_MAP_FLAG_READ);
    assert_eq!(DmaMapFlags::WRITE.bits(), uapi::VFIO_DMA_MAP_FLAG_WRITE);
    assert_eq!(
        DmaUnmapFlags::GET_DIRTY_BITMAP.bits(),
        uapi::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
    );
    assert_eq!(DmaUnmapFlags::ALL.bits(), uapi::VFIO_DMA_UNMAP_FLAG_ALL);
    assert_eq!(DeviceInfoFlags::RESET.bits(), uapi::VFIO_DEVICE_FLAGS_RESET);
    assert_eq!(DeviceInfoFlags::PCI.bits(), uapi::VFIO_DEVICE_FLAGS_PCI);
}

#[test]
fn device_feature_indices_and_method_bits() {
    let features = [
        (Feature::MIGRATION, uapi::VFIO_DEVICE_FEATURE_MIGRATION),
        (
            Feature::MIG_DEVICE_STATE,
            uapi::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
        ),
        (
            Feature::DMA_LOGGING_START,
            uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
        ),
        (
            Feature::DMA_LOGGING_STOP,
            uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
        ),
        (
            Feature::DMA_LOGGING_REPORT,
            uapi::VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
        ),
        (
            Feature::MIG_DATA_SIZE,
            uapi::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
        ),
    ];
    for (ours, kernel) in features {
        assert_eq!(u32::from(ours.0), kernel, "{ours:?}");
    }
    let flags = |f: FeatureFlags| f.into_bits();
    assert_eq!(
        flags(FeatureFlags::new().with_index(u16::MAX)),
        uapi::VFIO_DEVICE_FEATURE_MASK
    );
    assert_eq!(
        flags(FeatureFlags::new().with_get(true)),
        uapi::VFIO_DEVICE_FEATURE_GET
    );
    assert_eq!(
        flags(FeatureFlags::new().with_set(true)),
        uapi::VFIO_DEVICE_FEATURE_SET
    );
    assert_eq!(
        flags(FeatureFlags::new().with_probe(true)),
        uapi::VFIO_DEVICE_FEATURE_PROBE
    );
}

#[test]
fn structures_borrowed_from_the_kernel_have_its_layout() {
    assert_eq!(
        size_of::<VfioRegionInfo>(),
        size_of::<uapi::vfio_region_info>()
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, cap_offset),
        offset_of!(uapi::vfio_region_info, cap_offset)
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, offset),
        offset_of!(uapi::vfio_region_info, offset)
    );
    assert_eq!(
        size_of::<CapHeader>(),
        size_of::<uapi::vfio_info_cap_header>()
    );
    assert_eq!(
        offset_of!(CapHeader, next),
        offset_of!(uapi::vfio_info_cap_header, next)
    );
    assert_eq!(
        size_of::<SparseMmapCap>(),
        size_of::<uapi::vfio_region_info_cap_sparse_mmap>()
    );
    assert_eq!(
        size_of::<SparseMmapArea>(),
        size_of::<uapi::vfio_region_sparse_mmap_area>()
    );
    assert_eq!(
        size_of::<RegionTypeCap>(),
        size_of::<uapi::vfio_region_info_cap_type>()
    );
    assert_eq!(
        offset_of!(RegionTypeCap, subtype),
        offset_of!(uapi::vfio_region_info_cap_type, subtype)
    );
    assert_eq!(size_of::<IrqInfo>(), size_of::<uapi::vfio_irq_info>());
    assert_eq!(size_of::<VfioIrqSet>(), size_of::<uapi::vfio_irq_set>());
    assert_eq!(
        offset_of!(VfioIrqSet, count),
        offset_of!(uapi::vfio_irq_set, count)
    );
    assert_eq!(
        size_of::<VfioDeviceFeature>(),
        size_of::<uapi::vfio_device_feature>()
    );
    assert_eq!(
        size_of::<FeatureMigration>(),
        size_of::<uapi::vfio_device_feature_migration>()
    );
    assert_eq!(
        size_of::<MigDeviceState>(),
        size_of::<uapi::vfio_device_feature_mig_state>()
    );
    assert_eq!(
        offset_of!(MigDeviceState, data_fd),
        offset_of!(uapi::vfio_device_feature_mig_state, data_fd)
    );
    assert_eq!(
        size_of::<MigDataSize>(),
        size_of::<uapi::vfio_device_feature_mig_data_size>()
    );
    assert_eq!(
        size_of::<DmaLoggingRange>(),
        size_of::<uapi::vfio_device_feature_dma_logging_range>()
    );
    assert_eq!(
        size_of::<DmaUnmap>(),
        size_of::<uapi::vfio_iommu_type1_dma_unmap>()
    );
    // vfio-user's DMA_MAP has the kernel's layout, with `vaddr` replaced by the fd offset.
    assert_eq!(
        size_of::<DmaMap>(),
        size_of::<uapi::vfio_iommu_type1_dma_map>()
    );
    assert_eq!(
        offset_of!(DmaMap, offset),
        offset_of!(uapi::vfio_iommu_type1_dma_map, vaddr)
    );
    assert_eq!(
        offset_of!(DmaMap, address),
        offset_of!(uapi::vfio_iommu_type1_dma_map, iova)
    );
}

#[test]
fn structures_vfio_user_changes_share_the_kernels_prefix() {
    // Device info without the capability chain: the kernel's first 16 bytes.
    assert_eq!(
        size_of::<DeviceInfo>(),
        offset_of!(uapi::vfio_device_info, cap_offset)
    );
    // DMA logging START: the ranges follow inline where the kernel has a pointer.
    assert_eq!(
        size_of::<DmaLoggingControl>(),
        offset_of!(uapi::vfio_device_feature_dma_logging_control, ranges)
    );
    assert_eq!(
        offset_of!(DmaLoggingControl, num_ranges),
        offset_of!(uapi::vfio_device_feature_dma_logging_control, num_ranges)
    );
    // DMA logging REPORT: the bitmap follows inline where the kernel has a pointer.
    assert_eq!(
        size_of::<DmaLoggingReportRequest>(),
        offset_of!(uapi::vfio_device_feature_dma_logging_report, bitmap)
    );
    assert_eq!(
        offset_of!(DmaLoggingReportRequest, page_size),
        offset_of!(uapi::vfio_device_feature_dma_logging_report, page_size)
    );
}
