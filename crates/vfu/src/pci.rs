//! The region and IRQ indices of a VFIO PCI device (`VFIO_PCI_*_REGION_INDEX`,
//! `VFIO_PCI_*_IRQ_INDEX` in `linux/vfio.h`). vfio-user devices are PCI devices and use the same
//! numbering in `DEVICE_GET_REGION_INFO`, `REGION_READ/WRITE`, `DEVICE_GET_IRQ_INFO` and
//! `DEVICE_SET_IRQS`; a device may add device-specific regions after [`NUM_REGIONS`].

/// BAR 0.
pub const BAR0_REGION_INDEX: u32 = 0;
/// BAR 1.
pub const BAR1_REGION_INDEX: u32 = 1;
/// BAR 2.
pub const BAR2_REGION_INDEX: u32 = 2;
/// BAR 3.
pub const BAR3_REGION_INDEX: u32 = 3;
/// BAR 4.
pub const BAR4_REGION_INDEX: u32 = 4;
/// BAR 5.
pub const BAR5_REGION_INDEX: u32 = 5;
/// The expansion ROM.
pub const ROM_REGION_INDEX: u32 = 6;
/// PCI configuration space.
pub const CONFIG_REGION_INDEX: u32 = 7;
/// Legacy VGA ranges.
pub const VGA_REGION_INDEX: u32 = 8;
/// Number of standard PCI regions (BARs 0–5, ROM, config, VGA).
pub const NUM_REGIONS: u32 = 9;

/// Legacy INTx.
pub const INTX_IRQ_INDEX: u32 = 0;
/// MSI.
pub const MSI_IRQ_INDEX: u32 = 1;
/// MSI-X.
pub const MSIX_IRQ_INDEX: u32 = 2;
/// Error notification (AER).
pub const ERR_IRQ_INDEX: u32 = 3;
/// Device request notification.
pub const REQ_IRQ_INDEX: u32 = 4;
/// Number of PCI IRQ indices (INTx, MSI, MSI-X, ERR, REQ).
pub const NUM_IRQS: u32 = 5;
