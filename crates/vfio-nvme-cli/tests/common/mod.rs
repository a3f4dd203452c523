//! Running `vfio-nvme serve` as a child process for cross-process tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after `name` and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vfio-nvme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `vfio-nvme serve` child process, stopped with SIGTERM on drop.
pub struct ServeProcess {
    child: Child,
    /// The socket it serves VF 1 on.
    pub socket: PathBuf,
}

impl ServeProcess {
    /// Starts `vfio-nvme serve --socket SOCKET ARGS...` and waits for the socket.
    pub fn start(socket: &Path, args: &[&str]) -> Self {
        Self::spawn(socket, args, Stdio::inherit())
    }

    /// Like [`start`](Self::start), with the server's log (stderr) going to `log`.
    pub fn start_logged(socket: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create the server log");
        Self::spawn(socket, args, Stdio::from(file))
    }

    /// Like [`start_logged`](Self::start_logged), with the server's tracing at `info`
    /// (`RUST_LOG=info`) in the log too.
    pub fn start_traced(socket: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create the server log");
        Self::spawn_env(socket, args, Stdio::null(), Stdio::from(file), Some("info"))
    }

    /// Like [`start`](Self::start), with the server's stdout (e.g. its `--json` events) going
    /// to `out`.
    pub fn start_output(socket: &Path, args: &[&str], out: &Path) -> Self {
        let file = std::fs::File::create(out).expect("create the server's output file");
        Self::spawn_with(socket, args, Stdio::from(file), Stdio::inherit())
    }

    fn spawn(socket: &Path, args: &[&str], stderr: Stdio) -> Self {
        Self::spawn_with(socket, args, Stdio::null(), stderr)
    }

    fn spawn_with(socket: &Path, args: &[&str], stdout: Stdio, stderr: Stdio) -> Self {
        Self::spawn_env(socket, args, stdout, stderr, None)
    }

    fn spawn_env(
        socket: &Path,
        args: &[&str],
        stdout: Stdio,
        stderr: Stdio,
        rust_log: Option<&str>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vfio-nvme"));
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start vfio-nvme serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("vfio-nvme serve exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "socket {} never appeared",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket: socket.to_owned(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a `kill` name such as `STOP` or `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Kills the server with SIGKILL (no clean-up: its socket file stays) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// Sends `signal` (a `kill` name such as `STOP`, `CONT` or `KILL`) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
