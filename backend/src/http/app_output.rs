//! What apps print and refuse: their logs (recent, and followed live as server-sent events)
//! and their bad records.

use std::{convert::Infallible, time::Duration};

use aerogrid_api::{BadRecord, LimitQuery, LogLine, LogQuery};
use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};

use super::{
    auth::{Caller, Need},
    extract::{ApiPath, ApiQuery},
};
use crate::{Error, Result, ServerState, db::apps};

use super::apps::{AppPath, find_app};

/// How often a followed log looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The app's log, oldest first: the newest lines, or those after `?after=`.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/logs", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), LogQuery),
    responses((status = 200, body = Vec<LogLine>)))]
pub(crate) async fn app_logs(
    State(state): State<ServerState>,
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
    State(state): State<ServerState>,
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
    state: ServerState,
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

/// The newest records the app could not process, with the reason and the raw message.
#[utoipa::path(get, path = "/teams/{team}/apps/{app}/bad-records", tag = "apps",
    params(("team" = String, Path), ("app" = String, Path), LimitQuery),
    responses((status = 200, body = Vec<BadRecord>)))]
pub(crate) async fn bad_records(
    State(state): State<ServerState>,
    caller: Caller,
    ApiPath((team, app)): AppPath,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<BadRecord>>> {
    let (_, app) = find_app(&state, &caller, &team, &app, Need::Read).await?;
    let limit = super::limit(query.limit, 100, 1000)?;
    Ok(Json(apps::bad_records(state.db(), app.id, limit).await?))
}
