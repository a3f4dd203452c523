//! SR-IOV management of a subsystem: the flexible resources its primary controller shares with
//! its secondary controllers, whether each secondary is online, Virtualization Management
//! (admin opcode 1Ch) and the Identify structures that report all of it (CNS 14h Primary
//! Controller Capabilities, CNS 15h Secondary Controller List).
//!
//! # Resources
//!
//! Two resource types, as NVMe has them: **VQ** resources (one is a submission/completion queue
//! pair) and **VI** resources (one is an interrupt vector). Every controller has the same
//! hardware: [`ControllerConfig::io_queue_pairs`] I/O queue pairs plus the admin pair, and
//! [`ControllerConfig::msix_vectors`] vectors.
//!
//! * A secondary controller holds only flexible resources, at most its hardware
//!   (VQFRSM = I/O queue pairs + 1, VIFRSM = vectors). **NVQ counts the admin queue pair**, as in
//!   QEMU's model and the tools written against it: a secondary with NVQ = n offers its host
//!   n − 1 I/O queue pairs in Number of Queues, and NVI = m vectors in Create I/O Completion
//!   Queue and in its MSI-X table. Online needs NVQ ≥ 2 and NVI ≥ 1.
//! * The primary controller has [`PRIMARY_PRIVATE_QUEUE_PAIRS`] private queue pairs (admin
//!   included) and as many private vectors, and may be allocated flexible resources on top, up
//!   to its hardware (Primary Controller Flexible Allocation). The allocation takes effect at
//!   the next controller-level reset of the primary's PCI function, as a controller cannot
//!   change its number of queues while the host uses them.
//! * The flexible pool is what the secondaries can hold at most: VQFRT = secondaries × VQFRSM,
//!   and the same for VI. The primary's flexible resources come from what secondaries do not
//!   use (by default every secondary holds its maximum, so a secondary must give some up
//!   first). The pool is never over-committed: a pending allocation of the primary is
//!   reserved, and VQRFA + VQRFAP ≤ VQFRT always holds.
//!
//! # Online and offline
//!
//! Secondary Controller Offline resets the secondary controller (as a function-level reset
//! does) and **releases its flexible resources** (QEMU and vendor firmware agree). Until it is
//! back online it behaves as QEMU's model does: CSTS reads CFS and every other register 0
//! (CAP included), register writes are ignored, so CC.EN never brings CSTS.RDY, and TP4159
//! commands naming it are refused with Invalid Controller Identifier (a Resume with Controller
//! Not Suspended, which it is not: going offline lifts a suspension). Secondary Controller
//! Online resets it again, now offering the resources assigned. Resources may be assigned only
//! while it is offline. Online does not require the primary controller to be enabled: the
//! command itself arrives through an enabled admin queue of the primary, and a reset of the
//! primary's PCI function changes no secondary (their hosts are other guests).
//!
//! # Ports
//!
//! The primary controller may have more than one admin port (its PCI function, and the
//! server's private port for its own migration driver, see [`crate::subsystem`]). They share
//! this state; only the PCI function port counts against the pool and takes a pending
//! allocation at its reset.
//!
//! Lock order: a primary port's queue `state`, then the SR-IOV state's lock, then a secondary
//! controller's `state` (an Offline or Online resets the secondary with the lock held, so that
//! no other port can change it meanwhile).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU16;
use std::sync::atomic::Ordering;

use nvme_spec::command::Command;
use nvme_spec::command::VirtualizationAction;
use nvme_spec::command::VirtualizationManagementCdw10;
use nvme_spec::command::VirtualizationManagementCdw11;
use nvme_spec::command::VirtualizationResource;
use nvme_spec::identify::Crt;
use nvme_spec::identify::PrimaryControllerCapabilities;
use nvme_spec::identify::SecondaryControllerEntry;
use nvme_spec::identify::SecondaryControllerList;
use nvme_spec::status::Status;
use zerocopy::FromZeros;

