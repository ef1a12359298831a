//! The runtime node: claims the apps whose desired state is running, runs each in a connector
//! process from a warm pool, and owns all their Kafka I/O.
//!
//! Invariants:
//! - User Python runs only in connector processes, never in this process.
//! - Connector processes reach neither the network, Postgres nor Kafka: the node does it for them.
//! - Grids are recoverable from the changelog alone: every change is written there with the
//!   input offsets it reflects before input offsets are committed, and input resumes at the
//!   changelog's offsets, so a restarted app ends as one uninterrupted run would.

mod app;
mod changelog;
mod connector;
mod db;
mod input;
mod limits;
mod node;
mod packages;
mod relay;
mod schemas;
mod status;

pub use node::{NodeArgs, run};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the runtime node cannot reach the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Broker(#[from] aerogrid_kafka::Error),
    #[error("connector: {0}")]
    Connector(String),
    #[error("{0}")]
    ConnectorExited(String),
    /// The app did something the sandbox refuses or broke a limit: it fails, and is not
    /// restarted until started again.
    #[error("{message}")]
    Refused { message: String, line: Option<u32> },
    #[error("topic `{0}` does not exist")]
    TopicMissing(String),
    /// The schema registry cannot give a schema the app's messages name now (down, refusing
    /// the platform's credentials, not having it): the app waits with the reason and tries
    /// again; nothing is skipped.
    #[error("waiting for the schema registry: {0}")]
    RegistryUnavailable(String),
    /// The app's packages cannot be resolved or installed now (the index is unreachable or
    /// slow, uv is missing): it waits with the reason and tries again.
    #[error("{0}")]
    PackagesUnavailable(String),
    #[error("changelog: {0}")]
    Changelog(String),
    #[error("changelog relay: {0}")]
    Relay(String),
    #[error("this node no longer holds the app's lease")]
    LeaseLost,
    #[error("a runtime task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
