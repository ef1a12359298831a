//! An app's changelog topic: grid changes with the input offsets they reflect, snapshots, and
//! the fence a node writes when it takes an app over.
//!
//! Recovery does not trust high watermarks (tansu reports them short): the recovering node
//! writes a fence record and reads up to that record's own offset.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aerogrid_changelog::{Applied, ChangelogReader, GridState, Read, Replay};
use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{ChangelogDelta, ChangelogRecord, Fence, changelog_record};
use prost::{Message as _, bytes::Bytes};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{Error, Result, relay::AppRelay};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A queued changelog write: the offset it got, once the broker has it.
pub(crate) type Delivery = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64>> + Send>>;

pub(crate) use aerogrid_changelog::topic_name;

/// Writes one app's changelog.
pub(crate) struct ChangelogWriter {
    producer: FutureProducer,
    topic: String,
    epoch: u64,
    /// The sequence number of the next record (see `ChangelogRecord.sequence`).
    next_sequence: AtomicU64,
    /// The largest record the broker takes: snapshots and deltas are cut below it.
    max_record_bytes: usize,
    /// Where confirmed records go to the gateways that follow the app, when the node relays.
    relay: Option<Arc<AppRelay>>,
}

impl ChangelogWriter {
    pub(crate) fn new(
        kafka: &KafkaSettings,
        topic: String,
        epoch: u64,
        max_record_bytes: usize,
        relay: Option<AppRelay>,
    ) -> Result<Self> {
        let mut config = kafka.client_config();
        // One request in flight keeps records in order across retries (recovery replays them in
        // offset order); writes queued meanwhile go together in the next request. Not
        // idempotent: a retried request written twice is passed over by readers (by its
        // sequence number), and a write that fails ends the run before any later write counts
        // (readers ignore a writer's records after a gap). An idempotent producer's first write
        // waits for its producer id: 516 ms of every Start on tansu, against 10 ms without.
        config
            .set("enable.idempotence", "false")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("max.in.flight.requests.per.connection", "1")
            // A topic created a moment ago (a new app) has no leader in the first metadata:
            // ask again soon rather than after librdkafka's default 100 ms, at Start.
            .set("topic.metadata.refresh.fast.interval.ms", "10")
            .set("retry.backoff.ms", "10")
            .set("message.max.bytes", max_record_bytes.to_string());
        let producer =
            config.create().map_err(|error| Error::Broker(aerogrid_kafka::Error::Client(error)))?;
        Ok(Self {
            producer,
            topic,
            epoch,
            next_sequence: AtomicU64::new(1),
            max_record_bytes,
            relay: relay.map(Arc::new),
        })
    }

    /// Writes a record and waits until the broker has it; returns its offset.
    /// The record, numbered: the fence 0, each later record one more.
    fn encode(&self, kind: changelog_record::Kind) -> Bytes {
        let sequence = if matches!(kind, changelog_record::Kind::Fence(_)) {
            self.next_sequence.store(1, Ordering::Relaxed);
            0
        } else {
            self.next_sequence.fetch_add(1, Ordering::Relaxed)
        };
        ChangelogRecord { epoch: self.epoch, kind: Some(kind), sequence }.encode_to_vec().into()
    }

    /// Where the record goes once confirmed, if anyone follows the app (else nowhere).
    fn relay_for(&self, bytes: &Bytes) -> Option<(Arc<AppRelay>, Bytes)> {
        let relay = self.relay.as_ref().filter(|relay| relay.wants(bytes.len()))?;
        Some((relay.clone(), bytes.clone()))
    }

    async fn write(&self, kind: changelog_record::Kind) -> Result<i64> {
        let bytes = self.encode(kind);
        let relayed = self.relay_for(&bytes);
        let record: FutureRecord<'_, (), [u8]> =
            FutureRecord::to(&self.topic).partition(0).payload(&bytes[..]);
        match self.producer.send(record, DELIVERY_TIMEOUT).await {
            Ok(delivery) => {
                if let Some((relay, bytes)) = relayed {
                    relay.confirmed(delivery.offset, bytes);
                }
                Ok(delivery.offset)
            }
            Err((error, _)) => {
                Err(Error::Changelog(format!("cannot write to `{}`: {error}", self.topic)))
            }
        }
    }