use crate::controller::ControllerConfig;
use crate::controller::Inner;

/// Queue pairs (the admin pair included) and vectors private to the primary controller.
pub const PRIMARY_PRIVATE_QUEUE_PAIRS: u16 = 17;

/// The state secondary controllers start in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecondaryStart {
    /// Online, each with every resource its hardware can use assigned: a VF works at once, as
    /// without SR-IOV management.
    #[default]
    Online,
    /// Offline with no resources, as QEMU's model and real devices start: the host of the PF
    /// assigns resources and brings each secondary online with Virtualization Management.
    Offline,
}

/// What a controller offers its host now: the I/O queue pairs of Number of Queues and the
/// interrupt vectors of Create I/O Completion Queue and the MSI-X table. For a secondary
/// controller it follows the resources assigned to it; kept as atomics so register reads and
/// the PCI face read it without a lock.
#[derive(Debug)]
pub(crate) struct Offered {
    offline: AtomicBool,
    queue_pairs: AtomicU16,
    vectors: AtomicU16,
}

impl Offered {
    /// An online controller offering its whole `config`.
    pub(crate) fn new(config: &ControllerConfig) -> Self {
        Self {
            offline: AtomicBool::new(false),
            queue_pairs: AtomicU16::new(config.io_queue_pairs),
            vectors: AtomicU16::new(config.msix_vectors),
        }
    }

    /// Whether the controller is an offline secondary controller.
    pub(crate) fn offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// I/O queue pairs offered.
    pub(crate) fn queue_pairs(&self) -> u16 {
        self.queue_pairs.load(Ordering::Acquire)
    }

    /// Interrupt vectors offered.
    pub(crate) fn vectors(&self) -> u16 {
        self.vectors.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, queue_pairs: u16, vectors: u16) {
        self.queue_pairs.store(queue_pairs, Ordering::Release);
        self.vectors.store(vectors, Ordering::Release);
    }

    /// A secondary controller online offering (queue pairs, vectors), or offline (`None`,
    /// offering nothing).
    pub(crate) fn assign(&self, offer: Option<(u16, u16)>) {
        let (queue_pairs, vectors) = offer.unwrap_or((0, 0));
        self.set(queue_pairs, vectors);
        self.offline.store(offer.is_none(), Ordering::Release);
    }
}

/// The two resource types, as indices into per-type arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Vq = 0,
    Vi = 1,
}

impl Kind {
    /// The type CDW10.RT names, or Invalid Resource Identifier.
    fn of(rt: VirtualizationResource) -> Result<Self, Status> {
        match rt {
            VirtualizationResource::QUEUE => Ok(Kind::Vq),
            VirtualizationResource::INTERRUPT => Ok(Kind::Vi),
            _ => Err(Status::INVALID_RESOURCE_IDENTIFIER),
        }
    }
}

/// The capacity of one resource type, fixed when the subsystem is built.
#[derive(Clone, Copy, Debug)]
struct Pool {
    /// Flexible total (VQFRT, VIFRT).
    flexible: u32,
    /// The primary's private resources (VQPRT, VIPRT).
    private: u16,
    /// The most one secondary may be assigned (VQFRSM, VIFRSM): its hardware.
    secondary_max: u16,
    /// The most flexible resources the primary can use on top of its private ones.
    primary_max: u16,
}

/// One secondary controller's entry.
#[derive(Clone, Copy, Debug)]
struct SecondaryEntry {
    cntlid: u16,
    vfn: u16,
    online: bool,
    /// NVQ and NVI.
    assigned: [u16; 2],
}

/// What is assigned and allocated now.
#[derive(Debug)]
struct Assignment {
    /// Flexible resources allocated to the primary and in effect (VQRFAP, VIRFAP).
    primary: [u16; 2],
    /// What the last Primary Controller Flexible Allocation asked for, in effect from the
    /// primary function's next reset.
    primary_next: [u16; 2],
    secondaries: Vec<SecondaryEntry>,
}

