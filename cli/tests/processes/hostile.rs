//! Hostile input against a real `aerogrid dev`: what an app writes and what a client sends is
//! bounded, each test with the hostile input itself. Connector output (NUL, lone surrogates,
//! 100 KB lines, a flood of lines, large bad records) is escaped, cut and rate limited and the
//! app keeps running; a row too large for a changelog record fails its app once, with the
//! reason; a client that never finishes its request head, or holds many connections, is cut
//! off; `X-Forwarded-For` counts only from a trusted proxy.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{DevStack, api::Api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn noisy() -> String {
    support::orders_program(
        "noisy",
        "orders",
        r#"
import sys
product_sum = app.Grid('product_sum', columns=['units_sold'], default=lambda: {'units_sold': 0})

@app.stream(orders_topic)
async def sum_orders(orders):
    first = True
    async for order_id, order in orders.items():
        if first:
            first = False
            print('y' * 100000)
            print('lone \udcff surrogate')
            sys.stderr.write('z' * 100000 + '\n')
        print(f'order {order_id}\0nul')
        units_sold = product_sum[order.product]['units_sold'] + order.quantity
        product_sum[order.product] = {'units_sold': units_sold}
"#,
    )
}

fn huge_rows() -> String {
    support::orders_program(
        "huge",
        "orders",
        r#"
big = app.Grid('big', columns=['blob'])

@app.stream(orders_topic)
async def fill(orders):
    async for order_id, order in orders.items():
        if order_id == 'order-3':
            big[order_id] = {'blob': 'x' * 1500000}
"#,
    )
}

/// One batch whose answer is 80 MB of row changes: above the node's 64 MiB answer cap.
fn flood_answer() -> String {
    support::orders_program(
        "flood",
        "orders",
        r#"
wide = app.Grid('wide', columns=['blob'])

@app.stream(orders_topic)
async def fill(orders):
    async for order_id, order in orders.items():
        if order_id == 'order-5':
            for index in range(80):
                wide[f'row-{index}'] = {'blob': str(index % 10) * 1000000}
"#,
    )
}

async fn status_of(api: &Api, app: &str) -> Value {
    api.admin(Method::GET, &format!("/api/v1/teams/acme/apps/{app}/status"), None).await
}

