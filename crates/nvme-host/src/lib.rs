//! The host side: the user-space NVMe driver over a vfio-user connection, a verifying workload,
//! and the migration orchestrator that plays the VMM's part (migration states are
//! `vfio-migration`'s typed [`vfio_migration::DeviceState`], sent with `vfu`'s client).
//!
//! The driver itself lives in [`nvme_driver`]; its modules are re-exported here so host code
//! reads `nvme_host::driver` and `nvme_host::memory`.
//!
//! * [`orchestrator`] — the VMM's part of a live migration: pre-copy rounds under a
//!   convergence policy that throttles a guest dirtying faster than the stream (QEMU's
//!   downtime-limit, max-bandwidth and dirty-limit), blackout, switch-over of the guest's
//!   doorbells, abort back to the source;
//! * [`vfio_user_bar`] — the driver's [`driver::Bar`] over a vfio-user client (registers by
//!   REGION_READ/WRITE, doorbells in the mmapped doorbell page), DMA-mapping of host memory and
//!   MSI-X eventfds;
//! * [`workload`] — a verifying I/O workload (fio-like patterns, per-LBA generation ledger,
//!   latency histograms and a stall timeline) and the read-back that checks data after a
//!   migration.

pub use nvme_driver::driver;
pub use nvme_driver::memory;

pub mod orchestrator;
pub mod vfio_user_bar;
pub mod workload;
