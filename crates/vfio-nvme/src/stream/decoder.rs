//! The incremental decoder for the destination side (MIG_DATA_WRITE in pieces of any size).

use std::collections::VecDeque;

use zerocopy::FromBytes;

use super::MAGIC;
use super::MAX_USER_DATA_BYTES;
use super::error::RecordAt;
use super::error::StreamError;
use super::header;
use super::header::FIXED_BYTES;
use super::header::StreamHeader;
use super::ledger::Ledger;
use super::ledger::Summary;
use super::record::Record;
use super::record::RecordType;
use super::record::RecordView;
use super::wire::CRC_BYTES;
use super::wire::RecordHeader;

/// One decoded item of the stream, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// The header, always first.
    Header(StreamHeader),
    /// A record that passed every check (CRC, bounds, namespace range, order).
    Record(Record),
}

/// One decoded item handed to the callback of [`StreamDecoder::push_with`]: user data where it
/// arrived (no copy), everything else (small, except the controller state) as an [`Item`].
#[derive(Debug, PartialEq, Eq)]
pub enum ItemRef<'a> {
    /// A checked `UserData` record, its data in the bytes given to the decoder (or in its
    /// buffer, when the record was cut by the segmentation).
    UserData {
        /// The namespace.
        nsid: u32,
        /// Byte offset in the namespace.
        offset: u64,
        /// The data.
        data: &'a [u8],
    },
    /// Any other item.
    Owned(Item),
}

impl ItemRef<'_> {
    /// The owned item.
    pub fn into_item(self) -> Item {
        match self {
            Self::UserData { nsid, offset, data } => Item::Record(Record::UserData {
                nsid,
                offset,
                data: data.to_vec(),
            }),
            Self::Owned(item) => item,
        }
    }
}

/// Why [`StreamDecoder::push_with`] stopped.
#[derive(Debug)]
pub enum PushError<E> {
    /// The stream is invalid (sticky, as with [`StreamDecoder::push`]).
    Stream(StreamError),
    /// The callback failed on an item. That item was decoded and counted; the bytes after it
    /// in this push were not decoded (the caller, which knows what the failure means, decides
    /// whether the stream goes on).
    Apply(E),
}

const RECORD_HEADER_BYTES: usize = size_of::<RecordHeader>();

/// Buffer capacity kept between items: one full `UserData` record, the common case. A larger
/// buffer (a big controller state) is released once its record is complete.
const RETAINED_CAPACITY: usize = RECORD_HEADER_BYTES + 12 + MAX_USER_DATA_BYTES + CRC_BYTES;

/// Decodes a migration stream fed in pieces of any size, down to one byte at a time.
///
/// The decoder keeps at most one item in its buffer, and grows the buffer only for bytes that
/// arrived and only up to a length it has already checked against the item's bound. The first
/// error is sticky: later calls to [`Self::push`] and [`Self::finish`] return it again. Items
/// decoded before an error stay available from [`Self::next_item`].
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    ledger: Option<Ledger>,
    ended: bool,
    items: VecDeque<Item>,
    error: Option<StreamError>,
}

