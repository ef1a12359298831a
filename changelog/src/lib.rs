//! An app's changelog topic: what its records mean and how readers apply them.
//!
//! The runtime node writes it (grid changes with the input offsets they reflect, snapshots, and
//! a fence when a node takes an app over); the node recovers from it and the gateway
//! materialises grids from it. Both apply records through [`Replay`], so they agree.
//!
//! Invariants:
//! - Records apply in offset order; applying a delta twice gives the same grids (rows are whole).
//! - A record of a lease epoch older than one already applied is ignored: it comes from a node
//!   that lost the app.
//! - A snapshot replaces the state only once all its parts are read.
//! - A writer's records are numbered from its fence; a record numbered below the next one
//!   expected was applied already (a retried write) and is passed over; after a gap (a write
//!   that failed while later ones landed) the rest of that writer's records are ignored.

mod cursor;
mod reader;
mod split;
mod state;

use aerogrid_proto::v1::{ChangelogDelta, ChangelogRecord, SnapshotPart, changelog_record};

use cursor::{Cursor, Step};
pub use reader::{ChangelogReader, Read, ReadError};
pub use split::{RowTooLarge, split_delta};
pub use state::{Grid, GridState, Offsets, offsets_to_wire};

/// The changelog topic of an app.
pub fn topic_name(app_id: uuid::Uuid) -> String {
    format!("aerogrid.changelog.{app_id}")
}

/// Grid state built by applying changelog records in offset order.
#[derive(Debug, Default)]
pub struct Replay {
    pub state: GridState,
    newest_epoch: u64,
    snapshot: Vec<SnapshotPart>,
    /// The sequence number the current writer's next record must have, once known.
    next_sequence: Option<u64>,
    /// The current writer's records had a gap: the rest of them are ignored.
    after_gap: bool,
}

/// What applying one record did.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Nothing: an older epoch's record, a fence, or a snapshot part before its last.
    Nothing,
    /// These grid changes.
    Delta(ChangelogDelta),
    /// A complete snapshot replaced the state.
    Snapshot,
}

impl Replay {
    pub fn apply(&mut self, record: ChangelogRecord) -> Applied {
        if record.epoch < self.newest_epoch {
            return Applied::Nothing;
        }
        self.newest_epoch = record.epoch;
        if matches!(record.kind, Some(changelog_record::Kind::Fence(_))) {
            // A new writer: its records are numbered from here.
            self.next_sequence = Some(1);
            self.after_gap = false;
            return Applied::Nothing;
        }
        if record.sequence != 0 {
            // (Unnumbered records, written before numbering existed, are taken as they come.)
            let expected = *self.next_sequence.get_or_insert(record.sequence);
            if record.sequence < expected {
                // Written twice (a producer's retry, or a reader's re-read): applied already.
                return Applied::Nothing;
            }
            if record.sequence > expected {
                self.after_gap = true;
            }
            self.next_sequence = Some(record.sequence + 1);
        }
        if self.after_gap {
            return Applied::Nothing;
        }
        match record.kind {
            Some(changelog_record::Kind::Delta(delta)) => {
                self.state.apply_delta(&delta);
                Applied::Delta(delta)
            }
            Some(changelog_record::Kind::Snapshot(part)) => {
                if part.index == 0 {
                    self.snapshot.clear();
                }
                let complete = part.index + 1 == part.count;
                self.snapshot.push(part);
                if !complete {
                    return Applied::Nothing;
                }
                self.state.replace_with_snapshot(&self.snapshot);
                self.snapshot.clear();
                Applied::Snapshot
            }
            Some(changelog_record::Kind::Fence(_)) | None => Applied::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{Fence, GridDelta, Row, Value, value};

    use super::*;

    fn delta(epoch: u64, key: &str, n: i64) -> ChangelogRecord {
        numbered(epoch, 0, key, n)
    }

    fn numbered(epoch: u64, sequence: u64, key: &str, n: i64) -> ChangelogRecord {
        ChangelogRecord {
            epoch,
            sequence,
            kind: Some(changelog_record::Kind::Delta(ChangelogDelta {
                grids: vec![GridDelta {
                    grid: "g".into(),
                    columns: vec!["n".into()],
                    upserted: vec![Row {
                        key: key.into(),
                        values: vec![Value { kind: Some(value::Kind::Int(n)) }],
                    }],
                    deleted: vec![],
                }],
                offsets: vec![],
                counts: None,
            })),
        }
    }

    fn fence(epoch: u64) -> ChangelogRecord {
        ChangelogRecord {
            epoch,
            kind: Some(changelog_record::Kind::Fence(Fence { node_id: "n".into() })),
            sequence: 0,
        }
    }

    #[test]
    fn a_writers_records_after_a_gap_are_ignored_until_the_next_fence() {
        let mut replay = Replay::default();
        replay.apply(fence(1));
        assert!(matches!(replay.apply(numbered(1, 1, "a", 1)), Applied::Delta(_)));
        // Record 2 failed to reach the broker; 3 landed and may build on it.
        assert_eq!(replay.apply(numbered(1, 3, "a", 3)), Applied::Nothing);
        assert_eq!(replay.apply(numbered(1, 4, "b", 4)), Applied::Nothing);
        // A restart writes a fence and numbers again.
        replay.apply(fence(1));
        assert!(matches!(replay.apply(numbered(1, 1, "a", 2)), Applied::Delta(_)));
        let grid = &replay.state.grids["g"];
        assert_eq!(grid.rows.len(), 1);
        assert_eq!(grid.rows["a"][0].kind, Some(value::Kind::Int(2)));
    }

    #[test]
    fn records_written_twice_apply_once() {
        let mut replay = Replay::default();
        replay.apply(fence(1));
        let mut applied = Vec::new();
        // A retried batch lands again after the first copy: fence, 1, 2, 1, 2, 3.
        for (sequence, n) in [(1, 1), (2, 2), (1, 1), (2, 2), (3, 3)] {
            if let Applied::Delta(_) = replay.apply(numbered(1, sequence, &format!("k{n}"), n)) {
                applied.push(sequence);
            }
        }
        assert_eq!(applied, [1, 2, 3]);
        assert!(!replay.after_gap);
        // The writer goes on after the duplicates: nothing was taken as a gap.
        assert!(matches!(replay.apply(numbered(1, 4, "k4", 4)), Applied::Delta(_)));
        assert_eq!(replay.state.grids["g"].rows.len(), 4);
    }

    #[test]
    fn records_of_an_older_epoch_are_ignored() {
        let mut replay = Replay::default();
        assert!(matches!(replay.apply(delta(2, "a", 1)), Applied::Delta(_)));
        let fence = fence(3);
        assert_eq!(replay.apply(fence), Applied::Nothing);
        // The node that lost the lease writes on: ignored.
        assert_eq!(replay.apply(delta(2, "a", 99)), Applied::Nothing);
        assert!(matches!(replay.apply(delta(3, "b", 2)), Applied::Delta(_)));
        let grid = &replay.state.grids["g"];
        assert_eq!(grid.rows.len(), 2);
        assert_eq!(grid.rows["a"][0].kind, Some(value::Kind::Int(1)));
    }
}
