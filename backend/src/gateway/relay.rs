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
        v1::{FollowRequest, changelog_relay_client::ChangelogRelayClient},
    },
    v1::ChangelogRecord,
};
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use super::feed::AppFeed;
use crate::{LockExt as _, ServerState, db::grids};

/// How long to wait before looking for the app's node again after a follow failed (no node
/// runs it, it relays nothing, or it cannot be reached).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// After a follow ended with its run (a restart, a move): the next run starts within this.
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

/// Follows the app's node for as long as `feed` lives and has not ended.
pub(super) fn follow(
    state: ServerState,
    channels: RelayChannels,
    app_id: Uuid,
    feed: Weak<AppFeed>,
) {
    tokio::spawn(async move {
        while feed.upgrade().is_some_and(|feed| feed.ended.get().is_none()) {
            let wait = match follow_once(&state, &channels, app_id, &feed).await {
                Ok(()) => RETRY_AFTER_END,
                Err(reason) => {
                    tracing::debug!(%app_id, %reason, "Not following the app's relay now; its changelog serves.");
                    RETRY_AFTER_FAILURE
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
) -> Result<(), String> {
    let (url, token) = grids::relay_of(state.db(), app_id)
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no running node relays the app")?;
    let mut client = ChangelogRelayClient::new(channels.channel(&url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut request = tonic::Request::new(FollowRequest { app_id: app_id.to_string() });
    let token = token.parse().map_err(|_| "the node's relay token is not a header value")?;
    request.metadata_mut().insert(RELAY_TOKEN_HEADER, token);
    let mut records =
        client.follow(request).await.map_err(|status| status.to_string())?.into_inner();
    loop {
        let next = tokio::time::timeout(CHECK_FEED_EVERY, records.message()).await;
        let Some(feed) = feed.upgrade().filter(|feed| feed.ended.get().is_none()) else {
            return Ok(());
        };
        match next {
            Err(_quiet) => {}
            Ok(Ok(Some(relayed))) => {
                let record = ChangelogRecord::decode(relayed.record)
                    .map_err(|error| format!("a relayed record does not decode: {error}"))?;
                feed.apply_relayed(relayed.offset, record);
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => return Err(status.to_string()),
        }
    }
}
