//! Device DMA logging requests (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT`): the
//! range type and the validation rules of the kernel (reference §1.1) and of vfio-user (§2.5).
//! The dirty-page tracker itself is [`crate::DirtyLog`].

use core::fmt;

use crate::errno::{Errno, ToErrno};

/// The smallest DMA-logging page size, for START and REPORT alike.
pub const MIN_PAGE_SIZE: u64 = 4096;

/// The most ranges one START may name: one 4 KiB page of 16-byte ranges, as the kernel allows.
pub const MAX_LOG_RANGES: usize = 256;

/// The most pages a [`crate::DirtyLog`] tracks in total, and the most bits one report bitmap
/// may have: 2^31 bits is a 256 MiB bitmap (8 TiB of 4 KiB pages), matching QEMU's default
/// vfio-user `max_bitmap_size`. Larger requests fail with ENOMEM instead of exhausting memory.
pub const MAX_TRACKED_PAGES: u64 = 1 << 31;

/// One IOVA range to log (`struct vfio_device_feature_dma_logging_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmaLogRange {
    /// First IOVA of the range.
    pub iova: u64,
    /// Length in bytes.
    pub length: u64,
}

impl DmaLogRange {
    /// A range of `length` bytes starting at `iova`.
    #[must_use]
    pub const fn new(iova: u64, length: u64) -> Self {
        Self { iova, length }
    }

    /// The exclusive end, or `None` if `iova + length` overflows 64 bits.
    #[must_use]
    pub const fn end(self) -> Option<u64> {
        self.iova.checked_add(self.length)
    }
}

impl fmt::Display for DmaLogRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, +{:#x})", self.iova, self.length)
    }
}

/// Which protocol's START rules apply; they differ only for `num_ranges == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoggingMode {
    /// Kernel VFIO: no ranges is EINVAL.
    Kernel,
    /// vfio-user: no ranges means "log every DMA write" (all mapped regions).
    VfioUser,
}

/// What a valid START asks to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogScope {
    /// Everything (vfio-user with no ranges): build the log over the mapped DMA regions with
    /// [`crate::DirtyLog::covering`].
    All,
    /// These ranges, sorted by IOVA, non-overlapping and page-aligned.
    Ranges(Vec<DmaLogRange>),
}

/// A DMA-logging request the device must refuse. Any REPORT error means the caller must treat
/// the log as corrupt (mark everything dirty, or restart logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaLogError {
    /// The page size is not a power of two of at least 4096.
    #[error(
        "DMA logging page size {page_size:#x} is invalid; it must be a power of two of at least 4096"
    )]
    PageSize {
        /// The requested page size.
        page_size: u64,
    },
    /// A kernel-mode START with no ranges.
    #[error("DMA_LOGGING_START names no ranges; a VFIO device needs the IOVA ranges to log")]
    NoRanges,
    /// More ranges than [`MAX_LOG_RANGES`].
    #[error(
        "DMA_LOGGING_START names {count} ranges, more than the limit of 256; merge adjacent ranges"
    )]
    TooManyRanges {
        /// The number of ranges requested.
        count: usize,
    },
    /// A range whose IOVA or length is not a multiple of the page size.
    #[error("DMA logging range {range} is not aligned to the page size {page_size:#x}")]
    Unaligned {
        /// The offending range.
        range: DmaLogRange,
        /// The page size.
        page_size: u64,
    },
    /// A range of length 0.
    #[error("DMA logging range {range} is empty; give every range a non-zero length")]
    EmptyRange {
        /// The offending range.
        range: DmaLogRange,
    },
    /// A range or report whose end overflows 64 bits.
    #[error("DMA logging range {range} ends beyond the 64-bit IOVA space")]
    Overflow {
        /// The offending range.
        range: DmaLogRange,
    },
    /// Two ranges overlap.
    #[error("DMA logging ranges {first} and {second} overlap; each IOVA may be named once")]
    Overlap {
        /// The lower range.
        first: DmaLogRange,
        /// The range overlapping it.
        second: DmaLogRange,
    },
    /// The log or the report bitmap would need more than [`MAX_TRACKED_PAGES`] bits.
    #[error(
        "DMA logging would need {pages} bitmap bits, more than the limit of 2^31; use a larger page size or smaller ranges"
    )]
    TooLarge {
        /// The number of bits needed.
        pages: u64,
    },
    /// The caller's report bitmap is shorter than the report needs.
    #[error("the DMA logging report needs a bitmap of {needed} u64 words but got {got}")]
    BitmapTooSmall {
        /// Words needed.
        needed: u64,
        /// Words supplied.
        got: usize,
    },
}

