//! Apps with Python packages on a real `aerogrid dev`: requirements saved and locked per
//! version through the real PyPI (with the pinned uv), environments installed once and shared,
//! numpy and pandas computing a grid, rollback to other requirements, and each kind of mistake
//! a clear diagnostic with no half-started app.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{DevStack, api::Api};

/// A rolling mean (window 3) of each product's quantities, computed with pandas, and where
/// numpy was imported from (which environment) and its version.
const ROLLING: &str = r#"import aerogrid
import numpy as np
import pandas as pd

app = aerogrid.App('rolling', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)
rolling = app.Grid('rolling', columns=['mean', 'count', 'numpy'])
history = {}

@app.stream(orders_topic)
async def on_order(orders):
    async for order in orders:
        values = history.setdefault(order.product, [])
        values.append(order.quantity)
        frame = pd.DataFrame({'quantity': np.array(values, dtype=np.int64)})
        mean = frame['quantity'].rolling(3, min_periods=1).mean().iloc[-1]
        rolling[order.product] = {'mean': float(mean), 'count': len(values), 'numpy': np.__file__}
"#;

/// Reports numpy's version and file, for the pins of the version running.
const NUMPY_VERSION: &str = r#"import aerogrid
import numpy

app = aerogrid.App('pinned', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)
numpy_grid = app.Grid('numpy', columns=['version', 'file'])

@app.stream(orders_topic)
async def on_order(orders):
    async for order in orders:
        numpy_grid['numpy'] = {'version': numpy.__version__, 'file': numpy.__file__}
"#;

const PRODUCTS: u64 = 7;
const ORDERS: u64 = 200;

/// A stack whose uv is the pinned one and whose package cache is shared by the tests (under
/// target/, reachable by connectors of any user), so PyPI is asked once per machine.
fn stack(temp: &tempfile::TempDir, more: &[(&str, &str)]) -> DevStack {
    let uv = std::env::var("AEROGRID_UV").expect("AEROGRID_UV (cargo xtask test sets it)");
    let cache = concat!(env!("CARGO_TARGET_TMPDIR"), "/python-cache");
    let mut env = vec![("AEROGRID_UV", uv.as_str()), ("AEROGRID_PYTHON_CACHE_DIR", cache)];
    env.extend_from_slice(more);
    DevStack::start_with_env(&temp.path().join("data"), &env)
}

async fn acme(api: &Api, stack: &DevStack) -> aerogrid_kafka::KafkaSettings {
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    kafka
}

async fn status(api: &Api, app: &str) -> Value {
    api.admin(Method::GET, &format!("/api/v1/teams/acme/apps/{app}/status"), None).await
}

