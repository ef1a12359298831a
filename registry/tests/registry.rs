//! The client against a stand-in registry (no registry server can be installed here): a small
//! axum server answering the documented routes, counting requests.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use aerogrid_registry::{RegisteredSchema, RegistryArgs, RegistryError};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};

const ORDER: &str =
    r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}]}"#;

#[derive(Clone, Default)]
struct StandIn {
    lookups: Arc<AtomicUsize>,
}

async fn by_id(
    State(stand_in): State<StandIn>,
    headers: HeaderMap,
    Path(id): Path<u32>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    stand_in.lookups.fetch_add(1, Ordering::SeqCst);
    // `Basic ` + base64("bob:secret")
    if headers.get("authorization").and_then(|value| value.to_str().ok())
        != Some("Basic Ym9iOnNlY3JldA==")
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    match id {
        1 => Ok(Json(serde_json::json!({ "schema": ORDER }))),
        2 => Ok(Json(serde_json::json!({ "schema": "{}", "schemaType": "JSON" }))),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

async fn register(Path(subject): Path<String>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": if subject == "orders-value" { 1 } else { 9 } }))
}

async fn serve() -> (String, StandIn) {
    let stand_in = StandIn::default();
    let router = Router::new()
        .route("/schemas/ids/{id}", get(by_id))
        .route("/subjects/{subject}/versions", post(register))
        .with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}/"), stand_in)
}

fn args(url: &str, user: Option<&str>) -> RegistryArgs {
    RegistryArgs {
        schema_registry_url: Some(url.parse().unwrap()),
        schema_registry_user: user.map(str::to_owned),
        schema_registry_password: user.map(|_| "secret".to_owned()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_are_looked_up_once_per_id_and_faults_are_told_apart() {
    let (url, stand_in) = serve().await;
    let registry = args(&url, Some("bob")).registry().unwrap();
    // Twenty at once: one request.
    let lookups = (0..20).map(|_| {
        let registry = registry.clone();
        async move { registry.schema(1).await }
    });
    for found in futures_join(lookups).await {
        assert_eq!(
            *found.unwrap(),
            RegisteredSchema { schema_type: "AVRO".into(), schema: ORDER.into() }
        );
    }
    assert_eq!(stand_in.lookups.load(Ordering::SeqCst), 1);
    registry.schema(1).await.unwrap();
    assert_eq!(stand_in.lookups.load(Ordering::SeqCst), 1, "kept");
    assert_eq!(registry.schema(2).await.unwrap().schema_type, "JSON");
    assert_eq!(registry.schema(3).await.unwrap_err(), RegistryError::UnknownSchema(3));

    let wrong = args(&url, Some("eve")).registry().unwrap();
    assert_eq!(wrong.schema(1).await.unwrap_err(), RegistryError::Refused(401));
    let down = args("http://127.0.0.1:9/", None).registry().unwrap();
    assert!(matches!(down.schema(1).await, Err(RegistryError::Unavailable(_))));
    assert_eq!(
        RegistryArgs::default().registry().unwrap().schema(1).await.unwrap_err(),
        RegistryError::NotConfigured
    );

    let schema = RegisteredSchema { schema_type: "AVRO".into(), schema: ORDER.into() };
    assert_eq!(registry.register("orders-value", &schema).await, Ok(1));
}

async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}
