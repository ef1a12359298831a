//! The backend: control plane (REST under `/api/v1`), the grid gateway (gRPC `aerogrid.v1`) and
//! the web frontend, all on one port.
//!
//! Invariants:
//! - User Python never runs here; the backend only stores and validates it.
//! - All SQL lives in [`db`]; handlers call its functions.
//! - Secrets (tokens, sign-in links, sessions) are stored as SHA-256 digests only.

pub mod bootstrap;
pub mod config;
pub mod db;
mod error;
mod gateway;
mod http;
mod secret;

use std::{future::Future, path::PathBuf, sync::Arc};

use aerogrid_kafka::KafkaSettings;

pub use config::ServerArgs;
pub use error::{Error, Result};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    db: sqlx::PgPool,
    kafka: KafkaSettings,
    web_dir: PathBuf,
    secure_cookies: bool,
}

impl AppState {
    pub fn new(
        db: sqlx::PgPool,
        kafka: KafkaSettings,
        web_dir: PathBuf,
        public_url: Option<&url::Url>,
    ) -> Self {
        let secure_cookies = public_url.is_some_and(|url| url.scheme() == "https");
        Self { inner: Arc::new(StateInner { db, kafka, web_dir, secure_cookies }) }
    }

    pub(crate) fn db(&self) -> &sqlx::PgPool {
        &self.inner.db
    }
}

/// Serves HTTP on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if !state.inner.web_dir.join("index.html").is_file() {
        tracing::warn!(
            web_dir = %state.inner.web_dir.display(),
            "The web frontend is not built there: pages will answer 503 until `cargo xtask build-web` runs."
        );
    }
    axum::serve(listener, http::router(state)).with_graceful_shutdown(shutdown).await
}
