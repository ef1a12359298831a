//! Apps, their versions, what the user asks of them (desired state) and what runtime nodes
//! report (status, logs, bad records).

use aerogrid_api::{AppState, AppSummary, BadRecord, DesiredState, LogLine, Status, VersionInfo};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    Error, Result,
    db::{teams::conflict, word},
};

/// An app's row, as handlers need it.
#[derive(Clone, Debug)]
pub struct App {
    pub id: Uuid,
    pub name: String,
    pub desired_state: DesiredState,
    /// The version Start runs; None: the latest.
    pub run_version: Option<i32>,
    pub latest_version: i32,
    pub memory_limit_mib: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn find(db: &sqlx::PgPool, team: Uuid, name: &str) -> Result<Option<App>> {
    let row = sqlx::query!(
        r#"SELECT id, name, desired_state, run_version, memory_limit_mib, created_at, updated_at,
                  COALESCE((SELECT max(version) FROM app_versions WHERE app_id = apps.id), 0) AS "latest_version!"
           FROM apps WHERE team_id = $1 AND name = $2"#,
        team,
        name
    )
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        Ok(App {
            id: row.id,
            name: row.name,
            desired_state: word(&row.desired_state)?,
            run_version: row.run_version,
            latest_version: row.latest_version,
            memory_limit_mib: row.memory_limit_mib,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    })
    .transpose()
}

/// Whether the app still exists (a followed log ends when it is deleted).
pub async fn exists(db: &sqlx::PgPool, app: Uuid) -> Result<bool> {
    let found =
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM apps WHERE id = $1) AS "found!""#, app)
            .fetch_one(db)
            .await?;
    Ok(found)
}

/// Whether the app exists and is the team's.
pub async fn belongs_to(db: &sqlx::PgPool, app: Uuid, team: Uuid) -> Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM apps WHERE id = $1 AND team_id = $2) AS "found!""#,
        app,
        team
    )
    .fetch_one(db)
    .await?;
    Ok(found)
}

