//! Users and the credentials that act for them.

use aerogrid_api::{PersonalToken, Scope};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Result;

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub is_admin: bool,
}

/// Creates the admin user, or makes the existing user of that name an admin.
pub async fn upsert_admin(db: &sqlx::PgPool, name: &str) -> Result<User> {
    let user = sqlx::query_as!(
        User,
        "INSERT INTO users (id, name, is_admin) VALUES ($1, $2, TRUE)
         ON CONFLICT (name) DO UPDATE SET is_admin = TRUE
         RETURNING id, name, is_admin",
        Uuid::new_v4(),
        name,
    )
    .fetch_one(db)
    .await?;
    Ok(user)
}

pub async fn insert_api_token(
    db: &sqlx::PgPool,
    user_id: Uuid,
    team_id: Option<Uuid>,
    name: &str,
    secret_sha256: &[u8],
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO api_tokens (id, user_id, team_id, name, secret_sha256)
         VALUES ($1, $2, $3, $4, $5)",
        id,
        user_id,
        team_id,
        name,
        secret_sha256,
    )
    .execute(db)
    .await?;
    Ok(id)
}

/// A live API token and the user it acts for.
pub struct TokenHolder {
    pub user: User,
    pub token_id: Uuid,
    /// The team it is limited to (None: all its user's teams).
    pub team: Option<Uuid>,
    pub scope: Scope,
    /// False when the token's user has left its team since (the token then no longer works).
    pub still_member: bool,
}

/// The holder of a live API token; notes its use (at most once a minute, in the same statement).
pub async fn token_holder(db: &sqlx::PgPool, secret_sha256: &[u8]) -> Result<Option<TokenHolder>> {
    let row = sqlx::query!(
        r#"WITH touched AS (
               UPDATE api_tokens SET last_used_at = now()
               WHERE secret_sha256 = $1 AND revoked_at IS NULL
                 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))
           SELECT users.id, users.name, users.is_admin, api_tokens.id AS token_id,
                  api_tokens.team_id, api_tokens.scope,
                  (api_tokens.team_id IS NULL OR users.is_admin OR EXISTS (
                      SELECT 1 FROM team_members
                      WHERE team_members.team_id = api_tokens.team_id
                        AND team_members.user_id = users.id)) AS "still_member!"
           FROM api_tokens JOIN users ON users.id = api_tokens.user_id
           WHERE api_tokens.secret_sha256 = $1 AND api_tokens.revoked_at IS NULL"#,
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        Ok(TokenHolder {
            user: User { id: row.id, name: row.name, is_admin: row.is_admin },
            token_id: row.token_id,
            team: row.team_id,
            scope: crate::db::word(&row.scope)?,
            still_member: row.still_member,
        })
    })
    .transpose()
}

