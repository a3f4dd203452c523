//! A human and machine readable account of a stream, for `vfio-nvme state decode FILE`.

use core::fmt;
use std::collections::BTreeMap;

use super::FORMAT_VERSION;
use super::decoder::Item;
use super::decoder::StreamDecoder;
use super::error::StreamError;
use super::header::StreamHeader;
use super::ledger::Summary;
use super::pci_face::PciFaceState;
use super::record::Record;

/// Bytes fed to the decoder at a time, so that decoded data is dropped as it is summarised.
const CHUNK_BYTES: usize = 64 << 10;
/// Ranges listed per namespace in the human rendering (the JSON lists all).
const SHOWN_RANGES: usize = 8;

/// A byte range of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl ByteRange {
    fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Byte ranges merged into disjoint, ascending ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RangeSummary {
    /// The disjoint ranges, ascending.
    pub ranges: Vec<ByteRange>,
    /// Bytes covered (each byte once, however often it was sent).
    pub bytes: u64,
}

impl RangeSummary {
    fn add(&mut self, offset: u64, length: u64) {
        // Sequential streaming extends the last range; anything else is merged in `normalize`.
        if let Some(last) = self.ranges.last_mut()
            && last.end() == offset
        {
            last.length += length;
        } else {
            self.ranges.push(ByteRange { offset, length });
        }
    }

    fn normalize(&mut self) {
        self.ranges.sort_by_key(|r| r.offset);
        let mut merged: Vec<ByteRange> = Vec::with_capacity(self.ranges.len());
        for range in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if range.offset <= last.end() => {
                    last.length = last.end().max(range.end()) - last.offset;
                }
                _ => merged.push(range),
            }
        }
        self.bytes = merged.iter().map(|r| r.length).sum();
        self.ranges = merged;
    }
}

impl fmt::Display for RangeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes in {} ranges", self.bytes, self.ranges.len())?;
        for (i, r) in self.ranges.iter().take(SHOWN_RANGES).enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{}..{}", r.offset, r.end())?;
        }
        if self.ranges.len() > SHOWN_RANGES {
            write!(f, ", … ({} more)", self.ranges.len() - SHOWN_RANGES)?;
        }
        Ok(())
    }
}

/// What the stream holds for one namespace of its header.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceReport {
    /// The namespace.
    pub nsid: u32,
    /// Bytes written by `UserData` records.
    pub user_data: RangeSummary,
    /// Bytes zeroed by `Deallocate` records.
    pub deallocated: RangeSummary,
}

/// The totals an `End` record declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndTotals {
    /// Records before `End`.
    pub records: u64,
    /// User-data bytes.
    pub user_data_bytes: u64,
}

/// What a stream's `PciFace` record says of the migrated function.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PciFaceReport {
    /// MSI-X vectors.
    pub vectors: usize,
    /// The PCI Command register.
    pub command: u16,
    /// Offset of the MSI-X capability in configuration space, if its capability list has one.
    pub msix_capability: Option<u8>,
    /// MSI-X Enable (Message Control bit 15).
    pub msix_enabled: bool,
    /// Function Mask (Message Control bit 14).
    pub function_masked: bool,
    /// The vectors masked.
    pub masked: Vec<usize>,
    /// The vectors with an interrupt pending (fired while masked).
    pub pending: Vec<usize>,
}

impl PciFaceReport {
    fn of(state: &PciFaceState) -> Self {
        let control = state.msix_capability();
        let control_bit = |bit: u16| control.is_some_and(|(_, c)| c & bit != 0);
        let set = |bits: &[bool]| {
            bits.iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| i)
                .collect()
        };
        Self {
            vectors: state.vectors(),
            command: state.command(),
            msix_capability: control.map(|(at, _)| at),
            msix_enabled: control_bit(1 << 15),
            function_masked: control_bit(1 << 14),
            masked: set(&state.masked),
            pending: set(&state.pending),
        }
    }
}

