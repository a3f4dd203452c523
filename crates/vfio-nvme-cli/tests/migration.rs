//! Live migration between `vfio-nvme serve` processes over real sockets: the orchestrator's
//! path, the abort paths (corrupted, truncated and incompatible streams, abandoned pre-copy,
//! device resets mid-migration) and asynchronous events across a migration.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use common::ServeProcess;
use common::TempDir;
use nvme_host::driver::Driver;
use nvme_host::driver::QueuePair;
use nvme_host::memory::DmaBuffer;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::orchestrator::Orchestrator;
use nvme_spec::command::Command;
use vfio_migration::DeviceState;
use vfu::client::Client;
use vfu::client::ClientError;

const BLOCK: u64 = 4096;
const IOVA: u64 = 0x1_0000_0000;
const NS: &str = "ram:64M,lba=4096";

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
    let status = done.unwrap().status.status();
    assert!(status.is_success(), "{status:?}");
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

/// A guest on the server at `socket`: memory, driver, one I/O queue and a data buffer.
struct Guest {
    orch: Orchestrator,
    _driver: Driver,
    qp: QueuePair,
    buf: DmaBuffer,
}

impl Guest {
    fn start(socket: &std::path::Path) -> Self {
        let memory = HostMemory::new(16 << 20, IOVA).unwrap();
        let orch = Orchestrator::connect(socket, memory.clone()).unwrap();
        let driver = Driver::new(orch.bar(), memory.clone()).unwrap();
        driver.set_queue_count(1).unwrap();
        let qp = driver.create_queue_pair(1, 32, None).unwrap();
        let buf = memory.alloc(BLOCK).unwrap();
        Self {
            orch,
            _driver: driver,
            qp,
            buf,
        }
    }

    fn write(&mut self, lbas: std::ops::Range<u64>, generation: u64) {
        for lba in lbas {
            write(&mut self.qp, &self.buf, lba, generation);
        }
    }

    fn check(&mut self, lbas: std::ops::Range<u64>, generation: u64) {
        for lba in lbas {
            check(&mut self.qp, &self.buf, lba, generation);
        }
    }

    fn client(&self) -> Arc<Mutex<Client>> {
        self.orch.client().clone()
    }
}

/// Saves the source's whole stream by hand (PRE_COPY, then STOP_COPY to the end).
fn save_stream(source: &Mutex<Client>) -> Vec<u8> {
    let mut c = source.lock().unwrap();
    c.set_migration_state(DeviceState::PreCopy).unwrap();
    let mut stream = c.mig_data_read(64 << 20).unwrap();
    c.set_migration_state(DeviceState::StopCopy).unwrap();
    stream.extend(c.mig_data_read(64 << 20).unwrap());
    stream
}

/// Feeds `stream` to a fresh destination and returns the error of RESUMING → STOP (or of the
/// data write that refused it).
fn load_expecting_failure(dest: &std::path::Path, stream: &[u8]) -> String {
    let mut c = Client::connect(dest).unwrap();
    c.set_migration_state(DeviceState::Resuming).unwrap();
    let failure = match c.mig_data_write(stream) {
        Err(e) => e,
        Ok(()) => c
            .set_migration_state(DeviceState::Stop)
            .expect_err("the destination accepted a bad stream"),
    };
    assert!(
        matches!(failure, ClientError::Errno { .. }),
        "unexpected failure kind: {failure}"
    );
    // The destination stays usable: a reset brings it back to RUNNING.
    c.reset().unwrap();
    assert_eq!(c.migration_state().unwrap(), DeviceState::Running);
    failure.to_string()
}

