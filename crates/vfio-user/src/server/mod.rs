//! The vfio-user server: hosts one [`Device`] on a UNIX socket.

mod device;

pub use device::Device;
pub use device::DmaRegion;
pub use device::Errno;
pub use device::IrqRequest;
pub use device::RegionDescription;
