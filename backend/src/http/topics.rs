//! Topic grants: which Kafka topics a team's apps may read beyond its own namespace.

use aerogrid_api::TopicGrant;
use axum::{Json, extract::State, http::StatusCode};

use super::{
    auth::{Caller, Need},
    extract::ApiPath,
};
use crate::{Error, Result, ServerState, db::topics};

/// The team's topic grants (any member). Its apps may read these topics and its own namespace
/// `<team>.*`; never the platform's (`aerogrid.*`).
#[utoipa::path(get, path = "/teams/{team}/topics", tag = "teams",
    params(("team" = String, Path)), responses((status = 200, body = Vec<TopicGrant>)))]
pub(crate) async fn list_grants(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<TopicGrant>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(topics::grants(state.db(), team.id).await?))
}

/// Grants the team a topic, or every topic of a prefix ending in `*` (administrators only).
#[utoipa::path(put, path = "/teams/{team}/topics/{pattern}", tag = "teams",
    params(("team" = String, Path),
           ("pattern" = String, Path, description = "A topic name, or a prefix ending in `*` (`sales.*`)")),
    responses((status = 200, body = TopicGrant)))]
pub(crate) async fn grant_topic(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, pattern)): ApiPath<(String, String)>,
) -> Result<Json<TopicGrant>> {
    caller.require_admin()?;
    let team = caller.in_team(&state, &team, Need::Own).await?;
    aerogrid_policy::topics::check_grant_pattern(&pattern).map_err(Error::BadRequest)?;
    Ok(Json(topics::grant(state.db(), team.id, &pattern, caller.actor()).await?))
}

/// Revokes a grant (administrators only): within seconds the team's apps that read a topic it
/// covered fail with that reason, and their grids' streams end.
#[utoipa::path(delete, path = "/teams/{team}/topics/{pattern}", tag = "teams",
    params(("team" = String, Path), ("pattern" = String, Path)),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke_topic(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, pattern)): ApiPath<(String, String)>,
) -> Result<StatusCode> {
    caller.require_admin()?;
    let team = caller.in_team(&state, &team, Need::Own).await?;
    if !topics::revoke(state.db(), team.id, &pattern, caller.actor()).await? {
        return Err(Error::NotFound(format!("team `{}` has no grant `{pattern}`", team.name)));
    }
    Ok(StatusCode::NO_CONTENT)
}
