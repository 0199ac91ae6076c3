//! `/api/schedule`: when the enabled daily application plans its days: the crontab expression
//! and its timezone, the next three firings, and what the replicas share of it (since when it
//! runs, how far firings are handled, which were missed while no process was up).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use super::error::{ApiError, ErrorBody, unavailable};
use crate::schedule::firings;

/// The schedule, as this process runs it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScheduleView {
    /// The daily application it plans; null when none is enabled (TIDEGATE_APPS).
    application: Option<String>,
    /// TIDEGATE_SCHEDULE as written; null when `off`.
    schedule: Option<String>,
    /// TIDEGATE_TIMEZONE, in which the schedule fires and a run's day is counted.
    timezone: String,
    /// TIDEGATE_SCHEDULE_CATCH_UP: how late a missed firing may still run, e.g. `6h`.
    catch_up: String,
    /// The next three firings (RFC 3339, in the timezone); empty when off.
    #[schema(format = DateTime)]
    next: Vec<String>,
    /// When a process first ran this schedule on this queue.
    #[schema(format = DateTime)]
    since: Option<String>,
    /// Firings up to this moment are handled (planned, found planned, or reported missed).
    #[schema(format = DateTime)]
    handled_through: Option<String>,
    /// Firings missed while no process was up, older than the catch-up window: not run.
    missed: u64,
    #[schema(format = DateTime)]
    last_missed: Option<String>,
}

/// The schedule of the enabled daily application: its expression, timezone, next three
/// firings, and the firings missed while no process was up.
#[utoipa::path(get, path = "/api/schedule",
    responses((status = 200, body = ScheduleView), (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub(super) async fn schedule(
    State(state): State<AdminState>,
) -> Result<Json<ScheduleView>, ApiError> {
    let tz = state.timezone;
    let shown = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&tz).to_rfc3339();
    let (since, through, missed, last_missed) = match &state.planner {
        Some(planner) if state.schedule.is_some() => {
            let shared = firings::state(planner)
                .await
                .map_err(|e| unavailable("reading the schedule", e))?;
            (
                shared.since.map(shown),
                shared.through.map(shown),
                shared.missed,
                shared.last_missed.map(shown),
            )
        }
        _ => (None, None, 0, None),
    };
    let next = state.schedule.as_ref().map_or_else(Vec::new, |s| {
        s.upcoming(chrono::Utc::now(), tz, 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    });
    Ok(Json(ScheduleView {
        application: state.planner.as_ref().map(|p| p.daily.name().to_owned()),
        schedule: state.schedule.as_ref().map(|s| s.source().to_owned()),
        timezone: tz.name().to_owned(),
        catch_up: humantime::format_duration(state.catch_up).to_string(),
        next,
        since,
        handled_through: through,
        missed,
        last_missed,
    }))
}
