//! Ordered acknowledgements: the one place that decides how far a sink's delivery offset
//! may move.
//!
//! A sink may acknowledge the rows it was handed in any order (several uploads in flight).
//! The offset may only move over the contiguous prefix of acknowledged rows, so a crash
//! never skips a row that is not at the destination; acknowledgements beyond that prefix
//! are kept as ranges, persisted by the store, so a row is resent only if its own batch was
//! not acknowledged.
//!
//! The ledger does no I/O: acknowledgements go in, and what to persist comes out (the new
//! offset, and the range to record). The store writes exactly that; after a restart the
//! ledger is rebuilt from the persisted offset and ranges and is in the same state.
//!
//! A row set aside (dead letter) counts as passed for the offset, like an acknowledged
//! row; setting it aside and moving the offset are one store transaction, and the writes
//! are applied in order, none after a failed one (`store::AckLane`), so a failed write
//! leaves the stored offset before the row and it is sent again.

/// What one acknowledgement changed, for the store to persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckUpdate {
    /// The acknowledged range to record (`first..=last`).
    pub range: (i64, i64),
    /// The new delivery offset, when it moved.
    pub offset: Option<i64>,
}

/// The acknowledgement state of one sink for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckLedger {
    /// Every row with `_seq <= offset` is acknowledged.
    offset: i64,
    /// Acknowledged ranges beyond `offset`: sorted, disjoint, none touching `offset`.
    ahead: Vec<(i64, i64)>,
    /// The rows past the offset known to exist (as read from the store), ascending.
    rows: Vec<i64>,
}

impl AckLedger {
    /// The state after a restart: the persisted offset and acknowledged ranges.
    pub fn new(offset: i64, ranges: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut ledger = AckLedger {
            offset,
            ahead: Vec::new(),
            rows: Vec::new(),
        };
        for (first, last) in ranges {
            ledger.insert(first, last);
        }
        ledger
    }

