//! The Linux NVMe admin pass-through uAPI (`include/uapi/linux/nvme_ioctl.h`): the 64-bit
//! admin command structure and its ioctl number, with the values checked against the kernel's
//! (see `pf-interop.md` §d.1, compiled against linux-libc-dev 6.1).

use nvme_spec::command::Command;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// `struct nvme_passthru_cmd64`: an admin (or I/O) command for `NVME_IOCTL_ADMIN64_CMD`. The
/// kernel copies the command dwords verbatim, builds the data pointer itself from `addr` and
/// `data_len`, and writes completion dword 0 (and 1) into `result`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct PassthruCmd64 {
    /// Opcode.
    pub opcode: u8,
    /// Must be 0 (the kernel refuses anything else with EINVAL).
    pub flags: u8,
    /// Reserved.
    pub rsvd1: u16,
    /// Namespace identifier.
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata buffer (user address), unused for admin commands.
    pub metadata: u64,
    /// Data buffer (user address).
    pub addr: u64,
    /// Metadata length.
    pub metadata_len: u32,
    /// Data length in bytes (`vec_cnt` for the vectored variant).
    pub data_len: u32,
    /// Command dwords 10 to 15.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
    /// Timeout in milliseconds; 0 is the kernel's admin timeout.
    pub timeout_ms: u32,
    /// Reserved.
    pub rsvd2: u32,
    /// Completion dwords 0 and 1.
    pub result: u64,
}

const _: () = assert!(size_of::<PassthruCmd64>() == 80);

/// `_IOWR(type, nr, size)` of `asm-generic/ioctl.h`: direction read|write (3) in bits 31:30,
/// the argument size in bits 29:16, the type in 15:8, the number in 7:0.
const fn iowr(kind: u8, nr: u8, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | nr as u32
}

/// `NVME_IOCTL_ADMIN64_CMD` = `_IOWR('N', 0x47, struct nvme_passthru_cmd64)`.
pub const NVME_IOCTL_ADMIN64_CMD: u32 = iowr(b'N', 0x47, size_of::<PassthruCmd64>());

impl PassthruCmd64 {
    /// The pass-through form of `cmd` with a data buffer of `len` bytes at user address
    /// `addr`. The SQE's flags, command identifier and data pointer are the kernel's to fill.
    pub fn new(cmd: &Command, addr: u64, len: u32) -> Self {
        Self {
            opcode: cmd.cdw0.opcode(),
            nsid: cmd.nsid,
            cdw2: cmd.cdw2,
            cdw3: cmd.cdw3,
            addr,
            data_len: len,
            cdw10: cmd.cdw10,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            cdw14: cmd.cdw14,
            cdw15: cmd.cdw15,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use nvme_spec::identify::Cns;

    use super::*;

    /// Offsets of `struct nvme_passthru_cmd64` as the kernel header lays them out.
    #[test]
    fn layout_matches_the_kernel() {
        type C = PassthruCmd64;
        let offsets = [
            (offset_of!(C, opcode), 0),
            (offset_of!(C, flags), 1),
            (offset_of!(C, rsvd1), 2),
            (offset_of!(C, nsid), 4),
            (offset_of!(C, cdw2), 8),
            (offset_of!(C, cdw3), 12),
            (offset_of!(C, metadata), 16),
            (offset_of!(C, addr), 24),
            (offset_of!(C, metadata_len), 32),
            (offset_of!(C, data_len), 36),
            (offset_of!(C, cdw10), 40),
            (offset_of!(C, cdw15), 60),
            (offset_of!(C, timeout_ms), 64),
            (offset_of!(C, rsvd2), 68),
            (offset_of!(C, result), 72),
        ];
        for (got, want) in offsets {
            assert_eq!(got, want);
        }
    }

    /// The ioctl numbers the kernel's headers give (pf-interop.md §d.1): ours, and the 72-byte
    /// `NVME_IOCTL_ADMIN_CMD` to check the encoding itself.
    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(NVME_IOCTL_ADMIN64_CMD, 0xC050_4E47);
        assert_eq!(iowr(b'N', 0x41, 72), 0xC048_4E41);
        assert_eq!(iowr(b'N', 0x82, 72), 0xC048_4E82);
    }

    #[test]
    fn a_command_keeps_its_dwords_and_drops_what_the_kernel_fills() {
        let mut cmd = Command::identify(0x1234, Cns::SECONDARY_CONTROLLER_LIST, 0, 2, 0xdead_0000);
        cmd.cdw15 = 0x3FF;
        let p = PassthruCmd64::new(&cmd, 0x7000, 4096);
        assert_eq!((p.opcode, p.flags), (0x06, 0));
        assert_eq!(p.cdw10, 0x0002_0015);
        assert_eq!(p.cdw15, 0x3FF);
        assert_eq!((p.addr, p.data_len, p.timeout_ms), (0x7000, 4096, 0));
    }
}
