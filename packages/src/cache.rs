//! The node's environments as a bounded cache. Each environment's size is kept beside it
//! (`<digest>.size`), whose time is touched at every use; once they add up to more than
//! `--max-python-cache-mib`, the least recently used ones that no app of this process holds are
//! removed (an app holds its environment for as long as it runs: [`EnvLease`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Environments held by running apps of this process, with how many hold each.
static IN_USE: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

/// An app's hold on its environment: not removed while held.
#[derive(Debug)]
pub struct EnvLease {
    path: PathBuf,
}

impl Drop for EnvLease {
    fn drop(&mut self) {
        let mut in_use = IN_USE.lock().expect("no panic holds the leases");
        let held = in_use.get_or_insert_with(HashMap::new);
        if let Some(count) = held.get_mut(&self.path) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.path);
            }
        }
    }
}

/// Holds the environment at `path`, if it is (still) there.
pub(crate) fn lease(path: &Path) -> Option<EnvLease> {
    let mut in_use = IN_USE.lock().expect("no panic holds the leases");
    // Under the lock: eviction cannot remove it between the check and the hold.
    if !path.is_dir() {
        return None;
    }
    *in_use.get_or_insert_with(HashMap::new).entry(path.to_path_buf()).or_default() += 1;
    let _ = touch(path);
    Some(EnvLease { path: path.to_path_buf() })
}

fn size_file(env: &Path) -> PathBuf {
    env.with_extension("size")
}

/// Keeps the size of a new environment beside it.
pub(crate) fn record(env: &Path, bytes: u64) -> std::io::Result<()> {
    std::fs::write(size_file(env), bytes.to_string())
}

fn touch(env: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(size_file(env))?
        .set_modified(std::time::SystemTime::now())
}

/// Removes the least recently used environments no app holds until those left take at most
/// `limit` bytes; returns how many bytes it removed.
pub(crate) fn evict(envs_dir: &Path, limit: u64) -> std::io::Result<u64> {
    let mut envs = Vec::new();
    for entry in std::fs::read_dir(envs_dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "size") {
            continue;
        }
        // Another eviction may be removing it: then it is not counted.
        let (Ok(text), Ok(metadata)) = (std::fs::read_to_string(&path), std::fs::metadata(&path))
        else {
            continue;
        };
        let bytes: u64 = text.trim().parse().unwrap_or(0);
        envs.push((metadata.modified()?, bytes, path.with_extension("")));
    }
    let mut total: u64 = envs.iter().map(|(_, bytes, _)| bytes).sum();
    envs.sort();
    let mut removed = 0;
    for (_, bytes, env) in envs {
        if total <= limit {
            break;
        }
        // Under the lock only the renames (nobody can hold it meanwhile), the deletion after.
        let trash = env.with_extension(format!("evicted-{}", std::process::id()));
        {
            let in_use = IN_USE.lock().expect("no panic holds the leases");
            if in_use.as_ref().is_some_and(|held| held.contains_key(&env)) {
                continue;
            }
            match std::fs::rename(&env, &trash) {
                Ok(()) => {}
                // Gone (another eviction, or a size kept for an install that never landed).
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(size_file(&env));
                    total -= bytes;
                    continue;
                }
                Err(error) => return Err(error),
            }
            let _ = std::fs::remove_file(size_file(&env));
        }
        crate::install::remove_tree(&trash)?;
        total -= bytes;
        removed += bytes;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_free_environments_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, bytes: u64| {
            let env = dir.path().join(name);
            std::fs::create_dir(&env).unwrap();
            record(&env, bytes).unwrap();
            env
        };
        let (old, held, recent) = (make("old", 60), make("held", 60), make("recent", 60));
        let lease_held = lease(&held).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(lease(&recent).unwrap());
        // 180 bytes, at most 100: `held` is older than `recent` but held, so `old` and then
        // `recent` would go; `old` alone brings it to 120, `recent` to 60.
        assert_eq!(evict(dir.path(), 100).unwrap(), 120);
        assert!(!old.exists() && !recent.exists() && held.exists());
        drop(lease_held);
        assert_eq!(evict(dir.path(), 100).unwrap(), 0, "within the limit");
        assert!(lease(&old).is_none(), "a removed environment cannot be held");
    }
}
