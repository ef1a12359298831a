//! Apps: create, read, save (every save a version), rename, delete, start/stop/restart, status,
//! grid shares; and validation. What apps print and refuse is `app_output`; their versions,
//! `versions`.

use aerogrid_api::{
    AppDetail, AppSummary, ChangeApp, DesiredState, Lifecycle, NewApp, SaveApp, Saved, Share,
    StartQuery, Status, ValidateRequest, Validation,
};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    auth::{Caller, Need, TeamAccess},
    extract::{ApiJson, ApiPath, ApiQuery},
};
use crate::{
    Error, Result, ServerState,
    db::{apps, teams},
    packages,
    validate::{self, Diagnostic, TopicScope},
};

pub(super) type AppPath = ApiPath<(String, String)>;

/// The team (checked for `need`) and the app named in the path.
pub(super) async fn find_app(
    state: &ServerState,
    caller: &Caller,
    team: &str,
    app: &str,
    need: Need,
) -> Result<(TeamAccess, apps::App)> {
    let team = caller.in_team(state, team, need).await?;
    tracing::Span::current().record("app", app);
    let found = apps::find(state.db(), team.id, app)
        .await?
        .ok_or_else(|| Error::NotFound(format!("team `{}` has no app `{app}`", team.name)))?;
    Ok((team, found))
}

/// The diagnostics of a version as an app of `team`: its code with the topics the team may
/// read and the packages it declares, then its requirements.
pub(super) async fn diagnostics(
    state: &ServerState,
    team: &TeamAccess,
    text: &apps::VersionText,
    saved: bool,
) -> Result<Vec<Diagnostic>> {
    let grants = crate::db::topics::patterns(state.db(), team.id).await?;
    let scope = TopicScope { team: team.name.clone(), grants };
    let (declared, requirements) = packages::check(text, saved);
    let mut diagnostics = validate::validate(text.code.clone(), Some(scope), declared).await;
    diagnostics.extend(requirements);
    Ok(diagnostics)
}

/// The team's apps with their state.
#[utoipa::path(get, path = "/teams/{team}/apps", tag = "apps",
    params(("team" = String, Path)), responses((status = 200, body = Vec<AppSummary>)))]
pub(crate) async fn list_apps(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<AppSummary>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(apps::list(state.db(), team.id).await?))
}

/// Creates an app with its code as version 1.
#[utoipa::path(post, path = "/teams/{team}/apps", tag = "apps",
    params(("team" = String, Path)), request_body = NewApp,
    responses((status = 201, body = AppDetail),
              (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(body): ApiJson<NewApp>,
) -> Result<Response> {
    let team = caller.in_team(&state, &team, Need::Edit).await?;
    super::check_name("app", &body.name)?;
    check_code_size(&body.code)?;
    check_requirements_size(&body.requirements)?;
    let text = packages::version_text(state.packages(), body.code, body.requirements, None).await;
    apps::create(state.db(), team.id, &body.name, &text, caller.user().id, state.quotas()).await?;
    teams::audit(state.db(), team.id, caller.actor(), "app.create", &body.name, json!({})).await?;
    let found = apps::find(state.db(), team.id, &body.name)
        .await?
        .ok_or_else(|| Error::Conflict("the app was deleted while being created".into()))?;
    let detail = detail(&state, &team, found, text).await?;
    Ok((StatusCode::CREATED, with_etag(detail)).into_response())
}

async fn detail(
    state: &ServerState,
    team: &TeamAccess,
    app: apps::App,
    text: apps::VersionText,
) -> Result<AppDetail> {
    let status = apps::status(state.db(), app.id).await?;
    let diagnostics = diagnostics(state, team, &text, true).await?;
    Ok(AppDetail {
        team: team.name.clone(),
        name: app.name,
        version: app.latest_version,
        code: text.code,
        requirements: text.requirements,
        lock: text.lock,
        diagnostics,
        desired_state: app.desired_state,
        run_version: app.run_version,
        memory_limit_mib: app.memory_limit_mib,
        status,
        created_at: app.created_at,
        updated_at: app.updated_at,
    })
}

fn with_etag(detail: AppDetail) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", detail.version)).expect("digits");
    ([(header::ETAG, etag)], Json(detail)).into_response()
}

