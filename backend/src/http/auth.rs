//! Who is calling (an API token or a browser session) and what they may do in a team.
//!
//! Every route that touches a team goes through [`Caller::in_team`]: a team the caller cannot
//! see is NOT FOUND (its existence is not revealed), a role or token scope too small for the
//! action is FORBIDDEN with what it would take.

use crate::LockExt as _;
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use aerogrid_api::{Me, NewPassword, NewUser, Role, Scope, SignIn, UserCreated};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::extract::ApiJson;
use crate::{
    Error, Result, ServerState,
    db::{
        accounts::{self, User},
        teams,
    },
    identity::{Credential, Identity, SESSION_COOKIE, authenticate, session_cookie},
    secret,
    workers::PASSWORDS,
};

const SESSION_LIFETIME: chrono::Duration = chrono::Duration::days(30);
/// Cookie-authenticated writes carry the session's CSRF token in this header.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
const MIN_PASSWORD_CHARS: usize = 10;
/// Failed sign-ins allowed in one window per user name, and per client address (higher: many
/// people may share an address).
const SIGN_IN_FAILURES_PER_NAME: u32 = 5;
const SIGN_IN_FAILURES_PER_ADDRESS: u32 = 20;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Names and addresses the limiter tracks at once; beyond, sign-ins wait for the window.
const SIGN_IN_KEYS: usize = 100_000;
/// Longer names cannot exist (see `check_name`); longer passwords cannot be set.
const MAX_SIGN_IN_NAME: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;

/// The caller of a REST route. Cookie-authenticated requests that change something must carry
/// the session's CSRF token: a page of another origin can send the cookie but cannot read the
/// token.
pub(crate) struct Caller(pub(crate) Identity);

impl FromRequestParts<ServerState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &ServerState) -> Result<Self> {
        let identity = authenticate(state.db(), &parts.headers).await?;
        if let Credential::Session { csrf_token } = &identity.credential {
            let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            let sent = parts.headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok());
            if !safe && (csrf_token.is_empty() || sent != Some(csrf_token.as_str())) {
                return Err(Error::Forbidden(format!(
                    "missing or wrong `{CSRF_HEADER}` header: a signed-in page sends the token `GET /api/v1/me` gives"
                )));
            }
        }
        Ok(Self(identity))
    }
}

/// What an action needs of the caller's role in the team.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Reading: any member, any token scope.
    Read,
    /// Changing apps: editors and owners, with a `manage` token or a session.
    Edit,
    /// Members and sharing: owners.
    Own,
}

/// A team the caller may act in, and their role there.
#[derive(Clone, Debug)]
pub(crate) struct TeamAccess {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) role: Role,
}

impl Caller {
    pub(crate) fn user(&self) -> &User {
        &self.0.user
    }

    /// For the audit log.
    pub(crate) fn actor(&self) -> (Uuid, &str) {
        (self.0.user.id, &self.0.user.name)
    }

    /// The team named `team`, if the caller may do what `need` says there.
    pub(crate) async fn in_team(
        &self,
        state: &ServerState,
        team: &str,
        need: Need,
    ) -> Result<TeamAccess> {
        let span = tracing::Span::current();
        span.record("user", self.0.user.name.as_str());
        span.record("team", team);
        let hidden =
            || Error::NotFound(format!("there is no team `{team}` (or you are not in it)"));
        let (id, role) = teams::find(state.db(), team, self.0.user.id).await?.ok_or_else(hidden)?;
        if self.0.token_team().is_some_and(|token_team| token_team != id) {
            return Err(hidden());
        }
        let role = match role {
            Some(role) => role,
            None if self.0.user.is_admin => Role::Owner,
            None => return Err(hidden()),
        };
        if need != Need::Read
            && matches!(self.0.credential, Credential::Token { scope: Scope::Read, .. })
        {
            return Err(Error::Forbidden(
                "this API token may only read (scope `read`): use a `manage` token to change things"
                    .to_owned(),
            ));
        }
        let needed = match need {
            Need::Read => Role::Viewer,
            Need::Edit => Role::Editor,
            Need::Own => Role::Owner,
        };
        if role < needed {
            let who = match needed {
                Role::Owner => "an owner",
                _ => "an editor or owner",
            };
            return Err(Error::Forbidden(format!(
                "`{}` is {} of team `{team}`: this takes {who}",
                self.0.user.name,
                match role {
                    Role::Viewer => "a viewer",
                    Role::Editor => "an editor",
                    Role::Owner => "an owner",
                }
            )));
        }
        Ok(TeamAccess { id, name: team.to_owned(), role })
    }

