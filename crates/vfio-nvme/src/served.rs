//! Everything a `vfio-nvme serve` process hosts, wired together: a subsystem, its primary
//! controller driven in-process for TP4159 (through a private admin port), one migratable PCI
//! function per virtual function and, when asked, the primary controller's own PCI function.

use std::path::PathBuf;
use std::sync::Arc;

use nvme_device::backend::Backend;
use nvme_device::backend::FileAio;
use nvme_device::backend::FileBackend;
use nvme_device::backend::NullBackend;
use nvme_device::backend::RamBackend;
use nvme_device::controller::ControllerConfig;
use nvme_device::controller::DoorbellDelivery;
use nvme_device::controller::MigrationOffer;
use nvme_device::controller::PollPolicy;
use nvme_device::memory::DmaMemory;
use nvme_device::namespace::BlockSize;
use nvme_device::namespace::Namespace;
use nvme_device::sriov::SecondaryStart;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::PRIMARY_CNTLID;
use nvme_device::subsystem::Subsystem;
use nvme_device::subsystem::SubsystemConfig;
use shmem::AddressSpace;
use vfu::server::DeviceMigration;

use crate::migration::admin::InProcessPrimary;
use crate::migration::admin::LmAdmin;
use crate::migration::driver::NvmeMigration;
use crate::migration::tp4159;
use crate::migration::user_data::InProcessUserData;
use crate::pf::PfDevice;
use crate::stream::DeviceGeometry;
use crate::stream::StreamHeader;
use crate::vf::VfDevice;

/// Where a namespace keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    /// RAM of `size` bytes: sparse (pages allocated as they are written), or with `prealloc`
    /// every page allocated at start ([`RamBackend::preallocated`]).
    Ram {
        /// Bytes.
        size: u64,
        /// Allocate every page at start, so writes (a migration into the namespace above all)
        /// take no page faults.
        prealloc: bool,
    },
    /// A file or block device; `size` creates or extends a regular file.
    File {
        /// Path of the file.
        path: PathBuf,
        /// Size to create the file with, if given.
        size: Option<u64>,
        /// Bypass the page cache (`O_DIRECT`).
        direct: bool,
        /// How guest I/O reaches the file (io_uring, I/O threads, or inline in the pass).
        aio: FileAio,
        /// With io_uring on a buffered file, whether the worker writes to the page cache itself
        /// while that does not block it (`inline-writes=on`, the default).
        inline_writes: bool,
    },
    /// Reads zeros, drops writes; this many bytes.
    Null(u64),
}

/// One namespace to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Storage.
    pub backend: BackendConfig,
    /// Logical block size.
    pub block_size: BlockSize,
    /// Shared: one namespace attached to the PF and every VF, on storage both ends of a
    /// migration reach, so its data is not copied. Private (the default): each VF gets its own
    /// namespace, whose data travels in the migration stream.
    pub shared: bool,
}

/// What to serve.
#[derive(Clone, Debug, Default)]
pub struct ServeConfig {
    /// Subsystem name (part of the NQN and serial number).
    pub name: String,
    /// Number of virtual functions.
    pub vfs: u16,
    /// Namespaces.
    pub namespaces: Vec<NamespaceConfig>,
    /// Also serve the primary controller's PCI function ([`Served::primary_function`]).
    pub serve_pf: bool,
    /// The state the secondary controllers start in (online with all their resources unless
    /// the PF's host is to bring them up).
    pub secondary_start: SecondaryStart,
    /// What the primary controller offers for migration (by default everything; less to stand
    /// in for a third-party TP4159 PF, e.g. NVMe state v0 only).
    pub migration: MigrationOffer,
    /// I/O worker threads per controller (0 is taken as 1).
    pub io_workers: u16,
    /// How the I/O workers wait between passes.
    pub poll: PollPolicy,
    /// Whether the client maps the doorbell page (shared) or every doorbell write comes as a
    /// message (trapped), which lets idle workers sleep until one does.
    pub doorbells: DoorbellDelivery,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A namespace backend could not be created.
    #[error("namespace {index}: {source}")]
    Backend {
        /// Position of the namespace in the configuration (1-based).
        index: usize,
        /// The cause.
        source: std::io::Error,
    },
    /// A private file namespace with several VFs would put several namespaces in one file.
    #[error(
        "namespace {index}: a private file namespace cannot be given to {vfs} VFs; mark it shared \
         or serve one VF"
    )]
    FileForManyVfs {
        /// Position of the namespace in the configuration (1-based).
        index: usize,
        /// Number of VFs.
        vfs: u16,
    },
    /// The subsystem could not be built.
    #[error(transparent)]
    Subsystem(#[from] nvme_device::subsystem::SubsystemError),
    /// The primary controller or a migration driver could not be set up.
    #[error("setting up live migration: {0}")]
    Migration(String),
}

