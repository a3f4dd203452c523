//! One client connection, on two threads:
//!
//! * the **reader** (a scoped thread) reads the socket into the framer, hands replies to the
//!   server's own `DMA_READ`/`DMA_WRITE` commands to the [`ClientDma`] channel and queues
//!   requests for the dispatcher, but for writes that return at once (a doorbell), which it
//!   carries out and answers itself while the dispatcher is idle; it also answers connections
//!   that arrive meanwhile with EBUSY ([`Refusals`]), and ends the connection on a framing
//!   error, a hang-up, a message that stops arriving half-way for longer than the stall
//!   timeout, or `stop`;
//! * the **dispatcher** (the thread that called `serve`) takes requests in arrival order, runs
//!   them against the device and sends the replies; it ends the connection if VERSION is not
//!   negotiated within the handshake timeout or a reply cannot be sent.
//!
//! Keeping the socket read while a request is being handled is what lets a request that waits
//! for the device (a reset, a migration arc draining commands, an unmap) complete while the
//! device's I/O thread waits for a `DMA_READ` reply that only the reader can pick up: the spec
//! forbids stalling one direction while waiting for the other. For the same reason the reader
//! answers a request itself only when the reply cannot wait for the client (no other thread is
//! sending and the socket has room), and only for writes that wait for nothing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use rustix::event::PollFd;
use rustix::event::PollFlags;
use rustix::net::SocketFlags;

use crate::command::Command;
use crate::framing::Frame;

use super::client_dma::ClientDma;
use super::control::ControlPort;
use super::device::Device;
use super::refusal::Refusals;
use super::session::MAX_DATA_XFER_SIZE;
use super::session::Session;
use super::socket::ServerTimeouts;
use super::transport;
use super::transport::Inbox;
use super::transport::Outbox;
use super::transport::ReadOutcome;

/// How often the threads of a connection look at `stop` and at each other.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Requests queued for the dispatcher before the reader stops reading the socket (the client
/// then waits in its own send): pipelining is allowed, unbounded buffering is not.
const QUEUE_MESSAGES: usize = 64;

/// Bytes of queued requests before the reader stops reading the socket.
const QUEUE_BYTES: usize = 16 << 20;

/// Reads the reader does, when a new connection arrives, to see whether the attached client
/// has just hung up (then the newcomer is the next client, not a second one).
const DRAIN_READS: usize = 16;

/// How long a new connection waits in the listen backlog before it is refused. A client that
/// hangs up and reconnects at once must find the server free, and its hang-up can reach the
/// server late: a process that forks keeps a copy of the old socket until its child execs.
/// The newcomer is refused only if the attached client is still there after this.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    /// The stream lost its message boundaries.
    #[error("framing error, the stream cannot be resynchronised: {0}")]
    Framing(#[from] crate::error::DecodeError),
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The client did not negotiate VERSION in time.
    #[error("no VERSION negotiated within {0:?} of connecting")]
    Handshake(Duration),
    /// A message stopped arriving half-way.
    #[error("{bytes} bytes of a message arrived, then nothing for {timeout:?}")]
    Stalled {
        /// Bytes of the incomplete message.
        bytes: usize,
        /// The stall timeout.
        timeout: Duration,
    },
    /// The reader thread panicked.
    #[error("the connection's reader thread panicked")]
    ReaderPanicked,
}

/// What [`RequestQueue::pop`] found.
enum Popped {
    /// The next request.
    Frame(Frame<OwnedFd>),
    /// Nothing within the wait.
    Empty,
    /// The reader is done and every request was taken.
    Closed,
}

#[derive(Default)]
struct Queued {
    frames: VecDeque<Frame<OwnedFd>>,
    bytes: usize,
    closed: bool,
    /// The dispatcher took a request and has not finished it (sent its reply) yet.
    busy: bool,
}

/// The requests between the reader and the dispatcher, bounded in messages and bytes.
#[derive(Default)]
struct RequestQueue {
    queued: Mutex<Queued>,
    changed: Condvar,
}

