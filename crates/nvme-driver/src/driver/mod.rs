//! A user-space NVMe host driver.
//!
//! It does what the Linux `nvme` driver does to bring a controller up — disable, program the
//! admin queue registers, enable, wait for CSTS.RDY — and then offers admin commands
//! (Identify, Get Log Page, features, queue creation), I/O queue pairs the caller drives
//! directly, Asynchronous Event Requests, and reset and re-initialisation. It reaches the
//! controller only through the [`Bar`] trait and host memory shared with the device
//! ([`HostMemory`]), so the same code drives a device over vfio-user or in-process.
//!
//! The driver follows the NVMe specification, not the habits of this project's device: it
//! honours CAP.TO, CAP.DSTRD and MDTS, uses PRP lists for transfers over two pages, and treats
//! every completion it did not ask for as a bug to report.

mod bar;
mod error;
mod queue;
mod shadow;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

pub use bar::Bar;
pub use error::DriverError;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::features::AsyncEventCompletion;
use nvme_spec::features::FeatureId;
use nvme_spec::features::NumberOfQueuesAllocated;
use nvme_spec::features::NumberOfQueuesRequest;
use nvme_spec::features::Select;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::IdentifyNamespace;
use nvme_spec::identify::NamespaceList;
use nvme_spec::log::LogPageId;
use nvme_spec::registers::Aqa;
use nvme_spec::registers::Cap;
use nvme_spec::registers::Cc;
use nvme_spec::registers::Csts;
use nvme_spec::registers::Register;
use nvme_spec::registers::ShutdownNotification;
use nvme_spec::registers::ShutdownStatus;
pub use queue::QueuePair;
pub use shadow::ShadowEntry;
use shadow::ShadowPages;
use zerocopy::FromBytes;

use crate::memory::DmaBuffer;
use crate::memory::HostMemory;
use crate::memory::PAGE;

/// Admin queue depth (entries).
const ADMIN_DEPTH: u32 = 32;
/// How long an admin command may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

struct Admin {
    qp: QueuePair,
    /// CIDs of outstanding Asynchronous Event Requests.
    aer_cids: Vec<u16>,
    /// Events reported by completed Asynchronous Event Requests, oldest first.
    events: Vec<(AsyncEventCompletion, u32)>,
}

/// A controller driven from user space.
pub struct Driver {
    bar: Arc<dyn Bar>,
    mem: Arc<HostMemory>,
    cap: Cap,
    admin: Mutex<Admin>,
    mdts_bytes: u64,
    /// The shadow doorbell pages, once the caller asked for them; handed to the controller
    /// again after every reset.
    shadow: Mutex<Option<Arc<ShadowPages>>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("cap", &self.cap)
            .field("mdts_bytes", &self.mdts_bytes)
            .finish()
    }
}

/// Describes a command for error messages.
fn describe(cmd: &Command) -> String {
    format!("admin command {:?}", AdminOpcode(cmd.cdw0.opcode()))
}

impl Driver {
    /// Brings the controller up: disables it, programs an admin queue pair in `mem`, enables it
    /// and waits for CSTS.RDY, then reads Identify Controller for MDTS.
    pub fn new(bar: Arc<dyn Bar>, mem: Arc<HostMemory>) -> Result<Self, DriverError> {
        let cap = Cap::from(bar.read64(Register::CAP.0)?);
        if cap.mpsmin() != 0 {
            return Err(DriverError::Unsupported(format!(
                "controller needs pages of at least {} bytes; this driver uses 4 KiB",
                cap.min_page_size()
            )));
        }
        let depth = ADMIN_DEPTH.min(4096);
        let qp = QueuePair::new(0, depth, &mem, bar.clone(), cap.doorbell_stride(), None)?;
        let driver = Self {
            bar,
            mem,
            cap,
            admin: Mutex::new(Admin {
                qp,
                aer_cids: Vec::new(),
                events: Vec::new(),
            }),
            mdts_bytes: PAGE * 2,
            shadow: Mutex::new(None),
        };
        driver.enable()?;
        let id = driver.identify_controller()?;
        let mdts_bytes = id.max_transfer_bytes(PAGE).unwrap_or(u64::MAX).min(1 << 20);
        Ok(Self {
            mdts_bytes,
            ..driver
        })
    }

    /// The controller's capabilities register.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// The largest transfer one command may carry (MDTS, capped at 1 MiB).
    pub fn max_transfer(&self) -> u64 {
        self.mdts_bytes
    }

    /// The host memory the driver allocates from.
    pub fn memory(&self) -> &Arc<HostMemory> {
        &self.mem
    }

