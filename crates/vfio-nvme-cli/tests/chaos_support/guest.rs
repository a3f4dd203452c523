//! The guest: host memory, the NVMe driver and the verifying workload's ledger, attached to
//! the device through an orchestrator (the VMM). The driver's BAR is the guest's own
//! [`SwitchableBar`] in front of the orchestrator's, so that after a VMM crash (a disconnect) a
//! new orchestrator can take over the same guest.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_host::driver::Bar;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::orchestrator::SwitchableBar;
use nvme_host::workload;
use nvme_host::workload::Ledger;
use nvme_host::workload::Limit;
use nvme_host::workload::Pattern;
use nvme_host::workload::Report;
use nvme_host::workload::VerifyOptions;
use nvme_host::workload::WorkloadConfig;
use vfio_migration::DeviceState;

/// IOVA of the guest's memory.
const GUEST_IOVA: u64 = 0x1_0000_0000;
/// How long the VMM waits for a server's reply on the guest's current server (shorter than
/// the client's 5 s default, so that the "longer than the timeout" stops stay short).
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);
/// The destination's reply timeout: the orchestrator connects it with the client's default.
pub const DESTINATION_TIMEOUT: Duration = vfu::client::DEFAULT_TIMEOUT;

/// What the guest's workload and read-backs did, over the whole run.
#[derive(Debug, Default)]
pub struct IoTotals {
    /// Writes the workload saw complete.
    pub writes: u64,
    /// Reads the workload checked.
    pub reads: u64,
    /// Blocks read back and checked by the read-backs after faults.
    pub verified_blocks: u64,
    /// Read-backs done.
    pub readbacks: u64,
    /// Blocks that read back wrong, in the workload or a read-back (a failure stops the run at
    /// once, so a finished run has none).
    pub lost: u64,
}

/// The guest and its VMM.
pub struct Guest {
    memory: Arc<HostMemory>,
    /// The VMM; `None` only between a disconnect and the reconnection.
    orch: Option<Orchestrator>,
    bar: Arc<SwitchableBar>,
    driver: Driver,
    ledger: Arc<Ledger>,
    config: WorkloadConfig,
    /// What it did so far.
    pub totals: IoTotals,
}

impl Guest {
    /// Attaches a guest to the device at `socket` and brings its controller up, with shadow
    /// doorbells if `shadow_doorbells`.
    pub fn start(socket: &Path, shadow_doorbells: bool) -> Self {
        let memory = HostMemory::new(32 << 20, GUEST_IOVA).expect("guest memory");
        let orch = attach(socket, &memory);
        let inner: Arc<dyn Bar> = orch.bar();
        let bar = Arc::new(SwitchableBar::new(inner));
        let driver = Driver::new(bar.clone(), memory.clone()).expect("bring the controller up");
        if shadow_doorbells {
            assert!(
                driver
                    .use_shadow_doorbells()
                    .expect("Doorbell Buffer Config"),
                "the controller refused shadow doorbells"
            );
        }
        let config = WorkloadConfig {
            rw: Pattern::RandRw { read_percent: 30 },
            queues: 2,
            queue_depth: 8,
            limit: Limit::Duration(Duration::from_secs(24 * 3600)),
            verify: true,
            nsid: 1,
            ..WorkloadConfig::default()
        };
        driver
            .set_queue_count(config.queues)
            .expect("Set Features (Number of Queues)");
        let ledger = workload::ledger_for(&driver, &config).expect("the workload's ledger");
        Self {
            memory,
            orch: Some(orch),
            bar,
            driver,
            ledger,
            config,
            totals: IoTotals::default(),
        }
    }

    /// The VMM.
    pub fn orch(&mut self) -> &mut Orchestrator {
        self.orch.as_mut().expect("the guest is attached")
    }

