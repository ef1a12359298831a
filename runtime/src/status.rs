//! An app's status in Postgres: counters, logs and bad records. Written in order from a task of
//! its own (the app's loop never waits for the database), each batch in one transaction with
//! the input offsets it covers, so a replay after a crash or restart counts no record twice.
//!
//! Everything here comes from user code's process and is bounded before it is kept: lines and
//! payloads are cut (the full size is kept), NUL is escaped (Postgres text cannot hold it),
//! and lines beyond a rate are dropped with one warning.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aerogrid_changelog::{GridState, Offsets};
use aerogrid_proto::{
    runtime::v1::{BadRecord, LogLine},
    v1::StatusCounts,
};
use uuid::Uuid;

use crate::{Error, Result, db};

/// Log lines and bad records waiting for Postgres at most (it is slow, or down): beyond, they are
/// dropped as lines beyond the rate are.
const MAX_WAITING_LINES: usize = 10_000;
/// Old logs and bad records of an app beyond the count kept are deleted this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What the node keeps of an app's output.
#[derive(Clone, Debug)]
pub(crate) struct OutputLimits {
    /// Bytes of one log line or bad-record reason; longer ones are cut.
    pub(crate) line_bytes: usize,
    /// Bytes kept of a bad record's key and of its value.
    pub(crate) payload_bytes: usize,
    /// Log lines per second of one app (a second's worth may come at once); more are dropped.
    pub(crate) lines_per_second: f64,
    /// Newest log lines kept per app.
    pub(crate) logs_kept: i64,
    /// Newest bad records kept per app.
    pub(crate) bad_records_kept: i64,
}

/// Text from user code as Postgres can keep it: NUL escaped, cut to `max` bytes (at a character
/// boundary) with a marker that gives the full size.
pub(crate) fn clean_text(text: &str, max: usize) -> String {
    let escaped = if text.contains('\0') { text.replace('\0', "\\0") } else { text.to_owned() };
    if escaped.len() <= max {
        return escaped;
    }
    let mut end = max;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &escaped[..end], escaped.len())
}

/// Next input offsets per partition whose records are counted already (in Postgres, or in the
/// status on its way there).
#[derive(Debug, Default)]
pub(crate) struct Counted(HashMap<String, HashMap<i32, i64>>);

impl Counted {
    pub(crate) fn new(progress: Offsets) -> Self {
        let mut counted = Self::default();
        for ((topic, partition), next) in progress {
            counted.0.entry(topic).or_default().insert(partition, next);
        }
        counted
    }

    fn is_new(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.0
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .is_none_or(|next| offset >= *next)
    }

    /// Counts a batch's new records (and moves past them); returns how many were new.
    fn count(&mut self, batch: &BatchPositions) -> i64 {
        let partitions = match self.0.get_mut(&batch.topic) {
            Some(partitions) => partitions,
            None => self.0.entry(batch.topic.clone()).or_default(),
        };
        let mut new = 0;
        for &(partition, offset) in &batch.records {
            let next = partitions.entry(partition).or_insert(offset);
            if offset >= *next {
                new += 1;
                *next = offset + 1;
            }
        }
        new
    }

    fn to_offsets(&self) -> Offsets {
        self.0
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|(partition, next)| ((topic.clone(), *partition), *next))
            })
            .collect()
    }
}

