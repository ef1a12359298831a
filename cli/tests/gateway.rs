//! The grid gateway of `aerogrid dev`: `aerogrid snapshot` and a native gRPC subscriber read an
//! app's grid as the changelog has it, and every call is authorised.

mod support;

use std::{
    collections::BTreeMap,
    process::Output,
    time::{Duration, Instant},
};

use aerogrid_kafka::KafkaSettings;
use aerogrid_proto::v1::{
    GridRef, SubscribeRequest, grid_service_client::GridServiceClient, row_change,
    subscribe_response, value,
};
use support::DevStack;

const SEED: &str = include_str!("../../runtime/python/tests/seed.py");

fn expected_totals(range: std::ops::Range<u64>) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for n in range {
        *totals.entry(format!("p{}", n % 17)).or_insert(0) += (n % 5 + 1) as i64;
    }
    totals
}

fn snapshot(stack: &DevStack, grid: &str, token: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["snapshot", grid, "--url", &stack.url, "--token", token])
        .env_remove("AEROGRID_URL")
        .env_remove("AEROGRID_TOKEN")
        .output()
        .unwrap()
}

/// `aerogrid snapshot`'s rows as `product -> units_sold`.
fn units_sold(output: &Output) -> BTreeMap<String, i64> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["columns"], serde_json::json!(["units_sold"]));
    json["rows"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, row)| (key.clone(), row["units_sold"].as_i64().unwrap()))
        .collect()
}

fn int_of(value: &aerogrid_proto::v1::Value) -> i64 {
    match value.kind {
        Some(value::Kind::Int(int)) => int,
        ref other => panic!("an int: {other:?}"),
    }
}