/// VF `vfn` of `subsystem` (whose controllers have `limits`) as a migratable PCI function: its
/// migration driver carries out the arcs through `primary` on the secondary controller the
/// PF's Secondary Controller List names for `vfn`, and moves the data of `namespaces`
/// (those attached to the VF) and the function's PCI face; the function reaches guest memory,
/// and DMA logging watches it, through `space`.
pub fn migratable_function(
    subsystem: &Arc<Subsystem>,
    limits: &ControllerConfig,
    primary: &Arc<dyn LmAdmin>,
    vfn: u16,
    space: Arc<AddressSpace>,
    namespaces: Vec<Arc<Namespace>>,
) -> Result<VfDevice, ServeError> {
    let header = StreamHeader {
        subsystem_nqn: subsystem.identity().nqn.clone(),
        serial: subsystem.identity().serial.clone(),
        geometry: DeviceGeometry {
            io_queue_pairs: limits.io_queue_pairs,
            mqes: (limits.max_queue_entries - 1) as u16,
            msix_vectors: limits.msix_vectors,
            mdts: limits.mdts,
            namespaces: Vec::new(),
        },
    };
    let device = VfDevice::new(subsystem.clone(), vfn, space.clone())
        .ok_or_else(|| ServeError::Migration(format!("VF {vfn} does not exist")))?;
    let cntlid = tp4159::secondary_cntlid(primary.as_ref(), vfn)
        .map_err(|e| ServeError::Migration(e.to_string()))?;
    let driver = NvmeMigration::new(
        primary.clone(),
        Arc::new(InProcessUserData::new(namespaces)),
        cntlid,
        header,
    )
    .map_err(|e| ServeError::Migration(e.to_string()))?
    .with_pci_face(device.pci_face().clone());
    let migration =
        DeviceMigration::new(driver, space).map_err(|e| ServeError::Migration(e.to_string()))?;
    Ok(device.with_migration(migration))
}

/// A subsystem and its served functions.
#[derive(Debug)]
pub struct Served {
    subsystem: Arc<Subsystem>,
    functions: Vec<Arc<VfDevice>>,
    primary_function: Option<Arc<PfDevice>>,
}

fn backend(index: usize, config: &BackendConfig) -> Result<Arc<dyn Backend>, ServeError> {
    let wrap = |source| ServeError::Backend { index, source };
    Ok(match config {
        BackendConfig::Ram { size, prealloc } => Arc::new(
            if *prealloc {
                RamBackend::preallocated(*size)
            } else {
                RamBackend::new(*size)
            }
            .map_err(wrap)?,
        ),
        BackendConfig::File {
            path,
            size,
            direct,
            aio,
            inline_writes,
        } => Arc::new(
            FileBackend::open(path, *size, *direct)
                .map_err(wrap)?
                .with_aio(*aio)
                .with_inline_writes(*inline_writes),
        ),
        BackendConfig::Null(size) => Arc::new(NullBackend::new(*size)),
    })
}

