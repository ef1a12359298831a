use std::path::PathBuf;

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
}

impl ServerArgs {
    pub fn web_dir(&self) -> PathBuf {
        self.web_dir.clone().unwrap_or_else(default_web_dir)
    }
}

fn default_web_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("web")))
        .unwrap_or_else(|| PathBuf::from("web"))
}
