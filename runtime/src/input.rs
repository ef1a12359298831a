//! Reading an app's input topics: a consumer on its own thread hands batches of raw messages to
//! the app's task, so Kafka I/O and copying never run on the connector's time.

use std::time::Duration;

use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::runtime::v1::RawMessage;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
};
use tokio::sync::mpsc;

use aerogrid_changelog::Offsets;

use crate::{Error, Result};

/// Records of one topic, in offset order per partition.
pub(crate) struct InputBatch {
    pub(crate) topic: String,
    pub(crate) messages: Vec<RawMessage>,
}

/// Most records in one batch.
const MAX_BATCH: usize = 5000;

/// The app's consumer: assigned explicitly at the offsets the grids reflect (never "latest"),
/// so a restart resumes exactly where the changelog says.
pub(crate) struct Input {
    consumer: std::sync::Arc<BaseConsumer>,
    /// Every partition of the input topics.
    partitions: Vec<(String, i32)>,
    /// The offsets asked for, to notice a broker that skips records on resume.
    assigned: Offsets,
}

impl Input {
    /// Creates the consumer and finds the topics' partitions (blocking: run it off the async
    /// threads). A topic that does not exist is `TopicMissing`.
    pub(crate) fn connect(kafka: &KafkaSettings, group: &str, topics: &[String]) -> Result<Self> {
        let mut config = kafka.consumer_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        // Prefetch bounded in bytes only (`queued.max.messages.kbytes`), unless the operator
        // says otherwise: a bound of 20,000 messages left the consumer waiting on each fetch,
        // and cut a bare drain of small records on tansu from 1,060,000 to 95,000 records/s.
        if !kafka.options.iter().any(|(key, _)| key == "queued.min.messages") {
            config.set("queued.min.messages", "1000000");
        }
        let consumer: BaseConsumer =
            config.create().map_err(|error| Error::Broker(aerogrid_kafka::Error::Client(error)))?;
        let mut partitions = Vec::new();
        for topic in topics {
            let metadata =
                consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|error| {
                    Error::Connector(format!("cannot read metadata of topic `{topic}`: {error}"))
                })?;
            let Some(topic_metadata) = metadata
                .topics()
                .first()
                .filter(|found| found.error().is_none() && !found.partitions().is_empty())
            else {
                return Err(Error::TopicMissing(topic.clone()));
            };
            partitions.extend(
                topic_metadata.partitions().iter().map(|partition| (topic.clone(), partition.id())),
            );
        }
        Ok(Self { consumer: std::sync::Arc::new(consumer), partitions, assigned: Offsets::new() })
    }

    /// Assigns every partition at `offsets` where known, else at the start of its log.
    pub(crate) fn assign(&mut self, offsets: &Offsets) -> Result<()> {
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in &self.partitions {
            let offset = match offsets.get(&(topic.clone(), *partition)) {
                Some(offset) => Offset::Offset(*offset),
                // Offset 0, not `Beginning`: no offset lookup first (slow on some brokers);
                // `auto.offset.reset=earliest` covers a log whose start was deleted.
                None => Offset::Offset(0),
            };
            assignment
                .add_partition_offset(topic, *partition, offset)
                .map_err(|error| Error::Connector(error.to_string()))?;
        }
        self.consumer.assign(&assignment).map_err(|error| {
            Error::Connector(format!("cannot assign input partitions: {error}"))
        })?;
        self.assigned = offsets
            .iter()
            .filter(|(key, _)| self.partitions.contains(key))
            .map(|(key, offset)| (key.clone(), *offset))
            .collect();
        Ok(())
    }

    /// Starts the polling thread; batches arrive on the returned channel until it is dropped.
    pub(crate) fn start(&self) -> mpsc::Receiver<Result<InputBatch>> {
        let (sender, receiver) = mpsc::channel(4);
        let consumer = self.consumer.clone();
        let expected = self.assigned.clone();
        std::thread::Builder::new()
            .name("aerogrid-input".into())
            .spawn(move || poll_loop(&consumer, &sender, expected))
            .expect("spawn input thread");
        receiver
    }

    /// Records the offsets the changelog now reflects as the group's position (for operators'
    /// lag tools; recovery itself reads the changelog).
    pub(crate) fn commit(&self, offsets: &Offsets) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(%error, "Committing input offsets failed; the changelog has them.");
        }
    }
}

impl Input {
    /// How many records the topics hold beyond `positions`, summed over partitions, from the
    /// high watermarks of the latest fetches (no request to the broker). Informational only:
    /// tansu reports high watermarks short (the last batch's base offset + 1), so a partition
    /// never counts below zero. None until every partition has been fetched from.
    pub(crate) fn lag(&self, positions: &Offsets) -> Option<i64> {
        let assignment = self.consumer.assignment().ok()?;
        let mut lag = 0;
        for element in assignment.elements() {
            let high = cached_high_watermark(&self.consumer, element.topic(), element.partition())?;
            let position = positions
                .get(&(element.topic().to_owned(), element.partition()))
                .copied()
                .unwrap_or(0);
            lag += (high - position).max(0);
        }
        Some(lag)
    }
}

/// The high watermark librdkafka remembers from the partition's latest fetch response.
#[allow(unsafe_code, reason = "rdkafka has no safe wrapper for the cached watermarks")]
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`; the call reads librdkafka's own
    // cache into the two locals and keeps no pointer.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &raw mut low,
            &raw mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn poll_loop(
    consumer: &BaseConsumer,
    sender: &mpsc::Sender<Result<InputBatch>>,
    mut expected: Offsets,
) {
    let mut pending: Vec<InputBatch> = Vec::new();
    loop {
        let mut count = 0;
        while count < MAX_BATCH {
            // After the first record, only what is already fetched: a batch never waits for
            // more (latency), and while the connector is busy, records pile up in librdkafka's
            // queue and make the next batch larger (throughput).
            let wait = if count == 0 { Duration::from_millis(100) } else { Duration::ZERO };
            let Some(polled) = consumer.poll(wait) else {
                if count > 0 {
                    break;
                }
                if sender.is_closed() {
                    return;
                }
                continue;
            };
            let message = match polled {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "Input consumer error.");
                    continue;
                }
            };
            // (Checked only until each partition's first record: no key built per record.)
            if !expected.is_empty()
                && let Some(wanted) =
                    expected.remove(&(message.topic().to_owned(), message.partition()))
                && message.offset() > wanted
            {
                // Compaction does this legitimately; tansu's memory engine does it when asked to
                // fetch from inside a record batch (it skips the rest of that batch).
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    "The broker skipped offsets {wanted}..{} on resume.",
                    message.offset()
                );
            }
            let raw = RawMessage {
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
            };
            match pending.last_mut() {
                Some(batch) if batch.topic == message.topic() => batch.messages.push(raw),
                _ => pending
                    .push(InputBatch { topic: message.topic().to_owned(), messages: vec![raw] }),
            }
            count += 1;
        }
        for batch in pending.drain(..) {
            if sender.blocking_send(Ok(batch)).is_err() {
                return;
            }
        }
    }
}
