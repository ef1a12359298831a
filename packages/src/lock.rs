//! Locking requirements with uv (`uv pip compile`): exact versions and the hashes of their
//! files, for the interpreter and platform the runtime runs, wheels only.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::io::AsyncWriteExt;

use crate::{LineError, Requirements};

/// Where and how uv runs.
#[derive(Clone, Debug)]
pub struct Uv {
    pub binary: PathBuf,
    /// uv's download cache (shared by every lock and install of this process).
    pub cache_dir: PathBuf,
    /// The operator's index (PyPI when None) and extra indexes; they may hold credentials,
    /// which never appear in what this crate returns.
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    /// Longest a lock may take (uv's own retries included).
    pub timeout: Duration,
}

/// The interpreter and platform a lock is for: the runtime's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `3.11`
    pub python_version: String,
    /// As uv names platforms, e.g. `x86_64-manylinux_2_28`.
    pub platform: String,
}

impl Target {
    /// The interpreter connectors embed (CPython 3.11) on this machine's architecture, for
    /// glibc 2.28 and later (what manylinux wheels of the last years are built for).
    pub fn runtime() -> Self {
        Self {
            python_version: "3.11".into(),
            platform: format!("{}-manylinux_2_28", std::env::consts::ARCH),
        }
    }
}

/// Exact versions with their hashes, in pip's requirements format (what an install takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub text: String,
}

