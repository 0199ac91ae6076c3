//! The back-office API under `/api`, served on its own listener (`TIDEGATE_ADMIN_ADDR`) only
//! when `TIDEGATE_ADMIN_TOKEN` is set. Every request needs `Authorization: Bearer <token>`,
//! compared in constant time; there are no cookies, so no CSRF surface. Inputs are validated
//! into 4xx answers with a message; answers never carry connection strings or secrets.
//!
//! So far: the queue (counts per state, paused; pause, resume; jobs by state, paged; one job in
//! full) and runs (list by date, one run, start one for a date, optionally purging that date's
//! results first).

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::queue::{JobState, Queue};
use crate::runs::Runs;
use crate::schedule::Planner;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub token: String,
    pub queue: Queue,
    pub runs: Runs,
    pub planner: Planner,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/queues", get(queues))
        .route("/api/queues/{name}/pause", post(pause))
        .route("/api/queues/{name}/resume", post(resume))
        .route("/api/queues/{name}/jobs", get(jobs))
        .route("/api/queues/{name}/jobs/{id}", get(job))
        .route("/api/runs", get(runs).post(start_run))
        .route("/api/runs/{id}", get(run))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// A 4xx or 5xx answer with a message, as JSON.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Dependencies failing is the server's trouble, but their errors can name hosts: the answer
/// says only what failed; the log has the rest.
fn unavailable(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "admin API: {what} failed");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} failed; see tidegate's log"),
    )
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(state.token.as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response()
    }
}

fn known_queue(state: &AdminState, name: &str) -> Result<(), ApiError> {
    if name == state.queue.name() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no queue {name:?}; this tidegate works {:?}",
                state.queue.name()
            ),
        ))
    }
}

async fn queues(State(state): State<AdminState>) -> Result<impl IntoResponse, ApiError> {
    let counts = state
        .queue
        .counts()
        .await
        .map_err(|e| unavailable("reading the queue", e))?;
    let paused = state
        .queue
        .is_paused()
        .await
        .map_err(|e| unavailable("reading the queue", e))?;
    Ok(Json(
        json!([{ "name": state.queue.name(), "paused": paused, "counts": counts }]),
    ))
}

async fn pause(
    state: State<AdminState>,
    name: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_paused(state, name, true).await
}

async fn resume(
    state: State<AdminState>,
    name: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_paused(state, name, false).await
}

async fn set_paused(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    paused: bool,
) -> Result<impl IntoResponse, ApiError> {
    known_queue(&state, &name)?;
    let done = if paused {
        state.queue.pause().await
    } else {
        state.queue.resume().await
    };
    done.map_err(|e| {
        unavailable(
            if paused {
                "pausing the queue"
            } else {
                "resuming the queue"
            },
            e,
        )
    })?;
    Ok(Json(json!({ "name": name, "paused": paused })))
}

/// Most jobs one page may hold.
const MAX_PAGE_SIZE: usize = 500;

#[derive(Deserialize)]
struct JobsQuery {
    state: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

fn number_in(
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

async fn jobs(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(query): Query<JobsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    known_queue(&state, &name)?;
    let Some(job_state) = query.state else {
        return Err(bad_request(
            "give a state: ?state=failed (or waiting, paused, prioritized, active, delayed, completed)",
        ));
    };
    let job_state: JobState = job_state.parse().map_err(bad_request)?;
    let page = number_in("page", query.page.as_deref(), 1, 1_000_000)?;
    let size = number_in("size", query.size.as_deref(), 50, MAX_PAGE_SIZE)?;
    let (total, jobs) = state
        .queue
        .jobs(job_state, (page - 1) * size, size)
        .await
        .map_err(|e| unavailable("reading jobs", e))?;
    Ok(Json(
        json!({ "total": total, "page": page, "size": size, "jobs": jobs }),
    ))
}

async fn job(
    State(state): State<AdminState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    known_queue(&state, &name)?;
    if id.is_empty() || id.len() > 256 || id.contains(':') {
        return Err(bad_request(format!(
            "{id:?} is not a job id (1-256 characters, no ':')"
        )));
    }
    match state.queue.job(&id).await {
        Ok(Some(job)) => Ok(Json(job)),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id:?}"))),
        Err(e) => Err(unavailable("reading the job", e)),
    }
}

fn parse_date(text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| bad_request(format!("{text:?} is not a date: use YYYY-MM-DD")))
}

#[derive(Deserialize)]
struct RunsQuery {
    date: Option<String>,
}

async fn runs(
    State(state): State<AdminState>,
    Query(query): Query<RunsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(date) = query.date else {
        return Err(bad_request("give a date: /api/runs?date=YYYY-MM-DD"));
    };
    let date = parse_date(&date)?;
    let runs = state
        .runs
        .on_date(&date.to_string())
        .await
        .map_err(|e| unavailable("reading runs", e))?;
    Ok(Json(runs))
}

async fn run(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Run ids are `<date>-r<n>`: anything else cannot exist.
    let valid = id
        .split_once("-r")
        .is_some_and(|(date, n)| parse_date(date).is_ok() && n.parse::<u64>().is_ok());
    if !valid {
        return Err(bad_request(format!(
            "{id:?} is not a run id (YYYY-MM-DD-r<n>)"
        )));
    }
    match state.runs.get(&id).await {
        Ok(Some(run)) => Ok(Json(run)),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}"))),
        Err(e) => Err(unavailable("reading the run", e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    date: String,
    #[serde(default)]
    purge: bool,
}

async fn start_run(
    State(state): State<AdminState>,
    body: Result<Json<StartRun>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(|e| bad_request(format!("body: {}", e.body_text())))?;
    let date = parse_date(&body.date)?;
    let run = state
        .planner
        .plan(date, "admin", body.purge)
        .await
        .map_err(|e| unavailable("planning the run", e))?;
    Ok((StatusCode::CREATED, Json(run)))
}
