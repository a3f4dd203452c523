//! `DEVICE_FEATURE` (command 16): get, set or probe a device feature, and the payloads of the
//! migration and DMA-logging features.
//!
//! The body is the kernel's `struct vfio_device_feature`: `argsz u32, flags u32, data[]`, with the
//! feature index in flags bits 0–15 and GET (bit 16), SET (bit 17), PROBE (bit 18). Feature
//! numbers mirror the kernel's. The wire structures keep the kernel's plain integers; what the
//! server acts on ([`FeatureRequest`]) carries `vfio-migration`'s typed [`DeviceState`], and the
//! migration flags are its [`vfio_migration::MigrationFlags`].

use bitfield_struct::bitfield;
use open_enum::open_enum;
use vfio_migration::DeviceState;
use vfio_migration::UnknownStateError;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire;

const C: Command = Command::DEVICE_FEATURE;

/// Feature indices (kernel `VFIO_DEVICE_FEATURE_*`). vfio-user defines 1, 2, 6, 7 and 8;
/// `MIG_DATA_SIZE` (9) is a kernel feature with no vfio-user definition, allowed here as a
/// vendor extension.
#[open_enum]
#[derive(Clone, Copy, Debug, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(u16)]
pub enum Feature {
    /// GET: migration capability flags ([`FeatureMigration`]).
    MIGRATION = 1,
    /// GET/SET: migration FSM state ([`MigDeviceState`]).
    MIG_DEVICE_STATE = 2,
    /// SET: start dirty logging of DMA writes ([`DmaLoggingStart`]).
    DMA_LOGGING_START = 6,
    /// SET: stop dirty logging (no data).
    DMA_LOGGING_STOP = 7,
    /// GET: dirty bitmap of a range ([`DmaLoggingReportRequest`] in, [`DmaLoggingReport`] out).
    DMA_LOGGING_REPORT = 8,
    /// GET: bytes left to transfer in STOP_COPY ([`MigDataSize`]); kernel feature, vendor
    /// extension in vfio-user.
    MIG_DATA_SIZE = 9,
}

impl Feature {
    /// (GET supported, SET supported) for the features this codec knows, `None` otherwise.
    fn methods(self) -> Option<(bool, bool)> {
        match self {
            Self::MIGRATION | Self::DMA_LOGGING_REPORT | Self::MIG_DATA_SIZE => Some((true, false)),
            Self::MIG_DEVICE_STATE => Some((true, true)),
            Self::DMA_LOGGING_START | Self::DMA_LOGGING_STOP => Some((false, true)),
            _ => None,
        }
    }
}

/// The `flags` word: feature index, GET, SET, PROBE.
#[bitfield(u32)]
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, PartialEq, Eq)]
pub struct FeatureFlags {
    /// Feature index (`VFIO_DEVICE_FEATURE_MASK`).
    pub index: u16,
    /// Get the feature's data.
    pub get: bool,
    /// Set the feature's data.
    pub set: bool,
    /// Only check support of the feature and the GET/SET methods given.
    pub probe: bool,
    #[bits(13)]
    reserved: u16,
}

impl FeatureFlags {
    /// The feature index as a [`Feature`].
    pub fn feature(&self) -> Feature {
        Feature(self.index())
    }
}

/// The fixed head of the body (8 bytes): argsz 0, flags 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct VfioDeviceFeature {
    /// Request: largest reply payload accepted. Reply: head plus data.
    pub argsz: u32,
    /// Feature index and methods.
    pub flags: FeatureFlags,
}

const _: () = assert!(size_of::<VfioDeviceFeature>() == 8);

const HEAD: usize = size_of::<VfioDeviceFeature>();

/// A feature's data structure, carried after the 8-byte head.
pub trait FeatureData: Sized {
    /// The feature it belongs to.
    const FEATURE: Feature;
    /// Appends the data bytes.
    fn encode_data(&self, out: &mut Vec<u8>);
    /// Parses the data bytes (the whole data area).
    fn decode_data(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError>;
}

/// A `DEVICE_FEATURE` request or reply: the head and the raw data. Use the constructors to build
/// requests and replies, [`DeviceFeature::parse_request`] on the server and
/// [`DeviceFeature::data_as`] on the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFeature {
    /// See [`VfioDeviceFeature::argsz`].
    pub argsz: u32,
    /// Feature index and methods.
    pub flags: FeatureFlags,
    /// Feature data.
    pub data: Vec<u8>,
}