impl RequestQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, frame: Frame<OwnedFd>) {
        let mut queued = self.lock();
        queued.bytes += frame.payload.len();
        queued.frames.push_back(frame);
        self.changed.notify_all();
    }

    /// Whether the reader may read more (the queue is below both bounds).
    fn has_room(&self) -> bool {
        let queued = self.lock();
        queued.frames.len() < QUEUE_MESSAGES && queued.bytes < QUEUE_BYTES
    }

    /// Waits up to `timeout` for the queue to have room.
    fn wait_for_room(&self, timeout: Duration) {
        let queued = self.lock();
        let _ = self.changed.wait_timeout_while(queued, timeout, |q| {
            !q.closed && (q.frames.len() >= QUEUE_MESSAGES || q.bytes >= QUEUE_BYTES)
        });
    }

    fn pop(&self, timeout: Duration) -> Popped {
        let queued = self.lock();
        let (mut queued, _) = self
            .changed
            .wait_timeout_while(queued, timeout, |q| q.frames.is_empty() && !q.closed)
            .unwrap_or_else(PoisonError::into_inner);
        match queued.frames.pop_front() {
            Some(frame) => {
                queued.bytes -= frame.payload.len();
                queued.busy = true;
                self.changed.notify_all();
                Popped::Frame(frame)
            }
            None if queued.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// The dispatcher finished the request it took.
    fn finished(&self) {
        self.lock().busy = false;
    }

    /// Whether no request waits or is being handled: a request that arrives now is next.
    fn idle(&self) -> bool {
        let queued = self.lock();
        queued.frames.is_empty() && !queued.busy
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// What both threads of a connection share.
struct Shared<'a> {
    /// The protocol state: the dispatcher's, but for writes the reader carries out itself
    /// while the dispatcher is idle (see [`at_once`]), so never contended.
    session: Mutex<Session<'a>>,
    queue: RequestQueue,
    dma: Arc<ClientDma>,
    outbox: Arc<Outbox>,
    stop: &'a AtomicBool,
    /// Set by whichever thread ends the connection first.
    over: AtomicBool,
    timeouts: ServerTimeouts,
}

impl<'a> Shared<'a> {
    fn session(&self) -> MutexGuard<'_, Session<'a>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self) -> bool {
        self.over.load(Ordering::Acquire)
            || self.stop.load(Ordering::Relaxed)
            || self.outbox.is_broken()
    }
}

/// Serves the client on `socket` until it disconnects, the connection fails, or `stop` is set.
/// Connections arriving on `listener` meanwhile are refused with EBUSY, but for control
/// connections, which go to `control`.
pub(super) fn serve(
    device: &dyn Device,
    socket: OwnedFd,
    listener: BorrowedFd<'_>,
    stop: &AtomicBool,
    timeouts: ServerTimeouts,
    control: Option<&ControlPort>,
) -> Result<(), ConnectionError> {
    let (mut inbox, outbox) = transport::split(socket, Session::server_limits().max_msg_size())?;
    let dma = ClientDma::new(Arc::clone(&outbox), timeouts.dma, MAX_DATA_XFER_SIZE);
    let mut session = Session::new(device, Arc::clone(&dma));
    session.payloads = inbox.pool();
    let shared = Shared {
        session: Mutex::new(session),
        queue: RequestQueue::default(),
        dma,
        outbox,
        stop,
        over: AtomicBool::new(false),
        timeouts,
    };
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("vfio-user-reader".into())
            .spawn_scoped(scope, || {
                let ended = read(&shared, &mut inbox, listener, control);
                shared.over.store(true, Ordering::Release);
                shared.queue.close();
                shared.dma.close();
                ended
            })?;
        let dispatched = dispatch(&shared);
        shared.over.store(true, Ordering::Release);
        let read = reader
            .join()
            .unwrap_or(Err(ConnectionError::ReaderPanicked));
        dispatched.and(read)
    })
}

