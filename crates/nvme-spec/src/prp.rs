//! Physical Region Page (PRP) arithmetic (NVMe Base 2.1 §4.3.1).
//!
//! A data buffer is described by PRP1 (the first page, possibly at an offset) and PRP2, which is
//! unused, the second data page, or a pointer to a PRP list, depending on how many pages the
//! transfer touches. A PRP list page holds `page_size / 8` entries; when a list needs more than
//! one page, the last entry of each full list page points at the next one.
//!
//! Everything here is pure arithmetic on guest-controlled values: no function panics or
//! overflows on any `u64` input.

/// Size of one PRP entry in bytes.
pub const PRP_ENTRY_SIZE: u64 = 8;

/// What PRP2 holds for a given transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prp2Use {
    /// The transfer fits in the first page; PRP2 is reserved.
    Unused,
    /// The transfer touches exactly two pages; PRP2 is the second page's address.
    DataPage,
    /// The transfer touches more than two pages; PRP2 points at a PRP list.
    List,
}

/// The host memory page size selected by CC.MPS, which governs PRP layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageSize(u64);

impl PageSize {
    /// 4 KiB pages (CC.MPS = 0), what every common host uses.
    pub const SIZE_4K: Self = Self(4096);

    /// The page size for CC.MPS `mps` (`2 ^ (12 + mps)` bytes), or `None` if `mps` does not fit
    /// the 4-bit field.
    pub const fn from_mps(mps: u8) -> Option<Self> {
        if mps <= 0xF {
            Some(Self(1 << (12 + mps as u32)))
        } else {
            None
        }
    }

    /// The page size in bytes (a power of two between 4 KiB and 128 MiB).
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The offset of `addr` within its page.
    pub const fn offset(self, addr: u64) -> u64 {
        addr & (self.0 - 1)
    }

    /// The number of PRP entries one PRP list page holds.
    pub const fn entries_per_list_page(self) -> u64 {
        self.0 / PRP_ENTRY_SIZE
    }

    /// The number of memory pages a transfer of `len` bytes touches when its first byte is at
    /// `first` (only `first`'s page offset matters). Zero for an empty transfer.
    pub const fn pages(self, first: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let in_first = self.0 - self.offset(first);
        if len <= in_first {
            return 1;
        }
        let rest = len - in_first;
        1 + rest.div_ceil(self.0)
    }

    /// What PRP2 holds for a transfer of `len` bytes starting at `prp1`.
    pub const fn prp2_use(self, prp1: u64, len: u64) -> Prp2Use {
        match self.pages(prp1, len) {
            0 | 1 => Prp2Use::Unused,
            2 => Prp2Use::DataPage,
            _ => Prp2Use::List,
        }
    }

    /// The number of entries the PRP list must hold for a transfer of `len` bytes starting at
    /// `prp1`: every page after the first, or zero when PRP2 is not a list pointer.
    pub const fn list_entries(self, prp1: u64, len: u64) -> u64 {
        match self.prp2_use(prp1, len) {
            Prp2Use::List => self.pages(prp1, len) - 1,
            Prp2Use::Unused | Prp2Use::DataPage => 0,
        }
    }

    /// The number of PRP list pages needed to hold `entries` data entries when the list starts
    /// at `list` (PRP2; the first list page holds only the entries from `list`'s offset to the
    /// end of the page). Each full page but the last gives up its final slot to the pointer to
    /// the next page. Zero when `entries` is zero.
    ///
    /// A list pointer must be 8-byte aligned ([`Self::is_list_pointer_aligned`]); for an
    /// unaligned one the partial entry at the end of the first page is not counted.
    pub const fn list_pages(self, entries: u64, list: u64) -> u64 {
        if entries == 0 {
            return 0;
        }
        let per_page = self.entries_per_list_page();
        let first_capacity = (self.0 - self.offset(list)) / PRP_ENTRY_SIZE;
        if entries <= first_capacity {
            return 1;
        }
        // The first page holds `first_capacity - 1` data entries plus the chain pointer; each
        // further page holds `per_page - 1` plus a pointer, except the last, which holds up to
        // `per_page`. With `r` entries left after the first page, pages needed are
        // ceil((r - 1) / (per_page - 1)).
        let remaining = entries - first_capacity.saturating_sub(1);
        let further = (remaining - 1).div_ceil(per_page - 1);
        1 + further
    }

    /// Whether a PRP list pointer (PRP2 as a list, or a chain entry) has the required 8-byte
    /// alignment.
    pub const fn is_list_pointer_aligned(addr: u64) -> bool {
        addr.is_multiple_of(PRP_ENTRY_SIZE)
    }

