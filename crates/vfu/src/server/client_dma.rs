//! DMA windows mapped without a file descriptor: the device reaches them with `DMA_READ` and
//! `DMA_WRITE` messages to the client on the connection's socket (spec "VFIO_USER_DMA_READ",
//! "VFIO_USER_DMA_WRITE").
//!
//! The device's I/O thread asks while the connection's reader thread reads the socket, so the
//! request and its reply meet here ([`ClientDma`]):
//!
//! * the requester takes a message id no other request of ours is using, registers a one-slot
//!   channel under it, sends the command through the connection's [`Outbox`] and waits on the
//!   channel for at most the DMA timeout;
//! * the reader hands every reply it reads to [`ClientDma::deliver`], which forwards it to the
//!   requester waiting for that id (a reply nobody waits for, e.g. one that arrived after its
//!   timeout, is dropped);
//! * when the connection ends, [`ClientDma::close`] fails every waiting request at once and
//!   every later one immediately, so a client that vanishes never leaves an I/O thread hanging;
//! * an access is split into pieces of the negotiated `max_data_xfer_size`.
//!
//! A failed or refused access is a [`MemoryFault`]: the device reports it to its guest (an NVMe
//! data transfer error or CSTS.CFS), and the connection goes on.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use shmem::IoMemory;
use shmem::MemoryFault;
use shmem::WindowMemory;

use crate::dma::DmaAccess;
use crate::dma::DmaWrite;
use crate::framing::Frame;
use crate::framing::ReplyBody;
use crate::framing::encode_request;
use crate::limits::Limits;
use crate::message::Reply;
use crate::payload::Payload;

use super::transport::Outbox;
use super::transport::Outgoing;

/// The requests waiting for their replies, by message id.
#[derive(Default)]
struct Pending {
    next_id: u16,
    waiting: HashMap<u16, mpsc::SyncSender<Frame<OwnedFd>>>,
    /// The connection ended: every access fails.
    closed: bool,
}

/// The server → client DMA channel of one connection; see the module docs.
pub(super) struct ClientDma {
    outbox: Arc<Outbox>,
    pending: Mutex<Pending>,
    /// Largest `count` of one message: the negotiated `max_data_xfer_size`.
    max_xfer: AtomicU32,
    timeout: Duration,
}

