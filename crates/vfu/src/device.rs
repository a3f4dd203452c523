//! `DEVICE_GET_INFO` (command 4) and `DEVICE_RESET` (command 13).

use bitflags::bitflags;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;
use crate::wire;

bitflags! {
    /// `vfio_device_info.flags` bits used by vfio-user.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DeviceInfoFlags: u32 {
        /// The device supports `DEVICE_RESET`.
        const RESET = 1 << 0;
        /// The device is a PCI device (the only kind the spec defines).
        const PCI = 1 << 1;
    }
}

/// `DEVICE_GET_INFO` request and reply body (16 bytes, `struct vfio_device_info` without caps).
///
/// Offsets: argsz 0, flags 4, num_regions 8, num_irqs 12. In the request only `argsz` matters
/// (the others must be zero and are ignored); in the reply `argsz` is 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct DeviceInfo {
    /// Request: largest reply payload accepted. Reply: size needed (16).
    pub argsz: u32,
    /// [`DeviceInfoFlags`] bits.
    pub flags: u32,
    /// Number of regions (PCI: BARs 0–5, ROM, config, VGA, and any device-specific ones).
    pub num_regions: u32,
    /// Number of IRQ types (PCI: INTx, MSI, MSI-X, ERR, REQ).
    pub num_irqs: u32,
}

const _: () = assert!(size_of::<DeviceInfo>() == 16);

impl DeviceInfo {
    /// A request asking for the full 16-byte reply.
    pub fn request() -> Self {
        Self {
            argsz: size_of::<Self>() as u32,
            flags: 0,
            num_regions: 0,
            num_irqs: 0,
        }
    }

    /// A reply body (argsz is the 16 bytes needed).
    pub fn reply(flags: DeviceInfoFlags, num_regions: u32, num_irqs: u32) -> Self {
        Self {
            argsz: size_of::<Self>() as u32,
            flags: flags.bits(),
            num_regions,
            num_irqs,
        }
    }

    /// The flags as a typed set (unknown bits kept).
    pub fn flags(&self) -> DeviceInfoFlags {
        DeviceInfoFlags::from_bits_retain(self.flags)
    }
}

wire::fixed_payload!(
    DeviceInfo,
    Command::DEVICE_GET_INFO,
    "device_info",
    DeviceInfo::check
);

impl DeviceInfo {
    /// The decoder's check of a request or reply: `argsz` below 16 is rejected as the kernel
    /// does.
    fn check(&self, _limits: &Limits) -> Result<(), DecodeError> {
        wire::check_argsz(
            Command::DEVICE_GET_INFO,
            self.argsz,
            size_of::<Self>(),
            "smaller than the 16-byte device info",
        )
    }
}

/// `DEVICE_RESET` request or reply: no payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceReset;

wire::empty_payload!(DeviceReset, Command::DEVICE_RESET);

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;
    use crate::payload::Payload;

    #[test]
    fn layout_and_vector() {
        assert_eq!(offset_of!(DeviceInfo, flags), 4);
        assert_eq!(offset_of!(DeviceInfo, num_regions), 8);
        assert_eq!(offset_of!(DeviceInfo, num_irqs), 12);
        let reply = DeviceInfo::reply(DeviceInfoFlags::RESET | DeviceInfoFlags::PCI, 9, 5);
        assert_eq!(
            reply.to_bytes(),
            [16, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0]
        );
        assert_eq!(
            DeviceInfo::decode(&reply.to_bytes(), &Limits::default()).unwrap(),
            reply
        );
        let short = DeviceInfo {
            argsz: 8,
            ..DeviceInfo::request()
        };
        assert!(DeviceInfo::decode(&short.to_bytes(), &Limits::default()).is_err());
        assert!(DeviceReset::decode(&[], &Limits::default()).is_ok());
        assert!(DeviceReset::decode(&[0], &Limits::default()).is_err());
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = DeviceInfo::decode(bytes, &l);
                let _ = DeviceReset::decode(bytes, &l);
            });
    }
}
