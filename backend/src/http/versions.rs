//! An app's versions: list, read, compare, roll back.

use aerogrid_api::{DesiredState, DiffQuery, RolledBack, VersionCode, VersionDiff, VersionInfo};
use axum::{Json, extract::State};
use serde_json::json;

use super::{
    auth::{Caller, Need},
    extract::{ApiPath, ApiQuery},
};
use crate::{
    Error, Result, ServerState,
    db::{apps, teams},
    validate,
};

use super::apps::{AppPath, diagnostics, find_app};

/// Every saved version, newest first.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Vec<VersionInfo>)))]
pub(crate) async fn list_versions(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Vec<VersionInfo>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    Ok(Json(apps::versions(state.db(), app.id).await?))
}

async fn version_text(
    state: &ServerState,
    app: &apps::App,
    version: i32,
) -> Result<apps::VersionText> {
    apps::version(state.db(), app.id, version)
        .await?
        .ok_or_else(|| Error::NotFound(format!("app `{}` has no version {version}", app.name)))
}

/// The code, requirements and lock of one version.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions/{version}", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = VersionCode)))]
pub(crate) async fn get_version(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
) -> Result<Json<VersionCode>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let text = version_text(&state, &app, version).await?;
    Ok(Json(VersionCode {
        version,
        code: text.code,
        requirements: text.requirements,
        lock: text.lock,
    }))
}

/// How long a diff may search for the smallest one.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Compares a version with another (`?to=`, default the latest).
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions/{version}/diff", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path), DiffQuery),
    responses((status = 200, body = VersionDiff)))]
pub(crate) async fn diff_versions(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<VersionDiff>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let to = query.to.unwrap_or(app.latest_version);
    let old = version_text(&state, &app, version).await?;
    let new = version_text(&state, &app, to).await?;
    if old.code == new.code && old.requirements == new.requirements {
        let same = String::new();
        return Ok(Json(VersionDiff {
            from: version,
            to,
            diff: same.clone(),
            requirements_diff: same,
        }));
    }
    // Off the async threads, a few at a time, and within a deadline (past it, `similar` gives a
    // coarser diff rather than going on).
    let busy = || Error::Unavailable("the server is busy comparing versions: try again".into());
    let permit = tokio::time::timeout(validate::CHECKER_WAIT, validate::CHECKER_SLOTS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let (diff, requirements_diff) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let diff = |old: &str, new: &str, name: &str| {
            if old == new {
                return String::new();
            }
            similar::TextDiff::configure()
                .deadline(std::time::Instant::now() + DIFF_DEADLINE)
                .diff_lines(old, new)
                .unified_diff()
                .context_radius(3)
                .header(&format!("{name}version {version}"), &format!("{name}version {to}"))
                .to_string()
        };
        (
            diff(&old.code, &new.code, ""),
            diff(&old.requirements, &new.requirements, "requirements of "),
        )
    })
    .await
    .map_err(|_| busy())?;
    Ok(Json(VersionDiff { from: version, to, diff, requirements_diff }))
}

/// Rolls back: saves a version's code, requirements and lock as the new latest version
/// (history is kept) and, if the app runs the latest version, restarts it with them.
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/versions/{version}/rollback", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = RolledBack)))]
pub(crate) async fn rollback(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
) -> Result<Json<RolledBack>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    let text = version_text(&state, &app, version).await?;
    let note = format!("rollback to {version}");
    let saved = apps::save(
        state.db(),
        app.id,
        None,
        &text,
        caller.user().id,
        &note,
        state.quotas().versions_per_app,
    )
    .await?;
    let detail = json!({ "to": version, "version": saved });
    teams::audit(state.db(), team.id, caller.actor(), "app.rollback", &app.name, detail).await?;
    let diagnostics = diagnostics(&state, &team, &text, true).await?;
    let restarted = app.desired_state == DesiredState::Running
        && app.run_version.is_none()
        && !validate::has_errors(&diagnostics);
    if restarted {
        apps::start(state.db(), team.id, app.id, None, state.quotas()).await?;
    }
    Ok(Json(RolledBack { version: saved, restarted, diagnostics }))
}
