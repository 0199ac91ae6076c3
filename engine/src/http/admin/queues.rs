//! The queue's resources: the queue (counts, pause, resume, its pace), its jobs by state, one
//! job, and the moves on them (remove, retry, promote, retry every failed job).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::error::{
    ApiError, ApiPath, ApiQuery, ErrorBody, bad_request, conflict, known_queue, not_found,
    number_in, unavailable, valid_job_id,
};
use crate::control::budget::{self, Status};
use crate::queue::keys::BudgetKeys;
use crate::queue::{Counts, JobState, JobView, Moved, Removal};

#[derive(Serialize, ToSchema)]
pub(super) struct QueueView {
    name: String,
    paused: bool,
    counts: Counts,
}

/// The queues this tidegate works, with their jobs per state.
#[utoipa::path(get, path = "/api/queues", responses(
    (status = 200, body = Vec<QueueView>),
    (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn queues(
    State(state): State<AdminState>,
) -> Result<Json<Vec<QueueView>>, ApiError> {
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
pub(super) struct Paused {
    name: String,
    paused: bool,
}

/// Pauses a queue: workers take no more jobs until it is resumed (BullMQ's pause).
#[utoipa::path(post, path = "/api/queues/{name}/pause", params(("name" = String, Path)),
    responses((status = 200, body = Paused), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn pause(
    state: State<AdminState>,
    name: ApiPath<String>,
) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, true).await
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/api/queues/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, body = Paused), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn resume(
    state: State<AdminState>,
    name: ApiPath<String>,
) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, false).await
}

pub(super) async fn set_paused(
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

/// The queue's load control as the database's leader last published it, and the database as
/// this process finds it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ControlView {
    #[serde(flatten)]
    status: Status,
    /// `false` while this process finds the database down or silent: it takes no jobs and
    /// releases what it held, attempts untouched, until the database answers.
    database_reachable: bool,
    /// While it is not: for how long (seconds) and what said so.
    database_outage_seconds: Option<u64>,
    database_outage_reason: Option<String>,
}

/// The queue's load control as the database's leader last published it: the queue's pace and
/// batch size, the CPU budget and live load, the database's CPU and latencies against their
/// targets, the signal that limits the pace; and whether this process can reach the database.
#[utoipa::path(get, path = "/api/queues/{name}/control", params(("name" = String, Path)),
    responses((status = 200, body = ControlView), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn control(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ControlView>, ApiError> {
    known_queue(&state, &name)?;
    let keys = BudgetKeys::new(&state.budget);
    let status = budget::status(&mut state.queue.connection(), &keys, &state.budget, &name)
        .await
        .map_err(|e| unavailable("reading the load control", e))?;
    let outage = state.database.outage();
    Ok(Json(ControlView {
        status,
        database_reachable: outage.is_none(),
        database_outage_seconds: outage.as_ref().map(|o| o.for_.as_secs()),
        database_outage_reason: outage.map(|o| o.reason),
    }))
}

/// Most jobs one page may hold.
pub(super) const MAX_PAGE_SIZE: usize = 500;

/// The document's word for job ids; handlers check them with [`valid_job_id`].
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct JobId {
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
pub(super) struct JobsQuery {
    #[param(value_type = JobState, required = true)]
    state: Option<String>,
    /// From 1 (the default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    page: Option<String>,
    /// Jobs per page (50 by default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    size: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct JobPage {
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
pub(super) async fn jobs(
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
pub(super) async fn job(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    known_queue(&state, &name)?;
    match state.queue.job(valid_job_id(&id)?).await {
        Ok(Some(job)) => Ok(Json(job)),
        Ok(None) => Err(not_found(format!("no job {id:?}"))),
        Err(e) => Err(unavailable("reading the job", e)),
    }
}

/// A job moved out of a state.
#[derive(Serialize, ToSchema)]
pub(super) struct MovedView {
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
pub(super) async fn remove(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let removed = match state.queue.remove(valid_job_id(&id)?).await {
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
pub(super) async fn retry(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let id = valid_job_id(&id)?;
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
pub(super) async fn not_in(state: &AdminState, id: &str, wanted: &str) -> ApiError {
    match state.queue.job(id).await {
        Ok(Some(_)) => conflict(format!("job {id:?} is not {wanted}")),
        Ok(None) => not_found(format!("no job {id:?}")),
        Err(e) => unavailable("reading the job", e),
    }
}

pub(super) async fn reopen(state: &AdminState, retried: &[Moved]) -> Result<(), ApiError> {
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
pub(super) async fn promote(
    State(state): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<MovedView>, ApiError> {
    known_queue(&state, &name)?;
    let id = valid_job_id(&id)?;
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
pub(super) struct Retried {
    retried: usize,
}

/// Retries every job that is failed now.
#[utoipa::path(post, path = "/api/queues/{name}/retry-failed", params(("name" = String, Path)),
    responses((status = 200, body = Retried), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn retry_failed(
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
