//! Requests per client address: a token bucket each. A request beyond the rate waits its turn
//! (so a connection that floods is slowed to the rate, and what it costs the server with it);
//! one that would wait longer than `MAX_WAIT` is answered 429 at once. Addresses as
//! `--trusted-proxy` tells them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{AppState, Error, LockExt as _};

/// Longest a request waits for its turn.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Addresses tracked at most; beyond, those whose bucket is full (idle) are forgotten.
const MAX_ADDRESSES: usize = 100_000;

/// The rates, and each address's bucket.
pub(crate) struct RequestRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Below zero: requests admitted ahead of the rate, waiting their turn.
    tokens: f64,
    at: Instant,
}

impl RequestRate {
    pub(crate) fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second: per_second.max(1.0), burst: burst.max(1.0), buckets: Mutex::default() }
    }

    /// How long a request from `address` waits before it is served; None: too long (429).
    fn admit(&self, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.locked();
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= MAX_ADDRESSES {
                return None;
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * self.per_second)
            .min(self.burst);
        bucket.at = now;
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens).max(0.0) / self.per_second);
        if wait > MAX_WAIT {
            return None;
        }
        bucket.tokens -= 1.0;
        Some(wait)
    }
}

/// The middleware: every request waits its address's turn.
pub(crate) async fn limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client =
        crate::config::client_address(peer.ip(), request.headers(), &state.inner.trusted_proxies);
    match state.inner.request_rate.admit(client) {
        Some(wait) if wait.is_zero() => next.run(request).await,
        Some(wait) => {
            tokio::time::sleep(wait).await;
            next.run(request).await
        }
        None => Error::TooManyRequests {
            message: format!(
                "more than {} requests a second from your address: slow down",
                state.inner.request_rate.per_second
            ),
            retry_after_seconds: 1,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_requests_wait_their_turn_then_are_refused() {
        let rate = RequestRate::new(10.0, 5.0);
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(rate.admit(client), Some(Duration::ZERO));
        }
        // Then one every 100 ms: the next waits ~100 ms, the one after ~200 ms, ... until the
        // wait would pass 2 s (the 20th waits 2 s, give or take a rounding).
        let wait = rate.admit(client).unwrap();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        let mut admitted = 1;
        while rate.admit(client).is_some() {
            admitted += 1;
            assert!(admitted < 100, "never refused");
        }
        assert!((19..=20).contains(&admitted), "{admitted}");
        // Another address has its own bucket.
        assert_eq!(rate.admit("203.0.113.2".parse().unwrap()), Some(Duration::ZERO));
    }
}
