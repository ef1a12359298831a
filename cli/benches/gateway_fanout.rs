//! Grid gateway latency and fan-out, printed (not a timed test).
//!
//! The seed program runs on `aerogrid dev` (memory broker); a separate `aerogrid server` on the
//! same database and broker is the gateway under measurement, so its CPU and memory are its own.
//! Orders are produced at a steady rate; every order's send time is kept under the total it
//! makes for its product, so a subscriber that sees `units_sold` reach that total knows how long
//! the order took to get to it: producer -> broker -> runtime -> changelog -> gateway -> client.
//!
//! Figures, in one run:
//! - a bare rdkafka consumer of the orders topic: produce-to-consume latency (the broker's share);
//! - one native subscriber alone: p50/p99, beside one subscriber of the plain script a developer
//!   would write instead (`peer/live_aiokafka.py`: aiokafka, the seed's dict grid, grpcio
//!   fan-out), measured on the same orders at the same time;
//! - 1,000 native subscribers on the grid: p50/p99 over all, server CPU and memory;
//! - 10,000 idle subscribers: server memory per subscriber;
//! - one gRPC-web subscriber while orders come at 5,000/s: cell updates/s, latency.
//!
//! FETCH_WAIT_MS=n sets the broker's fetch wait of every consumer (default: `aerogrid dev`'s);
//! GATEWAY_FETCH_WAIT_MS=n that of the gateway's changelog consumer alone; NO_RELAY=1 starts the
//! node without its changelog relay (every change then reaches the gateway through the broker).
//! `cargo bench -p aerogrid-cli --bench gateway_fanout` (RATE=orders/s, PHASE_SECONDS,
//! SUBSCRIBERS, IDLE_SUBSCRIBERS, WEB_RATE to change the defaults 1000, 10, 1000, 10000, 5000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{
    Changes, GridRef, SubscribeRequest, SubscribeResponse, grid_service_client::GridServiceClient,
    row_change, subscribe_response, value,
};
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};
use support::{DevStack, ServerProcess};
use tonic::{codegen::http::uri::PathAndQuery, transport::Channel};

const SEED: &str = include_str!("../../connector/python/tests/seed.py");
const PRODUCTS: u64 = 17;
/// Streams per HTTP/2 connection (servers allow 100 or more at once by default).
const STREAMS_PER_CONNECTION: usize = 100;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|text| text.parse().ok()).unwrap_or(default)
}

