//! The interpreter's layer: a CPython audit hook that refuses what the kernel's layers refuse
//! anyway, before the call reaches the kernel, with a message that names the cause and the line
//! of the user's code ("network access is not available to connectors (line 7:
//! socket.create_connection)").
//!
//! The hook is native code, registered with `PySys_AddAuditHook`: Python code can neither see
//! nor remove it. It is not the boundary (crafted bytecode or a native module could get past
//! it); the kernel's layers are. The first refusal of a call is kept: whatever the user's code
//! does with the exception, the call's answer is `Refused` and the app fails.
#![allow(unsafe_code, reason = "the audit hook and frame access are CPython C API")]

use std::{
    cell::Cell,
    ffi::{CStr, c_char, c_int, c_void},
    path::{Component, Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use pyo3::{
    exceptions::PyPermissionError,
    ffi,
    prelude::*,
    types::{PyString, PyTuple},
};

pub(crate) use aerogrid_policy::Cause;

use crate::{Error, Result};

type AuditHook = unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int;

unsafe extern "C" {
    // Part of the stable C API since 3.8; pyo3-ffi does not declare it.
    fn PySys_AddAuditHook(hook: AuditHook, user_data: *mut c_void) -> c_int;
}

/// A refusal or broken limit, as the user reads it in the app's status and log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    pub(crate) line: Option<u32>,
}

/// What the hook allows to be read: the standard library (its imports), the app's packages.
struct Policy {
    read_roots: Vec<PathBuf>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();
/// The file name the user's module runs under: its frames are the ones whose lines are shown.
static USER_FILE: Mutex<String> = Mutex::new(String::new());
static FIRST_REFUSAL: Mutex<Option<Refusal>> = Mutex::new(None);

thread_local! {
    /// The hook's own work (reading frames) raises events too: they pass.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Audit events of network modules (`socket.connect`, `socket.getaddrinfo`, ...).
const NETWORK_EVENTS: &[&str] = &[
    "socket.",
    "http.client.",
    "urllib.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "webbrowser.",
];

const PROCESS_EVENTS: &[&str] = &[
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.startfile",
    "pty.spawn",
    "_posixsubprocess.fork_exec",
];

const SIGNAL_EVENTS: &[&str] = &["os.kill", "os.killpg", "signal.pthread_kill", "os.pidfd_open"];

const WRITE_EVENTS: &[&str] = &[
    "os.chmod",
    "os.chown",
    "os.chflags",
    "os.lchflags",
    "os.link",
    "os.mkdir",
    "os.mkfifo",
    "os.mknod",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "os.memfd_create",
    "shutil.",
    "tempfile.mkstemp",
    "tempfile.mkdtemp",
];

/// Installs the hook; `read_roots` are the directories imports may read.
pub(crate) fn install(read_roots: Vec<PathBuf>) -> Result<()> {
    POLICY
        .set(Policy { read_roots })
        .map_err(|_| Error::Sandbox("the audit hook is installed twice".into()))?;
    // SAFETY: the interpreter is initialised and the hook has the signature CPython expects.
    let status = unsafe { PySys_AddAuditHook(audit_hook, std::ptr::null_mut()) };
    if status != 0 {
        return Err(Error::Sandbox("CPython refused the audit hook".into()));
    }
    Ok(())
}

/// The interpreter's own `__import__`, which [`guarded_import`] calls.
static ORIGINAL_IMPORT: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// ctypes never loads: most of what it does raises no audit event (calling a function pointer,
/// indexing a pointer), so once loaded, for a package, nothing tells the user's use of it
/// apart. Packages that import it for themselves (numpy, pandas) get a stand-in module with
/// nothing in it (`_ctypes` cannot load at all); the user's `import ctypes` is refused with its
/// line, through `builtins.__import__`, replaced here (a module already in `sys.modules` raises
/// no `import` event).
pub(crate) fn guard_imports(py: Python<'_>) -> Result<()> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;
    modules.set_item("_ctypes", py.None())?;
    let stand_in = pyo3::types::PyModule::new(py, "ctypes")?;
    stand_in.setattr(
        "__doc__",
        "ctypes is not available to connectors: this stands in for it, empty, for packages that import it",
    )?;
    modules.set_item("ctypes", stand_in)?;
    let builtins = py.import("builtins")?;
    let original = builtins.getattr("__import__")?.unbind();
    ORIGINAL_IMPORT
        .set(py, original)
        .map_err(|_| Error::Sandbox("imports are guarded twice".into()))?;
    builtins.setattr("__import__", wrap_pyfunction!(guarded_import, py)?)?;
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (name, globals=None, locals=None, fromlist=None, level=0))]
fn guarded_import<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyString>,
    globals: Option<&Bound<'py, PyAny>>,
    locals: Option<&Bound<'py, PyAny>>,
    fromlist: Option<&Bound<'py, PyAny>>,
    level: i32,
) -> PyResult<Bound<'py, PyAny>> {
    if level == 0
        && let Ok(module) = name.to_str()
        && let Some(cause) = aerogrid_policy::refused_import(module)
        && innermost_is_user(py)
    {
        return Err(refuse(py, cause, &format!("import {module}")));
    }
    let original = ORIGINAL_IMPORT.get(py).expect("set before it is installed").bind(py);
    original.call1((name, globals, locals, fromlist, level))
}

