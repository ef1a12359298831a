//! Users and the credentials that act for them.

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
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (secret_sha256, user_id, expires_at) VALUES ($1, $2, $3)",
        secret_sha256,
        user_id,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user of a live browser session.
pub async fn user_for_session(db: &sqlx::PgPool, secret_sha256: &[u8]) -> Result<Option<User>> {
    let user = sqlx::query_as!(
        User,
        "SELECT users.id, users.name, users.is_admin
         FROM sessions JOIN users ON users.id = sessions.user_id
         WHERE sessions.secret_sha256 = $1 AND sessions.expires_at > now()",
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    Ok(user)
}
