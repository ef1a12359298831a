//! How AeroGrid talks to Kafka.
//!
//! Every rdkafka client of the platform is built from [`KafkaSettings`], so that the options an
//! operator passes for a real cluster (SASL, SSL, ...) reach every consumer, producer and admin
//! client alike. User code never sees these settings: connectors get records from the runtime node.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    types::RDKafkaErrorCode,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Kafka option `{0}`: expected KEY=VALUE")]
    InvalidOption(String),
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    #[error("broker at `{brokers}` is not reachable: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic `{topic}`: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("cannot delete topic `{topic}`: {reason}")]
    DeleteTopic { topic: String, reason: String },
    #[error("Kafka task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The command-line face of [`KafkaSettings`].
#[derive(Clone, Debug, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma separated (`host:port,...`).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,

    /// Extra librdkafka settings for every client, `KEY=VALUE`, e.g.
    /// `security.protocol=SASL_SSL` (repeat the flag, or separate with `;` in the variable).
    #[arg(long = "kafka-option", env = "AEROGRID_KAFKA_OPTIONS", value_delimiter = ';', value_parser = parse_option)]
    pub options: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The settings, with `brokers` standing in when none were given.
    pub fn settings_or(&self, brokers: Option<String>) -> Option<KafkaSettings> {
        let brokers = self.brokers.clone().or(brokers)?;
        Some(KafkaSettings { brokers, options: self.options.clone() })
    }
}

/// Where the brokers are and how to reach them.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    pub brokers: String,
    /// librdkafka settings applied after the defaults.
    pub options: Vec<(String, String)>,
}

fn parse_option(option: &str) -> Result<(String, String)> {
    match option.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(Error::InvalidOption(option.to_owned())),
    }
}

/// What a reachability probe saw.
#[derive(Clone, Debug)]
pub struct BrokerInfo {
    pub brokers: usize,
    pub topics: usize,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), options: Vec::new() }
    }

    /// For a tansu broker, which holds every fetch for about 1.5 times `fetch.wait.max.ms` even
    /// when records are there: 5 ms (about 8 ms per hop) unless the operator set it.
    pub fn tuned_for_tansu(mut self) -> Self {
        if !self.options.iter().any(|(key, _)| key == "fetch.wait.max.ms") {
            self.options.push(("fetch.wait.max.ms".into(), "5".into()));
        }
        self
    }

    /// The configuration of producers and admin clients; operator options override the
    /// defaults.
    pub fn client_config(&self) -> ClientConfig {
        self.config_with(&[])
    }

    /// The configuration of consumers.
    pub fn consumer_config(&self) -> ClientConfig {
        self.config_with(&[
            // Kafka answers a fetch as soon as a record arrives: this only bounds idle fetches
            // (librdkafka's 500 ms would delay noticing a broker that went away). Brokers that
            // hold every fetch for a part of it (tansu: about 1.5 times it, measured) need a
            // low value: `aerogrid dev` sets one for its own broker (`tuned_for_tansu`).
            ("fetch.wait.max.ms", "100"),
            // Prefetch a few batches, not librdkafka's 64 MB per partition: bounded memory per
            // app, and a broker that serves requests one at a time (tansu on SQLite) is not kept
            // busy with fetches while a changelog write waits.
            ("queued.min.messages", "20000"),
            ("queued.max.messages.kbytes", "8192"),
            // With the queue that small, a reader busier than the broker fills it, and
            // librdkafka then waits this long before fetching again: at its 1000 ms, the
            // seed app's input stood still for 300-400 ms of every second (perf, 1M orders).
            ("fetch.queue.backoff.ms", "10"),
        ])
    }

    fn config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            // Requests are small and latency matters (a changelog write is on every grid
            // change's path): send them at once rather than after the last one's acknowledgement.
            .set("socket.nagle.disable", "true")
            .set("log_level", "4");
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    fn admin(&self) -> Result<Admin> {
        self.client_config().create().map(|client| Admin(Some(client))).map_err(Error::Client)
    }

    /// Asks the cluster for its metadata: proves the brokers answer.
    pub async fn probe(&self, timeout: Duration) -> Result<BrokerInfo> {
        self.prober()?.probe(timeout).await
    }

    /// A client for repeated probes (health checks): one client and its connections, reused.
    pub fn prober(&self) -> Result<Prober> {
        let consumer: BaseConsumer = self.consumer_config().create().map_err(Error::Client)?;
        Ok(Prober { consumer: std::sync::Arc::new(consumer), brokers: self.brokers.clone() })
    }

    /// Creates a topic; one that exists already is fine.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.ensure_topic_with(topic, partitions, &[]).await
    }

    /// Creates a topic with these topic configs (`retention.ms`, ...); one that exists already
    /// is fine (and keeps its own).
    pub async fn ensure_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let admin = self.admin()?;
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (name, value) in configs {
            new_topic = new_topic.set(name, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&new_topic], &options).await.map_err(|error| {
            Error::CreateTopic { topic: topic.to_owned(), reason: error.to_string() }
        })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::CreateTopic { topic: name, reason: code.to_string() });
                }
            }
        }
        Ok(())
    }

    /// The largest record batch the broker takes on `topic` (its `max.message.bytes`), where
    /// the broker says (`DescribeConfigs`); None where it cannot (tansu 0.6 does not answer).
    pub async fn max_message_bytes(&self, topic: &str, timeout: Duration) -> Option<usize> {
        let admin = self.admin().ok()?;
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let described = tokio::time::timeout(
            timeout,
            admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .await
        .ok()?
        .ok()?;
        let resource = described.into_iter().next()?.ok()?;
        let entry = resource.get("max.message.bytes")?;
        entry.value.as_deref()?.parse().ok()
    }

    /// Deletes a topic; one that does not exist is fine. Some brokers cannot delete topics
    /// (tansu 0.6): the error says so, and nothing may depend on the deletion.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let admin = self.admin()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.delete_topics(&[topic], &options).await.map_err(|error| {
            Error::DeleteTopic { topic: topic.to_owned(), reason: error.to_string() }
        })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => {
                    return Err(Error::DeleteTopic { topic: name, reason: code.to_string() });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_defaults() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.options.push(parse_option("fetch.wait.max.ms = 100").unwrap());
        let config = settings.consumer_config();
        assert_eq!(config.get("fetch.wait.max.ms"), Some("100"));
        let plain = KafkaSettings::new("b:9092");
        assert_eq!(plain.consumer_config().get("fetch.wait.max.ms"), Some("100"));
        let tansu = KafkaSettings::new("b:9092").tuned_for_tansu();
        assert_eq!(tansu.consumer_config().get("fetch.wait.max.ms"), Some("5"));
        let chosen = settings.clone().tuned_for_tansu();
        assert_eq!(chosen.consumer_config().get("fetch.wait.max.ms"), Some("100"), "kept");
        assert_eq!(plain.client_config().get("fetch.wait.max.ms"), None, "a consumer setting");
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn option_without_equals_is_refused() {
        let error = parse_option("security.protocol").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid Kafka option `security.protocol`: expected KEY=VALUE"
        );
    }
}

