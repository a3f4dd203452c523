//! Where NVMe meets VFIO: a secondary controller of an [`nvme_device`] subsystem presented as a
//! PCI function over vfio-user ([`vf`], [`pci`]), the primary controller presented the same way
//! ([`pf`]), and the VFIO migration driver whose arcs are carried out by TP4159 commands on the
//! primary controller ([`migration`]), with the migration stream it produces and consumes
//! ([`stream`]). [`served`] wires a whole served subsystem.
//!
//! Everything NVMe-free lives below this crate: the state machine and sessions in
//! `vfio-migration`, the VFIO feature handling over them (state changes, data requests, DMA
//! logging) in `vfu`'s [`vfu::server::DeviceMigration`], which a function offers as its one
//! migration handle. The driver's errors ([`migration::error`]) say which errno a client gets:
//! EIO when the device failed, EINVAL for a stream that is corrupt or from another device.

pub mod migration;
pub mod pci;
pub mod pf;
pub mod served;
pub mod stream;
pub mod vf;
