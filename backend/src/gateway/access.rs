//! Who may read a grid: checked when a call opens, and again for an open stream whenever access
//! may have shrunk (`crate::access`).

use aerogrid_proto::v1::GridRef;
use axum::http::HeaderMap;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::Status;
use uuid::Uuid;

use super::internal;
use crate::{
    ServerState,
    access::SharedChecks,
    db::{accounts, grids},
};

/// Who reads grids: the user, and the team their token is limited to.
pub(super) struct Reader {
    pub(super) user: accounts::User,
    pub(super) token_team: Option<Uuid>,
}

pub(super) async fn authenticate(
    state: &ServerState,
    credentials: &HeaderMap,
) -> Result<Reader, Denied> {
    let identity = crate::identity::authenticate(state.db(), credentials).await.map_err(
        |error| match error {
            crate::Error::Unauthenticated(message) => Denied::Unauthenticated(message),
            other => Denied::Internal(internal(other)),
        },
    )?;
    Ok(Reader { token_team: identity.token_team(), user: identity.user })
}

/// A caller allowed to read a grid.
pub(super) struct Allowed {
    pub(super) app: grids::AppRef,
    /// A member of the app's team or an administrator, not only a reader of a shared grid.
    pub(super) whole_app: bool,
    pub(super) user: String,
}

/// Why a caller may not read a grid.
pub(super) enum Denied {
    Unauthenticated(String),
    /// No such app or grid, or not the caller's: told apart to nobody.
    Hidden,
    /// No such app (any more): as `Hidden` to a new call; an open stream, whose caller could
    /// read it, learns it was deleted (as the stop notification would tell it).
    Gone,
    /// The grid's app reads a topic its team may no longer read.
    Topic(String),
    Invalid(&'static str),
    Internal(Status),
}

impl Denied {
    /// The status of a call that asks for the grid.
    pub(super) fn on_open(self) -> Status {
        match self {
            Self::Hidden | Self::Gone => Status::not_found(NOT_READABLE),
            other => other.status(),
        }
    }

    /// The status an open stream ends with once its caller may no longer read.
    pub(super) fn on_stream(self) -> Status {
        match self {
            Self::Hidden => Status::permission_denied(
                "access to this grid was withdrawn (the token's team, the membership or the share is gone)",
            ),
            Self::Gone => Status::not_found("the app was deleted"),
            other => other.status(),
        }
    }

    pub(super) fn status(self) -> Status {
        match self {
            Self::Unauthenticated(message) => Status::unauthenticated(message),
            Self::Hidden | Self::Gone => Status::not_found(NOT_READABLE),
            Self::Topic(message) => Status::permission_denied(message),
            Self::Invalid(message) => Status::invalid_argument(message),
            Self::Internal(status) => status,
        }
    }
}

/// The one answer for "no such app or grid" and "not yours", as REST's 404.
const NOT_READABLE: &str = "there is no such grid, or you may not read it";

/// Authenticates `credentials` and checks that they may read `grid` now.
pub(super) async fn allow(
    state: &ServerState,
    credentials: &HeaderMap,
    grid: &GridRef,
) -> Result<Allowed, Denied> {
    if [&grid.team, &grid.app, &grid.grid].iter().any(|name| name.contains('\0')) {
        return Err(Denied::Invalid("names may not contain NUL characters"));
    }
    let caller = authenticate(state, credentials).await?;
    let db = state.db();
    let found = grids::find_app(db, &grid.team, &grid.app)
        .await
        .map_err(|error| Denied::Internal(internal(error)))?
        .ok_or(Denied::Gone)?;
    let admin = caller.user.is_admin && caller.token_team.is_none();
    let readable = if admin {
        grids::Readable::WholeApp
    } else {
        grids::may_read(db, found, &grid.grid, caller.user.id, caller.token_team)
            .await
            .map_err(|error| Denied::Internal(internal(error)))?
    };
    if readable == grids::Readable::No {
        return Err(Denied::Hidden);
    }
    let inputs = grids::app_inputs(db, found.app_id)
        .await
        .map_err(|error| Denied::Internal(internal(error)))?;
    for topic in &inputs.topics {
        if let Err(refusal) =
            aerogrid_policy::topics::check_topic(&inputs.team, &inputs.grants, topic)
        {
            // Readers of a shared grid learn nothing of the owning team's topics.
            return Err(Denied::Topic(if readable == grids::Readable::WholeApp {
                format!("the app's grids are not served: {refusal} (it reads that topic)")
            } else {
                "the app's grids are not served: its team may no longer read one of its topics"
                    .to_owned()
            }));
        }
    }
    Ok(Allowed {
        app: found,
        whole_app: readable == grids::Readable::WholeApp,
        user: caller.user.name,
    })
}

/// What a stream checks again whenever access may have shrunk (see [`crate::access`]).
pub(super) struct StreamAccess {
    pub(super) state: ServerState,
    pub(super) checks: Arc<SharedChecks<Result<(), Status>>>,
    /// The call's credential headers.
    pub(super) credentials: HeaderMap,
    pub(super) grid: GridRef,
    /// The app and grid, as the shared checks' key.
    pub(super) target: String,
    pub(super) generation: watch::Receiver<u64>,
}

impl StreamAccess {
    pub(super) async fn still_allowed(&mut self) -> Result<(), Status> {
        let generation = *self.generation.borrow_and_update();
        let (state, credentials, grid) = (&self.state, &self.credentials, &self.grid);
        self.checks
            .check(generation, credentials, &self.target, || async move {
                allow(state, credentials, grid).await.map(|_| ()).map_err(Denied::on_stream)
            })
            .await
    }
}

#[cfg(test)]
/// An access check that never runs (no access change is announced in these tests).
pub(super) fn unchecked_access() -> StreamAccess {
    let db = sqlx::PgPool::connect_lazy("postgres://localhost/unused").expect("a URL");
    let server = crate::ServerArgs {
        web_dir: None,
        public_url: None,
        cors_origins: Vec::new(),
        tls_cert: None,
        tls_key: None,
        quotas: crate::QuotaDefaults {
            apps: 1,
            running_apps: 1,
            app_memory_mib: 1,
            total_memory_mib: 1,
            default_app_memory_mib: 1,
            teams_per_user: 1,
            versions_per_app: 1,
        },
        trusted_proxies: Vec::new(),
        connections: crate::ConnectionLimits {
            max_connections: 1,
            max_connections_per_address: 1,
            header_timeout_seconds: 1.0,
            keepalive_seconds: 1.0,
            requests_per_second_per_address: 1.0,
            request_burst_per_address: 1.0,
        },
        gateway: crate::config::GatewayLimits {
            feed_buffer_mib: 1,
            unread_mib_per_caller: 1,
            unread_mib: 1,
            max_request_kib: 1,
        },
    };
    let packages = aerogrid_packages::PythonArgs::default().settings(None);
    let state =
        ServerState::new(db, aerogrid_kafka::KafkaSettings::new("localhost:1"), &server, packages)
            .expect("plain settings");
    StreamAccess {
        generation: state.inner.access_generation.subscribe(),
        state,
        checks: Arc::default(),
        credentials: HeaderMap::new(),
        grid: GridRef::default(),
        target: String::new(),
    }
}
