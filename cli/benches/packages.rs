//! Apps' packages, printed (not a timed test): numpy + pandas locked and installed with the
//! pinned uv from the real PyPI into a fresh cache (downloads included), again from uv's local
//! cache into a fresh environment, and found installed; then, on a dev stack, the Start of an
//! app with them against the same app's Start without packages (alternating rounds, medians),
//! and a connector's idle memory with them imported against one without.
//!
//! `cargo bench -p aerogrid-cli --bench packages` (ROUNDS=... Starts of each app, 5 by
//! default; AEROGRID_UV=... the uv, default the pinned one under target/tools).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aerogrid_packages::{PackageSettings, PythonArgs, Requirements};
use reqwest::Method;
use serde_json::json;
use support::{DevStack, api::Api, connector::ConnectorProcess};

const REQUIREMENTS: &str = "numpy\npandas\n";

const WITH_PACKAGES: &str = r#"import aerogrid
import numpy
import pandas

app = aerogrid.App('bench', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)
sums = app.Grid('sums', columns=['total'])

@app.stream(orders_topic)
async def on_order(orders):
    async for order in orders:
        sums[order.product] = {'total': int(numpy.int64(order.quantity))}
"#;

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let uv = std::env::var_os("AEROGRID_UV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/uv/bin/uv"));
    // Under target/ (searchable by connectors of any user), fresh for this run.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("packages-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = |cache: &Path| -> PackageSettings {
        PythonArgs {
            uv: Some(uv.clone()),
            python_cache_dir: Some(cache.into()),
            ..Default::default()
        }
        .settings(None)
    };
    let requirements = Requirements::parse(REQUIREMENTS).unwrap();

    // Cold: an empty cache, so uv downloads every wheel.
    let cold = settings(&scratch.join("cold"));
    let started = Instant::now();
    let lock = runtime
        .block_on(cold.uv.as_ref().unwrap().lock(&requirements, &cold.target))
        .expect("numpy and pandas lock");
    let locked = started.elapsed();
    let started = Instant::now();
    let env = runtime.block_on(cold.install(&lock, &|_| {})).expect("numpy and pandas install");
    let cold_install = started.elapsed();
    let size = directory_bytes(&env.path);
    println!(
        "lock of numpy + pandas ({} packages): {:.2} s; cold install (downloads included): {:.2} s, {} MiB installed",
        lock.packages().len(),
        locked.as_secs_f64(),
        cold_install.as_secs_f64(),
        size >> 20
    );
    // Warm: uv's downloads are there, the environment is not (another node on the same cache).
    let mut warm = settings(&scratch.join("cold"));
    warm.envs_dir = scratch.join("warm-envs");
    let started = Instant::now();
    let warm_env = runtime.block_on(warm.install(&lock, &|_| {})).unwrap();
    let warm_install = started.elapsed();
    let started = Instant::now();
    let found = runtime.block_on(warm.install(&lock, &|_| {})).unwrap();
    let found_in = started.elapsed();
    assert!(warm_env.installed && !found.installed);
    println!(
        "install from uv's local cache: {:.2} s; an installed environment found: {:.3} ms",
        warm_install.as_secs_f64(),
        found_in.as_secs_f64() * 1e3
    );

    idle_memory(&env.path);
    runtime.block_on(starts(&scratch.join("cold"), &uv, rounds));
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A connector's resident memory once loaded, with numpy and pandas imported and without.
fn idle_memory(env: &Path) {
    let plain = "import aerogrid\napp = aerogrid.App('idle')\n";
    let mut bare = ConnectorProcess::start();
    assert!(matches!(
        bare.load(plain),
        aerogrid_proto::runtime::v1::connector_message::Kind::Loaded(_)
    ));
    let mut with = ConnectorProcess::start_with(&[&format!("--python-env={}", env.display())]);
    let program = format!("import numpy\nimport pandas\n{plain}");
    let answer = with.load(&program);
    assert!(
        matches!(answer, aerogrid_proto::runtime::v1::connector_message::Kind::Loaded(_)),
        "{answer:?}"
    );
    let (bare_rss, with_rss) = (rss_kib(bare.pid()), rss_kib(with.pid()));
    println!(
        "idle connector RSS: {} MiB without packages, {} MiB with numpy + pandas imported ({:+} MiB)",
        bare_rss / 1024,
        with_rss / 1024,
        (with_rss as i64 - bare_rss as i64) / 1024
    );
}

/// Start → running of an app with numpy + pandas and of the same app without, alternating.
async fn starts(cache: &Path, uv: &Path, rounds: usize) {
    let temp = tempfile::tempdir().unwrap();
    let cache = cache.display().to_string();
    let uv = uv.display().to_string();
    let stack = DevStack::start_with_env(
        &temp.path().join("data"),
        &[("AEROGRID_UV", &uv), ("AEROGRID_PYTHON_CACHE_DIR", &cache)],
    );
    let api = Api::new(&stack);
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let without = WITH_PACKAGES
        .replace("import numpy\nimport pandas\n", "")
        .replace("int(numpy.int64(order.quantity))", "int(order.quantity)");
    let apps = [("packages", WITH_PACKAGES.to_owned(), REQUIREMENTS), ("plain", without, "")];
    for (name, code, requirements) in &apps {
        let body = json!({ "name": name, "code": code, "requirements": requirements });
        let created = api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(body)).await;
        assert_eq!(created["diagnostics"], json!([]), "{created}");
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    // The first round installs (from the local cache) and warms the node: not counted.
    for round in 0..=rounds {
        for (index, (name, _, _)) in apps.iter().enumerate() {
            let path = format!("/api/v1/teams/acme/apps/{name}");
            let started = Instant::now();
            api.admin(Method::POST, &format!("{path}/start"), None).await;
            wait_for(&api, &path, "running").await;
            if round > 0 {
                times[index].push(started.elapsed().as_secs_f64() * 1e3);
            }
            api.admin(Method::POST, &format!("{path}/stop"), None).await;
            wait_for(&api, &path, "stopped").await;
        }
    }
    let (with, plain) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "warm Start to running (p50 of {rounds}): with numpy + pandas {with:.0} ms, without packages {plain:.0} ms ({:+.0} ms; target at most +300 ms)",
        with - plain
    );
}

async fn wait_for(api: &Api, path: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = api.admin(Method::GET, &format!("{path}/status"), None).await;
        if status["state"] == state {
            return;
        }
        assert!(status["state"] != "failed", "{path}: {status}");
        assert!(Instant::now() < deadline, "{path} never {state}: {status}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn directory_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                total += entry.metadata().unwrap().len();
            }
        }
    }
    total
}