impl Lock {
    /// Whether the text is what `uv pip compile --generate-hashes` writes and nothing else:
    /// pins (`name==version`) and their hashes. A lock is installed as it is, so nothing else
    /// may reach uv through it.
    pub fn check(&self) -> Result<(), String> {
        for (index, line) in self.text.lines().enumerate() {
            let line = line.trim_end_matches('\\').trim();
            let pin = |line: &str| {
                let (name, version) = line.split_once("==")?;
                let name_ok = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                let version_ok = !version.is_empty()
                    && version.chars().all(|c| c.is_ascii_alphanumeric() || ".+!-_".contains(c));
                (name_ok && version_ok).then_some(())
            };
            let hash = |line: &str| {
                let digest = line.strip_prefix("--hash=sha256:")?;
                (digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit())).then_some(())
            };
            if !(line.is_empty() || pin(line).is_some() || hash(line).is_some()) {
                return Err(format!("line {} of the lock is not a pin or a hash", index + 1));
            }
        }
        Ok(())
    }

    /// `(name, version)` of every locked package, dependencies included.
    pub fn packages(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter(|line| !line.starts_with([' ', '#']) && !line.trim().is_empty())
            .filter_map(|line| {
                let pin = line.trim_end_matches('\\').trim();
                let pin = pin.split(';').next().unwrap_or(pin).trim();
                let (name, version) = pin.split_once("==")?;
                Some((name.trim().to_owned(), version.trim().to_owned()))
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The user's to fix: what is wrong, on the lines it concerns.
    #[error("the requirements cannot be installed")]
    Requirements(Vec<LineError>),
    /// Not the user's error: the index cannot be reached now (try again later).
    #[error("the package index cannot be reached: {0}")]
    Unavailable(String),
    /// uv is missing or failed in a way that names no requirement.
    #[error("uv: {0}")]
    Tool(String),
}

/// Locks at once in this process.
static LOCK_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Variables uv may have from this process: where programs are, and how to reach an index
/// (proxies, certificates). Nothing else: the server's own secrets stay with the server, and uv
/// would expand `${VARIABLE}` in what it reads.
const PASSED_TO_UV: &[&str] = &[
    "PATH",
    "HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

impl Uv {
    /// uv with a cleared environment, in an empty directory, killed when dropped. The indexes
    /// go by environment (`UV_INDEX_URL`, `UV_EXTRA_INDEX_URL`), not the command line that any
    /// process may read in `/proc`.
    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command.env_clear();
        for name in PASSED_TO_UV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("UV_NO_PROGRESS", "1");
        if let Some(index) = &self.index_url {
            command.env("UV_INDEX_URL", index);
        }
        if !self.extra_index_urls.is_empty() {
            command.env("UV_EXTRA_INDEX_URL", self.extra_index_urls.join(" "));
        }
        // An empty directory of its own beside the cache (uv refuses to run inside its cache):
        // no project file or `.env` of the server's working directory is read.
        let work = self.cache_dir.with_extension("work");
        if std::fs::create_dir_all(&work).is_ok() {
            command.current_dir(&work);
        }
        command.kill_on_drop(true);
        command
    }

    /// Resolves `requirements` for `target`. An empty set locks to an empty lock, without uv.
    pub async fn lock(
        &self,
        requirements: &Requirements,
        target: &Target,
    ) -> Result<Lock, LockError> {
        if requirements.is_empty() {
            return Ok(Lock { text: String::new() });
        }
        // A few at once per process (each is a uv process resolving against the index); the
        // wait counts in the timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let busy = || LockError::Unavailable("too many locks at once here: try again".into());
        let _slot = tokio::time::timeout_at(deadline, LOCK_SLOTS.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let mut command = self.command();
        command
            .args(["pip", "compile", "-", "--generate-hashes", "--no-header", "--no-annotate"])
            .args(["--only-binary", ":all:", "--quiet", "--no-config", "--color", "never"])
            .args([
                "--python-version",
                &target.python_version,
                "--python-platform",
                &target.platform,
            ])
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|error| {
            LockError::Tool(format!("cannot run {}: {error}", self.binary.display()))
        })?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = requirements.to_uv_input();
        let run = async move {
            stdin.write_all(input.as_bytes()).await?;
            drop(stdin);
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => return Err(LockError::Tool(error.to_string())),
            Err(_) => {
                return Err(LockError::Unavailable(format!(
                    "locking took longer than {} s",
                    self.timeout.as_secs()
                )));
            }
        };
        if output.status.success() {
            let lock = Lock { text: String::from_utf8_lossy(&output.stdout).into_owned() };
            lock.check().map_err(|why| {
                LockError::Tool(format!("uv wrote a lock that is not one: {why}"))
            })?;
            return Ok(lock);
        }
        Err(failure(requirements, &redact(&String::from_utf8_lossy(&output.stderr))))
    }
}

/// What uv's error says, as the user's error on the line it names, or as a fault.
fn failure(requirements: &Requirements, stderr: &str) -> LockError {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let text = lines.join("\n");
    if is_unreachable(&text) {
        return LockError::Unavailable(
            lines.first().map_or("", |line| line.trim_start_matches("error: ")).to_owned(),
        );
    }
    if !text.contains("No solution found") && !text.contains("Couldn't parse requirement") {
        return LockError::Tool(text);
    }
    // uv's reason (its `cause:` and `hint:` lines) is clear as it stands.
    let reason: Vec<&str> = lines
        .iter()
        .skip(1)
        .map(|line| line.trim_start_matches("cause: ").trim_start_matches("hint: "))
        .collect();
    let message = if reason.is_empty() { text.clone() } else { reason.join(" ") };
    // The requirement it names first; the first line when it names none.
    let line = requirements
        .packages
        .iter()
        .filter_map(|package| {
            let position = find_name(&message, &package.name)
                .or_else(|| find_name(&message, &package.normalized))?;
            Some((position, package.line))
        })
        .min()
        .map_or_else(
            || requirements.packages.first().map_or(1, |package| package.line),
            |(_, line)| line,
        );
    // Kept with the version and shown on every read: a bound, whatever uv says.
    let message = cut(message, 2000);
    let message = match unknown_package(&message).and_then(crate::suggest::did_you_mean) {
        Some(known) => format!("{message} (did you mean `{known}`?)"),
        None => message,
    };
    LockError::Requirements(vec![LineError { line, message }])
}

fn cut(text: String, bytes: usize) -> String {
    if text.len() <= bytes {
        return text;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The package uv says the index does not have ("Because numpyy was not found in the package
/// registry ...").
fn unknown_package(message: &str) -> Option<&str> {
    let before = message.split(" was not found in the package registry").next()?;
    (before.len() < message.len()).then(|| before.rsplit(' ').next()).flatten()
}

/// Whether uv's error says the index could not be reached (rather than what it holds).
pub(crate) fn is_unreachable(text: &str) -> bool {
    let signs = [
        "Failed to fetch",
        "Failed to download",
        "error sending request",
        "tcp connect error",
        "dns error",
        "timed out",
        "Request failed after",
    ];
    signs.iter().any(|sign| text.contains(sign))
        && !text.contains("not found in the package registry")
}

/// Where `name` appears in `text` as a whole name (`numpy` is not in `numpyy`; a `.` after it
/// ends a sentence unless more of a name follows).
fn find_name(text: &str, name: &str) -> Option<usize> {
    let continues_name = |rest: &str| {
        let mut chars = rest.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => true,
            Some('.') => chars.next().is_some_and(|c| c.is_ascii_alphanumeric()),
            _ => false,
        }
    };
    text.match_indices(name).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !continues_name(&text[at + name.len()..])
    })
}

/// `scheme://user:password@host` as `scheme://****@host`, wherever a URL appears.
pub(crate) fn redact(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        redacted.push_str(before);
        let authority_end = after.find(['/', ' ', ')', '\n']).unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(credentials_end) => {
                redacted.push_str("****");
                rest = &after[credentials_end..];
            }
            None => rest = after,
        }
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holds_pins_and_hashes_only() {
        let good = Lock {
            text: format!(
                "numpy==2.1.3 \\\n    --hash=sha256:{}\npandas==2.2.3+local \\\n",
                "a".repeat(64)
            ),
        };
        assert_eq!(good.check(), Ok(()));
        for bad in ["-r /etc/passwd\n", "numpy>=2\n", "numpy==2 ; ${X}\n", "--index-url http://x\n"]
        {
            assert!(Lock { text: bad.into() }.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact(
                "Failed to fetch: https://bob:hunter2@mirror.example/simple/numpy/ and http://plain.example/x"
            ),
            "Failed to fetch: https://****@mirror.example/simple/numpy/ and http://plain.example/x"
        );
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn uv_errors_land_on_the_line_they_name() {
        let requirements = Requirements::parse("# data\nnumpy\nnumpyy\n").unwrap();
        let stderr = "error: No solution found when resolving dependencies\n  cause: Because numpyy was not found in the package registry and you require numpyy, we can conclude that your requirements are unsatisfiable.\n";
        let LockError::Requirements(errors) = failure(&requirements, stderr) else { panic!() };
        assert_eq!(errors[0].line, 3);
        assert!(errors[0].message.starts_with("Because numpyy was not found"), "{errors:?}");
        assert!(errors[0].message.ends_with("(did you mean `numpy`?)"), "{errors:?}");
        let unreachable = "error: Request failed after 3 retries in 9.9s\n  cause: Failed to fetch: http://127.0.0.1:9/simple/numpy/\n";
        assert!(matches!(failure(&requirements, unreachable), LockError::Unavailable(_)));
        assert_eq!(find_name("you require numpy.", "numpy"), Some(12));
        assert_eq!(find_name("zope.interface and zope", "zope"), Some(19));
        assert_eq!(find_name("numpyy", "numpy"), None);
    }
}
