//! Runs the real `aerogrid dev` binary in a temp dir and looks at it from outside: its files,
//! its HTTP port, its process tree.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod api;
pub(crate) mod connector;
pub(crate) mod registry;
pub(crate) mod seed_grid;
mod slots;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A running `aerogrid dev`.
pub(crate) struct DevStack {
    child: Option<Child>,
    spawned_at: std::time::SystemTime,
    pub(crate) data_dir: PathBuf,
    output_dir: PathBuf,
    pub(crate) url: String,
    /// Dropped after `child` is stopped (fields drop after `Drop::drop`).
    _slot: slots::StackSlot,
}

/// How long a cold start (initdb included) may take on a busy 2-core CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

impl DevStack {
    /// Starts `aerogrid dev` on `data_dir` with a free port and waits until it is ready.
    pub(crate) fn start(data_dir: &Path) -> Self {
        Self::start_with_env(data_dir, &[])
    }

    pub(crate) fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut stack = Self::spawn_with(data_dir, env, &[]);
        stack.wait_ready();
        stack
    }

    /// Starts with extra arguments to `aerogrid dev`.
    pub(crate) fn start_with_args(data_dir: &Path, args: &[&str]) -> Self {
        let mut stack = Self::spawn_with(data_dir, &[], args);
        stack.wait_ready();
        stack
    }

    /// Starts with extra environment and arguments.
    pub(crate) fn start_with(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut stack = Self::spawn_with(data_dir, env, args);
        stack.wait_ready();
        stack
    }

    /// Starts without waiting.
    pub(crate) fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(data_dir, env, &[])
    }

    fn spawn_with(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let slot = slots::StackSlot::take();
        let output_dir = data_dir.with_extension("output");
        std::fs::create_dir_all(&output_dir).unwrap();
        let stdout = std::fs::File::create(output_dir.join("stdout")).unwrap();
        let stderr = std::fs::File::create(output_dir.join("stderr")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_aerogrid"));
        command
            .args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        stop_with_test_runner(&mut command);
        let spawned_at = std::time::SystemTime::now();
        let child = command.spawn().expect("start aerogrid dev");
        Self {
            child: Some(child),
            spawned_at,
            data_dir: data_dir.to_owned(),
            output_dir,
            url: String::new(),
            _slot: slot,
        }
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let url_file = self.data_dir.join("url");
        loop {
            // A `url` left by a killed earlier run is older than this process.
            let fresh = std::fs::metadata(&url_file)
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified >= self.spawned_at);
            if fresh && let Ok(url) = std::fs::read_to_string(&url_file) {
                self.url = url.trim().to_owned();
                return;
            }
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                panic!("aerogrid dev exited ({status}) before it was ready:\n{}", self.stderr());
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "aerogrid dev not ready after {READY_TIMEOUT:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A file `aerogrid dev` wrote into its data dir, trimmed.
    pub(crate) fn file(&self, name: &str) -> String {
        let path = self.data_dir.join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading `{}`: {error}", path.display()))
            .trim()
            .to_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.output_dir.join("stderr")).unwrap_or_default()
    }

    /// `aerogrid snapshot GRID` against this stack with `token` (the environment's ignored).
    pub(crate) fn snapshot(&self, grid: &str, token: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_aerogrid"))
            .args(["snapshot", grid, "--url", &self.url, "--token", token])
            .env_remove("AEROGRID_URL")
            .env_remove("AEROGRID_TOKEN")
            .output()
            .unwrap()
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(self.output_dir.join("stdout")).unwrap_or_default()
    }

    pub(crate) fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "still running after {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every process below `aerogrid dev`, with its command line.
    pub(crate) fn descendants(&self) -> Vec<(u32, String)> {
        descendants_of(self.pid())
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // No asserting here: this may run while a failed test unwinds.
            let _ = Command::new("kill")
                .arg(format!("-{}", libc::SIGTERM))
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

/// A process a test started, killed when it goes out of scope (after a failed assertion too)
/// and when the test runner dies: a failing test leaks no node.
pub(crate) struct Spawned(Child);

impl Spawned {
    pub(crate) fn spawn(command: &mut Command) -> Self {
        stop_with_test_runner(command);
        Self(command.spawn().expect("start the process"))
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test runner killed mid-test takes its `aerogrid dev` along (SIGTERM, so that one stops its
/// services in turn) instead of leaving it running.
#[allow(unsafe_code, reason = "prctl between fork and exec")]
fn stop_with_test_runner(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) fn send_signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Whether `pid` is a live process (zombies count as gone).
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// Processes whose ancestry leads to `root`, from /proc.
pub(crate) fn descendants_of(root: u32) -> Vec<(u32, String)> {
    let mut parent_of = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok())
        else {
            continue;
        };
        parent_of.insert(pid, ppid);
    }
    let mut found: HashSet<u32> = HashSet::from([root]);
    let mut grew = true;
    while grew {
        grew = false;
        for (&pid, &ppid) in &parent_of {
            if found.contains(&ppid) && found.insert(pid) {
                grew = true;
            }
        }
    }
    found.remove(&root);
    let mut result: Vec<(u32, String)> = found
        .into_iter()
        .filter(|&pid| is_alive(pid))
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid, cmdline.trim().to_owned())
        })
        .collect();
    result.sort();
    result
}

