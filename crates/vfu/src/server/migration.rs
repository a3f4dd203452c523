//! Migration and DMA logging: `DEVICE_FEATURE` mapped onto the device's migration and
//! dma-logging methods, and the `MIG_DATA_READ` / `MIG_DATA_WRITE` data stream.
//!
//! As the kernel does, a migration feature on a device that cannot migrate answers ENOTTY, and
//! so does a logging feature on a device without DMA logging. The device owns the state machine
//! (which arcs are valid); the server only checks that data moves in a state that has a data
//! stream: reads in PRE_COPY / PRE_COPY_P2P / STOP_COPY, writes in RESUMING (EINVAL otherwise,
//! as libvfio-user answers).

use crate::error::errno;
use crate::feature::DeviceFeature;
use crate::feature::DmaLoggingReport;
use crate::feature::Feature;
use crate::feature::FeatureMigration;
use crate::feature::FeatureRequest;
use crate::feature::MigDataSize;
use crate::feature::MigDeviceState;
use crate::framing::encode_reply;
use crate::header::Header;
use crate::migration::MigDataHead;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWrite;
use crate::migration::MigDataWriteReply;

use super::device::Errno;
use super::session::Handled;
use super::session::Session;
use super::transport::Outgoing;

/// Kernel `VFIO_DEVICE_STATE_STOP_COPY`.
const STATE_STOP_COPY: u32 = 3;
/// Kernel `VFIO_DEVICE_STATE_RESUMING`.
const STATE_RESUMING: u32 = 4;
/// Kernel `VFIO_DEVICE_STATE_PRE_COPY`.
const STATE_PRE_COPY: u32 = 6;
/// Kernel `VFIO_DEVICE_STATE_PRE_COPY_P2P`.
const STATE_PRE_COPY_P2P: u32 = 7;

/// `data_fd` of a MIG_DEVICE_STATE reply: vfio-user has no data fd.
const NO_DATA_FD: i32 = -1;

impl Session<'_> {
    /// `DEVICE_FEATURE`: parse with the kernel's checks, then GET, SET or PROBE.
    pub(super) fn device_feature(&self, header: &Header, request: &DeviceFeature) -> Handled {
        let parsed = request.parse_request(&self.limits).map_err(|err| {
            tracing::warn!("DEVICE_FEATURE rejected: {err}");
            err.errno()
        })?;
        let device = self.device;
        let reply = match parsed {
            FeatureRequest::Probe { feature, .. } => {
                self.check_supported(feature)?;
                request.clone()
            }
            FeatureRequest::GetMigration => {
                let flags = self.migration_flags()?;
                DeviceFeature::get_reply(request, &FeatureMigration { flags })
            }
            FeatureRequest::GetMigDeviceState => {
                self.migration_flags()?;
                let state = MigDeviceState {
                    device_state: device.migration_state()?,
                    data_fd: NO_DATA_FD,
                };
                DeviceFeature::get_reply(request, &state)
            }
            FeatureRequest::SetMigDeviceState(state) => {
                self.migration_flags()?;
                device.set_migration_state(state.device_state)?;
                request.clone()
            }
            FeatureRequest::GetMigDataSize => {
                self.migration_flags()?;
                let size = MigDataSize {
                    stop_copy_length: device.migration_data_size()?,
                };
                DeviceFeature::get_reply(request, &size)
            }
            FeatureRequest::DmaLoggingStart(start) => {
                self.check_supported(Feature::DMA_LOGGING_START)?;
                let ranges: Vec<(u64, u64)> =
                    start.ranges.iter().map(|r| (r.iova, r.length)).collect();
                device.dma_logging_start(start.page_size, &ranges)?;
                request.clone()
            }
            FeatureRequest::DmaLoggingStop => {
                self.check_supported(Feature::DMA_LOGGING_STOP)?;
                device.dma_logging_stop()?;
                request.clone()
            }
            FeatureRequest::DmaLoggingReport(range) => {
                self.check_supported(Feature::DMA_LOGGING_REPORT)?;
                let mut report =
                    DmaLoggingReport::new(range, &self.limits).map_err(|err| err.errno())?;
                device.dma_logging_report(
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

    /// The device's migration flags, or ENOTTY if it cannot migrate.
    fn migration_flags(&self) -> Result<u64, Errno> {
        self.device.migration_flags().ok_or(errno::ENOTTY)
    }

    /// ENOTTY unless the device supports `feature`. `MIG_DATA_SIZE` is an optional extension: it
    /// is supported if the device answers it.
    fn check_supported(&self, feature: Feature) -> Result<(), Errno> {
        let supported = match feature {
            Feature::MIGRATION | Feature::MIG_DEVICE_STATE => {
                self.device.migration_flags().is_some()
            }
            Feature::MIG_DATA_SIZE => {
                self.device.migration_flags().is_some() && self.device.migration_data_size().is_ok()
            }
            Feature::DMA_LOGGING_START
            | Feature::DMA_LOGGING_STOP
            | Feature::DMA_LOGGING_REPORT => self.device.dma_logging_supported(),
            _ => false,
        };
        if supported {
            Ok(())
        } else {
            Err(errno::ENOTTY)
        }
    }

    /// `MIG_DATA_READ`: up to `size` bytes of the saving stream; a shorter reply means "no more
    /// data now" (the end of the stream in STOP_COPY).
    pub(super) fn mig_data_read(&self, header: &Header, read: &MigDataHead) -> Handled {
        let state = self.data_state()?;
        if !matches!(state, STATE_PRE_COPY | STATE_PRE_COPY_P2P | STATE_STOP_COPY) {
            tracing::warn!(state, "MIG_DATA_READ outside a saving state");
            return Err(errno::EINVAL);
        }
        let mut data = vec![0; read.size as usize];
        let len = self.device.migration_read(&mut data)?;
        if len > data.len() {
            tracing::error!(
                len,
                asked = data.len(),
                "device returned more migration data than asked"
            );
            return Err(errno::EIO);
        }
        data.truncate(len);
        Ok(Outgoing::new(encode_reply(
            header,
            &MigDataReadReply { data },
        )))
    }

    /// `MIG_DATA_WRITE`: appends to the resuming stream (RESUMING only).
    pub(super) fn mig_data_write(&self, header: &Header, write: &MigDataWrite) -> Handled {
        let state = self.data_state()?;
        if state != STATE_RESUMING {
            tracing::warn!(state, "MIG_DATA_WRITE outside RESUMING");
            return Err(errno::EINVAL);
        }
        self.device.migration_write(&write.data)?;
        Ok(Outgoing::new(encode_reply(header, &MigDataWriteReply)))
    }

    /// The migration state, for a data request (ENOTTY if the device cannot migrate).
    fn data_state(&self) -> Result<u32, Errno> {
        self.migration_flags()?;
        self.device.migration_state()
    }
}
