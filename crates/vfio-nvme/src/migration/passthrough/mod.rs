//! [`LmAdmin`] over the Linux NVMe admin pass-through: TP4159 commands sent to a primary
//! controller that the kernel's nvme driver owns, through `/dev/nvmeX` (the seed's
//! architecture, where the PF belongs to the host's nvme driver).
//!
//! * `uapi` — `struct nvme_passthru_cmd64` and `NVME_IOCTL_ADMIN64_CMD`, checked against the
//!   kernel's values;
//! * `ioctl` — the one `unsafe` system call.
//!
//! What works through it: Identify, Migration Send (Suspend, Resume, Set Controller State),
//! Migration Receive (Get Controller State), Virtualization Management — every command whose
//! data lives only while the command runs. A Controller Data Queue cannot: the kernel unmaps a
//! command's buffer when it completes, while a CDQ is written long after (`pf-interop.md`
//! §d.3), so [`LmAdmin::memory`] is `None` and the migration driver treats such a PF as one
//! without user data logging (shared namespaces only). Needs `CAP_SYS_ADMIN`.

mod ioctl;
mod uapi;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::status::Status;

use super::admin::LmAdmin;
use super::admin::LmError;
use super::admin::Transfer;

/// The largest transfer used when the controller reports no limit (MDTS 0).
const UNLIMITED_TRANSFER: u64 = 1 << 20;

/// A primary controller reached through the kernel's admin pass-through on its character
/// device (`/dev/nvmeX`).
#[derive(Debug)]
pub struct PassthroughPrimary {
    device: PathBuf,
    file: File,
    max_transfer: u64,
}

impl PassthroughPrimary {
    /// Opens `device` (the PF's controller node, e.g. `/dev/nvme0`) and reads its Identify
    /// Controller data for the transfer limit.
    pub fn open(device: &Path) -> Result<Self, LmError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|source| LmError::Os {
                what: "opening the primary controller".to_owned(),
                device: device.display().to_string(),
                source,
            })?;
        let mut primary = Self {
            device: device.to_owned(),
            file,
            max_transfer: 4096,
        };
        let id = super::tp4159::identify_controller(&primary)?;
        // MDTS is in units of the minimum page size, which the kernel does not let us read;
        // 4 KiB is what every controller the nvme driver accepts supports.
        primary.max_transfer = id
            .max_transfer_bytes(4096)
            .unwrap_or(UNLIMITED_TRANSFER)
            .min(UNLIMITED_TRANSFER);
        Ok(primary)
    }

    /// The device node.
    pub fn device(&self) -> &Path {
        &self.device
    }
}

/// The NVMe status the ioctl returned (its SCT and SC; CRD, More and DNR dropped).
fn status(raw: u32) -> Status {
    Status((raw & 0x7FF) as u16)
}

impl LmAdmin for PassthroughPrimary {
    fn execute(&self, what: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError> {
        let device = self.device.display().to_string();
        match ioctl::admin(self.file.as_fd(), &cmd, data) {
            Err(source) => Err(LmError::Os {
                what: what.to_owned(),
                device,
                source,
            }),
            Ok(answer) if answer.status != 0 => Err(LmError::Status {
                what: format!("{what} on {device}"),
                status: status(answer.status),
            }),
            Ok(answer) => Ok(answer.result as u32),
        }
    }

    fn memory(&self) -> Option<&Arc<HostMemory>> {
        None
    }

    fn max_transfer(&self) -> u64 {
        self.max_transfer
    }
}

#[cfg(test)]
mod tests {
    use nvme_spec::identify::Cns;
    use nvme_spec::identify::IDENTIFY_DATA_SIZE;

    use super::*;

    #[test]
    fn the_returned_status_keeps_sct_and_sc() {
        // Controller Not Suspended with DNR, as a kernel returns it.
        assert_eq!(status(0x4000 | 0x13A), Status::CONTROLLER_NOT_SUSPENDED);
        assert_eq!(status(0x2), Status::INVALID_FIELD_IN_COMMAND);
    }

    /// Errors name the device, the command and the system's or the controller's answer.
    #[test]
    fn errors_name_the_device_and_the_command() {
        let err = PassthroughPrimary::open(Path::new("/nonexistent/nvme9")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/nvme9") && text.contains("opening"),
            "{text}"
        );
        // A node that is not an NVMe controller answers the ioctl with ENOTTY.
        let primary = PassthroughPrimary {
            device: PathBuf::from("/dev/null"),
            file: File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap(),
            max_transfer: 4096,
        };
        let mut page = vec![0u8; IDENTIFY_DATA_SIZE];
        let err = primary
            .execute(
                "Identify Secondary Controller List",
                Command::identify(0, Cns::SECONDARY_CONTROLLER_LIST, 0, 0, 0),
                Transfer::FromController(&mut page),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/dev/null") && text.contains("Secondary Controller List"),
            "{text}"
        );
        // A transfer against the opcode's direction is refused before the kernel sees it.
        let err = primary
            .execute(
                "Identify",
                Command::identify(0, Cns::CONTROLLER, 0, 0, 0),
                Transfer::ToController(&page),
            )
            .unwrap_err();
        assert!(
            matches!(&err, LmError::Os { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
            "{err}"
        );
    }
}
