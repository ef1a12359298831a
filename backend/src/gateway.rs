//! The grid gateway: `aerogrid.v1.GridService` on the HTTP port.
//!
//! Each app with subscribers has one feed: a consumer of its changelog topic that keeps the
//! app's grids materialised (through `aerogrid_changelog::Replay`, as recovery does) and
//! broadcasts every applied change with a sequence number. A subscriber gets a snapshot taken
//! under the feed's lock, then the changes after it. One that falls behind the feed's ring
//! (bounded in events and bytes, `crate::feed_ring`) gets a fresh snapshot: memory stays bounded
//! and nobody waits for it. What a client has been handed but not read is bounded per caller and
//! in all (`crate::unread`): beyond, its streams end with RESOURCE_EXHAUSTED.
//!
//! Invariants:
//! - The gateway only reads changelogs; it never writes to the broker.
//! - Every call is authorised against Postgres before any grid data is read, and every open
//!   stream again whenever access may have shrunk (`crate::access`).

use crate::LockExt as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::AtomicBool},
    time::Duration,
};

use aerogrid_changelog::{Applied, Cursor, Replay, Step};
use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::{
    server::v1::{
        EncodedSubscribeResponse, encoded_subscribe_response,
        grid_service_server::{GridService, GridServiceServer},
    },
    v1::{
        CellUpdates, ChangelogDelta, ChangelogRecord, Changes, GridInfo, GridRef, Heartbeat,
        ListGridsRequest, ListGridsResponse, Row, RowChange, Snapshot, SubscribeRequest,
        changelog_record, row_change,
    },
};
use prost::{Message as _, bytes::Bytes};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    types::RDKafkaErrorCode,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    AppState,
    access::SharedChecks,
    db::{accounts, grids},
    feed_ring::{Next, Position, Ring},
    unread::{Unread, UnreadBudget},
};
use axum::http::HeaderMap;

/// Changes a subscriber may fall behind by before it is resynchronised with a snapshot.
const FEED_BUFFER: usize = 1024;
/// How long a new feed may take to read its changelog up to the end.
const FEED_LOAD_TIMEOUT: Duration = Duration::from_secs(20);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Columns and row keys one subscription may name.
const MAX_VIEW_COLUMNS: usize = 1_000;
const MAX_VIEW_ROW_KEYS: usize = 10_000;
/// Changelog records applied and broadcast as one event at most.
const MAX_BURST: usize = 64;

/// The gRPC services on the HTTP port: the grid API (native gRPC and gRPC-web, for browsers and
/// the Excel add-in), gRPC health checking, and server reflection (native only: it streams both
/// ways, which gRPC-web cannot).
pub(crate) fn router<S: Clone + Send + Sync + 'static>(state: &AppState) -> axum::Router<S> {
    let feeds: Feeds = Arc::default();
    tokio::spawn(end_streams_of_stopped_apps(state.clone(), feeds.clone()));
    tokio::spawn(end_streams_on_shutdown(state.inner.shutting_down.subscribe(), feeds.clone()));
    let limits = state.inner.gateway_limits;
    let grids = GridServiceServer::new(GridGateway {
        state: state.clone(),
        feeds,
        checks: Arc::default(),
        unread: UnreadBudget::new(
            limits.unread_mib_per_caller << 20,
            limits.unread_mib.max(limits.unread_mib_per_caller) << 20,
        ),
        feed_bytes: limits.feed_buffer_mib << 20,
    })
    // Refused from its length prefix, before anything of it is decoded.
    .max_decoding_message_size(limits.max_request_kib << 10);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(state.clone(), health_reporter));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aerogrid_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the descriptors are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the descriptors are valid");
    let grpc_web = tonic_web::GrpcWebLayer::new();
    // A body larger than the largest request (base64 gRPC-web text: 4/3 of it, and framing) is
    // refused from its Content-Length, unread.
    let body_limit =
        tower_http::limit::RequestBodyLimitLayer::new((limits.max_request_kib << 10) * 2 + 1024);
    let grid_service = tower::Layer::layer(&body_limit, tower::Layer::layer(&grpc_web, grids));
    let health_service = tower::Layer::layer(&body_limit, tower::Layer::layer(&grpc_web, health));
    let routes = axum::Router::new()
        .route_service("/aerogrid.v1.GridService/{*method}", grid_service)
        .route_service("/grpc.health.v1.Health/{*method}", health_service);
    let routes = match cors(&state.inner.cors_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        .route_service("/grpc.reflection.v1.ServerReflection/{*method}", reflection_v1)
        .route_service("/grpc.reflection.v1alpha.ServerReflection/{*method}", reflection_v1alpha)
}