impl ToErrno for DmaLogError {
    fn errno(&self) -> Errno {
        match self {
            Self::PageSize { .. }
            | Self::NoRanges
            | Self::Unaligned { .. }
            | Self::EmptyRange { .. }
            | Self::Overlap { .. }
            | Self::BitmapTooSmall { .. } => Errno::EINVAL,
            Self::TooManyRanges { .. } => Errno::E2BIG,
            Self::Overflow { .. } => Errno::EOVERFLOW,
            Self::TooLarge { .. } => Errno::ENOMEM,
        }
    }
}

/// Checks a page size: a power of two of at least [`MIN_PAGE_SIZE`].
///
/// # Errors
/// [`DmaLogError::PageSize`].
pub const fn check_page_size(page_size: u64) -> Result<(), DmaLogError> {
    if page_size < MIN_PAGE_SIZE || !page_size.is_power_of_two() {
        return Err(DmaLogError::PageSize { page_size });
    }
    Ok(())
}

/// Checks ranges for a log at a valid `page_size` (each aligned, non-empty, not overflowing, no
/// two overlapping) and returns them sorted by IOVA. No limit on their number.
pub(crate) fn check_ranges(
    page_size: u64,
    ranges: &[DmaLogRange],
) -> Result<Vec<DmaLogRange>, DmaLogError> {
    for &range in ranges {
        if range.iova % page_size != 0 || range.length % page_size != 0 {
            return Err(DmaLogError::Unaligned { range, page_size });
        }
        if range.length == 0 {
            return Err(DmaLogError::EmptyRange { range });
        }
        if range.end().is_none() {
            return Err(DmaLogError::Overflow { range });
        }
    }
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        // Both ends were checked above.
        if first.end().is_some_and(|end| end > second.iova) {
            return Err(DmaLogError::Overlap { first, second });
        }
    }
    Ok(sorted)
}

