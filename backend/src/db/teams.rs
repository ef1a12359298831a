//! Teams, their members and roles, API tokens, grid shares and the audit log.

use aerogrid_api::{AuditEvent, Member, Role, Scope, Share, SharedGrid, Team, Token};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Result, db::word};

/// Creates a team with `owner` as its first owner, with its audit event.
pub async fn create(db: &sqlx::PgPool, name: &str, owner: (Uuid, &str)) -> Result<Team> {
    let mut tx = db.begin().await?;
    let id = Uuid::new_v4();
    let created_at = sqlx::query_scalar!(
        "INSERT INTO teams (id, name) VALUES ($1, $2) RETURNING created_at",
        id,
        name
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|error| conflict(error, format!("a team named `{name}` exists already")))?;
    sqlx::query!(
        "INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'owner')",
        id,
        owner.0
    )
    .execute(&mut *tx)
    .await?;
    audit(&mut *tx, id, owner, "team.create", name, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(Team { id, name: name.to_owned(), role: Role::Owner, created_at })
}

/// How many teams `user` owns.
pub async fn owned_by(db: &sqlx::PgPool, user: Uuid) -> Result<i64> {
    let owned = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM team_members WHERE user_id = $1 AND role = 'owner'"#,
        user
    )
    .fetch_one(db)
    .await?;
    Ok(owned)
}

/// The teams `user` belongs to (every team for an admin).
pub async fn list(db: &sqlx::PgPool, user: Uuid, is_admin: bool) -> Result<Vec<Team>> {
    let rows = sqlx::query!(
        r#"SELECT teams.id, teams.name, teams.created_at, team_members.role AS "role?"
           FROM teams
           LEFT JOIN team_members ON team_members.team_id = teams.id AND team_members.user_id = $1
           WHERE $2 OR team_members.user_id IS NOT NULL
           ORDER BY teams.name"#,
        user,
        is_admin
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Team {
                id: row.id,
                name: row.name,
                role: row.role.as_deref().map_or(Ok(Role::Owner), word)?,
                created_at: row.created_at,
            })
        })
        .collect()
}

pub async fn created_at(db: &sqlx::PgPool, team: Uuid) -> Result<DateTime<Utc>> {
    let at = sqlx::query_scalar!("SELECT created_at FROM teams WHERE id = $1", team)
        .fetch_one(db)
        .await?;
    Ok(at)
}

/// The team named `name` and the user's role in it (None: not a member).
pub async fn find(
    db: &sqlx::PgPool,
    name: &str,
    user: Uuid,
) -> Result<Option<(Uuid, Option<Role>)>> {
    let row = sqlx::query!(
        r#"SELECT teams.id, team_members.role AS "role?"
           FROM teams
           LEFT JOIN team_members ON team_members.team_id = teams.id AND team_members.user_id = $2
           WHERE teams.name = $1"#,
        name,
        user
    )
    .fetch_optional(db)
    .await?;
    row.map(|row| Ok((row.id, row.role.as_deref().map(word).transpose()?))).transpose()
}

pub async fn members(db: &sqlx::PgPool, team: Uuid) -> Result<Vec<Member>> {
    let rows = sqlx::query!(
        "SELECT users.name, team_members.role, team_members.created_at
         FROM team_members JOIN users ON users.id = team_members.user_id
         WHERE team_members.team_id = $1 ORDER BY users.name",
        team
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| Ok(Member { user: row.name, role: word(&row.role)?, since: row.created_at }))
        .collect()
}

