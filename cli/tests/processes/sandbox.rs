//! Hostile connector programs against a real connector process: each action fails, the answer
//! names the cause and the user's line, and nothing outside the process changes. Then the same
//! actions through ctypes with the audit hook off: the kernel's layers refuse them alone.

use crate::support;

use std::{path::Path, time::Duration};

use aerogrid_proto::runtime::v1::{Load, Refused, Tick, connector_message::Kind, node_message};
use support::connector::ConnectorProcess;

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");
const HEADER: &str = "import aerogrid\napp = aerogrid.App(\"hostile\")\n";

/// Loads `body` after two header lines (so its first line is line 3) and runs a timer tick if
/// it loads; returns the refusal.
fn refusal(body: &str, load: Load) -> (Refused, ConnectorProcess) {
    let mut connector = ConnectorProcess::start();
    let program = format!("{HEADER}{body}");
    let answer = match connector.load_with(&program, load) {
        Kind::Loaded(_) => {
            // Timers of a millisecond are due by then.
            std::thread::sleep(Duration::from_millis(20));
            connector.send(node_message::Kind::Tick(Tick {}))
        }
        other => other,
    };
    match answer {
        Kind::Refused(refused) => (refused, connector),
        other => panic!("expected a refusal of\n{program}\ngot {other:?}"),
    }
}

fn assert_refused(body: &str, expected: &str, line: u32) {
    let (refused, _) = refusal(body, Load::default());
    assert_eq!(refused.message, expected, "for\n{body}");
    assert_eq!(refused.line, Some(line), "for\n{body}");
}

#[test]
fn the_connector_reports_every_layer() {
    let connector = ConnectorProcess::start();
    for layer in ["rlimits", "audit hook", "landlock", "seccomp"] {
        assert!(
            connector.layers.iter().any(|have| have == layer),
            "{layer} in {:?}",
            connector.layers
        );
    }
    assert!(
        connector.layers.iter().any(|have| have.contains("network namespace")),
        "{:?}",
        connector.layers
    );
}

/// As root, a connector runs as the user the node gives it, never as root.
#[test]
fn the_connector_runs_as_the_user_it_is_given() {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code, reason = "geteuid has no safe wrapper in std")]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: connectors keep the test's user");
        return;
    }
    let mut connector = ConnectorProcess::start_with(&["--uid=1879048500"]);
    assert!(
        connector.layers.iter().any(|layer| layer == "user 1879048500 of its own"),
        "{:?}",
        connector.layers
    );
    let program = format!(
        "{HEADER}import os\n@app.timer(seconds=0.001)\ndef say():\n    print(os.getuid(), os.getgid(), os.getgroups())\n"
    );
    assert!(matches!(connector.load(&program), Kind::Loaded(_)));
    std::thread::sleep(Duration::from_millis(20));
    let Kind::Result(result) = connector.send(node_message::Kind::Tick(Tick {})) else {
        panic!("a tick answers with a result")
    };
    assert_eq!(result.logs[0].message, "1879048500 1879048500 []");
    // Root is never a connector's user.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["connector", "--uid=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("never runs as root"));
}

#[test]
fn secrets_and_system_files_cannot_be_read() {
    const READ: &str =
        "reading files is not available to connectors (only the standard library can be imported)";
    assert_refused(
        "secret = open('/etc/shadow').read()\n",
        &format!("{READ} (line 3: open('/etc/shadow'))"),
        3,
    );
    assert_refused(
        "import os\nenviron = open(f'/proc/{os.getppid()}/environ', 'rb').read()\n",
        &format!("{READ} (line 4: open('/proc/{}/environ'))", std::process::id()),
        4,
    );
    assert_refused(
        "import pathlib\n\ndef peek():\n    return pathlib.Path('/root/.bash_history').read_text()\n\npeek()\n",
        &format!("{READ} (line 6: pathlib.Path.read_text)"),
        6,
    );
    assert_refused(
        "import os\nfiles = os.listdir('/')\n",
        &format!("{READ} (line 4: os.listdir('/'))"),
        4,
    );
}

#[test]
fn there_is_no_network_not_even_to_the_platforms_database() {
    const NETWORK: &str = "network access is not available to connectors";
    assert_refused(
        "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=1)\n",
        &format!("{NETWORK} (line 4: socket.create_connection)"),
        4,
    );
    assert_refused(
        "import socket\nsocket.socket()\n",
        &format!("{NETWORK} (line 4: socket.socket.__init__)"),
        4,
    );
    assert_refused(
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:5432/')\n",
        &format!("{NETWORK} (line 4: urllib.request.urlopen)"),
        4,
    );
}