/// Validates a DMA_LOGGING_START request. The device then tracks at `page_size` (START writes
/// that back as the chosen page size).
///
/// # Errors
/// [`DmaLogError::PageSize`], [`DmaLogError::NoRanges`] (kernel mode only),
/// [`DmaLogError::TooManyRanges`] (E2BIG), [`DmaLogError::Unaligned`],
/// [`DmaLogError::EmptyRange`], [`DmaLogError::Overflow`] (EOVERFLOW), [`DmaLogError::Overlap`].
pub fn validate_start(
    page_size: u64,
    ranges: &[DmaLogRange],
    mode: LoggingMode,
) -> Result<LogScope, DmaLogError> {
    check_page_size(page_size)?;
    if ranges.is_empty() {
        return match mode {
            LoggingMode::Kernel => Err(DmaLogError::NoRanges),
            LoggingMode::VfioUser => Ok(LogScope::All),
        };
    }
    if ranges.len() > MAX_LOG_RANGES {
        return Err(DmaLogError::TooManyRanges {
            count: ranges.len(),
        });
    }
    check_ranges(page_size, ranges).map(LogScope::Ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn r(iova: u64, length: u64) -> DmaLogRange {
        DmaLogRange::new(iova, length)
    }

    #[test]
    fn page_size_must_be_a_power_of_two_of_at_least_4096() {
        for bad in [0, 1, 512, 2048, 4095, 4097, 3 * 4096, u64::MAX] {
            let err = validate_start(bad, &[r(0, 1 << 20)], LoggingMode::Kernel).unwrap_err();
            assert_eq!(err, DmaLogError::PageSize { page_size: bad });
            assert_eq!(err.errno(), Errno::EINVAL);
        }
        for good in [4096, 8192, 1 << 21, 1 << 30] {
            assert!(validate_start(good, &[r(0, 1 << 30)], LoggingMode::Kernel).is_ok());
        }
    }

    #[test]
    fn no_ranges_depends_on_the_mode() {
        let err = validate_start(PAGE, &[], LoggingMode::Kernel).unwrap_err();
        assert_eq!(err, DmaLogError::NoRanges);
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(
            validate_start(PAGE, &[], LoggingMode::VfioUser),
            Ok(LogScope::All)
        );
    }

    #[test]
    fn more_than_256_ranges_is_e2big() {
        let ranges: Vec<_> = (0..257).map(|i| r(i * 2 * PAGE, PAGE)).collect();
        let err = validate_start(PAGE, &ranges, LoggingMode::Kernel).unwrap_err();
        assert_eq!(err, DmaLogError::TooManyRanges { count: 257 });
        assert_eq!(err.errno(), Errno::E2BIG);
        assert!(validate_start(PAGE, &ranges[..256], LoggingMode::VfioUser).is_ok());
    }

    #[test]
    fn unaligned_empty_overlapping_and_overflowing_ranges() {
        let cases = [
            (
                r(100, PAGE),
                DmaLogError::Unaligned {
                    range: r(100, PAGE),
                    page_size: PAGE,
                },
                Errno::EINVAL,
            ),
            (
                r(PAGE, 100),
                DmaLogError::Unaligned {
                    range: r(PAGE, 100),
                    page_size: PAGE,
                },
                Errno::EINVAL,
            ),
            (
                r(PAGE, 0),
                DmaLogError::EmptyRange { range: r(PAGE, 0) },
                Errno::EINVAL,
            ),
            (
                r(u64::MAX - PAGE + 1, 2 * PAGE),
                DmaLogError::Overflow {
                    range: r(u64::MAX - PAGE + 1, 2 * PAGE),
                },
                Errno::EOVERFLOW,
            ),
        ];
        for (range, expected, errno) in cases {
            let err =
                validate_start(PAGE, &[r(1 << 30, PAGE), range], LoggingMode::Kernel).unwrap_err();
            assert_eq!(err, expected);
            assert_eq!(err.errno(), errno);
        }
        let err = validate_start(
            PAGE,
            &[r(8 * PAGE, 4 * PAGE), r(0, 9 * PAGE)],
            LoggingMode::Kernel,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DmaLogError::Overlap {
                first: r(0, 9 * PAGE),
                second: r(8 * PAGE, 4 * PAGE)
            }
        );
        assert_eq!(err.errno(), Errno::EINVAL);
        assert!(err.to_string().contains("overlap"));
    }

    #[test]
    fn valid_ranges_come_back_sorted() {
        let scope = validate_start(
            PAGE,
            &[
                r(16 * PAGE, PAGE),
                r(0, 16 * PAGE),
                r(u64::MAX - 2 * PAGE + 1, PAGE),
            ],
            LoggingMode::Kernel,
        )
        .unwrap();
        assert_eq!(
            scope,
            LogScope::Ranges(vec![
                r(0, 16 * PAGE),
                r(16 * PAGE, PAGE),
                r(u64::MAX - 2 * PAGE + 1, PAGE)
            ])
        );
    }

    #[test]
    fn fuzz_validate_start_never_panics() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|input: &[u8]| {
                let mut words = input
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
                let page_size = words.next().unwrap_or(PAGE);
                let rest: Vec<u64> = words.collect();
                let ranges: Vec<_> = rest.chunks_exact(2).map(|p| r(p[0], p[1])).collect();
                for mode in [LoggingMode::Kernel, LoggingMode::VfioUser] {
                    if let Ok(LogScope::Ranges(sorted)) = validate_start(page_size, &ranges, mode) {
                        assert_eq!(sorted.len(), ranges.len());
                    }
                }
            });
    }
}
