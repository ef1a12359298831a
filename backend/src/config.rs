use std::{path::PathBuf, sync::Arc};

use crate::{Error, Result};

/// Settings of the HTTP server (`aerogrid server`, and the server inside `aerogrid dev`).
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the web frontend built by Trunk is (its `index.html` and assets). Defaults to the
    /// `web` folder next to the binary's folder (`target/web` for `target/debug/aerogrid`).
    #[arg(long, env = "AEROGRID_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// The URL users reach this server at, when it is not the listening address (behind a proxy
    /// or TLS terminator). An `https` URL makes cookies `Secure`.
    #[arg(long, env = "AEROGRID_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Web origins (such as `https://dashboard.example.com`) whose pages may call the grid API
    /// over gRPC-web. Pages served by this server need none. Repeat, or separate with commas.
    #[arg(long = "cors-origin", env = "AEROGRID_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<url::Url>,

    /// Serve HTTPS (and gRPC over TLS) with this PEM certificate chain; needs --tls-key.
    #[arg(long, env = "AEROGRID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AEROGRID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub quotas: QuotaDefaults,
}

/// What each team may take of the platform unless an administrator sets its own quotas
/// (`PATCH /api/v1/teams/{team}`).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct QuotaDefaults {
    /// Teams one user (not an administrator) may own.
    #[arg(
        long = "quota-teams-per-user",
        env = "AEROGRID_QUOTA_TEAMS_PER_USER",
        default_value_t = 10
    )]
    pub teams_per_user: i32,
    /// Apps a team may have.
    #[arg(long = "quota-apps", env = "AEROGRID_QUOTA_APPS", default_value_t = 100)]
    pub apps: i32,
    /// Apps a team may run at once.
    #[arg(long = "quota-running-apps", env = "AEROGRID_QUOTA_RUNNING_APPS", default_value_t = 20)]
    pub running_apps: i32,
    /// Memory one app of a team may ask for its connector, in MiB.
    #[arg(
        long = "quota-app-memory-mib",
        env = "AEROGRID_QUOTA_APP_MEMORY_MIB",
        default_value_t = 4096
    )]
    pub app_memory_mib: i32,
    /// Memory of a team's running apps together, in MiB.
    #[arg(
        long = "quota-total-memory-mib",
        env = "AEROGRID_QUOTA_TOTAL_MEMORY_MIB",
        default_value_t = 16384
    )]
    pub total_memory_mib: i32,
    /// The memory an app without a limit of its own is counted with, in MiB: the runtime nodes'
    /// `--connector-memory-mib` (`aerogrid dev` passes its node's).
    #[arg(
        long = "quota-default-app-memory-mib",
        env = "AEROGRID_QUOTA_DEFAULT_APP_MEMORY_MIB",
        default_value_t = 512
    )]
    pub default_app_memory_mib: i32,
}

impl ServerArgs {
    pub fn web_dir(&self) -> PathBuf {
        self.web_dir.clone().unwrap_or_else(default_web_dir)
    }

    /// The TLS settings, when --tls-cert and --tls-key are given: HTTP/2 (gRPC) and HTTP/1.1
    /// (browsers, gRPC-web) offered by ALPN.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let (Some(cert_path), Some(key_path)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let bad = |path: &PathBuf, error: &dyn std::fmt::Display| {
            Error::Config(format!("cannot read `{}`: {error}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|error| bad(cert_path, &error))?;
        if chain.is_empty() {
            return Err(bad(cert_path, &"it holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| bad(key_path, &error))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|error| {
                Error::Config(format!("the TLS certificate and key do not fit: {error}"))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

fn default_web_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("web")))
        .unwrap_or_else(|| PathBuf::from("web"))
}
