//! The record types, their payload bounds, and the conversion between a payload's bytes and a
//! [`Record`].

use core::fmt;

use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::MAX_CONTROLLER_STATE_BYTES;
use super::MAX_USER_DATA_BYTES;
use super::error::RecordAt;
use super::error::StreamError;
use super::pci_face::MAX_MSIX_VECTORS;
use super::pci_face::PciFaceState;
use super::pci_face::PciFaceView;
use super::pci_face::pci_face_payload_len;
use super::wire::DeallocatePayload;
use super::wire::EndPayload;
use super::wire::UserDataPrefix;
use super::wire::write_record;

/// The type byte of a record. Closed: a type this build does not know is an error, because the
/// destination cannot restore state it does not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum RecordType {
    /// Namespace data at a byte offset.
    UserData = 1,
    /// A namespace byte range that became zeros (deallocated) on the source.
    Deallocate = 2,
    /// The TP4159 Get Controller State data of the migrated controller.
    ControllerState = 3,
    /// The last record: totals that prove nothing was lost.
    End = 4,
    /// The PCI face of the migrated function: configuration space and MSI-X state.
    PciFace = 5,
}

impl RecordType {
    /// The type for a raw type byte, or `None` for an unknown one.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::UserData),
            2 => Some(Self::Deallocate),
            3 => Some(Self::ControllerState),
            4 => Some(Self::End),
            5 => Some(Self::PciFace),
            _ => None,
        }
    }

    /// The inclusive range of payload lengths a record of this type may have.
    pub fn payload_bounds(self) -> (usize, usize) {
        match self {
            Self::UserData => (
                size_of::<UserDataPrefix>(),
                size_of::<UserDataPrefix>() + MAX_USER_DATA_BYTES,
            ),
            Self::Deallocate => (
                size_of::<DeallocatePayload>(),
                size_of::<DeallocatePayload>(),
            ),
            Self::ControllerState => (1, MAX_CONTROLLER_STATE_BYTES),
            Self::End => (size_of::<EndPayload>(), size_of::<EndPayload>()),
            Self::PciFace => (
                pci_face_payload_len(1),
                pci_face_payload_len(MAX_MSIX_VECTORS),
            ),
        }
    }

    /// Checks a payload length against [`Self::payload_bounds`].
    pub(super) fn check_length(self, at: RecordAt, length: u64) -> Result<(), StreamError> {
        let (min, max) = self.payload_bounds();
        if length > max as u64 {
            return Err(StreamError::RecordTooLarge {
                at,
                length,
                limit: max as u64,
            });
        }
        if length < min as u64 {
            return Err(StreamError::RecordTooShort {
                at,
                length,
                min: min as u64,
            });
        }
        Ok(())
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Namespace data: write `data` at byte `offset` of namespace `nsid`.
    UserData {
        /// The namespace.
        nsid: u32,
        /// Byte offset, a multiple of the namespace's block size.
        offset: u64,
        /// The data, a non-zero multiple of the block size, at most 1 MiB.
        data: Vec<u8>,
    },
    /// The byte range `offset .. offset + length` of namespace `nsid` reads as zeros.
    Deallocate {
        /// The namespace.
        nsid: u32,
        /// Byte offset, block aligned.
        offset: u64,
        /// Byte length, a non-zero multiple of the block size.
        length: u64,
    },
    /// The TP4159 controller state, opaque to the stream.
    ControllerState(Vec<u8>),
    /// The PCI face of the migrated function.
    PciFace(PciFaceState),
    /// The end of the stream, with the totals the source counted.
    End {
        /// Records before this one.
        records: u64,
        /// Sum of the data lengths of all `UserData` records.
        user_data_bytes: u64,
    },
}

impl Record {
    /// The record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::UserData { .. } => RecordType::UserData,
            Self::Deallocate { .. } => RecordType::Deallocate,
            Self::ControllerState(_) => RecordType::ControllerState,
            Self::PciFace(_) => RecordType::PciFace,
            Self::End { .. } => RecordType::End,
        }
    }
}

