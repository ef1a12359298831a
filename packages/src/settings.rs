//! What the operator sets for apps' packages (`aerogrid server`, `runtime` and `dev` share the
//! flags), and the settings made of them.

use std::{path::PathBuf, time::Duration};

use crate::{Target, Uv};

/// Flags for apps' Python packages.
#[derive(Clone, Debug, clap::Args)]
pub struct PythonArgs {
    /// uv, which resolves and installs apps' packages (default: `uv` on PATH). Without it,
    /// apps can import the standard library only.
    #[arg(long, env = "AEROGRID_UV")]
    pub uv: Option<PathBuf>,
    /// The package index to resolve and install from (default: PyPI), e.g. a company's mirror.
    /// Credentials in it never reach connectors or logs.
    #[arg(long, env = "AEROGRID_PYTHON_INDEX_URL")]
    pub python_index_url: Option<String>,
    /// More indexes, searched after the first. Repeat, or separate with spaces (as pip's
    /// `PIP_EXTRA_INDEX_URL`).
    #[arg(long, env = "AEROGRID_PYTHON_EXTRA_INDEX_URL", value_delimiter = ' ')]
    pub python_extra_index_url: Vec<String>,
    /// Where apps' environments (one per lock, shared, read-only) and uv's downloads are kept
    /// (default: `<data-dir>/python` for `aerogrid dev`; otherwise `/var/cache/aerogrid/python`
    /// as root, `$XDG_CACHE_HOME/aerogrid/python` or `~/.cache/aerogrid/python` else). As root,
    /// connectors run as other users: every directory above it must be searchable by all.
    #[arg(long, env = "AEROGRID_PYTHON_CACHE_DIR")]
    pub python_cache_dir: Option<PathBuf>,
    /// Packages one app's lock may hold, its dependencies included.
    #[arg(long, env = "AEROGRID_MAX_PYTHON_PACKAGES", default_value_t = 100)]
    pub max_python_packages: usize,
    /// Size of one app's installed environment, in MiB.
    #[arg(long, env = "AEROGRID_MAX_PYTHON_ENV_MIB", default_value_t = 1024)]
    pub max_python_env_mib: u64,
    /// Size of all the environments a node keeps, in MiB: past it, the least recently used that
    /// no running app holds are removed (and installed again when an app needs one).
    #[arg(long, env = "AEROGRID_MAX_PYTHON_CACHE_MIB", default_value_t = 20_480)]
    pub max_python_cache_mib: u64,
    /// Seconds a lock or an install may take (downloads included) before it is given up
    /// (and retried later: a slow index is not the app's fault).
    #[arg(long, env = "AEROGRID_MAX_PYTHON_INSTALL_SECONDS", default_value_t = 300.0)]
    pub max_python_install_seconds: f64,
}

/// Bounds on one app's packages.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub packages: usize,
    pub env_bytes: u64,
    /// All environments of a node.
    pub cache_bytes: u64,
    pub install_time: Duration,
}

/// Packages as this process handles them: uv (None when it cannot be found), the cache, the
/// limits.
#[derive(Clone, Debug)]
pub struct PackageSettings {
    pub uv: Option<Uv>,
    /// Environments, by lock digest.
    pub envs_dir: PathBuf,
    pub limits: Limits,
    pub target: Target,
}

impl PythonArgs {
    /// The settings; `data_dir` is where `python/` goes when no cache dir is given.
    pub fn settings(&self, data_dir: Option<&std::path::Path>) -> PackageSettings {
        let cache = self.python_cache_dir.clone().unwrap_or_else(|| match data_dir {
            Some(dir) => dir.join("python"),
            None => default_cache_home().join("aerogrid").join("python"),
        });
        let install_time = Duration::try_from_secs_f64(self.max_python_install_seconds.max(1.0))
            .unwrap_or(Duration::from_secs(300));
        let binary = self.uv.clone().or_else(|| find_on_path("uv"));
        let uv = binary.map(|binary| Uv {
            binary,
            cache_dir: cache.join("uv-cache"),
            index_url: self.python_index_url.clone(),
            extra_index_urls: self.python_extra_index_url.clone(),
            timeout: install_time,
        });
        PackageSettings {
            uv,
            envs_dir: cache.join("envs"),
            limits: Limits {
                packages: self.max_python_packages,
                env_bytes: self.max_python_env_mib.saturating_mul(1 << 20),
                cache_bytes: self.max_python_cache_mib.saturating_mul(1 << 20),
                install_time,
            },
            target: Target::runtime(),
        }
    }
}

impl Default for PythonArgs {
    fn default() -> Self {
        Self {
            uv: None,
            python_index_url: None,
            python_extra_index_url: Vec::new(),
            python_cache_dir: None,
            max_python_packages: 100,
            max_python_env_mib: 1024,
            max_python_cache_mib: 20_480,
            max_python_install_seconds: 300.0,
        }
    }
}

fn default_cache_home() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code, reason = "geteuid has no safe wrapper in std")]
    if unsafe { libc::geteuid() } == 0 {
        // Root's home is closed to the connectors' users.
        return PathBuf::from("/var/cache");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The first existing directory on the way to `path` (itself included) that users other than
/// its owner cannot search: connectors running as other users cannot reach what is below it.
pub fn closed_ancestor(path: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let absolute = std::path::absolute(path).ok()?;
    absolute
        .ancestors()
        .filter_map(|dir| std::fs::metadata(dir).ok().map(|metadata| (dir, metadata)))
        .find(|(_, metadata)| metadata.is_dir() && metadata.permissions().mode() & 0o001 == 0)
        .map(|(dir, _)| dir.to_path_buf())
}
