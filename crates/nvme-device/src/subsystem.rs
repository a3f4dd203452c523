//! The NVM subsystem: its identity, its namespaces and its controllers.

use std::io;
use std::sync::Arc;

use crate::backend::Backend;
use crate::controller::Controller;
use crate::controller::ControllerConfig;
use crate::controller::Role;
use crate::controller::SubsystemIdentity;
use crate::memory::DmaMemory;
use crate::namespace::BlockSize;
use crate::namespace::Namespace;
use crate::namespace::NamespaceError;
use crate::namespace::NamespaceIdentity;

/// CNTLID of the primary controller.
pub const PRIMARY_CNTLID: u16 = 1;

/// The CNTLID of the secondary controller behind virtual function `vfn` (1-based).
pub const fn secondary_cntlid(vfn: u16) -> u16 {
    PRIMARY_CNTLID + vfn
}

/// Which controllers a namespace is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Private to the secondary controller behind virtual function `vfn`.
    Private {
        /// Virtual function number (1-based).
        vfn: u16,
    },
    /// Shared by the primary controller and every secondary controller, so the primary can read
    /// what a guest wrote (user-data migration over shared storage).
    Shared,
}

/// One namespace to create.
#[derive(Clone, Debug)]
pub struct NamespaceSpec {
    /// Storage.
    pub backend: Arc<dyn Backend>,
    /// Logical block size.
    pub block_size: BlockSize,
    /// Which controllers see the namespace.
    pub attachment: Attachment,
}

/// How to build a subsystem.
#[derive(Clone, Debug)]
pub struct SubsystemConfig {
    /// Identity strings reported by every controller.
    pub identity: SubsystemIdentity,
    /// Number of secondary controllers (virtual functions).
    pub secondaries: u16,
    /// Limits applied to every controller (the CNTLID and role are filled in per controller).
    pub limits: ControllerConfig,
}

impl SubsystemConfig {
    /// A subsystem named `name` with `secondaries` virtual functions and default limits.
    pub fn new(name: &str, secondaries: u16) -> Self {
        Self {
            identity: SubsystemIdentity {
                nqn: format!("nqn.2026-11.io.vfio-nvme:{name}"),
                serial: format!("VFNVME-{name}"),
                model: "vfio-nvme live-migratable controller".to_owned(),
                firmware: env!("CARGO_PKG_VERSION").to_owned(),
            },
            secondaries,
            limits: ControllerConfig::new(0, Role::Primary),
        }
    }
}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SubsystemError {
    /// A namespace is invalid.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A private namespace names a virtual function that does not exist.
    #[error("namespace {nsid} is attached to VF {vfn}, but the subsystem has {count} VFs")]
    NoSuchVf {
        /// Namespace identifier.
        nsid: u32,
        /// The requested virtual function.
        vfn: u16,
        /// How many virtual functions exist.
        count: u16,
    },
    /// A controller could not be started.
    #[error("cannot start a controller: {0}")]
    Io(#[from] io::Error),
}

/// An NVM subsystem with one primary controller and its secondary controllers.
#[derive(Debug)]
pub struct Subsystem {
    identity: Arc<SubsystemIdentity>,
    namespaces: Vec<Arc<Namespace>>,
    primary: Controller,
    secondaries: Vec<Arc<Controller>>,
}

impl Subsystem {
    /// Builds the subsystem. Namespaces get NSIDs 1, 2, … in order. `memory(cntlid)` supplies the
    /// guest memory each controller reaches (the PF's host memory, each VF's guest memory).
    pub fn new(
        config: SubsystemConfig,
        namespaces: Vec<NamespaceSpec>,
        mut memory: impl FnMut(u16) -> Arc<dyn DmaMemory>,
    ) -> Result<Self, SubsystemError> {
        let identity = Arc::new(config.identity);
        let mut built = Vec::new();
        for (i, spec) in namespaces.into_iter().enumerate() {
            let nsid = i as u32 + 1;
            if let Attachment::Private { vfn } = spec.attachment
                && (vfn == 0 || vfn > config.secondaries)
            {
                return Err(SubsystemError::NoSuchVf {
                    nsid,
                    vfn,
                    count: config.secondaries,
                });
            }
            let ns = Namespace::new(
                nsid,
                spec.backend,
                spec.block_size,
                spec.attachment == Attachment::Shared,
                NamespaceIdentity::derive(&identity.serial, nsid),
            )?;
            built.push((Arc::new(ns), spec.attachment));
        }
        let attached = |role: Role| -> Vec<Option<Arc<Namespace>>> {
            built
                .iter()
                .map(|(ns, attachment)| {
                    let visible = match (attachment, role) {
                        (Attachment::Shared, _) => true,
                        (Attachment::Private { vfn }, Role::Secondary { vfn: v }) => *vfn == v,
                        (Attachment::Private { .. }, Role::Primary) => false,
                    };
                    visible.then(|| ns.clone())
                })
                .collect()
        };
        let controller = |role: Role, cntlid: u16, mem: Arc<dyn DmaMemory>| {
            let mut cfg = config.limits.clone();
            cfg.cntlid = cntlid;
            cfg.role = role;
            Controller::new(cfg, identity.clone(), attached(role), mem)
        };
        let primary = controller(Role::Primary, PRIMARY_CNTLID, memory(PRIMARY_CNTLID))?;
        let mut secondaries = Vec::new();
        for vfn in 1..=config.secondaries {
            let cntlid = secondary_cntlid(vfn);
            secondaries.push(Arc::new(controller(
                Role::Secondary { vfn },
                cntlid,
                memory(cntlid),
            )?));
        }
        let pairs: Vec<(u16, &Controller)> = secondaries
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u16 + 1, c.as_ref()))
            .collect();
        primary.set_secondaries(&pairs);
        Ok(Self {
            identity,
            namespaces: built.into_iter().map(|(ns, _)| ns).collect(),
            primary,
            secondaries,
        })
    }

    /// The subsystem's identity.
    pub fn identity(&self) -> &SubsystemIdentity {
        &self.identity
    }

    /// Every namespace, in NSID order.
    pub fn namespaces(&self) -> &[Arc<Namespace>] {
        &self.namespaces
    }

    /// The primary controller.
    pub fn primary(&self) -> &Controller {
        &self.primary
    }

    /// The secondary controller behind virtual function `vfn` (1-based).
    pub fn secondary(&self, vfn: u16) -> Option<&Arc<Controller>> {
        self.secondaries.get(usize::from(vfn).checked_sub(1)?)
    }

    /// Every secondary controller, in VFN order.
    pub fn secondaries(&self) -> &[Arc<Controller>] {
        &self.secondaries
    }
}
