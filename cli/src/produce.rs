//! `aerogrid produce TOPIC`: sends lines of standard input to a topic, for trying apps out
//! (`aerogrid dev` prints its broker; `<data-dir>/broker` holds it).
//!
//! Each line is `KEY<TAB>VALUE`, or just `VALUE` (no key). The topic is created if missing.
//! With `--value-serializer avro --schema FILE`, each value is a JSON object written as Avro of
//! that schema in the registry's wire format (the schema registered under `<topic>-value`).

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
    /// How values are written: `json` (lines as they are) or `avro` (each JSON line as Avro of
    /// `--schema`, in the schema registry's wire format).
    #[arg(long, default_value = "json", value_parser = ["json", "avro"])]
    value_serializer: String,
    /// The Avro schema of the values (a `.avsc` file), with `--value-serializer avro`.
    #[arg(long, required_if_eq("value_serializer", "avro"))]
    schema: Option<std::path::PathBuf>,
    #[command(flatten)]
    registry: aerogrid_registry::RegistryArgs,
}

/// Values as Avro: the schema and the id the registry gave it.
struct AvroWriter {
    schema: apache_avro::Schema,
    id: u32,
}

impl AvroWriter {
    async fn register(command: &ProduceCommand) -> anyhow::Result<Option<Self>> {
        if command.value_serializer != "avro" {
            return Ok(None);
        }
        let path = command.schema.as_ref().context("--schema is required with avro")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the schema {}", path.display()))?;
        let schema = apache_avro::Schema::parse_str(&text)
            .with_context(|| format!("the Avro schema {}", path.display()))?;
        let registry = command.registry.registry()?;
        let subject = format!("{}-value", command.topic);
        let registered =
            aerogrid_registry::RegisteredSchema { schema_type: "AVRO".into(), schema: text };
        let id = registry
            .register(&subject, &registered)
            .await
            .with_context(|| format!("registering the schema under `{subject}`"))?;
        Ok(Some(Self { schema, id }))
    }

    /// One JSON line as Avro in the wire format.
    fn encode(&self, line: &str) -> anyhow::Result<Vec<u8>> {
        let json: serde_json::Value =
            serde_json::from_str(line).context("the value is not JSON")?;
        let value = apache_avro::types::Value::try_from(json)
            .and_then(|value| value.resolve(&self.schema))
            .context("the value does not fit the schema")?;
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .context("the Avro writer")?;
        let mut bytes = vec![0];
        bytes.extend(self.id.to_be_bytes());
        bytes.extend(writer.write_value_to_vec(value).context("writing Avro")?);
        Ok(bytes)
    }
}

impl ProduceCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let avro = AvroWriter::register(&self).await?;
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
            let value = match &avro {
                Some(avro) => avro.encode(value).with_context(|| format!("line {}", sent + 1))?,
                None => value.as_bytes().to_vec(),
            };
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic).payload(&value);
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
