//! One NVMe controller: register file, queues, command execution, its I/O thread and its save
//! format.
//!
//! * `registers` is the register file in BAR0 and its side effects (enable, reset, shutdown);
//! * `clock` is the controller's running time (Power On Hours, Timestamp), stopped while
//!   suspended;
//! * `worker` is an I/O worker thread, owning a group of I/O queue pairs: doorbells, fetch,
//!   asynchronous backend requests (`inflight`), completions, interrupts; `poll` is how it
//!   waits between passes ([`PollPolicy`]); `queue_set` is what a pass over some queues touches;
//! * `admin_queue` is worker 0's admin step: events and the admin queue;
//! * `admin` holds [`ADMIN_COMMANDS`], the one table of admin commands, and dispatches through
//!   it to `queue_management`, `identify`, `log`, `features`, `aer` and, on a primary
//!   controller, to [`crate::lm`];
//! * `io` runs the NVM command set, moving data through `transfer`;
//! * `lba_log` is the secondary controller's side of TP4159 LBA change logging;
//! * [`snapshot`] is the controller's save format and the code that takes and restores it;
//! * `secondary` is the interface through which a primary controller's TP4159 and SR-IOV
//!   commands reach a secondary one (suspend and resume handshake, capture and restore, the LBA
//!   change log, Offline and Online).
//!
//! What a controller offers its host (queue pairs, vectors) and whether it is offline is kept
//! with it as atomics, set by [`crate::sriov`]; an offline secondary controller's registers read
//! as failed and ignore writes, so its workers never see it enabled.
//!
//! # Threads and locks
//!
//! Each controller has [`ControllerConfig::io_workers`] I/O worker threads. Worker `i` owns the
//! I/O queue pairs of its group (completion queue `cqid` with `(cqid − 1) mod workers = i` and
//! the submission queues bound to it) through its own mutex, `Inner::workers[i]`, which it
//! holds for one pass over those queues and releases between passes; within a pass no lock is
//! taken per command. What is controller-wide — the admin queue pair, features, asynchronous
//! events, TP4159 state — is in `Inner::state`, which worker 0 takes for the admin step of its
//! passes. A worker's mutex also holds its share of the SMART counters (the controller's are
//! the sum of `state`'s and every worker's), its commands in flight on asynchronous backends
//! and its side of LBA change logging.
//!
//! Everyone else who must change queue state — an admin command creating or deleting an I/O
//! queue, a register write that enables or resets the controller, the primary controller
//! suspending this one (through `Secondary`), a status copy — takes the locks it needs between
//! two passes. Commands of synchronous backends run to completion inside a pass; commands in
//! flight on asynchronous ones are drained by the control path that needs them gone, as
//! `worker` documents (Suspend posts them, Delete SQ posts that queue's, a reset discards them).
//! The queue state is private to this module: `lm` holds a secondary's only as a
//! `LockedSecondary`.
//!
//! Lock order, to rule out deadlock: a primary controller's `state`, then the subsystem's SR-IOV
//! state ([`crate::sriov`]), then a secondary controller's `state`, then a controller's worker
//! locks in ascending index (taken under its own `state`, or alone by the worker), then the leaf
//! locks (`events`, `errors`, `uptime`, a User Data Migration Queue's ring). A controller's
//! worker locks are never held while taking another controller's locks. A worker never takes
//! another controller's locks: the LBA changes it logs go to the queue's ring (a leaf lock), and
//! the events the ring raises to the primary's `events` (a leaf lock). Nothing takes a primary's
//! `state` while holding a secondary's: a Set Controller State transfer that a reset of its target
//! voids is recognised by the target's reset count, not by the target reaching back into its
//! primary.
//!
//! Registers are atomics, readable without any lock.

mod admin;
mod admin_queue;
mod aer;
mod clock;
mod features;
mod identify;
mod inflight;
mod io;
mod lba_log;
mod log;
mod poll;
mod queue_management;
mod queue_set;
mod registers;
mod secondary;
mod shadow;
pub mod snapshot;
mod status;
mod transfer;
mod wake;
mod worker;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::OnceLock;
use std::sync::RwLock;
use std::sync::Weak;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU16;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

