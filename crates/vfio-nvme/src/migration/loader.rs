//! The resuming side of the stream: records are checked (CRC, bounds, compatibility) and applied
//! as they arrive, and the controller state and the function's PCI face are kept for
//! RESUMING → STOP.
//!
//! The header is checked against this device before any record is applied, so a stream from an
//! incompatible device changes nothing. A stream that goes bad later (a corrupted or truncated
//! record) is refused at that record; namespace data of earlier records has then been written,
//! but the controller is never given a state, stays stopped, and the VMM resumes the source —
//! the destination's namespaces were not in use by anyone.

use std::sync::Arc;
use std::sync::Mutex;

use vfio_migration::ResumeSink;

use super::driver::Core;
use super::error::MigrationError;
use super::error::Refusal;
use super::user_data::UserData;
use crate::stream::DeviceGeometry;
use crate::stream::Item;
use crate::stream::ItemRef;
use crate::stream::PciFaceState;
use crate::stream::PushError;
use crate::stream::Record;
use crate::stream::StreamDecoder;
use crate::stream::StreamHeader;
use crate::stream::check_compatible;

/// The destination's progress through an incoming stream.
#[derive(Debug)]
pub(crate) struct Loader {
    decoder: StreamDecoder,
    geometry: DeviceGeometry,
    state: Option<Vec<u8>>,
    pci_face: Option<PciFaceState>,
    /// The first problem, kept so later writes and RESUMING → STOP report it.
    refusal: Option<Refusal>,
}

impl Loader {
    /// Expects a stream for a device like `identity`.
    pub fn new(identity: &StreamHeader, _user: &dyn UserData) -> Self {
        Self {
            decoder: StreamDecoder::new(),
            geometry: identity.geometry.clone(),
            state: None,
            pci_face: None,
            refusal: None,
        }
    }

    /// Upper bound of the stream length: sixteen copies of every local namespace (pre-copy may
    /// send changed data again) plus 1 GiB for headers and the controller state.
    pub fn max_stream_bytes(&self) -> u64 {
        let data: u64 = self
            .geometry
            .namespaces
            .iter()
            .filter(|ns| !ns.shared)
            .map(|ns| ns.bytes())
            .sum();
        data.saturating_mul(16).saturating_add(1 << 30)
    }

    /// Keeps the first refusal and returns it as the error.
    fn refuse(&mut self, refusal: Refusal) -> MigrationError {
        self.refusal.get_or_insert(refusal).clone().into()
    }

    /// Takes the next bytes of the stream and applies every complete record as it is decoded:
    /// user data goes from `data` (or, for a record the segmentation cut, from the decoder's
    /// buffer) straight into the namespace.
    pub fn accept(&mut self, data: &[u8], user: &dyn UserData) -> Result<(), MigrationError> {
        if let Some(refusal) = &self.refusal {
            return Err(refusal.clone().into());
        }
        let Self {
            decoder,
            geometry,
            state,
            pci_face,
            ..
        } = self;
        let pushed = decoder.push_with(data, |item| match item {
            ItemRef::UserData { nsid, offset, data } => {
                user.write(nsid, offset, data).map_err(|e| Refusal::Write {
                    nsid,
                    source: Arc::new(e),
                })
            }
            ItemRef::Owned(Item::Header(header)) => {
                check_compatible(&header, geometry).map_err(Refusal::Incompatible)
            }
            ItemRef::Owned(Item::Record(Record::UserData { nsid, offset, data })) => {
                user.write(nsid, offset, &data).map_err(|e| Refusal::Write {
                    nsid,
                    source: Arc::new(e),
                })
            }
            ItemRef::Owned(Item::Record(Record::Deallocate {
                nsid,
                offset,
                length,
            })) => user
                .deallocate(nsid, offset, length)
                .map_err(|e| Refusal::Deallocate {
                    nsid,
                    source: Arc::new(e),
                }),
            ItemRef::Owned(Item::Record(Record::ControllerState(bytes))) => {
                *state = Some(bytes);
                Ok(())
            }
            ItemRef::Owned(Item::Record(Record::PciFace(face))) => {
                *pci_face = Some(face);
                Ok(())
            }
            ItemRef::Owned(Item::Record(Record::End { .. })) => Ok(()),
        });
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Stream(e)) => Err(self.refuse(Refusal::Stream(e))),
            Err(PushError::Apply(refusal)) => Err(self.refuse(refusal)),
        }
    }

    /// The stream is complete: returns the controller state to set and the PCI face the
    /// function takes (a stream from a source without one carries none).
    pub fn finish(self) -> Result<(Vec<u8>, Option<PciFaceState>), MigrationError> {
        if let Some(refusal) = self.refusal {
            return Err(refusal.into());
        }
        self.decoder.finish().map_err(Refusal::Stream)?;
        let state = self.state.ok_or(Refusal::NoControllerState)?;
        Ok((state, self.pci_face))
    }
}

/// The resuming session's sink: writes go to the shared driver state.
pub(crate) struct Sink(pub Arc<Mutex<Core>>);

impl ResumeSink for Sink {
    fn write(&mut self, data: &[u8]) -> Result<(), vfio_migration::StreamError> {
        let mut core = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Core { loader, user, .. } = &mut *core;
        let loader = loader.as_mut().ok_or(MigrationError::NoSession)?;
        loader.accept(data, user.as_ref()).map_err(Into::into)
    }
}
