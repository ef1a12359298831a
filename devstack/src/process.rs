//! Starting and stopping the dev stack's child processes.

use std::{
    ffi::CString,
    fmt,
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use crate::{DataDirLock, Error, Result};

/// How long a child gets to stop after its stop signal before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A child process of the dev stack, with its log file.
#[derive(Debug)]
pub struct ManagedChild {
    what: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
    stop_signal: i32,
}

/// Why a child is gone.
#[derive(Debug)]
pub struct ChildExit {
    pub what: &'static str,
    pub status: String,
    pub log: PathBuf,
    pub tail: String,
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exited unexpectedly ({})", self.what, self.status)?;
        if !self.tail.is_empty() {
            write!(f, "; last lines of `{}`:\n{}", self.log.display(), self.tail)?;
        }
        Ok(())
    }
}

/// Options for [`spawn`].
pub(crate) struct Spawn<'a> {
    pub(crate) what: &'static str,
    pub(crate) log: &'a Path,
    /// Sent to stop the child gracefully, and by the kernel if `aerogrid dev` dies first.
    pub(crate) stop_signal: i32,
    pub(crate) lock: &'a DataDirLock,
    /// Run as a non-root user inside a user namespace when we are root (PostgreSQL refuses root).
    pub(crate) leave_root: bool,
}

/// Opens (rotating the previous run's log to `.1`) the log file a child writes to.
pub(crate) fn open_log(log: &Path) -> Result<File> {
    if log.exists() {
        let previous = log.with_extension("log.1");
        std::fs::rename(log, &previous)
            .map_err(|source| Error::io(format!("rotating `{}`", log.display()), source))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::io(format!("opening `{}`", log.display()), source))
}

/// Configures `command` so that the child keeps the data-dir lock, dies with us, writes to `log`
/// and, where asked, leaves root.
pub(crate) fn prepare(command: &mut tokio::process::Command, options: &Spawn<'_>) -> Result<()> {
    let log = open_log(options.log)?;
    let log_err =
        log.try_clone().map_err(|source| Error::io("duplicating a log descriptor", source))?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
    let hooks = ChildHooks::new(options);
    #[allow(unsafe_code, reason = "pre_exec runs between fork and exec")]
    // SAFETY: the hook only makes async-signal-safe system calls on memory prepared before fork.
    unsafe {
        command.pre_exec(move || hooks.run());
    }
    Ok(())
}

/// Runs a short-lived tool (initdb) to completion with the same hooks as a long-lived child.
pub(crate) async fn run_to_completion(
    mut command: tokio::process::Command,
    options: &Spawn<'_>,
) -> Result<()> {
    prepare(&mut command, options)?;
    let status = command.status().await.map_err(|source| spawn_error(options, source))?;
    if status.success() {
        return Ok(());
    }
    Err(Error::ChildFailed {
        what: options.what,
        status: format!(" ({})", describe_status(status)),
        log: options.log.to_owned(),
        tail: log_tail(options.log),
    })
}

pub(crate) fn spawn(
    mut command: tokio::process::Command,
    options: &Spawn<'_>,
) -> Result<ManagedChild> {
    prepare(&mut command, options)?;
    let child = command.spawn().map_err(|source| spawn_error(options, source))?;
    Ok(ManagedChild {
        what: options.what,
        child,
        log: options.log.to_owned(),
        stop_signal: options.stop_signal,
    })
}

fn spawn_error(options: &Spawn<'_>, source: std::io::Error) -> Error {
    if options.leave_root && source.raw_os_error().is_some_and(|code| code == libc::EPERM) {
        return Error::PostgresAsRoot(source);
    }
    Error::io(format!("starting {}", options.what), source)
}

impl ManagedChild {
    /// Waits until the child exits by itself. Cancel-safe.
    pub async fn exited(&mut self) -> ChildExit {
        let status = match self.child.wait().await {
            Ok(status) => describe_status(status),
            Err(error) => format!("cannot wait for it: {error}"),
        };
        ChildExit { what: self.what, status, log: self.log.clone(), tail: log_tail(&self.log) }
    }

