//! The back-office: a JSON API under `/api`, its OpenAPI document (`/api/openapi.json`) and the
//! web page (`/`), served on their own listener (`TIDEGATE_ADMIN_ADDR`) only when
//! `TIDEGATE_ADMIN_TOKEN` is set. Every API request needs `Authorization: Bearer <token>`,
//! compared in constant time; there are no cookies, so no CSRF surface. Inputs are validated
//! into 4xx answers with a message; answers never carry connection strings or secrets. The
//! page and the document hold no data, so they are served to anyone who can reach the port.
//! Every change made through it is logged at info, as an audit trail.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::budget::{self, Status};
use crate::queue::keys::{self, BudgetKeys};
use crate::queue::{Counts, JobState, JobView, Moved, Queue, Removal};
use crate::runs::{RunRecord, Runs};
use crate::schedule::{PlanError, Planner};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub token: String,
    /// The name of the database's write budget the queue shares.
    pub budget: String,
    pub queue: Queue,
    pub runs: Runs,
    pub planner: Planner,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidegate back-office",
        description = "Queues, jobs, runs and load control of a tidegate deployment. Every route needs `Authorization: Bearer <TIDEGATE_ADMIN_TOKEN>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The API's routes, each with its part of the document: one list for both.
fn api() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(queues))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(control))
        .routes(routes!(jobs))
        .routes(routes!(job, remove))
        .routes(routes!(retry))
        .routes(routes!(promote))
        .routes(routes!(retry_failed))
        .routes(routes!(runs, start_run))
        .routes(routes!(run))
}

/// The OpenAPI document `/api/openapi.json` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

pub fn router(state: AdminState) -> Router {
    let (api, doc) = api().split_for_parts();
    let doc = doc.to_pretty_json().unwrap_or_default();
    Router::new()
        .merge(api.layer(middleware::from_fn_with_state(state.clone(), authorize)))
        .route(
            "/api/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) }),
        )
        .route("/", get(page))
        .with_state(state)
        // Outermost, so that an oversized body gets its 413 whatever the route or the token.
        .layer(middleware::from_fn(limit_body))
}

/// The largest request body the API takes. Its only body (`POST /api/runs`) is a few dozen
/// bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// How much of an oversized body is read and dropped before the 413 is sent, and for how long.
/// Before, axum's own limit (2 MB) was hit inside the `Json` extractor, whose rejection this
/// API answered as a 400, and the server then closed the connection with the rest of the body
/// unread. A TCP close with unread data sends RST: a client still sending (a chunked upload;
/// curl once `100 Continue` had asked for the body) got a reset instead of the answer. Past
/// these bounds the connection is closed anyway, so that draining cannot become a way to keep
/// the server busy.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the body up to [`MAX_BODY`] before the route runs; a longer one is `413` with the
/// API's JSON error, declared (`Content-Length`) or found while reading (chunked).
async fn limit_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    if declared.is_none_or(|n| n <= MAX_BODY as u64) {
        let mut kept = Vec::new();
        loop {
            match stream.next().await {
                None => {
                    let request = Request::from_parts(parts, Body::from(kept));
                    return next.run(request).await;
                }
                Some(Ok(chunk)) => {
                    read += chunk.len() as u64;
                    if read > MAX_BODY as u64 {
                        break;
                    }
                    kept.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return bad_request(format!("body: {e}")).into_response(),
            }
        }
    }
    // A client waiting for `100 Continue` has sent nothing yet: it reads the 413 and sends
    // nothing, and reading would be what asks it to send.
    let waits = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits && declared.is_none_or(|n| n <= DRAIN_MAX) {
        let drained = async {
            while read <= DRAIN_MAX {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len() as u64,
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than the API takes ({} KiB)",
            MAX_BODY / 1024
        ),
    )
    .into_response()
}

/// The page is one file with its script and style inline: nothing to build or fetch. The
/// policy lets it talk to this origin only and not be framed.
async fn page() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(include_str!("admin.html")),
    )
}

/// A 4xx or 5xx answer with a message, as JSON.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, message.into())
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
struct ApiPath<T>(T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct ApiQuery<T>(T);

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct ApiJson<T>(T);

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
            Json(ErrorBody {
                error: "missing or wrong bearer token".into(),
            }),
        )
            .into_response()
    }
}

