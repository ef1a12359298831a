//! What one app may take of its node: memory and CPU of its connector (enforced inside the
//! connector process), and the size and change rate of its grids (enforced here, on what the
//! connector answers, so they hold whatever the connector sends).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aerogrid_changelog::GridState;
use aerogrid_proto::{
    runtime::v1::GridChanges,
    v1::{Value, value},
};

/// The node's limits for every app it runs.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// A connector's memory, unless the app sets its own.
    pub(crate) memory_bytes: u64,
    /// The most memory an app may ask for its connector.
    pub(crate) max_memory_bytes: u64,
    /// How long user code may run without yielding.
    pub(crate) stall: Duration,
    /// Rows of one grid.
    pub(crate) grid_rows: usize,
    /// All grids of an app, in bytes (roughly: keys, text and 16 bytes per cell).
    pub(crate) grid_bytes: u64,
    /// Row changes per second, over all grids of an app; faster apps are slowed down.
    pub(crate) changes_per_second: f64,
    /// Bytes of a row key.
    pub(crate) key_bytes: usize,
    /// Bytes of one text cell.
    pub(crate) cell_bytes: usize,
    /// The largest changelog record, where the broker does not say (its `max.message.bytes`).
    pub(crate) changelog_record_bytes: usize,
}

/// Why a connector's answer breaks the limits; the app fails with this message.
pub(crate) type Breach = String;

/// Size of an app's grids, kept up to date change by change.
#[derive(Debug, Default)]
pub(crate) struct GridUsage {
    bytes: u64,
}

impl GridUsage {
    /// The usage of recovered grids.
    pub(crate) fn of(state: &GridState) -> Self {
        let bytes = state
            .grids
            .values()
            .flat_map(|grid| grid.rows.iter())
            .map(|(key, values)| row_bytes(key, values))
            .sum();
        Self { bytes }
    }

