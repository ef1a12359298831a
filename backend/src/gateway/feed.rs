//! An app's feed: one consumer thread per app with subscribers, reading its changelog into the
//! app's grids (through `Replay`, as recovery does) and broadcasting each burst of changes, with
//! a sequence number, on a ring bounded in events and bytes. Stopping or deleting the app, or
//! shutting the server down, ends the feed's streams with a status.
//!
//! Records also come from the node's relay (`relay.rs`), sooner. Either way the feed applies the
//! changelog's records in offset order, each once: a relayed record only at the offset expected
//! next, a consumed one only if the relay has not brought it already (and then it must be the
//! record the relay brought, by digest, else the feed ends: it no longer knows its place).

use crate::LockExt as _;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak, atomic::AtomicBool},
    time::Duration,
};

use aerogrid_changelog::{Applied, ChangelogReader, Read, ReadError, Replay};
use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{ChangelogDelta, ChangelogRecord, Row, Snapshot, changelog_record};
use prost::Message as _;
use tokio::sync::watch;
use tonic::Status;
use uuid::Uuid;

use super::{
    internal,
    latest::LatestByKey,
    relay::{self, RelayChannels},
    view::{GridView, Prepared},
};
use crate::{
    ServerState,
    db::grids,
    feed_ring::{Position, Ring},
};

/// Changes a subscriber may fall behind by before it is resynchronised with a snapshot.
pub(super) const FEED_BUFFER: usize = 1024;
/// How long a new feed may take to read its changelog up to the end.
const FEED_LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Changelog records applied and broadcast as one event at most.
pub(super) const MAX_BURST: usize = 64;

/// The feeds of apps with subscribers.
pub(super) type Feeds = Arc<Mutex<HashMap<Uuid, Weak<AppFeed>>>>;

/// The app's feed, if it has one that has not ended (a stopped app's next subscribers get a new
/// one).
pub(super) fn live_feed(
    feeds: &HashMap<Uuid, Weak<AppFeed>>,
    app_id: Uuid,
) -> Option<Arc<AppFeed>> {
    feeds.get(&app_id).and_then(Weak::upgrade).filter(|feed| feed.ended.get().is_none())
}

/// The channel the `apps` triggers notify on a Start, Stop or delete (payload: the app id).
const APPS_CHANNEL: &str = "aerogrid_apps";

