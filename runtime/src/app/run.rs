//! One run of an app: started (code loaded, grids recovered, input found), then a loop that
//! hands each event to a method of [`Run`]: an input batch, a timer, the connector's answer, a
//! confirmed changelog write, the status flush, a change of the team's grants.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use aerogrid_api::AppState;
use aerogrid_changelog::{GridState, Offsets, offsets_to_wire};
use aerogrid_proto::{
    runtime::v1::{
        Batch, BatchResult, GridRow, Load, LoadFailed, Loaded, RestoreGrid, Tick,
        connector_message::Kind, node_message,
    },
    v1::ChangelogDelta,
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{NodeContext, Outcome, Stop, check_topics, stopped};
use crate::{
    Error, Result,
    changelog::{self, ChangelogWriter, Delivery},
    connector::ConnectorProcess,
    db,
    input::{Input, InputBatch},
    limits::{ChangeRate, GridUsage},
    status::{BatchPositions, Output, Pending, StatusWriter},
};

/// Changelog records between snapshots: bounds what recovery replays.
const RECORDS_PER_SNAPSHOT: u64 = 1000;
/// Requests sent to the connector before their answers: two keep it busy.
const MAX_IN_FLIGHT: usize = 2;
/// Changelog writes queued before the broker confirms them; beyond this, input waits.
const MAX_UNCONFIRMED_WRITES: usize = 64;
/// How often counters, logs and bad records go to Postgres (see `status.rs`).
const STATUS_FLUSH: Duration = Duration::from_millis(250);
/// Input offsets are committed (for operators' lag tools) at most this often while busy.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// How often the input's lag is recorded.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Runs the app once: until it is stopped, fails, or its connector or broker does.
pub(super) async fn run_once(
    context: &NodeContext,
    app_id: Uuid,
    epoch: i64,
    stop: &mut watch::Receiver<Stop>,
    grants: &mut watch::Receiver<Option<Vec<String>>>,
) -> Result<Outcome> {
    // A Stop during the start (an install can take minutes) ends it there: what a start
    // leaves half done, the next one does again, as after a crash.
    let started = tokio::select! {
        started = Run::start(context, app_id, epoch) => started?,
        reason = super::stopped(stop) => return Ok(Outcome::Stop(reason)),
    };
    let mut run = match started {
        Ok(run) => run,
        Err(failed) => return Ok(failed),
    };
    // Whatever ends the run, the status taken so far is written (and the writer done) before
    // it returns: the next run starts from what Postgres has.
    let result = run.serve(stop, grants).await;
    let finished = run.status.finish(run.pending).await;
    match (result, finished) {
        // Whatever the loop saw of it (the writer "stopped"), the run ends for that reason.
        (_, Err(Error::LeaseLost)) => Err(Error::LeaseLost),
        (Ok(stop @ Outcome::Stop(_)), Err(error)) => {
            tracing::warn!(%app_id, %error, "The app's last status was not written.");
            Ok(stop)
        }
        (result, finished) => {
            let outcome = result?;
            finished?;
            Ok(outcome)
        }
    }
}

/// A running app and everything its loop keeps.
struct Run<'a> {
    context: &'a NodeContext,
    app_id: Uuid,
    code: db::AppCode,
    /// The app's package environment, held (kept in the node's cache) while it runs.
    _packages: Option<aerogrid_packages::Env>,
    connector: ConnectorProcess,
    writer: ChangelogWriter,
    changelog_topic: String,
    input: Input,
    batches: mpsc::Receiver<Result<InputBatch>>,
    topic_names: Vec<String>,
    /// The writer schemas the topics in the registry's wire format need, and those sent.
    registry_topics: crate::schemas::RegistryTopics,
    columns: HashMap<String, Vec<String>>,
    state: GridState,
    usage: GridUsage,
    change_rate: ChangeRate,
    /// Set while the app waits for its change rate to come back under the limit.
    paused_until: Option<tokio::time::Instant>,
    warned_rate: bool,
    records_since_snapshot: u64,
    next_timer: Option<tokio::time::Instant>,
    pending: Pending,
    flush: tokio::time::Interval,
    /// Status goes to Postgres from a task of its own: the loop never waits for the database.
    status: StatusWriter,
    /// Logs, bad records and counts of records the status has counted before are not repeated.
    output: Output,
    /// Requests the connector is working on, oldest first, and the input offsets that each
    /// leaves the grids at: while it runs user code on one batch, the next is decoded.
    in_flight: VecDeque<Request>,
    sent_offsets: Offsets,
    /// Changelog writes the broker has not confirmed, oldest first, with what to do once they are.
    writes: VecDeque<(Delivery, Written)>,
    /// The offset of the first part of the snapshot being written.
    snapshot_start: Option<i64>,
    confirmed: Option<Offsets>,
    last_commit: Instant,
    last_lag: Instant,
}

