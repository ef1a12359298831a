//! A grid as a subscriber holds it: the snapshot, then each batch of changes applied to it. One
//! model for every Rust client (the browser preview, `aerogrid watch`, `aerogrid snapshot`), so
//! they all read a subscription the same way; what each shows of a change (a flash, a trend) is
//! its own.

use std::{collections::BTreeMap, sync::Arc};

use crate::v1::{Value, row_change, subscribe_response, value};

/// Rows by key, each one value per column (a cell never written is null).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GridModel {
    columns: Vec<String>,
    rows: BTreeMap<Arc<str>, Vec<Value>>,
    sequence: u64,
}

/// What applying an event did.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The grid was replaced.
    Snapshot,
    /// These cells were written (their value may be the one they had).
    Written(Vec<Written>),
    /// Nothing changed (a heartbeat).
    Nothing,
}

/// A cell a change wrote, with its value before.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub key: Arc<str>,
    pub column: usize,
    pub before: Value,
}

impl GridModel {
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn rows(&self) -> &BTreeMap<Arc<str>, Vec<Value>> {
        &self.rows
    }

    /// The feed's sequence number of the last event applied.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn apply(&mut self, event: subscribe_response::Event) -> Applied {
        match event {
            subscribe_response::Event::Snapshot(snapshot) => {
                self.columns = snapshot.columns;
                let width = self.columns.len();
                self.rows = snapshot
                    .rows
                    .into_iter()
                    .map(|row| {
                        let mut values = row.values;
                        values.resize(width, Value::default());
                        (Arc::from(row.key), values)
                    })
                    .collect();
                self.sequence = snapshot.sequence;
                Applied::Snapshot
            }
            subscribe_response::Event::Changes(changes) => {
                let width = self.columns.len();
                let mut written = Vec::new();
                for change in changes.rows {
                    match change.change {
                        Some(row_change::Change::Updated(cells)) => {
                            let key: Arc<str> = Arc::from(change.key);
                            let row = self
                                .rows
                                .entry(key.clone())
                                .or_insert_with(|| vec![Value::default(); width]);
                            for (column, value) in cells.columns.into_iter().zip(cells.values) {
                                let column = column as usize;
                                let Some(cell) = row.get_mut(column) else { continue };
                                let before = std::mem::replace(cell, value);
                                written.push(Written { key: key.clone(), column, before });
                            }
                        }
                        Some(row_change::Change::Deleted(_)) | None => {
                            self.rows.remove(change.key.as_str());
                        }
                    }
                }
                self.sequence = changes.sequence;
                Applied::Written(written)
            }
            subscribe_response::Event::Heartbeat(heartbeat) => {
                self.sequence = heartbeat.sequence;
                Applied::Nothing
            }
        }
    }
}

/// A value as text: empty for null, numbers and booleans as Rust writes them.
pub fn display(value: &Value) -> String {
    match &value.kind {
        None | Some(value::Kind::Null(_)) => String::new(),
        Some(value::Kind::Bool(boolean)) => boolean.to_string(),
        Some(value::Kind::Int(int)) => int.to_string(),
        Some(value::Kind::Float(float)) => float.to_string(),
        Some(value::Kind::String(text)) => text.clone(),
    }
}

/// A number's value (integers as floats), else None.
pub fn number(value: &Value) -> Option<f64> {
    match value.kind {
        Some(value::Kind::Int(int)) => Some(int as f64),
        Some(value::Kind::Float(float)) => Some(float),
        _ => None,
    }
}

/// Orders values the way a person expects: numbers by value first, then text.
pub fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => match (&a.kind, &b.kind) {
            (Some(value::Kind::String(x)), Some(value::Kind::String(y))) => x.cmp(y),
            _ => display(a).cmp(&display(b)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{CellUpdates, Changes, Heartbeat, Row, RowChange, Snapshot};

    fn int(value: i64) -> Value {
        Value { kind: Some(value::Kind::Int(value)) }
    }

    fn updated(key: &str, columns: Vec<u32>, values: Vec<Value>) -> RowChange {
        RowChange {
            key: key.into(),
            change: Some(row_change::Change::Updated(CellUpdates { columns, values })),
        }
    }

    #[test]
    fn a_snapshot_then_changes_make_the_grid() {
        let mut grid = GridModel::default();
        let snapshot = Snapshot {
            columns: vec!["units".into(), "price".into()],
            rows: vec![Row { key: "a".into(), values: vec![int(1)] }],
            sequence: 7,
        };
        assert_eq!(grid.apply(subscribe_response::Event::Snapshot(snapshot)), Applied::Snapshot);
        assert_eq!(grid.rows()["a"], vec![int(1), Value::default()], "short rows padded");
        let changes = Changes {
            rows: vec![
                updated("a", vec![1, 9], vec![int(5), int(6)]),
                updated("b", vec![0], vec![int(2)]),
                RowChange { key: "a".into(), change: Some(row_change::Change::Deleted(true)) },
            ],
            sequence: 8,
        };
        let Applied::Written(written) = grid.apply(subscribe_response::Event::Changes(changes))
        else {
            panic!("changes write cells");
        };
        // Column 9 does not exist: skipped, not a panic.
        assert_eq!(written.len(), 2);
        assert_eq!(written[0], Written { key: "a".into(), column: 1, before: Value::default() });
        assert_eq!(grid.rows().keys().map(|key| &**key).collect::<Vec<_>>(), ["b"]);
        assert_eq!(grid.rows()["b"], vec![int(2), Value::default()]);
        let heartbeat = Heartbeat { sequence: 9 };
        assert_eq!(grid.apply(subscribe_response::Event::Heartbeat(heartbeat)), Applied::Nothing);
        assert_eq!(grid.sequence(), 9);
    }

    #[test]
    fn values_show_and_sort_as_people_expect() {
        let text = |text: &str| Value { kind: Some(value::Kind::String(text.into())) };
        let float = Value { kind: Some(value::Kind::Float(1.5)) };
        assert_eq!(display(&Value::default()), "");
        assert_eq!(display(&float), "1.5");
        let mut values = vec![text("b"), int(2), text("a"), float.clone(), Value::default()];
        values.sort_by(compare);
        assert_eq!(values, vec![float, int(2), Value::default(), text("a"), text("b")]);
    }
}
