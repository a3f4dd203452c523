//! The encoder for the source side: emits the stream one bounded record at a time.

use zerocopy::IntoBytes;

use super::error::StreamError;
use super::header::StreamHeader;
use super::ledger::Ledger;
use super::ledger::Summary;
use super::pci_face::PciFaceState;
use super::pci_face::PciFaceView;
use super::record::RecordType;
use super::record::RecordView;
use super::wire::DeallocatePayload;
use super::wire::FRAMING_BYTES;
use super::wire::UserDataPrefix;
use super::wire::record_header;
use super::wire::write_record_into;

/// Bytes a `UserData` record adds to its data: the record header, the nsid/offset prefix and
/// the CRC. A reply buffer with room for `USER_DATA_OVERHEAD + n` bytes takes `n` data bytes.
pub const USER_DATA_OVERHEAD: usize = FRAMING_BYTES + size_of::<UserDataPrefix>();

/// Bytes a `Deallocate` record takes.
pub const DEALLOCATE_RECORD_BYTES: usize = FRAMING_BYTES + size_of::<DeallocatePayload>();

/// Bytes of the CRC at the end of a record.
const CRC_OF_RECORD: usize = super::wire::CRC_BYTES;

/// Piece of the data [`StreamEncoder::user_data_in_place`] fills, checksums and checks for
/// zeros before the next: small enough that the CRC and the zero check read what the fill just
/// wrote from the cache, so the data is brought in from memory once.
const PIECE_BYTES: usize = 64 << 10;

/// Writes a migration stream incrementally. Each method appends complete items to a caller's
/// buffer (which the migration driver drains through MIG_DATA_READ), so the source holds at most
/// one record of namespace data at a time.
///
/// The encoder applies the decoder's rules before writing anything: a record the destination
/// would reject (out of range, misaligned, for a shared namespace, a second controller state,
/// an oversized payload) is refused with the same [`StreamError`], and `out` is left unchanged.
#[derive(Debug)]
pub struct StreamEncoder {
    ledger: Ledger,
}

impl StreamEncoder {
    /// Validates `header`, appends its encoding to `out`, and returns an encoder for the records.
    pub fn new(header: StreamHeader, out: &mut Vec<u8>) -> Result<Self, StreamError> {
        let bytes = header.encode()?;
        out.extend_from_slice(&bytes);
        Ok(Self {
            ledger: Ledger::new(header, bytes.len() as u64),
        })
    }

    /// Appends a `UserData` record: `data` belongs at byte `offset` of namespace `nsid`.
    pub fn user_data(
        &mut self,
        nsid: u32,
        offset: u64,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        self.emit(RecordView::UserData { nsid, offset, data }, out)
    }

    /// Writes a `UserData` record with `len` data bytes for byte `offset` of namespace `nsid` at
    /// the front of `out`, the data put straight into its place by `fill(at, piece)` (`piece`
    /// belongs at byte `offset + at` of the namespace), and returns the bytes of `out` used.
    ///
    /// This is the copy-free path of the source: the namespace is read into the buffer that goes
    /// to the socket, and one pass over each piece, while it is still in the cache, computes the
    /// CRC and sees whether the data is all zeros — then a `Deallocate` record (of
    /// [`DEALLOCATE_RECORD_BYTES`]) is written instead, which the destination applies the same
    /// way and which carries no data.
    ///
    /// The same rules as [`Self::user_data`] apply; `out` must hold
    /// `len + USER_DATA_OVERHEAD` bytes (else [`StreamError::RecordTooLarge`] names the room
    /// there is). On an error nothing is counted and the bytes of `out` are unspecified.
    pub fn user_data_in_place<E: From<StreamError>>(
        &mut self,
        nsid: u32,
        offset: u64,
        len: usize,
        out: &mut [u8],
        mut fill: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let at = self.ledger.next_at(RecordType::UserData);
        let payload_len = size_of::<UserDataPrefix>() + len;
        RecordType::UserData.check_length(at, payload_len as u64)?;
        let total = payload_len + FRAMING_BYTES;
        let room = out.len();
        let Some(record) = out.get_mut(..total) else {
            return Err(StreamError::RecordTooLarge {
                at,
                length: payload_len as u64,
                limit: room.saturating_sub(FRAMING_BYTES) as u64,
            }
            .into());
        };
        let (head, rest) = record.split_at_mut(USER_DATA_OVERHEAD - CRC_OF_RECORD);
        let (data, crc) = rest.split_at_mut(len);
        let (record_head, prefix) = head.split_at_mut(size_of::<super::wire::RecordHeader>());
        record_head.copy_from_slice(record_header(RecordType::UserData, payload_len).as_bytes());
        prefix.copy_from_slice(UserDataPrefix { nsid, offset }.as_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(head);
        let mut zeros = true;
        let mut done = 0u64;
        for piece in data.chunks_mut(PIECE_BYTES) {
            fill(done, piece)?;
            hasher.update(piece);
            // Stops looking once a piece holds data (the first byte, for most data).
            zeros = zeros && piece.iter().all(|&b| b == 0);
            done += piece.len() as u64;
        }
        if zeros {
            let length = len as u64;
            self.ledger.accept(&RecordView::Deallocate {
                nsid,
                offset,
                length,
            })?;
            let payload = DeallocatePayload {
                nsid,
                offset,
                length,
            };
            return Ok(write_record_into(
                out,
                RecordType::Deallocate,
                &[payload.as_bytes()],
            ));
        }
        self.ledger
            .accept(&RecordView::UserData { nsid, offset, data })?;
        crc.copy_from_slice(&hasher.finalize().to_le_bytes());
        Ok(total)
    }

    /// Appends a `Deallocate` record: bytes `offset .. offset + length` of `nsid` read as zeros.
    pub fn deallocate(
        &mut self,
        nsid: u32,
        offset: u64,
        length: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        self.emit(
            RecordView::Deallocate {
                nsid,
                offset,
                length,
            },
            out,
        )
    }

    /// Appends the `ControllerState` record (the whole Get Controller State data, ≤ 64 MiB).
    pub fn controller_state(&mut self, state: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.emit(RecordView::ControllerState(state), out)
    }

    /// Appends the `PciFace` record: the migrated function's configuration space and MSI-X
    /// state (at most one per stream).
    pub fn pci_face(&mut self, state: &PciFaceState, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let at = self.ledger.next_at(RecordType::PciFace);
        let bad = |error| StreamError::PciFace { at, error };
        let payload = state.encode().map_err(bad)?;
        let view = PciFaceView::parse(&payload).map_err(bad)?;
        self.emit(RecordView::PciFace(view), out)
    }

    /// Appends the `End` record with the totals counted so far and returns the stream's totals.
    /// Fails (writing nothing) if no controller state was written.
    pub fn end(mut self, out: &mut Vec<u8>) -> Result<Summary, StreamError> {
        let summary = self.ledger.summary();
        self.emit(
            RecordView::End {
                records: summary.records,
                user_data_bytes: summary.user_data_bytes,
            },
            out,
        )?;
        Ok(self.ledger.summary())
    }

    /// Totals of what has been written so far.
    pub fn summary(&self) -> Summary {
        self.ledger.summary()
    }

    fn emit(&mut self, record: RecordView<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let at = self.ledger.next_at(record.record_type());
        record
            .record_type()
            .check_length(at, record.payload_len() as u64)?;
        self.ledger.accept(&record)?;
        record.write(out);
        Ok(())
    }
}