/// Adds `user` to the team or changes their role, with its audit event. A team keeps at least
/// one owner.
pub async fn set_member(
    db: &sqlx::PgPool,
    team: Uuid,
    user: &str,
    role: Role,
    actor: (Uuid, &str),
) -> Result<Member> {
    let mut tx = db.begin().await?;
    lock_members(&mut tx, team).await?;
    let user_id = sqlx::query_scalar!("SELECT id FROM users WHERE name = $1", user)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("there is no user named `{user}`")))?;
    let since = sqlx::query_scalar!(
        "INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role
         RETURNING created_at",
        team,
        user_id,
        role.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    keep_an_owner(&mut tx, team).await?;
    let detail = serde_json::json!({ "role": role });
    audit(&mut *tx, team, actor, "member.set", user, detail).await?;
    tx.commit().await?;
    Ok(Member { user: user.to_owned(), role, since })
}

/// Removes `user` from the team, revoking their tokens of the team (re-adding them later does
/// not bring those back), with its audit event; false when they were not a member.
pub async fn remove_member(
    db: &sqlx::PgPool,
    team: Uuid,
    user: &str,
    actor: (Uuid, &str),
) -> Result<bool> {
    let mut tx = db.begin().await?;
    lock_members(&mut tx, team).await?;
    let removed = sqlx::query_scalar!(
        "DELETE FROM team_members USING users
         WHERE team_members.team_id = $1 AND users.id = team_members.user_id AND users.name = $2
         RETURNING team_members.user_id",
        team,
        user
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = removed else { return Ok(false) };
    keep_an_owner(&mut tx, team).await?;
    let revoked = sqlx::query!(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE team_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        team,
        user_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let detail = serde_json::json!({ "tokens_revoked": revoked });
    audit(&mut *tx, team, actor, "member.remove", user, detail).await?;
    tx.commit().await?;
    Ok(true)
}

/// Serialises changes of one team's members: two owners demoting each other at once cannot both
/// succeed.
async fn lock_members(tx: &mut sqlx::PgConnection, team: Uuid) -> Result<()> {
    sqlx::query!("SELECT id FROM teams WHERE id = $1 FOR UPDATE", team).fetch_one(&mut *tx).await?;
    Ok(())
}

async fn keep_an_owner(tx: &mut sqlx::PgConnection, team: Uuid) -> Result<()> {
    let owners = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM team_members WHERE team_id = $1 AND role = 'owner'"#,
        team
    )
    .fetch_one(&mut *tx)
    .await?;
    if owners == 0 {
        return Err(Error::Conflict(
            "a team needs at least one owner: make someone else owner first".to_owned(),
        ));
    }
    Ok(())
}

/// Stores a new token of the team, with its audit event.
pub async fn insert_token(
    db: &sqlx::PgPool,
    user: Uuid,
    team: Uuid,
    name: &str,
    scope: Scope,
    secret_sha256: &[u8],
    actor: (Uuid, &str),
) -> Result<(Uuid, DateTime<Utc>)> {
    let id = Uuid::new_v4();
    let mut tx = db.begin().await?;
    let created_at = sqlx::query_scalar!(
        "INSERT INTO api_tokens (id, user_id, team_id, name, scope, secret_sha256)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
        id,
        user,
        team,
        name,
        scope.as_str(),
        secret_sha256
    )
    .fetch_one(&mut *tx)
    .await?;
    let detail = serde_json::json!({ "id": id, "scope": scope });
    audit(&mut *tx, team, actor, "token.create", name, detail).await?;
    tx.commit().await?;
    Ok((id, created_at))
}

/// The team's live tokens; only `user`'s own unless None (owners see all).
pub async fn tokens(db: &sqlx::PgPool, team: Uuid, user: Option<Uuid>) -> Result<Vec<Token>> {
    let rows = sqlx::query!(
        "SELECT api_tokens.id, api_tokens.name, api_tokens.scope, users.name AS user_name,
                api_tokens.created_at, api_tokens.last_used_at
         FROM api_tokens JOIN users ON users.id = api_tokens.user_id
         WHERE api_tokens.team_id = $1 AND api_tokens.revoked_at IS NULL
           AND ($2::uuid IS NULL OR api_tokens.user_id = $2)
         ORDER BY api_tokens.created_at",
        team,
        user
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Token {
                id: row.id,
                name: row.name,
                scope: word(&row.scope)?,
                user: row.user_name,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
            })
        })
        .collect()
}

