//! The orchestrator migrates a VF between two vfio-user servers (threads of this process, real
//! UNIX sockets) while the host driver keeps its queues, and back again; a source that fails
//! after the switch-over does not undo the migration.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_device::namespace::BlockSize;
use nvme_host::driver::Driver;
use nvme_host::driver::QueuePair;
use nvme_host::memory::DmaBuffer;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::orchestrator::Orchestrator;
use nvme_spec::command::Command;
use vfio_migration::DeviceState;
use vfio_migration::DmaLogRange;
use vfio_migration::Errno;
use vfio_migration::MigrationFlags;
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfu::server::Device;
use vfu::server::DmaRegion;
use vfu::server::IrqRequest;
use vfu::server::Migratable;
use vfu::server::MigrationStatus;
use vfu::server::RegionDescription;
use vfu::server::Server;

const BLOCK: u64 = 4096;

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _served: Served,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(dir: &std::path::Path, name: &str) -> (PathBuf, Running) {
    serve_wrapped(dir, name, |device| device)
}

/// Like [`serve`], hosting what `wrap` makes of the VF.
fn serve_wrapped(
    dir: &std::path::Path,
    name: &str,
    wrap: impl FnOnce(Arc<dyn Device>) -> Arc<dyn Device>,
) -> (PathBuf, Running) {
    let served = Served::new(&ServeConfig {
        name: name.to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: 32 << 20,
                prealloc: false,
            },
            block_size: BlockSize::B4096,
            shared: false,
        }],
        ..ServeConfig::default()
    })
    .unwrap();
    let path = dir.join(format!("{name}.sock"));
    let server = Server::bind(&path).unwrap();
    let device: Arc<dyn Device> = wrap(served.function(1).unwrap().clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || server.serve(device, &flag).unwrap());
    (
        path,
        Running {
            stop,
            thread: Some(thread),
            _served: served,
        },
    )
}

/// The guest of a migration test: the orchestrator holding its device on a server, and one
/// polled queue pair with a block-sized buffer in its memory.
struct Guest {
    orch: Orchestrator,
    qp: QueuePair,
    buf: DmaBuffer,
    /// The driver that created the queue pair, kept as long as it is used.
    _driver: Driver,
}

/// A [`Guest`] of 16 MiB whose device is on the server at `source`.
fn guest(source: &std::path::Path) -> Guest {
    let memory = HostMemory::new(16 << 20, 0x8000_0000).unwrap();
    let orch = Orchestrator::connect(source, memory.clone()).unwrap();
    let driver = Driver::new(orch.bar(), memory.clone()).unwrap();
    driver.set_queue_count(1).unwrap();
    let qp = driver.create_queue_pair(1, 32, None).unwrap();
    let buf = memory.alloc(BLOCK).unwrap();
    Guest {
        orch,
        qp,
        buf,
        _driver: driver,
    }
}

fn pattern(lba: u64, generation: u64) -> Vec<u8> {
    (0..BLOCK / 16)
        .flat_map(|_| [lba.to_le_bytes(), generation.to_le_bytes()].concat())
        .collect()
}

