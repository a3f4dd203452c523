//! A hostile or careless vfio-user client against a real `vfio-nvme serve` process: it truncates
//! the doorbell memfd, shrinks guest RAM under a Read, hands over a saturated eventfd or a pipe,
//! leaves in every migration state, and migrates A → B → A. The server must neither crash nor
//! wedge, its other VFs must keep working, and the next client must find a running controller.

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use common::ServeProcess;
use common::TempDir;
use nvme_host::driver::Driver;
use nvme_host::driver::QueuePair;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::vfio_user_bar::VfioUserBar;
use nvme_host::vfio_user_bar::dma_map_host_memory;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfu::client::Client;
use vfu::client::ClientError;
use vfu::pci::BAR0_REGION_INDEX;
use vfu::pci::CONFIG_REGION_INDEX;
use vfu::pci::MSIX_IRQ_INDEX;

const BLOCK: u64 = 4096;
const IOVA: u64 = 0x1_0000_0000;
const NS: &str = "ram:16M,lba=4096";

/// A guest on `socket`: its memory, the orchestrator's connection, a driver, one I/O queue.
struct Guest {
    memory: Arc<HostMemory>,
    orch: Orchestrator,
    driver: Driver,
    qp: QueuePair,
}

impl Guest {
    fn start(socket: &Path) -> Self {
        let memory = HostMemory::new(8 << 20, IOVA).unwrap();
        let orch = Orchestrator::connect(socket, memory.clone()).unwrap();
        let driver = Driver::new(orch.bar(), memory.clone()).unwrap();
        driver.set_queue_count(1).unwrap();
        let qp = driver.create_queue_pair(1, 32, None).unwrap();
        Self {
            memory,
            orch,
            driver,
            qp,
        }
    }

