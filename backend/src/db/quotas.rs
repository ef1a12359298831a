//! Quotas per team: how many apps it may have and run, and how much memory its connectors may
//! take. Checked in the transaction that would exceed them, under a lock of the team's row, so
//! that concurrent Creates or Starts cannot both squeeze past the last free place.

use aerogrid_api::{QuotaSettings, Quotas, Usage};
use uuid::Uuid;

use crate::{Error, QuotaDefaults, Result, db::teams};

/// A team's quotas in effect: its own settings, else the server's defaults.
fn effective(settings: QuotaSettings, defaults: &QuotaDefaults) -> Quotas {
    Quotas {
        apps: settings.apps.unwrap_or(defaults.apps),
        running_apps: settings.running_apps.unwrap_or(defaults.running_apps),
        app_memory_mib: settings.app_memory_mib.unwrap_or(defaults.app_memory_mib),
        total_memory_mib: settings.total_memory_mib.unwrap_or(defaults.total_memory_mib),
    }
}

/// Refuses quotas that cannot mean anything.
pub fn check(settings: &QuotaSettings) -> Result<()> {
    let counts = [("apps", settings.apps), ("running_apps", settings.running_apps)];
    let sizes = [
        ("app_memory_mib", settings.app_memory_mib),
        ("total_memory_mib", settings.total_memory_mib),
    ];
    for (name, value) in counts {
        if value.is_some_and(|value| value < 0) {
            return Err(Error::BadRequest(format!("quota `{name}` is 0 or more")));
        }
    }
    for (name, value) in sizes {
        if value.is_some_and(|value| value < 1) {
            return Err(Error::BadRequest(format!("quota `{name}` is 1 MiB or more")));
        }
    }
    Ok(())
}

/// The team's row, locked until the transaction ends, and its quotas.
async fn lock_team(
    tx: &mut sqlx::PgConnection,
    team: Uuid,
    defaults: &QuotaDefaults,
) -> Result<Quotas> {
    let settings = sqlx::query_as!(
        QuotaSettings,
        "SELECT max_apps AS apps, max_running_apps AS running_apps,
                max_app_memory_mib AS app_memory_mib, max_total_memory_mib AS total_memory_mib
         FROM teams WHERE id = $1 FOR UPDATE",
        team
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(effective(settings, defaults))
}

/// The team's quotas now.
pub async fn quotas(db: &sqlx::PgPool, team: Uuid, defaults: &QuotaDefaults) -> Result<Quotas> {
    let settings = sqlx::query_as!(
        QuotaSettings,
        "SELECT max_apps AS apps, max_running_apps AS running_apps,
                max_app_memory_mib AS app_memory_mib, max_total_memory_mib AS total_memory_mib
         FROM teams WHERE id = $1",
        team
    )
    .fetch_one(db)
    .await?;
    Ok(effective(settings, defaults))
}

/// What the team uses now; `except` leaves one app out of the running ones (the one starting).
async fn usage_except(
    db: impl sqlx::PgExecutor<'_>,
    team: Uuid,
    except: Option<Uuid>,
    default_memory_mib: i32,
) -> Result<Usage> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "apps!",
                  count(*) FILTER (WHERE desired_state = 'running' AND id IS DISTINCT FROM $2) AS "running!",
                  COALESCE(sum(COALESCE(memory_limit_mib, $3)::bigint)
                           FILTER (WHERE desired_state = 'running' AND id IS DISTINCT FROM $2), 0)::bigint AS "memory!"
           FROM apps WHERE team_id = $1"#,
        team,
        except,
        default_memory_mib
    )
    .fetch_one(db)
    .await?;
    Ok(Usage { apps: row.apps, running_apps: row.running, memory_mib: row.memory })
}

pub async fn usage(db: &sqlx::PgPool, team: Uuid, defaults: &QuotaDefaults) -> Result<Usage> {
    usage_except(db, team, None, defaults.default_app_memory_mib).await
}