    /// Whether a PRP entry other than PRP1 is valid: it must point at the start of a page.
    pub const fn is_page_aligned(self, addr: u64) -> bool {
        self.offset(addr) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::from_mps(0), Some(PageSize::SIZE_4K));
        assert_eq!(PageSize::from_mps(4).unwrap().bytes(), 65536);
        assert_eq!(PageSize::from_mps(15).unwrap().bytes(), 128 << 20);
        assert_eq!(PageSize::from_mps(16), None);
        assert_eq!(PageSize::SIZE_4K.entries_per_list_page(), 512);
        assert_eq!(PageSize::SIZE_4K.offset(0x1234_5678), 0x678);
    }

    #[test]
    fn pages_examples() {
        let ps = PageSize::SIZE_4K;
        assert_eq!(ps.pages(0x1000, 0), 0);
        assert_eq!(ps.pages(0x1000, 1), 1);
        assert_eq!(ps.pages(0x1000, 4096), 1);
        assert_eq!(ps.pages(0x1000, 4097), 2);
        assert_eq!(ps.pages(0x1FFF, 2), 2);
        assert_eq!(ps.pages(0x1800, 8192), 3);
        assert_eq!(ps.prp2_use(0x1000, 4096), Prp2Use::Unused);
        assert_eq!(ps.prp2_use(0x1800, 4096), Prp2Use::DataPage);
        assert_eq!(ps.prp2_use(0x1000, 8192), Prp2Use::DataPage);
        assert_eq!(ps.prp2_use(0x1000, 8193), Prp2Use::List);
        assert_eq!(ps.list_entries(0x1000, 8193), 2);
        assert_eq!(ps.list_entries(0x1000, 8192), 0);
        // 2 MiB from a page boundary: 512 pages, 511 list entries, one list page.
        assert_eq!(ps.list_entries(0, 2 << 20), 511);
        assert_eq!(ps.list_pages(511, 0x9000), 1);
        assert_eq!(ps.list_pages(512, 0x9000), 1);
        // 513 entries need a chain: 511 + pointer, then 2.
        assert_eq!(ps.list_pages(513, 0x9000), 2);
        // A list starting 8 bytes before the end of its page has one slot there.
        assert_eq!(ps.list_pages(1, 0x9FF8), 1);
        assert_eq!(ps.list_pages(2, 0x9FF8), 2);
        assert_eq!(ps.list_pages(0, 0x9FF8), 0);
        assert!(PageSize::is_list_pointer_aligned(0x9FF8));
        assert!(!PageSize::is_list_pointer_aligned(0x9FF4));
        assert!(ps.is_page_aligned(0x3000));
        assert!(!ps.is_page_aligned(0x3008));
    }

    #[test]
    fn extremes_do_not_overflow() {
        for mps in 0..=15 {
            let ps = PageSize::from_mps(mps).unwrap();
            let _ = ps.pages(u64::MAX, u64::MAX);
            let _ = ps.pages(0, u64::MAX);
            let _ = ps.list_entries(u64::MAX, u64::MAX);
            let _ = ps.list_pages(u64::MAX, u64::MAX);
            let _ = ps.list_pages(u64::MAX, 0);
            let _ = ps.list_pages(u64::MAX, 7);
            // An unaligned list pointer in the last 7 bytes of a page has no whole slot there.
            let _ = ps.list_pages(u64::MAX, ps.bytes() - 4);
        }
    }

    /// Walks a PRP list chain the way a controller does and counts the pages it reads.
    fn simulate_list_pages(ps: PageSize, entries: u64, list: u64) -> u64 {
        if entries == 0 {
            return 0;
        }
        let mut pages = 1;
        let mut slots_left = (ps.bytes() - ps.offset(list)) / 8;
        let mut todo = entries;
        loop {
            if todo <= slots_left {
                return pages;
            }
            // Use all but the last slot for data; the last chains on.
            todo -= slots_left - 1;
            pages += 1;
            slots_left = ps.entries_per_list_page();
        }
    }

    proptest! {
        #[test]
        fn pages_cover_the_transfer(mps in 0u8..=3, first in any::<u64>(), len in 0u64..(1 << 30)) {
            let ps = PageSize::from_mps(mps).unwrap();
            let pages = ps.pages(first, len);
            let span = u128::from(ps.offset(first)) + u128::from(len);
            let bytes = u128::from(ps.bytes());
            if len == 0 {
                prop_assert_eq!(pages, 0);
            } else {
                // Enough pages to hold the span, and no page too many.
                prop_assert!(u128::from(pages) * bytes >= span);
                prop_assert!(u128::from(pages - 1) * bytes < span);
            }
        }

        #[test]
        fn prp2_use_matches_pages(mps in 0u8..=15, first in any::<u64>(), len in any::<u64>()) {
            let ps = PageSize::from_mps(mps).unwrap();
            let pages = ps.pages(first, len);
            let expected = match pages {
                0 | 1 => Prp2Use::Unused,
                2 => Prp2Use::DataPage,
                _ => Prp2Use::List,
            };
            prop_assert_eq!(ps.prp2_use(first, len), expected);
            let entries = ps.list_entries(first, len);
            prop_assert_eq!(entries, if pages > 2 { pages - 1 } else { 0 });
            let _ = ps.list_pages(entries, first);
        }

        #[test]
        fn list_pages_match_a_chain_walk(
            mps in 0u8..=1,
            entries in 0u64..5000,
            slot in 0u64..512,
        ) {
            let ps = PageSize::from_mps(mps).unwrap();
            let list = 0x10_0000 + slot * 8;
            prop_assert_eq!(ps.list_pages(entries, list), simulate_list_pages(ps, entries, list));
        }

        #[test]
        fn no_panics_on_any_input(mps in any::<u8>(), a in any::<u64>(), b in any::<u64>()) {
            if let Some(ps) = PageSize::from_mps(mps) {
                let _ = ps.pages(a, b);
                let _ = ps.prp2_use(a, b);
                let _ = ps.list_entries(a, b);
                let _ = ps.list_pages(a, b);
                let _ = ps.offset(a);
                let _ = ps.is_page_aligned(a);
            }
            let _ = PageSize::is_list_pointer_aligned(a);
        }
    }
}
