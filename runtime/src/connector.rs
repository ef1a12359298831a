//! Connector processes: spawning them ahead of time (the warm pool) and talking to one over its
//! pipes (`proto/aerogrid/runtime/v1/connector.proto`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use aerogrid_proto::runtime::{
    pipe,
    v1::{ConnectorMessage, NodeMessage, connector_message::Kind, node_message},
};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::mpsc,
};

use crate::{Error, Result};

/// How long a new connector process may take to start its interpreter.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running connector process, idle (from the pool) or running an app.
///
/// Requests may be pipelined (`send` several, then `receive` their answers in order): a task
/// reads the answers as they come, so the connector never blocks writing one.
pub(crate) struct ConnectorProcess {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    answers: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// The user it runs as, given back when it is gone.
    _uid: Option<UidLease>,
}

/// User ids for connectors, when the node runs as root: each connector process gets one no
/// other running connector has (`--connector-uids`).
#[derive(Clone, Debug)]
pub(crate) struct ConnectorUids {
    inner: std::sync::Arc<std::sync::Mutex<UidPool>>,
}

#[derive(Debug)]
struct UidPool {
    first: u32,
    last: u32,
    /// Where the next search starts: uids are reused as late as possible.
    next: u32,
    in_use: std::collections::BTreeSet<u32>,
}

impl ConnectorUids {
    /// The ids `first..=last`.
    pub(crate) fn new(first: u32, last: u32) -> Self {
        let pool = UidPool { first, last, next: first, in_use: Default::default() };
        Self { inner: std::sync::Arc::new(std::sync::Mutex::new(pool)) }
    }

    /// A free id, held until the lease drops; None when all are taken.
    fn lease(&self) -> Option<UidLease> {
        let mut pool = self.inner.lock().expect("uid pool lock");
        let size = u64::from(pool.last - pool.first) + 1;
        for step in 0..size {
            let offset = (u64::from(pool.next - pool.first) + step) % size;
            let uid = pool.first + u32::try_from(offset).expect("within the range");
            if pool.in_use.insert(uid) {
                pool.next = if uid == pool.last { pool.first } else { uid + 1 };
                return Some(UidLease { uid, pool: self.clone() });
            }
        }
        None
    }
}

#[derive(Debug)]
struct UidLease {
    uid: u32,
    pool: ConnectorUids,
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.pool.inner.lock().expect("uid pool lock").in_use.remove(&self.uid);
    }
}

impl ConnectorProcess {
    /// Starts `aerogrid connector` and waits for its interpreter to be ready. With `uids` (the
    /// node is root), it runs as a user of its own; with `packages`, it imports them too.
    pub(crate) async fn spawn(
        binary: &PathBuf,
        sandbox: bool,
        uids: Option<&ConnectorUids>,
        packages: Option<&Path>,
    ) -> Result<Self> {
        let uid = match uids.filter(|_| sandbox) {
            Some(uids) => Some(uids.lease().ok_or_else(|| {
                Error::Connector("every user id of --connector-uids is taken".into())
            })?),
            None => None,
        };
        let mut command = Command::new(binary);
        // Operators tell connectors apart in `ps`; the connector retitles itself on Load.
        command
            .arg0(concat!(
                "aerogrid-connector (idle)",
                "                                                                "
            ))
            .arg("connector")
            .args((!sandbox).then_some("--no-sandbox"))
            .args(uid.as_ref().map(|lease| format!("--uid={}", lease.uid)))
            .args(packages.map(|env| format!("--python-env={}", env.display())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Nothing of the node's environment (database URL, tokens, broker credentials).
            .env_clear()
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONHASHSEED", "0");
        die_with_node(&mut command);
        let mut child = command.spawn().map_err(|error| {
            Error::Connector(format!("cannot start a connector process: {error}"))
        })?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_stderr(stderr));
        }
        let (sender, answers) = mpsc::channel(4);
        tokio::spawn(read_frames(stdout, sender));
        let mut process = Self { child, stdin, answers, _uid: uid };
        match tokio::time::timeout(READY_TIMEOUT, process.receive()).await {
            Ok(Ok(Kind::Ready(ready))) => {
                log_sandbox_once(sandbox, &ready.sandbox);
                Ok(process)
            }
            Ok(Ok(other)) => {
                Err(Error::Connector(format!("a new connector said {other:?} instead of Ready")))
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Connector(format!(
                "a new connector was not ready within {READY_TIMEOUT:?}"
            ))),
        }
    }

    /// Sends a request and waits for its answer (nothing else may be in flight).
    pub(crate) async fn request(&mut self, kind: node_message::Kind) -> Result<Kind> {
        self.send(kind).await?;
        self.receive().await
    }

