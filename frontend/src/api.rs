//! The REST calls the page makes, and the JSON shapes they answer with.
//!
//! Requests are same-origin (relative URLs), so the browser sends the session cookie by itself
//! and no CORS is involved. Writes carry the session's CSRF token (from sign-in or `GET /me`).
//! Each call returns a plain `Result` whose error is a message fit to show: the problem
//! document's `detail` when the server sent one.

use std::cell::RefCell;

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;

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

#[derive(Deserialize)]
struct Problem {
    detail: Option<String>,
    #[serde(default)]
    diagnostics: Vec<Diagnostic>,
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
        .and_then(|problem| problem.detail.clone())
        .unwrap_or_else(|| format!("HTTP {status} {}", response.status_text()));
    Err(ApiError {
        status,
        message,
        diagnostics: problem.map(|p| p.diagnostics).unwrap_or_default(),
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
    body: Option<serde_json::Value>,
) -> ApiResult<T> {
    let request = with_csrf(request);
    let sent = match body {
        Some(body) => request.json(&body).map_err(network)?.send().await,
        None => request.send().await,
    };
    answer(sent.map_err(network)?).await
}

pub(crate) async fn post<T: DeserializeOwned>(
    url: &str,
    body: Option<serde_json::Value>,
) -> ApiResult<T> {
    send(Request::post(url), body).await
}

pub(crate) async fn put<T: DeserializeOwned>(url: &str, body: serde_json::Value) -> ApiResult<T> {
    send(Request::put(url), Some(body)).await
}

pub(crate) async fn patch<T: DeserializeOwned>(url: &str, body: serde_json::Value) -> ApiResult<T> {
    send(Request::patch(url), Some(body)).await
}

pub(crate) async fn delete(url: &str) -> ApiResult<()> {
    send::<()>(Request::delete(url), None).await
}

/// Lets `team` read `topic` (administrators only).
pub(crate) async fn grant_topic(team: &str, topic: &str) -> ApiResult<()> {
    let url = format!("/api/v1/teams/{}/topics/{}", segment(team), segment(topic));
    let _: serde_json::Value = send(Request::put(&url), None).await?;
    Ok(())
}

/// Path segments as they go into a URL.
pub(crate) fn segment(text: &str) -> String {
    js_sys::encode_uri_component(text).into()
}

pub(crate) fn app_url(team: &str, app: &str) -> String {
    format!("/api/v1/teams/{}/apps/{}", segment(team), segment(app))
}

/// `GET /healthz`: the server is up, and how its dependencies are.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Health {
    pub(crate) database: Component,
    pub(crate) broker: Component,
}

/// One dependency in the health report.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Component {
    pub(crate) ok: bool,
    /// Why it is not ok, when the server says.
    #[serde(default, alias = "message")]
    pub(crate) error: Option<String>,
}

/// Fetches the health report. An unhealthy server answers 503 with the same JSON body, so the
/// body is read whatever the status, and only a body that does not parse is an error.
pub(crate) async fn health() -> Result<Health, String> {
    let response = Request::get("/healthz").send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    response.json::<Health>().await.map_err(|e| format!("HTTP {status}: {e}"))
}

/// The signed-in user.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct Me {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) is_admin: bool,
    #[serde(default)]
    pub(crate) csrf_token: Option<String>,
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
    let me: Me =
        post("/api/v1/auth/sign-in", Some(json!({ "name": name, "password": password }))).await?;
    remember_csrf(&me);
    Ok(me)
}

