//! Access for the whole life of a stream (gRPC, gRPC-web, SSE), not only when it opens.
//!
//! Postgres notifies `aerogrid_access` whenever someone's access may have shrunk (a token
//! revoked, a member removed or demoted, a share or topic grant withdrawn, a session ended, an
//! admin demoted; see `migrations/*_tenant_isolation.up.sql`). Each notification bumps a
//! generation; every open stream then checks its caller again and ends if they may no longer
//! read. The generation is bumped every [`RECHECK_EVERY`] too, and when the listener
//! reconnects: a notification lost meanwhile, or a session that simply expired, ends a stream
//! within that bound.
//!
//! Checks are shared: streams with the same credentials and target share one check per
//! generation, so a revocation costs one query set per distinct (credential, target), not one
//! per stream.

use crate::LockExt as _;
use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{HeaderMap, header};
use tokio::sync::{OnceCell, watch};

/// The channel the access triggers notify on.
const ACCESS_CHANNEL: &str = "aerogrid_access";
/// Streams check again at least this often, notified or not.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// Bumps `generation` on every access change, on every reconnect of the listener, and every
/// [`RECHECK_EVERY`]. Runs for the life of the server.
pub(crate) async fn watch_changes(db: sqlx::PgPool, generation: watch::Sender<u64>) {
    let bump = || generation.send_modify(|value| *value = value.wrapping_add(1));
    let backstop = async {
        let mut every = tokio::time::interval(RECHECK_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            bump();
        }
    };
    let listening = async {
        loop {
            let listened = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
                listener.listen(ACCESS_CHANNEL).await?;
                // Changes made while no listener ran are not known: check everything.
                bump();
                loop {
                    listener.recv().await?;
                    bump();
                }
            };
            let result: Result<std::convert::Infallible, sqlx::Error> = listened.await;
            let Err(error) = result;
            tracing::warn!(%error, "Listening for access changes failed; retrying in 1 s.");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(backstop, listening);
}

/// The headers that carry a request's credentials: what a stream keeps to authenticate again.
pub(crate) fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A digest of the credentials (never the credentials themselves) as a cache key.
fn credentials_digest(credentials: &HeaderMap) -> Vec<u8> {
    let mut joined = Vec::new();
    for (name, value) in credentials {
        joined.extend_from_slice(name.as_str().as_bytes());
        joined.push(0);
        joined.extend_from_slice(value.as_bytes());
        joined.push(0);
    }
    crate::secret::digest(&String::from_utf8_lossy(&joined))
}

/// The results of this generation's checks, by credentials and target.
pub(crate) struct SharedChecks<T> {
    checks: Mutex<Generation<T>>,
}

/// The checks of one generation: a digest of the credentials and the target, to the result.
struct Generation<T> {
    number: u64,
    results: HashMap<(Vec<u8>, String), Arc<OnceCell<T>>>,
}

impl<T> Default for SharedChecks<T> {
    fn default() -> Self {
        Self { checks: Mutex::new(Generation { number: 0, results: HashMap::new() }) }
    }
}

impl<T: Clone> SharedChecks<T> {
    /// The result of `check` for these credentials and target in `generation`: run by the
    /// first stream that asks, awaited by the others.
    pub(crate) async fn check<F: Future<Output = T>>(
        &self,
        generation: u64,
        credentials: &HeaderMap,
        target: &str,
        check: impl FnOnce() -> F,
    ) -> T {
        let cell = {
            let mut checks = self.checks.locked();
            if checks.number != generation {
                // A new generation: every earlier answer may be stale.
                *checks = Generation { number: generation, results: HashMap::new() };
            }
            let key = (credentials_digest(credentials), target.to_owned());
            checks.results.entry(key).or_default().clone()
        };
        cell.get_or_init(check).await.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_share_a_check_per_generation_and_credentials() {
        let checks = SharedChecks::<u32>::default();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let run = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            7
        };
        let mut alice = HeaderMap::new();
        alice.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        let mut bob = HeaderMap::new();
        bob.insert(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(checks.check(1, &alice, "app/grid", run).await, 7);
        assert_eq!(checks.check(1, &alice, "app/grid", run).await, 7);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        checks.check(1, &bob, "app/grid", run).await;
        checks.check(1, &alice, "app/other", run).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        checks.check(2, &alice, "app/grid", run).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn only_credentials_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        headers.insert(header::COOKIE, "aerogrid_session=s".parse().unwrap());
        headers.insert(header::USER_AGENT, "x".parse().unwrap());
        let kept = credentials(&headers);
        assert_eq!(kept.len(), 2);
        assert!(kept.get(header::USER_AGENT).is_none());
    }
}
