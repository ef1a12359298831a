//! The Excel add-in: its manifest at `/excel/manifest.xml`, with the server's public URL in
//! every address, and its files (functions, task pane, icons) under `/excel/`, from the same
//! origin as the API (Excel's JavaScript-only runtime allows only simple cross-origin requests).

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tower_http::{services::ServeDir, set_header::SetResponseHeaderLayer};

use crate::{ServerState, error::problem};

pub(crate) fn router(state: &ServerState) -> Router<ServerState> {
    let files = ServeDir::new(state.inner.web_dir.join("excel"));
    // Office caches add-in files hard: make it ask again (an unchanged file is a 304).
    let no_cache = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Router::new()
        .route("/excel/manifest.xml", get(manifest))
        .nest_service("/excel", files)
        .layer(no_cache)
}

/// `GET /excel/manifest.xml`: the built manifest template with `{{PUBLIC_URL}}` replaced by the
/// configured public URL, or else the URL this request reached.
async fn manifest(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    let path = state.inner.web_dir.join("excel").join("manifest.xml");
    let Ok(template) = tokio::fs::read_to_string(&path).await else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the Excel add-in is not built here: run `cargo xtask build-web`",
        );
    };
    let Some(base) = public_url(&state, &headers) else {
        return problem(StatusCode::BAD_REQUEST, "the request names no host: set --public-url");
    };
    let body = template.replace("{{PUBLIC_URL}}", &xml_escape(&base));
    ([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

/// Where clients reach this server: `--public-url`, else the scheme and `Host` of the request.
fn public_url(state: &ServerState, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &state.inner.public_url {
        return Some(url.as_str().trim_end_matches('/').to_owned());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // A host is letters, digits, dots, dashes, colons and brackets: anything else is refused
    // rather than written into the manifest.
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let scheme = if state.is_tls() { "https" } else { "http" };
    valid.then(|| format!("{scheme}://{host}"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
