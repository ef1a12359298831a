//! Faults under load, against real processes: PostgreSQL restarted, the broker restarted, a
//! runtime node paused (SIGSTOP) past its lease while another takes its app over. After each,
//! the seed app's grid is exact, its counters are exact (nothing lost, nothing counted twice),
//! and a live subscriber (one that subscribes again when its stream ends, as clients do) shows
//! the exact grid.
//!
//! The test owns PostgreSQL and the broker (tansu, SQLite storage: it keeps its data across a
//! restart) and restarts them on their ports; `aerogrid dev` runs against them.

use crate::support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aerogrid_devstack::{BrokerStorage, DataDirLock, LocalBroker, PrivatePostgres};
use aerogrid_kafka::KafkaSettings;
use support::{
    DevStack,
    seed_grid::{expected_totals, follow},
};

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");
const ORDERS: u64 = 300_000;

/// PostgreSQL and the broker, restartable on their ports.
struct Services {
    dir: PathBuf,
    lock: DataDirLock,
    postgres: Option<PrivatePostgres>,
    broker: Option<LocalBroker>,
    postgres_port: u16,
    broker_port: u16,
}

fn port_of(address: &str) -> u16 {
    let end = address.rsplit_once(':').expect("host:port").1;
    let digits: String = end.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a port")
}

impl Services {
    async fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let lock = DataDirLock::acquire(dir).unwrap();
        let postgres = PrivatePostgres::start_on(&dir.join("postgres"), &lock, None).await.unwrap();
        let broker = LocalBroker::start(&dir.join("broker"), BrokerStorage::Sqlite, None, &lock)
            .await
            .unwrap();
        let postgres_port = port_of(postgres.url().rsplit_once('/').unwrap().0);
        let broker_port = port_of(broker.address());
        Self {
            dir: dir.to_owned(),
            lock,
            postgres: Some(postgres),
            broker: Some(broker),
            postgres_port,
            broker_port,
        }
    }

    fn database_url(&self) -> String {
        self.postgres.as_ref().unwrap().url().to_owned()
    }

    fn broker_address(&self) -> String {
        self.broker.as_ref().unwrap().address().to_owned()
    }

    async fn restart_postgres(&mut self, down_for: Duration) {
        let url = self.database_url();
        self.postgres.take().unwrap().stop().await;
        tokio::time::sleep(down_for).await;
        let postgres = PrivatePostgres::start_on(
            &self.dir.join("postgres"),
            &self.lock,
            Some(self.postgres_port),
        )
        .await
        .unwrap();
        assert_eq!(postgres.url(), url, "back on its port");
        self.postgres = Some(postgres);
    }

    async fn restart_broker(&mut self, down_for: Duration) {
        self.broker.take().unwrap().stop().await;
        tokio::time::sleep(down_for).await;
        let broker = LocalBroker::start(
            &self.dir.join("broker"),
            BrokerStorage::Sqlite,
            Some(self.broker_port),
            &self.lock,
        )
        .await
        .unwrap();
        assert_eq!(port_of(broker.address()), self.broker_port, "back on its port");
        self.broker = Some(broker);
    }
}

async fn counters(pool: &sqlx::PgPool, app: uuid::Uuid) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT records_in, bad_records FROM app_status WHERE app_id = $1")
        .bind(app)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Waits until the subscriber shows the exact totals and the counters are exact, then checks
/// they stay so a moment later (nothing counted after the last record).
async fn assert_exact_after(
    what: &str,
    stack: &DevStack,
    database_url: &str,
    app: uuid::Uuid,
    grid: &mut tokio::sync::watch::Receiver<BTreeMap<String, i64>>,
) {
    let expected = expected_totals(ORDERS);
    let reached =
        tokio::time::timeout(Duration::from_secs(240), grid.wait_for(|grid| *grid == expected));
    assert!(
        reached.await.is_ok(),
        "{what}: the subscriber never showed the totals: {:?}\n{}",
        *grid.borrow(),
        stack.stderr()
    );
    // A fresh pool: the one from before a restart may hold dead connections.
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters(&pool, app).await != Some((ORDERS as i64, 0)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counters(&pool, app).await,
        Some((ORDERS as i64, 0)),
        "{what}: records_in, bad_records"
    );
}