impl DeviceFeature {
    /// A GET request for `feature` accepting `reply_data_len` bytes of reply data.
    pub fn get(feature: Feature, reply_data_len: usize) -> Self {
        let flags = FeatureFlags::new().with_index(feature.0).with_get(true);
        Self {
            argsz: wire::len_u32(HEAD + reply_data_len),
            flags,
            data: Vec::new(),
        }
    }

    /// A DMA-logging report request: GET with the range as request data and room for the bitmap.
    pub fn get_report(request: &DmaLoggingReportRequest) -> Self {
        let flags = FeatureFlags::new()
            .with_index(Feature::DMA_LOGGING_REPORT.0)
            .with_get(true);
        let words = request.bitmap_words().unwrap_or(0);
        let reply_len = size_of::<DmaLoggingReportRequest>() as u64 + words * 8;
        let argsz = u32::try_from(HEAD as u64 + reply_len).unwrap_or(u32::MAX);
        Self {
            argsz,
            flags,
            data: request.as_bytes().to_vec(),
        }
    }

    /// A SET request carrying `data` (the reply echoes it).
    pub fn set<T: FeatureData>(data: &T) -> Self {
        let flags = FeatureFlags::new().with_index(T::FEATURE.0).with_set(true);
        let mut bytes = Vec::new();
        data.encode_data(&mut bytes);
        Self {
            argsz: wire::len_u32(HEAD + bytes.len()),
            flags,
            data: bytes,
        }
    }

    /// A PROBE request for `feature` and the methods to check.
    pub fn probe(feature: Feature, get: bool, set: bool) -> Self {
        let flags = FeatureFlags::new()
            .with_index(feature.0)
            .with_probe(true)
            .with_get(get)
            .with_set(set);
        Self {
            argsz: HEAD as u32,
            flags,
            data: Vec::new(),
        }
    }

    /// The reply to a GET `request` carrying `data`: same flags, argsz = head + data.
    pub fn get_reply<T: FeatureData>(request: &DeviceFeature, data: &T) -> Self {
        let mut bytes = Vec::new();
        data.encode_data(&mut bytes);
        Self {
            argsz: wire::len_u32(HEAD + bytes.len()),
            flags: request.flags,
            data: bytes,
        }
    }

    /// The data parsed as `T`, checking that the feature index matches.
    pub fn data_as<T: FeatureData>(&self, limits: &Limits) -> Result<T, DecodeError> {
        if self.flags.feature() != T::FEATURE {
            return Err(DecodeError::invalid(
                C,
                "flags.index",
                self.flags.index().into(),
                "not the expected feature",
            ));
        }
        T::decode_data(&self.data, limits)
    }

    /// Server side: what the request asks for, after the kernel's checks
    /// (`vfio_check_feature()`): a known feature (else ENOTTY), a method the feature supports
    /// (else EINVAL), GET or SET unless it is a PROBE (else EINVAL), and an `argsz` with room for
    /// the reply (else EINVAL). Data of GET requests other than the report is ignored.
    pub fn parse_request(&self, limits: &Limits) -> Result<FeatureRequest, DecodeError> {
        let feature = self.flags.feature();
        let Some((can_get, can_set)) = feature.methods() else {
            return Err(DecodeError::UnsupportedFeature { feature: feature.0 });
        };
        let (get, set) = (self.flags.get(), self.flags.set());
        if (get && !can_get) || (set && !can_set) {
            return Err(DecodeError::invalid(
                C,
                "flags",
                self.flags.into_bits().into(),
                "method not supported by the feature",
            ));
        }
        if self.flags.probe() {
            return Ok(FeatureRequest::Probe { feature, get, set });
        }
        // The kernel's vfio_check_feature(): without PROBE, one of GET or SET must be asked.
        if !get && !set {
            return Err(DecodeError::invalid(
                C,
                "flags",
                self.flags.into_bits().into(),
                "none of GET, SET or PROBE",
            ));
        }
        let needed = match feature {
            Feature::MIGRATION => size_of::<FeatureMigration>() as u64,
            Feature::MIG_DEVICE_STATE => size_of::<MigDeviceState>() as u64,
            Feature::MIG_DATA_SIZE => size_of::<MigDataSize>() as u64,
            _ => 0,
        };
        let request = match (feature, get) {
            (Feature::MIGRATION, _) => FeatureRequest::GetMigration,
            (Feature::MIG_DEVICE_STATE, true) => FeatureRequest::GetMigDeviceState,
            (Feature::MIG_DEVICE_STATE, false) => {
                let data = MigDeviceState::decode_data(&self.data, limits)?;
                FeatureRequest::SetMigDeviceState(data.state().map_err(invalid_state)?)
            }
            (Feature::DMA_LOGGING_START, _) => {
                FeatureRequest::DmaLoggingStart(DmaLoggingStart::decode_data(&self.data, limits)?)
            }
            (Feature::DMA_LOGGING_STOP, _) => FeatureRequest::DmaLoggingStop,
            (Feature::DMA_LOGGING_REPORT, _) => {
                let request = DmaLoggingReportRequest::decode_data(&self.data, limits)?;
                let needed =
                    size_of::<DmaLoggingReportRequest>() as u64 + request.bitmap_words()? * 8;
                self.check_argsz(needed)?;
                FeatureRequest::DmaLoggingReport(request)
            }
            _ => FeatureRequest::GetMigDataSize,
        };
        // A SET reply echoes the request's data; a GET reply carries `needed` bytes.
        self.check_argsz(if set { self.data.len() as u64 } else { needed })?;
        Ok(request)
    }

