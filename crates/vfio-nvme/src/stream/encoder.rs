//! The encoder for the source side: emits the stream one bounded record at a time.

use super::error::StreamError;
use super::header::StreamHeader;
use super::ledger::Ledger;
use super::ledger::Summary;
use super::pci_face::PciFaceState;
use super::pci_face::PciFaceView;
use super::record::RecordType;
use super::record::RecordView;

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