impl StreamDecoder {
    /// A decoder waiting for the header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream. Complete items become available from
    /// [`Self::next_item`]; an error means the stream is invalid and the decoder stops.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        let mut items = std::mem::take(&mut self.items);
        let result = self.push_with(bytes, |item| {
            items.push_back(item.into_item());
            Ok::<(), std::convert::Infallible>(())
        });
        self.items = items;
        result.map_err(|e| match e {
            PushError::Stream(e) => e,
            PushError::Apply(never) => match never {},
        })
    }

    /// Feeds the next bytes of the stream and hands each complete, checked item to `apply` at
    /// once, in stream order. A record that lies whole inside `bytes` — every record but the
    /// ones the segmentation cuts, when the source fits its records to its chunks — is checked
    /// (one CRC pass) and handed out where it is, without a copy; a cut record is buffered until
    /// it is complete. Items decoded before a stream error are still handed out; a failure of
    /// `apply` stops this push there.
    pub fn push_with<E>(
        &mut self,
        bytes: &[u8],
        mut apply: impl FnMut(ItemRef<'_>) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        if let Some(error) = &self.error {
            return Err(PushError::Stream(error.clone()));
        }
        let result = self.push_inner(bytes, &mut apply);
        if let Err(PushError::Stream(error)) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    /// The next decoded item, if any.
    pub fn next_item(&mut self) -> Option<Item> {
        self.items.pop_front()
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.ledger.as_ref().map(Ledger::header)
    }

    /// Totals of the records accepted so far, once the header has been decoded.
    pub fn summary(&self) -> Option<Summary> {
        self.ledger.as_ref().map(Ledger::summary)
    }

    /// Checks that the stream is complete: header seen, `End` seen with matching totals, no
    /// partial item and nothing after `End`; returns the stream's totals.
    pub fn finish(&self) -> Result<Summary, StreamError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let Some(ledger) = &self.ledger else {
            return Err(self.truncated()?);
        };
        if !self.buf.is_empty() {
            return Err(self.truncated()?);
        }
        let summary = ledger.summary();
        if !self.ended {
            return Err(StreamError::MissingEnd {
                records: summary.records,
                offset: summary.stream_bytes,
            });
        }
        Ok(summary)
    }

    /// The error for a stream that stops inside the current item.
    fn truncated(&self) -> Result<StreamError, StreamError> {
        let need = self.need()? as u64;
        let have = self.buf.len() as u64;
        let item = match &self.ledger {
            None => "stream header".to_owned(),
            Some(ledger) => match self.frame(ledger)? {
                Some((at, total)) => {
                    format!(
                        "{at} ({}-byte payload)",
                        total - RECORD_HEADER_BYTES - CRC_BYTES
                    )
                }
                None => {
                    let summary = ledger.summary();
                    format!(
                        "header of record {} at byte {}",
                        summary.records, summary.stream_bytes
                    )
                }
            },
        };
        Ok(StreamError::Truncated { item, have, need })
    }

    fn push_inner<E>(
        &mut self,
        mut input: &[u8],
        apply: &mut impl FnMut(ItemRef<'_>) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        while !input.is_empty() {
            if self.ended {
                let offset = self.ledger.as_ref().map_or(0, |l| l.summary().stream_bytes);
                return Err(PushError::Stream(StreamError::DataAfterEnd { offset }));
            }
            // A whole record at the front of the input is taken where it is.
            if self.buf.is_empty()
                && let Some(ledger) = self.ledger.as_mut()
                && let Some((at, total)) = frame_of(ledger, input).map_err(PushError::Stream)?
                && input.len() >= total
            {
                let (record, rest) = input.split_at(total);
                let view = check_record(ledger, at, record).map_err(PushError::Stream)?;
                self.ended = matches!(view, RecordView::End { .. });
                apply(item_of(view)).map_err(PushError::Apply)?;
                input = rest;
                continue;
            }
            let need = self.need().map_err(PushError::Stream)?;
            let take = need.saturating_sub(self.buf.len()).min(input.len());
            self.append(&input[..take], need);
            input = &input[take..];
            if self.buf.len() == self.need().map_err(PushError::Stream)? {
                self.complete(apply)?;
            }
        }
        Ok(())
    }

    /// Appends bytes, growing the buffer geometrically but never past `need`, a length already
    /// checked against the current item's bound.
    fn append(&mut self, bytes: &[u8], need: usize) {
        let wanted = self.buf.len() + bytes.len();
        if wanted > self.buf.capacity() {
            let target = need.min(wanted.max(self.buf.capacity() * 2));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Total bytes the current item needs, as far as the buffered bytes tell: the item's length
    /// once known, else the bytes needed to learn it. Validates everything checkable so far.
    fn need(&self) -> Result<usize, StreamError> {
        match &self.ledger {
            None if self.buf.len() < MAGIC.len() => Ok(MAGIC.len()),
            None if self.buf.len() < FIXED_BYTES => {
                header::check_magic(&self.buf)?;
                Ok(FIXED_BYTES)
            }
            None => header::check_fixed(&self.buf),
            Some(ledger) => Ok(self
                .frame(ledger)?
                .map_or(RECORD_HEADER_BYTES, |(_, total)| total)),
        }
    }

    /// The current record's position and framed length, once its 8-byte header is buffered.
    fn frame(&self, ledger: &Ledger) -> Result<Option<(RecordAt, usize)>, StreamError> {
        frame_of(ledger, &self.buf)
    }

    /// Decodes the complete item in the buffer and hands it to `apply`.
    fn complete<E>(
        &mut self,
        apply: &mut impl FnMut(ItemRef<'_>) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        let applied = match self.ledger.as_mut() {
            None => {
                let header = header::decode(&self.buf).map_err(PushError::Stream)?;
                self.ledger = Some(Ledger::new(header.clone(), self.buf.len() as u64));
                apply(ItemRef::Owned(Item::Header(header)))
            }
            Some(ledger) => {
                let Some((at, _)) = frame_of(ledger, &self.buf).map_err(PushError::Stream)? else {
                    return Err(PushError::Stream(
                        self.truncated().map_err(PushError::Stream)?,
                    ));
                };
                let view = check_record(ledger, at, &self.buf).map_err(PushError::Stream)?;
                self.ended = matches!(view, RecordView::End { .. });
                apply(item_of(view))
            }
        };
        if self.buf.capacity() > RETAINED_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        applied.map_err(PushError::Apply)
    }
}

/// The position and framed length of the record at the front of `bytes`, once its 8-byte
/// header is there.
fn frame_of(ledger: &Ledger, bytes: &[u8]) -> Result<Option<(RecordAt, usize)>, StreamError> {
    let Ok((head, _)) = RecordHeader::read_from_prefix(bytes) else {
        return Ok(None);
    };
    let Some(record_type) = RecordType::from_raw(head.record_type) else {
        let summary = ledger.summary();
        return Err(StreamError::UnknownRecordType {
            index: summary.records,
            offset: summary.stream_bytes,
            record_type: head.record_type,
        });
    };
    let at = ledger.next_at(record_type);
    if head.reserved != [0; 3] {
        return Err(StreamError::RecordReserved {
            at,
            value: head.reserved,
        });
    }
    record_type.check_length(at, head.length.into())?;
    Ok(Some((
        at,
        RECORD_HEADER_BYTES + head.length as usize + CRC_BYTES,
    )))
}

/// Checks the complete framed `record` at `at` (CRC, payload, the ledger's rules) and counts
/// it.
fn check_record<'a>(
    ledger: &mut Ledger,
    at: RecordAt,
    record: &'a [u8],
) -> Result<RecordView<'a>, StreamError> {
    let (covered, crc) = record.split_at(record.len() - CRC_BYTES);
    let computed = crc32fast::hash(covered);
    let mut stored = [0u8; CRC_BYTES];
    stored.copy_from_slice(crc);
    let stored = u32::from_le_bytes(stored);
    if stored != computed {
        return Err(StreamError::RecordCrc {
            at,
            stored,
            computed,
        });
    }
    let view = RecordView::parse(at, &covered[RECORD_HEADER_BYTES..])?;
    ledger.accept(&view)?;
    Ok(view)
}