fn io(qp: &mut QueuePair, cmd: Command) {
    qp.submit(cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = None;
    while done.is_none() {
        qp.poll(|c| done = Some(c));
        assert!(Instant::now() < deadline, "no completion");
    }
    assert!(done.unwrap().status.status().is_success());
}

fn write(qp: &mut QueuePair, buf: &DmaBuffer, lba: u64, generation: u64) {
    buf.write(0, &pattern(lba, generation));
    io(qp, Command::write(0, 1, lba, 0, buf.iova(), 0));
}

fn check(qp: &mut QueuePair, buf: &DmaBuffer, lba: u64, generation: u64) {
    buf.fill(0);
    io(qp, Command::read(0, 1, lba, 0, buf.iova(), 0));
    let mut got = vec![0u8; BLOCK as usize];
    buf.read(0, &mut got);
    assert_eq!(got, pattern(lba, generation), "LBA {lba}");
}

#[test]
fn migrate_there_and_back_over_sockets() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_path, _a) = serve(&dir, "a");
    let (b_path, _b) = serve(&dir, "b");
    let Guest {
        mut orch,
        mut qp,
        buf,
        _driver,
    } = guest(&a_path);
    for lba in 0..16 {
        write(&mut qp, &buf, lba, 1);
    }

    let there = orch.migrate(&b_path, &MigrateOptions::default()).unwrap();
    assert!(there.stream_bytes > 16 * BLOCK, "{there:?}");
    assert!(there.precopy_rounds >= 1);
    assert!(there.dirty_pages == 0 || there.dirty_pages < 4096);
    for lba in 0..16 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        write(&mut qp, &buf, lba, 2);
    }

    let back = orch.migrate(&a_path, &MigrateOptions::default()).unwrap();
    assert_eq!(orch.socket(), a_path.as_path());
    assert!(back.blackout < Duration::from_secs(5));
    for lba in 0..8 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        check(&mut qp, &buf, lba, 2);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A VF with injected faults: while `failing_report` is set its DMA-logging report fails with
/// EIO (a source that breaks after the switch-over; in the chaos test, one stopped past the
/// client's timeout there), STOP → RUNNING first sleeps `slow_start` (a destination that
/// answers after the client gave up), and the next DMA-logging start after `slow_logging` is
/// set answers only after the client's timeout (a source stopped as a migration starts).
struct Faulty {
    inner: Arc<dyn Device>,
    failing_report: Arc<AtomicBool>,
    slow_start: Duration,
    slow_logging: Arc<AtomicBool>,
}

impl Faulty {
    fn new(inner: Arc<dyn Device>) -> Self {
        Self {
            inner,
            failing_report: Arc::new(AtomicBool::new(false)),
            slow_start: Duration::ZERO,
            slow_logging: Arc::new(AtomicBool::new(false)),
        }
    }

    fn migration(&self) -> &dyn Migratable {
        self.inner.migration().expect("the VF migrates")
    }
}

impl Device for Faulty {
    fn num_regions(&self) -> u32 {
        self.inner.num_regions()
    }
    fn num_irqs(&self) -> u32 {
        self.inner.num_irqs()
    }
    fn region(&self, index: u32) -> Option<RegionDescription<'_>> {
        self.inner.region(index)
    }
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.inner.region_read(index, offset, buf)
    }
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.inner.region_write(index, offset, data)
    }
    fn irq_info(&self, index: u32) -> Option<(u32, u32)> {
        self.inner.irq_info(index)
    }
    fn set_irqs(&self, index: u32, request: IrqRequest) -> Result<(), Errno> {
        self.inner.set_irqs(index, request)
    }
    fn dma_map(&self, region: DmaRegion) -> Result<(), Errno> {
        self.inner.dma_map(region)
    }
    fn dma_unmap(&self, iova: u64, size: u64) -> Result<(), Errno> {
        self.inner.dma_unmap(iova, size)
    }
    fn reset(&self) -> Result<(), Errno> {
        self.inner.reset()
    }
    fn disconnected(&self) {
        self.inner.disconnected()
    }
    fn migration(&self) -> Option<&dyn Migratable> {
        Some(self)
    }
}

impl Migratable for Faulty {
    fn flags(&self) -> MigrationFlags {
        self.migration().flags()
    }
    fn state(&self) -> DeviceState {
        self.migration().state()
    }
    fn set_state(&self, target: DeviceState) -> Result<(), Errno> {
        if target == DeviceState::Running && self.state() == DeviceState::Stop {
            std::thread::sleep(self.slow_start);
        }
        self.migration().set_state(target)
    }
    fn stop_copy_length(&self) -> Result<u64, Errno> {
        self.migration().stop_copy_length()
    }
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.migration().read(buf)
    }
    fn write(&self, data: &[u8]) -> Result<(), Errno> {
        self.migration().write(data)
    }
    fn dma_logging_start(&self, page_size: u64, ranges: &[DmaLogRange]) -> Result<(), Errno> {
        if self.slow_logging.swap(false, Ordering::AcqRel) {
            std::thread::sleep(vfu::client::DEFAULT_TIMEOUT + Duration::from_millis(500));
        }
        self.migration().dma_logging_start(page_size, ranges)
    }
    fn dma_logging_stop(&self) -> Result<(), Errno> {
        self.migration().dma_logging_stop()
    }
    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), Errno> {
        if self.failing_report.load(Ordering::Acquire) {
            return Err(Errno::EIO);
        }
        self.migration()
            .dma_logging_report(iova, length, page_size, bitmap)
    }
    fn disconnected(&self) {
        Migratable::disconnected(self.migration())
    }
    fn status(&self) -> MigrationStatus {
        self.migration().status()
    }
}

