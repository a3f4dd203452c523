//! The migration data stream: `MIG_DATA_READ` / `MIG_DATA_WRITE`, blocking in negotiated chunks
//! ([`Client::mig_data_read`], [`Client::mig_data_write`]) or pipelined — requests sent without
//! waiting for their replies ([`Client::send_mig_data_read`], [`Client::send_mig_data_write`])
//! and finished later, in the order sent, so that a relay keeps several in flight.
//!
//! Neither direction copies the data in this process beyond what the socket does: a write is
//! sent as its message prefix and the caller's slice (scatter/gather), a read's data is handed
//! out in the message it arrived in ([`MigDataChunk`]).
//!
//! A relay that only passes the stream on from one server to another need not see it at all:
//! a read sent with [`Client::send_mig_data_read_relayed`] and finished with
//! [`Client::finish_mig_data_relay`] leaves its data in the kernel — the reader thread
//! `splice`s it from the socket into a pipe as it arrives — and
//! [`Client::send_mig_data_write_relay`] `splice`s it from there into the other server's
//! socket behind the request's header. The pages the source's reply arrived in are passed on;
//! the two copies into and out of this process's memory are gone.

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::Client;
use super::ClientError;
use super::link::Reply;
use crate::command::Command;
use crate::framing::Frame;
use crate::framing::PayloadPool;
use crate::framing::ReplyBody;
use crate::migration::MigDataHead;
use crate::migration::MigDataReadReply;
use crate::migration::write_request_prefix;

/// A `MIG_DATA_READ` or `MIG_DATA_WRITE` sent without waiting for its reply. Finish it with
/// [`Client::finish_mig_data_read`] / [`Client::finish_mig_data_write`], in the order the
/// requests were sent.
#[derive(Debug)]
#[must_use = "the reply must be waited for, in the order the requests were sent"]
pub struct PendingMigData {
    msg_id: u16,
    /// Bytes asked for (read) or carried (write).
    size: u32,
}

impl PendingMigData {
    /// Bytes asked for (a read) or carried (a write).
    pub fn size(&self) -> u32 {
        self.size
    }
}

/// The data of one `MIG_DATA_READ` reply, left in the message it arrived in. Dropping it gives
/// the buffer back to the client, which receives a later reply into it.
#[derive(Debug)]
pub struct MigDataChunk {
    /// The reply's payload: the 8-byte head, then the data.
    payload: Vec<u8>,
    short: bool,
    pool: Arc<PayloadPool>,
}

impl Drop for MigDataChunk {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.payload));
    }
}

impl MigDataChunk {
    /// The stream bytes.
    pub fn data(&self) -> &[u8] {
        &self.payload[size_of::<MigDataHead>()..]
    }

    /// Whether the reply carried fewer bytes than asked: the stream has no more data now (its
    /// end, in STOP_COPY).
    pub fn is_short(&self) -> bool {
        self.short
    }
}

/// The data of one relayed `MIG_DATA_READ` reply ([`Client::finish_mig_data_relay`]), to be
/// passed on with [`Client::send_mig_data_write_relay`]: still in the kernel (a pipe the reply's
/// data is moved into as it arrives), or — for small and error-free short replies — received
/// as a message.
#[derive(Debug)]
pub struct RelayChunk {
    data: RelayData,
    short: bool,
}

#[derive(Debug)]
enum RelayData {
    Received(MigDataChunk),
    Piped { pipe: OwnedFd, len: usize },
}

impl RelayChunk {
    /// Stream bytes the chunk carries.
    pub fn len(&self) -> usize {
        match &self.data {
            RelayData::Received(chunk) => chunk.data().len(),
            RelayData::Piped { len, .. } => *len,
        }
    }

    /// Whether the chunk carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the reply carried fewer bytes than asked (see [`MigDataChunk::is_short`]).
    pub fn is_short(&self) -> bool {
        self.short
    }

    /// Whether the data is in a pipe rather than received here.
    #[cfg(test)]
    pub(crate) fn is_piped(&self) -> bool {
        matches!(self.data, RelayData::Piped { .. })
    }
}

