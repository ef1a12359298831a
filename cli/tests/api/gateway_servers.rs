//! Servers side by side: two servers on one database and broker (one in cleartext with CORS,
//! one with TLS) serve the same grid to native, gRPC-web and reflection clients, and a server's
//! shutdown ends its streams.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aerogrid_proto::v1::{
    SubscribeRequest, grid_service_client::GridServiceClient, subscribe_response,
};

use super::gateway::{
    SeedStack, apply, authorized, client, end_of, expected_totals, grid_of, grpc_web_snapshot_with,
    product_sum, units_sold,
};

/// A native subscriber's grid, kept current in the background.
fn follow(
    mut client: GridServiceClient<tonic::transport::Channel>,
    token: String,
) -> tokio::sync::watch::Receiver<BTreeMap<String, i64>> {
    let (sender, receiver) = tokio::sync::watch::channel(BTreeMap::new());
    tokio::spawn(async move {
        // The app may not have published its grid yet: NOT_FOUND until it has.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stream = loop {
            let request = SubscribeRequest { grid: product_sum(), ..Default::default() };
            match client.subscribe(authorized(request, &token)).await {
                Ok(response) => break response.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::NotFound && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("subscribe: {status:?}"),
            }
        };
        let mut grid = BTreeMap::new();
        // Ends when the server goes (at the end of the test); waiting for totals then fails.
        while let Ok(Some(message)) = stream.message().await {
            apply(&mut grid, message.event.unwrap());
            sender.send_replace(grid.clone());
        }
    });
    receiver
}

