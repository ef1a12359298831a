//! Apps: their code, lifecycle, status, logs and bad records; and validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Diagnostic;

crate::words! {
    /// What the user asked an app to be.
    pub enum DesiredState ("desired state") {
        Running = "running",
        Stopped = "stopped",
    }
}

crate::words! {
    /// What the runtime reports of an app.
    pub enum AppState ("app state") {
        Stopped = "stopped",
        /// A runtime node claimed it and is starting its connector and recovering its grids.
        Starting = "starting",
        /// For an input topic to exist (the reason is the status's `error`).
        Waiting = "waiting",
        Running = "running",
        /// Its code raised or it cannot start: the status's `error` says why.
        Failed = "failed",
    }
}

/// One app in the team's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSummary {
    pub name: String,
    pub latest_version: i32,
    pub desired_state: DesiredState,
    pub state: AppState,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /teams/{team}/apps`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    pub name: String,
    /// The module's Python code (it may be invalid: a draft is saved, Start refuses it).
    pub code: String,
    /// The Python packages it needs, in pip's requirements format (package names with
    /// versions, extras and markers; no options, URLs or files). Empty: the standard library only.
    #[serde(default)]
    pub requirements: String,
}

/// An app with its latest code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppDetail {
    pub team: String,
    pub name: String,
    /// The latest version (also the `ETag`: `"<version>"`).
    pub version: i32,
    pub code: String,
    /// The latest version's requirements (pip's format; empty: none).
    pub requirements: String,
    /// What they resolved to for the runtime (exact versions and hashes); null while not
    /// resolved (none declared, an error in them, or the index could not be reached yet).
    pub lock: Option<String>,
    /// What is wrong in `code` and `requirements`, if anything (`file` says which).
    pub diagnostics: Vec<Diagnostic>,
    /// What was asked for.
    pub desired_state: DesiredState,
    /// The version Start runs; null: the latest.
    pub run_version: Option<i32>,
    /// The connector's memory limit; null: the runtime's default.
    pub memory_limit_mib: Option<i32>,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `PUT /teams/{team}/apps/{app}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SaveApp {
    pub code: String,
    /// The packages (pip's requirements format); absent: those of the version edited (or the
    /// latest), so clients that know nothing of packages keep them.
    #[serde(default)]
    pub requirements: Option<String>,
    /// The version this edit started from: if someone saved since, 409 instead of an
    /// overwrite. `If-Match: "<version>"` does the same.
    #[serde(default)]
    pub base_version: Option<i32>,
}

/// What a save made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Saved {
    pub version: i32,
    pub diagnostics: Vec<Diagnostic>,
}

/// `PATCH /teams/{team}/apps/{app}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeApp {
    /// A new name (grids are then addressed by it).
    #[serde(default)]
    pub name: Option<String>,
    /// The connector's memory limit in MiB; 0 restores the runtime's default.
    #[serde(default)]
    pub memory_limit_mib: Option<i32>,
}

/// `POST .../start?version=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct StartQuery {
    /// Run this version instead of the latest.
    pub version: Option<i32>,
}

/// What Start, Stop and Restart did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lifecycle {
    pub desired_state: DesiredState,
    /// The version that will run; null: the latest.
    pub run_version: Option<i32>,
    /// Warnings of the code that will run.
    pub diagnostics: Vec<Diagnostic>,
}

/// What the runtime reports of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    pub state: AppState,
    /// Why it failed or waits, in words for the user.
    pub error: Option<String>,
    /// The line of the user's code the error points at.
    pub error_line: Option<i32>,
    /// Crash restarts of the current run.
    pub restarts: i32,
    pub records_in: i64,
    pub bad_records: i64,
    /// Input records not yet processed (approximate on brokers that report high watermarks
    /// per batch).
    pub lag: Option<i64>,
    /// The version running (or last run).
    pub version: Option<i32>,
    /// What a starting app is doing, when it takes a while (installing its packages: which,
    /// for how long so far).
    #[serde(default)]
    pub progress: Option<String>,
    /// Since when it is in this state.
    pub since: Option<DateTime<Utc>>,
}

/// `POST /validate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub code: String,
    /// The requirements to check with it (imports of packages they do not declare are
    /// errors); absent: none declared.
    #[serde(default)]
    pub requirements: Option<String>,
    /// Check it as an app of this team (the caller's): then topics the team may not read are
    /// errors too. Without it, only the platform's topics are.
    #[serde(default)]
    pub team: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    pub diagnostics: Vec<Diagnostic>,
}

/// A line the app's code logged or printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Increasing: `?after=` the last one seen gives the lines after it.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `info`, `warning` or `error` (and what Python's logging names).
    pub level: String,
    pub message: String,
}

/// `GET .../logs` and `.../logs/follow`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct LogQuery {
    /// Lines after this id (the last one seen); without it, the newest lines.
    pub after: Option<i64>,
    /// At most this many lines (default 200, at most 5000).
    pub limit: Option<i64>,
}

/// A message the app could not process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BadRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The line of the user's code that raised, when it was user code.
    pub line: Option<i32>,
    /// The message's key and value as text (invalid UTF-8 replaced), cut to the runtime's
    /// `--max-bad-record-bytes`.
    pub key: Option<String>,
    pub value: Option<String>,
    /// The sizes of key and value in full, in bytes (larger than the text when it was cut).
    pub key_size: Option<i32>,
    pub value_size: Option<i32>,
}

/// `GET .../bad-records?limit=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct LimitQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}
