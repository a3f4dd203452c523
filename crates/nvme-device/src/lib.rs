//! The NVM subsystem device model: a primary controller (PF) and secondary controllers (VFs),
//! namespaces on RAM, file and null backends, the admin and NVM command sets a Linux guest uses,
//! and the TP4159 live-migration commands on the primary controller.
//!
//! This crate knows no transport: guest memory is reached through the [`memory::DmaMemory`]
//! trait and interrupts through an `Interrupt` trait, so the whole device can be driven
//! in-process by tests.
//!
//! Status: storage backends and guest-memory access exist; controllers and queues are being
//! built.

pub mod backend;
pub mod doorbell;
pub mod interrupt;
pub mod memory;
pub mod namespace;
pub mod queue;