/// The app, its latest code with diagnostics, and its status. The `ETag` is the version.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = AppDetail)))]
pub(crate) async fn get_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Response> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let text = apps::version(state.db(), app.id, app.latest_version).await?.unwrap_or_default();
    Ok(with_etag(detail(&state, &team, app, text).await?))
}

/// Saves code as a new version (an invalid draft too: its diagnostics come back). With
/// `base_version` or `If-Match`, a save over someone else's newer version is refused with 409.
#[utoipa::path(put, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path),
           ("If-Match" = Option<String>, Header, description = "The version edited, as its ETag")),
    request_body = SaveApp,
    responses((status = 200, body = Saved),
              (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn save_app(
    State(state): State<ServerState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((team, app)): AppPath,
    ApiJson(body): ApiJson<SaveApp>,
) -> Result<Response> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    check_code_size(&body.code)?;
    if let Some(requirements) = &body.requirements {
        check_requirements_size(requirements)?;
    }
    let if_match = match headers.get(header::IF_MATCH) {
        // `*`: any current version will do (no precondition).
        None => None,
        Some(value) if value.as_bytes() == b"*" => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(|text| text.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|text| text.parse::<i32>().ok())
                .ok_or_else(|| {
                    Error::BadRequest("If-Match takes the app's ETag, e.g. \"3\"".into())
                })?,
        ),
    };
    let base = match (if_match, body.base_version) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::BadRequest("If-Match and base_version disagree".into()));
        }
        (a, b) => a.or(b),
    };
    // A stale base is refused before anything is resolved (the save would refuse it anyway).
    if base.is_some_and(|base| base != app.latest_version) {
        return Err(apps::stale_save());
    }
    // The version edited: its requirements when none are sent, its lock when they are the same.
    let previous = apps::version(state.db(), app.id, base.unwrap_or(app.latest_version)).await?;
    let requirements = body
        .requirements
        .or_else(|| previous.as_ref().map(|previous| previous.requirements.clone()))
        .unwrap_or_default();
    let text =
        packages::version_text(state.packages(), body.code, requirements, previous.as_ref()).await;
    let version = apps::save(
        state.db(),
        app.id,
        base,
        &text,
        caller.user().id,
        "saved",
        state.quotas().versions_per_app,
    )
    .await?;
    let detail = json!({ "version": version });
    teams::audit(state.db(), team.id, caller.actor(), "app.save", &app.name, detail).await?;
    let diagnostics = diagnostics(&state, &team, &text, true).await?;
    let etag = HeaderValue::from_str(&format!("\"{version}\"")).expect("digits");
    Ok(([(header::ETAG, etag)], Json(Saved { version, diagnostics })).into_response())
}

/// Renames the app or changes its settings.
#[utoipa::path(patch, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)), request_body = ChangeApp,
    responses((status = 200, body = AppSummary),
              (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn change_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team_name, app_name)): AppPath,
    ApiJson(body): ApiJson<ChangeApp>,
) -> Result<Json<AppSummary>> {
    let (team, app) = find_app(&state, &caller, &team_name, &app_name, Need::Edit).await?;
    // Everything is checked before anything changes: a refused request changes nothing.
    let new_name = body.name.filter(|new_name| *new_name != app.name);
    if let Some(new_name) = &new_name {
        super::check_name("app", new_name)?;
    }
    if body.memory_limit_mib.is_some_and(|mib| !(0..=65_536).contains(&mib)) {
        return Err(Error::BadRequest(
            "memory_limit_mib is 1 to 65536, or 0 for the default".into(),
        ));
    }
    // The memory first: the team's total may still refuse it, and then nothing changed.
    if let Some(mib) = body.memory_limit_mib {
        let limit = (mib > 0).then_some(mib);
        crate::db::quotas::set_app_memory(state.db(), team.id, app.id, limit, state.quotas())
            .await?;
        let detail = json!({ "memory_limit_mib": limit });
        teams::audit(state.db(), team.id, caller.actor(), "app.settings", &app.name, detail)
            .await?;
    }
    let mut name = app.name.clone();
    if let Some(new_name) = new_name {
        apps::rename(state.db(), app.id, team.id, &new_name).await?;
        let detail = json!({ "from": app.name });
        teams::audit(state.db(), team.id, caller.actor(), "app.rename", &new_name, detail).await?;
        name = new_name;
    }
    let summary = apps::list(state.db(), team.id)
        .await?
        .into_iter()
        .find(|summary| summary.name == name)
        .ok_or_else(|| Error::NotFound(format!("team `{}` has no app `{name}`", team.name)))?;
    Ok(Json(summary))
}

