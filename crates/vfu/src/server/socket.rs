//! [`Server`]: the listening UNIX socket and the accept loop that serves one client at a time.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::net::AddressFamily;
use rustix::net::SocketAddrUnix;
use rustix::net::SocketFlags;
use rustix::net::SocketType;

use super::connection;
use super::control::ControlPort;
use super::device::Device;
use super::error::ServerError;
use crate::control::ControlHandler;
use crate::control::FirstBytes;
use crate::socket::wait_readable;

/// How often a waiting server looks at its `stop` flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long the server waits for a client before giving up on it; see [`Server::with_timeouts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// VERSION must be negotiated within this long after the client connected, or the
    /// connection is dropped (a connection that never speaks must not keep the device).
    pub handshake: Duration,
    /// A message that has started to arrive must receive more bytes at least this often, or the
    /// connection is dropped (a client stalling half-way through a message must not keep the
    /// device either). An idle client between messages is not stalled.
    pub stall: Duration,
    /// How long a device access to a window mapped without a file descriptor waits for the
    /// client's reply to its `DMA_READ`/`DMA_WRITE` before it fails.
    pub dma: Duration,
}

impl Default for ServerTimeouts {
    /// 5 s each: QEMU's client waits 5 s for a reply (`x-msg-timeout`), so a client that needs
    /// longer than that for its own messages is not working anyway.
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            stall: Duration::from_secs(5),
            dma: Duration::from_secs(5),
        }
    }
}

/// Pending connections the kernel queues while the server serves the current client.
const BACKLOG: i32 = 16;

/// Default permissions of the socket file: the owner only (there is no authentication in
/// vfio-user; the filesystem is the access control).
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// Who may connect to a server's socket: the file's permission bits and group.
///
/// There is no authentication in vfio-user, so these are the access control. A VMM that runs
/// as another user (QEMU under libvirt) needs a group both share and a mode that lets the group
/// in, e.g. `0o660`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits (at most `0o777`): the file has exactly these once bound, whatever the
    /// umask.
    pub mode: u32,
    /// Group to give the file (a gid the server's user belongs to); `None` keeps the user's
    /// primary group.
    pub group: Option<u32>,
}

