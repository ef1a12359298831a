//! Changelog records cut to the broker's size limit: a snapshot or a delta of any size becomes
//! records no larger than the broker takes (its `max.message.bytes`).

use aerogrid_proto::v1::{ChangelogDelta, GridDelta, InputOffset, Row, SnapshotPart, StatusCounts};
use prost::Message as _;

/// Bytes of each record kept free for what wraps its grids: epoch, sequence, the oneof, and
/// Kafka's record and batch framing.
const ENVELOPE_BYTES: usize = 256;

/// A single row, or a grid's declaration (its name and columns), too large for one changelog
/// record: the app cannot run as it is.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} takes {bytes} bytes; a changelog record holds at most {limit} (the broker's \
     max.message.bytes)"
)]
pub struct RowTooLarge {
    /// "row `k` of grid `g`", or "the declaration of grid `g`".
    pub what: String,
    pub bytes: usize,
    pub limit: usize,
}

/// A grid's rows or deleted keys, to be packed into records.
enum Item {
    Upsert(Row),
    Delete(String),
}

/// Bytes a length-delimited field of `len` bytes takes (tag of one byte).
fn field_bytes(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Packs grid changes into pieces of at most `budget` encoded bytes each.
struct Packer {
    budget: usize,
    limit: usize,
    pieces: Vec<Vec<GridDelta>>,
    current: Vec<GridDelta>,
    size: usize,
}

impl Packer {
    fn new(max_record_bytes: usize, fixed: usize) -> Self {
        let budget = max_record_bytes.saturating_sub(ENVELOPE_BYTES + fixed).max(1);
        Self { budget, limit: max_record_bytes, pieces: Vec::new(), current: Vec::new(), size: 0 }
    }

    /// The header of `grid` (name and columns) in the current piece, as the newest grid.
    fn open(&mut self, grid: &str, columns: &[String]) -> Result<(), RowTooLarge> {
        if self.current.last().is_some_and(|last| last.grid == grid) {
            return Ok(());
        }
        let header =
            GridDelta { grid: grid.to_owned(), columns: columns.to_vec(), ..GridDelta::default() };
        // A length prefix of up to 5 bytes: the grid's rows change its length.
        let bytes = header.encoded_len() + 6;
        if self.size + bytes > self.budget && !self.current.is_empty() {
            self.cut();
        }
        if bytes > self.budget {
            return Err(RowTooLarge {
                what: format!("the declaration of grid `{grid}` ({} columns)", columns.len()),
                bytes,
                limit: self.limit,
            });
        }
        self.size += bytes;
        self.current.push(header);
        Ok(())
    }

    fn push(&mut self, grid: &str, columns: &[String], item: Item) -> Result<(), RowTooLarge> {
        let item_bytes = match &item {
            Item::Upsert(row) => field_bytes(row.encoded_len()),
            Item::Delete(key) => field_bytes(key.len()),
        };
        self.open(grid, columns)?;
        if self.size + item_bytes > self.budget {
            self.cut();
            self.open(grid, columns)?;
            if self.size + item_bytes > self.budget {
                let key = match item {
                    Item::Upsert(row) => row.key,
                    Item::Delete(key) => key,
                };
                return Err(RowTooLarge {
                    what: format!("row `{key}` of grid `{grid}`"),
                    bytes: item_bytes,
                    limit: self.limit,
                });
            }
        }
        self.size += item_bytes;
        let delta = self.current.last_mut().expect("opened above");
        match item {
            Item::Upsert(row) => delta.upserted.push(row),
            Item::Delete(key) => delta.deleted.push(key),
        }
        Ok(())
    }

    /// Ends the current piece. (One of headers only is kept: the headers of empty grids must
    /// reach a snapshot.)
    fn cut(&mut self) {
        self.pieces.push(std::mem::take(&mut self.current));
        self.size = 0;
    }

    fn finish(mut self) -> Vec<Vec<GridDelta>> {
        if !self.current.is_empty() || self.pieces.is_empty() {
            let current = std::mem::take(&mut self.current);
            self.pieces.push(current);
        }
        self.pieces
    }
}

fn offsets_bytes(offsets: &[InputOffset]) -> usize {
    offsets.iter().map(|offset| field_bytes(offset.encoded_len())).sum()
}

/// A delta as deltas of at most `max_record_bytes` each, in order; only the last carries the
/// input offsets (a reader that has all pieces is where the whole delta leaves it; one that
/// has only some has whole rows and the older offsets).
pub fn split_delta(
    delta: ChangelogDelta,
    max_record_bytes: usize,
) -> Result<Vec<ChangelogDelta>, RowTooLarge> {
    // (Counters: two varints in a message, on the last piece.)
    let mut packer = Packer::new(max_record_bytes, offsets_bytes(&delta.offsets) + 24);
    for grid in delta.grids {
        packer.open(&grid.grid, &grid.columns)?;
        for row in grid.upserted {
            packer.push(&grid.grid, &grid.columns, Item::Upsert(row))?;
        }
        for key in grid.deleted {
            packer.push(&grid.grid, &grid.columns, Item::Delete(key))?;
        }
    }
    let mut pieces: Vec<ChangelogDelta> = packer
        .finish()
        .into_iter()
        .map(|grids| ChangelogDelta { grids, offsets: Vec::new(), counts: None })
        .collect();
    if let Some(last) = pieces.last_mut() {
        last.offsets = delta.offsets;
        last.counts = delta.counts;
    }
    Ok(pieces)
}

/// Grids as the parts of snapshot `snapshot_id`, each at most `max_record_bytes`, each with
/// the input offsets and counters (`index` and `count` set).
pub(crate) fn snapshot_parts<'a>(
    grids: impl Iterator<Item = (&'a String, &'a crate::Grid)>,
    offsets: Vec<InputOffset>,
    counts: Option<StatusCounts>,
    snapshot_id: u64,
    max_record_bytes: usize,
) -> Result<Vec<SnapshotPart>, RowTooLarge> {
    let mut packer = Packer::new(max_record_bytes, offsets_bytes(&offsets) + 40);
    for (name, grid) in grids {
        packer.open(name, &grid.columns)?;
        for (key, values) in &grid.rows {
            let row = Row { key: key.clone(), values: values.clone() };
            packer.push(name, &grid.columns, Item::Upsert(row))?;
        }
    }
    let pieces = packer.finish();
    let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(index, grids)| SnapshotPart {
            snapshot_id,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            count,
            grids,
            offsets: offsets.clone(),
            counts,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{ChangelogRecord, Value, changelog_record, value};

    use super::*;

    fn row(key: &str, text_bytes: usize) -> Row {
        Row {
            key: key.into(),
            values: vec![Value { kind: Some(value::Kind::String("x".repeat(text_bytes))) }],
        }
    }

    fn record_bytes(delta: ChangelogDelta) -> usize {
        let record = ChangelogRecord {
            epoch: u64::MAX,
            sequence: u64::MAX,
            kind: Some(changelog_record::Kind::Delta(delta)),
        };
        record.encoded_len()
    }

    #[test]
    fn a_big_delta_becomes_records_under_the_limit_with_offsets_on_the_last() {
        let rows: Vec<Row> = (0..100).map(|index| row(&format!("k{index}"), 1000)).collect();
        let delta = ChangelogDelta {
            grids: vec![
                GridDelta {
                    grid: "g".into(),
                    columns: vec!["c".into()],
                    upserted: rows.clone(),
                    deleted: vec!["gone".into()],
                },
                GridDelta {
                    grid: "empty".into(),
                    columns: vec!["c".into()],
                    ..GridDelta::default()
                },
            ],
            offsets: vec![InputOffset { topic: "t".into(), partition: 0, offset: 7 }],
            counts: None,
        };
        let pieces = split_delta(delta, 10_000).unwrap();
        assert!(pieces.len() >= 10, "{}", pieces.len());
        for piece in &pieces {
            assert!(record_bytes(piece.clone()) <= 10_000 - ENVELOPE_BYTES / 2);
        }
        let (last, rest) = pieces.split_last().unwrap();
        assert!(rest.iter().all(|piece| piece.offsets.is_empty()));
        assert_eq!(last.offsets.len(), 1);
        // Every row once, in order; the delete and the empty grid are kept.
        let keys: Vec<&str> = pieces
            .iter()
            .flat_map(|piece| &piece.grids)
            .flat_map(|grid| &grid.upserted)
            .map(|row| row.key.as_str())
            .collect();
        let expected: Vec<String> = (0..100).map(|index| format!("k{index}")).collect();
        assert_eq!(keys, expected);
        assert!(last.grids.iter().any(|grid| grid.deleted == ["gone"]));
        assert!(last.grids.iter().any(|grid| grid.grid == "empty"));
    }

    #[test]
    fn a_row_larger_than_a_record_is_refused_with_its_key() {
        let delta = ChangelogDelta {
            grids: vec![GridDelta {
                grid: "g".into(),
                columns: vec!["c".into()],
                upserted: vec![row("small", 10), row("huge", 20_000)],
                deleted: vec![],
            }],
            offsets: vec![],
            counts: None,
        };
        let refused = split_delta(delta, 10_000).unwrap_err();
        assert_eq!(refused.what, "row `huge` of grid `g`");
        assert!(refused.to_string().contains("a changelog record holds at most 10000"));
    }

    #[test]
    fn many_wide_grids_are_cut_across_records_and_one_too_wide_is_refused() {
        let columns: Vec<String> = (0..40).map(|index| format!("column_{index}")).collect();
        let grids = (0..300)
            .map(|index| GridDelta {
                grid: format!("grid_{index}"),
                columns: columns.clone(),
                ..GridDelta::default()
            })
            .collect();
        let pieces =
            split_delta(ChangelogDelta { grids, offsets: vec![], counts: None }, 10_000).unwrap();
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|piece| record_bytes(piece.clone()) <= 10_000));
        assert_eq!(pieces.iter().map(|piece| piece.grids.len()).sum::<usize>(), 300);
        let wide: Vec<String> = (0..2000).map(|index| format!("column_{index}")).collect();
        let refused = split_delta(
            ChangelogDelta {
                grids: vec![GridDelta {
                    grid: "wide".into(),
                    columns: wide,
                    ..GridDelta::default()
                }],
                offsets: vec![],
                counts: None,
            },
            10_000,
        )
        .unwrap_err();
        assert!(
            refused.what.contains("the declaration of grid `wide` (2000 columns)"),
            "{refused}"
        );
    }
}
