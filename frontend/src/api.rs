//! The few REST calls the page makes, and the JSON shapes they answer with.
//!
//! Requests are same-origin (relative URLs), so the browser sends the session cookie by itself
//! and no CORS is involved. Each call returns a plain `Result` with a message fit to show.

use gloo_net::http::Request;
use serde::Deserialize;

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

/// `GET /api/v1/me` on 200.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Me {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) is_admin: bool,
}

/// Fetches the health report. An unhealthy server answers 503 with the same JSON body, so the
/// body is read whatever the status, and only a body that does not parse is an error.
pub(crate) async fn health() -> Result<Health, String> {
    let response = Request::get("/healthz").send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    response.json::<Health>().await.map_err(|e| format!("HTTP {status}: {e}"))
}

/// Who is signed in: `Ok(None)` when nobody is (401).
pub(crate) async fn me() -> Result<Option<Me>, String> {
    let response = Request::get("/api/v1/me").send().await.map_err(|e| e.to_string())?;
    match response.status() {
        200 => response.json::<Me>().await.map(Some).map_err(|e| e.to_string()),
        401 => Ok(None),
        status => Err(format!("HTTP {status} {}", response.status_text())),
    }
}
