//! One NVMe virtual function as a vfio-user device: the [`vfu::server::Device`] a server
//! hosts for a secondary controller, with its live migration.

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
use vfu::server::DeviceMigration;
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::Migratable;
use vfu::server::RegionDescription;

use crate::migration::driver::NvmeMigration;
use crate::pci::config::ConfigSpace;
use crate::pci::function::NvmeFunction;
use crate::pci::function::Written;

/// A secondary controller of a subsystem presented as a PCI function.
pub struct VfDevice {
    subsystem: Arc<Subsystem>,
    vfn: u16,
    function: NvmeFunction,
    /// Live migration and DMA logging, when the function can migrate.
    migration: Option<DeviceMigration<NvmeMigration>>,
}

impl std::fmt::Debug for VfDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfDevice").field("vfn", &self.vfn).finish()
    }
}

impl VfDevice {
    /// The PCI function for VF `vfn` of `subsystem`, whose controller reaches guest memory
    /// through `space` (the same address space the subsystem was built with for this VF).
    pub fn new(subsystem: Arc<Subsystem>, vfn: u16, space: Arc<AddressSpace>) -> Option<Self> {
        let controller = subsystem.secondary(vfn)?.clone();
        let config = ConfigSpace::new(
            PCI_VENDOR_ID,
            PCI_DEVICE_ID,
            controller.config().msix_vectors,
        );
        Some(Self {
            subsystem,
            vfn,
            function: NvmeFunction::new(controller, space, config),
            migration: None,
        })
    }

    /// Makes the function migratable with `migration` (over the same address space).
    pub fn with_migration(mut self, migration: DeviceMigration<NvmeMigration>) -> Self {
        self.migration = Some(migration);
        self
    }

    /// The function's configuration space and MSI-X state, for its migration driver to capture
    /// and restore.
    pub fn pci_face(&self) -> &Arc<crate::pci::face::PciFace> {
        self.function.pci_face()
    }

    /// The secondary controller behind this function.
    pub fn controller(&self) -> &Controller {
        self.function.controller()
    }

    /// The subsystem the function belongs to.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }

    /// The guest memory the controller reaches.
    pub fn address_space(&self) -> &Arc<AddressSpace> {
        self.function.address_space()
    }

    /// A function-level reset: the controller, configuration space and MSI-X state, then the
    /// migration state (back to RUNNING, sessions gone). In that order: returning the
    /// migration state to RUNNING resumes a suspended controller, and one that had loaded a
    /// migration stream (a destination whose migration failed after RESUMING → STOP) would
    /// then fetch the commands of the queues it loaded, in guest memory the source runs them
    /// in too, before the controller reset deleted them.
    fn function_reset(&self) {
        self.function.reset();
        if let Some(migration) = &self.migration {
            migration.reset();
        }
    }
}

impl Device for VfDevice {
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

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        match self.function.region_write(index, offset, data)? {
            Written::Done => {}
            Written::FunctionReset => self.function_reset(),
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
        self.function_reset();
        Ok(())
    }

    fn disconnected(&self) {
        self.function.disconnected();
        // A source whose whole state went to a destination must not come back to life with
        // the guest's queues when its client leaves (the migration state's own close would
        // resume it): it could act on the guest's shadow doorbells once the same memory is
        // mapped into it again. Reset it, controller first, as a function reset does.
        if self.migration.as_ref().is_some_and(|m| m.handed_over()) {
            tracing::info!("the client left a source whose state was handed over: reset");
            self.function_reset();
        }
    }

    fn migration(&self) -> Option<&dyn Migratable> {
        self.migration.as_ref().map(|m| m as &dyn Migratable)
    }
}
