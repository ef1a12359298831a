//! Control-plane latency under mixed REST traffic, printed (not a timed test).
//!
//! Against `aerogrid dev`: a team with 20 apps; requests are sent open-loop at a fixed rate
//! (each at its scheduled time, whether or not earlier ones have answered, so a slow server
//! cannot slow the load down and hide its own latency). Latency counts from the scheduled time.
//!
//! Phases, in one run:
//! - baseline: `GET /api/v1/me` alone (authentication and one query) at the same rate;
//! - mixed: 40% list apps, 30% get an app (code, diagnostics, status), 20% status, 10% save a
//!   new version (validated).
//!
//! `cargo bench -p aerogrid-cli --bench control_plane` (RATE=requests/s, SECONDS, BASELINE_SECONDS
//! to change the defaults 500, 30, 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::json;
use support::{
    DevStack,
    api::{Api, Credentials},
};

const SEED: &str = include_str!("../../connector/python/tests/seed.py");
const APPS: usize = 20;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|text| text.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Me,
    List,
    Get,
    Status,
    Save,
}

struct Outcome {
    kind: Kind,
    latency: Duration,
    ok: bool,
    /// The HTTP status, or the transport error.
    answer: String,
}

async fn run() {
    let rate = setting("RATE", 500);
    let seconds = setting("SECONDS", 30);
    let baseline_seconds = setting("BASELINE_SECONDS", 10);
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    for n in 0..APPS {
        let body = json!({ "name": format!("app{n}"), "code": SEED });
        api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(body)).await;
    }
    // A manage token of the team, as scripts use.
    let token = api.token(&api.admin, "acme", "manage").await;
    println!(
        "control plane: {APPS} apps; {rate} requests/s open-loop; server = `aerogrid dev` (pid {}) on this machine",
        stack.pid()
    );

    let baseline = phase(&api, &token, rate, baseline_seconds, &stack, |_| Kind::Me).await;
    report("baseline (GET /api/v1/me)", &baseline);
    let mixed = phase(&api, &token, rate, seconds, &stack, |n| match n % 10 {
        0..=3 => Kind::List,
        4..=6 => Kind::Get,
        7 | 8 => Kind::Status,
        _ => Kind::Save,
    })
    .await;
    report("mixed (40% list, 30% get, 20% status, 10% save)", &mixed);
    for kind in [Kind::List, Kind::Get, Kind::Status, Kind::Save] {
        let only: Vec<&Outcome> = mixed
            .outcomes
            .iter()
            .filter(|o| std::mem::discriminant(&o.kind) == std::mem::discriminant(&kind))
            .collect();
        let mut latencies: Vec<Duration> = only.iter().map(|o| o.latency).collect();
        latencies.sort();
        println!(
            "  {kind:?}: {} requests, p50 {:.2} ms, p99 {:.2} ms",
            latencies.len(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99))
        );
    }
    let p99 = {
        let mut all: Vec<Duration> = mixed.outcomes.iter().map(|o| o.latency).collect();
        all.sort();
        percentile(&all, 0.99)
    };
    println!(
        "target: mixed p99 <= 25 ms with no errors: {}",
        if p99 <= Duration::from_millis(25) && mixed.errors() == 0 { "met" } else { "MISSED" }
    );
}

struct Phase {
    outcomes: Vec<Outcome>,
    elapsed: Duration,
    server_cpu: f64,
    database_cpu: f64,
    server_rss_mib: f64,
}

impl Phase {
    fn errors(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok).count()
    }
}

async fn phase(
    api: &Api,
    token: &Credentials,
    rate: u64,
    seconds: u64,
    stack: &DevStack,
    kind_of: impl Fn(u64) -> Kind,
) -> Phase {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let postgres: Vec<u32> = stack
        .descendants()
        .into_iter()
        .filter(|(_, command)| command.contains("postgres"))
        .map(|(pid, _)| pid)
        .collect();
    let postgres_cpu = || postgres.iter().map(|pid| process_cpu_seconds(*pid)).sum::<f64>();
    let cpu_before = process_cpu_seconds(stack.pid());
    let postgres_before = postgres_cpu();
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + interval * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let kind = kind_of(n);
        let (api, token, outcomes) = (api.clone(), token.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            let app = format!("/api/v1/teams/acme/apps/app{}", n % APPS as u64);
            let request = match kind {
                Kind::Me => api.request(Method::GET, "/api/v1/me", &token),
                Kind::List => api.request(Method::GET, "/api/v1/teams/acme/apps", &token),
                Kind::Get => api.request(Method::GET, &app, &token),
                Kind::Status => api.request(Method::GET, &format!("{app}/status"), &token),
                Kind::Save => api
                    .request(Method::PUT, &app, &token)
                    .json(&json!({ "code": SEED.replace("units_sold", &format!("units_{n}")) })),
            };
            let (ok, answer) = match request.timeout(Duration::from_secs(10)).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await;
                    let ok = status.is_success() && body.is_ok();
                    let detail = if ok {
                        String::new()
                    } else {
                        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
                    };
                    (ok, format!("{status} {detail}"))
                }
                Err(error) => (false, error.to_string()),
            };
            let latency = scheduled.elapsed();
            outcomes.lock().unwrap().push(Outcome { kind, latency, ok, answer });
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let server_cpu = (process_cpu_seconds(stack.pid()) - cpu_before) / elapsed.as_secs_f64();
    let database_cpu = (postgres_cpu() - postgres_before) / elapsed.as_secs_f64();
    let server_rss_mib = process_rss_bytes(stack.pid()) as f64 / (1 << 20) as f64;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    Phase { outcomes, elapsed, server_cpu, database_cpu, server_rss_mib }
}

fn report(name: &str, phase: &Phase) {
    for outcome in phase.outcomes.iter().filter(|o| !o.ok).take(5) {
        println!("  error: {:?} answered {}", outcome.kind, outcome.answer);
    }
    let mut latencies: Vec<Duration> = phase.outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    println!(
        "{name}: {} requests in {:.1} s ({:.0}/s), errors {}; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; CPU (of one core): `aerogrid dev` {:.0}% (backend and runtime node), PostgreSQL {:.0}%; RSS {:.0} MiB",
        latencies.len(),
        phase.elapsed.as_secs_f64(),
        latencies.len() as f64 / phase.elapsed.as_secs_f64(),
        phase.errors(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        phase.server_cpu * 100.0,
        phase.database_cpu * 100.0,
        phase.server_rss_mib,
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// User and system CPU seconds of a process (from /proc).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // Clock ticks are USER_HZ, 100 on Linux.
    ticks / 100.0
}

fn process_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
