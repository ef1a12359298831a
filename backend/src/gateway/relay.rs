//! Follows the changelog relay of the node that runs an app (`aerogrid.runtime.v1.
//! ChangelogRelay`, served by each runtime node): its records reach the feed as soon as the
//! broker confirmed them, without the feed's consumer fetching them back from the broker.
//!
//! The feed applies a relayed record only at the changelog offset it expects next (see
//! `AppFeed::apply_relayed`), so this is a shortcut and never the record: whatever the relay
//! misses (a follower that joined late or fell behind, a large record, a node that died) the
//! changelog consumer reads. A follow ends with the app's run; the next one is found through
//! the app's lease and `runtime_nodes`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use aerogrid_proto::{
    runtime::{
        RELAY_TOKEN_HEADER,
        v1::{FollowRequest, RelayedRecord, changelog_relay_client::ChangelogRelayClient},
    },
    v1::ChangelogRecord,
};
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use super::feed::{AppFeed, MAX_BURST};
use crate::{LockExt as _, ServerState, db::grids};

/// How long to wait before looking for the app's node again after a follow could not start
/// (no node runs it, it relays nothing, it cannot be reached): doubling from the first to the
/// last, so a feed whose node never relays costs a query every 30 s, not every second.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));
/// The same when the node holds the app's lease but its run has not begun (it is starting):
/// it will soon.
const STARTING_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));
/// After a follow ended (the run ended, or the follower fell behind): the next run starts
/// within this.
const RETRY_AFTER_END: Duration = Duration::from_millis(100);
/// How often a quiet follow checks that its feed still has subscribers.
const CHECK_FEED_EVERY: Duration = Duration::from_secs(1);
/// A relayed record is at most 64 KiB (the node's `MAX_RELAYED_BYTES`): larger messages are
/// refused from their length prefix.
const MAX_MESSAGE_BYTES: usize = (64 << 10) + 1024;

/// One HTTP/2 connection per node, shared by the follows of all its apps.
#[derive(Clone, Default)]
pub(super) struct RelayChannels(Arc<Mutex<HashMap<String, Channel>>>);

impl RelayChannels {
    fn channel(&self, url: &str) -> Result<Channel, String> {
        if let Some(channel) = self.0.locked().get(url) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|error| format!("the node's relay address `{url}`: {error}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        let mut channels = self.0.locked();
        // Nodes come and go (their ports with them): keep a bounded set.
        if channels.len() >= 1024 {
            channels.clear();
        }
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// How one follow ended.
enum Followed {
    /// Its stream ended (the run did) or broke: look again soon.
    Ended,
    /// It could not start: look again after a while (soon when the node is starting the app).
    NotStarted { reason: String, starting: bool },
}

/// Follows the app's node for as long as `feed` lives and has not ended.
pub(super) fn follow(
    state: ServerState,
    channels: RelayChannels,
    app_id: Uuid,
    feed: Weak<AppFeed>,
) {
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut said = false;
        while feed.upgrade().is_some_and(|feed| feed.ended.get().is_none()) {
            let wait = match follow_once(&state, &channels, app_id, &feed).await {
                Followed::Ended => {
                    failures = 0;
                    RETRY_AFTER_END
                }
                Followed::NotStarted { reason, starting } => {
                    // Once at info per feed (a node the gateway cannot reach is worth seeing),
                    // then quietly: an app between runs has no node for a moment.
                    if said {
                        tracing::debug!(%app_id, %reason, "Not following the app's relay now.");
                    } else {
                        tracing::info!(%app_id, %reason, "Not following the app's relay now: its changelog serves, one broker hop slower.");
                        said = true;
                    }
                    let (first, last) = if starting { STARTING_BACKOFF } else { RETRY_BACKOFF };
                    failures = failures.saturating_add(1);
                    first.saturating_mul(1 << (failures - 1).min(16)).min(last)
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

/// One follow of the node that holds the app's lease, until its stream ends.
async fn follow_once(
    state: &ServerState,
    channels: &RelayChannels,
    app_id: Uuid,
    feed: &Weak<AppFeed>,
) -> Followed {
    let mut records = match open(state, channels, app_id).await {
        Ok(records) => records,
        Err(not_started) => return not_started,
    };
    loop {
        let next = tokio::time::timeout(CHECK_FEED_EVERY, records.message()).await;
        let Some(feed) = feed.upgrade().filter(|feed| feed.ended.get().is_none()) else {
            return Followed::Ended;
        };
        let first = match next {
            Err(_quiet) => continue,
            Ok(Ok(Some(relayed))) => relayed,
            Ok(Ok(None)) => return Followed::Ended,
            Ok(Err(status)) => {
                tracing::debug!(%app_id, %status, "The app's relay stream ended.");
                return Followed::Ended;
            }
        };
        // What else has arrived goes with it, as one burst (as consumed records do).
        let mut burst = vec![first];
        let mut ended = false;
        while burst.len() < MAX_BURST && !ended {
            match futures::FutureExt::now_or_never(records.message()) {
                Some(Ok(Some(relayed))) => burst.push(relayed),
                Some(Ok(None) | Err(_)) => ended = true,
                None => break,
            }
        }
        let mut decoded = Vec::with_capacity(burst.len());
        for relayed in burst {
            match ChangelogRecord::decode(relayed.record) {
                Ok(record) => decoded.push((relayed.offset, record)),
                Err(error) => {
                    tracing::warn!(%app_id, %error, "A relayed record does not decode.");
                    return Followed::Ended;
                }
            }
        }
        // Applying takes the feed's lock (and may compare a whole snapshot): not on the threads
        // that serve requests.
        if tokio::task::spawn_blocking(move || feed.apply_relayed(decoded)).await.is_err() || ended
        {
            return Followed::Ended;
        }
    }
}

/// Opens a follow of the node that holds the app's lease.
async fn open(
    state: &ServerState,
    channels: &RelayChannels,
    app_id: Uuid,
) -> Result<tonic::Streaming<RelayedRecord>, Followed> {
    let failed = |reason: String| Followed::NotStarted { reason, starting: false };
    let (url, token) = grids::relay_of(state.db(), app_id)
        .await
        .map_err(|error| failed(error.to_string()))?
        .ok_or_else(|| failed("no running node relays the app".into()))?;
    let mut client = ChangelogRelayClient::new(channels.channel(&url).map_err(failed)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut request = tonic::Request::new(FollowRequest { app_id: app_id.to_string() });
    let token =
        token.parse().map_err(|_| failed("the node's relay token is not a header value".into()))?;
    request.metadata_mut().insert(RELAY_TOKEN_HEADER, token);
    match client.follow(request).await {
        Ok(records) => Ok(records.into_inner()),
        Err(status) => Err(Followed::NotStarted {
            reason: format!("{url}: {}", status.message()),
            starting: status.code() == tonic::Code::NotFound,
        }),
    }
}