/// Frames of this file are the user's.
pub(crate) fn set_user_file(name: &str) {
    *USER_FILE.lock().expect("no panic holds the user file") = name.to_owned();
}

pub(crate) fn user_file() -> String {
    USER_FILE.lock().expect("no panic holds the user file").clone()
}

/// The first refusal since the last call, if any.
pub(crate) fn take_refusal() -> Option<Refusal> {
    FIRST_REFUSAL.lock().expect("no panic holds the refusal").take()
}

/// Keeps `refusal` unless an earlier one is kept.
pub(crate) fn record(refusal: Refusal) {
    FIRST_REFUSAL.lock().expect("no panic holds the refusal").get_or_insert(refusal);
}

/// Refuses an action of the user's code: records it and returns the exception to raise.
/// `what` names the action when no frame of the standard library does (C functions).
pub(crate) fn refuse(py: Python<'_>, cause: Cause, what: &str) -> PyErr {
    let (line, callee) = user_position(py);
    let what = callee.unwrap_or_else(|| what.to_owned());
    let message = match line {
        Some(line) => format!("{} (line {line}: {what})", cause.describe()),
        None => format!("{} ({what})", cause.describe()),
    };
    record(Refusal { message: message.clone(), line });
    PyPermissionError::new_err(message)
}

unsafe extern "C" fn audit_hook(
    event: *const c_char,
    args: *mut ffi::PyObject,
    _: *mut c_void,
) -> c_int {
    // SAFETY: CPython passes a valid NUL-terminated event name.
    let event = unsafe { CStr::from_ptr(event) }.to_str().unwrap_or("");
    let Some(check) = classify(event) else { return 0 };
    if IN_HOOK.get() {
        return 0;
    }
    IN_HOOK.set(true);
    // SAFETY: audit hooks run with the thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `args` is a borrowed, valid tuple for the duration of the call.
    let args = unsafe { Bound::from_borrowed_ptr(py, args) };
    let verdict = judge(check, event, &args);
    IN_HOOK.set(false);
    match verdict {
        None => 0,
        Some((cause, what)) => {
            refuse(py, cause, &what).restore(py);
            -1
        }
    }
}

/// What an event needs before it is judged.
enum Check {
    /// Refused whatever its arguments.
    Always(Cause),
    /// Refused for some paths or modes.
    Open,
    ListDirectory,
    Import,
    /// Refused when the user's module calls it itself.
    Unmarshal,
}

/// The one list of events that may be refused; most events (attribute reads, `exec`,
/// `sys._getframe`, ...) stop here, cheaply.
fn classify(event: &str) -> Option<Check> {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|prefix| event.starts_with(prefix));
    Some(match event {
        "open" => Check::Open,
        "os.listdir" | "os.scandir" => Check::ListDirectory,
        "import" => Check::Import,
        "marshal.loads" => Check::Unmarshal,
        "code.__new__" => Check::Always(Cause::CodeObjects),
        "os.getxattr" | "os.listxattr" => Check::Always(Cause::ReadFiles),
        _ if starts(&["ctypes.", "cpython.PyInterpreterState_New"]) => {
            Check::Always(Cause::NativeCode)
        }
        _ if starts(NETWORK_EVENTS) => Check::Always(Cause::Network),
        _ if starts(PROCESS_EVENTS) => Check::Always(Cause::Processes),
        _ if SIGNAL_EVENTS.contains(&event) => Check::Always(Cause::Signals),
        _ if starts(WRITE_EVENTS) => Check::Always(Cause::WriteFiles),
        _ => return None,
    })
}