    /// Checks `changes` against the grids before they are applied, and counts them. What counts
    /// is the answer's final effect, as `GridState::apply_changes` applies it (changes in order;
    /// in each, upserts then deletes): a key upserted or deleted twice counts once.
    pub(crate) fn admit(
        &mut self,
        state: &GridState,
        columns: &HashMap<String, Vec<String>>,
        changes: &[GridChanges],
        limits: &Limits,
    ) -> Result<(), Breach> {
        // Per grid, each key the answer touches and the row it leaves (None: deleted).
        let mut effect: HashMap<&str, HashMap<&str, Option<&[Value]>>> = HashMap::new();
        for change in changes {
            let Some(grid_columns) = columns.get(&change.grid) else {
                return Err(format!(
                    "the app changed grid `{}`, which it does not declare",
                    change.grid
                ));
            };
            let keys = effect.entry(&change.grid).or_default();
            for row in &change.upserted {
                check_row(&change.grid, grid_columns, &row.key, &row.values, limits)?;
                keys.insert(&row.key, Some(&row.values));
            }
            for key in &change.deleted {
                keys.insert(key, None);
            }
        }
        let mut bytes = self.bytes;
        for (grid, keys) in effect {
            let rows = state.grids.get(grid).map(|grid| &grid.rows);
            let mut row_count = rows.map_or(0, HashMap::len);
            for (key, new) in keys {
                match rows.and_then(|rows| rows.get(key)) {
                    Some(old) => bytes = bytes.saturating_sub(row_bytes(key, old)),
                    None if new.is_some() => row_count += 1,
                    None => {}
                }
                match new {
                    Some(values) => bytes += row_bytes(key, values),
                    None if rows.is_some_and(|rows| rows.contains_key(key)) => row_count -= 1,
                    None => {}
                }
            }
            if row_count > limits.grid_rows {
                return Err(format!(
                    "grid `{grid}` grew beyond {} rows, the limit of a grid",
                    limits.grid_rows
                ));
            }
        }
        if bytes > limits.grid_bytes {
            return Err(format!(
                "the app's grids grew beyond {} MiB, the limit of an app",
                limits.grid_bytes >> 20
            ));
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// A row's shape and the sizes of its key and cells.
fn check_row(
    grid: &str,
    columns: &[String],
    key: &str,
    values: &[Value],
    limits: &Limits,
) -> Result<(), Breach> {
    if values.len() != columns.len() {
        return Err(format!(
            "the app sent a row of grid `{grid}` with {} values for {} columns",
            values.len(),
            columns.len()
        ));
    }
    if key.len() > limits.key_bytes {
        return Err(format!(
            "the app sent a row of grid `{grid}` with a key of {} bytes; keys are at most {}",
            key.len(),
            limits.key_bytes
        ));
    }
    for (column, value) in columns.iter().zip(values) {
        if let Some(value::Kind::String(text)) = &value.kind
            && text.len() > limits.cell_bytes
        {
            return Err(format!(
                "the app sent a row of grid `{grid}` whose `{column}` holds {} bytes of text; \
                 a cell holds at most {}",
                text.len(),
                limits.cell_bytes
            ));
        }
    }
    Ok(())
}

fn row_bytes(key: &str, values: &[Value]) -> u64 {
    let cells: usize = values
        .iter()
        .map(|value| match &value.kind {
            Some(value::Kind::String(text)) => 16 + text.len(),
            _ => 16,
        })
        .sum();
    (32 + key.len() + cells) as u64
}

/// A token bucket of row changes: an app may change up to a second's worth at once, then at the
/// limit's pace.
#[derive(Debug)]
pub(crate) struct ChangeRate {
    per_second: f64,
    available: f64,
    refilled: Instant,
}

impl ChangeRate {
    pub(crate) fn new(per_second: f64) -> Self {
        Self { per_second, available: per_second, refilled: Instant::now() }
    }

    /// Spends `changes`; returns how long the app must wait before it may change more.
    pub(crate) fn spend(&mut self, changes: usize) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.available = (self.available + refill).min(self.per_second);
        self.refilled = now;
        self.available -= changes as f64;
        (self.available < 0.0).then(|| Duration::from_secs_f64(-self.available / self.per_second))
    }
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::runtime::v1::GridRow;

    use super::*;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 1 << 30,
            max_memory_bytes: 1 << 30,
            stall: Duration::from_secs(5),
            grid_rows: 3,
            grid_bytes: 1 << 20,
            changes_per_second: 10.0,
            key_bytes: 16,
            cell_bytes: 1 << 20,
            changelog_record_bytes: 1 << 20,
        }
    }

    fn text(value: &str) -> Value {
        Value { kind: Some(value::Kind::String(value.into())) }
    }

    fn upsert(grid: &str, keys: &[&str], cell: &str) -> GridChanges {
        GridChanges {
            grid: grid.into(),
            upserted: keys
                .iter()
                .map(|key| GridRow { key: (*key).into(), values: vec![text(cell)] })
                .collect(),
            deleted: vec![],
        }
    }

    #[test]
    fn rows_count_once_per_key_and_deletes_free_them() {
        let columns = HashMap::from([("g".to_owned(), vec!["c".to_owned()])]);
        let mut state = GridState::default();
        let mut usage = GridUsage::default();
        let changes = vec![upsert("g", &["a", "b", "c"], "x")];
        usage.admit(&state, &columns, &changes, &limits()).unwrap();
        state.apply_changes(changes, &columns);
        // Updating existing rows adds none.
        let update = vec![upsert("g", &["a", "b", "c"], "y")];
        usage.admit(&state, &columns, &update, &limits()).unwrap();
        let breach = usage.admit(&state, &columns, &[upsert("g", &["d"], "x")], &limits());
        assert_eq!(breach.unwrap_err(), "grid `g` grew beyond 3 rows, the limit of a grid");
        let mut replace = upsert("g", &["d"], "x");
        replace.deleted.push("a".into());
        usage.admit(&state, &columns, &[replace], &limits()).unwrap();
    }