/// The dispatcher: requests in order, replies out.
fn dispatch(shared: &Shared<'_>) -> Result<(), ConnectionError> {
    let connected = Instant::now();
    loop {
        match shared.queue.pop(POLL_INTERVAL) {
            Popped::Frame(frame) => {
                let mut session = shared.session();
                if let Some(reply) = session.handle(frame) {
                    shared.outbox.send(&reply)?;
                    session.recycle(reply);
                }
                drop(session);
                shared.queue.finished();
            }
            Popped::Empty => {}
            Popped::Closed => return Ok(()),
        }
        // The reader ending (a hang-up) closes the queue, which is drained first: requests the
        // client sent before it left are still carried out.
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let handshake = shared.timeouts.handshake;
        if !shared.session().negotiated() && connected.elapsed() > handshake {
            return Err(ConnectionError::Handshake(handshake));
        }
    }
}

/// The reader: socket bytes to frames, replies to the DMA channel, requests to the queue,
/// newcomers refused.
fn read(
    shared: &Shared<'_>,
    inbox: &mut Inbox,
    listener: BorrowedFd<'_>,
    control: Option<&ControlPort>,
) -> Result<(), ConnectionError> {
    let mut refusals = Refusals::new(control.cloned());
    let mut last_bytes = Instant::now();
    // When the listener first had a connection waiting that was not yet refused.
    let mut newcomer_since: Option<Instant> = None;
    loop {
        while let Some(frame) = inbox.next_frame()? {
            if let Some(payload) = route(shared, frame) {
                inbox.recycle(payload);
            }
        }
        if shared.done() {
            return Ok(());
        }
        let partial = inbox.partial_bytes();
        if partial > 0 && last_bytes.elapsed() > shared.timeouts.stall {
            return Err(ConnectionError::Stalled {
                bytes: partial,
                timeout: shared.timeouts.stall,
            });
        }
        let room = shared.queue.has_room();
        if !room {
            shared.queue.wait_for_room(POLL_INTERVAL);
            // Not reading is the server's doing, not a stall of the client's.
            last_bytes = Instant::now();
        }
        // While a newcomer waits out its grace, the (readable) listener would wake every poll.
        let grace_left = newcomer_since.map(|since| REFUSAL_GRACE.saturating_sub(since.elapsed()));
        let watch_listener = grace_left.is_none().then_some(listener);
        let timeout = grace_left.map_or(POLL_INTERVAL, |left| left.min(POLL_INTERVAL));
        let (socket_ready, listener_ready) =
            wait(inbox.socket(), room, watch_listener, &refusals, timeout)?;
        let newcomer = listener_ready || grace_left.is_some_and(|left| left.is_zero());
        if socket_ready {
            match inbox.read()? {
                ReadOutcome::Bytes => last_bytes = Instant::now(),
                ReadOutcome::Nothing => {}
                ReadOutcome::Closed => return hung_up(shared, inbox),
            }
        }
        if newcomer {
            // A client that hung up and connected again at once: once its hang-up is in the old
            // socket, the newcomer is the next client, to be accepted by `serve`.
            for _ in 0..DRAIN_READS {
                match inbox.read()? {
                    ReadOutcome::Bytes => last_bytes = Instant::now(),
                    ReadOutcome::Nothing => break,
                    ReadOutcome::Closed => return hung_up(shared, inbox),
                }
            }
            match newcomer_since {
                None => newcomer_since = Some(Instant::now()),
                Some(since) if since.elapsed() >= REFUSAL_GRACE => {
                    accept_refused(listener, &mut refusals);
                    newcomer_since = None;
                }
                Some(_) => {}
            }
        }
        refusals.serve(Instant::now());
    }
}

/// The client hung up: what it sent before is still carried out.
fn hung_up(shared: &Shared<'_>, inbox: &mut Inbox) -> Result<(), ConnectionError> {
    while let Some(frame) = inbox.next_frame()? {
        if let Some(payload) = route(shared, frame) {
            inbox.recycle(payload);
        }
    }
    Ok(())
}

