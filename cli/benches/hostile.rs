//! Hostile input, measured (not a timed test): for each attack, the server's and the runtime
//! node's peak resident memory and CPU during a window with the attack beside the same window
//! without it, just before, and a well-behaved neighbour app's records/s in both windows.
//! Targets (issue 18): no attack raises a peak by more than 64 MiB over its baseline, and the
//! neighbour keeps at least 80% of its throughput.
//!
//! `aerogrid dev --no-runtime` runs the server (with PostgreSQL and the broker, processes of
//! their own); one `aerogrid runtime` runs the apps. `cargo bench -p aerogrid-cli --bench
//! hostile` (WINDOW_SECONDS=... to change the windows, 5 by default; ORDERS=... the neighbour's input, 4,000,000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{GridRef, SubscribeRequest, grid_service_client::GridServiceClient};
use support::DevStack;
use tokio::io::AsyncWriteExt;

fn neighbour() -> String {
    support::orders_program(
        "neighbour",
        "orders",
        r#"
product_sum = app.Grid('product_sum', columns=['units_sold'], default=lambda: {'units_sold': 0})

@app.stream(orders_topic)
async def sum_orders(orders):
    async for order_id, order in orders.items():
        # A little work of its own, so it stays busy through every window.
        checksum = sum(range(3000))
        units_sold = product_sum[order.product]['units_sold'] + order.quantity
        product_sum[order.product] = {'units_sold': units_sold}
"#,
    )
}

fn wide() -> String {
    support::orders_program(
        "wide",
        "wide-input",
        r#"
wide = app.Grid('wide', columns=['blob'])

@app.stream(orders_topic)
async def fill(orders):
    async for order_id, order in orders.items():
        wide[order_id] = {'blob': order_id * 20000}
"#,
    )
}

const NOISY: &str = r#"
import os
import sys
import aerogrid

app = aerogrid.App('noisy', broker=BROKER_URI)
ticks = app.Grid('ticks', columns=['n'])

@app.timer(0.001)
def shout():
    for _ in range(50):
        print('y' * 100000)
        sys.stderr.write('z' * 100000)
    os.write(2, b'x' * 100000)
"#;

/// A process's resident memory now, and its CPU time so far.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 =
        [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code, reason = "sysconf has no safe wrapper in std")]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (rss, ticks / per_second)
}

/// What one window measured.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    server_peak: u64,
    node_peak: u64,
    server_cpu: f64,
    node_cpu: f64,
    /// This process's: the attacking clients share the machine's cores with the rest.
    attacker_cpu: f64,
    neighbour_rate: f64,
}

async fn records_in(pool: &sqlx::PgPool, app: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT records_in FROM app_status WHERE app_id = $1")
        .bind(app)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Runs `attack` (if any) for `seconds` while sampling both processes every 20 ms.
async fn window(
    pids: (u32, u32),
    pool: &sqlx::PgPool,
    neighbour: uuid::Uuid,
    seconds: f64,
    attack: Option<tokio::task::JoinHandle<()>>,
) -> Window {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut server_peak, mut node_peak) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                server_peak = server_peak.max(usage(pids.0).0);
                node_peak = node_peak.max(usage(pids.1).0);
                std::thread::sleep(Duration::from_millis(20));
            }
            (server_peak, node_peak)
        })
    };
    let (cpu_server, cpu_node) = (usage(pids.0).1, usage(pids.1).1);
    let cpu_attacker = usage(std::process::id()).1;
    let (records_before, started) = (records_in(pool, neighbour).await, Instant::now());
    if std::env::var_os("SHOW_SAMPLES").is_some() {
        let mut samples = Vec::new();
        let mut server = Vec::new();
        while started.elapsed().as_secs_f64() < seconds {
            tokio::time::sleep(Duration::from_millis(250)).await;
            samples.push(records_in(pool, neighbour).await - records_before);
            server.push(usage(pids.0).0 >> 20);
        }
        eprintln!("  neighbour records every 250 ms: {samples:?}; server MiB: {server:?}");
    } else {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
    let records = records_in(pool, neighbour).await - records_before;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(attack) = attack {
        attack.abort();
        let _ = attack.await;
    }
    stop.store(true, Ordering::Relaxed);
    let (server_peak, node_peak) = sampler.join().unwrap();
    Window {
        server_peak,
        node_peak,
        server_cpu: usage(pids.0).1 - cpu_server,
        node_cpu: usage(pids.1).1 - cpu_node,
        attacker_cpu: usage(std::process::id()).1 - cpu_attacker,
        neighbour_rate: records as f64 / elapsed,
    }
}

fn grid_ref(app: &str, grid: &str) -> Option<GridRef> {
    Some(GridRef { team: "acme".into(), app: app.into(), grid: grid.into() })
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn grpc(url: &str) -> GridServiceClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    GridServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

/// A Subscribe request as gRPC-web sends it (encoded once: the attacker's cost is not the
/// server's).
fn grpc_web_body(request: &SubscribeRequest) -> prost::bytes::Bytes {
    let encoded = prost::Message::encode_to_vec(request);
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&encoded);
    body.into()
}

