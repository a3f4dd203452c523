//! Where NVMe meets VFIO: a secondary controller of an [`nvme_device`] subsystem presented as a
//! PCI function over vfio-user ([`vf`], [`pci`]), and the VFIO migration driver whose arcs are
//! carried out by TP4159 commands on the primary controller ([`migration`]), with the migration
//! stream it produces and consumes ([`stream`]). [`served`] wires a whole served subsystem.

pub mod migration;
pub mod pci;
pub mod served;
pub mod stream;
pub mod vf;