    fn check_argsz(&self, data_len: u64) -> Result<(), DecodeError> {
        if u64::from(self.argsz) < HEAD as u64 + data_len {
            return Err(DecodeError::invalid(
                C,
                "argsz",
                self.argsz.into(),
                "too small for the reply",
            ));
        }
        Ok(())
    }
}

impl Payload for DeviceFeature {
    const COMMAND: Command = C;

    fn encode(&self, out: &mut Vec<u8>) {
        wire::put(
            out,
            &VfioDeviceFeature {
                argsz: self.argsz,
                flags: self.flags,
            },
        );
        out.extend_from_slice(&self.data);
    }

    /// Decodes a request or reply: no reserved flag bits, and GET with SET only with PROBE.
    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let (head, data) = wire::read::<VfioDeviceFeature>(C, "device_feature", bytes)?;
        let flags = head.flags;
        if flags.reserved() != 0 {
            return Err(DecodeError::invalid(
                C,
                "flags",
                flags.into_bits().into(),
                "reserved bits set",
            ));
        }
        if flags.get() && flags.set() && !flags.probe() {
            return Err(DecodeError::invalid(
                C,
                "flags",
                flags.into_bits().into(),
                "GET with SET needs PROBE",
            ));
        }
        Ok(Self {
            argsz: head.argsz,
            flags,
            data: data.to_vec(),
        })
    }
}

/// A `DEVICE_FEATURE` request as the server has to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeatureRequest {
    /// Report whether `feature` and the flagged methods are supported (reply echoes request).
    Probe {
        /// The feature probed.
        feature: Feature,
        /// GET is probed.
        get: bool,
        /// SET is probed.
        set: bool,
    },
    /// GET [`Feature::MIGRATION`].
    GetMigration,
    /// GET [`Feature::MIG_DEVICE_STATE`].
    GetMigDeviceState,
    /// SET [`Feature::MIG_DEVICE_STATE`] to this state.
    SetMigDeviceState(DeviceState),
    /// SET [`Feature::DMA_LOGGING_START`].
    DmaLoggingStart(DmaLoggingStart),
    /// SET [`Feature::DMA_LOGGING_STOP`].
    DmaLoggingStop,
    /// GET [`Feature::DMA_LOGGING_REPORT`].
    DmaLoggingReport(DmaLoggingReportRequest),
    /// GET [`Feature::MIG_DATA_SIZE`].
    GetMigDataSize,
}

/// [`Feature::MIGRATION`] data (8 bytes): flags at 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct FeatureMigration {
    /// [`vfio_migration::MigrationFlags`] bits.
    pub flags: u64,
}

const _: () = assert!(size_of::<FeatureMigration>() == 8);

wire::fixed_payload!(feature FeatureMigration, Feature::MIGRATION, "migration flags");

/// [`Feature::MIG_DEVICE_STATE`] data (8 bytes): device_state at 0, data_fd at 4. The state uses
/// the kernel's numbers ([`DeviceState::value`]); `data_fd` is unused in vfio-user
/// ([`NO_DATA_FD`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct MigDeviceState {
    /// `enum vfio_device_mig_state` value.
    pub device_state: u32,
    /// Unused in vfio-user.
    pub data_fd: i32,
}