#[test]
fn no_process_can_be_started_or_signalled() {
    const PROCESSES: &str = "starting processes is not available to connectors";
    let witness =
        std::env::temp_dir().join(format!("aerogrid-sandbox-system-{}", std::process::id()));
    assert_refused(
        &format!("import os\nos.system('touch {}')\n", witness.display()),
        &format!("{PROCESSES} (line 4: os.system)"),
        4,
    );
    assert!(!witness.exists(), "os.system ran");
    assert_refused(
        "import subprocess\nsubprocess.run(['id'])\n",
        &format!("{PROCESSES} (line 4: subprocess.run)"),
        4,
    );
    assert_refused("import os\npid = os.fork()\n", &format!("{PROCESSES} (line 4: os.fork)"), 4);
    assert_refused(
        "import _posixsubprocess\n",
        &format!("{PROCESSES} (line 3: import _posixsubprocess)"),
        3,
    );
    // `os` reached without importing it, through the object graph.
    assert_refused(
        "wrap = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close')\nwrap.__init__.__globals__['system']('id')\n",
        &format!("{PROCESSES} (line 4: os.system)"),
        4,
    );
    assert_refused(
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "sending signals is not available to connectors (line 4: os.kill)",
        4,
    );
    assert_refused(
        "import threading\nthreading.Thread(target=print).start()\n",
        "threads are not available to connectors (streams and timers run one at a time) (line 4: threading.Thread.start)",
        4,
    );
}

#[test]
fn native_code_and_code_objects_are_refused() {
    const NATIVE: &str = "native code (ctypes and similar modules) is not available to connectors";
    assert_refused("import ctypes\n", &format!("{NATIVE} (line 3: import ctypes)"), 3);
    // Hiding the name changes nothing: the import itself is seen.
    assert_refused(
        "lib = __import__('ct' + 'ypes')\n",
        &format!("{NATIVE} (line 3: import ctypes)"),
        3,
    );
    assert_refused(
        "code = (lambda: 0).__code__.replace(co_consts=(1,))\n",
        "building code objects is not available to connectors (line 3: types.CodeType)",
        3,
    );
    assert_refused(
        "import marshal\ncode = marshal.loads(b'\\xe3')\n",
        "building code objects is not available to connectors (line 4: marshal.loads)",
        4,
    );
}

#[test]
fn files_cannot_be_written() {
    let target =
        std::env::temp_dir().join(format!("aerogrid-sandbox-write-{}", std::process::id()));
    let body =
        format!("with open('{}', 'w') as out:\n    out.write('escaped')\n", target.display());
    assert_refused(
        &body,
        &format!(
            "writing files is not available to connectors (line 3: open('{}'))",
            target.display()
        ),
        3,
    );
    assert!(!target.exists(), "the file was written");
    assert_refused(
        "import os\nos.remove('/tmp')\n",
        "writing files is not available to connectors (line 4: os.remove)",
        4,
    );
}

#[test]
fn catching_the_refusal_does_not_save_the_app() {
    let (refused, _) = refusal(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 5432))\nexcept Exception:\n    pass\n",
        Load::default(),
    );
    assert_eq!(refused.line, Some(5));
    assert!(refused.message.starts_with("network access"), "{}", refused.message);
}

#[test]
fn memory_beyond_the_limit_stops_the_app() {
    let load = Load { memory_limit_bytes: Some(256 << 20), ..Load::default() };
    let (refused, _) = refusal("hog = [bytearray(1 << 20) for _ in range(4096)]\n", load.clone());
    assert_eq!(refused.message, "the app used more than its memory limit of 256 MiB (line 3)");
    assert_eq!(refused.line, Some(3));
    // In a timer as at import.
    let (refused, _) = refusal(
        "@app.timer(seconds=0.001)\ndef hog():\n    hog.keep = [bytearray(1 << 20) for _ in range(4096)]\n",
        load,
    );
    assert_eq!(refused.message, "the app used more than its memory limit of 256 MiB (line 5)");
}

