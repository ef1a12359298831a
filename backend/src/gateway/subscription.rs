//! One subscriber's stream: its snapshot, then the feed's changes conflated per row, at the rate
//! it asked for and its connection takes, with heartbeats; a new snapshot when it falls behind.

use std::{sync::Arc, time::Duration};

use aerogrid_proto::{
    server::v1::{EncodedSubscribeResponse, encoded_subscribe_response},
    v1::{Changes, Heartbeat, RowChange, Snapshot},
};
use prost::{Message as _, bytes::Bytes};
use tokio::sync::watch;
use tonic::Status;

use super::{
    access::StreamAccess,
    feed::{AppFeed, FeedEvent, shutting_down_status},
    latest::LatestByKey,
    view::{GridView, Prepared, Touched, prepare},
};
use crate::{
    feed_ring::{Next, Position},
    unread::{Unread, UnreadBudget},
};

pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Open subscriptions of this process (for `/metrics`).
static SUBSCRIBERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) fn subscriber_count() -> usize {
    SUBSCRIBERS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a subscription while it lives.
pub(super) struct Counted;

impl Counted {
    pub(super) fn new() -> Self {
        SUBSCRIBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        SUBSCRIBERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One subscriber's stream: its snapshot, then changes, until it goes away (the response body
/// is dropped, and this with it).
///
/// When polled, it takes every change the feed has broadcast since, conflated per row (rows in
/// the changelog are whole, so the latest row is the latest value of every cell), and sends them
/// as one message once its rate allows. A subscriber whose connection keeps up is polled at each
/// delta and sends it as the first subscriber with the same view encoded it; a slow one gets
/// fewer, larger messages, and one that falls behind the feed's buffer gets a new snapshot.
pub(super) struct Subscription {
    pub(super) _counted: Counted,
    pub(super) feed: Arc<AppFeed>,
    pub(super) grid: String,
    pub(super) view: GridView,
    /// The subscription's place in the feed's ring.
    pub(super) changes: Position,
    pub(super) subscriber: Subscriber,
    /// The snapshot, sent first.
    pub(super) first: Option<EncodedSubscribeResponse>,
    pub(super) min_interval: Option<Duration>,
    pub(super) last_sent: tokio::time::Instant,
    /// Fires at the latest `last_sent + HEARTBEAT_EVERY`; moved only when it fires, so a message
    /// costs no timer of its own.
    pub(super) heartbeat: std::pin::Pin<Box<tokio::time::Sleep>>,
    pub(super) last_flush: Option<tokio::time::Instant>,
    /// Read when polled: a stream that began before the shutdown is ended through its feed.
    pub(super) shutting_down: watch::Receiver<bool>,
    pub(super) access: StreamAccess,
    pub(super) ended: bool,
    /// Who subscribed, for the bound of what their clients have not read.
    pub(super) caller: Arc<str>,
    pub(super) budget: Arc<UnreadBudget>,
    /// The last message handed over, until the next is asked for (then it has been read).
    pub(super) unread: Option<Unread>,
    /// The view's own bytes, for the stream's life.
    pub(super) _view_held: Unread,
}

impl Subscription {
    /// The next message, counted as unread until the one after is asked for.
    pub(super) async fn next(&mut self) -> Option<Result<EncodedSubscribeResponse, Status>> {
        if let Some(first) = self.first.take() {
            // (Counted since the subscription began: it was held from then.)
            return Some(Ok(first));
        }
        self.unread = None;
        let next = self.next_message().await;
        if let Some(Ok(message)) = &next {
            match self.budget.take_waiting(&self.caller, message.encoded_len()).await {
                Ok(unread) => self.unread = Some(unread),
                Err(exhausted) => return self.end(exhausted_status(&exhausted)),
            }
        }
        next
    }

    async fn next_message(&mut self) -> Option<Result<EncodedSubscribeResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if *self.shutting_down.borrow() {
                return self.end(shutting_down_status());
            }
            // Everything broadcast since the last message, without waiting.
            loop {
                match self.feed.changes.try_next(&mut self.changes) {
                    Next::Event(event) => {
                        if let Some(message) = self.take_event(&event) {
                            return Some(message);
                        }
                    }
                    Next::Empty => break,
                    Next::Lagged => {
                        if let Some(message) = self.start_over() {
                            return Some(message);
                        }
                    }
                }
            }
            if self.subscriber.has_unsent() {
                let now = tokio::time::Instant::now();
                if let Some(at) =
                    self.min_interval.zip(self.last_flush).map(|(every, last)| last + every)
                    && at > now
                {
                    // Changes broadcast meanwhile are taken (and conflated) after the wait.
                    tokio::time::sleep_until(at).await;
                    continue;
                }
                self.last_sent = now;
                self.last_flush = Some(now);
                let changes = encoded_subscribe_response::Event::Changes(self.subscriber.take());
                return Some(Ok(encoded(changes)));
            }
            tokio::select! {
                biased;
                Ok(()) = self.access.generation.changed() => {
                    if let Err(status) = self.access.still_allowed().await {
                        return self.end(status);
                    }
                }
                event = self.feed.changes.next(&mut self.changes) => match event {
                    Next::Event(event) => {
                        if let Some(message) = self.take_event(&event) {
                            return Some(message);
                        }
                    }
                    Next::Lagged => {
                        if let Some(message) = self.start_over() {
                            return Some(message);
                        }
                    }
                    Next::Empty => {}
                },
                () = self.heartbeat.as_mut() => {
                    let due = self.last_sent + HEARTBEAT_EVERY;
                    let now = tokio::time::Instant::now();
                    if due > now {
                        // Something was sent since the timer was set.
                        self.heartbeat.as_mut().reset(due);
                        continue;
                    }
                    self.last_sent = now;
                    self.heartbeat.as_mut().reset(now + HEARTBEAT_EVERY);
                    let heartbeat = Heartbeat { sequence: self.subscriber.sequence };
                    let event = encoded_subscribe_response::Event::Heartbeat(heartbeat.encode_to_vec().into());
                    return Some(Ok(encoded(event)));
                }
            }
        }
    }

    /// Adds one feed event to what is pending; returns a message that must go at once (a new
    /// snapshot, or the status the stream ends with).
    fn take_event(
        &mut self,
        event: &FeedEvent,
    ) -> Option<Result<EncodedSubscribeResponse, Status>> {
        let resync = match event {
            FeedEvent::Delta { sequence, delta, prepared } => {
                let prepared = prepare(prepared, *sequence, delta, &self.view);
                match &prepared.touched {
                    // A new version of the app changed the grid's columns.
                    Some(touched) if touched.columns != self.subscriber.columns => true,
                    Some(Touched { changes: Some(_), .. }) => {
                        self.subscriber.merge(*sequence, prepared);
                        false
                    }
                    _ => {
                        self.subscriber.sequence = *sequence;
                        false
                    }
                }
            }
            FeedEvent::Reset => true,
            FeedEvent::Ended(status) => return self.end(status.clone()),
        };
        if resync { self.resync().map(Ok) } else { None }
    }

    /// Fell behind the feed itself: starts over from the feed's current state, or ends if the
    /// feed has (its `Ended` event may be among the events skipped).
    fn start_over(&mut self) -> Option<Result<EncodedSubscribeResponse, Status>> {
        self.changes = self.feed.changes.end();
        if let Some(status) = self.feed.ended.get() {
            return self.end(status.clone());
        }
        self.resync().map(Ok)
    }

    /// A new snapshot replaces everything pending.
    fn resync(&mut self) -> Option<EncodedSubscribeResponse> {
        let snapshot = self.feed.snapshot(&self.grid, &self.view)?;
        self.subscriber = Subscriber::new(&snapshot);
        self.last_sent = tokio::time::Instant::now();
        Some(encoded_snapshot(&snapshot))
    }

    fn end(&mut self, status: Status) -> Option<Result<EncodedSubscribeResponse, Status>> {
        self.ended = true;
        Some(Err(status))
    }
}

pub(super) fn exhausted_status(exhausted: &crate::unread::Exhausted) -> Status {
    Status::resource_exhausted(format!(
        "the streams of this caller (or of all callers) hold {} MiB their clients have not \
         read, the bound being {} MiB: read faster, or subscribe again",
        exhausted.waiting_mib, exhausted.bound_mib
    ))
}

pub(super) fn encoded(event: encoded_subscribe_response::Event) -> EncodedSubscribeResponse {
    EncodedSubscribeResponse { event: Some(event) }
}

pub(super) fn encoded_snapshot(snapshot: &Snapshot) -> EncodedSubscribeResponse {
    encoded(encoded_subscribe_response::Event::Snapshot(snapshot.encode_to_vec().into()))
}

/// What one subscriber has been sent, and the changes it has yet to get.
pub(super) struct Subscriber {
    /// The feed's sequence the subscriber's view reflects once `unsent` is sent.
    pub(super) sequence: u64,
    pub(super) columns: Vec<String>,
    unsent: Unsent,
}

enum Unsent {
    Nothing,
    /// One delta, sent as it was prepared.
    Shared(Arc<Prepared>),
    /// Several deltas merged: the latest per row key, in the order rows first changed.
    Merged(LatestByKey<RowChange>),
}

impl Subscriber {
    pub(super) fn new(snapshot: &Snapshot) -> Self {
        Self {
            sequence: snapshot.sequence,
            columns: snapshot.columns.clone(),
            unsent: Unsent::Nothing,
        }
    }

    pub(super) fn has_unsent(&self) -> bool {
        !matches!(self.unsent, Unsent::Nothing)
    }

    /// Adds a delta that changed rows of this subscriber's view.
    pub(super) fn merge(&mut self, sequence: u64, prepared: Arc<Prepared>) {
        self.sequence = sequence;
        match &mut self.unsent {
            Unsent::Nothing => self.unsent = Unsent::Shared(prepared),
            Unsent::Shared(first) => {
                let mut rows = LatestByKey::new(first.rows().iter().cloned());
                rows.extend(prepared.rows().iter().cloned());
                self.unsent = Unsent::Merged(rows);
            }
            Unsent::Merged(rows) => rows.extend(prepared.rows().iter().cloned()),
        }
    }

    /// The pending changes, encoded, and nothing pending.
    pub(super) fn take(&mut self) -> Bytes {
        match std::mem::replace(&mut self.unsent, Unsent::Nothing) {
            Unsent::Nothing => {
                Changes { sequence: self.sequence, rows: vec![] }.encode_to_vec().into()
            }
            Unsent::Shared(prepared) => {
                prepared.changes().map(|changes| changes.encoded.clone()).unwrap_or_default()
            }
            Unsent::Merged(rows) => {
                Changes { sequence: self.sequence, rows: rows.into_rows() }.encode_to_vec().into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{CellUpdates, SubscribeRequest, Value, row_change, value};
    use uuid::Uuid;

    use super::super::{
        access::unchecked_access,
        feed::{FEED_BUFFER, SMALL_EVENT_BYTES, feed_without_consumer, live_feed},
        view::PreparedChanges,
    };
    use super::*;

    fn update(key: &str, units: i64) -> RowChange {
        RowChange {
            key: key.into(),
            change: Some(row_change::Change::Updated(CellUpdates {
                columns: vec![0],
                values: vec![Value { kind: Some(value::Kind::Int(units)) }],
            })),
        }
    }

    fn deleted(key: &str) -> RowChange {
        RowChange { key: key.into(), change: Some(row_change::Change::Deleted(true)) }
    }

    /// A delta prepared for the view of a subscriber that asked for everything.
    fn prepared(sequence: u64, rows: Vec<RowChange>) -> Arc<Prepared> {
        let encoded = Changes { sequence, rows: rows.clone() }.encode_to_vec().into();
        let view = GridView::new("g", &SubscribeRequest::default()).unwrap();
        Arc::new(Prepared {
            view: view.key,
            touched: Some(Touched {
                columns: vec!["units".into()],
                changes: Some(PreparedChanges { rows, encoded }),
            }),
        })
    }

    pub(super) fn take(subscriber: &mut Subscriber) -> Changes {
        Changes::decode(subscriber.take()).unwrap()
    }

    #[test]
    fn pending_changes_keep_the_latest_per_row_in_first_change_order() {
        let snapshot = Snapshot { sequence: 7, columns: vec!["units".into()], rows: vec![] };
        let mut subscriber = Subscriber::new(&snapshot);
        subscriber.merge(8, prepared(8, vec![update("a", 1), update("b", 1)]));
        subscriber.merge(9, prepared(9, vec![update("a", 2), deleted("b"), update("c", 5)]));
        subscriber.merge(10, prepared(10, vec![update("b", 3)]));
        let changes = take(&mut subscriber);
        assert_eq!(changes.sequence, 10);
        assert_eq!(changes.rows, vec![update("a", 2), update("b", 3), update("c", 5)]);
        assert!(!subscriber.has_unsent());

        // One delta is sent as it was prepared: the same bytes.
        let alone = prepared(11, vec![update("a", 4), update("b", 4)]);
        subscriber.merge(11, alone.clone());
        let sent = subscriber.take();
        assert_eq!(sent, alone.changes().unwrap().encoded);
        assert_eq!(Changes::decode(sent).unwrap().rows, vec![update("a", 4), update("b", 4)]);
        subscriber.merge(12, prepared(12, vec![update("a", 5)]));
        subscriber.merge(13, prepared(13, vec![deleted("a")]));
        assert_eq!(take(&mut subscriber).rows, vec![deleted("a")]);
    }

    /// A subscription of the whole grid `g` of `feed`, from the feed's end.
    fn subscription_of(feed: &Arc<AppFeed>) -> Subscription {
        let (_, shutting_down) = watch::channel(false);
        Subscription {
            _counted: Counted::new(),
            feed: feed.clone(),
            grid: "g".into(),
            view: GridView::new("g", &SubscribeRequest::default()).unwrap(),
            changes: feed.changes.end(),
            // As if it had the snapshot of `g`'s layout.
            subscriber: Subscriber::new(&Snapshot {
                columns: vec!["n".into()],
                ..Default::default()
            }),
            first: None,
            min_interval: None,
            last_sent: tokio::time::Instant::now(),
            heartbeat: Box::pin(tokio::time::sleep(HEARTBEAT_EVERY)),
            last_flush: None,
            shutting_down,
            access: unchecked_access(),
            ended: false,
            caller: "tester".into(),
            budget: UnreadBudget::new(1 << 20, 1 << 20),
            unread: None,
            _view_held: UnreadBudget::new(1 << 20, 1 << 20).take(&"tester".into(), 1).unwrap(),
        }
    }

    /// A delta of grid `g` setting row `key` to `n`, as the feed broadcasts it.
    fn delta_event(sequence: u64, key: &str, n: i64) -> Arc<FeedEvent> {
        use aerogrid_proto::v1::{ChangelogDelta, GridDelta, Row};
        let row = Row { key: key.into(), values: vec![Value { kind: Some(value::Kind::Int(n)) }] };
        let delta = ChangelogDelta {
            grids: vec![GridDelta {
                grid: "g".into(),
                columns: vec!["n".into()],
                upserted: vec![row],
                deleted: vec![],
            }],
            offsets: vec![],
            counts: None,
        };
        Arc::new(FeedEvent::Delta { sequence, delta, prepared: Default::default() })
    }

    #[tokio::test]
    async fn a_subscriber_further_behind_than_the_feed_keeps_gets_a_fresh_snapshot() {
        use aerogrid_proto::{server::v1::encoded_subscribe_response::Event, v1::ChangelogRecord};
        let feed = feed_without_consumer();
        // The feed's state: grid `g` with row `a` = 1.
        let record = ChangelogRecord {
            epoch: 1,
            sequence: 0,
            kind: Some(aerogrid_proto::v1::changelog_record::Kind::Delta(
                match &*delta_event(1, "a", 1) {
                    FeedEvent::Delta { delta, .. } => delta.clone(),
                    _ => unreachable!(),
                },
            )),
        };
        feed.state.lock().unwrap().replay.apply(record);
        // Just within what the feed keeps: the changes, merged.
        let mut within = subscription_of(&feed);
        for sequence in 0..FEED_BUFFER as u64 {
            feed.changes.send(delta_event(sequence + 1, "a", sequence as i64), 256);
        }
        let message = within.next().await.unwrap().unwrap();
        assert!(matches!(message.event, Some(Event::Changes(_))), "{message:?}");
        // One more than it keeps behind: a snapshot of the feed's state instead.
        let mut behind = subscription_of(&feed);
        for sequence in 0..FEED_BUFFER as u64 + 1 {
            feed.changes.send(delta_event(sequence + 1, "a", 7), 256);
        }
        let message = behind.next().await.unwrap().unwrap();
        let Some(Event::Snapshot(bytes)) = message.event else { panic!("{message:?}") };
        let snapshot = Snapshot::decode(bytes).unwrap();
        assert_eq!(snapshot.rows.len(), 1);
        assert_eq!(snapshot.rows[0].key, "a");
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_when_its_app_stopped_still_ends() {
        let feed = feed_without_consumer();
        let mut subscription = subscription_of(&feed);
        // More events than the feed keeps, then the end: the `Ended` event itself is among
        // those the subscriber skips when it starts over.
        for _ in 0..FEED_BUFFER + 10 {
            feed.changes.send(Arc::new(FeedEvent::Reset), SMALL_EVENT_BYTES);
        }
        feed.end(Status::unavailable("the app was stopped"));
        for _ in 0..FEED_BUFFER {
            feed.changes.send(Arc::new(FeedEvent::Reset), SMALL_EVENT_BYTES);
        }
        let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("the stream ends rather than waits for changes that will not come");
        let status = next.expect("a status").expect_err("an error status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "the app was stopped");
        assert!(subscription.next().await.is_none(), "nothing after the status");

        // The ended feed is not handed to new subscribers; a new feed is.
        let app = Uuid::new_v4();
        let mut feeds = std::collections::HashMap::from([(app, Arc::downgrade(&feed))]);
        assert!(live_feed(&feeds, app).is_none());
        let fresh = feed_without_consumer();
        feeds.insert(app, Arc::downgrade(&fresh));
        assert!(live_feed(&feeds, app).is_some_and(|found| Arc::ptr_eq(&found, &fresh)));
    }
}