    /// Queues a full copy of `state`, in parts, behind every write queued before it (so when it
    /// is written, so are they); each future resolves with its part's offset.
    pub(crate) fn queue_snapshot(
        &self,
        state: &GridState,
        snapshot_id: u64,
    ) -> Result<Vec<Delivery>> {
        state
            .snapshot_parts(snapshot_id, self.max_record_bytes)
            .map_err(too_large)?
            .into_iter()
            .map(|part| self.queue(changelog_record::Kind::Snapshot(part)))
            .collect()
    }

    /// Queues a delta, in as many records as its size needs, without waiting; each future
    /// resolves once the broker has its record. Records go to the broker in the order they are
    /// queued.
    pub(crate) fn queue_delta(&self, delta: ChangelogDelta) -> Result<Vec<Delivery>> {
        aerogrid_changelog::split_delta(delta, self.max_record_bytes)
            .map_err(too_large)?
            .into_iter()
            .map(|piece| self.queue(changelog_record::Kind::Delta(piece)))
            .collect()
    }

    fn queue(&self, kind: changelog_record::Kind) -> Result<Delivery> {
        let bytes = self.encode(kind);
        let relayed = self.relay_for(&bytes);
        let record: FutureRecord<'_, (), [u8]> =
            FutureRecord::to(&self.topic).partition(0).payload(&bytes[..]);
        let topic = self.topic.clone();
        match self.producer.send_result(record) {
            // The run awaits these oldest first, so records are relayed in changelog order.
            Ok(future) => Ok(Box::pin(async move {
                match future.await {
                    Ok(Ok(delivery)) => {
                        if let Some((relay, bytes)) = relayed {
                            relay.confirmed(delivery.offset, bytes);
                        }
                        Ok(delivery.offset)
                    }
                    Ok(Err((error, _))) => {
                        Err(Error::Changelog(format!("cannot write to `{topic}`: {error}")))
                    }
                    Err(_) => Err(Error::Changelog(format!("the producer of `{topic}` stopped"))),
                }
            })),
            Err((error, _)) => {
                Err(Error::Changelog(format!("cannot queue a write to `{}`: {error}", self.topic)))
            }
        }
    }

    pub(crate) async fn write_fence(&self, node_id: &str) -> Result<i64> {
        self.write(changelog_record::Kind::Fence(Fence { node_id: node_id.to_owned() })).await
    }
}

fn read_error(error: aerogrid_changelog::ReadError) -> Error {
    Error::Changelog(error.to_string())
}

/// A row no record can hold fails the app (a restart would meet it again).
fn too_large(refused: aerogrid_changelog::RowTooLarge) -> Error {
    Error::Refused { message: refused.to_string(), line: None }
}

/// Rebuilds an app's grids from its changelog: from `from_offset` up to the fence at
/// `fence_offset` (exclusive), ignoring records of epochs older than one already seen.
pub(crate) async fn recover(
    kafka: &KafkaSettings,
    topic: &str,
    from_offset: i64,
    fence_offset: i64,
) -> Result<(GridState, u64)> {
    if from_offset >= fence_offset {
        // Nothing to read: no consumer to start (and close).
        return Ok((GridState::default(), 0));
    }
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut config = kafka.consumer_config();
        config.set("group.id", "aerogrid-recovery");
        let mut reader = ChangelogReader::open(config, &topic, from_offset).map_err(read_error)?;
        let mut replay = Replay::default();
        let mut records = 0u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while reader.next_offset() < fence_offset {
            if std::time::Instant::now() > deadline {
                return Err(Error::Changelog(format!(
                    "reading `{topic}` up to offset {fence_offset} timed out at {}",
                    reader.next_offset()
                )));
            }
            let Read::Record { offset, record } =
                reader.poll(Duration::from_millis(100)).map_err(read_error)?
            else {
                continue;
            };
            if offset >= fence_offset {
                break;
            }
            if replay.apply(record) != Applied::Nothing {
                records += 1;
            }
        }
        let state = replay.state;
        Ok((state, records))
    })
    .await?
}
