//! A concurrent dirty-page log for device DMA writes, with the kernel's report-and-clear
//! semantics.
//!
//! Device pollers call [`DirtyLog::mark`] on the I/O path for every guest write; it is lock-free
//! (one atomic OR per touched 64-page word). [`DirtyLog::report_and_clear`] atomically takes the
//! bits of the reported range and ORs them into the caller's bitmap, converting between the
//! tracking page size and the report page size.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::dma_log::{DmaLogError, DmaLogRange, MAX_TRACKED_PAGES, check_page_size, check_ranges};

/// The mask of bits `first..=last` (both within 0..64) of one word.
const fn word_mask(first: u64, last: u64) -> u64 {
    let high = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    high & (u64::MAX << first)
}

/// Calls `f(word_index, mask)` for each word covering bits `first..=last`.
fn for_each_word(first: u64, last: u64, mut f: impl FnMut(usize, u64)) {
    for word in first / 64..=last / 64 {
        let lo = if word == first / 64 { first % 64 } else { 0 };
        let hi = if word == last / 64 { last % 64 } else { 63 };
        f(word as usize, word_mask(lo, hi));
    }
}

/// One logged range and its bitmap (bit k = page `iova + k * page_size`).
#[derive(Debug)]
struct TrackedRange {
    iova: u64,
    /// Exclusive end; `iova + length` was checked not to overflow.
    end: u64,
    bits: Box<[AtomicU64]>,
}

/// The dirty-page log of one device for one DMA_LOGGING_START..STOP period.
///
/// Share it between threads by reference or `Arc`; [`DirtyLog::mark`] and
/// [`DirtyLog::report_and_clear`] may run concurrently, and each dirty page is reported by
/// exactly one report after the write that dirtied it.
#[derive(Debug)]
pub struct DirtyLog {
    page_size: u64,
    page_shift: u32,
    /// Sorted by IOVA, non-overlapping.
    ranges: Vec<TrackedRange>,
}

impl DirtyLog {
    /// A log of `ranges` at `page_size` granularity, all pages clean. Use the ranges of a START
    /// validated by [`crate::validate_start`]; the same rules are checked again here, without
    /// the limit on the number of ranges.
    ///
    /// # Errors
    /// The range and page-size errors of [`crate::validate_start`], or
    /// [`DmaLogError::TooLarge`] (ENOMEM) beyond [`MAX_TRACKED_PAGES`] pages or if the bitmap
    /// cannot be allocated.
    pub fn new(page_size: u64, ranges: &[DmaLogRange]) -> Result<Self, DmaLogError> {
        check_page_size(page_size)?;
        let sorted = check_ranges(page_size, ranges)?;
        let pages: u64 = sorted.iter().map(|r| r.length / page_size).sum();
        if pages > MAX_TRACKED_PAGES {
            return Err(DmaLogError::TooLarge { pages });
        }
        let ranges = sorted
            .into_iter()
            .map(|range| {
                let words = (range.length / page_size).div_ceil(64) as usize;
                let mut bits = Vec::new();
                bits.try_reserve_exact(words)
                    .map_err(|_| DmaLogError::TooLarge { pages })?;
                bits.resize_with(words, || AtomicU64::new(0));
                Ok(TrackedRange {
                    iova: range.iova,
                    end: range.iova + range.length,
                    bits: bits.into_boxed_slice(),
                })
            })
            .collect::<Result<_, DmaLogError>>()?;
        Ok(Self {
            page_size,
            page_shift: page_size.trailing_zeros(),
            ranges,
        })
    }

    /// A log covering every byte of `regions` (for example all mapped DMA regions, for a
    /// vfio-user START with no ranges, [`crate::LogScope::All`]): each region is widened to
    /// `page_size` boundaries and overlapping or adjacent results are merged.
    ///
    /// # Errors
    /// As [`DirtyLog::new`]; [`DmaLogError::Overflow`] if a widened region passes the end of
    /// the IOVA space.
    pub fn covering(page_size: u64, regions: &[DmaLogRange]) -> Result<Self, DmaLogError> {
        check_page_size(page_size)?;
        let mut widened = Vec::with_capacity(regions.len());
        for &range in regions.iter().filter(|r| r.length > 0) {
            let overflow = DmaLogError::Overflow { range };
            let end = range.end().ok_or(overflow)?;
            let start = range.iova & !(page_size - 1);
            let end = end.checked_next_multiple_of(page_size).ok_or(overflow)?;
            widened.push(DmaLogRange::new(start, end - start));
        }
        widened.sort_unstable();
        let mut merged: Vec<DmaLogRange> = Vec::with_capacity(widened.len());
        for range in widened {
            match merged.last_mut() {
                Some(last) if last.iova + last.length >= range.iova => {
                    let end = (last.iova + last.length).max(range.iova + range.length);
                    last.length = end - last.iova;
                }
                _ => merged.push(range),
            }
        }
        Self::new(page_size, &merged)
    }

