//! The runtime node inside `aerogrid dev`: an app saved in the database runs its Python against
//! the broker, its grids go to the changelog, and a killed connector comes back without losing
//! or double-counting anything.

use crate::support;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use aerogrid_changelog::{ChangelogReader, Read, Replay};
use aerogrid_kafka::KafkaSettings;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use support::{
    DevStack,
    seed_grid::{self, expected_totals},
};

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");

/// Replays the app's changelog, as recovery and the gateway do (`ChangelogReader`, `Replay`):
/// the `product_sum` grid and the input offset it reflects.
fn read_changelog(kafka: &KafkaSettings, app: uuid::Uuid) -> (BTreeMap<String, i64>, i64) {
    let mut config = kafka.consumer_config();
    config.set("group.id", "aerogrid-test-reader");
    let topic = aerogrid_changelog::topic_name(app);
    let mut reader = ChangelogReader::open(config, &topic, 0).unwrap();
    let mut replay = Replay::default();
    // Read until the topic is quiet (the test waits for the app before reading).
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500) {
        if let Read::Record { record, .. } = reader.poll(Duration::from_millis(100)).unwrap() {
            replay.apply(record);
            quiet_since = Instant::now();
        }
    }
    let grid = replay.state.grids.get("product_sum").map_or_else(BTreeMap::new, |grid| {
        grid.rows.iter().map(|(key, values)| (key.clone(), seed_grid::int_of(&values[0]))).collect()
    });
    (grid, replay.state.offsets.values().copied().max().unwrap_or(0))
}

async fn status(pool: &sqlx::PgPool, app: uuid::Uuid) -> (String, Option<String>, i32) {
    sqlx::query_as("SELECT state, error, restarts FROM app_status WHERE app_id = $1")
        .bind(app)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(("none".into(), None, 0))
}

/// Waits until the changelog reflects `count` input records.
async fn wait_for_changelog(
    kafka: &KafkaSettings,
    app: uuid::Uuid,
    count: i64,
    pool: &sqlx::PgPool,
) -> BTreeMap<String, i64> {
    let started = Instant::now();
    loop {
        let (grid, offset) = {
            let kafka = kafka.clone();
            tokio::task::spawn_blocking(move || read_changelog(&kafka, app)).await.unwrap()
        };
        if offset >= count {
            return grid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the changelog reflects {offset} of {count} records; status {:?}",
            status(pool, app).await
        );
    }
}