async fn wait_until(what: &str, stack: &DevStack, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if done().await {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{}", stack.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn produce(kafka: &aerogrid_kafka::KafkaSettings, records: Vec<(String, String)>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    for (key, payload) in records {
        let record = FutureRecord::to("orders").key(&key).payload(&payload);
        producer.send(record, Duration::from_secs(30)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_connector_output_is_bounded_and_a_row_too_large_fails_its_app_once() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &[
            "--max-log-lines-per-second",
            "20",
            "--max-log-line-bytes",
            "1024",
            "--max-bad-record-bytes",
            "100",
            "--bad-records-kept-per-app",
            "2",
            "--max-grid-cell-bytes",
            "2000000",
        ],
    );
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..50, 7).await;
    let bad_value = "not json ".repeat(600);
    let bad: Vec<(String, String)> =
        (0..5).map(|index| (format!("bad-{index}"), bad_value.clone())).collect();
    produce(&kafka, bad).await;
    let noisy = support::create_running_app(&pool, &noisy()).await;
    let team: uuid::Uuid = sqlx::query_scalar("SELECT team_id FROM apps WHERE id = $1")
        .bind(noisy)
        .fetch_one(&pool)
        .await
        .unwrap();
    let huge = support::create_app(&pool, team, "huge", &huge_rows(), None).await;
    support::start_app(&pool, huge).await;
    let flood = support::create_app(&pool, team, "flood", &flood_answer(), None).await;
    support::start_app(&pool, flood).await;
    let api = Api::new(&stack);
    let started = Instant::now();

    // The noisy app reads everything and keeps running.
    wait_until("noisy read all 55 records", &stack, async || {
        let status = status_of(&api, "orders").await;
        status["records_in"] == 55 && status["bad_records"] == 5
    })
    .await;
    let running_for = started.elapsed().as_secs_f64();
    let status = status_of(&api, "orders").await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");

    let logs = api.admin(Method::GET, "/api/v1/teams/acme/apps/orders/logs?limit=1000", None).await;
    let messages: Vec<&str> =
        logs.as_array().unwrap().iter().map(|line| line["message"].as_str().unwrap()).collect();
    let cut: Vec<&&str> =
        messages.iter().filter(|message| message.contains("[cut: 100000 bytes in all]")).collect();
    assert_eq!(cut.len(), 2, "print and sys.stderr lines, each cut: {:?}", messages.len());
    assert!(cut.iter().all(|message| message.len() < 1024 + 64), "cut near 1 KiB");
    // (PyO3 replaces each byte of the surrogate's encoding.)
    let replaced =
        |message: &&str| message.starts_with("lone \u{fffd}") && message.ends_with(" surrogate");
    assert!(messages.iter().any(replaced), "{messages:?}");
    assert!(messages.iter().any(|message| message.ends_with("\\0nul")), "NUL escaped");
    assert!(
        messages
            .iter()
            .any(|message| message.contains("more than 20 lines and bad records a second")),
        "one warning about the rate: {messages:?}"
    );
    // 53 lines printed; 20 may come at once, then 20 a second, and one warning.
    let bound = 21 + (running_for * 20.0).ceil() as usize;
    assert!(messages.len() <= bound.min(53), "{} lines, bound {bound}", messages.len());

    // Bad records: payloads cut, sizes kept, only the newest two kept.
    let bad_path = "/api/v1/teams/acme/apps/orders/bad-records";
    wait_until("bad records pruned to 2", &stack, async || {
        let bad = api.admin(Method::GET, bad_path, None).await;
        bad.as_array().unwrap().len() == 2
    })
    .await;
    let bad = api.admin(Method::GET, bad_path, None).await;
    for record in bad.as_array().unwrap() {
        assert_eq!(record["value"].as_str().unwrap().len(), 100, "{record}");
        assert_eq!(record["value_size"], bad_value.len(), "{record}");
    }

    // The app with rows too large for a changelog record fails once, saying why.
    wait_until("huge failed", &stack, async || status_of(&api, "huge").await["state"] == "failed")
        .await;
    let status = status_of(&api, "huge").await;
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("of grid `big` takes") && error.contains("a changelog record holds at most"),
        "{error}"
    );
    assert_eq!(status["restarts"], 0, "not restarted in a loop: {status}");

    // The app whose answer is above the pipe's cap fails, saying so, and is not restarted.
    wait_until("flood failed", &stack, async || {
        status_of(&api, "flood").await["state"] == "failed"
    })
    .await;
    let status = status_of(&api, "flood").await;
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("above the limit of 64 MiB"), "{error}");
    assert_eq!(status["restarts"], 0, "not restarted in a loop: {status}");
}

