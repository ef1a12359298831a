//! Hostile connector programs against a real connector process: each action fails, the answer
//! names the cause and the user's line, and nothing outside the process changes. Then the same
//! actions through ctypes with the audit hook off: the kernel's layers refuse them alone.

mod support;

use std::{path::Path, time::Duration};

use aerogrid_proto::runtime::v1::{Load, Refused, Tick, connector_message::Kind, node_message};
use support::connector::ConnectorProcess;

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
    "new namespaces": outcome(libc.unshare(0x40000000)),
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
    assert_eq!(results.len(), 11, "{results:?}");
    for (action, outcome) in &results {
        assert_ne!(outcome, "allowed", "{action} was allowed: {results:?}");
    }
    // Seccomp says EPERM, landlock EACCES.
    assert_eq!(results["socket"], "Operation not permitted");
    assert_eq!(results["read /etc/passwd"], "Permission denied");
    assert_eq!(results["shared memory"], "PermissionError");
    assert!(!Path::new(&witness).exists(), "the file was written");
}
