//! The files `aerogrid dev` writes into its data dir for people and scripts (DESIGN.md,
//! Interfaces): `url`, `broker`, `admin-token`, `login-url`, plus `database-url`.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

pub(crate) const URL: &str = "url";
pub(crate) const BROKER: &str = "broker";
pub(crate) const ADMIN_TOKEN: &str = "admin-token";
pub(crate) const LOGIN_URL: &str = "login-url";
pub(crate) const DATABASE_URL: &str = "database-url";

pub(crate) struct DataFiles {
    dir: PathBuf,
}

impl DataFiles {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    pub(crate) fn read(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// Writes `contents` (plus a newline) atomically; `secret` files are readable by the owner
    /// only.
    pub(crate) fn write(&self, name: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        let scratch = self.dir.join(format!(".{name}.tmp"));
        let mode = if secret { 0o600 } else { 0o644 };
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&scratch);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&scratch)?;
            writeln!(file, "{contents}")?;
            file.sync_all()?;
            std::fs::rename(&scratch, &path)
        };
        write().with_context(|| format!("writing `{}`", path.display()))
    }

    /// Removes files that describe a running stack, so nobody reads a stale address.
    pub(crate) fn remove_running(&self) {
        for name in [URL, BROKER, LOGIN_URL, DATABASE_URL] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}
