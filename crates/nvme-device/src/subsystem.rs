//! The NVM subsystem: its identity, its namespaces and its controllers.
//!
//! A subsystem has one primary controller and its secondary controllers, one per virtual
//! function, managed with SR-IOV's Virtualization Management ([`crate::sriov`]). The primary
//! controller is reached through its PCI function ([`Subsystem::primary`]) and, for the
//! server's own use, through private admin ports ([`Subsystem::open_private_port`]): the same
//! controller (CNTLID 1, the same secondaries, namespaces and SR-IOV state), with a register
//! file, admin queue and DMA memory of its own, so that two hosts — a client of the PF and the
//! server's migration driver — can manage the secondaries at once without sharing a queue.
//! What a port creates is its own: its Controller Data Queues (and their CDQIDs), its Set
//! Controller State transfers, its asynchronous events. What it does to a secondary, every port
//! sees: a secondary suspended through one port is suspended for all (Migration Receive reports
//! it), and one online, offline or assigned through one is so for all.

use std::io;
use std::sync::Arc;

use crate::backend::Backend;
use crate::controller::Controller;
use crate::controller::ControllerConfig;
use crate::controller::DoorbellDelivery;
use crate::controller::Role;
use crate::controller::SubsystemIdentity;
use crate::memory::DmaMemory;
use crate::namespace::BlockSize;
use crate::namespace::Namespace;
use crate::namespace::NamespaceError;
use crate::namespace::NamespaceIdentity;
use crate::sriov::Link;
use crate::sriov::Port;
use crate::sriov::SecondaryStart;
use crate::sriov::Sriov;

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
    /// The state the secondary controllers start in.
    pub secondary_start: SecondaryStart,
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
            secondary_start: SecondaryStart::Online,
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
    /// The namespaces the primary controller sees, indexed by NSID − 1 (for its ports).
    primary_namespaces: Vec<Option<Arc<Namespace>>>,
    primary: Arc<Controller>,
    secondaries: Vec<Arc<Controller>>,
    sriov: Arc<Sriov>,
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
        let primary = Arc::new(controller(
            Role::Primary,
            PRIMARY_CNTLID,
            memory(PRIMARY_CNTLID),
        )?);
        let mut secondaries = Vec::new();
        for vfn in 1..=config.secondaries {
            let cntlid = secondary_cntlid(vfn);
            secondaries.push(Arc::new(controller(
                Role::Secondary { vfn },
                cntlid,
                memory(cntlid),
            )?));
        }
        let ids: Vec<(u16, u16)> = secondaries
            .iter()
            .enumerate()
            .map(|(i, c)| (c.cntlid(), i as u16 + 1))
            .collect();
        let sriov = Arc::new(Sriov::new(&config.limits, &ids, config.secondary_start));
        for c in &secondaries {
            c.set_offered(sriov.secondary_offered(c.cntlid()));
        }
        let subsystem = Self {
            identity,
            primary_namespaces: attached(Role::Primary),
            namespaces: built.into_iter().map(|(ns, _)| ns).collect(),
            primary,
            secondaries,
            sriov,
        };
        subsystem.manage(&subsystem.primary, Port::Function);
        Ok(subsystem)
    }

    /// Makes `port` a primary controller port managing every secondary controller.
    fn manage(&self, port: &Controller, kind: Port) {
        let pairs: Vec<(u16, &Controller)> = self
            .secondaries
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u16 + 1, c.as_ref()))
            .collect();
        port.set_secondaries(&pairs);
        port.link_sriov(Link {
            sriov: self.sriov.clone(),
            port: kind,
        });
    }

    /// Opens a private admin port of the primary controller whose DMA reaches `mem`: a
    /// controller of its own (registers, admin queue, workers) that is the primary controller
    /// to every command it runs, for a host inside the server (its migration driver) that must
    /// not share the PCI function's admin queue with the PF's client. It holds no VQ or VI
    /// resources of the pool and offers the primary's configuration; what it creates (CDQs,
    /// Set Controller State transfers, events) is its own. Closing it is dropping it.
    pub fn open_private_port(&self, mem: Arc<dyn DmaMemory>) -> Result<Controller, SubsystemError> {
        // Its host reaches it by calls only: every doorbell write comes through
        // `write_register` and wakes the worker, which sleeps between commands instead of
        // polling a doorbell page nobody maps.
        let config = ControllerConfig {
            doorbells: DoorbellDelivery::Trapped,
            ..self.primary.config().clone()
        };
        let port = Controller::new(
            config,
            self.identity.clone(),
            self.primary_namespaces.clone(),
            mem,
        )?;
        self.manage(&port, Port::Private);
        Ok(port)
    }

    /// The subsystem's identity.
    pub fn identity(&self) -> &SubsystemIdentity {
        &self.identity
    }

    /// Every namespace, in NSID order.
    pub fn namespaces(&self) -> &[Arc<Namespace>] {
        &self.namespaces
    }

    /// The primary controller, as its PCI function reaches it.
    pub fn primary(&self) -> &Arc<Controller> {
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
