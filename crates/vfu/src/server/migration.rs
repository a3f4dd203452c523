//! Migration and DMA logging: `DEVICE_FEATURE` mapped onto the device's [`Migratable`] handle,
//! and the `MIG_DATA_READ` / `MIG_DATA_WRITE` data stream.
//!
//! As the kernel does, every migration and logging feature of a device without a handle answers
//! ENOTTY. The handle owns the state machine (which arcs are valid); the server checks that data
//! moves in a state that has a data stream: reads in PRE_COPY / PRE_COPY_P2P / STOP_COPY, writes
//! in RESUMING (EINVAL otherwise, as libvfio-user answers).

use vfio_migration::DeviceState;
use vfio_migration::DmaLogRange;
use vfio_migration::Errno;

use crate::feature::DeviceFeature;
use crate::feature::DmaLoggingReport;
use crate::feature::Feature;
use crate::feature::FeatureMigration;
use crate::feature::FeatureRequest;
use crate::feature::MigDataSize;
use crate::feature::MigDeviceState;
use crate::framing::encode_reply;
use crate::header::Header;
use crate::migration::DATA_PREFIX_BYTES;
use crate::migration::MigDataHead;
use crate::migration::MigDataWriteReply;
use crate::migration::read_reply_prefix;

use super::migratable::Migratable;
use super::session::Handled;
use super::session::Session;
use super::transport::Outgoing;

impl Session<'_> {
    /// `DEVICE_FEATURE`: parse with the kernel's checks, then GET, SET or PROBE.
    pub(super) fn device_feature(&self, header: &Header, request: &DeviceFeature) -> Handled {
        let parsed = request.parse_request(&self.limits).map_err(|err| {
            tracing::warn!("DEVICE_FEATURE rejected: {err}");
            err.errno()
        })?;
        let reply = match parsed {
            FeatureRequest::Probe { feature, .. } => {
                self.check_supported(feature)?;
                request.clone()
            }
            FeatureRequest::GetMigration => {
                let flags = self.migration()?.flags().bits();
                DeviceFeature::get_reply(request, &FeatureMigration { flags })
            }
            FeatureRequest::GetMigDeviceState => {
                let state = MigDeviceState::new(self.migration()?.state());
                DeviceFeature::get_reply(request, &state)
            }
            FeatureRequest::SetMigDeviceState(state) => {
                self.migration()?.set_state(state)?;
                request.clone()
            }
            FeatureRequest::GetMigDataSize => {
                let size = MigDataSize {
                    stop_copy_length: self.migration()?.stop_copy_length()?,
                };
                DeviceFeature::get_reply(request, &size)
            }
            FeatureRequest::DmaLoggingStart(start) => {
                let ranges: Vec<DmaLogRange> = start
                    .ranges
                    .iter()
                    .map(|r| DmaLogRange::new(r.iova, r.length))
                    .collect();
                self.migration()?
                    .dma_logging_start(start.page_size, &ranges)?;
                request.clone()
            }
            FeatureRequest::DmaLoggingStop => {
                self.migration()?.dma_logging_stop()?;
                request.clone()
            }
            FeatureRequest::DmaLoggingReport(range) => {
                let migration = self.migration()?;
                let mut report =
                    DmaLoggingReport::new(range, &self.limits).map_err(|err| err.errno())?;
                migration.dma_logging_report(
                    range.iova,
                    range.length,
                    range.page_size,
                    &mut report.bitmap,
                )?;
                DeviceFeature::get_reply(request, &report)
            }
        };
        Ok(Outgoing::new(encode_reply(header, &reply)))
    }

    /// The device's migration handle, or ENOTTY if it cannot migrate.
    fn migration(&self) -> Result<&dyn Migratable, Errno> {
        self.device.migration().ok_or(Errno::ENOTTY)
    }

    /// ENOTTY unless the device supports `feature`. `MIG_DATA_SIZE` is an optional extension: it
    /// is supported if the device answers it.
    fn check_supported(&self, feature: Feature) -> Result<(), Errno> {
        let migration = self.migration()?;
        let supported = match feature {
            Feature::MIGRATION
            | Feature::MIG_DEVICE_STATE
            | Feature::DMA_LOGGING_START
            | Feature::DMA_LOGGING_STOP
            | Feature::DMA_LOGGING_REPORT => true,
            Feature::MIG_DATA_SIZE => migration.stop_copy_length().is_ok(),
            _ => false,
        };
        if supported {
            Ok(())
        } else {
            Err(Errno::ENOTTY)
        }
    }

    /// `MIG_DATA_READ`: up to `size` bytes of the saving stream; a shorter reply means "no more
    /// data now" (the end of the stream in STOP_COPY). The device reads straight into the
    /// reply message, in the buffer of the previous reply.
    pub(super) fn mig_data_read(&mut self, header: &Header, read: &MigDataHead) -> Handled {
        let device = self.device;
        let migration = device.migration().ok_or(Errno::ENOTTY)?;
        let state = migration.state();
        if !state.is_saving() {
            tracing::warn!(%state, "MIG_DATA_READ outside a saving state");
            return Err(Errno::EINVAL);
        }
        let mut bytes = std::mem::take(&mut self.spare_reply);
        // Only bytes beyond the previous reply's length are zeroed: replies are mostly full.
        bytes.resize(DATA_PREFIX_BYTES + read.size as usize, 0);
        let len = match migration.read(&mut bytes[DATA_PREFIX_BYTES..]) {
            Ok(len) => len,
            Err(errno) => {
                self.spare_reply = bytes;
                return Err(errno);
            }
        };
        if len > read.size as usize {
            tracing::error!(
                len,
                asked = read.size,
                "device returned more migration data than asked"
            );
            self.spare_reply = bytes;
            return Err(Errno::EIO);
        }
        bytes.truncate(DATA_PREFIX_BYTES + len);
        bytes[..DATA_PREFIX_BYTES].copy_from_slice(&read_reply_prefix(header, len));
        Ok(Outgoing::new(bytes))
    }

    /// `MIG_DATA_WRITE`: appends `data` to the resuming stream (RESUMING only).
    pub(super) fn mig_data_write(&self, header: &Header, data: &[u8]) -> Handled {
        let migration = self.migration()?;
        let state = migration.state();
        if state != DeviceState::Resuming {
            tracing::warn!(%state, "MIG_DATA_WRITE outside RESUMING");
            return Err(Errno::EINVAL);
        }
        migration.write(data)?;
        Ok(Outgoing::new(encode_reply(header, &MigDataWriteReply)))
    }
}
