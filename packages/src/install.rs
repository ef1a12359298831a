//! Installing a lock into an environment: one directory per lock (named by its digest) under
//! the node's cache, shared by every app with that lock, read-only once complete. An install
//! goes to a scratch directory renamed into place when done, so a directory under its final
//! name is always complete, and a crash mid-install leaves only scratch.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Lock, PackageSettings, cache, lock::redact};

/// An installed environment: what the connector adds to `sys.path`. Held (not evicted from the
/// cache) while this value lives: an app keeps it for as long as it runs.
#[derive(Debug)]
pub struct Env {
    pub path: PathBuf,
    /// False when it was there already (another app, or an earlier Start, installed it).
    pub installed: bool,
    /// Bytes of less recently used environments removed to keep the cache within its bound.
    pub evicted_bytes: u64,
    _lease: cache::EnvLease,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "the requirements come to {count} packages with their dependencies; an app may have at most {limit}"
    )]
    TooManyPackages { count: usize, limit: usize },
    #[error(
        "the packages take {} MiB installed; an app's packages may take at most {} MiB",
        bytes >> 20,
        limit >> 20
    )]
    TooLarge { bytes: u64, limit: u64 },
    /// Not the app's error: the index cannot be reached or is too slow now (try again later).
    #[error("the package index cannot be reached: {0}")]
    Unavailable(String),
    /// The lock cannot be installed here (uv's reason).
    #[error("the packages cannot be installed: {0}")]
    Failed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl InstallError {
    /// Whether trying again later may succeed (the app waits rather than fails).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Io(_))
    }
}

/// Installs in this process, by digest: two Starts of one lock wait for one install.
static INSTALLING: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
/// Installs of different locks at once in this process (each is a uv process, downloading and
/// unpacking): more wait their turn, so many new locks at once cannot take every core.
static INSTALL_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl PackageSettings {
    /// The digest naming `lock`'s environment (the target is part of it).
    pub fn digest(&self, lock: &Lock) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.target.python_version.as_bytes());
        hasher.update(b"\n");
        hasher.update(self.target.platform.as_bytes());
        hasher.update(b"\n");
        hasher.update(lock.text.as_bytes());
        hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The environment of `lock`, installed if it is not yet. `progress` gets uv's lines
    /// (credentials redacted) as they come.
    pub async fn install(
        &self,
        lock: &Lock,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Env, InstallError> {
        lock.check().map_err(InstallError::Failed)?;
        let count = lock.packages().len();
        if count > self.limits.packages {
            return Err(InstallError::TooManyPackages { count, limit: self.limits.packages });
        }
        let digest = self.digest(lock);
        let path = self.envs_dir.join(&digest);
        let found = |path: &Path| {
            cache::lease(path).map(|lease| Env {
                path: path.to_path_buf(),
                installed: false,
                evicted_bytes: 0,
                _lease: lease,
            })
        };
        if let Some(env) = found(&path) {
            return Ok(env);
        }
        let gate = {
            let mut installing = INSTALLING.lock().expect("no panic holds the installs");
            installing.get_or_insert_with(HashMap::new).entry(digest.clone()).or_default().clone()
        };
        let _installing = gate.lock().await;
        if let Some(env) = found(&path) {
            return Ok(env);
        }
        let _slot = INSTALL_SLOTS.acquire().await.map_err(std::io::Error::other)?;
        let Some(uv) = &self.uv else {
            return Err(InstallError::Failed(
                "this node cannot install packages: uv is not found (--uv or PATH)".into(),
            ));
        };
        create_shared_dir(&self.envs_dir)?;
        // Scratch of installs that never finished (a node killed meanwhile) goes first.
        let envs_dir = self.envs_dir.clone();
        let stale_after = self.limits.install_time * 2;
        // (Best effort: what it cannot remove now, a later install tries again.)
        let _ = blocking(move || sweep_scratch(&envs_dir, stale_after)).await;
        // Unique, also among nodes sharing the cache (their process ids may be the same).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let scratch =
            self.envs_dir.join(format!(".installing-{digest}-{}-{nanos}", std::process::id()));
        let lock_file = scratch.with_extension("txt");
        std::fs::write(&lock_file, &lock.text)?;
        let limit = self.limits.env_bytes;
        let result = async {
            run_uv_install(uv, &self.target, &lock_file, &scratch, self.limits, progress).await?;
            let (from, to) = (scratch.clone(), path.clone());
            blocking(move || -> Result<(), InstallError> {
                let bytes = tree_size(&from)?;
                if bytes > limit {
                    return Err(InstallError::TooLarge { bytes, limit });
                }
                make_read_only(&from)?;
                cache::record(&to, bytes)?;
                match std::fs::rename(&from, &to) {
                    Ok(()) => Ok(()),
                    // Another node on this cache finished it first: theirs is the same.
                    Err(_) if to.is_dir() => remove_tree(&from).map_err(Into::into),
                    Err(error) => Err(error.into()),
                }
            })
            .await?
        }
        .await;
        let _ = std::fs::remove_file(&lock_file);
        if result.is_err() {
            let scratch = scratch.clone();
            let _ = blocking(move || remove_tree(&scratch)).await;
        }
        // What uv downloaded stays in its cache, even for an install refused as too large.
        bound_downloads(uv, self.limits.cache_bytes / 4).await;
        result?;
        let lease = cache::lease(&path).ok_or_else(|| {
            InstallError::Io(std::io::Error::other("the new environment disappeared"))
        })?;
        let (envs_dir, bound) = (self.envs_dir.clone(), self.limits.cache_bytes);
        let evicted_bytes = blocking(move || cache::evict(&envs_dir, bound)).await??;
        Ok(Env { path, installed: true, evicted_bytes, _lease: lease })
    }
}