impl<'a> Run<'a> {
    /// Loads the code, recovers the grids and finds the input; `Err(outcome)` when the app
    /// cannot run as it is (its code, its memory, its topics), with the reason.
    async fn start(
        context: &'a NodeContext,
        app_id: Uuid,
        epoch: i64,
    ) -> Result<std::result::Result<Self, Outcome>> {
        let failed = |message: String, line| Ok(Err(Outcome::Failed { message, line }));
        let Some(code) = db::app_code(&context.db, app_id).await? else {
            return failed("the app has no saved code".into(), None);
        };
        db::set_state(&context.db, app_id, AppState::Starting, None, None, Some(code.version))
            .await?;
        let started = Instant::now();
        let limits = &context.limits;
        let memory_limit_bytes = code
            .memory_limit_mib
            .and_then(|mib| u64::try_from(mib).ok())
            .map_or(limits.memory_bytes, |mib| mib << 20);
        if memory_limit_bytes > limits.max_memory_bytes {
            return failed(
                format!(
                    "the app asks for {} MiB of memory; a connector on this node may have at most {} MiB",
                    memory_limit_bytes >> 20,
                    limits.max_memory_bytes >> 20
                ),
                None,
            );
        }
        let packages = crate::packages::prepare(context, app_id, &code).await?;
        let env = packages.as_ref().map(|env| env.path.as_path());
        let mut connector = context.pool.take(env).await?;
        let loaded = match connector
            .request(node_message::Kind::Load(Load {
                team: code.team.clone(),
                app: code.app.clone(),
                source: code.code.clone(),
                filename: "main.py".into(),
                memory_limit_bytes: Some(memory_limit_bytes),
                stall_seconds: Some(limits.stall.as_secs_f64()),
            }))
            .await?
        {
            Kind::Loaded(loaded) => loaded,
            Kind::LoadFailed(LoadFailed { message, line }) => return failed(message, line),
            other => return Err(Error::Connector(format!("unexpected answer to Load: {other:?}"))),
        };
        let Loaded { topics, grids, next_timer_in, .. } = loaded;
        tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: loaded.");
        let columns: HashMap<String, Vec<String>> =
            grids.into_iter().map(|grid| (grid.name, grid.columns)).collect();
        let registry_topics = crate::schemas::RegistryTopics::of(&topics);
        let topic_names: Vec<String> = topics.into_iter().map(|topic| topic.name).collect();
        // Before anything touches the broker: a topic that is not granted fails the app the
        // same way whether or not it exists.
        if let Err(message) = check_topics(&code.team, &code.grants, &topic_names) {
            return failed(message, None);
        }
        let changelog_topic = changelog::topic_name(app_id);
        // The changelog (fence, then recovery) and the input (topics, partitions) at once.
        let ((writer, mut state, replayed), mut input, ()) = tokio::try_join!(
            recover(context, app_id, epoch, &changelog_topic, started),
            find_input(context, app_id, &topic_names, started),
            db::set_grids(&context.db, app_id, &columns, &topic_names),
        )?;
        let lease = db::Lease { node_id: context.node_id.clone(), epoch };
        let (counted, totals) =
            crate::status::reconcile(&context.db, app_id, &lease, &state).await?;
        state.reshape(&columns);
        restore(&mut connector, &state).await?;
        input.assign(&state.offsets)?;
        let batches = input.start();
        db::set_state(&context.db, app_id, AppState::Running, None, None, Some(code.version))
            .await?;
        tracing::info!(%app_id, team = %code.team, app = %code.app, version = code.version, replayed, pid = connector.pid(), elapsed = ?started.elapsed(), "App running.");
        Ok(Ok(Self {
            context,
            app_id,
            usage: GridUsage::of(&state),
            change_rate: ChangeRate::new(limits.changes_per_second),
            paused_until: None,
            warned_rate: false,
            records_since_snapshot: replayed,
            next_timer: timer_deadline(next_timer_in)?,
            pending: Pending::default(),
            flush: tokio::time::interval(STATUS_FLUSH),
            status: StatusWriter::start(context.db.clone(), app_id, lease, &context.output),
            output: Output::new(context.output.clone(), counted, totals),
            in_flight: VecDeque::new(),
            sent_offsets: state.offsets.clone(),
            writes: VecDeque::new(),
            snapshot_start: None,
            confirmed: None,
            last_commit: Instant::now() - COMMIT_EVERY,
            last_lag: Instant::now(),
            code,
            _packages: packages,
            connector,
            writer,
            changelog_topic,
            input,
            batches,
            topic_names,
            registry_topics,
            columns,
            state,
        }))
    }

