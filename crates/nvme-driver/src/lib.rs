//! A user-space NVMe host driver.
//!
//! * [`memory`] — DMA-able host memory backed by a memfd, with a page allocator;
//! * [`driver`] — controller bring-up, admin commands, I/O queue pairs, asynchronous events and
//!   reset, over any [`driver::Bar`].
//!
//! It depends only on the wire formats and the mapping crate, so both the host side (over a
//! vfio-user connection) and the migration driver (TP4159 commands on an in-process primary
//! controller's admin queue) use the same driver.

pub mod driver;
pub mod memory;
