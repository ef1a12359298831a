//! Avro against JSON, printed (not a timed test): the seed program over 1,000,000 orders for
//! 1,000 products written as Avro in the registry's wire format (a stand-in registry,
//! `tests/support/registry.rs`) and the same program over the same orders as JSON, on one dev
//! stack, in alternating rounds; and the connector alone, fed each over its pipe.
//!
//! `cargo bench -p aerogrid-cli --bench avro_throughput` (ORDERS=..., ROUNDS=... (2)).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use support::{
    DevStack,
    registry::{StandInRegistry, avro_order},
};

const SEED: &str = include_str!("../../connector/python/tests/seed.py");
const ORDER: &str = r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}]}"#;

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn main() {
    let orders = number("ORDERS", 1_000_000);
    let rounds = number("ROUNDS", 2);
    tokio::runtime::Runtime::new().unwrap().block_on(run(orders, rounds));
}

async fn run(orders: u64, rounds: u64) {
    let registry = StandInRegistry::start().await;
    let id = registry.add("orders_avro-value", ORDER);
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with(
        &temp.path().join("data"),
        &[("AEROGRID_SCHEMA_REGISTRY_URL", &registry.url)],
        &["--broker-storage", "memory"],
    );
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker")).tuned_for_tansu();
    kafka.ensure_topic("orders", 1).await.unwrap();
    kafka.ensure_topic("orders_avro", 1).await.unwrap();
    let started = Instant::now();
    support::produce_orders(&kafka, 0..orders, 1000).await;
    support::produce_orders_as(&kafka, "orders_avro", 0..orders, 1000, move |product, quantity| {
        avro_order(id, product, quantity)
    })
    .await;
    println!(
        "produced {orders} orders as JSON and as Avro in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let team = support::create_orders_team(&pool).await;
    support::grant_topic(&pool, team, "orders_avro").await;
    let avro_seed = SEED.replace(
        "app.topic('orders', key_type=str, value_type=Order)",
        "app.topic('orders_avro', key_type=str, value_type=Order, value_serializer='avro')",
    );
    let (mut json_best, mut avro_best) = (0f64, 0f64);
    for round in 0..rounds {
        for (kind, topic, code) in
            [("json", "orders", SEED), ("avro", "orders_avro", avro_seed.as_str())]
        {
            let name = format!("{kind}-{round}");
            let app = support::create_app(&pool, team, &name, code, None).await;
            let started = Instant::now();
            support::start_app(&pool, app).await;
            wait_for_records(&kafka, app, topic, orders);
            let rate = orders as f64 / started.elapsed().as_secs_f64();
            let exact = grid_total(&stack, &format!("acme/{name}/product_sum"));
            let expected: u64 = (0..orders).map(|n| n % 5 + 1).sum();
            println!(
                "  round {round}: seed over {kind}, Start to last: {rate:.0} records/s (units sold {exact:?} of {expected})"
            );
            if exact == Some(expected) {
                let best = if kind == "json" { &mut json_best } else { &mut avro_best };
                *best = best.max(rate);
            }
            sqlx::query("UPDATE apps SET desired_state = 'stopped' WHERE id = $1")
                .bind(app)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    println!("seed program over JSON: {json_best:>10.0} records/s (best of {rounds})");
    println!("seed program over Avro: {avro_best:>10.0} records/s (best of {rounds})");
    println!("Avro / JSON:            {:>10.3}   (target >= 0.9)", avro_best / json_best);
}

/// Units sold in all of the grid's rows, within a few seconds.
fn grid_total(stack: &DevStack, grid: &str) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let expected_rows = 1000;
    loop {
        let output = stack.snapshot(grid, &stack.file("admin-token"));
        let total =
            serde_json::from_slice::<serde_json::Value>(&output.stdout).ok().and_then(|json| {
                let rows = json["rows"].as_object()?;
                (rows.len() == expected_rows)
                    .then(|| rows.values().filter_map(|row| row["units_sold"].as_u64()).sum())
            });
        if total.is_some() || Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the app has committed `records` of `topic` (one partition).
fn wait_for_records(kafka: &KafkaSettings, app: uuid::Uuid, topic: &str, records: u64) {
    let mut config = kafka.consumer_config();
    config.set("group.id", format!("aerogrid-app-{app}")).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let started = Instant::now();
    loop {
        let done = consumer
            .committed_offsets(list.clone(), Duration::from_secs(5))
            .ok()
            .and_then(|committed| {
                match committed.elements().first().map(|element| element.offset()) {
                    Some(Offset::Offset(offset)) => u64::try_from(offset).ok(),
                    _ => None,
                }
            })
            .unwrap_or(0);
        if done >= records {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "{records} records not read");
        std::thread::sleep(Duration::from_millis(10));
    }
}
