//! Planning runs: a [`Daily`] application's day becomes a run of jobs with run-scoped ids
//! (`<application>-<run>-<target>`), streamed into the queue in chunks. Across replicas a
//! scheduled day is planned once: a Redis lock with a lease serialises planners, and the run
//! record in MongoDB says whether the schedule already planned that day. A re-run plans the day
//! again under a new run id, so jobs still retained from an earlier run cannot swallow it.
//! When the schedule fires is [`cron`]'s; its loop, with the catch-up of firings missed while
//! no process was up, is [`firings`]'s.

pub mod cron;
pub mod firings;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::queue::keys;
use crate::queue::{Backoff, JobOptions, NewJob, Queue, QueueError};
use crate::retry::ride_through;
use crate::runs::{RunError, RunRecord, Runs};
use crate::store::{Index, Store};
use crate::telemetry::names;

pub use cron::{Due, Schedule};

static RELEASE_LOCK: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("unlock.lua")));

/// Targets enqueued per round trip.
const PLAN_CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Date(#[from] DateOutOfRange),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("run: {0}")]
    Run(#[from] RunError),
    #[error(
        "run {run} is planned, but the day's results of earlier runs were not purged: {source}"
    )]
    Purge {
        run: String,
        source: mongodb::error::Error,
    },
}

impl crate::retry::Transient for PlanError {
    fn transient(&self) -> bool {
        match self {
            PlanError::Mongo(e) => e.transient(),
            PlanError::Redis(e) => e.transient(),
            PlanError::Queue(e) => e.transient(),
            PlanError::Run(e) => e.transient(),
            PlanError::Date(_) | PlanError::Purge { .. } => false,
        }
    }
}

/// An application that works a day at a time, as the planner and the process need it: its name
/// (the runs' pipeline, the job ids' prefix), its indexes, the day's targets, the job for one
/// target, the purge of a re-run, and how many results a day has. Its jobs' pipeline is
/// registered with the worker's [`crate::pipeline::Router`].
pub trait Daily: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The indexes its jobs read and write by. Created only by `tidegate setup`, never at
    /// start: an index build scans a collection at a pace nothing controls.
    fn indexes(&self) -> Vec<Index>;

    /// Streams the day's targets (never the whole list at once). `limit` bounds the query that
    /// finds them; the planner bounds each further read.
    fn targets(
        &self,
        store: &Store,
        date: NaiveDate,
        tz: Tz,
        limit: Duration,
    ) -> impl Future<
        Output = mongodb::error::Result<impl Stream<Item = mongodb::error::Result<String>> + Send>,
    > + Send;

    /// The job (name and data) that works `target`'s part of `date` in `run`; the data carries
    /// `runId` so that the run counts it. The planner sets its id and retry options.
    fn job(&self, run: &str, date: NaiveDate, target: &str) -> NewJob;

    /// Deletes the day's results of targets outside `keep` (a re-run rewrites the others).
    fn purge(
        &self,
        store: &Store,
        date: NaiveDate,
        keep: &HashSet<String>,
    ) -> impl Future<Output = mongodb::error::Result<u64>> + Send;

    /// Where its results go (a collection), for the run's summary.
    fn results_in(&self) -> &'static str;

    /// How many results the day has, for the run's summary.
    fn results(
        &self,
        store: &Store,
        date: NaiveDate,
    ) -> impl Future<Output = mongodb::error::Result<u64>> + Send;
}

/// The object-safe face of a [`Daily`], so that a [`Planner`] can hold an application of any
/// type: every `Daily` is one (`Arc::new(daily)` where an `Arc<dyn Plans>` is wanted).
pub trait Plans: Send + Sync {
    fn name(&self) -> &'static str;
    fn indexes(&self) -> Vec<Index>;
    fn targets<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
        tz: Tz,
        limit: Duration,
    ) -> BoxFuture<'a, mongodb::error::Result<BoxStream<'a, mongodb::error::Result<String>>>>;
    fn job(&self, run: &str, date: NaiveDate, target: &str) -> NewJob;
    fn purge<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
        keep: &'a HashSet<String>,
    ) -> BoxFuture<'a, mongodb::error::Result<u64>>;
    fn results_in(&self) -> &'static str;
    fn results<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
    ) -> BoxFuture<'a, mongodb::error::Result<u64>>;
}

impl<D: Daily> Plans for D {
    fn name(&self) -> &'static str {
        Daily::name(self)
    }

    fn indexes(&self) -> Vec<Index> {
        Daily::indexes(self)
    }

    fn targets<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
        tz: Tz,
        limit: Duration,
    ) -> BoxFuture<'a, mongodb::error::Result<BoxStream<'a, mongodb::error::Result<String>>>> {
        Box::pin(async move { Ok(Daily::targets(self, store, date, tz, limit).await?.boxed()) })
    }

    fn job(&self, run: &str, date: NaiveDate, target: &str) -> NewJob {
        Daily::job(self, run, date, target)
    }

    fn purge<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
        keep: &'a HashSet<String>,
    ) -> BoxFuture<'a, mongodb::error::Result<u64>> {
        Box::pin(Daily::purge(self, store, date, keep))
    }

    fn results_in(&self) -> &'static str {
        Daily::results_in(self)
    }

    fn results<'a>(
        &'a self,
        store: &'a Store,
        date: NaiveDate,
    ) -> BoxFuture<'a, mongodb::error::Result<u64>> {
        Box::pin(Daily::results(self, store, date))
    }
}