    #[test]
    fn bytes_follow_replaced_rows_and_undeclared_grids_are_refused() {
        let columns = HashMap::from([("g".to_owned(), vec!["c".to_owned()])]);
        let mut state = GridState::default();
        let mut usage = GridUsage::default();
        let big = "x".repeat(600 * 1024);
        let changes = vec![upsert("g", &["a"], &big)];
        usage.admit(&state, &columns, &changes, &limits()).unwrap();
        state.apply_changes(changes, &columns);
        // Replacing the row keeps one copy's worth.
        usage.admit(&state, &columns, &[upsert("g", &["a"], &big)], &limits()).unwrap();
        let breach = usage.admit(&state, &columns, &[upsert("g", &["b"], &big)], &limits());
        assert_eq!(breach.unwrap_err(), "the app's grids grew beyond 1 MiB, the limit of an app");
        let breach = usage.admit(&state, &columns, &[upsert("h", &["a"], "x")], &limits());
        assert!(breach.unwrap_err().contains("does not declare"));
    }

    #[test]
    fn a_key_repeated_in_one_answer_counts_once() {
        let columns = HashMap::from([("g".to_owned(), vec!["c".to_owned()])]);
        let mut state = GridState::default();
        let mut usage = GridUsage::default();
        let big = "x".repeat(400 * 1024);
        let changes = vec![upsert("g", &["a", "b"], &big)];
        usage.admit(&state, &columns, &changes, &limits()).unwrap();
        state.apply_changes(changes, &columns);
        // Deleting `a` many times (in one change and across changes) frees it once; the room it
        // seems to free must not let a big `c` in.
        let mut hostile = upsert("g", &["c"], &big);
        hostile.deleted = vec!["a".into(), "a".into(), "a".into()];
        let again = GridChanges { grid: "g".into(), upserted: vec![], deleted: vec!["a".into()] };
        let more = upsert("g", &["d"], &big);
        let breach = usage.admit(&state, &columns, &[hostile, again, more], &limits());
        assert_eq!(breach.unwrap_err(), "the app's grids grew beyond 1 MiB, the limit of an app");
        // Replacing a big row twice with a small one subtracts the old row once.
        let shrink = upsert("g", &["a", "a"], "y");
        usage.admit(&state, &columns, std::slice::from_ref(&shrink), &limits()).unwrap();
        state.apply_changes(vec![shrink], &columns);
        assert_eq!(usage.bytes, GridUsage::of(&state).bytes);
        // New keys spread over two changes of one grid add up against the row limit.
        let breach = usage.admit(
            &state,
            &columns,
            &[upsert("g", &["c", "d"], "z"), upsert("g", &["e"], "z")],
            &limits(),
        );
        assert_eq!(breach.unwrap_err(), "grid `g` grew beyond 3 rows, the limit of a grid");
        // A key upserted then deleted in one answer adds nothing.
        let mut gone = upsert("g", &["c", "d", "e"], "z");
        gone.deleted = vec!["c".into(), "d".into(), "e".into()];
        usage.admit(&state, &columns, &[gone], &limits()).unwrap();
    }

    #[test]
    fn long_keys_and_cells_are_refused() {
        let columns = HashMap::from([("g".to_owned(), vec!["c".to_owned()])]);
        let state = GridState::default();
        let mut usage = GridUsage::default();
        let key = "k".repeat(17);
        let breach = usage.admit(&state, &columns, &[upsert("g", &[&key], "x")], &limits());
        assert!(breach.unwrap_err().contains("a key of 17 bytes; keys are at most 16"));
        let cell = "x".repeat((1 << 20) + 1);
        let breach = usage.admit(&state, &columns, &[upsert("g", &["a"], &cell)], &limits());
        assert!(breach.unwrap_err().contains("`c` holds 1048577 bytes of text"));
    }

    #[test]
    fn the_change_rate_allows_a_second_at_once_then_paces() {
        let mut rate = ChangeRate::new(10.0);
        assert_eq!(rate.spend(10), None);
        let wait = rate.spend(5).expect("over the budget");
        assert!(
            wait >= Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
