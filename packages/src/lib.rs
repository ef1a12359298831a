//! An app's Python packages. `requirements` reads what the user declared (pip's requirements
//! format, the subset that names packages from the operator's indexes) and says what is wrong
//! on which line; `lock` resolves it with uv into exact versions and hashes for the runtime's
//! interpreter and platform, wheels only.

mod lock;
mod requirements;

pub use lock::{Lock, LockError, Target, Uv};
pub use requirements::{
    LineError, MAX_LINE_BYTES, MAX_LINES, Requirement, Requirements, normalize,
};
