//! The grid gateway of `aerogrid dev`: `aerogrid snapshot` and a native gRPC subscriber read an
//! app's grid as the changelog has it, and every call is authorised.

use crate::support;

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

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");

pub(super) fn expected_totals(range: std::ops::Range<u64>) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for n in range {
        *totals.entry(format!("p{}", n % 17)).or_insert(0) += (n % 5 + 1) as i64;
    }
    totals
}

/// `aerogrid dev` with orders `orders` in the broker and the seed app running on them.
pub(super) struct SeedStack {
    pub(super) stack: DevStack,
    pub(super) pool: sqlx::PgPool,
    pub(super) kafka: KafkaSettings,
    pub(super) app: uuid::Uuid,
    pub(super) token: String,
}

impl SeedStack {
    pub(super) async fn start(temp: &tempfile::TempDir, orders: std::ops::Range<u64>) -> Self {
        let stack = DevStack::start(&temp.path().join("data"));
        let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
        let kafka = KafkaSettings::new(stack.file("broker"));
        kafka.ensure_topic("orders", 1).await.unwrap();
        support::produce_orders(&kafka, orders, 17).await;
        let app = support::create_running_app(&pool, SEED).await;
        let token = stack.file("admin-token");
        Self { stack, pool, kafka, app, token }
    }
}

/// `aerogrid snapshot`'s rows as `product -> units_sold`.
pub(super) fn units_sold(output: &Output) -> BTreeMap<String, i64> {
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

/// A native subscription to `acme/orders/product_sum` and its first message, a snapshot.
async fn subscribe(
    client: &mut GridServiceClient<tonic::transport::Channel>,
    token: &str,
) -> (tonic::Streaming<aerogrid_proto::v1::SubscribeResponse>, aerogrid_proto::v1::Snapshot) {
    let request = authorized(SubscribeRequest { grid: product_sum(), ..Default::default() }, token);
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    let Some(subscribe_response::Event::Snapshot(first)) =
        stream.message().await.unwrap().unwrap().event
    else {
        panic!("a subscription starts with a snapshot")
    };
    (stream, first)
}

pub(super) fn grid_of(snapshot: &aerogrid_proto::v1::Snapshot) -> BTreeMap<String, i64> {
    snapshot.rows.iter().map(|row| (row.key.clone(), int_of(&row.values[0]))).collect()
}

/// Applies a subscription's messages to `snapshot` until the grid equals `expected`.
async fn follow_until(
    stream: &mut tonic::Streaming<aerogrid_proto::v1::SubscribeResponse>,
    snapshot: aerogrid_proto::v1::Snapshot,
    expected: &BTreeMap<String, i64>,
) {
    let mut grid = grid_of(&snapshot);
    let mut sequence = snapshot.sequence;
    let started = Instant::now();
    while &grid != expected {
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
                grid = grid_of(&snapshot);
                sequence = snapshot.sequence;
            }
            subscribe_response::Event::Heartbeat(_) => {}
        }
    }
}

/// Subscribes over gRPC-web (HTTP/1.1) and returns the first message, which must be a snapshot.
async fn grpc_web_snapshot(url: &str, token: &str) -> aerogrid_proto::v1::Snapshot {
    grpc_web_snapshot_with(&support::http(), url, token).await
}