/// Where an app's status picks up after a restart, and its counters there. Postgres and the
/// recovered changelog each hold counters as of some input offsets, two points of one sequence
/// of answers: the further one wins. When it is the changelog's (the node died after a
/// changelog write, before the status write of the same answers), Postgres takes its counters;
/// the logs and bad-record rows of that stretch are not recovered.
pub(crate) async fn reconcile(
    db: &sqlx::PgPool,
    app_id: Uuid,
    lease: &db::Lease,
    recovered: &GridState,
) -> Result<(Counted, StatusCounts)> {
    let progress = db::input_progress(db, app_id).await?;
    let counts = db::status_counts(db, app_id).await?;
    let changelog_further = recovered
        .offsets
        .iter()
        .any(|(partition, next)| progress.get(partition).is_none_or(|counted| next > counted));
    match recovered.counts {
        Some(recovered_counts) if changelog_further => {
            tracing::info!(%app_id, ?counts, ?recovered_counts, "The changelog is further than the status: taking its counters.");
            db::set_counts(db, app_id, lease, recovered_counts, &recovered.offsets).await?;
            Ok((Counted::new(recovered.offsets.clone()), recovered_counts))
        }
        _ => Ok((Counted::new(progress), counts)),
    }
}

/// Input records of one batch: the topic and each record's (partition, offset).
#[derive(Debug)]
pub(crate) struct BatchPositions {
    pub(crate) topic: String,
    pub(crate) records: Vec<(i32, i64)>,
}

/// Status to write to Postgres at the next flush.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) records_in: i64,
    /// A new lag measurement.
    pub(crate) lag: Option<i64>,
    pub(crate) log_levels: Vec<String>,
    pub(crate) log_messages: Vec<String>,
    pub(crate) bad: db::BadRecords,
    /// The input offsets everything counted so far covers.
    pub(crate) progress: Offsets,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records_in == 0
            && self.lag.is_none()
            && self.log_levels.is_empty()
            && self.bad.topics.is_empty()
    }
}

/// An app's output on its way into `Pending`: what is new, within bounds.
pub(crate) struct Output {
    limits: OutputLimits,
    counted: Counted,
    /// The app's counters with everything taken so far (the changelog records them).
    totals: StatusCounts,
    /// Log lines the app may still write now (a token bucket of `lines_per_second`).
    lines_available: f64,
    refilled: Instant,
    dropped_lines: u64,
}

impl Output {
    pub(crate) fn new(limits: OutputLimits, counted: Counted, totals: StatusCounts) -> Self {
        let lines_available = limits.lines_per_second;
        Self {
            limits,
            counted,
            totals,
            lines_available,
            refilled: Instant::now(),
            dropped_lines: 0,
        }
    }

    /// The app's counters with everything taken so far.
    pub(crate) fn totals(&self) -> StatusCounts {
        self.totals
    }

    /// Takes the logs and bad records of one answer into `pending`; `batch` is the input the
    /// answer is for (None for a timer). Records counted before (a replay) add nothing: not to
    /// `records_in`, not as bad records; a replayed batch's logs are not written again.
    pub(crate) fn take(
        &mut self,
        pending: &mut Pending,
        batch: Option<&BatchPositions>,
        logs: Vec<LogLine>,
        bad_records: Vec<BadRecord>,
    ) {
        let mut any_new = batch.is_none();
        // A bad record names a record of the batch it answers, once: others come from user code
        // meddling with the driver, and are dropped.
        let mut of_batch: std::collections::HashSet<(i32, i64)> = match batch {
            Some(batch) if !bad_records.is_empty() => batch.records.iter().copied().collect(),
            _ => std::collections::HashSet::new(),
        };
        for bad in bad_records {
            let in_batch = batch.is_some_and(|batch| batch.topic == bad.topic)
                && of_batch.remove(&(bad.partition, bad.offset));
            if in_batch && self.counted.is_new(&bad.topic, bad.partition, bad.offset) {
                self.totals.bad_records += 1;
                self.push_bad(pending, bad);
            }
        }
        if let Some(batch) = batch {
            let new = self.counted.count(batch);
            pending.records_in += new;
            self.totals.records_in += new;
            any_new = new > 0;
            pending.progress = self.counted.to_offsets();
        }
        if any_new {
            for log in logs {
                self.push_log(pending, log);
            }
        }
    }

    /// A line the node itself writes to the app's log (never rate limited).
    pub(crate) fn note(&self, pending: &mut Pending, level: &str, message: &str) {
        pending.log_levels.push(level.to_owned());
        pending.log_messages.push(clean_text(message, self.limits.line_bytes));
    }