    /// Runs `cmd` and returns its completion.
    fn io(&mut self, cmd: Command) -> Completion {
        self.qp.submit(cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = None;
        while done.is_none() {
            self.qp.poll(|c| done = Some(c));
            assert!(Instant::now() < deadline, "no completion: the server hangs");
        }
        done.unwrap()
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.orch.client().lock().unwrap()
    }
}

fn pattern(lba: u64) -> Vec<u8> {
    (0..BLOCK).map(|i| (i as u8) ^ (lba as u8)).collect()
}

/// Brings a fresh controller up on `socket` and identifies it: the VF is served and fetches.
fn identify(socket: &Path) -> String {
    let guest = Guest::start(socket);
    let id = guest.driver.identify_controller().unwrap();
    String::from_utf8_lossy(&id.sn).trim_end().to_owned()
}

#[test]
fn truncating_the_doorbell_memfd_is_refused_and_the_vf_keeps_working() {
    let dir = TempDir::new("hostile-doorbells");
    // Shared doorbells: the doorbell page is the client's to map (trapped, it has no memfd).
    let args = ["--namespace", NS, "--doorbells", "shared"];
    let serve = ServeProcess::start(&dir.path("vf.sock"), &args);
    let memory = HostMemory::new(8 << 20, IOVA).unwrap();
    let orch = Orchestrator::connect(&serve.socket, memory.clone()).unwrap();
    let doorbells: OwnedFd = orch
        .client()
        .lock()
        .unwrap()
        .region_fd(BAR0_REGION_INDEX)
        .expect("BAR0 comes with its doorbell memfd")
        .try_clone_to_owned()
        .unwrap();
    let file = File::from(doorbells);
    for len in [0, 1 << 20] {
        let err = file
            .set_len(len)
            .expect_err("the server seals its memfds against resizing");
        assert_eq!(err.raw_os_error(), Some(Errno::EPERM.get()), "{err}");
    }
    // The poller reads the doorbells on every pass: it is still alive.
    let driver = Driver::new(orch.bar(), memory).unwrap();
    driver.identify_controller().unwrap();
    assert!(serve.stop(), "the server exits cleanly");
}

#[test]
fn guest_ram_shrunk_after_dma_map_fails_the_read_and_nothing_else() {
    let dir = TempDir::new("hostile-shrink");
    let serve = ServeProcess::start(
        &dir.path("vf1.sock"),
        &[
            "--socket",
            dir.path("vf2.sock").to_str().unwrap(),
            "--namespace",
            NS,
        ],
    );
    let mut guest = Guest::start(&serve.socket);
    let buf = guest.memory.alloc(BLOCK).unwrap();
    buf.write(0, &pattern(3));
    let wrote = guest.io(Command::write(0, 1, 3, 0, buf.iova(), 0));
    assert!(wrote.status.status().is_success());

    // More guest RAM in a memfd that cannot be sealed (a file the server may only reach by
    // file I/O), mapped after the first window.
    const WINDOW: u64 = 0x2_0000_0000;
    let ram =
        rustix::fs::memfd_create("unsealed-guest-ram", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let ram = File::from(ram);
    ram.set_len(1 << 20).unwrap();
    guest
        .client()
        .dma_map(WINDOW, 1 << 20, true, Some(ram.as_fd()), 0)
        .unwrap();
    let read = guest.io(Command::read(0, 1, 3, 0, WINDOW + 0x8000, 0));
    assert!(read.status.status().is_success());
    let mut back = vec![0u8; BLOCK as usize];
    std::os::unix::fs::FileExt::read_exact_at(&ram, &mut back, 0x8000).unwrap();
    assert_eq!(back, pattern(3));

    // The client shrinks that RAM and reads into the vanished part: the command fails.
    ram.set_len(0x4000).unwrap();
    let failed = guest.io(Command::read(0, 1, 3, 0, WINDOW + 0x8000, 0));
    assert!(
        !failed.status.status().is_success(),
        "a Read into truncated memory cannot succeed"
    );
    // The controller, the process and the other VF live on.
    buf.fill(0);
    let again = guest.io(Command::read(0, 1, 3, 0, buf.iova(), 0));
    assert!(again.status.status().is_success());
    let mut data = vec![0u8; BLOCK as usize];
    buf.read(0, &mut data);
    assert_eq!(data, pattern(3));
    guest.driver.identify_controller().unwrap();
    assert!(!identify(&dir.path("vf2.sock")).is_empty());
    drop(guest);
    assert!(serve.stop());
}

/// A client with `memory` mapped whose MSI-X vector 0 signals `fd`, with MSI-X enabled.
fn client_with_vector0(socket: &Path, memory: &HostMemory, fd: &OwnedFd) -> Arc<Mutex<Client>> {
    let mut client = Client::connect(socket).unwrap();
    dma_map_host_memory(&mut client, memory).unwrap();
    client
        .set_irq_eventfds(MSIX_IRQ_INDEX, 0, &[fd.as_fd()])
        .unwrap();
    // MSI-X Message Control (capability at 40h): enable.
    let control = vfio_nvme::pci::config::MSIX_CAP as u64 + 2;
    client
        .region_write(
            CONFIG_REGION_INDEX,
            control,
            &vfio_nvme::pci::config::MSIX_ENABLE.to_le_bytes(),
        )
        .unwrap();
    Arc::new(Mutex::new(client))
}

#[test]
fn a_saturated_blocking_eventfd_never_blocks_the_server() {
    let dir = TempDir::new("hostile-eventfd");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", NS]);
    let memory = HostMemory::new(8 << 20, IOVA).unwrap();
    // A blocking eventfd whose counter is at its maximum: one more signal would block a writer.
    let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
    let client = client_with_vector0(&serve.socket, &memory, &fd);
    let bar = Arc::new(VfioUserBar::new(client.clone()).unwrap());
    let driver = Driver::new(bar, memory).unwrap();
    // Every admin completion signals vector 0.
    for _ in 0..20 {
        driver.identify_controller().unwrap();
    }
    let mut counter = [0u8; 8];
    rustix::io::read(&fd, &mut counter).unwrap();
    assert_eq!(
        u64::from_ne_bytes(counter),
        u64::MAX - 1,
        "nothing was added"
    );
    assert!(serve.stop(), "SIGTERM still ends the server");
}

#[test]
fn a_pipe_is_refused_as_an_interrupt_fd() {
    let dir = TempDir::new("hostile-pipe");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", NS]);
    let mut client = Client::connect(&serve.socket).unwrap();
    let (_read, write) = std::io::pipe().unwrap();
    let write: OwnedFd = write.into();
    let err = client
        .set_irq_eventfds(MSIX_IRQ_INDEX, 3, &[write.as_fd()])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Errno {
                errno: Errno::EINVAL,
                ..
            }
        ),
        "{err}"
    );
    drop(client);
    identify(&serve.socket);
    assert!(serve.stop());
}

/// Leaves the device of a fresh guest on `socket` in `state` and disconnects.
fn leave_in(socket: &Path, state: DeviceState) {
    let mut guest = Guest::start(socket);
    let buf = guest.memory.alloc(BLOCK).unwrap();
    buf.write(0, &pattern(9));
    assert!(
        guest
            .io(Command::write(0, 1, 9, 0, buf.iova(), 0))
            .status
            .status()
            .is_success()
    );
    let mut client = guest.client();
    match state {
        DeviceState::Resuming => {
            client.set_migration_state(DeviceState::Stop).unwrap();
            client.set_migration_state(DeviceState::Resuming).unwrap();
            // Half a stream: something, never its end.
            client.mig_data_write(b"VFNVMEMS half a stream").ok();
        }
        DeviceState::StopCopy | DeviceState::PreCopy | DeviceState::PreCopyP2p => {
            if state == DeviceState::StopCopy {
                client.set_migration_state(DeviceState::PreCopy).unwrap();
            }
            client.set_migration_state(state).unwrap();
            assert!(!client.mig_data_read(4096).unwrap().is_empty());
        }
        other => client.set_migration_state(other).unwrap(),
    }
}