/// An admin client for one call. Dropping rdkafka's `AdminClient` joins its polling thread,
/// which waits up to 100 ms for events: that happens on a blocking thread, not in the caller
/// (it was 200 ms of every app's Start, in two admin calls).
struct Admin(Option<AdminClient<DefaultClientContext>>);

impl std::ops::Deref for Admin {
    type Target = AdminClient<DefaultClientContext>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let client = self.0.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}

/// One Kafka client that answers probes again and again (see [`KafkaSettings::prober`]).
#[derive(Clone)]
pub struct Prober {
    consumer: std::sync::Arc<BaseConsumer>,
    brokers: String,
}

impl Prober {
    /// The names of the cluster's topics (those this client may describe).
    pub async fn topic_names(&self, timeout: Duration) -> Result<Vec<String>> {
        self.metadata(timeout, |metadata| {
            metadata.topics().iter().map(|topic| topic.name().to_owned()).collect()
        })
        .await
    }

    /// Asks the cluster for its metadata: proves the brokers answer.
    pub async fn probe(&self, timeout: Duration) -> Result<BrokerInfo> {
        self.metadata(timeout, |metadata| BrokerInfo {
            brokers: metadata.brokers().len(),
            topics: metadata.topics().len(),
        })
        .await
    }

    /// What `read` takes of the cluster's metadata.
    async fn metadata<T: Send + 'static>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&rdkafka::metadata::Metadata) -> T + Send + 'static,
    ) -> Result<T> {
        let consumer = self.consumer.clone();
        let brokers = self.brokers.clone();
        // rdkafka's metadata call blocks its thread.
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(None, timeout)
                .map_err(|source| Error::Unreachable { brokers, source })?;
            Ok(read(&metadata))
        })
        .await?
    }
}
