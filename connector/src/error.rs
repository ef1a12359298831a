pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pipe to the runtime node: {0}")]
    Pipe(#[from] std::io::Error),
    #[error("malformed message from the runtime node: {0}")]
    Protocol(String),
    #[error("the embedded interpreter failed: {0}")]
    Python(String),
}

impl From<pyo3::PyErr> for Error {
    fn from(error: pyo3::PyErr) -> Self {
        Self::Python(error.to_string())
    }
}
