use std::time::{Duration, Instant};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;

use crate::{AppState, db};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
pub(crate) struct Health {
    /// `ok` when every dependency answers, else `degraded`.
    status: &'static str,
    database: Probe,
    broker: Probe,
}

#[derive(Serialize)]
pub(crate) struct Probe {
    ok: bool,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Probe {
    fn from_result<E: std::fmt::Display>(started: Instant, result: Result<(), E>) -> Self {
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(()) => Self { ok: true, latency_ms, error: None },
            Err(error) => Self { ok: false, latency_ms, error: Some(error.to_string()) },
        }
    }
}

/// `GET /healthz`: 200 when the database and the broker both answer, 503 otherwise.
pub(crate) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = check(&state).await;
    let status =
        if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

/// Whether the database and the broker both answer (the gRPC health service's view).
pub(crate) async fn is_healthy(state: &AppState) -> bool {
    check(state).await.status == "ok"
}

async fn check(state: &AppState) -> Health {
    let database = async {
        let started = Instant::now();
        let result = match tokio::time::timeout(PROBE_TIMEOUT, db::ping(state.db())).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        Probe::from_result(started, result)
    };
    let broker = async {
        let started = Instant::now();
        let result = state.inner.kafka.probe(PROBE_TIMEOUT).await.map(|_| ());
        Probe::from_result(started, result)
    };
    let (database, broker) = tokio::join!(database, broker);
    let healthy = database.ok && broker.ok;
    Health { status: if healthy { "ok" } else { "degraded" }, database, broker }
}
