//! The sandbox around user code. Layers, outermost first (ARCHITECTURE.md explains each):
//!
//! 1. The node starts the process with an empty environment: no secret to find.
//! 2. A network namespace of its own; as root, a user of its own (the node picks it from its
//!    range; `nobody` without one); rlimits (no core, no file
//!    growth, few descriptors, not dumpable); later, the app's memory limit.
//! 3. The interpreter: `sys.path` is the standard library only, and an audit hook refuses
//!    network, processes, threads, signals, files, native code, code objects, with a message
//!    naming the cause and the user's line.
//! 4. Landlock: the file system is read-only beneath the standard library and the shared
//!    libraries its modules load; no TCP; no signals or abstract sockets outside the process.
//! 5. Seccomp, on every thread: no new process or thread, no change of credentials, no socket, no other process's memory,
//!    no kernel facility that could bypass the rest.
//!
//! Layers 2, 4 and 5 hold even for code that gets past the interpreter; layer 3 makes the
//! refusals readable.

pub(crate) mod audit;
mod kernel;
pub(crate) mod watchdog;

use std::path::{Path, PathBuf};

use pyo3::prelude::*;

use crate::{Error, Result};

pub(crate) use kernel::limit_memory;

/// Whether user code runs sandboxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sandbox {
    On,
    /// The kernel's layers without the audit hook: what code that gets past the interpreter
    /// meets (tests use it to check those layers alone).
    KernelOnly,
    /// Only for debugging and the benchmark's baseline.
    Off,
}

/// Numerical libraries run single-threaded: a connector may not start threads (seccomp refuses
/// them once sealed; OpenBLAS would fail to start its pool), and an app gets one core's worth of
/// work, as its interpreter thread does. OpenBLAS, OpenMP, MKL and numexpr each read their own
/// variable. Set by the connector itself, before any thread, whoever started it.
pub(crate) fn single_threaded_numerics() {
    for variable in
        ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS"]
    {
        // SAFETY: called first thing in `main`, while the process has one thread.
        #[allow(unsafe_code, reason = "set_var is unsafe in edition 2024")]
        unsafe {
            std::env::set_var(variable, "1");
        }
    }
}

/// The layers applied before the interpreter starts: namespace, user, rlimits. The network
/// namespace is best effort (a container may forbid it); the others are required.
pub(crate) fn before_interpreter(uid: Option<u32>) -> Result<Vec<String>> {
    let mut layers = Vec::new();
    match kernel::isolate_network() {
        Ok(layer) => layers.push(layer.to_owned()),
        Err(error) => eprintln!(
            "aerogrid-connector: no network namespace ({error}); seccomp and landlock still refuse the network"
        ),
    }
    layers.extend(kernel::drop_root(uid)?);
    layers.push(kernel::limit_resources()?.to_owned());
    Ok(layers)
}

/// The layers applied once the interpreter and the `aerogrid` package are loaded, before any
/// thread starts: `sys.path`, the audit hook (unless `audit_hook` is false), landlock. With
/// `packages` (the app's environment), imports find them too, read-only.
pub(crate) fn after_interpreter(audit_hook: bool, packages: Option<&Path>) -> Result<Vec<String>> {
    let read_roots = Python::attach(|py| -> Result<Vec<PathBuf>> {
        let sys = py.import("sys")?;
        let mut roots = standard_library(py)?;
        // Imports find the standard library, then the app's packages (which therefore cannot
        // shadow a standard module); no site-packages.
        roots.extend(packages.map(Path::to_path_buf));
        sys.setattr(
            "path",
            roots.iter().map(|path| path.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        )?;
        disable_threads(py)?;
        Ok(roots)
    })?;
    let mut readable = read_roots.clone();
    readable.extend(system_read_paths());
    let mut layers = Vec::new();
    if audit_hook {
        audit::install(readable.clone())?;
        Python::attach(audit::guard_imports)?;
        layers.push("audit hook".to_owned());
    }
    layers.push(kernel::restrict_files(&readable)?);
    Ok(layers)
}

/// Without the sandbox: the app's packages first on `sys.path`.
pub(crate) fn add_packages(packages: &Path) -> Result<()> {
    Python::attach(|py| -> Result<()> {
        let path = py.import("sys")?.getattr("path")?;
        path.call_method1("insert", (0, packages.to_string_lossy().into_owned()))?;
        Ok(())
    })
}

/// The last layer, once the connector's own threads run: no thread or process after it.
pub(crate) fn seal() -> Result<String> {
    kernel::filter_system_calls().map(str::to_owned)
}

/// The directories of the standard library (`/usr/lib/python3.11`, its `lib-dynload`).
fn standard_library(py: Python<'_>) -> Result<Vec<PathBuf>> {
    let sysconfig = py.import("sysconfig")?;
    let mut paths = Vec::new();
    for name in ["stdlib", "platstdlib"] {
        let path: String = sysconfig.call_method1("get_path", (name,))?.extract()?;
        paths.push(PathBuf::from(path));
    }
    let dynload = py.import("sys")?.getattr("path")?.extract::<Vec<String>>()?;
    paths.extend(
        dynload.into_iter().map(PathBuf::from).filter(|path| path.ends_with("lib-dynload")),
    );
    let mut canonical: Vec<PathBuf> =
        paths.iter().filter_map(|path| std::fs::canonicalize(path).ok()).collect();
    canonical.sort();
    canonical.dedup();
    if canonical.is_empty() {
        return Err(Error::Sandbox("cannot find the standard library".into()));
    }
    Ok(canonical)
}

/// What the standard library reads besides its own files: the shared libraries of its extension
/// modules (`_decimal` needs libmpdec) with the dynamic loader's cache, and the time zone
/// database (`zoneinfo`, local time). Public files, no secrets.
fn system_read_paths() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let candidates = [
        "/etc/ld.so.cache".to_owned(),
        format!("/usr/lib/{arch}-linux-gnu"),
        format!("/lib/{arch}-linux-gnu"),
        "/usr/lib64".to_owned(),
        "/lib64".to_owned(),
        "/usr/share/zoneinfo".to_owned(),
        "/etc/localtime".to_owned(),
    ];
    let mut paths: Vec<PathBuf> = candidates
        .iter()
        .map(Path::new)
        .filter_map(|path| std::fs::canonicalize(path).ok())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Threads would run user code outside the watchdog's view: starting one is refused with a
/// message (and seccomp refuses the system call anyway).
fn disable_threads(py: Python<'_>) -> Result<()> {
    let refuse = wrap_pyfunction!(start_new_thread, py)?;
    let thread = py.import("_thread")?;
    thread.setattr("start_new_thread", &refuse)?;
    thread.setattr("start_new", &refuse)?;
    // `threading` took its own reference when it was imported (by `logging`).
    py.import("threading")?.setattr("_start_new_thread", &refuse)?;
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (*_args, **_kwargs))]
fn start_new_thread(
    py: Python<'_>,
    _args: &Bound<'_, pyo3::types::PyTuple>,
    _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
) -> PyResult<()> {
    Err(audit::refuse(py, audit::Cause::Threads, "threading.Thread.start"))
}
