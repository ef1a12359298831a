//! Runtime throughput, printed (not a timed test): the seed program over 1,000,000 orders for
//! 1,000 products already in the broker, against two ceilings measured in the same run:
//! a bare rdkafka consumer draining the topic, and the seed's loop body in plain CPython over
//! already-decoded dicts.
//!
//! `cargo bench -p aerogrid-cli --bench runtime_throughput` (ORDERS=... to change the count).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use support::DevStack;

const SEED: &str = include_str!("../../runtime/python/tests/seed.py");

fn main() {
    let orders: u64 =
        std::env::var("ORDERS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(orders));
}

async fn run(orders: u64) {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();

    let started = Instant::now();
    support::produce_orders(&kafka, 0..orders, 1000).await;
    println!("produced {orders} orders in {:.1} s", started.elapsed().as_secs_f64());

    let broker_ceiling = drain(&kafka, orders);
    let python_ceiling = plain_python(orders);

    let app = support::create_running_app(&pool, SEED).await;
    let started = Instant::now();
    let first = wait_for_offset(&kafka, app, 1, Duration::from_secs(60));
    let done = wait_for_offset(&kafka, app, orders as i64, Duration::from_secs(3600));
    let seconds = done.duration_since(started).as_secs_f64();
    let connector = orders as f64 / seconds;

    println!("bare rdkafka consumer:        {broker_ceiling:>12.0} records/s");
    println!("plain CPython loop:           {python_ceiling:>12.0} records/s");
    println!("seed program (Start to last): {connector:>12.0} records/s ({seconds:.1} s)");
    println!("  ratio to the broker:        {:>12.3}", connector / broker_ceiling);
    println!("  ratio to plain CPython:     {:>12.3}", connector / python_ceiling);
    println!(
        "Start to first record in the changelog: {:.0} ms",
        first.duration_since(started).as_secs_f64() * 1e3
    );
}

/// The broker's own ceiling: a consumer that only counts.
fn drain(kafka: &KafkaSettings, orders: u64) -> f64 {
    let mut config = kafka.consumer_config();
    config.set("group.id", "bench-drain").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("orders", 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0usize;
    while count < orders {
        if let Some(message) = consumer.poll(Duration::from_secs(10)) {
            bytes += message.unwrap().payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    std::hint::black_box(bytes);
    orders as f64 / started.elapsed().as_secs_f64()
}

/// The seed's loop body in the same CPython the connectors embed, over decoded dicts, with a
/// plain dict (default rows included) for the grid.
fn plain_python(orders: u64) -> f64 {
    let script = format!(
        r#"
import time
orders = [{{"product": f"p{{n % 1000}}", "quantity": n % 5 + 1}} for n in range({orders})]
grid = {{}}
started = time.perf_counter()
for order in orders:
    row = grid.get(order["product"]) or {{"units_sold": 0}}
    grid[order["product"]] = {{"units_sold": row["units_sold"] + order["quantity"]}}
print({orders} / (time.perf_counter() - started))
"#
    );
    let output =
        std::process::Command::new("/usr/bin/python3.11").args(["-c", &script]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().parse().unwrap()
}

/// Polls the app's committed input offset (written right after each changelog write) until it
/// reaches `offset`.
fn wait_for_offset(
    kafka: &KafkaSettings,
    app: uuid::Uuid,
    offset: i64,
    timeout: Duration,
) -> Instant {
    let mut config = kafka.consumer_config();
    config.set("group.id", format!("aerogrid-app-{app}")).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let started = Instant::now();
    loop {
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition("orders", 0);
        if let Ok(list) = consumer.committed_offsets(partitions, Duration::from_secs(5))
            && let Some(Offset::Offset(committed)) =
                list.find_partition("orders", 0).map(|partition| partition.offset())
            && committed >= offset
        {
            return Instant::now();
        }
        assert!(started.elapsed() < timeout, "offset {offset} not reached within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