/// Turns a day into a run of an application's jobs.
#[derive(Clone)]
pub struct Planner {
    pub daily: Arc<dyn Plans>,
    pub queue: Queue,
    pub store: Store,
    pub runs: Runs,
    pub redis: crate::queue::Redis,
    pub tz: Tz,
    pub attempts: u32,
    pub backoff: Backoff,
    /// How long one replica holds the right to plan a scheduled day; also the time limit of
    /// planning's read of the day's users, which on a large day is one long aggregation.
    pub lease: Duration,
}

/// A BullMQ-safe job id for a target of an application's run: BullMQ forbids `:` in custom ids.
pub fn job_id(application: &str, run_id: &str, target: &str) -> String {
    format!("{application}-{run_id}-{}", target.replace(':', "_"))
}

/// The day a firing at `fired` plans: the day that just ended in the schedule's timezone.
pub fn day_for(fired: DateTime<Tz>) -> NaiveDate {
    let today = fired.date_naive();
    today.pred_opt().unwrap_or(today)
}

/// A day that cannot be a run's, with the days that can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{date} cannot be a run's day: accepted from {first} to {last} (the last day that has ended in {tz}; a day still going has no complete data)"
)]
pub struct DateOutOfRange {
    pub date: NaiveDate,
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub tz: Tz,
}

/// The first day a run may be of. No data of this product is older: an earlier date is a slip
/// (a run of 1900-01-01 was planned and "succeeded" empty).
pub(crate) fn first_run_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// Whether `date` can be a run's day at `now`: from [`first_run_day`] to the last day that has
/// ended in `tz`, yesterday there. Today is refused like the days after it: a day still going
/// has no complete data, so its run would "succeed" on part of the day and leave scores that
/// only a later re-run could correct (the schedule plans the day that just ended for the same
/// reason).
pub fn check_run_date(date: NaiveDate, tz: Tz, now: DateTime<Utc>) -> Result<(), DateOutOfRange> {
    let (first, last) = (first_run_day(), day_for(now.with_timezone(&tz)));
    if (first..=last).contains(&date) {
        Ok(())
    } else {
        Err(DateOutOfRange {
            date,
            first,
            last,
            tz,
        })
    }
}

impl Planner {
    /// Plans `date` as a new run. `purge` also deletes, once the run is planned, the day's
    /// results of users it does not target (the others it rewrites): a re-run that fails to
    /// start deletes nothing, and the purge never races the new run's own writes. A day
    /// that cannot be a run's ([`check_run_date`]) is refused before anything is written.
    pub async fn plan(
        &self,
        date: NaiveDate,
        trigger: &str,
        purge: bool,
    ) -> Result<RunRecord, PlanError> {
        check_run_date(date, self.tz, Utc::now())?;
        let daily = self.daily.as_ref();
        let day = date.to_string();
        // Every step rides through an outage of the database or Redis: a planning that fails
        // half-way starts its pass again, which adds only what the last one did not (the job
        // ids are the run's own).
        let run = ride_through("starting a run", None, || {
            self.runs.start(daily.name(), &day, trigger)
        })
        .await?;
        metrics::counter!(names::RUNS_PLANNED, "trigger" => trigger.to_owned()).increment(1);
        let mut passes = 0;
        let (planned, skipped, targeted) = ride_through("planning a run's jobs", None, || {
            passes += 1;
            self.enqueue(&run, date, purge, passes > 1)
        })
        .await?;
        ride_through("recording a run's plan", None, || {
            self.runs.planned(&run.id, planned, skipped)
        })
        .await?;
        tracing::info!(run = %run.id, %date, trigger, planned, skipped, "run planned");
        if purge {
            let deleted = ride_through("purging a day's results", None, || {
                daily.purge(&self.store, date, &targeted)
            })
            .await
            .map_err(|source| PlanError::Purge {
                run: run.id.clone(),
                source,
            })?;
            tracing::info!(run = %run.id, %date, deleted, "purged the day's results of targets the new run does not rewrite");
        }
        let stored = ride_through("reading a run", None, || self.runs.get(&run.id)).await?;
        Ok(stored.unwrap_or(run))
    }

