//! The one system call of the admin pass-through: `NVME_IOCTL_ADMIN64_CMD` on an open
//! `/dev/nvmeX`, with the data buffer taken from a [`Transfer`] so that the kernel's access to
//! it matches what the slice allows.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;

use nvme_spec::command::Command;

use super::uapi::NVME_IOCTL_ADMIN64_CMD;
use super::uapi::PassthruCmd64;
use crate::migration::admin::Transfer;

/// What the kernel answered: the NVMe status field (0 on success) and completion dwords 0–1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Answer {
    /// `SCT << 8 | SC` (with CRD, More and DNR above bit 10), as the ioctl returns it.
    pub status: u32,
    /// Completion dwords 0 (low) and 1 (high).
    pub result: u64,
}

/// Sends `cmd` with the data phase `data` through the admin queue of the controller `fd` is
/// open on, and waits for its completion.
///
/// The kernel derives the direction of the transfer from the opcode's low two bits (01b host
/// to controller, 10b controller to host); a command whose direction does not match `data` is
/// refused with `EINVAL` before anything is sent, so the kernel never writes a shared slice.
pub(super) fn admin(fd: BorrowedFd<'_>, cmd: &Command, data: Transfer<'_>) -> io::Result<Answer> {
    let direction = cmd.cdw0.opcode() & 0b11;
    let (addr, len) = match data {
        Transfer::None => (0, 0),
        Transfer::ToController(buf) if direction == 0b01 => (buf.as_ptr() as u64, buf.len()),
        Transfer::FromController(buf) if direction == 0b10 => (buf.as_mut_ptr() as u64, buf.len()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "opcode {:#04x} transfers data the other way",
                    cmd.cdw0.opcode()
                ),
            ));
        }
    };
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a transfer of 4 GiB or more"))?;
    let mut arg = PassthruCmd64::new(cmd, addr, len);
    // SAFETY: `arg` is a valid, exclusively borrowed `struct nvme_passthru_cmd64` (layout and
    // request number checked against the kernel's in `uapi`), which the kernel reads and
    // writes back only for the duration of the call. Its data buffer, if any, is the slice of
    // `data`, borrowed for this whole function, of exactly `len` bytes: the kernel writes it
    // only for controller-to-host opcodes, which were matched with a mutable slice above, and
    // otherwise only reads it. No pointer outlives the call (the kernel unmaps the buffer when
    // the command completes).
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NVME_IOCTL_ADMIN64_CMD as libc::c_ulong,
            &mut arg as *mut PassthruCmd64,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Answer {
        status: rc as u32,
        result: arg.result,
    })
}