pub use admin::ADMIN_COMMANDS;
pub use admin::AdminCommand;
pub use aer::AsyncEvent;
pub(crate) use lba_log::ChangeQueue;
use nvme_spec::registers::Cc;
use nvme_spec::registers::Csts;
pub use poll::PollPolicy;
pub use shadow::ShadowBuffers;

use crate::doorbell::Doorbells;
use crate::interrupt::CountingInterrupt;
use crate::interrupt::Interrupt;
use crate::memory::DmaMemory;
use crate::namespace::Namespace;
use crate::namespace::NamespaceIdentity;
pub(crate) use secondary::LockedSecondary;
pub(crate) use secondary::Secondary;
pub use status::ControllerStatus;
pub use status::QueueCounters;
pub use status::QueueStatus;

/// Limits and identity of one controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Controller identifier, unique within the subsystem.
    pub cntlid: u16,
    /// Primary controller (PF, manages migration) or secondary (VF, handed to a guest).
    pub role: Role,
    /// Maximum number of I/O queue pairs (1..=64).
    pub io_queue_pairs: u16,
    /// Maximum entries per queue (CAP.MQES + 1), 2..=65536.
    pub max_queue_entries: u32,
    /// Maximum data transfer size as a power of two in 4 KiB pages (MDTS); at most 6.
    pub mdts: u8,
    /// Number of MSI-X vectors (interrupt vectors a completion queue may name).
    pub msix_vectors: u16,
    /// What a primary controller offers for TP4159 host-managed live migration.
    pub migration: MigrationOffer,
    /// I/O worker threads (at least 1, at most one per I/O queue pair): each owns the I/O
    /// queue pairs of its group, so more workers serve more queues at once where there are
    /// cores.
    pub io_workers: u16,
    /// How the workers wait between passes (CPU against latency).
    pub poll: PollPolicy,
    /// How the host's doorbell writes reach the controller, which decides whether an idle
    /// worker can sleep until the next one.
    pub doorbells: DoorbellDelivery,
}

/// How the host's doorbell writes reach the controller: what the transport does with the
/// doorbell page of BAR0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DoorbellDelivery {
    /// The host writes them into shared memory (the transport maps the doorbell page into
    /// the guest): a write costs the host a store and wakes nobody, so the workers poll for
    /// them as [`PollPolicy`] says.
    #[default]
    Shared,
    /// Every doorbell register write reaches [`Controller::write_register`] (the transport
    /// traps the page), which wakes the worker that owns the queue: an idle worker sleeps
    /// until then instead of polling. A write costs the host a message, so this pays off with
    /// hosts that use shadow doorbells (Doorbell Buffer Config, as Linux does): they write the
    /// register only when a sleeping worker asked for it through EventIdx, and only memory
    /// while the worker polls.
    Trapped,
}

/// What a primary controller offers for TP4159 host-managed live migration, so the project's
/// device can also stand in for a third-party PF that offers less (the migration driver must
/// work with any TP4159 PF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationOffer {
    /// List this project's vendor-specific controller state format
    /// ([`crate::lm::VENDOR_STATE_UUID`]) in Identify CNS 20h beside NVMe state version 0, and
    /// accept it in Get/Set Controller State. Without it the PF offers NVMe state v0 only.
    pub vendor_state: bool,
    /// Support User Data Migration Queues and LBA change logging (Identify Controller
    /// TRATTR.TUDCS, MCUDMQ, MNSUDMQ; Controller Data Queue Create). Without it a migration can
    /// only move controllers whose namespaces are on shared storage.
    pub user_data_logging: bool,
}

impl Default for MigrationOffer {
    /// Everything: NVMe state v0, the vendor format, LBA change logging.
    fn default() -> Self {
        Self {
            vendor_state: true,
            user_data_logging: true,
        }
    }
}

/// The role of a controller in the subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The primary controller of the physical function: host managed live migration.
    Primary,
    /// A secondary controller behind virtual function number `vfn` (1-based).
    Secondary {
        /// Virtual function number (1-based, as in the Secondary Controller List).
        vfn: u16,
    },
}

