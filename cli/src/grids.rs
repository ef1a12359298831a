//! `aerogrid snapshot`, and what `aerogrid watch` shares with it: reading grids through the
//! gateway, as any gRPC client would.

use std::path::PathBuf;

use aerogrid_proto::{
    model::{Applied, GridModel},
    v1::{GridRef, SubscribeRequest, Value, grid_service_client::GridServiceClient, value},
};
use anyhow::{Context, bail};
use clap::Args;

/// Where the gateway is and who calls it.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// The server's URL (default: the one `aerogrid dev` wrote to its data dir).
    #[arg(long, env = "AEROGRID_URL")]
    url: Option<String>,
    /// An API token (default: the admin token `aerogrid dev` wrote to its data dir).
    #[arg(long, env = "AEROGRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The `aerogrid dev` data dir the defaults come from.
    #[arg(long, default_value = ".aerogrid")]
    data_dir: PathBuf,
    /// A PEM CA certificate to trust for an `https` URL, besides the system's (for a server
    /// with a private or self-signed certificate).
    #[arg(long, env = "AEROGRID_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SnapshotCommand {
    /// The grid, as TEAM/APP/GRID.
    grid: String,
    #[command(flatten)]
    server: ServerArgs,
}

impl SnapshotCommand {
    /// Prints the grid once as `{"columns": [...], "rows": {"<key>": {"<column>": value}}}`.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let grid = parse_grid(&self.grid)?;
        let name = self.grid.clone();
        let mut client = self.server.connect().await?;
        let request =
            self.server.request(SubscribeRequest { grid: Some(grid), ..Default::default() })?;
        let mut stream = client.subscribe(request).await.map_err(describe)?.into_inner();
        loop {
            let message = stream.message().await.map_err(describe)?.with_context(|| {
                format!("the server ended the stream of `{name}` before its snapshot")
            })?;
            let mut grid = GridModel::default();
            let Some(event) = message.event else { continue };
            if grid.apply(event) == Applied::Snapshot {
                let rows: serde_json::Map<String, serde_json::Value> = grid
                    .rows()
                    .iter()
                    .map(|(key, values)| {
                        let cells = grid
                            .columns()
                            .iter()
                            .cloned()
                            .zip(values.iter().map(to_json))
                            .collect::<serde_json::Map<_, _>>();
                        (key.to_string(), serde_json::Value::Object(cells))
                    })
                    .collect();
                let output = serde_json::json!({ "columns": grid.columns(), "rows": rows });
                println!("{output}");
                return Ok(());
            }
        }
    }
}

impl ServerArgs {
    pub(crate) async fn connect(
        &self,
    ) -> anyhow::Result<GridServiceClient<tonic::transport::Channel>> {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => self.dev_data_file("url").context(
                "no server URL: pass --url or set AEROGRID_URL (or run this where `aerogrid dev` runs)",
            )?,
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("`{url}` is not a URL"))?;
        if url.starts_with("https:") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).context("setting up TLS")?;
        }
        let channel =
            endpoint.connect().await.with_context(|| format!("cannot connect to {url}"))?;
        Ok(GridServiceClient::new(channel))
    }

    pub(crate) fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => self
                .dev_data_file("admin-token")
                .context("no API token: pass --token or set AEROGRID_TOKEN")?,
        };
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}")
            .parse()
            .context("the token is not valid metadata (ASCII, no line breaks)")?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    fn dev_data_file(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join(file)).ok().map(|text| text.trim().to_owned())
    }
}

pub(crate) fn parse_grid(text: &str) -> anyhow::Result<GridRef> {
    match text.split('/').collect::<Vec<_>>()[..] {
        [team, app, grid] if !team.is_empty() && !app.is_empty() && !grid.is_empty() => {
            Ok(GridRef { team: team.into(), app: app.into(), grid: grid.into() })
        }
        _ => bail!("`{text}` is not TEAM/APP/GRID"),
    }
}

/// A gRPC error as a one-line message with its code.
pub(crate) fn describe(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

pub(crate) fn to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(value::Kind::Null(_)) => serde_json::Value::Null,
        Some(value::Kind::Bool(boolean)) => (*boolean).into(),
        Some(value::Kind::Int(int)) => (*int).into(),
        Some(value::Kind::Float(float)) => (*float).into(),
        Some(value::Kind::String(text)) => text.clone().into(),
    }
}
