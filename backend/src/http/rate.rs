//! Requests per client address: a token bucket each. A request costs one token, and one more
//! for every `BYTES_PER_TOKEN` of its body (every frame at least `MIN_FRAME_BYTES`): a declared
//! length is paid up front (up to 4 MiB, whether or not it is then read: a body refused for its
//! size still cost its sender's address its turn), the rest of a body as its frames are read.
//!
//! A request beyond the rate waits its turn (so a connection that floods is slowed to the rate,
//! and what it costs the server with it; a body being paid for is not read, so the sender is
//! held back by TCP and HTTP/2 flow control); one that would wait longer than `MAX_WAIT` is
//! refused (429), after that wait while fewer than `MAX_TARPITTED` refusals wait (so a client
//! cannot spin on refusals), at once beyond. A body that would put its address more than
//! `MAX_WAIT` in debt fails. Addresses as `--trusted-proxy` tells them.

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

use crate::{Error, LockExt as _, ServerState};

/// Longest a request waits for its turn.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Body bytes worth one token: at the default 1,000 a second, 64 MB/s from one address.
const BYTES_PER_TOKEN: u64 = 64 * 1024;
/// Most a declared length costs up front (4 MiB): larger bodies than the server takes are
/// refused for their size (413) as soon as their turn comes, not for the rate; what is read
/// beyond it is paid as read.
const MAX_DECLARED_BYTES: u64 = 64 * BYTES_PER_TOKEN;
/// What a data frame costs at least: a stream of tiny messages is not free.
const MIN_FRAME_BYTES: usize = 1024;
/// Refusals held for `MAX_WAIT` at once (each holds its request head); beyond, answered at once.
const MAX_TARPITTED: usize = 256;
/// Addresses tracked at most; beyond, those whose bucket is full (idle) are forgotten.
const MAX_ADDRESSES: usize = 100_000;

/// The rates, and each address's bucket.
pub(crate) struct RequestRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    tarpit: tokio::sync::Semaphore,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Below zero: requests admitted ahead of the rate, waiting their turn.
    tokens: f64,
    at: Instant,
}

impl RequestRate {
    pub(crate) fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second: per_second.max(1.0),
            burst: burst.max(1.0),
            buckets: Mutex::default(),
            tarpit: tokio::sync::Semaphore::new(MAX_TARPITTED),
        }
    }

    /// How long a request from `address` that costs `tokens` waits before it is served; None:
    /// too long (429).
    fn admit(&self, address: IpAddr, tokens: f64) -> Option<Duration> {
        self.take(address, tokens)
    }

    /// Pays for body bytes already read: how long before the next may be read; None when that
    /// would be more than `MAX_WAIT` (the body fails).
    fn charge(&self, address: IpAddr, bytes: usize) -> Option<Duration> {
        self.take(address, bytes as f64 / BYTES_PER_TOKEN as f64)
    }

    /// Takes `tokens` (at most the burst) from `address`'s bucket and tells how long until they
    /// were due; beyond `MAX_WAIT`, takes nothing and says None.
    fn take(&self, address: IpAddr, tokens: f64) -> Option<Duration> {
        let tokens = tokens.min(self.burst);
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
        if wait > MAX_WAIT {
            return None;
        }
        bucket.tokens -= tokens;
        Some(wait)
    }
}

/// The body bytes a request pays up front: its declared length, up to `MAX_DECLARED_BYTES`.
fn declared_bytes(request: &Request) -> u64 {
    request.body().size_hint().exact().unwrap_or(0).min(MAX_DECLARED_BYTES)
}

/// What a request costs up front: one token, and its declared body's.
fn upfront_tokens(declared_bytes: u64) -> f64 {
    1.0 + declared_bytes as f64 / BYTES_PER_TOKEN as f64
}

/// The middleware: every request waits its address's turn, and its body is paid for as it is
/// read (beyond what it paid up front).
pub(crate) async fn limit(
    State(state): State<ServerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client =
        crate::config::client_address(peer.ip(), request.headers(), &state.inner.trusted_proxies);
    let rate = &state.inner.request_rate;
    let prepaid = declared_bytes(&request);
    let Some(wait) = rate.admit(client, upfront_tokens(prepaid)) else {
        if let Ok(_held) = rate.tarpit.try_acquire() {
            tokio::time::sleep(MAX_WAIT).await;
        }
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
    let rate = rate.clone();
    let request = request
        .map(|body| Body::new(MeteredBody { inner: body, rate, client, prepaid, pause: None }));
    next.run(request).await
}

/// A request body paid for as it is read: the bytes beyond what was paid up front, each frame
/// at least `MIN_FRAME_BYTES`; after a frame that puts its address in debt, the next is read
/// only once the debt is due.
struct MeteredBody {
    inner: Body,
    rate: Arc<RequestRate>,
    client: IpAddr,
    /// Prepaid bytes not read yet.
    prepaid: u64,
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
        let Some(bytes) =
            frame.as_ref().and_then(|frame| frame.as_ref().ok()?.data_ref()).map(Bytes::len)
        else {
            return Poll::Ready(frame);
        };
        let cost = bytes.max(MIN_FRAME_BYTES) as u64;
        let covered = cost.min(self.prepaid);
        self.prepaid -= covered;
        let unpaid = (cost - covered) as usize;
        if unpaid > 0 {
            match self.rate.charge(self.client, unpaid) {
                Some(wait) if wait.is_zero() => {}
                Some(wait) => self.pause = Some(Box::pin(tokio::time::sleep(wait))),
                None => {
                    return Poll::Ready(Some(Err(axum::Error::new(
                        "the request body comes faster than the rate of your address allows",
                    ))));
                }
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
        assert_eq!(upfront_tokens(declared_bytes(&request)), 17.0);
        for _ in 0..5 {
            assert_eq!(
                rate.admit(client, upfront_tokens(declared_bytes(&request))),
                Some(Duration::ZERO)
            );
        }
        // The sixth is due in 20 ms (2 tokens short at 100 a second).
        let wait = rate.admit(client, upfront_tokens(declared_bytes(&request))).unwrap();
        assert!(wait > Duration::from_millis(15) && wait <= Duration::from_millis(20), "{wait:?}");
        // A declared length counts at most 4 MiB: a huge one is refused for its size, not here.
        *request.body_mut() = Body::from(vec![0u8; 64 << 20]);
        assert_eq!(upfront_tokens(declared_bytes(&request)), 65.0);
        // Bytes read are paid into debt: 6.4 MB puts the address 1 s behind; no further than
        // 2 s (then the body fails).
        let wait = rate.charge(client, 100 * BYTES_PER_TOKEN as usize).unwrap();
        assert!(
            wait > Duration::from_millis(1000) && wait <= Duration::from_millis(1030),
            "{wait:?}"
        );
        assert_eq!(rate.charge(client, 100 * BYTES_PER_TOKEN as usize), None);
    }
}
