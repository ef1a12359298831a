//! `aerogrid produce TOPIC`: sends lines of standard input to a topic, for trying apps out
//! (`aerogrid dev` prints its broker; `<data-dir>/broker` holds it).
//!
//! Each line is `KEY<TAB>VALUE`, or just `VALUE` (no key). The topic is created if missing.

use std::io::BufRead;

use aerogrid_kafka::KafkaSettings;
use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(clap::Args)]
pub(crate) struct ProduceCommand {
    /// The topic to send to.
    topic: String,
    /// The broker; defaults to `.aerogrid/broker` (what `aerogrid dev` started).
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

impl ProduceCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let brokers = match self.brokers {
            Some(brokers) => brokers,
            None => std::fs::read_to_string(".aerogrid/broker")
                .map(|text| text.trim().to_owned())
                .context(
                    "no --brokers and no `.aerogrid/broker` (is `aerogrid dev` running here?)",
                )?,
        };
        let kafka = KafkaSettings::new(brokers);
        kafka.ensure_topic(&self.topic, self.partitions).await?;
        let producer: FutureProducer = kafka.client_config().create()?;
        let mut sent = 0u64;
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading standard input")?;
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line.split_once('\t') {
                Some((key, value)) => (Some(key), value),
                None => (None, line.as_str()),
            };
            let mut record = FutureRecord::<str, str>::to(&self.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            producer
                .send(record, std::time::Duration::from_secs(10))
                .await
                .map_err(|(error, _)| anyhow::anyhow!("sending to `{}`: {error}", self.topic))?;
            sent += 1;
        }
        eprintln!("Sent {sent} records to `{}`.", self.topic);
        Ok(())
    }
}
