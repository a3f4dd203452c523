//! One NVMe controller as a PCI function over vfio-user: BAR0 (registers, the doorbell page as
//! a sparse-mmap area, the MSI-X table and PBA), configuration space, MSI-X interrupts and the
//! DMA windows the client maps. The VF face ([`crate::vf`]) and the PF face ([`crate::pf`]) are
//! an [`NvmeFunction`] plus what is theirs (live migration; the SR-IOV capability).
//!
//! The MSI-X capability's Table Size reports the vectors the controller offers now
//! ([`Controller::offered_vectors`]): a secondary controller's follow the VI resources assigned
//! to it, so a host that reads it (after an Online, say) sizes its vectors to what the
//! controller accepts. The table itself has room for the controller's configured vectors.

use std::sync::Arc;

use nvme_device::controller::Controller;
use nvme_device::controller::DoorbellDelivery;
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
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::RegionDescription;

use super::BAR0_SIZE;
use super::CONFIG_SIZE;
use super::DOORBELL_OFFSET;
use super::DOORBELL_SIZE;
use super::MSIX_PBA_OFFSET;
use super::MSIX_TABLE_OFFSET;
use super::config::ConfigSpace;
use super::face::PciFace;

/// What a region write asked of the function beyond the write itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Written {
    /// Nothing more.
    Done,
    /// A function-level reset (PCIe Device Control's Initiate FLR): the caller resets the
    /// function, including what is its own (e.g. the migration state).
    FunctionReset,
}

/// An NVMe controller presented as a PCI function.
pub struct NvmeFunction {
    controller: Arc<Controller>,
    space: Arc<AddressSpace>,
    /// Configuration space and MSI-X, which travel with a migration.
    face: Arc<PciFace>,
}

impl std::fmt::Debug for NvmeFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeFunction")
            .field("cntlid", &self.controller.cntlid())
            .finish()
    }
}

fn ok(done: bool) -> Result<(), Errno> {
    if done { Ok(()) } else { Err(Errno::EINVAL) }
}

impl NvmeFunction {
    /// `controller` as a PCI function with configuration space `config`, reaching guest memory
    /// through `space` (the address space the controller was built with); its interrupts go to
    /// the function's MSI-X vectors from now on.
    pub fn new(controller: Arc<Controller>, space: Arc<AddressSpace>, config: ConfigSpace) -> Self {
        let face = Arc::new(PciFace::with_config(
            config,
            controller.config().msix_vectors,
        ));
        controller.set_interrupt(face.msix().clone());
        Self {
            controller,
            space,
            face,
        }
    }

    /// The controller behind the function.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The guest memory the controller reaches.
    pub fn address_space(&self) -> &Arc<AddressSpace> {
        &self.space
    }

    /// The configuration space.
    pub fn config(&self) -> &ConfigSpace {
        self.face.config()
    }

    /// The configuration space and MSI-X state, for a migration driver to capture and restore.
    pub fn pci_face(&self) -> &Arc<PciFace> {
        &self.face
    }