/// `Some((cause, what))` when the event is refused.
fn judge(check: Check, event: &str, args: &Bound<'_, PyAny>) -> Option<(Cause, String)> {
    let args = args.cast::<PyTuple>().ok()?;
    let arg = |index: usize| args.get_item(index).ok();
    match check {
        Check::Always(Cause::CodeObjects) => Some((Cause::CodeObjects, "types.CodeType".into())),
        Check::Always(cause) => Some((cause, event.into())),
        Check::Open => {
            let path = arg(0)?;
            let writes = is_write_mode(arg(1).as_ref(), arg(2).as_ref());
            let shown = format!("open({})", short_repr(&path));
            if writes {
                return Some((Cause::WriteFiles, shown));
            }
            (!may_read(&path)).then_some((Cause::ReadFiles, shown))
        }
        Check::ListDirectory => {
            let path = arg(0).filter(|path| !path.is_none());
            let readable = path.as_ref().is_some_and(may_read);
            let shown = match &path {
                Some(path) => format!("{event}({})", short_repr(path)),
                None => format!("{event}()"),
            };
            (!readable).then_some((Cause::ReadFiles, shown))
        }
        Check::Import => {
            let module = arg(0)?.extract::<String>().ok()?;
            let cause = aerogrid_policy::refused_import(&module)?;
            // The standard library may import them (`subprocess` imports `_posixsubprocess`):
            // what they then do is judged by its own events, and the kernel. (ctypes never
            // loads: `guard_imports`.)
            importer_is_user(args.py()).then(|| (cause, format!("import {module}")))
        }
        // Imports unmarshal the standard library's bytecode; user code has no need to.
        Check::Unmarshal => {
            innermost_is_user(args.py()).then(|| (Cause::CodeObjects, "marshal.loads".into()))
        }
    }
}

/// Whether `open`'s mode (str) or flags (int) write, create or truncate.
fn is_write_mode(mode: Option<&Bound<'_, PyAny>>, flags: Option<&Bound<'_, PyAny>>) -> bool {
    let by_mode = mode
        .and_then(|mode| mode.extract::<String>().ok())
        .is_some_and(|mode| mode.contains(['w', 'a', 'x', '+']));
    let writing_flags =
        libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND;
    let by_flags = flags
        .and_then(|flags| flags.extract::<i64>().ok())
        .is_some_and(|flags| flags & i64::from(writing_flags) != 0);
    by_mode || by_flags
}

/// Whether a path (str or bytes; descriptors never) lies under a readable root.
fn may_read(path: &Bound<'_, PyAny>) -> bool {
    let path = if let Ok(text) = path.cast::<PyString>() {
        match text.to_str() {
            Ok(text) => PathBuf::from(text),
            Err(_) => return false,
        }
    } else if let Ok(bytes) = path.extract::<Vec<u8>>() {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    } else {
        return false;
    };
    let Some(policy) = POLICY.get() else { return false };
    // Symbolic links resolve first; a path that does not exist is judged as written.
    let resolved = std::fs::canonicalize(&path).ok().or_else(|| lexically_absolute(&path));
    resolved.is_some_and(|path| policy.read_roots.iter().any(|root| path.starts_with(root)))
}

/// An absolute path without `..`, or none.
fn lexically_absolute(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || path.components().any(|part| part == Component::ParentDir) {
        return None;
    }
    Some(path.to_path_buf())
}