impl Served {
    /// Builds the subsystem, brings up its primary controller and makes every VF a migratable
    /// PCI function.
    pub fn new(config: &ServeConfig) -> Result<Self, ServeError> {
        let mut specs = Vec::new();
        // For each VF, the NSIDs (1-based positions in `specs`) attached to it.
        let mut attached: Vec<Vec<usize>> = vec![Vec::new(); usize::from(config.vfs)];
        for (i, ns) in config.namespaces.iter().enumerate() {
            let index = i + 1;
            if ns.shared {
                specs.push(NamespaceSpec {
                    backend: backend(index, &ns.backend)?,
                    block_size: ns.block_size,
                    attachment: Attachment::Shared,
                });
                let pos = specs.len() - 1;
                attached.iter_mut().for_each(|a| a.push(pos));
                continue;
            }
            if matches!(ns.backend, BackendConfig::File { .. }) && config.vfs > 1 {
                return Err(ServeError::FileForManyVfs {
                    index,
                    vfs: config.vfs,
                });
            }
            for vfn in 1..=config.vfs {
                specs.push(NamespaceSpec {
                    backend: backend(index, &ns.backend)?,
                    block_size: ns.block_size,
                    attachment: Attachment::Private { vfn },
                });
                attached[usize::from(vfn - 1)].push(specs.len() - 1);
            }
        }
        let spaces: Vec<Arc<AddressSpace>> = (0..=config.vfs)
            .map(|_| Arc::new(AddressSpace::new()))
            .collect();
        let mut subsystem_config = SubsystemConfig::new(&config.name, config.vfs);
        subsystem_config.secondary_start = config.secondary_start;
        subsystem_config.limits.migration = config.migration;
        subsystem_config.limits.io_workers = config.io_workers.max(1);
        subsystem_config.limits.poll = config.poll;
        subsystem_config.limits.doorbells = config.doorbells;
        let limits = subsystem_config.limits.clone();
        let subsystem = Arc::new(Subsystem::new(subsystem_config, specs, |cntlid| {
            let index = usize::from(cntlid - PRIMARY_CNTLID);
            spaces[index].clone() as Arc<dyn DmaMemory>
        })?);
        let mut functions = Vec::new();
        for vfn in 1..=config.vfs {
            // A private admin port of the primary per VF: a Suspend that waits for one VF's
            // in-flight backend I/O holds up no other VF's migration commands. An idle port
            // costs a sleeping thread (its doorbells are calls) and untouched host memory.
            let primary: Arc<dyn LmAdmin> = Arc::new(
                InProcessPrimary::new(&subsystem)
                    .map_err(|e| ServeError::Migration(e.to_string()))?,
            );
            let namespaces: Vec<Arc<Namespace>> = attached[usize::from(vfn - 1)]
                .iter()
                .map(|&pos| subsystem.namespaces()[pos].clone())
                .collect();
            let function = migratable_function(
                &subsystem,
                &limits,
                &primary,
                vfn,
                spaces[usize::from(vfn)].clone(),
                namespaces,
            )?;
            functions.push(Arc::new(function));
        }
        let primary_function = config
            .serve_pf
            .then(|| Arc::new(PfDevice::new(subsystem.clone(), spaces[0].clone())));
        Ok(Self {
            subsystem,
            functions,
            primary_function,
        })
    }

    /// The subsystem.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }

    /// The PCI function of VF `vfn` (1-based).
    pub fn function(&self, vfn: u16) -> Option<&Arc<VfDevice>> {
        self.functions.get(usize::from(vfn).checked_sub(1)?)
    }

    /// Every function, in VF order.
    pub fn functions(&self) -> &[Arc<VfDevice>] {
        &self.functions
    }

    /// The primary controller's PCI function, if it is served.
    pub fn primary_function(&self) -> Option<&Arc<PfDevice>> {
        self.primary_function.as_ref()
    }
}
