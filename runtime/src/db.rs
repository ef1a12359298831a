//! All SQL of the runtime node.

use std::collections::HashMap;

use aerogrid_api::AppState;
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

/// Whether this node is the last to have held the app's lease (expired or not).
pub(crate) async fn lease_is_ours(db: &sqlx::PgPool, node_id: &str, app_id: Uuid) -> Result<bool> {
    let ours = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM app_leases WHERE app_id = $1 AND node_id = $2) AS "ours!""#,
        app_id,
        node_id
    )
    .fetch_one(db)
    .await?;
    Ok(ours)
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
    /// Its packages (pip's format), what they resolved to, and why they cannot be, if that is
    /// known (the user's error).
    pub(crate) requirements: String,
    pub(crate) lock: Option<String>,
    pub(crate) lock_error: Option<String>,
    /// The app's own memory limit, if it has one.
    pub(crate) memory_limit_mib: Option<i32>,
    /// The topic patterns granted to the app's team (beyond its namespace `<team>.*`).
    pub(crate) grants: Vec<String>,
}

pub(crate) async fn app_code(db: &sqlx::PgPool, app_id: Uuid) -> Result<Option<AppCode>> {
    let code = sqlx::query_as!(
        AppCode,
        r#"SELECT teams.name AS team, apps.name AS app, app_versions.version, app_versions.code,
                  app_versions.requirements, app_versions.lock, app_versions.lock_error,
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
    state: AppState,
    error: Option<&str>,
    error_line: Option<i32>,
    version: Option<i32>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO app_status (app_id, state, error, error_line, version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (app_id) DO UPDATE SET
           since = CASE WHEN app_status.state = $2 THEN app_status.since ELSE now() END,
           state = $2, error = $3, error_line = $4, progress = NULL,
           version = COALESCE($5, app_status.version), updated_at = now()",
        app_id,
        state.as_str(),
        error,
        error_line,
        version,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What a starting app is doing (installing its packages), until its next state.
pub(crate) async fn set_activity(db: &sqlx::PgPool, app_id: Uuid, progress: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE app_status SET progress = $2, updated_at = now() WHERE app_id = $1",
        app_id,
        progress
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Keeps what a version's requirements resolved to (at Start, when the save could not), or
/// why they cannot be (the user's error, with its line of the requirements).
pub(crate) async fn set_lock(
    db: &sqlx::PgPool,
    app_id: Uuid,
    version: i32,
    lock: Result<&str, (&str, i32)>,
) -> Result<()> {
    let (lock, error, line) = match lock {
        Ok(lock) => (Some(lock), None, None),
        Err((error, line)) => (None, Some(error), Some(line)),
    };
    sqlx::query!(
        "UPDATE app_versions SET lock = $3, lock_error = $4, lock_error_line = $5
         WHERE app_id = $1 AND version = $2",
        app_id,
        version,
        lock,
        error,
        line
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

/// Writes one status batch and the input offsets it covers, at once: on a restart, records
/// before those offsets are not counted again.
///
/// Only while this node holds the app's lease at `epoch`: a node that lost it (paused past its
/// lease, say) writes nothing more, and its run ends.
pub(crate) async fn write_status(
    db: &sqlx::PgPool,
    app_id: Uuid,
    lease: &Lease,
    status: &crate::status::Pending,
) -> Result<()> {
    let mut transaction = db.begin().await?;
    hold_lease(&mut transaction, app_id, lease).await?;
    let bad = &status.bad;
    let bad_count = bad.topics.len() as i64;
    if status.records_in > 0 || bad_count > 0 || status.lag.is_some() {
        sqlx::query!(
            "UPDATE app_status SET records_in = records_in + $2, bad_records = bad_records + $3,
               lag = COALESCE($4, lag), updated_at = now()
             WHERE app_id = $1",
            app_id,
            status.records_in,
            bad_count,
            status.lag,
        )
        .execute(&mut *transaction)
        .await?;
    }
    if !status.log_levels.is_empty() {
        sqlx::query!(
            "INSERT INTO app_logs (app_id, level, message) SELECT $1, * FROM UNNEST($2::text[], $3::text[])",
            app_id,
            &status.log_levels,
            &status.log_messages,
        )
        .execute(&mut *transaction)
        .await?;
    }
    if bad_count > 0 {
        sqlx::query!(
            r#"INSERT INTO bad_records (app_id, topic, partition, "offset", reason, line, key, value, key_size, value_size)
               SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[], $7::bytea[], $8::bytea[], $9::int[], $10::int[])"#,
            app_id,
            &bad.topics,
            &bad.partitions,
            &bad.offsets,
            &bad.reasons,
            &bad.lines as &[Option<i32>],
            &bad.keys as &[Option<Vec<u8>>],
            &bad.values as &[Option<Vec<u8>>],
            &bad.key_sizes as &[Option<i32>],
            &bad.value_sizes as &[Option<i32>],
        )
        .execute(&mut *transaction)
        .await?;
    }
    if !status.progress.is_empty() {
        set_progress(&mut transaction, app_id, &status.progress).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Which node runs an app, and under which epoch of its lease.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) node_id: String,
    pub(crate) epoch: i64,
}

/// Fails with `LeaseLost` unless this node holds the app's lease at its epoch; holds it (no
/// other node can claim the app) until the transaction ends.
async fn hold_lease(
    transaction: &mut sqlx::PgConnection,
    app_id: Uuid,
    lease: &Lease,
) -> Result<()> {
    let held = sqlx::query_scalar!(
        "SELECT 1 AS held FROM app_leases WHERE app_id = $1 AND node_id = $2 AND epoch = $3 FOR SHARE",
        app_id,
        lease.node_id,
        lease.epoch,
    )
    .fetch_optional(transaction)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(crate::Error::LeaseLost),
    }
}

/// The app's counters in Postgres.
pub(crate) async fn status_counts(
    db: &sqlx::PgPool,
    app_id: Uuid,
) -> Result<aerogrid_proto::v1::StatusCounts> {
    let counts =
        sqlx::query!("SELECT records_in, bad_records FROM app_status WHERE app_id = $1", app_id)
            .fetch_optional(db)
            .await?;
    Ok(counts.map_or_else(Default::default, |row| aerogrid_proto::v1::StatusCounts {
        records_in: row.records_in,
        bad_records: row.bad_records,
    }))
}

/// Sets the app's counters and the input offsets they cover (the changelog's, when it is
/// further than Postgres: see `status::reconcile`).
pub(crate) async fn set_counts(
    db: &sqlx::PgPool,
    app_id: Uuid,
    lease: &Lease,
    counts: aerogrid_proto::v1::StatusCounts,
    progress: &aerogrid_changelog::Offsets,
) -> Result<()> {
    let mut transaction = db.begin().await?;
    hold_lease(&mut transaction, app_id, lease).await?;
    sqlx::query!(
        "UPDATE app_status SET records_in = $2, bad_records = $3, updated_at = now() WHERE app_id = $1",
        app_id,
        counts.records_in,
        counts.bad_records,
    )
    .execute(&mut *transaction)
    .await?;
    set_progress(&mut transaction, app_id, progress).await?;
    transaction.commit().await?;
    Ok(())
}

/// Moves the input offsets the app's status covers forward to `progress` (never back).
async fn set_progress(
    transaction: &mut sqlx::PgConnection,
    app_id: Uuid,
    progress: &aerogrid_changelog::Offsets,
) -> Result<()> {
    let (topics, (partitions, offsets)): (Vec<String>, (Vec<i32>, Vec<i64>)) = progress
        .iter()
        .map(|((topic, partition), offset)| (topic.clone(), (*partition, *offset)))
        .unzip();
    sqlx::query!(
        "INSERT INTO app_input_progress (app_id, topic, partition, next_offset)
         SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[])
         ON CONFLICT (app_id, topic, partition)
           DO UPDATE SET next_offset = GREATEST(app_input_progress.next_offset, EXCLUDED.next_offset)",
        app_id,
        &topics,
        &partitions,
        &offsets,
    )
    .execute(transaction)
    .await?;
    Ok(())
}

/// The input offsets the app's status covers (see `write_status`).
pub(crate) async fn input_progress(
    db: &sqlx::PgPool,
    app_id: Uuid,
) -> Result<aerogrid_changelog::Offsets> {
    let rows = sqlx::query!(
        "SELECT topic, partition, next_offset FROM app_input_progress WHERE app_id = $1",
        app_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| ((row.topic, row.partition), row.next_offset)).collect())
}

/// Deletes an app's logs and bad records beyond the newest `logs_kept` and `bad_records_kept`.
pub(crate) async fn prune_output(
    db: &sqlx::PgPool,
    app_id: Uuid,
    logs_kept: i64,
    bad_records_kept: i64,
) -> Result<()> {
    sqlx::query!(
        "DELETE FROM app_logs WHERE app_id = $1 AND id <= (
           SELECT id FROM app_logs WHERE app_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        app_id,
        logs_kept,
    )
    .execute(db)
    .await?;
    sqlx::query!(
        "DELETE FROM bad_records WHERE app_id = $1 AND id <= (
           SELECT id FROM bad_records WHERE app_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        app_id,
        bad_records_kept,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes logs and bad records older than `max_age_seconds`, of every app.
pub(crate) async fn delete_old_output(db: &sqlx::PgPool, max_age_seconds: f64) -> Result<()> {
    sqlx::query!(
        "DELETE FROM app_logs WHERE at < now() - make_interval(secs => $1)",
        max_age_seconds
    )
    .execute(db)
    .await?;
    sqlx::query!(
        "DELETE FROM bad_records WHERE at < now() - make_interval(secs => $1)",
        max_age_seconds
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
    /// The sizes of key and value before they were cut.
    pub(crate) key_sizes: Vec<Option<i32>>,
    pub(crate) value_sizes: Vec<Option<i32>>,
}

/// Adds this node (or refreshes it) with where gateways follow its apps' changelog records.
pub(crate) async fn register_node(
    db: &sqlx::PgPool,
    node_id: &str,
    relay_url: Option<&str>,
    relay_token: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO runtime_nodes (node_id, relay_url, relay_token) VALUES ($1, $2, $3)
         ON CONFLICT (node_id) DO UPDATE
         SET relay_url = $2, relay_token = $3, started_at = now(), seen_at = now()",
        node_id,
        relay_url,
        relay_token
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Says this node is still up (adding it again if a sweep removed it while the database was out
/// of reach), and removes nodes not seen for an hour (they died).
pub(crate) async fn refresh_nodes(
    db: &sqlx::PgPool,
    node_id: &str,
    relay_url: Option<&str>,
    relay_token: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO runtime_nodes (node_id, relay_url, relay_token) VALUES ($1, $2, $3)
         ON CONFLICT (node_id) DO UPDATE SET seen_at = now()",
        node_id,
        relay_url,
        relay_token
    )
    .execute(db)
    .await?;
    sqlx::query!("DELETE FROM runtime_nodes WHERE seen_at < now() - interval '1 hour'")
        .execute(db)
        .await?;
    Ok(())
}

/// Removes this node (it stops): gateways no longer try to follow it.
pub(crate) async fn unregister_node(db: &sqlx::PgPool, node_id: &str) -> Result<()> {
    sqlx::query!("DELETE FROM runtime_nodes WHERE node_id = $1", node_id).execute(db).await?;
    Ok(())
}
