//! The local Kafka-compatible broker: tansu, installed by `cargo xtask setup`.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    DataDirLock, Error, ManagedChild, Result,
    process::{self, Spawn},
};

/// The tansu release the project is tested with (`cargo xtask setup` installs it).
pub const TANSU_VERSION: &str = "0.6.0";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the local broker keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerStorage {
    /// SQLite under `<data-dir>/broker`: topics and offsets survive a restart.
    #[default]
    Sqlite,
    /// In memory: everything is gone when the broker stops, and tansu 0.6's memory engine
    /// skips the rest of a record batch when a consumer resumes inside it (a restarted app can
    /// miss records). For throwaway experiments only.
    Memory,
}

impl fmt::Display for BrokerStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
        })
    }
}

/// A tansu broker on a loopback port.
#[derive(Debug)]
pub struct LocalBroker {
    child: ManagedChild,
    address: String,
    storage: BrokerStorage,
    dir: PathBuf,
}

impl LocalBroker {
    /// Starts tansu with its data in `dir`, on `preferred_port` if that is free (so clients
    /// configured by hand keep working across restarts), else on a free port.
    pub async fn start(
        dir: &Path,
        storage: BrokerStorage,
        preferred_port: Option<u16>,
        lock: &DataDirLock,
    ) -> Result<Self> {
        let binary = find_tansu().ok_or(Error::BrokerNotInstalled)?;
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::io(format!("creating `{}`", dir.display()), source))?;
        let port = crate::loopback_port_or_free(preferred_port)?;
        let address = format!("127.0.0.1:{port}");
        let listener = format!("tcp://{address}");
        let engine = match storage {
            // tansu resolves the path against its working directory.
            BrokerStorage::Sqlite => "sqlite://tansu.db",
            BrokerStorage::Memory => "memory://tansu/",
        };
        let log = dir.join("tansu.log");
        let mut command = tokio::process::Command::new(&binary);
        command
            .arg("broker")
            .args(["--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", engine, "--cluster-id", "aerogrid-dev"])
            .current_dir(dir)
            // tansu reads its settings from the environment too: give it none of ours.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn");
        let spawn = Spawn {
            what: "broker (tansu)",
            log: &log,
            stop_signal: libc::SIGTERM,
            lock,
            leave_root: false,
        };
        let mut child = process::spawn(command, &spawn)?;
        if let Err(error) = wait_until_listening(&mut child, port, &log).await {
            child.stop().await;
            return Err(error);
        }
        Ok(Self { child, address, storage, dir: dir.to_owned() })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Plain words on whether the broker's data survives a restart.
    pub fn durability(&self) -> String {
        match self.storage {
            BrokerStorage::Sqlite => {
                format!("kept in `{}`, survives restarts", self.dir.join("tansu.db").display())
            }
            BrokerStorage::Memory => "in memory: topics and messages are LOST when `aerogrid dev` stops, and restarted apps may skip records (tansu's memory engine)".to_owned(),
        }
    }

    pub fn child(&mut self) -> &mut ManagedChild {
        &mut self.child
    }

    pub async fn stop(self) {
        self.child.stop().await;
    }
}

async fn wait_until_listening(child: &mut ManagedChild, port: u16, log: &Path) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(exit) = child.check_exited() {
            return Err(Error::ChildFailed {
                what: "broker (tansu)",
                status: format!(" ({})", exit.status),
                log: exit.log,
                tail: exit.tail,
            });
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::NotReady {
                what: "broker (tansu)",
                seconds: READY_TIMEOUT.as_secs(),
                log: log.to_owned(),
                tail: process::log_tail(log),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// AEROGRID_TANSU_BIN, then `tansu` on PATH, then cargo's bin dir.
fn find_tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AEROGRID_TANSU_BIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
}
