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
    use crate::v1::{CellUpdates, Changes, Heartbeat, Row, RowChange, Snapshot, SubscribeResponse};

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

    /// The stream of `excel/test/fixtures/grid-stream.bin`: every kind of value and change.
    fn excel_fixture_stream() -> Vec<SubscribeResponse> {
        let text = |text: &str| Value { kind: Some(value::Kind::String(text.into())) };
        let float = |float: f64| Value { kind: Some(value::Kind::Float(float)) };
        let boolean = |boolean: bool| Value { kind: Some(value::Kind::Bool(boolean)) };
        let null = Value { kind: Some(value::Kind::Null(true)) };
        let event = |event| SubscribeResponse { event: Some(event) };
        vec![
            event(subscribe_response::Event::Snapshot(Snapshot {
                sequence: 41,
                columns: vec!["units".into(), "price".into(), "note".into(), "open".into()],
                rows: vec![
                    Row { key: "Widget 10".into(), values: vec![int(10), float(2.5), text("a")] },
                    Row { key: "Widget 2".into(), values: vec![int(-3), float(0.1)] },
                    Row { key: "café ☕".into(), values: vec![int(1 << 40), null.clone()] },
                    Row { key: "gone".into(), values: vec![int(1)] },
                ],
            })),
            event(subscribe_response::Event::Changes(Changes {
                sequence: 42,
                rows: vec![
                    updated(
                        "Widget 2",
                        vec![0, 3],
                        vec![int(9_007_199_254_740_991), boolean(true)],
                    ),
                    updated(
                        "new",
                        vec![2, 1],
                        vec![text("line\nbreak \"quoted\""), float(-2.5e-3)],
                    ),
                    RowChange {
                        key: "gone".into(),
                        change: Some(row_change::Change::Deleted(true)),
                    },
                    updated("café ☕", vec![1, 7], vec![float(1e21), int(5)]),
                ],
            })),
            event(subscribe_response::Event::Heartbeat(Heartbeat { sequence: 43 })),
            event(subscribe_response::Event::Changes(Changes {
                sequence: 44,
                rows: vec![updated("Widget 10", vec![3], vec![boolean(false)])],
            })),
        ]
    }

    fn json_of(value: &Value) -> serde_json::Value {
        match &value.kind {
            None | Some(value::Kind::Null(_)) => serde_json::Value::Null,
            Some(value::Kind::Bool(boolean)) => (*boolean).into(),
            Some(value::Kind::Int(int)) => (*int).into(),
            Some(value::Kind::Float(float)) => (*float).into(),
            Some(value::Kind::String(text)) => text.clone().into(),
        }
    }

    /// The Excel add-in's JavaScript model is checked against these bytes and this grid
    /// (`excel/test/grpcweb.test.mjs`); `UPDATE_EXPECT=1` writes them.
    #[test]
    fn the_excel_fixture_is_this_models_reading_of_its_stream() {
        use prost::Message as _;
        let stream = excel_fixture_stream();
        let mut bytes = Vec::new();
        let mut grid = GridModel::default();
        for message in stream {
            let encoded = message.encode_to_vec();
            bytes.push(0);
            bytes.extend((encoded.len() as u32).to_be_bytes());
            bytes.extend(&encoded);
            grid.apply(message.event.unwrap());
        }
        let rows: serde_json::Map<_, _> = grid
            .rows()
            .iter()
            .map(|(key, values)| (key.to_string(), values.iter().map(json_of).collect()))
            .collect();
        let expected = serde_json::json!({
            "columns": grid.columns(), "rows": rows, "sequence": grid.sequence(),
        });
        let expected = serde_json::to_string_pretty(&expected).unwrap() + "\n";
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../excel/test/fixtures");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::create_dir_all(&fixtures).unwrap();
            std::fs::write(fixtures.join("grid-stream.bin"), &bytes).unwrap();
            std::fs::write(fixtures.join("grid-stream.json"), &expected).unwrap();
        }
        let stale = "excel/test/fixtures is not this model's stream: run `UPDATE_EXPECT=1 cargo test -p aerogrid-proto`";
        assert!(std::fs::read(fixtures.join("grid-stream.bin")).ok() == Some(bytes), "{stale}");
        let committed = std::fs::read_to_string(fixtures.join("grid-stream.json")).ok();
        assert!(committed == Some(expected), "{stale}");
    }
}