/// Ends the streams of an app when it is stopped or deleted, with a status saying so.
pub(super) async fn end_streams_of_stopped_apps(state: ServerState, feeds: Feeds) {
    loop {
        let listening = async {
            // Runs until the connection fails.
            let mut listener = sqlx::postgres::PgListener::connect_with(state.db()).await?;
            listener.listen(APPS_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                let Ok(app_id) = notification.payload().parse::<Uuid>() else { continue };
                let feed = live_feed(&feeds.locked(), app_id);
                let Some(feed) = feed else { continue };
                let ended = match grids::desired_state(state.db(), app_id).await {
                    Ok(None) => Status::not_found("the app was deleted"),
                    Ok(Some(aerogrid_api::DesiredState::Stopped)) => Status::unavailable(
                        "the app was stopped: its grids are no longer live (subscribe again once it runs)",
                    ),
                    Ok(Some(_)) => continue,
                    Err(error) => {
                        tracing::warn!(%error, %app_id, "Cannot read an app's state.");
                        continue;
                    }
                };
                feed.end(ended);
            }
        };
        let result: std::result::Result<std::convert::Infallible, sqlx::Error> = listening.await;
        let Err(error) = result;
        tracing::warn!(%error, "Listening for app changes failed; retrying in 1 s.");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Ends every stream with UNAVAILABLE when the server begins to shut down, so connections drain.
/// Through the feeds, like a Stop: a subscription waits on its feed alone.
pub(super) async fn end_streams_on_shutdown(
    mut shutting_down: watch::Receiver<bool>,
    feeds: Feeds,
) {
    if shutting_down.wait_for(|down| *down).await.is_err() {
        return;
    }
    let live: Vec<Arc<AppFeed>> = feeds.locked().values().filter_map(Weak::upgrade).collect();
    for feed in live {
        feed.end(shutting_down_status());
    }
}

/// The status streams end with when the server shuts down.
pub(super) fn shutting_down_status() -> Status {
    Status::unavailable("the server is shutting down: subscribe again")
}

/// The app's feed, started if it has none, once it has read its changelog to the end.
pub(super) async fn get_or_start(
    state: &ServerState,
    feeds: &Feeds,
    relays: &RelayChannels,
    app_id: Uuid,
    ring_bytes: usize,
) -> Result<Arc<AppFeed>, Status> {
    let existing = live_feed(&feeds.locked(), app_id);
    let feed = match existing {
        Some(feed) => feed,
        None => {
            let from = grids::snapshot_offset(state.db(), app_id).await.map_err(internal)?;
            let mut feeds = feeds.locked();
            // Another call may have started one meanwhile.
            match live_feed(&feeds, app_id) {
                Some(feed) => feed,
                None => {
                    let feed = AppFeed::start(&state.inner.kafka, app_id, from, ring_bytes)?;
                    feeds.retain(|_, feed| feed.strong_count() > 0);
                    feeds.insert(app_id, Arc::downgrade(&feed));
                    relay::follow(state.clone(), relays.clone(), app_id, Arc::downgrade(&feed));
                    feed
                }
            }
        }
    };
    let mut loaded = feed.loaded.clone();
    match tokio::time::timeout(
        FEED_LOAD_TIMEOUT,
        loaded.wait_for(|state| *state != FeedLoad::Loading),
    )
    .await
    {
        Ok(Ok(state)) if *state == FeedLoad::Loaded => Ok(feed),
        Ok(Ok(state)) => match &*state {
            FeedLoad::Failed(message) => Err(Status::unavailable(message.clone())),
            _ => unreachable!("waited for a final state"),
        },
        Ok(Err(_)) => Err(Status::unavailable("the grid feed stopped")),
        Err(_) => Err(Status::unavailable(format!(
            "the app's changelog did not load within {FEED_LOAD_TIMEOUT:?}"
        ))),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum FeedLoad {
    Loading,
    Loaded,
    Failed(String),
}

/// One app's materialised grids, kept current from its changelog while anyone subscribes.
pub(super) struct AppFeed {
    pub(super) state: Mutex<FeedState>,
    pub(super) changes: Ring<FeedEvent>,
    /// Why the feed's streams ended (the app stopped, the server shuts down), once they have:
    /// for a subscriber that fell behind and so skipped the `Ended` event.
    pub(super) ended: std::sync::OnceLock<Status>,
    pub(super) loaded: watch::Receiver<FeedLoad>,
    /// Set when the last subscriber is gone: the consumer thread ends.
    pub(super) stop: Arc<AtomicBool>,
}

pub(super) struct FeedState {
    pub(super) replay: Replay,
    /// Records applied so far: the sequence number of the state.
    pub(super) sequence: u64,
    /// The changelog offset of the next record to apply.
    next_offset: i64,
    /// Records applied from the relay that the consumer has not read yet: their offsets and
    /// digests, to check the consumer reads the same there.
    relayed: VecDeque<(i64, u64)>,
}

impl FeedState {
    fn new(from: i64) -> Self {
        Self { replay: Replay::default(), sequence: 0, next_offset: from, relayed: VecDeque::new() }
    }
}

/// Relayed records remembered for that check (the consumer is seldom more than a fetch
/// behind); beyond, the oldest go unchecked.
const MAX_RELAYED_TO_CHECK: usize = 10_000;

/// A record's digest: SipHash of its encoding, keyed at random per process (so a forged record
/// cannot be made to match).
fn digest(record: &ChangelogRecord) -> u64 {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    std::hash::BuildHasher::hash_one(KEY.get_or_init(Default::default), record.encode_to_vec())
}

/// Where a record came from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Changelog,
    Relay,
}

pub(super) enum FeedEvent {
    Delta {
        sequence: u64,
        delta: ChangelogDelta,
        /// What each kind of subscriber sees of it, computed by the first one that asks.
        prepared: Mutex<Vec<Arc<Prepared>>>,
    },
    /// A snapshot replaced everything: subscribers start over.
    Reset,
    /// The app was stopped or deleted: streams end with this status.
    Ended(Status),
}

/// What a `Reset` or `Ended` event is counted as in a feed's ring.
pub(super) const SMALL_EVENT_BYTES: usize = 64;
/// Views whose encodings of a delta an event keeps for the subscribers that share them.
pub(super) const MAX_SHARED_VIEWS: usize = 4;

impl FeedEvent {
    /// The bytes the event is counted as: its delta's, and as much again for each view's
    /// encoding of it it may keep (each is at most the delta).
    fn bytes(&self) -> usize {
        match self {
            Self::Delta { delta, .. } => {
                (1 + MAX_SHARED_VIEWS) * delta.encoded_len() + SMALL_EVENT_BYTES
            }
            Self::Reset | Self::Ended(_) => SMALL_EVENT_BYTES,
        }
    }
}

impl Drop for AppFeed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl AppFeed {
    /// Starts the feed's consumer thread; an error when the thread cannot start (the process
    /// is out of threads): the caller answers UNAVAILABLE, nothing panics under a lock.
    pub(super) fn start(
        kafka: &KafkaSettings,
        app_id: Uuid,
        from: i64,
        ring_bytes: usize,
    ) -> Result<Arc<Self>, Status> {
        let changes = Ring::new(FEED_BUFFER, ring_bytes);
        let (loaded_sender, loaded) = watch::channel(FeedLoad::Loading);
        let stop = Arc::new(AtomicBool::new(false));
        let feed = Arc::new(Self {
            state: Mutex::new(FeedState::new(from)),
            changes,
            ended: std::sync::OnceLock::new(),
            loaded,
            stop: stop.clone(),
        });
        let weak = Arc::downgrade(&feed);
        let kafka = kafka.clone();
        std::thread::Builder::new()
            .name("aerogrid-grid-feed".into())
            .spawn(move || {
                RUNNING_FEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _running = RunningFeed;
                if let Err(message) = consume(&kafka, app_id, from, &weak, &loaded_sender, &stop) {
                    tracing::warn!(%app_id, %message, "Grid feed stopped.");
                    let _ = loaded_sender.send(FeedLoad::Failed(message));
                }
            })
            .map_err(|error| {
                tracing::error!(%error, %app_id, "Cannot start a grid feed thread.");
                Status::unavailable("the server cannot start a grid feed now: try again later")
            })?;
        Ok(feed)
    }

    /// A snapshot of `grid` and the changes after it; or the names of the grids there are.
    #[allow(clippy::type_complexity, reason = "a pair, named at the one call site")]
    pub(super) fn subscribe(
        &self,
        grid: &str,
        view: &GridView,
    ) -> Result<(Snapshot, Position), Vec<String>> {
        let state = self.state.locked();
        let snapshot = snapshot_of(&state, grid, view)
            .ok_or_else(|| state.replay.state.grids.keys().cloned().collect::<Vec<_>>())?;
        // Under the lock: no change falls between the snapshot and the subscription.
        Ok((snapshot, self.changes.end()))
    }

    /// Ends every stream of the feed with `status`, those that fell behind included.
    pub(super) fn end(&self, status: Status) {
        // Set before the event is sent: a subscriber that starts over after the send sees it.
        let _ = self.ended.set(status.clone());
        self.changes.send(Arc::new(FeedEvent::Ended(status)), SMALL_EVENT_BYTES);
    }

    /// About what a snapshot of `grid` in `view` takes encoded, without making it (None: no
    /// such grid).
    pub(super) fn snapshot_bytes(&self, grid: &str, view: &GridView) -> Option<usize> {
        let state = self.state.locked();
        let found = state.replay.state.grids.get(grid)?;
        let columns = view.columns(&found.columns);
        let rows: usize = found
            .rows
            .iter()
            .filter(|(key, _)| view.wants_row(key))
            .map(|(key, values)| columns.row_bytes(key, values))
            .sum();
        Some(rows + columns.names.iter().map(|name| name.len() + 2).sum::<usize>() + 16)
    }

    pub(super) fn snapshot(&self, grid: &str, view: &GridView) -> Option<Snapshot> {
        snapshot_of(&self.state.locked(), grid, view)
    }

    /// Records the node relayed (consecutive ones, each at its changelog offset): those at the
    /// offset expected next are applied, the others left to the consumer.
    pub(super) fn apply_relayed(&self, records: Vec<(i64, ChangelogRecord)>) {
        apply_burst(self, records, Source::Relay);
    }
}

fn snapshot_of(state: &FeedState, grid: &str, view: &GridView) -> Option<Snapshot> {
    let found = state.replay.state.grids.get(grid)?;
    let columns = view.columns(&found.columns);
    let rows = found
        .rows
        .iter()
        .filter(|(key, _)| view.wants_row(key))
        .map(|(key, values)| Row { key: key.clone(), values: columns.pick(values) })
        .collect();
    Some(Snapshot { sequence: state.sequence, columns: columns.names, rows })
}

/// Feed consumer threads running in this process (for `/metrics`).
static RUNNING_FEEDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) fn running_feeds() -> usize {
    RUNNING_FEEDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a feed's thread off when it ends, however it ends.
struct RunningFeed;

impl Drop for RunningFeed {
    fn drop(&mut self) {
        RUNNING_FEEDS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads the changelog from `from` for as long as the feed has subscribers.
fn consume(
    kafka: &KafkaSettings,
    app_id: Uuid,
    from: i64,
    feed: &Weak<AppFeed>,
    loaded: &watch::Sender<FeedLoad>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let topic = aerogrid_changelog::topic_name(app_id);
    let mut config = kafka.consumer_config();
    config.set("group.id", "aerogrid-gateway");
    let mut reader =
        ChangelogReader::open(config, &topic, from).map_err(|error| error.to_string())?;
    let exists = reader
        .exists(Duration::from_secs(10))
        .map_err(|error| format!("cannot read the changelog's metadata: {error}"))?;
    if !exists {
        // The app has not run yet: it has no grids until it does.
        let _ = loaded.send(FeedLoad::Loaded);
        return Ok(());
    }
    // Records fetched together are applied and broadcast together: one event (one message per
    // subscriber) for what arrived at once.
    let mut burst: Vec<(i64, ChangelogRecord)> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let wait = if burst.is_empty() { Duration::from_millis(100) } else { Duration::ZERO };
        let read = reader.poll(wait);
        if burst.len() >= MAX_BURST
            || (!burst.is_empty() && !matches!(read, Ok(Read::Record { .. })))
        {
            let Some(feed) = feed.upgrade() else { break };
            apply_burst(&feed, std::mem::take(&mut burst), Source::Changelog);
        }
        match read {
            Ok(Read::Record { offset, record }) => burst.push((offset, record)),
            Ok(Read::End) => {
                loaded.send_if_modified(|state| {
                    let first = *state == FeedLoad::Loading;
                    *state = FeedLoad::Loaded;
                    first
                });
            }
            Ok(Read::Idle) => {}
            Err(gone @ ReadError::Gone(_)) => return Err(gone.to_string()),
            Err(error) => {
                tracing::warn!(%app_id, %error, "Reading a changelog failed; going on.");
            }
        }
    }
    Ok(())
}

/// Records applied by the gateway's feeds, by where they came from (for `/metrics`).
static APPLIED_FROM_CHANGELOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static APPLIED_FROM_RELAY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Changelog records the feeds applied as read from the broker and as relayed by nodes.
pub(crate) fn applied_records() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (APPLIED_FROM_CHANGELOG.load(Relaxed), APPLIED_FROM_RELAY.load(Relaxed))
}

/// Which of `records` (in offset order) the feed applies: those at the offset it expects next,
/// each once whichever source brings it first. None when the consumer read something other than
/// what the relay brought at an offset: the feed no longer knows its place.
fn take_new(
    state: &mut FeedState,
    records: Vec<(i64, ChangelogRecord)>,
    source: Source,
) -> Option<Vec<ChangelogRecord>> {
    let mut new = Vec::with_capacity(records.len());
    for (offset, record) in records {
        match source {
            Source::Relay if offset != state.next_offset => continue,
            Source::Relay => {
                state.relayed.push_back((offset, digest(&record)));
                if state.relayed.len() > MAX_RELAYED_TO_CHECK {
                    state.relayed.pop_front();
                }
            }
            Source::Changelog if offset < state.next_offset => {
                while state.relayed.front().is_some_and(|(relayed, ..)| *relayed < offset) {
                    state.relayed.pop_front();
                }
                if let Some(&(relayed, relayed_digest)) = state.relayed.front()
                    && relayed == offset
                {
                    state.relayed.pop_front();
                    if relayed_digest != digest(&record) {
                        return None;
                    }
                }
                continue;
            }
            Source::Changelog => {}
        }
        state.next_offset = offset + 1;
        new.push(record);
    }
    let counter = match source {
        Source::Changelog => &APPLIED_FROM_CHANGELOG,
        Source::Relay => &APPLIED_FROM_RELAY,
    };
    counter.fetch_add(new.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Some(new)
}

/// Applies the new ones of `records` in order and broadcasts what they changed: consecutive
/// deltas as one.
fn apply_burst(feed: &AppFeed, records: Vec<(i64, ChangelogRecord)>, source: Source) {
    let mut state = feed.state.locked();
    let Some(records) = take_new(&mut state, records, source) else {
        tracing::error!(
            "A changelog record differs from the one relayed at its offset: the feed ends and its subscribers start again."
        );
        drop(state);
        feed.end(Status::unavailable(
            "the grid feed lost its place in the app's changelog: subscribe again",
        ));
        return;
    };
    if records.is_empty() {
        return;
    }
    let mut merged: Option<ChangelogDelta> = None;
    // Sent under the lock, so subscribers see events in sequence order after their snapshot.
    let send = |state: &mut FeedState, event: FeedEvent| {
        state.sequence += 1;
        let bytes = event.bytes();
        feed.changes.send(Arc::new(event), bytes);
    };
    let send_delta = |state: &mut FeedState, delta: ChangelogDelta| {
        let sequence = state.sequence + 1;
        send(state, FeedEvent::Delta { sequence, delta, prepared: Mutex::default() });
    };
    for record in records {
        // The runtime writes a snapshot of the state its deltas already built, every 1,000
        // records: subscribers only start over when it differs.
        let completes_snapshot = matches!(&record.kind,
            Some(changelog_record::Kind::Snapshot(part)) if part.index + 1 == part.count);
        let before = completes_snapshot.then(|| state.replay.state.grids.clone());
        match state.replay.apply(record) {
            Applied::Nothing => {}
            Applied::Delta(delta) => match merged.as_mut() {
                Some(into) if same_layouts(into, &delta) => merge_delta(into, delta),
                _ => {
                    if let Some(previous) = merged.replace(delta) {
                        send_delta(&mut state, previous);
                    }
                }
            },
            Applied::Snapshot if before.as_ref() == Some(&state.replay.state.grids) => {}
            Applied::Snapshot => {
                if let Some(previous) = merged.take() {
                    send_delta(&mut state, previous);
                }
                send(&mut state, FeedEvent::Reset);
            }
        }
    }
    if let Some(last) = merged {
        send_delta(&mut state, last);
    }
}

/// Whether every grid both deltas touch has the same columns in both (else they stay apart, so
/// subscribers see the new layout at its place).
fn same_layouts(first: &ChangelogDelta, second: &ChangelogDelta) -> bool {
    second.grids.iter().all(|grid| {
        first
            .grids
            .iter()
            .find(|candidate| candidate.grid == grid.grid)
            .is_none_or(|candidate| candidate.columns == grid.columns)
    })
}

/// `into` followed by `next`, as one delta: the latest row per key (or its deletion).
fn merge_delta(into: &mut ChangelogDelta, next: ChangelogDelta) {
    for grid in next.grids {
        let Some(existing) = into.grids.iter_mut().find(|candidate| candidate.grid == grid.grid)
        else {
            into.grids.push(grid);
            continue;
        };
        let upserted_now: std::collections::HashSet<&str> =
            grid.upserted.iter().map(|row| row.key.as_str()).collect();
        existing.deleted.retain(|key| !upserted_now.contains(key.as_str()));
        let mut rows = LatestByKey::new(std::mem::take(&mut existing.upserted));
        rows.extend(grid.upserted);
        rows.remove(grid.deleted.iter().map(String::as_str));
        existing.upserted = rows.into_rows();
        let mut already: std::collections::HashSet<String> =
            existing.deleted.iter().cloned().collect();
        for key in grid.deleted {
            if already.insert(key.clone()) {
                existing.deleted.push(key);
            }
        }
    }
    into.offsets = next.offsets;
    if next.counts.is_some() {
        into.counts = next.counts;
    }
}

#[cfg(test)]
/// A feed with no consumer behind it: the test sends its events.
pub(super) fn feed_without_consumer() -> Arc<AppFeed> {
    let changes = Ring::new(FEED_BUFFER, 64 << 20);
    let (_, loaded) = watch::channel(FeedLoad::Loaded);
    Arc::new(AppFeed {
        state: Mutex::new(FeedState::new(0)),
        changes,
        ended: std::sync::OnceLock::new(),
        loaded,
        stop: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{Value, value};

    use super::*;
    use crate::gateway::view::GridView;
    use aerogrid_proto::v1::SubscribeRequest;

    #[test]
    fn deltas_fetched_together_merge_to_the_latest_row_per_key() {
        use aerogrid_proto::v1::{GridDelta, InputOffset, Row};
        let row = |key: &str, n: i64| Row {
            key: key.into(),
            values: vec![Value { kind: Some(value::Kind::Int(n)) }],
        };
        let delta = |upserted: Vec<Row>, deleted: Vec<&str>, offset: i64| ChangelogDelta {
            grids: vec![GridDelta {
                grid: "g".into(),
                columns: vec!["n".into()],
                upserted,
                deleted: deleted.into_iter().map(Into::into).collect(),
            }],
            offsets: vec![InputOffset { topic: "t".into(), partition: 0, offset }],
            counts: None,
        };
        let mut merged = delta(vec![row("a", 1), row("b", 1)], vec!["c"], 1);
        merge_delta(&mut merged, delta(vec![row("a", 2), row("c", 3)], vec!["b"], 2));
        merge_delta(&mut merged, delta(vec![row("d", 4)], vec![], 3));
        let grid = &merged.grids[0];
        assert_eq!(grid.upserted, vec![row("a", 2), row("c", 3), row("d", 4)]);
        assert_eq!(grid.deleted, vec!["b".to_owned()]);
        assert_eq!(merged.offsets[0].offset, 3);
        // Another layout of the grid does not merge.
        let mut relayout = delta(vec![], vec![], 4);
        relayout.grids[0].columns.push("m".into());
        assert!(!same_layouts(&merged, &relayout));
        assert!(same_layouts(&merged, &delta(vec![], vec![], 4)));
    }

    fn numbered(epoch: u64, sequence: u64) -> ChangelogRecord {
        use aerogrid_proto::v1::{Fence, changelog_record};
        ChangelogRecord {
            epoch,
            sequence,
            kind: Some(changelog_record::Kind::Fence(Fence { node_id: "n".into() })),
        }
    }

    fn sequences(records: &[ChangelogRecord]) -> Vec<u64> {
        records.iter().map(|record| record.sequence).collect()
    }

    #[test]
    fn each_offset_applies_once_from_whichever_source_brings_it_first() {
        let mut state = FeedState::new(10);
        let record = |offset: i64| (offset, numbered(1, offset as u64));
        // The relay is ahead of the consumer (it joined late): nothing of it applies yet.
        let taken = take_new(&mut state, vec![record(12), record(13)], Source::Relay).unwrap();
        assert!(taken.is_empty());
        // The consumer reads up to 12; the relay's 13 then applies, before the consumer's.
        let taken =
            take_new(&mut state, vec![record(10), record(11), record(12)], Source::Changelog);
        assert_eq!(sequences(&taken.unwrap()), [10, 11, 12]);
        let taken = take_new(&mut state, vec![record(13)], Source::Relay).unwrap();
        assert_eq!(sequences(&taken), [13]);
        // A relayed record delivered twice, or one from the past, is passed over.
        assert!(
            take_new(&mut state, vec![record(13), record(5)], Source::Relay).unwrap().is_empty()
        );
        // The consumer reaches 13 (the same record: passed over) and goes on at 14.
        let taken = take_new(&mut state, vec![record(13), record(14)], Source::Changelog);
        assert_eq!(sequences(&taken.unwrap()), [14]);
        assert_eq!(state.next_offset, 15);
        assert!(state.relayed.is_empty(), "checked and forgotten");
    }

    #[test]
    fn a_consumed_record_unlike_the_relayed_one_at_its_offset_loses_the_feeds_place() {
        let mut state = FeedState::new(0);
        take_new(&mut state, vec![(0, numbered(2, 1))], Source::Relay).unwrap();
        // The same epoch and number, other content (a forged or corrupted record).
        let mut other = numbered(2, 1);
        other.kind =
            Some(aerogrid_proto::v1::changelog_record::Kind::Fence(aerogrid_proto::v1::Fence {
                node_id: "elsewhere".into(),
            }));
        assert!(take_new(&mut state, vec![(0, other)], Source::Changelog).is_none());
        // The same record passes.
        let mut state = FeedState::new(0);
        take_new(&mut state, vec![(0, numbered(2, 1))], Source::Relay).unwrap();
        let passed = take_new(&mut state, vec![(0, numbered(2, 1))], Source::Changelog).unwrap();
        assert!(passed.is_empty() && state.relayed.is_empty());
        // Through the feed: its streams end, with a status that says to subscribe again.
        let feed = feed_without_consumer();
        apply_burst(&feed, vec![(0, numbered(2, 1))], Source::Relay);
        assert!(feed.ended.get().is_none());
        apply_burst(&feed, vec![(0, numbered(3, 1))], Source::Changelog);
        let ended = feed.ended.get().expect("the feed ended");
        assert_eq!(ended.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn a_snapshots_size_is_known_before_it_is_made() {
        use aerogrid_proto::v1::{ChangelogRecord, GridDelta, Value, changelog_record, value};
        let feed = feed_without_consumer();
        let rows = (0..500)
            .map(|index| Row {
                key: format!("key-{index}"),
                values: vec![
                    Value { kind: Some(value::Kind::String("x".repeat(index))) },
                    Value { kind: Some(value::Kind::Int(index as i64)) },
                    Value { kind: Some(value::Kind::Null(true)) },
                ],
            })
            .collect();
        let record = ChangelogRecord {
            epoch: 1,
            sequence: 0,
            kind: Some(changelog_record::Kind::Delta(ChangelogDelta {
                grids: vec![GridDelta {
                    grid: "g".into(),
                    columns: vec!["text".into(), "n".into(), "nothing".into()],
                    upserted: rows,
                    deleted: vec![],
                }],
                offsets: vec![],
                counts: None,
            })),
        };
        feed.state.lock().unwrap().replay.apply(record);
        let views = [
            SubscribeRequest::default(),
            SubscribeRequest { columns: vec!["n".into()], ..Default::default() },
            SubscribeRequest {
                row_keys: vec!["key-7".into(), "key-400".into()],
                ..Default::default()
            },
        ];
        for request in views {
            let view = GridView::new("g", &request).unwrap();
            let estimate = feed.snapshot_bytes("g", &view).unwrap();
            let actual = feed.snapshot("g", &view).unwrap().encoded_len();
            assert!(actual <= estimate && estimate <= actual + 64, "{estimate} for {actual}");
        }
        assert!(
            feed.snapshot_bytes("h", &GridView::new("h", &SubscribeRequest::default()).unwrap())
                .is_none()
        );
    }
}