const _: () = assert!(size_of::<MigDeviceState>() == 8);

/// `data_fd` of [`MigDeviceState`] in vfio-user, which carries the data on the socket instead.
pub const NO_DATA_FD: i32 = -1;

impl MigDeviceState {
    /// The data for `state`: a SET request's, or a GET reply's.
    pub const fn new(state: DeviceState) -> Self {
        Self {
            device_state: state.value(),
            data_fd: NO_DATA_FD,
        }
    }

    /// The state; decoded data always holds one of the eight.
    pub fn state(&self) -> Result<DeviceState, UnknownStateError> {
        DeviceState::try_from(self.device_state)
    }
}

/// The decode error of a `device_state` that is not one of the eight states (EINVAL).
fn invalid_state(err: UnknownStateError) -> DecodeError {
    DecodeError::invalid(C, "device_state", err.0.into(), "not a migration state")
}

wire::fixed_payload!(
    feature MigDeviceState,
    Feature::MIG_DEVICE_STATE,
    "mig_device_state",
    |data, _| data.state().map(drop).map_err(invalid_state)
);

/// [`Feature::MIG_DATA_SIZE`] data (8 bytes): stop_copy_length at 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct MigDataSize {
    /// Estimated bytes the STOP_COPY phase will produce.
    pub stop_copy_length: u64,
}

const _: () = assert!(size_of::<MigDataSize>() == 8);

wire::fixed_payload!(feature MigDataSize, Feature::MIG_DATA_SIZE, "mig_data_size");

/// The fixed part of [`Feature::DMA_LOGGING_START`] data (16 bytes): page_size 0, num_ranges 8,
/// reserved 12; `num_ranges` [`DmaLoggingRange`]s follow **inline** (the kernel passes a pointer
/// instead; vfio-user cannot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct DmaLoggingControl {
    /// Requested tracking granularity (the reply carries the one chosen).
    pub page_size: u64,
    /// Number of ranges; 0 means "log all writes" in vfio-user.
    pub num_ranges: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(size_of::<DmaLoggingControl>() == 16);

/// One IOVA range to log (16 bytes): iova 0, length 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct DmaLoggingRange {
    /// Start of the range.
    pub iova: u64,
    /// Length of the range.
    pub length: u64,
}

const _: () = assert!(size_of::<DmaLoggingRange>() == 16);

/// [`Feature::DMA_LOGGING_START`] data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaLoggingStart {
    /// Tracking granularity (power of two).
    pub page_size: u64,
    /// Ranges to log; empty means every write.
    pub ranges: Vec<DmaLoggingRange>,
}

impl FeatureData for DmaLoggingStart {
    const FEATURE: Feature = Feature::DMA_LOGGING_START;

    fn encode_data(&self, out: &mut Vec<u8>) {
        let control = DmaLoggingControl {
            page_size: self.page_size,
            num_ranges: wire::len_u32(self.ranges.len()),
            reserved: 0,
        };
        wire::put(out, &control);
        wire::put(out, self.ranges.as_slice());
    }

    /// Decodes and applies the kernel's checks: power-of-two page size; `num_ranges` within the
    /// limit (E2BIG, checked before allocating); each range aligned to the page size and not
    /// wrapping (EOVERFLOW); no two ranges overlapping.
    fn decode_data(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (control, rest) = wire::read::<DmaLoggingControl>(C, "dma_logging_control", bytes)?;
        if !control.page_size.is_power_of_two() {
            return Err(DecodeError::invalid(
                C,
                "page_size",
                control.page_size,
                "not a power of two",
            ));
        }
        wire::check_limit(
            C,
            "num_ranges",
            control.num_ranges.into(),
            limits.max_dma_logging_ranges.into(),
        )?;
        let len = control.num_ranges as usize * size_of::<DmaLoggingRange>();
        let (raw, rest) = wire::take(C, "dma logging ranges", rest, len)?;
        wire::expect_end(C, "dma logging ranges", rest)?;
        let mut ranges = Vec::with_capacity(control.num_ranges as usize);
        for chunk in raw.chunks_exact(size_of::<DmaLoggingRange>()) {
            let range: DmaLoggingRange = wire::read_exact(C, "dma logging range", chunk)?;
            let mask = control.page_size - 1;
            if range.iova & mask != 0 || range.length & mask != 0 {
                return Err(DecodeError::invalid(
                    C,
                    "range",
                    range.iova,
                    "not aligned to page_size",
                ));
            }
            wire::check_range(C, "range", range.iova, range.length)?;
            ranges.push(range);
        }
        let mut sorted = ranges.clone();
        sorted.sort_unstable_by_key(|r| r.iova);
        if let Some(pair) = sorted
            .windows(2)
            .find(|w| w[0].iova + w[0].length > w[1].iova)
        {
            return Err(DecodeError::invalid(
                C,
                "range",
                pair[1].iova,
                "overlaps another range",
            ));
        }
        Ok(Self {
            page_size: control.page_size,
            ranges,
        })
    }
}

