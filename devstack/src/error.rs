use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data dir `{dir}` is in use by another `aerogrid dev` (pid {holder}) or by processes it started that are still stopping; stop it first or choose another --data-dir"
    )]
    DataDirInUse { dir: PathBuf, holder: String },
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found: install PostgreSQL (Debian: `apt-get install postgresql`), set AEROGRID_PG_BINDIR, or set DATABASE_URL to use an existing database"
    )]
    PostgresNotInstalled,
    #[error(
        "PostgreSQL refuses to run as root, and this machine does not allow the user namespace `aerogrid dev` would run it in ({0}); run as a regular user or set DATABASE_URL"
    )]
    PostgresAsRoot(std::io::Error),
    #[error("{what} failed{status}; last lines of `{log}`:\n{tail}")]
    ChildFailed { what: &'static str, status: String, log: PathBuf, tail: String },
    #[error("{what} did not become ready within {seconds} s; last lines of `{log}`:\n{tail}")]
    NotReady { what: &'static str, seconds: u64, log: PathBuf, tail: String },
    #[error(
        "the local broker `tansu` is not installed (looked in AEROGRID_TANSU_BIN, PATH and ~/.cargo/bin): run `cargo xtask setup`, or set KAFKA_BROKERS to use another broker"
    )]
    BrokerNotInstalled,
    #[error("database setup failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}
