//! [`ServerError`]: why the server could not create its socket or keep accepting clients.
//!
//! Problems of one connection (malformed messages, a client that vanishes) are not errors of the
//! server: they are answered with error replies or end that connection, and the server accepts
//! the next client.

use std::io;
use std::path::PathBuf;

/// A failure of the vfio-user server itself.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process is listening on the socket path.
    #[error(
        "vfio-user socket {path} is busy: another server is listening on it; stop that server or \
         choose another socket path"
    )]
    SocketBusy {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket exists at the socket path.
    #[error(
        "{path} exists and is not a socket; remove it or choose another path for the vfio-user \
         socket"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket path could not be inspected, cleared, created or set up.
    #[error(
        "cannot {action} vfio-user socket {path}: {source}; check that the directory exists, is \
         writable, and that the path is shorter than 108 bytes"
    )]
    Socket {
        /// What was being done (e.g. "bind", "remove the stale").
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The socket mode asked for has bits beyond the permission bits.
    #[error("socket mode {mode:#o} for {path} is not a permission mode: use 0..=0777, e.g. 0660")]
    SocketMode {
        /// The socket path.
        path: PathBuf,
        /// The mode asked for.
        mode: u32,
    },
    /// The socket file could not be given the group asked for.
    #[error(
        "cannot give vfio-user socket {path} to group {gid}: {source}; the server's user must \
         belong to that group (or have CAP_CHOWN)"
    )]
    SocketGroup {
        /// The socket path.
        path: PathBuf,
        /// The group asked for.
        gid: u32,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Waiting for or accepting a client failed for a reason that will not go away by itself.
    #[error(
        "accepting vfio-user clients on {path} failed: {source}; if it says too many open files, \
         raise the file-descriptor limit (ulimit -n)"
    )]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// `serve` was called while another thread is already serving on this socket.
    #[error(
        "vfio-user socket {path} is already being served by another thread; a server hosts one \
         client at a time, call serve from one thread only"
    )]
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
}