    /// Takes a line's worth of the rate (and of what may wait for Postgres); false, with one
    /// warning per run, when there is none.
    fn take_line(&mut self, pending: &mut Pending) -> bool {
        let now = Instant::now();
        let per_second = self.limits.lines_per_second;
        self.lines_available = (self.lines_available
            + now.duration_since(self.refilled).as_secs_f64() * per_second)
            .min(per_second);
        self.refilled = now;
        let waiting = pending.log_messages.len() + pending.bad.topics.len();
        if self.lines_available < 1.0 || waiting >= MAX_WAITING_LINES {
            self.dropped_lines += 1;
            if self.dropped_lines == 1 {
                self.note(
                    pending,
                    "warning",
                    &format!(
                        "the app logs more than {per_second} lines and bad records a second, \
                         the limit of an app: those beyond it are not kept (bad records are \
                         still counted)"
                    ),
                );
            }
            return false;
        }
        self.lines_available -= 1.0;
        true
    }

    fn push_log(&mut self, pending: &mut Pending, log: LogLine) {
        if !self.take_line(pending) {
            return;
        }
        let level = clean_text(&log.level, 16);
        pending.log_levels.push(level);
        pending.log_messages.push(clean_text(&log.message, self.limits.line_bytes));
    }

    fn push_bad(&mut self, pending: &mut Pending, bad: BadRecord) {
        if !self.take_line(pending) {
            return;
        }
        let size = |payload: &Option<Vec<u8>>| {
            payload.as_ref().map(|bytes| i32::try_from(bytes.len()).unwrap_or(i32::MAX))
        };
        let cut = |mut payload: Option<Vec<u8>>| {
            if let Some(bytes) = payload.as_mut() {
                bytes.truncate(self.limits.payload_bytes);
            }
            payload
        };
        let bad_records = &mut pending.bad;
        bad_records.topics.push(clean_text(&bad.topic, 256));
        bad_records.partitions.push(bad.partition);
        bad_records.offsets.push(bad.offset);
        bad_records.reasons.push(clean_text(&bad.reason, self.limits.line_bytes));
        bad_records.lines.push(bad.line.and_then(|line| i32::try_from(line).ok()));
        bad_records.key_sizes.push(size(&bad.key));
        bad_records.value_sizes.push(size(&bad.value));
        bad_records.keys.push(cut(bad.key));
        bad_records.values.push(cut(bad.value));
    }
}

/// Writes an app's status batches to Postgres in order, on a task of its own.
pub(crate) struct StatusWriter {
    batches: tokio::sync::mpsc::Sender<Pending>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl StatusWriter {
    pub(crate) fn start(
        db: sqlx::PgPool,
        app_id: Uuid,
        lease: db::Lease,
        limits: &OutputLimits,
    ) -> Self {
        // One batch waits while one is written; beyond that, the next batch grows instead.
        let (batches, mut receiver) = tokio::sync::mpsc::channel::<Pending>(1);
        let (logs_kept, bad_records_kept) = (limits.logs_kept, limits.bad_records_kept);
        let task = tokio::spawn(async move {
            let mut pruned = Instant::now() - PRUNE_EVERY;
            while let Some(batch) = receiver.recv().await {
                if let Err(error) = db::write_status(&db, app_id, &lease, &batch).await {
                    tracing::warn!(%app_id, %error, "Cannot write the app's status.");
                    return Err(error);
                }
                if pruned.elapsed() >= PRUNE_EVERY {
                    pruned = Instant::now();
                    db::prune_output(&db, app_id, logs_kept, bad_records_kept).await?;
                }
            }
            Ok(())
        });
        Self { batches, task }
    }

    /// Hands `pending` over unless the writer is still busy (then it keeps growing); fails
    /// when the writer failed.
    pub(crate) fn offer(&mut self, pending: &mut Pending) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        match self.batches.try_reserve() {
            Ok(permit) => {
                permit.send(std::mem::take(pending));
                Ok(())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(())) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => {
                Err(Error::Connector("the status writer stopped".into()))
            }
        }
    }

