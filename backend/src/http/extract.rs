//! axum's extractors with rejections as problem documents (axum's own answer in plain text).

use axum::extract::{
    FromRequest, FromRequestParts,
    rejection::{JsonRejection, PathRejection, QueryRejection},
};

use crate::Error;

/// A JSON body. Bodies beyond the router's limit get 413; malformed ones 400. Text with NUL
/// characters is refused too: PostgreSQL cannot store it (and no name or code needs it).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Error> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        if has_nul(&value) {
            return Err(Error::BadRequest(
                "text in the body may not contain NUL characters".into(),
            ));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|error| {
            Error::BadRequest(format!("the request body is not what this route takes: {error}"))
        })
    }
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(fields) => {
            fields.iter().any(|(key, value)| key.contains('\0') || has_nul(value))
        }
        _ => false,
    }
}

/// Path parameters; a NUL character in the path is refused (names never hold one).
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        if parts.uri.path().contains("%00") {
            return Err(Error::BadRequest("the path may not contain NUL characters".into()));
        }
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = rejection.body_text();
        match status.as_u16() {
            413 => Self::PayloadTooLarge(format!(
                "the request body is larger than {} KiB",
                super::MAX_BODY_BYTES / 1024
            )),
            415 => Self::BadRequest(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            _ => {
                Self::BadRequest(format!("the request body is not what this route takes: {detail}"))
            }
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("bad path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("bad query string: {}", rejection.body_text()))
    }
}
