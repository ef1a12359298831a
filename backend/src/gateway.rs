//! The grid gateway: `aerogrid.v1.GridService` on the HTTP port.
//!
//! Each app with subscribers has one feed: a consumer of its changelog topic that keeps the
//! app's grids materialised (through `aerogrid_changelog::Replay`, as recovery does) and
//! broadcasts every applied change with a sequence number. A subscriber gets a snapshot taken
//! under the feed's lock, then the changes after it. One that falls behind the broadcast's bound
//! gets a fresh snapshot: memory stays bounded and nobody waits for it.
//!
//! Invariants:
//! - The gateway only reads changelogs; it never writes to the broker.
//! - Every call is authorised against Postgres before any grid data is read.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::AtomicBool},
    time::Duration,
};

use aerogrid_changelog::{Applied, Replay};
use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{
    CellUpdates, ChangelogDelta, ChangelogRecord, Changes, Heartbeat, ListGridsRequest,
    ListGridsResponse, Row, RowChange, Snapshot, SubscribeRequest, SubscribeResponse,
    grid_service_server::{GridService, GridServiceServer},
    row_change, subscribe_response,
};
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    types::RDKafkaErrorCode,
};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{Request, Response, Status, codegen::tokio_stream::wrappers::ReceiverStream};
use uuid::Uuid;

use crate::{
    AppState,
    db::{accounts, grids},
    http::{bearer_token, session_cookie},
    secret,
};

/// Changes a subscriber may fall behind by before it is resynchronised with a snapshot.
const FEED_BUFFER: usize = 1024;
/// How long a new feed may take to read its changelog up to the end.
const FEED_LOAD_TIMEOUT: Duration = Duration::from_secs(20);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The service, answering native gRPC and gRPC-web (browsers, the Excel add-in) alike.
pub(crate) fn service(
    state: AppState,
) -> tonic_web::GrpcWebService<GridServiceServer<GridGateway>> {
    let feeds: Feeds = Arc::default();
    tokio::spawn(end_streams_of_stopped_apps(state.clone(), feeds.clone()));
    tower::Layer::layer(
        &tonic_web::GrpcWebLayer::new(),
        GridServiceServer::new(GridGateway { state, feeds }),
    )
}

/// The feeds of apps with subscribers.
type Feeds = Arc<Mutex<HashMap<Uuid, Weak<AppFeed>>>>;

/// The channel the `apps` triggers notify on a Start, Stop or delete (payload: the app id).
const APPS_CHANNEL: &str = "aerogrid_apps";