    /// The current delivery offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The acknowledged ranges beyond the offset (what the store keeps).
    #[cfg(test)]
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ahead
    }

    /// True when the row was acknowledged (it must not be sent again).
    pub fn is_acked(&self, seq: i64) -> bool {
        seq <= self.offset || self.range_index(seq).is_ok()
    }

    /// Tells the ledger which rows past the offset exist, in `_seq` order (a fresh read of
    /// the store), and moves the offset over those already acknowledged. Returns the new
    /// offset when it moved.
    pub fn read(&mut self, rows: impl IntoIterator<Item = i64>) -> Option<i64> {
        self.rows = rows.into_iter().filter(|&s| s > self.offset).collect();
        debug_assert!(self.rows.windows(2).all(|w| w[0] < w[1]));
        self.settle()
    }

    /// Records that the destination acknowledged the rows `first..=last`.
    pub fn ack(&mut self, first: i64, last: i64) -> AckUpdate {
        self.insert(first, last);
        AckUpdate {
            range: (first, last),
            offset: self.settle(),
        }
    }

    fn range_index(&self, seq: i64) -> Result<usize, usize> {
        self.ahead.binary_search_by(|&(a, b)| {
            if b < seq {
                std::cmp::Ordering::Less
            } else if a > seq {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
    }

    /// Adds `first..=last` to the ranges beyond the offset, merging what overlaps.
    fn insert(&mut self, first: i64, last: i64) {
        let first = first.max(self.offset.saturating_add(1));
        if first > last {
            return;
        }
        let (mut lo, mut hi) = (first, last);
        self.ahead.retain(|&(a, b)| {
            let touches = a <= hi.saturating_add(1) && lo <= b.saturating_add(1);
            if touches {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            !touches
        });
        let at = self.ahead.partition_point(|&(a, _)| a < lo);
        self.ahead.insert(at, (lo, hi));
    }

    /// Moves the offset over the leading known rows that are acknowledged.
    fn settle(&mut self) -> Option<i64> {
        let passed = self
            .rows
            .iter()
            .take_while(|&&seq| self.is_acked(seq))
            .count();
        if passed == 0 {
            return None;
        }
        self.offset = self.rows[passed - 1];
        self.rows.drain(..passed);
        let offset = self.offset;
        self.ahead.retain(|&(_, b)| b > offset);
        if let Some(first) = self.ahead.first_mut() {
            first.0 = first.0.max(offset + 1);
        }
        Some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_offset_moves_only_over_the_acknowledged_prefix() {
        let mut ledger = AckLedger::new(0, []);
        assert_eq!(ledger.read([2, 3, 5, 8, 9]), None);
        assert_eq!(
            ledger.ack(5, 8),
            AckUpdate {
                range: (5, 8),
                offset: None
            }
        );
        assert!(ledger.is_acked(5) && ledger.is_acked(8) && !ledger.is_acked(3));
        assert_eq!(ledger.ack(2, 3).offset, Some(8));
        assert_eq!(ledger.ranges(), &[]);
        assert_eq!(ledger.ack(9, 9).offset, Some(9));
    }

    #[test]
    fn a_restart_recognises_rows_acknowledged_beyond_the_offset() {
        let mut before = AckLedger::new(10, []);
        before.read([11, 12, 13, 14]);
        before.ack(13, 14);
        let mut after = AckLedger::new(10, before.ranges().to_vec());
        assert!(after.is_acked(13) && !after.is_acked(11));
        assert_eq!(after.read([11, 12, 13, 14]), None);
        assert_eq!(after.ack(11, 12).offset, Some(14));
    }

    #[test]
    fn ranges_at_or_below_the_offset_are_forgotten() {
        let ledger = AckLedger::new(10, [(3, 7), (9, 12), (20, 21)]);
        assert_eq!(ledger.ranges(), &[(11, 12), (20, 21)]);
    }

    /// Rows (`_seq`), chunks (index ranges), the order chunks are acknowledged in, and
    /// whether each acknowledgement arrives.
    type Scenario = (Vec<i64>, Vec<(usize, usize)>, Vec<usize>, Vec<bool>);

    /// Rows with gaps in `_seq`, handed out in chunks that are acknowledged in a random
    /// order (some never).
    fn scenario() -> impl Strategy<Value = Scenario> {
        (1usize..40)
            .prop_flat_map(|n| {
                (
                    proptest::collection::vec(1i64..4, n),
                    proptest::collection::vec(1usize..6, 1..n + 1),
                )
            })
            .prop_flat_map(|(gaps, sizes)| {
                let mut seq = 0;
                let rows: Vec<i64> = gaps
                    .iter()
                    .map(|g| {
                        seq += g;
                        seq
                    })
                    .collect();
                let mut chunks = Vec::new();
                let mut start = 0;
                for size in sizes {
                    if start >= rows.len() {
                        break;
                    }
                    let end = (start + size).min(rows.len());
                    chunks.push((start, end));
                    start = end;
                }
                if start < rows.len() {
                    chunks.push((start, rows.len()));
                }
                let order: Vec<usize> = (0..chunks.len()).collect();
                let n = chunks.len();
                (
                    Just(rows),
                    Just(chunks),
                    Just(order).prop_shuffle(),
                    proptest::collection::vec(proptest::bool::weighted(0.8), n),
                )
            })
    }

    proptest! {
        #[test]
        fn the_offset_is_always_the_longest_acknowledged_prefix(
            (rows, chunks, order, arrives) in scenario(),
            restart_after in 0usize..8,
        ) {
            let mut ledger = AckLedger::new(0, []);
            ledger.read(rows.iter().copied());
            let mut acked = vec![false; rows.len()];
            // What the store would hold: the offset and every recorded range.
            let mut persisted_offset = 0;
            let mut persisted_ranges: Vec<(i64, i64)> = Vec::new();
            for (step, &c) in order.iter().enumerate() {
                if !arrives[c] {
                    continue;
                }
                let (start, end) = chunks[c];
                let update = ledger.ack(rows[start], rows[end - 1]);
                acked[start..end].iter_mut().for_each(|a| *a = true);
                persisted_ranges.push(update.range);
                if let Some(o) = update.offset {
                    prop_assert!(o > persisted_offset, "the offset never moves backwards");
                    persisted_offset = o;
                }
                let prefix = acked.iter().take_while(|&&a| a).count();
                let expected = if prefix == 0 { 0 } else { rows[prefix - 1] };
                prop_assert_eq!(ledger.offset(), expected);
                for (i, &seq) in rows.iter().enumerate() {
                    prop_assert_eq!(ledger.is_acked(seq), acked[i]);
                }
                if step == restart_after {
                    let mut again = AckLedger::new(persisted_offset, persisted_ranges.clone());
                    again.read(rows.iter().copied());
                    prop_assert_eq!(again.offset(), ledger.offset());
                    for &seq in &rows {
                        prop_assert_eq!(again.is_acked(seq), ledger.is_acked(seq));
                    }
                }
            }
        }
    }
}
