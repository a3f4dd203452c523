//! The stream rules that depend on the header and on earlier records, shared by the encoder (so
//! the source cannot write a stream the destination would reject) and the decoder.

use super::error::RecordAt;
use super::error::StreamError;
use super::header::StreamHeader;
use super::record::RecordType;
use super::record::RecordView;
use super::wire::CRC_BYTES;
use super::wire::RecordHeader;

/// Totals of a stream (or of its valid part so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Records after the header, not counting `End`.
    pub records: u64,
    /// `UserData` records.
    pub user_data_records: u64,
    /// Data bytes of all `UserData` records (overlapping resends counted each time).
    pub user_data_bytes: u64,
    /// `Deallocate` records.
    pub deallocate_records: u64,
    /// Bytes of all `Deallocate` ranges.
    pub deallocated_bytes: u64,
    /// Size of the controller state, once its record has been seen.
    pub controller_state_bytes: Option<u64>,
    /// Size of the PCI face, once its record has been seen.
    pub pci_face_bytes: Option<u64>,
    /// Stream bytes up to the end of the last accepted item.
    pub stream_bytes: u64,
}

/// What has been accepted so far, and the rules the next record must satisfy.
#[derive(Clone, Debug)]
pub(super) struct Ledger {
    header: StreamHeader,
    summary: Summary,
    controller_state_index: Option<u64>,
    pci_face_index: Option<u64>,
}

impl Ledger {
    /// A ledger for the records after a validated `header` of `header_len` bytes.
    pub fn new(header: StreamHeader, header_len: u64) -> Self {
        Self {
            header,
            summary: Summary {
                stream_bytes: header_len,
                ..Summary::default()
            },
            controller_state_index: None,
            pci_face_index: None,
        }
    }

    /// The header the records are checked against.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The totals so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Where the next record starts, for error messages.
    pub fn next_at(&self, record_type: RecordType) -> RecordAt {
        RecordAt {
            index: self.summary.records,
            offset: self.summary.stream_bytes,
            record_type,
        }
    }

    /// Checks the next record and, if it is acceptable, counts it.
    pub fn accept(&mut self, record: &RecordView<'_>) -> Result<(), StreamError> {
        let at = self.next_at(record.record_type());
        let mut next = self.summary;
        match *record {
            RecordView::UserData { nsid, offset, data } => {
                let length = data.len() as u64;
                self.check_range(at, nsid, offset, length)?;
                next.user_data_records += 1;
                next.user_data_bytes += length;
            }
            RecordView::Deallocate {
                nsid,
                offset,
                length,
            } => {
                self.check_range(at, nsid, offset, length)?;
                next.deallocate_records += 1;
                next.deallocated_bytes = next.deallocated_bytes.saturating_add(length);
            }
            RecordView::ControllerState(bytes) => {
                if let Some(first) = self.controller_state_index {
                    return Err(StreamError::DuplicateControllerState { at, first });
                }
                self.controller_state_index = Some(at.index);
                next.controller_state_bytes = Some(bytes.len() as u64);
            }
            RecordView::PciFace(view) => {
                if let Some(first) = self.pci_face_index {
                    return Err(StreamError::DuplicatePciFace { at, first });
                }
                self.pci_face_index = Some(at.index);
                next.pci_face_bytes = Some(view.payload().len() as u64);
            }
            RecordView::End {
                records,
                user_data_bytes,
            } => {
                if self.controller_state_index.is_none() {
                    return Err(StreamError::MissingControllerState { at });
                }
                end_total(at, "records", records, self.summary.records)?;
                end_total(
                    at,
                    "user-data bytes",
                    user_data_bytes,
                    self.summary.user_data_bytes,
                )?;
            }
        }
        if !matches!(record, RecordView::End { .. }) {
            next.records += 1;
        }
        next.stream_bytes += (size_of::<RecordHeader>() + record.payload_len() + CRC_BYTES) as u64;
        self.summary = next;
        Ok(())
    }

    fn check_range(
        &self,
        at: RecordAt,
        nsid: u32,
        offset: u64,
        length: u64,
    ) -> Result<(), StreamError> {
        let ns = self
            .header
            .geometry
            .namespace(nsid)
            .ok_or(StreamError::UnknownNamespace { at, nsid })?;
        if ns.shared {
            return Err(StreamError::SharedNamespaceData { at, nsid });
        }
        if length == 0 {
            return Err(StreamError::EmptyRange { at, nsid, offset });
        }
        let block_size = ns.block_size();
        if !offset.is_multiple_of(block_size) || !length.is_multiple_of(block_size) {
            return Err(StreamError::Misaligned {
                at,
                nsid,
                offset,
                length,
                block_size,
            });
        }
        let namespace_bytes = ns.bytes();
        if offset
            .checked_add(length)
            .is_none_or(|end| end > namespace_bytes)
        {
            return Err(StreamError::OutsideNamespace {
                at,
                nsid,
                offset,
                length,
                namespace_bytes,
            });
        }
        Ok(())
    }
}

fn end_total(
    at: RecordAt,
    field: &'static str,
    declared: u64,
    counted: u64,
) -> Result<(), StreamError> {
    if declared != counted {
        return Err(StreamError::EndMismatch {
            at,
            field,
            declared,
            counted,
        });
    }
    Ok(())
}