#[test]
fn migrate_there_and_back_with_data_and_events() {
    let dir = TempDir::new("migrate");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", NS, "--name", "a"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", NS, "--name", "b"]);
    let mut guest = Guest::start(&a.socket);
    guest.write(0..64, 1);
    // An Asynchronous Event Request stays outstanding across both migrations.
    guest._driver.request_event().unwrap();

    let options = MigrateOptions {
        save_stream: Some(dir.path("a-to-b.stream")),
        ..MigrateOptions::default()
    };
    let there = guest.orch.migrate(&b.socket, &options).unwrap();
    assert!(there.stream_bytes >= 64 * BLOCK, "{there:?}");
    // The guest was idle while it moved: the device wrote no guest memory.
    assert_eq!(there.dirty_pages, 0, "{there:?}");
    guest.check(0..64, 1);
    guest.write(32..96, 2);

    // The saved stream decodes.
    let decode = std::process::Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(["--json", "state", "decode"])
        .arg(dir.path("a-to-b.stream"))
        .output()
        .unwrap();
    assert!(
        decode.status.success(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&decode.stdout).unwrap();
    assert_eq!(report["error"], serde_json::Value::Null);
    // The function's PCI face travelled with it: 65 MSI-X vectors, the capability at 40h.
    assert_eq!(report["pci_face"]["vectors"], 65, "{report}");
    assert_eq!(report["pci_face"]["msix_capability"], 0x40, "{report}");

    let back = guest
        .orch
        .migrate(&a.socket, &MigrateOptions::default())
        .unwrap();
    assert!(back.blackout < Duration::from_secs(2), "{back:?}");
    guest.check(0..32, 1);
    guest.check(32..96, 2);

    // The AER submitted before the first migration completes on the device's new home: an
    // invalid doorbell write raises an Error event.
    use nvme_host::driver::Bar as _;
    let sq1_tail = nvme_spec::registers::DoorbellStride::new(0)
        .unwrap()
        .sq_tail(1);
    guest.orch.bar().doorbell(sq1_tail, 0xFFFF);
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = guest._driver.poll_events();
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(events.len(), 1, "the outstanding AER completed once");
    guest.orch.bar().doorbell(sq1_tail, 0);
}

#[test]
fn corrupted_truncated_and_foreign_streams_are_refused_and_the_source_resumes() {
    let dir = TempDir::new("abort");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", NS, "--name", "a"]);
    let b_log = dir.path("b.log");
    let b = ServeProcess::start_logged(
        &dir.path("b.sock"),
        &["--namespace", NS, "--name", "b"],
        &b_log,
    );
    let c_log = dir.path("c.log");
    let other = ServeProcess::start_logged(
        &dir.path("c.sock"),
        &["--namespace", "ram:32M,lba=4096", "--name", "c"],
        &c_log,
    );
    let log = |path: &std::path::Path| std::fs::read_to_string(path).unwrap().to_lowercase();
    let mut guest = Guest::start(&a.socket);
    guest.write(0..32, 1);
    let source = guest.client();
    let stream = save_stream(&source);

    // One flipped byte in the middle of the stream.
    let mut flipped = stream.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let message = load_expecting_failure(&b.socket, &flipped);
    assert!(message.contains("errno"), "{message}");
    // The destination says what was wrong: a CRC mismatch.
    assert!(log(&b_log).contains("crc"), "{}", log(&b_log));

    // A truncated stream: every record is fine, the end is missing.
    let message = load_expecting_failure(&b.socket, &stream[..stream.len() - 100]);
    assert!(message.contains("errno"), "{message}");
    assert!(log(&b_log).contains("truncated"), "{}", log(&b_log));

    // A stream from a device with another namespace size.
    let message = load_expecting_failure(&other.socket, &stream);
    assert!(message.contains("errno"), "{message}");
    assert!(
        log(&c_log).contains("namespace 1: source has 16384 blocks"),
        "{}",
        log(&c_log)
    );

    // The source, abandoned in STOP_COPY, resumes with nothing lost.
    source
        .lock()
        .unwrap()
        .set_migration_state(DeviceState::Running)
        .unwrap();
    guest.check(0..32, 1);
    guest.write(32..40, 2);
    guest.check(32..40, 2);
}