/// [`Feature::DMA_LOGGING_REPORT`] request data (24 bytes): iova 0, length 8, page_size 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct DmaLoggingReportRequest {
    /// Start of the range reported.
    pub iova: u64,
    /// Length of the range.
    pub length: u64,
    /// Bitmap granularity: a power of two, at least 4096.
    pub page_size: u64,
}

const _: () = assert!(size_of::<DmaLoggingReportRequest>() == 24);

impl DmaLoggingReportRequest {
    /// Number of u64 words of the bitmap: one bit per page of the range.
    pub fn bitmap_words(&self) -> Result<u64, DecodeError> {
        if self.page_size < 4096 || !self.page_size.is_power_of_two() {
            return Err(DecodeError::invalid(
                C,
                "page_size",
                self.page_size,
                "not a power of two of at least 4096",
            ));
        }
        Ok(self.length.div_ceil(self.page_size).div_ceil(64))
    }

    fn check(&self, limits: &Limits) -> Result<u64, DecodeError> {
        wire::check_range(C, "iova/length", self.iova, self.length)?;
        let words = self.bitmap_words()?;
        wire::check_limit(
            C,
            "bitmap size",
            words.saturating_mul(8),
            limits.max_bitmap_size,
        )?;
        Ok(words)
    }
}

// Decoding checks the page size (a power of two ≥ 4096, EINVAL), wrapping (EOVERFLOW) and the
// bitmap against `max_bitmap_size` (E2BIG).
wire::fixed_payload!(
    feature DmaLoggingReportRequest,
    Feature::DMA_LOGGING_REPORT,
    "dma_logging_report",
    |request, limits| request.check(limits).map(drop)
);

/// [`Feature::DMA_LOGGING_REPORT`] reply data: the request's fields, then the bitmap at offset 24.
///
/// Bit mapping (the consensus and the kernel's intent): page *i* = `(addr - iova) / page_size` is
/// bit `i % 64` of u64 word `i / 64`. The spec's formula `bitmap[(addr - iova)/page_size] &
/// (1ULL << (addr % 64))` indexes words by page and bits by address and is not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaLoggingReport {
    /// The range and granularity reported.
    pub request: DmaLoggingReportRequest,
    /// One bit per page; bits beyond the range are zero.
    pub bitmap: Vec<u64>,
}

impl DmaLoggingReport {
    /// An all-clean report for `request` (which must satisfy its own checks).
    pub fn new(request: DmaLoggingReportRequest, limits: &Limits) -> Result<Self, DecodeError> {
        let words = request.check(limits)?;
        Ok(Self {
            request,
            bitmap: vec![0; words as usize],
        })
    }

    fn page(&self, addr: u64) -> Option<(usize, u64)> {
        let r = &self.request;
        if addr < r.iova || addr - r.iova >= r.length {
            return None;
        }
        let page = (addr - r.iova) / r.page_size;
        Some(((page / 64) as usize, 1 << (page % 64)))
    }

    /// Marks the page holding `addr` dirty; addresses outside the range are ignored.
    pub fn mark_dirty(&mut self, addr: u64) {
        if let Some((word, bit)) = self.page(addr)
            && let Some(w) = self.bitmap.get_mut(word)
        {
            *w |= bit;
        }
    }

    /// Whether the page holding `addr` is dirty (false outside the range).
    pub fn is_dirty(&self, addr: u64) -> bool {
        self.page(addr)
            .and_then(|(word, bit)| self.bitmap.get(word).map(|w| w & bit != 0))
            == Some(true)
    }
}

impl FeatureData for DmaLoggingReport {
    const FEATURE: Feature = Feature::DMA_LOGGING_REPORT;