/// Reads until the server closes the connection; returns how long that took (None: still open
/// after `within`).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_greedy_clients_are_cut_off_and_forwarded_addresses_need_a_trusted_proxy() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &[
            "--header-timeout-seconds",
            "1",
            "--max-connections-per-address",
            "16",
            "--trusted-proxy",
            "127.0.0.1",
            "--requests-per-second-per-address",
            "50",
            "--request-burst-per-address",
            "50",
            "--no-runtime",
        ],
    );
    let address = stack.url.trim_start_matches("http://").trim_end_matches('/').to_owned();

    // Slowloris: a request head that never ends is cut off after the timeout.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(10)).await;
    let took = took.expect("a head that never ends is cut off");
    assert!(took >= Duration::from_millis(900), "not before the timeout: {took:?}");
    // A connection that sends nothing, or part of HTTP/2's preface, too.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await.is_some(), "silent");
    let mut preface = tokio::net::TcpStream::connect(&address).await.unwrap();
    preface.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..23]).await.unwrap();
    assert!(
        closed_within(&mut preface, Duration::from_secs(10)).await.is_some(),
        "a partial preface"
    );
    // An idle keep-alive connection closes after as long.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(took.is_some(), "an idle connection is closed");

    // Connections from one address beyond the cap are closed at once; the rest stay.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        // A complete request: the connection is kept open (idle) after its answer.
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let took = closed_within(&mut refused, Duration::from_millis(500)).await;
    assert!(took.is_some(), "the 17th connection from one address is closed at once");
    drop(held);
    // Once the held ones are gone, connections are served again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = support::http().get(format!("{}/healthz", stack.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Sign-in limits per address: from the trusted proxy, the forwarded address counts.
    let client = support::http();
    let sign_in = |name: String, forwarded: &'static str| {
        client
            .post(format!("{}/api/v1/auth/sign-in", stack.url))
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "name": name, "password": "wrong" }))
            .send()
    };
    let mut statuses = Vec::new();
    for index in 0..21 {
        statuses.push(sign_in(format!("nobody-{index}"), "203.0.113.7").await.unwrap().status());
    }
    assert!(
        statuses[..20].iter().all(|status| *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[20], StatusCode::TOO_MANY_REQUESTS, "the 21st from one client address");
    // Another client behind the same proxy is not locked out.
    let other = sign_in("nobody-else".into(), "203.0.113.8").await.unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);

    // 300 requests from one address, ten at a time, at 50 a second with a burst of 50: the
    // burst goes at once, the rest waits its turn (the unit test has the refusals beyond 2 s).
    let started = Instant::now();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let flood = (0..300).map(|_| {
        let (client, gate) = (client.clone(), gate.clone());
        let url = format!("{}/healthz", stack.url);
        async move {
            let _turn = gate.acquire().await.unwrap();
            client.get(url).header("x-forwarded-for", "198.51.100.9").send().await.unwrap().status()
        }
    });
    let statuses = futures::future::join_all(flood).await;
    let took = started.elapsed();
    eprintln!("300 requests at 50/s: {took:?}");
    assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
    assert!(took >= Duration::from_secs(4), "250 beyond the burst at 50/s take 5 s: {took:?}");
    // Another address (behind the same proxy) is served at once.
    let other = client
        .get(format!("{}/healthz", stack.url))
        .header("x-forwarded-for", "198.51.100.10")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // Bodies cost by their bytes (one token per 64 KiB). Declared: 14 bodies of 1 MB at once
    // cost 16 tokens each; nine fit the burst and the 2 s of waiting, the rest are refused,
    // and only after those 2 s (a flooder cannot spin on refusals).
    let body = vec![b'x'; 1_000_000];
    let declared = (0..14).map(|_| {
        let (client, body) = (client.clone(), body.clone());
        let url = format!("{}/api/v1/auth/sign-in", stack.url);
        async move {
            let started = Instant::now();
            let response = client
                .post(url)
                .header("x-forwarded-for", "198.51.100.11")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status(), started.elapsed())
        }
    });
    let answers = futures::future::join_all(declared).await;
    let refused: Vec<_> =
        answers.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!((2..=5).contains(&refused.len()), "{answers:?}");
    assert!(refused.iter().all(|(_, took)| *took >= Duration::from_secs(2)), "{answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS
            || *status == StatusCode::BAD_REQUEST),
        "{answers:?}"
    );
    // Of unknown length (chunked), paid as read: six of 960 KiB (96 tokens) take about 1 s
    // past the burst of 50, where loopback alone would take milliseconds.
    let started = Instant::now();
    for _ in 0..6 {
        let chunks = (0..15).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
        let response = client
            .post(format!("{}/api/v1/auth/sign-in", stack.url))
            .header("x-forwarded-for", "198.51.100.12")
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "chunked bodies are paid for as read: {took:?}");
}

