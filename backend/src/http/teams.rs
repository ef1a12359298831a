//! Teams, members, API tokens, grids shared with a team, and the audit log.

use aerogrid_api::{
    AuditEvent, AuditQuery, ChangeTeam, Member, MemberRole, NewTeam, NewToken, Role, Scope,
    SharedGrid, Team, TeamDetail, Token, TokenCreated,
};
use axum::{Json, extract::State, http::StatusCode};
use uuid::Uuid;

use super::{
    auth::{Caller, Need},
    extract::{ApiJson, ApiPath, ApiQuery},
};
use crate::{
    Error, Result, ServerState,
    db::{quotas, teams},
    identity::Credential,
    secret,
};

/// Creates a team; the caller becomes its owner.
#[utoipa::path(post, path = "/teams", tag = "teams", request_body = NewTeam,
    responses((status = 201, body = Team), (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_team(
    State(state): State<ServerState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewTeam>,
) -> Result<(StatusCode, Json<Team>)> {
    if matches!(caller.0.credential, Credential::Token { team: Some(_), .. }) {
        return Err(Error::Forbidden(
            "a token of one team cannot create teams: use a session or a personal token".into(),
        ));
    }
    if matches!(caller.0.credential, Credential::Token { scope: Scope::Read, .. }) {
        return Err(Error::Forbidden("a read-only token cannot create teams".into()));
    }
    super::check_name("team", &body.name)?;
    check_team_name(&body.name)?;
    check_namespace_is_free(&state, &caller, &body.name).await?;
    let team = teams::create(state.db(), &body.name, caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(team)))
}

/// A team's name begins its topic namespace (`<team>.*`): a dot in it would put one team's
/// namespace inside another's (`a.*` holds `a.b.*`), and the platform's prefix is its own.
fn check_team_name(name: &str) -> Result<()> {
    if name.contains('.') {
        return Err(Error::BadRequest(format!(
            "`{name}` is not a valid team name: it may not contain `.` (the team's topics are named `{}.<topic>`)",
            name.replace('.', "-")
        )));
    }
    if aerogrid_policy::topics::is_platform_topic(&format!("{name}.")) {
        return Err(Error::BadRequest(format!("`{name}` is reserved for the platform")));
    }
    Ok(())
}

/// A new team reads `<team>.*` without a grant: its name may not claim topics granted to
/// another team, nor (unless an administrator creates it) topics that exist already. Users
/// other than administrators own a bounded number of teams.
async fn check_namespace_is_free(state: &ServerState, caller: &Caller, name: &str) -> Result<()> {
    if crate::db::topics::namespace_is_granted(state.db(), name).await? {
        return Err(Error::Conflict(format!(
            "topics of `{name}.*` are granted to a team already: a new team cannot take that namespace; choose another name"
        )));
    }
    if caller.0.is_admin() {
        return Ok(());
    }
    let owned = teams::owned_by(state.db(), caller.user().id).await?;
    if owned >= i64::from(state.quotas().teams_per_user) {
        return Err(Error::Conflict(format!(
            "you own {owned} teams, as many as a user may: an administrator can create more"
        )));
    }
    let topics = state.inner.kafka.prober().map_err(|error| Error::Internal(error.to_string()))?;
    let topics = topics
        .topic_names(std::time::Duration::from_secs(5))
        .await
        .map_err(|error| Error::Internal(format!("cannot list the broker's topics: {error}")))?;
    let namespace = format!("{name}.");
    if topics.iter().any(|topic| topic.starts_with(&namespace)) {
        return Err(Error::Conflict(format!(
            "topics named `{name}.*` exist already: a new team cannot take their namespace; an administrator can create the team"
        )));
    }
    Ok(())
}

/// The caller's teams and their role in each (an administrator sees every team).
#[utoipa::path(get, path = "/teams", tag = "teams", responses((status = 200, body = Vec<Team>)))]
pub(crate) async fn list_teams(
    State(state): State<ServerState>,
    caller: Caller,
) -> Result<Json<Vec<Team>>> {
    let mut teams = teams::list(state.db(), caller.user().id, caller.0.is_admin()).await?;
    if let Some(only) = caller.0.token_team() {
        teams.retain(|team| team.id == only);
    }
    Ok(Json(teams))
}

async fn team_detail(state: &ServerState, team: super::auth::TeamAccess) -> Result<TeamDetail> {
    let quotas = quotas::quotas(state.db(), team.id, state.quotas()).await?;
    let usage = quotas::usage(state.db(), team.id, state.quotas()).await?;
    let created_at = teams::created_at(state.db(), team.id).await?;
    Ok(TeamDetail {
        namespace: format!("{}.*", team.name),
        team: Team { id: team.id, name: team.name, role: team.role, created_at },
        quotas,
        usage,
    })
}

/// The team, its quotas and usage (any member).
#[utoipa::path(get, path = "/teams/{team}", tag = "teams",
    params(("team" = String, Path)), responses((status = 200, body = TeamDetail)))]
pub(crate) async fn get_team(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<TeamDetail>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(team_detail(&state, team).await?))
}

/// Sets the team's quotas (administrators only). Apps already running keep running; the next
/// Create or Start beyond a quota is refused.
#[utoipa::path(patch, path = "/teams/{team}", tag = "teams",
    params(("team" = String, Path)), request_body = ChangeTeam,
    responses((status = 200, body = TeamDetail)))]