    fn encode_data(&self, out: &mut Vec<u8>) {
        wire::put(out, &self.request);
        wire::put(out, self.bitmap.as_slice());
    }

    fn decode_data(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (request, rest) =
            wire::read::<DmaLoggingReportRequest>(C, "dma_logging_report", bytes)?;
        let words = request.check(limits)?;
        let (raw, rest) = wire::take(C, "bitmap", rest, words as usize * 8)?;
        wire::expect_end(C, "bitmap", rest)?;
        let bitmap = raw
            .chunks_exact(8)
            .filter_map(|w| u64::read_from_bytes(w).ok())
            .collect();
        Ok(Self { request, bitmap })
    }
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use proptest::prelude::*;
    use vfio_migration::Errno;
    use vfio_migration::MigrationFlags;

    use super::*;

    #[test]
    fn layouts_and_numbers() {
        assert_eq!(offset_of!(VfioDeviceFeature, flags), 4);
        assert_eq!(offset_of!(MigDeviceState, data_fd), 4);
        assert_eq!(offset_of!(DmaLoggingControl, num_ranges), 8);
        assert_eq!(offset_of!(DmaLoggingControl, reserved), 12);
        assert_eq!(offset_of!(DmaLoggingRange, length), 8);
        assert_eq!(offset_of!(DmaLoggingReportRequest, length), 8);
        assert_eq!(offset_of!(DmaLoggingReportRequest, page_size), 16);
        assert_eq!(FeatureFlags::new().with_get(true).into_bits(), 0x1_0000);
        assert_eq!(FeatureFlags::new().with_set(true).into_bits(), 0x2_0000);
        assert_eq!(FeatureFlags::new().with_probe(true).into_bits(), 0x4_0000);
        assert_eq!(Feature::DMA_LOGGING_REPORT.0, 8);
        assert_eq!(Feature::MIG_DATA_SIZE.0, 9);
    }

    #[test]
    fn set_state_vector() {
        // SET MIG_DEVICE_STATE to STOP_COPY (3), data_fd -1.
        let bytes = [16, 0, 0, 0, 2, 0, 2, 0, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let l = Limits::default();
        let req = DeviceFeature::decode(&bytes, &l).unwrap();
        assert_eq!(
            req,
            DeviceFeature::set(&MigDeviceState {
                device_state: 3,
                data_fd: -1
            })
        );
        assert_eq!(
            req.parse_request(&l).unwrap(),
            FeatureRequest::SetMigDeviceState(DeviceState::StopCopy)
        );
        assert_eq!(
            MigDeviceState::new(DeviceState::StopCopy),
            MigDeviceState {
                device_state: 3,
                data_fd: -1
            }
        );
        assert_eq!(req.to_bytes(), bytes);
    }

    #[test]
    fn get_migration_reply_grows_argsz() {
        let l = Limits::default();
        let req = DeviceFeature::get(Feature::MIGRATION, 8);
        assert_eq!(req.parse_request(&l).unwrap(), FeatureRequest::GetMigration);
        let flags = MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY;
        let reply = DeviceFeature::get_reply(
            &req,
            &FeatureMigration {
                flags: flags.bits(),
            },
        );
        let bytes = reply.to_bytes();
        assert_eq!(&bytes[..8], &[16, 0, 0, 0, 1, 0, 1, 0]);
        assert_eq!(&bytes[8..], &5u64.to_ne_bytes());
        let decoded = DeviceFeature::decode(&bytes, &l).unwrap();
        assert_eq!(decoded.data_as::<FeatureMigration>(&l).unwrap().flags, 5);
        assert!(
            decoded.data_as::<MigDataSize>(&l).is_err(),
            "feature index is checked"
        );
    }

    #[test]
    fn kernel_checks() {
        let l = Limits::default();
        let mut both = DeviceFeature::get(Feature::MIG_DEVICE_STATE, 8);
        both.flags.set_set(true);
        let err = DeviceFeature::decode(&both.to_bytes(), &l).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL, "GET|SET without PROBE");
        both.flags.set_probe(true);
        let probe = DeviceFeature::decode(&both.to_bytes(), &l).unwrap();
        assert_eq!(
            probe.parse_request(&l).unwrap(),
            FeatureRequest::Probe {
                feature: Feature::MIG_DEVICE_STATE,
                get: true,
                set: true
            }
        );
        let unknown = DeviceFeature::get(Feature(3), 8);
        assert_eq!(
            unknown.parse_request(&l).unwrap_err().errno(),
            Errno::ENOTTY
        );
        let set_migration = DeviceFeature {
            argsz: 16,
            flags: FeatureFlags::new().with_index(1).with_set(true),
            data: vec![0; 8],
        };
        assert_eq!(
            set_migration.parse_request(&l).unwrap_err().errno(),
            Errno::EINVAL
        );
        let small = DeviceFeature::get(Feature::MIGRATION, 4);
        assert_eq!(
            small.parse_request(&l).unwrap_err().errno(),
            Errno::EINVAL,
            "argsz"
        );
        let bad_state = DeviceFeature::set(&MigDeviceState {
            device_state: 8,
            data_fd: -1,
        });
        assert!(bad_state.parse_request(&l).is_err());
        let mut reserved = DeviceFeature::probe(Feature::MIGRATION, true, false).to_bytes();
        reserved[7] = 0x80;
        assert!(DeviceFeature::decode(&reserved, &l).is_err());
        // Neither GET, SET nor PROBE: EINVAL for every feature (a bare PROBE is fine).
        for index in [1, 2, 6, 7, 8, 9] {
            let neither = DeviceFeature {
                argsz: 64,
                flags: FeatureFlags::new().with_index(index),
                data: vec![0; 24],
            };
            let err = neither.parse_request(&l).unwrap_err();
            assert_eq!(err.errno(), Errno::EINVAL, "feature {index}");
            assert!(
                err.to_string().contains("none of GET, SET or PROBE"),
                "{err}"
            );
        }
        let bare_probe = DeviceFeature::probe(Feature::MIGRATION, false, false);
        assert!(bare_probe.parse_request(&l).is_ok());
    }