pub async fn list(db: &sqlx::PgPool, team: Uuid) -> Result<Vec<AppSummary>> {
    let rows = sqlx::query!(
        r#"SELECT apps.name, apps.desired_state, apps.updated_at,
                  COALESCE((SELECT max(version) FROM app_versions WHERE app_id = apps.id), 0) AS "latest_version!",
                  COALESCE(app_status.state, 'stopped') AS "state!", app_status.error
           FROM apps LEFT JOIN app_status ON app_status.app_id = apps.id
           WHERE apps.team_id = $1 ORDER BY apps.name"#,
        team
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(AppSummary {
                name: row.name,
                latest_version: row.latest_version,
                desired_state: word(&row.desired_state)?,
                state: word(&row.state)?,
                error: row.error,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// What one version holds: its code and its packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionText {
    pub code: String,
    pub requirements: String,
    /// What the requirements resolved to (None: not resolved, or none declared).
    pub lock: Option<String>,
    /// Why they cannot be resolved, when that is the user's to fix, and the line.
    pub lock_error: Option<String>,
    pub lock_error_line: Option<i32>,
}

/// Creates an app with its first version, within the team's quota of apps.
pub async fn create(
    db: &sqlx::PgPool,
    team: Uuid,
    name: &str,
    text: &VersionText,
    user: Uuid,
    quotas: &crate::QuotaDefaults,
) -> Result<Uuid> {
    let mut tx = db.begin().await?;
    crate::db::quotas::admit_new_app(&mut tx, team, quotas).await?;
    let id = Uuid::new_v4();
    sqlx::query!("INSERT INTO apps (id, team_id, name) VALUES ($1, $2, $3)", id, team, name)
        .execute(&mut *tx)
        .await
        .map_err(|error| conflict(error, format!("the team has an app named `{name}` already")))?;
    sqlx::query!(
        "INSERT INTO app_versions (app_id, version, code, created_by, note, requirements, lock,
                                   lock_error, lock_error_line)
         VALUES ($1, 1, $2, $3, 'created', $4, $5, $6, $7)",
        id,
        text.code,
        user,
        text.requirements,
        text.lock,
        text.lock_error,
        text.lock_error_line,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The answer to a save over a version that is no longer the latest.
pub fn stale_save() -> Error {
    Error::Conflict(
        "the app was saved by someone else since the version you edited: reload it, merge, and save again"
            .to_owned(),
    )
}

/// Saves `text` as the next version. With `base`, only if the latest version is still `base`:
/// otherwise 409 (someone saved in between), never an overwrite.
pub async fn save(
    db: &sqlx::PgPool,
    app: Uuid,
    base: Option<i32>,
    text: &VersionText,
    user: Uuid,
    note: &str,
    versions_kept: i32,
) -> Result<i32> {
    let stale = stale_save;
    // Without a base, a save that loses the race for a version number simply takes the next.
    for _ in 0..8 {
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO app_versions (app_id, version, code, created_by, note, requirements,
                                        lock, lock_error, lock_error_line)
               SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $5, $6, $7, $8, $9
               FROM app_versions WHERE app_id = $1
               HAVING $4::int IS NULL OR COALESCE(max(version), 0) = $4
               RETURNING version"#,
            app,
            text.code,
            user,
            base,
            note,
            text.requirements,
            text.lock,
            text.lock_error,
            text.lock_error_line,
        )
        .fetch_optional(db)
        .await;
        match inserted {
            Ok(Some(version)) => {
                sqlx::query!("UPDATE apps SET updated_at = now() WHERE id = $1", app)
                    .execute(db)
                    .await?;
                prune_versions(db, app, versions_kept).await?;
                return Ok(version);
            }
            Ok(None) => return Err(stale()),
            // Two saves at once: the second one's version number is taken.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                if base.is_some() {
                    return Err(stale());
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(Error::Conflict("the app is being saved by many at once: try again".to_owned()))
}

/// Deletes the app's versions beyond the newest `kept`, except the one it is told to run and
/// the one running now.
async fn prune_versions(db: &sqlx::PgPool, app: Uuid, kept: i32) -> Result<()> {
    sqlx::query!(
        "DELETE FROM app_versions WHERE app_id = $1
           AND version <= (SELECT max(version) FROM app_versions WHERE app_id = $1) - $2
           AND version IS DISTINCT FROM (SELECT run_version FROM apps WHERE id = $1)
           AND version IS DISTINCT FROM (SELECT version FROM app_status WHERE app_id = $1)",
        app,
        kept.max(1),
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn versions(db: &sqlx::PgPool, app: Uuid) -> Result<Vec<VersionInfo>> {
    let versions = sqlx::query_as!(
        VersionInfo,
        r#"SELECT app_versions.version, users.name AS "created_by?", app_versions.created_at,
                  app_versions.note, octet_length(app_versions.code) AS "bytes!"
           FROM app_versions LEFT JOIN users ON users.id = app_versions.created_by
           WHERE app_versions.app_id = $1 ORDER BY app_versions.version DESC"#,
        app
    )
    .fetch_all(db)
    .await?;
    Ok(versions)
}

pub async fn version(db: &sqlx::PgPool, app: Uuid, version: i32) -> Result<Option<VersionText>> {
    let text = sqlx::query_as!(
        VersionText,
        "SELECT code, requirements, lock, lock_error, lock_error_line
         FROM app_versions WHERE app_id = $1 AND version = $2",
        app,
        version
    )
    .fetch_optional(db)
    .await?;
    Ok(text)
}

pub async fn rename(db: &sqlx::PgPool, app: Uuid, team: Uuid, name: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE apps SET name = $3, updated_at = now() WHERE id = $1 AND team_id = $2",
        app,
        team,
        name
    )
    .execute(db)
    .await
    .map_err(|error| conflict(error, format!("the team has an app named `{name}` already")))?;
    Ok(())
}

/// Deletes the app and everything of it in Postgres (nodes hear of it and stop it); returns the
/// changelog topic it had.
pub async fn delete(db: &sqlx::PgPool, app: Uuid) -> Result<Option<String>> {
    let mut tx = db.begin().await?;
    let topic =
        sqlx::query_scalar!("SELECT changelog_topic FROM app_checkpoints WHERE app_id = $1", app)
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query!("DELETE FROM apps WHERE id = $1", app).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(topic)
}

/// Asks nodes to run `version` (None: the latest) afresh: a running app restarts, a failed one
/// starts again. Refused beyond the team's quotas of running apps and memory.
pub async fn start(
    db: &sqlx::PgPool,
    team: Uuid,
    app: Uuid,
    version: Option<i32>,
    quotas: &crate::QuotaDefaults,
) -> Result<()> {
    let mut tx = db.begin().await?;
    crate::db::quotas::admit_start(&mut tx, team, app, quotas).await?;
    sqlx::query!(
        "UPDATE apps SET desired_state = 'running', run_version = $2,
                         start_generation = start_generation + 1, updated_at = now()
         WHERE id = $1",
        app,
        version
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn stop(db: &sqlx::PgPool, app: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE apps SET desired_state = 'stopped', updated_at = now() WHERE id = $1",
        app
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn status(db: &sqlx::PgPool, app: Uuid) -> Result<Status> {
    let row = sqlx::query!(
        r#"SELECT state, error, error_line, restarts, records_in, bad_records, lag, version,
                  since AS "since?", progress
           FROM app_status WHERE app_id = $1"#,
        app
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(never_started());
    };
    Ok(Status {
        state: word(&row.state)?,
        error: row.error,
        error_line: row.error_line,
        restarts: row.restarts,
        records_in: row.records_in,
        bad_records: row.bad_records,
        lag: row.lag,
        version: row.version,
        since: row.since,
        progress: row.progress,
    })
}

/// The status of an app no node has run yet.
fn never_started() -> Status {
    Status {
        state: AppState::Stopped,
        error: None,
        error_line: None,
        restarts: 0,
        records_in: 0,
        bad_records: 0,
        lag: None,
        version: None,
        since: None,
        progress: None,
    }
}

/// The `limit` lines after `after`, oldest first; without `after`, the newest `limit` lines.
pub async fn logs(
    db: &sqlx::PgPool,
    app: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<LogLine>> {
    let lines = match after {
        Some(after) => {
            sqlx::query_as!(
                LogLine,
                "SELECT id, at, level, message FROM app_logs
                 WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                app,
                after,
                limit
            )
            .fetch_all(db)
            .await?
        }
        None => {
            let mut newest = sqlx::query_as!(
                LogLine,
                "SELECT id, at, level, message FROM app_logs
                 WHERE app_id = $1 ORDER BY id DESC LIMIT $2",
                app,
                limit
            )
            .fetch_all(db)
            .await?;
            newest.reverse();
            newest
        }
    };
    Ok(lines)
}

pub async fn bad_records(db: &sqlx::PgPool, app: Uuid, limit: i64) -> Result<Vec<BadRecord>> {
    let rows = sqlx::query!(
        r#"SELECT id, at, topic, partition, "offset", reason, line, key, value, key_size, value_size
           FROM bad_records WHERE app_id = $1 ORDER BY id DESC LIMIT $2"#,
        app,
        limit
    )
    .fetch_all(db)
    .await?;
    let text =
        |bytes: Option<Vec<u8>>| bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(rows
        .into_iter()
        .map(|row| BadRecord {
            id: row.id,
            at: row.at,
            topic: row.topic,
            partition: row.partition,
            offset: row.offset,
            reason: row.reason,
            line: row.line,
            key_size: row.key_size.or_else(|| row.key.as_ref().map(|key| size_of_payload(key))),
            value_size: row
                .value_size
                .or_else(|| row.value.as_ref().map(|value| size_of_payload(value))),
            key: text(row.key),
            value: text(row.value),
        })
        .collect())
}

/// Figures for `/metrics`, over all apps.
pub struct Totals {
    pub states: Vec<(AppState, i64)>,
    pub records_in: i64,
    pub bad_records: i64,
    pub lag: i64,
}

pub async fn totals(db: &sqlx::PgPool) -> Result<Totals> {
    let states = sqlx::query!(
        r#"SELECT COALESCE(app_status.state, 'stopped') AS "state!", count(*) AS "count!"
           FROM apps LEFT JOIN app_status ON app_status.app_id = apps.id GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(db)
    .await?;
    let sums = sqlx::query!(
        r#"SELECT COALESCE(sum(records_in), 0)::bigint AS "records_in!",
                  COALESCE(sum(bad_records), 0)::bigint AS "bad_records!",
                  COALESCE(sum(lag), 0)::bigint AS "lag!"
           FROM app_status"#
    )
    .fetch_one(db)
    .await?;
    Ok(Totals {
        states: states
            .into_iter()
            .map(|row| Ok((word(&row.state)?, row.count)))
            .collect::<Result<_>>()?,
        records_in: sums.records_in,
        bad_records: sums.bad_records,
        lag: sums.lag,
    })
}

/// A payload's size as the API gives it (records kept before sizes were).
fn size_of_payload(payload: &[u8]) -> i32 {
    i32::try_from(payload.len()).unwrap_or(i32::MAX)
}
