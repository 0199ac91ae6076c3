//! The runs' resources: the history, one run, and starting a run of a day.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::error::{
    ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, bad_request, conflict, not_found, number_in,
    unavailable,
};
use crate::runs::RunRecord;
use crate::schedule::PlanError;

pub(super) fn parse_date(text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| bad_request(format!("{text:?} is not a date: use YYYY-MM-DD")))
}

/// A run as the API shows it; times in ms since the epoch, as jobs have them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunView {
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
pub(super) struct RunsQuery {
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
pub(super) async fn runs(
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
pub(super) async fn run(
    State(state): State<AdminState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    // A well-formed id of an impossible date is merely not found.
    if !crate::runs::is_run_id(&id) {
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
pub(super) struct StartRun {
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
/// optionally purging the day's results first; 409 when no daily application is enabled. The day must be from 2000-01-01 to the last
/// day that has ended in TIDEGATE_TIMEZONE (400 otherwise); a body over 64 KiB is 413.
#[utoipa::path(post, path = "/api/runs", request_body = StartRun,
    responses((status = 201, body = RunView, links(
        ("run" = (operation_id = "run", parameters(("id" = "$response.body#/id")))))),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub(super) async fn start_run(
    State(state): State<AdminState>,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let date = parse_date(&body.date)?;
    let Some(planner) = &state.planner else {
        return Err(conflict(
            "no daily application is enabled (TIDEGATE_APPS), so there is no day to plan",
        ));
    };
    // Not begun while the database is known to be down: planning rides through a blip, and
    // a client should not wait out an outage.
    if let Some(outage) = state.database.outage() {
        return Err(unavailable(
            "planning the run",
            format!("the database is unreachable ({})", outage.reason),
        ));
    }
    // Planned in a task of its own, so that a client that stops waiting cannot leave a run
    // half planned: the planning goes on to its end whatever happens to the request.
    let planning = tokio::spawn({
        let planner = planner.clone();
        let purge = body.purge;
        async move { planner.plan(date, "admin", purge).await }
    });
    let run = match planning.await {
        Ok(Ok(run)) => run,
        Ok(Err(PlanError::Date(e))) => return Err(bad_request(e.to_string())),
        Ok(Err(e)) => return Err(unavailable("planning the run", e)),
        Err(e) => return Err(unavailable("planning the run", e)),
    };
    tracing::info!(run = %run.id, %date, purge = body.purge, "back-office: run started");
    Ok((StatusCode::CREATED, Json(run.into())))
}