    /// Sends a request; its answer comes from `receive`, after those of earlier requests.
    pub(crate) async fn send(&mut self, kind: node_message::Kind) -> Result<()> {
        let frame = pipe::encode(&NodeMessage { kind: Some(kind) }, pipe::MAX_REQUEST_BYTES)
            .map_err(|too_large| Error::Connector(format!("a request too large: {too_large}")))?;
        self.stdin.write_all(&frame).await.map_err(|error| self.gone(error))?;
        self.stdin.flush().await.map_err(|error| self.gone(error))
    }

    /// The next answer. Cancel-safe: usable in `select!`. `Refused` comes as an error: the
    /// app must stop.
    pub(crate) async fn receive(&mut self) -> Result<Kind> {
        let bytes = match self.answers.recv().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(error)) if error.kind() == std::io::ErrorKind::FileTooLarge => {
                return Err(Error::Refused { message: error.to_string(), line: None });
            }
            Some(Err(error)) => return Err(self.gone(error)),
            None => return Err(self.gone(std::io::ErrorKind::UnexpectedEof.into())),
        };
        let kind = ConnectorMessage::decode(bytes.as_slice())
            .map_err(|error| {
                Error::Connector(format!("a connector sent a malformed message: {error}"))
            })?
            .kind
            .ok_or_else(|| Error::Connector("a connector sent an empty message".into()))?;
        match kind {
            Kind::Refused(refused) => {
                Err(Error::Refused { message: refused.message, line: refused.line })
            }
            kind => Ok(kind),
        }
    }

    /// The error for a pipe that broke: the process is gone, say how.
    fn gone(&mut self, error: std::io::Error) -> Error {
        match self.child.try_wait() {
            Ok(Some(status)) => Error::ConnectorExited(describe_exit(status)),
            _ => Error::Connector(format!("the pipe to the connector broke: {error}")),
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A connector dies with the node that started it, even when user code never reads its pipe
/// again. (The death signal follows the spawning thread: a tokio worker, alive as long as the node.)
#[allow(unsafe_code, reason = "prctl between fork and exec")]
fn die_with_node(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads answer frames until the pipe closes or fails (the last item says how).
async fn read_frames(
    mut stdout: BufReader<ChildStdout>,
    answers: mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    loop {
        let frame = async {
            let mut prefix = [0u8; pipe::PREFIX_BYTES];
            stdout.read_exact(&mut prefix).await?;
            let length = pipe::length(prefix, pipe::MAX_ANSWER_BYTES).map_err(|too_large| {
                std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!(
                        "the app produced {} MiB of changes, logs and bad records in one batch, above the limit of {} MiB",
                        too_large.bytes >> 20,
                        too_large.limit >> 20
                    ),
                )
            })?;
            let mut bytes = vec![0u8; length];
            stdout.read_exact(&mut bytes).await?;
            Ok(bytes)
        }
        .await;
        let failed = frame.is_err();
        if answers.send(frame).await.is_err() || failed {
            return;
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the connector process exited with code {code}"),
        (None, Some(signal)) => format!("the connector process was killed by signal {signal}"),
        _ => format!("the connector process ended ({status})"),
    }
}

/// The first connector of the node says which sandbox layers the kernel gave it.
fn log_sandbox_once(sandbox: bool, layers: &[String]) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        if sandbox {
            tracing::info!(layers = %layers.join(", "), "Connectors run sandboxed.");
        } else {
            tracing::warn!("Connectors run WITHOUT the sandbox (--no-sandbox): user code can reach the network, files and this node.");
        }
    });
}

/// A line of connector stderr beyond this is cut (with a marker saying how much was cut).
const STDERR_LINE_BYTES: usize = 4096;
/// Lines of one connector's stderr logged per second; the rest are counted, not logged.
const STDERR_LINES_PER_SECOND: u32 = 20;

/// Anything a connector writes to stderr (crashes of the interpreter itself, or user code
/// writing to fd 2) goes to the node's log: read in bounded chunks, lines cut, a rate kept, so
/// what user code writes costs the node neither memory nor a flooded log.
async fn forward_stderr(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncReadExt;
    let mut stderr = stderr;
    let mut chunk = vec![0u8; 8192];
    let mut lines = StderrLines::default();
    let mut rate = StderrRate { since: Instant::now(), logged: 0, dropped: 0 };
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for line in lines.push(&chunk[..read]) {
            rate.log(&line);
        }
    }
    if let Some(line) = lines.finish() {
        rate.log(&line);
    }
}

/// How many lines of one connector's stderr were logged and dropped in the current second.
struct StderrRate {
    since: Instant,
    logged: u32,
    dropped: u64,
}

