//! `aerogrid dev` end to end: the real binary, a real PostgreSQL cluster, a real tansu broker,
//! real signals.

use crate::support;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use reqwest::{StatusCode, header};
use serde_json::Value;
use support::{DevStack, assert_all_gone, http};

const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_health_and_credentials_then_sigterm_stops_everything() {
    let temp = tempfile::tempdir().unwrap();
    let mut stack = DevStack::start(&temp.path().join("data"));
    let client = http();

    let response = client.get(format!("{}/healthz", stack.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let health: Value = response.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["database"]["ok"], true, "{health}");
    assert_eq!(health["broker"]["ok"], true, "{health}");
    // Anonymous callers share one check a second: a burst costs no database or broker work of
    // its own (the answers, latencies included, are the same check's).
    let burst = futures::future::join_all((0..50).map(|_| {
        let client = client.clone();
        let url = format!("{}/healthz", stack.url);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    }))
    .await;
    let checks: std::collections::BTreeSet<&String> = burst.iter().collect();
    assert!(checks.len() <= 2, "50 calls at once made {} checks", checks.len());

    // The data-dir files of the contract.
    let broker = stack.file("broker");
    assert!(broker.starts_with("127.0.0.1:"), "{broker}");
    let token = stack.file("admin-token");
    assert!(token.starts_with("agt_"), "{token}");
    let token_mode = std::fs::metadata(stack.data_dir.join("admin-token")).unwrap().permissions();
    assert_eq!(token_mode.mode() & 0o777, 0o600, "the admin token is private");
    assert!(stack.stdout().contains(&token), "the token is printed:\n{}", stack.stdout());

    // The admin token works; anything else is refused with a problem document.
    let me =
        client.get(format!("{}/api/v1/me", stack.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!((me["name"].as_str(), me["is_admin"].as_bool()), (Some("admin"), Some(true)));
    for bearer in [None, Some("agt_not-a-token")] {
        let mut request = client.get(format!("{}/api/v1/me", stack.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{problem}");
    }

    // The sign-in link gives a session cookie, once.
    let login_url = stack.file("login-url");
    assert!(login_url.starts_with(&stack.url), "{login_url}");
    let response = client.get(&login_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let me = client
        .get(format!("{}/api/v1/me", stack.url))
        .header(header::COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let again = client.get(&login_url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a sign-in link works once");
    let truncated = client.get(format!("{}/api/v1/auth/link", stack.url)).send().await.unwrap();
    assert_eq!(truncated.status(), StatusCode::BAD_REQUEST);
    assert_eq!(truncated.headers()[header::CONTENT_TYPE], "application/problem+json");

    // Unknown API routes are problems, not the web page.
    let missing = client.get(format!("{}/api/v1/no-such-route", stack.url)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()[header::CONTENT_TYPE], "application/problem+json");

    // Migrations are applied in the private cluster.
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, migration_versions());
    pool.close().await;

    // SIGTERM stops everything it started and leaves no process behind.
    let children = stack.descendants();
    assert!(children.iter().any(|(_, cmd)| cmd.contains("postgres")), "{children:?}");
    assert!(children.iter().any(|(_, cmd)| cmd.contains("tansu")), "{children:?}");
    stack.signal(libc::SIGTERM);
    let status = stack.wait_exit(STOP_TIMEOUT);
    assert!(status.success(), "{status}\n{}", stack.stderr());
    assert_all_gone(&children, Duration::from_secs(5));
    assert!(!stack.data_dir.join("url").exists(), "a stopped stack has no url file");
}

/// The versions of `migrations/*.up.sql`.
fn migration_versions() -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".up.sql").then(|| name.split('_').next()?.parse().ok())?
        })
        .collect();
    versions.sort();
    versions
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_the_trunk_built_frontend() {
    let web_dir = std::env::var("AEROGRID_WEB_DIR").expect(
        "AEROGRID_WEB_DIR must point at the Trunk build: run the tests through `cargo xtask test`",
    );
    assert!(
        std::path::Path::new(&web_dir).join("index.html").is_file(),
        "no index.html in {web_dir}: run `cargo xtask build-web`"
    );
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let client = http();

    let page = client.get(format!("{}/", stack.url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    let wasm = html
        .split('"')
        .find(|part| part.ends_with(".wasm"))
        .unwrap_or_else(|| panic!("index.html names no .wasm:\n{html}"))
        .to_owned();
    let wasm = client
        .get(format!("{}/{}", stack.url, wasm.trim_start_matches('/')))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(wasm.status(), StatusCode::OK);
    assert_eq!(wasm.headers()[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(wasm.headers()[header::CONTENT_ENCODING], "gzip", "assets are compressed");

    // Client-side routes load the app too.
    let app_page =
        client.get(format!("{}/teams/acme/apps/orders", stack.url)).send().await.unwrap();
    assert_eq!(app_page.status(), StatusCode::OK);
    assert_eq!(app_page.text().await.unwrap(), html);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_round_trip_through_rdkafka() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let kafka = KafkaSettings::new(stack.file("broker"));
    let sent = produce(&kafka, "round-trip", 1000).await;
    let received = consume_from_start(&kafka, "round-trip", sent.len()).await;
    assert_eq!(received, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_the_same_data_dir_keeps_database_broker_and_token() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = DevStack::start(&data_dir);
    let token = first.file("admin-token");
    let pool = sqlx::PgPool::connect(&first.file("database-url")).await.unwrap();
    sqlx::query("INSERT INTO teams (id, name) VALUES (gen_random_uuid(), 'survives-restart')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let kafka = KafkaSettings::new(first.file("broker"));
    let sent = produce(&kafka, "survives-restart", 50).await;
    first.signal(libc::SIGINT);
    assert!(first.wait_exit(STOP_TIMEOUT).success(), "{}", first.stderr());

    let second = DevStack::start(&data_dir);
    assert!(
        !second.stderr().contains("Creating the PostgreSQL cluster"),
        "the cluster is reused:\n{}",
        second.stderr()
    );
    assert_eq!(second.file("admin-token"), token, "the admin token is kept");
    let me =
        http().get(format!("{}/api/v1/me", second.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let pool = sqlx::PgPool::connect(&second.file("database-url")).await.unwrap();
    let teams: Vec<String> =
        sqlx::query_scalar("SELECT name FROM teams").fetch_all(&pool).await.unwrap();
    assert_eq!(teams, ["survives-restart"]);
    pool.close().await;
    let kafka = KafkaSettings::new(second.file("broker"));
    let received = consume_from_start(&kafka, "survives-restart", sent.len()).await;
    assert_eq!(received, sent, "the broker's messages survive the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_dev_on_the_same_data_dir_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let first = DevStack::start(&data_dir);
    let mut second = DevStack::spawn(&data_dir, &[]);
    let status = second.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let message = second.stderr();
    assert!(
        message.contains("is in use by another `aerogrid dev`")
            && message.contains(&format!("pid {}", first.pid())),
        "{message}"
    );
    let health = http().get(format!("{}/healthz", first.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the first one is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_url_and_kafka_brokers_are_used_instead_of_starting_services() {
    let temp = tempfile::tempdir().unwrap();
    let provider = DevStack::start(&temp.path().join("provider"));
    let database_url = provider.file("database-url");
    let brokers = provider.file("broker");

    let user_dir = temp.path().join("user");
    let user = DevStack::start_with_env(
        &user_dir,
        &[("DATABASE_URL", &database_url), ("KAFKA_BROKERS", &brokers)],
    );
    let services: Vec<_> = user
        .descendants()
        .into_iter()
        .filter(|(_, command)| command.contains("postgres") || command.contains("tansu"))
        .collect();
    assert_eq!(services, [], "it starts no database or broker of its own");
    assert!(!user_dir.join("postgres").exists() && !user_dir.join("tansu").exists());
    assert_eq!(user.file("broker"), brokers);
    assert!(!user_dir.join("database-url").exists(), "it only writes URLs of what it started");
    let health: Value =
        http().get(format!("{}/healthz", user.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    // Both run on one database: the admin token of one works on the other.
    let me = http()
        .get(format!("{}/api/v1/me", provider.url))
        .bearer_auth(user.file("admin-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dying_child_is_reported_and_the_rest_is_stopped() {
    let temp = tempfile::tempdir().unwrap();
    let mut stack = DevStack::start(&temp.path().join("data"));
    let children = stack.descendants();
    let (broker_pid, _) =
        children.iter().find(|(_, cmd)| cmd.contains("tansu")).expect("a tansu child").clone();
    support::send_signal(broker_pid, libc::SIGKILL);

    let status = stack.wait_exit(STOP_TIMEOUT);
    assert!(!status.success());
    let message = stack.stderr();
    assert!(
        message.contains("broker (tansu) exited unexpectedly (killed by signal 9 (SIGKILL))"),
        "{message}"
    );
    assert_all_gone(&children, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_dev_leaves_no_process_and_the_next_start_recovers() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = DevStack::start(&data_dir);
    let children = first.descendants();
    assert!(children.len() >= 2, "{children:?}");
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    assert_all_gone(&children, STOP_TIMEOUT);

    let second = DevStack::start(&data_dir);
    let health: Value =
        http().get(format!("{}/healthz", second.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
}

/// Produces `count` keyed messages to a new topic; returns them in order.
async fn produce(kafka: &KafkaSettings, topic: &str, count: usize) -> Vec<(String, String)> {
    kafka.ensure_topic(topic, 1).await.unwrap();
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let mut sent = Vec::new();
    for index in 0..count {
        let (key, payload) = (format!("key-{index}"), format!("{{\"n\": {index}}}"));
        producer
            .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .unwrap();
        sent.push((key, payload));
    }
    sent
}

/// Reads `count` messages of partition 0 from the first offset.
async fn consume_from_start(
    kafka: &KafkaSettings,
    topic: &str,
    count: usize,
) -> Vec<(String, String)> {
    let mut config = kafka.consumer_config();
    config.set("group.id", "aerogrid-tests").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut received = Vec::new();
        while received.len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {count} arrived",
                received.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.unwrap();
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let payload = message.payload_view::<str>().unwrap().unwrap().to_owned();
                received.push((key, payload));
            }
        }
        received
    })
    .await
    .unwrap()
}
