//! The host side: the user-space NVMe driver over a vfio-user connection, and (in later
//! milestones) the verifying workload and the migration orchestrator that plays the VMM's part.
//!
//! The driver itself lives in [`nvme_driver`]; its modules are re-exported here so host code
//! reads `nvme_host::driver` and `nvme_host::memory`.

pub use nvme_driver::driver;
pub use nvme_driver::memory;
