//! The schedule's loop: at each firing the planner plans the day that just ended. What has been
//! handled is kept in Redis (`through`, shared by replicas), so a firing missed while no process
//! was up (a deploy, an outage) runs when one starts, if it is at most
//! `TIDEGATE_SCHEDULE_CATCH_UP` old; older ones are counted and reported as missed, never
//! dropped in silence. A process that meets the schedule for the first time owes nothing before
//! its own start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Fired, PlanError, Planner, Schedule};
use crate::queue::keys;
use crate::telemetry::names;

static ADVANCE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("advance.lua")));

/// Longest sleep between two looks at the schedule: the last success is refreshed this often.
const REFRESH: Duration = Duration::from_secs(300);

/// Wait after another replica was found planning a day, before asking again.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// An application's schedule as its replicas share it in Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleState {
    /// When a process first ran the schedule.
    pub since: Option<DateTime<Utc>>,
    /// Firings up to here are handled (planned, already planned, or reported missed).
    pub through: Option<DateTime<Utc>>,
    /// Firings found older than the catch-up window, in all, and the latest of them.
    pub missed: u64,
    pub last_missed: Option<DateTime<Utc>>,
}

fn instant(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// Reads the schedule state of the planner's application on its queue (`None` fields where no
/// process has run it).
pub async fn state(planner: &Planner) -> Result<ScheduleState, redis::RedisError> {
    let (since, through, missed, last_missed): (
        Option<i64>,
        Option<i64>,
        Option<u64>,
        Option<i64>,
    ) = redis::cmd("HMGET")
        .arg(schedule_key(planner))
        .arg(&["since", "through", "missed", "last_missed"])
        .query_async(&mut planner.redis.clone())
        .await?;
    Ok(ScheduleState {
        since: instant(since),
        through: instant(through),
        missed: missed.unwrap_or(0),
        last_missed: instant(last_missed),
    })
}

fn schedule_key(planner: &Planner) -> String {
    keys::schedule(planner.queue.keys().base(), planner.daily.name())
}

/// Fires the planner at each firing of `schedule` until `stop`, catching up first. A failure
/// (Redis or MongoDB away) leaves the firing owed and is retried with backoff; a firing is
/// never lost to an error.
pub(crate) async fn run_schedule(
    planner: Planner,
    schedule: Schedule,
    catch_up: Duration,
    stop: CancellationToken,
) {
    let application = planner.daily.name();
    // At 0 from the start, so that the first missed firing is an increase Prometheus sees.
    metrics::counter!(names::SCHEDULE_MISSED, "application" => application).increment(0);
    let mut failures = 0u32;
    let mut announced = None;
    loop {
        let wait = match look(&planner, &schedule, catch_up).await {
            Ok(Looked::Handled) => {
                failures = 0;
                let now = Utc::now();
                match schedule.next_after(now, planner.tz) {
                    Some(next) => {
                        if announced != Some(next) {
                            tracing::info!(application, next = %next.to_rfc3339(), "next scheduled run");
                            announced = Some(next);
                        }
                        (next.with_timezone(&Utc) - now)
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(REFRESH)
                    }
                    None => REFRESH,
                }
            }
            Ok(Looked::Busy) => BUSY_WAIT,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
                tracing::warn!(application, error = %e, retry_in = ?wait, "the schedule could not be handled; its firings stay owed");
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

enum Looked {
    Handled,
    /// Another replica is planning a day now.
    Busy,
}

/// One look at the schedule: plans what is owed, moves the mark, reports missed firings, and
/// exports when the application last succeeded.
async fn look(
    planner: &Planner,
    schedule: &Schedule,
    catch_up: Duration,
) -> Result<Looked, PlanError> {
    let application = planner.daily.name();
    let key = schedule_key(planner);
    let mut redis = planner.redis.clone();
    let now = Utc::now();
    // A schedule met for the first time owes nothing before this moment.
    let _: () = redis::pipe()
        .cmd("HSETNX")
        .arg(&key)
        .arg("since")
        .arg(now.timestamp_millis())
        .ignore()
        .cmd("HSETNX")
        .arg(&key)
        .arg("through")
        .arg(now.timestamp_millis())
        .ignore()
        .query_async(&mut redis)
        .await?;
    let read = state(planner).await?;
    let (Some(since), Some(through)) = (read.since, read.through) else {
        return Ok(Looked::Busy);
    };
    let due = schedule.due(planner.tz, through, now, catch_up);
    for (date, fired) in &due.plan {
        let late = (now - fired.with_timezone(&Utc))
            .to_std()
            .unwrap_or_default();
        if late > super::cron::ON_TIME {
            tracing::info!(application, %date, fired = %fired.to_rfc3339(), late = %humantime::format_duration(Duration::from_secs(late.as_secs())),
                "catching up a firing missed while no process was up");
        }
        match planner.fire(*fired).await? {
            Fired::Planned(run) => {
                tracing::info!(application, run = %run.id, %date, "scheduled run planned");
            }
            Fired::Already => {}
            Fired::Busy => return Ok(Looked::Busy),
        }
    }
    let moved: i64 = ADVANCE
        .key(&key)
        .arg(through.timestamp_millis())
        .arg(now.timestamp_millis())
        .arg(due.missed)
        .arg(
            due.last_missed
                .map_or(String::new(), |t| t.timestamp_millis().to_string()),
        )
        .invoke_async(&mut redis)
        .await?;
    if moved == 1 && due.missed > 0 {
        metrics::counter!(names::SCHEDULE_MISSED, "application" => application)
            .increment(due.missed);
        tracing::error!(
            application,
            missed = due.missed,
            last = %due.last_missed.map(|t| t.with_timezone(&planner.tz).to_rfc3339()).unwrap_or_default(),
            catch_up = %humantime::format_duration(catch_up),
            "scheduled firings were missed while no process was up, longer ago than TIDEGATE_SCHEDULE_CATCH_UP: not run; re-run their days (tidegate rerun --date, or the back-office)"
        );
    }
    let last = planner.runs.last_success(application).await?;
    let succeeded = last
        .and_then(|run| run.ended_at)
        .and_then(|ended| DateTime::from_timestamp_millis(ended.timestamp_millis()))
        .map_or(since, |ended| ended.max(since));
    metrics::gauge!(names::SCHEDULE_LAST_SUCCESS, "application" => application)
        .set(succeeded.timestamp_millis() as f64 / 1000.0);
    if let Some(fired) = schedule.last_at(now, planner.tz) {
        metrics::gauge!(names::SCHEDULE_LAST_FIRING, "application" => application)
            .set(fired.timestamp_millis() as f64 / 1000.0);
    }
    Ok(Looked::Handled)
}