/// Ends the streams of an app when it is stopped or deleted, with a status saying so.
async fn end_streams_of_stopped_apps(state: AppState, feeds: Feeds) {
    loop {
        let listening = async {
            // Runs until the connection fails.
            let mut listener = sqlx::postgres::PgListener::connect_with(state.db()).await?;
            listener.listen(APPS_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                let Ok(app_id) = notification.payload().parse::<Uuid>() else { continue };
                let feed = feeds.lock().expect("feeds lock").get(&app_id).and_then(Weak::upgrade);
                let Some(feed) = feed else { continue };
                let ended = match grids::desired_state(state.db(), app_id).await {
                    Ok(None) => Status::not_found("the app was deleted"),
                    Ok(Some(desired)) if desired == "stopped" => Status::unavailable(
                        "the app was stopped: its grids are no longer live (subscribe again once it runs)",
                    ),
                    Ok(Some(_)) => continue,
                    Err(error) => {
                        tracing::warn!(%error, %app_id, "Cannot read an app's state.");
                        continue;
                    }
                };
                let _ = feed.changes.send(Arc::new(FeedEvent::Ended(ended)));
            }
        };
        let result: std::result::Result<std::convert::Infallible, sqlx::Error> = listening.await;
        let Err(error) = result;
        tracing::warn!(%error, "Listening for app changes failed; retrying in 1 s.");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(crate) struct GridGateway {
    state: AppState,
    feeds: Feeds,
}

#[tonic::async_trait]
impl GridService for GridGateway {
    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.authenticate(request.metadata()).await?;
        let request = request.into_inner();
        let grid_ref = request
            .grid
            .clone()
            .ok_or_else(|| Status::invalid_argument("name the grid: team, app and grid"))?;
        let app = self.authorize(&caller, &grid_ref.team, &grid_ref.app).await?;
        let feed = self.feed(app.app_id).await?;
        let view = GridView::new(&request);
        let (snapshot, changes) = feed.subscribe(&grid_ref.grid, &view).map_err(|known| {
            Status::not_found(format!(
                "app `{}/{}` has no grid `{}`{}",
                grid_ref.team,
                grid_ref.app,
                grid_ref.grid,
                if known.is_empty() {
                    " (it has published no grid yet: has it run?)".to_owned()
                } else {
                    format!(" (its grids: {})", known.join(", "))
                }
            ))
        })?;
        tracing::debug!(team = %grid_ref.team, app = %grid_ref.app, grid = %grid_ref.grid, user = %caller.user.name, "Grid subscription.");
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(forward(feed, grid_ref.grid, view, snapshot, changes, sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn list_grids(
        &self,
        request: Request<ListGridsRequest>,
    ) -> Result<Response<ListGridsResponse>, Status> {
        // Said plainly rather than answered with an empty list that looks like "no grids".
        self.authenticate(request.metadata()).await?;
        Err(Status::unimplemented(
            "listing grids is not available yet: subscribe to a grid by team, app and grid name",
        ))
    }
}

/// Who calls: the user, and the team their token is limited to.
struct Caller {
    user: accounts::User,
    token_team: Option<Uuid>,
}

impl GridGateway {
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, Status> {
        let db = self.state.db();
        if let Some(value) = metadata.get("authorization") {
            let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
                Status::unauthenticated(
                    "malformed authorization metadata: expected `Bearer <token>`",
                )
            })?;
            let (user, token_team) = grids::caller_for_api_token(db, &secret::digest(token))
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::unauthenticated("the API token is unknown or revoked"))?;
            return Ok(Caller { user, token_team });
        }
        let headers = metadata.clone().into_headers();
        if let Some(session) = session_cookie(&headers) {
            let user = accounts::user_for_session(db, &secret::digest(session))
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::unauthenticated("the session has expired: sign in again"))?;
            return Ok(Caller { user, token_team: None });
        }
        Err(Status::unauthenticated(
            "missing credentials: send `authorization: Bearer <token>` metadata or sign in",
        ))
    }

    async fn authorize(
        &self,
        caller: &Caller,
        team: &str,
        app: &str,
    ) -> Result<grids::AppRef, Status> {
        let db = self.state.db();
        let found = grids::find_app(db, team, app)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no app `{team}/{app}`")))?;
        let allowed = if let Some(token_team) = caller.token_team {
            token_team == found.team_id
        } else {
            caller.user.is_admin
                || grids::is_member(db, found.team_id, caller.user.id).await.map_err(internal)?
        };
        if !allowed {
            return Err(Status::permission_denied(format!(
                "`{}` may not read the grids of team `{team}`",
                caller.user.name
            )));
        }
        Ok(found)
    }

    /// The app's feed, started if it has none, once it has read its changelog to the end.
    async fn feed(&self, app_id: Uuid) -> Result<Arc<AppFeed>, Status> {
        let existing = self.feeds.lock().expect("feeds lock").get(&app_id).and_then(Weak::upgrade);
        let feed = match existing {
            Some(feed) => feed,
            None => {
                let from =
                    grids::snapshot_offset(self.state.db(), app_id).await.map_err(internal)?;
                let mut feeds = self.feeds.lock().expect("feeds lock");
                // Another call may have started one meanwhile.
                match feeds.get(&app_id).and_then(Weak::upgrade) {
                    Some(feed) => feed,
                    None => {
                        let feed = AppFeed::start(&self.state.inner.kafka, app_id, from);
                        feeds.retain(|_, feed| feed.strong_count() > 0);
                        feeds.insert(app_id, Arc::downgrade(&feed));
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
}

fn internal(error: crate::Error) -> Status {
    tracing::error!(%error, "Grid gateway call failed.");
    Status::internal("internal error; the server log has the details")
}

#[derive(Clone, Debug, PartialEq)]
enum FeedLoad {
    Loading,
    Loaded,
    Failed(String),
}

/// One app's materialised grids, kept current from its changelog while anyone subscribes.
struct AppFeed {
    state: Mutex<FeedState>,
    changes: broadcast::Sender<Arc<FeedEvent>>,
    loaded: watch::Receiver<FeedLoad>,
    /// Set when the last subscriber is gone: the consumer thread ends.
    stop: Arc<AtomicBool>,
}

struct FeedState {
    replay: Replay,
    /// Records applied so far: the sequence number of the state.
    sequence: u64,
}

enum FeedEvent {
    Delta {
        sequence: u64,
        delta: ChangelogDelta,
    },
    /// A snapshot replaced everything: subscribers start over.
    Reset,
    /// The app was stopped or deleted: streams end with this status.
    Ended(Status),
}

impl Drop for AppFeed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl AppFeed {
    fn start(kafka: &KafkaSettings, app_id: Uuid, from: i64) -> Arc<Self> {
        let (changes, _) = broadcast::channel(FEED_BUFFER);
        let (loaded_sender, loaded) = watch::channel(FeedLoad::Loading);
        let stop = Arc::new(AtomicBool::new(false));
        let feed = Arc::new(Self {
            state: Mutex::new(FeedState { replay: Replay::default(), sequence: 0 }),
            changes,
            loaded,
            stop: stop.clone(),
        });
        let weak = Arc::downgrade(&feed);
        let kafka = kafka.clone();
        std::thread::Builder::new()
            .name("aerogrid-grid-feed".into())
            .spawn(move || {
                if let Err(message) = consume(&kafka, app_id, from, &weak, &loaded_sender, &stop) {
                    tracing::warn!(%app_id, %message, "Grid feed stopped.");
                    let _ = loaded_sender.send(FeedLoad::Failed(message));
                }
            })
            .expect("spawn a grid feed thread");
        feed
    }

    /// A snapshot of `grid` and the changes after it; or the names of the grids there are.
    #[allow(clippy::type_complexity, reason = "a pair, named at the one call site")]
    fn subscribe(
        &self,
        grid: &str,
        view: &GridView,
    ) -> Result<(Snapshot, broadcast::Receiver<Arc<FeedEvent>>), Vec<String>> {
        let state = self.state.lock().expect("feed lock");
        let snapshot = snapshot_of(&state, grid, view)
            .ok_or_else(|| state.replay.state.grids.keys().cloned().collect::<Vec<_>>())?;
        // Under the lock: no change falls between the snapshot and the subscription.
        Ok((snapshot, self.changes.subscribe()))
    }

    fn snapshot(&self, grid: &str, view: &GridView) -> Option<Snapshot> {
        snapshot_of(&self.state.lock().expect("feed lock"), grid, view)
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
    config
        .set("group.id", "aerogrid-gateway")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().map_err(|error| error.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .map_err(|error| format!("cannot read the changelog's metadata: {error}"))?;
    let exists = metadata
        .topics()
        .first()
        .is_some_and(|found| found.error().is_none() && !found.partitions().is_empty());
    if !exists {
        // The app has not run yet: it has no grids until it does.
        let _ = loaded.send(FeedLoad::Loaded);
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Offset(from))
        .map_err(|error| error.to_string())?;
    consumer.assign(&assignment).map_err(|error| error.to_string())?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => {
                // Caught up (tansu reports the end a little short; later records follow).
                loaded.send_if_modified(|state| {
                    let first = *state == FeedLoad::Loading;
                    *state = FeedLoad::Loaded;
                    first
                });
                continue;
            }
            Err(error)
                if error.rdkafka_error_code()
                    == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                return Err(format!("the changelog `{topic}` is gone"));
            }
            Err(error) => {
                tracing::warn!(%app_id, %error, "Reading a changelog failed; retrying.");
                continue;
            }
        };
        let Ok(record) = ChangelogRecord::decode(message.payload().unwrap_or_default()) else {
            tracing::warn!(%app_id, offset = message.offset(), "A changelog record does not decode; skipped.");
            continue;
        };
        let Some(feed) = feed.upgrade() else { break };
        let mut state = feed.state.lock().expect("feed lock");
        let event = match state.replay.apply(record) {
            Applied::Nothing => continue,
            Applied::Delta(delta) => {
                state.sequence += 1;
                FeedEvent::Delta { sequence: state.sequence, delta }
            }
            Applied::Snapshot => {
                state.sequence += 1;
                FeedEvent::Reset
            }
        };
        // Sent under the lock, so subscribers see events in sequence order after their snapshot.
        let _ = feed.changes.send(Arc::new(event));
    }
    Ok(())
}

/// What one subscriber asked to see.
struct GridView {
    columns: Vec<String>,
    row_keys: std::collections::HashSet<String>,
}

/// Columns picked from a grid's layout.
struct PickedColumns {
    names: Vec<String>,
    positions: Vec<usize>,
}

impl PickedColumns {
    fn pick(&self, values: &[aerogrid_proto::v1::Value]) -> Vec<aerogrid_proto::v1::Value> {
        self.positions
            .iter()
            .map(|&position| values.get(position).cloned().unwrap_or_default())
            .collect()
    }
}

impl GridView {
    fn new(request: &SubscribeRequest) -> Self {
        Self {
            columns: request.columns.clone(),
            row_keys: request.row_keys.iter().cloned().collect(),
        }
    }

    fn columns(&self, layout: &[String]) -> PickedColumns {
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

    fn wants_row(&self, key: &str) -> bool {
        self.row_keys.is_empty() || self.row_keys.contains(key)
    }
}

/// Streams one subscriber's snapshot and changes until it goes away.
async fn forward(
    feed: Arc<AppFeed>,
    grid: String,
    view: GridView,
    snapshot: Snapshot,
    mut changes: broadcast::Receiver<Arc<FeedEvent>>,
    sender: mpsc::Sender<Result<SubscribeResponse, Status>>,
) {
    let send = |event| SubscribeResponse { event: Some(event) };
    let mut sequence = snapshot.sequence;
    let mut columns = snapshot.columns.clone();
    if sender.send(Ok(send(subscribe_response::Event::Snapshot(snapshot)))).await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            event = changes.recv() => event,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {
                let heartbeat = send(subscribe_response::Event::Heartbeat(Heartbeat { sequence }));
                if sender.send(Ok(heartbeat)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let message = match event {
            Ok(event) => match &*event {
                FeedEvent::Delta { sequence: at, delta } => {
                    sequence = *at;
                    match grid_changes(delta, &grid, &view, &columns, *at) {
                        GridUpdate::Unchanged => continue,
                        GridUpdate::Changes(changes) => subscribe_response::Event::Changes(changes),
                        // A new version of the app changed the grid's columns.
                        GridUpdate::Relayout => match feed.snapshot(&grid, &view) {
                            Some(snapshot) => resync(&mut sequence, &mut columns, snapshot),
                            None => continue,
                        },
                    }
                }
                FeedEvent::Reset => match feed.snapshot(&grid, &view) {
                    Some(snapshot) => resync(&mut sequence, &mut columns, snapshot),
                    None => continue,
                },
                FeedEvent::Ended(status) => {
                    let _ = sender.send(Err(status.clone())).await;
                    return;
                }
            },
            // Fell behind: start over from the current state.
            Err(broadcast::error::RecvError::Lagged(_)) => match feed.snapshot(&grid, &view) {
                Some(snapshot) => {
                    changes = changes.resubscribe();
                    resync(&mut sequence, &mut columns, snapshot)
                }
                None => continue,
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if sender.send(Ok(send(message))).await.is_err() {
            return;
        }
    }
}

fn resync(
    sequence: &mut u64,
    columns: &mut Vec<String>,
    snapshot: Snapshot,
) -> subscribe_response::Event {
    *sequence = snapshot.sequence;
    columns.clone_from(&snapshot.columns);
    subscribe_response::Event::Snapshot(snapshot)
}

enum GridUpdate {
    Unchanged,
    Changes(Changes),
    /// The columns differ from those the subscriber knows.
    Relayout,
}

/// The part of a changelog delta one subscriber sees.
fn grid_changes(
    delta: &ChangelogDelta,
    grid: &str,
    view: &GridView,
    columns: &[String],
    sequence: u64,
) -> GridUpdate {
    let Some(grid_delta) = delta.grids.iter().find(|candidate| candidate.grid == grid) else {
        return GridUpdate::Unchanged;
    };
    let picked = view.columns(&grid_delta.columns);
    if picked.names != columns {
        return GridUpdate::Relayout;
    }
    // Every column the subscriber sees: rows in the changelog are whole.
    let indexes: Vec<u32> = (0..columns.len()).map(|index| index as u32).collect();
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
    if rows.is_empty() {
        GridUpdate::Unchanged
    } else {
        GridUpdate::Changes(Changes { sequence, rows })
    }
}