/// Revokes a live token of the team (only `user`'s own unless None), with its audit event; its
/// name, or None when there was no such token.
pub async fn revoke_token(
    db: &sqlx::PgPool,
    team: Uuid,
    id: Uuid,
    user: Option<Uuid>,
    actor: (Uuid, &str),
) -> Result<Option<String>> {
    let mut tx = db.begin().await?;
    let name = sqlx::query_scalar!(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL
           AND ($3::uuid IS NULL OR user_id = $3)
         RETURNING name",
        id,
        team,
        user
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(name) = &name {
        audit(&mut *tx, team, actor, "token.revoke", name, serde_json::json!({ "id": id })).await?;
    }
    tx.commit().await?;
    Ok(name)
}

pub async fn shares(db: &sqlx::PgPool, app: Uuid) -> Result<Vec<Share>> {
    let rows = sqlx::query!(
        "SELECT grid_shares.grid, teams.name, grid_shares.created_at
         FROM grid_shares JOIN teams ON teams.id = grid_shares.team_id
         WHERE grid_shares.app_id = $1 ORDER BY grid_shares.grid, teams.name",
        app
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Share { grid: row.grid, team: row.name, created_at: row.created_at })
        .collect())
}

/// Shares `grid` of `app` with the team named `with`.
pub async fn share(db: &sqlx::PgPool, app: Uuid, grid: &str, with: &str) -> Result<Share> {
    let row = sqlx::query!(
        "INSERT INTO grid_shares (app_id, grid, team_id)
         SELECT $1, $2, teams.id FROM teams WHERE teams.name = $3
         ON CONFLICT (app_id, grid, team_id) DO UPDATE SET grid = EXCLUDED.grid
         RETURNING created_at",
        app,
        grid,
        with
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::NotFound(format!("there is no team named `{with}`")))?;
    Ok(Share { grid: grid.to_owned(), team: with.to_owned(), created_at: row.created_at })
}

pub async fn unshare(db: &sqlx::PgPool, app: Uuid, grid: &str, with: &str) -> Result<bool> {
    let removed = sqlx::query!(
        "DELETE FROM grid_shares USING teams
         WHERE grid_shares.app_id = $1 AND grid_shares.grid = $2
           AND teams.id = grid_shares.team_id AND teams.name = $3",
        app,
        grid,
        with
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(removed > 0)
}

pub async fn shared_with(db: &sqlx::PgPool, team: Uuid) -> Result<Vec<SharedGrid>> {
    let rows = sqlx::query_as!(
        SharedGrid,
        "SELECT teams.name AS team, apps.name AS app, grid_shares.grid
         FROM grid_shares
         JOIN apps ON apps.id = grid_shares.app_id
         JOIN teams ON teams.id = apps.team_id
         WHERE grid_shares.team_id = $1 ORDER BY 1, 2, 3",
        team
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Appends to the team's audit log.
pub async fn audit(
    db: impl sqlx::PgExecutor<'_>,
    team: Uuid,
    actor: (Uuid, &str),
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO audit_events (team_id, actor_id, actor_name, action, target, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        team,
        actor.0,
        actor.1,
        action,
        target,
        detail
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The newest `limit` events before `before` (exclusive; None: the newest), newest first.
pub async fn audit_log(
    db: &sqlx::PgPool,
    team: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEvent>> {
    let events = sqlx::query_as!(
        AuditEvent,
        "SELECT id, at, actor_name AS actor, action, target, detail FROM audit_events
         WHERE team_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        team,
        before,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(events)
}

/// A unique-key violation as 409 with `message`; other errors as they are.
pub(crate) fn conflict(error: sqlx::Error, message: String) -> Error {
    match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            Error::Conflict(message)
        }
        _ => Error::Database(error),
    }
}
