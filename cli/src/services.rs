//! `aerogrid server` and `aerogrid runtime`: the two halves of a real deployment.

use std::net::SocketAddr;

use aerogrid_backend::{ServerArgs, ServerState, db};
use aerogrid_kafka::{KafkaArgs, KafkaSettings};
use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct ServerCommand {
    /// Address to listen on (HTTP/1.1 and HTTP/2, REST and gRPC).
    #[arg(long, env = "AEROGRID_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    python: aerogrid_packages::PythonArgs,
}

impl ServerCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let kafka = required_kafka(&self.kafka)?;
        let listener = crate::bind(self.addr).await?;
        let pool = connect_database(&self.database_url).await?;
        db::migrate(&pool).await.context("applying database migrations")?;
        let state = ServerState::new(pool, kafka, &self.server, self.python.settings(None))
            .context("checking the server settings")?;
        tracing::info!(addr = %listener.local_addr()?, "Serving.");
        aerogrid_backend::serve(listener, state, async {
            let signal = crate::shutdown_signal().await;
            tracing::info!("Received {signal}: stopping.");
        })
        .await
        .context("serving HTTP")
    }
}

#[derive(clap::Args)]
pub(crate) struct RuntimeCommand {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    node: aerogrid_runtime::NodeArgs,
    #[command(flatten)]
    python: aerogrid_packages::PythonArgs,
    #[command(flatten)]
    registry: aerogrid_registry::RegistryArgs,
}

impl RuntimeCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let kafka = required_kafka(&self.kafka)?;
        let pool = connect_database(&self.database_url).await?;
        let registry = self.registry.registry().context("the schema registry settings")?;
        aerogrid_runtime::run(
            pool,
            kafka,
            self.node,
            self.python.settings(None),
            registry,
            async {
                let signal = crate::shutdown_signal().await;
                tracing::info!("Received {signal}: stopping.");
            },
        )
        .await?;
        Ok(())
    }
}

fn required_kafka(kafka: &KafkaArgs) -> anyhow::Result<KafkaSettings> {
    kafka
        .settings_or(None)
        .context("no broker given: set KAFKA_BROKERS or pass --kafka-brokers host:port")
}

pub(crate) async fn connect_database(url: &str) -> anyhow::Result<sqlx::PgPool> {
    db::connect(url)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact_password(url)))
}

/// The URL with its password replaced, for messages.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_password("postgres://aerogrid:s3cret@127.0.0.1:5432/aerogrid"),
            "postgres://aerogrid:***@127.0.0.1:5432/aerogrid"
        );
        assert_eq!(super::redact_password("postgres://localhost/db"), "postgres://localhost/db");
    }
}