impl ControllerConfig {
    /// The default limits for controller `cntlid`: 64 I/O queue pairs of up to 1024 entries,
    /// 256 KiB transfers, 65 MSI-X vectors, one I/O worker with the default polling policy.
    pub fn new(cntlid: u16, role: Role) -> Self {
        Self {
            cntlid,
            role,
            io_queue_pairs: 64,
            max_queue_entries: 1024,
            mdts: 6,
            msix_vectors: 65,
            migration: MigrationOffer::default(),
            io_workers: 1,
            poll: PollPolicy::default(),
            doorbells: DoorbellDelivery::Shared,
        }
    }

    /// Worker threads a controller of this configuration runs: `io_workers` within 1 and the
    /// number of I/O queue pairs.
    pub fn workers(&self) -> usize {
        usize::from(self.io_workers.clamp(1, self.io_queue_pairs.max(1)))
    }

    /// The largest data transfer a command may request, in bytes.
    pub fn max_transfer(&self) -> u64 {
        4096 << self.mdts
    }
}

/// Identity strings shared by every controller of a subsystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubsystemIdentity {
    /// NVM Subsystem NVMe Qualified Name.
    pub nqn: String,
    /// Serial number (at most 20 ASCII characters).
    pub serial: String,
    /// Model number (at most 40 ASCII characters).
    pub model: String,
    /// Firmware revision (at most 8 ASCII characters).
    pub firmware: String,
}

/// The controller registers, kept as atomics so reads never wait for a worker.
#[derive(Debug, Default)]
struct Registers {
    cc: AtomicU32,
    csts: AtomicU32,
    aqa: AtomicU32,
    asq: AtomicU64,
    acq: AtomicU64,
    intms: AtomicU32,
}

/// The counters the SMART / Health log reports, as the controller keeps them and as its saved
/// state carries them, so that none restarts on a migration's destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes read by Read commands.
    pub bytes_read: u64,
    /// Bytes written by Write commands.
    pub bytes_written: u64,
    /// Read commands completed.
    pub read_commands: u64,
    /// Write commands completed.
    pub write_commands: u64,
    /// Commands completed with a media or data integrity error.
    pub media_errors: u64,
    /// Total error information log entries ever created.
    pub error_count: u64,
    /// Power cycles: 1 when the controller is created, one more per function-level reset (the
    /// function's power cycle).
    pub power_cycles: u64,
    /// Function-level resets of an enabled controller whose shutdown had not completed: the
    /// function lost power without a shutdown notification.
    pub unsafe_shutdowns: u64,
    /// Time spent running I/O commands, in nanoseconds (Controller Busy Time, reported in
    /// minutes).
    pub busy_ns: u64,
}

impl Counters {
    /// Adds `other` field by field (the controller's counters are the sum of their shares).
    pub fn add(&mut self, other: &Counters) {
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.read_commands += other.read_commands;
        self.write_commands += other.write_commands;
        self.media_errors += other.media_errors;
        self.error_count += other.error_count;
        self.power_cycles += other.power_cycles;
        self.unsafe_shutdowns += other.unsafe_shutdowns;
        self.busy_ns = self.busy_ns.saturating_add(other.busy_ns);
    }

    /// The counters of a controller that was just powered on.
    pub fn powered_on() -> Self {
        Self {
            power_cycles: 1,
            ..Self::default()
        }
    }
}

/// Controller-wide state, taken by worker 0's admin step and by control paths. Private to this
/// module and its children: the primary controller's TP4159 code reaches a secondary's through
/// [`Secondary`].
#[derive(Debug)]
struct State {
    /// The admin queue pair (index 0), and the controller-wide share of the SMART counters
    /// (power cycles, unsafe shutdowns, admin command errors).
    q: queue_set::QueueSet,
    /// Current feature values.
    features: features::Features,
    /// Asynchronous events: outstanding requests and undelivered events.
    aer: aer::AerState,
    /// TP4159 state of a primary controller: its CDQs and Set Controller State transfers.
    lm: crate::lm::PrimaryLm,
}

