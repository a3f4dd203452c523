//! The seed's driver: the VFIO migration v2 state machine for one NVMe secondary controller, with
//! every arc carried out by real TP4159 commands submitted to the primary controller, and the PCI
//! face of a VF served over vfio-user.
//!
//! Status: built on `nvme-device`, `vfio-migration` and `vfio-user`; holds nothing yet.