fn connector_pids(stack: &DevStack) -> HashMap<u32, String> {
    stack
        .descendants()
        .into_iter()
        .filter(|(_, command)| command.starts_with("aerogrid-connector"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_app_runs_and_a_killed_connector_resumes_exactly() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..2000, 17).await;
    let app = support::create_running_app(&pool, SEED).await;

    let grid = wait_for_changelog(&kafka, app, 2000, &pool).await;
    assert_eq!(grid, expected_totals(2000));
    assert_eq!(status(&pool, app).await.0, "running");

    // The connector running the app is titled after it; the warm ones are idle.
    let connectors = connector_pids(&stack);
    let running: Vec<_> =
        connectors.iter().filter(|(_, title)| title.contains("acme/orders")).collect();
    assert_eq!(running.len(), 1, "{connectors:?}");
    assert!(
        connectors.values().any(|title| title.contains("(idle)")),
        "a warm pool: {connectors:?}"
    );
    let killed = *running[0].0;
    support::send_signal(killed, libc::SIGKILL);

    support::produce_orders(&kafka, 2000..4000, 17).await;
    let grid = wait_for_changelog(&kafka, app, 4000, &pool).await;
    assert_eq!(grid, expected_totals(4000), "nothing lost, nothing counted twice");
    let (state, _, restarts) = status(&pool, app).await;
    assert_eq!(state, "running");
    assert!(restarts >= 1, "the crash is counted");
    assert!(!connector_pids(&stack).contains_key(&killed));

    // Stop, then Start: a new run rebuilds the grid from the changelog and carries on.
    set_desired(&pool, app, "stopped").await;
    wait_for_state(&pool, app, "stopped").await;
    assert!(!connector_pids(&stack).values().any(|title| title.contains("acme/orders")));
    set_desired(&pool, app, "running").await;
    support::produce_orders(&kafka, 4000..5000, 17).await;
    let grid = wait_for_changelog(&kafka, app, 5000, &pool).await;
    assert_eq!(grid, expected_totals(5000));
    wait_for_state(&pool, app, "running").await;
}

async fn set_desired(pool: &sqlx::PgPool, app: uuid::Uuid, state: &str) {
    sqlx::query("UPDATE apps SET desired_state = $2 WHERE id = $1")
        .bind(app)
        .bind(state)
        .execute(pool)
        .await
        .unwrap();
}

async fn wait_for_state(pool: &sqlx::PgPool, app: uuid::Uuid, wanted: &str) {
    let started = Instant::now();
    loop {
        let (state, error, _) = status(pool, app).await;
        if state == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "state {state} ({error:?}), waiting for {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_code_fails_with_its_line_and_is_not_restarted() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let app = support::create_running_app(
        &pool,
        "import aerogrid\napp = aerogrid.App('x')\nundefined_name\n",
    )
    .await;
    let started = Instant::now();
    loop {
        let (state, error, restarts) = status(&pool, app).await;
        if state == "failed" {
            assert_eq!(
                error.as_deref(),
                Some("NameError: name 'undefined_name' is not defined (line 3)")
            );
            let line: Option<i32> =
                sqlx::query_scalar("SELECT error_line FROM app_status WHERE app_id = $1")
                    .bind(app)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(line, Some(3));
            assert_eq!(restarts, 0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "state {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&pool, app).await.2, 0, "a failed app is not restarted in a loop");
}

/// `aerogrid runtime` as a process of its own, against the dev stack's database and broker.
/// Starts `aerogrid runtime`; its log goes to `runtime-node.log` beside the data dir.
fn spawn_runtime_node(stack: &DevStack) -> support::Spawned {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stack.data_dir.with_extension("output").join("runtime-node.log"))
        .unwrap();
    support::Spawned::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
            .args(["runtime", "--create-topics", "--lease-seconds", "2", "--connector-pool", "1"])
            .env("DATABASE_URL", stack.file("database-url"))
            .env("KAFKA_BROKERS", stack.file("broker"))
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
}

/// The input offset the app's consumer group committed (progress, cheaply).
fn committed_offset(kafka: &KafkaSettings, app: uuid::Uuid) -> i64 {
    let mut config = kafka.consumer_config();
    config.set("group.id", format!("aerogrid-app-{app}")).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition("orders", 0);
    match consumer.committed_offsets(partitions, Duration::from_secs(5)) {
        Ok(list) => match list.find_partition("orders", 0).map(|partition| partition.offset()) {
            Some(Offset::Offset(offset)) => offset,
            _ => 0,
        },
        Err(_) => 0,
    }
}

/// 200,000 orders while connectors and whole runtime nodes are SIGKILLed at random moments: the
/// final grid (replayed from the changelog, and as a live subscriber sees it) equals totals
/// computed here, and `records_in` counts every order once.
#[tokio::test(flavor = "multi_thread")]
async fn random_sigkills_of_connectors_and_nodes_lose_and_double_nothing() {
    const ORDERS: u64 = 200_000;
    let temp = tempfile::tempdir().unwrap();
    // The default (SQLite) broker storage: tansu's memory engine cannot fetch from inside a
    // record batch, which a resuming consumer must do.
    let stack = DevStack::start_with_args(&temp.path().join("data"), &["--no-runtime"]);
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    // The orders arrive in tenths, the next one just before each kill, so every kill falls
    // within the run however fast the app reads.
    let tenth = ORDERS / 10;
    support::produce_orders(&kafka, 0..tenth, 17).await;
    let app = support::create_running_app(&pool, SEED).await;

    let mut node = spawn_runtime_node(&stack);
    // A fixed seed: a failure can be replayed.
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_random = move |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    // A live subscriber through the gateway, from before the first kill.
    let mut follower = seed_grid::follow(stack.url.clone(), stack.file("admin-token"));
    let (mut connector_kills, mut node_kills) = (0, 0);
    let started = Instant::now();
    // Eight kills, connectors and nodes in turn: the k-th once the app has read into the k-th
    // tenth (looked at every 20-100 ms), right after the next tenth is produced.
    while connector_kills + node_kills < 8 {
        assert!(started.elapsed() < Duration::from_secs(300), "still not done after 300 s");
        tokio::time::sleep(Duration::from_millis(20 + next_random(80))).await;
        let progress = {
            let kafka = kafka.clone();
            tokio::task::spawn_blocking(move || committed_offset(&kafka, app)).await.unwrap()
        };
        let kills = connector_kills + node_kills;
        if progress <= (kills * tenth) as i64 {
            continue;
        }
        let connectors: Vec<u32> = support::descendants_of(node.id())
            .into_iter()
            .filter(|(_, title)| title.contains("acme/orders"))
            .map(|(pid, _)| pid)
            .collect();
        if connector_kills <= node_kills && connectors.is_empty() {
            // Between two runs (a restart's backoff): the next look finds the new one.
            continue;
        }
        let next = (kills + 1) * tenth;
        support::produce_orders(&kafka, next..next + tenth, 17).await;
        if connector_kills <= node_kills {
            for pid in connectors {
                support::send_signal(pid, libc::SIGKILL);
            }
            connector_kills += 1;
        } else {
            node.kill().unwrap();
            node.wait().unwrap();
            node = spawn_runtime_node(&stack);
            node_kills += 1;
        }
    }
    support::produce_orders(&kafka, 9 * tenth..ORDERS, 17).await;
    let grid = wait_for_changelog(&kafka, app, ORDERS as i64, &pool).await;
    // Counted exactly: replays count no record twice (the status is written with the input
    // offsets it covers), and what a killed node's changelog had before its status did is taken
    // from the changelog by the next run.
    let counted = || async {
        let (records_in,): (i64,) =
            sqlx::query_as("SELECT records_in FROM app_status WHERE app_id = $1")
                .bind(app)
                .fetch_one(&pool)
                .await
                .unwrap();
        records_in
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted().await != ORDERS as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (A second later: nothing is counted after the last record either.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counted().await, ORDERS as i64, "records counted");
    node.kill().unwrap();
    node.wait().unwrap();
    eprintln!(
        "{connector_kills} connector kills, {node_kills} node kills, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!((connector_kills, node_kills), (4, 4));
    assert_eq!(grid, expected_totals(ORDERS));
    // The subscriber, through every restart, shows the same.
    let expected = expected_totals(ORDERS);
    let followed =
        tokio::time::timeout(Duration::from_secs(60), follower.wait_for(|grid| *grid == expected))
            .await
            .is_ok();
    assert!(followed, "the subscriber shows {:?}", *follower.borrow());
}

/// On a broker of its own (no `--create-topics`), a node does not create input topics: the app
/// waits for its topic, says so, and runs once the topic exists.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_waits_for_a_missing_topic_and_runs_once_it_exists() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_args(&temp.path().join("data"), &["--no-runtime"]);
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let kafka = KafkaSettings::new(stack.file("broker"));
    let app = support::create_running_app(&pool, SEED).await;
    let log = std::fs::File::create(temp.path().join("node.log")).unwrap();
    let mut node = support::Spawned::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
            .args(["runtime", "--connector-pool", "1"])
            .env("DATABASE_URL", stack.file("database-url"))
            .env("KAFKA_BROKERS", stack.file("broker"))
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );

    wait_for_state(&pool, app, "waiting").await;
    assert_eq!(status(&pool, app).await.1.as_deref(), Some("waiting for topic `orders` to exist"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..500, 17).await;
    let grid = wait_for_changelog(&kafka, app, 500, &pool).await;
    assert_eq!(grid, expected_totals(500));
    assert_eq!(status(&pool, app).await.0, "running");
    node.kill().unwrap();
    node.wait().unwrap();
}
