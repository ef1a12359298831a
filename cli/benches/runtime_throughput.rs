//! Runtime throughput, printed (not a timed test): the seed program over 1,000,000 orders for
//! 1,000 products already in the broker, against what is measured in the same run on the same
//! broker and topic, in alternating rounds: the fastest bare consumer (the broker's ceiling), the
//! plain aiokafka script the seed program replaces (`peer/seed_aiokafka.py`), and the seed's loop
//! body in plain CPython over already-decoded dicts. Between them, a connector process alone, fed
//! the same orders as raw bytes over its pipe (decoding included, no broker): where the time goes.
//!
//! The sandbox's cost is measured in the same run: the connector alone with the sandbox on and
//! off (alternating rounds), the whole pipeline on a second dev stack started with
//! `--no-sandbox`, and a cold connector's start to Ready.
//!
//! Then APPS (10) seed apps on the one node read the same topic at once: their aggregate
//! records/s and how evenly the node shares itself among them.
//!
//! `cargo bench -p aerogrid-cli --bench runtime_throughput` (ORDERS=... to change the count,
//! PARTITIONS=... the input topic's partitions (1), ROUNDS=... the alternating rounds (2),
//! BROKER_STORAGE=memory|sqlite for the dev broker's storage, memory by default).

#[path = "runtime_throughput/baselines.rs"]
mod baselines;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use support::{DevStack, connector::ConnectorProcess};

const SEED: &str = include_str!("../../connector/python/tests/seed.py");

