//! A set of byte ranges that merges overlapping and adjacent ranges: the parts of a namespace
//! still to be copied.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end, disjoint and non-adjacent.
    ranges: BTreeMap<u64, u64>,
    bytes: u64,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds `range`, merging it with every range it overlaps or touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let mut start = range.start;
        let mut end = range.end;
        // The range starting at or before `start` may touch it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
            self.bytes -= e - s;
        }
        // Ranges starting inside [start, end] are swallowed.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
            self.bytes -= e - s;
        }
        self.ranges.insert(start, end);
        self.bytes += end - start;
    }

    /// Removes and returns the first `max` bytes (or fewer) of the lowest range.
    pub fn pop_front(&mut self, max: u64) -> Option<Range<u64>> {
        let (&s, &e) = self.ranges.iter().next()?;
        self.ranges.remove(&s);
        let end = e.min(s.saturating_add(max.max(1)));
        if end < e {
            self.ranges.insert(end, e);
        }
        self.bytes -= end - s;
        Some(s..end)
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_pops() {
        let mut set = RangeSet::new();
        set.insert(10..20);
        set.insert(30..40);
        set.insert(20..25);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![10..25, 30..40]);
        set.insert(5..35);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5..40]);
        assert_eq!(set.bytes(), 35);
        assert_eq!(set.pop_front(10), Some(5..15));
        assert_eq!(set.pop_front(100), Some(15..40));
        assert!(set.is_empty());
        assert_eq!(set.pop_front(1), None);
        set.insert(7..7);
        assert!(set.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..40)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len) in ops {
                set.insert(start..start + len);
                bits[start as usize..(start + len) as usize].iter_mut().for_each(|b| *b = true);
            }
            let covered = bits.iter().filter(|b| **b).count() as u64;
            proptest::prop_assert_eq!(set.bytes(), covered);
            let mut prev_end = None;
            for r in set.iter() {
                proptest::prop_assert!(r.start < r.end);
                if let Some(p) = prev_end { proptest::prop_assert!(r.start > p); }
                prev_end = Some(r.end);
                proptest::prop_assert!(bits[r.start as usize..r.end as usize].iter().all(|b| *b));
            }
        }
    }
}