impl Assignment {
    /// Flexible resources of `kind` assigned to secondaries (VQRFA, VIRFA).
    fn assigned(&self, kind: Kind) -> u32 {
        self.secondaries
            .iter()
            .map(|s| u32::from(s.assigned[kind as usize]))
            .sum()
    }

    /// Flexible resources of `kind` held for the primary: in effect, or asked for.
    fn reserved(&self, kind: Kind) -> u32 {
        u32::from(self.primary[kind as usize].max(self.primary_next[kind as usize]))
    }

    fn secondary(&mut self, cntlid: u16) -> Result<&mut SecondaryEntry, Status> {
        self.secondaries
            .iter_mut()
            .find(|s| s.cntlid == cntlid)
            .ok_or(Status::INVALID_CONTROLLER_IDENTIFIER)
    }
}

/// The SR-IOV management state of a subsystem, shared by the primary controller's ports.
#[derive(Debug)]
pub(crate) struct Sriov {
    pools: [Pool; 2],
    state: Mutex<Assignment>,
}

/// Which admin port of the primary controller a link belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    /// The PCI function: its resources come from the pool.
    Function,
    /// A private port (the server's own migration driver): not a PCI function, holds nothing
    /// of the pool and uses its admin queue only.
    Private,
}

/// A primary controller port's link to its subsystem's SR-IOV state.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) sriov: Arc<Sriov>,
    pub(crate) port: Port,
}

impl Link {
    /// A controller reset of the port: a PCI function port takes the pending allocation and
    /// offers what it gives (a private port keeps offering its configuration).
    pub(crate) fn reset_port(&self, offered: &Offered) {
        if self.port == Port::Function {
            let (queue_pairs, vectors) = self.sriov.apply_primary_allocation();
            offered.set(queue_pairs, vectors);
        }
    }
}