pub(crate) async fn change_team(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(body): ApiJson<ChangeTeam>,
) -> Result<Json<TeamDetail>> {
    caller.require_admin()?;
    let team = caller.in_team(&state, &team, Need::Own).await?;
    quotas::check(&body.quotas)?;
    quotas::set_quotas(state.db(), team.id, body.quotas, caller.actor()).await?;
    Ok(Json(team_detail(&state, team).await?))
}

/// The team's members and their roles.
#[utoipa::path(get, path = "/teams/{team}/members", tag = "teams",
    params(("team" = String, Path)), responses((status = 200, body = Vec<Member>)))]
pub(crate) async fn list_members(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<Member>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(teams::members(state.db(), team.id).await?))
}

/// Adds a user to the team, or changes their role (owners only; a team keeps an owner).
#[utoipa::path(put, path = "/teams/{team}/members/{user}", tag = "teams",
    params(("team" = String, Path), ("user" = String, Path)), request_body = MemberRole,
    responses((status = 200, body = Member), (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn set_member(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, user)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<MemberRole>,
) -> Result<Json<Member>> {
    let team = caller.in_team(&state, &team, Need::Own).await?;
    let member = teams::set_member(state.db(), team.id, &user, body.role, caller.actor()).await?;
    Ok(Json(member))
}

/// Removes a user from the team (owners only; a team keeps an owner).
#[utoipa::path(delete, path = "/teams/{team}/members/{user}", tag = "teams",
    params(("team" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 409, body = aerogrid_api::Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove_member(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, user)): ApiPath<(String, String)>,
) -> Result<StatusCode> {
    let team = caller.in_team(&state, &team, Need::Own).await?;
    if !teams::remove_member(state.db(), team.id, &user, caller.actor()).await? {
        return Err(Error::NotFound(format!("`{user}` is not a member of team `{}`", team.name)));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Mints an API token for the team, acting for the caller (its secret is shown once).
#[utoipa::path(post, path = "/teams/{team}/tokens", tag = "teams",
    params(("team" = String, Path)), request_body = NewToken,
    responses((status = 201, body = TokenCreated)))]
pub(crate) async fn create_token(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<TokenCreated>)> {
    // Any member may mint a token for themselves (with a session or a personal token); it can
    // never do more than they can, and a read-only token mints only read-only ones.
    let team = caller.in_team(&state, &team, Need::Read).await?;
    // A leaked token must not mint others that outlive its revocation.
    if matches!(caller.0.credential, Credential::Token { team: Some(_), .. }) {
        return Err(Error::Forbidden(
            "a token of one team cannot mint tokens: use a session or a personal token".into(),
        ));
    }
    if matches!(caller.0.credential, Credential::Token { scope: Scope::Read, .. })
        && body.scope == Scope::Manage
    {
        return Err(Error::Forbidden("a read-only token can only mint read-only tokens".into()));
    }
    let scope = body.scope;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::BadRequest("a token's name is 1 to 200 bytes".into()));
    }
    let token = secret::generate(secret::API_TOKEN_PREFIX);
    let (id, created_at) = teams::insert_token(
        state.db(),
        caller.user().id,
        team.id,
        name,
        scope,
        &secret::digest(&token),
        caller.actor(),
    )
    .await?;
    let created = TokenCreated { id, name: name.to_owned(), scope, token, created_at };
    Ok((StatusCode::CREATED, Json(created)))
}

/// The team's live tokens: the caller's own, or every member's for owners.
#[utoipa::path(get, path = "/teams/{team}/tokens", tag = "teams",
    params(("team" = String, Path)), responses((status = 200, body = Vec<Token>)))]
pub(crate) async fn list_tokens(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<Token>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    let only = (team.role < Role::Owner).then_some(caller.user().id);
    Ok(Json(teams::tokens(state.db(), team.id, only).await?))
}

/// Revokes a token: the caller's own, or any of the team's for owners.
#[utoipa::path(delete, path = "/teams/{team}/tokens/{id}", tag = "teams",
    params(("team" = String, Path), ("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke_token(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, id)): ApiPath<(String, Uuid)>,
) -> Result<StatusCode> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    if matches!(caller.0.credential, Credential::Token { scope: Scope::Read, .. }) {
        return Err(Error::Forbidden("a read-only token cannot revoke tokens".into()));
    }
    let only = (team.role < Role::Owner).then_some(caller.user().id);
    teams::revoke_token(state.db(), team.id, id, only, caller.actor())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no live token {id} of yours in this team")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Grids other teams share with this team (read-only).
#[utoipa::path(get, path = "/teams/{team}/shared-grids", tag = "teams",
    params(("team" = String, Path)), responses((status = 200, body = Vec<SharedGrid>)))]
pub(crate) async fn shared_grids(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Vec<SharedGrid>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    Ok(Json(teams::shared_with(state.db(), team.id).await?))
}

/// Who did what in the team, newest first.
#[utoipa::path(get, path = "/teams/{team}/audit", tag = "teams",
    params(("team" = String, Path), AuditQuery), responses((status = 200, body = Vec<AuditEvent>)))]
pub(crate) async fn audit_log(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEvent>>> {
    let team = caller.in_team(&state, &team, Need::Read).await?;
    let limit = super::limit(query.limit, 100, 1000)?;
    Ok(Json(teams::audit_log(state.db(), team.id, query.before, limit).await?))
}
