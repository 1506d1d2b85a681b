//! Which chunks of a compressed day a scan must read: the conditions a query puts on a
//! timestamp column (`time >= $1 AND time < $2`) narrowed to one inclusive range, tested against
//! each chunk's stored minimum and maximum.

/// A comparison of a column with a value, numbered as PostgreSQL's btree strategies
/// (`BTLessStrategyNumber` = 1 … `BTGreaterStrategyNumber` = 5), so a strategy found in an
/// operator family converts with [`Strategy::from_btree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Less = 1,
    LessEqual = 2,
    Equal = 3,
    GreaterEqual = 4,
    Greater = 5,
}

impl Strategy {
    /// The strategy of btree strategy number `n`; None for any other number.
    pub fn from_btree(n: i32) -> Option<Strategy> {
        Some(match n {
            1 => Strategy::Less,
            2 => Strategy::LessEqual,
            3 => Strategy::Equal,
            4 => Strategy::GreaterEqual,
            5 => Strategy::Greater,
            _ => return None,
        })
    }

    /// Its btree strategy number.
    pub fn btree(self) -> i32 {
        self as i32
    }

    /// The same condition with its operands swapped: `v < column` is `column > v`.
    pub fn commuted(self) -> Strategy {
        match self {
            Strategy::Less => Strategy::Greater,
            Strategy::LessEqual => Strategy::GreaterEqual,
            Strategy::Equal => Strategy::Equal,
            Strategy::GreaterEqual => Strategy::LessEqual,
            Strategy::Greater => Strategy::Less,
        }
    }
}

/// Inclusive bounds on an integer column (timestamps in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

impl Range {
    /// No condition: every value.
    pub const ALL: Range = Range { lo: i64::MIN, hi: i64::MAX };

    /// Narrows the range by `column <strategy> v`.
    pub fn apply(&mut self, strategy: Strategy, v: i64) {
        match strategy {
            Strategy::Less => self.hi = self.hi.min(v.saturating_sub(1)),
            Strategy::LessEqual => self.hi = self.hi.min(v),
            Strategy::Equal => {
                self.lo = self.lo.max(v);
                self.hi = self.hi.min(v);
            }
            Strategy::GreaterEqual => self.lo = self.lo.max(v),
            Strategy::Greater => self.lo = self.lo.max(v.saturating_add(1)),
        }
    }

    /// Whether no value satisfies the conditions.
    pub fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// Whether any condition narrowed it.
    pub fn is_bounded(&self) -> bool {
        *self != Range::ALL
    }

    /// Whether values between `min` and `max` (an unknown end is unbounded) can be in range.
    pub fn overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        !(max.is_some_and(|m| m < self.lo) || min.is_some_and(|m| m > self.hi))
    }

    /// Whether `v` is in range; NULL is (the executor re-checks every condition).
    pub fn contains(&self, v: Option<i64>) -> bool {
        v.is_none_or(|v| v >= self.lo && v <= self.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn narrowed(conditions: &[(Strategy, i64)]) -> Range {
        let mut r = Range::ALL;
        for &(s, v) in conditions {
            r.apply(s, v);
        }
        r
    }

    #[test]
    fn half_open_interval() {
        let r = narrowed(&[(Strategy::GreaterEqual, 10), (Strategy::Less, 20)]);
        assert_eq!(r, Range { lo: 10, hi: 19 });
        assert!(r.contains(Some(10)) && r.contains(Some(19)));
        assert!(!r.contains(Some(9)) && !r.contains(Some(20)));
        assert!(r.contains(None));
        assert!(r.is_bounded() && !r.is_empty());
    }

    #[test]
    fn strict_and_inclusive_bounds() {
        assert_eq!(narrowed(&[(Strategy::Greater, 10), (Strategy::LessEqual, 20)]), Range { lo: 11, hi: 20 });
        assert_eq!(narrowed(&[(Strategy::Equal, 7)]), Range { lo: 7, hi: 7 });
        // The tighter of two conditions on the same side wins, whatever their order.
        assert_eq!(narrowed(&[(Strategy::Less, 50), (Strategy::Less, 30)]), narrowed(&[(Strategy::Less, 30), (Strategy::Less, 50)]));
    }

    #[test]
    fn contradictions_are_empty() {
        assert!(narrowed(&[(Strategy::Greater, 5), (Strategy::Less, 5)]).is_empty());
        assert!(narrowed(&[(Strategy::Equal, 1), (Strategy::Equal, 2)]).is_empty());
        assert!(!Range::ALL.is_empty() && !Range::ALL.is_bounded());
    }

    #[test]
    fn extremes_saturate() {
        assert_eq!(narrowed(&[(Strategy::Less, i64::MIN)]).hi, i64::MIN);
        assert_eq!(narrowed(&[(Strategy::Greater, i64::MAX)]).lo, i64::MAX);
    }

    #[test]
    fn chunk_overlap() {
        let r = narrowed(&[(Strategy::GreaterEqual, 100), (Strategy::Less, 200)]);
        assert!(r.overlaps(Some(150), Some(300)));
        assert!(r.overlaps(Some(0), Some(100)));
        assert!(!r.overlaps(Some(0), Some(99)));
        assert!(!r.overlaps(Some(200), Some(300)));
        assert!(r.overlaps(None, None), "a chunk without statistics is read");
        assert!(r.overlaps(None, Some(100)) && !r.overlaps(Some(200), None));
    }

    #[test]
    fn strategies_round_trip_and_commute() {
        for n in 1..=5 {
            let s = Strategy::from_btree(n).expect("1..=5 are btree strategies");
            assert_eq!(s.btree(), n);
            assert_eq!(s.commuted().commuted(), s);
        }
        assert_eq!(Strategy::from_btree(0), None);
        assert_eq!(Strategy::from_btree(6), None);
        assert_eq!(Strategy::Less.commuted(), Strategy::Greater);
        assert_eq!(Strategy::Equal.commuted(), Strategy::Equal);
    }
}