    fn bar0_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if offset >= MSIX_PBA_OFFSET {
            return ok(self.face.msix().pba_read(offset - MSIX_PBA_OFFSET, buf));
        }
        if offset >= MSIX_TABLE_OFFSET {
            return ok(self.face.msix().table_read(offset - MSIX_TABLE_OFFSET, buf));
        }
        // Registers and doorbells: natural 4- or 8-byte accesses.
        let ctrl = &self.controller;
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
            return ok(self
                .face
                .msix()
                .table_write(offset - MSIX_TABLE_OFFSET, data));
        }
        let ctrl = &self.controller;
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

    fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let config = self.face.config();
        config.set_msix_table_size(self.controller.offered_vectors());
        ok(config.read(offset, buf))
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> Result<Written, Errno> {
        if ConfigSpace::is_flr(offset, data) {
            return Ok(Written::FunctionReset);
        }
        ok(self.face.write_config(offset, data))?;
        Ok(Written::Done)
    }

    /// A function-level reset of the PCI face: the controller, configuration space and MSI-X
    /// state. The caller resets what is its own first.
    pub fn reset(&self) {
        self.controller.reset();
        self.face.reset();
    }

    /// `DEVICE_GET_REGION_INFO`: BAR0 with its doorbell page mappable (unless the controller's
    /// doorbells are trapped), configuration space, every other region empty.
    pub fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        let rw = RegionInfoFlags::READ | RegionInfoFlags::WRITE;
        Some(match index {
            // Trapped doorbells: no mappable area, so every doorbell write comes as a message.
            BAR0_REGION_INDEX
                if self.controller.config().doorbells == DoorbellDelivery::Trapped =>
            {
                RegionDescription {
                    flags: rw,
                    size: BAR0_SIZE,
                    file_offset: 0,
                    caps: Vec::new(),
                    fd: None,
                }
            }
            BAR0_REGION_INDEX => {
                let doorbells = self.controller.doorbells();
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

    /// `REGION_READ`.
    pub fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        match index {
            BAR0_REGION_INDEX => self.bar0_read(offset, buf),
            CONFIG_REGION_INDEX => self.config_read(offset, buf),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `REGION_WRITE`; a function-level reset it asks for is the caller's to carry out.
    pub fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<Written, Errno> {
        match index {
            BAR0_REGION_INDEX => self.bar0_write(offset, data).map(|()| Written::Done),
            CONFIG_REGION_INDEX => self.config_write(offset, data),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Whether a `REGION_WRITE` of `len` bytes at `offset` in region `index` returns at once
    /// (see [`vfu::server::Device::write_returns_at_once`]): a doorbell, which only stores the
    /// value and wakes the worker that owns the queue.
    pub fn write_returns_at_once(&self, index: u32, offset: u64, len: u64) -> bool {
        index == BAR0_REGION_INDEX
            && len == 4
            && offset.is_multiple_of(4)
            && (DOORBELL_OFFSET..DOORBELL_OFFSET + DOORBELL_SIZE).contains(&offset)
    }

    /// `DEVICE_GET_IRQ_INFO`: MSI-X only.
    pub fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        match index {
            MSIX_IRQ_INDEX => Some((
                self.face.msix().count(),
                (IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE).bits(),
            )),
            // INTx, MSI, ERR and REQ are not offered: the function interrupts with MSI-X only.
            i if i < NUM_IRQS => Some((0, 0)),
            _ => None,
        }
    }

    /// `DEVICE_SET_IRQS`.
    pub fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
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
                self.face.msix().set_eventfds(start, fds);
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
                    IrqAction::Mask => {
                        self.face
                            .msix()
                            .set_masked(start, count, mask.as_deref(), true)
                    }
                    IrqAction::Unmask => {
                        self.face
                            .msix()
                            .set_masked(start, count, mask.as_deref(), false)
                    }
                    IrqAction::Trigger => self.face.msix().trigger(start, count),
                }
                Ok(())
            }
            IrqRequest::DisableAll => {
                self.face.msix().drop_eventfds();
                Ok(())
            }
        }
    }

    /// `DMA_MAP`: the window joins the controller's address space (mapped, or reached through
    /// the client's file or DMA_READ/WRITE, as the server decided).
    pub fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.space
            .map_memory(region.iova, region.memory)
            .map_err(|e| match e {
                MapError::Overlap { .. } => Errno::EEXIST,
                _ => Errno::EINVAL,
            })
    }

    /// `DMA_UNMAP` of exactly one window.
    pub fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        self.space.unmap(iova, size).map_err(|_| Errno::EINVAL)
    }

    /// The client went away: its windows and eventfds go, the device state stays.
    pub fn disconnected(&self) {
        self.space.unmap_all();
        self.face.msix().drop_eventfds();
    }
}