/// Vector numbers as "1, 3" ("none" for none).
fn vector_list(vectors: &[usize]) -> String {
    if vectors.is_empty() {
        return "none".to_owned();
    }
    vectors
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PciFaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MSI-X vectors, command register {:04x}h, ",
            self.vectors, self.command
        )?;
        match self.msix_capability {
            Some(at) => write!(
                f,
                "MSI-X capability at {at:02x}h {}, function {}",
                if self.msix_enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                if self.function_masked {
                    "masked"
                } else {
                    "unmasked"
                }
            )?,
            None => write!(f, "no MSI-X capability")?,
        }
        write!(
            f,
            "; masked vectors: {}; pending vectors: {}",
            vector_list(&self.masked),
            vector_list(&self.pending)
        )
    }
}

/// An account of a stream: everything valid up to the first error, and that error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamReport {
    /// Bytes given to [`describe`] (read, up to the first invalid one, by
    /// [`describe_reader`]).
    pub stream_bytes: u64,
    /// Bytes up to the end of the last valid item.
    pub valid_bytes: u64,
    /// The format version.
    pub format_version: u16,
    /// The header.
    pub header: StreamHeader,
    /// Totals of the valid records.
    pub summary: Summary,
    /// Per namespace of the header, the ranges the valid records cover.
    pub namespaces: Vec<NamespaceReport>,
    /// The `PciFace` record, if the valid part holds one.
    pub pci_face: Option<PciFaceReport>,
    /// The `End` record's totals, if it was reached.
    pub end: Option<EndTotals>,
    /// The first problem, or `None` for a complete, valid stream.
    pub error: Option<String>,
}

impl StreamReport {
    /// Whether the stream is complete and valid.
    pub fn is_valid(&self) -> bool {
        self.error.is_none()
    }
}

/// Decodes `bytes` as a whole stream and reports on it. A stream whose header is valid always
/// gives a report, with the first error in [`StreamReport::error`]; a stream without a valid
/// header gives that error, as there is nothing to describe.
pub fn describe(bytes: &[u8]) -> Result<StreamReport, StreamError> {
    let mut describer = Describer::default();
    for chunk in bytes.chunks(CHUNK_BYTES) {
        if !describer.push(chunk) {
            break;
        }
    }
    describer.stream_bytes = bytes.len() as u64;
    describer.finish()
}

/// Like [`describe`], reading the stream from `reader` in chunks: memory stays bounded however
/// long the input is, and reading stops at the first invalid byte (a file that is not a stream
/// is refused after its first bytes, even an endless one like `/dev/zero`).
///
/// # Errors
/// Reading failed (the outer error); otherwise as [`describe`].
pub fn describe_reader(
    mut reader: impl std::io::Read,
) -> std::io::Result<Result<StreamReport, StreamError>> {
    let mut describer = Describer::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !describer.push(&buf[..n]) {
            break;
        }
    }
    Ok(describer.finish())
}

/// The state of [`describe`]: the decoder and what its items told so far.
#[derive(Default)]
struct Describer {
    decoder: StreamDecoder,
    namespaces: BTreeMap<u32, NamespaceReport>,
    end: Option<EndTotals>,
    pci_face: Option<PciFaceReport>,
    error: Option<StreamError>,
    stream_bytes: u64,
}

