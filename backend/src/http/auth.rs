//! Who is calling: an API token (`Authorization: Bearer`) or a browser session cookie.

use axum::{
    Json,
    extract::{FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AppState, Error, Result, db::accounts, secret};

const SESSION_COOKIE: &str = "aerogrid_session";
const SESSION_LIFETIME: Duration = Duration::days(30);

/// The authenticated user behind a request.
pub(crate) struct Caller(accounts::User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
            let token = authorization.to_str().ok().and_then(bearer_token).ok_or_else(|| {
                Error::Unauthenticated(
                    "malformed Authorization header: expected `Bearer <token>`".to_owned(),
                )
            })?;
            return accounts::user_for_api_token(state.db(), &secret::digest(token))
                .await?
                .map(Caller)
                .ok_or_else(|| {
                    Error::Unauthenticated("the API token is unknown or revoked".to_owned())
                });
        }
        if let Some(session) = session_cookie(&parts.headers) {
            return accounts::user_for_session(state.db(), &secret::digest(session))
                .await?
                .map(Caller)
                .ok_or_else(|| {
                    Error::Unauthenticated("the session has expired: sign in again".to_owned())
                });
        }
        Err(Error::Unauthenticated(
            "missing credentials: send `Authorization: Bearer <token>` or sign in".to_owned(),
        ))
    }
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

#[derive(Serialize)]
pub(crate) struct Me {
    id: Uuid,
    name: String,
    is_admin: bool,
}

/// `GET /api/v1/me`: the caller.
pub(crate) async fn me(Caller(user): Caller) -> Json<Me> {
    Json(Me { id: user.id, name: user.name, is_admin: user.is_admin })
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    // Optional here so that a link without it gets a problem document, not axum's plain text.
    secret: Option<String>,
}

/// `GET /api/v1/auth/link?secret=...`: redeems a one-time sign-in link for a session cookie and
/// goes to the app.
pub(crate) async fn redeem_login_link(
    State(state): State<AppState>,
    Query(query): Query<LinkQuery>,
) -> Result<Response> {
    let link_secret = query.secret.ok_or_else(|| {
        Error::BadRequest("the sign-in link lacks its `secret` parameter".to_owned())
    })?;
    let user_id = accounts::consume_login_link(state.db(), &secret::digest(&link_secret))
        .await?
        .ok_or_else(|| {
            Error::Unauthenticated(
                "this sign-in link is unknown, expired or already used; restarting `aerogrid dev` writes a new one to `<data-dir>/login-url`".to_owned(),
            )
        })?;
    let session = secret::generate(secret::SESSION_PREFIX);
    accounts::insert_session(
        state.db(),
        user_id,
        &secret::digest(&session),
        Utc::now() + SESSION_LIFETIME,
    )
    .await?;
    let secure = if state.inner.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        SESSION_LIFETIME.num_seconds()
    );
    let mut response = Redirect::to("/").into_response();
    let cookie = HeaderValue::from_str(&cookie).expect("cookie is ASCII");
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}