    /// The BAR the driver uses.
    pub fn bar(&self) -> &Arc<dyn Bar> {
        &self.bar
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.cap.timeout_ms()).max(500))
    }

    fn csts(&self) -> Result<Csts, DriverError> {
        Ok(Csts::from(self.bar.read32(Register::CSTS.0)?))
    }

    fn wait_ready(&self, ready: bool) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let csts = self.csts()?;
            if csts.rdy() == ready {
                return Ok(());
            }
            if ready && csts.cfs() {
                return Err(DriverError::Fatal);
            }
            if Instant::now() > deadline {
                return Err(DriverError::Timeout {
                    what: if ready { "become ready" } else { "stop" },
                    timeout: self.timeout(),
                    csts: csts.into(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Disables the controller (CC.EN = 0) and waits until it reports not ready. Every queue is
    /// gone afterwards.
    pub fn disable(&self) -> Result<(), DriverError> {
        let cc = Cc::from(self.bar.read32(Register::CC.0)?);
        if cc.en() {
            self.bar.write32(Register::CC.0, cc.with_en(false).into())?;
        }
        self.wait_ready(false)
    }

    /// Disables the controller, reprograms the admin queue and enables it again: a controller
    /// reset as the Linux driver performs it. I/O queue pairs created before are dead; the caller
    /// recreates them.
    pub fn enable(&self) -> Result<(), DriverError> {
        self.disable()?;
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        admin.qp.abandon();
        admin.aer_cids.clear();
        let depth = admin.qp.depth() as u16;
        let aqa = Aqa::new().with_asqs(depth - 1).with_acqs(depth - 1);
        self.bar.write32(Register::AQA.0, aqa.into())?;
        self.bar.write64(Register::ASQ.0, admin.qp.sq_iova())?;
        self.bar.write64(Register::ACQ.0, admin.qp.cq_iova())?;
        drop(admin);
        let cc = Cc::new()
            .with_en(true)
            .with_iosqes(6)
            .with_iocqes(4)
            .with_mps(0);
        self.bar.write32(Register::CC.0, cc.into())?;
        self.wait_ready(true)?;
        // A reset forgot the shadow doorbells: hand them over again, or drop them.
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pages) = shadow.take()
            && self.configure_shadow(&pages)?
        {
            *shadow = Some(pages);
        }
        Ok(())
    }

    /// Hands the controller shadow doorbell buffers (Doorbell Buffer Config) if it offers them
    /// (Identify Controller OACS bit 8), as Linux's driver does. I/O queue pairs created
    /// afterwards write their SQ tails and CQ heads into host memory and their doorbell
    /// registers only when the controller's EventIdx asks for it; resets keep them. Returns
    /// whether they are in use: a controller that does not offer them, or refuses the command,
    /// is driven through its registers (Linux warns and goes on the same way).
    pub fn use_shadow_doorbells(&self) -> Result<bool, DriverError> {
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        if shadow.is_some() {
            return Ok(true);
        }
        if !self.identify_controller()?.oacs.doorbell_buffer_config() {
            return Ok(false);
        }
        let pages = Arc::new(ShadowPages::new(&self.mem)?);
        let configured = self.configure_shadow(&pages)?;
        if configured {
            *shadow = Some(pages);
        }
        Ok(configured)
    }

    /// Whether I/O queue pairs created now use shadow doorbells.
    pub fn shadow_doorbells(&self) -> bool {
        self.shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Zeroes `pages` and sends Doorbell Buffer Config for them; `false` if the controller
    /// refused it with a status.
    fn configure_shadow(&self, pages: &ShadowPages) -> Result<bool, DriverError> {
        pages.clear();
        let cmd =
            Command::doorbell_buffer_config(0, pages.doorbells_iova(), pages.event_indices_iova());
        match self.admin(cmd) {
            Ok(_) => Ok(true),
            Err(DriverError::Status { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Notifies the controller of a normal shutdown and waits until it reports completion.
    pub fn shutdown(&self) -> Result<(), DriverError> {
        let cc = Cc::from(self.bar.read32(Register::CC.0)?);
        self.bar.write32(
            Register::CC.0,
            cc.with_shn(ShutdownNotification::NORMAL).into(),
        )?;
        let deadline = Instant::now() + self.timeout();
        while self.csts()?.shst() != ShutdownStatus::COMPLETE {
            if Instant::now() > deadline {
                return Err(DriverError::Timeout {
                    what: "complete shutdown",
                    timeout: self.timeout(),
                    csts: self.csts()?.into(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// Handles an admin completion that is not the one being waited for.
    fn stray(admin: &mut Admin, entry: Completion) {
        if let Some(pos) = admin.aer_cids.iter().position(|&c| c == entry.cid) {
            admin.aer_cids.remove(pos);
            if entry.status.status().is_success() {
                admin
                    .events
                    .push((AsyncEventCompletion::from(entry.dw0), entry.dw1));
            }
        }
    }

    /// Runs one admin command to completion and returns its completion; an error status is
    /// returned as [`DriverError::Status`].
    pub fn admin(&self, cmd: Command) -> Result<Completion, DriverError> {
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let cid = admin.qp.submit(cmd)?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        let mut spins = 0u32;
        loop {
            let mut mine = None;
            let mut others = Vec::new();
            admin.qp.poll(|entry| {
                if entry.cid == cid {
                    mine = Some(entry);
                } else {
                    others.push(entry);
                }
            });
            for entry in others {
                Self::stray(&mut admin, entry);
            }
            if let Some(entry) = mine {
                let status = entry.status.status();
                if !status.is_success() {
                    return Err(DriverError::Status {
                        command: describe(&cmd),
                        status,
                    });
                }
                return Ok(entry);
            }
            if Instant::now() > deadline {
                return Err(DriverError::NoCompletion {
                    command: describe(&cmd),
                    timeout: ADMIN_TIMEOUT,
                });
            }
            if self.csts()?.cfs() {
                return Err(DriverError::Fatal);
            }
            spins += 1;
            if spins > 64 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Runs an admin command that transfers `len` bytes from the controller and returns them.
    pub fn admin_read(&self, cmd: Command, len: u64) -> Result<Vec<u8>, DriverError> {
        self.admin_read_completion(cmd, len).map(|(_, data)| data)
    }

    /// Like [`admin_read`](Self::admin_read), also returning the completion (whose dword 0
    /// carries command-specific results).
    pub fn admin_read_completion(
        &self,
        mut cmd: Command,
        len: u64,
    ) -> Result<(Completion, Vec<u8>), DriverError> {
        let buf = self.data_buffer(len)?;
        self.set_prps(&mut cmd, &buf.0, buf.1.as_ref(), len);
        let done = self.admin(cmd)?;
        let mut out = vec![0u8; len as usize];
        buf.0.read(0, &mut out);
        Ok((done, out))
    }

    /// Runs an admin command that transfers `data` to the controller.
    pub fn admin_write(&self, mut cmd: Command, data: &[u8]) -> Result<Completion, DriverError> {
        let buf = self.data_buffer(data.len() as u64)?;
        buf.0.write(0, data);
        self.set_prps(&mut cmd, &buf.0, buf.1.as_ref(), data.len() as u64);
        self.admin(cmd)
    }

    /// A data buffer of `len` bytes plus, when it spans more than two pages, a PRP list.
    fn data_buffer(&self, len: u64) -> Result<(DmaBuffer, Option<DmaBuffer>), DriverError> {
        if len > self.mdts_bytes {
            return Err(DriverError::Unsupported(format!(
                "a {len}-byte transfer exceeds the controller's {}-byte MDTS",
                self.mdts_bytes
            )));
        }
        let data = self.mem.alloc(len)?;
        let list = if len > 2 * PAGE {
            Some(self.mem.alloc(PAGE)?)
        } else {
            None
        };
        Ok((data, list))
    }

    /// Points `cmd`'s PRP1/PRP2 at the contiguous buffer `data` (`len` bytes), filling `list`
    /// when the transfer needs a PRP list.
    pub fn set_prps(
        &self,
        cmd: &mut Command,
        data: &DmaBuffer,
        list: Option<&DmaBuffer>,
        len: u64,
    ) {
        build_prps(cmd, data.iova(), list, len);
    }

    /// Identify Controller.
    pub fn identify_controller(&self) -> Result<IdentifyController, DriverError> {
        let raw = self.admin_read(Command::identify(0, Cns::CONTROLLER, 0, 0, 0), 4096)?;
        IdentifyController::read_from_bytes(&raw)
            .map_err(|_| DriverError::Unsupported("short Identify Controller data".to_owned()))
    }

    /// Identify Namespace `nsid`.
    pub fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace, DriverError> {
        let raw = self.admin_read(Command::identify(0, Cns::NAMESPACE, nsid, 0, 0), 4096)?;
        IdentifyNamespace::read_from_bytes(&raw)
            .map_err(|_| DriverError::Unsupported("short Identify Namespace data".to_owned()))
    }

    /// The active namespace IDs.
    pub fn active_namespaces(&self) -> Result<Vec<u32>, DriverError> {
        let raw = self.admin_read(
            Command::identify(0, Cns::ACTIVE_NAMESPACE_LIST, 0, 0, 0),
            4096,
        )?;
        let list = NamespaceList::read_from_bytes(&raw)
            .map_err(|_| DriverError::Unsupported("short namespace list".to_owned()))?;
        Ok(list.iter().collect())
    }

    /// Get Log Page `lid` (`len` bytes from offset 0, RAE clear).
    pub fn log_page(&self, lid: LogPageId, nsid: u32, len: u64) -> Result<Vec<u8>, DriverError> {
        self.admin_read(Command::get_log_page(0, lid, nsid, len, 0, 0, 0), len)
    }

    /// Asks for `count` I/O queue pairs (Set Features Number of Queues) and returns how many the
    /// controller allocated.
    pub fn set_queue_count(&self, count: u16) -> Result<u16, DriverError> {
        let request = NumberOfQueuesRequest::new()
            .with_nsqr(count.saturating_sub(1))
            .with_ncqr(count.saturating_sub(1));
        let done = self.admin(Command::set_features(
            0,
            FeatureId::NUMBER_OF_QUEUES,
            request.into(),
        ))?;
        let allocated = NumberOfQueuesAllocated::from(done.dw0);
        Ok(allocated.nsqa().min(allocated.ncqa()) + 1)
    }

    /// Get Features `fid` (current value) and returns completion dword 0.
    pub fn get_feature(&self, fid: FeatureId, cdw11: u32) -> Result<u32, DriverError> {
        Ok(self
            .admin(Command::get_features(0, fid, Select::CURRENT, cdw11))?
            .dw0)
    }

    /// Creates I/O queue pair `qid` with `depth` entries; completions raise MSI-X vector
    /// `vector`, or no interrupt when `None` (the caller polls).
    pub fn create_queue_pair(
        &self,
        qid: u16,
        depth: u32,
        vector: Option<u16>,
    ) -> Result<QueuePair, DriverError> {
        let max = self.cap.max_queue_entries();
        if depth < 2 || depth > max {
            return Err(DriverError::Unsupported(format!(
                "queue depth {depth} outside 2..={max} (CAP.MQES)"
            )));
        }
        let stride = self.cap.doorbell_stride();
        let shadow = self
            .shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let qp = QueuePair::new(qid, depth, &self.mem, self.bar.clone(), stride, shadow)?;
        self.admin(Command::create_io_cq(
            0,
            qid,
            depth,
            qp.cq_iova(),
            vector.is_some(),
            vector.unwrap_or(0),
        ))?;
        if let Err(err) = self.admin(Command::create_io_sq(0, qid, depth, qp.sq_iova(), qid)) {
            let _ = self.admin(Command::delete_io_cq(0, qid));
            return Err(err);
        }
        Ok(qp)
    }

    /// Deletes I/O queue pair `qp` (SQ first, then CQ).
    pub fn delete_queue_pair(&self, qp: QueuePair) -> Result<(), DriverError> {
        self.admin(Command::delete_io_sq(0, qp.qid()))?;
        self.admin(Command::delete_io_cq(0, qp.qid()))?;
        Ok(())
    }

    /// Submits an Asynchronous Event Request; its completion is collected by later admin
    /// commands or [`poll_events`](Self::poll_events).
    pub fn request_event(&self) -> Result<(), DriverError> {
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let cid = admin.qp.submit(Command::async_event_request(0))?;
        admin.aer_cids.push(cid);
        Ok(())
    }

    /// Reaps admin completions and returns the asynchronous events reported so far (event
    /// completion dword 0 and dword 1), clearing the list.
    pub fn poll_events(&self) -> Vec<(AsyncEventCompletion, u32)> {
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = Vec::new();
        admin.qp.poll(|e| entries.push(e));
        for entry in entries {
            Self::stray(&mut admin, entry);
        }
        std::mem::take(&mut admin.events)
    }

    /// Asynchronous Event Requests still outstanding.
    pub fn outstanding_events(&self) -> usize {
        self.admin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .aer_cids
            .len()
    }
}

/// Points `cmd`'s PRPs at `len` bytes of contiguous memory at `iova`, writing the PRP list into
/// `list` when more than two pages are involved.
pub fn build_prps(cmd: &mut Command, iova: u64, list: Option<&DmaBuffer>, len: u64) {
    cmd.prp1 = iova;
    let first = PAGE - iova % PAGE;
    if len <= first {
        cmd.prp2 = 0;
    } else if len <= first + PAGE {
        cmd.prp2 = iova + first;
    } else if let Some(list) = list {
        let pages = (len - first).div_ceil(PAGE);
        let entries: Vec<u8> = (0..pages)
            .flat_map(|i| (iova + first + i * PAGE).to_le_bytes())
            .collect();
        list.write(0, &entries);
        cmd.prp2 = list.iova();
    }
}