/// Sets the team's quotas (what is absent is the server's default), with its audit event.
pub async fn set_quotas(
    db: &sqlx::PgPool,
    team: Uuid,
    settings: QuotaSettings,
    actor: (Uuid, &str),
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "UPDATE teams SET max_apps = $2, max_running_apps = $3, max_app_memory_mib = $4,
                          max_total_memory_mib = $5
         WHERE id = $1",
        team,
        settings.apps,
        settings.running_apps,
        settings.app_memory_mib,
        settings.total_memory_mib
    )
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::to_value(settings).unwrap_or_default();
    teams::audit(&mut *tx, team, actor, "team.quotas", "quotas", detail).await?;
    tx.commit().await?;
    Ok(())
}

/// Inside a transaction that adds an app: refuses once the team has its quota of apps.
pub(crate) async fn admit_new_app(
    tx: &mut sqlx::PgConnection,
    team: Uuid,
    defaults: &QuotaDefaults,
) -> Result<()> {
    let quotas = lock_team(tx, team, defaults).await?;
    let usage = usage_except(&mut *tx, team, None, defaults.default_app_memory_mib).await?;
    if usage.apps >= i64::from(quotas.apps) {
        return Err(Error::Conflict(format!(
            "the team has {} apps, its quota: delete one, or ask an administrator to raise the quota",
            usage.apps
        )));
    }
    Ok(())
}

/// Inside a transaction that starts `app`: refuses a start beyond the team's running apps or
/// memory.
pub(crate) async fn admit_start(
    tx: &mut sqlx::PgConnection,
    team: Uuid,
    app: Uuid,
    defaults: &QuotaDefaults,
) -> Result<()> {
    let quotas = lock_team(tx, team, defaults).await?;
    let memory = sqlx::query_scalar!("SELECT memory_limit_mib FROM apps WHERE id = $1", app)
        .fetch_one(&mut *tx)
        .await?
        .unwrap_or(defaults.default_app_memory_mib);
    check_app_memory(memory, &quotas)?;
    let usage = usage_except(&mut *tx, team, Some(app), defaults.default_app_memory_mib).await?;
    if usage.running_apps >= i64::from(quotas.running_apps) {
        return Err(Error::Conflict(format!(
            "the team runs {} apps, its quota: stop one, or ask an administrator to raise the quota",
            usage.running_apps
        )));
    }
    check_total_memory(&usage, memory, &quotas)
}

/// Sets an app's memory limit (None: the default) within the team's quotas: what one app may
/// ask for, and, for a running app (its next restart takes the new limit), the team's total.
pub async fn set_app_memory(
    db: &sqlx::PgPool,
    team: Uuid,
    app: Uuid,
    mib: Option<i32>,
    defaults: &QuotaDefaults,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let quotas = lock_team(&mut tx, team, defaults).await?;
    let memory = mib.unwrap_or(defaults.default_app_memory_mib);
    check_app_memory(memory, &quotas)?;
    let running = sqlx::query_scalar!(
        r#"SELECT desired_state = 'running' AS "running!" FROM apps WHERE id = $1"#,
        app
    )
    .fetch_one(&mut *tx)
    .await?;
    if running {
        let usage =
            usage_except(&mut *tx, team, Some(app), defaults.default_app_memory_mib).await?;
        check_total_memory(&usage, memory, &quotas)?;
    }
    sqlx::query!(
        "UPDATE apps SET memory_limit_mib = $2, updated_at = now() WHERE id = $1",
        app,
        mib
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses an app's `memory` beside the team's other running apps (`usage`) beyond its total.
fn check_total_memory(usage: &Usage, memory: i32, quotas: &Quotas) -> Result<()> {
    if usage.memory_mib + i64::from(memory) > i64::from(quotas.total_memory_mib) {
        return Err(Error::Conflict(format!(
            "the team's other running apps have {} MiB of {} MiB: this app's {memory} MiB does not fit; stop one, lower its memory, or ask an administrator to raise the quota",
            usage.memory_mib, quotas.total_memory_mib
        )));
    }
    Ok(())
}

/// Refuses a memory limit above what one app of the team may ask for (422).
pub fn check_app_memory(memory_mib: i32, quotas: &Quotas) -> Result<()> {
    if memory_mib > quotas.app_memory_mib {
        return Err(Error::Unprocessable(format!(
            "an app of this team may ask for at most {} MiB of memory, not {memory_mib} MiB",
            quotas.app_memory_mib
        )));
    }
    Ok(())
}
