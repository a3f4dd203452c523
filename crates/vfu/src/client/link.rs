//! [`Link`]: the client's connection with a reader thread, so that the server's own commands
//! (`DMA_READ`/`DMA_WRITE`) are answered at any time, not only while a request waits for its
//! reply.
//!
//! * The **reader** owns the receiving [`Channel`]. Replies go to the caller through a bounded
//!   queue (a reply nobody can take, beyond that bound, is dropped). Commands from the server are
//!   answered at once: `DMA_READ`/`DMA_WRITE` from the memory of the windows mapped with
//!   [`super::Client::dma_map_served`] ([`ServedMemory`]), EFAULT outside them, ENOTSUP for any
//!   other command. A hang-up, a socket error or a framing error is passed on and ends the
//!   reader.
//! * The caller sends through the shared sender; the reader's answers take the same lock, so
//!   messages never interleave.
//!
//! Dropping the link shuts the socket down (the server sees the hang-up at once) and joins the
//! reader.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use shmem::Mapping;
use vfio_migration::Errno;

use super::channel::Channel;
use super::channel::Incoming;
use super::channel::RecvError;
use super::channel::Relayed;
use crate::dma::DmaAccess;
use crate::dma::DmaReadReply;
use crate::dma::DmaWriteReply;
use crate::framing::Frame;
use crate::framing::PayloadPool;
use crate::framing::encode_error_reply;
use crate::framing::encode_reply;
use crate::limits::Limits;
use crate::message::Request;
use crate::socket;

/// Replies queued for the caller before further ones are dropped (the caller waits for one at a
/// time; anything beyond is a server sending replies to nothing).
const REPLY_QUEUE: usize = 64;

/// How long the reader waits for bytes before it looks again (it is woken by the hang-up when
/// the link is dropped, so this only bounds a lost wake-up).
const READ_WAIT: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending side, shared by the caller, the reader and [`PostedWriter`]s.
///
/// [`PostedWriter`]: super::PostedWriter
#[derive(Debug)]
pub(crate) struct Sender {
    stream: UnixStream,
    sending: Mutex<()>,
}

impl Sender {
    fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.send_parts(&[bytes], fds)
    }

    /// Sends one message of `parts` with `fds`, whole: one sender at a time.
    pub(crate) fn send_parts(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let _one_at_a_time = lock(&self.sending);
        socket::send_all_parts(self.stream.as_fd(), parts, fds)
    }

    fn send_spliced(
        &self,
        prefix: &[u8],
        pipe: BorrowedFd<'_>,
        len: usize,
        deadline: Instant,
    ) -> io::Result<()> {
        let _one_at_a_time = lock(&self.sending);
        socket::send_all_parts(self.stream.as_fd(), &[prefix], &[])?;
        socket::splice_to_socket(pipe, self.stream.as_fd(), len, deadline)
    }
}

/// A reply as the reader passes it on: a whole message, or a relayed `MIG_DATA_READ` reply
/// whose `len` data bytes come through `pipe` (the pipe ends early if the reader fails).
#[derive(Debug)]
pub(crate) enum Reply {
    /// A whole message.
    Frame(Frame<OwnedFd>),
    /// A relayed reply.
    Piped {
        /// The reply's header.
        header: crate::header::Header,
        /// Data bytes coming through the pipe.
        len: usize,
        /// The pipe's read end.
        pipe: OwnedFd,
    },
}

impl Reply {
    /// The message's header.
    pub(crate) fn header(&self) -> &crate::header::Header {
        match self {
            Self::Frame(frame) => &frame.header,
            Self::Piped { header, .. } => header,
        }
    }
}

/// One window served with `DMA_READ`/`DMA_WRITE`.
#[derive(Debug)]
struct Served {
    memory: Arc<Mapping>,
    writable: bool,
}

/// The windows this client serves itself, by IOVA.
#[derive(Debug, Default)]
pub(crate) struct ServedMemory {
    windows: Mutex<BTreeMap<u64, Served>>,
}

