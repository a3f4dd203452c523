//! `DEVICE_FEATURE` requests: probe/get/set, typed migration helpers and DMA logging (the
//! migration data stream itself is `mig_data.rs`'s).

use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfio_migration::MigrationFlags;

use super::Client;
use super::ClientError;
use crate::command::Command;
use crate::feature::DeviceFeature;
use crate::feature::DmaLoggingRange;
use crate::feature::DmaLoggingReport;
use crate::feature::DmaLoggingReportRequest;
use crate::feature::DmaLoggingStart;
use crate::feature::Feature;
use crate::feature::FeatureData;
use crate::feature::FeatureFlags;
use crate::feature::FeatureMigration;
use crate::feature::MigDataSize;
use crate::feature::MigDeviceState;

const C: Command = Command::DEVICE_FEATURE;

impl Client {
    /// Sends one DEVICE_FEATURE request as given and returns the reply, which must be for the
    /// same feature.
    pub fn feature(&mut self, request: &DeviceFeature) -> Result<DeviceFeature, ClientError> {
        let (reply, _) = self.call::<DeviceFeature>(request, &[])?;
        if reply.flags.index() != request.flags.index() {
            return Err(ClientError::UnexpectedReply {
                command: C,
                reason: format!(
                    "asked about feature {}, the reply is for feature {}",
                    request.flags.index(),
                    reply.flags.index()
                ),
            });
        }
        Ok(reply)
    }

    /// Whether the device supports `feature` with the GET and/or SET methods asked for
    /// (PROBE). An error reply of ENOTTY, ENOTSUP or EINVAL (the kernel's answers for an unknown
    /// feature or method) means "no"; other failures are errors.
    pub fn feature_probe(
        &mut self,
        feature: Feature,
        get: bool,
        set: bool,
    ) -> Result<bool, ClientError> {
        match self.feature(&DeviceFeature::probe(feature, get, set)) {
            Ok(_) => Ok(true),
            Err(ClientError::Errno {
                errno: Errno::ENOTTY | Errno::ENOTSUP | Errno::EINVAL,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// GETs feature `T` (whose data is `data_len` bytes) and decodes its data.
    pub fn feature_get<T: FeatureData>(&mut self, data_len: usize) -> Result<T, ClientError> {
        let reply = self.feature(&DeviceFeature::get(T::FEATURE, data_len))?;
        reply
            .data_as::<T>(&self.limits)
            .map_err(|source| ClientError::BadReply { command: C, source })
    }

    /// SETs feature `T` to `data`.
    pub fn feature_set<T: FeatureData>(&mut self, data: &T) -> Result<(), ClientError> {
        self.feature(&DeviceFeature::set(data))?;
        Ok(())
    }

    /// The device's migration capabilities (feature MIGRATION).
    pub fn migration_flags(&mut self) -> Result<MigrationFlags, ClientError> {
        let data = self.feature_get::<FeatureMigration>(size_of::<FeatureMigration>())?;
        Ok(MigrationFlags::from_bits_retain(data.flags))
    }

    /// The device's migration state (feature MIG_DEVICE_STATE, GET).
    pub fn migration_state(&mut self) -> Result<DeviceState, ClientError> {
        let data = self.feature_get::<MigDeviceState>(size_of::<MigDeviceState>())?;
        data.state().map_err(|err| ClientError::UnexpectedReply {
            command: C,
            reason: err.to_string(),
        })
    }

    /// Moves the device to migration state `state` (feature MIG_DEVICE_STATE, SET). The server
    /// completes the whole transition before replying.
    pub fn set_migration_state(&mut self, state: DeviceState) -> Result<(), ClientError> {
        self.feature_set(&MigDeviceState::new(state))
    }

    /// The device's estimate of the STOP_COPY data size (feature MIG_DATA_SIZE, a kernel
    /// feature this project's servers offer as a vfio-user extension).
    pub fn mig_data_size(&mut self) -> Result<u64, ClientError> {
        let data = self.feature_get::<MigDataSize>(size_of::<MigDataSize>())?;
        Ok(data.stop_copy_length)
    }

    /// Starts logging device writes to guest memory at `page_size` granularity for the
    /// `(iova, length)` ranges (DMA_LOGGING_START; an empty list logs every write).
    pub fn dma_logging_start(
        &mut self,
        page_size: u64,
        ranges: &[(u64, u64)],
    ) -> Result<(), ClientError> {
        let ranges = ranges
            .iter()
            .map(|&(iova, length)| DmaLoggingRange { iova, length })
            .collect();
        self.feature_set(&DmaLoggingStart { page_size, ranges })
    }

    /// Stops DMA logging (DMA_LOGGING_STOP).
    pub fn dma_logging_stop(&mut self) -> Result<(), ClientError> {
        let request = DeviceFeature {
            argsz: size_of::<crate::feature::VfioDeviceFeature>() as u32,
            flags: FeatureFlags::new()
                .with_index(Feature::DMA_LOGGING_STOP.0)
                .with_set(true),
            data: Vec::new(),
        };
        self.feature(&request)?;
        Ok(())
    }

    /// The dirty bitmap of `[iova, iova + length)` at `page_size` granularity
    /// (DMA_LOGGING_REPORT): bit `i % 64` of word `i / 64` is page `i`. The server clears what
    /// it reports. `page_size` must be a power of two of at least 4096, and the bitmap must fit
    /// the client's `max_bitmap_size`; otherwise nothing is sent.
    pub fn dma_logging_report(
        &mut self,
        iova: u64,
        length: u64,
        page_size: u64,
    ) -> Result<Vec<u64>, ClientError> {
        let request = DmaLoggingReportRequest {
            iova,
            length,
            page_size,
        };
        let words = request
            .bitmap_words()
            .map_err(|e| ClientError::InvalidArgument {
                command: C,
                reason: e.to_string(),
            })?;
        if iova.checked_add(length).is_none() {
            return Err(ClientError::InvalidArgument {
                command: C,
                reason: format!("report range {iova:#x} (+{length:#x}) overflows"),
            });
        }
        Self::check_limit(
            C,
            "report bitmap bytes",
            words.saturating_mul(8),
            self.options.max_bitmap_size,
        )?;
        let reply = self.feature(&DeviceFeature::get_report(&request))?;
        let report = reply
            .data_as::<DmaLoggingReport>(&self.limits)
            .map_err(|source| ClientError::BadReply { command: C, source })?;
        if report.request != request {
            return Err(ClientError::UnexpectedReply {
                command: C,
                reason: format!(
                    "asked for {request:?}, the report is for {:?}",
                    report.request
                ),
            });
        }
        Ok(report.bitmap)
    }
}
