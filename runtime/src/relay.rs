//! The changelog relay (`aerogrid.runtime.v1.ChangelogRelay`): the changelog records of the
//! apps this node runs, passed on to the gateways that follow them as soon as the broker has
//! confirmed each one, so a change reaches subscribers without a gateway reading it back from
//! the broker.
//!
//! Best effort by design: only confirmed records are relayed (a subscriber never sees a change a
//! crash could take back), in changelog order, each with its offset; a gateway applies one only
//! at the offset it expects next and reads the changelog for the rest. So a follower that falls
//! behind is dropped, records over [`MAX_RELAYED_BYTES`] are not relayed, and a run that ends
//! ends its followers' streams: each only sends the gateway back to the changelog for a moment.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use aerogrid_proto::runtime::{
    RELAY_TOKEN_HEADER,
    v1::{
        FollowRequest, RelayedRecord,
        changelog_relay_server::{ChangelogRelay, ChangelogRelayServer},
    },
};
use futures::Stream;
use prost::bytes::Bytes;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Error, Result};

/// Records a follower may be behind by before it is dropped (it reads the changelog meanwhile).
const FOLLOWER_BACKLOG: usize = 256;
/// Larger records (snapshot parts, big deltas) go through the changelog only: with the
/// backlog, this bounds what an app's followers hold here to 16 MiB.
pub(crate) const MAX_RELAYED_BYTES: usize = 64 << 10;

/// The relay of one node: who follows which app.
pub(crate) struct Relay {
    token: String,
    apps: Mutex<HashMap<Uuid, broadcast::Sender<RelayedRecord>>>,
}

/// Where a node's relay listens and what gateways are told to connect to.
pub(crate) struct RelayEndpoint {
    /// `http://host:port`, as written to `runtime_nodes.relay_url`.
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Relay {
    /// Serves the relay on `listen` until the process ends; returns it with the address
    /// gateways are to use (`advertise`, or the address bound).
    pub(crate) async fn serve(
        listen: SocketAddr,
        advertise: Option<&str>,
    ) -> Result<(Arc<Self>, RelayEndpoint)> {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|error| {
            Error::Relay(format!("cannot listen for gateways on {listen}: {error}"))
        })?;
        let bound = listener.local_addr().map_err(|error| Error::Relay(error.to_string()))?;
        let address = match advertise {
            Some(address) if !is_host_and_port(address) => {
                return Err(Error::Relay(format!(
                    "--relay-advertise `{address}` is not host:port (no scheme, a port number)"
                )));
            }
            Some(address) => address.to_owned(),
            None if bound.ip().is_unspecified() => {
                return Err(Error::Relay(format!(
                    "the relay listens on {bound}: say with --relay-advertise where gateways reach it"
                )));
            }
            None => bound.to_string(),
        };
        let token: String =
            rand::random::<[u8; 32]>().iter().map(|byte| format!("{byte:02x}")).collect();
        let relay = Self::with_token(token.clone());
        let service = ChangelogRelayServer::new(Service(relay.clone()));
        // Gateways keep one connection each and a stream per followed app; a peer that goes
        // quiet is dropped, so its follows stop holding records.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .max_concurrent_streams(Some(100_000))
            .add_service(service);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            if let Err(error) = server.serve_with_incoming(incoming).await {
                tracing::error!(%error, "The changelog relay stopped: gateways read changelogs only.");
            }
        });
        if bound.ip().is_loopback() {
            tracing::info!(%bound, "Relaying changelog records to gateways on this machine (gateways elsewhere need --relay-listen and --relay-advertise).");
        } else {
            tracing::info!(%bound, %address, "Relaying changelog records to gateways.");
        }
        Ok((relay, RelayEndpoint { url: format!("http://{address}"), token }))
    }

    fn with_token(token: String) -> Arc<Self> {
        Arc::new(Self { token, apps: Mutex::default() })
    }

    /// The app's relay for one run: followers get its records until it is dropped.
    pub(crate) fn open(self: &Arc<Self>, app_id: Uuid) -> AppRelay {
        let (sender, _) = broadcast::channel(FOLLOWER_BACKLOG);
        self.apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(app_id, sender.clone());
        AppRelay { relay: self.clone(), app_id, sender }
    }

    fn follow(&self, app_id: Uuid) -> Option<broadcast::Receiver<RelayedRecord>> {
        let apps = self.apps.lock().unwrap_or_else(|poison| poison.into_inner());
        apps.get(&app_id).map(broadcast::Sender::subscribe)
    }
}

/// One run's end of the relay.
pub(crate) struct AppRelay {
    relay: Arc<Relay>,
    app_id: Uuid,
    sender: broadcast::Sender<RelayedRecord>,
}

impl AppRelay {
    /// Whether a record of `bytes` would reach anyone (else it is not kept for the relay).
    pub(crate) fn wants(&self, bytes: usize) -> bool {
        bytes <= MAX_RELAYED_BYTES && self.sender.receiver_count() > 0
    }

    /// Passes a confirmed record on, at its offset.
    pub(crate) fn confirmed(&self, offset: i64, record: Bytes) {
        // No follower: nothing to do.
        let _ = self.sender.send(RelayedRecord { offset, record });
    }
}

impl Drop for AppRelay {
    fn drop(&mut self) {
        let mut apps = self.relay.apps.lock().unwrap_or_else(|poison| poison.into_inner());
        // A later run of the app may have opened its own already.
        if apps.get(&self.app_id).is_some_and(|sender| sender.same_channel(&self.sender)) {
            apps.remove(&self.app_id);
        }
    }
}

