//! axum's extractors with rejections as problem documents (axum's own answer in plain text).

use axum::extract::{
    FromRequest, FromRequestParts,
    rejection::{JsonRejection, PathRejection, QueryRejection},
};

use crate::Error;

/// A JSON body. Bodies beyond the router's limit get 413; malformed ones 400 or 422.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub(crate) struct ApiJson<T>(pub(crate) T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub(crate) struct ApiPath<T>(pub(crate) T);

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
