//! The HTTP surface: `/healthz`, `/api/v1/...`, and the web frontend for every other path.

mod auth;
mod health;
mod web;

use axum::{Router, http::StatusCode, routing::get};
use tower_http::trace::TraceLayer;

pub(crate) use auth::{bearer_token, session_cookie};
pub(crate) use health::is_healthy;

use crate::{AppState, error::problem};

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/link", get(auth::redeem_login_link))
        .route("/me", get(auth::me))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such API route") });
    Router::new()
        .route("/healthz", get(health::healthz))
        .nest("/api/v1", api)
        .merge(crate::gateway::router(&state))
        .fallback_service(web::service(&state))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
