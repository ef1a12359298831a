pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pipe to the runtime node: {0}")]
    Pipe(#[from] std::io::Error),
    #[error("malformed message from the runtime node: {0}")]
    Protocol(String),
    #[error("the embedded interpreter failed: {0}")]
    Python(String),
    /// User code ran out of the app's memory (a `MemoryError`); the line where, when known.
    #[error("the app ran out of memory")]
    OutOfMemory { line: Option<u32> },
    #[error("cannot set up the sandbox: {0}")]
    Sandbox(String),
}

impl From<pyo3::PyErr> for Error {
    fn from(error: pyo3::PyErr) -> Self {
        pyo3::Python::attach(|py| {
            if error.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
                Self::OutOfMemory { line: crate::python::user_line(py, &error) }
            } else {
                Self::Python(error.to_string())
            }
        })
    }
}
