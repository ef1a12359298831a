//! The latest row per key: how deltas merge, in a feed's burst and in a subscriber's unsent
//! changes alike (rows in the changelog are whole, so the latest row is every cell's latest
//! value).

use std::collections::HashMap;

use aerogrid_proto::v1::{Row, RowChange};

/// A row with a key.
pub(super) trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for Row {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Keyed for RowChange {
    fn key(&self) -> &str {
        &self.key
    }
}

/// Rows in the order their keys first came, each the latest given for its key; looked up by
/// key, not scanned (a burst may merge deltas of many thousand rows each).
pub(super) struct LatestByKey<T> {
    rows: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T: Keyed> LatestByKey<T> {
    pub(super) fn new(rows: impl IntoIterator<Item = T>) -> Self {
        let mut latest = Self { rows: Vec::new(), index: HashMap::new() };
        latest.extend(rows);
        latest
    }

    /// Each row replaces the one of its key, or comes last.
    pub(super) fn extend(&mut self, rows: impl IntoIterator<Item = T>) {
        for row in rows {
            match self.index.get(row.key()) {
                Some(&position) => self.rows[position] = row,
                None => {
                    self.index.insert(row.key().to_owned(), self.rows.len());
                    self.rows.push(row);
                }
            }
        }
    }

    /// Drops the rows of `keys`.
    pub(super) fn remove<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        let gone: std::collections::HashSet<&str> = keys.into_iter().collect();
        if gone.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        self.index.clear();
        self.extend(rows.into_iter().filter(|row| !gone.contains(row.key())));
    }

    pub(super) fn into_rows(self) -> Vec<T> {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, version: u8) -> Row {
        Row { key: key.into(), values: vec![Default::default(); version.into()] }
    }

    #[test]
    fn the_latest_row_per_key_in_first_seen_order() {
        let mut latest = LatestByKey::new([row("a", 1), row("b", 1), row("a", 2)]);
        latest.extend([row("c", 1), row("b", 3)]);
        latest.remove(["a"]);
        latest.extend([row("a", 4)]);
        assert_eq!(latest.into_rows(), [row("b", 3), row("c", 1), row("a", 4)]);
    }
}
