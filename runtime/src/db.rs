//! All SQL of the runtime node.

use std::collections::HashMap;

use uuid::Uuid;

use crate::Result;

/// An app this node holds the lease of.
pub(crate) struct Claim {
    pub(crate) app_id: Uuid,
    pub(crate) epoch: i64,
    /// The app's Start/Restart count when claimed (see [`Held`]).
    pub(crate) start_generation: i64,
}

/// An app whose lease this node renewed, with its Start/Restart count: a newer count than the
/// run was started with means the user asked for a fresh run. Also its team's topic grants now:
/// a run stops once it reads a topic they no longer cover.
pub(crate) struct Held {
    pub(crate) app_id: Uuid,
    pub(crate) start_generation: i64,
    pub(crate) grants: Vec<String>,
}

/// Takes the leases of apps that should run and that no live node holds.
pub(crate) async fn claim_apps(
    db: &sqlx::PgPool,
    node_id: &str,
    lease_seconds: f64,
) -> Result<Vec<Claim>> {
    let claims = sqlx::query_as!(
        Claim,
        r#"INSERT INTO app_leases (app_id, node_id, epoch, expires_at)
           SELECT apps.id, $1, 1, now() + make_interval(secs => $2)
           FROM apps
           WHERE apps.desired_state = 'running'
             AND EXISTS (SELECT 1 FROM app_versions WHERE app_versions.app_id = apps.id)
           ON CONFLICT (app_id) DO UPDATE
             SET node_id = EXCLUDED.node_id, epoch = app_leases.epoch + 1, expires_at = EXCLUDED.expires_at
             WHERE app_leases.expires_at < now()
           RETURNING app_id, epoch,
             (SELECT start_generation FROM apps WHERE apps.id = app_leases.app_id) AS "start_generation!""#,
        node_id,
        lease_seconds,
    )
    .fetch_all(db)
    .await?;
    Ok(claims)
}

/// Extends this node's live leases of `app_ids`; returns the apps that should keep running here
/// (still leased to us, and still wanted running).
pub(crate) async fn renew_leases(
    db: &sqlx::PgPool,
    node_id: &str,
    app_ids: &[Uuid],
    lease_seconds: f64,
) -> Result<Vec<Held>> {
    let kept = sqlx::query_as!(
        Held,
        r#"UPDATE app_leases SET expires_at = now() + make_interval(secs => $3)
           FROM apps
           WHERE app_leases.node_id = $1 AND app_leases.app_id = ANY($2)
             AND app_leases.expires_at > now()
             AND apps.id = app_leases.app_id AND apps.desired_state = 'running'
           RETURNING app_leases.app_id, apps.start_generation,
             ARRAY(SELECT pattern FROM topic_grants WHERE topic_grants.team_id = apps.team_id
                   ORDER BY pattern) AS "grants!""#,
        node_id,
        app_ids,
        lease_seconds,
    )
    .fetch_all(db)
    .await?;
    Ok(kept)
}

