//! Reading a changelog without gaps on a broker that skips records.
//!
//! A writer's records after a gap are ignored by [`crate::Replay`], so a reader that misses one
//! record leaves its grids stale for good. tansu's memory engine skips the rest of a record batch
//! when a fetch starts inside it, and a consumer may get records again after a seek. The cursor
//! tells a reader, offset by offset, what to do: apply, pass over (already applied), or seek back
//! and read again; after a few tries, a skip is taken as a real gap (compaction, or records the
//! broker lost) and `Replay` decides what follows.

/// After a skip, read again from this many records back, doubling each time.
const REREAD_BACK: i64 = 16;
/// Tries before a skip is taken as a real gap.
const MAX_REREADS: u32 = 6;

/// The next offset a reader needs.
#[derive(Debug)]
pub(crate) struct Cursor {
    next: i64,
    rereads: u32,
}

/// What to do with a record at some offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Apply it (it is the next one, or a real gap came before it).
    Apply,
    /// Already applied: pass over it.
    Skip,
    /// Records before it are missing: seek to this offset and read again.
    SeekBack(i64),
}

impl Cursor {
    /// A cursor that starts reading at `from`.
    pub(crate) fn new(from: i64) -> Self {
        Self { next: from, rereads: 0 }
    }

    /// The offset the reader needs next.
    pub(crate) fn next(&self) -> i64 {
        self.next
    }

    pub(crate) fn step(&mut self, offset: i64) -> Step {
        if offset < self.next {
            return Step::Skip;
        }
        if offset > self.next && self.rereads < MAX_REREADS {
            self.rereads += 1;
            return Step::SeekBack((self.next - (REREAD_BACK << self.rereads)).max(0));
        }
        self.rereads = 0;
        self.next = offset + 1;
        Step::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_read_again_and_redelivered_records_passed_over() {
        let mut cursor = Cursor::new(100);
        assert_eq!(cursor.step(100), Step::Apply);
        // 101..=104 skipped by the broker: read again from further back each time.
        assert_eq!(cursor.step(105), Step::SeekBack(69));
        assert_eq!(cursor.step(90), Step::Skip);
        assert_eq!(cursor.step(100), Step::Skip);
        assert_eq!(cursor.step(101), Step::Apply);
        assert_eq!(cursor.next(), 102);
    }

    #[test]
    fn a_skip_that_stays_is_a_gap_after_the_last_try() {
        let mut cursor = Cursor::new(10);
        for _ in 0..MAX_REREADS {
            assert!(matches!(cursor.step(20), Step::SeekBack(_)));
        }
        assert_eq!(cursor.step(20), Step::Apply);
        assert_eq!(cursor.next(), 21);
        // The count starts over after a record is applied.
        assert!(matches!(cursor.step(30), Step::SeekBack(_)));
    }
}
