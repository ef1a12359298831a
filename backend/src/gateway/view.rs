//! What one subscriber asked to see (a grid's columns and rows), and what a delta gives the
//! subscribers of one view, computed once and shared.

use crate::LockExt as _;
use std::sync::{Arc, Mutex};

use aerogrid_proto::v1::{
    CellUpdates, ChangelogDelta, Changes, RowChange, SubscribeRequest, row_change,
};
use prost::{Message as _, bytes::Bytes};
use tonic::Status;

use super::feed::MAX_SHARED_VIEWS;

/// Columns and row keys one subscription may name.
pub(super) const MAX_VIEW_COLUMNS: usize = 1_000;
pub(super) const MAX_VIEW_ROW_KEYS: usize = 10_000;

/// What one subscriber asked to see.
pub(super) struct GridView {
    pub(super) columns: Vec<String>,
    pub(super) row_keys: std::collections::HashSet<String>,
    /// Equal for subscribers that asked the same: they share what a delta gives them.
    pub(super) key: Arc<ViewKey>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct ViewKey {
    /// Of the rest: views with different hashes differ, without comparing 10,000 keys.
    pub(super) hash: u64,
    pub(super) grid: String,
    pub(super) columns: Vec<String>,
    /// Sorted.
    pub(super) row_keys: Vec<String>,
}

/// Columns picked from a grid's layout.
pub(super) struct PickedColumns {
    pub(super) names: Vec<String>,
    pub(super) positions: Vec<usize>,
}

impl PickedColumns {
    /// The encoded bytes of a row of this view, without building it.
    pub(super) fn row_bytes(&self, key: &str, values: &[aerogrid_proto::v1::Value]) -> usize {
        let field = |len: usize| 1 + prost::length_delimiter_len(len) + len;
        let cells: usize = self
            .positions
            .iter()
            .map(|&position| field(values.get(position).map_or(0, prost::Message::encoded_len)))
            .sum();
        field(field(key.len()) + cells)
    }

    pub(super) fn pick(
        &self,
        values: &[aerogrid_proto::v1::Value],
    ) -> Vec<aerogrid_proto::v1::Value> {
        self.positions
            .iter()
            .map(|&position| values.get(position).cloned().unwrap_or_default())
            .collect()
    }
}

impl GridView {
    /// About what the view holds: its row keys twice (a set and the sorted key) and columns.
    pub(super) fn bytes(&self) -> usize {
        let keys: usize = self.key.row_keys.iter().map(|key| 2 * (key.len() + 32)).sum();
        let columns: usize = self.columns.iter().map(|column| 2 * (column.len() + 24)).sum();
        256 + keys + columns
    }

