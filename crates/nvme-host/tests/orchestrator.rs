//! The orchestrator migrates a VF between two vfio-user servers (threads of this process, real
//! UNIX sockets) while the host driver keeps its queues, and back again.

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
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfu::server::Device;
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
    let served = Served::new(&ServeConfig {
        name: name.to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram(32 << 20),
            block_size: BlockSize::B4096,
            shared: false,
        }],
        ..ServeConfig::default()
    })
    .unwrap();
    let path = dir.join(format!("{name}.sock"));
    let server = Server::bind(&path).unwrap();
    let device: Arc<dyn Device> = served.function(1).unwrap().clone();
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
    let memory = HostMemory::new(16 << 20, 0x8000_0000).unwrap();
    let mut orch = Orchestrator::connect(&a_path, memory.clone()).unwrap();
    let driver = Driver::new(orch.bar(), memory.clone()).unwrap();
    driver.set_queue_count(1).unwrap();
    let mut qp = driver.create_queue_pair(1, 32, None).unwrap();
    let buf = memory.alloc(BLOCK).unwrap();
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
