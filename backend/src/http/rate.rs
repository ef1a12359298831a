//! Requests per client address: a token bucket each. A request costs one token, and one more
//! for every `BYTES_PER_TOKEN` of its body: a declared length is paid before the request is
//! served, a body of unknown length (HTTP/2, chunked) as its frames are read. A request beyond
//! the rate waits its turn (so a connection that floods is slowed to the rate, and what it costs
//! the server with it; a body being paid for is not read, so the sender is held back by TCP and
//! HTTP/2 flow control); one that would wait longer than `MAX_WAIT` is refused (429), after
//! that wait, so that a client cannot spin on refusals either. Addresses as `--trusted-proxy`
//! tells them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Body as _, Frame, SizeHint};

use crate::{AppState, Error, LockExt as _};

/// Longest a request waits for its turn.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Body bytes worth one token: at the default 1,000 a second, 64 MB/s from one address.
const BYTES_PER_TOKEN: u64 = 64 * 1024;
/// Most a declared length costs up front (4 MiB): larger bodies than the server takes are
/// refused for their size (413) as soon as their turn comes, not for the rate.
const MAX_DECLARED_TOKENS: u64 = 64;
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

    /// How long a request from `address` that costs `tokens` waits before it is served; None:
    /// too long (429).
    fn admit(&self, address: IpAddr, tokens: f64) -> Option<Duration> {
        self.take(address, tokens, false)
    }

    /// Pays for body bytes already read: how long before the next may be read.
    fn charge(&self, address: IpAddr, bytes: usize) -> Duration {
        self.take(address, bytes as f64 / BYTES_PER_TOKEN as f64, true).unwrap_or(MAX_WAIT)
    }

    /// Takes `tokens` from `address`'s bucket and tells how long until they were due; beyond
    /// `MAX_WAIT`, takes nothing and says None, unless `always` (the bytes are read already).
    fn take(&self, address: IpAddr, tokens: f64, always: bool) -> Option<Duration> {
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
        let wait = Duration::from_secs_f64((tokens - bucket.tokens).max(0.0) / self.per_second);
        if wait > MAX_WAIT && !always {
            return None;
        }
        bucket.tokens -= tokens;
        Some(wait)
    }
}

/// What a request costs up front: one token, and its declared body's.
fn upfront_tokens(request: &Request) -> f64 {
    let declared = http_body::Body::size_hint(request.body()).exact().unwrap_or(0);
    1.0 + (declared / BYTES_PER_TOKEN).min(MAX_DECLARED_TOKENS) as f64
}

/// The middleware: every request waits its address's turn, and a body of unknown length is
/// paid for as it is read.
pub(crate) async fn limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client =
        crate::config::client_address(peer.ip(), request.headers(), &state.inner.trusted_proxies);
    let rate = &state.inner.request_rate;
    let Some(wait) = rate.admit(client, upfront_tokens(&request)) else {
        tokio::time::sleep(MAX_WAIT).await;
        return Error::TooManyRequests {
            message: format!(
                "more than {} requests (or {} MB of bodies) a second from your address: slow down",
                rate.per_second,
                rate.per_second * BYTES_PER_TOKEN as f64 / 1e6
            ),
            retry_after_seconds: 1,
        }
        .into_response();
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let request = if request.body().size_hint().exact().is_some() {
        request
    } else {
        request.map(|body| {
            Body::new(MeteredBody { inner: body, rate: rate.clone(), client, pause: None })
        })
    };
    next.run(request).await
}

/// A request body paid for as it is read: after a frame that puts its address in debt, the
/// next is read only once the debt is due.
struct MeteredBody {
    inner: Body,
    rate: Arc<RequestRate>,
    client: IpAddr,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            ready!(pause.as_mut().poll(context));
            self.pause = None;
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(context));
        let bytes = match &frame {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        if bytes > 0 {
            let wait = self.rate.charge(self.client, bytes);
            if !wait.is_zero() {
                self.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
            assert_eq!(rate.admit(client, 1.0), Some(Duration::ZERO));
        }
        // Then one every 100 ms: the next waits ~100 ms, the one after ~200 ms, ... until the
        // wait would pass 2 s (the 20th waits 2 s, give or take a rounding).
        let wait = rate.admit(client, 1.0).unwrap();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        let mut admitted = 1;
        while rate.admit(client, 1.0).is_some() {
            admitted += 1;
            assert!(admitted < 100, "never refused");
        }
        assert!((19..=20).contains(&admitted), "{admitted}");
        // Another address has its own bucket.
        assert_eq!(rate.admit("203.0.113.2".parse().unwrap(), 1.0), Some(Duration::ZERO));
    }

    #[test]
    fn bodies_cost_by_their_bytes_declared_or_read() {
        let rate = RequestRate::new(100.0, 100.0);
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        // 1 MiB declared: 1 + 16 tokens; five such take 85 of the 100.
        let mut request = Request::new(Body::from(vec![0u8; 1 << 20]));
        assert_eq!(upfront_tokens(&request), 17.0);
        for _ in 0..5 {
            assert_eq!(rate.admit(client, upfront_tokens(&request)), Some(Duration::ZERO));
        }
        // The sixth is due in 20 ms (2 tokens short at 100 a second).
        let wait = rate.admit(client, upfront_tokens(&request)).unwrap();
        assert!(wait > Duration::from_millis(15) && wait <= Duration::from_millis(20), "{wait:?}");
        // A declared length counts at most 4 MiB: a huge one is refused for its size, not here.
        *request.body_mut() = Body::from(vec![0u8; 64 << 20]);
        assert_eq!(upfront_tokens(&request), 65.0);
        // Bytes read are paid even into debt: 6.4 MB puts the address 1 s behind.
        let wait = rate.charge(client, 100 * BYTES_PER_TOKEN as usize);
        assert!(
            wait > Duration::from_millis(1000) && wait <= Duration::from_millis(1030),
            "{wait:?}"
        );
    }
}
