//! Apps: create, read, save (every save a version), rename, delete, start/stop/restart, status,
//! logs (recent and followed live), bad records, versions (list, read, compare, roll back),
//! grid shares; and validation.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::{Caller, Need, TeamAccess},
    extract::{ApiJson, ApiPath, ApiQuery},
};
use crate::{
    AppState, Error, Result,
    db::{
        apps::{self, AppSummary, BadRecord, LogLine, Status, VersionInfo},
        teams::{self, Share},
    },
    validate::{self, Diagnostic, TopicScope},
};

/// How often a followed log looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

type AppPath = ApiPath<(String, String)>;

/// The team (checked for `need`) and the app named in the path.
async fn find_app(
    state: &AppState,
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

/// The diagnostics of `code` as an app of `team`: with the topics the team may read.
async fn diagnostics(state: &AppState, team: &TeamAccess, code: String) -> Result<Vec<Diagnostic>> {
    let grants = crate::db::topics::patterns(state.db(), team.id).await?;
    let scope = TopicScope { team: team.name.clone(), grants };
    Ok(validate::validate(code, Some(scope)).await)
}

/// The team's apps with their state.
#[utoipa::path(get, path = "/teams/{team}/apps", tag = "apps",
    params(("team" = String, Path)), responses((status = 200, body = Vec<AppSummary>)))]
pub(crate) async fn list_apps(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<AppSummary>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(apps::list(state.db(), team.id).await?))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct NewApp {
    name: String,
    /// The module's Python code (it may be invalid: a draft is saved, Start refuses it).
    code: String,
}

