//! The runtime node: claims the apps whose desired state is running, runs each in a sandboxed
//! connector process, and owns all their Kafka I/O.
//!
//! Invariants:
//! - User Python runs only in connector processes, never in this process.
//! - Connector processes reach neither the network, Postgres nor Kafka: the node does it for them.
//!
//! For now the node checks that it reaches both and waits; connectors come with the runtime issue.

use std::{future::Future, time::Duration};

use aerogrid_kafka::KafkaSettings;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the runtime node cannot reach the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the runtime node cannot reach the broker: {0}")]
    Broker(#[from] aerogrid_kafka::Error),
}

/// Runs the node until `shutdown` completes.
pub async fn run(
    db: sqlx::PgPool,
    kafka: KafkaSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    sqlx::query("SELECT 1").execute(&db).await?;
    kafka.probe(Duration::from_secs(10)).await?;
    tracing::info!(brokers = %kafka.brokers, "Runtime node ready.");
    shutdown.await;
    tracing::info!("Runtime node stopped.");
    Ok(())
}