/// The user a live (not revoked) API token acts for.
pub async fn user_for_api_token(db: &sqlx::PgPool, secret_sha256: &[u8]) -> Result<Option<User>> {
    let user = sqlx::query_as!(
        User,
        "SELECT users.id, users.name, users.is_admin
         FROM api_tokens JOIN users ON users.id = api_tokens.user_id
         WHERE api_tokens.secret_sha256 = $1 AND api_tokens.revoked_at IS NULL",
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    Ok(user)
}

pub async fn insert_login_link(
    db: &sqlx::PgPool,
    user_id: Uuid,
    secret_sha256: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO login_links (secret_sha256, user_id, expires_at) VALUES ($1, $2, $3)",
        secret_sha256,
        user_id,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a sign-in link used and returns its user, if it was unused and unexpired.
pub async fn consume_login_link(db: &sqlx::PgPool, secret_sha256: &[u8]) -> Result<Option<Uuid>> {
    let user_id = sqlx::query_scalar!(
        "UPDATE login_links SET used_at = now()
         WHERE secret_sha256 = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id",
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    Ok(user_id)
}

pub async fn insert_session(
    db: &sqlx::PgPool,
    user_id: Uuid,
    secret_sha256: &[u8],
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (secret_sha256, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
        secret_sha256,
        user_id,
        csrf_token,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user of a live browser session, and the session's CSRF token.
pub async fn session_holder(
    db: &sqlx::PgPool,
    secret_sha256: &[u8],
) -> Result<Option<(User, String)>> {
    let row = sqlx::query!(
        "SELECT users.id, users.name, users.is_admin, sessions.csrf_token
         FROM sessions JOIN users ON users.id = sessions.user_id
         WHERE sessions.secret_sha256 = $1 AND sessions.expires_at > now()",
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (User { id: row.id, name: row.name, is_admin: row.is_admin }, row.csrf_token)))
}

pub async fn delete_session(db: &sqlx::PgPool, secret_sha256: &[u8]) -> Result<()> {
    sqlx::query!("DELETE FROM sessions WHERE secret_sha256 = $1", secret_sha256)
        .execute(db)
        .await?;
    Ok(())
}

/// Creates a user who signs in with a password (an argon2id PHC string).
pub async fn create_user(db: &sqlx::PgPool, name: &str, password_hash: &str) -> Result<User> {
    let user = sqlx::query_as!(
        User,
        "INSERT INTO users (id, name, password_hash) VALUES ($1, $2, $3)
         RETURNING id, name, is_admin",
        Uuid::new_v4(),
        name,
        password_hash,
    )
    .fetch_one(db)
    .await
    .map_err(|error| {
        crate::db::teams::conflict(error, format!("a user named `{name}` exists already"))
    })?;
    Ok(user)
}

/// A user and their password hash (None: they cannot sign in with a password).
pub async fn password_of(db: &sqlx::PgPool, name: &str) -> Result<Option<(User, Option<String>)>> {
    let row =
        sqlx::query!("SELECT id, name, is_admin, password_hash FROM users WHERE name = $1", name)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|row| {
        (User { id: row.id, name: row.name, is_admin: row.is_admin }, row.password_hash)
    }))
}

/// Sets a user's password and ends their other sessions (a changed password is often a stolen
/// one): only `keep`, the session that changed it, stays. With `revoke_tokens`, every API token
/// of the user is revoked too.
pub async fn set_password(
    db: &sqlx::PgPool,
    user: (Uuid, &str),
    password_hash: &str,
    keep: Option<&[u8]>,
    revoke_tokens: bool,
) -> Result<u64> {
    let mut tx = db.begin().await?;
    let mut revoked = 0;
    if revoke_tokens {
        let tokens = sqlx::query!(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL
             RETURNING id, name, team_id",
            user.0
        )
        .fetch_all(&mut *tx)
        .await?;
        revoked = tokens.len() as u64;
        // Each team's log says its tokens went (personal ones belong to no team's log).
        for token in tokens {
            if let Some(team) = token.team_id {
                let detail = serde_json::json!({ "id": token.id, "why": "password changed" });
                crate::db::teams::audit(&mut *tx, team, user, "token.revoke", &token.name, detail)
                    .await?;
            }
        }
    }
    let user = user.0;
    sqlx::query!("UPDATE users SET password_hash = $2 WHERE id = $1", user, password_hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "DELETE FROM sessions WHERE user_id = $1 AND ($2::bytea IS NULL OR secret_sha256 <> $2)",
        user,
        keep
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(revoked)
}

/// The user's live tokens, personal and of teams, oldest first.
pub async fn tokens_of(db: &sqlx::PgPool, user: Uuid) -> Result<Vec<PersonalToken>> {
    let rows = sqlx::query!(
        r#"SELECT api_tokens.id, api_tokens.name, api_tokens.scope, teams.name AS "team?",
                  api_tokens.created_at, api_tokens.last_used_at
           FROM api_tokens LEFT JOIN teams ON teams.id = api_tokens.team_id
           WHERE api_tokens.user_id = $1 AND api_tokens.revoked_at IS NULL
           ORDER BY api_tokens.created_at, api_tokens.id"#,
        user
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(PersonalToken {
                id: row.id,
                name: row.name,
                scope: crate::db::word(&row.scope)?,
                team: row.team,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
            })
        })
        .collect()
}

/// Revokes one of the user's live tokens (audited in its team, if it has one); its name, or
/// None when the user has no such live token.
pub async fn revoke_own_token(
    db: &sqlx::PgPool,
    user: (Uuid, &str),
    id: Uuid,
) -> Result<Option<String>> {
    let mut tx = db.begin().await?;
    let revoked = sqlx::query!(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
         RETURNING name, team_id",
        id,
        user.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(revoked) = revoked else { return Ok(None) };
    if let Some(team) = revoked.team_id {
        let detail = serde_json::json!({ "id": id });
        crate::db::teams::audit(&mut *tx, team, user, "token.revoke", &revoked.name, detail)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(revoked.name))
}