/// Waits until none of `pids` is alive.
pub(crate) fn assert_all_gone(pids: &[(u32, String)], timeout: Duration) {
    let started = Instant::now();
    loop {
        let alive: Vec<_> = pids.iter().filter(|(pid, _)| is_alive(*pid)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(started.elapsed() < timeout, "still running after {timeout:?}: {alive:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP client that does not follow redirects (the sign-in link answers with one).
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// An app `name` reading the seed orders (`Order` records keyed by order id) from `topic` as
/// `orders_topic`, then `rest`: its grids and streams.
pub(crate) fn orders_program(name: &str, topic: &str, rest: &str) -> String {
    format!(
        "import aerogrid\n\napp = aerogrid.App('{name}', broker=BROKER_URI)\n\n\
         class Order(aerogrid.Record):\n    product: str\n    quantity: int\n\n\
         orders_topic = app.topic('{topic}', key_type=str, value_type=Order)\n{rest}"
    )
}

/// Creates team `acme`, which may read topic `orders`, and app `orders` running `code`; returns
/// the app id.
pub(crate) async fn create_running_app(pool: &sqlx::PgPool, code: &str) -> uuid::Uuid {
    let team = create_orders_team(pool).await;
    let app = create_app(pool, team, "orders", code, None).await;
    start_app(pool, app).await;
    app
}

/// Creates team `acme`, which may read topic `orders`; returns its id.
pub(crate) async fn create_orders_team(pool: &sqlx::PgPool) -> uuid::Uuid {
    let team: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO teams (id, name) VALUES (gen_random_uuid(), 'acme') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    grant_topic(pool, team, "orders").await;
    team
}

/// Lets `team` read the topics of `pattern`, as an administrator's grant does.
pub(crate) async fn grant_topic(pool: &sqlx::PgPool, team: uuid::Uuid, pattern: &str) {
    sqlx::query(
        "INSERT INTO topic_grants (team_id, pattern, granted_by) VALUES ($1, $2, 'test') ON CONFLICT DO NOTHING",
    )
    .bind(team)
    .bind(pattern)
    .execute(pool)
    .await
    .unwrap();
}

/// Creates a stopped app of `team` with `code` as version 1 (and its own memory limit).
pub(crate) async fn create_app(
    pool: &sqlx::PgPool,
    team: uuid::Uuid,
    name: &str,
    code: &str,
    memory_limit_mib: Option<i32>,
) -> uuid::Uuid {
    let app: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO apps (id, team_id, name, memory_limit_mib) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id",
    )
    .bind(team)
    .bind(name)
    .bind(memory_limit_mib)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO app_versions (app_id, version, code) VALUES ($1, 1, $2)")
        .bind(app)
        .bind(code)
        .execute(pool)
        .await
        .unwrap();
    app
}

/// Starts an app, as the control plane does: nodes hear of it at once.
pub(crate) async fn start_app(pool: &sqlx::PgPool, app: uuid::Uuid) {
    sqlx::query("UPDATE apps SET desired_state = 'running' WHERE id = $1")
        .bind(app)
        .execute(pool)
        .await
        .unwrap();
}

/// Produces orders `range` to topic `orders`: product `p{n % products}`, quantity `n % 5 + 1`.
pub(crate) async fn produce_orders(
    kafka: &aerogrid_kafka::KafkaSettings,
    range: std::ops::Range<u64>,
    products: u64,
) {
    produce_orders_as(kafka, "orders", range, products, |product, quantity| {
        format!(r#"{{"product": "{product}", "quantity": {quantity}}}"#).into_bytes()
    })
    .await;
}

/// Produces the orders of [`produce_orders`] to `topic`, each value written by `encode`
/// (product, quantity).
pub(crate) async fn produce_orders_as(
    kafka: &aerogrid_kafka::KafkaSettings,
    topic: &str,
    range: std::ops::Range<u64>,
    products: u64,
    encode: impl Fn(&str, i64) -> Vec<u8> + Send + 'static,
) {
    use rdkafka::{
        producer::{BaseProducer, BaseRecord, Producer},
        types::RDKafkaErrorCode,
    };
    let producer: BaseProducer = kafka.client_config().set("linger.ms", "20").create().unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        for n in range {
            let payload = encode(&format!("p{}", n % products), (n % 5 + 1) as i64);
            let key = format!("order-{n}");
            let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((error, returned)) => {
                        assert_eq!(
                            error.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::QueueFull),
                            "{error}"
                        );
                        record = returned;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(300)).expect("every order delivered");
    })
    .await
    .unwrap();
}

/// A running `aerogrid server` (control plane and gateway only), killed on drop.
pub(crate) struct ServerProcess {
    child: Child,
    stderr_path: PathBuf,
    /// `host:port` it listens on.
    pub(crate) addr: String,
}

impl ServerProcess {
    /// Starts `aerogrid server` on a free port with `args`, against the database and broker of
    /// `stack`, and waits until it listens.
    pub(crate) fn start(stack: &DevStack, name: &str, args: &[&str]) -> Self {
        let stderr_path = stack.output_dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_aerogrid"));
        command
            .args(["server", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("DATABASE_URL", stack.file("database-url"))
            .env("KAFKA_BROKERS", stack.file("broker"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        stop_with_test_runner(&mut command);
        let mut child = command.spawn().expect("start aerogrid server");
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let addr = log
                .lines()
                .find(|line| line.contains("Serving."))
                .and_then(|line| line.split("addr=").nth(1))
                .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned());
            if let Some(addr) = addr {
                return Self { child, stderr_path, addr };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("aerogrid server exited ({status}) before it listened:\n{log}");
            }
            assert!(started.elapsed() < READY_TIMEOUT, "aerogrid server did not listen:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap_or_default()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits up to `timeout` for the server to exit by itself (after a signal, say).
    pub(crate) fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < timeout, "aerogrid server still runs:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a gRPC-web call to subscribe to `acme/orders/product_sum`: one uncompressed,
/// length-prefixed message.
pub(crate) fn grpc_web_subscribe_body() -> Vec<u8> {
    use prost::Message as _;
    let request = aerogrid_proto::v1::SubscribeRequest {
        grid: Some(aerogrid_proto::v1::GridRef {
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
    body
}

/// The Python of the benchmarks' peer scripts (`cli/benches/peer/`): `AEROGRID_PEER_PYTHON`,
/// else the virtualenv `cargo xtask setup` makes under the target dir (a benchmark runs from
/// `<target>/release/deps/`).
pub(crate) fn bench_peer_python() -> PathBuf {
    if let Some(python) = std::env::var_os("AEROGRID_PEER_PYTHON") {
        return python.into();
    }
    let executable = std::env::current_exe().unwrap();
    let target = executable.ancestors().nth(3).unwrap();
    target.join("tools").join("bench-peer").join("bin").join("python")
}