    /// The loop: one event at a time, until one ends the run.
    async fn serve(
        &mut self,
        stop: &mut watch::Receiver<Stop>,
        grants: &mut watch::Receiver<Option<Vec<String>>>,
    ) -> Result<Outcome> {
        loop {
            // Timers run between batches, never while the connector works on one.
            let timer_due = self
                .next_timer
                .filter(|_| self.in_flight.is_empty() && self.paused_until.is_none());
            let paused = self.paused_until.is_some();
            let takes_input = !paused
                && self.in_flight.len() < MAX_IN_FLIGHT
                && self.writes.len() < MAX_UNCONFIRMED_WRITES;
            tokio::select! {
                batch = self.batches.recv(), if takes_input => {
                    let Some(batch) = batch else {
                        return Err(Error::Connector("the input consumer stopped".into()));
                    };
                    self.on_batch(batch?).await?;
                }
                () = sleep_until(self.paused_until), if paused => self.paused_until = None,
                () = sleep_until(timer_due) => self.on_timer().await?,
                // Always listened to: a connector that dies while idle is noticed at once.
                answer = self.connector.receive() => self.on_answer(answer?)?,
                written = oldest_write(&mut self.writes), if !self.writes.is_empty() => {
                    self.on_written(written?).await?;
                }
                _ = self.flush.tick() => self.on_flush()?,
                reason = stopped(stop) => return Ok(Outcome::Stop(reason)),
                // The node saw the team's grants change: the database says what they are now
                // (the node's view may predate this run's).
                Ok(()) = grants.changed() => {
                    let now = db::team_grants(&self.context.db, self.app_id).await?;
                    if let Err(message) = check_topics(&self.code.team, &now, &self.topic_names) {
                        return Ok(Outcome::Failed { message, line: None });
                    }
                }
            }
            self.snapshot_if_due()?;
        }
    }

    async fn on_batch(&mut self, batch: InputBatch) -> Result<()> {
        tracing::trace!(app_id = %self.app_id, records = batch.messages.len(), in_flight = self.in_flight.len(), "Input batch.");
        // Before anything of the batch is counted: a registry that cannot answer ends the run
        // here, and the next one reads the batch again.
        let writer_schemas = self
            .registry_topics
            .writer_schemas(&self.context.registry, &batch.topic, &batch.messages)
            .await?;
        // Where the batch leaves each partition: its last record there (one key per partition).
        let mut last: Vec<(i32, i64)> = Vec::new();
        for message in &batch.messages {
            match last.iter_mut().find(|(partition, _)| *partition == message.partition) {
                Some(entry) => entry.1 = message.offset,
                None => last.push((message.partition, message.offset)),
            }
        }
        for (partition, offset) in last {
            self.sent_offsets.insert((batch.topic.clone(), partition), offset + 1);
        }
        let positions = BatchPositions {
            topic: batch.topic.clone(),
            records: batch
                .messages
                .iter()
                .map(|message| (message.partition, message.offset))
                .collect(),
        };
        self.in_flight.push_back(Request::Batch { positions, offsets: self.sent_offsets.clone() });
        let batch = Batch { topic: batch.topic, messages: batch.messages, writer_schemas };
        self.connector.send(node_message::Kind::Batch(batch)).await
    }

    async fn on_timer(&mut self) -> Result<()> {
        self.in_flight.push_back(Request::Tick);
        self.connector.send(node_message::Kind::Tick(Tick {})).await
    }

