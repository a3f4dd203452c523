//! The vfio-user server: hosts one [`Device`] on a UNIX socket.
//!
//! * [`Server::bind`] creates the socket (mode 0600, stale sockets replaced, busy ones refused);
//!   [`Server::serve`] accepts one client at a time on the calling thread and serves it until it
//!   disconnects, then keeps the device (and its state) for the next client.
//! * Per connection the stream goes through the codec's [`crate::framing::Framer`] (messages may
//!   arrive in pieces; SCM_RIGHTS descriptors attach to their message), VERSION must come first,
//!   and every request 1–18 is answered with the same msg_id (unless No_reply is set). Malformed,
//!   oversized or out-of-order requests get an error reply with a fitting errno and the session
//!   goes on; only a framing error (`msg_size` below 16 or above the maximum) ends a connection.
//! * This is the control path. Doorbells never come through here: they live in a sparse-mmap
//!   area the client maps, and interrupts go out through eventfds.
//! * Migration and DMA logging go to the device's one handle, [`Device::migration`]: a
//!   [`Migratable`], normally the [`DeviceMigration`] adapter over the device's
//!   [`vfio_migration::MigrationDriver`] (state machine, data session, dirty log). The server
//!   maps DEVICE_FEATURE and MIG_DATA_READ/WRITE onto it with typed states, tells it when the
//!   client disconnects, and a device without one answers ENOTTY. Its
//!   [`Migratable::status`] lets tools that are not vfio-user clients look at a migration.
//!
//! Limits advertised in VERSION: `max_msg_fds` 8, `max_data_xfer_size` 1 MiB (enforced, after
//! negotiation, on REGION_READ/WRITE counts and MIG_DATA sizes), `write_multiple`, and the legacy
//! `migration` capability echoed (page size 4096) when the device can migrate and the client
//! proposed it, as QEMU does.
//!
//! Threads and timeouts: the server uses no threads of its own; `serve` runs on the caller's
//! thread and polls (the listener, then the client socket) every 50 ms so that its `stop` flag
//! ends it promptly. A reply the client does not read within 5 s (the socket's send timeout,
//! QEMU's reply timeout too) ends that connection instead of blocking the server.

mod client_dma;
mod connection;
mod device;
mod dma;
mod error;
mod eventfd;
mod irq;
mod migratable;
mod migration;
mod refusal;
mod region;
mod session;
mod socket;
mod transport;

pub use device::Device;
pub use device::DmaRegion;
pub use device::IrqRequest;
pub use device::RegionDescription;
pub use error::ServerError;
pub use eventfd::Eventfd;
pub use eventfd::NotAnEventfd;
pub use migratable::DeviceMigration;
pub use migratable::FailedRequest;
pub use migratable::LoggingStatus;
pub use migratable::Migratable;
pub use migratable::MigrationFailure;
pub use migratable::MigrationStatus;
pub use migratable::SessionStatus;
pub use socket::DEFAULT_SOCKET_MODE;
pub use socket::Server;
pub use socket::ServerTimeouts;
pub use socket::SocketOptions;
