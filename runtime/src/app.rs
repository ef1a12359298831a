//! Running one app: its connector process, its input, its changelog, its status.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use aerogrid_changelog::{GridState, Offsets, offsets_to_wire};
use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::{
    runtime::v1::{
        Batch, BatchResult, GridRow, Load, LoadFailed, Loaded, RestoreGrid, Tick,
        connector_message::Kind, node_message,
    },
    v1::ChangelogDelta,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    Error, Result,
    changelog::{self, ChangelogWriter, Delivery},
    connector::{ConnectorProcess, WarmPool},
    db,
    input::Input,
    limits::{ChangeRate, GridUsage, Limits},
    status::{BatchPositions, Output, OutputLimits, Pending, StatusWriter},
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
/// Restarts after a crash wait this long, doubling with each crash in a row, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Why an app's task should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// No reason yet: the app keeps running.
    KeepRunning,
    /// The user stopped it (or deleted it).
    Stopped,
    /// This node is shutting down or lost the lease: another run takes over.
    Leave,
    /// The user started it again or restarted it: a fresh run takes over.
    Restart,
}

/// What every app task of a node shares.
#[derive(Clone)]
pub(crate) struct NodeContext {
    pub(crate) db: sqlx::PgPool,
    pub(crate) kafka: KafkaSettings,
    pub(crate) pool: WarmPool,
    pub(crate) node_id: String,
    /// Create missing input topics (the dev stack's own broker) instead of waiting for them.
    pub(crate) create_topics: bool,
    pub(crate) limits: Limits,
    pub(crate) output: OutputLimits,
    /// Wakes the node's loop (a released app is claimed again at once).
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
}

enum Outcome {
    Stop(Stop),
    Failed { message: String, line: Option<u32> },
}

/// Runs the app until told to stop; restarts its connector with backoff when it crashes.
pub(crate) async fn run_app(
    context: NodeContext,
    app_id: Uuid,
    epoch: i64,
    stop: watch::Receiver<Stop>,
    grants: watch::Receiver<Option<Vec<String>>>,
) {
    match supervise(&context, app_id, epoch, stop, grants).await {
        Stop::Stopped => {
            // Unless another node took the app over (this one was paused past its lease): then
            // the state is that node's to tell.
            match db::lease_is_ours(&context.db, &context.node_id, app_id).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => report(Err(error)),
            }
            report(db::set_state(&context.db, app_id, "stopped", None, None, None).await);
            // Free at once, so a new Start is picked up without waiting for the lease to expire.
            report(db::release_lease(&context.db, &context.node_id, app_id).await);
        }
        Stop::Restart => {
            report(db::release_lease(&context.db, &context.node_id, app_id).await);
            context.wake.notify_one();
        }
        Stop::KeepRunning | Stop::Leave => {}
    }
}

async fn supervise(
    context: &NodeContext,
    app_id: Uuid,
    epoch: i64,
    mut stop: watch::Receiver<Stop>,
    mut grants: watch::Receiver<Option<Vec<String>>>,
) -> Stop {
    let mut failures = 0u32;
    loop {
        let run_started = Instant::now();
        let outcome = run_once(context, app_id, epoch, &mut stop, &mut grants).await;
        let wait = match outcome {
            Ok(Outcome::Stop(reason)) => return reason,
            Ok(Outcome::Failed { message, line }) | Err(Error::Refused { message, line }) => {
                tracing::info!(%app_id, %message, "App failed; it stays failed until started again.");
                // In the app's log too, where the user follows it (it may quote user code).
                let message = crate::status::clean_text(&message, context.output.line_bytes);
                report(
                    db::insert_logs(
                        &context.db,
                        app_id,
                        &["error".to_owned()],
                        std::slice::from_ref(&message),
                    )
                    .await,
                );
                let line = line.and_then(|line| i32::try_from(line).ok());
                report(
                    db::set_state(&context.db, app_id, "failed", Some(&message), line, None).await,
                );
                // Not restarted in a loop: its code cannot run as it is.
                return stopped(&mut stop).await;
            }
            // Another node runs it now (this one was paused past its lease, say).
            Err(Error::LeaseLost) => return Stop::Leave,
            Err(Error::TopicMissing(topic)) => {
                let message = format!("waiting for topic `{topic}` to exist");
                report(
                    db::set_state(&context.db, app_id, "waiting", Some(&message), None, None).await,
                );
                Duration::from_secs(2)
            }
            Err(error) => {
                // A run that went well for a while starts the backoff over.
                if run_started.elapsed() > HEALTHY_RUN {
                    failures = 0;
                }
                failures += 1;
                let backoff =
                    (FIRST_BACKOFF * 2u32.saturating_pow((failures - 1).min(9))).min(MAX_BACKOFF);
                tracing::warn!(%app_id, %error, ?backoff, "App interrupted; restarting.");
                report(db::count_restart(&context.db, app_id).await);
                report(
                    db::set_state(
                        &context.db,
                        app_id,
                        "starting",
                        Some(&format!("restarting after: {error}")),
                        None,
                        None,
                    )
                    .await,
                );
                backoff
            }
        };
        let reason = tokio::select! {
            () = tokio::time::sleep(wait) => Stop::KeepRunning,
            reason = stopped(&mut stop) => reason,
        };
        if reason != Stop::KeepRunning {
            return reason;
        }
    }
}

