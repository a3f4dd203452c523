//! Posted region writes sent beside the client: a [`PostedWriter`] shares the client's
//! connection but not its lock.
//!
//! A posted REGION_WRITE (No_reply) waits for nothing, so it needs only the sending side of
//! the connection, whole messages one at a time. The [`Client`] itself is taken for a request
//! and its reply, and a caller may hold it across many (the orchestrator keeps the source's
//! connection for a batch of `MIG_DATA_READ`s): a doorbell write that took the client would
//! wait for all of them, stalling the guest for the length of the batch. Messages of one
//! thread still reach the server in the order they were sent, so a later register read of the
//! writer sees its write.

use std::sync::Arc;
use std::sync::atomic::AtomicU16;
use std::sync::atomic::Ordering;

use zerocopy::IntoBytes;

use super::Client;
use super::ClientError;
use super::link::Sender;
use crate::access::RegionAccess;
use crate::command::Command;
use crate::header::HEADER_SIZE;
use crate::header::Header;

/// First msg_id of a writer's messages: they get no reply, so their ids only have to make
/// them easy to tell apart in a trace from the client's (which count up from 0).
const FIRST_ID: u16 = 0x8000;

/// Sends posted REGION_WRITEs on a client's connection without taking the client.
#[derive(Clone, Debug)]
pub struct PostedWriter {
    sender: Arc<Sender>,
    next_id: Arc<AtomicU16>,
    max_data_xfer_size: u32,
    max_msg_size: u32,
}

impl Client {
    /// A writer of posted REGION_WRITEs on this connection (see [`PostedWriter`]), with the
    /// limits negotiated now.
    pub fn posted_writer(&self) -> PostedWriter {
        PostedWriter {
            sender: self.link.sender(),
            next_id: Arc::new(AtomicU16::new(FIRST_ID)),
            max_data_xfer_size: self.max_data_xfer_size(),
            max_msg_size: self.server_max_msg_size(),
        }
    }
}

impl PostedWriter {
    /// Writes `data` at `offset` of region `region` with a posted REGION_WRITE (No_reply set),
    /// as a CPU's MMIO write is posted: it returns once the message is sent. The server
    /// carries requests out in order, so every later request sees the write; a write the
    /// server refuses is dropped silently (the spec's No_reply: no error reply either). For
    /// doorbells, where a round trip per write would cost more than the write. `data` may not
    /// exceed the negotiated `max_data_xfer_size`.
    pub fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        let command = Command::REGION_WRITE;
        let access = Client::checked_region_access(self.max_data_xfer_size, region, offset, data)?;
        let payload_len = size_of::<RegionAccess>() + data.len();
        Client::check_limit(
            command,
            "message size",
            (HEADER_SIZE + payload_len) as u64,
            self.max_msg_size.into(),
        )?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Header, head and data go out as they are, gathered by the send: a doorbell write
        // allocates nothing.
        let header = Header::command(id, command, payload_len, true);
        self.sender
            .send_parts(&[header.as_bytes(), access.as_bytes(), data], &[])
            .map_err(|source| ClientError::Send { command, source })
    }
}
