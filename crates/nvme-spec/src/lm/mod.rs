//! TP4159 host-managed live migration (NVMe Base 2.1): command dwords, the controller state data
//! structures and the LBA migration queue entry.
//!
//! The layouts follow the consensus of libnvme, nvme-cli, libvfn and the QEMU TP4159 model
//! (`reference/tp4159.md`). Where the 2025 "vfio-nvme" RFC differs, the RFC is wrong and the item's
//! doc comment says so:
//!
//! * Migration Send SEL values are Suspend 0, Resume 1, Set Controller State 2 (RFC: 0/2/3);
//! * Migration Send NUMD is a plain dword count (RFC: 0's based); Migration Receive NUMD is 0's
//!   based;
//! * CSVI is a 1-based index into the version list of Identify CNS 20h, not a version (RFC: the
//!   version itself, 0);
//! * the controller state header is 48 bytes with 128-bit dword counts (RFC: 20 bytes with u16
//!   sizes);
//! * an I/O completion queue state entry is 24 bytes with a 32-bit IOCQA (RFC: 22 bytes).
//!
//! Commands have two views: `bitfield` types over the raw dwords (`SuspendCdw11::from(cmd.cdw11)`)
//! and typed, data-only values implementing [`LmCommand`], which encode into and decode from a
//! [`Command`](crate::command::Command) so that the device and the host share one codec.
//! Decoding accepts any dword values and reports set reserved bits in [`ReservedBits`], so the
//! device can answer Invalid Field in Command. Every decoder of bytes (controller state, NVMECS,
//! CNS 20h, queue entries) returns an error instead of panicking.

mod cdq;
mod common;
mod error;
mod formats;
mod migration_receive;
mod migration_send;
mod nvmecs;
mod queue_entry;
mod state;
mod track;

pub use cdq::*;
pub use common::*;
pub use error::*;
pub use formats::*;
pub use migration_receive::*;
pub use migration_send::*;
pub use nvmecs::*;
pub use queue_entry::*;
pub use state::*;
pub use track::*;

#[cfg(test)]
mod tests;
