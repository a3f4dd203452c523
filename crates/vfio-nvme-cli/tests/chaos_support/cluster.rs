//! The two `vfio-nvme serve` processes the device moves between, each with its own log file,
//! and the restart of a killed one.

use std::path::Path;
use std::path::PathBuf;

use crate::common::ServeProcess;
use crate::common::TempDir;

/// The namespace both servers serve: small, so that a migration's full pre-copy is quick.
pub const NAMESPACE: &str = "ram:8M,lba=4096";

/// One server of the pair.
pub struct Server {
    name: &'static str,
    socket: PathBuf,
    dir: PathBuf,
    /// The process; `None` only while it is being restarted.
    process: Option<ServeProcess>,
    /// How many times it was started (names the log of each incarnation).
    starts: u32,
    /// Its `--doorbells` delivery.
    doorbells: &'static str,
    log: PathBuf,
}

impl Server {
    /// Starts the server `name` with its socket and logs in `dir`, delivering doorbells as
    /// `doorbells` (`serve --doorbells`).
    pub fn start(dir: &TempDir, name: &'static str, doorbells: &'static str) -> Self {
        let mut server = Self {
            name,
            socket: dir.path(&format!("{name}.sock")),
            dir: dir.0.clone(),
            process: None,
            starts: 0,
            doorbells,
            log: PathBuf::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.log = self.dir.join(format!("{}-{}.log", self.name, self.starts));
        self.process = Some(ServeProcess::start_logged(
            &self.socket,
            &[
                "--namespace",
                NAMESPACE,
                "--name",
                self.name,
                "--doorbells",
                self.doorbells,
            ],
            &self.log,
        ));
    }

    /// The server's name (`a` or `b`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its vfio-user socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("the server runs").pid()
    }

    /// Everything the current incarnation logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reaps the killed process and starts a fresh one on the same socket (its device is new:
    /// empty namespace, controller reset).
    pub fn restart_killed(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
        // SIGKILL left the socket file; the new server replaces it, but the start waits for
        // the file to appear, so it must be gone first.
        let _ = std::fs::remove_file(&self.socket);
        self.spawn();
    }
}
