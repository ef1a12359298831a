//! The HTTP surface: `/healthz`, `/metrics`, the REST API under `/api/v1` with its OpenAPI
//! document, the grid gateway's gRPC routes, and the web frontend for every other path.
//!
//! The API's routes and its OpenAPI document come from the same table ([`api_routes`]): a
//! route cannot exist undocumented, and the authorisation tests walk the document.

mod app_output;
mod apps;
mod auth;
mod docs;
mod excel;
mod extract;
mod metrics;
mod rate;
mod teams;
#[cfg(test)]
mod tests;
mod topics;
mod versions;
mod web;

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode, routing::get};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) use auth::SignInLimiter;
pub(crate) use metrics::HttpMetrics;
pub(crate) use rate::RequestRate;

use crate::{Error, Result, ServerState, error::problem};

/// Request bodies beyond this get 413 (code itself is limited to 256 KiB).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "AeroGrid API",
        description = "Teams, apps, versions, lifecycle and logs of AeroGrid. Errors are \
                       `application/problem+json` (RFC 9457). Authenticate with \
                       `Authorization: Bearer <token>` or a browser session; cookie-authenticated \
                       writes send the session's `X-CSRF-Token`."
    ),
    tags(
        (name = "auth", description = "Users, sign-in and sessions"),
        (name = "teams", description = "Teams, members, tokens and the audit log"),
        (name = "apps", description = "Apps, their lifecycle, status and logs"),
        (name = "versions", description = "Saved versions: list, read, compare, roll back"),
    )
)]
struct ApiDoc;

/// The REST API and its OpenAPI document, from one table.
pub(crate) fn api_routes() -> OpenApiRouter<ServerState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::me))
        .routes(routes!(auth::set_password))
        .routes(routes!(auth::my_tokens))
        .routes(routes!(auth::revoke_my_token))
        .routes(routes!(auth::sign_in))
        .routes(routes!(auth::sign_out))
        .routes(routes!(auth::create_user))
        .routes(routes!(teams::create_team, teams::list_teams))
        .routes(routes!(teams::get_team, teams::change_team))
        .routes(routes!(teams::list_members))
        .routes(routes!(teams::set_member, teams::remove_member))
        .routes(routes!(teams::create_token, teams::list_tokens))
        .routes(routes!(teams::revoke_token))
        .routes(routes!(teams::shared_grids))
        .routes(routes!(teams::audit_log))
        .routes(routes!(topics::list_grants))
        .routes(routes!(topics::grant_topic, topics::revoke_topic))
        .routes(routes!(apps::list_apps, apps::create_app))
        .routes(routes!(apps::get_app, apps::save_app, apps::change_app, apps::delete_app))
        .routes(routes!(apps::start_app))
        .routes(routes!(apps::stop_app))
        .routes(routes!(apps::restart_app))
        .routes(routes!(apps::app_status))
        .routes(routes!(app_output::app_logs))
        .routes(routes!(app_output::follow_logs))
        .routes(routes!(app_output::bad_records))
        .routes(routes!(versions::list_versions))
        .routes(routes!(versions::get_version))
        .routes(routes!(versions::diff_versions))
        .routes(routes!(versions::rollback))
        .routes(routes!(apps::list_shares))
        .routes(routes!(apps::share_grid, apps::unshare_grid))
        .routes(routes!(apps::validate_code))
}

/// The OpenAPI document of the REST API, paths under `/api/v1`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = api_routes().split_for_parts();
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths =
        paths.into_iter().map(|(path, item)| (format!("/api/v1{path}"), item)).collect();
    utoipa::Modify::modify(&Conventions, &mut api);
    api
}

/// Everything on the port: the REST API, health and metrics, the Excel add-in's files, `grpc`
/// (the gateway's routes) and the web frontend, behind the per-address rate and the request
/// metrics.
pub(crate) fn router(state: ServerState, grpc: Router<ServerState>) -> Router {
    tokio::spawn(crate::access::watch_changes(
        state.db().clone(),
        state.inner.access_generation.clone(),
    ));
    let (api, _) = api_routes().split_for_parts();
    let document = std::sync::Arc::new(openapi());
    let api = api
        .route("/auth/link", get(auth::redeem_login_link))
        .merge(docs::router(document))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such API route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .route("/healthz", get(crate::health::healthz))
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .merge(grpc)
        .merge(excel::router(&state))
        .fallback_service(web::service(&state))
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate::limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of one request. `team`, `app` and `user` are filled in once known
/// ([`auth::Caller::in_team`]), so every log line of the request carries them.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        user = tracing::field::Empty,
        team = tracing::field::Empty,
        app = tracing::field::Empty,
    )
}

/// Names of users, teams, apps and grids: they appear in URLs and in `team/app/grid`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "`{name}` is not a valid {what} name: 1 to 64 letters, digits, `_`, `-` or `.`, starting with a letter or digit"
        )))
    }
}

/// A page size: `default` when absent, refused beyond `max`.
pub(crate) fn limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64> {
    match requested {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(Error::BadRequest(format!("limit is 1 to {max}, not {limit}"))),
    }
}

/// What every operation shares: the security schemes, the default of bearer or session, and
/// the problem responses any route can give.
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder,
            security::{
                ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement,
                SecurityScheme,
            },
        };
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("aerogrid_session"))),
        );
        api.security = Some(vec![
            SecurityRequirement::new::<_, _, &str>("bearer", []),
            SecurityRequirement::new::<_, _, &str>("session", []),
        ]);
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                )
                .build()
        };
        let standard = [
            ("400", "The request is malformed"),
            ("401", "Missing, unknown or expired credentials"),
            ("403", "The caller's role or token scope does not allow this"),
            ("404", "No such team, app or version (or the caller is not in the team)"),
            ("413", "The body or the code is too large"),
            ("500", "Internal error"),
        ];
        for item in api.paths.paths.values_mut() {
            for operation in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
                    .into_iter()
                    .flatten()
            {
                for (status, description) in standard {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description).into());
                }
            }
        }
        use utoipa::{PartialSchema, ToSchema};
        components
            .schemas
            .insert(aerogrid_api::Problem::name().into_owned(), aerogrid_api::Problem::schema());
    }
}