fn known_queue(state: &AdminState, name: &str) -> Result<(), ApiError> {
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
fn job_id(id: &str) -> Result<&str, ApiError> {
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

#[derive(Serialize, ToSchema)]
struct QueueView {
    name: String,
    paused: bool,
    counts: Counts,
}

/// The queues this tidegate works, with their jobs per state.
#[utoipa::path(get, path = "/api/queues", responses(
    (status = 200, body = Vec<QueueView>),
    (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn queues(State(state): State<AdminState>) -> Result<Json<Vec<QueueView>>, ApiError> {
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
    Ok(Json(vec![QueueView {
        name: state.queue.name().to_owned(),
        paused,
        counts,
    }]))
}

#[derive(Serialize, ToSchema)]
struct Paused {
    name: String,
    paused: bool,
}

/// Pauses a queue: workers take no more jobs until it is resumed (BullMQ's pause).
#[utoipa::path(post, path = "/api/queues/{name}/pause", params(("name" = String, Path)),
    responses((status = 200, body = Paused), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn pause(state: State<AdminState>, name: ApiPath<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, true).await
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/api/queues/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, body = Paused), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn resume(state: State<AdminState>, name: ApiPath<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, false).await
}

async fn set_paused(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    known_queue(&state, &name)?;
    let (done, what) = if paused {
        (state.queue.pause().await, "pausing the queue")
    } else {
        (state.queue.resume().await, "resuming the queue")
    };
    done.map_err(|e| unavailable(what, e))?;
    tracing::info!(queue = %name, paused, "back-office: queue {}", if paused { "paused" } else { "resumed" });
    Ok(Json(Paused { name, paused }))
}

/// The queue's load control as the database's leader last published it: the queue's pace and
/// batch size, the CPU budget and live load, the database's CPU and latencies against their
/// targets, and the signal that limits the pace.
#[utoipa::path(get, path = "/api/queues/{name}/control", params(("name" = String, Path)),
    responses((status = 200, body = Status), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn control(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Status>, ApiError> {
    known_queue(&state, &name)?;
    let keys = BudgetKeys::new(&state.budget);
    let status = budget::status(&mut state.queue.connection(), &keys, &state.budget, &name)
        .await
        .map_err(|e| unavailable("reading the load control", e))?;
    Ok(Json(status))
}

/// Most jobs one page may hold.
const MAX_PAGE_SIZE: usize = 500;

/// The document's word for job ids; handlers check them with [`job_id`].
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct JobId {
    /// BullMQ's job id: 1-256 characters, no ':'. The names of the queue's own keys (wait,
    /// paused, active, prioritized, pc, delayed, completed, failed, id, meta, events, marker,
    /// stalled, stalled-check, waiting-children, repeat, limiter, de, metrics) are never a job's
    /// (404).
    #[param(pattern = "^[^:]+$", min_length = 1, max_length = 256)]
    id: String,
}

// Numbers are read as text, so that a bad one gets this API's 400 and message.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    #[param(value_type = JobState, required = true)]
    state: Option<String>,
    /// From 1 (the default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    page: Option<String>,
    /// Jobs per page (50 by default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
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

#[derive(Serialize, ToSchema)]
struct JobPage {
    /// Jobs in the state, on every page.
    total: u64,
    page: usize,
    size: usize,
    jobs: Vec<JobView>,
}

/// One page of the jobs in a state: lists newest first, completed and failed by most recently
/// finished, delayed and prioritized by when they run.
#[utoipa::path(get, path = "/api/queues/{name}/jobs", params(("name" = String, Path), JobsQuery),
    responses((status = 200, body = JobPage, links(
        ("job" = (operation_id = "job", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/jobs/0/id")))),
        ("retry" = (operation_id = "retry", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/jobs/0/id")))),
        ("promote" = (operation_id = "promote", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/jobs/0/id")))),
        ("remove" = (operation_id = "remove", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/jobs/0/id")))))),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn jobs(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<JobPage>, ApiError> {
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
    Ok(Json(JobPage {
        total,
        page,
        size,
        jobs,
    }))
}

/// One job in full: data, options, attempts, failure and timestamps.
#[utoipa::path(get, path = "/api/queues/{name}/jobs/{id}",
    params(("name" = String, Path), JobId),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn job(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    known_queue(&state, &name)?;
    match state.queue.job(job_id(&id)?).await {
        Ok(Some(job)) => Ok(Json(job)),
        Ok(None) => Err(not_found(format!("no job {id:?}"))),
        Err(e) => Err(unavailable("reading the job", e)),
    }
}

/// A job moved out of a state.
#[derive(Serialize, ToSchema)]
struct MovedView {
    id: String,
    from: JobState,
}

impl From<&Moved> for MovedView {
    fn from(m: &Moved) -> Self {
        Self {
            id: m.id.clone(),
            from: m.from,
        }
    }
}

/// Removes a job and its data, from any state but held by a worker (409). A job of a run
/// removed before it finished counts as failed in that run.
#[utoipa::path(delete, path = "/api/queues/{name}/jobs/{id}",
    params(("name" = String, Path), JobId),
    responses((status = 200, body = MovedView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
async fn remove(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let removed = match state.queue.remove(job_id(&id)?).await {
        Ok(Removal::Removed(moved)) => moved,
        Ok(Removal::Locked) => {
            return Err(conflict(format!(
                "job {id:?} is being worked; remove it once it has finished"
            )));
        }
        Ok(Removal::Missing) => return Err(not_found(format!("no job {id:?}"))),
        Err(e) => return Err(unavailable("removing the job", e)),
    };
    state
        .runs
        .record_removed(std::slice::from_ref(&removed))
        .await
        .map_err(|e| unavailable("counting the job in its run", e))?;
    tracing::info!(queue = %name, job = %id, from = ?removed.from, "back-office: job removed");
    Ok(Json(MovedView::from(&removed)))
}

/// Retries a failed job: back to waiting with its attempts kept (BullMQ's `job.retry()`), so
/// a job that used them all gets one more. Its run, if it had ended, is open again.
#[utoipa::path(post, path = "/api/queues/{name}/jobs/{id}/retry",
    params(("name" = String, Path), JobId),
    responses((status = 200, body = MovedView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
async fn retry(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let id = job_id(&id)?;
    let retried = state
        .queue
        .retry(id)
        .await
        .map_err(|e| unavailable("retrying the job", e))?;
    let Some(retried) = retried else {
        return Err(not_in(&state, id, "failed").await);
    };
    reopen(&state, std::slice::from_ref(&retried)).await?;
    tracing::info!(queue = %name, job = %id, "back-office: failed job retried");
    Ok(Json(MovedView::from(&retried)))
}

/// 404 when the job does not exist, else 409: it exists, in another state than `wanted`.
async fn not_in(state: &AdminState, id: &str, wanted: &str) -> ApiError {
    match state.queue.job(id).await {
        Ok(Some(_)) => conflict(format!("job {id:?} is not {wanted}")),
        Ok(None) => not_found(format!("no job {id:?}")),
        Err(e) => unavailable("reading the job", e),
    }
}

async fn reopen(state: &AdminState, retried: &[Moved]) -> Result<(), ApiError> {
    state
        .runs
        .reopen(retried)
        .await
        .map_err(|e| unavailable("reopening the jobs' runs", e))
}

/// Runs a delayed job now (BullMQ's `job.promote()`).
#[utoipa::path(post, path = "/api/queues/{name}/jobs/{id}/promote",
    params(("name" = String, Path), JobId),
    responses((status = 200, body = MovedView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
async fn promote(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let id = job_id(&id)?;
    let promoted = state
        .queue
        .promote(id)
        .await
        .map_err(|e| unavailable("promoting the job", e))?;
    if !promoted {
        return Err(not_in(&state, id, "delayed").await);
    }
    tracing::info!(queue = %name, job = %id, "back-office: delayed job promoted");
    Ok(Json(MovedView {
        id: id.to_owned(),
        from: JobState::Delayed,
    }))
}

#[derive(Serialize, ToSchema)]
struct Retried {
    retried: usize,
}

/// Retries every job that is failed now.
#[utoipa::path(post, path = "/api/queues/{name}/retry-failed", params(("name" = String, Path)),
    responses((status = 200, body = Retried), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn retry_failed(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Retried>, ApiError> {
    known_queue(&state, &name)?;
    let retried = state
        .queue
        .retry_all_failed()
        .await
        .map_err(|e| unavailable("retrying failed jobs", e))?;
    reopen(&state, &retried).await?;
    tracing::info!(queue = %name, retried = retried.len(), "back-office: all failed jobs retried");
    Ok(Json(Retried {
        retried: retried.len(),
    }))
}

fn parse_date(text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| bad_request(format!("{text:?} is not a date: use YYYY-MM-DD")))
}

/// A run as the API shows it; times in ms since the epoch, as jobs have them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RunView {
    id: String,
    pipeline: String,
    date: String,
    /// `schedule`, `rerun`, `admin`, `demo`, ...
    trigger: String,
    started_at: i64,
    /// Jobs enqueued, once planning is done.
    planned: Option<i64>,
    skipped: i64,
    completed: i64,
    failed: i64,
    ended_at: Option<i64>,
    /// `succeeded` or `failed`, once ended.
    outcome: Option<String>,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        Self {
            id: r.id,
            pipeline: r.pipeline,
            date: r.date,
            trigger: r.trigger,
            started_at: r.started_at.timestamp_millis(),
            planned: r.planned,
            skipped: r.skipped,
            completed: r.completed,
            failed: r.failed,
            ended_at: r.ended_at.map(|t| t.timestamp_millis()),
            outcome: r.outcome,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only the runs of this day.
    #[param(value_type = Option<String>, format = Date)]
    date: Option<String>,
    /// Most runs listed (20 by default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

/// Run history, newest first: the latest runs, or the latest of one day. Counts of runs still
/// going are live.
#[utoipa::path(get, path = "/api/runs", params(RunsQuery),
    responses((status = 200, body = Vec<RunView>, links(
        ("run" = (operation_id = "run", parameters(("id" = "$response.body#/0/id")))))),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn runs(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let date = query.date.as_deref().map(parse_date).transpose()?;
    let limit = number_in("limit", query.limit.as_deref(), 20, 200)?;
    let mut runs = state
        .runs
        .latest(date.map(|d| d.to_string()).as_deref(), limit as i64)
        .await
        .map_err(|e| unavailable("reading runs", e))?;
    state
        .runs
        .with_live_counts(&mut runs)
        .await
        .map_err(|e| unavailable("reading runs", e))?;
    Ok(Json(runs.into_iter().map(RunView::from).collect()))
}

/// One run.
#[utoipa::path(get, path = "/api/runs/{id}",
    params(("id" = String, Path, description = "YYYY-MM-DD-r<n>", pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}-r[0-9]{1,19}$")),
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn run(
    State(state): State<AdminState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    // Run ids are `<date>-r<n>`: anything else is a mistake; a well-formed id of an
    // impossible date is merely not found.
    let digits = |t: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
    };
    let valid = id.split_once("-r").is_some_and(|(date, n)| {
        let parts: Vec<&str> = date.split('-').collect();
        matches!(parts.as_slice(), [y, m, d] if digits(y, 4..=4) && digits(m, 2..=2) && digits(d, 2..=2))
            && digits(n, 1..=19)
    });
    if !valid {
        return Err(bad_request(format!(
            "{id:?} is not a run id (YYYY-MM-DD-r<n>)"
        )));
    }
    let mut run = match state.runs.get(&id).await {
        Ok(Some(run)) => [run],
        Ok(None) => return Err(not_found(format!("no run {id:?}"))),
        Err(e) => return Err(unavailable("reading the run", e)),
    };
    state
        .runs
        .with_live_counts(&mut run)
        .await
        .map_err(|e| unavailable("reading the run", e))?;
    let [run] = run;
    Ok(Json(run.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartRun {
    /// The day to (re-)collect: from 2000-01-01 to the last day that has ended in
    /// TIDEGATE_TIMEZONE (yesterday there); other days are refused (400).
    #[schema(format = Date)]
    date: String,
    /// Also delete the day's results of users the run does not target, once it is planned
    /// (those it targets it rewrites).
    #[serde(default)]
    purge: bool,
}

/// Starts a run for a day: plans its jobs now (idempotent writes, so a day can be re-run),
/// optionally purging the day's results first. The day must be from 2000-01-01 to the last
/// day that has ended in TIDEGATE_TIMEZONE (400 otherwise); a body over 64 KiB is 413.
#[utoipa::path(post, path = "/api/runs", request_body = StartRun,
    responses((status = 201, body = RunView, links(
        ("run" = (operation_id = "run", parameters(("id" = "$response.body#/id")))))),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
async fn start_run(
    State(state): State<AdminState>,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let date = parse_date(&body.date)?;
    let run = match state.planner.plan(date, "admin", body.purge).await {
        Ok(run) => run,
        Err(PlanError::Date(e)) => return Err(bad_request(e.to_string())),
        Err(e) => return Err(unavailable("planning the run", e)),
    };
    tracing::info!(run = %run.id, %date, purge = body.purge, "back-office: run started");
    Ok((StatusCode::CREATED, Json(run.into())))
}