/// The same gRPC-web Subscribe, `at_once` at a time, again and again; each answer's first bytes
/// read.
fn subscribe_flood(
    url: String,
    token: String,
    body: prost::bytes::Bytes,
    at_once: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..at_once {
            let (url, token, body) = (url.clone(), token.clone(), body.clone());
            tasks.spawn(async move {
                let client = support::http();
                loop {
                    let sent = client
                        .post(format!("{url}/aerogrid.v1.GridService/Subscribe"))
                        .header("content-type", "application/grpc-web+proto")
                        .header("x-grpc-web", "1")
                        .bearer_auth(&token)
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(mut response) = sent {
                        let _ = response.chunk().await;
                    }
                }
            });
        }
        tasks.join_all().await;
    })
}

/// Subscribe requests naming one column 300,000 times (3.6 MB), four at a time.
fn repeated_columns(url: String, token: String) -> tokio::task::JoinHandle<()> {
    let request = SubscribeRequest {
        grid: grid_ref("neighbour", "product_sum"),
        columns: vec!["units_sold".to_owned(); 300_000],
        ..Default::default()
    };
    subscribe_flood(url, token, grpc_web_body(&request), 4)
}

/// Subscribe requests naming 300,000 row keys, four at a time.
fn many_row_keys(url: String, token: String) -> tokio::task::JoinHandle<()> {
    let request = SubscribeRequest {
        grid: grid_ref("neighbour", "product_sum"),
        row_keys: (0..300_000).map(|index| format!("k{index}")).collect(),
        ..Default::default()
    };
    subscribe_flood(url, token, grpc_web_body(&request), 4)
}

/// 200 subscriptions to a 3 MB grid that never read.
fn unread_subscribers(url: String, token: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = grpc(&url).await;
        let mut held = Vec::new();
        for _ in 0..200 {
            let request = SubscribeRequest { grid: grid_ref("wide", "wide"), ..Default::default() };
            if let Ok(response) = client.subscribe(authorized(request, &token)).await {
                held.push(response.into_inner());
            }
        }
        std::future::pending::<()>().await;
        drop(held);
    })
}

