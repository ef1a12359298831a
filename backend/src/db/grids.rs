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

/// What a caller may read of an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readable {
    No,
    /// Only the grid asked for: it is shared with the caller's team.
    SharedGrid,
    /// Every grid: the caller is of the app's team.
    WholeApp,
}

/// Whether a caller may read `grid` of `app`: as a member of the owning team or of a team the
/// grid is shared with; with a token limited to a team, as that team. Admins are decided by the
/// caller.
pub async fn may_read(
    db: &sqlx::PgPool,
    app: AppRef,
    grid: &str,
    user_id: Uuid,
    token_team: Option<Uuid>,
) -> Result<Readable> {
    let row = sqlx::query!(
        r#"SELECT
               CASE WHEN $3::uuid IS NULL
                    THEN EXISTS (SELECT 1 FROM team_members WHERE team_id = $2 AND user_id = $4)
                    ELSE $3 = $2 END AS "member!",
               EXISTS (
                   SELECT 1 FROM grid_shares
                   WHERE app_id = $1 AND grid = $5
                     AND CASE WHEN $3::uuid IS NULL
                              THEN EXISTS (SELECT 1 FROM team_members
                                           WHERE team_members.team_id = grid_shares.team_id
                                             AND team_members.user_id = $4)
                              ELSE grid_shares.team_id = $3 END) AS "shared!""#,
        app.app_id,
        app.team_id,
        token_team,
        user_id,
        grid,
    )
    .fetch_one(db)
    .await?;
    Ok(if row.member {
        Readable::WholeApp
    } else if row.shared {
        Readable::SharedGrid
    } else {
        Readable::No
    })
}

/// The topics an app's loaded version reads, and what its team may read.
pub struct AppInputs {
    pub team: String,
    pub topics: Vec<String>,
    pub grants: Vec<String>,
}

pub async fn app_inputs(db: &sqlx::PgPool, app_id: Uuid) -> Result<AppInputs> {
    let row = sqlx::query!(
        r#"SELECT teams.name AS team,
                  ARRAY(SELECT topic FROM app_topics WHERE app_id = apps.id ORDER BY 1) AS "topics!",
                  ARRAY(SELECT pattern FROM topic_grants WHERE team_id = apps.team_id ORDER BY 1) AS "grants!"
           FROM apps JOIN teams ON teams.id = apps.team_id WHERE apps.id = $1"#,
        app_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row
        .map_or(AppInputs { team: String::new(), topics: Vec::new(), grants: Vec::new() }, |row| {
            AppInputs { team: row.team, topics: row.topics, grants: row.grants }
        }))
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

/// Where the node that holds the app's lease relays its changelog records, and its token; None
/// when no node holds it or that node relays nothing.
pub async fn relay_of(db: &sqlx::PgPool, app_id: Uuid) -> Result<Option<(String, String)>> {
    let found = sqlx::query!(
        r#"SELECT n.relay_url AS "relay_url!", n.relay_token AS "relay_token!"
           FROM app_leases l JOIN runtime_nodes n ON n.node_id = l.node_id
           WHERE l.app_id = $1 AND l.expires_at > now()
             AND n.relay_url IS NOT NULL AND n.relay_token IS NOT NULL"#,
        app_id
    )
    .fetch_optional(db)
    .await?;
    Ok(found.map(|row| (row.relay_url, row.relay_token)))
}

/// An app's desired state (`running` or `stopped`); None once it is deleted.
pub async fn desired_state(
    db: &sqlx::PgPool,
    app_id: Uuid,
) -> Result<Option<aerogrid_api::DesiredState>> {
    let state = sqlx::query_scalar!("SELECT desired_state FROM apps WHERE id = $1", app_id)
        .fetch_optional(db)
        .await?;
    state.as_deref().map(crate::db::word).transpose()
}

/// A grid as `ListGrids` describes it.
pub struct GridListing {
    pub team: String,
    pub app: String,
    pub grid: String,
    pub columns: Vec<String>,
    pub live: bool,
}

/// The grids `user` may read (see [`may_read`]; admins' sessions read all), of the team named
/// `team` unless it is empty.
pub async fn readable_grids(
    db: &sqlx::PgPool,
    user: &User,
    token_team: Option<Uuid>,
    team: &str,
) -> Result<Vec<GridListing>> {
    let rows = sqlx::query!(
        r#"SELECT teams.name AS team, apps.name AS app, app_grids.grid, app_grids.columns,
                  (apps.desired_state = 'running' AND app_status.state IS NOT DISTINCT FROM 'running') AS "live!"
           FROM app_grids
           JOIN apps ON apps.id = app_grids.app_id
           JOIN teams ON teams.id = apps.team_id
           LEFT JOIN app_status ON app_status.app_id = apps.id
           WHERE ($2
                  OR CASE WHEN $1::uuid IS NULL
                          THEN EXISTS (SELECT 1 FROM team_members
                                       WHERE team_members.team_id = apps.team_id
                                         AND team_members.user_id = $3)
                          ELSE apps.team_id = $1 END
                  OR EXISTS (
                      SELECT 1 FROM grid_shares
                      WHERE grid_shares.app_id = apps.id AND grid_shares.grid = app_grids.grid
                        AND CASE WHEN $1::uuid IS NULL
                                 THEN EXISTS (SELECT 1 FROM team_members
                                              WHERE team_members.team_id = grid_shares.team_id
                                                AND team_members.user_id = $3)
                                 ELSE grid_shares.team_id = $1 END))
             AND ($4 = '' OR teams.name = $4)
           ORDER BY teams.name, apps.name, app_grids.grid"#,
        token_team,
        user.is_admin && token_team.is_none(),
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
