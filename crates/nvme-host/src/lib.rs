//! The host side: a user-space NVMe driver over a vfio-user connection, a verifying workload
//! generator and the migration orchestrator that plays the VMM's part.
//!
//! Status: holds nothing yet; it is built once the device and the vfio-user server exist.