/// Sends a message to its place: replies to the DMA channel, writes that return at once to
/// [`at_once`] when it can, everything else to the dispatcher (which answers malformed ones).
/// Returns the payload of a message handled here, for the framer to reuse.
fn route(shared: &Shared<'_>, frame: Frame<OwnedFd>) -> Option<Vec<u8>> {
    if frame.header.is_reply() == Ok(true) {
        let (msg_id, command) = (frame.header.msg_id, frame.header.command);
        if !shared.dma.deliver(frame) {
            tracing::warn!(
                msg_id,
                ?command,
                "dropping a reply no DMA request waits for (late or unsolicited)"
            );
        }
    } else if at_once(shared, &frame) {
        return Some(frame.payload);
    } else {
        shared.queue.push(frame);
    }
    None
}

/// Carries out `frame` on the reader and answers it, if it is a write the device says returns
/// at once ([`Device::write_returns_at_once`], e.g. a trapped doorbell), nothing is ahead of
/// it (no request queued or being handled: requests take effect, and replies go out, in
/// order), and the reply can go out without waiting for the client. Saves the hand-off to the
/// dispatcher, a thread wake-up per write. `false`: nothing was done.
fn at_once(shared: &Shared<'_>, frame: &Frame<OwnedFd>) -> bool {
    if frame.header.command != Command::REGION_WRITE || !shared.queue.idle() {
        return false;
    }
    // Only the reader queues requests, so the dispatcher stays idle until it queues this one.
    // A posted write (No_reply) has no reply to send.
    let held = if frame.header.flags.no_reply() {
        None
    } else {
        match shared.outbox.hold_if_ready() {
            Some(held) => Some(held),
            None => return false,
        }
    };
    let Ok(mut session) = shared.session.try_lock() else {
        return false;
    };
    let Some(reply) = session.handle_at_once(frame) else {
        return false;
    };
    if let (Some(reply), Some(held)) = (reply, held) {
        // A failed send breaks the outbox, and the reader ends the connection when it next looks.
        if let Err(e) = held.send(&reply) {
            tracing::debug!("cannot send a reply: {e}");
        }
    }
    true
}

/// Polls the client socket (when `read_socket`), the listener (when given) and the refused
/// sockets for up to `timeout`; returns whether the socket and the listener are ready (the
/// refused sockets only wake the wait, so that their refusal goes out at once).
fn wait(
    socket: BorrowedFd<'_>,
    read_socket: bool,
    listener: Option<BorrowedFd<'_>>,
    refusals: &Refusals,
    timeout: Duration,
) -> io::Result<(bool, bool)> {
    // A fixed array, no allocation: the reader waits once per message it handles.
    let mut fds: [PollFd<'_>; 2 + super::refusal::MAX_REFUSALS] =
        std::array::from_fn(|_| PollFd::new(&socket, PollFlags::empty()));
    let mut n = 0;
    let watched = read_socket
        .then_some(socket)
        .into_iter()
        .chain(listener)
        .chain(refusals.sockets());
    for (slot, fd) in fds.iter_mut().zip(watched) {
        *slot = PollFd::from_borrowed_fd(fd, PollFlags::IN);
        n += 1;
    }
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: timeout.min(POLL_INTERVAL).as_nanos() as i64,
    };
    let fds = &mut fds[..n];
    match rustix::event::poll(fds, Some(&timeout)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok((false, false)),
        Err(e) => return Err(e.into()),
    }
    let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
    let socket_ready = read_socket && ready(&fds[0]);
    let listener_at = usize::from(read_socket);
    let listener_ready = listener.is_some() && ready(&fds[listener_at]);
    Ok((socket_ready, listener_ready))
}

/// Accepts every connection waiting on `listener` (non-blocking) into `refusals`.
fn accept_refused(listener: BorrowedFd<'_>, refusals: &mut Refusals) {
    for _ in 0..super::refusal::MAX_REFUSALS {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(socket) => refusals.add(socket),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {}
            Err(_) => return,
        }
    }
}