#[test]
fn abandoned_pre_copy_and_resets_mid_migration_lose_nothing() {
    let dir = TempDir::new("reset");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", NS, "--name", "a"]);
    let mut guest = Guest::start(&a.socket);
    guest.write(0..16, 1);
    let source = guest.client();

    // PRE_COPY → RUNNING: the migration is abandoned.
    {
        let mut c = source.lock().unwrap();
        c.set_migration_state(DeviceState::PreCopy).unwrap();
        let data = c.mig_data_read(1 << 20).unwrap();
        assert!(!data.is_empty());
        c.set_migration_state(DeviceState::Running).unwrap();
        assert_eq!(c.migration_state().unwrap(), DeviceState::Running);
    }
    guest.check(0..16, 1);
    guest.write(16..24, 1);

    // A device reset during PRE_COPY: back to RUNNING, the session is gone.
    {
        let mut c = source.lock().unwrap();
        c.set_migration_state(DeviceState::PreCopy).unwrap();
        c.reset().unwrap();
        assert_eq!(c.migration_state().unwrap(), DeviceState::Running);
        assert!(c.mig_data_read(4096).is_err(), "the old session is invalid");
    }
    // A reset also reset the controller: the guest driver re-initialises, as after any FLR.
    let mut guest = reinit(guest);
    guest.check(0..24, 1);

    // A device reset during STOP_COPY.
    {
        let mut c = source.lock().unwrap();
        c.set_migration_state(DeviceState::PreCopy).unwrap();
        c.set_migration_state(DeviceState::StopCopy).unwrap();
        let _ = c.mig_data_read(4096).unwrap();
        c.reset().unwrap();
        assert_eq!(c.migration_state().unwrap(), DeviceState::Running);
    }
    let mut guest = reinit(guest);
    guest.check(0..24, 1);
    guest.write(24..32, 2);
    guest.check(24..32, 2);
}

/// Brings the guest's controller up again after a device reset (the queues are gone).
fn reinit(guest: Guest) -> Guest {
    let Guest {
        orch, _driver, buf, ..
    } = guest;
    _driver.enable().unwrap();
    _driver.set_queue_count(1).unwrap();
    let qp = _driver.create_queue_pair(1, 32, None).unwrap();
    Guest {
        orch,
        _driver,
        qp,
        buf,
    }
}

#[test]
fn dma_logging_reports_exactly_the_pages_the_device_wrote() {
    let dir = TempDir::new("dirty");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", NS, "--name", "a"]);
    let mut guest = Guest::start(&a.socket);
    guest.write(0..4, 1);
    let client = guest.client();
    let memory = (IOVA, 16u64 << 20);
    client
        .lock()
        .unwrap()
        .dma_logging_start(4096, &[memory])
        .unwrap();
    // A read makes the device write the data buffer and a completion queue entry.
    check(&mut guest.qp, &guest.buf, 2, 1);
    let bitmap = client
        .lock()
        .unwrap()
        .dma_logging_report(memory.0, memory.1, 4096)
        .unwrap();
    let page = |iova: u64| ((iova - IOVA) / 4096) as usize;
    let dirty = |i: usize| bitmap[i / 64] & (1 << (i % 64)) != 0;
    assert!(
        dirty(page(guest.buf.iova())),
        "the read buffer's page is dirty"
    );
    assert!(
        dirty(page(guest.qp.cq_iova())),
        "the completion queue's page is dirty"
    );
    assert!(
        !dirty(page(guest.qp.sq_iova())),
        "the device never writes the SQ"
    );
    let count: u32 = bitmap.iter().map(|w| w.count_ones()).sum();
    assert_eq!(count, 2, "nothing else was written");
    // Report-and-clear: a second report is empty.
    let again = client
        .lock()
        .unwrap()
        .dma_logging_report(memory.0, memory.1, 4096)
        .unwrap();
    assert!(again.iter().all(|&w| w == 0));
    client.lock().unwrap().dma_logging_stop().unwrap();
}