#[test]
fn a_source_failing_after_the_switch_over_does_not_undo_the_migration() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-release-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let (a_path, _a) = serve_wrapped(&dir, "a", move |inner| {
        Arc::new(Faulty {
            failing_report: flag,
            ..Faulty::new(inner)
        })
    });
    let (b_path, _b) = serve(&dir, "b");
    let Guest {
        mut orch,
        mut qp,
        buf,
        _driver,
    } = guest(&a_path);
    for lba in 0..16 {
        write(&mut qp, &buf, lba, 1);
    }

    // A's dirty-page report fails once B runs the device: the migration has happened all the
    // same, and the orchestrator follows the device.
    let report = orch.migrate(&b_path, &MigrateOptions::default()).unwrap();
    let why = report.source_release_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("collecting the dirty-page report") && why.contains("EIO"),
        "{report:?}"
    );
    assert_eq!(orch.socket(), b_path.as_path());
    for lba in 0..16 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        write(&mut qp, &buf, lba, 2);
    }

    // The device migrates on: back to A (which, disconnected, runs again) and its data with it.
    failing.store(false, Ordering::Release);
    let back = orch.migrate(&a_path, &MigrateOptions::default()).unwrap();
    assert_eq!(back.source_release_error, None);
    assert_eq!(orch.socket(), a_path.as_path());
    for lba in 0..8 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        check(&mut qp, &buf, lba, 2);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_destination_that_starts_after_the_timeout_keeps_the_device_and_the_source_stays_stopped() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_path, _a) = serve(&dir, "a");
    // B answers STOP → RUNNING only after the client's 5 s timeout, and then runs the device.
    let (b_path, _b) = serve_wrapped(&dir, "b", |inner| {
        Arc::new(Faulty {
            slow_start: vfu::client::DEFAULT_TIMEOUT + Duration::from_millis(500),
            ..Faulty::new(inner)
        })
    });
    let Guest {
        mut orch,
        mut qp,
        buf,
        _driver,
    } = guest(&a_path);
    for lba in 0..16 {
        write(&mut qp, &buf, lba, 1);
    }
    let source = orch.client().clone();

    // Aborting would resume A while B runs too: both would fetch and complete the guest's
    // commands. The orchestrator asks B instead, finds it running, and the migration completes.
    orch.migrate(&b_path, &MigrateOptions::default()).unwrap();
    assert_eq!(orch.socket(), b_path.as_path());
    assert_eq!(
        source.lock().unwrap().migration_state().unwrap(),
        DeviceState::Stop,
        "the source must not run as well"
    );
    drop(source);
    for lba in 0..16 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        write(&mut qp, &buf, lba, 2);
    }
    for lba in 0..8 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 8..24 {
        check(&mut qp, &buf, lba, 2);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_dma_logging_start_answered_after_the_timeout_does_not_refuse_the_next_migration() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-logging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let flag = slow.clone();
    let (a_path, _a) = serve_wrapped(&dir, "a", move |inner| {
        Arc::new(Faulty {
            slow_logging: flag,
            ..Faulty::new(inner)
        })
    });
    let (b_path, _b) = serve(&dir, "b");
    let Guest {
        mut orch,
        mut qp,
        buf,
        _driver,
    } = guest(&a_path);
    for lba in 0..8 {
        write(&mut qp, &buf, lba, 1);
    }
    // A starts logging only after the client gave up: the migration fails before anything
    // stopped, and the device stays on A.
    let failed = orch
        .migrate(&b_path, &MigrateOptions::default())
        .unwrap_err();
    assert!(
        failed.to_string().contains("starting DMA logging"),
        "{failed}"
    );
    assert!(!slow.load(Ordering::Acquire), "the slow start ran");
    assert_eq!(orch.socket(), a_path.as_path());
    for lba in 4..12 {
        write(&mut qp, &buf, lba, 2);
    }
    // The late start was undone, so the next migration can start logging again.
    orch.migrate(&b_path, &MigrateOptions::default()).unwrap();
    assert_eq!(orch.socket(), b_path.as_path());
    for lba in 0..4 {
        check(&mut qp, &buf, lba, 1);
    }
    for lba in 4..12 {
        check(&mut qp, &buf, lba, 2);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The pipelined relay carries the stream byte for byte: a migration of 8 MiB of data (many
/// chunks and batches) saved with `save_stream` decodes as a valid stream whose user data is
/// exactly what was written, and the namespace reads back the same on the destination. The
/// never-written rest of the 32 MiB namespace costs nothing: the stream carries only the
/// written blocks plus headers and the controller state.
#[test]
fn pipelined_relay_carries_the_stream_and_skips_what_was_never_written() {
    const BLOCKS: u64 = 2048;
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_path, _a) = serve(&dir, "a");
    let (b_path, _b) = serve(&dir, "b");
    let Guest {
        mut orch,
        mut qp,
        buf,
        _driver,
    } = guest(&a_path);
    // Every other 16-block run, so the stream has many ranges and holes.
    let written: Vec<u64> = (0..BLOCKS * 2).filter(|lba| (lba / 16) % 2 == 0).collect();
    for &lba in &written {
        write(&mut qp, &buf, lba, 7);
    }
    let saved = dir.join("stream.bin");
    let options = MigrateOptions {
        save_stream: Some(saved.clone()),
        ..MigrateOptions::default()
    };
    let report = orch.migrate(&b_path, &options).unwrap();
    let data_bytes = written.len() as u64 * BLOCK;
    assert!(
        report.stream_bytes >= data_bytes && report.stream_bytes < data_bytes + (256 << 10),
        "{report:?}"
    );

    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(bytes.len() as u64, report.stream_bytes);
    let mut decoder = vfio_nvme::stream::StreamDecoder::new();
    decoder.push(&bytes).unwrap();
    let summary = decoder.finish().unwrap();
    assert_eq!(summary.user_data_bytes, data_bytes, "{summary:?}");
    let mut seen = std::collections::BTreeMap::new();
    while let Some(item) = decoder.next_item() {
        if let vfio_nvme::stream::Item::Record(vfio_nvme::stream::Record::UserData {
            offset,
            data,
            ..
        }) = item
        {
            for (i, block) in data.chunks(BLOCK as usize).enumerate() {
                seen.insert(offset / BLOCK + i as u64, block.to_vec());
            }
        }
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), written);
    for (&lba, block) in &seen {
        assert!(*block == pattern(lba, 7), "LBA {lba} in the stream");
    }
    for &lba in written.iter().step_by(97) {
        check(&mut qp, &buf, lba, 7);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A VF with nothing written has nothing to send in pre-copy (so no stream rate is ever
/// measured): it still switches over at once, settled, rather than waiting for a rate until the
/// migration's timeout.
#[test]
fn an_empty_namespace_switches_over_at_once() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-orch-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_path, _a) = serve(&dir, "a");
    let (b_path, _b) = serve(&dir, "b");
    let memory = HostMemory::new(16 << 20, 0x8000_0000).unwrap();
    let mut orch = Orchestrator::connect(&a_path, memory.clone()).unwrap();
    let options = MigrateOptions {
        timeout: Duration::from_secs(20),
        ..MigrateOptions::default()
    };
    let report = orch.migrate(&b_path, &options).unwrap();
    assert_eq!(
        report.switch_reason,
        Some(nvme_host::orchestrator::SwitchReason::Settled),
        "{report:?}"
    );
    assert!(report.precopy_rounds <= 2, "{report:?}");
    std::fs::remove_dir_all(&dir).ok();
}
