//! The vfio-user server: hosts one [`Device`] on a UNIX socket.
//!
//! * [`Server::bind`] creates the socket (mode 0600, stale sockets replaced, busy ones refused);
//!   [`Server::serve`] serves **one client at a time** from the calling thread until it
//!   disconnects, then keeps the device (and its state) for the next client. A client that
//!   connects while another is attached is not left waiting in silence: it gets an error reply
//!   carrying **EBUSY** to its first request and is disconnected; the attached client is not
//!   disturbed. (A newcomer first waits half a second in the listen backlog, so that a client
//!   that hung up and reconnects at once is served rather than refused.)
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
//!   maps DEVICE_FEATURE and MIG_DATA_READ/WRITE onto it with typed states, and a device
//!   without one answers ENOTTY. Its [`Migratable::status`] lets tools that are not vfio-user
//!   clients look at a migration.
//! * A server given a [`crate::control::ControlHandler`] ([`Server::with_control`]) also answers
//!   the control protocol on its socket: a connection starting with the control hello goes to
//!   the handler on a thread of its own (at most 8 at once), whether a client is attached or
//!   not; [`Server::serve_control`] serves a socket that speaks only that protocol. vfio-user
//!   clients see no difference. [`Device::client_attached`] and [`Device::client_detached`]
//!   let a device's owner observe clients come and go.
//! * When a client leaves, [`Device::disconnected`] drops its DMA windows and interrupt fds,
//!   then [`Migratable::disconnected`] ends its data session and walks the device back to
//!   RUNNING (the seed's open/close semantics; docs/MIGRATION.md, "Open and close").
//!
//! What a client can hand over is hostile until checked:
//!
//! * **Memory** (`DMA_MAP`): a file is mapped only once it cannot shrink (sealed with
//!   `F_SEAL_SHRINK`, which the server adds when the file accepts it), otherwise reached with
//!   `pread`/`pwrite`, so a truncated guest RAM file fails device accesses instead of raising
//!   SIGBUS; memfds the server hands out are sealed at their size. A window without a file
//!   descriptor is reached with `DMA_READ`/`DMA_WRITE` messages on the same socket. Windows are
//!   page aligned (EINVAL otherwise).
//! * **Interrupt fds** (`DEVICE_SET_IRQS`) must be eventfds (EINVAL otherwise, with a warning
//!   naming the vector); they are made non-blocking and a full counter drops the signal
//!   ([`Eventfd`]).
//! * **VERSION** with `max_data_xfer_size` 0 or capabilities that are not JSON objects, and
//!   `DEVICE_FEATURE` with none of GET, SET and PROBE, are refused (EINVAL), as the kernel's
//!   `vfio_check_feature()` does.
//!
//! Limits advertised in VERSION: `max_msg_fds` 8, `max_data_xfer_size` 1 MiB (enforced, after
//! negotiation, on REGION_READ/WRITE counts and MIG_DATA sizes, and used to split the server's
//! own DMA_READ/WRITE), `write_multiple`, and the legacy `migration` capability echoed (page
//! size 4096) when the device can migrate and the client proposed it, as QEMU does.
//!
//! Threads and timeouts ([`ServerTimeouts`], 5 s each by default):
//!
//! * `serve` runs the accept loop and, per connection, the **dispatcher** on the caller's
//!   thread: requests in arrival order, replies out. A connection that has not negotiated
//!   VERSION within the handshake timeout is dropped.
//! * A **reader** thread per connection reads the socket all the time: it queues requests for
//!   the dispatcher (a bounded queue: a client pipelining without limit waits in its own send),
//!   hands replies to the server's DMA_READ/WRITE to the device thread waiting for them, refuses
//!   newcomers, and drops the connection when a message stops arriving half-way for longer than
//!   the stall timeout. Because it keeps reading while a request waits for the device (a reset,
//!   a migration arc draining commands, an unmap), a device thread waiting for a DMA reply can
//!   always get it; the spec forbids stalling one direction on the other.
//! * A device access to an fd-less window waits at most the DMA timeout for its reply; when the
//!   client goes away every waiting access fails at once.
//! * A message the client does not read within 5 s (the socket's send timeout, QEMU's reply
//!   timeout too) ends that connection instead of blocking the server. Both threads look at the
//!   `stop` flag every 50 ms, so `serve` returns promptly in every case.

mod client_dma;
mod connection;
mod control;
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
