//! An app's saved versions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Diagnostic;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    pub version: i32,
    /// Who saved it (None once the user is deleted).
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// `created`, `saved`, or `rollback to N`.
    pub note: Option<String>,
    /// Size of the code in bytes.
    pub bytes: i32,
}

/// The code of one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionCode {
    pub version: i32,
    pub code: String,
    /// Its requirements (pip's format; empty: none).
    pub requirements: String,
    /// What they resolved to; null while not resolved.
    pub lock: Option<String>,
}

/// `GET .../versions/{v}/diff?to=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct DiffQuery {
    /// The version to compare with (default: the latest).
    pub to: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionDiff {
    pub from: i32,
    pub to: i32,
    /// A unified diff of the code (3 lines of context), empty when the code is the same.
    pub diff: String,
    /// The same of the requirements.
    #[serde(default)]
    pub requirements_diff: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolledBack {
    /// The new latest version, holding the chosen version's code, requirements and lock.
    pub version: i32,
    /// Whether the running app restarted with it.
    pub restarted: bool,
    pub diagnostics: Vec<Diagnostic>,
}