fn wide_rows() -> String {
    support::orders_program(
        "wide",
        "orders",
        r#"
wide = app.Grid('wide', columns=['blob'])

@app.stream(orders_topic)
async def fill(orders):
    async for order_id, order in orders.items():
        wide[order_id] = {'blob': order_id * 20000}
"#,
    )
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn wide_request(token: &str) -> tonic::Request<aerogrid_proto::v1::SubscribeRequest> {
    let grid = aerogrid_proto::v1::GridRef {
        team: "acme".into(),
        app: "orders".into(),
        grid: "wide".into(),
    };
    let mut request = tonic::Request::new(aerogrid_proto::v1::SubscribeRequest {
        grid: Some(grid),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_that_do_not_read_hold_a_bounded_number_of_bytes() {
    use aerogrid_proto::v1::{grid_service_client::GridServiceClient, subscribe_response};
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &["--unread-mib-per-caller", "6", "--unread-mib", "64"],
    );
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..20, 7).await;
    support::create_running_app(&pool, &wide_rows()).await;
    let token = stack.file("admin-token");
    let channel = tonic::transport::Endpoint::from_shared(stack.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GridServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);

    // A reader that reads: the grid's 20 rows (~3 MB, in records cut under the broker's limit).
    let deadline = Instant::now() + Duration::from_secs(90);
    let snapshot_bytes = loop {
        assert!(Instant::now() < deadline, "the wide grid never had 20 rows:\n{}", stack.stderr());
        if let Ok(response) = client.subscribe(wide_request(&token)).await {
            let message = response.into_inner().message().await.unwrap().unwrap();
            if let Some(subscribe_response::Event::Snapshot(snapshot)) = message.event
                && snapshot.rows.len() == 20
            {
                break prost::Message::encoded_len(&snapshot);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(snapshot_bytes > 2 << 20, "{snapshot_bytes}");

    // 100 subscriptions that never read, on one connection: their snapshots would pin 300 MB.
    // All at once: those without room wait 10 s for some, in vain.
    let before = rss(stack.pid());
    let attempts = (0..100).map(|_| {
        let mut client = client.clone();
        let request = wide_request(&token);
        async move { client.subscribe(request).await }
    });
    let mut held = Vec::new();
    let mut exhausted = 0;
    for answer in futures::future::join_all(attempts).await {
        match answer {
            Ok(response) => held.push(response.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("have not read"), "{status:?}");
                exhausted += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss(stack.pid()).saturating_sub(before);
    eprintln!(
        "100 unread subscriptions: {} held, {exhausted} refused, RSS +{} MiB",
        held.len(),
        grown >> 20
    );
    // 6 MiB per caller holds two ~3 MB snapshots in the server; what the client's own windows
    // took in (hyper's client: 5 MB a connection) has left the server and frees its share.
    assert!(exhausted >= 90, "{exhausted} of 100 refused, {} held", held.len());
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);

    // Once they are gone, the caller subscribes again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = client.subscribe(wide_request(&token)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(subscribe_response::Event::Snapshot(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_views_and_requests_are_refused_and_sign_ins_do_not_grow_the_server() {
    use aerogrid_proto::v1::grid_service_client::GridServiceClient;
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &["--no-runtime", "--quota-versions-per-app", "3"],
    );
    let token = stack.file("admin-token");
    let channel = tonic::transport::Endpoint::from_shared(stack.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GridServiceClient::new(channel);
    let grid = aerogrid_proto::v1::GridRef {
        team: "acme".into(),
        app: "orders".into(),
        grid: "product_sum".into(),
    };
    let subscribe = |columns: Vec<String>, row_keys: Vec<String>| {
        let mut request = tonic::Request::new(aerogrid_proto::v1::SubscribeRequest {
            grid: Some(grid.clone()),
            columns,
            row_keys,
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let before = rss(stack.pid());
    // Beyond the view's caps: refused before anything is looked up.
    let keys: Vec<String> = (0..10_001).map(|index| format!("k{index}")).collect();
    let refused = client.subscribe(subscribe(vec![], keys)).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let columns: Vec<String> = (0..1_001).map(|index| format!("c{index}")).collect();
    let refused = client.subscribe(subscribe(columns, vec![])).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // A request larger than 1 MiB is refused from its length prefix (one column named 300,000
    // times: 3.6 MB), again and again.
    for _ in 0..20 {
        let refused = client
            .subscribe(subscribe(vec!["units_sold".to_owned(); 300_000], vec![]))
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(refused.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted),
            "{refused:?}"
        );
    }
    // Twenty sign-ins verified one after another: the argon2 memory is reused.
    let http = support::http();
    for index in 0..20 {
        let response = http
            .post(format!("{}/api/v1/auth/sign-in", stack.url))
            .json(&json!({ "name": format!("nobody-{index}"), "password": "wrong" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // A 250 KiB program is checked within the checker's bounds.
    let mut code = String::from("import aerogrid\n");
    let mut index = 0;
    while code.len() < 250 * 1024 {
        code.push_str(&format!("value_{index} = [{index}, ({index} + 1) * 2]\n"));
        index += 1;
    }
    let started = Instant::now();
    let checked = http
        .post(format!("{}/api/v1/validate", stack.url))
        .bearer_auth(stack.file("admin-token"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), StatusCode::OK);
    let took = started.elapsed();
    let grown = rss(stack.pid()).saturating_sub(before);
    eprintln!("a 250 KiB check took {took:?}; the server grew {} MiB in all", grown >> 20);
    assert!(grown < 64 << 20, "the server grew {} MiB", grown >> 20);

    // Ten saves of an app told to run version 2: the newest three are kept, and version 2.
    let api = Api::new(&stack);
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    let seed = include_str!("../../../connector/python/tests/seed.py");
    let app = json!({ "name": "orders", "code": seed });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(app)).await;
    let path = "/api/v1/teams/acme/apps/orders";
    for save in 2..=11 {
        let code = format!("{seed}\n# save {save}\n");
        api.admin(Method::PUT, path, Some(json!({ "code": code }))).await;
        if save == 2 {
            sqlx::query("UPDATE apps SET run_version = 2 WHERE name = 'orders'")
                .execute(&sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap())
                .await
                .unwrap();
        }
    }
    let versions = api.admin(Method::GET, &format!("{path}/versions"), None).await;
    let kept: Vec<i64> =
        versions.as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(kept, vec![11, 10, 9, 2], "{versions}");
}

/// Logs and bad records past their age are deleted while the app runs on (here a retention of
/// 0.0001 days: 8.6 s).
#[tokio::test(flavor = "multi_thread")]
async fn logs_and_bad_records_past_their_age_are_deleted() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(
        &temp.path().join("data"),
        &["--output-retention-days", "0.0001"],
    );
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    let app = support::create_running_app(&pool, SEED_WITH_HELLO).await;
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = kafka.client_config().create().unwrap();
        let record = FutureRecord::to("orders").key("order-0").payload("not json");
        producer.send(record, Duration::from_secs(30)).await.unwrap();
    }
    let kept = || async {
        let logs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM app_logs WHERE app_id = $1 AND message = 'hello'",
        )
        .bind(app)
        .fetch_one(&pool)
        .await
        .unwrap();
        let bad: i64 = sqlx::query_scalar("SELECT count(*) FROM bad_records WHERE app_id = $1")
            .bind(app)
            .fetch_one(&pool)
            .await
            .unwrap();
        (logs, bad)
    };
    let started = Instant::now();
    while kept().await != (1, 1) {
        assert!(started.elapsed() < Duration::from_secs(60), "kept: {:?}", kept().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let written = Instant::now();
    while kept().await != (0, 0) {
        assert!(written.elapsed() < Duration::from_secs(60), "still kept: {:?}", kept().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(written.elapsed() >= Duration::from_secs(5), "not before their age");
    let state: String = sqlx::query_scalar("SELECT state FROM app_status WHERE app_id = $1")
        .bind(app)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "running");
}

/// The seed program, saying hello once at load.
const SEED_WITH_HELLO: &str =
    concat!(include_str!("../../../connector/python/tests/seed.py"), "\nprint('hello')\n");