#[test]
fn a_busy_loop_is_stopped_by_the_watchdog() {
    let load = Load { stall_seconds: Some(1.0), ..Load::default() };
    let (refused, _) = refusal("n = 0\nwhile True: n += 1\n", load.clone());
    assert_eq!(
        refused.message,
        "the app ran for more than 1 s without yielding (a stream handles one record at a time, a timer must return) (line 4)"
    );
    assert_eq!(refused.line, Some(4));
    // A sleep is woken as well.
    let (refused, _) = refusal("import time\ntime.sleep(60)\n", load.clone());
    assert_eq!(refused.line, Some(4), "{}", refused.message);

    // Code that swallows the watchdog's exception: the watchdog answers for it and the process
    // ends.
    let started = std::time::Instant::now();
    let (refused, mut connector) = refusal(
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n",
        load,
    );
    assert!(
        refused.message.starts_with("the app ran for more than 1 s without yielding"),
        "{}",
        refused.message
    );
    assert!(refused.line.is_some_and(|line| (3..=8).contains(&line)), "{refused:?}");
    assert_eq!(connector.wait().code(), Some(3));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// The same actions through ctypes, with the audit hook off: every one fails in the kernel.
#[test]
fn the_kernel_layers_hold_without_the_audit_hook() {
    let mut connector = ConnectorProcess::start_with(&["--no-audit-hook"]);
    assert!(!connector.layers.iter().any(|layer| layer == "audit hook"), "{:?}", connector.layers);
    let witness =
        std::env::temp_dir().join(format!("aerogrid-sandbox-kernel-{}", std::process::id()));
    let program = format!(
        r#"{HEADER}import ctypes, json, mmap, os
libc = ctypes.CDLL(None, use_errno=True)

def outcome(result):
    return "allowed" if result != -1 else os.strerror(ctypes.get_errno())

def fork():
    pid = libc.fork()
    if pid == 0:
        libc._exit(0)
    return pid

def start_thread():
    thread = ctypes.c_ulong()
    harmless = ctypes.cast(libc.getpid, ctypes.c_void_p)
    return libc.pthread_create(ctypes.byref(thread), None, harmless, None)

def raised(action):
    try:
        action()
        return "allowed"
    except Exception as error:
        return type(error).__name__

results = {{
    "socket": outcome(libc.socket(2, 1, 0)),
    "read /etc/passwd": outcome(libc.open(b"/etc/passwd", os.O_RDONLY)),
    "read the node's environment": outcome(libc.open(f"/proc/{{os.getppid()}}/environ".encode(), os.O_RDONLY)),
    "write a file": outcome(libc.open({witness:?}.encode(), os.O_WRONLY | os.O_CREAT, 0o644)),
    "fork": outcome(fork()),
    "exec": outcome(libc.execv(b"/bin/true", (ctypes.c_char_p * 2)(b"true", None))),
    "signal the node": outcome(libc.kill(os.getppid(), 0)),
    "become root": outcome(libc.setuid(0)),
    "set its own uid again": outcome(libc.setuid(os.getuid())),
    "renice every process of its user": outcome(libc.setpriority(2, 0, 19)),
    "renice its process group": outcome(libc.setpriority(1, 0, 19)),
    "new namespaces": outcome(libc.unshare(0x40000000)),
    "unshare nothing": outcome(libc.unshare(0)),
    "shared memory": raised(lambda: mmap.mmap(-1, 1 << 20, flags=mmap.MAP_SHARED)),
    "thread": "allowed" if start_thread() == 0 else "refused",
}}
print(json.dumps(results))
"#
    );
    assert!(matches!(connector.load(&program), Kind::Loaded(_)), "the probe loads");
    let Kind::Result(result) = connector.send(node_message::Kind::Tick(Tick {})) else {
        panic!("a tick answers with a result")
    };
    let line =
        result.logs.iter().find(|log| log.message.starts_with('{')).expect("the probe printed");
    let results: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&line.message).unwrap();
    assert_eq!(results.len(), 15, "{results:?}");
    for (action, outcome) in &results {
        assert_ne!(outcome, "allowed", "{action} was allowed: {results:?}");
    }
    // Seccomp says EPERM, landlock EACCES. Setting one's own uid again and unsharing nothing
    // succeed for any process (the control below): only seccomp refuses them, so they show
    // that the layer refusing credentials and namespaces here is seccomp, not a missing
    // privilege.
    for action in
        ["socket", "become root", "set its own uid again", "new namespaces", "unshare nothing"]
    {
        assert_eq!(results[action], "Operation not permitted", "{action}: {results:?}");
    }
    assert_eq!(results["read /etc/passwd"], "Permission denied");
    assert_eq!(results["shared memory"], "PermissionError");
    assert!(!Path::new(&witness).exists(), "the file was written");

    // The control: without the sandbox, the same process may do both.
    let mut unsandboxed = ConnectorProcess::start_with(&["--no-sandbox"]);
    let control = format!(
        r#"{HEADER}import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps([libc.setuid(os.getuid()), libc.unshare(0)]))
"#
    );
    assert!(matches!(unsandboxed.load(&control), Kind::Loaded(_)), "the control loads");
    let Kind::Result(result) = unsandboxed.send(node_message::Kind::Tick(Tick {})) else {
        panic!("a tick answers with a result")
    };
    assert!(
        result.logs.iter().any(|log| log.message == "[0, 0]"),
        "both succeed unsandboxed: {:?}",
        result.logs
    );
}