/// uv's downloads are a cache too: past `limit` bytes they are cleared (environments are
/// copies, not links into it, so nothing installed depends on them; the next install of
/// something else downloads again).
async fn bound_downloads(uv: &crate::Uv, limit: u64) {
    let dir = uv.cache_dir.clone();
    let Ok(Ok(bytes)) = blocking(move || tree_size(&dir)).await else { return };
    if bytes <= limit {
        return;
    }
    let mut command = uv.command();
    command
        .args(["cache", "clean", "--cache-dir"])
        .arg(&uv.cache_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), command.status()).await;
}

/// File system work off the async threads (an environment is thousands of files).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)
}

/// Removes scratch (`.installing-*`, `*.evicted-*`) older than `stale_after`.
fn sweep_scratch(envs_dir: &Path, stale_after: std::time::Duration) -> std::io::Result<()> {
    for entry in std::fs::read_dir(envs_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // An install that never finished, or an eviction that never finished deleting.
        if !name.starts_with(".installing-") && !name.contains(".evicted-") {
            continue;
        }
        let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if age > stale_after {
            let path = entry.path();
            match entry.file_type()?.is_dir() {
                true => remove_tree(&path)?,
                false => std::fs::remove_file(&path)?,
            }
        }
    }
    Ok(())
}

async fn run_uv_install(
    uv: &crate::Uv,
    target: &crate::Target,
    lock_file: &Path,
    scratch: &Path,
    limits: crate::Limits,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(), InstallError> {
    let timeout = limits.install_time;
    let mut command = uv.command();
    command
        .args(["pip", "install", "--no-deps", "--require-hashes", "--only-binary", ":all:"])
        .args(["--no-config", "--color", "never", "--link-mode", "copy", "--compile-bytecode"])
        .args(["--python-version", &target.python_version])
        .args(["--python-platform", &target.platform])
        .arg("--target")
        .arg(scratch)
        .arg("--cache-dir")
        .arg(&uv.cache_dir)
        .arg("-r")
        .arg(lock_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child =
        command.spawn().map_err(|error| InstallError::Failed(format!("cannot run uv: {error}")))?;
    let stderr = child.stderr.take().expect("piped");
    let run = async {
        let mut lines = BufReader::new(stderr).lines();
        let mut kept = Vec::new();
        // The size is watched as uv writes: an environment beyond the limit is stopped before
        // it fills the disk, not measured after.
        let mut watch = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let Some(line) = line? else { break };
                    let line = redact(line.trim());
                    if line.is_empty() {
                        continue;
                    }
                    progress(line.clone());
                    // The reason of a failure is in its first lines; a bound on what is kept.
                    if kept.len() < 20 {
                        kept.push(line);
                    }
                }
                _ = watch.tick() => {
                    let at = scratch.to_path_buf();
                    let bytes = blocking(move || tree_size(&at).unwrap_or(0)).await?;
                    if bytes > limits.env_bytes {
                        return Err(InstallError::TooLarge { bytes, limit: limits.env_bytes });
                    }
                }
            }
        }
        Ok::<_, InstallError>((child.wait().await?, kept))
    };
    let (status, lines) = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(InstallError::Unavailable(format!(
                "installing took longer than {} s",
                timeout.as_secs()
            )));
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = lines.join(" ");
    if crate::lock::is_unreachable(&text) {
        return Err(InstallError::Unavailable(lines.first().cloned().unwrap_or_default()));
    }
    Err(InstallError::Failed(text))
}

/// The cache is read by connectors, which run as other users: its directories are
/// world-readable, writable by the node only.
fn create_shared_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

fn tree_size(root: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Directories `r-xr-xr-x`, files `r--r--r--` (`r-xr-xr-x` when executable): nobody writes an
/// environment once it is complete, connectors of any user read it.
fn make_read_only(root: &Path) -> std::io::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
                let mode = if executable { 0o555 } else { 0o444 };
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
            }
        }
        dirs.push(dir);
    }
    // Innermost last, so each directory is still writable while its entries change.
    for dir in dirs.iter().rev() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

/// Removes a tree, read-only parts included; nothing there is fine.
pub(crate) fn remove_tree(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_tree_is_read_only_and_still_removable() {
        let root = tempfile::tempdir().unwrap();
        let env = root.path().join("env");
        std::fs::create_dir_all(env.join("pkg/sub")).unwrap();
        std::fs::write(env.join("pkg/__init__.py"), "x = 1\n").unwrap();
        std::fs::write(env.join("pkg/sub/lib.so"), b"\x7fELF").unwrap();
        std::fs::set_permissions(env.join("pkg/sub/lib.so"), PermissionsExt::from_mode(0o755))
            .unwrap();
        make_read_only(&env).unwrap();
        let mode =
            |path: &str| std::fs::metadata(env.join(path)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("pkg"), 0o555);
        assert_eq!(mode("pkg/__init__.py"), 0o444);
        assert_eq!(mode("pkg/sub/lib.so"), 0o555);
        assert_eq!(tree_size(&env).unwrap(), 10);
        remove_tree(&env).unwrap();
        assert!(!env.exists());
        remove_tree(&env).unwrap();
    }
}
