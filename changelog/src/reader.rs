//! The one changelog reader: records of partition 0 in offset order, none missed. Records the
//! broker skipped are read again and records read already are passed over ([`Cursor`]); both
//! the gateway's feeds and the runtime's recovery read through it.

use std::time::Duration;

use aerogrid_proto::v1::ChangelogRecord;
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    types::RDKafkaErrorCode,
};

use crate::{Cursor, Step};

/// What a poll of the changelog gave.
#[derive(Debug)]
pub enum Read {
    /// The next record.
    Record { offset: i64, record: ChangelogRecord },
    /// Caught up with the end the broker reports (tansu's is a little short: more may follow).
    End,
    /// Nothing within the wait (or records already read, or a re-read begun).
    Idle,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the changelog `{0}` does not exist")]
    Gone(String),
    #[error("`{topic}` offset {offset} does not decode: {error}")]
    Malformed { topic: String, offset: i64, error: prost::DecodeError },
    #[error("reading `{topic}`: {error}")]
    Broker { topic: String, error: KafkaError },
}

pub struct ChangelogReader {
    consumer: BaseConsumer,
    topic: String,
    cursor: Cursor,
}

impl ChangelogReader {
    /// A reader of `topic` from offset `from`, with a consumer made from `config`.
    pub fn open(mut config: ClientConfig, topic: &str, from: i64) -> Result<Self, ReadError> {
        let broker = |error| ReadError::Broker { topic: topic.to_owned(), error };
        config.set("enable.auto.commit", "false").set("enable.partition.eof", "true");
        let consumer: BaseConsumer = config.create().map_err(broker)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Offset(from)).map_err(broker)?;
        consumer.assign(&assignment).map_err(broker)?;
        Ok(Self { consumer, topic: topic.to_owned(), cursor: Cursor::new(from) })
    }

    /// Whether the topic exists with its partition (an app that never ran has none).
    pub fn exists(&self, timeout: Duration) -> Result<bool, ReadError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|error| ReadError::Broker { topic: self.topic.clone(), error })?;
        Ok(metadata
            .topics()
            .first()
            .is_some_and(|found| found.error().is_none() && !found.partitions().is_empty()))
    }

    /// The offset of the record the reader needs next.
    pub fn next_offset(&self) -> i64 {
        self.cursor.next()
    }

    /// Waits up to `wait` for the next record.
    pub fn poll(&mut self, wait: Duration) -> Result<Read, ReadError> {
        let message = match self.consumer.poll(wait) {
            None => return Ok(Read::Idle),
            Some(Ok(message)) => message,
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(Read::End),
            Some(Err(error))
                if error.rdkafka_error_code()
                    == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                return Err(ReadError::Gone(self.topic.clone()));
            }
            Some(Err(error)) => {
                return Err(ReadError::Broker { topic: self.topic.clone(), error });
            }
        };
        let (offset, expected) = (message.offset(), self.cursor.next());
        match self.cursor.step(offset) {
            Step::Skip => return Ok(Read::Idle),
            Step::SeekBack(back) => {
                tracing::debug!(topic = %self.topic, expected, got = offset, from = back, "The broker skipped changelog records; reading again.");
                let seek = self.consumer.seek(&self.topic, 0, Offset::Offset(back), wait.max(SEEK));
                if let Err(error) = seek {
                    tracing::warn!(topic = %self.topic, %error, "Cannot seek in the changelog.");
                }
                return Ok(Read::Idle);
            }
            Step::Apply if offset > expected => {
                // A real gap (compaction, or records the broker lost): `Replay` decides.
                tracing::warn!(topic = %self.topic, expected, got = offset, "Changelog offsets skipped.");
            }
            Step::Apply => {}
        }
        let record = ChangelogRecord::decode(message.payload().unwrap_or_default())
            .map_err(|error| ReadError::Malformed { topic: self.topic.clone(), offset, error })?;
        Ok(Read::Record { offset, record })
    }
}

/// How long a seek back may take.
const SEEK: Duration = Duration::from_secs(5);
