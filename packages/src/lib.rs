//! An app's Python packages. `requirements` reads what the user declared (pip's requirements
//! format, the subset that names packages from the operator's indexes) and says what is wrong
//! on which line; `lock` resolves it with uv into exact versions and hashes for the runtime's
//! interpreter and platform, wheels only; `install` puts a lock's packages in a shared,
//! read-only environment per lock; `settings` are the operator's flags.

mod cache;
mod install;
mod lock;
mod requirements;
mod settings;
mod suggest;

pub use cache::EnvLease;
pub use install::{Env, InstallError};
pub use lock::{Lock, LockError, Target, Uv};
pub use requirements::{
    LineError, MAX_LINE_BYTES, MAX_LINES, Requirement, Requirements, normalize,
};
pub use settings::{Limits, PackageSettings, PythonArgs, closed_ancestor};