/// The item to hand out for a checked record: user data borrowed, the rest owned.
fn item_of(view: RecordView<'_>) -> ItemRef<'_> {
    match view {
        RecordView::UserData { nsid, offset, data } => ItemRef::UserData { nsid, offset, data },
        other => ItemRef::Owned(Item::Record(other.to_record())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_grows_only_with_received_bytes() {
        let mut decoder = StreamDecoder::new();
        decoder
            .push(&StreamHeader::default().encode().unwrap())
            .unwrap();
        // A controller state record that claims the maximum 64 MiB but delivers 100 bytes.
        decoder.push(&[3, 0, 0, 0]).unwrap();
        decoder.push(&(64u32 << 20).to_le_bytes()).unwrap();
        for _ in 0..100 {
            decoder.push(&[0]).unwrap();
        }
        assert!(
            decoder.buf.capacity() < 1024,
            "capacity {}",
            decoder.buf.capacity()
        );
        // A whole record grows the buffer to exactly its length, never twice it.
        let mut decoder = StreamDecoder::new();
        decoder
            .push(&StreamHeader::default().encode().unwrap())
            .unwrap();
        let payload = vec![0u8; 5000];
        let mut record = Vec::new();
        RecordView::ControllerState(&payload).write(&mut record);
        for byte in &record[..record.len() - 1] {
            decoder.push(&[*byte]).unwrap();
        }
        assert!(decoder.buf.capacity() <= record.len());
    }
}