fn main() {
    let orders: u64 =
        std::env::var("ORDERS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    // CONNECTOR_ONLY=1: just the connector fed over its pipe (for profiling it; SOURCE=file.py
    // runs that program over the orders instead of the seed).
    if std::env::var_os("CONNECTOR_ONLY").is_some() {
        println!(
            "connector alone (pipe, no broker): {:.0} records/s",
            connector_alone(orders, Sandbox::On)
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // DRAINS_ONLY=1: only the bare consumers (with DRAIN_OPTIONS, to try settings).
    if std::env::var_os("DRAINS_ONLY").is_some() {
        runtime.block_on(drains_only(orders));
        return;
    }
    runtime.block_on(run(orders));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sandbox {
    On,
    Off,
}

/// What one dev stack measured: the best of its rounds for each contender.
struct EndToEnd {
    /// The fastest bare consumer's drain.
    broker_ceiling: f64,
    /// The aiokafka script's (measured on the sandboxed stack only).
    peer: Option<f64>,
    records_per_second: f64,
    seconds: f64,
    start_ms: f64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

async fn run(orders: u64) {
    let python_ceiling = plain_python(orders);
    // Alternating rounds, so a noisy neighbour hits both sides alike.
    let mut alone_on = Vec::new();
    let mut alone_off = Vec::new();
    for _ in 0..3 {
        alone_on.push(connector_alone(orders, Sandbox::On));
        alone_off.push(connector_alone(orders, Sandbox::Off));
    }
    let (ready_on, ready_off) = cold_start_to_ready(20);
    let (load_on, load_off) = (load_latency(Sandbox::On, 20), load_latency(Sandbox::Off, 20));
    // SANDBOX_OFF_FIRST=1 runs the baseline stack first (to see the order's own effect).
    let (on, off) = if std::env::var_os("SANDBOX_OFF_FIRST").is_some() {
        let off = end_to_end(orders, Sandbox::Off).await;
        (end_to_end(orders, Sandbox::On).await, off)
    } else {
        let on = end_to_end(orders, Sandbox::On).await;
        (on, end_to_end(orders, Sandbox::Off).await)
    };
    let alone_on = median(&mut alone_on);
    let alone_off = median(&mut alone_off);

    println!("plain CPython loop:           {python_ceiling:>12.0} records/s");
    println!("connector alone (pipe, no broker), median of 3:");
    println!("  sandbox on:                 {alone_on:>12.0} records/s");
    println!("  sandbox off:                {alone_off:>12.0} records/s");
    println!("  on / off:                   {:>12.3}", alone_on / alone_off);
    println!("  on / plain CPython:         {:>12.3}   (target >= 0.4)", alone_on / python_ceiling);
    for (name, figures) in [("sandbox on", &on), ("sandbox off", &off)] {
        println!("dev stack, {name} (best of its rounds):");
        println!("  fastest bare consumer:      {:>12.0} records/s", figures.broker_ceiling);
        if let Some(peer) = figures.peer {
            println!("  aiokafka peer script:       {peer:>12.0} records/s");
        }
        println!(
            "  seed program (Start to last): {:>10.0} records/s ({:.1} s)",
            figures.records_per_second, figures.seconds
        );
        println!(
            "  seed / fastest consumer:    {:>12.3}   (target >= 0.8)",
            figures.records_per_second / figures.broker_ceiling
        );
        if let Some(peer) = figures.peer {
            println!(
                "  seed / aiokafka peer:       {:>12.3}   (target >= 2)",
                figures.records_per_second / peer
            );
        }
        println!(
            "  Start to first record in the changelog (median of {}): {:.0} ms",
            START_SAMPLES + 1,
            figures.start_ms
        );
    }
    println!(
        "seed program, sandbox on / off: {:.3}",
        on.records_per_second / off.records_per_second
    );
    println!("Start to first record, sandbox on - off: {:+.0} ms", on.start_ms - off.start_ms);
    println!(
        "cold connector, start to Ready (p50 of 20): sandbox on {ready_on:.1} ms, off {ready_off:.1} ms ({:+.1} ms)",
        ready_on - ready_off
    );
    println!(
        "warm connector, Load of the seed program to Loaded (p50 of 20): sandbox on {load_on:.2} ms, off {load_off:.2} ms ({:+.2} ms)",
        load_on - load_off
    );
}

async fn end_to_end(orders: u64, sandbox: Sandbox) -> EndToEnd {
    let temp = tempfile::tempdir().unwrap();
    let storage = std::env::var("BROKER_STORAGE").unwrap_or_else(|_| "memory".into());
    let mut args = vec!["--broker-storage", storage.as_str()];
    if sandbox == Sandbox::Off {
        args.push("--no-sandbox");
    }
    let stack = DevStack::start_with_args(&temp.path().join("data"), &args);
    println!("dev stack ({sandbox:?}), broker storage: {storage}");
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    // The settings the dev stack's node reads its broker with.
    let kafka = KafkaSettings::new(stack.file("broker")).tuned_for_tansu();
    let partitions = i32::try_from(env_number("PARTITIONS", 1)).unwrap();
    kafka.ensure_topic("orders", partitions).await.unwrap();

    let started = Instant::now();
    support::produce_orders(&kafka, 0..orders, 1000).await;
    println!(
        "produced {orders} orders to {partitions} partition(s) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let team = support::create_orders_team(&pool).await;
    let fetch_wait_ms = kafka
        .options
        .iter()
        .find(|(key, _)| key == "fetch.wait.max.ms")
        .map_or("100".to_owned(), |(_, value)| value.clone());

    // Alternating rounds: a noisy neighbour hits every contender alike.
    let rounds = if sandbox == Sandbox::On { env_number("ROUNDS", 2) } else { 1 };
    let (mut ceiling, mut peer, mut best) = (0f64, None::<f64>, f64::INFINITY);
    let mut first_start_ms = 0.0;
    let mut app = uuid::Uuid::nil();
    for round in 0..rounds {
        for (name, records_per_second) in baselines::drains(&kafka, "orders", orders) {
            println!("  round {round}: {name}: {records_per_second:.0} records/s");
            ceiling = ceiling.max(records_per_second);
        }
        if sandbox == Sandbox::On {
            let expected = baselines::seed_grid(orders, 1000);
            let measured =
                baselines::aiokafka_peer(&kafka, "orders", orders, &fetch_wait_ms, expected)
                    .records_per_second;
            println!("  round {round}: aiokafka peer script: {measured:.0} records/s");
            peer = Some(peer.map_or(measured, |best: f64| best.max(measured)));
        }
        let name = if round == 0 { "orders".to_owned() } else { format!("orders-{round}") };
        app = support::create_app(&pool, team, &name, SEED, None).await;
        let started = Instant::now();
        support::start_app(&pool, app).await;
        let first = wait_for_records(&kafka, app, partitions, 1, Duration::from_secs(60));
        let done = wait_for_records(&kafka, app, partitions, orders, Duration::from_secs(3600));
        let seconds = done.duration_since(started).as_secs_f64();
        println!(
            "  round {round}: seed program, Start to last: {:.0} records/s",
            orders as f64 / seconds
        );
        // Counted only with the grid exactly right: offsets alone would count records a
        // broker skipped (tansu's memory storage may).
        let grid = format!("acme/{name}/product_sum");
        match grid_matches(&stack, &grid, baselines::seed_grid(orders, 1000)) {
            Ok(()) if seconds < best => best = seconds,
            Ok(()) => {}
            Err(wrong) => println!("  round {round}: NOT COUNTED, the grid is not exact: {wrong}"),
        }
        if round == 0 {
            first_start_ms = first.duration_since(started).as_secs_f64() * 1e3;
        }
        if round + 1 < rounds {
            stop_app(&pool, app).await;
        }
    }
    if sandbox == Sandbox::On {
        idle_connector_memory(&stack);
        recovery_after_sigkill(&stack, &pool, app).await;
        stop_app(&pool, app).await;
        many_apps(&pool, &kafka, team, partitions, orders, env_number("APPS", 10) as usize).await;
    }
    // One start is a noisy sample: the median of the first and of more starts, each stopped
    // once its first record is in.
    let mut starts = vec![first_start_ms];
    for index in 0..START_SAMPLES {
        starts.push(start_once(&pool, &kafka, team, partitions, index).await);
    }
    println!(
        "  starts ({sandbox:?}), ms: {:?}",
        starts.iter().map(|ms| ms.round()).collect::<Vec<_>>()
    );
    EndToEnd {
        broker_ceiling: ceiling,
        peer,
        records_per_second: orders as f64 / best,
        seconds: best,
        start_ms: median(&mut starts),
    }
}

/// `count` seed apps started at once on the one node, each reading all `orders`: aggregate
/// records/s, and the share of the slowest against the fastest when the first is done.
async fn many_apps(
    pool: &sqlx::PgPool,
    kafka: &KafkaSettings,
    team: uuid::Uuid,
    partitions: i32,
    orders: u64,
    count: usize,
) {
    if count == 0 {
        return;
    }
    let mut apps = Vec::new();
    for index in 0..count {
        apps.push(support::create_app(pool, team, &format!("many-{index}"), SEED, None).await);
    }
    let started = Instant::now();
    for app in &apps {
        support::start_app(pool, *app).await;
    }
    let consumers: Vec<(BaseConsumer, TopicPartitionList)> =
        apps.iter().map(|app| committed_reader(kafka, *app, partitions)).collect();
    let mut done: Vec<Option<f64>> = vec![None; count];
    let mut when_first_done: Option<Vec<u64>> = None;
    while done.iter().any(Option::is_none) {
        assert!(started.elapsed() < Duration::from_secs(3600), "{count} apps never finished");
        let progress: Vec<u64> =
            consumers.iter().map(|(consumer, list)| committed(consumer, list)).collect();
        for (index, records) in progress.iter().enumerate() {
            if *records >= orders && done[index].is_none() {
                done[index] = Some(started.elapsed().as_secs_f64());
            }
        }
        if when_first_done.is_none() && done.iter().any(Option::is_some) {
            when_first_done = Some(progress);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let done: Vec<f64> = done.into_iter().flatten().collect();
    let last = done.iter().copied().fold(0.0, f64::max);
    let first = done.iter().copied().fold(f64::INFINITY, f64::min);
    let progress = when_first_done.unwrap();
    let (slowest, fastest) = (progress.iter().min().unwrap(), progress.iter().max().unwrap());
    println!(
        "  {count} seed apps on one node, each reading the {orders} orders: {:.0} records/s in all ({:.1} s to the last; each app {:.0}-{:.0} records/s)",
        (count as u64 * orders) as f64 / last,
        last,
        orders as f64 / last,
        orders as f64 / first,
    );
    println!(
        "  fairness: when the first app was done, the slowest had read {:.2} of what the fastest had",
        *slowest as f64 / *fastest as f64
    );
    for app in apps {
        stop_app(pool, app).await;
    }
}

/// A consumer that reads the app's committed input offsets (it joins no group).
fn committed_reader(
    kafka: &KafkaSettings,
    app: uuid::Uuid,
    partitions: i32,
) -> (BaseConsumer, TopicPartitionList) {
    let mut config = kafka.consumer_config();
    config.set("group.id", format!("aerogrid-app-{app}")).set("enable.auto.commit", "false");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition("orders", partition);
    }
    (config.create().unwrap(), list)
}

/// The records the app has committed over all partitions (0 when the broker does not say).
fn committed(consumer: &BaseConsumer, list: &TopicPartitionList) -> u64 {
    let Ok(committed) = consumer.committed_offsets(list.clone(), Duration::from_secs(5)) else {
        return 0;
    };
    let done: i64 = committed
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum();
    u64::try_from(done).unwrap_or(0)
}

async fn drains_only(orders: u64) {
    let temp = tempfile::tempdir().unwrap();
    let stack =
        DevStack::start_with_args(&temp.path().join("data"), &["--broker-storage", "memory"]);
    let kafka = KafkaSettings::new(stack.file("broker")).tuned_for_tansu();
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..orders, 1000).await;
    for (name, records_per_second) in baselines::drains(&kafka, "orders", orders) {
        println!("{name}: {records_per_second:.0} records/s");
    }
}

async fn stop_app(pool: &sqlx::PgPool, app: uuid::Uuid) {
    sqlx::query("UPDATE apps SET desired_state = 'stopped' WHERE id = $1")
        .bind(app)
        .execute(pool)
        .await
        .unwrap();
}

/// Extra starts measured per dev stack.
const START_SAMPLES: usize = 10;

/// Starts one more seed app and returns the milliseconds to its first record; then stops it.
async fn start_once(
    pool: &sqlx::PgPool,
    kafka: &KafkaSettings,
    team: uuid::Uuid,
    partitions: i32,
    index: usize,
) -> f64 {
    let app = support::create_app(pool, team, &format!("start-{index}"), SEED, None).await;
    // Let the warm pool refill after the previous start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    support::start_app(pool, app).await;
    let first = wait_for_records(kafka, app, partitions, 1, Duration::from_secs(60));
    stop_app(pool, app).await;
    first.duration_since(started).as_secs_f64() * 1e3
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A connector started without the warm pool: process start to its Ready answer, in ms (p50).
fn cold_start_to_ready(rounds: usize) -> (f64, f64) {
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (index, sandbox) in [Sandbox::On, Sandbox::Off].into_iter().enumerate() {
            let started = Instant::now();
            // Returns once the connector said Ready.
            let connector = ConnectorProcess::start_with(sandbox.connector_args());
            times[index].push(started.elapsed().as_secs_f64() * 1e3);
            drop(connector);
        }
    }
    let [mut on, mut off] = times;
    (median(&mut on), median(&mut off))
}

/// A warm connector's answer time to `Load` (what Start waits for of the connector), in ms (p50
/// over `rounds` processes, each with the node's default limits).
fn load_latency(sandbox: Sandbox, rounds: usize) -> f64 {
    use aerogrid_proto::runtime::v1::Load;

    let mut times = Vec::new();
    for _ in 0..rounds {
        let mut connector = ConnectorProcess::start_with(sandbox.connector_args());
        let limits = Load {
            memory_limit_bytes: Some(512 << 20),
            stall_seconds: Some(5.0),
            ..Load::default()
        };
        let started = Instant::now();
        let answer = connector.load_with(SEED, limits);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(
            matches!(answer, aerogrid_proto::runtime::v1::connector_message::Kind::Loaded(_)),
            "the seed loads: {answer:?}"
        );
    }
    median(&mut times)
}

impl Sandbox {
    fn connector_args(self) -> &'static [&'static str] {
        match self {
            Sandbox::On => &[],
            Sandbox::Off => &["--no-sandbox"],
        }
    }
}

fn connector_command(sandbox: Sandbox) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"));
    command.arg("connector").args(sandbox.connector_args());
    command
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
    // The node counts the restart before it marks the app starting: "running" counts only once
    // "starting" was seen after the kill.
    let mut restarting = false;
    loop {
        let (state, count) = restarts().await;
        restarting |= count > before && state != "running";
        if restarting && state == "running" {
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

/// The seed program, or the file SOURCE names (to see what each part of the seed costs).
fn connector_source() -> String {
    std::env::var_os("SOURCE").map_or_else(
        || SEED.to_owned(),
        |path| std::fs::read_to_string(path).expect("SOURCE names a file"),
    )
}

/// A connector process fed the orders over its pipe, as the node does (two batches in flight),
/// from bytes already in memory.
fn connector_alone(orders: u64, sandbox: Sandbox) -> f64 {
    use std::io::{Read, Write};

    use aerogrid_proto::runtime::v1::{
        Batch, ConnectorMessage, Load, NodeMessage, RawMessage, node_message,
    };
    use prost::Message as _;

    let mut child = connector_command(sandbox)
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
            source: connector_source(),
            filename: "main.py".into(),
            ..Load::default()
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
            node_message::Kind::Batch(Batch {
                topic: "orders".into(),
                messages,
                writer_schemas: vec![],
            })
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

/// Whether `aerogrid snapshot GRID` has the seed's (rows, total units sold), within a few
/// seconds (the gateway reads the changelog behind the committed offsets); else what it has.
fn grid_matches(stack: &DevStack, grid: &str, expected: (u64, u64)) -> Result<(), String> {
    let token = stack.file("admin-token");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = stack.snapshot(grid, &token);
        let found =
            serde_json::from_slice::<serde_json::Value>(&output.stdout).ok().and_then(|json| {
                let rows = json["rows"].as_object()?;
                let units: Option<u64> = rows.values().map(|row| row["units_sold"].as_u64()).sum();
                Some((rows.len() as u64, units?))
            });
        if found == Some(expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{found:?} (rows, units sold), expected {expected:?}; {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the app's committed input offsets (written right after each changelog write) until
/// they add up to `records` over the topic's partitions (its offsets start at 0).
fn wait_for_records(
    kafka: &KafkaSettings,
    app: uuid::Uuid,
    partitions: i32,
    records: u64,
    timeout: Duration,
) -> Instant {
    let (consumer, list) = committed_reader(kafka, app, partitions);
    let started = Instant::now();
    loop {
        if committed(&consumer, &list) >= records {
            return Instant::now();
        }
        assert!(started.elapsed() < timeout, "{records} records not read within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