pub(crate) async fn sign_out() -> ApiResult<()> {
    post::<()>("/api/v1/auth/sign-out", None).await?;
    CSRF_TOKEN.with(|token| *token.borrow_mut() = None);
    Ok(())
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Viewer,
    Editor,
    Owner,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct Team {
    pub(crate) name: String,
    pub(crate) role: Role,
}

pub(crate) async fn teams() -> ApiResult<Vec<Team>> {
    get("/api/v1/teams").await
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct AppSummary {
    pub(crate) name: String,
    pub(crate) latest_version: i32,
    pub(crate) desired_state: String,
    pub(crate) state: String,
    pub(crate) error: Option<String>,
}

pub(crate) async fn apps(team: &str) -> ApiResult<Vec<AppSummary>> {
    get(&format!("/api/v1/teams/{}/apps", segment(team))).await
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct Diagnostic {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) end_line: u32,
    pub(crate) end_column: u32,
    pub(crate) severity: String,
    pub(crate) message: String,
    /// On a topic the team may not read: the topic an administrator can grant.
    #[serde(default)]
    pub(crate) grantable_topic: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct Status {
    pub(crate) state: String,
    pub(crate) error: Option<String>,
    pub(crate) error_line: Option<i32>,
    pub(crate) restarts: i32,
    pub(crate) records_in: i64,
    pub(crate) bad_records: i64,
    pub(crate) lag: Option<i64>,
    pub(crate) version: Option<i32>,
    pub(crate) since: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct AppDetail {
    pub(crate) name: String,
    pub(crate) version: i32,
    pub(crate) code: String,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) desired_state: String,
    pub(crate) run_version: Option<i32>,
    pub(crate) status: Status,
}

pub(crate) async fn create_app(team: &str, name: &str, code: &str) -> ApiResult<AppDetail> {
    post(
        &format!("/api/v1/teams/{}/apps", segment(team)),
        Some(json!({ "name": name, "code": code })),
    )
    .await
}

pub(crate) async fn app(team: &str, app: &str) -> ApiResult<AppDetail> {
    get(&app_url(team, app)).await
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Saved {
    pub(crate) version: i32,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// Saves `code` over `base` (409 if someone saved since).
pub(crate) async fn save(team: &str, app: &str, code: &str, base: i32) -> ApiResult<Saved> {
    put(&app_url(team, app), json!({ "code": code, "base_version": base })).await
}

pub(crate) async fn rename(team: &str, app: &str, name: &str) -> ApiResult<AppSummary> {
    patch(&app_url(team, app), json!({ "name": name })).await
}

pub(crate) async fn delete_app(team: &str, app: &str) -> ApiResult<()> {
    delete(&app_url(team, app)).await
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Lifecycle {}

/// `start`, `stop` or `restart`.
pub(crate) async fn lifecycle(team: &str, app: &str, action: &str) -> ApiResult<Lifecycle> {
    post(&format!("{}/{action}", app_url(team, app)), None).await
}

pub(crate) async fn status(team: &str, app: &str) -> ApiResult<Status> {
    get(&format!("{}/status", app_url(team, app))).await
}

#[derive(Deserialize)]
struct Validation {
    diagnostics: Vec<Diagnostic>,
}

/// The diagnostics of `code` as an app of `team` (topics it may not read included).
pub(crate) async fn validate(team: &str, code: &str) -> ApiResult<Vec<Diagnostic>> {
    let body = json!({ "code": code, "team": team });
    let validation: Validation = post("/api/v1/validate", Some(body)).await?;
    Ok(validation.diagnostics)
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct LogLine {
    pub(crate) id: i64,
    pub(crate) at: String,
    pub(crate) level: String,
    pub(crate) message: String,
}

pub(crate) fn follow_logs_url(team: &str, app: &str) -> String {
    format!("{}/logs/follow", app_url(team, app))
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct BadRecord {
    pub(crate) id: i64,
    pub(crate) at: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) reason: String,
    pub(crate) line: Option<i32>,
    pub(crate) key: Option<String>,
    pub(crate) value: Option<String>,
}

pub(crate) async fn bad_records(team: &str, app: &str) -> ApiResult<Vec<BadRecord>> {
    get(&format!("{}/bad-records?limit=100", app_url(team, app))).await
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct VersionInfo {
    pub(crate) version: i32,
    pub(crate) created_by: Option<String>,
    pub(crate) created_at: String,
    pub(crate) note: Option<String>,
}

pub(crate) async fn versions(team: &str, app: &str) -> ApiResult<Vec<VersionInfo>> {
    get(&format!("{}/versions", app_url(team, app))).await
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct VersionCode {
    pub(crate) code: String,
}

pub(crate) async fn version_code(team: &str, app: &str, version: i32) -> ApiResult<String> {
    let found: VersionCode = get(&format!("{}/versions/{version}", app_url(team, app))).await?;
    Ok(found.code)
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct RolledBack {
    pub(crate) version: i32,
}

pub(crate) async fn rollback(team: &str, app: &str, version: i32) -> ApiResult<RolledBack> {
    post(&format!("{}/versions/{version}/rollback", app_url(team, app)), None).await
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TokenCreated {
    pub(crate) token: String,
}

/// A read-only token of the team, for Excel.
pub(crate) async fn read_token(team: &str, name: &str) -> ApiResult<TokenCreated> {
    post(
        &format!("/api/v1/teams/{}/tokens", segment(team)),
        Some(json!({ "name": name, "scope": "read" })),
    )
    .await
}
