//! Runtime throughput, printed (not a timed test): the seed program over 1,000,000 orders for
//! 1,000 products already in the broker, against two ceilings measured in the same run:
//! a bare rdkafka consumer draining the topic, and the seed's loop body in plain CPython over
//! already-decoded dicts. Between them, a connector process alone, fed the same orders as raw
//! bytes over its pipe (decoding included, no broker): where the time goes.
//!
//! `cargo bench -p aerogrid-cli --bench runtime_throughput` (ORDERS=... to change the count,
//! BROKER_STORAGE=memory|sqlite for the dev broker's storage, memory by default).

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
    // CONNECTOR_ONLY=1: just the connector fed over its pipe (for profiling it).
    if std::env::var_os("CONNECTOR_ONLY").is_some() {
        println!("connector alone (pipe, no broker): {:.0} records/s", connector_alone(orders));
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(orders));
}

async fn run(orders: u64) {
    let temp = tempfile::tempdir().unwrap();
    let storage = std::env::var("BROKER_STORAGE").unwrap_or_else(|_| "memory".into());
    let stack =
        DevStack::start_with_args(&temp.path().join("data"), &["--broker-storage", &storage]);
    println!("dev broker storage: {storage}");
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();

    let started = Instant::now();
    support::produce_orders(&kafka, 0..orders, 1000).await;
    println!("produced {orders} orders in {:.1} s", started.elapsed().as_secs_f64());

    let broker_ceiling = drain(&kafka, orders);
    let python_ceiling = plain_python(orders);
    let connector_alone = connector_alone(orders);

    let app = support::create_running_app(&pool, SEED).await;
    let started = Instant::now();
    let first = wait_for_offset(&kafka, app, 1, Duration::from_secs(60));
    let done = wait_for_offset(&kafka, app, orders as i64, Duration::from_secs(3600));
    let seconds = done.duration_since(started).as_secs_f64();
    let connector = orders as f64 / seconds;

    println!("bare rdkafka consumer:        {broker_ceiling:>12.0} records/s");
    println!("plain CPython loop:           {python_ceiling:>12.0} records/s");
    println!("connector alone (pipe, no broker): {connector_alone:>7.0} records/s");
    println!("  ratio to plain CPython:     {:>12.3}", connector_alone / python_ceiling);
    println!("seed program (Start to last): {connector:>12.0} records/s ({seconds:.1} s)");
    println!("  ratio to the broker:        {:>12.3}", connector / broker_ceiling);
    println!("  ratio to plain CPython:     {:>12.3}", connector / python_ceiling);
    println!(
        "Start to first record in the changelog: {:.0} ms",
        first.duration_since(started).as_secs_f64() * 1e3
    );
    idle_connector_memory(&stack);
    recovery_after_sigkill(&stack, &pool, app).await;
}

/// Resident memory of the warm pool's idle connector processes.
fn idle_connector_memory(stack: &DevStack) {
    for (pid, title) in stack.descendants() {
        if !title.starts_with("aerogrid-connector (idle)") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .map_or("?".to_owned(), |value| value.trim().to_owned());
        println!("idle connector {pid}: RSS {rss}");
    }
}

/// SIGKILLs the app's connector (its grid has 1,000 rows) and times until the app runs again.
async fn recovery_after_sigkill(stack: &DevStack, pool: &sqlx::PgPool, app: uuid::Uuid) {
    let restarts = || async {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT state, restarts FROM app_status WHERE app_id = $1",
        )
        .bind(app)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let (_, before) = restarts().await;
    let Some((pid, _)) = stack
        .descendants()
        .into_iter()
        .find(|(_, title)| title.starts_with("aerogrid-connector acme/orders"))
    else {
        println!("no connector of the app to kill");
        return;
    };
    let killed = Instant::now();
    support::send_signal(pid, libc::SIGKILL);
    loop {
        let (state, count) = restarts().await;
        if count > before && state == "running" {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "not running again after 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "SIGKILL of the connector (1,000-row grid) to running again: {:.0} ms",
        killed.elapsed().as_secs_f64() * 1e3
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
product_sum = {{}}
default = lambda: {{'units_sold': 0}}
started = time.perf_counter()
for order in orders:
    row = product_sum.get(order['product']) or default()
    units_sold = row['units_sold'] + order['quantity']
    product_sum[order['product']] = {{ 'units_sold': units_sold }}
print({orders} / (time.perf_counter() - started))
"#
    );
    let output =
        std::process::Command::new("/usr/bin/python3.11").args(["-c", &script]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().parse().unwrap()
}

/// A connector process fed the orders over its pipe, as the node does (two batches in flight),
/// from bytes already in memory.
fn connector_alone(orders: u64) -> f64 {
    use std::io::{Read, Write};

    use aerogrid_proto::runtime::v1::{
        Batch, ConnectorMessage, Load, NodeMessage, RawMessage, node_message,
    };
    use prost::Message as _;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .arg("connector")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let send = |stdin: &mut std::process::ChildStdin, kind| {
        let bytes = NodeMessage { kind: Some(kind) }.encode_to_vec();
        stdin.write_all(&u32::try_from(bytes.len()).unwrap().to_le_bytes()).unwrap();
        stdin.write_all(&bytes).unwrap();
    };
    let receive = |stdout: &mut std::process::ChildStdout| {
        let mut length = [0u8; 4];
        stdout.read_exact(&mut length).unwrap();
        let mut bytes = vec![0u8; u32::from_le_bytes(length) as usize];
        stdout.read_exact(&mut bytes).unwrap();
        ConnectorMessage::decode(bytes.as_slice()).unwrap()
    };
    receive(&mut stdout);
    send(
        &mut stdin,
        node_message::Kind::Load(Load {
            team: "bench".into(),
            app: "seed".into(),
            source: SEED.into(),
            filename: "main.py".into(),
        }),
    );
    receive(&mut stdout);
    let batches: Vec<node_message::Kind> = (0..orders)
        .collect::<Vec<_>>()
        .chunks(5000)
        .map(|chunk| {
            let messages = chunk
                .iter()
                .map(|&n| RawMessage {
                    key: Some(format!("order-{n}").into_bytes()),
                    value: Some(
                        format!(r#"{{"product": "p{}", "quantity": {}}}"#, n % 1000, n % 5 + 1)
                            .into_bytes(),
                    ),
                    partition: 0,
                    offset: i64::try_from(n).unwrap(),
                    timestamp: None,
                })
                .collect();
            node_message::Kind::Batch(Batch { topic: "orders".into(), messages })
        })
        .collect();
    let count = batches.len();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        for batch in batches {
            send(&mut stdin, batch);
        }
        stdin
    });
    for _ in 0..count {
        receive(&mut stdout);
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(writer.join().unwrap());
    child.wait().unwrap();
    orders as f64 / seconds
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