    /// One pass over the day's targets, adding each one's job to `run`: how many were added
    /// and how many were already queued, and the targets (kept only for a purge). In a pass
    /// that starts again after a failed one, a job already queued is the last pass's: planned.
    async fn enqueue(
        &self,
        run: &RunRecord,
        date: NaiveDate,
        purge: bool,
        again: bool,
    ) -> Result<(u64, u64, HashSet<String>), PlanError> {
        let daily = self.daily.as_ref();
        let opts = JobOptions {
            attempts: Some(self.attempts),
            backoff: Some(self.backoff),
            ..JobOptions::default()
        };
        let mut targets = daily
            .targets(&self.store, date, self.tz, self.lease)
            .await?;
        let (mut planned, mut skipped) = (0u64, 0u64);
        let mut chunk = Vec::with_capacity(PLAN_CHUNK);
        // The day's targets, kept only for a purge: their results the new run rewrites anyway.
        let mut targeted = HashSet::new();
        loop {
            let next = self.store.bounded(targets.try_next()).await?;
            if let Some(target) = &next {
                if purge {
                    targeted.insert(target.clone());
                }
                let job = daily.job(&run.id, date, target).with_opts(JobOptions {
                    job_id: Some(job_id(daily.name(), &run.id, target)),
                    ..opts.clone()
                });
                chunk.push(job);
            }
            if chunk.len() == PLAN_CHUNK || (next.is_none() && !chunk.is_empty()) {
                let added = self.queue.add_bulk(&chunk).await?;
                let new = added.iter().filter(|a| again || !a.duplicate).count() as u64;
                planned += new;
                skipped += added.len() as u64 - new;
                chunk.clear();
            }
            if next.is_none() {
                break;
            }
        }
        Ok((planned, skipped, targeted))
    }

    /// A scheduled firing: plans the day that just ended unless the schedule already did,
    /// holding a lock with a lease so that replicas firing together plan it once.
    pub async fn fire(&self, fired: DateTime<Tz>) -> Result<Fired, PlanError> {
        let date = day_for(fired);
        let name = self.daily.name();
        let lock = keys::plan_lock(self.queue.keys().base(), name, &date.to_string());
        let token = format!("{:016x}", rand::random::<u64>());
        let got: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .query_async(&mut self.redis.clone())
            .await?;
        if got.is_none() {
            tracing::info!(%date, "another replica is planning this day");
            return Ok(Fired::Busy);
        }
        let result = async {
            let date = date.to_string();
            if !self.runs.find(name, &date, "schedule").await?.is_empty() {
                tracing::info!(%date, "the schedule already planned this day; not planning it twice");
                return Ok(Fired::Already);
            }
            self.plan(day_for(fired), "schedule", false)
                .await
                .map(Fired::Planned)
        }
        .await;
        let _: Result<i64, _> = RELEASE_LOCK
            .key(&lock)
            .arg(&token)
            .invoke_async(&mut self.redis.clone())
            .await;
        result
    }
}

/// What a scheduled firing did.
#[derive(Debug)]
pub enum Fired {
    Planned(RunRecord),
    /// The schedule had planned that day already.
    Already,
    /// Another replica holds the day's planning lock: ask again shortly, since it may fail.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    #[test]
    fn a_firing_at_one_in_the_morning_plans_the_day_before() {
        let fired = chrono_tz::Asia::Seoul
            .with_ymd_and_hms(2026, 11, 25, 1, 0, 0)
            .single()
            .expect("time");
        assert_eq!(day_for(fired).to_string(), "2026-11-24");
    }

    #[test]
    fn a_run_is_of_a_day_from_2000_to_the_last_that_has_ended_where_it_is_planned() {
        // 13:30 on 2026-12-01 in Seoul; still 2026-11-30 in New York.
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 1, 4, 30, 0)
            .single()
            .expect("time");
        let seoul = chrono_tz::Asia::Seoul;
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
        for ok in [day(2000, 1, 1), day(2026, 11, 24), day(2026, 11, 30)] {
            assert_eq!(check_run_date(ok, seoul, now), Ok(()), "{ok}");
        }
        for refused in [
            day(1900, 1, 1),
            day(1999, 12, 31),
            day(2026, 12, 1),
            day(2026, 12, 2),
            day(9999, 12, 31),
        ] {
            let e = check_run_date(refused, seoul, now).expect_err("refused");
            assert_eq!((e.first, e.last), (day(2000, 1, 1), day(2026, 11, 30)));
            let message = e.to_string();
            assert!(
                message.contains("from 2000-01-01 to 2026-11-30") && message.contains("Asia/Seoul"),
                "{message}"
            );
        }
        let new_york = chrono_tz::America::New_York;
        assert!(check_run_date(day(2026, 11, 29), new_york, now).is_ok());
        assert!(
            check_run_date(day(2026, 11, 30), new_york, now).is_err(),
            "still going in New York"
        );
    }

    #[test]
    fn job_ids_are_bullmq_safe_and_run_scoped() {
        assert_eq!(
            job_id("score", "2026-11-24-r2", "u1"),
            "score-2026-11-24-r2-u1"
        );
        assert_eq!(
            job_id("score", "2026-11-24-r2", "a:b"),
            "score-2026-11-24-r2-a_b"
        );
        assert!(
            crate::queue::job::check_custom_id(&job_id("score", "2026-11-24-r1", "42")).is_ok()
        );
    }
}