/// Waits for the app to run; fails at once if it fails.
async fn wait_running(api: &Api, app: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = status(api, app).await;
        match status["state"].as_str() {
            Some("running") => return status,
            Some("failed") => panic!("{app} failed: {status}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{app} never ran: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(api: &Api, app: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(api, app).await["state"] != wanted {
        assert!(Instant::now() < deadline, "{app} never {wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The grid's rows once `done` holds for them.
async fn grid_when(
    stack: &DevStack,
    grid: &str,
    done: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> serde_json::Map<String, Value> {
    let token = stack.file("admin-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = stack.snapshot(grid, &token);
        if output.status.success() {
            let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
            let rows = snapshot["rows"].as_object().cloned().unwrap_or_default();
            if done(&rows) {
                return rows;
            }
        }
        assert!(Instant::now() < deadline, "{grid}: {}", String::from_utf8_lossy(&output.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn logs(api: &Api, app: &str) -> String {
    let lines = api
        .admin(Method::GET, &format!("/api/v1/teams/acme/apps/{app}/logs?limit=500"), None)
        .await;
    lines.as_array().unwrap().iter().map(|line| format!("{}\n", line["message"])).collect()
}

/// The same computation in plain Python's terms: the mean of each product's last three
/// quantities (fewer at first).
fn expected_means() -> BTreeMap<String, (f64, u64)> {
    let mut history: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in 0..ORDERS {
        history.entry(format!("p{}", n % PRODUCTS)).or_default().push(n % 5 + 1);
    }
    history
        .into_iter()
        .map(|(product, values)| {
            let last: Vec<u64> = values.iter().rev().take(3).copied().collect();
            let mean = last.iter().sum::<u64>() as f64 / last.len() as f64;
            (product, (mean, values.len() as u64))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn numpy_and_pandas_compute_a_grid_in_a_shared_environment_and_rollback_brings_back_other_pins()
 {
    let temp = tempfile::tempdir().unwrap();
    let stack = stack(&temp, &[]);
    let api = Api::new(&stack);
    let kafka = acme(&api, &stack).await;
    let apps = "/api/v1/teams/acme/apps";

    // Saved with its requirements: the answer has them, and their lock for the runtime.
    let created = api
        .admin(
            Method::POST,
            apps,
            Some(json!({ "name": "rolling", "code": ROLLING, "requirements": "numpy\npandas\n" })),
        )
        .await;
    assert_eq!(created["diagnostics"], json!([]), "{created}");
    let lock = created["lock"].as_str().expect("resolved at save");
    for package in ["numpy==", "pandas==", "--hash=sha256:"] {
        assert!(lock.contains(package), "{lock}");
    }

    let started = Instant::now();
    api.admin(Method::POST, &format!("{apps}/rolling/start"), None).await;
    wait_running(&api, "rolling").await;
    let first_start = started.elapsed();
    support::produce_orders(&kafka, 0..ORDERS, PRODUCTS).await;
    let expected = expected_means();
    let rows = grid_when(&stack, "acme/rolling/rolling", |rows| {
        rows.values().map(|row| row["count"].as_u64().unwrap_or(0)).sum::<u64>() == ORDERS
    })
    .await;
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
    for (product, (mean, count)) in &expected {
        let row = &rows[product];
        assert_eq!(row["count"].as_u64(), Some(*count), "{product}: {row}");
        let got = row["mean"].as_f64().unwrap();
        assert!((got - mean).abs() < 1e-12, "{product}: pandas says {got}, plain Python {mean}");
    }
    let env = rows["p0"]["numpy"].as_str().unwrap().to_owned();
    assert!(env.contains("/python-cache/envs/"), "numpy comes from the app's environment: {env}");
    let log = logs(&api, "rolling").await;
    assert!(
        log.contains("packages installed in") || log.contains("already installed here"),
        "{log}"
    );

    // Stop and Start: the environment is there already.
    api.admin(Method::POST, &format!("{apps}/rolling/stop"), None).await;
    wait_state(&api, "rolling", "stopped").await;
    let started = Instant::now();
    api.admin(Method::POST, &format!("{apps}/rolling/start"), None).await;
    wait_running(&api, "rolling").await;
    let second_start = started.elapsed();
    println!("rolling: first Start {first_start:?}, second Start {second_start:?} (cached)");
    let log = logs(&api, "rolling").await;
    assert!(log.matches("already installed here").count() >= 1, "{log}");

    // A second app with the same requirements shares the environment.
    let twin = ROLLING.replace("App('rolling'", "App('twin'");
    let body = json!({ "name": "twin", "code": twin, "requirements": "pandas\nnumpy\n" });
    api.admin(Method::POST, apps, Some(body)).await;
    api.admin(Method::POST, &format!("{apps}/twin/start"), None).await;
    wait_running(&api, "twin").await;
    support::produce_orders(&kafka, ORDERS..ORDERS + 1, PRODUCTS).await;
    let twin_rows = grid_when(&stack, "acme/twin/rolling", |rows| !rows.is_empty()).await;
    let twin_env = twin_rows.values().next().unwrap()["numpy"].as_str().unwrap();
    // (`pandas\nnumpy` locks to the same packages as `numpy\npandas`.)
    assert_eq!(twin_env, env, "one environment for one lock");
    assert!(logs(&api, "twin").await.contains("already installed here"));

    // Other pins, another environment; rollback to them runs with them again.
    let body = json!({ "name": "pinned", "code": NUMPY_VERSION, "requirements": "numpy==2.1.3\n" });
    api.admin(Method::POST, apps, Some(body)).await;
    let path = format!("{apps}/pinned");
    let saved = api
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "code": NUMPY_VERSION, "requirements": "numpy==2.2.6\n" })),
        )
        .await;
    assert_eq!((saved["version"].as_i64(), &saved["diagnostics"]), (Some(2), &json!([])));
    let v1 = api.admin(Method::GET, &format!("{path}/versions/1"), None).await;
    assert_eq!(v1["requirements"], "numpy==2.1.3\n");
    assert!(v1["lock"].as_str().unwrap().contains("numpy==2.1.3"), "{v1}");
    let diff = api.admin(Method::GET, &format!("{path}/versions/1/diff?to=2"), None).await;
    assert_eq!(diff["diff"], "", "the code is the same");
    let requirements_diff = diff["requirements_diff"].as_str().unwrap();
    assert!(
        requirements_diff.contains("-numpy==2.1.3") && requirements_diff.contains("+numpy==2.2.6"),
        "{requirements_diff}"
    );
    // A save of code alone keeps the requirements (clients that know nothing of packages).
    let code_only = NUMPY_VERSION.replace("on_order", "on_orders");
    let saved = api.admin(Method::PUT, &path, Some(json!({ "code": code_only }))).await;
    assert_eq!(saved["version"], 3);
    let v3 = api.admin(Method::GET, &format!("{path}/versions/3"), None).await;
    assert_eq!(v3["requirements"], "numpy==2.2.6\n");

    api.admin(Method::POST, &format!("{path}/start"), None).await;
    wait_running(&api, "pinned").await;
    support::produce_orders(&kafka, ORDERS + 1..ORDERS + 2, PRODUCTS).await;
    let version_of = |version: &'static str| {
        move |rows: &serde_json::Map<String, Value>| {
            rows.get("numpy").is_some_and(|row| row["version"] == version)
        }
    };
    let newer = grid_when(&stack, "acme/pinned/numpy", version_of("2.2.6")).await;
    let newer_env = newer["numpy"]["file"].as_str().unwrap().to_owned();
    assert_ne!(newer_env, env, "other pins, another environment");
    let rolled = api.admin(Method::POST, &format!("{path}/versions/1/rollback"), None).await;
    assert_eq!((rolled["version"].as_i64(), rolled["restarted"].as_bool()), (Some(4), Some(true)));
    let v4 = api.admin(Method::GET, &format!("{path}/versions/4"), None).await;
    assert_eq!((&v4["requirements"], &v4["lock"]), (&v1["requirements"], &v1["lock"]));
    wait_running(&api, "pinned").await;
    support::produce_orders(&kafka, ORDERS + 2..ORDERS + 3, PRODUCTS).await;
    let older = grid_when(&stack, "acme/pinned/numpy", version_of("2.1.3")).await;
    assert_ne!(older["numpy"]["file"], newer["numpy"]["file"]);
}

/// Diagnostics on the requirements' `line` whose message has `says`.
fn assert_requirement_error(diagnostics: &Value, line: u64, says: &str) {
    let found = diagnostics.as_array().unwrap().iter().any(|diagnostic| {
        diagnostic["file"] == "requirements"
            && diagnostic["severity"] == "error"
            && diagnostic["line"] == line
            && diagnostic["message"].as_str().unwrap().contains(says)
    });
    assert!(found, "no error on requirements line {line} saying `{says}`: {diagnostics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_impossible_source_only_undeclared_and_too_many_packages_are_diagnostics_and_nothing_starts()
 {
    let temp = tempfile::tempdir().unwrap();
    // numpy + pandas come to more than 3 packages; an installed numpy to about 40 MiB.
    let limits = [("AEROGRID_MAX_PYTHON_PACKAGES", "3"), ("AEROGRID_MAX_PYTHON_ENV_MIB", "20")];
    let stack = stack(&temp, &limits);
    let api = Api::new(&stack);
    acme(&api, &stack).await;
    let apps = "/api/v1/teams/acme/apps";
    let code = NUMPY_VERSION;
    let cases = [
        // (requirements, line, what the error says)
        ("numpy\naerogrid-no-such-package-x\n", 2, "aerogrid-no-such-package-x"),
        ("numpy\npandsa\n", 2, "(did you mean `pandas`?)"),
        ("numpy\npandas\n", 1, "packages with their dependencies; an app may have at most 3"),
        ("# pinned\nnumpy==0.0.1\n", 2, "numpy"),
        ("numpy\npycrypto==2.6.1\n", 2, "pycrypto"),
        ("numpy\n--index-url https://elsewhere.example/simple\n", 2, "option"),
    ];
    for (n, (requirements, line, says)) in cases.into_iter().enumerate() {
        let name = format!("bad{n}");
        let body = json!({ "name": name, "code": code, "requirements": requirements });
        let created = api.admin(Method::POST, apps, Some(body)).await;
        assert_requirement_error(&created["diagnostics"], line, says);
        assert!(created["lock"].is_null(), "{created}");
        let (status, refused) =
            api.call(Method::POST, &format!("{apps}/{name}/start"), &api.admin, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_requirement_error(&refused["diagnostics"], line, says);
        // The same on a later read.
        let detail = api.admin(Method::GET, &format!("{apps}/{name}"), None).await;
        assert_requirement_error(&detail["diagnostics"], line, says);
        assert_eq!(status_of(&api, &name).await, "stopped");
    }

    // An import of a package that is not declared: an error on the import, naming the
    // requirement to add, in validation and at Start.
    let undeclared = format!("import pandas\n{code}");
    let body = json!({ "code": undeclared, "requirements": "numpy\n" });
    let checked = api.admin(Method::POST, "/api/v1/validate", Some(body)).await;
    let diagnostics = checked["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{checked}");
    assert_eq!(
        (diagnostics[0]["line"].as_u64(), &diagnostics[0]["file"]),
        (Some(1), &json!("code"))
    );
    assert!(
        diagnostics[0]["message"]
            .as_str()
            .unwrap()
            .contains("add `pandas` to the app's requirements"),
        "{checked}"
    );
    let body = json!({ "name": "undeclared", "code": undeclared, "requirements": "numpy\n" });
    api.admin(Method::POST, apps, Some(body)).await;
    let (answer, refused) =
        api.call(Method::POST, &format!("{apps}/undeclared/start"), &api.admin, None).await;
    assert_eq!(answer, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(status_of(&api, "undeclared").await, "stopped");

    // Too large once installed: the node says so, and the app fails without running.
    let body = json!({ "name": "large", "code": code, "requirements": "numpy==2.2.5\n" });
    let created = api.admin(Method::POST, apps, Some(body)).await;
    assert_eq!(created["diagnostics"], json!([]), "{created}");
    api.admin(Method::POST, &format!("{apps}/large/start"), None).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let failed = loop {
        let now = status(&api, "large").await;
        if now["state"] == "failed" {
            break now;
        }
        assert_ne!(now["state"], "running", "{now}");
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("MiB installed; an app's packages may take at most 20 MiB"), "{failed}");
}

async fn status_of(api: &Api, app: &str) -> String {
    status(api, app).await["state"].as_str().unwrap().to_owned()
}