/// Hostile apps on a real node beside the seed app: each fails with its reason and line in its
/// status and log and is not restarted; the rate flooder is slowed, not failed; no secret
/// reaches a connector; the seed app keeps its pace and the node stays up.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_apps_fail_alone_while_a_neighbour_keeps_its_pace() {
    let temp = tempfile::tempdir().unwrap();
    let stack = support::DevStack::start_with_env(
        &temp.path().join("data"),
        &[
            ("AEROGRID_CONNECTOR_STALL_SECONDS", "1"),
            ("AEROGRID_MAX_GRID_ROWS", "1000"),
            ("AEROGRID_MAX_GRID_CHANGES_PER_SECOND", "2000"),
            ("AEROGRID_CONNECTOR_POOL", "4"),
        ],
    );
    let database_url = stack.file("database-url");
    let admin_token = stack.file("admin-token");
    let password = database_url.split(['/', ':', '@']).nth(4).unwrap().to_owned();
    let database_port =
        database_url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();

    let neighbour = support::create_running_app(&pool, SEED).await;
    let team: uuid::Uuid = sqlx::query_scalar("SELECT team_id FROM apps WHERE id = $1")
        .bind(neighbour)
        .fetch_one(&pool)
        .await
        .unwrap();
    // The neighbour's pace alone.
    let started = std::time::Instant::now();
    support::produce_orders(&kafka, 0..3000, 50).await;
    wait_for_records(&pool, neighbour, 3000).await;
    let alone = started.elapsed();

    let network = format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {database_port}), timeout=1)\n"
    );
    let secrets = "import json, os\n@app.timer(seconds=0.2)\ndef look():\n    look.calls = getattr(look, 'calls', 0) + 1\n    if look.calls == 1:\n        print(json.dumps(dict(os.environ)))\n    if look.calls == 3:\n        open(f'/proc/{os.getppid()}/environ').read()\n";
    let busy = "class Order(aerogrid.Record):\n    product: str\n    quantity: int\norders = app.topic('orders', key_type=str, value_type=Order)\n@app.stream(orders)\nasync def spin(stream):\n    async for order in stream:\n        while True: pass\n";
    let hog = "@app.timer(seconds=0.1)\ndef hog():\n    hog.keep = [bytearray(1 << 20) for _ in range(1024)]\n";
    let rows = "flood = app.Grid('flood', columns=['n'])\n@app.timer(seconds=0.05)\ndef grow():\n    start = len(flood)\n    for n in range(start, start + 300):\n        flood[f'row-{n}'] = {'n': n}\n";
    let rate = "hot = app.Grid('hot', columns=['n'])\n@app.timer(seconds=0.01)\ndef churn():\n    churn.calls = getattr(churn, 'calls', 0) + 1\n    print(f'tick {churn.calls}')\n    for n in range(100):\n        hot[f'row-{n}'] = {'n': churn.calls}\n";
    let processes = "import os\nos.system('id')\n";
    let apps = [
        ("network", network.as_str(), None),
        ("secrets", secrets, None),
        ("busy", busy, None),
        ("hog", hog, Some(128)),
        ("rows", rows, None),
        ("rate", rate, None),
        ("processes", processes, None),
    ];
    let mut ids = std::collections::BTreeMap::new();
    for (name, body, memory) in apps {
        let app = support::create_app(&pool, team, name, &format!("{HEADER}{body}"), memory).await;
        support::start_app(&pool, app).await;
        ids.insert(name, app);
    }
    // The neighbour's pace while they run (the busy app gets orders too).
    let started = std::time::Instant::now();
    support::produce_orders(&kafka, 3000..6000, 50).await;
    wait_for_records(&pool, neighbour, 6000).await;
    let beside_hostile = started.elapsed();

    let expectations = [
        ("network", "network access is not available to connectors (line 4: socket.create_connection)".to_owned(), Some(4)),
        (
            "secrets",
            "reading files is not available to connectors (only the standard library can be imported) (line 10: open('/proc/".to_owned(),
            Some(10),
        ),
        ("busy", "the app ran for more than 1 s without yielding (a stream handles one record at a time, a timer must return) (line 10)".to_owned(), Some(10)),
        ("hog", "the app used more than its memory limit of 128 MiB (line 5)".to_owned(), Some(5)),
        ("rows", "grid `flood` grew beyond 1000 rows, the limit of a grid".to_owned(), None),
        ("processes", "starting processes is not available to connectors (line 4: os.system)".to_owned(), Some(4)),
    ];
    for (name, message, line) in &expectations {
        let app = ids[name];
        let (error, error_line) = wait_for_failure(&pool, app, name).await;
        assert!(error.starts_with(message.as_str()), "{name}: {error}");
        assert_eq!(error_line, *line, "{name}");
        let logs = app_logs(&pool, app).await;
        assert!(
            logs.iter().any(|(level, text)| level == "error" && text == &error),
            "{name}: {logs:?}"
        );
    }
    // What the secrets app saw of its environment.
    let logs = app_logs(&pool, ids["secrets"]).await;
    let environment =
        logs.iter().find(|(_, text)| text.starts_with('{')).expect("the environment printed");
    let environment: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&environment.1).unwrap();
    // The connector's own: numerical libraries run single-threaded.
    let threads =
        ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS"];
    for (key, value) in &environment {
        let own = threads.contains(&key.as_str()) && value == "1";
        assert!(key.starts_with("PYTHON") || key == "LC_CTYPE" || own, "{key} reached a connector");
        assert!(!value.contains(&password) && !value.contains(&admin_token), "{key}");
    }

    // The rate flooder runs on, slowed to 2,000 row changes/s: 20 ticks/s of 100 rows (one
    // second's worth may go at once), where it would make 100/s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rate_logs = app_logs(&pool, ids["rate"]).await;
    assert!(
        rate_logs
            .iter()
            .any(|(level, text)| level == "warning" && text.contains("faster than 2000 rows/s")),
        "{rate_logs:?}"
    );
    let (state, _, _, _) = status(&pool, ids["rate"]).await;
    assert_eq!(state, "running");
    let since: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(at) - min(at))::float8 FROM app_logs WHERE app_id = $1 AND message LIKE 'tick %'",
    )
    .bind(ids["rate"])
    .fetch_one(&pool)
    .await
    .unwrap();
    let ticks = rate_logs.iter().filter(|(_, text)| text.starts_with("tick ")).count();
    assert!(ticks as f64 <= 20.0 * since + 20.0 + 10.0, "{ticks} ticks in {since:.1} s");
    assert!(ticks >= 20, "the flooder still runs: {ticks} ticks");

    // None of the failed apps is restarted, the node is up, and the neighbour kept its pace.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, _, _) in &expectations {
        let (state, _, _, restarts) = status(&pool, ids[name]).await;
        assert_eq!((state.as_str(), restarts), ("failed", 0), "{name}");
    }
    let (state, _, _, restarts) = status(&pool, neighbour).await;
    assert_eq!((state.as_str(), restarts), ("running", 0));
    println!(
        "neighbour: 3,000 orders in {alone:?} alone, {beside_hostile:?} beside the hostile apps"
    );
    assert!(
        beside_hostile < alone * 4 + Duration::from_secs(5),
        "the neighbour slowed from {alone:?} to {beside_hostile:?}"
    );
}