/// Deletes the app: it stops, and its versions, status, logs, bad records, grids and shares
/// are removed. Its changelog topic is deleted where the broker can delete topics.
#[utoipa::path(delete, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<StatusCode> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    // Runtime nodes hear of the deletion at once (a trigger notifies them) and stop it; the
    // changelog topic's name carries the app's id, so a new app of the same name never reads
    // the old data even where the topic cannot be deleted.
    let topic = apps::delete(state.db(), app.id).await?;
    teams::audit(state.db(), team.id, caller.actor(), "app.delete", &app.name, json!({})).await?;
    if let Some(topic) = topic {
        let kafka = state.inner.kafka.clone();
        tokio::spawn(async move {
            if let Err(error) = kafka.delete_topic(&topic).await {
                tracing::info!(%error, "The deleted app's changelog topic stays (unused).");
            }
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Starts the app (the latest version, or `?version=`). A running app restarts with it; a
/// failed one starts again. Code with errors is refused with 422 and its diagnostics.
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/start", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), StartQuery),
    responses((status = 200, body = Lifecycle),
              (status = 422, body = aerogrid_api::Problem, content_type = "application/problem+json",
               description = "The code has errors: `diagnostics` lists them")))]
pub(crate) async fn start_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<Json<Lifecycle>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    start(&state, &caller, &team, &app, query.version, "app.start").await
}

async fn start(
    state: &ServerState,
    caller: &Caller,
    team: &TeamAccess,
    app: &apps::App,
    version: Option<i32>,
    action: &str,
) -> Result<Json<Lifecycle>> {
    let runs = version.unwrap_or(app.latest_version);
    let text = apps::version(state.db(), app.id, runs)
        .await?
        .ok_or_else(|| Error::NotFound(format!("app `{}` has no version {runs}", app.name)))?;
    let diagnostics = diagnostics(state, team, &text, true).await?;
    if validate::has_errors(&diagnostics) {
        return Err(Error::Invalid {
            message: format!(
                "version {runs} of `{}` cannot start: its code or requirements have errors (see diagnostics)",
                app.name
            ),
            diagnostics,
        });
    }
    apps::start(state.db(), team.id, app.id, version, state.quotas()).await?;
    let detail = json!({ "version": runs });
    teams::audit(state.db(), team.id, caller.actor(), action, &app.name, detail).await?;
    Ok(Json(Lifecycle { desired_state: DesiredState::Running, run_version: version, diagnostics }))
}

/// Stops the app (its grids keep their last values in the changelog).
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/stop", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Lifecycle)))]
pub(crate) async fn stop_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Lifecycle>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    apps::stop(state.db(), app.id).await?;
    teams::audit(state.db(), team.id, caller.actor(), "app.stop", &app.name, json!({})).await?;
    Ok(Json(Lifecycle {
        desired_state: DesiredState::Stopped,
        run_version: app.run_version,
        diagnostics: Vec::new(),
    }))
}