    /// Writes `last` after everything handed over, and waits until all is written.
    pub(crate) async fn finish(self, last: Pending) -> Result<()> {
        if !last.is_empty() {
            let _ = self.batches.send(last).await;
        }
        drop(self.batches);
        self.task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OutputLimits {
        OutputLimits {
            line_bytes: 64,
            payload_bytes: 4,
            lines_per_second: 3.0,
            logs_kept: 100,
            bad_records_kept: 100,
        }
    }

    fn log(message: &str) -> LogLine {
        LogLine { level: "info".into(), message: message.into() }
    }

    fn bad(offset: i64) -> BadRecord {
        BadRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            reason: "bad\0json".into(),
            line: Some(3),
            key: None,
            value: Some(b"0123456789".to_vec()),
        }
    }

    fn batch(offsets: std::ops::Range<i64>) -> BatchPositions {
        BatchPositions { topic: "t".into(), records: offsets.map(|offset| (0, offset)).collect() }
    }

    #[test]
    fn text_is_cut_at_a_character_with_its_size_and_nul_escaped() {
        assert_eq!(clean_text("a\0b", 10), "a\\0b");
        assert_eq!(clean_text("ééééé", 5), "éé… [cut: 10 bytes in all]");
        assert_eq!(clean_text("short", 5), "short");
    }

    #[test]
    fn a_replayed_batch_adds_no_counts_bad_records_or_logs() {
        // Postgres has the status of records 0..10 of partition 0.
        let counted = Counted::new(Offsets::from([(("t".to_owned(), 0), 10)]));
        let mut output = Output::new(limits(), counted, StatusCounts::default());
        let mut pending = Pending::default();
        // The replay after a restart reads 5..15: only 10..15 are new.
        // (99 is no record of the batch, and 12 comes twice: user code forging bad records.)
        output.take(
            &mut pending,
            Some(&batch(5..15)),
            vec![log("x")],
            vec![bad(7), bad(12), bad(12), bad(99)],
        );
        assert_eq!(pending.records_in, 5);
        assert_eq!(pending.bad.offsets, [12]);
        assert_eq!(pending.log_messages, ["x"]);
        assert_eq!(pending.progress[&("t".to_owned(), 0)], 15);
        // The broker delivers 10..15 again within the run: nothing more.
        output.take(&mut pending, Some(&batch(10..15)), vec![log("again")], vec![bad(12)]);
        assert_eq!(pending.records_in, 5);
        assert_eq!(pending.bad.offsets, [12]);
        assert_eq!(pending.log_messages, ["x"]);
        // Bad records keep their sizes, payloads and reasons cut and escaped.
        assert_eq!(pending.bad.reasons, ["bad\\0json"]);
        assert_eq!(pending.bad.values, [Some(b"0123".to_vec())]);
        assert_eq!(pending.bad.value_sizes, [Some(10)]);
        assert_eq!(pending.bad.key_sizes, [None]);
        assert_eq!(output.totals(), StatusCounts { records_in: 5, bad_records: 1 });
    }

    #[test]
    fn lines_beyond_the_rate_are_dropped_with_one_warning() {
        let mut output = Output::new(limits(), Counted::default(), StatusCounts::default());
        let mut pending = Pending::default();
        let lines = (0..10).map(|index| log(&format!("line {index}"))).collect();
        output.take(&mut pending, None, lines, vec![]);
        output.take(&mut pending, None, vec![log("more")], vec![]);
        assert_eq!(pending.log_messages.len(), 4, "{:?}", pending.log_messages);
        assert!(pending.log_messages[3].contains("more than 3 lines and bad records a second"));
        assert_eq!(pending.log_levels[3], "warning");
    }
}