async fn wait_for_totals(
    grid: &mut tokio::sync::watch::Receiver<BTreeMap<String, i64>>,
    totals: &BTreeMap<String, i64>,
    what: &str,
) {
    let reached =
        tokio::time::timeout(Duration::from_secs(60), grid.wait_for(|grid| grid == totals));
    assert!(reached.await.is_ok(), "{what} never showed the totals: {:?}", *grid.borrow());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_database_and_broker_serve_the_same_grid() {
    let temp = tempfile::tempdir().unwrap();
    let SeedStack { stack, kafka, token, .. } = SeedStack::start(&temp, 0..1000).await;

    // One server in cleartext that lets another origin's pages call it, one with TLS.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = temp.path().join("cert.pem");
    let key_path = temp.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let plain = support::ServerProcess::start(
        &stack,
        "plain",
        &["--cors-origin", "https://dashboard.example.com"],
    );
    let mut tls = support::ServerProcess::start(
        &stack,
        "tls",
        &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
    );
    let plain_url = format!("http://{}", plain.addr);
    let tls_url = format!("https://localhost:{}", tls.port());
    let tls_channel = tonic::transport::Endpoint::from_shared(tls_url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(certified.cert.pem())),
        )
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|error| panic!("TLS connection: {error:?}\n{}", tls.stderr()));

    // Both serve the grid the runtime keeps: `aerogrid snapshot` over TLS too.
    let mut plain_grid = follow(client(&plain_url).await, token.clone());
    let mut tls_grid = follow(GridServiceClient::new(tls_channel.clone()), token.clone());
    wait_for_totals(&mut plain_grid, &expected_totals(0..1000), "the cleartext server").await;
    wait_for_totals(&mut tls_grid, &expected_totals(0..1000), "the TLS server").await;
    let over_tls = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["snapshot", "acme/orders/product_sum", "--url", &tls_url, "--token", &token])
        .arg("--ca-cert")
        .arg(&cert_path)
        .output()
        .unwrap();
    assert_eq!(units_sold(&over_tls), expected_totals(0..1000));
    // gRPC-web over HTTPS (HTTP/1.1 by ALPN), as a browser calls it.
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .http1_only()
        .build()
        .unwrap();
    let snapshot = grpc_web_snapshot_with(&https, &tls_url, &token).await;
    assert_eq!(grid_of(&snapshot), expected_totals(0..1000));

    // `aerogrid watch`, piped: a JSON line for the snapshot, then one per update.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["watch", "acme/orders/product_sum", "--url", &plain_url, "--token", &token])
        .args(["--rate", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watch_lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut watched = BTreeMap::new();
    let first: serde_json::Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(30), watch_lines.next_line())
            .await
            .expect("watch prints the snapshot")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    for (key, row) in first["snapshot"]["rows"].as_object().expect("a snapshot line") {
        watched.insert(key.clone(), row["units_sold"].as_i64().unwrap());
    }
    assert_eq!(watched, expected_totals(0..1000));

    // Live changes reach both servers' subscribers and the watcher alike.
    support::produce_orders(&kafka, 1000..1500, 17).await;
    wait_for_totals(&mut plain_grid, &expected_totals(0..1500), "the cleartext server").await;
    wait_for_totals(&mut tls_grid, &expected_totals(0..1500), "the TLS server").await;
    while watched != expected_totals(0..1500) {
        let line = tokio::time::timeout(Duration::from_secs(30), watch_lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("watch stopped at {watched:?}"))
            .unwrap()
            .unwrap();
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        for row in line["changes"]["rows"].as_array().expect("a changes line") {
            watched.insert(
                row["key"].as_str().unwrap().to_owned(),
                row["values"][0].as_i64().unwrap(),
            );
        }
    }

    // gRPC health checking (over TLS) and reflection (for grpcurl and the like).
    let mut health = tonic_health::pb::health_client::HealthClient::new(tls_channel.clone());
    for service in ["", "aerogrid.v1.GridService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    }
    let channel = tonic::transport::Endpoint::from_shared(plain_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = |request| tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut answers = reflection
        .server_reflection_info(futures_stream([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("aerogrid.v1.GridService".into())),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("a service list")
    };
    let names: Vec<_> = services.service.iter().map(|service| service.name.as_str()).collect();
    assert!(names.contains(&"aerogrid.v1.GridService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("the file of GridService")
    };
    let file = prost_types_name(&files.file_descriptor_proto[0]);
    assert_eq!(file, "aerogrid/v1/grid.proto");

    // CORS: the configured origin may call the grid API from its pages; others may not.
    let preflight = |origin: &'static str| {
        support::http()
            .request(
                reqwest::Method::OPTIONS,
                format!("{plain_url}/aerogrid.v1.GridService/Subscribe"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,x-grpc-web")
            .send()
    };
    let allowed = preflight("https://dashboard.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://dashboard.example.com");
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{:?}", other.headers());
    drop(watch);

    // A quiet grid: a heartbeat every 5 s, each with the sequence the subscriber is at.
    let request = SubscribeRequest { grid: product_sum(), ..Default::default() };
    let subscribed = std::time::Instant::now();
    let mut quiet = GridServiceClient::new(tls_channel)
        .subscribe(authorized(request, &token))
        .await
        .unwrap()
        .into_inner();
    let Some(subscribe_response::Event::Snapshot(snapshot)) =
        quiet.message().await.unwrap().unwrap().event
    else {
        panic!("a snapshot first")
    };
    for beat in 1..=2u32 {
        let message = tokio::time::timeout(Duration::from_secs(8), quiet.message())
            .await
            .expect("a heartbeat within 8 s")
            .unwrap()
            .unwrap();
        let Some(subscribe_response::Event::Heartbeat(heartbeat)) = message.event else {
            panic!("a heartbeat on a quiet grid, got {message:?}")
        };
        assert_eq!(heartbeat.sequence, snapshot.sequence);
        let elapsed = subscribed.elapsed();
        assert!(elapsed >= Duration::from_secs(5) * beat, "heartbeat {beat} after {elapsed:?}");
    }

    // Shutting a server down ends its streams at once (well before the next heartbeat would
    // wake them) with UNAVAILABLE, saying why, and it exits.
    #[allow(unsafe_code, reason = "kill has no safe wrapper in std")]
    // SAFETY: signals a child process this test started.
    unsafe {
        libc::kill(tls.pid() as i32, libc::SIGTERM);
    }
    let ended = end_of(&mut quiet, Duration::from_secs(3), "the server shuts down").await;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{}", ended.message());
    assert!(tls.wait_for_exit(Duration::from_secs(15)).success(), "{}", tls.stderr());
}

/// A stream of the given messages, as a client-streaming call takes.
fn futures_stream<T: Send + 'static>(
    items: impl IntoIterator<Item = T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(items.into_iter().collect::<Vec<_>>())
}

/// The `name` field of an encoded `FileDescriptorProto` (field 1, a string).
fn prost_types_name(encoded: &[u8]) -> String {
    #[derive(prost::Message)]
    struct FileName {
        #[prost(string, tag = "1")]
        name: String,
    }
    <FileName as prost::Message>::decode(encoded).unwrap().name
}