impl std::fmt::Debug for ClientDma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDma")
            .field("max_xfer", &self.max_xfer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientDma {
    /// The channel of the connection whose messages go out through `outbox`; each access waits
    /// at most `timeout` for its reply, and moves at most `max_xfer` bytes per message until
    /// VERSION negotiates another size.
    pub fn new(outbox: Arc<Outbox>, timeout: Duration, max_xfer: u32) -> Arc<Self> {
        Arc::new(Self {
            outbox,
            pending: Mutex::new(Pending::default()),
            max_xfer: AtomicU32::new(max_xfer),
            timeout,
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adopts the negotiated `max_data_xfer_size`.
    pub fn set_max_xfer(&self, max_xfer: u32) {
        self.max_xfer.store(max_xfer.max(1), Ordering::Release);
    }

    /// A window `[iova, iova + size)` of the client's memory reached through this channel.
    pub fn window(self: &Arc<Self>, iova: u64, size: u64, writable: bool) -> WindowMemory {
        WindowMemory::Io(Arc::new(ClientWindow {
            dma: Arc::clone(self),
            iova,
            size,
            writable,
        }))
    }

    /// Hands a reply read from the socket to the request waiting for it. Returns false when no
    /// request waits for its message id.
    pub fn deliver(&self, reply: Frame<OwnedFd>) -> bool {
        let waiter = self.pending().waiting.remove(&reply.header.msg_id);
        match waiter {
            // The slot holds one reply and nobody else sends on it: this cannot block.
            Some(waiter) => waiter.try_send(reply).is_ok(),
            None => false,
        }
    }

    /// The connection ended: fails every waiting access and every later one.
    pub fn close(&self) {
        let mut pending = self.pending();
        pending.closed = true;
        // Dropping the senders wakes every waiter with "disconnected".
        pending.waiting.clear();
    }

    /// Sends `body` and waits for its reply.
    fn call<P: Payload>(&self, body: &P, what: &str) -> Result<Frame<OwnedFd>, MemoryFault> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let id = {
            let mut pending = self.pending();
            if pending.closed {
                return Err(MemoryFault::new(format!(
                    "{what}: the vfio-user client has disconnected"
                )));
            }
            let mut id = pending.next_id;
            while pending.waiting.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            pending.next_id = id.wrapping_add(1);
            pending.waiting.insert(id, sender);
            id
        };
        let message = Outgoing::new(encode_request(id, body, false));
        if let Err(err) = self.outbox.send(&message) {
            self.pending().waiting.remove(&id);
            return Err(MemoryFault::new(format!(
                "{what}: sending it to the client failed: {err}"
            )));
        }
        match receiver.recv_timeout(self.timeout) {
            Ok(frame) => Ok(frame),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.pending().waiting.remove(&id);
                Err(MemoryFault::new(format!(
                    "{what}: no reply from the client within {:?}",
                    self.timeout
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(MemoryFault::new(format!(
                "{what}: the vfio-user client disconnected before replying"
            ))),
        }
    }

    /// The decoded body of `frame`, the reply to `what`; the client's errno is a fault.
    fn reply(&self, frame: &Frame<OwnedFd>, what: &str) -> Result<Reply, MemoryFault> {
        let limits = Limits {
            max_data_xfer_size: self.max_xfer.load(Ordering::Acquire),
            ..Limits::default()
        };
        match frame.decode_reply(&limits) {
            Ok(ReplyBody::Ok(reply)) => Ok(reply),
            Ok(ReplyBody::Error(errno)) => Err(MemoryFault::new(format!(
                "{what}: the client refused it with {errno}"
            ))),
            Err(err) => Err(MemoryFault::new(format!(
                "{what}: malformed reply from the client: {err}"
            ))),
        }
    }

    /// The piece sizes of an access of `len` bytes.
    fn pieces(&self, len: usize) -> impl Iterator<Item = (usize, usize)> {
        let max = self.max_xfer.load(Ordering::Acquire).max(1) as usize;
        (0..len).step_by(max).map(move |at| (at, max.min(len - at)))
    }

    /// `DMA_READ`s of `buf.len()` bytes at client address `address`.
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        for (at, len) in self.pieces(buf.len()) {
            let request = DmaAccess {
                address: address + at as u64,
                count: len as u64,
            };
            let what = format!("DMA_READ of {len} bytes at {:#x}", request.address);
            let frame = self.call(&request, &what)?;
            match self.reply(&frame, &what)? {
                Reply::DmaRead(reply)
                    if reply.address == request.address && reply.data.len() == len =>
                {
                    buf[at..at + len].copy_from_slice(&reply.data);
                }
                other => {
                    return Err(MemoryFault::new(format!(
                        "{what}: the client answered {:?} with other data",
                        other.command()
                    )));
                }
            }
        }
        Ok(())
    }

    /// `DMA_WRITE`s of `data` at client address `address`.
    fn write(&self, address: u64, data: &[u8]) -> Result<(), MemoryFault> {
        for (at, len) in self.pieces(data.len()) {
            let request = DmaWrite {
                address: address + at as u64,
                data: data[at..at + len].to_vec(),
            };
            let what = format!("DMA_WRITE of {len} bytes at {:#x}", request.address);
            let frame = self.call(&request, &what)?;
            match self.reply(&frame, &what)? {
                Reply::DmaWrite(_) => {}
                other => {
                    return Err(MemoryFault::new(format!(
                        "{what}: the client answered with a {:?} reply",
                        other.command()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One window of client memory behind a [`ClientDma`].
#[derive(Debug)]
struct ClientWindow {
    dma: Arc<ClientDma>,
    iova: u64,
    size: u64,
    writable: bool,
}

impl IoMemory for ClientWindow {
    fn len(&self) -> u64 {
        self.size
    }

    fn writable(&self) -> bool {
        self.writable
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        self.dma.read(self.iova + offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), MemoryFault> {
        self.dma.write(self.iova + offset, data)
    }
}