/// The controller's SMART counters: the controller-wide share plus every worker's.
fn total_counters(state: &State, workers: &[MutexGuard<'_, worker::Worker>]) -> Counters {
    let mut total = state.q.counters;
    for w in workers {
        total.add(&w.q.counters);
    }
    total
}

/// The shared core of a controller.
pub(crate) struct Inner {
    /// This controller, for the objects that refer back to it (a CDQ to its owner).
    me: Weak<Inner>,
    pub(crate) config: ControllerConfig,
    /// The identity strings reported; a state restore may replace them with the source's.
    identity: RwLock<Arc<SubsystemIdentity>>,
    /// The CNTLID reported in Identify Controller; a state restore adopts the source's.
    reported_cntlid: AtomicU16,
    namespaces: Vec<Option<Arc<Namespace>>>,
    /// Per attached namespace (indexed by NSID − 1), the identifiers reported instead of the
    /// namespace's own, adopted from the source of a state restore.
    namespace_identities: RwLock<Vec<Option<NamespaceIdentity>>>,
    pub(crate) mem: Arc<dyn DmaMemory>,
    irq: RwLock<Arc<dyn Interrupt>>,
    doorbells: Doorbells,
    regs: Registers,
    state: Mutex<State>,
    /// The I/O workers' own state (see the module docs), indexed by worker.
    workers: Vec<Mutex<worker::Worker>>,
    /// The Error Information log, newest first (a leaf lock: failures are not the hot path).
    errors: Mutex<log::ErrorLog>,
    /// Set while a control path waits for `state` or a worker lock, so workers yield between
    /// passes.
    control_waiting: AtomicUsize,
    /// Events raised by other threads, picked up by worker 0 (a leaf lock).
    events: Mutex<Vec<AsyncEvent>>,
    /// Set when `events` is non-empty, so worker 0 checks it without locking.
    events_pending: AtomicBool,
    /// TP4159 suspended: no command is fetched from any submission queue.
    suspended: AtomicBool,
    /// How long the controller has been running; stopped while suspended (a leaf lock).
    uptime: Mutex<clock::Uptime>,
    /// A primary controller's secondary controllers as (VFN, controller), set once by the
    /// subsystem after every controller exists.
    secondaries: OnceLock<Vec<(u16, Weak<Inner>)>>,
    /// A primary controller port's link to the subsystem's SR-IOV management, set once by the
    /// subsystem.
    sriov: OnceLock<crate::sriov::Link>,
    /// What the controller offers its host (queue pairs, vectors; offline for a secondary
    /// controller taken offline).
    offered: crate::sriov::Offered,
    /// Controller resets so far (a Set Controller State transfer must not span one).
    resets: AtomicU64,
    /// Tells the worker threads to exit.
    stop: AtomicBool,
    /// Whether the warning about a host that rings trapped doorbell registers without shadow
    /// doorbells was logged (once per controller).
    register_doorbells_noted: AtomicBool,
    /// The worker threads run no passes: only the test's own calls do (`testing::drive_manually`).
    #[cfg(feature = "test-utils")]
    manual: AtomicBool,
    /// Worker threads that have seen `manual` and park for good.
    #[cfg(feature = "test-utils")]
    manual_parked: AtomicUsize,
    /// The worker threads, to wake them; set once they are started.
    threads: OnceLock<Vec<std::thread::Thread>>,
    /// Per worker, what wakes it from a sleep that waits for a doorbell write
    /// ([`DoorbellDelivery::Trapped`]).
    wakers: Vec<wake::Waker>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("cntlid", &self.config.cntlid)
            .field("role", &self.config.role)
            .finish()
    }
}