    /// Runs `f` with the VMM while the verifying workload runs (seeded with `seed`), after
    /// `warmup` of load; then stops the workload and checks it: every read matched the newest
    /// acknowledged write, no command failed.
    pub fn under_load<T>(
        &mut self,
        seed: u64,
        warmup: Duration,
        f: impl FnOnce(&mut Orchestrator) -> T,
    ) -> T {
        let config = WorkloadConfig {
            seed,
            ..self.config.clone()
        };
        let stop = AtomicBool::new(false);
        let orch = self.orch.as_mut().expect("the guest is attached");
        let (driver, ledger) = (&self.driver, &self.ledger);
        let (out, report) = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let report = workload::run_with_ledger(driver, &config, ledger, &stop, |_| {});
                stop.store(true, Ordering::Release);
                report
            });
            let out = {
                // Also when `f` panics: the scope waits for the workload.
                let _stop = RaiseOnDrop(&stop);
                std::thread::sleep(warmup);
                f(orch)
            };
            (out, worker.join().expect("the workload thread panicked"))
        });
        let report = report.unwrap_or_else(|e| panic!("the workload failed: {e}"));
        check(&report, "the workload");
        self.totals.writes += report.writes;
        self.totals.lost += report.failure_count;
        self.totals.reads += report.reads;
        out
    }

    /// Reads back every block the workload ever wrote and checks it against the ledger.
    pub fn verify(&mut self, after: &str) {
        let report = workload::verify_all(
            &self.driver,
            self.config.nsid,
            &self.ledger,
            &VerifyOptions {
                queues: self.config.queues,
                ..VerifyOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("the read-back after {after} failed: {e}"));
        check(&report, &format!("the read-back after {after}"));
        assert_eq!(
            report.ios,
            self.ledger.written_units(),
            "the read-back after {after} missed blocks"
        );
        self.totals.verified_blocks += report.ios;
        self.totals.lost += report.failure_count;
        self.totals.readbacks += 1;
    }

    /// Drops the VMM's connection (what a crashed VMM does), attaches a new VMM to the same
    /// server and hands it the guest; the new connection must find the device RUNNING.
    pub fn reconnect(&mut self) {
        let socket = self.orch().socket().to_owned();
        // The guest's BAR holds the old connection; unplug it so the connection closes.
        self.bar.resume(Some(Arc::new(Unplugged)));
        self.orch = None;
        let orch = attach(&socket, &self.memory);
        let state = lock(&orch).migration_state();
        assert!(
            matches!(state, Ok(DeviceState::Running)),
            "after a disconnect the next client found {state:?}, not RUNNING"
        );
        let inner: Arc<dyn Bar> = orch.bar();
        self.bar.resume(Some(inner));
        self.orch = Some(orch);
    }

    /// After a migration the orchestrator could not abort (the source was stopped past the
    /// timeout of its abort requests too): once the source answers again, puts it back to
    /// RUNNING and lets the guest's held doorbells through, as a VMM retrying would.
    pub fn recover_source(&mut self) {
        let orch = self.orch.as_ref().expect("the guest is attached");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resumed = lock(orch).set_migration_state(DeviceState::Running);
            match resumed {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the source never resumed after a stranded migration: {e}"
                    );
                    note(&format!("resuming the stranded source: {e}; retrying"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = lock(orch).dma_logging_stop();
        orch.bar().resume(None);
    }

    /// Brings the controller up again after a device reset (queues and features are gone).
    pub fn reinitialise(&mut self) {
        self.driver.enable().expect("re-enable after a reset");
        self.driver
            .set_queue_count(self.config.queues)
            .expect("Set Features (Number of Queues) after a reset");
    }
}

/// Sets its flag when dropped, so that a thread waiting for the flag ends also when the code
/// holding the guard panics.
pub struct RaiseOnDrop<'a>(pub &'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The guest's BAR between a VMM's crash and its replacement: the guest is quiet then, so
/// any access is a bug of the test.
struct Unplugged;

impl Bar for Unplugged {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        panic!("register read at {offset:#x} while the guest is unplugged")
    }

    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        panic!("register read at {offset:#x} while the guest is unplugged")
    }

    fn write32(&self, offset: u64, _: u32) -> std::io::Result<()> {
        panic!("register write at {offset:#x} while the guest is unplugged")
    }

    fn doorbell(&self, offset: u64, _: u32) {
        panic!("doorbell write at {offset:#x} while the guest is unplugged")
    }
}

/// Fails unless `report` verified with no command error.
fn check(report: &Report, what: &str) {
    assert!(
        report.verified && report.errors == 0 && report.failure_count == 0,
        "{what}: {} failure(s), {} error(s): {:?} {:?}\n{report}",
        report.failure_count,
        report.errors,
        report.failures,
        report.error_messages,
    );
}

/// The VMM's connection to the server at `socket`, locked.
pub fn lock(orch: &Orchestrator) -> std::sync::MutexGuard<'_, vfu::client::Client> {
    orch.client().lock().unwrap_or_else(|p| p.into_inner())
}

/// Attaches an orchestrator with `memory` to the server at `socket`, retrying while the server
/// still sees the previous client (EBUSY) or is not listening yet.
pub fn attach(socket: &Path, memory: &Arc<HostMemory>) -> Orchestrator {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Orchestrator::connect(socket, memory.clone()) {
            Ok(orch) => {
                set_source_timeout(&orch);
                return orch;
            }
            Err(e) if Instant::now() < deadline => {
                note(&format!("attaching to {}: {e}; retrying", socket.display()));
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot attach to {}: {e}", socket.display()),
        }
    }
}

/// Gives the VMM's connection to the guest's current server the chaos run's timeout.
pub fn set_source_timeout(orch: &Orchestrator) {
    lock(orch)
        .set_timeout(SOURCE_TIMEOUT)
        .expect("set the client's timeout");
}

/// A line on the test's output (shown with `--nocapture` and on failure).
pub fn note(line: &str) {
    eprintln!("chaos: {line}");
}
