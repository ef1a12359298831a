//! What the seed app is measured against on the same broker and topic: the fastest bare
//! consumer (the broker's ceiling) and the plain aiokafka script a developer would write instead
//! (`cli/benches/peer/seed_aiokafka.py`).

use std::time::{Duration, Instant};

use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

/// librdkafka settings for a drain with large fetches: whole partitions' worth per request and a
/// deep prefetch queue, so the consumer never waits for the broker between fetches.
const LARGE_FETCHES: &[(&str, &str)] = &[
    ("fetch.max.bytes", "134217728"),
    ("max.partition.fetch.bytes", "67108864"),
    ("queued.min.messages", "2000000"),
    ("queued.max.messages.kbytes", "2097151"),
];

/// A bare consumer's drain of `topic`: records/s from assignment to the last record, for each
/// configuration (the node's own input settings, then large fetches).
/// DRAIN_OPTIONS="key=value,key=value;key=value" adds a drain per `;`-separated set (to try
/// consumer settings).
pub(crate) fn drains(kafka: &KafkaSettings, topic: &str, records: u64) -> Vec<(String, f64)> {
    let mut drains = vec![
        ("bare consumer, the node's settings".to_owned(), drain(kafka, topic, records, &[])),
        ("bare consumer, large fetches".to_owned(), drain(kafka, topic, records, LARGE_FETCHES)),
    ];
    for set in std::env::var("DRAIN_OPTIONS").unwrap_or_default().split(';') {
        let options: Vec<(&str, &str)> =
            set.split(',').filter_map(|option| option.split_once('=')).collect();
        if !options.is_empty() {
            drains.push((
                format!("bare consumer, the node's settings and {set}"),
                drain(kafka, topic, records, &options),
            ));
        }
    }
    drains
}

fn drain(kafka: &KafkaSettings, topic: &str, records: u64, options: &[(&str, &str)]) -> f64 {
    let mut config = kafka.consumer_config();
    // As the node's input consumer has it (`runtime/src/input.rs`).
    config.set("queued.min.messages", "1000000");
    config.set("group.id", "bench-drain").set("enable.auto.commit", "false");
    for (key, value) in options {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), Offset::Offset(0)).unwrap();
    }
    let started = Instant::now();
    consumer.assign(&assignment).unwrap();
    let mut count = 0u64;
    let mut bytes = 0usize;
    while count < records {
        if let Some(message) = consumer.poll(Duration::from_secs(10)) {
            bytes += message.unwrap().payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    std::hint::black_box(bytes);
    records as f64 / started.elapsed().as_secs_f64()
}

/// What the peer script measured.
pub(crate) struct Peer {
    pub(crate) records_per_second: f64,
}

/// Runs the aiokafka script over the seed orders (`fetch_wait_ms` as the node's consumer has
/// it) and checks its grid: `rows` products selling `units_sold` in all.
pub(crate) fn aiokafka_peer(
    kafka: &KafkaSettings,
    topic: &str,
    records: u64,
    fetch_wait_ms: &str,
    expected: (u64, u64),
) -> Peer {
    let python = crate::support::bench_peer_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/seed_aiokafka.py");
    let output = std::process::Command::new(&python)
        .args([script, &kafka.brokers, topic, &records.to_string(), fetch_wait_ms])
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error}: run `cargo xtask setup` (it installs the peer's Python)",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the peer script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (rows, units_sold) = expected;
    assert_eq!(answer["rows"], rows, "the peer's grid");
    assert_eq!(answer["units_sold"], units_sold, "the peer's grid");
    Peer { records_per_second: answer["records_per_second"].as_f64().unwrap() }
}

/// The seed grid after orders `0..records` of `support::produce_orders` over `products`
/// products: (rows, units sold in all).
pub(crate) fn seed_grid(records: u64, products: u64) -> (u64, u64) {
    (records.min(products), (0..records).map(|n| n % 5 + 1).sum())
}