impl Sriov {
    /// The state of a subsystem whose controllers have `limits`, with `secondaries` as
    /// (CNTLID, VFN), all starting as `start` says.
    pub(crate) fn new(
        limits: &ControllerConfig,
        secondaries: &[(u16, u16)],
        start: SecondaryStart,
    ) -> Self {
        let count = secondaries.len() as u32;
        let hardware = [limits.io_queue_pairs + 1, limits.msix_vectors];
        let pools = [Kind::Vq, Kind::Vi].map(|kind| {
            let hardware = hardware[kind as usize];
            let private = PRIMARY_PRIVATE_QUEUE_PAIRS.min(hardware);
            let primary_max = hardware - private;
            Pool {
                flexible: count * u32::from(hardware),
                private,
                secondary_max: hardware,
                primary_max,
            }
        });
        let assigned = match start {
            SecondaryStart::Online => [pools[0].secondary_max, pools[1].secondary_max],
            SecondaryStart::Offline => [0, 0],
        };
        let secondaries = secondaries
            .iter()
            .map(|&(cntlid, vfn)| SecondaryEntry {
                cntlid,
                vfn,
                online: start == SecondaryStart::Online,
                assigned,
            })
            .collect();
        Self {
            pools,
            state: Mutex::new(Assignment {
                primary: [0, 0],
                primary_next: [0, 0],
                secondaries,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Assignment> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the primary's PCI function offers with the allocation in effect: I/O queue pairs
    /// (its private and allocated VQ resources less the admin pair) and vectors.
    fn primary_offer(&self, state: &Assignment) -> (u16, u16) {
        let [vq, vi] = [Kind::Vq, Kind::Vi]
            .map(|k| self.pools[k as usize].private + state.primary[k as usize]);
        (vq.saturating_sub(1), vi)
    }

    /// A controller-level reset of the primary's PCI function: the pending allocation takes
    /// effect. Returns what the function offers from now on.
    pub(crate) fn apply_primary_allocation(&self) -> (u16, u16) {
        let mut state = self.lock();
        state.primary = state.primary_next;
        self.primary_offer(&state)
    }

    /// What secondary `cntlid` offers when online with its assigned resources, as (I/O queue
    /// pairs, vectors), or `None` if it is offline or no secondary.
    pub(crate) fn secondary_offered(&self, cntlid: u16) -> Option<(u16, u16)> {
        let state = self.lock();
        let s = state.secondaries.iter().find(|s| s.cntlid == cntlid)?;
        s.online
            .then(|| (s.assigned[0].saturating_sub(1), s.assigned[1]))
    }
}

/// Virtualization Management (1Ch) on primary port `inner`, with the port's `state` held.
/// Returns the Number of Controller Resources Modified (CQE DW0) for the actions that assign.
pub(crate) fn virtualization_management(inner: &Inner, cmd: &Command) -> Result<u32, Status> {
    let link = inner.sriov().ok_or(Status::INVALID_FIELD_IN_COMMAND)?;
    let sriov = &link.sriov;
    let cdw10 = VirtualizationManagementCdw10::from(cmd.cdw10);
    let nr = VirtualizationManagementCdw11::from(cmd.cdw11).nr();
    let cntlid = cdw10.cntlid();
    let mut state = sriov.lock();
    match cdw10.act() {
        VirtualizationAction::PRIMARY_FLEXIBLE_ALLOCATION => {
            if cntlid != inner.config.cntlid {
                return Err(Status::INVALID_CONTROLLER_IDENTIFIER);
            }
            let kind = Kind::of(cdw10.rt())?;
            let pool = sriov.pools[kind as usize];
            if nr > pool.primary_max {
                return Err(Status::INVALID_NUMBER_OF_CONTROLLER_RESOURCES);
            }
            if u32::from(nr) > pool.flexible.saturating_sub(state.assigned(kind)) {
                return Err(Status::INVALID_RESOURCE_IDENTIFIER);
            }
            state.primary_next[kind as usize] = nr;
            Ok(u32::from(nr))
        }
        VirtualizationAction::SECONDARY_ASSIGN => {
            let entry = *state.secondary(cntlid)?;
            if entry.online {
                return Err(Status::INVALID_SECONDARY_CONTROLLER_STATE);
            }
            let kind = Kind::of(cdw10.rt())?;
            let pool = sriov.pools[kind as usize];
            if nr > pool.secondary_max {
                return Err(Status::INVALID_NUMBER_OF_CONTROLLER_RESOURCES);
            }
            // What is free, plus what this secondary holds now (the assignment replaces it).
            let available = pool
                .flexible
                .saturating_sub(state.assigned(kind) + state.reserved(kind))
                + u32::from(entry.assigned[kind as usize]);
            if u32::from(nr) > available {
                return Err(Status::INVALID_RESOURCE_IDENTIFIER);
            }
            state.secondary(cntlid)?.assigned[kind as usize] = nr;
            Ok(u32::from(nr))
        }
        VirtualizationAction::SECONDARY_OFFLINE => {
            let entry = state.secondary(cntlid)?;
            let was_online = entry.online;
            entry.online = false;
            entry.assigned = [0, 0];
            if was_online && let Some(vf) = inner.secondary(cntlid) {
                vf.take_offline();
            }
            Ok(0)
        }
        VirtualizationAction::SECONDARY_ONLINE => {
            let entry = state.secondary(cntlid)?;
            if !entry.online {
                let [nvq, nvi] = entry.assigned;
                if nvq < 2 || nvi < 1 {
                    return Err(Status::INVALID_SECONDARY_CONTROLLER_STATE);
                }
                entry.online = true;
                if let Some(vf) = inner.secondary(cntlid) {
                    vf.bring_online(nvq - 1, nvi);
                }
            }
            Ok(0)
        }
        _ => Err(Status::INVALID_FIELD_IN_COMMAND),
    }
}

/// Identify Primary Controller Capabilities (CNS 14h) of primary port `inner`.
pub(crate) fn capabilities(inner: &Inner) -> Option<PrimaryControllerCapabilities> {
    let sriov = &inner.sriov()?.sriov;
    let state = sriov.lock();
    let [vq, vi] = sriov.pools;
    let mut caps = PrimaryControllerCapabilities::new_zeroed();
    caps.cntlid = inner.config.cntlid;
    caps.crt = Crt::new().with_vq(true).with_vi(true);
    caps.vqfrt = vq.flexible;
    caps.vqrfa = state.assigned(Kind::Vq);
    caps.vqrfap = state.primary[Kind::Vq as usize];
    caps.vqprt = vq.private;
    caps.vqfrsm = vq.secondary_max;
    caps.vqgran = 1;
    caps.vifrt = vi.flexible;
    caps.virfa = state.assigned(Kind::Vi);
    caps.virfap = state.primary[Kind::Vi as usize];
    caps.viprt = vi.private;
    caps.vifrsm = vi.secondary_max;
    caps.vigran = 1;
    Some(caps)
}

/// The Secondary Controller List (CNS 15h) of primary port `inner`, from CNTLID `first` on.
pub(crate) fn secondary_list(inner: &Inner, first: u16) -> SecondaryControllerList {
    let entries: Vec<SecondaryControllerEntry> = inner
        .sriov()
        .map(|link| {
            link.sriov
                .lock()
                .secondaries
                .iter()
                .filter(|s| s.cntlid >= first)
                .map(|s| {
                    let mut entry = SecondaryControllerEntry::new_zeroed();
                    entry.scid = s.cntlid;
                    entry.pcid = inner.config.cntlid;
                    entry.scs = u8::from(s.online);
                    entry.vfn = s.vfn;
                    entry.nvq = s.assigned[0];
                    entry.nvi = s.assigned[1];
                    entry
                })
                .collect()
        })
        .unwrap_or_default();
    SecondaryControllerList::from_entries(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Role;

    fn limits() -> ControllerConfig {
        ControllerConfig::new(0, Role::Primary)
    }

    #[test]
    fn pools_hold_exactly_what_every_controller_can_use() {
        let sriov = Sriov::new(&limits(), &[(2, 1), (3, 2)], SecondaryStart::Online);
        // 64 I/O pairs + admin and 65 vectors per controller; the primary keeps 17 private.
        for pool in sriov.pools {
            assert_eq!(pool.secondary_max, 65);
            assert_eq!(pool.private, PRIMARY_PRIVATE_QUEUE_PAIRS);
            assert_eq!(pool.primary_max, 48);
            assert_eq!(pool.flexible, 2 * 65);
        }
        assert_eq!(sriov.secondary_offered(2), Some((64, 65)));
        assert_eq!(sriov.primary_offer(&sriov.lock()), (16, 17));
        let offline = Sriov::new(&limits(), &[(2, 1)], SecondaryStart::Offline);
        assert_eq!(offline.secondary_offered(2), None);
    }

    #[test]
    fn small_controllers_keep_their_hardware_private() {
        let mut small = limits();
        small.io_queue_pairs = 4;
        small.msix_vectors = 5;
        let sriov = Sriov::new(&small, &[(2, 1)], SecondaryStart::Online);
        assert_eq!(sriov.pools[0].private, 5);
        assert_eq!(sriov.pools[0].primary_max, 0);
        assert_eq!(sriov.pools[0].flexible, 5);
        assert_eq!(sriov.pools[1].flexible, 5);
        assert_eq!(sriov.primary_offer(&sriov.lock()), (4, 5));
    }

    #[test]
    fn a_pending_allocation_takes_effect_at_the_reset() {
        let sriov = Sriov::new(&limits(), &[(2, 1)], SecondaryStart::Online);
        sriov.lock().primary_next = [48, 10];
        assert_eq!(sriov.primary_offer(&sriov.lock()), (16, 17));
        assert_eq!(sriov.apply_primary_allocation(), (64, 27));
        assert_eq!(sriov.primary_offer(&sriov.lock()), (64, 27));
    }
}