fn short_repr(object: &Bound<'_, PyAny>) -> String {
    let text = object.repr().map(|repr| repr.to_string()).unwrap_or_else(|_| "?".into());
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The line of the innermost frame of the user's module, and the function it called there when
/// that function is Python (`socket.create_connection`).
pub(crate) fn user_position(py: Python<'_>) -> (Option<u32>, Option<String>) {
    let user_file = user_file();
    // SAFETY: the thread is attached; the frame is borrowed and only read here.
    let mut frame = unsafe { Bound::from_borrowed_ptr_or_opt(py, ffi::PyEval_GetFrame().cast()) };
    let mut inner: Option<(String, String)> = None;
    while let Some(current) = frame {
        let pointer = current.as_ptr().cast::<ffi::PyFrameObject>();
        // SAFETY: `pointer` is a live frame; both calls return new references (or NULL).
        let code =
            unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyFrame_GetCode(pointer).cast()) };
        let Some(code) = code else { break };
        let filename = code
            .getattr("co_filename")
            .and_then(|name| name.extract::<String>())
            .unwrap_or_default();
        if filename == user_file {
            // SAFETY: `pointer` is a live frame.
            let line = unsafe { ffi::PyFrame_GetLineNumber(pointer) };
            // Only a function of a real module file names the call (not importlib's frozen ones).
            let callee = inner
                .filter(|(file, _)| file.starts_with('/'))
                .map(|(file, function)| format!("{}.{function}", module_of(&file)));
            return (u32::try_from(line).ok(), callee);
        }
        let function = code
            .getattr("co_qualname")
            .and_then(|name| name.extract::<String>())
            .unwrap_or_default();
        inner = Some((filename, function));
        // SAFETY: as above; the back frame is a new reference.
        frame = unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyFrame_GetBack(pointer).cast()) };
    }
    (None, None)
}

/// Whether the innermost Python frame is the user's module (it called a C function itself).
fn innermost_is_user(py: Python<'_>) -> bool {
    frame_files(py).next().is_some_and(|file| file == user_file())
}

/// Whether the innermost frame outside importlib is the user's module (an import statement of
/// theirs, or `__import__`).
fn importer_is_user(py: Python<'_>) -> bool {
    frame_files(py)
        .find(|file| !file.starts_with("<frozen importlib"))
        .is_some_and(|file| file == user_file())
}

/// The file names of the running frames, innermost first.
fn frame_files(py: Python<'_>) -> impl Iterator<Item = String> + '_ {
    // SAFETY: the thread is attached; the frame is borrowed and only read here.
    let mut frame = unsafe { Bound::from_borrowed_ptr_or_opt(py, ffi::PyEval_GetFrame().cast()) };
    std::iter::from_fn(move || {
        let current = frame.take()?;
        let pointer = current.as_ptr().cast::<ffi::PyFrameObject>();
        // SAFETY: `pointer` is a live frame; both calls return new references (or NULL).
        let code =
            unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyFrame_GetCode(pointer).cast()) };
        // SAFETY: as above.
        frame = unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyFrame_GetBack(pointer).cast()) };
        Some(
            code.and_then(|code| code.getattr("co_filename").ok())
                .and_then(|name| name.extract::<String>().ok())
                .unwrap_or_default(),
        )
    })
}

/// `socket` for `/usr/lib/python3.11/socket.py`, `http.client` for `.../http/client.py`.
fn module_of(file: &str) -> String {
    let roots = POLICY.get().map(|policy| policy.read_roots.as_slice()).unwrap_or_default();
    let path = Path::new(file);
    let relative = roots
        .iter()
        .filter_map(|root| path.strip_prefix(root).ok())
        .min_by_key(|relative| relative.components().count())
        .unwrap_or_else(|| Path::new(path.file_name().unwrap_or_default()));
    let text = relative.with_extension("").to_string_lossy().replace('/', ".");
    text.strip_suffix(".__init__").map(str::to_owned).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_come_from_the_file_name() {
        assert_eq!(module_of("/somewhere/else/socket.py"), "socket");
        assert_eq!(module_of("<frozen os>"), "<frozen os>");
    }

    #[test]
    fn lexical_paths_must_be_absolute_without_parents() {
        assert_eq!(lexically_absolute(Path::new("relative.txt")), None);
        assert_eq!(lexically_absolute(Path::new("/usr/lib/../../etc/passwd")), None);
        assert_eq!(
            lexically_absolute(Path::new("/usr/lib/x.py")),
            Some(PathBuf::from("/usr/lib/x.py"))
        );
    }
}