impl Default for SocketOptions {
    /// Mode 0600, the user's own group.
    fn default() -> Self {
        Self {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

/// A vfio-user server listening on a UNIX socket.
///
/// It serves one client at a time from the thread that calls [`Server::serve`]; a client that
/// connects meanwhile gets an error reply carrying EBUSY to its first request and is
/// disconnected. The socket file is removed when the server is dropped.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    listener: OwnedFd,
    /// Device and inode of the socket file we created, so that drop removes only our own file.
    identity: (u64, u64),
    serving: Mutex<()>,
    timeouts: ServerTimeouts,
    /// Where control connections on this socket go, if anywhere ([`Server::with_control`]).
    control: Option<ControlPort>,
}

impl Server {
    /// Creates the listening socket at `path` with mode 0600 (see [`bind_with`](Self::bind_with)).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        Self::bind_with(path, &SocketOptions::default())
    }

    /// Creates the listening socket at `path` with `options`' mode and group. At no moment is
    /// the file more open than asked: it is created with the mode less the group's bits when
    /// a group is asked for (until the file has that group), and gets its exact mode before
    /// the socket listens.
    ///
    /// A stale socket file (nobody listening) is replaced; a socket someone listens on is
    /// [`ServerError::SocketBusy`]; any other file is [`ServerError::NotASocket`]; a mode
    /// above `0o777` is [`ServerError::SocketMode`]; a group the user cannot give the file is
    /// [`ServerError::SocketGroup`].
    pub fn bind_with(path: impl AsRef<Path>, options: &SocketOptions) -> Result<Self, ServerError> {
        let path = path.as_ref().to_path_buf();
        if options.mode & !0o777 != 0 {
            return Err(ServerError::SocketMode {
                path,
                mode: options.mode,
            });
        }
        // Until the file has the asked group it has the user's: no group access meanwhile.
        let initial_mode = match options.group {
            Some(_) => options.mode & !0o070,
            None => options.mode,
        };
        clear_stale(&path)?;
        let socket_error = |action, source| ServerError::Socket {
            action,
            path: path.clone(),
            source,
        };
        let address = SocketAddrUnix::new(path.as_path())
            .map_err(|e| socket_error("address the", e.into()))?;
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| socket_error("create the", e.into()))?;
        // The file bind creates takes the socket inode's mode (minus the umask): restricting the
        // inode first leaves no moment in which the file is more open than asked.
        rustix::fs::fchmod(&listener, rustix::fs::Mode::from_raw_mode(initial_mode))
            .map_err(|e| socket_error("restrict the", e.into()))?;
        rustix::net::bind(&listener, &address).map_err(|e| socket_error("bind", e.into()))?;
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|e| socket_error("inspect the new", e))?;
        let identity = (metadata.dev(), metadata.ino());
        let server = Self {
            path: path.clone(),
            listener,
            identity,
            serving: Mutex::new(()),
            timeouts: ServerTimeouts::default(),
            control: None,
        };
        if let Some(gid) = options.group {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &server.path,
                None,
                Some(rustix::fs::Gid::from_raw(gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ServerError::SocketGroup {
                path: server.path.clone(),
                gid,
                source: e.into(),
            })?;
        }
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(options.mode))
            .map_err(|e| socket_error("set the mode of the", e))?;
        rustix::net::listen(&server.listener, BACKLOG)
            .map_err(|e| socket_error("listen on the", e.into()))?;
        tracing::info!(path = %server.path.display(), "vfio-user server listening");
        Ok(server)
    }

    /// The server with other [`ServerTimeouts`] (tests use short ones).
    pub fn with_timeouts(mut self, timeouts: ServerTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The server that also answers the control protocol ([`crate::control`]) on its socket:
    /// a connection whose first bytes are the control hello goes to `handler` (on a thread of
    /// its own, also while a vfio-user client is attached); vfio-user clients see no change.
    pub fn with_control(mut self, handler: Arc<dyn ControlHandler>) -> Self {
        self.control = Some(ControlPort::new(handler));
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `device` until `stop` is set: accepts a client, serves it until it disconnects or
    /// is dropped (see [`ServerTimeouts`]), then calls [`Device::disconnected`] (every DMA window
    /// and interrupt fd of the client goes) and tells the device's migration handle
    /// ([`super::Migratable::disconnected`]: its sessions end and it returns to RUNNING),
    /// keeping the device state for the next client, and accepts the next. `stop` is looked at
    /// every 50 ms, also while a client is connected (which is then disconnected).
    pub fn serve(&self, device: Arc<dyn Device>, stop: &AtomicBool) -> Result<(), ServerError> {
        let _serving = self
            .serving
            .try_lock()
            .map_err(|_| ServerError::AlreadyServing {
                path: self.path.clone(),
            })?;
        let accept_error = |source| ServerError::Accept {
            path: self.path.clone(),
            source,
        };
        while !stop.load(Ordering::Relaxed) {
            if !wait_readable(self.listener.as_fd(), POLL_INTERVAL).map_err(accept_error)? {
                continue;
            }
            let socket = match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(socket) => socket,
                Err(
                    rustix::io::Errno::AGAIN
                    | rustix::io::Errno::INTR
                    | rustix::io::Errno::CONNABORTED,
                ) => continue,
                Err(e) => return Err(accept_error(e.into())),
            };
            crate::socket::enlarge_send_buffer(socket.as_fd());
            if let Some(port) = &self.control
                && super::control::classify_new(&socket) == FirstBytes::Control
            {
                port.hand_off(socket, Vec::new());
                continue;
            }
            tracing::info!("vfio-user client connected");
            device.client_attached();
            let end = connection::serve(
                device.as_ref(),
                socket,
                self.listener.as_fd(),
                stop,
                self.timeouts,
                self.control.as_ref(),
            );
            // The client's memory goes first: a controller resumed by the walk back to RUNNING
            // must find nothing of the old client's to fetch from or write to.
            device.disconnected();
            if let Some(migration) = device.migration() {
                migration.disconnected();
            }
            match &end {
                Ok(()) => tracing::info!("vfio-user client disconnected"),
                Err(err) => tracing::warn!("vfio-user client dropped: {err}"),
            }
            device.client_detached(end.as_ref().err().map(|e| e as &dyn std::error::Error));
        }
        Ok(())
    }

    /// Serves only the control protocol on this socket (a standalone control socket), with
    /// `handler`, until `stop` is set; every connection is answered on a thread of its own.
    pub fn serve_control(
        &self,
        handler: Arc<dyn ControlHandler>,
        stop: &AtomicBool,
    ) -> Result<(), ServerError> {
        let _serving = self
            .serving
            .try_lock()
            .map_err(|_| ServerError::AlreadyServing {
                path: self.path.clone(),
            })?;
        let port = ControlPort::new(handler);
        let accept_error = |source| ServerError::Accept {
            path: self.path.clone(),
            source,
        };
        while !stop.load(Ordering::Relaxed) {
            if !wait_readable(self.listener.as_fd(), POLL_INTERVAL).map_err(accept_error)? {
                continue;
            }
            match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(socket) => port.hand_off(socket, Vec::new()),
                Err(
                    rustix::io::Errno::AGAIN
                    | rustix::io::Errno::INTR
                    | rustix::io::Errno::CONNABORTED,
                ) => {}
                Err(e) => return Err(accept_error(e.into())),
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours && let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove the socket file: {err}");
        }
    }
}

/// Removes a stale socket file at `path`; fails if a server listens there or the path is not a
/// socket.
fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Socket {
                action: "inspect the existing",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::SocketBusy {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale vfio-user socket");
            std::fs::remove_file(path).map_err(|source| ServerError::Socket {
                action: "remove the stale",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ServerError::Socket {
            action: "probe the existing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vfu-socket-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_socket_gets_exactly_the_mode_and_group_asked_for() {
        let dir = scratch("mode");
        let path = dir.join("vf.sock");
        let server = Server::bind(&path).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, DEFAULT_SOCKET_MODE);
        drop(server);
        assert!(!path.exists());

        // The group of this process, or (as root, who may give a file to any group) another.
        let probe = dir.join("probe");
        std::fs::write(&probe, b"").unwrap();
        let probe = std::fs::metadata(&probe).unwrap();
        let own = probe.gid();
        let gid = if probe.uid() == 0 {
            own.wrapping_add(4321)
        } else {
            own
        };
        let options = SocketOptions {
            mode: 0o660,
            group: Some(gid),
        };
        let server = Server::bind_with(&path, &options).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o660);
        assert_eq!(metadata.gid(), gid);
        assert!(metadata.file_type().is_socket());
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_beyond_the_permission_bits_are_refused() {
        let dir = scratch("badmode");
        let path = dir.join("vf.sock");
        let err = Server::bind_with(
            &path,
            &SocketOptions {
                mode: 0o4660,
                group: None,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, ServerError::SocketMode { mode: 0o4660, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0o4660"), "{err}");
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
