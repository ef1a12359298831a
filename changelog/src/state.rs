//! The grids of one app: built from connector results, replayed from the changelog, and copied
//! into snapshots.

use std::collections::{BTreeMap, HashMap};

use aerogrid_proto::{
    runtime::v1::GridChanges,
    v1::{ChangelogDelta, GridDelta, InputOffset, Row, SnapshotPart, StatusCounts, Value},
};

/// Input positions: the next offset to read per (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grid {
    pub columns: Vec<String>,
    pub rows: HashMap<String, Vec<Value>>,
}

/// Every grid of an app, the input offsets they reflect, and the app's status counters there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GridState {
    pub grids: BTreeMap<String, Grid>,
    pub offsets: Offsets,
    /// None when the records carried none (written before they did).
    pub counts: Option<StatusCounts>,
}

impl GridState {
    /// Applies what a connector returned; returns the changelog delta for it.
    pub fn apply_changes(
        &mut self,
        changes: Vec<GridChanges>,
        columns: &HashMap<String, Vec<String>>,
    ) -> Vec<GridDelta> {
        let mut deltas = Vec::with_capacity(changes.len());
        for change in changes {
            let grid_columns = columns.get(&change.grid).cloned().unwrap_or_default();
            let grid = self
                .grids
                .entry(change.grid.clone())
                .or_insert_with(|| Grid { columns: grid_columns.clone(), rows: HashMap::new() });
            let mut delta = GridDelta {
                grid: change.grid,
                columns: grid_columns,
                upserted: Vec::new(),
                deleted: Vec::new(),
            };
            for row in change.upserted {
                grid.rows.insert(row.key.clone(), row.values.clone());
                delta.upserted.push(Row { key: row.key, values: row.values });
            }
            for key in change.deleted {
                grid.rows.remove(&key);
                delta.deleted.push(key);
            }
            deltas.push(delta);
        }
        deltas
    }

    fn apply_grid_delta(&mut self, delta: &GridDelta) {
        let grid = self.grids.entry(delta.grid.clone()).or_default();
        if !delta.columns.is_empty() {
            grid.columns.clone_from(&delta.columns);
        }
        for row in &delta.upserted {
            grid.rows.insert(row.key.clone(), row.values.clone());
        }
        for key in &delta.deleted {
            grid.rows.remove(key);
        }
    }

    /// Replays one changelog delta.
    pub fn apply_delta(&mut self, delta: &ChangelogDelta) {
        for grid in &delta.grids {
            self.apply_grid_delta(grid);
        }
        set_offsets(&mut self.offsets, &delta.offsets);
        if delta.counts.is_some() {
            self.counts = delta.counts;
        }
    }

    /// Replays a complete snapshot (all its parts): it replaces the state.
    pub fn replace_with_snapshot(&mut self, parts: &[SnapshotPart]) {
        self.grids.clear();
        self.offsets.clear();
        self.counts = parts.iter().find_map(|part| part.counts);
        for part in parts {
            for grid in &part.grids {
                self.apply_grid_delta(grid);
            }
            set_offsets(&mut self.offsets, &part.offsets);
        }
    }

    /// The state as the parts of snapshot `snapshot_id`, each record at most
    /// `max_record_bytes`.
    pub fn snapshot_parts(
        &self,
        snapshot_id: u64,
        max_record_bytes: usize,
    ) -> Result<Vec<SnapshotPart>, crate::RowTooLarge> {
        crate::split::snapshot_parts(
            self.grids.iter(),
            offsets_to_wire(&self.offsets),
            self.counts,
            snapshot_id,
            max_record_bytes,
        )
    }

    /// Puts every grid in the column layout the running version declares (matching columns by
    /// name; new columns start empty) and drops grids it no longer declares.
    pub fn reshape(&mut self, columns: &HashMap<String, Vec<String>>) {
        self.grids.retain(|name, _| columns.contains_key(name));
        for (name, wanted) in columns {
            let grid = self.grids.entry(name.clone()).or_default();
            if &grid.columns == wanted {
                continue;
            }
            let positions: Vec<Option<usize>> = wanted
                .iter()
                .map(|column| grid.columns.iter().position(|existing| existing == column))
                .collect();
            for values in grid.rows.values_mut() {
                *values = positions
                    .iter()
                    .map(|position| {
                        position.and_then(|index| values.get(index).cloned()).unwrap_or(Value {
                            kind: Some(aerogrid_proto::v1::value::Kind::Null(true)),
                        })
                    })
                    .collect();
            }
            grid.columns.clone_from(wanted);
        }
    }
}

pub fn offsets_to_wire(offsets: &Offsets) -> Vec<InputOffset> {
    offsets
        .iter()
        .map(|((topic, partition), offset)| InputOffset {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect()
}

fn set_offsets(offsets: &mut Offsets, wire: &[InputOffset]) {
    for offset in wire {
        offsets.insert((offset.topic.clone(), offset.partition), offset.offset);
    }
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::{runtime::v1::GridRow, v1::value};

    use super::*;

    fn int(value: i64) -> Value {
        Value { kind: Some(value::Kind::Int(value)) }
    }

    #[test]
    fn snapshots_round_trip_through_parts() {
        let mut state = GridState::default();
        let columns = HashMap::from([
            ("g".to_owned(), vec!["n".to_owned()]),
            ("h".to_owned(), vec!["m".to_owned()]),
        ]);
        let rows = (0..100)
            .map(|index| GridRow { key: format!("k{index}"), values: vec![int(index)] })
            .collect();
        state.apply_changes(
            vec![
                GridChanges { grid: "g".into(), upserted: rows, deleted: vec![] },
                GridChanges { grid: "h".into(), upserted: vec![], deleted: vec![] },
            ],
            &columns,
        );
        state.offsets.insert(("orders".into(), 0), 42);
        state.counts = Some(StatusCounts { records_in: 42, bad_records: 2 });
        let parts = state.snapshot_parts(9, 400).unwrap();
        let count = parts.len();
        assert!(count >= 2, "{count}");
        assert!(parts.iter().all(|part| part.count as usize == count && part.offsets.len() == 1));
        assert!(parts.iter().all(|part| prost::Message::encoded_len(part) <= 400));
        let mut restored = GridState::default();
        restored.replace_with_snapshot(&parts);
        assert_eq!(restored, state);
    }

    #[test]
    fn deltas_replayed_twice_give_the_same_grids() {
        let mut state = GridState::default();
        let columns = HashMap::from([("g".to_owned(), vec!["n".to_owned()])]);
        let deltas = state.apply_changes(
            vec![GridChanges {
                grid: "g".into(),
                upserted: vec![GridRow { key: "a".into(), values: vec![int(1)] }],
                deleted: vec!["b".into()],
            }],
            &columns,
        );
        let delta = ChangelogDelta {
            grids: deltas,
            offsets: vec![InputOffset { topic: "t".into(), partition: 0, offset: 5 }],
            counts: Some(StatusCounts { records_in: 5, bad_records: 1 }),
        };
        let mut once = GridState::default();
        once.apply_delta(&delta);
        let mut twice = once.clone();
        twice.apply_delta(&delta);
        assert_eq!(once, twice);
        assert_eq!(once.offsets[&("t".to_owned(), 0)], 5);
        assert_eq!(once.counts, delta.counts);
    }
}