impl ServedMemory {
    /// Serves `memory` at `iova`.
    pub(crate) fn insert(&self, iova: u64, memory: Arc<Mapping>, writable: bool) {
        lock(&self.windows).insert(iova, Served { memory, writable });
    }

    /// Stops serving the window at exactly `iova` of `size` bytes, if there is one.
    pub(crate) fn remove(&self, iova: u64, size: u64) {
        let mut windows = lock(&self.windows);
        if windows.get(&iova).is_some_and(|w| w.memory.len() == size) {
            windows.remove(&iova);
        }
    }

    /// The window holding all of `[address, address + count)` and the offset in it; EFAULT when
    /// no single window does (the server splits its accesses at window boundaries).
    fn find(&self, address: u64, count: u64) -> Result<(Arc<Mapping>, bool, u64), Errno> {
        let windows = lock(&self.windows);
        let (&iova, window) = windows.range(..=address).next_back().ok_or(Errno::EFAULT)?;
        let offset = address - iova;
        let inside = offset
            .checked_add(count)
            .is_some_and(|end| end <= window.memory.len());
        if !inside {
            return Err(Errno::EFAULT);
        }
        Ok((Arc::clone(&window.memory), window.writable, offset))
    }

    fn read(&self, address: u64, count: u64) -> Result<Vec<u8>, Errno> {
        let (memory, _, offset) = self.find(address, count)?;
        let mut data = vec![0; usize::try_from(count).map_err(|_| Errno::EFAULT)?];
        memory.read(offset, &mut data).map_err(|_| Errno::EFAULT)?;
        Ok(data)
    }

    fn write(&self, address: u64, data: &[u8]) -> Result<(), Errno> {
        let (memory, writable, offset) = self.find(address, data.len() as u64)?;
        if !writable {
            return Err(Errno::EFAULT);
        }
        memory.write(offset, data).map_err(|_| Errno::EFAULT)
    }
}

/// The client's side of the connection; see the module docs.
#[derive(Debug)]
pub(crate) struct Link {
    sender: Arc<Sender>,
    replies: mpsc::Receiver<Result<Reply, RecvError>>,
    served: Arc<ServedMemory>,
    payloads: Arc<PayloadPool>,
    relayed: Arc<Relayed>,
    reader: Option<JoinHandle<()>>,
}

impl Link {
    /// Starts the reader on `stream`; messages above `max_msg_size` are framing errors, the
    /// server's commands are decoded with `limits`.
    pub(crate) fn new(stream: UnixStream, max_msg_size: u32, limits: Limits) -> io::Result<Self> {
        socket::enlarge_send_buffer(stream.as_fd());
        let sender = Arc::new(Sender {
            stream: stream.try_clone()?,
            sending: Mutex::new(()),
        });
        let served = Arc::new(ServedMemory::default());
        let (replies_in, replies) = mpsc::sync_channel(REPLY_QUEUE);
        let channel = Channel::new(stream, max_msg_size);
        let payloads = Arc::clone(channel.pool());
        let relayed = Arc::clone(channel.relayed());
        let reader = {
            let (sender, served) = (Arc::clone(&sender), Arc::clone(&served));
            std::thread::Builder::new()
                .name("vfio-user-client".into())
                .spawn(move || read(channel, &sender, &served, &replies_in, &limits))?
        };
        Ok(Self {
            sender,
            replies,
            served,
            payloads,
            relayed,
            reader: Some(reader),
        })
    }