/// Restarts the app with the version it runs (or starts it if stopped).
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/restart", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Lifecycle),
              (status = 422, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn restart_app(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Lifecycle>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    start(&state, &caller, &team, &app, app.run_version, "app.restart").await
}

/// What the runtime reports: state, error and its line, restarts, records in, bad records, lag,
/// running version, since when.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/status", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Status)))]
pub(crate) async fn app_status(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Status>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    Ok(Json(apps::status(state.db(), app.id).await?))
}

/// Which of the app's grids are shared with which teams.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/shares", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Vec<Share>)))]
pub(crate) async fn list_shares(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Vec<Share>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    Ok(Json(teams::shares(state.db(), app.id).await?))
}

/// Shares a grid read-only with another team (owners only): its members and team tokens may
/// subscribe to it.
#[utoipa::path(put, path = "/teams/{team}/apps/{app}/grids/{grid}/shares/{with}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), ("grid" = String, Path),
           ("with" = String, Path, description = "The team to share with")),
    responses((status = 200, body = Share)))]
pub(crate) async fn share_grid(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app, grid, with)): ApiPath<(String, String, String, String)>,
) -> Result<Json<Share>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Own).await?;
    super::check_name("grid", &grid)?;
    let share = teams::share(state.db(), app.id, &grid, &with).await?;
    let target = format!("{}/{grid}", app.name);
    teams::audit(
        state.db(),
        team.id,
        caller.actor(),
        "grid.share",
        &target,
        json!({ "with": with }),
    )
    .await?;
    Ok(Json(share))
}

/// Stops sharing a grid with a team (owners only).
#[utoipa::path(delete, path = "/teams/{team}/apps/{app}/grids/{grid}/shares/{with}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), ("grid" = String, Path), ("with" = String, Path)),
    responses((status = 204, description = "No longer shared")))]
pub(crate) async fn unshare_grid(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app, grid, with)): ApiPath<(String, String, String, String)>,
) -> Result<StatusCode> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Own).await?;
    if !teams::unshare(state.db(), app.id, &grid, &with).await? {
        return Err(Error::NotFound(format!("grid `{grid}` is not shared with `{with}`")));
    }
    let target = format!("{}/{grid}", app.name);
    teams::audit(
        state.db(),
        team.id,
        caller.actor(),
        "grid.unshare",
        &target,
        json!({ "with": with }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks code without saving or running it: syntax errors with line and column, and the
/// platform's rules (one App, streams over declared topics, aerogrid's names, imports the
/// sandbox refuses, with `team`: topics the team may not read).
#[utoipa::path(post, path = "/validate", tag = "apps", request_body = ValidateRequest,
    responses((status = 200, body = Validation)))]
pub(crate) async fn validate_code(
    State(state): State<ServerState>,
    caller: Caller,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Validation>> {
    check_code_size(&body.code)?;
    let requirements = body.requirements.unwrap_or_default();
    check_requirements_size(&requirements)?;
    // Unresolved: checking resolves nothing (the save does), so imports are checked against
    // the packages declared.
    let text = apps::VersionText { code: body.code, requirements, ..Default::default() };
    let diagnostics = match body.team {
        Some(team) => {
            let team = caller.in_team(&state, &team, Need::Read).await?;
            diagnostics(&state, &team, &text, false).await?
        }
        None => {
            let (declared, requirements) = packages::check(&text, false);
            let mut diagnostics = validate::validate(text.code, None, declared).await;
            diagnostics.extend(requirements);
            diagnostics
        }
    };
    Ok(Json(Validation { diagnostics }))
}

fn check_requirements_size(requirements: &str) -> Result<()> {
    if requirements.len() > packages::MAX_REQUIREMENTS_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "the requirements are {} KiB; an app may have at most {} KiB",
            requirements.len() / 1024,
            packages::MAX_REQUIREMENTS_BYTES / 1024
        )));
    }
    Ok(())
}

fn check_code_size(code: &str) -> Result<()> {
    if code.len() > validate::MAX_CODE_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "the code is {} KiB; a connector may have at most {} KiB",
            code.len() / 1024,
            validate::MAX_CODE_BYTES / 1024
        )));
    }
    Ok(())
}
