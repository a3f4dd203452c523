//! The vfio-user server driven over real UNIX sockets: a test device, a raw client built from
//! the codec, every command, error paths, reconnection, hostile clients (stalls, a second
//! connection, disconnects mid-migration, fd-less DMA windows), a fuzz test against a live
//! server, and interop with the rust-vmm `vfio_user` client.

mod client;
mod control;
mod device;
mod fuzz;
mod interop;
mod protocol;
mod trust;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use vfu::server::Server;
use vfu::server::ServerError;

use device::TestDevice;

/// A unique socket path in the temporary directory.
pub fn socket_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "vfio-user-test-{}-{name}-{n}.sock",
        std::process::id()
    ))
}

/// A server hosting a [`TestDevice`] on its own thread.
pub struct TestServer {
    /// The socket path.
    pub path: PathBuf,
    /// The hosted device.
    pub device: Arc<TestDevice>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Binds a fresh socket and starts serving a migratable [`TestDevice`].
    pub fn start(name: &str) -> Self {
        Self::start_with(name, device::new())
    }

    /// Binds a fresh socket and starts serving `device`.
    pub fn start_with(name: &str, device: TestDevice) -> Self {
        Self::serve(name, device, |server| server)
    }

    /// Binds a fresh socket, lets `setup` adjust the server and starts serving `device`.
    pub fn serve(name: &str, device: TestDevice, setup: impl FnOnce(Server) -> Server) -> Self {
        let path = socket_path(name);
        let server = setup(Server::bind(&path).expect("bind the test socket"));
        let device = Arc::new(device);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let device = Arc::clone(&device);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || server.serve(device, &stop))
        };
        Self {
            path,
            device,
            stop,
            thread: Some(thread),
        }
    }

    /// Sets `stop` and waits for `serve` to return.
    pub fn stop(&mut self) -> Result<(), ServerError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread.join().expect("the server thread does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop().expect("serve returns Ok");
        } else {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}