    /// The connector answered the oldest request: its output is taken, its changes checked
    /// against the limits, applied, and queued for the changelog. (`Refused` came as an error:
    /// what the app logged before it broke the rules stays visible.)
    fn on_answer(&mut self, answer: Kind) -> Result<()> {
        let mut result = expect_result(answer)?;
        tracing::trace!(app_id = %self.app_id, in_flight = self.in_flight.len(), "Connector answered.");
        self.next_timer = timer_deadline(result.next_timer_in)?;
        let Some(request) = self.in_flight.pop_front() else {
            return Err(Error::Connector("an answer to no request".into()));
        };
        let (logs, bad) =
            (std::mem::take(&mut result.logs), std::mem::take(&mut result.bad_records));
        let is_batch = match request {
            Request::Batch { positions, offsets } => {
                self.output.take(&mut self.pending, Some(&positions), logs, bad);
                self.state.offsets = offsets;
                true
            }
            Request::Tick => {
                self.output.take(&mut self.pending, None, logs, bad);
                false
            }
        };
        let limits = &self.context.limits;
        if let Err(message) = self.usage.admit(&self.state, &self.columns, &result.changes, limits)
        {
            return Err(Error::Refused { message, line: None });
        }
        let changed: usize =
            result.changes.iter().map(|grid| grid.upserted.len() + grid.deleted.len()).sum();
        if let Some(wait) = self.change_rate.spend(changed) {
            self.paused_until = Some(tokio::time::Instant::now() + wait);
            if !self.warned_rate {
                self.warned_rate = true;
                tracing::info!(app_id = %self.app_id, "App slowed down to its change rate limit.");
                self.output.note(&mut self.pending, "warning", &format!(
                    "the app changes its grids faster than {} rows/s, the limit of an app: it is slowed down to that rate",
                    limits.changes_per_second
                ));
            }
        }
        let grids = self.state.apply_changes(result.changes, &self.columns);
        self.state.counts = Some(self.output.totals());
        let delta = ChangelogDelta {
            grids,
            offsets: offsets_to_wire(&self.state.offsets),
            counts: self.state.counts,
        };
        if is_batch || !delta.grids.is_empty() {
            let pieces = self.writer.queue_delta(delta)?;
            let count = pieces.len();
            for (index, delivery) in pieces.into_iter().enumerate() {
                let written = if index + 1 == count {
                    Written::Delta(self.state.offsets.clone())
                } else {
                    Written::DeltaPiece
                };
                self.writes.push_back((delivery, written));
            }
            self.records_since_snapshot += count as u64;
        }
        Ok(())
    }

    /// The broker confirmed the oldest queued write, at `offset`.
    async fn on_written(&mut self, offset: i64) -> Result<()> {
        tracing::trace!(app_id = %self.app_id, offset, unconfirmed = self.writes.len() - 1, "Changelog write confirmed.");
        let Some((_, written)) = self.writes.pop_front() else { return Ok(()) };
        match written {
            // At most every COMMIT_EVERY (the flush tick commits the rest): only the newest
            // position matters, and a commit per write would load the broker as much as the
            // writes do.
            Written::Delta(offsets) if self.last_commit.elapsed() >= COMMIT_EVERY => {
                self.input.commit(&offsets);
                self.last_commit = Instant::now();
                self.confirmed = None;
            }
            Written::Delta(offsets) => self.confirmed = Some(offsets),
            Written::DeltaPiece => {}
            Written::SnapshotPart { first, last } => {
                if first {
                    self.snapshot_start = Some(offset);
                }
                if last && let Some(start) = self.snapshot_start.take() {
                    // Recovery starts here from now on.
                    let db = &self.context.db;
                    db::set_snapshot_offset(db, self.app_id, &self.changelog_topic, start).await?;
                }
            }
        }
        Ok(())
    }

    fn on_flush(&mut self) -> Result<()> {
        if let Some(offsets) = self.confirmed.take() {
            self.input.commit(&offsets);
            self.last_commit = Instant::now();
        }
        if self.last_lag.elapsed() >= LAG_EVERY {
            self.last_lag = Instant::now();
            self.pending.lag = self.input.lag(&self.state.offsets);
        }
        self.status.offer(&mut self.pending)
    }

    /// Queued, not awaited (input goes on meanwhile), after every delta before it: when it is
    /// written, so are they.
    fn snapshot_if_due(&mut self) -> Result<()> {
        if self.records_since_snapshot < RECORDS_PER_SNAPSHOT {
            return Ok(());
        }
        let parts = self.writer.queue_snapshot(&self.state, self.records_since_snapshot)?;
        let count = parts.len();
        for (index, delivery) in parts.into_iter().enumerate() {
            let part = Written::SnapshotPart { first: index == 0, last: index + 1 == count };
            self.writes.push_back((delivery, part));
        }
        self.records_since_snapshot = 0;
        Ok(())
    }
}

