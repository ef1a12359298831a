//! The reading thread: frames off the node's pipe, and batches decoded against the loaded app's
//! topic schemas, while the interpreter works on the previous batch.

use std::{
    collections::HashMap,
    io::Read,
    sync::{Arc, Mutex, mpsc},
};

use aerogrid_proto::runtime::v1::{RawMessage, node_message};

use crate::{
    Error, Result,
    decode::{Decoded, TopicSchema, Writers, avro::WriterSchema},
    frame,
};

/// The loaded app's topic schemas. The interpreter's thread sets them before it answers `Load`,
/// and the node sends no batch before that answer.
pub(crate) type Schemas = Arc<Mutex<HashMap<String, Arc<TopicSchema>>>>;

pub(crate) enum Incoming {
    Batch(DecodedBatch),
    /// Everything else, as it came.
    Other(node_message::Kind),
}

pub(crate) struct DecodedBatch {
    pub(crate) topic: String,
    pub(crate) messages: Vec<DecodedMessage>,
}

pub(crate) struct DecodedMessage {
    /// Kept for bad records, which carry the raw bytes.
    pub(crate) raw: RawMessage,
    /// The key and value, or why they do not decode; `None` when the app declares no schema for
    /// the topic.
    pub(crate) decoded: Option<std::result::Result<(Decoded, Decoded), String>>,
}

/// The reading thread's two ends: messages in order (ending when the node closes the pipe), and
/// where batches go once processed.
pub(crate) struct Reader {
    pub(crate) incoming: mpsc::IntoIter<Result<Incoming>>,
    /// Batches are freed on the thread that allocated them: freeing them on the interpreter's
    /// thread made both threads wait on the allocator's lock of the reader's arena.
    pub(crate) spent: mpsc::Sender<DecodedBatch>,
}

/// Starts the thread.
pub(crate) fn start(mut input: impl Read + Send + 'static, schemas: Schemas) -> Result<Reader> {
    // One decoded batch waits while the interpreter works: enough to overlap, bounded memory.
    let (sender, receiver) = mpsc::sync_channel(1);
    let (spent, spent_batches) = mpsc::channel::<DecodedBatch>();
    std::thread::Builder::new().name("aerogrid-reader".into()).spawn(move || {
        // Every writer schema the node sent, parsed once.
        let mut writers = Writers::new();
        loop {
            // (At most the batches in flight: the interpreter has one and this thread the next.)
            while let Ok(batch) = spent_batches.try_recv() {
                drop(batch);
            }
            let incoming = match frame::read(&mut input) {
                Ok(None) => return,
                Ok(Some(message)) => match message.kind {
                    Some(node_message::Kind::Batch(batch)) => {
                        let schema = schemas
                            .lock()
                            .expect("no thread panics holding the schemas")
                            .get(&batch.topic)
                            .cloned();
                        learn(&mut writers, batch.writer_schemas).map(|()| {
                            let messages = batch.messages;
                            Incoming::Batch(decode(
                                batch.topic,
                                messages,
                                schema.as_deref(),
                                &writers,
                            ))
                        })
                    }
                    Some(kind) => Ok(Incoming::Other(kind)),
                    None => Err(Error::Protocol("a node message without content".to_owned())),
                },
                Err(error) => Err(error),
            };
            let failed = incoming.is_err();
            if sender.send(incoming).is_err() || failed {
                return;
            }
        }
    })?;
    Ok(Reader { incoming: receiver.into_iter(), spent })
}

/// Most writer schemas a connector keeps (an app reads a few topics, each with a few schema
/// versions): beyond, the connector ends (and the node starts the run over).
const MAX_WRITER_SCHEMAS: usize = 10_000;

fn learn(
    writers: &mut Writers,
    schemas: Vec<aerogrid_proto::runtime::v1::WriterSchema>,
) -> Result<()> {
    for schema in schemas {
        if writers.len() >= MAX_WRITER_SCHEMAS {
            // The node counts them as sent: ending here (the run starts over with a new
            // connector) is better than messages of a schema this one forgot.
            return Err(Error::Protocol(format!(
                "more than {MAX_WRITER_SCHEMAS} writer schemas sent to one connector"
            )));
        }
        let parsed = match schema.schema_type.as_str() {
            "" | "AVRO" => WriterSchema::parse(&schema.schema).map(std::sync::Arc::new),
            other => Err(format!("a {other} schema where Avro was expected")),
        };
        writers.insert(schema.id, parsed);
    }
    Ok(())
}

fn decode(
    topic: String,
    messages: Vec<RawMessage>,
    schema: Option<&TopicSchema>,
    writers: &Writers,
) -> DecodedBatch {
    let messages = messages
        .into_iter()
        .map(|raw| {
            let decoded = schema.map(|schema| {
                Ok((
                    schema.decode_key(raw.key.as_deref(), writers)?,
                    schema.decode_value(raw.value.as_deref(), writers)?,
                ))
            });
            DecodedMessage { raw, decoded }
        })
        .collect();
    DecodedBatch { topic, messages }
}
