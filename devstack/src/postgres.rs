//! A private PostgreSQL cluster under `<data-dir>/postgres`.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};

use crate::{
    DataDirLock, Error, ManagedChild, Result,
    process::{self, Spawn},
};

const SUPERUSER: &str = "aerogrid";
const DATABASE: &str = "aerogrid";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server started from the machine's binaries, listening on a free loopback port
/// (password auth, no Unix socket), its cluster initialised on first use and reused after.
#[derive(Debug)]
pub struct PrivatePostgres {
    child: ManagedChild,
    url: String,
}

impl PrivatePostgres {
    /// Initialises the cluster in `dir` if needed, starts it and creates the `aerogrid` database.
    pub async fn start(dir: &Path, lock: &DataDirLock) -> Result<Self> {
        Self::start_on(dir, lock, None).await
    }

    /// As [`Self::start`], on `preferred_port` if that is free (a restart keeps its URL).
    pub async fn start_on(
        dir: &Path,
        lock: &DataDirLock,
        preferred_port: Option<u16>,
    ) -> Result<Self> {
        let bindir = find_bindir()?;
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::io(format!("creating `{}`", dir.display()), source))?;
        let data = dir.join("data");
        let password_file = dir.join("password");
        let log = dir.join("postgres.log");
        let initdb_log = dir.join("initdb.log");
        let spawn =
            |what, log| Spawn { what, log, stop_signal: libc::SIGINT, lock, leave_root: true };

        if !data.join("PG_VERSION").exists() {
            init_cluster(&bindir, dir, &data, &password_file, &spawn("initdb", &initdb_log))
                .await?;
        }
        let password = std::fs::read_to_string(&password_file).map_err(|source| {
            Error::io(format!("reading `{}`", password_file.display()), source)
        })?;
        let password = password.trim();

        // The free port is found by binding and releasing it, so another process can take it
        // before PostgreSQL binds it (tests start many stacks at once): then try another.
        let mut attempts = 0;
        let (child, server_url, mut connection) = loop {
            attempts += 1;
            let port = if attempts == 1 {
                crate::loopback_port_or_free(preferred_port)?
            } else {
                crate::free_loopback_port()?
            };
            let mut command = tokio::process::Command::new(bindir.join("postgres"));
            command.arg("-D").arg(&data).args(["-p", &port.to_string()]).args([
                "-c",
                "listen_addresses=127.0.0.1",
                // No socket: nothing to collide with, and no path-length limit on deep data dirs.
                "-c",
                "unix_socket_directories=",
                "-c",
                "logging_collector=off",
            ]);
            let mut child = process::spawn(command, &spawn("PostgreSQL", &log))?;
            let server_url = format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}");
            match wait_until_ready(&mut child, &server_url, &log).await {
                Ok(connection) => break (child, server_url, connection),
                Err(error) => {
                    child.stop().await;
                    let port_taken = std::fs::read_to_string(&log)
                        .is_ok_and(|text| text.contains("Address already in use"));
                    if !port_taken || attempts >= 3 {
                        return Err(error);
                    }
                    tracing::info!(port, "PostgreSQL's port was taken meanwhile; trying another.");
                }
            }
        };
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut connection)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut connection).await?;
        }
        let _ = connection.close().await;
        Ok(Self { child, url: format!("{server_url}/{DATABASE}") })
    }

    /// The `DATABASE_URL` of the `aerogrid` database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn child(&mut self) -> &mut ManagedChild {
        &mut self.child
    }

    /// Fast shutdown (SIGINT): open transactions are rolled back, the data is safe.
    pub async fn stop(self) {
        self.child.stop().await;
    }
}

/// initdb into a scratch dir renamed into place at the end, so an interrupted first run never
/// leaves a half-made cluster behind.
async fn init_cluster(
    bindir: &Path,
    dir: &Path,
    data: &Path,
    password_file: &Path,
    spawn: &Spawn<'_>,
) -> Result<()> {
    tracing::info!(dir = %data.display(), "Creating the PostgreSQL cluster (first run).");
    let scratch = dir.join("data.initdb");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|source| Error::io(format!("removing `{}`", scratch.display()), source))?;
    }
    let password = crate::random_alphanumeric(32);
    std::fs::write(password_file, &password)
        .and_then(|()| {
            std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600))
        })
        .map_err(|source| Error::io(format!("writing `{}`", password_file.display()), source))?;

    let mut command = tokio::process::Command::new(bindir.join("initdb"));
    command
        .arg("-D")
        .arg(&scratch)
        .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"])
        .arg(format!("--pwfile={}", password_file.display()))
        .arg("--no-instructions");
    process::run_to_completion(command, spawn).await?;
    std::fs::rename(&scratch, data).map_err(|source| {
        Error::io(format!("moving the new cluster to `{}`", data.display()), source)
    })
}

async fn wait_until_ready(
    child: &mut ManagedChild,
    server_url: &str,
    log: &Path,
) -> Result<PgConnection> {
    let started = Instant::now();
    let url = format!("{server_url}/postgres");
    loop {
        if let Some(exit) = child.check_exited() {
            return Err(Error::ChildFailed {
                what: "PostgreSQL",
                status: format!(" ({})", exit.status),
                log: exit.log,
                tail: exit.tail,
            });
        }
        match PgConnection::connect(&url).await {
            Ok(connection) => return Ok(connection),
            Err(error) if started.elapsed() > READY_TIMEOUT => {
                tracing::debug!(%error, "PostgreSQL still refuses connections.");
                return Err(Error::NotReady {
                    what: "PostgreSQL",
                    seconds: READY_TIMEOUT.as_secs(),
                    log: log.to_owned(),
                    tail: process::log_tail(log),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Where `initdb` and `postgres` are: AEROGRID_PG_BINDIR, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, then PATH.
fn find_bindir() -> Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("AEROGRID_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) { Ok(dir) } else { Err(Error::PostgresNotInstalled) };
    }
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    // Newest major version first.
    debian.sort_by_key(|dir| {
        let version = dir.parent().and_then(Path::file_name).and_then(|name| name.to_str());
        std::cmp::Reverse(version.and_then(|version| version.parse::<u32>().ok()).unwrap_or(0))
    });
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    from_pg_config
        .into_iter()
        .chain(debian)
        .chain(on_path)
        .find(|dir| has_server(dir))
        .ok_or(Error::PostgresNotInstalled)
}