/// An app with its latest code.
#[derive(Serialize, ToSchema)]
pub(crate) struct AppDetail {
    team: String,
    name: String,
    /// The latest version (also the `ETag`: `"<version>"`).
    version: i32,
    code: String,
    /// What is wrong in `code`, if anything.
    diagnostics: Vec<Diagnostic>,
    /// `running` or `stopped`: what was asked for.
    desired_state: String,
    /// The version Start runs; null: the latest.
    run_version: Option<i32>,
    /// The connector's memory limit; null: the runtime's default.
    memory_limit_mib: Option<i32>,
    status: Status,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Creates an app with its code as version 1.
#[utoipa::path(post, path = "/teams/{team}/apps", tag = "apps",
    params(("team" = String, Path)), request_body = NewApp,
    responses((status = 201, body = AppDetail),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_app(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(body): ApiJson<NewApp>,
) -> Result<Response> {
    let team = caller.in_team(&state, &team, Need::Edit).await?;
    super::check_name("app", &body.name)?;
    check_code_size(&body.code)?;
    apps::create(state.db(), team.id, &body.name, &body.code, caller.user().id, state.quotas())
        .await?;
    teams::audit(state.db(), team.id, caller.actor(), "app.create", &body.name, json!({})).await?;
    let found = apps::find(state.db(), team.id, &body.name)
        .await?
        .ok_or_else(|| Error::Conflict("the app was deleted while being created".into()))?;
    let detail = detail(&state, &team, found, body.code).await?;
    Ok((StatusCode::CREATED, with_etag(detail)).into_response())
}

async fn detail(
    state: &AppState,
    team: &TeamAccess,
    app: apps::App,
    code: String,
) -> Result<AppDetail> {
    let status = apps::status(state.db(), app.id).await?;
    let diagnostics = diagnostics(state, team, code.clone()).await?;
    Ok(AppDetail {
        team: team.name.clone(),
        name: app.name,
        version: app.latest_version,
        code,
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
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Response> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let code = apps::code(state.db(), app.id, app.latest_version).await?.unwrap_or_default();
    Ok(with_etag(detail(&state, &team, app, code).await?))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct SaveApp {
    code: String,
    /// The version this edit started from: if someone saved since, 409 instead of an
    /// overwrite. `If-Match: "<version>"` does the same.
    base_version: Option<i32>,
}

/// What a save made.
#[derive(Serialize, ToSchema)]
pub(crate) struct Saved {
    version: i32,
    diagnostics: Vec<Diagnostic>,
}

/// Saves code as a new version (an invalid draft too: its diagnostics come back). With
/// `base_version` or `If-Match`, a save over someone else's newer version is refused with 409.
#[utoipa::path(put, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path),
           ("If-Match" = Option<String>, Header, description = "The version edited, as its ETag")),
    request_body = SaveApp,
    responses((status = 200, body = Saved),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn save_app(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((team, app)): AppPath,
    ApiJson(body): ApiJson<SaveApp>,
) -> Result<Response> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    check_code_size(&body.code)?;
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
    let version = apps::save(
        state.db(),
        app.id,
        base,
        &body.code,
        caller.user().id,
        "saved",
        state.quotas().versions_per_app,
    )
    .await?;
    let detail = json!({ "version": version });
    teams::audit(state.db(), team.id, caller.actor(), "app.save", &app.name, detail).await?;
    let diagnostics = diagnostics(&state, &team, body.code).await?;
    let etag = HeaderValue::from_str(&format!("\"{version}\"")).expect("digits");
    Ok(([(header::ETAG, etag)], Json(Saved { version, diagnostics })).into_response())
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ChangeApp {
    /// A new name (grids are then addressed by it).
    name: Option<String>,
    /// The connector's memory limit in MiB; 0 restores the runtime's default.
    memory_limit_mib: Option<i32>,
}

/// Renames the app or changes its settings.
#[utoipa::path(patch, path = "/teams/{team}/apps/{app}", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)), request_body = ChangeApp,
    responses((status = 200, body = AppSummary),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn change_app(
    State(state): State<AppState>,
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
    State(state): State<AppState>,
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

#[derive(Deserialize, IntoParams)]
pub(crate) struct StartQuery {
    /// Run this version instead of the latest.
    version: Option<i32>,
}

/// What Start, Stop and Restart did.
#[derive(Serialize, ToSchema)]
pub(crate) struct Lifecycle {
    desired_state: String,
    /// The version that will run; null: the latest.
    run_version: Option<i32>,
    /// Warnings of the code that will run.
    diagnostics: Vec<Diagnostic>,
}

/// Starts the app (the latest version, or `?version=`). A running app restarts with it; a
/// failed one starts again. Code with errors is refused with 422 and its diagnostics.
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/start", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), StartQuery),
    responses((status = 200, body = Lifecycle),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json",
               description = "The code has errors: `diagnostics` lists them")))]
pub(crate) async fn start_app(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<Json<Lifecycle>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    start(&state, &caller, &team, &app, query.version, "app.start").await
}

async fn start(
    state: &AppState,
    caller: &Caller,
    team: &TeamAccess,
    app: &apps::App,
    version: Option<i32>,
    action: &str,
) -> Result<Json<Lifecycle>> {
    let runs = version.unwrap_or(app.latest_version);
    let code = apps::code(state.db(), app.id, runs)
        .await?
        .ok_or_else(|| Error::NotFound(format!("app `{}` has no version {runs}", app.name)))?;
    let diagnostics = diagnostics(state, team, code).await?;
    if validate::has_errors(&diagnostics) {
        return Err(Error::Invalid {
            message: format!(
                "version {runs} of `{}` cannot start: its code has errors (see diagnostics)",
                app.name
            ),
            diagnostics,
        });
    }
    apps::start(state.db(), team.id, app.id, version, state.quotas()).await?;
    let detail = json!({ "version": runs });
    teams::audit(state.db(), team.id, caller.actor(), action, &app.name, detail).await?;
    Ok(Json(Lifecycle { desired_state: "running".into(), run_version: version, diagnostics }))
}

/// Stops the app (its grids keep their last values in the changelog).
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/stop", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Lifecycle)))]
pub(crate) async fn stop_app(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Lifecycle>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    apps::stop(state.db(), app.id).await?;
    teams::audit(state.db(), team.id, caller.actor(), "app.stop", &app.name, json!({})).await?;
    Ok(Json(Lifecycle {
        desired_state: "stopped".into(),
        run_version: app.run_version,
        diagnostics: Vec::new(),
    }))
}

/// Restarts the app with the version it runs (or starts it if stopped).
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/restart", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Lifecycle),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn restart_app(
    State(state): State<AppState>,
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
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Status>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    Ok(Json(apps::status(state.db(), app.id).await?))
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct LogQuery {
    /// Lines after this id (the last one seen); without it, the newest lines.
    after: Option<i64>,
    /// At most this many lines (default 200, at most 5000).
    limit: Option<i64>,
}

/// The app's log, oldest first: the newest lines, or those after `?after=`.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/logs", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), LogQuery),
    responses((status = 200, body = Vec<LogLine>)))]
pub(crate) async fn app_logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<Vec<LogLine>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let limit = super::limit(query.limit, 200, 5000)?;
    Ok(Json(apps::logs(state.db(), app.id, query.after, limit).await?))
}

/// Follows the log live as server-sent events: each `log` event's data is a log line (JSON) and
/// its id the line's; a reconnecting `EventSource` resumes after `Last-Event-ID`. Without
/// `?after=`, the stream starts with the newest 200 lines. An `end` event says the app is gone.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/logs/follow", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "`log` events, each a JSON log line")))]
pub(crate) async fn follow_logs(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response> {
    // Watched from before the check: a revocation meanwhile is not missed.
    let generation = state.inner.access_generation.subscribe();
    let (team_access, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok());
    let after = resume.or(query.after);
    let first = apps::logs(state.db(), app.id, after, 200).await?;
    let cursor = first.last().map(|line| line.id).or(after).unwrap_or(0);
    let app_id = app.id;
    let shutting_down = state.inner.shutting_down.subscribe();
    let access = LogAccess {
        state: state.clone(),
        credentials: crate::access::credentials(&headers),
        team: team_access.name,
        app_id,
        generation,
    };
    let events = futures::stream::unfold(
        (first, cursor, false, access),
        move |(mut pending, cursor, ended, mut access)| {
            let db = access.state.db().clone();
            let mut shutting_down = shutting_down.clone();
            async move {
                if ended {
                    return None;
                }
                let mut cursor = cursor;
                let mut idle_polls = 0u32;
                loop {
                    if access.generation.has_changed().unwrap_or(false)
                        && let Err(error) = access.still_allowed().await
                    {
                        let end = Event::default()
                            .event("end")
                            .data(format!("access to this log was withdrawn: {error}"));
                        return Some((Ok(end), (Vec::new(), cursor, true, access)));
                    }
                    if !pending.is_empty() {
                        let line = pending.remove(0);
                        let event = Event::default()
                            .event("log")
                            .id(line.id.to_string())
                            .json_data(&line)
                            .unwrap_or_default();
                        return Some((
                            Ok::<_, Infallible>(event),
                            (pending, cursor, false, access),
                        ));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_EVERY) => {}
                        _ = shutting_down.wait_for(|down| *down) => return None,
                    }
                    match apps::logs(&db, app_id, Some(cursor), 500).await {
                        Ok(lines) => {
                            if let Some(last) = lines.last() {
                                cursor = last.id;
                            }
                            pending = lines;
                        }
                        Err(error) => tracing::warn!(%error, "Cannot follow a log."),
                    }
                    // A quiet log may belong to a deleted app: look every 2 s.
                    idle_polls = if pending.is_empty() { idle_polls + 1 } else { 0 };
                    if idle_polls % 8 == 7 && matches!(apps::exists(&db, app_id).await, Ok(false)) {
                        let end = Event::default().event("end").data("the app was deleted");
                        return Some((Ok(end), (Vec::new(), cursor, true, access)));
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// What a followed log checks again whenever access may have shrunk (see [`crate::access`]).
struct LogAccess {
    state: AppState,
    credentials: HeaderMap,
    team: String,
    app_id: uuid::Uuid,
    generation: tokio::sync::watch::Receiver<u64>,
}

impl LogAccess {
    /// Whether the caller may still read the log: their credentials work, they may read the
    /// team, and the app is still the team's.
    async fn still_allowed(&mut self) -> Result<()> {
        self.generation.borrow_and_update();
        let identity = crate::identity::authenticate(self.state.db(), &self.credentials).await?;
        let team = Caller(identity).in_team(&self.state, &self.team, Need::Read).await?;
        if !apps::belongs_to(self.state.db(), self.app_id, team.id).await? {
            return Err(Error::NotFound("the app is gone".into()));
        }
        Ok(())
    }
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct LimitQuery {
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

/// The newest records the app could not process, with the reason and the raw message.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/bad-records", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), LimitQuery),
    responses((status = 200, body = Vec<BadRecord>)))]
pub(crate) async fn bad_records(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<BadRecord>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let limit = super::limit(query.limit, 100, 1000)?;
    Ok(Json(apps::bad_records(state.db(), app.id, limit).await?))
}

/// Every saved version, newest first.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Vec<VersionInfo>)))]
pub(crate) async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
) -> Result<Json<Vec<VersionInfo>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    Ok(Json(apps::versions(state.db(), app.id).await?))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VersionCode {
    version: i32,
    code: String,
}

async fn version_code(state: &AppState, app: &apps::App, version: i32) -> Result<String> {
    apps::code(state.db(), app.id, version)
        .await?
        .ok_or_else(|| Error::NotFound(format!("app `{}` has no version {version}", app.name)))
}

/// The code of one version.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions/{version}", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = VersionCode)))]
pub(crate) async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
) -> Result<Json<VersionCode>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let code = version_code(&state, &app, version).await?;
    Ok(Json(VersionCode { version, code }))
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct DiffQuery {
    /// The version to compare with (default: the latest).
    to: Option<i32>,
}

/// How long a diff may search for the smallest one.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Serialize, ToSchema)]
pub(crate) struct VersionDiff {
    from: i32,
    to: i32,
    /// A unified diff (3 lines of context), empty when the code is the same.
    diff: String,
}

/// Compares a version with another (`?to=`, default the latest).
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/versions/{version}/diff", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path), DiffQuery),
    responses((status = 200, body = VersionDiff)))]
pub(crate) async fn diff_versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<VersionDiff>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let to = query.to.unwrap_or(app.latest_version);
    let old = version_code(&state, &app, version).await?;
    let new = version_code(&state, &app, to).await?;
    if old == new {
        return Ok(Json(VersionDiff { from: version, to, diff: String::new() }));
    }
    // Off the async threads, a few at a time, and within a deadline (past it, `similar` gives a
    // coarser diff rather than going on).
    let busy = || Error::Unavailable("the server is busy comparing versions: try again".into());
    let permit = tokio::time::timeout(validate::CHECKER_WAIT, validate::CHECKER_SLOTS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let diff = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        similar::TextDiff::configure()
            .deadline(std::time::Instant::now() + DIFF_DEADLINE)
            .diff_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("version {version}"), &format!("version {to}"))
            .to_string()
    })
    .await
    .map_err(|_| busy())?;
    Ok(Json(VersionDiff { from: version, to, diff }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RolledBack {
    /// The new latest version, holding the chosen version's code.
    version: i32,
    /// Whether the running app restarted with it.
    restarted: bool,
    diagnostics: Vec<Diagnostic>,
}

/// Rolls back: saves a version's code as the new latest version (history is kept) and, if the
/// app runs the latest version, restarts it with that code.
#[utoipa::path(post, path = "/teams/{team}/apps/{app}/versions/{version}/rollback", tag = "versions",
    params(("team" = String, Path), ("app" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = RolledBack)))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((team, app, version)): ApiPath<(String, String, i32)>,
) -> Result<Json<RolledBack>> {
    let (team, app) = find_app(&state, &caller, &team, &app, Need::Edit).await?;
    let code = version_code(&state, &app, version).await?;
    let note = format!("rollback to {version}");
    let saved = apps::save(
        state.db(),
        app.id,
        None,
        &code,
        caller.user().id,
        &note,
        state.quotas().versions_per_app,
    )
    .await?;
    let detail = json!({ "to": version, "version": saved });
    teams::audit(state.db(), team.id, caller.actor(), "app.rollback", &app.name, detail).await?;
    let diagnostics = diagnostics(&state, &team, code).await?;
    let restarted = app.desired_state == "running"
        && app.run_version.is_none()
        && !validate::has_errors(&diagnostics);
    if restarted {
        apps::start(state.db(), team.id, app.id, None, state.quotas()).await?;
    }
    Ok(Json(RolledBack { version: saved, restarted, diagnostics }))
}

/// Which of the app's grids are shared with which teams.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/shares", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = Vec<Share>)))]
pub(crate) async fn list_shares(
    State(state): State<AppState>,
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
    State(state): State<AppState>,
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
    State(state): State<AppState>,
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

#[derive(Deserialize, ToSchema)]
pub(crate) struct ValidateRequest {
    code: String,
    /// Check it as an app of this team (the caller's): then topics the team may not read are
    /// errors too. Without it, only the platform's topics are.
    team: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Validation {
    diagnostics: Vec<Diagnostic>,
}

/// Checks code without saving or running it: syntax errors with line and column, and the
/// platform's rules (one App, streams over declared topics, aerogrid's names, imports the
/// sandbox refuses, with `team`: topics the team may not read).
#[utoipa::path(post, path = "/validate", tag = "apps", request_body = ValidateRequest,
    responses((status = 200, body = Validation)))]
pub(crate) async fn validate_code(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Validation>> {
    check_code_size(&body.code)?;
    let diagnostics = match body.team {
        Some(team) => {
            let team = caller.in_team(&state, &team, Need::Read).await?;
            diagnostics(&state, &team, body.code).await?
        }
        None => validate::validate(body.code, None).await,
    };
    Ok(Json(Validation { diagnostics }))
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