impl Client {
    /// Reads up to `max` bytes of the migration stream with MIG_DATA_READ requests of at most
    /// [`Client::max_data_xfer_size`] bytes each, stopping at the first short reply. Fewer than
    /// `max` bytes returned means the stream has no more data: the end of the stream in
    /// STOP_COPY, "nothing for now" in PRE_COPY.
    pub fn mig_data_read(&mut self, max: usize) -> Result<Vec<u8>, ClientError> {
        let chunk = self.max_data_xfer_size() as usize;
        let mut out = Vec::new();
        while out.len() < max {
            // At most the u32 transfer size.
            let want = u32::try_from(chunk.min(max - out.len())).unwrap_or(u32::MAX);
            let pending = self.send_mig_data_read(want)?;
            let reply = self.finish_mig_data_read(pending)?;
            out.extend_from_slice(reply.data());
            if reply.is_short() {
                break;
            }
        }
        Ok(out)
    }

    /// Appends `data` to the resuming device's migration stream with MIG_DATA_WRITE requests of
    /// at most [`Client::max_data_xfer_size`] bytes each (an empty `data` sends nothing).
    pub fn mig_data_write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let chunk = self.max_data_xfer_size() as usize;
        for part in data.chunks(chunk) {
            let pending = self.send_mig_data_write(part)?;
            self.finish_mig_data_write(pending)?;
        }
        Ok(())
    }

    /// Sends a MIG_DATA_READ for up to `size` bytes (at most [`Client::max_data_xfer_size`])
    /// without waiting for the reply.
    pub fn send_mig_data_read(&mut self, size: u32) -> Result<PendingMigData, ClientError> {
        // A relayed read given up on (its batch failed) must not make this one's reply go to a
        // pipe when the msg_id comes round again.
        self.link.relayed().remove(self.next_id);
        self.send_mig_data_read_as(size)
    }

    /// [`Self::send_mig_data_read`] without touching the relay registry.
    fn send_mig_data_read_as(&mut self, size: u32) -> Result<PendingMigData, ClientError> {
        let command = Command::MIG_DATA_READ;
        Self::check_limit(
            command,
            "size",
            size.into(),
            self.max_data_xfer_size().into(),
        )?;
        let message = crate::framing::encode_request(self.next_id, &MigDataHead::read(size), false);
        let msg_id = self.send_message(command, &[&message], &[])?;
        Ok(PendingMigData { msg_id, size })
    }

    /// Waits for the reply to `pending`, a MIG_DATA_READ; its data stays in the received
    /// message.
    pub fn finish_mig_data_read(
        &mut self,
        pending: PendingMigData,
    ) -> Result<MigDataChunk, ClientError> {
        let frame = self.wait_reply(Command::MIG_DATA_READ, pending.msg_id)?;
        self.mig_data_chunk(&pending, frame)
    }

    /// The checked data of the MIG_DATA_READ reply `frame` to `pending`.
    fn mig_data_chunk(
        &self,
        pending: &PendingMigData,
        frame: Frame<OwnedFd>,
    ) -> Result<MigDataChunk, ClientError> {
        let command = Command::MIG_DATA_READ;
        let plain = !frame.header.flags.error()
            && frame.fds.is_empty()
            && frame.header.is_reply().is_ok_and(|reply| reply);
        if !plain {
            return Err(self.reply_problem(command, &frame));
        }
        let len = MigDataReadReply::data_in(&frame.payload, &self.limits)
            .map_err(|source| ClientError::BadReply { command, source })?
            .len();
        if len > pending.size as usize {
            return Err(ClientError::UnexpectedReply {
                command,
                reason: format!("asked for {} bytes, got {len}", pending.size),
            });
        }
        Ok(MigDataChunk {
            payload: frame.payload,
            short: len < pending.size as usize,
            pool: Arc::clone(self.link.payloads()),
        })
    }

    /// Sends a MIG_DATA_READ for up to `size` bytes as [`Self::send_mig_data_read`] does, its
    /// reply's data to be relayed: finish it with [`Self::finish_mig_data_relay`].
    pub fn send_mig_data_read_relayed(&mut self, size: u32) -> Result<PendingMigData, ClientError> {
        let msg_id = self.next_id;
        self.link.relayed().add(msg_id);
        let sent = self.send_mig_data_read_as(size);
        if sent.is_err() {
            self.link.relayed().remove(msg_id);
        }
        sent
    }

    /// Waits for the reply to `pending`, a MIG_DATA_READ sent with
    /// [`Self::send_mig_data_read_relayed`], checked as [`Self::finish_mig_data_read`] checks
    /// it; its data is left in the kernel, if it is large.
    pub fn finish_mig_data_relay(
        &mut self,
        pending: PendingMigData,
    ) -> Result<RelayChunk, ClientError> {
        let command = Command::MIG_DATA_READ;
        let reply = self.wait_any_reply(command, pending.msg_id);
        // Not relayed after all (an error or a timeout): the reader must not wait for it.
        self.link.relayed().remove(pending.msg_id);
        let (pipe, len) = match reply? {
            Reply::Frame(frame) => {
                let chunk = self.mig_data_chunk(&pending, frame)?;
                return Ok(RelayChunk {
                    short: chunk.is_short(),
                    data: RelayData::Received(chunk),
                });
            }
            Reply::Piped { pipe, len, .. } => (pipe, len),
        };
        if len > pending.size as usize {
            return Err(ClientError::UnexpectedReply {
                command,
                reason: format!("asked for {} bytes, got {len}", pending.size),
            });
        }
        Ok(RelayChunk {
            short: len < pending.size as usize,
            data: RelayData::Piped { pipe, len },
        })
    }

    /// Sends `chunk`'s data as one MIG_DATA_WRITE without waiting for the reply, as
    /// [`Self::send_mig_data_write`] does; data left in the kernel goes from its pipe to the
    /// socket without entering this process. The source's failure part way (the pipe ends
    /// early, or stays empty for the reply timeout) leaves this message cut, which closes this
    /// connection.
    pub fn send_mig_data_write_relay(
        &mut self,
        chunk: RelayChunk,
    ) -> Result<PendingMigData, ClientError> {
        let (pipe, len) = match chunk.data {
            RelayData::Received(chunk) => return self.send_mig_data_write(chunk.data()),
            RelayData::Piped { pipe, len } => (pipe, len),
        };
        let command = Command::MIG_DATA_WRITE;
        Self::check_limit(
            command,
            "size",
            len as u64,
            self.max_data_xfer_size().into(),
        )?;
        let deadline = self.deadline();
        let prefix = write_request_prefix(self.next_id, len);
        let msg_id = self.send_checked(command, prefix.len() + len, 0, |link| {
            link.send_spliced(&prefix, pipe.as_fd(), len, deadline)
        })?;
        // Within the u32 transfer size, checked above.
        let size = u32::try_from(len).unwrap_or(u32::MAX);
        Ok(PendingMigData { msg_id, size })
    }

    /// Sends `data` (at most [`Client::max_data_xfer_size`] bytes) as one MIG_DATA_WRITE
    /// without waiting for the reply; the data goes to the socket from `data` itself.
    pub fn send_mig_data_write(&mut self, data: &[u8]) -> Result<PendingMigData, ClientError> {
        let command = Command::MIG_DATA_WRITE;
        Self::check_limit(
            command,
            "size",
            data.len() as u64,
            self.max_data_xfer_size().into(),
        )?;
        let prefix = write_request_prefix(self.next_id, data.len());
        let msg_id = self.send_message(command, &[&prefix, data], &[])?;
        // Within the u32 transfer size, checked above.
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        Ok(PendingMigData { msg_id, size })
    }

    /// Waits for the reply to `pending`, a MIG_DATA_WRITE.
    pub fn finish_mig_data_write(&mut self, pending: PendingMigData) -> Result<(), ClientError> {
        let command = Command::MIG_DATA_WRITE;
        let frame = self.wait_reply(command, pending.msg_id)?;
        match frame.decode_reply(&self.limits) {
            Ok(ReplyBody::Ok(_)) => Ok(()),
            _ => Err(self.reply_problem(command, &frame)),
        }
    }

    /// What is wrong with a reply that is not a plain success: the peer's errno, or why it
    /// does not decode.
    fn reply_problem(&self, command: Command, frame: &Frame<OwnedFd>) -> ClientError {
        match frame.decode_reply(&self.limits) {
            Ok(ReplyBody::Error(errno)) => ClientError::Errno { command, errno },
            Ok(ReplyBody::Ok(_)) => ClientError::UnexpectedReply {
                command,
                reason: "the reply carries file descriptors".to_owned(),
            },
            Err(source) => ClientError::BadReply { command, source },
        }
    }
}