impl Describer {
    /// Feeds the next bytes; false once the stream is invalid (nothing more is read).
    fn push(&mut self, chunk: &[u8]) -> bool {
        self.stream_bytes += chunk.len() as u64;
        let pushed = self.decoder.push(chunk);
        while let Some(item) = self.decoder.next_item() {
            match item {
                Item::Header(header) => {
                    for ns in &header.geometry.namespaces {
                        let report = NamespaceReport {
                            nsid: ns.nsid,
                            ..Default::default()
                        };
                        self.namespaces.insert(ns.nsid, report);
                    }
                }
                Item::Record(Record::PciFace(state)) => {
                    self.pci_face = Some(PciFaceReport::of(&state));
                }
                Item::Record(record) => fold(&mut self.namespaces, &mut self.end, &record),
            }
        }
        match pushed {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn finish(self) -> Result<StreamReport, StreamError> {
        let outcome = match self.error {
            Some(e) => Err(e),
            None => self.decoder.finish(),
        };
        let (Some(header), Some(summary)) = (self.decoder.header(), self.decoder.summary()) else {
            return Err(outcome.err().unwrap_or(StreamError::Truncated {
                item: "stream header".into(),
                have: 0,
                need: super::MAGIC.len() as u64,
            }));
        };
        let mut namespaces: Vec<NamespaceReport> = self.namespaces.into_values().collect();
        for ns in &mut namespaces {
            ns.user_data.normalize();
            ns.deallocated.normalize();
        }
        Ok(StreamReport {
            stream_bytes: self.stream_bytes,
            valid_bytes: summary.stream_bytes,
            format_version: FORMAT_VERSION,
            header: header.clone(),
            summary,
            namespaces,
            pci_face: self.pci_face,
            end: self.end,
            error: outcome.err().map(|e| e.to_string()),
        })
    }
}

fn fold(
    namespaces: &mut BTreeMap<u32, NamespaceReport>,
    end: &mut Option<EndTotals>,
    record: &Record,
) {
    match record {
        Record::UserData { nsid, offset, data } => {
            if let Some(ns) = namespaces.get_mut(nsid) {
                ns.user_data.add(*offset, data.len() as u64);
            }
        }
        Record::Deallocate {
            nsid,
            offset,
            length,
        } => {
            if let Some(ns) = namespaces.get_mut(nsid) {
                ns.deallocated.add(*offset, *length);
            }
        }
        Record::ControllerState(_) | Record::PciFace(_) => {}
        Record::End {
            records,
            user_data_bytes,
        } => {
            *end = Some(EndTotals {
                records: *records,
                user_data_bytes: *user_data_bytes,
            });
        }
    }
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let g = &h.geometry;
        writeln!(
            f,
            "vfio-nvme migration stream, format version {}, {} bytes",
            self.format_version, self.stream_bytes
        )?;
        writeln!(f, "source subsystem NQN: {}", h.subsystem_nqn)?;
        writeln!(f, "source serial number: {}", h.serial)?;
        writeln!(
            f,
            "controller limits: {} I/O queue pairs, MQES {} (zero-based), MDTS {}, {} MSI-X vectors",
            g.io_queue_pairs, g.mqes, g.mdts, g.msix_vectors
        )?;
        writeln!(f, "namespaces: {}", g.namespaces.len())?;
        for ns in &g.namespaces {
            let placement = if ns.shared {
                "shared (data not in the stream)"
            } else {
                "local"
            };
            writeln!(
                f,
                "  nsid {}: {} blocks of {} bytes ({} bytes), {placement}",
                ns.nsid,
                ns.blocks,
                ns.block_size(),
                ns.bytes()
            )?;
            if let Some(report) = self.namespaces.iter().find(|r| r.nsid == ns.nsid) {
                writeln!(f, "    user data: {}", report.user_data)?;
                writeln!(f, "    deallocated: {}", report.deallocated)?;
            }
        }
        let s = &self.summary;
        writeln!(f, "records before End: {}", s.records)?;
        writeln!(
            f,
            "  UserData: {} records, {} data bytes",
            s.user_data_records, s.user_data_bytes
        )?;
        writeln!(
            f,
            "  Deallocate: {} records, {} bytes",
            s.deallocate_records, s.deallocated_bytes
        )?;
        match s.controller_state_bytes {
            Some(bytes) => writeln!(f, "  ControllerState: {bytes} bytes")?,
            None => writeln!(f, "  ControllerState: none")?,
        }
        match &self.pci_face {
            Some(face) => writeln!(f, "  PciFace: {face}")?,
            None => writeln!(f, "  PciFace: none")?,
        }
        match &self.end {
            Some(end) => writeln!(
                f,
                "End: {} records, {} user-data bytes",
                end.records, end.user_data_bytes
            )?,
            None => writeln!(f, "End: not reached")?,
        }
        match &self.error {
            None => write!(f, "status: valid"),
            Some(error) => write!(
                f,
                "status: INVALID after {} valid bytes: {error}",
                self.valid_bytes
            ),
        }
    }
}
