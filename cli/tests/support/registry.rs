//! A STAND-IN for a schema registry (no registry server can be installed from the registries
//! this project may use): the documented REST subset the platform uses, `GET /schemas/ids/{id}`
//! and `POST /subjects/{subject}/versions`, in memory, with a switch that makes it answer 503 as
//! a registry that is down would. The platform's client depends on nothing beyond that API.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};

#[derive(Clone, Default)]
pub(crate) struct StandInRegistry {
    schemas: Arc<Mutex<Vec<(String, String)>>>,
    down: Arc<AtomicBool>,
    /// Lookups by id answered (not while down).
    pub(crate) lookups: Arc<AtomicUsize>,
    pub(crate) url: String,
}

impl StandInRegistry {
    /// Serves on a free loopback port.
    pub(crate) async fn start() -> Self {
        let mut registry = Self::default();
        let router = Router::new()
            .route("/schemas/ids/{id}", get(by_id))
            .route("/subjects/{subject}/versions", post(register))
            .with_state(registry.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        registry.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        registry
    }

    /// Registers an Avro schema directly; its id.
    pub(crate) fn add(&self, subject: &str, schema: &str) -> u32 {
        let mut schemas = self.schemas.lock().unwrap();
        if let Some(at) = schemas.iter().position(|(_, known)| known == schema) {
            return u32::try_from(at + 1).unwrap();
        }
        schemas.push((subject.to_owned(), schema.to_owned()));
        u32::try_from(schemas.len()).unwrap()
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

async fn by_id(
    State(registry): State<StandInRegistry>,
    Path(id): Path<u32>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    if registry.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    registry.lookups.fetch_add(1, Ordering::SeqCst);
    let schemas = registry.schemas.lock().unwrap();
    let index = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
    match index.and_then(|index| schemas.get(index)) {
        Some((_, schema)) => Ok(Json(serde_json::json!({ "schema": schema }))),
        None => Err(StatusCode::NOT_FOUND),
    }
}

async fn register(
    State(registry): State<StandInRegistry>,
    Path(subject): Path<String>,
    Json(body): Json<HashMap<String, serde_json::Value>>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    if registry.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let schema = body
        .get("schema")
        .and_then(|schema| schema.as_str())
        .ok_or(StatusCode::UNPROCESSABLE_ENTITY)?;
    Ok(Json(serde_json::json!({ "id": registry.add(&subject, schema) })))
}

/// An Avro-encoded order (`{"product": string, "quantity": int}`) in the wire format of `id`.
pub(crate) fn avro_order(id: u32, product: &str, quantity: i64) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend(id.to_be_bytes());
    bytes.extend(zigzag(i64::try_from(product.len()).unwrap()));
    bytes.extend(product.as_bytes());
    bytes.extend(zigzag(quantity));
    bytes
}

/// Avro's `int` and `long`: a zig-zag varint.
pub(crate) fn zigzag(n: i64) -> Vec<u8> {
    let mut value = ((n << 1) ^ (n >> 63)) as u64;
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}
