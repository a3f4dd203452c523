//! One client's protocol session: VERSION negotiation, the negotiated limits, and the dispatch of
//! every request to its handler (in the sibling modules `region`, `irq`, `dma` and `migration`).
//!
//! Every malformed, oversized or out-of-order request gets an error reply and the session goes
//! on; only framing errors (handled by the caller) end a connection.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use vfio_migration::Errno;

use crate::command::Command;
use crate::device::DeviceInfo;
use crate::device::DeviceInfoFlags;
use crate::device::DeviceReset;
use crate::framing::Frame;
use crate::framing::PayloadPool;
use crate::framing::encode_reply;
use crate::header::Header;
use crate::limits::Limits;
use crate::message::Request;
use crate::version::Capabilities;
use crate::version::LegacyMigration;
use crate::version::PROTOCOL_MAJOR;
use crate::version::PROTOCOL_MINOR;
use crate::version::Version;

use super::client_dma::ClientDma;
use super::device::Device;
use super::dma::DmaWindows;
use super::region::RegionTable;
use super::transport::MAX_MSG_FDS;
use super::transport::Outgoing;

/// Largest data transfer the server advertises (`max_data_xfer_size`, 1 MiB like libvfio-user).
pub(super) const MAX_DATA_XFER_SIZE: u32 = 1 << 20;

/// Page size of the legacy `migration` capability echoed to QEMU (its 2021 client insists on it).
const LEGACY_MIGRATION_PGSIZE: u64 = 4096;

/// A handler's answer: the reply to send, or the errno of the error reply.
pub(super) type Handled = Result<Outgoing, Errno>;

/// The state of one connection.
pub(super) struct Session<'d> {
    /// The hosted device.
    pub device: &'d dyn Device,
    /// Decoding limits: the server's until VERSION, then the negotiated ones.
    pub limits: Limits,
    /// Most DMA windows at once (negotiated `max_dma_maps`).
    pub max_dma_maps: u32,
    /// The DMA page size (the smallest negotiated `pgsizes`): windows must be aligned to it.
    pub dma_page_size: u64,
    /// The channel that reaches windows mapped without a file descriptor.
    pub client_dma: Arc<ClientDma>,
    /// Region sizes and permissions, read from the device at negotiation.
    pub regions: RegionTable,
    /// The client's DMA windows.
    pub windows: DmaWindows,
    /// The buffer of the last `MIG_DATA_READ` reply, back from the socket: the next reply is
    /// read into it (no allocation, and its pages already faulted in).
    pub(super) spare_reply: Vec<u8>,
    /// Where the payloads of large requests go back once handled, for the reader to receive
    /// the next ones into.
    pub payloads: Arc<PayloadPool>,
    negotiated: bool,
}

impl<'d> Session<'d> {
    /// A fresh session: nothing negotiated, nothing mapped; fd-less windows are reached through
    /// `client_dma`.
    pub fn new(device: &'d dyn Device, client_dma: Arc<ClientDma>) -> Self {
        Self {
            device,
            limits: Self::server_limits(),
            max_dma_maps: 0,
            dma_page_size: crate::version::DEFAULT_PGSIZES,
            client_dma,
            regions: RegionTable::default(),
            windows: DmaWindows::default(),
            spare_reply: Vec::new(),
            payloads: Arc::default(),
            negotiated: false,
        }
    }

    /// The limits the server decodes with before negotiation; the framer's maximum message size
    /// derives from them.
    pub fn server_limits() -> Limits {
        Limits {
            max_data_xfer_size: MAX_DATA_XFER_SIZE,
            ..Limits::default()
        }
    }

    /// Whether VERSION has been negotiated.
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Handles one message: the reply to send, or `None` when the client set No_reply.
    pub fn handle(&mut self, frame: Frame<OwnedFd>) -> Option<Outgoing> {
        let header = frame.header;
        let handled = self.dispatch(frame);
        answer(&header, handled)
    }

    /// Handles `frame` if it is a `REGION_WRITE` the device carries out at once
    /// ([`Device::write_returns_at_once`]): `Some` with what [`Self::handle`] would return,
    /// `None` (nothing done) for any other message, which then goes the usual way.
    pub fn handle_at_once(&mut self, frame: &Frame<OwnedFd>) -> Option<Option<Outgoing>> {
        let header = &frame.header;
        if !self.negotiated || header.command != Command::REGION_WRITE || !frame.fds.is_empty() {
            return None;
        }
        let handled = self.region_write_at_once(header, &frame.payload)?;
        Some(answer(header, handled))
    }

    /// Takes back a reply that has been sent: a `MIG_DATA_READ` reply's buffer is kept for
    /// the next one.
    pub fn recycle(&mut self, reply: Outgoing) {
        if reply.bytes.capacity() > self.spare_reply.capacity() {
            self.spare_reply = reply.bytes;
        }
    }