/// Waits until the app is told to stop, and says why.
async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let current = *stop.borrow_and_update();
        if current != Stop::KeepRunning {
            return current;
        }
        if stop.changed().await.is_err() {
            return Stop::Leave;
        }
    }
}

fn report(result: Result<()>) {
    if let Err(error) = result {
        tracing::warn!(%error, "Cannot record app status.");
    }
}

/// Whether team `team` with `grants` may read every one of `topics` (the backend checked when
/// the app was started; this node checks again, and again whenever the grants change).
fn check_topics(team: &str, grants: &[String], topics: &[String]) -> Result<(), String> {
    for topic in topics {
        aerogrid_policy::topics::check_topic(team, grants, topic)
            .map_err(|refusal| refusal.to_string())?;
    }
    Ok(())
}

async fn run_once(
    context: &NodeContext,
    app_id: Uuid,
    epoch: i64,
    stop: &mut watch::Receiver<Stop>,
    grants: &mut watch::Receiver<Option<Vec<String>>>,
) -> Result<Outcome> {
    let Some(code) = db::app_code(&context.db, app_id).await? else {
        return Ok(Outcome::Failed { message: "the app has no saved code".into(), line: None });
    };
    db::set_state(&context.db, app_id, "starting", None, None, Some(code.version)).await?;
    let started = Instant::now();
    let limits = &context.limits;
    let memory_limit_bytes = code
        .memory_limit_mib
        .and_then(|mib| u64::try_from(mib).ok())
        .map_or(limits.memory_bytes, |mib| mib << 20);
    if memory_limit_bytes > limits.max_memory_bytes {
        return Ok(Outcome::Failed {
            message: format!(
                "the app asks for {} MiB of memory; a connector on this node may have at most {} MiB",
                memory_limit_bytes >> 20,
                limits.max_memory_bytes >> 20
            ),
            line: None,
        });
    }
    let mut connector = context.pool.take().await?;
    let loaded = match connector
        .request(node_message::Kind::Load(Load {
            team: code.team.clone(),
            app: code.app.clone(),
            source: code.code,
            filename: "main.py".into(),
            memory_limit_bytes: Some(memory_limit_bytes),
            stall_seconds: Some(limits.stall.as_secs_f64()),
        }))
        .await?
    {
        Kind::Loaded(loaded) => loaded,
        Kind::LoadFailed(LoadFailed { message, line }) => {
            return Ok(Outcome::Failed { message, line });
        }
        other => return Err(Error::Connector(format!("unexpected answer to Load: {other:?}"))),
    };
    let Loaded { topics, grids, next_timer_in, .. } = loaded;
    tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: loaded.");
    let columns: HashMap<String, Vec<String>> =
        grids.into_iter().map(|grid| (grid.name, grid.columns)).collect();

    let topic_names: Vec<String> = topics.into_iter().map(|topic| topic.name).collect();
    // Before anything touches the broker: a topic that is not granted fails the app the same
    // way whether or not it exists.
    if let Err(message) = check_topics(&code.team, &code.grants, &topic_names) {
        return Ok(Outcome::Failed { message, line: None });
    }
    // The changelog (fence, then recovery) and the input (topics, partitions) at the same time.
    let changelog_topic = changelog::topic_name(app_id);
    let recovery = async {
        // Grids back from the changelog, up to a fence only this run writes.
        context.kafka.ensure_topic(&changelog_topic, 1).await?;
        let max_record_bytes = context
            .kafka
            .max_message_bytes(&changelog_topic, Duration::from_secs(2))
            .await
            .unwrap_or(limits.changelog_record_bytes);
        let writer = ChangelogWriter::new(
            &context.kafka,
            changelog_topic.clone(),
            u64::try_from(epoch).unwrap_or(0),
            max_record_bytes,
        )?;
        let fence = writer.write_fence(&context.node_id).await?;
        let mut from = db::snapshot_offset(&context.db, app_id).await?.unwrap_or(0);
        if from > fence {
            tracing::warn!(%app_id, from, fence, "The changelog is shorter than its last snapshot: the broker lost it. Starting with empty grids.");
            from = 0;
        }
        let (state, replayed) =
            changelog::recover(&context.kafka, &changelog_topic, from, fence).await?;
        tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: recovered.");
        Ok::<_, Error>((writer, state, replayed))
    };
    let input = async {
        if context.create_topics {
            for topic in &topic_names {
                context.kafka.ensure_topic(topic, 1).await?;
            }
        }
        let kafka = context.kafka.clone();
        let group = format!("aerogrid-app-{app_id}");
        let topics = topic_names.clone();
        let input =
            tokio::task::spawn_blocking(move || Input::connect(&kafka, &group, &topics)).await??;
        tracing::debug!(%app_id, elapsed = ?started.elapsed(), "Start: input found.");
        Ok::<_, Error>(input)
    };
    let ((writer, mut state, replayed), mut input, ()) = tokio::try_join!(
        recovery,
        input,
        db::set_grids(&context.db, app_id, &columns, &topic_names),
    )?;
    let lease = db::Lease { node_id: context.node_id.clone(), epoch };
    let (counted, totals) = crate::status::reconcile(&context.db, app_id, &lease, &state).await?;
    state.reshape(&columns);
    let mut usage = GridUsage::of(&state);
    let mut change_rate = ChangeRate::new(limits.changes_per_second);
    // Set while the app waits for its change rate to come back under the limit.
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut warned_rate = false;
    restore(&mut connector, &state).await?;
    input.assign(&state.offsets)?;
    let mut batches = input.start();
    db::set_state(&context.db, app_id, "running", None, None, Some(code.version)).await?;
    tracing::info!(%app_id, team = %code.team, app = %code.app, version = code.version, replayed, pid = connector.pid(), elapsed = ?started.elapsed(), "App running.");

    let mut records_since_snapshot = replayed;
    let mut next_timer = timer_deadline(next_timer_in)?;
    let mut pending = Pending::default();
    let mut flush = tokio::time::interval(STATUS_FLUSH);
    // Status goes to Postgres from a task of its own: the loop never waits for the database.
    let mut status = StatusWriter::start(context.db.clone(), app_id, lease, &context.output);
    // Logs, bad records and counts of records the status has counted before are not repeated.
    let mut output = Output::new(context.output.clone(), counted, totals);
    // Requests the connector is working on, oldest first, and the input offsets that each
    // leaves the grids at: while it runs user code on one batch, the next is decoded.
    let mut in_flight: VecDeque<Request> = VecDeque::new();
    let mut sent_offsets = state.offsets.clone();
    // Changelog writes the broker has not confirmed, oldest first, with what to do once they are.
    let mut writes: VecDeque<(Delivery, Written)> = VecDeque::new();
    // The offset of the first part of the snapshot being written.
    let mut snapshot_start: Option<i64> = None;
    let mut confirmed: Option<Offsets> = None;
    let mut last_commit = Instant::now() - COMMIT_EVERY;
    let mut last_lag = Instant::now();
    // Whatever ends the run, the status taken so far is written (and the writer done) before
    // it returns: the next run starts from what Postgres has.
    let result: Result<Outcome> = async {
        loop {
            // Timers run between batches, never while the connector works on one.
            let timer_due = next_timer.filter(|_| in_flight.is_empty() && paused_until.is_none());
            let paused = paused_until.is_some();
            let timer = async move {
                match timer_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = batches.recv(), if !paused && in_flight.len() < MAX_IN_FLIGHT && writes.len() < MAX_UNCONFIRMED_WRITES => {
                    let Some(batch) = batch else { return Err(Error::Connector("the input consumer stopped".into())) };
                    let batch = batch?;
                    tracing::trace!(%app_id, records = batch.messages.len(), in_flight = in_flight.len(), "Input batch.");
                    for message in &batch.messages {
                        sent_offsets.insert((batch.topic.clone(), message.partition), message.offset + 1);
                    }
                    let positions = BatchPositions {
                        topic: batch.topic.clone(),
                        records: batch.messages.iter().map(|message| (message.partition, message.offset)).collect(),
                    };
                    in_flight.push_back(Request::Batch { positions, offsets: sent_offsets.clone() });
                    connector.send(node_message::Kind::Batch(Batch { topic: batch.topic, messages: batch.messages })).await?;
                }
                () = sleep_until(paused_until), if paused => {
                    paused_until = None;
                }
                () = timer => {
                    in_flight.push_back(Request::Tick);
                    connector.send(node_message::Kind::Tick(Tick {})).await?;
                }
                // Always listened to: a connector that dies while idle is noticed at once.
                answer = connector.receive() => {
                    let answer = match answer {
                        Err(error @ Error::Refused { .. }) => {
                            // What the app logged before it broke the rules stays visible.
                            return Err(error);
                        }
                        answer => answer?,
                    };
                    let mut result = expect_result(answer)?;
                    tracing::trace!(%app_id, in_flight = in_flight.len(), "Connector answered.");
                    next_timer = match timer_deadline(result.next_timer_in) {
                        Ok(next) => next,
                        Err(refused) => {
                            return Err(refused);
                        }
                    };
                    let Some(request) = in_flight.pop_front() else {
                        return Err(Error::Connector("an answer to no request".into()));
                    };
                    let is_batch = match request {
                        Request::Batch { positions, offsets } => {
                            output.take(&mut pending, Some(&positions), std::mem::take(&mut result.logs), std::mem::take(&mut result.bad_records));
                            state.offsets = offsets;
                            true
                        }
                        Request::Tick => {
                            output.take(&mut pending, None, std::mem::take(&mut result.logs), std::mem::take(&mut result.bad_records));
                            false
                        }
                    };
                    if let Err(message) = usage.admit(&state, &columns, &result.changes, limits) {
                        return Err(Error::Refused { message, line: None });
                    }
                    let changed: usize = result.changes.iter().map(|grid| grid.upserted.len() + grid.deleted.len()).sum();
                    if let Some(wait) = change_rate.spend(changed) {
                        paused_until = Some(tokio::time::Instant::now() + wait);
                        if !warned_rate {
                            warned_rate = true;
                            tracing::info!(%app_id, "App slowed down to its change rate limit.");
                            output.note(&mut pending, "warning", &format!(
                                "the app changes its grids faster than {} rows/s, the limit of an app: it is slowed down to that rate",
                                limits.changes_per_second
                            ));
                        }
                    }
                    let grids = state.apply_changes(result.changes, &columns);
                    state.counts = Some(output.totals());
                    let delta = ChangelogDelta { grids, offsets: offsets_to_wire(&state.offsets), counts: state.counts };
                    if is_batch || !delta.grids.is_empty() {
                        let pieces = writer.queue_delta(delta)?;
                        let count = pieces.len();
                        for (index, delivery) in pieces.into_iter().enumerate() {
                            let written = if index + 1 == count { Written::Delta(state.offsets.clone()) } else { Written::DeltaPiece };
                            writes.push_back((delivery, written));
                        }
                        records_since_snapshot += count as u64;
                    }
                }
                written = oldest_write(&mut writes), if !writes.is_empty() => {
                    let offset = written?;
                    tracing::trace!(%app_id, offset, unconfirmed = writes.len() - 1, "Changelog write confirmed.");
                    match writes.pop_front().expect("polled the oldest write").1 {
                        // At most every COMMIT_EVERY (the flush tick commits the rest): only the
                        // newest position matters, and a commit per write would load the broker as
                        // much as the writes do.
                        Written::Delta(offsets) if last_commit.elapsed() >= COMMIT_EVERY => {
                            input.commit(&offsets);
                            last_commit = Instant::now();
                            confirmed = None;
                        }
                        Written::Delta(offsets) => confirmed = Some(offsets),
                        Written::DeltaPiece => {}
                        Written::SnapshotPart { first, last } => {
                            if first {
                                snapshot_start = Some(offset);
                            }
                            if last && let Some(start) = snapshot_start.take() {
                                // Recovery starts here from now on.
                                db::set_snapshot_offset(&context.db, app_id, &changelog_topic, start).await?;
                            }
                        }
                    }
                }
                _ = flush.tick() => {
                    if let Some(offsets) = confirmed.take() {
                        input.commit(&offsets);
                        last_commit = Instant::now();
                    }
                    if last_lag.elapsed() >= LAG_EVERY {
                        last_lag = Instant::now();
                        pending.lag = input.lag(&state.offsets);
                    }
                    status.offer(&mut pending)?;
                }
                reason = stopped(stop) => {
                    return Ok(Outcome::Stop(reason));
                }
                // The node saw the team's grants change: the database says what they are now (the
                // node's view may predate this run's).
                Ok(()) = grants.changed() => {
                    let now = db::team_grants(&context.db, app_id).await?;
                    if let Err(message) = check_topics(&code.team, &now, &topic_names) {
                        return Ok(Outcome::Failed { message, line: None });
                    }
                }
            }
            if records_since_snapshot >= RECORDS_PER_SNAPSHOT {
                // Queued, not awaited (input goes on meanwhile), after every delta before it: when
                // it is written, so are they.
                let parts = writer.queue_snapshot(&state, records_since_snapshot)?;
                let count = parts.len();
                for (index, delivery) in parts.into_iter().enumerate() {
                    let part = Written::SnapshotPart { first: index == 0, last: index + 1 == count };
                    writes.push_back((delivery, part));
                }
                records_since_snapshot = 0;
            }
        }
    }
    .await;
    let finished = status.finish(pending).await;
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
