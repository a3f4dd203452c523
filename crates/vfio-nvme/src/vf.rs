//! One NVMe virtual function as a vfio-user device: the [`vfu::server::Device`] a server
//! hosts for a secondary controller.

use std::sync::Arc;

use nvme_device::PCI_DEVICE_ID;
use nvme_device::PCI_VENDOR_ID;
use nvme_device::controller::Controller;
use nvme_device::subsystem::Subsystem;
use shmem::AddressSpace;
use shmem::MapError;
use vfio_migration::Errno;
use vfu::irq::IrqAction;
use vfu::irq::IrqInfoFlags;
use vfu::pci::BAR0_REGION_INDEX;
use vfu::pci::CONFIG_REGION_INDEX;
use vfu::pci::MSIX_IRQ_INDEX;
use vfu::pci::NUM_IRQS;
use vfu::pci::NUM_REGIONS;
use vfu::region::RegionCap;
use vfu::region::RegionInfoFlags;
use vfu::region::SparseMmapArea;
use vfu::server::Device;
use vfu::server::DeviceMigration;
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::Migratable;
use vfu::server::RegionDescription;

use crate::migration::driver::NvmeMigration;
use crate::pci::BAR0_SIZE;
use crate::pci::CONFIG_SIZE;
use crate::pci::DOORBELL_OFFSET;
use crate::pci::DOORBELL_SIZE;
use crate::pci::MSIX_PBA_OFFSET;
use crate::pci::MSIX_TABLE_OFFSET;
use crate::pci::config::ConfigSpace;
use crate::pci::msix::Msix;

/// A secondary controller of a subsystem presented as a PCI function.
pub struct VfDevice {
    subsystem: Arc<Subsystem>,
    controller: Arc<Controller>,
    vfn: u16,
    space: Arc<AddressSpace>,
    config: ConfigSpace,
    msix: Arc<Msix>,
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
        let vectors = controller.config().msix_vectors;
        let msix = Arc::new(Msix::new(vectors));
        controller.set_interrupt(msix.clone());
        Some(Self {
            subsystem,
            controller,
            vfn,
            space,
            config: ConfigSpace::new(PCI_VENDOR_ID, PCI_DEVICE_ID, vectors),
            msix,
            migration: None,
        })
    }

    /// Makes the function migratable with `migration` (over the same address space).
    pub fn with_migration(mut self, migration: DeviceMigration<NvmeMigration>) -> Self {
        self.migration = Some(migration);
        self
    }

    /// The secondary controller behind this function.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The subsystem the function belongs to.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }

    /// The guest memory the controller reaches.
    pub fn address_space(&self) -> &Arc<AddressSpace> {
        &self.space
    }

    fn bar0_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if offset >= MSIX_PBA_OFFSET {
            return ok(self.msix.pba_read(offset - MSIX_PBA_OFFSET, buf));
        }
        if offset >= MSIX_TABLE_OFFSET {
            return ok(self.msix.table_read(offset - MSIX_TABLE_OFFSET, buf));
        }
        // Registers and doorbells: natural 4- or 8-byte accesses.
        let ctrl = self.controller();
        match buf.len() {
            4 if offset.is_multiple_of(4) => {
                let v = ctrl.read_register(offset, 4) as u32;
                buf.copy_from_slice(&v.to_le_bytes());
            }
            8 if offset.is_multiple_of(8) => {
                let v = ctrl.read_register(offset, 8);
                buf.copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                // Narrow or unaligned reads: assemble from the dwords they touch.
                for (i, byte) in buf.iter_mut().enumerate() {
                    let at = offset + i as u64;
                    let dword = ctrl.read_register(at & !3, 4) as u32;
                    *byte = dword.to_le_bytes()[(at & 3) as usize];
                }
            }
        }
        Ok(())
    }

    fn bar0_write(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if offset >= MSIX_PBA_OFFSET {
            // The PBA is read-only.
            return Ok(());
        }
        if offset >= MSIX_TABLE_OFFSET {
            return ok(self.msix.table_write(offset - MSIX_TABLE_OFFSET, data));
        }
        let ctrl = self.controller();
        match data.len() {
            4 if offset.is_multiple_of(4) => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                ctrl.write_register(offset, 4, u64::from(v));
                Ok(())
            }
            8 if offset.is_multiple_of(8) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(data);
                ctrl.write_register(offset, 8, u64::from_le_bytes(raw));
                Ok(())
            }
            // NVMe registers must be written in their natural width.
            _ => Err(Errno::EINVAL),
        }
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if ConfigSpace::is_flr(offset, data) {
            self.function_reset();
            return Ok(());
        }
        ok(self.config.write(offset, data))?;
        self.msix.set_control(self.config.msix_control());
        Ok(())
    }

    /// A function-level reset: controller, configuration space, MSI-X state and the migration
    /// state (back to RUNNING, sessions gone).
    fn function_reset(&self) {
        if let Some(migration) = &self.migration {
            migration.reset();
        }
        self.controller().reset();
        let vectors = self.msix.count() as u16;
        self.config.reset(PCI_VENDOR_ID, PCI_DEVICE_ID, vectors);
        self.msix.reset();
    }
}

