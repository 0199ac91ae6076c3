//! What the API answers when a request is wrong or a dependency fails, and the extractors and
//! checks that turn every bad input into such an answer (a 4xx with a message) before a handler
//! runs.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use crate::queue::keys;

/// A 4xx or 5xx answer with a message, as JSON.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub(super) struct ErrorBody {
    pub(super) error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(super) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

pub(super) fn conflict(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, message.into())
}

/// Dependencies failing is the server's trouble, but their errors can name hosts: the answer
/// says only what failed; the log has the rest.
pub(super) fn unavailable(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "admin API: {what} failed");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} failed; see tidegate's log"),
    )
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        bad_request(format!("path: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        bad_request(format!("query: {}", e.body_text()))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        bad_request(format!("body: {}", e.body_text()))
    }
}

/// Axum's extractors, with their rejections answered as [`ApiError`]s (JSON, 400).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct ApiPath<T>(pub(super) T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct ApiQuery<T>(pub(super) T);

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub(super) T);

pub(super) fn known_queue(state: &AdminState, name: &str) -> Result<(), ApiError> {
    if name == state.queue.name() {
        Ok(())
    } else {
        Err(not_found(format!(
            "no queue {name:?}; this tidegate works {:?}",
            state.queue.name()
        )))
    }
}

/// Job ids are BullMQ's: numbers, or a producer's own id; a ':' would reach into other keys.
/// The names of the queue's own keys (`meta`, `wait`, `id`, ...) are well-formed but never a
/// job's: no such job, answered before anything reads or deletes that key.
pub(super) fn valid_job_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() || id.chars().count() > 256 || id.contains(':') {
        Err(bad_request(format!(
            "{id:?} is not a job id (1-256 characters, no ':')"
        )))
    } else if keys::is_reserved(id) {
        Err(not_found(format!(
            "no job {id:?}: that is the name of one of the queue's own keys, never a job's"
        )))
    } else {
        Ok(id)
    }
}

pub(super) fn number_in(
    name: &str,
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = text else { return Ok(default) };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad_request(format!(
            "{name} {text:?} is not a whole number from 1 to {max}"
        ))),
    }
}
