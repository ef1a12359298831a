//! The listener: accepts connections within bounds and serves the router on each, as HTTP/2
//! (native gRPC) or HTTP/1.1 (browsers, gRPC-web), behind rustls when TLS is set (chosen by
//! ALPN) or in cleartext (HTTP/2 by prior knowledge).
//!
//! Bounds (flags in [`ConnectionLimits`]): connections in all and per client address (beyond
//! them, new connections are closed at once), a TLS handshake and an HTTP/1 request head must
//! arrive within their timeouts (slowloris), an idle HTTP/1 connection closes after the head
//! timeout, HTTP/2 peers that stop answering pings are dropped, and HTTP/2 streams per
//! connection and header sizes are capped.

use crate::LockExt as _;
use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tower_http::add_extension::AddExtension;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers of one request (HTTP/1 and HTTP/2 alike).
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// HTTP/2 flow-control windows: bytes a peer may send ahead of what the server reads.
const FLOW_WINDOW_BYTES: u32 = 256 * 1024;
/// HTTP/2 streams open at once on one connection (each grid subscription is one).
const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// What connections may take of the server.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct ConnectionLimits {
    /// Open connections in all; beyond it, new ones are closed at once.
    #[arg(long, env = "AEROGRID_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Open connections from one client address (behind a proxy, the proxy's: raise it there).
    #[arg(long, env = "AEROGRID_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1_000)]
    pub max_connections_per_address: usize,
    /// Seconds a client has for its TLS handshake, and for each HTTP/1 request head (also how
    /// long an idle HTTP/1 connection stays open).
    #[arg(long, env = "AEROGRID_HEADER_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub header_timeout_seconds: f64,
    /// Seconds between HTTP/2 pings; a peer that does not answer one within as long is dropped.
    #[arg(long, env = "AEROGRID_KEEPALIVE_SECONDS", default_value_t = 30.0)]
    pub keepalive_seconds: f64,
    /// Requests a second from one client address (each gRPC stream is one, and every 64 KiB of
    /// a request body one more); beyond, requests wait their turn, and are refused (429) when
    /// that would take over 2 s.
    #[arg(long, env = "AEROGRID_REQUESTS_PER_SECOND_PER_ADDRESS", default_value_t = 1000.0)]
    pub requests_per_second_per_address: f64,
    /// Requests one client address may make at once beyond the rate.
    #[arg(long, env = "AEROGRID_REQUEST_BURST_PER_ADDRESS", default_value_t = 10_000.0)]
    pub request_burst_per_address: f64,
}

impl ConnectionLimits {
    fn header_timeout(&self) -> Duration {
        seconds_within(self.header_timeout_seconds, 0.1, 3600.0)
    }

    fn keepalive(&self) -> Duration {
        seconds_within(self.keepalive_seconds, 1.0, 3600.0)
    }
}

/// `seconds` clamped to `min..=max` (NaN as `max`): never a panic for an odd flag.
fn seconds_within(seconds: f64, min: f64, max: f64) -> Duration {
    Duration::from_secs_f64(if seconds.is_nan() { max } else { seconds.clamp(min, max) })
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Open`], given back when it closes.
struct Slot {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, address: IpAddr, limits: &ConnectionLimits) -> Option<Self> {
        let mut counts = open.locked();
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        if counts.total >= limits.max_connections
            || from_address >= limits.max_connections_per_address
        {
            return None;
        }
        counts.total += 1;
        counts.by_address.insert(address, from_address + 1);
        Some(Self { open: open.clone(), address })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.locked();
        counts.total -= 1;
        if let Some(count) = counts.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on every connection `listener` accepts until `shutdown` completes, then lets
/// open requests finish (up to `DRAIN_TIMEOUT`).
pub(crate) async fn serve(
    mut listener: crate::connection::Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Mutex::new(Open::default()));
    let mut refused_warned = false;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let Some(slot) = Slot::take(&open, crate::config::limit_key(peer.ip()), &limits) else {
            if !refused_warned {
                refused_warned = true;
                tracing::warn!(%peer, "Connection limit reached: new connections are closed.");
            }
            continue;
        };
        let service = service_for(&router, peer);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match acceptor {
                None => watcher
                    .watch(connection(
                        FirstBytesWithin::new(stream, limits.header_timeout()),
                        service,
                        &limits,
                    ))
                    .await
                    .map_err(|error| error.to_string()),
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let stream =
                        match tokio::time::timeout(limits.header_timeout(), handshake).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed.");
                                return;
                            }
                            Err(_) => return,
                        };
                    watcher
                        .watch(connection(
                            FirstBytesWithin::new(stream, limits.header_timeout()),
                            service,
                            &limits,
                        ))
                        .await
                        .map_err(|error| error.to_string())
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            "Connections still open {DRAIN_TIMEOUT:?} after shutdown began: closing them."
        );
    }
    Ok(())
}

/// Bytes that tell HTTP/1 from HTTP/2 (the length of HTTP/2's preface).
const PROTOCOL_BYTES: usize = 24;

/// A connection that must send its first bytes (enough to tell its protocol) within a time:
/// hyper has no timeout of its own before it knows the protocol, so a connection that sends
/// nothing, or part of HTTP/2's preface, would stay open for good.
struct FirstBytesWithin<I> {
    inner: I,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    read: usize,
}

impl<I> FirstBytesWithin<I> {
    fn new(inner: I, within: Duration) -> Self {
        Self { inner, deadline: Some(Box::pin(tokio::time::sleep(within))), read: 0 }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytesWithin<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.deadline.is_none() {
            return polled;
        }
        if polled.is_ready() {
            self.read += buf.filled().len() - before;
            if self.read >= PROTOCOL_BYTES || buf.filled().len() == before {
                self.deadline = None;
            }
            return polled;
        }
        match self.deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
            Some(std::task::Poll::Ready(())) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within the header timeout",
            ))),
            _ => std::task::Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytesWithin<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Service = TowerToHyperService<AddExtension<Router, ConnectInfo<SocketAddr>>>;

/// The router for one connection: each request carries the client's address (what axum's
/// `into_make_service_with_connect_info` would give).
fn service_for(router: &Router, peer: SocketAddr) -> Service {
    TowerToHyperService::new(AddExtension::new(router.clone(), ConnectInfo(peer)))
}

/// One connection, HTTP/1.1 or HTTP/2, within the limits.
fn connection<I>(
    io: I,
    service: Service,
    limits: &ConnectionLimits,
) -> impl hyper_util::server::graceful::GracefulConnection<
    Error = Box<dyn std::error::Error + Send + Sync>,
> + use<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(MAX_HEADER_BYTES as usize * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive())
        .keep_alive_timeout(limits.keepalive())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_BYTES)
        // What a peer may send unread: per stream and per connection (the rate limiter stops
        // reading a body that comes too fast; this is what it then holds).
        .initial_stream_window_size(FLOW_WINDOW_BYTES)
        .initial_connection_window_size(FLOW_WINDOW_BYTES);
    builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned()
}