    /// Account actions take the user's own credentials: a session, or a token not limited to
    /// one team (a team's token, handed to Excel or CI, must not take over its user).
    pub(crate) fn require_personal(&self, writes: bool) -> Result<()> {
        match self.0.credential {
            Credential::Token { team: Some(_), .. } => Err(Error::Forbidden(
                "a token of one team cannot act on the account: use a session or a personal token"
                    .to_owned(),
            )),
            Credential::Token { scope: Scope::Read, .. } if writes => {
                Err(Error::Forbidden("a read-only token cannot change the account".to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// Admin-only actions (creating users).
    pub(crate) fn require_admin(&self) -> Result<()> {
        if self.0.is_admin()
            && !matches!(self.0.credential, Credential::Token { scope: Scope::Read, .. })
        {
            Ok(())
        } else {
            Err(Error::Forbidden("only an administrator may do this".to_owned()))
        }
    }
}

fn me_of(user: User, csrf_token: Option<String>) -> Me {
    Me { id: user.id, name: user.name, is_admin: user.is_admin, csrf_token }
}

/// Who the caller is.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = Me)),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn me(Caller(identity): Caller) -> axum::Json<Me> {
    let csrf = match identity.credential {
        Credential::Session { csrf_token } => Some(csrf_token),
        Credential::Token { .. } => None,
    };
    axum::Json(me_of(identity.user, csrf))
}

/// Signs in with a password: sets the session cookie and gives the CSRF token.
///
/// Five failed attempts for a user name (twenty from one client address) in a minute lock
/// further attempts for the rest of that minute (429 with `Retry-After`).
#[utoipa::path(post, path = "/auth/sign-in", tag = "auth", request_body = SignIn,
    responses((status = 200, body = Me, description = "Signed in; the session cookie is set"),
              (status = 401, body = aerogrid_api::Problem, content_type = "application/problem+json"),
              (status = 429, body = aerogrid_api::Problem, content_type = "application/problem+json")),
    security())]
pub(crate) async fn sign_in(
    State(state): State<ServerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response> {
    let limiter = &state.inner.sign_in_limiter;
    let client = crate::config::client_address(peer.ip(), &headers, &state.inner.trusted_proxies);
    // Counted before the verify: concurrent attempts cannot all pass the check.
    limiter.attempt(&body.name, client)?;
    if body.name.len() > MAX_SIGN_IN_NAME || body.password.len() > MAX_PASSWORD_BYTES {
        // No user has such a name or password: refused without a verify (still counted).
        return Err(Error::Unauthenticated("wrong user name or password".to_owned()));
    }
    let found = accounts::password_of(state.db(), &body.name).await?;
    let hash = found.as_ref().and_then(|(_, hash)| hash.clone());
    let password = body.password;
    // Verified even for unknown users (against a fixed hash), so timing does not tell which
    // names exist; a few at a time (each takes ~19 MiB), the rest wait their turn.
    let verified = PASSWORDS
        .run(move || verify_password(&password, hash.as_deref().unwrap_or(DUMMY_HASH.as_str())))
        .await
        .ok_or_else(busy)?;
    match found {
        Some((user, Some(_))) if verified => {
            limiter.forget(&body.name, client);
            let (cookie, csrf_token) = start_session(&state, user.id).await?;
            let mut response = axum::Json(me_of(user, Some(csrf_token))).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            Ok(response)
        }
        _ => Err(Error::Unauthenticated("wrong user name or password".to_owned())),
    }
}

/// Ends the browser session.
#[utoipa::path(post, path = "/auth/sign-out", tag = "auth",
    responses((status = 204, description = "Signed out; the cookie is cleared")),
    security(("session" = [])))]
pub(crate) async fn sign_out(
    State(state): State<ServerState>,
    headers: HeaderMap,
) -> Result<Response> {
    if let Some(session) = session_cookie(&headers) {
        accounts::delete_session(state.db(), &secret::digest(session)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("ASCII"));
    Ok(response)
}

/// Creates a user who signs in with a password (administrators only).
#[utoipa::path(post, path = "/users", tag = "auth", request_body = NewUser,
    responses((status = 201, body = UserCreated)),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_user(
    State(state): State<ServerState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, axum::Json<UserCreated>)> {
    caller.require_admin()?;
    super::check_name("user", &body.name)?;
    let hash = hash_password(body.password).await?;
    let user = accounts::create_user(state.db(), &body.name, &hash).await?;
    Ok((StatusCode::CREATED, axum::Json(UserCreated { id: user.id, name: user.name })))
}

/// Sets the caller's password (with a session or a personal token, not a team's); their other
/// browser sessions end, and with `revoke_tokens` their API tokens too.
#[utoipa::path(put, path = "/me/password", tag = "auth", request_body = NewPassword,
    responses((status = 204, description = "Changed")),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn set_password(
    State(state): State<ServerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<StatusCode> {
    caller.require_personal(true)?;
    // Its verify counts against the sign-in limits: it is a password guess too.
    let client = crate::config::client_address(peer.ip(), &headers, &state.inner.trusted_proxies);
    state.inner.sign_in_limiter.attempt(&caller.user().name, client)?;
    let (_, current) = accounts::password_of(state.db(), &caller.user().name)
        .await?
        .ok_or_else(|| Error::NotFound("the user is gone".to_owned()))?;
    if let Some(current) = current {
        let given = body.current_password.unwrap_or_default();
        let ok = PASSWORDS.run(move || verify_password(&given, &current)).await.ok_or_else(busy)?;
        if !ok {
            return Err(Error::Forbidden("the current password is wrong".to_owned()));
        }
    }
    let hash = hash_password(body.new_password).await?;
    let current_session = session_cookie(&headers).map(secret::digest);
    accounts::set_password(
        state.db(),
        caller.actor(),
        &hash,
        current_session.as_deref(),
        body.revoke_tokens,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live API tokens: personal ones (acting in all their teams) and those of teams.
#[utoipa::path(get, path = "/me/tokens", tag = "auth",
    responses((status = 200, body = Vec<aerogrid_api::PersonalToken>)),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn my_tokens(
    State(state): State<ServerState>,
    caller: Caller,
) -> Result<axum::Json<Vec<aerogrid_api::PersonalToken>>> {
    caller.require_personal(false)?;
    Ok(axum::Json(accounts::tokens_of(state.db(), caller.user().id).await?))
}

/// Revokes one of the caller's API tokens, personal or of a team.
#[utoipa::path(delete, path = "/me/tokens/{id}", tag = "auth",
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn revoke_my_token(
    State(state): State<ServerState>,
    caller: Caller,
    super::extract::ApiPath(id): super::extract::ApiPath<Uuid>,
) -> Result<StatusCode> {
    caller.require_personal(true)?;
    accounts::revoke_own_token(state.db(), caller.actor(), id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("you have no live token {id}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    // Optional here so that a link without it gets a problem document, not axum's plain text.
    secret: Option<String>,
}

/// `GET /api/v1/auth/link?secret=...`: redeems a one-time sign-in link for a session cookie and
/// goes to the app. (A link opened from a terminal, not an API: left out of the OpenAPI document.)
pub(crate) async fn redeem_login_link(
    State(state): State<ServerState>,
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
    let (cookie, _) = start_session(&state, user_id).await?;
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// A new session for `user`: its `Set-Cookie` value and its CSRF token.
async fn start_session(state: &ServerState, user: Uuid) -> Result<(HeaderValue, String)> {
    let session = secret::generate(secret::SESSION_PREFIX);
    let csrf_token = secret::generate("agc_");
    accounts::insert_session(
        state.db(),
        user,
        &secret::digest(&session),
        &csrf_token,
        Utc::now() + SESSION_LIFETIME,
    )
    .await?;
    let secure = if state.inner.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        SESSION_LIFETIME.num_seconds()
    );
    Ok((HeaderValue::from_str(&cookie).expect("cookie is ASCII"), csrf_token))
}

async fn hash_password(password: String) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::BadRequest(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::BadRequest("a password has at most 1024 bytes".to_owned()));
    }
    PASSWORDS
        .run(move || {
            use argon2::{PasswordHasher, password_hash::SaltString};
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| Error::Internal(format!("cannot hash a password: {error}")))
        })
        .await
        .ok_or_else(busy)?
}

/// The password workers' queue is full.
fn busy() -> Error {
    Error::Unavailable("the server is busy checking passwords: try again in a moment".to_owned())
}

/// Whether `password` is the one of the PHC string `hash`. Its argon2 memory (~19 MiB) is the
/// worker thread's, kept for the next: freed and taken again at each verify, it was not
/// reused and the server grew by as much at every sign-in.
fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
    thread_local! {
        static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed))
    else {
        return false;
    };
    let version =
        parsed.version.and_then(|version| Version::try_from(version).ok()).unwrap_or_default();
    let mut salt_buffer = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else { return false };
    let mut computed = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let hashed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        blocks.resize(params.block_count(), Block::default());
        argon2.hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            &mut blocks[..],
        )
    });
    // `Output`'s comparison takes the same time whatever the bytes.
    hashed.is_ok()
        && argon2::password_hash::Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// An argon2id hash of nothing anyone types, verified for unknown users.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use argon2::{PasswordHasher, password_hash::SaltString};
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(secret::generate("").as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// Counts sign-in attempts per user name and per client address (per server process), before
/// the password is verified; successful ones are forgotten.
#[derive(Default)]
pub(crate) struct SignInLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl SignInLimiter {
    fn keys(name: &str, ip: IpAddr) -> [(String, u32); 2] {
        // Names are at most 64 bytes; a longer one is cut for its key (and fails anyway).
        let name: String = name.chars().take(MAX_SIGN_IN_NAME).collect();
        [
            (format!("user:{name}"), SIGN_IN_FAILURES_PER_NAME),
            (format!("ip:{ip}"), SIGN_IN_FAILURES_PER_ADDRESS),
        ]
    }

    /// Counts an attempt for the name and the address, or refuses it when either used its
    /// window's attempts (a successful sign-in forgets the name's).
    fn attempt(&self, name: &str, ip: IpAddr) -> Result<()> {
        let mut failures = self.failures.locked();
        let now = Instant::now();
        failures.retain(|_, (_, since)| now.duration_since(*since) < SIGN_IN_WINDOW);
        let keys = Self::keys(name, ip);
        let too_many = |wait: Duration| Error::TooManyRequests {
            message: format!("too many sign-ins: try again in {} s", wait.as_secs().max(1)),
            retry_after_seconds: wait.as_secs().max(1),
        };
        for (key, allowed) in &keys {
            if let Some((count, since)) = failures.get(key)
                && *count >= *allowed
            {
                return Err(too_many(SIGN_IN_WINDOW.saturating_sub(now.duration_since(*since))));
            }
        }
        if failures.len() + keys.len() > SIGN_IN_KEYS {
            return Err(too_many(SIGN_IN_WINDOW));
        }
        for (key, _) in keys {
            failures.entry(key).or_insert((0, now)).0 += 1;
        }
        Ok(())
    }

    /// A sign-in succeeded: its name starts afresh, and its attempt does not count against
    /// its address (many people may sign in from one).
    fn forget(&self, name: &str, ip: IpAddr) {
        let [(name_key, _), (ip_key, _)] = Self::keys(name, ip);
        let mut failures = self.failures.locked();
        failures.remove(&name_key);
        if let Some((count, _)) = failures.get_mut(&ip_key) {
            *count = count.saturating_sub(1);
        }
    }
}