/// The same, with `client` (e.g. one that trusts a test CA, for HTTPS).
pub(super) async fn grpc_web_snapshot_with(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> aerogrid_proto::v1::Snapshot {
    use prost::Message as _;
    let body = support::grpc_web_subscribe_body();
    let call = |token: Option<&str>| {
        let mut builder = client
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
    let SeedStack { stack, pool, kafka, app, token } = SeedStack::start(&temp, 0..3000).await;

    // The grid only grows towards the totals: wait until the snapshot shows them.
    let started = Instant::now();
    loop {
        let output = stack.snapshot("acme/orders/product_sum", &token);
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
    assert_eq!(grid_of(&snapshot), expected_totals(0..3000));

    // A native subscriber: the snapshot, then changes that keep it equal to the totals.
    let mut client = client(&stack.url).await;
    let (mut stream, first) = subscribe(&mut client, &token).await;
    assert_eq!(grid_of(&first), expected_totals(0..3000));
    // In five steps: each change comes by whichever of the relay and the changelog consumer
    // is first, and one burst can go all one way.
    for start in (3000..3500).step_by(100) {
        support::produce_orders(&kafka, start..start + 100, 17).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    follow_until(&mut stream, first, &expected_totals(0..3500)).await;
    // Live changes came by the node's relay (ahead of the changelog consumer) as well.
    let relayed = gauge(&stack, "aerogrid_grid_feed_records_relayed_total").await;
    assert!(relayed > 0, "nothing came by the relay: {}", relay_log(&stack));

    // Many subscribers come and go; with the last of them the feed ends. A new subscriber gets
    // a new feed (from the latest snapshot in the changelog), then live changes again.
    // (One connection takes at most 200 streams at once: hyper's default.)
    let mut many = Vec::new();
    for _ in 0..150 {
        many.push(subscribe(&mut client, &token).await.0);
    }
    assert_eq!(gauge(&stack, "aerogrid_grid_feeds").await, 1, "one feed for them all");
    drop(many);
    drop(stream);
    let started = Instant::now();
    while gauge(&stack, "aerogrid_grid_feeds").await != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the feed ends with its last subscriber"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut stream, first) = subscribe(&mut client, &token).await;
    assert_eq!(gauge(&stack, "aerogrid_grid_feeds").await, 1, "a new feed");
    assert_eq!(grid_of(&first), expected_totals(0..3500));
    support::produce_orders(&kafka, 3500..4000, 17).await;
    follow_until(&mut stream, first, &expected_totals(0..4000)).await;

    // Stopping the app ends the stream, saying why.
    sqlx::query("UPDATE apps SET desired_state = 'stopped' WHERE id = $1")
        .bind(app)
        .execute(&pool)
        .await
        .unwrap();
    let ended = end_of(&mut stream, Duration::from_secs(30), "the app stops").await;
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    assert!(ended.message().contains("the app was stopped"), "{}", ended.message());

    // A stopped app's grids can still be read (their last values); deleting the app ends the
    // stream with NOT_FOUND.
    let (mut stream, first) = subscribe(&mut client, &token).await;
    assert_eq!(grid_of(&first), expected_totals(0..4000));
    let api = support::api::Api::new(&stack);
    api.admin(reqwest::Method::DELETE, "/api/v1/teams/acme/apps/orders", None).await;
    let ended = end_of(&mut stream, Duration::from_secs(30), "the app is deleted").await;
    assert_eq!(ended.code(), tonic::Code::NotFound, "{}", ended.message());
    assert!(ended.message().contains("the app was deleted"), "{}", ended.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_the_right_credentials_or_names_are_refused_with_reasons() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    support::create_running_app(&pool, SEED).await;
    let admin = stack.file("admin-token");

    assert_eq!(
        failure(&stack.snapshot("acme/orders/product_sum", "agt_not-a-real-token")),
        "error: the API token is unknown or revoked (Unauthenticated)"
    );
    // No such app and not yours answer alike: the answer tells nothing of other teams' apps.
    const HIDDEN: &str = "error: there is no such grid, or you may not read it (NotFound)";
    assert_eq!(failure(&stack.snapshot("acme/nope/product_sum", &admin)), HIDDEN);
    assert_eq!(
        failure(&stack.snapshot("acme/orders", &admin)),
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
        failure(&stack.snapshot("acme/orders/product_sum", "agt_globex-test-token")),
        HIDDEN
    );
    assert_eq!(failure(&stack.snapshot("acme/nope/product_sum", "agt_globex-test-token")), HIDDEN);

    // Once the app has run, an unknown grid names the ones there are.
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..10, 17).await;
    let started = Instant::now();
    loop {
        let message = failure(&stack.snapshot("acme/orders/nope", &admin));
        if message
            == "error: app `acme/orders` has no grid `nope` (its grids: product_sum) (NotFound)"
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{message}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Listing grids: refused without credentials; another team's token sees none of acme's.
    let mut client = client(&stack.url).await;
    let refused =
        client.list_grids(aerogrid_proto::v1::ListGridsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let listed = client
        .list_grids(authorized(
            aerogrid_proto::v1::ListGridsRequest::default(),
            "agt_globex-test-token",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.grids.is_empty(), "{listed:?}");

    // Shared read-only with globex (the customer case): its token reads the grid and lists it.
    sqlx::query(
        "INSERT INTO grid_shares (app_id, grid, team_id)
         SELECT apps.id, 'product_sum', teams.id FROM apps, teams
         WHERE apps.name = 'orders' AND teams.name = 'globex'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let shared = stack.snapshot("acme/orders/product_sum", "agt_globex-test-token");
    assert_eq!(units_sold(&shared), expected_totals(0..10));
    let listed = client
        .list_grids(authorized(
            aerogrid_proto::v1::ListGridsRequest::default(),
            "agt_globex-test-token",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.grids.len(), 1, "{listed:?}");
    assert_eq!(listed.grids[0].grid, product_sum());
}

pub(super) async fn client(url: &str) -> GridServiceClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    GridServiceClient::new(channel)
}

pub(super) fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(super) fn product_sum() -> Option<GridRef> {
    Some(GridRef { team: "acme".into(), app: "orders".into(), grid: "product_sum".into() })
}

/// Applies one message to `grid` (product -> units sold); returns whether it held changes.
pub(super) fn apply(grid: &mut BTreeMap<String, i64>, event: subscribe_response::Event) -> bool {
    match event {
        subscribe_response::Event::Changes(changes) => {
            for row in changes.rows {
                match row.change.unwrap() {
                    row_change::Change::Updated(cells) => {
                        grid.insert(row.key, int_of(&cells.values[0]));
                    }
                    row_change::Change::Deleted(_) => {
                        grid.remove(&row.key);
                    }
                }
            }
            true
        }
        subscribe_response::Event::Snapshot(snapshot) => {
            *grid =
                snapshot.rows.iter().map(|row| (row.key.clone(), int_of(&row.values[0]))).collect();
            false
        }
        subscribe_response::Event::Heartbeat(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_with_a_rate_gets_conflated_changes_and_the_listing_shows_its_grid() {
    let temp = tempfile::tempdir().unwrap();
    let SeedStack { stack, kafka, token, .. } = SeedStack::start(&temp, 0..100).await;
    let mut client = client(&stack.url).await;

    // Once the app has started, ListGrids shows its grid, live.
    let started = Instant::now();
    let listed = loop {
        let listed = client
            .list_grids(authorized(aerogrid_proto::v1::ListGridsRequest::default(), &token))
            .await
            .unwrap()
            .into_inner();
        if listed.grids.first().is_some_and(|grid| grid.live) {
            break listed;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never listed as live: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed.grids.len(), 1);
    assert_eq!(listed.grids[0].grid, product_sum());
    assert_eq!(listed.grids[0].columns, ["units_sold"]);
    let other_team = client
        .list_grids(authorized(
            aerogrid_proto::v1::ListGridsRequest { team: "globex".into() },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(other_team.grids.is_empty(), "{other_team:?}");

    // At most 2 updates a second: many small changes arrive as few messages, each row at most
    // once per message, ending at the right totals.
    let request =
        SubscribeRequest { grid: product_sum(), max_updates_per_second: 2, ..Default::default() };
    let mut stream = client.subscribe(authorized(request, &token)).await.unwrap().into_inner();
    let mut grid = BTreeMap::new();
    apply(&mut grid, stream.message().await.unwrap().unwrap().event.unwrap());
    // Small steps over about 3 s: without a rate, each would be its own message.
    let producing = tokio::spawn({
        let kafka = kafka.clone();
        async move {
            for step in 0..60 {
                let first = 100 + step * 50;
                support::produce_orders(&kafka, first..first + 50, 17).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut first_change = None;
    let mut messages_with_changes = 0;
    while grid != expected_totals(0..3100) {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a change or heartbeat")
            .unwrap()
            .unwrap();
        let event = message.event.unwrap();
        if let subscribe_response::Event::Changes(changes) = &event {
            let keys: std::collections::HashSet<_> =
                changes.rows.iter().map(|row| &row.key).collect();
            assert_eq!(keys.len(), changes.rows.len(), "each row at most once per message");
        }
        if apply(&mut grid, event) {
            first_change.get_or_insert_with(Instant::now);
            messages_with_changes += 1;
        }
    }
    producing.await.unwrap();
    let elapsed = first_change.unwrap().elapsed().as_secs_f64();
    // The first message comes at once, then one per half second at most.
    assert!(
        f64::from(messages_with_changes) <= 1.0 + elapsed * 2.0 + 1.0,
        "{messages_with_changes} messages in {elapsed:.2} s"
    );
}

/// The status a stream ends with, within `within` of now (messages before it are skipped).
pub(super) async fn end_of(
    stream: &mut tonic::Streaming<aerogrid_proto::v1::SubscribeResponse>,
    within: Duration,
    after: &str,
) -> tonic::Status {
    let ending = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    };
    tokio::time::timeout(within, ending)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {within:?} after {after}"))
}

/// A gauge of the server's `/metrics`.
async fn gauge(stack: &DevStack, name: &str) -> i64 {
    let metrics = support::http()
        .get(format!("{}/metrics", stack.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// What `aerogrid dev` logged of the changelog relay.
fn relay_log(stack: &DevStack) -> String {
    let log = stack.stderr();
    log.lines().filter(|line| line.to_lowercase().contains("relay")).collect::<Vec<_>>().join("\n")
}

/// The node's changelog relay, as a gateway follows it (`aerogrid.runtime.v1.ChangelogRelay`).
async fn follow_relay(
    url: &str,
    app: uuid::Uuid,
    token: Option<&str>,
) -> Result<tonic::Streaming<aerogrid_proto::runtime::v1::RelayedRecord>, tonic::Status> {
    use aerogrid_proto::runtime::{
        RELAY_TOKEN_HEADER,
        v1::{FollowRequest, changelog_relay_client::ChangelogRelayClient},
    };
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(FollowRequest { app_id: app.to_string() });
    if let Some(token) = token {
        request.metadata_mut().insert(RELAY_TOKEN_HEADER, token.parse().unwrap());
    }
    ChangelogRelayClient::new(channel).follow(request).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_relays_each_confirmed_changelog_record_to_holders_of_its_token_only() {
    use aerogrid_proto::v1::{ChangelogRecord, changelog_record};
    use prost::Message as _;

    let temp = tempfile::tempdir().unwrap();
    let SeedStack { stack: _stack, pool, kafka, app, .. } = SeedStack::start(&temp, 0..100).await;
    // The node said where it relays, with its token, and holds the app's lease.
    let started = Instant::now();
    let (url, token) = loop {
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT n.relay_url, n.relay_token FROM runtime_nodes n
             JOIN app_leases l ON l.node_id = n.node_id AND l.app_id = $1",
        )
        .bind(app)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(found) = found {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no node runs the app");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(token.len(), 64, "256 random bits");

    for refused in [None, Some("not-the-token"), Some(&token[1..])] {
        let status = follow_relay(&url, app, refused).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{refused:?}: {status}");
    }
    let status = follow_relay(&url, uuid::Uuid::new_v4(), Some(&token)).await.expect_err("no run");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // The app is running (it may still be starting: the stream is there once it runs).
    let started = Instant::now();
    let mut records = loop {
        match follow_relay(&url, app, Some(&token)).await {
            Ok(records) => break records,
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => panic!("{status}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the app never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Each change comes as the record the changelog holds at that offset, in order.
    support::produce_orders(&kafka, 100..200, 17).await;
    let mut relayed = BTreeMap::new();
    // The rows as the relayed records leave them (rows are whole: the latest value wins).
    let mut latest = BTreeMap::new();
    while latest != expected_totals(0..200) {
        let record = tokio::time::timeout(Duration::from_secs(30), records.message())
            .await
            .expect("records keep coming")
            .unwrap()
            .expect("the stream goes on");
        let grids = match ChangelogRecord::decode(record.record.clone()).unwrap().kind {
            Some(changelog_record::Kind::Delta(delta)) => delta.grids,
            Some(changelog_record::Kind::Snapshot(part)) => part.grids,
            _ => Vec::new(),
        };
        for row in
            grids.iter().filter(|grid| grid.grid == "product_sum").flat_map(|grid| &grid.upserted)
        {
            latest.insert(row.key.clone(), int_of(&row.values[0]));
        }
        if let Some((last, _)) = relayed.last_key_value() {
            assert_eq!(record.offset, last + 1, "every record, in changelog order");
        }
        relayed.insert(record.offset, record.record);
    }
    let mut reader = aerogrid_changelog::ChangelogReader::open(
        kafka.consumer_config().set("group.id", "test-relay").clone(),
        &aerogrid_changelog::topic_name(app),
        *relayed.keys().next().unwrap(),
    )
    .unwrap();
    for (offset, bytes) in &relayed {
        let read = loop {
            match reader.poll(Duration::from_millis(200)).unwrap() {
                aerogrid_changelog::Read::Record { offset, record } => break (offset, record),
                _ => continue,
            }
        };
        assert_eq!((read.0, read.1), (*offset, ChangelogRecord::decode(bytes.clone()).unwrap()));
    }
}