    /// The view a request asks for. Columns are deduplicated (each then matches at most one
    /// column of the grid, so a view is never wider than its grid) and both lists are capped:
    /// what a subscriber costs does not grow with what it sends.
    pub(super) fn new(grid: &str, request: &SubscribeRequest) -> Result<Self, Status> {
        if request.columns.len() > MAX_VIEW_COLUMNS || request.row_keys.len() > MAX_VIEW_ROW_KEYS {
            return Err(Status::invalid_argument(format!(
                "a subscription names at most {MAX_VIEW_COLUMNS} columns and {MAX_VIEW_ROW_KEYS} row keys"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let columns: Vec<String> =
            request.columns.iter().filter(|column| seen.insert(column.as_str())).cloned().collect();
        let row_keys: std::collections::HashSet<String> =
            request.row_keys.iter().cloned().collect();
        let mut sorted_keys: Vec<String> = row_keys.iter().cloned().collect();
        sorted_keys.sort();
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (grid, &columns, &sorted_keys).hash(&mut hasher);
            hasher.finish()
        };
        Ok(Self {
            key: Arc::new(ViewKey {
                hash,
                grid: grid.to_owned(),
                columns: columns.clone(),
                row_keys: sorted_keys,
            }),
            columns,
            row_keys,
        })
    }

    pub(super) fn columns(&self, layout: &[String]) -> PickedColumns {
        let positions: Vec<usize> = if self.columns.is_empty() {
            (0..layout.len()).collect()
        } else {
            self.columns
                .iter()
                .filter_map(|wanted| layout.iter().position(|column| column == wanted))
                .collect()
        };
        PickedColumns {
            names: positions.iter().map(|&position| layout[position].clone()).collect(),
            positions,
        }
    }

    pub(super) fn wants_row(&self, key: &str) -> bool {
        self.row_keys.is_empty() || self.row_keys.contains(key)
    }
}

/// One delta as the subscribers of one view see it.
pub(super) struct Prepared {
    pub(super) view: Arc<ViewKey>,
    /// `None` when the delta leaves the grid alone.
    pub(super) touched: Option<Touched>,
}

impl Prepared {
    /// The view's changed rows, if any.
    pub(super) fn changes(&self) -> Option<&PreparedChanges> {
        self.touched.as_ref().and_then(|touched| touched.changes.as_ref())
    }

    pub(super) fn rows(&self) -> &[RowChange] {
        self.changes().map_or(&[], |changes| changes.rows.as_slice())
    }
}

pub(super) struct Touched {
    /// The columns the view gets from the grid's layout in this delta.
    pub(super) columns: Vec<String>,
    /// `None` when no row of the view changed.
    pub(super) changes: Option<PreparedChanges>,
}

pub(super) struct PreparedChanges {
    pub(super) rows: Vec<RowChange>,
    /// `Changes { sequence, rows }`, encoded once for every subscriber that sends it as it is.
    pub(super) encoded: Bytes,
}

/// What `delta` gives subscribers of `view`: computed by the first of them, then shared.
pub(super) fn prepare(
    prepared: &Mutex<Vec<Arc<Prepared>>>,
    sequence: u64,
    delta: &ChangelogDelta,
    view: &GridView,
) -> Arc<Prepared> {
    let mut prepared = prepared.locked();
    if let Some(found) = prepared.iter().find(|candidate| {
        Arc::ptr_eq(&candidate.view, &view.key)
            || (candidate.view.hash == view.key.hash && candidate.view == view.key)
    }) {
        return found.clone();
    }
    let touched = grid_changes(delta, &view.key.grid, view).map(|(columns, rows)| Touched {
        columns,
        changes: (!rows.is_empty()).then(|| {
            let changes = Changes { sequence, rows };
            let encoded = changes.encode_to_vec().into();
            PreparedChanges { rows: changes.rows, encoded }
        }),
    });
    let new = Arc::new(Prepared { view: view.key.clone(), touched });
    // The first few views are shared (and counted in the ring's bytes); a subscriber of any
    // other view gets its own, dropped once taken.
    if prepared.len() < MAX_SHARED_VIEWS {
        prepared.push(new.clone());
    }
    new
}

/// The part of a changelog delta one view sees: the view's columns of the grid's layout and the
/// rows that changed; `None` when the delta leaves the grid alone.
fn grid_changes(
    delta: &ChangelogDelta,
    grid: &str,
    view: &GridView,
) -> Option<(Vec<String>, Vec<RowChange>)> {
    let grid_delta = delta.grids.iter().find(|candidate| candidate.grid == grid)?;
    let picked = view.columns(&grid_delta.columns);
    // Every column the subscriber sees: rows in the changelog are whole.
    let indexes: Vec<u32> = (0..picked.names.len()).map(|index| index as u32).collect();
    let mut rows: Vec<RowChange> = grid_delta
        .upserted
        .iter()
        .filter(|row| view.wants_row(&row.key))
        .map(|row| RowChange {
            key: row.key.clone(),
            change: Some(row_change::Change::Updated(CellUpdates {
                columns: indexes.clone(),
                values: picked.pick(&row.values),
            })),
        })
        .collect();
    rows.extend(grid_delta.deleted.iter().filter(|key| view.wants_row(key)).map(|key| RowChange {
        key: key.clone(),
        change: Some(row_change::Change::Deleted(true)),
    }));
    Some((picked.names, rows))
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{Value, value};

    use super::*;

    #[test]
    fn subscribers_with_the_same_view_share_one_prepared_delta() {
        use aerogrid_proto::v1::{GridDelta, Row};
        let delta = ChangelogDelta {
            grids: vec![GridDelta {
                grid: "g".into(),
                columns: vec!["units".into(), "price".into()],
                upserted: vec![Row {
                    key: "a".into(),
                    values: vec![
                        Value { kind: Some(value::Kind::Int(1)) },
                        Value { kind: Some(value::Kind::Int(2)) },
                    ],
                }],
                deleted: vec!["b".into()],
            }],
            offsets: vec![],
            counts: None,
        };
        let shared = Mutex::default();
        let everything = || GridView::new("g", &SubscribeRequest::default()).unwrap();
        let first = prepare(&shared, 5, &delta, &everything());
        let second = prepare(&shared, 5, &delta, &everything());
        assert!(Arc::ptr_eq(&first, &second));
        let price_only = SubscribeRequest { columns: vec!["price".into()], ..Default::default() };
        let narrow = prepare(&shared, 5, &delta, &GridView::new("g", &price_only).unwrap());
        assert!(!Arc::ptr_eq(&first, &narrow));
        let touched = narrow.touched.as_ref().unwrap();
        assert_eq!(touched.columns, ["price"]);
        let changes = Changes::decode(touched.changes.as_ref().unwrap().encoded.clone()).unwrap();
        assert_eq!(changes.sequence, 5);
        assert_eq!(changes.rows.len(), 2);
        assert_eq!(changes.rows, touched.changes.as_ref().unwrap().rows);
        // A grid the delta leaves alone.
        let other =
            prepare(&shared, 5, &delta, &GridView::new("h", &SubscribeRequest::default()).unwrap());
        assert!(other.touched.is_none());
    }

    #[test]
    fn a_view_picks_its_columns_in_its_order_and_skips_unknown_ones() {
        let request = SubscribeRequest {
            columns: vec!["price".into(), "nope".into(), "units".into()],
            row_keys: vec!["a".into()],
            ..Default::default()
        };
        let view = GridView::new("g", &request).unwrap();
        let picked = view.columns(&["units".into(), "name".into(), "price".into()]);
        assert_eq!(picked.names, ["price", "units"]);
        assert_eq!(picked.positions, [2, 0]);
        assert!(view.wants_row("a") && !view.wants_row("b"));
    }

    #[test]
    fn a_view_is_never_wider_than_its_grid_nor_longer_than_its_caps() {
        // One column named over and over (the 4 MB request that took 3 GB) is one column.
        let request = SubscribeRequest {
            columns: vec!["units".into(); MAX_VIEW_COLUMNS],
            ..Default::default()
        };
        let view = GridView::new("g", &request).unwrap();
        assert_eq!(view.columns(&["units".into(), "price".into()]).names, ["units"]);
        for too_many in [
            SubscribeRequest {
                columns: vec!["a".into(); MAX_VIEW_COLUMNS + 1],
                ..Default::default()
            },
            SubscribeRequest {
                row_keys: vec!["k".into(); MAX_VIEW_ROW_KEYS + 1],
                ..Default::default()
            },
        ] {
            let refused = GridView::new("g", &too_many).err().expect("refused");
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        }
    }
}
