use std::time::{Duration, Instant};

use aerogrid_api::{Health, HealthStatus, Probe};
use axum::{Json, extract::State, http::StatusCode};

use crate::{ServerState, db};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one check answers every caller: `/healthz` is unauthenticated, and each check
/// costs a database round trip and a broker metadata request.
const CACHED_FOR: Duration = Duration::from_secs(1);

/// The latest check and when it was made, and the broker client checks reuse. Callers that
/// come while a check runs wait for it instead of starting their own.
#[derive(Default)]
pub(crate) struct HealthCache {
    latest: tokio::sync::Mutex<Option<(Instant, Health)>>,
    prober: std::sync::OnceLock<aerogrid_kafka::Prober>,
}

/// A check's answer for one dependency.
fn probe<E: std::fmt::Display>(started: Instant, result: Result<(), E>) -> Probe {
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(()) => Probe { ok: true, latency_ms, error: None },
        Err(error) => Probe { ok: false, latency_ms, error: Some(error.to_string()) },
    }
}

/// `GET /healthz`: 200 when the database and the broker both answer, 503 otherwise.
pub(crate) async fn healthz(State(state): State<ServerState>) -> (StatusCode, Json<Health>) {
    let health = check(&state).await;
    let status = if health.status == HealthStatus::Ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// Whether the database and the broker both answer (the gRPC health service's view).
pub(crate) async fn is_healthy(state: &ServerState) -> bool {
    check(state).await.status == HealthStatus::Ok
}

async fn check(state: &ServerState) -> Health {
    let cache = &state.inner.health;
    let mut latest = cache.latest.lock().await;
    if let Some((at, health)) = latest.as_ref()
        && at.elapsed() < CACHED_FOR
    {
        return health.clone();
    }
    let health = check_now(state, cache).await;
    *latest = Some((Instant::now(), health.clone()));
    health
}

async fn check_now(state: &ServerState, cache: &HealthCache) -> Health {
    let database = async {
        let started = Instant::now();
        let result = match tokio::time::timeout(PROBE_TIMEOUT, db::ping(state.db())).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        probe(started, result)
    };
    let broker = async {
        let started = Instant::now();
        let prober = match cache.prober.get() {
            Some(prober) => Ok(prober.clone()),
            None => {
                state.inner.kafka.prober().map(|prober| cache.prober.get_or_init(|| prober).clone())
            }
        };
        let result = match prober {
            Ok(prober) => prober.probe(PROBE_TIMEOUT).await.map(|_| ()),
            Err(error) => Err(error),
        };
        // The detail (broker addresses among it) goes to the log, not to anonymous callers.
        let result = result.map_err(|error| {
            tracing::warn!(%error, "The broker does not answer the health check.");
            "the broker does not answer"
        });
        probe(started, result)
    };
    let (database, broker) = tokio::join!(database, broker);
    let healthy = database.ok && broker.ok;
    let status = if healthy { HealthStatus::Ok } else { HealthStatus::Degraded };
    Health { status, database, broker }
}
