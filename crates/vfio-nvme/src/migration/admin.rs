//! How the migration driver reaches the primary controller: the [`LmAdmin`] trait.
//!
//! Every arc of the VF's migration state machine is carried out by real 64-byte TP4159 admin
//! commands on the primary controller's admin queue. This trait is that admin queue: the
//! in-process implementation ([`InProcessPrimary`]) drives this project's primary controller
//! through the user-space NVMe driver, on a private admin port of its own (its own registers,
//! admin queue and DMA memory), so it works while a client of the PF's PCI function owns that
//! function's admin queue; on a real SR-IOV device the Linux NVMe admin pass-through on the PF
//! implements the same trait ([`super::passthrough::PassthroughPrimary`]).

use std::io;
use std::sync::Arc;

use nvme_device::controller::Controller;
use nvme_device::subsystem::Subsystem;
use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::driver::DriverError;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::status::Status;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;

/// The data phase of an admin command.
#[derive(Debug)]
pub enum Transfer<'a> {
    /// No data.
    None,
    /// Host to controller (e.g. Set Controller State).
    ToController(&'a [u8]),
    /// Controller to host: fill this buffer (e.g. Get Controller State).
    FromController(&'a mut [u8]),
}

/// A failed admin command on the primary controller.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// The controller completed the command with an error status.
    #[error("{what} failed on the primary controller with status {status:?} (SCT {sct:#x} SC {sc:#x})", sct = status.sct(), sc = status.sc())]
    Status {
        /// The operation, e.g. "Migration Send (Suspend) of controller 2".
        what: String,
        /// The completion status.
        status: Status,
    },
    /// The primary controller could not be reached or did not answer.
    #[error("{what}: {source}")]
    Driver {
        /// The operation.
        what: String,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The controller returned data that makes no sense.
    #[error("{0}")]
    Protocol(String),
    /// A system call to reach the primary controller failed (the Linux admin pass-through).
    #[error("{what} on {device}: {source}")]
    Os {
        /// The operation.
        what: String,
        /// The device node, e.g. `/dev/nvme0`.
        device: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The Secondary Controller List has no controller behind this virtual function.
    #[error(
        "the primary controller's Secondary Controller List has no controller for VF {vfn} \
         (it lists VFs {listed:?}); enable the VF (sriov_numvfs) or name one it lists"
    )]
    NoSuchSecondary {
        /// The virtual function number asked for (1-based).
        vfn: u16,
        /// The VFNs the list has.
        listed: Vec<u16>,
    },
}

impl LmError {
    /// The NVMe status, if the controller answered with one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The primary controller's admin queue, for TP4159 commands.
pub trait LmAdmin: Send + Sync {
    /// Submits `cmd` with the data phase `data` and waits for its completion; returns
    /// completion dword 0. `what` names the operation for error messages.
    fn execute(&self, what: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError>;
    /// Memory the primary controller can reach by DMA and keep writing after a command
    /// completed (for Controller Data Queues); `None` when there is none, as through the Linux
    /// admin pass-through, which unmaps a command's buffer when it completes (so a PF reached
    /// that way cannot log user data changes for the driver).
    fn memory(&self) -> Option<&Arc<HostMemory>>;
    /// The primary controller's maximum data transfer size in bytes.
    fn max_transfer(&self) -> u64;
}

/// BAR0 of a private admin port of the primary controller, reached by direct calls.
struct PortBar(Controller);

impl Bar for PortBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        Ok(self.0.read_register(offset, 4) as u32)
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        Ok(self.0.read_register(offset, 8))
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.0.write_register(offset, 4, u64::from(value));
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.0.write_register(offset, 4, u64::from(value));
    }
}

/// I/O virtual address of the host memory the in-process primary controller uses.
const PRIMARY_MEMORY_IOVA: u64 = 0x100_0000_0000;
/// Size of that memory: admin queues, data buffers and Controller Data Queues.
const PRIMARY_MEMORY_SIZE: u64 = 16 << 20;

/// The primary controller of an in-process subsystem, driven by the user-space NVMe driver
/// through the admin queue of a private port, exactly as host software drives a physical
/// function. Its memory (admin queue, data buffers, Controller Data Queues) is in an address
/// space only the port reaches: no client of the PF sees it, and its CDQIDs are its own.
pub struct InProcessPrimary {
    driver: Driver,
}

impl std::fmt::Debug for InProcessPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessPrimary").finish()
    }
}

impl InProcessPrimary {
    /// Opens a private admin port of `subsystem`'s primary controller over an address space of
    /// its own, maps host memory there and enables the port.
    pub fn new(subsystem: &Subsystem) -> Result<Self, LmError> {
        let driver_error = |source| LmError::Driver {
            what: "bringing up the primary controller".to_owned(),
            source,
        };
        let mem = HostMemory::new(PRIMARY_MEMORY_SIZE, PRIMARY_MEMORY_IOVA)
            .map_err(|e| driver_error(DriverError::Io(e)))?;
        let fd = mem
            .mapping()
            .fd()
            .ok_or_else(|| LmError::Protocol("host memory has no file descriptor".to_owned()))?
            .try_clone_to_owned()
            .map_err(|e| driver_error(DriverError::Io(e)))?;
        let view = Mapping::from_fd(fd, 0, mem.len() as usize, Protection::ReadWrite)
            .map_err(|e| driver_error(DriverError::Io(e)))?;
        let space = Arc::new(AddressSpace::new());
        space
            .map(PRIMARY_MEMORY_IOVA, view)
            .map_err(|e| LmError::Protocol(format!("cannot map primary host memory: {e}")))?;
        let port = subsystem
            .open_private_port(space)
            .map_err(|e| LmError::Protocol(format!("cannot open a private admin port: {e}")))?;
        let driver = Driver::new(Arc::new(PortBar(port)), mem).map_err(driver_error)?;
        Ok(Self { driver })
    }
}

impl LmAdmin for InProcessPrimary {
    fn execute(&self, what: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError> {
        let result = match data {
            Transfer::None => self.driver.admin(cmd).map(|c| c.dw0),
            Transfer::ToController(bytes) => self.driver.admin_write(cmd, bytes).map(|c| c.dw0),
            Transfer::FromController(buf) => self
                .driver
                .admin_read_completion(cmd, buf.len() as u64)
                .map(|(c, bytes)| {
                    buf.copy_from_slice(&bytes);
                    c.dw0
                }),
        };
        result.map_err(|err| match err {
            DriverError::Status { status, .. } => LmError::Status {
                what: what.to_owned(),
                status,
            },
            source => LmError::Driver {
                what: format!("{what} ({:?})", AdminOpcode(cmd.cdw0.opcode())),
                source,
            },
        })
    }

    fn memory(&self) -> Option<&Arc<HostMemory>> {
        Some(self.driver.memory())
    }

    fn max_transfer(&self) -> u64 {
        self.driver.max_transfer()
    }
}