#[test]
fn a_client_leaving_in_any_migration_state_leaves_a_running_controller() {
    let dir = TempDir::new("hostile-leave");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", NS]);
    for state in [
        DeviceState::PreCopy,
        DeviceState::PreCopyP2p,
        DeviceState::StopCopy,
        DeviceState::Stop,
        DeviceState::Resuming,
        DeviceState::RunningP2p,
    ] {
        leave_in(&serve.socket, state);
        let mut guest = Guest::start(&serve.socket);
        assert_eq!(
            guest.client().migration_state().unwrap(),
            DeviceState::Running,
            "after a client left in {state}"
        );
        let err = guest.client().mig_data_read(4096).unwrap_err();
        assert!(
            matches!(err, ClientError::Errno { .. }),
            "no old session is readable after {state}: {err}"
        );
        // The controller fetches, and the namespace kept its data.
        guest.driver.identify_controller().unwrap();
        let buf = guest.memory.alloc(BLOCK).unwrap();
        let read = guest.io(Command::read(0, 1, 9, 0, buf.iova(), 0));
        assert!(read.status.status().is_success(), "after {state}");
        let mut data = vec![0u8; BLOCK as usize];
        buf.read(0, &mut data);
        assert_eq!(data, pattern(9), "after {state}");
    }
    assert!(serve.stop());
}

#[test]
fn migrating_a_to_b_and_back_leaves_b_usable() {
    let dir = TempDir::new("hostile-aba");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", NS, "--name", "a"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", NS, "--name", "b"]);
    let mut guest = Guest::start(&a.socket);
    let buf = guest.memory.alloc(BLOCK).unwrap();
    buf.write(0, &pattern(5));
    assert!(
        guest
            .io(Command::write(0, 1, 5, 0, buf.iova(), 0))
            .status
            .status()
            .is_success()
    );
    guest
        .orch
        .migrate(&b.socket, &MigrateOptions::default())
        .unwrap();
    guest
        .orch
        .migrate(&a.socket, &MigrateOptions::default())
        .unwrap();
    // B was left behind by the orchestrator: a new guest there finds a running controller.
    let mut other = Guest::start(&b.socket);
    assert_eq!(
        other.client().migration_state().unwrap(),
        DeviceState::Running
    );
    other.driver.identify_controller().unwrap();
    let read = other.io(Command::read(
        0,
        1,
        5,
        0,
        other.memory.alloc(BLOCK).unwrap().iova(),
        0,
    ));
    assert!(read.status.status().is_success());
}

#[test]
fn sighup_ends_serve_and_removes_the_socket() {
    let dir = TempDir::new("hostile-sighup");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(["serve", "--namespace", NS, "--socket"])
        .arg(dir.path("vf.sock"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path("vf.sock").exists() {
        assert!(Instant::now() < deadline, "the socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGHUP did not end the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!dir.path("vf.sock").exists(), "the socket file is removed");
}

#[test]
fn sigterm_ends_serve_with_a_client_stalled_mid_message_and_another_waiting() {
    use std::io::Write as _;
    let dir = TempDir::new("hostile-stalled-stop");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", NS]);
    let client = Client::connect(&serve.socket).unwrap();
    // A raw second connection that sends half a header and stops.
    let mut stalled = std::os::unix::net::UnixStream::connect(&serve.socket).unwrap();
    stalled.write_all(&[1, 0, 4, 0, 16, 0]).unwrap();
    let _waiting = std::os::unix::net::UnixStream::connect(&serve.socket).unwrap();
    assert!(serve.stop(), "SIGTERM ends the server promptly and cleanly");
    drop(client);
}

#[test]
fn guest_memory_mapped_without_an_fd_is_reached_through_dma_read_and_write() {
    let dir = TempDir::new("hostile-fdless");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", NS]);
    let memory = HostMemory::new(4 << 20, IOVA).unwrap();
    let mut client = Client::connect(&serve.socket).unwrap();
    nvme_host::vfio_user_bar::dma_map_host_memory_served(&mut client, &memory).unwrap();
    let client = Arc::new(Mutex::new(client));
    let bar = Arc::new(VfioUserBar::new(client.clone()).unwrap());
    // Queues, Identify data and I/O buffers all travel as DMA_READ/DMA_WRITE messages.
    let driver = Driver::new(bar, memory.clone()).unwrap();
    let id = driver.identify_controller().unwrap();
    assert!(id.sn.iter().any(|&b| b != 0 && b != b' '));
    driver.set_queue_count(1).unwrap();
    let mut qp = driver.create_queue_pair(1, 8, None).unwrap();
    let buf = memory.alloc(2 * BLOCK).unwrap();
    let data: Vec<u8> = [pattern(1), pattern(2)].concat();
    buf.write(0, &data);
    let run = |qp: &mut QueuePair, cmd: Command| {
        qp.submit(cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = None;
        while done.is_none() {
            qp.poll(|c| done = Some(c));
            assert!(Instant::now() < deadline, "no completion");
        }
        let status = done.unwrap().status.status();
        assert!(status.is_success(), "{status:?}");
    };
    run(
        &mut qp,
        Command::write(0, 1, 10, 1, buf.iova(), buf.iova() + BLOCK),
    );
    buf.fill(0);
    run(
        &mut qp,
        Command::read(0, 1, 10, 1, buf.iova(), buf.iova() + BLOCK),
    );
    let mut back = vec![0u8; data.len()];
    buf.read(0, &mut back);
    assert_eq!(back, data);
    drop(driver);
    drop(client);
    assert!(serve.stop());
}
