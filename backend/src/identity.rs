//! Who sent a request, HTTP or gRPC alike: an API token (`Authorization: Bearer`) or a browser
//! session (cookie). What they may then do is each surface's own rule (`http::auth` for REST,
//! the gateway's `access` for grids).

use aerogrid_api::Scope;
use axum::http::{HeaderMap, header};
use uuid::Uuid;

use crate::{
    Error, Result,
    db::accounts::{self, User},
    secret,
};

/// The browser session's cookie.
pub(crate) const SESSION_COOKIE: &str = "aerogrid_session";

/// How the caller proved who they are.
#[derive(Clone, Debug)]
pub(crate) enum Credential {
    Token { team: Option<Uuid>, scope: Scope },
    Session { csrf_token: String },
}

/// The authenticated user behind a request (HTTP or gRPC).
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) user: User,
    pub(crate) credential: Credential,
}

impl Identity {
    /// The team a token is limited to.
    pub(crate) fn token_team(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Token { team, .. } => team,
            Credential::Session { .. } => None,
        }
    }

    /// An admin acting with all their powers (not through a team-limited token).
    pub(crate) fn is_admin(&self) -> bool {
        self.user.is_admin && self.token_team().is_none()
    }
}

/// Finds who sent `headers`: a bearer token first, then the session cookie.
pub(crate) async fn authenticate(db: &sqlx::PgPool, headers: &HeaderMap) -> Result<Identity> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let token = authorization.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            Error::Unauthenticated(
                "malformed Authorization header: expected `Bearer <token>`".to_owned(),
            )
        })?;
        let holder =
            accounts::token_holder(db, &secret::digest(token)).await?.ok_or_else(|| {
                Error::Unauthenticated("the API token is unknown or revoked".to_owned())
            })?;
        if !holder.still_member {
            return Err(Error::Unauthenticated(
                "the API token's user has left its team: the token no longer works".to_owned(),
            ));
        }
        let scope = holder.scope;
        return Ok(Identity {
            user: holder.user,
            credential: Credential::Token { team: holder.team, scope },
        });
    }
    if let Some(session) = session_cookie(headers) {
        let (user, csrf_token) =
            accounts::session_holder(db, &secret::digest(session)).await?.ok_or_else(|| {
                Error::Unauthenticated("the session has expired: sign in again".to_owned())
            })?;
        return Ok(Identity { user, credential: Credential::Session { csrf_token } });
    }
    Err(Error::Unauthenticated(
        "missing credentials: send `Authorization: Bearer <token>` or sign in".to_owned(),
    ))
}

/// The token of an `Authorization: Bearer <token>` value.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").map(str::trim).filter(|token| !token.is_empty())
}

pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}
