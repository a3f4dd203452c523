//! Where NVMe meets VFIO: a secondary controller of an [`nvme_device`] subsystem presented as a
//! PCI function over vfio-user ([`vf`], [`pci`]), and (in the next milestone) the VFIO migration
//! driver whose arcs are carried out by TP4159 commands on the primary controller.

pub mod pci;
pub mod vf;