/// Subscribes over gRPC-web (HTTP/1.1) and returns the first message, which must be a snapshot.
async fn grpc_web_snapshot(url: &str, token: &str) -> aerogrid_proto::v1::Snapshot {
    use prost::Message as _;
    let request = SubscribeRequest {
        grid: Some(GridRef {
            team: "acme".into(),
            app: "orders".into(),
            grid: "product_sum".into(),
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&request);
    let call = |token: Option<&str>| {
        let mut builder = support::http()
            .post(format!("{url}/aerogrid.v1.GridService/Subscribe"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body.clone());
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.send()
    };
    // Without credentials: a trailers-only answer with UNAUTHENTICATED (16).
    let refused = call(None).await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "16");

    let mut response = call(Some(token)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc-web+proto");
    let mut received = Vec::new();
    loop {
        if received.len() >= 5 {
            let length = u32::from_be_bytes(received[1..5].try_into().unwrap()) as usize;
            if received.len() >= 5 + length {
                assert_eq!(received[0], 0, "a data frame");
                let message =
                    aerogrid_proto::v1::SubscribeResponse::decode(&received[5..5 + length])
                        .unwrap();
                let Some(subscribe_response::Event::Snapshot(snapshot)) = message.event else {
                    panic!("a subscription starts with a snapshot")
                };
                return snapshot;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the snapshot in time")
            .unwrap()
            .expect("more of the stream");
        received.extend_from_slice(&chunk);
    }
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_live_changes_match_the_orders() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..3000, 17).await;
    let app = support::create_running_app(&pool, SEED).await;
    let token = stack.file("admin-token");

    // The grid only grows towards the totals: wait until the snapshot shows them.
    let started = Instant::now();
    loop {
        let output = snapshot(&stack, "acme/orders/product_sum", &token);
        if output.status.success() && units_sold(&output) == expected_totals(0..3000) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the snapshot never showed the totals: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The status counts every record once, and the input is caught up.
    let started = Instant::now();
    loop {
        let (records_in, lag): (i64, Option<i64>) =
            sqlx::query_as("SELECT records_in, lag FROM app_status WHERE app_id = $1")
                .bind(app)
                .fetch_one(&pool)
                .await
                .unwrap();
        if records_in == 3000 && lag == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "records_in {records_in}, lag {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // gRPC-web over HTTP/1.1, as browsers and the Excel add-in call it.
    let snapshot = grpc_web_snapshot(&stack.url, &token).await;
    assert_eq!(
        snapshot
            .rows
            .iter()
            .map(|row| (row.key.clone(), int_of(&row.values[0])))
            .collect::<BTreeMap<_, _>>(),
        expected_totals(0..3000)
    );

    // A native subscriber: the snapshot, then changes that keep it equal to the totals.
    let channel = tonic::transport::Endpoint::from_shared(stack.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GridServiceClient::new(channel);
    let mut request = tonic::Request::new(SubscribeRequest {
        grid: Some(GridRef {
            team: "acme".into(),
            app: "orders".into(),
            grid: "product_sum".into(),
        }),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    let Some(subscribe_response::Event::Snapshot(first)) =
        stream.message().await.unwrap().unwrap().event
    else {
        panic!("a subscription starts with a snapshot")
    };
    let mut grid: BTreeMap<String, i64> =
        first.rows.iter().map(|row| (row.key.clone(), int_of(&row.values[0]))).collect();
    assert_eq!(grid, expected_totals(0..3000));
    support::produce_orders(&kafka, 3000..3500, 17).await;
    let mut sequence = first.sequence;
    let started = Instant::now();
    while grid != expected_totals(0..3500) {
        assert!(started.elapsed() < Duration::from_secs(60), "live changes stopped at {grid:?}");
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a change or heartbeat")
            .unwrap()
            .unwrap();
        match message.event.unwrap() {
            subscribe_response::Event::Changes(changes) => {
                assert!(changes.sequence > sequence, "sequence numbers increase");
                sequence = changes.sequence;
                for row in changes.rows {
                    match row.change.unwrap() {
                        row_change::Change::Updated(cells) => {
                            assert_eq!(cells.columns, [0]);
                            grid.insert(row.key, int_of(&cells.values[0]));
                        }
                        row_change::Change::Deleted(_) => {
                            grid.remove(&row.key);
                        }
                    }
                }
            }
            subscribe_response::Event::Snapshot(snapshot) => {
                grid = snapshot
                    .rows
                    .iter()
                    .map(|row| (row.key.clone(), int_of(&row.values[0])))
                    .collect();
                sequence = snapshot.sequence;
            }
            subscribe_response::Event::Heartbeat(_) => {}
        }
    }

    // Stopping the app ends the stream, saying why.
    sqlx::query("UPDATE apps SET desired_state = 'stopped' WHERE id = $1")
        .bind(app)
        .execute(&pool)
        .await
        .unwrap();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream ends after the app stops")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    assert!(ended.message().contains("the app was stopped"), "{}", ended.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_the_right_credentials_or_names_are_refused_with_reasons() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    support::create_running_app(&pool, SEED).await;
    let admin = stack.file("admin-token");

    assert_eq!(
        failure(&snapshot(&stack, "acme/orders/product_sum", "agt_not-a-real-token")),
        "error: the API token is unknown or revoked (Unauthenticated)"
    );
    assert_eq!(
        failure(&snapshot(&stack, "acme/nope/product_sum", &admin)),
        "error: there is no app `acme/nope` (NotFound)"
    );
    assert_eq!(
        failure(&snapshot(&stack, "acme/orders", &admin)),
        "error: `acme/orders` is not TEAM/APP/GRID"
    );

    // A token limited to another team.
    sqlx::query(
        "WITH other AS (INSERT INTO teams (id, name) VALUES (gen_random_uuid(), 'globex') RETURNING id)
         INSERT INTO api_tokens (id, user_id, team_id, name, secret_sha256)
         SELECT gen_random_uuid(), users.id, other.id, 'globex token', sha256('agt_globex-test-token'::bytea)
         FROM users, other WHERE users.name = 'admin'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        failure(&snapshot(&stack, "acme/orders/product_sum", "agt_globex-test-token")),
        "error: `admin` may not read the grids of team `acme` (PermissionDenied)"
    );

    // Once the app has run, an unknown grid names the ones there are.
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..10, 17).await;
    let started = Instant::now();
    loop {
        let message = failure(&snapshot(&stack, "acme/orders/nope", &admin));
        if message
            == "error: app `acme/orders` has no grid `nope` (its grids: product_sum) (NotFound)"
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{message}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