impl Inner {
    /// Takes `mutex` from a control path: asks the workers to step aside between passes, then
    /// waits for the lock.
    fn lock_control<'a, T>(&self, mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        self.control_waiting.fetch_add(1, Ordering::AcqRel);
        let guard = mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.control_waiting.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    /// Takes the controller-wide state from a control path (see the lock order).
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.lock_control(&self.state)
    }

    /// Takes the controller-wide state for worker 0's admin step.
    fn lock_state_from_worker(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes worker `index`'s state from a control path, between two of its passes.
    fn lock_worker(&self, index: usize) -> MutexGuard<'_, worker::Worker> {
        self.lock_control(&self.workers[index])
    }

    /// Takes worker `index`'s state for its own pass.
    fn lock_worker_from_worker(&self, index: usize) -> MutexGuard<'_, worker::Worker> {
        self.workers[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes every worker's state from a control path, in ascending order.
    fn lock_workers(&self) -> Vec<MutexGuard<'_, worker::Worker>> {
        (0..self.workers.len())
            .map(|i| self.lock_worker(i))
            .collect()
    }

    /// The worker that owns completion queue `cqid` (and the submission queues bound to it);
    /// worker 0 for the admin queue.
    fn owner(&self, cqid: u16) -> usize {
        usize::from(cqid.saturating_sub(1)) % self.workers.len()
    }

    /// The Error Information log (a leaf lock).
    fn lock_errors(&self) -> MutexGuard<'_, log::ErrorLog> {
        self.errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes every worker that sleeps or is parked, e.g. after a doorbell write through the
    /// control path, an enable, a resume or an event.
    fn kick(&self) {
        for thread in self.threads.get().into_iter().flatten() {
            thread.unpark();
        }
        self.wakers.iter().for_each(wake::Waker::wake);
    }

    /// Wakes whoever must see a doorbell just written through the control path, at byte
    /// `offset` of the doorbell area. Shared doorbells: every worker, as [`Self::kick`] (the
    /// write is one the client could not map; a rare path). Trapped: an SQ tail wakes the
    /// queue's worker, an I/O CQ head only a worker that sleeps waiting for room in a
    /// completion queue (the others have nothing to do with it: that is most of them, and
    /// without shadow doorbells a host writes one per command batch).
    fn doorbell_written(&self, offset: u64) {
        if self.config.doorbells == DoorbellDelivery::Shared {
            self.kick();
            return;
        }
        // CAP.DSTRD = 0: doorbell `offset / 4`, two per queue pair.
        let index = offset / 4;
        let Ok(qid) = u16::try_from(index / 2) else {
            return;
        };
        let owner = self.owner(qid);
        if index % 2 == 1 && qid > 0 {
            if let Some(waker) = self.wakers.get(owner) {
                waker.wake_if_stalled();
            }
            return;
        }
        if let Some(thread) = self.threads.get().and_then(|t| t.get(owner)) {
            thread.unpark();
        }
        if let Some(waker) = self.wakers.get(owner) {
            waker.wake();
        }
    }

    /// Whether the controller fetches commands: ready, not failed, not suspended.
    fn running(&self) -> bool {
        let csts = self.csts();
        csts.rdy() && !csts.cfs() && !self.suspended.load(Ordering::Acquire)
    }

    /// Marks the controller fatally failed (CSTS.CFS): the host must reset it.
    fn fatal(&self) {
        self.set_csts(self.csts().with_cfs(true));
    }

    fn cc(&self) -> Cc {
        Cc::from(self.regs.cc.load(Ordering::Acquire))
    }

    fn csts(&self) -> Csts {
        Csts::from(self.regs.csts.load(Ordering::Acquire))
    }

    fn set_csts(&self, csts: Csts) {
        self.regs.csts.store(csts.into(), Ordering::Release);
    }

    /// The namespace `nsid` if it is attached to this controller.
    fn namespace(&self, nsid: u32) -> Option<&Arc<Namespace>> {
        let index = usize::try_from(nsid).ok()?.checked_sub(1)?;
        self.namespaces.get(index)?.as_ref()
    }

    /// The attached namespaces in NSID order.
    fn attached(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.iter().flatten()
    }

    /// Number of secondary controllers (0 for a secondary controller).
    pub(crate) fn secondary_count(&self) -> u16 {
        self.secondaries.get().map_or(0, |s| s.len() as u16)
    }

    /// The secondary controller with identifier `cntlid`, if this primary controller has one.
    pub(crate) fn secondary(&self, cntlid: u16) -> Option<Secondary> {
        self.secondaries
            .get()?
            .iter()
            .filter_map(|(_, weak)| weak.upgrade())
            .find(|c| c.config.cntlid == cntlid)
            .map(Secondary::new)
    }

    fn identity(&self) -> Arc<SubsystemIdentity> {
        self.identity
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The identifiers reported for attached namespace `ns`: the adopted ones after a state
    /// restore, else the namespace's own.
    fn namespace_identity(&self, ns: &Namespace) -> NamespaceIdentity {
        let index = ns.nsid() as usize - 1;
        self.namespace_identities
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(index)
            .copied()
            .flatten()
            .unwrap_or(*ns.identity())
    }

    /// A weak handle to this controller.
    pub(crate) fn weak_self(&self) -> Weak<Inner> {
        self.me.clone()
    }

    /// Whether the controller is suspended (TP4159).
    fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// Suspends or resumes fetching (TP4159), stopping or restarting the controller's clock.
    /// Suspending only stops new fetches; the caller then takes the locks to wait for the passes
    /// in progress and drains what is in flight. Returns whether it was suspended before.
    fn set_suspended(&self, suspended: bool) -> bool {
        let mut uptime = self.lock_uptime();
        let was = self.suspended.swap(suspended, Ordering::AcqRel);
        if suspended {
            uptime.stop();
        } else {
            uptime.start();
        }
        was
    }

    fn lock_uptime(&self) -> MutexGuard<'_, clock::Uptime> {
        self.uptime
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long the controller has been running (powered on and not suspended).
    fn uptime(&self) -> Duration {
        self.lock_uptime().elapsed()
    }

    /// Takes `elapsed` as the controller's running time (a state restore).
    fn set_uptime(&self, elapsed: Duration) {
        self.lock_uptime().set(elapsed);
    }

    /// Queues an asynchronous event from any thread.
    pub(crate) fn post_event(&self, event: AsyncEvent) {
        aer::post(self, event);
    }

    /// Copies `data` to the data buffer of admin command `cmd`.
    pub(crate) fn data_to_host(
        &self,
        cmd: &nvme_spec::command::Command,
        data: &[u8],
    ) -> Result<(), nvme_spec::status::Status> {
        transfer::to_host(self, cmd, data)
    }

    /// Fills `buf` from the data buffer of admin command `cmd`.
    pub(crate) fn data_from_host(
        &self,
        cmd: &nvme_spec::command::Command,
        buf: &mut [u8],
    ) -> Result<(), nvme_spec::status::Status> {
        transfer::from_host(self, cmd, buf)
    }

    /// A primary controller port's SR-IOV management.
    pub(crate) fn sriov(&self) -> Option<&crate::sriov::Link> {
        self.sriov.get()
    }

    /// I/O queue pairs the controller offers its host now.
    fn offered_queue_pairs(&self) -> u16 {
        self.offered.queue_pairs()
    }

    /// Interrupt vectors the controller offers its host now.
    fn offered_vectors(&self) -> u16 {
        self.offered.vectors()
    }

    /// Controller resets so far.
    fn resets(&self) -> u64 {
        self.resets.load(Ordering::Acquire)
    }
}