/// 1,000 connections that send a request head a few bytes at a time.
fn slowloris(address: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..1000 {
            if let Ok(stream) = tokio::net::TcpStream::connect(&address).await {
                streams.push(stream);
            }
        }
        loop {
            for stream in &mut streams {
                let _ = stream.write_all(b"X-a: b\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Wrong passwords, 40 at a time.
fn sign_in_flood(url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..40 {
            let url = url.clone();
            tasks.spawn(async move {
                let client = support::http();
                loop {
                    let _ = client
                        .post(format!("{url}/api/v1/auth/sign-in"))
                        .json(&serde_json::json!({ "name": format!("user{index}"), "password": "wrong" }))
                        .send()
                        .await;
                }
            });
        }
        tasks.join_all().await;
    })
}

/// Programs of 250 KiB to check, eight at a time.
fn validation_flood(url: String, token: String) -> tokio::task::JoinHandle<()> {
    let mut code = String::from("import aerogrid\n");
    let mut index = 0;
    while code.len() < 250 * 1024 {
        code.push_str(&format!("value_{index} = [{index}, ({index} + 1) * 2, 'text {index}']\n"));
        index += 1;
    }
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (url, token, code) = (url.clone(), token.clone(), code.clone());
            tasks.spawn(async move {
                let client = support::http();
                loop {
                    let _ = client
                        .post(format!("{url}/api/v1/validate"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "code": code }))
                        .send()
                        .await;
                }
            });
        }
        tasks.join_all().await;
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn report(name: &str, base: Window, attacked: Window) -> bool {
    let server_grew = attacked.server_peak.saturating_sub(base.server_peak);
    let node_grew = attacked.node_peak.saturating_sub(base.node_peak);
    let ratio = attacked.neighbour_rate / base.neighbour_rate.max(1.0);
    let met = server_grew <= 64 << 20 && node_grew <= 64 << 20 && ratio >= 0.8;
    println!(
        "{name:<20} server {:>4.0} -> {:>4.0} MiB ({:>+4.0}), cpu {:>3.1} -> {:>3.1} s | node {:>4.0} -> {:>4.0} MiB ({:>+4.0}), cpu {:>3.1} -> {:>3.1} s | attacker cpu {:>3.1} s | neighbour {:>6.0} -> {:>6.0} rec/s ({:.2}) {}",
        mib(base.server_peak),
        mib(attacked.server_peak),
        mib(server_grew),
        base.server_cpu,
        attacked.server_cpu,
        mib(base.node_peak),
        mib(attacked.node_peak),
        mib(node_grew),
        base.node_cpu,
        attacked.node_cpu,
        attacked.attacker_cpu,
        base.neighbour_rate,
        attacked.neighbour_rate,
        ratio,
        if met { "ok" } else { "MISSED" }
    );
    met
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds: f64 =
        std::env::var("WINDOW_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(5.0);
    let orders: u64 =
        std::env::var("ORDERS").ok().and_then(|text| text.parse().ok()).unwrap_or(4_000_000);
    let temp = tempfile::tempdir().unwrap();
    // The memory engine: the SQLite one serves a consumer in bursts seconds apart.
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &["--no-runtime", "--broker-storage", "memory"],
    );
    let database_url = stack.file("database-url");
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    for topic in ["orders", "wide-input"] {
        kafka.ensure_topic(topic, 1).await.unwrap();
    }
    let producing = Instant::now();
    support::produce_orders(&kafka, 0..orders, 17).await;
    println!("produced {orders} orders in {:.0} s", producing.elapsed().as_secs_f64());
    let node = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["runtime", "--connector-pool", "2"])
        .env("DATABASE_URL", &database_url)
        .env("KAFKA_BROKERS", stack.file("broker"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(temp.path().join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let pids = (stack.pid(), node.id());
    let token = stack.file("admin-token");
    let url = stack.url.clone();
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_owned();

    let team = support::create_orders_team(&pool).await;
    support::grant_topic(&pool, team, "wide-input").await;
    let wide = support::create_app(&pool, team, "wide", &wide(), None).await;
    support::start_app(&pool, wide).await;
    {
        // 20 rows of ~150 KB for the unread subscribers.
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = kafka.client_config().create().unwrap();
        for index in 0..20 {
            let key = format!("order-{index}");
            let record = FutureRecord::to("wide-input")
                .key(&key)
                .payload(r#"{"product": "p", "quantity": 1}"#);
            producer.send(record, Duration::from_secs(30)).await.unwrap();
        }
    }
    let neighbour = support::create_app(&pool, team, "neighbour", &neighbour(), None).await;
    support::start_app(&pool, neighbour).await;
    while records_in(&pool, neighbour).await == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the start: the first window measures the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let noisy = support::create_app(&pool, team, "noisy", NOISY, None).await;
    type Attack = Box<dyn Fn() -> tokio::task::JoinHandle<()>>;
    let attacks: Vec<(&str, Attack)> = vec![
        (
            "300,000 columns",
            Box::new({
                let (url, token) = (url.clone(), token.clone());
                move || repeated_columns(url.clone(), token.clone())
            }),
        ),
        (
            "300,000 row keys",
            Box::new({
                let (url, token) = (url.clone(), token.clone());
                move || many_row_keys(url.clone(), token.clone())
            }),
        ),
        (
            "200 unread streams",
            Box::new({
                let (url, token) = (url.clone(), token.clone());
                move || unread_subscribers(url.clone(), token.clone())
            }),
        ),
        (
            "1,000 slow heads",
            Box::new({
                let address = address.clone();
                move || slowloris(address.clone())
            }),
        ),
        (
            "sign-in flood",
            Box::new({
                let url = url.clone();
                move || sign_in_flood(url.clone())
            }),
        ),
        (
            "250 KiB checks",
            Box::new({
                let (url, token) = (url.clone(), token.clone());
                move || validation_flood(url.clone(), token.clone())
            }),
        ),
    ];
    println!("each window {seconds} s; peaks of resident memory, CPU in the window:");
    let mut all_met = true;
    // ATTACKS=a,b: only the attacks whose names start so (and the noisy app only if named).
    let chosen: Option<Vec<String>> =
        std::env::var("ATTACKS").ok().map(|names| names.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| {
        chosen
            .as_ref()
            .is_none_or(|chosen| chosen.iter().any(|prefix| name.starts_with(prefix.as_str())))
    };
    for (name, attack) in attacks.iter().filter(|(name, _)| wanted(name)) {
        let base = window(pids, &pool, neighbour, seconds, None).await;
        let attacked = window(pids, &pool, neighbour, seconds, Some(attack())).await;
        all_met &= report(name, base, attacked);
    }
    // An app that writes 10 MB of log lines per timer tick, and to its stderr, beside the
    // neighbour on the same node.
    if wanted("noisy app") {
        let base = window(pids, &pool, neighbour, seconds, None).await;
        support::start_app(&pool, noisy).await;
        let attacked = window(pids, &pool, neighbour, seconds, None).await;
        sqlx::query("UPDATE apps SET desired_state = 'stopped' WHERE id = $1")
            .bind(noisy)
            .execute(&pool)
            .await
            .unwrap();
        all_met &= report("noisy app (logs)", base, attacked);
        let (lines, bytes): (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(octet_length(message)), 0)::bigint FROM app_logs WHERE app_id = $1",
        )
        .bind(noisy)
        .fetch_one(&pool)
        .await
        .unwrap();
        println!("  the noisy app's log: {lines} lines, {:.1} MiB kept", mib(bytes as u64));
    }
    if records_in(&pool, neighbour).await >= orders as i64 {
        println!(
            "(the neighbour read all {orders} orders before the end: rates after that are 0; raise ORDERS)"
        );
    }
    println!(
        "targets (+64 MiB at most, neighbour at 80% or more): {}",
        if all_met { "all met" } else { "MISSED" }
    );
    let mut node = node;
    let _ = node.kill();
    let _ = node.wait();
}
