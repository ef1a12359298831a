//! The backend: control plane (REST under `/api/v1`), the grid gateway (gRPC `aerogrid.v1`) and
//! the web frontend, all on one port.
//!
//! Invariants:
//! - User Python never runs here; the backend only stores and validates it.
//! - All SQL lives in [`db`]; handlers call its functions.
//! - Secrets (tokens, sign-in links, sessions) are stored as SHA-256 digests only.

mod access;
pub mod bootstrap;
pub mod config;
mod connection;
pub mod db;
mod error;
mod feed_ring;
mod gateway;
mod health;
mod http;
mod identity;
mod packages;
mod secret;
mod server;
mod unread;
pub mod validate;
mod workers;

use std::{future::Future, path::PathBuf, sync::Arc};

use aerogrid_kafka::KafkaSettings;
use axum::http::HeaderValue;

pub use config::{QuotaDefaults, ServerArgs};
pub use error::{Error, Result};
pub use http::openapi;
pub use server::ConnectionLimits;

/// A mutex taken even if a panic poisoned it: what it guards (maps and counters) stays usable,
/// and a request never panics for a panic elsewhere.
pub(crate) trait LockExt<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> LockExt<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How many of one kind of CPU-heavy request work (a password's argon2, a code check) run at
/// once: half the cores, at least one. The rest stay for serving streams and for whatever else
/// runs on the machine (a runtime node, in `aerogrid dev`).
pub(crate) fn heavy_work_slots() -> usize {
    (std::thread::available_parallelism().map_or(2, usize::from) / 2).max(1)
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct ServerState {
    inner: Arc<StateInner>,
}

struct StateInner {
    db: sqlx::PgPool,
    kafka: KafkaSettings,
    web_dir: PathBuf,
    /// `--public-url`: where clients reach this server (the Excel manifest's addresses).
    public_url: Option<url::Url>,
    secure_cookies: bool,
    /// Origins other than the server's own that may call the grid API from a page.
    cors_origins: Vec<HeaderValue>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Set when shutdown begins: open grid streams end, so connections can drain.
    shutting_down: tokio::sync::watch::Sender<bool>,
    /// Bumped when someone's access may have shrunk: open streams check again ([`access`]).
    access_generation: tokio::sync::watch::Sender<u64>,
    http_metrics: http::HttpMetrics,
    sign_in_limiter: http::SignInLimiter,
    health: health::HealthCache,
    quotas: QuotaDefaults,
    connection_limits: server::ConnectionLimits,
    gateway_limits: config::GatewayLimits,
    request_rate: std::sync::Arc<http::RequestRate>,
    /// Proxies whose `X-Forwarded-For` tells the client's address (`--trusted-proxy`).
    trusted_proxies: Vec<config::AddressRange>,
    /// How apps' requirements are resolved at save (uv, the operator's indexes).
    packages: aerogrid_packages::PackageSettings,
}

impl ServerState {
    /// The state for `server`'s settings; fails on settings that cannot work (TLS files).
    pub fn new(
        db: sqlx::PgPool,
        kafka: KafkaSettings,
        server: &ServerArgs,
        packages: aerogrid_packages::PackageSettings,
    ) -> Result<Self> {
        let tls = server.tls()?;
        let secure_cookies =
            tls.is_some() || server.public_url.as_ref().is_some_and(|url| url.scheme() == "https");
        let cors_origins = server
            .cors_origins
            .iter()
            .map(|url| {
                // An origin is scheme, host and port: what `Url::origin` serialises.
                HeaderValue::from_str(&url.origin().ascii_serialization())
                    .map_err(|_| Error::Config(format!("`{url}` is not a web origin")))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            inner: Arc::new(StateInner {
                db,
                kafka,
                web_dir: server.web_dir(),
                public_url: server.public_url.clone(),
                secure_cookies,
                cors_origins,
                tls,
                shutting_down: tokio::sync::watch::Sender::new(false),
                access_generation: tokio::sync::watch::Sender::new(0),
                http_metrics: http::HttpMetrics::default(),
                sign_in_limiter: http::SignInLimiter::default(),
                health: health::HealthCache::default(),
                quotas: server.quotas,
                connection_limits: server.connections,
                gateway_limits: server.gateway,
                request_rate: std::sync::Arc::new(http::RequestRate::new(
                    server.connections.requests_per_second_per_address,
                    server.connections.request_burst_per_address,
                )),
                trusted_proxies: server.trusted_proxies.clone(),
                packages,
            }),
        })
    }

    pub(crate) fn packages(&self) -> &aerogrid_packages::PackageSettings {
        &self.inner.packages
    }

    /// Whether the server speaks TLS (`https://` URLs).
    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    pub(crate) fn db(&self) -> &sqlx::PgPool {
        &self.inner.db
    }

    pub(crate) fn quotas(&self) -> &QuotaDefaults {
        &self.inner.quotas
    }
}

/// Serves HTTP (HTTPS with TLS settings) on `listener` until `shutdown` completes, then lets
/// open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if !state.inner.web_dir.join("index.html").is_file() {
        tracing::warn!(
            web_dir = %state.inner.web_dir.display(),
            "The web frontend is not built there: pages will answer 503 until `cargo xtask build-web` runs."
        );
    }
    let tls = state.inner.tls.clone();
    let shutting_down = state.inner.shutting_down.clone();
    let shutdown = async move {
        shutdown.await;
        shutting_down.send_replace(true);
    };
    let limits = state.inner.connection_limits;
    let grpc = gateway::router(&state);
    let router = http::router(state, grpc);
    server::serve(connection::Listener(listener), tls, limits, router, shutdown).await
}