    /// Bounds how long one send may block on a server that does not read (`SO_SNDTIMEO`).
    pub(crate) fn set_send_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = (!timeout.is_zero()).then_some(timeout);
        rustix::net::sockopt::set_socket_timeout(
            &self.sender.stream,
            rustix::net::sockopt::Timeout::Send,
            timeout,
        )?;
        Ok(())
    }

    /// Sends one whole message, the concatenation of `parts`, with `fds` attached to its first
    /// bytes.
    pub(crate) fn send_parts(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.sender.send_parts(parts, fds)
    }

    /// The sending side, for a [`PostedWriter`](super::PostedWriter).
    pub(crate) fn sender(&self) -> Arc<Sender> {
        self.sender.clone()
    }

    /// Sends a message of `prefix` and then `len` bytes taken from `pipe` (moved by the kernel,
    /// not copied through this process), waiting for the pipe's bytes until `deadline`. A
    /// failure part way leaves the message cut: the connection is then unusable.
    pub(crate) fn send_spliced(
        &self,
        prefix: &[u8],
        pipe: BorrowedFd<'_>,
        len: usize,
        deadline: Instant,
    ) -> io::Result<()> {
        self.sender.send_spliced(prefix, pipe, len, deadline)
    }

    /// The msg_ids whose `MIG_DATA_READ` replies come through a pipe.
    pub(crate) fn relayed(&self) -> &Relayed {
        &self.relayed
    }

    /// The next reply from the server, waiting until `deadline`; `Ok(None)` when the deadline
    /// passed first.
    pub(crate) fn recv(&self, deadline: Instant) -> Result<Option<Reply>, RecvError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(wait) {
            Ok(reply) => reply.map(Some),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            // The reader ended after passing on why; nothing more will come.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(RecvError::Eof),
        }
    }

    /// Where the payloads of large replies go back once consumed, for the reader to receive
    /// the next ones into.
    pub(crate) fn payloads(&self) -> &Arc<PayloadPool> {
        &self.payloads
    }

    /// The windows this client serves with DMA_READ/DMA_WRITE.
    pub(crate) fn served(&self) -> &ServedMemory {
        &self.served
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.sender.stream.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reader thread's loop.
fn read(
    mut channel: Channel,
    sender: &Sender,
    served: &ServedMemory,
    replies: &mpsc::SyncSender<Result<Reply, RecvError>>,
    limits: &Limits,
) {
    loop {
        let frame = match channel.recv(Instant::now() + READ_WAIT) {
            Ok(Some(Incoming::Frame(frame))) => frame,
            Ok(Some(Incoming::Relay(start))) => {
                // The caller gets the pipe at once and sends on while the data comes in.
                let relayed =
                    socket::relay_pipe()
                        .map_err(RecvError::Io)
                        .and_then(|(out, into)| {
                            let reply = Reply::Piped {
                                header: start.header,
                                len: start.len,
                                pipe: out,
                            };
                            if replies.try_send(Ok(reply)).is_err() {
                                tracing::warn!(
                                    "dropping a reply from the server: no request takes it"
                                );
                            }
                            channel.splice_data(&start, into)
                        });
                if let Err(err) = relayed {
                    let _ = replies.try_send(Err(err));
                    return;
                }
                continue;
            }
            Ok(None) => continue,
            Err(err) => {
                // The caller may be gone (the link is being dropped); nothing else to do.
                let _ = replies.try_send(Err(err));
                return;
            }
        };
        match frame.header.is_reply() {
            Ok(true) => {
                if replies.try_send(Ok(Reply::Frame(frame))).is_err() {
                    tracing::warn!("dropping a reply from the server: no request takes it");
                }
            }
            _ => {
                if let Some(answer) = answer(&frame, served, limits)
                    && let Err(err) = sender.send(&answer, &[])
                {
                    let _ = replies.try_send(Err(RecvError::Io(err)));
                    return;
                }
            }
        }
    }
}

/// The answer to a command the server sent, or `None` if it asked for none.
fn answer(frame: &Frame<OwnedFd>, served: &ServedMemory, limits: &Limits) -> Option<Vec<u8>> {
    let header = &frame.header;
    let result = match frame.decode_request(limits) {
        Ok(Request::DmaRead(access)) => served.read(access.address, access.count).map(|data| {
            encode_reply(
                header,
                &DmaReadReply {
                    address: access.address,
                    data,
                },
            )
        }),
        Ok(Request::DmaWrite(write)) => served.write(write.address, &write.data).map(|()| {
            let access = DmaAccess {
                address: write.address,
                count: write.data.len() as u64,
            };
            encode_reply(
                header,
                &DmaWriteReply {
                    access: Some(access),
                },
            )
        }),
        Ok(other) => {
            tracing::warn!(command = ?other.command(), "the server sent a command only a client sends");
            Err(Errno::ENOTSUP)
        }
        Err(err) => {
            tracing::warn!("malformed command from the server: {err}");
            Err(err.errno())
        }
    };
    if header.flags.no_reply() {
        return None;
    }
    Some(result.unwrap_or_else(|errno| {
        if errno == Errno::EFAULT {
            tracing::warn!(command = ?header.command, "the server accessed memory this client does not serve");
        }
        encode_error_reply(header, errno).to_vec()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framer;
    use crate::framing::ReplyBody;
    use crate::framing::encode_request;

    fn served() -> ServedMemory {
        let served = ServedMemory::default();
        let memory = Arc::new(Mapping::anonymous(0x2000).unwrap());
        served.insert(0x1_0000, memory, true);
        let read_only = Arc::new(Mapping::anonymous(0x1000).unwrap());
        served.insert(0x4_0000, read_only, false);
        served
    }

    fn frame(bytes: &[u8]) -> Frame<OwnedFd> {
        let mut framer = Framer::new(1 << 20);
        framer.push(bytes, Vec::new());
        framer.next_frame().unwrap().unwrap()
    }

    fn decoded(reply: &[u8]) -> ReplyBody {
        frame(reply).decode_reply(&Limits::default()).unwrap()
    }

    #[test]
    fn dma_commands_are_checked_against_the_served_windows() {
        let served = served();
        let limits = Limits::default();
        let write = crate::dma::DmaWrite {
            address: 0x1_1ff0,
            data: vec![7; 16],
        };
        let reply = answer(&frame(&encode_request(1, &write, false)), &served, &limits).unwrap();
        assert!(matches!(decoded(&reply), ReplyBody::Ok(_)));
        let read = DmaAccess {
            address: 0x1_1ff8,
            count: 8,
        };
        let reply = answer(&frame(&encode_request(2, &read, false)), &served, &limits).unwrap();
        assert!(
            matches!(decoded(&reply), ReplyBody::Ok(crate::message::Reply::DmaRead(r)) if r.data == [7; 8])
        );
        for (address, count) in [(0x1_1ff8, 16), (0x0_ffff, 2), (0x9_0000, 1)] {
            let read = DmaAccess { address, count };
            let reply = answer(&frame(&encode_request(3, &read, false)), &served, &limits).unwrap();
            assert_eq!(
                decoded(&reply),
                ReplyBody::Error(Errno::EFAULT),
                "{address:#x}"
            );
        }
        let into_read_only = crate::dma::DmaWrite {
            address: 0x4_0000,
            data: vec![1],
        };
        let reply = answer(
            &frame(&encode_request(4, &into_read_only, false)),
            &served,
            &limits,
        )
        .unwrap();
        assert_eq!(decoded(&reply), ReplyBody::Error(Errno::EFAULT));
        let quiet = answer(&frame(&encode_request(5, &read, true)), &served, &limits);
        assert!(quiet.is_none(), "No_reply is honoured");
    }

    #[test]
    fn fuzz_server_commands() {
        let served = served();
        let limits = Limits::default();
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                let mut framer = Framer::new(1 << 16);
                framer.push(bytes, Vec::new());
                while let Ok(Some(frame)) = framer.next_frame() {
                    if let Some(reply) = answer(&frame, &served, &limits) {
                        let mut back = Framer::<()>::new(1 << 20);
                        back.push(&reply, None);
                        assert!(back.next_frame().unwrap().is_some(), "a whole reply");
                    }
                }
            });
    }
}