/// A record whose byte payloads are borrowed: from the decoder's buffer, or from the encoder's
/// caller (so the source never copies a chunk of namespace data just to frame it).
#[derive(Clone, Copy, Debug)]
pub(super) enum RecordView<'a> {
    UserData {
        nsid: u32,
        offset: u64,
        data: &'a [u8],
    },
    Deallocate {
        nsid: u32,
        offset: u64,
        length: u64,
    },
    ControllerState(&'a [u8]),
    PciFace(PciFaceView<'a>),
    End {
        records: u64,
        user_data_bytes: u64,
    },
}

impl<'a> RecordView<'a> {
    /// The record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::UserData { .. } => RecordType::UserData,
            Self::Deallocate { .. } => RecordType::Deallocate,
            Self::ControllerState(_) => RecordType::ControllerState,
            Self::PciFace(_) => RecordType::PciFace,
            Self::End { .. } => RecordType::End,
        }
    }

    /// The payload length in bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::UserData { data, .. } => size_of::<UserDataPrefix>() + data.len(),
            Self::Deallocate { .. } => size_of::<DeallocatePayload>(),
            Self::ControllerState(bytes) => bytes.len(),
            Self::PciFace(view) => view.payload().len(),
            Self::End { .. } => size_of::<EndPayload>(),
        }
    }

    /// Parses a payload whose length has passed [`RecordType::check_length`].
    pub fn parse(at: RecordAt, payload: &'a [u8]) -> Result<Self, StreamError> {
        let short = || StreamError::RecordTooShort {
            at,
            length: payload.len() as u64,
            min: at.record_type.payload_bounds().0 as u64,
        };
        Ok(match at.record_type {
            RecordType::UserData => {
                let (prefix, data) =
                    UserDataPrefix::read_from_prefix(payload).map_err(|_| short())?;
                Self::UserData {
                    nsid: prefix.nsid,
                    offset: prefix.offset,
                    data,
                }
            }
            RecordType::Deallocate => {
                let p = DeallocatePayload::read_from_bytes(payload).map_err(|_| short())?;
                Self::Deallocate {
                    nsid: p.nsid,
                    offset: p.offset,
                    length: p.length,
                }
            }
            RecordType::ControllerState => Self::ControllerState(payload),
            RecordType::PciFace => Self::PciFace(
                PciFaceView::parse(payload).map_err(|error| StreamError::PciFace { at, error })?,
            ),
            RecordType::End => {
                let p = EndPayload::read_from_bytes(payload).map_err(|_| short())?;
                Self::End {
                    records: p.records,
                    user_data_bytes: p.user_data_bytes,
                }
            }
        })
    }

    /// Appends the framed record to `out`. The caller has checked the payload length.
    pub fn write(&self, out: &mut Vec<u8>) {
        let record_type = self.record_type();
        match *self {
            Self::UserData { nsid, offset, data } => {
                let prefix = UserDataPrefix { nsid, offset };
                write_record(out, record_type, &[prefix.as_bytes(), data]);
            }
            Self::Deallocate {
                nsid,
                offset,
                length,
            } => {
                let p = DeallocatePayload {
                    nsid,
                    offset,
                    length,
                };
                write_record(out, record_type, &[p.as_bytes()]);
            }
            Self::ControllerState(bytes) => write_record(out, record_type, &[bytes]),
            Self::PciFace(view) => write_record(out, record_type, &[view.payload()]),
            Self::End {
                records,
                user_data_bytes,
            } => {
                let p = EndPayload {
                    records,
                    user_data_bytes,
                };
                write_record(out, record_type, &[p.as_bytes()]);
            }
        }
    }

    /// An owned copy.
    pub fn to_record(self) -> Record {
        match self {
            Self::UserData { nsid, offset, data } => Record::UserData {
                nsid,
                offset,
                data: data.to_vec(),
            },
            Self::Deallocate {
                nsid,
                offset,
                length,
            } => Record::Deallocate {
                nsid,
                offset,
                length,
            },
            Self::ControllerState(bytes) => Record::ControllerState(bytes.to_vec()),
            Self::PciFace(view) => Record::PciFace(view.to_state()),
            Self::End {
                records,
                user_data_bytes,
            } => Record::End {
                records,
                user_data_bytes,
            },
        }
    }
}
