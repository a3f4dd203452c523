//! The primary controller as a vfio-user device: the [`vfu::server::Device`] a server hosts for
//! the PF, beside the VFs it manages.
//!
//! The PF has the VF's PCI face ([`crate::pci::function`]: class 01:08:02, BAR0 with the
//! doorbell page mappable, MSI-X) plus an SR-IOV capability that describes the served VFs
//! ([`crate::pci::sriov`]). Its client owns the primary controller's PCI function: its admin
//! queue, its DMA windows (where the Controller Data Queues it creates live, like any of its
//! queues), its interrupts. Everything TP4159 and SR-IOV management offer is reachable from
//! there: Migration Send/Receive, Track Send, Controller Data Queues, Feature 21h and the CDQ
//! events, Virtualization Management, Identify CNS 14h/15h/20h.
//!
//! The server's own migration driver does not use this function: it has a private admin port
//! of the primary controller ([`nvme_device::subsystem::Subsystem::open_private_port`]), so both
//! work at once (see `docs/MIGRATION.md`, "The PF and the server's migration driver"). The PF
//! does not migrate.

use std::sync::Arc;

use nvme_device::PCI_DEVICE_ID;
use nvme_device::PCI_VENDOR_ID;
use nvme_device::controller::Controller;
use nvme_device::subsystem::Subsystem;
use shmem::AddressSpace;
use vfio_migration::Errno;
use vfu::pci::NUM_IRQS;
use vfu::pci::NUM_REGIONS;
use vfu::server::Device;
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::RegionDescription;
use zerocopy::IntoBytes;

use crate::pci::config::ConfigSpace;
use crate::pci::function::NvmeFunction;
use crate::pci::function::Written;
use crate::pci::sriov::SRIOV_CAP;
use crate::pci::sriov::SriovCapability;

/// A subsystem's primary controller presented as a PCI function.
pub struct PfDevice {
    subsystem: Arc<Subsystem>,
    function: NvmeFunction,
}

impl std::fmt::Debug for PfDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PfDevice")
            .field("vfs", &self.subsystem.secondaries().len())
            .finish()
    }
}

impl PfDevice {
    /// The PCI function of `subsystem`'s primary controller, whose DMA reaches `space` (the
    /// address space the subsystem was built with for the PF).
    pub fn new(subsystem: Arc<Subsystem>, space: Arc<AddressSpace>) -> Self {
        let controller = subsystem.primary().clone();
        let sriov = SriovCapability {
            total_vfs: subsystem.secondaries().len() as u16,
            vf_device_id: PCI_DEVICE_ID,
        };
        let config = ConfigSpace::new(
            PCI_VENDOR_ID,
            PCI_DEVICE_ID,
            controller.config().msix_vectors,
        )
        .with_capability(
            SRIOV_CAP,
            sriov.registers().as_bytes().to_vec(),
            sriov.writable().as_bytes().to_vec(),
        );
        Self {
            subsystem,
            function: NvmeFunction::new(controller, space, config),
        }
    }

    /// The primary controller.
    pub fn controller(&self) -> &Controller {
        self.function.controller()
    }

    /// The subsystem.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }

    /// The memory the client mapped for the primary controller.
    pub fn address_space(&self) -> &Arc<AddressSpace> {
        self.function.address_space()
    }
}

impl Device for PfDevice {
    fn num_regions(&self) -> u32 {
        NUM_REGIONS
    }

    fn num_irqs(&self) -> u32 {
        NUM_IRQS
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        self.function.region(index)
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.function.region_read(index, offset, buf)
    }

    /// A function-level reset of the PF resets the primary controller's PCI function only: the
    /// VFs are devices of their own (see [`crate::pci::sriov`]).
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        match self.function.region_write(index, offset, data)? {
            Written::Done => {}
            Written::FunctionReset => self.function.reset(),
        }
        Ok(())
    }

    fn write_returns_at_once(&self, index: u32, offset: u64, len: u64) -> bool {
        self.function.write_returns_at_once(index, offset, len)
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        self.function.irq_info(index)
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        self.function.set_irqs(index, request)
    }

    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.function.dma_map(region)
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        self.function.dma_unmap(iova, size)
    }

    fn reset(&self) -> Result<(), Errno> {
        self.function.reset();
        Ok(())
    }

    fn disconnected(&self) {
        self.function.disconnected();
    }
}