/// CORS for gRPC-web calls from pages of other origins, when any are configured.
fn cors(origins: &[axum::http::HeaderValue]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    if origins.is_empty() {
        return None;
    }
    let header = HeaderName::from_static;
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins.to_vec())
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers([
                header("authorization"),
                header("content-type"),
                header("grpc-timeout"),
                header("x-grpc-web"),
                header("x-user-agent"),
            ])
            // gRPC-web answers errors in headers: a page can only read them if exposed.
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(24 * 3600)),
    )
}

/// Keeps the standard health service in step with `/healthz`: SERVING while the database and
/// the broker answer.
async fn report_health(state: AppState, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    const SERVICE: &str = "aerogrid.v1.GridService";
    loop {
        let status = if crate::http::is_healthy(&state).await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE, status).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The feeds of apps with subscribers.
type Feeds = Arc<Mutex<HashMap<Uuid, Weak<AppFeed>>>>;

/// The app's feed, if it has one that has not ended (a stopped app's next subscribers get a new
/// one).
fn live_feed(feeds: &HashMap<Uuid, Weak<AppFeed>>, app_id: Uuid) -> Option<Arc<AppFeed>> {
    feeds.get(&app_id).and_then(Weak::upgrade).filter(|feed| feed.ended.get().is_none())
}

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
                let feed = live_feed(&feeds.locked(), app_id);
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
async fn end_streams_on_shutdown(mut shutting_down: watch::Receiver<bool>, feeds: Feeds) {
    if shutting_down.wait_for(|down| *down).await.is_err() {
        return;
    }
    let live: Vec<Arc<AppFeed>> = feeds.locked().values().filter_map(Weak::upgrade).collect();
    for feed in live {
        feed.end(shutting_down_status());
    }
}

fn shutting_down_status() -> Status {
    Status::unavailable("the server is shutting down: subscribe again")
}

pub(crate) struct GridGateway {
    state: AppState,
    feeds: Feeds,
    /// Open streams' access checks, shared by streams with the same caller and grid.
    checks: Arc<SharedChecks<Result<(), Status>>>,
    unread: Arc<UnreadBudget>,
    /// The bytes of each feed's ring.
    feed_bytes: usize,
}

#[tonic::async_trait]
impl GridService for GridGateway {
    type SubscribeStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<EncodedSubscribeResponse, Status>> + Send>,
    >;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let credentials = crate::access::credentials(&request.metadata().clone().into_headers());
        let request = request.into_inner();
        let grid_ref = request
            .grid
            .clone()
            .ok_or_else(|| Status::invalid_argument("name the grid: team, app and grid"))?;
        let view = GridView::new(&grid_ref.grid, &request)?;
        // Watched from before the check: a revocation while the feed loads is not missed.
        let generation = self.state.inner.access_generation.subscribe();
        let allowed = allow(&self.state, &credentials, &grid_ref).await.map_err(Denied::on_open)?;
        let feed = self.feed(allowed.app.app_id).await?;
        // The view itself is held as long as the stream (up to ~3 MiB for 10,000 long keys):
        // counted against the same bound, for the stream's life.
        let caller: Arc<str> = allowed.user.as_str().into();
        let view_held = self
            .unread
            .take(&caller, view.bytes())
            .map_err(|exhausted| exhausted_status(&exhausted))?;
        // Room for the snapshot first (waiting for it while others are read), then the snapshot:
        // callers that do not read wait, rather than each holding one made for nothing.
        let expected_bytes = feed.snapshot_bytes(&grid_ref.grid, &view).unwrap_or(0);
        let unread = self
            .unread
            .take_waiting(&caller, expected_bytes)
            .await
            .map_err(|exhausted| exhausted_status(&exhausted))?;
        let (snapshot, changes) = feed.subscribe(&grid_ref.grid, &view).map_err(|known| {
            // Only a reader of the whole app learns the names of its other grids.
            let listed = if !allowed.whole_app {
                String::new()
            } else if known.is_empty() {
                " (it has published no grid yet: has it run?)".to_owned()
            } else {
                format!(" (its grids: {})", known.join(", "))
            };
            Status::not_found(format!(
                "app `{}/{}` has no grid `{}`{listed}",
                grid_ref.team, grid_ref.app, grid_ref.grid,
            ))
        })?;
        tracing::debug!(team = %grid_ref.team, app = %grid_ref.app, grid = %grid_ref.grid, user = %allowed.user, "Grid subscription.");
        let min_interval = (request.max_updates_per_second > 0)
            .then(|| Duration::from_secs(1) / request.max_updates_per_second);
        let access = StreamAccess {
            state: self.state.clone(),
            checks: self.checks.clone(),
            credentials,
            target: format!("{}/{}", allowed.app.app_id, grid_ref.grid),
            generation,
            grid: grid_ref.clone(),
        };
        // Held from now until the client reads it: counted (as estimated) from before it was made.
        let first = encoded_snapshot(&snapshot);
        let subscription = Subscription {
            _counted: Counted::new(),
            subscriber: Subscriber::new(&snapshot),
            first: Some(first),
            feed,
            grid: grid_ref.grid,
            view,
            changes,
            min_interval,
            last_sent: tokio::time::Instant::now(),
            heartbeat: Box::pin(tokio::time::sleep(HEARTBEAT_EVERY)),
            last_flush: None,
            shutting_down: self.state.inner.shutting_down.subscribe(),
            access,
            ended: false,
            caller,
            budget: self.unread.clone(),
            unread: Some(unread),
            _view_held: view_held,
        };
        // No task of its own: the response body polls it, when the connection takes more.
        let stream = futures::stream::unfold(subscription, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_grids(
        &self,
        request: Request<ListGridsRequest>,
    ) -> Result<Response<ListGridsResponse>, Status> {
        let credentials = request.metadata().clone().into_headers();
        let caller = authenticate(&self.state, &credentials).await.map_err(Denied::status)?;
        let team = request.into_inner().team;
        if team.contains('\0') {
            return Err(Status::invalid_argument("names may not contain NUL characters"));
        }
        let grids = grids::readable_grids(self.state.db(), &caller.user, caller.token_team, &team)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|listing| GridInfo {
                grid: Some(GridRef { team: listing.team, app: listing.app, grid: listing.grid }),
                columns: listing.columns,
                live: listing.live,
            })
            .collect();
        Ok(Response::new(ListGridsResponse { grids }))
    }
}

/// Who calls: the user, and the team their token is limited to.
struct Caller {
    user: accounts::User,
    token_team: Option<Uuid>,
}

async fn authenticate(state: &AppState, credentials: &HeaderMap) -> Result<Caller, Denied> {
    let identity =
        crate::http::authenticate(state.db(), credentials).await.map_err(|error| match error {
            crate::Error::Unauthenticated(message) => Denied::Unauthenticated(message),
            other => Denied::Internal(internal(other)),
        })?;
    Ok(Caller { token_team: identity.token_team(), user: identity.user })
}

/// A caller allowed to read a grid.
struct Allowed {
    app: grids::AppRef,
    /// A member of the app's team or an administrator, not only a reader of a shared grid.
    whole_app: bool,
    user: String,
}

/// Why a caller may not read a grid.
enum Denied {
    Unauthenticated(String),
    /// No such app or grid, or not the caller's: told apart to nobody.
    Hidden,
    /// The grid's app reads a topic its team may no longer read.
    Topic(String),
    Invalid(&'static str),
    Internal(Status),
}

impl Denied {
    /// The status of a call that asks for the grid.
    fn on_open(self) -> Status {
        match self {
            Self::Hidden => Status::not_found(NOT_READABLE),
            other => other.status(),
        }
    }

    /// The status an open stream ends with once its caller may no longer read.
    fn on_stream(self) -> Status {
        match self {
            Self::Hidden => Status::permission_denied(
                "access to this grid was withdrawn (the token's team, the membership or the share is gone)",
            ),
            other => other.status(),
        }
    }

    fn status(self) -> Status {
        match self {
            Self::Unauthenticated(message) => Status::unauthenticated(message),
            Self::Hidden => Status::not_found(NOT_READABLE),
            Self::Topic(message) => Status::permission_denied(message),
            Self::Invalid(message) => Status::invalid_argument(message),
            Self::Internal(status) => status,
        }
    }
}

/// The one answer for "no such app or grid" and "not yours", as REST's 404.
const NOT_READABLE: &str = "there is no such grid, or you may not read it";

/// Authenticates `credentials` and checks that they may read `grid` now.
async fn allow(
    state: &AppState,
    credentials: &HeaderMap,
    grid: &GridRef,
) -> Result<Allowed, Denied> {
    if [&grid.team, &grid.app, &grid.grid].iter().any(|name| name.contains('\0')) {
        return Err(Denied::Invalid("names may not contain NUL characters"));
    }
    let caller = authenticate(state, credentials).await?;
    let db = state.db();
    let found = grids::find_app(db, &grid.team, &grid.app)
        .await
        .map_err(|error| Denied::Internal(internal(error)))?
        .ok_or(Denied::Hidden)?;
    let admin = caller.user.is_admin && caller.token_team.is_none();
    let readable = if admin {
        grids::Readable::WholeApp
    } else {
        grids::may_read(db, found, &grid.grid, caller.user.id, caller.token_team)
            .await
            .map_err(|error| Denied::Internal(internal(error)))?
    };
    if readable == grids::Readable::No {
        return Err(Denied::Hidden);
    }
    let inputs = grids::app_inputs(db, found.app_id)
        .await
        .map_err(|error| Denied::Internal(internal(error)))?;
    for topic in &inputs.topics {
        if let Err(refusal) =
            aerogrid_policy::topics::check_topic(&inputs.team, &inputs.grants, topic)
        {
            // Readers of a shared grid learn nothing of the owning team's topics.
            return Err(Denied::Topic(if readable == grids::Readable::WholeApp {
                format!("the app's grids are not served: {refusal} (it reads that topic)")
            } else {
                "the app's grids are not served: its team may no longer read one of its topics"
                    .to_owned()
            }));
        }
    }
    Ok(Allowed {
        app: found,
        whole_app: readable == grids::Readable::WholeApp,
        user: caller.user.name,
    })
}

impl GridGateway {
    /// The app's feed, started if it has none, once it has read its changelog to the end.
    async fn feed(&self, app_id: Uuid) -> Result<Arc<AppFeed>, Status> {
        let existing = live_feed(&self.feeds.locked(), app_id);
        let feed = match existing {
            Some(feed) => feed,
            None => {
                let from =
                    grids::snapshot_offset(self.state.db(), app_id).await.map_err(internal)?;
                let mut feeds = self.feeds.locked();
                // Another call may have started one meanwhile.
                match live_feed(&feeds, app_id) {
                    Some(feed) => feed,
                    None => {
                        let feed =
                            AppFeed::start(&self.state.inner.kafka, app_id, from, self.feed_bytes)?;
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
    changes: Ring<FeedEvent>,
    /// Why the feed's streams ended (the app stopped, the server shuts down), once they have:
    /// for a subscriber that fell behind and so skipped the `Ended` event.
    ended: std::sync::OnceLock<Status>,
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
        /// What each kind of subscriber sees of it, computed by the first one that asks.
        prepared: Mutex<Vec<Arc<Prepared>>>,
    },
    /// A snapshot replaced everything: subscribers start over.
    Reset,
    /// The app was stopped or deleted: streams end with this status.
    Ended(Status),
}

/// What a `Reset` or `Ended` event is counted as in a feed's ring.
const SMALL_EVENT_BYTES: usize = 64;
/// Views whose encodings of a delta an event keeps for the subscribers that share them.
const MAX_SHARED_VIEWS: usize = 4;

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
    fn start(
        kafka: &KafkaSettings,
        app_id: Uuid,
        from: i64,
        ring_bytes: usize,
    ) -> Result<Arc<Self>, Status> {
        let changes = Ring::new(FEED_BUFFER, ring_bytes);
        let (loaded_sender, loaded) = watch::channel(FeedLoad::Loading);
        let stop = Arc::new(AtomicBool::new(false));
        let feed = Arc::new(Self {
            state: Mutex::new(FeedState { replay: Replay::default(), sequence: 0 }),
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
    fn subscribe(&self, grid: &str, view: &GridView) -> Result<(Snapshot, Position), Vec<String>> {
        let state = self.state.locked();
        let snapshot = snapshot_of(&state, grid, view)
            .ok_or_else(|| state.replay.state.grids.keys().cloned().collect::<Vec<_>>())?;
        // Under the lock: no change falls between the snapshot and the subscription.
        Ok((snapshot, self.changes.end()))
    }

    /// Ends every stream of the feed with `status`, those that fell behind included.
    fn end(&self, status: Status) {
        // Set before the event is sent: a subscriber that starts over after the send sees it.
        let _ = self.ended.set(status.clone());
        self.changes.send(Arc::new(FeedEvent::Ended(status)), SMALL_EVENT_BYTES);
    }

    /// About what a snapshot of `grid` in `view` takes encoded, without making it (None: no
    /// such grid).
    fn snapshot_bytes(&self, grid: &str, view: &GridView) -> Option<usize> {
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

    fn snapshot(&self, grid: &str, view: &GridView) -> Option<Snapshot> {
        snapshot_of(&self.state.locked(), grid, view)
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
    let mut cursor = Cursor::new(from);
    // Records fetched together are applied and broadcast together: one event (one message per
    // subscriber) for what arrived at once.
    let mut burst: Vec<ChangelogRecord> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let wait = if burst.is_empty() { Duration::from_millis(100) } else { Duration::ZERO };
        let polled = consumer.poll(wait);
        if burst.len() >= MAX_BURST || (!burst.is_empty() && !matches!(polled, Some(Ok(_)))) {
            let Some(feed) = feed.upgrade() else { break };
            apply_burst(&feed, std::mem::take(&mut burst));
        }
        let Some(polled) = polled else { continue };
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
        // Records must be applied without a gap: a writer's records after a gap are ignored
        // (see `Replay`), which would leave the grid stale for good. tansu's memory engine skips
        // the rest of a record batch when a fetch starts inside it, so a skip is answered by
        // reading again from a little earlier; records already applied are passed over.
        let offset = message.offset();
        let expected = cursor.next();
        match cursor.step(offset) {
            Step::Skip => continue,
            Step::SeekBack(back) => {
                tracing::debug!(%app_id, expected, got = offset, from = back, "The broker skipped changelog records; reading again.");
                if let Err(error) =
                    consumer.seek(&topic, 0, Offset::Offset(back), Duration::from_secs(5))
                {
                    tracing::warn!(%app_id, %error, "Cannot seek in the changelog.");
                }
                continue;
            }
            Step::Apply if offset > expected => {
                // A real gap (compaction, or records the broker lost): Replay decides what follows.
                tracing::warn!(%app_id, expected, got = offset, "Changelog offsets skipped.");
            }
            Step::Apply => {}
        }
        let Ok(record) = ChangelogRecord::decode(message.payload().unwrap_or_default()) else {
            tracing::warn!(%app_id, offset = message.offset(), "A changelog record does not decode; skipped.");
            continue;
        };
        burst.push(record);
    }
    Ok(())
}

/// Applies records in order and broadcasts what they changed: consecutive deltas as one.
fn apply_burst(feed: &AppFeed, records: Vec<ChangelogRecord>) {
    let mut state = feed.state.locked();
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
        // Sets, not scans: a burst may merge deltas of many thousand rows each.
        let mut index: HashMap<String, usize> = existing
            .upserted
            .iter()
            .enumerate()
            .map(|(position, row)| (row.key.clone(), position))
            .collect();
        let upserted_now: std::collections::HashSet<&str> =
            grid.upserted.iter().map(|row| row.key.as_str()).collect();
        existing.deleted.retain(|key| !upserted_now.contains(key.as_str()));
        for row in grid.upserted {
            match index.get(&row.key) {
                Some(&position) => existing.upserted[position] = row,
                None => {
                    index.insert(row.key.clone(), existing.upserted.len());
                    existing.upserted.push(row);
                }
            }
        }
        if !grid.deleted.is_empty() {
            let deleted_now: std::collections::HashSet<&str> =
                grid.deleted.iter().map(String::as_str).collect();
            existing.upserted.retain(|row| !deleted_now.contains(row.key.as_str()));
            let mut already: std::collections::HashSet<String> =
                existing.deleted.iter().cloned().collect();
            for key in grid.deleted {
                if already.insert(key.clone()) {
                    existing.deleted.push(key);
                }
            }
        }
    }
    into.offsets = next.offsets;
    if next.counts.is_some() {
        into.counts = next.counts;
    }
}

/// What one subscriber asked to see.
struct GridView {
    columns: Vec<String>,
    row_keys: std::collections::HashSet<String>,
    /// Equal for subscribers that asked the same: they share what a delta gives them.
    key: Arc<ViewKey>,
}

#[derive(Debug, PartialEq, Eq)]
struct ViewKey {
    /// Of the rest: views with different hashes differ, without comparing 10,000 keys.
    hash: u64,
    grid: String,
    columns: Vec<String>,
    /// Sorted.
    row_keys: Vec<String>,
}

/// Columns picked from a grid's layout.
struct PickedColumns {
    names: Vec<String>,
    positions: Vec<usize>,
}

impl PickedColumns {
    /// The encoded bytes of a row of this view, without building it.
    fn row_bytes(&self, key: &str, values: &[aerogrid_proto::v1::Value]) -> usize {
        let field = |len: usize| 1 + prost::length_delimiter_len(len) + len;
        let cells: usize = self
            .positions
            .iter()
            .map(|&position| field(values.get(position).map_or(0, prost::Message::encoded_len)))
            .sum();
        field(field(key.len()) + cells)
    }

    fn pick(&self, values: &[aerogrid_proto::v1::Value]) -> Vec<aerogrid_proto::v1::Value> {
        self.positions
            .iter()
            .map(|&position| values.get(position).cloned().unwrap_or_default())
            .collect()
    }
}

impl GridView {
    /// About what the view holds: its row keys twice (a set and the sorted key) and columns.
    fn bytes(&self) -> usize {
        let keys: usize = self.key.row_keys.iter().map(|key| 2 * (key.len() + 32)).sum();
        let columns: usize = self.columns.iter().map(|column| 2 * (column.len() + 24)).sum();
        256 + keys + columns
    }

    /// The view a request asks for. Columns are deduplicated (each then matches at most one
    /// column of the grid, so a view is never wider than its grid) and both lists are capped:
    /// what a subscriber costs does not grow with what it sends.
    fn new(grid: &str, request: &SubscribeRequest) -> Result<Self, Status> {
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

/// One subscriber's stream: its snapshot, then changes, until it goes away (the response body
/// is dropped, and this with it).
///
/// When polled, it takes every change the feed has broadcast since, conflated per row (rows in
/// the changelog are whole, so the latest row is the latest value of every cell), and sends them
/// as one message once its rate allows. A subscriber whose connection keeps up is polled at each
/// delta and sends it as the first subscriber with the same view encoded it; a slow one gets
/// fewer, larger messages, and one that falls behind the feed's buffer gets a new snapshot.
/// Open subscriptions of this process (for `/metrics`).
static SUBSCRIBERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) fn subscriber_count() -> usize {
    SUBSCRIBERS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a subscription while it lives.
struct Counted;

impl Counted {
    fn new() -> Self {
        SUBSCRIBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        SUBSCRIBERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Subscription {
    _counted: Counted,
    feed: Arc<AppFeed>,
    grid: String,
    view: GridView,
    /// The subscription's place in the feed's ring.
    changes: Position,
    subscriber: Subscriber,
    /// The snapshot, sent first.
    first: Option<EncodedSubscribeResponse>,
    min_interval: Option<Duration>,
    last_sent: tokio::time::Instant,
    /// Fires at the latest `last_sent + HEARTBEAT_EVERY`; moved only when it fires, so a message
    /// costs no timer of its own.
    heartbeat: std::pin::Pin<Box<tokio::time::Sleep>>,
    last_flush: Option<tokio::time::Instant>,
    /// Read when polled: a stream that began before the shutdown is ended through its feed.
    shutting_down: watch::Receiver<bool>,
    access: StreamAccess,
    ended: bool,
    /// Who subscribed, for the bound of what their clients have not read.
    caller: Arc<str>,
    budget: Arc<UnreadBudget>,
    /// The last message handed over, until the next is asked for (then it has been read).
    unread: Option<Unread>,
    /// The view's own bytes, for the stream's life.
    _view_held: Unread,
}

/// What a stream checks again whenever access may have shrunk (see [`crate::access`]).
struct StreamAccess {
    state: AppState,
    checks: Arc<SharedChecks<Result<(), Status>>>,
    /// The call's credential headers.
    credentials: HeaderMap,
    grid: GridRef,
    /// The app and grid, as the shared checks' key.
    target: String,
    generation: watch::Receiver<u64>,
}

impl StreamAccess {
    async fn still_allowed(&mut self) -> Result<(), Status> {
        let generation = *self.generation.borrow_and_update();
        let (state, credentials, grid) = (&self.state, &self.credentials, &self.grid);
        self.checks
            .check(generation, credentials, &self.target, || async move {
                allow(state, credentials, grid).await.map(|_| ()).map_err(Denied::on_stream)
            })
            .await
    }
}

impl Subscription {
    /// The next message, counted as unread until the one after is asked for.
    async fn next(&mut self) -> Option<Result<EncodedSubscribeResponse, Status>> {
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
            if self.subscriber.has_pending() {
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

fn exhausted_status(exhausted: &crate::unread::Exhausted) -> Status {
    Status::resource_exhausted(format!(
        "the streams of this caller (or of all callers) hold {} MiB their clients have not \
         read, the bound being {} MiB: read faster, or subscribe again",
        exhausted.waiting_mib, exhausted.bound_mib
    ))
}

fn encoded(event: encoded_subscribe_response::Event) -> EncodedSubscribeResponse {
    EncodedSubscribeResponse { event: Some(event) }
}

fn encoded_snapshot(snapshot: &Snapshot) -> EncodedSubscribeResponse {
    encoded(encoded_subscribe_response::Event::Snapshot(snapshot.encode_to_vec().into()))
}

/// One delta as the subscribers of one view see it.
struct Prepared {
    view: Arc<ViewKey>,
    /// `None` when the delta leaves the grid alone.
    touched: Option<Touched>,
}

impl Prepared {
    /// The view's changed rows, if any.
    fn changes(&self) -> Option<&PreparedChanges> {
        self.touched.as_ref().and_then(|touched| touched.changes.as_ref())
    }

    fn rows(&self) -> &[RowChange] {
        self.changes().map_or(&[], |changes| changes.rows.as_slice())
    }
}

struct Touched {
    /// The columns the view gets from the grid's layout in this delta.
    columns: Vec<String>,
    /// `None` when no row of the view changed.
    changes: Option<PreparedChanges>,
}

struct PreparedChanges {
    rows: Vec<RowChange>,
    /// `Changes { sequence, rows }`, encoded once for every subscriber that sends it as it is.
    encoded: Bytes,
}

/// What `delta` gives subscribers of `view`: computed by the first of them, then shared.
fn prepare(
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

/// What one subscriber has been sent, and the changes it has yet to get.
struct Subscriber {
    /// The feed's sequence the subscriber's view reflects once `pending` is sent.
    sequence: u64,
    columns: Vec<String>,
    pending: Pending,
}

enum Pending {
    Nothing,
    /// One delta, sent as it was prepared.
    Shared(Arc<Prepared>),
    /// Several deltas merged: the latest per row key, in the order rows first changed, and
    /// their index by key.
    Merged {
        rows: Vec<RowChange>,
        index: HashMap<String, usize>,
    },
}

impl Subscriber {
    fn new(snapshot: &Snapshot) -> Self {
        Self {
            sequence: snapshot.sequence,
            columns: snapshot.columns.clone(),
            pending: Pending::Nothing,
        }
    }

    fn has_pending(&self) -> bool {
        !matches!(self.pending, Pending::Nothing)
    }

    /// Adds a delta that changed rows of this subscriber's view.
    fn merge(&mut self, sequence: u64, prepared: Arc<Prepared>) {
        self.sequence = sequence;
        match &mut self.pending {
            Pending::Nothing => self.pending = Pending::Shared(prepared),
            Pending::Shared(first) => {
                let mut rows = first.rows().to_vec();
                let mut index: HashMap<String, usize> = rows
                    .iter()
                    .enumerate()
                    .map(|(position, row)| (row.key.clone(), position))
                    .collect();
                merge_rows(&mut rows, &mut index, prepared.rows());
                self.pending = Pending::Merged { rows, index };
            }
            Pending::Merged { rows, index } => merge_rows(rows, index, prepared.rows()),
        }
    }

    /// The pending changes, encoded, and nothing pending.
    fn take(&mut self) -> Bytes {
        match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Nothing => {
                Changes { sequence: self.sequence, rows: vec![] }.encode_to_vec().into()
            }
            Pending::Shared(prepared) => {
                prepared.changes().map(|changes| changes.encoded.clone()).unwrap_or_default()
            }
            Pending::Merged { rows, .. } => {
                Changes { sequence: self.sequence, rows }.encode_to_vec().into()
            }
        }
    }
}

fn merge_rows(rows: &mut Vec<RowChange>, index: &mut HashMap<String, usize>, new: &[RowChange]) {
    for row in new {
        match index.get(&row.key) {
            Some(&position) => rows[position] = row.clone(),
            None => {
                index.insert(row.key.clone(), rows.len());
                rows.push(row.clone());
            }
        }
    }
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

    fn take(subscriber: &mut Subscriber) -> Changes {
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
        assert!(!subscriber.has_pending());

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

    /// A feed with no consumer behind it: the test sends its events.
    fn feed_without_consumer() -> Arc<AppFeed> {
        let changes = Ring::new(FEED_BUFFER, 64 << 20);
        let (_, loaded) = watch::channel(FeedLoad::Loaded);
        Arc::new(AppFeed {
            state: Mutex::new(FeedState { replay: Replay::default(), sequence: 0 }),
            changes,
            ended: std::sync::OnceLock::new(),
            loaded,
            stop: Arc::default(),
        })
    }

    /// An access check that never runs (no access change is announced in these tests).
    fn unchecked_access() -> StreamAccess {
        let db = sqlx::PgPool::connect_lazy("postgres://localhost/unused").expect("a URL");
        let server = crate::ServerArgs {
            web_dir: None,
            public_url: None,
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            quotas: crate::QuotaDefaults {
                apps: 1,
                running_apps: 1,
                app_memory_mib: 1,
                total_memory_mib: 1,
                default_app_memory_mib: 1,
                teams_per_user: 1,
                versions_per_app: 1,
            },
            trusted_proxies: Vec::new(),
            connections: crate::ConnectionLimits {
                max_connections: 1,
                max_connections_per_address: 1,
                header_timeout_seconds: 1.0,
                keepalive_seconds: 1.0,
                requests_per_second_per_address: 1.0,
                request_burst_per_address: 1.0,
            },
            gateway: crate::config::GatewayLimits {
                feed_buffer_mib: 1,
                unread_mib_per_caller: 1,
                unread_mib: 1,
                max_request_kib: 1,
            },
        };
        let state =
            AppState::new(db, KafkaSettings::new("localhost:1"), &server).expect("plain settings");
        StreamAccess {
            generation: state.inner.access_generation.subscribe(),
            state,
            checks: Arc::default(),
            credentials: HeaderMap::new(),
            grid: GridRef::default(),
            target: String::new(),
        }
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

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_when_its_app_stopped_still_ends() {
        let feed = feed_without_consumer();
        let (_, shutting_down) = watch::channel(false);
        let mut subscription = Subscription {
            _counted: Counted::new(),
            feed: feed.clone(),
            grid: "g".into(),
            view: GridView::new("g", &SubscribeRequest::default()).unwrap(),
            changes: feed.changes.end(),
            subscriber: Subscriber::new(&Snapshot::default()),
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
        };
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
        let mut feeds = HashMap::from([(app, Arc::downgrade(&feed))]);
        assert!(live_feed(&feeds, app).is_none());
        let fresh = feed_without_consumer();
        feeds.insert(app, Arc::downgrade(&fresh));
        assert!(live_feed(&feeds, app).is_some_and(|found| Arc::ptr_eq(&found, &fresh)));
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
