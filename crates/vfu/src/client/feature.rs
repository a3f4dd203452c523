//! `DEVICE_FEATURE` requests and the migration data stream: probe/get/set, typed migration
//! helpers, `MIG_DATA_READ`/`MIG_DATA_WRITE` in negotiated chunks, and DMA logging.

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
use crate::migration::MigDataHead;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWrite;
use crate::migration::MigDataWriteReply;

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

    /// Reads up to `max` bytes of the migration stream with MIG_DATA_READ requests of at most
    /// [`Client::max_data_xfer_size`] bytes each, stopping at the first short reply. Fewer than
    /// `max` bytes returned means the stream has no more data: the end of the stream in
    /// STOP_COPY, "nothing for now" in PRE_COPY.
    pub fn mig_data_read(&mut self, max: usize) -> Result<Vec<u8>, ClientError> {
        let chunk = self.max_data_xfer_size() as usize;
        let mut out = Vec::new();
        while out.len() < max {
            let want = chunk.min(max - out.len());
            // `want` is at most the u32 transfer size.
            let want_u32 = u32::try_from(want).unwrap_or(u32::MAX);
            let (reply, _) = self.call::<MigDataReadReply>(&MigDataHead::read(want_u32), &[])?;
            if reply.data.len() > want {
                return Err(ClientError::UnexpectedReply {
                    command: Command::MIG_DATA_READ,
                    reason: format!("asked for {want} bytes, got {}", reply.data.len()),
                });
            }
            let short = reply.is_short(want_u32);
            out.extend_from_slice(&reply.data);
            if short {
                break;
            }
        }
        Ok(out)
    }

    /// Appends `data` to the resuming device's migration stream with MIG_DATA_WRITE requests of
    /// at most [`Client::max_data_xfer_size`] bytes each (an empty `data` sends nothing).
    pub fn mig_data_write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let chunk = self.max_data_xfer_size() as usize;
        for part in data.chunks(chunk) {
            self.call::<MigDataWriteReply>(&MigDataWrite::new(part.to_vec()), &[])?;
        }
        Ok(())
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
