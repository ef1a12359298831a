//! Writer schemas for topics in the schema registry's wire format: the ids a batch's messages
//! name (a zero byte, then a 4-byte id), fetched from the registry once per node and sent to
//! the connector once per run, with the first batch that names each.

use std::collections::{HashMap, HashSet};

use aerogrid_proto::runtime::v1::{RawMessage, TopicSpec, WriterSchema};
use aerogrid_registry::Registry;

use crate::{Error, Result};

/// Serializers whose messages are read by the registry schema they name (`json-schema`
/// messages name one too, but read as JSON without it: they need no registry).
const FRAMED: &[&str] = &["avro", "protobuf"];

#[derive(Debug, Default)]
pub(crate) struct RegistryTopics {
    /// Topic → (keys framed, values framed).
    framed: HashMap<String, (bool, bool)>,
    /// Ids whose schema this run's connector has.
    sent: HashSet<u32>,
}

impl RegistryTopics {
    pub(crate) fn of(topics: &[TopicSpec]) -> Self {
        let framed = topics
            .iter()
            .map(|topic| {
                let is = |serializer: &str| FRAMED.contains(&serializer);
                (topic.name.clone(), (is(&topic.key_serializer), is(&topic.value_serializer)))
            })
            .filter(|(_, (key, value))| *key || *value)
            .collect();
        Self { framed, sent: HashSet::new() }
    }

    /// The schemas `messages` name that the connector lacks; a registry that cannot give one
    /// is `RegistryUnavailable` (the app waits: its records are not at fault).
    pub(crate) async fn writer_schemas(
        &mut self,
        registry: &Registry,
        topic: &str,
        messages: &[RawMessage],
    ) -> Result<Vec<WriterSchema>> {
        let Some(&(keys, values)) = self.framed.get(topic) else { return Ok(Vec::new()) };
        let mut wanted: Vec<u32> = Vec::new();
        for message in messages {
            let parts = [(keys, &message.key), (values, &message.value)];
            for (framed, part) in parts {
                if let (true, Some(id)) = (framed, part.as_deref().and_then(schema_id))
                    && !self.sent.contains(&id)
                    && !wanted.contains(&id)
                {
                    wanted.push(id);
                }
            }
        }
        let mut schemas = Vec::with_capacity(wanted.len());
        for id in wanted {
            let schema = registry
                .schema(id)
                .await
                .map_err(|error| Error::RegistryUnavailable(error.to_string()))?;
            schemas.push(WriterSchema {
                id,
                schema_type: schema.schema_type.clone(),
                schema: schema.schema.clone(),
            });
        }
        self.sent.extend(schemas.iter().map(|schema| schema.id));
        Ok(schemas)
    }
}

/// The schema id of a message in the wire format (one that is not is the connector's to call
/// a bad record).
fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &[u8]) -> RawMessage {
        RawMessage {
            key: None,
            value: Some(value.to_vec()),
            partition: 0,
            offset: 0,
            timestamp: None,
        }
    }

    #[tokio::test]
    async fn only_avro_topics_whose_messages_name_a_schema_ask_the_registry() {
        let spec = |name: &str, value: &str| TopicSpec {
            name: name.into(),
            key_serializer: "json".into(),
            value_serializer: value.into(),
        };
        let mut topics =
            RegistryTopics::of(&[spec("a", "avro"), spec("j", "json-schema"), spec("p", "json")]);
        let none = Registry::none();
        let framed = message(&[0, 0, 0, 0, 7, 2]);
        // Not in the wire format (a bad record for the connector to name), or a topic that
        // needs no schema: nothing asked.
        assert!(topics.writer_schemas(&none, "a", &[message(b"{}")]).await.unwrap().is_empty());
        for topic in ["j", "p"] {
            assert!(
                topics
                    .writer_schemas(&none, topic, std::slice::from_ref(&framed))
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        // A schema is needed and cannot be had: the app waits, saying why.
        let error = topics.writer_schemas(&none, "a", &[framed]).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "waiting for the schema registry: no schema registry is set (--schema-registry-url)"
        );
    }
}