    /// `Some` if the child has exited already.
    pub(crate) fn check_exited(&mut self) -> Option<ChildExit> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(ChildExit {
                what: self.what,
                status: describe_status(status),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
            Ok(None) | Err(_) => None,
        }
    }

    /// Stops the child with its stop signal, killing it if it has not exited after a grace period.
    pub async fn stop(mut self) {
        let Some(pid) = self.child.id() else { return };
        send_signal(pid, self.stop_signal);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(_) => tracing::debug!(what = self.what, "Stopped."),
            Err(_) => {
                tracing::warn!(what = self.what, "Did not stop within {STOP_GRACE:?}; killing it.");
                let _ = self.child.kill().await;
            }
        }
    }
}

#[allow(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
fn send_signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: plain system call; the pid is our own child, not yet reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
        (None, None) => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    const TAIL_BYTES: u64 = 4096;
    const TAIL_LINES: usize = 15;
    let Ok(mut file) = File::open(log) else { return String::new() };
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// What the child does between fork and exec. Everything is prepared before fork: after fork
/// only async-signal-safe calls are allowed.
struct ChildHooks {
    parent: libc::pid_t,
    lock_fd: i32,
    death_signal: i32,
    user_namespace: Option<UserNamespace>,
}

/// Maps our root to an ordinary user id inside a new user namespace: the child is not root
/// (so PostgreSQL accepts to run) yet owns the same files we do.
struct UserNamespace {
    setgroups: CString,
    uid_map: CString,
    gid_map: CString,
    uid_line: Vec<u8>,
    gid_line: Vec<u8>,
}

/// The user and group the child is inside its user namespace: the `postgres` account where the
/// machine has one, else `nobody`. initdb needs an id that has a passwd entry.
fn namespace_ids() -> (u32, u32) {
    const NOBODY: (u32, u32) = (65534, 65534);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .filter(|&(uid, _)| uid != 0)
        .unwrap_or(NOBODY)
}

#[allow(unsafe_code, reason = "libc calls between fork and exec")]
impl ChildHooks {
    fn new(options: &Spawn<'_>) -> Self {
        // SAFETY: plain system calls without arguments.
        let (parent, euid, egid) = unsafe { (libc::getpid(), libc::geteuid(), libc::getegid()) };
        let user_namespace = (options.leave_root && euid == 0).then(|| {
            let (uid, gid) = namespace_ids();
            UserNamespace {
                setgroups: CString::new("/proc/self/setgroups").expect("no NUL"),
                uid_map: CString::new("/proc/self/uid_map").expect("no NUL"),
                gid_map: CString::new("/proc/self/gid_map").expect("no NUL"),
                uid_line: format!("{uid} {euid} 1").into_bytes(),
                gid_line: format!("{gid} {egid} 1").into_bytes(),
            }
        });
        Self {
            parent,
            lock_fd: options.lock.raw_fd(),
            death_signal: options.stop_signal,
            user_namespace,
        }
    }

    fn run(&self) -> std::io::Result<()> {
        if let Some(namespace) = &self.user_namespace {
            // SAFETY: async-signal-safe system calls; the strings were allocated before fork.
            unsafe {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                write_file(&namespace.setgroups, b"deny")?;
                write_file(&namespace.uid_map, &namespace.uid_line)?;
                write_file(&namespace.gid_map, &namespace.gid_line)?;
            }
        }
        // SAFETY: async-signal-safe system calls on plain integers.
        unsafe {
            // Keep the data-dir lock open across exec: it is released only when we are all gone.
            if libc::fcntl(self.lock_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, self.death_signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the death signal was armed.
            if libc::getppid() != self.parent {
                return Err(std::io::Error::other("parent exited"));
            }
        }
        Ok(())
    }
}

/// # Safety
/// Async-signal-safe: open, write and close only.
#[allow(unsafe_code, reason = "libc calls between fork and exec")]
unsafe fn write_file(path: &CString, contents: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is a valid C string and `contents` a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        libc::close(fd);
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