/// Lets the next claim take the app at once. The row stays (expired), so the next claim's epoch
/// is still higher than every epoch before it: the changelog ignores older epochs.
pub(crate) async fn release_lease(db: &sqlx::PgPool, node_id: &str, app_id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE app_leases SET expires_at = '-infinity' WHERE app_id = $1 AND node_id = $2",
        app_id,
        node_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What to run for an app.
pub(crate) struct AppCode {
    pub(crate) team: String,
    pub(crate) app: String,
    pub(crate) version: i32,
    pub(crate) code: String,
    /// The app's own memory limit, if it has one.
    pub(crate) memory_limit_mib: Option<i32>,
    /// The topic patterns granted to the app's team (beyond its namespace `<team>.*`).
    pub(crate) grants: Vec<String>,
}

pub(crate) async fn app_code(db: &sqlx::PgPool, app_id: Uuid) -> Result<Option<AppCode>> {
    let code = sqlx::query_as!(
        AppCode,
        r#"SELECT teams.name AS team, apps.name AS app, app_versions.version, app_versions.code,
                  apps.memory_limit_mib,
                  ARRAY(SELECT pattern FROM topic_grants WHERE topic_grants.team_id = apps.team_id
                        ORDER BY pattern) AS "grants!"
           FROM apps
           JOIN teams ON teams.id = apps.team_id
           JOIN app_versions ON app_versions.app_id = apps.id
           WHERE apps.id = $1
             AND app_versions.version = COALESCE(
               apps.run_version,
               (SELECT max(version) FROM app_versions WHERE app_id = apps.id))"#,
        app_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(code)
}

/// The topic patterns granted to the team of the app now.
pub(crate) async fn team_grants(db: &sqlx::PgPool, app_id: Uuid) -> Result<Vec<String>> {
    let grants = sqlx::query_scalar!(
        "SELECT topic_grants.pattern FROM topic_grants JOIN apps ON apps.team_id = topic_grants.team_id
         WHERE apps.id = $1 ORDER BY 1",
        app_id
    )
    .fetch_all(db)
    .await?;
    Ok(grants)
}

/// The offset recovery starts at: the first part of the latest complete snapshot.
pub(crate) async fn snapshot_offset(db: &sqlx::PgPool, app_id: Uuid) -> Result<Option<i64>> {
    let offset = sqlx::query_scalar!(
        "SELECT snapshot_offset FROM app_checkpoints WHERE app_id = $1",
        app_id
    )
    .fetch_optional(db)
    .await?;
    Ok(offset)
}

pub(crate) async fn set_snapshot_offset(
    db: &sqlx::PgPool,
    app_id: Uuid,
    topic: &str,
    offset: i64,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO app_checkpoints (app_id, changelog_topic, snapshot_offset) VALUES ($1, $2, $3)
         ON CONFLICT (app_id) DO UPDATE SET changelog_topic = $2, snapshot_offset = $3",
        app_id,
        topic,
        offset,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the grids the app's loaded version publishes and the topics it reads, replacing
/// those of earlier versions.
pub(crate) async fn set_grids(
    db: &sqlx::PgPool,
    app_id: Uuid,
    grids: &HashMap<String, Vec<String>>,
    topics: &[String],
) -> Result<()> {
    let mut transaction = db.begin().await?;
    sqlx::query!("DELETE FROM app_topics WHERE app_id = $1", app_id)
        .execute(&mut *transaction)
        .await?;
    sqlx::query!(
        "INSERT INTO app_topics (app_id, topic) SELECT $1, * FROM UNNEST($2::text[]) ON CONFLICT DO NOTHING",
        app_id,
        topics,
    )
    .execute(&mut *transaction)
    .await?;
    sqlx::query!("DELETE FROM app_grids WHERE app_id = $1", app_id)
        .execute(&mut *transaction)
        .await?;
    for (grid, columns) in grids {
        sqlx::query!(
            "INSERT INTO app_grids (app_id, grid, columns) VALUES ($1, $2, $3)",
            app_id,
            grid,
            columns,
        )
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Sets the app's state; `since` moves only when the state changes.
pub(crate) async fn set_state(
    db: &sqlx::PgPool,
    app_id: Uuid,
    state: &str,
    error: Option<&str>,
    error_line: Option<i32>,
    version: Option<i32>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO app_status (app_id, state, error, error_line, version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (app_id) DO UPDATE SET
           since = CASE WHEN app_status.state = $2 THEN app_status.since ELSE now() END,
           state = $2, error = $3, error_line = $4,
           version = COALESCE($5, app_status.version), updated_at = now()",
        app_id,
        state,
        error,
        error_line,
        version,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn count_restart(db: &sqlx::PgPool, app_id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE app_status SET restarts = restarts + 1, updated_at = now() WHERE app_id = $1",
        app_id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn add_counts(
    db: &sqlx::PgPool,
    app_id: Uuid,
    records_in: i64,
    bad_records: i64,
) -> Result<()> {
    sqlx::query!(
        "UPDATE app_status SET records_in = records_in + $2, bad_records = bad_records + $3, updated_at = now()
         WHERE app_id = $1",
        app_id,
        records_in,
        bad_records,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records how far the app's input is behind its topics' ends (None when unknown).
pub(crate) async fn set_lag(db: &sqlx::PgPool, app_id: Uuid, lag: Option<i64>) -> Result<()> {
    sqlx::query!(
        "UPDATE app_status SET lag = $2, updated_at = now() WHERE app_id = $1",
        app_id,
        lag
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn insert_logs(
    db: &sqlx::PgPool,
    app_id: Uuid,
    levels: &[String],
    messages: &[String],
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO app_logs (app_id, level, message) SELECT $1, * FROM UNNEST($2::text[], $3::text[])",
        app_id,
        levels,
        messages,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Bad records, column by column.
#[derive(Default)]
pub(crate) struct BadRecords {
    pub(crate) topics: Vec<String>,
    pub(crate) partitions: Vec<i32>,
    pub(crate) offsets: Vec<i64>,
    pub(crate) reasons: Vec<String>,
    pub(crate) lines: Vec<Option<i32>>,
    pub(crate) keys: Vec<Option<Vec<u8>>>,
    pub(crate) values: Vec<Option<Vec<u8>>>,
}

pub(crate) async fn insert_bad_records(
    db: &sqlx::PgPool,
    app_id: Uuid,
    records: &BadRecords,
) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO bad_records (app_id, topic, partition, "offset", reason, line, key, value)
           SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[], $7::bytea[], $8::bytea[])"#,
        app_id,
        &records.topics,
        &records.partitions,
        &records.offsets,
        &records.reasons,
        &records.lines as &[Option<i32>],
        &records.keys as &[Option<Vec<u8>>],
        &records.values as &[Option<Vec<u8>>],
    )
    .execute(db)
    .await?;
    Ok(())
}
