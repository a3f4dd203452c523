//! The VFIO migration driver of an NVMe virtual function (the seed's job), built on TP4159
//! commands to the primary controller.
//!
//! * [`admin`] — the [`admin::LmAdmin`] trait: the PF's admin queue (in-process on a private
//!   admin port of the primary controller, so a client of the PF's PCI function keeps its own;
//!   or through the kernel, [`passthrough`]);
//! * [`passthrough`] — [`passthrough::PassthroughPrimary`], the trait over the Linux NVMe admin
//!   pass-through on a PF the kernel owns;
//! * [`tp4159`] — Suspend, Resume, Get/Set Controller State, User Data Migration Queues;
//! * [`user_data`] — reading and writing namespace contents;
//! * [`driver`] — [`driver::NvmeMigration`], the per-arc driver, which a VF serves through
//!   `vfu`'s generic [`vfu::server::DeviceMigration`] adapter;
//! * [`error`] — [`error::MigrationError`] and the errno each failure reaches a client with.

pub mod admin;
pub mod driver;
pub mod error;
mod loader;
pub mod passthrough;
mod ranges;
mod saver;
pub mod tp4159;
pub mod user_data;