impl StderrRate {
    fn log(&mut self, line: &str) {
        if self.since.elapsed() >= Duration::from_secs(1) {
            if self.dropped > 0 {
                tracing::warn!(target: "aerogrid_runtime::connector", dropped = self.dropped, "Connector stderr: lines beyond {STDERR_LINES_PER_SECOND}/s were not logged.");
            }
            *self = Self { since: Instant::now(), logged: 0, dropped: 0 };
        }
        if self.logged < STDERR_LINES_PER_SECOND {
            self.logged += 1;
            tracing::warn!(target: "aerogrid_runtime::connector", "Connector stderr: {line}");
        } else {
            self.dropped += 1;
        }
    }
}

/// Splits a byte stream into lines of at most [`STDERR_LINE_BYTES`], holding no more than one
/// line's worth however long the input runs without a newline.
#[derive(Default)]
struct StderrLines {
    line: Vec<u8>,
    cut: usize,
}

impl StderrLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                done.push(self.take());
            } else if self.line.len() < STDERR_LINE_BYTES {
                self.line.push(byte);
            } else {
                self.cut += 1;
            }
        }
        done
    }

    fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty() || self.cut > 0).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        if self.cut > 0 {
            text.push_str(&format!(" [... {} bytes cut]", self.cut));
        }
        self.line.clear();
        self.cut = 0;
        text
    }
}

/// Connector processes started ahead of time, so Start does not wait for an interpreter.
#[derive(Clone)]
pub(crate) struct WarmPool {
    ready: std::sync::Arc<std::sync::Mutex<mpsc::Receiver<ConnectorProcess>>>,
    binary: PathBuf,
    sandbox: bool,
    uids: Option<ConnectorUids>,
}

impl WarmPool {
    /// Keeps `size` idle connectors ready, replacing each one taken.
    pub(crate) fn start(
        binary: PathBuf,
        size: usize,
        sandbox: bool,
        uids: Option<ConnectorUids>,
    ) -> Self {
        let (sender, ready) = mpsc::channel(size.max(1));
        let spawn_binary = binary.clone();
        let spawn_uids = uids.clone();
        tokio::spawn(async move {
            loop {
                // `reserve` waits until the pool has room: a taken process is replaced.
                let Ok(permit) = sender.reserve().await else { return };
                match ConnectorProcess::spawn(&spawn_binary, sandbox, spawn_uids.as_ref(), None)
                    .await
                {
                    Ok(process) => permit.send(process),
                    Err(error) => {
                        tracing::error!(%error, "Cannot start a warm connector process; retrying in 1 s.");
                        drop(permit);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Self { ready: std::sync::Arc::new(std::sync::Mutex::new(ready)), binary, sandbox, uids }
    }

    /// Whether connectors run as users of their own (the node is root): they reach only what
    /// all users may.
    pub(crate) fn runs_as_other_users(&self) -> bool {
        self.sandbox && self.uids.is_some()
    }

    /// An idle connector: a warm one when there is one, else a new one. An app with packages
    /// gets a new one that imports them (the sandbox of a warm one is sealed without them).
    pub(crate) async fn take(&self, packages: Option<&Path>) -> Result<ConnectorProcess> {
        let warm = match packages {
            None => self.ready.lock().expect("pool lock").try_recv().ok(),
            Some(_) => None,
        };
        match warm {
            Some(process) => Ok(process),
            None => {
                ConnectorProcess::spawn(&self.binary, self.sandbox, self.uids.as_ref(), packages)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_cut_and_a_line_without_end_holds_no_more_than_a_line() {
        let mut lines = StderrLines::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert_eq!(lines.push(b"o\n"), ["two"]);
        for _ in 0..1000 {
            assert!(lines.push(&[b'A'; 16 * 1024]).is_empty());
        }
        assert!(lines.line.capacity() <= 2 * STDERR_LINE_BYTES, "bounded, whatever comes");
        let cut = lines.push(b"\n");
        assert_eq!(cut.len(), 1);
        assert!(
            cut[0].ends_with(&format!(" [... {} bytes cut]", 16 * 1024 * 1000 - STDERR_LINE_BYTES))
        );
        assert_eq!(lines.push(b"tail"), Vec::<String>::new());
        assert_eq!(lines.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn every_connector_gets_a_user_of_its_own_and_ids_come_back() {
        let uids = ConnectorUids::new(10, 12);
        let (a, b, c) = (uids.lease().unwrap(), uids.lease().unwrap(), uids.lease().unwrap());
        assert_eq!((a.uid, b.uid, c.uid), (10, 11, 12));
        assert!(uids.lease().is_none(), "the range is used up");
        drop(b);
        // Reused as late as possible: 11 is the only one free.
        assert_eq!(uids.lease().unwrap().uid, 11);
        drop(a);
        let again = uids.lease().unwrap();
        assert_eq!(again.uid, 10);
    }
}
