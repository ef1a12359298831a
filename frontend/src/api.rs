//! The REST calls the page makes, and the JSON shapes they answer with.
//!
//! Requests are same-origin (relative URLs), so the browser sends the session cookie by itself
//! and no CORS is involved. Writes carry the session's CSRF token (from sign-in or `GET /me`).
//! Each call returns a plain `Result` whose error is a message fit to show: the problem
//! document's `detail` when the server sent one. Requests and answers are `aerogrid_api`'s
//! types, the server's own.

use std::cell::RefCell;

pub(crate) use aerogrid_api::{
    AppDetail, AppState, AppSummary, BadRecord, DesiredState, Diagnostic, Health, LogLine, Me,
    Probe, Role, Severity, SourceFile, Status, Team, VersionCode, VersionInfo,
};
use aerogrid_api::{
    ChangeApp, Lifecycle, NewApp, NewToken, Problem, RolledBack, SaveApp, Saved, Scope, SignIn,
    TokenCreated, ValidateRequest, Validation,
};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::{Serialize, de::DeserializeOwned};

thread_local! {
    static CSRF_TOKEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What went wrong with a call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    /// With 422 (code with errors): what is wrong in it.
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

fn network(error: gloo_net::Error) -> ApiError {
    ApiError {
        status: 0,
        message: format!("the server cannot be reached: {error}"),
        diagnostics: vec![],
    }
}

async fn answer<T: DeserializeOwned>(response: Response) -> ApiResult<T> {
    let status = response.status();
    if (200..300).contains(&status) {
        if status == 204 {
            return serde_json::from_value(serde_json::Value::Null).map_err(|error| ApiError {
                status,
                message: error.to_string(),
                diagnostics: vec![],
            });
        }
        return response.json::<T>().await.map_err(|error| ApiError {
            status,
            message: format!("unexpected answer: {error}"),
            diagnostics: vec![],
        });
    }
    let problem = response.json::<Problem>().await.ok();
    let message = problem
        .as_ref()
        .map(|problem| problem.detail.clone())
        .unwrap_or_else(|| format!("HTTP {status} {}", response.status_text()));
    Err(ApiError {
        status,
        message,
        diagnostics: problem.and_then(|problem| problem.diagnostics).unwrap_or_default(),
    })
}

fn with_csrf(request: RequestBuilder) -> RequestBuilder {
    match CSRF_TOKEN.with(|token| token.borrow().clone()) {
        Some(token) => request.header("X-CSRF-Token", &token),
        None => request,
    }
}

pub(crate) async fn get<T: DeserializeOwned>(url: &str) -> ApiResult<T> {
    answer(Request::get(url).send().await.map_err(network)?).await
}

async fn send<T: DeserializeOwned>(
    request: RequestBuilder,
    body: Option<&impl Serialize>,
) -> ApiResult<T> {
    let request = with_csrf(request);
    let sent = match body {
        Some(body) => request.json(body).map_err(network)?.send().await,
        None => request.send().await,
    };
    answer(sent.map_err(network)?).await
}

/// No request body.
const EMPTY: Option<&()> = None;

pub(crate) async fn post<T: DeserializeOwned>(
    url: &str,
    body: Option<&impl Serialize>,
) -> ApiResult<T> {
    send(Request::post(url), body).await
}

pub(crate) async fn put<T: DeserializeOwned>(url: &str, body: &impl Serialize) -> ApiResult<T> {
    send(Request::put(url), Some(body)).await
}

pub(crate) async fn patch<T: DeserializeOwned>(url: &str, body: &impl Serialize) -> ApiResult<T> {
    send(Request::patch(url), Some(body)).await
}

pub(crate) async fn delete(url: &str) -> ApiResult<()> {
    send::<()>(Request::delete(url), EMPTY).await
}

/// Lets `team` read `topic` (administrators only).
pub(crate) async fn grant_topic(team: &str, topic: &str) -> ApiResult<()> {
    let url = format!("/api/v1/teams/{}/topics/{}", segment(team), segment(topic));
    let _: serde_json::Value = send(Request::put(&url), EMPTY).await?;
    Ok(())
}

/// Path segments as they go into a URL.
pub(crate) fn segment(text: &str) -> String {
    js_sys::encode_uri_component(text).into()
}

pub(crate) fn app_url(team: &str, app: &str) -> String {
    format!("/api/v1/teams/{}/apps/{}", segment(team), segment(app))
}

/// Fetches the health report. An unhealthy server answers 503 with the same JSON body, so the
/// body is read whatever the status, and only a body that does not parse is an error.
pub(crate) async fn health() -> Result<Health, String> {
    let response = Request::get("/healthz").send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    response.json::<Health>().await.map_err(|e| format!("HTTP {status}: {e}"))
}

fn remember_csrf(me: &Me) {
    CSRF_TOKEN.with(|token| *token.borrow_mut() = me.csrf_token.clone());
}

/// Who is signed in: `Ok(None)` when nobody is (401).
pub(crate) async fn me() -> ApiResult<Option<Me>> {
    match get::<Me>("/api/v1/me").await {
        Ok(me) => {
            remember_csrf(&me);
            Ok(Some(me))
        }
        Err(error) if error.status == 401 => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) async fn sign_in(name: &str, password: &str) -> ApiResult<Me> {
    let body = SignIn { name: name.to_owned(), password: password.to_owned() };
    let me: Me = post("/api/v1/auth/sign-in", Some(&body)).await?;
    remember_csrf(&me);
    Ok(me)
}

pub(crate) async fn sign_out() -> ApiResult<()> {
    post::<()>("/api/v1/auth/sign-out", EMPTY).await?;
    CSRF_TOKEN.with(|token| *token.borrow_mut() = None);
    Ok(())
}

pub(crate) async fn teams() -> ApiResult<Vec<Team>> {
    get("/api/v1/teams").await
}

pub(crate) async fn apps(team: &str) -> ApiResult<Vec<AppSummary>> {
    get(&format!("/api/v1/teams/{}/apps", segment(team))).await
}

pub(crate) async fn create_app(team: &str, name: &str, code: &str) -> ApiResult<AppDetail> {
    let body = NewApp { name: name.to_owned(), code: code.to_owned(), requirements: String::new() };
    post(&format!("/api/v1/teams/{}/apps", segment(team)), Some(&body)).await
}

pub(crate) async fn app(team: &str, app: &str) -> ApiResult<AppDetail> {
    get(&app_url(team, app)).await
}

/// Saves `code` and `requirements` over `base` (409 if someone saved since).
pub(crate) async fn save(
    team: &str,
    app: &str,
    code: &str,
    requirements: &str,
    base: i32,
) -> ApiResult<Saved> {
    let body = SaveApp {
        code: code.to_owned(),
        requirements: Some(requirements.to_owned()),
        base_version: Some(base),
    };
    put(&app_url(team, app), &body).await
}

pub(crate) async fn rename(team: &str, app: &str, name: &str) -> ApiResult<AppSummary> {
    let body = ChangeApp { name: Some(name.to_owned()), ..ChangeApp::default() };
    patch(&app_url(team, app), &body).await
}

pub(crate) async fn delete_app(team: &str, app: &str) -> ApiResult<()> {
    delete(&app_url(team, app)).await
}

/// `start`, `stop` or `restart`.
pub(crate) async fn lifecycle(team: &str, app: &str, action: &str) -> ApiResult<Lifecycle> {
    post(&format!("{}/{action}", app_url(team, app)), EMPTY).await
}

pub(crate) async fn status(team: &str, app: &str) -> ApiResult<Status> {
    get(&format!("{}/status", app_url(team, app))).await
}

/// The diagnostics of `code` with `requirements` as an app of `team` (topics it may not read
/// and imports the requirements do not declare included).
pub(crate) async fn validate(
    team: &str,
    code: &str,
    requirements: &str,
) -> ApiResult<Vec<Diagnostic>> {
    let body = ValidateRequest {
        code: code.to_owned(),
        requirements: Some(requirements.to_owned()),
        team: Some(team.to_owned()),
    };
    let validation: Validation = post("/api/v1/validate", Some(&body)).await?;
    Ok(validation.diagnostics)
}

pub(crate) fn follow_logs_url(team: &str, app: &str) -> String {
    format!("{}/logs/follow", app_url(team, app))
}

pub(crate) async fn bad_records(team: &str, app: &str) -> ApiResult<Vec<BadRecord>> {
    get(&format!("{}/bad-records?limit=100", app_url(team, app))).await
}

pub(crate) async fn versions(team: &str, app: &str) -> ApiResult<Vec<VersionInfo>> {
    get(&format!("{}/versions", app_url(team, app))).await
}

/// One version's code and requirements.
pub(crate) async fn version_code(team: &str, app: &str, version: i32) -> ApiResult<VersionCode> {
    get(&format!("{}/versions/{version}", app_url(team, app))).await
}

pub(crate) async fn rollback(team: &str, app: &str, version: i32) -> ApiResult<RolledBack> {
    post(&format!("{}/versions/{version}/rollback", app_url(team, app)), EMPTY).await
}

/// A read-only token of the team, for Excel.
pub(crate) async fn read_token(team: &str, name: &str) -> ApiResult<TokenCreated> {
    let body = NewToken { name: name.to_owned(), scope: Scope::Read };
    post(&format!("/api/v1/teams/{}/tokens", segment(team)), Some(&body)).await
}
