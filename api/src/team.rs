//! Teams, members, tokens, grid shares, topic grants, quotas and the audit log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::words! {
    /// What a member may do in a team; each role includes the ones before it.
    #[derive(PartialOrd, Ord)]
    pub enum Role ("role") {
        /// Reads apps, their code, status, logs and grids.
        Viewer = "viewer",
        /// Also creates, saves, starts, stops and deletes apps.
        Editor = "editor",
        /// Also manages members and shares grids with other teams.
        Owner = "owner",
    }
}

crate::words! {
    /// What an API token may do.
    #[derive(Default)]
    pub enum Scope ("token scope") {
        /// Reads apps and grids (the Excel add-in, dashboards).
        Read = "read",
        /// Acts with its user's role in the team (scripts, CI).
        #[default]
        Manage = "manage",
    }
}

/// A team as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    /// The caller's role; admins who are not members act as owners.
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// `POST /teams`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
}

/// A team with its quotas and what it uses of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamDetail {
    #[serde(flatten)]
    pub team: Team,
    /// Its topic namespace: its apps may always read these topics.
    pub namespace: String,
    pub quotas: Quotas,
    pub usage: Usage,
}

/// `PATCH /teams/{team}` (administrators).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeTeam {
    /// The team's quotas; each absent or null one is the server's default.
    pub quotas: QuotaSettings,
}

/// A team's limits in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Apps the team may have.
    pub apps: i32,
    /// Apps it may run at once.
    pub running_apps: i32,
    /// Memory one of its apps may ask for its connector, in MiB.
    pub app_memory_mib: i32,
    /// Memory of its running apps together, in MiB.
    pub total_memory_mib: i32,
}

/// A team's own limits; each absent (null) one is the server's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    #[serde(default)]
    pub apps: Option<i32>,
    #[serde(default)]
    pub running_apps: Option<i32>,
    #[serde(default)]
    pub app_memory_mib: Option<i32>,
    #[serde(default)]
    pub total_memory_mib: Option<i32>,
}

/// What a team uses of its quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub apps: i64,
    pub running_apps: i64,
    /// Memory of its running apps, in MiB (an app without a limit of its own counts as the
    /// runtime nodes' default).
    pub memory_mib: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user: String,
    pub role: Role,
    pub since: DateTime<Utc>,
}

/// `PUT /teams/{team}/members/{user}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberRole {
    pub role: Role,
}

/// `POST /teams/{team}/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for, e.g. "Excel on my laptop".
    pub name: String,
    /// `read` (grids and apps, read only) or `manage` (the default: acts with your role).
    #[serde(default)]
    pub scope: Scope,
}

/// A new token: its secret is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub created_at: DateTime<Utc>,
}

/// A live token of a team (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
    /// Who minted it.
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One of an app's grids shared with another team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Share {
    pub grid: String,
    pub team: String,
    pub created_at: DateTime<Utc>,
}

/// A grid another team shares with this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedGrid {
    /// The owning team.
    pub team: String,
    pub app: String,
    pub grid: String,
}

/// Topics a team's apps may read beyond its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicGrant {
    /// A topic name, or a prefix ending in `*`.
    pub pattern: String,
    /// The administrator who granted it.
    pub granted_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who did it (kept when the user is deleted).
    pub actor: String,
    /// What was done, e.g. `app.start`.
    pub action: String,
    /// What it was done to, e.g. the app's name.
    pub target: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// `GET /teams/{team}/audit`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct AuditQuery {
    /// Events before this id (the `id` of the last event of the previous page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}
