//! `vfio-nvme serve` as a deployment runs it: socket permissions and group, systemd readiness
//! over `$NOTIFY_SOCKET` (a path and an abstract name), and default names that differ between
//! servers.

mod common;

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use common::ServeProcess;
use common::TempDir;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::Orchestrator;

/// `vfio-nvme serve ARGS...` with `NOTIFY_SOCKET=notify`, stopped with SIGTERM on drop.
struct Notified(Child);

impl Notified {
    fn start(notify: &str, args: &[&str]) -> Self {
        Self(
            Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
                .arg("serve")
                .args(args)
                .env("NOTIFY_SOCKET", notify)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// The one datagram `socket` receives (within a generous timeout).
fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("no readiness notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Checks that every socket listens once readiness arrived.
fn all_listen(sockets: &[&Path]) {
    for socket in sockets {
        assert!(
            std::fs::symlink_metadata(socket)
                .unwrap()
                .file_type()
                .is_socket()
        );
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    }
}

#[test]
fn ready_is_sent_once_every_socket_listens() {
    let dir = TempDir::new("notify");
    let notify = dir.path("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    let (a, b) = (dir.path("a.sock"), dir.path("b.sock"));
    let _serve = Notified::start(
        notify.to_str().unwrap(),
        &[
            "--socket",
            a.to_str().unwrap(),
            "--socket",
            b.to_str().unwrap(),
            "--namespace",
            "ram:8M",
        ],
    );
    let message = receive(&listener);
    assert!(message.starts_with("READY=1\n"), "{message}");
    assert!(
        message.contains("STATUS=serving 2 VF(s) of nqn."),
        "{message}"
    );
    all_listen(&[&a, &b]);

    // The abstract-namespace form, `@name`.
    let name = format!("vfio-nvme-serve-test-{}", std::process::id());
    let listener =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let c = dir.path("c.sock");
    let _serve = Notified::start(
        &format!("@{name}"),
        &["--socket", c.to_str().unwrap(), "--namespace", "ram:8M"],
    );
    assert!(receive(&listener).starts_with("READY=1\n"));
    all_listen(&[&c]);
}

#[test]
fn sockets_get_the_mode_and_group_asked_for() {
    let dir = TempDir::new("socket-mode");
    let default = ServeProcess::start(&dir.path("default.sock"), &["--namespace", "ram:8M"]);
    let metadata = std::fs::metadata(&default.socket).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600);

    // Root may give the file to any group; anyone else to their own.
    std::fs::write(dir.path("probe"), b"").unwrap();
    let probe = std::fs::metadata(dir.path("probe")).unwrap();
    let gid = if probe.uid() == 0 {
        probe.gid() + 4321
    } else {
        probe.gid()
    };
    let shared = ServeProcess::start(
        &dir.path("shared.sock"),
        &[
            "--namespace",
            "ram:8M",
            "--socket-mode",
            "0660",
            "--socket-group",
            &gid.to_string(),
        ],
    );
    // The mode is set right after bind; give the server a moment past the file's creation.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metadata = loop {
        let metadata = std::fs::metadata(&shared.socket).unwrap();
        if metadata.mode() & 0o777 == 0o660 || std::time::Instant::now() > deadline {
            break metadata;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metadata.mode() & 0o777, 0o660);
    assert_eq!(metadata.gid(), gid);
    UnixStream::connect(&shared.socket).unwrap();
}

/// The serial number and NQN the VF at `socket` reports in Identify Controller.
fn identity(socket: &Path) -> (String, String) {
    let memory = HostMemory::new(4 << 20, 0x1_0000_0000).unwrap();
    let orch = Orchestrator::connect(socket, memory.clone()).unwrap();
    let driver = Driver::new(orch.bar(), memory).unwrap();
    let id = driver.identify_controller().unwrap();
    let ascii = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim_end_matches(['\0', ' '])
            .to_owned()
    };
    (ascii(&id.sn), ascii(&id.subnqn))
}

#[test]
fn default_servers_have_distinct_serials_and_nqns_and_named_ones_keep_their_name() {
    let dir = TempDir::new("names");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:8M"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:8M"]);
    let (serial_a, nqn_a) = identity(&a.socket);
    let (serial_b, nqn_b) = identity(&b.socket);
    assert_ne!(serial_a, serial_b);
    assert_ne!(nqn_a, nqn_b);
    assert!(
        serial_a.len() <= 20 && serial_a.starts_with("VFNVME-"),
        "{serial_a}"
    );

    let named = ServeProcess::start(
        &dir.path("named.sock"),
        &["--namespace", "ram:8M", "--name", "rack7"],
    );
    let (serial, nqn) = identity(&named.socket);
    assert_eq!(serial, "VFNVME-rack7");
    assert!(nqn.ends_with(":rack7"), "{nqn}");
}