    fn dispatch(&mut self, frame: Frame<OwnedFd>) -> Handled {
        let header = frame.header;
        if self.negotiated && header.command == Command::MIG_DATA_WRITE {
            // The stream's data goes to the device from the received message.
            let handled = match frame.decode_mig_data_write(&self.limits) {
                Ok(data) => self.mig_data_write(&header, data),
                Err(err) => {
                    tracing::warn!(msg_id = header.msg_id, "malformed request: {err}");
                    Err(err.errno())
                }
            };
            self.payloads.give(frame.payload);
            return handled;
        }
        let request = frame.decode_request(&self.limits).map_err(|err| {
            tracing::warn!(msg_id = header.msg_id, "malformed request: {err}");
            err.errno()
        })?;
        let fds = frame.fds;
        match (self.negotiated, request) {
            (false, Request::Version(proposal)) => self.version(&header, &proposal),
            (false, other) => {
                tracing::warn!(command = ?other.command(), "request before VERSION");
                Err(Errno::EINVAL)
            }
            (true, Request::Version(_)) => {
                tracing::warn!("second VERSION on one connection");
                Err(Errno::EINVAL)
            }
            (true, request) => self.request(&header, request, fds),
        }
    }

    /// Negotiates the version and capabilities, adopts the negotiated limits and caches the
    /// device's region table.
    fn version(&mut self, header: &Header, proposal: &Version) -> Handled {
        let ours = Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            capabilities: Capabilities {
                max_msg_fds: MAX_MSG_FDS as u32,
                max_data_xfer_size: MAX_DATA_XFER_SIZE,
                write_multiple: true,
                migration: self.device.migration().map(|_| LegacyMigration {
                    pgsize: LEGACY_MIGRATION_PGSIZE,
                    max_bitmap_size: Some(self.limits.max_bitmap_size),
                }),
                ..Capabilities::default()
            },
        };
        let reply = proposal.negotiate(&ours).map_err(|err| {
            tracing::warn!("VERSION negotiation failed: {err}");
            err.errno()
        })?;
        let caps = &reply.capabilities;
        self.limits.max_data_xfer_size = caps.max_data_xfer_size;
        if let Some(bitmap) = caps.migration.and_then(|m| m.max_bitmap_size) {
            self.limits.max_bitmap_size = self.limits.max_bitmap_size.min(bitmap);
        }
        self.max_dma_maps = caps.max_dma_maps;
        // The smallest page size both sides support (negotiation checked one is common).
        self.dma_page_size = caps.pgsizes & caps.pgsizes.wrapping_neg();
        self.client_dma.set_max_xfer(caps.max_data_xfer_size);
        self.regions = RegionTable::read(self.device);
        self.negotiated = true;
        tracing::info!(
            major = reply.major,
            minor = reply.minor,
            max_data_xfer_size = caps.max_data_xfer_size,
            "vfio-user client negotiated"
        );
        Ok(Outgoing::new(encode_reply(header, &reply)))
    }

    /// Dispatches a request of a negotiated session.
    fn request(&mut self, header: &Header, request: Request, fds: Vec<OwnedFd>) -> Handled {
        match request {
            Request::DmaMap(map) => self.dma_map(header, &map, fds),
            Request::DmaUnmap(unmap) => self.dma_unmap(header, &unmap),
            Request::DeviceGetInfo(_) => {
                let info = DeviceInfo::reply(
                    DeviceInfoFlags::RESET | DeviceInfoFlags::PCI,
                    self.device.num_regions(),
                    self.device.num_irqs(),
                );
                Ok(Outgoing::new(encode_reply(header, &info)))
            }
            Request::DeviceGetRegionInfo(req) => self.region_info(header, &req),
            Request::DeviceGetRegionIoFds(_) => Err(Errno::ENOTSUP),
            Request::DeviceGetIrqInfo(req) => self.irq_info(header, &req),
            Request::DeviceSetIrqs(set) => self.set_irqs(header, &set, fds),
            Request::RegionRead(access) => self.region_read(header, &access),
            Request::RegionWrite(write) => self.region_write(header, &write),
            Request::RegionWriteMulti(multi) => self.region_write_multi(header, &multi),
            // Server → client commands make no sense from the client.
            Request::DmaRead(_) | Request::DmaWrite(_) => Err(Errno::EINVAL),
            Request::DeviceReset(_) => {
                self.device.reset()?;
                Ok(Outgoing::new(encode_reply(header, &DeviceReset)))
            }
            Request::DeviceFeature(feature) => self.device_feature(header, &feature),
            Request::MigDataRead(read) => self.mig_data_read(header, &read),
            Request::MigDataWrite(write) => self.mig_data_write(header, &write.data),
            // Handled before negotiation is complete; a second one is rejected by `dispatch`.
            Request::Version(_) => Err(Errno::EINVAL),
        }
    }
}

/// What goes back for request `header` that was `handled`: its reply or error reply, or
/// nothing when the client set No_reply.
fn answer(header: &Header, handled: Handled) -> Option<Outgoing> {
    let answer = handled.unwrap_or_else(|errno| {
        tracing::debug!(command = ?header.command, msg_id = header.msg_id, %errno, "error reply");
        Outgoing::error(header, errno)
    });
    (!header.flags.no_reply()).then_some(answer)
}

/// The errno of an operating-system error (EIO if it has none).
pub(super) fn io_errno(err: &std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::new)
}