fn main() {
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

/// When each order was sent, by order number and by the total it makes for its product.
#[derive(Default)]
struct Sent {
    by_order: HashMap<u64, Instant>,
    by_total: HashMap<(String, i64), Instant>,
}

impl Sent {
    /// How long the orders behind `changes` took to reach a subscriber at `received`.
    fn latencies(&self, changes: Changes, received: Instant, latencies: &mut Vec<Duration>) {
        for row in changes.rows {
            let Some(row_change::Change::Updated(cells)) = row.change else { continue };
            let Some(value::Kind::Int(total)) = cells.values[0].kind else { continue };
            if let Some(at) = self.by_total.get(&(row.key, total)) {
                latencies.push(received.duration_since(*at));
            }
        }
    }
}

/// Produces orders at a steady rate from a thread; orders are numbered on from `next`.
struct OrderFeed {
    kafka: KafkaSettings,
    sent: Arc<RwLock<Sent>>,
    next: u64,
    totals: HashMap<String, i64>,
}

impl OrderFeed {
    /// Produces `rate` orders a second for `seconds` (batched for up to 5 ms, as producers do:
    /// one request per order would keep the dev broker busy with requests alone).
    /// Orders of a warm-up are not timed.
    fn produce(&mut self, rate: u64, seconds: u64) {
        self.produce_timed(rate, seconds, true);
    }

    fn produce_timed(&mut self, rate: u64, seconds: u64, timed: bool) {
        let producer: BaseProducer =
            self.kafka.client_config().set("linger.ms", "5").create().unwrap();
        let started = Instant::now();
        let count = rate * seconds;
        for index in 0..count {
            let due = started + Duration::from_secs_f64(index as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let n = self.next;
            self.next += 1;
            let product = format!("p{}", n % PRODUCTS);
            let quantity = (n % 5 + 1) as i64;
            let total = self.totals.entry(product.clone()).or_insert(0);
            *total += quantity;
            let payload = format!(r#"{{"product": "{product}", "quantity": {quantity}}}"#);
            let key = format!("order-{n}");
            let now = Instant::now();
            if timed {
                let mut sent = self.sent.write().unwrap();
                sent.by_order.insert(n, now);
                sent.by_total.insert((product, *total), now);
            }
            producer.send(BaseRecord::to("orders").key(&key).payload(&payload)).unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}

async fn run() {
    let rate = setting("RATE", 1000);
    let seconds = setting("PHASE_SECONDS", 10);
    let subscribers = setting("SUBSCRIBERS", 1000) as usize;
    let idle_subscribers = setting("IDLE_SUBSCRIBERS", 10_000) as usize;

    let temp = tempfile::tempdir().unwrap();
    // FETCH_WAIT_MS: the broker's fetch wait for every consumer (dev's own setting by default).
    let fetch_wait_option =
        std::env::var("FETCH_WAIT_MS").ok().map(|millis| format!("fetch.wait.max.ms={millis}"));
    let mut dev_args = vec!["--broker-storage", "memory"];
    let relay = std::env::var_os("NO_RELAY").is_none();
    if !relay {
        dev_args.push("--no-relay");
    }
    if let Some(option) = &fetch_wait_option {
        dev_args.extend(["--kafka-option", option.as_str()]);
    }
    let stack = DevStack::start_with_args(&temp.path().join("data"), &dev_args);
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    // The settings `aerogrid dev` gives its own broker, for the bare consumer and the server.
    let mut kafka = KafkaSettings::new(stack.file("broker"));
    if let Some((key, value)) =
        fetch_wait_option.as_deref().and_then(|option| option.split_once('='))
    {
        kafka.options.push((key.to_owned(), value.to_owned()));
    }
    let kafka = kafka.tuned_for_tansu();
    let fetch_wait = kafka.consumer_config().get("fetch.wait.max.ms").unwrap().to_owned();
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::create_running_app(&pool, SEED).await;
    // GATEWAY_FETCH_WAIT_MS: the gateway's alone (its changelog hop), the others' unchanged.
    let gateway_fetch_wait =
        std::env::var("GATEWAY_FETCH_WAIT_MS").unwrap_or_else(|_| fetch_wait.clone());
    let server = ServerProcess::start(
        &stack,
        "gateway",
        &["--kafka-option", &format!("fetch.wait.max.ms={gateway_fetch_wait}")],
    );
    let url = format!("http://{}", server.addr);
    let token = stack.file("admin-token");
    println!(
        "seed app on a memory broker (fetch.wait.max.ms={fetch_wait}, the gateway's {gateway_fetch_wait}), changelog relay {}; {rate} orders/s, {seconds} s per phase",
        if relay { "on" } else { "off" }
    );

    let sent = Arc::new(RwLock::new(Sent::default()));
    let mut feed =
        OrderFeed { kafka: kafka.clone(), sent: sent.clone(), next: 0, totals: HashMap::new() };
    // Every product once, so the grid has its rows before anyone measures.
    feed = produce(feed, PRODUCTS, 1).await;
    let channels = connect(&url, 1).await;
    wait_for_rows(&channels[0], &token, PRODUCTS as usize).await;

    // The broker's own share (measured through every phase), and one subscriber alone.
    let bare_stop = Arc::new(AtomicBool::new(false));
    let bare = {
        let (kafka, sent, stop, from) = (kafka.clone(), sent.clone(), bare_stop.clone(), feed.next);
        std::thread::spawn(move || bare_consumer(&kafka, from, &sent, &stop))
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let alone = subscribe_all(&channels, 1, &token, &stopped).await;
    let peer = LivePeer::start(&kafka, &fetch_wait);
    let peer_subscriber = peer.subscribe(&stopped).await;
    // Two seconds untimed first: every client connected and fetching.
    feed = tokio::task::spawn_blocking(move || {
        feed.produce_timed(rate, 2, false);
        feed
    })
    .await
    .unwrap();
    feed = produce(feed, rate, seconds).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    let alone = collect(alone, &sent).await;
    let peer_alone = peer_latencies(peer_subscriber.await.unwrap(), &sent);
    drop(peer);
    let ratio = quantile(&alone, 0.99) / quantile(&peer_alone, 0.99);
    println!("one native subscriber, produce to update:   {}", summarize(alone));
    println!(
        "the plain aiokafka + grpcio script, one subscriber, same orders: {}",
        summarize(peer_alone)
    );
    println!("  AeroGrid's p99 / the script's: {ratio:.2} (target <= 1)");

    let many_began = Instant::now();
    // Many subscribers at once.
    let channels = connect(&url, subscribers.div_ceil(STREAMS_PER_CONNECTION)).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let many = subscribe_all(&channels, subscribers, &token, &stopped).await;
    let cpu_before = cpu_seconds(server.pid());
    let own_cpu_before = cpu_seconds(std::process::id());
    let machine_before = machine_ticks();
    let wall = Instant::now();
    feed = produce(feed, rate, seconds).await;
    let cpu = (cpu_seconds(server.pid()) - cpu_before) / wall.elapsed().as_secs_f64();
    let own_cpu = (cpu_seconds(std::process::id()) - own_cpu_before) / wall.elapsed().as_secs_f64();
    let machine_after = machine_ticks();
    let machine_busy = 1.0
        - (machine_after.1 - machine_before.1) as f64 / (machine_after.0 - machine_before.0) as f64;
    let rss = rss_kib(server.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    let many = summarize(collect(many, &sent).await);
    bare_stop.store(true, Ordering::Relaxed);
    let bare: Vec<(Instant, Duration)> = bare.join().unwrap();
    let (during_many, during_alone): (Vec<_>, Vec<_>) =
        bare.into_iter().partition(|(at, _)| *at >= many_began);
    let latencies = |samples: Vec<(Instant, Duration)>| {
        samples.into_iter().map(|(_, latency)| latency).collect()
    };
    println!("bare rdkafka consumer, produce to consume:");
    println!("  while one subscriber ran:       {}", summarize(latencies(during_alone)));
    println!("  while {subscribers} subscribers ran: {}", summarize(latencies(during_many)));
    println!("{subscribers} native subscribers, produce to update: {many}");
    println!(
        "  server CPU {:.0}% of one core, RSS {:.1} MiB; this benchmark's clients: {:.0}% of one core; all cores busy {:.0}% of the time",
        cpu * 100.0,
        rss as f64 / 1024.0,
        own_cpu * 100.0,
        machine_busy * 100.0
    );
    drop(channels);

    idle_memory(&server, &url, &token, idle_subscribers).await;
    grpc_web_updates(&url, &token, feed, setting("WEB_RATE", 5000), seconds).await;
}

/// Runs the blocking producer on a thread and gives the feed back.
async fn produce(mut feed: OrderFeed, rate: u64, seconds: u64) -> OrderFeed {
    tokio::task::spawn_blocking(move || {
        feed.produce(rate, seconds);
        feed
    })
    .await
    .unwrap()
}

async fn connect(url: &str, count: usize) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..count {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    channels
}

fn request(token: &str) -> tonic::Request<SubscribeRequest> {
    let mut request = tonic::Request::new(SubscribeRequest {
        grid: Some(GridRef {
            team: "acme".into(),
            app: "orders".into(),
            grid: "product_sum".into(),
        }),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn wait_for_rows(channel: &Channel, token: &str, rows: usize) {
    let client = GridServiceClient::new(channel.clone());
    let started = Instant::now();
    loop {
        let mut stream = client.clone().subscribe(request(token)).await.unwrap().into_inner();
        if let Some(SubscribeResponse {
            event: Some(subscribe_response::Event::Snapshot(snapshot)),
        }) = stream.message().await.unwrap()
            && snapshot.rows.len() >= rows
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the grid never got {rows} rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What each subscriber received: every message's bytes with when it arrived.
type Subscribers = Vec<tokio::task::JoinHandle<Vec<(Instant, Vec<u8>)>>>;

/// `count` subscribers spread over `channels`, each keeping what it receives until `stop`;
/// returns once all have their snapshot.
///
/// A subscriber only timestamps a message and keeps its bytes; `collect` decodes them after the
/// phase. The measuring clients run on the same two cores as the server (1,000 real subscribers
/// would be 1,000 machines), so they should take as little of them as they can.
async fn subscribe_all(
    channels: &[Channel],
    count: usize,
    token: &str,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Subscribers {
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for index in 0..count {
        let mut client = tonic::client::Grpc::new(channels[index % channels.len()].clone());
        let (mut stopped, token) = (stopped.clone(), token.to_owned());
        let (ready_sender, ready_receiver) = tokio::sync::oneshot::channel();
        ready.push(ready_receiver);
        tasks.push(tokio::spawn(async move {
            client.ready().await.unwrap();
            let path = PathAndQuery::from_static("/aerogrid.v1.GridService/Subscribe");
            let mut stream = client
                .server_streaming(request(&token), path, KeepBytes)
                .await
                .unwrap()
                .into_inner();
            let _snapshot = stream.message().await.unwrap();
            let _ = ready_sender.send(());
            keep_received(stream, &mut stopped).await
        }));
    }
    for receiver in ready {
        receiver.await.unwrap();
    }
    tasks
}

/// Every subscriber's produce-to-update latencies, from what it received.
async fn collect(tasks: Subscribers, sent: &RwLock<Sent>) -> Vec<Duration> {
    let mut all = Vec::new();
    let mut snapshots = 0;
    for task in tasks {
        let received = task.await.unwrap();
        let sent = sent.read().unwrap();
        for (at, bytes) in received {
            match SubscribeResponse::decode(bytes.as_slice()).unwrap().event {
                Some(subscribe_response::Event::Changes(changes)) => {
                    sent.latencies(changes, at, &mut all);
                }
                Some(subscribe_response::Event::Snapshot(_)) => snapshots += 1,
                _ => {}
            }
        }
    }
    if snapshots > 0 {
        println!("  ({snapshots} fresh snapshots after the first, over all subscribers)");
    }
    all
}

/// The subscribers' codec: requests encoded as usual, responses kept as their bytes.
struct KeepBytes;

impl tonic::codec::Codec for KeepBytes {
    type Encode = SubscribeRequest;
    type Decode = Vec<u8>;
    type Encoder = tonic_prost::ProstEncoder<SubscribeRequest>;
    type Decoder = KeepBytes;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeepBytes
    }
}

impl tonic::codec::Decoder for KeepBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        source: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf as _;
        let mut message = vec![0; source.remaining()];
        source.copy_to_slice(&mut message);
        Ok(Some(message))
    }
}

/// Consumes the orders topic from order `from` on, timing each order's arrival (with when it
/// arrived, to tell the phases apart).
fn bare_consumer(
    kafka: &KafkaSettings,
    from: u64,
    sent: &RwLock<Sent>,
    stop: &AtomicBool,
) -> Vec<(Instant, Duration)> {
    let consumer: BaseConsumer = kafka
        .consumer_config()
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("orders", 0, Offset::Offset(from as i64)).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        let received = Instant::now();
        let order = message
            .key()
            .and_then(|key| std::str::from_utf8(key).ok())
            .and_then(|key| key.strip_prefix("order-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(at) = order.and_then(|n| sent.read().unwrap().by_order.get(&n).copied()) {
            latencies.push((received, received.duration_since(at)));
        }
    }
    latencies
}

/// The `q` quantile of `latencies`, in milliseconds (NaN without samples).
fn quantile(latencies: &[Duration], q: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3,
    }
}

fn summarize(latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
        latencies.len()
    )
}

/// The plain script a developer would write instead (`peer/live_aiokafka.py`), running.
struct LivePeer {
    child: std::process::Child,
    port: u16,
}

impl LivePeer {
    fn start(kafka: &KafkaSettings, fetch_wait_ms: &str) -> Self {
        use std::io::BufRead as _;
        let python = support::bench_peer_python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/live_aiokafka.py");
        let mut child = std::process::Command::new(&python)
            .args([script, &kafka.brokers, "orders", fetch_wait_ms])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "{}: {error}: run `cargo xtask setup` (it installs the peer's Python)",
                    python.display()
                )
            });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the live peer did not start: {line:?}"));
        Self { child, port: ready["port"].as_u64().unwrap() as u16 }
    }

    /// One subscriber, keeping what it receives (its first message, every row, left out) until
    /// `stopped`; returns once it has that first message.
    async fn subscribe(
        &self,
        stopped: &tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Vec<(Instant, Vec<u8>)>> {
        let channel = connect(&format!("http://127.0.0.1:{}", self.port), 1).await.remove(0);
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let path = PathAndQuery::from_static("/peer.Grid/Subscribe");
        let mut stream = client
            .server_streaming(tonic::Request::new(Vec::new()), path, PeerCodec)
            .await
            .unwrap()
            .into_inner();
        let _every_row = stream.message().await.unwrap();
        let mut stopped = stopped.clone();
        tokio::spawn(async move { keep_received(stream, &mut stopped).await })
    }
}

/// Every message of `stream` with when it arrived, until `stopped` or the stream ends.
async fn keep_received(
    mut stream: tonic::Streaming<Vec<u8>>,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> Vec<(Instant, Vec<u8>)> {
    let mut received = Vec::new();
    loop {
        // (No timer per message: at 1,000 subscribers, timers alone would load the box.)
        let message = tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => break,
            message = stream.message() => message,
        };
        let Some(message) = message.unwrap() else { break };
        received.push((Instant::now(), message));
    }
    received
}

impl Drop for LivePeer {
    fn drop(&mut self) {
        // (Were this benchmark killed instead, its standard input would close: it stops then.)
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live peer's produce-to-update latencies: its messages are {"product": units_sold}.
fn peer_latencies(received: Vec<(Instant, Vec<u8>)>, sent: &RwLock<Sent>) -> Vec<Duration> {
    let sent = sent.read().unwrap();
    let mut latencies = Vec::new();
    for (at, bytes) in received {
        let rows: HashMap<String, i64> = serde_json::from_slice(&bytes).unwrap();
        for (product, total) in rows {
            if let Some(sent_at) = sent.by_total.get(&(product, total)) {
                latencies.push(at.duration_since(*sent_at));
            }
        }
    }
    latencies
}

/// The live peer's codec: bytes both ways.
struct PeerCodec;

impl tonic::codec::Codec for PeerCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = PeerCodec;
    type Decoder = KeepBytes;

    fn encoder(&mut self) -> Self::Encoder {
        PeerCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeepBytes
    }
}

impl tonic::codec::Encoder for PeerCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        destination: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        destination.put_slice(&item);
        Ok(())
    }
}

/// Server memory per subscriber: `count` idle subscribers (the grid does not change).
async fn idle_memory(server: &ServerProcess, url: &str, token: &str, count: usize) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server.pid());
    let channels = connect(url, count.div_ceil(STREAMS_PER_CONNECTION)).await;
    let sent = Arc::new(RwLock::new(Sent::default()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let idle = subscribe_all(&channels, count, token, &stopped).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid());
    let per_subscriber = (after.saturating_sub(before)) as f64 * 1024.0 / count as f64;
    println!(
        "{count} idle subscribers: server RSS {:.1} -> {:.1} MiB, {:.1} KiB per subscriber (connections included, {} streams each)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_subscriber / 1024.0,
        STREAMS_PER_CONNECTION
    );
    stop.send_replace(true);
    collect(idle, &sent).await;
}

/// One gRPC-web subscriber (HTTP/1.1, as browsers and Excel call) while orders come at `rate`
/// a second: cell updates and messages it gets per second, and their latency.
async fn grpc_web_updates(url: &str, token: &str, mut feed: OrderFeed, rate: u64, seconds: u64) {
    let body = support::grpc_web_subscribe_body();
    let mut response = support::http()
        .post(format!("{url}/aerogrid.v1.GridService/Subscribe"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let sent = feed.sent.clone();
    let producing = tokio::task::spawn_blocking(move || feed.produce(rate, seconds));
    let mut buffer = Vec::new();
    let (mut updates, mut messages) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        let chunk = match tokio::time::timeout(Duration::from_secs(2), response.chunk()).await {
            Ok(chunk) => chunk.unwrap().expect("the stream goes on"),
            // Quiet for 2 s once all is produced: everything arrived.
            Err(_) if producing.is_finished() => break,
            Err(_) => continue,
        };
        let received = Instant::now();
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes(buffer[1..5].try_into().unwrap()) as usize;
            if buffer.len() < 5 + length {
                break;
            }
            let message = SubscribeResponse::decode(&buffer[5..5 + length]).unwrap();
            buffer.drain(..5 + length);
            let Some(subscribe_response::Event::Changes(changes)) = message.event else { continue };
            first.get_or_insert(received);
            last = received;
            messages += 1;
            updates += changes.rows.len() as u64;
            sent.read().unwrap().latencies(changes, received, &mut latencies);
        }
    }
    producing.await.unwrap();
    let seconds = first.map_or(0.0, |first| last.duration_since(first).as_secs_f64());
    println!(
        "one gRPC-web subscriber at {rate} orders/s: {:.0} cell updates/s in {:.0} messages/s; produce to update: {}",
        updates as f64 / seconds,
        messages as f64 / seconds,
        summarize(latencies)
    );
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    #[allow(unsafe_code, reason = "sysconf has no safe wrapper in std")]
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// The machine's (all, idle) CPU ticks so far, from `/proc/stat` (idle includes I/O wait).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap())
        .collect();
    (ticks.iter().sum(), ticks[3] + ticks[4])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 10,000 subscribers need more than the usual 1,024 descriptors on the client side.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    #[allow(unsafe_code, reason = "getrlimit/setrlimit have no safe wrapper in std")]
    // SAFETY: both calls read or write one `rlimit` we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
