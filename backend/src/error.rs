use aerogrid_api::Problem;
use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with. Internal details are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a name taken, a stale version).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well formed, but beyond what the caller may ask for (a quota's per-app limit).
    #[error("{0}")]
    Unprocessable(String),
    /// Code that cannot run, with what is wrong in it.
    #[error("{message}")]
    Invalid { message: String, diagnostics: Vec<crate::validate::Diagnostic> },
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_seconds: u64 },
    /// The server has no room for the request now (its bounded work queues are full).
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A server setting that cannot work (a bad certificate, say): found at startup.
    #[error("{0}")]
    Config(String),
    /// Something of the server's own failed while serving (hashing a password, making a
    /// broker client): logged, answered 500.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } | Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Migration(_) | Self::Config(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() && !matches!(self, Self::Unavailable(_)) {
            tracing::error!(error = %self, "Request failed.");
            "internal error; the server log has the details".to_owned()
        } else {
            self.to_string()
        };
        match self {
            Self::Invalid { diagnostics, .. } => problem_of(status, &detail, Some(diagnostics)),
            Self::TooManyRequests { retry_after_seconds, .. } => {
                let mut response = problem(status, &detail);
                response.headers_mut().insert(header::RETRY_AFTER, retry_after_seconds.into());
                response
            }
            _ => problem(status, &detail),
        }
    }
}

/// An RFC 9457 problem document (`aerogrid_api::Problem`).
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    problem_of(status, detail, None)
}

fn problem_of(
    status: StatusCode,
    detail: &str,
    diagnostics: Option<Vec<crate::validate::Diagnostic>>,
) -> Response {
    let body = Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        diagnostics,
    };
    let json = serde_json::to_string(&body).expect("a problem serialises");
    (status, [(header::CONTENT_TYPE, "application/problem+json")], json).into_response()
}