    /// The tracking page size (what START reports back as chosen).
    #[must_use]
    pub const fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The logged ranges, sorted by IOVA.
    pub fn ranges(&self) -> impl Iterator<Item = DmaLogRange> + '_ {
        self.ranges
            .iter()
            .map(|r| DmaLogRange::new(r.iova, r.end - r.iova))
    }

    /// Records a device write of `len` bytes at `addr`: every logged page it touches becomes
    /// dirty. Parts outside the logged ranges are ignored. Lock-free; call it after the write
    /// itself.
    pub fn mark(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let last = addr.saturating_add(len - 1);
        let start = self.ranges.partition_point(|r| r.end <= addr);
        for range in self.ranges[start..].iter().take_while(|r| r.iova <= last) {
            let first_page = (addr.max(range.iova) - range.iova) >> self.page_shift;
            let last_page = (last.min(range.end - 1) - range.iova) >> self.page_shift;
            for_each_word(first_page, last_page, |word, mask| {
                range.bits[word].fetch_or(mask, Ordering::Release);
            });
        }
    }

    /// Validates a report request and returns the bitmap length it needs in `u64` words.
    fn report_words(iova: u64, length: u64, page_size: u64) -> Result<u64, DmaLogError> {
        check_page_size(page_size)?;
        let range = DmaLogRange::new(iova, length);
        range.end().ok_or(DmaLogError::Overflow { range })?;
        let bits = length.div_ceil(page_size);
        if bits > MAX_TRACKED_PAGES {
            return Err(DmaLogError::TooLarge { pages: bits });
        }
        Ok(bits.div_ceil(64))
    }

    /// DMA_LOGGING_REPORT: ORs into `bitmap` the dirty state of `[iova, iova + length)` at
    /// `page_size` granularity and clears it in the log.
    ///
    /// Bit `i` (word `i / 64`, bit `i % 64`) stands for `[iova + i * page_size, +page_size)`.
    /// Bits are only ever set, never cleared, and only for pages inside the request. When the
    /// report page size differs from the tracking page size, a dirty tracking page sets every
    /// report bit it overlaps (replication) and a report bit is set if any tracking page in it is
    /// dirty (merging). A tracking page only partly inside the request is reported but not
    /// cleared, so its other part is reported again by the request that covers it.
    ///
    /// # Errors
    /// [`DmaLogError::PageSize`], [`DmaLogError::Overflow`] (EOVERFLOW),
    /// [`DmaLogError::TooLarge`], [`DmaLogError::BitmapTooSmall`]; on error nothing is cleared.
    pub fn report_and_clear(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<(), DmaLogError> {
        let needed = Self::report_words(iova, length, page_size)?;
        if (bitmap.len() as u64) < needed {
            return Err(DmaLogError::BitmapTooSmall {
                needed,
                got: bitmap.len(),
            });
        }
        if length == 0 {
            return Ok(());
        }
        let end = iova + length;
        let report_shift = page_size.trailing_zeros();
        let start = self.ranges.partition_point(|r| r.end <= iova);
        for range in self.ranges[start..].iter().take_while(|r| r.iova < end) {
            let lo = iova.max(range.iova);
            let hi = end.min(range.end);
            let page_start = |k: u64| range.iova + (k << self.page_shift);
            let first = (lo - range.iova) >> self.page_shift;
            let last = (hi - 1 - range.iova) >> self.page_shift;
            // Tracking pages wholly inside the request are cleared; edge pages are only read.
            let clear_first = if page_start(first) < lo {
                first + 1
            } else {
                first
            };
            let clear_end = if page_start(last) + self.page_size > hi {
                last
            } else {
                last + 1
            };
            for_each_word(first, last, |word, mask| {
                let base = word as u64 * 64;
                let clear = if clear_first < clear_end {
                    let lo_bit = clear_first.max(base);
                    let hi_bit = (clear_end - 1).min(base + 63);
                    if lo_bit <= hi_bit {
                        word_mask(lo_bit - base, hi_bit - base) & mask
                    } else {
                        0
                    }
                } else {
                    0
                };
                let peek = mask & !clear;
                let cell = &range.bits[word];
                let mut dirty = 0;
                if clear != 0 {
                    dirty |= cell.fetch_and(!clear, Ordering::AcqRel) & clear;
                }
                if peek != 0 {
                    dirty |= cell.load(Ordering::Acquire) & peek;
                }
                while dirty != 0 {
                    let k = base + u64::from(dirty.trailing_zeros());
                    dirty &= dirty - 1;
                    let from = page_start(k).max(lo) - iova;
                    let to = (page_start(k) + self.page_size).min(hi) - 1 - iova;
                    for_each_word(from >> report_shift, to >> report_shift, |w, m| {
                        bitmap[w] |= m;
                    });
                }
            });
        }
        Ok(())
    }

    /// [`DirtyLog::report_and_clear`] into a new zeroed bitmap of exactly the needed length.
    ///
    /// # Errors
    /// As [`DirtyLog::report_and_clear`], and [`DmaLogError::TooLarge`] if the bitmap cannot be
    /// allocated.
    pub fn report_and_clear_vec(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
    ) -> Result<Vec<u64>, DmaLogError> {
        let words = Self::report_words(iova, length, page_size)?;
        let mut bitmap = Vec::new();
        bitmap
            .try_reserve_exact(words as usize)
            .map_err(|_| DmaLogError::TooLarge {
                pages: length / page_size,
            })?;
        bitmap.resize(words as usize, 0);
        self.report_and_clear(iova, length, page_size, &mut bitmap)?;
        Ok(bitmap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{Errno, ToErrno};

    const K4: u64 = 4096;
    const K16: u64 = 16384;

    fn r(iova: u64, length: u64) -> DmaLogRange {
        DmaLogRange::new(iova, length)
    }

    fn set_bits(bitmap: &[u64]) -> Vec<u64> {
        (0..bitmap.len() as u64 * 64)
            .filter(|&i| bitmap[(i / 64) as usize] & (1 << (i % 64)) != 0)
            .collect()
    }

    #[test]
    fn word_masks() {
        assert_eq!(word_mask(0, 63), u64::MAX);
        assert_eq!(word_mask(0, 0), 1);
        assert_eq!(word_mask(3, 5), 0b11_1000);
        assert_eq!(word_mask(63, 63), 1 << 63);
    }

    #[test]
    fn marks_are_reported_once_then_cleared() {
        let log = DirtyLog::new(K4, &[r(1 << 20, 16 * K4), r(0, 100 * K4)]).unwrap();
        assert_eq!(log.page_size(), K4);
        assert_eq!(
            log.ranges().collect::<Vec<_>>(),
            [r(0, 100 * K4), r(1 << 20, 16 * K4)]
        );
        log.mark(3 * K4 + 10, 1);
        log.mark(5 * K4 - 1, 2); // straddles pages 4 and 5
        log.mark(70 * K4, 0); // empty write
        log.mark(200 * K4, K4); // outside every range
        log.mark((1 << 20) + 15 * K4, 3 * K4); // runs past the end of the second range
        let bitmap = log.report_and_clear_vec(0, 100 * K4, K4).unwrap();
        assert_eq!(bitmap.len(), 2);
        assert_eq!(set_bits(&bitmap), [3, 4, 5]);
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 100 * K4, K4).unwrap()),
            [] as [u64; 0]
        );
        assert_eq!(
            set_bits(&log.report_and_clear_vec(1 << 20, 16 * K4, K4).unwrap()),
            [15]
        );
    }

    #[test]
    fn a_write_spanning_64_pages_and_two_ranges_sets_every_page() {
        let log = DirtyLog::new(K4, &[r(0, 200 * K4), r(200 * K4, 8 * K4)]).unwrap();
        log.mark(K4, 204 * K4);
        let bitmap = log.report_and_clear_vec(0, 208 * K4, K4).unwrap();
        assert_eq!(set_bits(&bitmap), (1..205).collect::<Vec<_>>());
    }

    #[test]
    fn the_report_only_sets_bits_and_leaves_bits_outside_the_range_alone() {
        let log = DirtyLog::new(K4, &[r(0, 128 * K4)]).unwrap();
        log.mark(K4, 1);
        let mut bitmap = [0b1000_0000, 0, 0xdead];
        log.report_and_clear(0, 3 * K4, K4, &mut bitmap).unwrap();
        assert_eq!(bitmap, [0b1000_0010, 0, 0xdead]);
        // Clean pages never clear a bit the caller had set.
        let mut bitmap = [u64::MAX];
        log.report_and_clear(0, 64 * K4, K4, &mut bitmap).unwrap();
        assert_eq!(bitmap, [u64::MAX]);
        // Dirty pages past the reported length are neither reported nor cleared.
        log.mark(10 * K4, 1);
        let mut bitmap = [0u64];
        log.report_and_clear(0, 3 * K4, K4, &mut bitmap).unwrap();
        assert_eq!(bitmap, [0]);
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 64 * K4, K4).unwrap()),
            [10]
        );
    }

    #[test]
    fn a_sub_range_report_clears_only_that_range() {
        let log = DirtyLog::new(K4, &[r(0, 64 * K4)]).unwrap();
        for page in [3, 4, 5] {
            log.mark(page * K4, 1);
        }
        assert_eq!(
            set_bits(&log.report_and_clear_vec(4 * K4, 2 * K4, K4).unwrap()),
            [0, 1]
        );
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 64 * K4, K4).unwrap()),
            [3]
        );
    }

    #[test]
    fn a_larger_report_page_merges_tracking_pages() {
        let log = DirtyLog::new(K4, &[r(0, 64 * K4)]).unwrap();
        log.mark(K4, 1);
        log.mark(9 * K4, 1);
        log.mark(10 * K4, 1);
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 64 * K4, K16).unwrap()),
            [0, 2]
        );
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 64 * K4, K4).unwrap()),
            [] as [u64; 0]
        );
    }

    #[test]
    fn a_smaller_report_page_replicates_tracking_bits() {
        let log = DirtyLog::new(K16, &[r(0, 64 * K16)]).unwrap();
        log.mark(K16 + 5, 1);
        let bitmap = log.report_and_clear_vec(0, 64 * K16, K4).unwrap();
        assert_eq!(bitmap.len(), 4);
        assert_eq!(set_bits(&bitmap), [4, 5, 6, 7]);
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 64 * K16, K4).unwrap()),
            [] as [u64; 0]
        );
    }

    #[test]
    fn a_tracking_page_partly_reported_stays_dirty() {
        let log = DirtyLog::new(K16, &[r(0, 4 * K16)]).unwrap();
        log.mark(K16, 1);
        // The report covers the second quarter of tracking page 1 only.
        assert_eq!(
            set_bits(&log.report_and_clear_vec(K16 + K4, K4, K4).unwrap()),
            [0]
        );
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 4 * K16, K16).unwrap()),
            [1]
        );
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 4 * K16, K16).unwrap()),
            [] as [u64; 0]
        );
    }

    #[test]
    fn an_unaligned_report_iova_counts_bits_from_the_iova() {
        let log = DirtyLog::new(K4, &[r(0, 4 * K4)]).unwrap();
        for page in 0..3 {
            log.mark(page * K4, 1);
        }
        // Bit i covers [2K + 4K*i, +4K): page 0 hits bit 0, page 1 bits 0-1, page 2 bits 1-2.
        let bitmap = log.report_and_clear_vec(2048, 2 * K4, K4).unwrap();
        assert_eq!(set_bits(&bitmap), [0, 1]);
        // Only page 1 lay wholly inside the report; pages 0 and 2 stay dirty.
        assert_eq!(
            set_bits(&log.report_and_clear_vec(0, 4 * K4, K4).unwrap()),
            [0, 2]
        );
    }

    #[test]
    fn bad_reports_fail_and_clear_nothing() {
        let log = DirtyLog::new(K4, &[r(0, 64 * K4)]).unwrap();
        log.mark(0, 1);
        for page_size in [0, 2048, 6000] {
            let err = log.report_and_clear_vec(0, K4, page_size).unwrap_err();
            assert_eq!(err, DmaLogError::PageSize { page_size });
            assert_eq!(err.errno(), Errno::EINVAL);
        }
        let err = log
            .report_and_clear_vec(u64::MAX - K4 + 1, 2 * K4, K4)
            .unwrap_err();
        assert_eq!(err.errno(), Errno::EOVERFLOW);
        let mut short = [0u64; 1];
        let err = log
            .report_and_clear(0, 65 * K4, K4, &mut short)
            .unwrap_err();
        assert_eq!(err, DmaLogError::BitmapTooSmall { needed: 2, got: 1 });
        assert_eq!(err.errno(), Errno::EINVAL);
        let err = log
            .report_and_clear_vec(0, (MAX_TRACKED_PAGES + 1) * K4, K4)
            .unwrap_err();
        assert_eq!(err.errno(), Errno::ENOMEM);
        assert_eq!(short, [0]);
        assert_eq!(set_bits(&log.report_and_clear_vec(0, K4, K4).unwrap()), [0]);
        assert!(log.report_and_clear_vec(0, 0, K4).unwrap().is_empty());
    }

    #[test]
    fn construction_checks_ranges_and_size() {
        assert_eq!(
            DirtyLog::new(K4, &[r(0, 2 * K4), r(K4, K4)])
                .unwrap_err()
                .errno(),
            Errno::EINVAL
        );
        assert_eq!(DirtyLog::new(1000, &[]).unwrap_err().errno(), Errno::EINVAL);
        let err = DirtyLog::new(K4, &[r(0, (MAX_TRACKED_PAGES + 1) * K4)]).unwrap_err();
        assert_eq!(
            err,
            DmaLogError::TooLarge {
                pages: MAX_TRACKED_PAGES + 1
            }
        );
        assert_eq!(err.errno(), Errno::ENOMEM);
        assert!(DirtyLog::new(K4, &[]).unwrap().ranges().next().is_none());
    }

    #[test]
    fn covering_widens_and_merges_regions() {
        let log = DirtyLog::covering(
            K4,
            &[r(5000, 4000), r(100, 4900), r(10 * K4, 0), r(20 * K4, K4)],
        )
        .unwrap();
        assert_eq!(
            log.ranges().collect::<Vec<_>>(),
            [r(0, 3 * K4), r(20 * K4, K4)]
        );
        let err = DirtyLog::covering(K4, &[r(u64::MAX - 10, 5)]).unwrap_err();
        assert_eq!(err.errno(), Errno::EOVERFLOW);
    }

    #[test]
    fn concurrent_marks_are_all_reported_exactly_once() {
        let log = DirtyLog::new(K4, &[r(0, 4096 * K4)]).unwrap();
        let mut reported = vec![0u64; 64];
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let log = &log;
                scope.spawn(move || {
                    for page in (thread..4096).step_by(4) {
                        log.mark(page * K4, 1);
                    }
                });
            }
            for _ in 0..50 {
                let mut bitmap = vec![0u64; 64];
                log.report_and_clear(0, 4096 * K4, K4, &mut bitmap).unwrap();
                for (total, word) in reported.iter_mut().zip(&bitmap) {
                    assert_eq!(*total & word, 0, "a page was reported twice");
                    *total |= word;
                }
            }
        });
        log.report_and_clear(0, 4096 * K4, K4, &mut reported)
            .unwrap();
        assert!(reported.iter().all(|&w| w == u64::MAX));
    }

    #[test]
    fn fuzz_mark_and_report_never_panic() {
        let log = DirtyLog::new(K4, &[r(0, 100 * K4), r(1 << 30, 3 * K16)]).unwrap();
        bolero::check!()
            .with_type::<(u64, u64, u64, u64, u8)>()
            .with_iterations(3000)
            .for_each(|&(addr, len, iova, length, shift)| {
                log.mark(addr, len % (1 << 24));
                let page_size = 1u64 << (shift % 20);
                let length = length % (1 << 33);
                if let Ok(bitmap) = log.report_and_clear_vec(iova, length, page_size) {
                    let bits = length.div_ceil(page_size);
                    assert!(set_bits(&bitmap).iter().all(|&b| b < bits));
                }
            });
    }
}
