//! What the grid gateway asks: who a token acts for, which app a grid belongs to, where its
//! changelog's last snapshot starts.

use uuid::Uuid;

use crate::{Result, db::accounts::User};

/// An app as the gateway addresses it.
#[derive(Clone, Copy, Debug)]
pub struct AppRef {
    pub app_id: Uuid,
    pub team_id: Uuid,
}

/// The user an API token acts for, and the team it is limited to (None: all the user's teams).
pub async fn caller_for_api_token(
    db: &sqlx::PgPool,
    secret_sha256: &[u8],
) -> Result<Option<(User, Option<Uuid>)>> {
    let row = sqlx::query!(
        "SELECT users.id, users.name, users.is_admin, api_tokens.team_id
         FROM api_tokens JOIN users ON users.id = api_tokens.user_id
         WHERE api_tokens.secret_sha256 = $1 AND api_tokens.revoked_at IS NULL",
        secret_sha256,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (User { id: row.id, name: row.name, is_admin: row.is_admin }, row.team_id)))
}

pub async fn find_app(db: &sqlx::PgPool, team: &str, app: &str) -> Result<Option<AppRef>> {
    let row = sqlx::query!(
        "SELECT apps.id AS app_id, teams.id AS team_id
         FROM apps JOIN teams ON teams.id = apps.team_id
         WHERE teams.name = $1 AND apps.name = $2",
        team,
        app,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| AppRef { app_id: row.app_id, team_id: row.team_id }))
}

pub async fn is_member(db: &sqlx::PgPool, team_id: Uuid, user_id: Uuid) -> Result<bool> {
    let found = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM team_members WHERE team_id = $1 AND user_id = $2)",
        team_id,
        user_id,
    )
    .fetch_one(db)
    .await?;
    Ok(found.unwrap_or(false))
}

/// Where the app's changelog's newest complete snapshot starts (0 when it has none).
pub async fn snapshot_offset(db: &sqlx::PgPool, app_id: Uuid) -> Result<i64> {
    let offset = sqlx::query_scalar!(
        "SELECT snapshot_offset FROM app_checkpoints WHERE app_id = $1",
        app_id
    )
    .fetch_optional(db)
    .await?;
    Ok(offset.unwrap_or(0))
}

/// An app's desired state (`running` or `stopped`); None once it is deleted.
pub async fn desired_state(db: &sqlx::PgPool, app_id: Uuid) -> Result<Option<String>> {
    let state = sqlx::query_scalar!("SELECT desired_state FROM apps WHERE id = $1", app_id)
        .fetch_optional(db)
        .await?;
    Ok(state)
}

/// A grid as `ListGrids` describes it.
pub struct GridListing {
    pub team: String,
    pub app: String,
    pub grid: String,
    pub columns: Vec<String>,
    pub live: bool,
}

/// The grids of the apps `user` may read: of `only_team` when set (a token limited to one team),
/// of every team for admins, else of the user's teams; of the team named `team` unless empty.
pub async fn readable_grids(
    db: &sqlx::PgPool,
    user: &User,
    only_team: Option<Uuid>,
    team: &str,
) -> Result<Vec<GridListing>> {
    let rows = sqlx::query!(
        r#"SELECT teams.name AS team, apps.name AS app, app_grids.grid, app_grids.columns,
                  (apps.desired_state = 'running' AND app_status.state IS NOT DISTINCT FROM 'running') AS "live!"
           FROM app_grids
           JOIN apps ON apps.id = app_grids.app_id
           JOIN teams ON teams.id = apps.team_id
           LEFT JOIN app_status ON app_status.app_id = apps.id
           WHERE ($1::uuid IS NULL OR apps.team_id = $1)
             AND ($2 OR EXISTS (SELECT 1 FROM team_members
                                WHERE team_members.team_id = apps.team_id AND team_members.user_id = $3))
             AND ($4 = '' OR teams.name = $4)
           ORDER BY teams.name, apps.name, app_grids.grid"#,
        only_team,
        // Like `authorize`: a team token reads its team; an admin's session reads all.
        user.is_admin || only_team.is_some(),
        user.id,
        team,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| GridListing {
            team: row.team,
            app: row.app,
            grid: row.grid,
            columns: row.columns,
            live: row.live,
        })
        .collect())
}