/// A handle to one controller. Dropping the last handle stops its worker threads.
#[derive(Debug)]
pub struct Controller {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Creates a controller over guest memory `mem` with the namespaces in `namespaces` attached
    /// (indexed by NSID − 1), and starts its worker threads. The controller starts disabled
    /// (CC.EN = 0), as after a power-on reset.
    pub fn new(
        config: ControllerConfig,
        identity: Arc<SubsystemIdentity>,
        namespaces: Vec<Option<Arc<Namespace>>>,
        mem: Arc<dyn DmaMemory>,
    ) -> std::io::Result<Self> {
        let queue_count = usize::from(config.io_queue_pairs) + 1;
        let doorbells = Doorbells::new(config.io_queue_pairs + 1, 0)?;
        let namespace_count = namespaces.len();
        let offered = crate::sriov::Offered::new(&config);
        let vectors = usize::from(config.msix_vectors);
        let wakers = (0..config.workers())
            .map(|_| wake::Waker::new())
            .collect::<std::io::Result<_>>()?;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            identity: RwLock::new(identity),
            reported_cntlid: AtomicU16::new(config.cntlid),
            namespaces,
            namespace_identities: RwLock::new(vec![None; namespace_count]),
            mem,
            irq: RwLock::new(Arc::new(CountingInterrupt::new(0))),
            doorbells,
            regs: Registers::default(),
            state: Mutex::new(State {
                q: queue_set::QueueSet::new(queue_count, vectors, Counters::powered_on()),
                features: features::Features::new(&config, config.io_queue_pairs),
                aer: aer::AerState::default(),
                lm: crate::lm::PrimaryLm::default(),
            }),
            workers: (0..config.workers())
                .map(|_| Mutex::new(worker::Worker::new(queue_count, vectors, namespace_count)))
                .collect(),
            errors: Mutex::new(log::ErrorLog::default()),
            config,
            control_waiting: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
            events_pending: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            uptime: Mutex::new(clock::Uptime::started()),
            secondaries: OnceLock::new(),
            sriov: OnceLock::new(),
            offered,
            resets: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            register_doorbells_noted: AtomicBool::new(false),
            #[cfg(feature = "test-utils")]
            manual: AtomicBool::new(false),
            #[cfg(feature = "test-utils")]
            manual_parked: AtomicUsize::new(0),
            threads: OnceLock::new(),
            wakers,
        });
        let mut controller = Self {
            inner: inner.clone(),
            threads: Vec::new(),
        };
        for index in 0..inner.workers.len() {
            let runner = inner.clone();
            let thread = std::thread::Builder::new()
                .name(format!("nvme-{}-w{index}", inner.config.cntlid))
                .spawn(move || worker::run(&runner, index))?;
            controller.threads.push(thread);
        }
        let _ = inner.threads.set(
            controller
                .threads
                .iter()
                .map(|t| t.thread().clone())
                .collect(),
        );
        Ok(controller)
    }

    /// The controller identifier.
    pub fn cntlid(&self) -> u16 {
        self.inner.config.cntlid
    }

    /// The controller's configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.inner.config
    }

    /// The doorbell area, which the transport maps into the guest at BAR0 offset 1000h.
    pub fn doorbells(&self) -> &Doorbells {
        &self.inner.doorbells
    }

    /// Routes interrupts to `irq` from now on.
    pub fn set_interrupt(&self, irq: Arc<dyn Interrupt>) {
        *self
            .inner
            .irq
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = irq;
    }

    /// Reads `size` bytes (4 or 8) of the register file at `offset` in BAR0; doorbells read back
    /// what was written, undefined offsets read as zero.
    pub fn read_register(&self, offset: u64, size: u8) -> u64 {
        registers::read(&self.inner, offset, size)
    }

    /// Writes `size` bytes (4 or 8) to the register file at `offset` in BAR0, with the side
    /// effects the specification gives (enable, reset, shutdown, doorbells).
    pub fn write_register(&self, offset: u64, size: u8, value: u64) {
        registers::write(&self.inner, offset, size, value);
    }

    /// A function-level reset (PCI FLR or vfio-user DEVICE_RESET): the controller is disabled,
    /// its queues deleted, its registers and features returned to their defaults, and a TP4159
    /// suspension lifted.
    pub fn reset(&self) {
        registers::function_reset(&self.inner);
    }

    /// Whether the controller is suspended by TP4159 Migration Send.
    pub fn suspended(&self) -> bool {
        self.inner.suspended.load(Ordering::Acquire)
    }

    /// Whether the controller is online: always, but for a secondary controller taken offline
    /// with Virtualization Management.
    pub fn online(&self) -> bool {
        !self.inner.offered.offline()
    }

    /// I/O queue pairs the controller offers its host now (what Number of Queues allocates at
    /// most): its configuration, bounded for a secondary controller by the VQ resources
    /// assigned to it (less the admin pair), for the primary by its private and allocated ones.
    pub fn offered_queue_pairs(&self) -> u16 {
        self.inner.offered_queue_pairs()
    }

    /// Interrupt vectors the controller offers its host now (what its MSI-X table should
    /// report and Create I/O Completion Queue accepts), bounded as the queue pairs are.
    pub fn offered_vectors(&self) -> u16 {
        self.inner.offered_vectors()
    }

    /// Makes `secondaries` (with their VFNs) the controllers this primary controller manages.
    pub(crate) fn set_secondaries(&self, secondaries: &[(u16, &Controller)]) {
        let list = secondaries
            .iter()
            .map(|(vfn, c)| (*vfn, Arc::downgrade(&c.inner)))
            .collect();
        let _ = self.inner.secondaries.set(list);
    }

    /// Links this primary controller port to the subsystem's SR-IOV management; the
    /// controller is reset, so a PCI function port offers what the pool gives it.
    pub(crate) fn link_sriov(&self, link: crate::sriov::Link) {
        let _ = self.inner.sriov.set(link);
        registers::controller_reset(&self.inner);
    }

    /// Sets what the secondary controller offers its host (`None`: it is offline), as the
    /// subsystem's starting SR-IOV state says; the controller is reset, so its features follow.
    pub(crate) fn set_offered(&self, offered: Option<(u16, u16)>) {
        self.inner.offered.assign(offered);
        registers::controller_reset(&self.inner);
    }

    /// Queues an asynchronous event for the host (delivered if its type is enabled and an
    /// Asynchronous Event Request is outstanding).
    pub fn post_event(&self, event: AsyncEvent) {
        aer::post(&self.inner, event);
    }

    /// Runs passes of every worker on the calling thread until a round makes no progress, at
    /// most `limit` rounds; returns whether it got there (for the test host's `settle`).
    #[cfg(feature = "test-utils")]
    pub(crate) fn run_until_idle(&self, limit: u32) -> bool {
        let workers = self.inner.workers.len();
        (0..limit).any(|_| {
            // Every worker runs its pass (no short circuit); the round progressed if any did.
            let progressed: Vec<bool> = (0..workers)
                .map(|i| worker::pass(&self.inner, i).progressed)
                .collect();
            // A worker thread's pass may have raised an event (an invalid doorbell) after this
            // round's admin step looked: it is delivered in the next round.
            let events = self.inner.events_pending.load(Ordering::Acquire) && self.inner.running();
            !progressed.contains(&true) && !events
        })
    }

    /// From now on the worker threads run no passes; only calls on the test's thread (such as
    /// [`Self::run_until_idle`]) do. Each worker thread parks once it has finished the pass it
    /// was in; returns whether all of them have.
    #[cfg(feature = "test-utils")]
    pub(crate) fn drive_manually(&self) -> bool {
        self.inner.manual.store(true, Ordering::Release);
        self.inner.kick();
        self.inner.manual_parked.load(Ordering::Acquire) == self.threads.len()
    }

    /// Runs `f` with the controller-wide state and every worker's held, so no pass is under
    /// way while it runs (for the test host's `between_passes`).
    #[cfg(feature = "test-utils")]
    pub(crate) fn between_passes<T>(&self, f: impl FnOnce() -> T) -> T {
        let _state = self.inner.lock_state();
        let _workers = self.inner.lock_workers();
        f()
    }

    /// Controller resets so far; a reset counts once it holds every lock, before it waits for
    /// commands in flight (for tests).
    #[cfg(feature = "test-utils")]
    pub(crate) fn resets(&self) -> u64 {
        self.inner.resets()
    }

    /// Commands in flight on asynchronous backends, over every worker (for tests).
    #[cfg(feature = "test-utils")]
    pub(crate) fn in_flight(&self) -> usize {
        self.inner
            .lock_workers()
            .iter()
            .map(|w| w.in_flight())
            .sum()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        // Through the handles: if starting a worker failed, `Inner::threads` was never set.
        for thread in &self.threads {
            thread.thread().unpark();
        }
        self.inner.wakers.iter().for_each(wake::Waker::wake);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
