//! The host side: a user-space NVMe driver, the memory it shares with the device, and (in later
//! milestones) the verifying workload and the migration orchestrator that plays the VMM's part.
//!
//! * [`memory`] — DMA-able host memory backed by a memfd, with a page allocator;
//! * [`driver`] — controller bring-up, admin commands, I/O queue pairs, asynchronous events and
//!   reset, over any [`driver::Bar`] (a vfio-user connection or an in-process controller).

pub mod driver;
pub mod memory;