    #[test]
    fn logging_start_vector_and_checks() {
        let l = Limits::default();
        let mut bytes = 4096u64.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&1u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0x10_0000u64.to_ne_bytes());
        bytes.extend_from_slice(&0x20_0000u64.to_ne_bytes());
        let start = DmaLoggingStart::decode_data(&bytes, &l).unwrap();
        assert_eq!(
            start.ranges,
            vec![DmaLoggingRange {
                iova: 0x10_0000,
                length: 0x20_0000
            }]
        );
        let mut out = Vec::new();
        start.encode_data(&mut out);
        assert_eq!(out, bytes);
        let all = DmaLoggingStart {
            page_size: 4096,
            ranges: vec![],
        };
        assert_eq!(
            DmaLoggingStart::decode_data(&all_bytes(&all), &l).unwrap(),
            all
        );
        let cases = [
            (
                DmaLoggingStart {
                    page_size: 3000,
                    ranges: vec![],
                },
                Errno::EINVAL,
            ),
            (
                DmaLoggingStart {
                    page_size: 4096,
                    ranges: vec![range(1, 4096)],
                },
                Errno::EINVAL,
            ),
            (
                DmaLoggingStart {
                    page_size: 4096,
                    ranges: vec![range(0, 8192), range(4096, 4096)],
                },
                Errno::EINVAL,
            ),
            (
                DmaLoggingStart {
                    page_size: 4096,
                    ranges: vec![range(u64::MAX - 4095, 8192)],
                },
                Errno::EOVERFLOW,
            ),
            (
                DmaLoggingStart {
                    page_size: 4096,
                    ranges: vec![range(0, 4096); 257],
                },
                Errno::E2BIG,
            ),
        ];
        for (start, expected) in cases {
            let err = DmaLoggingStart::decode_data(&all_bytes(&start), &l).unwrap_err();
            assert_eq!(err.errno(), expected, "{err}");
        }
    }

    fn range(iova: u64, length: u64) -> DmaLoggingRange {
        DmaLoggingRange { iova, length }
    }

    fn all_bytes<T: FeatureData>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode_data(&mut out);
        out
    }

    #[test]
    fn report_bitmap_follows_the_consensus_mapping() {
        let l = Limits::default();
        let request = DmaLoggingReportRequest {
            iova: 0x10_0000,
            length: 65 * 4096,
            page_size: 4096,
        };
        let mut report = DmaLoggingReport::new(request, &l).unwrap();
        assert_eq!(report.bitmap.len(), 2);
        report.mark_dirty(0x10_0000 + 64 * 4096 + 5); // page 64 → word 1 bit 0
        report.mark_dirty(0x10_0000 + 3 * 4096); // page 3 → word 0 bit 3
        report.mark_dirty(0x0); // outside: ignored
        assert_eq!(report.bitmap, vec![1 << 3, 1]);
        assert!(report.is_dirty(0x10_0000 + 3 * 4096 + 4095));
        assert!(!report.is_dirty(0x10_0000 + 4 * 4096));
        // The bitmap sits at offset 24 of the feature data.
        let reply = DeviceFeature::get_reply(&DeviceFeature::get_report(&request), &report);
        assert_eq!(reply.argsz, 8 + 24 + 16);
        assert_eq!(&reply.data[24..32], &(1u64 << 3).to_ne_bytes());
        assert_eq!(reply.data_as::<DmaLoggingReport>(&l).unwrap(), report);
        let get = DeviceFeature::get_report(&request);
        assert_eq!(
            get.parse_request(&l).unwrap(),
            FeatureRequest::DmaLoggingReport(request)
        );
        let short = DeviceFeature {
            argsz: 8 + 24,
            ..get
        };
        assert!(short.parse_request(&l).is_err(), "no room for the bitmap");
        let huge = DmaLoggingReportRequest {
            iova: 0,
            length: u64::MAX,
            page_size: 4096,
        };
        assert_eq!(
            DmaLoggingReport::new(huge, &l).unwrap_err().errno(),
            Errno::E2BIG
        );
        let tiny_pages = DmaLoggingReportRequest {
            page_size: 512,
            ..request
        };
        assert_eq!(
            DmaLoggingReport::new(tiny_pages, &l).unwrap_err().errno(),
            Errno::EINVAL
        );
    }

    proptest! {
        #[test]
        fn round_trips(state in 0u32..8, fd: i32, flags in 0u64..8, size: u64,
                       pages in 0u64..300, shift in 12u32..22, iova_pages in 0u64..1000,
                       dirty in proptest::collection::vec(0u64..300, 0..20),
                       nranges in 0usize..8) {
            let l = Limits::default();
            let s = DeviceFeature::set(&MigDeviceState { device_state: state, data_fd: fd });
            let decoded = DeviceFeature::decode(&s.to_bytes(), &l).unwrap();
            prop_assert_eq!(&decoded, &s);
            prop_assert!(decoded.parse_request(&l).is_ok());
            let m = DeviceFeature::get_reply(&DeviceFeature::get(Feature::MIGRATION, 8), &FeatureMigration { flags });
            prop_assert_eq!(DeviceFeature::decode(&m.to_bytes(), &l).unwrap(), m);
            let d = DeviceFeature::get_reply(&DeviceFeature::get(Feature::MIG_DATA_SIZE, 8), &MigDataSize { stop_copy_length: size });
            prop_assert_eq!(DeviceFeature::decode(&d.to_bytes(), &l).unwrap().data_as::<MigDataSize>(&l).unwrap().stop_copy_length, size);
            let page_size = 1u64 << shift;
            let start = DmaLoggingStart {
                page_size,
                ranges: (0..nranges as u64).map(|i| range(i * 2 * page_size, page_size)).collect(),
            };
            let set = DeviceFeature::set(&start);
            prop_assert_eq!(DeviceFeature::decode(&set.to_bytes(), &l).unwrap().parse_request(&l).unwrap(),
                            FeatureRequest::DmaLoggingStart(start));
            let request = DmaLoggingReportRequest { iova: iova_pages * page_size, length: pages * page_size, page_size };
            let mut report = DmaLoggingReport::new(request, &l).unwrap();
            for page in dirty {
                report.mark_dirty(request.iova + page * page_size);
            }
            let reply = DeviceFeature::get_reply(&DeviceFeature::get_report(&request), &report);
            prop_assert_eq!(DeviceFeature::decode(&reply.to_bytes(), &l).unwrap().data_as::<DmaLoggingReport>(&l).unwrap(), report);
        }
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                if let Ok(feature) = DeviceFeature::decode(bytes, &l) {
                    let _ = feature.parse_request(&l);
                }
                let _ = FeatureMigration::decode_data(bytes, &l);
                let _ = MigDeviceState::decode_data(bytes, &l);
                let _ = MigDataSize::decode_data(bytes, &l);
                let _ = DmaLoggingStart::decode_data(bytes, &l);
                let _ = DmaLoggingReportRequest::decode_data(bytes, &l);
                let _ = DmaLoggingReport::decode_data(bytes, &l);
            });
    }
}
