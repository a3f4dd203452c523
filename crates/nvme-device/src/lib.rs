//! The NVM subsystem device model: a primary controller (PF) and secondary controllers (VFs),
//! namespaces on RAM, file and null backends, the admin and NVM command sets a Linux guest uses,
//! and the TP4159 live-migration commands on the primary controller.
//!
//! This crate knows no transport: guest memory is reached through the [`memory::DmaMemory`]
//! trait and interrupts through the [`interrupt::Interrupt`] trait, so the whole device can be
//! driven in-process by tests.
//!
//! * [`subsystem`] builds a subsystem from namespaces and a number of virtual functions, and
//!   opens private admin ports of its primary controller;
//! * [`sriov`] is SR-IOV management: flexible resources, secondary controllers online and
//!   offline, Virtualization Management and Identify CNS 14h/15h;
//! * [`controller`] is one controller: registers, queues, command execution, its I/O thread;
//! * [`backend`] and [`namespace`] hold the data;
//! * [`lm`] is TP4159 on the primary controller;
//! * [`queue`], [`doorbell`], [`prp`] are the mechanics of queues and data pointers;
//! * `testing`, compiled only with the `test-utils` feature, is an in-process test host: a
//!   subsystem, guest memory per controller, raw queues and the host driver over BAR0, interrupt
//!   counting.

pub mod backend;
pub mod controller;
pub mod doorbell;
pub mod interrupt;
pub mod lm;
pub mod memory;
pub mod namespace;
mod notifier;
pub mod prp;
pub mod queue;
pub mod sriov;
pub mod subsystem;
#[cfg(feature = "test-utils")]
pub mod testing;

/// PCI vendor ID reported in Identify Controller (VID/SSVID) and by the transport's config
/// space. 0x4E56 ("NV") is not an assigned PCI-SIG vendor ID; it marks an emulated device.
pub const PCI_VENDOR_ID: u16 = 0x4E56;
/// PCI device ID of a vfio-nvme controller ("LM").
pub const PCI_DEVICE_ID: u16 = 0x4C4D;