struct Service(Arc<Relay>);

type Records = Pin<Box<dyn Stream<Item = std::result::Result<RelayedRecord, Status>> + Send>>;

#[tonic::async_trait]
impl ChangelogRelay for Service {
    type FollowStream = Records;

    async fn follow(
        &self,
        request: Request<FollowRequest>,
    ) -> std::result::Result<Response<Records>, Status> {
        let presented = request.metadata().get(RELAY_TOKEN_HEADER).map(|value| value.as_bytes());
        if !presented.is_some_and(|presented| same_secret(presented, self.0.token.as_bytes())) {
            return Err(Status::unauthenticated("the relay takes the node's token"));
        }
        let app_id: Uuid = request
            .get_ref()
            .app_id
            .parse()
            .map_err(|_| Status::invalid_argument("app_id is not a UUID"))?;
        let receiver = self
            .0
            .follow(app_id)
            .ok_or_else(|| Status::not_found("this node does not run the app now"))?;
        let records = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(record) => Some((Ok(record), receiver)),
                // The run ended: so does the stream.
                Err(broadcast::error::RecvError::Closed) => None,
                Err(broadcast::error::RecvError::Lagged(missed)) => Some((
                    Err(Status::resource_exhausted(format!(
                        "the follower fell {missed} records behind: read the changelog"
                    ))),
                    receiver,
                )),
            }
        });
        // A lagged follower's stream ends after its error.
        let records = futures::StreamExt::take_while(records, {
            let mut failed = false;
            move |item| {
                let go_on = !failed;
                failed |= item.is_err();
                std::future::ready(go_on)
            }
        });
        Ok(Response::new(Box::pin(records)))
    }
}

/// Whether `address` is `host:port` (what gateways are told to dial, after `http://`).
fn is_host_and_port(address: &str) -> bool {
    !address.contains('/')
        && address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
        })
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }

    #[test]
    fn an_advertised_address_is_host_and_port() {
        for good in ["10.0.0.7:7070", "node-1.aerogrid.svc:7070", "[::1]:7070"] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in ["http://h:7070", "h", "h:", ":7070", "h:0", "h:99999", "h:70/x"] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_run_relays_to_its_followers_until_it_ends() {
        let relay = Relay::with_token("t".into());
        let app = Uuid::new_v4();
        assert!(relay.follow(app).is_none(), "no run: no stream");
        let run = relay.open(app);
        assert!(!run.wants(10), "nobody follows: nothing kept");
        let mut follower = relay.follow(app).expect("the run is open");
        assert!(run.wants(10));
        assert!(!run.wants(MAX_RELAYED_BYTES + 1), "large records go by the changelog");
        run.confirmed(7, Bytes::from_static(b"x"));
        let record = follower.recv().await.unwrap();
        assert_eq!((record.offset, &record.record[..]), (7, &b"x"[..]));
        // A second run of the app replaces the first; the first's end leaves it in place.
        let second = relay.open(app);
        drop(run);
        assert!(relay.follow(app).is_some());
        drop(second);
        assert!(relay.follow(app).is_none());
        assert!(matches!(follower.recv().await, Err(broadcast::error::RecvError::Closed)));
    }

    fn follow_request(token: &str, app_id: &str) -> Request<FollowRequest> {
        let mut request = Request::new(FollowRequest { app_id: app_id.into() });
        request.metadata_mut().insert(RELAY_TOKEN_HEADER, token.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn a_follow_takes_the_token_and_a_running_app() {
        let relay = Relay::with_token("secret".into());
        let service = Service(relay.clone());
        let app = Uuid::new_v4();
        let _run = relay.open(app);
        let refused = |request| async { service.follow(request).await.err().unwrap().code() };
        assert_eq!(
            refused(Request::new(FollowRequest { app_id: app.to_string() })).await,
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            refused(follow_request("secreT", &app.to_string())).await,
            tonic::Code::Unauthenticated
        );
        assert_eq!(refused(follow_request("secret", "app")).await, tonic::Code::InvalidArgument);
        assert_eq!(
            refused(follow_request("secret", &Uuid::new_v4().to_string())).await,
            tonic::Code::NotFound
        );
        assert!(service.follow(follow_request("secret", &app.to_string())).await.is_ok());
    }

    /// A follower that stops reading holds at most FOLLOWER_BACKLOG records here; then its
    /// stream ends with the reason, and the run goes on for the others.
    #[tokio::test]
    async fn a_follower_that_falls_behind_is_dropped_with_the_reason() {
        use futures::StreamExt;
        let relay = Relay::with_token("t".into());
        let service = Service(relay.clone());
        let app = Uuid::new_v4();
        let run = relay.open(app);
        let mut slow =
            service.follow(follow_request("t", &app.to_string())).await.unwrap().into_inner();
        let mut keeping_up =
            service.follow(follow_request("t", &app.to_string())).await.unwrap().into_inner();
        let sent = FOLLOWER_BACKLOG as i64 + 10;
        for offset in 0..sent {
            run.confirmed(offset, Bytes::from_static(b"delta"));
            assert_eq!(keeping_up.next().await.unwrap().unwrap().offset, offset);
        }
        let error = slow.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert_eq!(error.message(), "the follower fell 10 records behind: read the changelog");
        assert!(slow.next().await.is_none(), "the stream ends after its error");
        run.confirmed(sent, Bytes::from_static(b"delta"));
        assert_eq!(keeping_up.next().await.unwrap().unwrap().offset, sent);
    }
}