fn ok(done: bool) -> Result<(), Errno> {
    if done { Ok(()) } else { Err(Errno::EINVAL) }
}

impl Device for VfDevice {
    fn num_regions(&self) -> u32 {
        NUM_REGIONS
    }

    fn num_irqs(&self) -> u32 {
        NUM_IRQS
    }

    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        let rw = RegionInfoFlags::READ | RegionInfoFlags::WRITE;
        Some(match index {
            BAR0_REGION_INDEX => {
                let doorbells = self.controller().doorbells();
                RegionDescription {
                    flags: rw | RegionInfoFlags::MMAP,
                    size: BAR0_SIZE,
                    file_offset: doorbells.file_offset() - DOORBELL_OFFSET,
                    caps: vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                        offset: DOORBELL_OFFSET,
                        size: DOORBELL_SIZE,
                    }])],
                    fd: doorbells.mapping().fd(),
                }
            }
            CONFIG_REGION_INDEX => RegionDescription {
                flags: rw,
                size: CONFIG_SIZE,
                file_offset: 0,
                caps: Vec::new(),
                fd: None,
            },
            i if i < NUM_REGIONS => RegionDescription {
                flags: RegionInfoFlags::empty(),
                size: 0,
                file_offset: 0,
                caps: Vec::new(),
                fd: None,
            },
            _ => return None,
        })
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        match index {
            BAR0_REGION_INDEX => self.bar0_read(offset, buf),
            CONFIG_REGION_INDEX => ok(self.config.read(offset, buf)),
            _ => Err(Errno::EINVAL),
        }
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        match index {
            BAR0_REGION_INDEX => self.bar0_write(offset, data),
            CONFIG_REGION_INDEX => self.config_write(offset, data),
            _ => Err(Errno::EINVAL),
        }
    }

    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        match index {
            MSIX_IRQ_INDEX => Some((
                self.msix.count(),
                (IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE).bits(),
            )),
            // INTx, MSI, ERR and REQ are not offered: the function interrupts with MSI-X only.
            i if i < NUM_IRQS => Some((0, 0)),
            _ => None,
        }
    }

    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        if index != MSIX_IRQ_INDEX {
            return match request {
                IrqRequest::DisableAll => Ok(()),
                _ => Err(Errno::EINVAL),
            };
        }
        match request {
            IrqRequest::Eventfds {
                action: IrqAction::Trigger,
                start,
                fds,
            } => {
                self.msix.set_eventfds(start, fds);
                Ok(())
            }
            // Signalling an eventfd on mask/unmask is not supported.
            IrqRequest::Eventfds { .. } => Err(Errno::ENOTSUP),
            IrqRequest::Action {
                action,
                start,
                count,
                mask,
            } => {
                match action {
                    IrqAction::Mask => self.msix.set_masked(start, count, mask.as_deref(), true),
                    IrqAction::Unmask => self.msix.set_masked(start, count, mask.as_deref(), false),
                    IrqAction::Trigger => self.msix.trigger(start, count),
                }
                Ok(())
            }
            IrqRequest::DisableAll => {
                self.msix.drop_eventfds();
                Ok(())
            }
        }
    }

    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.space
            .map_memory(region.iova, region.memory)
            .map_err(|e| match e {
                MapError::Overlap { .. } => Errno::EEXIST,
                _ => Errno::EINVAL,
            })
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        self.space.unmap(iova, size).map_err(|_| Errno::EINVAL)
    }

    fn reset(&self) -> Result<(), Errno> {
        self.function_reset();
        Ok(())
    }

    fn disconnected(&self) {
        self.space.unmap_all();
        self.msix.drop_eventfds();
    }

    fn migration(&self) -> Option<&dyn Migratable> {
        self.migration.as_ref().map(|m| m as &dyn Migratable)
    }
}
