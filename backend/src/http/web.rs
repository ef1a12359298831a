//! The Trunk-built frontend. Unknown paths get `index.html`, so client-side routes such as
//! `/teams/{team}/apps/{app}` load the app.

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tower_http::{
    compression::CompressionLayer,
    services::{ServeDir, ServeFile},
};

use crate::ServerState;

pub(crate) fn service(state: &ServerState) -> Router {
    let web_dir = &state.inner.web_dir;
    let index = web_dir.join("index.html");
    if !index.is_file() {
        let message = format!(
            "The web frontend is not built at `{}`: run `cargo xtask build-web`, or point --web-dir at Trunk's output.",
            web_dir.display()
        );
        return Router::new().fallback(get(move || async move {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/plain")], message)
                .into_response()
        }));
    }
    let files = ServeDir::new(web_dir).fallback(ServeFile::new(index));
    Router::new().fallback_service(files).layer(CompressionLayer::new())
}
