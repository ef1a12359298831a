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
//! A feed also follows the changelog relay of the node that runs the app (`relay`): records
//! come from there as soon as the broker confirmed them, and from the changelog for everything
//! the relay does not bring.
//!
//! Invariants:
//! - The gateway only reads changelogs (and nodes' relays of them); it never writes to the broker.
//! - Every call is authorised against Postgres before any grid data is read, and every open
//!   stream again whenever access may have shrunk (`crate::access`).
//!
//! Modules: `access` (who may read a grid, at the call and for the stream's life), `feed` (one
//! changelog consumer per app, its grids and its ring of changes), `view` (what a subscriber
//! asked to see, and a delta as each view sees it, shared), `subscription` (one stream: its
//! snapshot, then conflated changes and heartbeats), `latest` (the latest row per key, how deltas merge). This module is the service itself.

mod access;
mod feed;
mod latest;
mod relay;
mod subscription;
mod view;

use std::{sync::Arc, time::Duration};

use aerogrid_proto::{
    server::v1::{
        EncodedSubscribeResponse,
        grid_service_server::{GridService, GridServiceServer},
    },
    v1::{GridInfo, GridRef, ListGridsRequest, ListGridsResponse, SubscribeRequest},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{ServerState, access::SharedChecks, db::grids, unread::UnreadBudget};
use access::{Denied, StreamAccess, allow, authenticate};
use feed::{AppFeed, Feeds, end_streams_of_stopped_apps, end_streams_on_shutdown};
use subscription::{
    Counted, HEARTBEAT_EVERY, Subscriber, Subscription, encoded_snapshot, exhausted_status,
};
use view::GridView;

pub(crate) use feed::{applied_records, running_feeds};
pub(crate) use subscription::subscriber_count;

/// The gRPC services on the HTTP port: the grid API (native gRPC and gRPC-web, for browsers and
/// the Excel add-in), gRPC health checking, and server reflection (native only: it streams both
/// ways, which gRPC-web cannot).
pub(crate) fn router<S: Clone + Send + Sync + 'static>(state: &ServerState) -> axum::Router<S> {
    let feeds: Feeds = Arc::default();
    tokio::spawn(end_streams_of_stopped_apps(state.clone(), feeds.clone()));
    tokio::spawn(end_streams_on_shutdown(state.inner.shutting_down.subscribe(), feeds.clone()));
    let limits = state.inner.gateway_limits;
    let grids = GridServiceServer::new(GridGateway {
        state: state.clone(),
        feeds,
        relays: relay::RelayChannels::default(),
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
    // A reflection stream asks a few small questions (a tool listing or describing services):
    // 64 KiB of them in all, each answered with descriptors.
    let reflection_limit = tower_http::limit::RequestBodyLimitLayer::new(64 * 1024);
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
        .route_service(
            "/grpc.reflection.v1.ServerReflection/{*method}",
            tower::Layer::layer(&reflection_limit, reflection_v1),
        )
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            tower::Layer::layer(&reflection_limit, reflection_v1alpha),
        )
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
async fn report_health(state: ServerState, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    const SERVICE: &str = "aerogrid.v1.GridService";
    loop {
        let status = if crate::health::is_healthy(&state).await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE, status).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

pub(crate) struct GridGateway {
    state: ServerState,
    feeds: Feeds,
    /// Connections to runtime nodes' changelog relays.
    relays: relay::RelayChannels,
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

impl GridGateway {
    /// The app's feed, started if it has none, once it has read its changelog to the end.
    async fn feed(&self, app_id: Uuid) -> Result<Arc<AppFeed>, Status> {
        feed::get_or_start(&self.state, &self.feeds, &self.relays, app_id, self.feed_bytes).await
    }
}

fn internal(error: crate::Error) -> Status {
    tracing::error!(%error, "Grid gateway call failed.");
    Status::internal("internal error; the server log has the details")
}