/// The grids back from the changelog, up to a fence only this run writes; the writer that
/// wrote it.
async fn recover(
    context: &NodeContext,
    app_id: Uuid,
    epoch: i64,
    changelog_topic: &str,
    started: Instant,
) -> Result<(ChangelogWriter, GridState, u64)> {
    // Kept for good: recovery starts at the last snapshot however old it is (a broker's default
    // retention, seven days on Kafka, would delete an idle app's grids).
    context.kafka.ensure_topic_with(changelog_topic, 1, &[("retention.ms", "-1")]).await?;
    let max_record_bytes = context
        .kafka
        .max_message_bytes(changelog_topic, Duration::from_secs(2))
        .await
        .unwrap_or(context.limits.changelog_record_bytes);
    let writer = ChangelogWriter::new(
        &context.kafka,
        changelog_topic.to_owned(),
        u64::try_from(epoch).unwrap_or(0),
        max_record_bytes,
        context.relay.as_ref().map(|relay| relay.open(app_id)),
    )?;
    let fence = writer.write_fence(&context.node_id).await?;
    let mut from = db::snapshot_offset(&context.db, app_id).await?.unwrap_or(0);
    if from > fence {
        tracing::warn!(%app_id, from, fence, "The changelog is shorter than its last snapshot: the broker lost it. Starting with empty grids.");
        from = 0;
    }
    let (state, replayed) =
        changelog::recover(&context.kafka, changelog_topic, from, fence).await?;
    tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: recovered.");
    Ok((writer, state, replayed))
}

/// The app's input consumer, its topics created first on the dev stack's own broker.
async fn find_input(
    context: &NodeContext,
    app_id: Uuid,
    topic_names: &[String],
    started: Instant,
) -> Result<Input> {
    if context.create_topics {
        for topic in topic_names {
            context.kafka.ensure_topic(topic, 1).await?;
        }
    }
    let kafka = context.kafka.clone();
    let group = format!("aerogrid-app-{app_id}");
    let topics = topic_names.to_vec();
    let input =
        tokio::task::spawn_blocking(move || Input::connect(&kafka, &group, &topics)).await??;
    tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: input found.");
    Ok(input)
}

/// When the connector's next timer is due. The answer comes from user code's process: a time
/// that is not a number, negative or beyond a year fails the app (never a panic).
fn timer_deadline(seconds: Option<f64>) -> Result<Option<tokio::time::Instant>> {
    const MAX_TIMER: Duration = Duration::from_secs(366 * 24 * 3600);
    // A timer already due (0) waits the shortest period still: however the connector answers,
    // the node ticks it at most every millisecond.
    const MIN_TIMER: Duration = Duration::from_millis(1);
    let Some(seconds) = seconds else { return Ok(None) };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|wait| *wait <= MAX_TIMER)
        .map(|wait| wait.max(MIN_TIMER))
        .and_then(|wait| tokio::time::Instant::now().checked_add(wait))
        .map(Some)
        .ok_or_else(|| Error::Refused {
            message: format!(
                "the app's next timer is due in {seconds} s: a timer runs every 1 ms to a year"
            ),
            line: None,
        })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a queued changelog write means once the broker confirms it.
enum Written {
    /// A delta (its last record, when it took several): these input offsets may be committed.
    Delta(Offsets),
    /// A record of a delta before its last.
    DeltaPiece,
    /// A part of a snapshot: once the last is written, recovery may start at the first.
    SnapshotPart { first: bool, last: bool },
}

async fn oldest_write(writes: &mut VecDeque<(Delivery, Written)>) -> Result<i64> {
    match writes.front_mut() {
        Some((delivery, _)) => delivery.await,
        None => std::future::pending().await,
    }
}

/// What the connector was asked, for matching its answers.
enum Request {
    /// A batch of input, and the input offsets the grids are at once it is applied.
    Batch {
        positions: BatchPositions,
        offsets: Offsets,
    },
    Tick,
}

fn expect_result(answer: Kind) -> Result<BatchResult> {
    match answer {
        Kind::Result(result) => Ok(result),
        other => Err(Error::Connector(format!("expected a batch result, got {other:?}"))),
    }
}

/// Hands the recovered rows (already in the running version's layout) to a fresh connector.
async fn restore(connector: &mut ConnectorProcess, state: &GridState) -> Result<()> {
    for (name, grid) in &state.grids {
        let rows = grid
            .rows
            .iter()
            .map(|(key, values)| GridRow { key: key.clone(), values: values.clone() })
            .collect();
        expect_result(
            connector
                .request(node_message::Kind::Restore(RestoreGrid { grid: name.clone(), rows }))
                .await?,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_the_connector_asks_for_is_a_finite_time_within_a_year() {
        assert!(timer_deadline(None).unwrap().is_none());
        assert!(timer_deadline(Some(0.0)).unwrap().is_some());
        assert!(timer_deadline(Some(30.0)).unwrap().is_some());
        for bad in [f64::INFINITY, f64::NAN, -1.0, 1e19, 400.0 * 24.0 * 3600.0] {
            let refused = timer_deadline(Some(bad)).expect_err("refused");
            assert!(matches!(refused, Error::Refused { .. }), "{bad}");
        }
    }
}