async fn status(
    pool: &sqlx::PgPool,
    app: uuid::Uuid,
) -> (String, Option<String>, Option<i32>, i32) {
    sqlx::query_as("SELECT state, error, error_line, restarts FROM app_status WHERE app_id = $1")
        .bind(app)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or_else(|| ("none".into(), None, None, 0))
}

async fn wait_for_failure(
    pool: &sqlx::PgPool,
    app: uuid::Uuid,
    name: &str,
) -> (String, Option<u32>) {
    let started = std::time::Instant::now();
    loop {
        let (state, error, line, _) = status(pool, app).await;
        if state == "failed" {
            return (error.unwrap_or_default(), line.and_then(|line| u32::try_from(line).ok()));
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{name}: state {state} ({error:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_records(pool: &sqlx::PgPool, app: uuid::Uuid, records: i64) {
    let started = std::time::Instant::now();
    loop {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT records_in FROM app_status WHERE app_id = $1")
                .bind(app)
                .fetch_optional(pool)
                .await
                .unwrap();
        if done.unwrap_or(0) >= records {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{done:?} of {records} records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app_logs(pool: &sqlx::PgPool, app: uuid::Uuid) -> Vec<(String, String)> {
    sqlx::query_as("SELECT level, message FROM app_logs WHERE app_id = $1 ORDER BY id")
        .bind(app)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What connectors legitimately use keeps working inside the sandbox.
#[test]
fn the_standard_library_still_works() {
    let mut connector = ConnectorProcess::start();
    let program = format!(
        "{HEADER}import collections, datetime, decimal, fractions, json, math, random, re, statistics, time, zoneinfo\n\
         london = datetime.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo('Europe/London'))\n\
         checks = {{\n\
         'decimal': str(decimal.Decimal('1.10') + decimal.Decimal('2.205')),\n\
         'statistics': statistics.mean([1, 2, 3, 4]),\n\
         'zoneinfo': london.utcoffset().total_seconds(),\n\
         'random': 0 <= random.random() < 1,\n\
         're': re.sub(r'\\d+', '#', 'a1b22'),\n\
         'fraction': str(fractions.Fraction(3, 6)),\n\
         'localtime': time.localtime().tm_year > 2000,\n\
         'counter': collections.Counter('aab').most_common(1)[0][0],\n\
         }}\n\
         print(json.dumps(checks, sort_keys=True))\n"
    );
    assert!(matches!(connector.load(&program), Kind::Loaded(_)), "the program loads");
    let Kind::Result(result) = connector.send(node_message::Kind::Tick(Tick {})) else {
        panic!("a tick answers with a result")
    };
    let printed = result.logs.iter().find(|log| log.message.starts_with('{')).expect("printed");
    assert_eq!(
        printed.message,
        r#"{"counter": "a", "decimal": "3.305", "fraction": "1/2", "localtime": true, "random": true, "re": "a#b#", "statistics": 2.5, "zoneinfo": 3600.0}"#
    );
}

/// numpy installed as an app's packages are (the pinned uv, the tests' shared cache under
/// target/), for connectors of any user to read.
fn numpy_env() -> String {
    static ENV: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let uv = std::env::var_os("AEROGRID_UV").expect("AEROGRID_UV (cargo xtask test sets it)");
        let python = aerogrid_packages::PythonArgs {
            uv: Some(uv.into()),
            python_cache_dir: Some(concat!(env!("CARGO_TARGET_TMPDIR"), "/python-cache").into()),
            ..Default::default()
        };
        let settings = python.settings(None);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let requirements = aerogrid_packages::Requirements::parse("numpy==2.2.6\n").unwrap();
        let env = runtime.block_on(async {
            let uv = settings.uv.as_ref().unwrap();
            let lock = uv.lock(&requirements, &settings.target).await.map_err(|e| e.to_string())?;
            settings.install(&lock, &|_| {}).await.map_err(|error| error.to_string())
        });
        env.unwrap_or_else(|error| panic!("installing numpy: {error}")).path.display().to_string()
    })
    .clone()
}

/// With numpy imported from the app's environment, the sandbox holds as before: its native
/// code loads and computes (numpy imports ctypes for itself), but the user's code cannot use
/// ctypes (directly, through numpy, through importlib, or as code compiled or loaded under
/// numpy's file names), and the network, processes and file writes are refused; the
/// environment itself cannot be changed.
#[test]
fn the_sandbox_holds_with_numpy_loaded() {
    let env = numpy_env();
    let env_arg = format!("--python-env={env}");
    let load = |body: &str| {
        let mut connector = ConnectorProcess::start_with(&[&env_arg]);
        let program = format!("{HEADER}import numpy\n{body}");
        let answer = match connector.load(&program) {
            Kind::Loaded(_) => {
                std::thread::sleep(Duration::from_millis(20));
                connector.send(node_message::Kind::Tick(Tick {}))
            }
            other => other,
        };
        (answer, program)
    };
    let refused = |body: &str, cause: &str, line: u32| {
        let (answer, program) = load(body);
        let Kind::Refused(refused) = answer else {
            panic!("{program}\nwas not refused: {answer:?}")
        };
        assert!(refused.message.starts_with(cause), "{program}\n{refused:?}");
        assert_eq!(refused.line, Some(line), "{program}\n{refused:?}");
    };

    // It works: BLAS included, on one thread.
    let (answer, program) = load(
        "grid = app.Grid('g', columns=['det'])\n@app.timer(seconds=0.001)\ndef compute():\n    grid['x'] = {'det': float(numpy.linalg.det(numpy.array([[2.0, 1.0], [1.0, 3.0]])))}\n",
    );
    let Kind::Result(result) = answer else { panic!("{program}\n{answer:?}") };
    assert!(format!("{result:?}").contains("5.0"), "{result:?}");

    const NATIVE: &str = "native code (ctypes and similar modules) is not available";
    refused("import ctypes\n", NATIVE, 4);
    refused("from ctypes import CDLL\n", NATIVE, 4);
    // What numpy imported is an empty stand-in: no ctypes by any way round.
    for body in [
        "numpy.ctypeslib.ctypes.CDLL(None)\n",
        "import importlib\nimportlib.import_module('ctypes').CDLL(None)\n",
        "import sys\nsys.modules['ctypes'].memmove\n",
        "import _ctypes\n",
    ] {
        let (answer, program) = load(body);
        match answer {
            Kind::LoadFailed(failed) => assert!(
                ["ctypes", "CDLL", "memmove", "ctypeslib"]
                    .iter()
                    .any(|word| failed.message.contains(word)),
                "{program}\n{failed:?}"
            ),
            Kind::Refused(refused) => assert!(refused.message.starts_with(NATIVE), "{refused:?}"),
            other => panic!("{program}\n{other:?}"),
        }
    }
    refused("import socket\nsocket.socket()\n", "network access is not available", 5);
    refused("import os\nos.system('true')\n", "starting processes is not available", 5);
    let target = std::env::temp_dir().join(format!("aerogrid-numpy-{}.npy", std::process::id()));
    refused(
        &format!("numpy.save('{}', numpy.zeros(3))\n", target.display()),
        "writing files is not available",
        4,
    );
    assert!(!target.exists(), "numpy wrote a file");
    let inside = Path::new(&env).join("numpy").join("planted.py");
    refused(
        &format!("open('{}', 'w').write('x = 1')\n", inside.display()),
        "writing files is not available",
        4,
    );
    assert!(!inside.exists(), "the environment was changed");

    // Without the audit hook, the kernel alone: numpy's ctypes reaches libc, and libc's
    // socket, open for writing and chmod of the environment fail.
    let mut connector = ConnectorProcess::start_with(&[&env_arg, "--no-audit-hook"]);
    let program = format!(
        "{HEADER}import numpy\nimport os\ngrid = app.Grid('g', columns=['socket', 'open', 'chmod'])\n\
         libc = numpy.ctypeslib.ctypes.CDLL(None, use_errno=True)\n\
         @app.timer(seconds=0.001)\ndef probe():\n    \
         grid['x'] = {{'socket': libc.socket(2, 1, 0), \
         'open': libc.open(b'{}', os.O_WRONLY | os.O_CREAT, 0o644), \
         'chmod': libc.chmod(b'{}', 0o777)}}\n",
        inside.display(),
        Path::new(&env).join("numpy").display()
    );
    assert!(matches!(connector.load(&program), Kind::Loaded(_)), "{program}");
    std::thread::sleep(Duration::from_millis(20));
    let answer = connector.send(node_message::Kind::Tick(Tick {}));
    let Kind::Result(result) = answer else { panic!("{answer:?}") };
    let text = format!("{result:?}");
    assert_eq!(text.matches("-1").count(), 3, "every call fails in the kernel: {text}");
    let mode = std::fs::metadata(Path::new(&env).join("numpy")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o555);
    assert!(!inside.exists(), "the environment was changed");
}
