//! Users, sign-in and a user's own tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Scope;

/// The signed-in user (`GET /me`, and the answer to sign-in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    pub id: Uuid,
    pub name: String,
    pub is_admin: bool,
    /// With a browser session: the value to send in `X-CSRF-Token` on writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// `POST /auth/sign-in`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// `POST /users` (administrators).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserCreated {
    pub id: Uuid,
    pub name: String,
}

/// `PUT /me/password`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// Required when the user has a password already.
    #[serde(default)]
    pub current_password: Option<String>,
    pub new_password: String,
    /// Also revoke every API token of the user (personal and of teams): a changed password is
    /// often a stolen one. Default false.
    #[serde(default)]
    pub revoke_tokens: bool,
}

/// One of the caller's live API tokens (`GET /me/tokens`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonalToken {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
    /// The team it is limited to; null: a personal token, acting in every team of its user.
    pub team: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}
