//! Topics in the schema registry's wire format on a real `aerogrid dev`, against a stand-in
//! registry (`support::registry`, the documented REST subset): the seed program over Avro gives
//! the grid it gives over JSON, a writer schema with a field more reads the same, and a registry
//! outage makes the app wait, then catch up exactly.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    DevStack,
    api::Api,
    registry::{StandInRegistry, avro_order},
    seed_grid::expected_totals,
};

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");
const ORDER: &str = r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}]}"#;
/// A later writer: a field more, which the app's Record does not declare.
const ORDER_WITH_NOTE: &str = r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}, {"name": "note", "type": ["null", "string"], "default": null}]}"#;

fn totals(stack: &DevStack, grid: &str) -> Option<BTreeMap<String, i64>> {
    let output = stack.snapshot(grid, &stack.file("admin-token"));
    if !output.status.success() {
        return None;
    }
    let snapshot: Value = serde_json::from_slice(&output.stdout).ok()?;
    let rows = snapshot["rows"].as_object()?;
    Some(
        rows.iter()
            .map(|(key, row)| (key.clone(), row["units_sold"].as_i64().unwrap_or(-1)))
            .collect(),
    )
}

async fn wait_for_totals(stack: &DevStack, grid: &str, expected: &BTreeMap<String, i64>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = totals(stack, grid);
        if now.as_ref() == Some(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "{grid}: {now:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(api: &Api, app: &str) -> Value {
    api.admin(Method::GET, &format!("/api/v1/teams/acme/apps/{app}/status"), None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_program_over_avro_gives_its_json_grid_and_waits_out_a_registry_outage() {
    let registry = StandInRegistry::start().await;
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start_with_env(
        &temp.path().join("data"),
        &[("AEROGRID_SCHEMA_REGISTRY_URL", &registry.url)],
    );
    let api = Api::new(&stack);
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    for topic in ["orders", "orders_avro"] {
        kafka.ensure_topic(topic, 1).await.unwrap();
    }
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders_avro", None).await;
    let avro = SEED.replace("App('ordersapp'", "App('avroapp'").replace(
        "app.topic('orders', key_type=str, value_type=Order)",
        "app.topic('orders_avro', key_type=str, value_type=Order, value_serializer='avro')",
    );
    for (name, code) in [("orders", SEED.to_owned()), ("avro", avro)] {
        let created = api
            .admin(
                Method::POST,
                "/api/v1/teams/acme/apps",
                Some(json!({ "name": name, "code": code })),
            )
            .await;
        assert_eq!(created["diagnostics"], json!([]), "{created}");
        api.admin(Method::POST, &format!("/api/v1/teams/acme/apps/{name}/start"), None).await;
    }

    // The same orders, as JSON and as Avro: the same grid.
    let first = registry.add("orders_avro-value", ORDER);
    support::produce_orders(&kafka, 0..1000, 17).await;
    support::produce_orders_as(&kafka, "orders_avro", 0..1000, 17, move |product, quantity| {
        avro_order(first, product, quantity)
    })
    .await;
    let expected = expected_totals(1000);
    wait_for_totals(&stack, "acme/orders/product_sum", &expected).await;
    wait_for_totals(&stack, "acme/avro/product_sum", &expected).await;
    assert_eq!(registry.lookups.load(std::sync::atomic::Ordering::SeqCst), 1, "once per id");

    // The registry goes down for 10 s while orders of a new writer schema arrive: the app
    // waits, saying why, and takes none of them as bad records.
    registry.set_down(true);
    let down_at = Instant::now();
    let second = registry.add("orders_avro-value", ORDER_WITH_NOTE);
    support::produce_orders_as(&kafka, "orders_avro", 1000..2000, 17, move |product, quantity| {
        let mut order = avro_order(second, product, quantity);
        order.push(0); // `note`: the union's null branch
        order
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let now = status(&api, "avro").await;
        if now["state"] == "waiting" {
            break now;
        }
        assert!(Instant::now() < deadline, "never waiting: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = waiting["error"].as_str().unwrap();
    assert!(
        reason
            .starts_with("waiting for the schema registry: the schema registry cannot be reached"),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed())).await;
    assert_eq!(
        totals(&stack, "acme/avro/product_sum").as_ref(),
        Some(&expected),
        "nothing taken meanwhile"
    );
    registry.set_down(false);
    wait_for_totals(&stack, "acme/avro/product_sum", &expected_totals(2000)).await;
    let now = status(&api, "avro").await;
    assert_eq!(
        (now["state"].as_str(), now["bad_records"].as_i64()),
        (Some("running"), Some(0)),
        "{now}"
    );

    // `aerogrid produce` writes Avro of a schema file, registered under `<topic>-value`.
    let schema_file = temp.path().join("order.avsc");
    std::fs::write(&schema_file, ORDER).unwrap();
    let mut produce = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["produce", "orders_avro", "--brokers", &stack.file("broker")])
        .args(["--value-serializer", "avro", "--schema"])
        .arg(&schema_file)
        .args(["--schema-registry-url", &registry.url])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let line = b"order-x\t{\"product\": \"pz\", \"quantity\": 7}\n";
    produce.stdin.take().unwrap().write_all(line).unwrap();
    let output = produce.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut expected = expected_totals(2000);
    expected.insert("pz".into(), 7);
    wait_for_totals(&stack, "acme/avro/product_sum", &expected).await;
}