/// Services, `aerogrid dev` against them (with extra `args`), the seed app running over
/// `ORDERS` orders, and a resubscribing follower of its grid.
struct Scenario {
    services: Services,
    stack: DevStack,
    app: uuid::Uuid,
    grid: tokio::sync::watch::Receiver<BTreeMap<String, i64>>,
}

impl Scenario {
    async fn start(temp: &Path, args: &[&str]) -> Self {
        let services = Services::start(&temp.join("services")).await;
        let database_url = services.database_url();
        let broker = services.broker_address();
        let stack = DevStack::start_with(
            &temp.join("data"),
            &[("DATABASE_URL", &database_url), ("KAFKA_BROKERS", &broker)],
            args,
        );
        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        let kafka = KafkaSettings::new(broker);
        kafka.ensure_topic("orders", 1).await.unwrap();
        support::produce_orders(&kafka, 0..ORDERS, 17).await;
        let app = support::create_running_app(&pool, SEED).await;
        let grid = follow(stack.url.clone(), stack.file("admin-token"));
        Self { services, stack, app, grid }
    }

    /// Waits until the app has read some of its input, but not all; returns how much.
    async fn wait_until_under_way(&self) -> i64 {
        let pool = sqlx::PgPool::connect(&self.services.database_url()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some((records_in, _)) = counters(&pool, self.app).await
                && records_in > 0
            {
                assert!(records_in < ORDERS as i64, "the fault came too late: all read");
                return records_in;
            }
            assert!(Instant::now() < deadline, "the app never started:\n{}", self.stack.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the seed app, restarts a service with `restart` once it is under way, and checks the
/// grid and counters exact afterwards.
async fn restarted_under_load(what: &str, restart: impl AsyncFnOnce(&mut Services)) {
    let temp = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::start(temp.path(), &[]).await;
    let read = scenario.wait_until_under_way().await;
    let started = Instant::now();
    restart(&mut scenario.services).await;
    eprintln!(
        "{what}: down after {read} of {ORDERS} records, for {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let Scenario { stack, services, app, mut grid, .. } = scenario;
    assert_exact_after(what, &stack, &services.database_url(), app, &mut grid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_loses_and_doubles_nothing() {
    restarted_under_load("PostgreSQL restart", async |services: &mut Services| {
        services.restart_postgres(Duration::from_secs(2)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_restarted_under_load_loses_and_doubles_nothing() {
    restarted_under_load("broker restart", async |services: &mut Services| {
        services.restart_broker(Duration::from_secs(2)).await;
    })
    .await;
}

fn spawn_node(services: &Services, log: &Path, name: &str) -> support::Spawned {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    support::Spawned::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
            .args(["runtime", "--lease-seconds", "2", "--connector-pool", "1", "--node-id", name])
            .env("DATABASE_URL", services.database_url())
            .env("KAFKA_BROKERS", services.broker_address())
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
}

async fn leaseholder(pool: &sqlx::PgPool, app: uuid::Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT node_id FROM app_leases WHERE app_id = $1 AND expires_at > now()")
        .bind(app)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_hands_over_and_writes_nothing_after() {
    let temp = tempfile::tempdir().unwrap();
    let scenario = Scenario::start(temp.path(), &["--no-runtime"]).await;
    let log = temp.path().join("nodes.log");
    let mut first = spawn_node(&scenario.services, &log, "first");
    let read = scenario.wait_until_under_way().await;
    eprintln!("The node was paused after {read} of {ORDERS} records");
    let pool = sqlx::PgPool::connect(&scenario.services.database_url()).await.unwrap();
    assert_eq!(leaseholder(&pool, scenario.app).await.as_deref(), Some("first"));
    // Paused past its 2 s lease, with its connector: another node takes the app over.
    support::send_signal(first.id(), libc::SIGSTOP);
    let mut second = spawn_node(&scenario.services, &log, "second");
    let deadline = Instant::now() + Duration::from_secs(60);
    while leaseholder(&pool, scenario.app).await.as_deref() != Some("second") {
        assert!(
            Instant::now() < deadline,
            "never taken over:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first wakes up believing it runs the app: its writes must change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    support::send_signal(first.id(), libc::SIGCONT);
    let Scenario { stack, services, app, mut grid, .. } = scenario;
    assert_exact_after("a paused node", &stack, &services.database_url(), app, &mut grid).await;
    assert_eq!(leaseholder(&pool, app).await.as_deref(), Some("second"));
    for node in [&mut first, &mut second] {
        node.kill().unwrap();
        node.wait().unwrap();
    }
}
