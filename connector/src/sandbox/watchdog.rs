//! The CPU watchdog: a stream step, timer or module import that runs too long without yielding
//! is stopped, and its app fails.
//!
//! The interpreter's thread counts progress (a record handed to a stream, the start and end of a
//! call); this thread samples it. After `stall` without progress it sends a signal to the
//! interpreter's thread, whose Python handler runs between two bytecodes (or right after a
//! `time.sleep`), records why with the line it was running, and raises there. Code that swallows
//! that exception, or sits in one long C call, gets `stall` again: then this thread answers the
//! request itself with `Refused` and ends the process.
//!
//! (`Py_AddPendingCall` and `PyErr_SetInterruptEx` would need no signal, but CPython 3.11 only
//! wakes the interpreter for them when they are called on its own thread.)
#![allow(unsafe_code, reason = "gettid, tgkill and _exit have no safe wrapper in std")]

use std::{
    ffi::c_int,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aerogrid_proto::runtime::v1::{ConnectorMessage, Refused, connector_message::Kind};
use pyo3::{create_exception, exceptions::PyBaseException, prelude::*};

create_exception!(
    aerogrid,
    Stalled,
    PyBaseException,
    "Raised in user code that ran too long without yielding. A BaseException, like \
     KeyboardInterrupt: `except Exception` does not stop it, and the app fails."
);

/// The signal whose Python handler the watchdog trips.
const STALL_SIGNAL: c_int = libc::SIGUSR1;

use super::audit::{self, Refusal};
use crate::frame;

const SAMPLE: Duration = Duration::from_millis(50);

/// Bumped on every record handed to a stream and at each call's start and end.
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// Whether the interpreter's thread is running a call (user code may be on the stack).
static IN_CALL: AtomicBool = AtomicBool::new(false);
/// The stall limit in milliseconds; 0: no watchdog.
static STALL_MILLIS: AtomicU64 = AtomicU64::new(0);

/// Something happened: the watchdog starts counting again.
#[inline]
pub(crate) fn progress() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// Sets the stall limit (from the app's `Load`).
pub(crate) fn set_stall_limit(limit: Option<Duration>) {
    let millis = limit.map_or(0, |limit| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
    STALL_MILLIS.store(millis, Ordering::Relaxed);
}

/// Marks a call of the interpreter's thread for as long as it lives.
pub(crate) struct Call;

impl Call {
    pub(crate) fn start() -> Self {
        progress();
        IN_CALL.store(true, Ordering::Release);
        Self
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        IN_CALL.store(false, Ordering::Release);
        progress();
    }
}

/// The interpreter's thread, which the signal goes to.
static INTERPRETER_THREAD: AtomicI64 = AtomicI64::new(0);

/// Installs the handler the watchdog trips; on the interpreter's thread, before user code.
pub(crate) fn install_handler(py: Python<'_>) -> PyResult<()> {
    // SAFETY: gettid has no preconditions.
    INTERPRETER_THREAD.store(i64::from(unsafe { libc::gettid() }), Ordering::Relaxed);
    let handler = wrap_pyfunction!(on_stall, py)?;
    py.import("signal")?.call_method1("signal", (STALL_SIGNAL, handler))?;
    Ok(())
}

/// Starts the watchdog thread; `output` is the pipe its last answer goes to.
pub(crate) fn start<W: Write + Send + 'static>(output: Arc<Mutex<W>>) -> std::io::Result<()> {
    std::thread::Builder::new().name("watchdog".into()).spawn(move || watch(&output))?;
    Ok(())
}

fn watch<W: Write>(output: &Mutex<W>) {
    let mut seen = PROGRESS.load(Ordering::Relaxed);
    let mut since = Instant::now();
    let mut interrupted = false;
    loop {
        std::thread::sleep(SAMPLE);
        let now = PROGRESS.load(Ordering::Relaxed);
        // Once interrupted, only the call's end counts: more records (the driver going on with
        // the batch after user code swallowed the exception) do not.
        if !IN_CALL.load(Ordering::Acquire) || (now != seen && !interrupted) {
            seen = now;
            since = Instant::now();
            interrupted = false;
            continue;
        }
        let limit = Duration::from_millis(STALL_MILLIS.load(Ordering::Relaxed));
        if limit.is_zero() || since.elapsed() < limit {
            continue;
        }
        if !interrupted {
            interrupted = true;
            since = Instant::now();
            // SAFETY: a signal to a thread of this process; its handler is Python's.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    INTERPRETER_THREAD.load(Ordering::Relaxed),
                    STALL_SIGNAL,
                )
            };
            continue;
        }
        // The exception did not end the call: answer for it and end the process.
        let refusal = audit::take_refusal()
            .unwrap_or_else(|| Refusal { message: stall_message(limit, None, None), line: None });
        let answer = ConnectorMessage {
            kind: Some(Kind::Refused(Refused { message: refusal.message, line: refusal.line })),
        };
        if let Ok(mut output) = output.lock() {
            let _ = frame::write(&mut *output, &answer);
        }
        // SAFETY: ends the process without running anything of the stuck interpreter.
        unsafe { libc::_exit(3) };
    }
}

/// Runs on the interpreter's thread, between two bytecodes of whatever it was doing.
#[pyfunction]
fn on_stall(py: Python<'_>, _signal: c_int, _frame: &Bound<'_, PyAny>) -> PyResult<()> {
    if !IN_CALL.load(Ordering::Acquire) {
        return Ok(());
    }
    let limit = Duration::from_millis(STALL_MILLIS.load(Ordering::Relaxed));
    let (line, callee) = audit::user_position(py);
    let message = stall_message(limit, line, callee.as_deref());
    audit::record(Refusal { message: message.clone(), line });
    Err(Stalled::new_err(message))
}

fn stall_message(limit: Duration, line: Option<u32>, callee: Option<&str>) -> String {
    let seconds = limit.as_secs_f64();
    let cause = format!(
        "the app ran for more than {seconds} s without yielding (a stream handles one record at a time, a timer must return)"
    );
    match (line, callee) {
        (Some(line), Some(callee)) => format!("{cause} (line {line}: {callee})"),
        (Some(line), None) => format!("{cause} (line {line})"),
        _ => cause,
    }
}
