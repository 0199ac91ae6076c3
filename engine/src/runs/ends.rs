//! How a run ends: each finish counted (by the queue's settle script, in the counters named
//! here), failures of jobs removed or retried from the back-office, the end recorded once
//! (through the outbox, off the batch path), stalls reported once.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use mongodb::bson::{self, doc};
use redis::AsyncCommands;

use super::outbox::Message;
use super::report::{self, RunReport};
use super::{COUNTER_TTL, RunError, RunRecord, RunRef, Runs, run_of};
use crate::control::budget;
use crate::queue::keys::RunKeys;
use crate::queue::{FinishCount, Job, JobState, Moved, clip_reason};
use crate::telemetry::names;
use crate::worker::Observer;

/// Failures to add to (or take from) one run's counters.
#[derive(Default)]
struct Failures {
    failed: i64,
    reasons: HashMap<String, i64>,
}

impl Failures {
    fn fail(&mut self, reason: &str) {
        self.failed += 1;
        *self
            .reasons
            .entry(clip_reason(reason).to_owned())
            .or_default() += 1;
    }
}

/// Reasons a run report lists.
const TOP_REASONS: usize = 3;

impl Runs {
    /// Where the queue counts the finish of `job`: the counters of the run its data names
    /// (`runId`), if any.
    pub fn count_for(&self, job: &Job) -> Option<FinishCount> {
        let RunRef { run_id: Some(run) } = job.data::<RunRef>().ok()? else {
            return None;
        };
        let keys = RunKeys::new(&self.prefix, &run);
        Some(FinishCount {
            counts: keys.counts(),
            reasons: keys.reasons(),
            ttl: COUNTER_TTL,
        })
    }

    /// Has the runs of `jobs`, whose finishes are counted, checked for their end by the
    /// outbox, and returns at once. Once the outbox has stopped (after [`Runs::close`]), checks
    /// them here; a failure is logged, not returned, since the jobs themselves are settled (and
    /// the stall check looks again).
    pub async fn check_ends(&self, jobs: &[&Job]) {
        let mut runs: Vec<String> = jobs
            .iter()
            .filter_map(|job| job.data::<RunRef>().ok()?.run_id)
            .collect();
        runs.sort_unstable();
        runs.dedup();
        if runs.is_empty() {
            return;
        }
        let Err(Message::Check(runs)) = self.post(Message::Check(runs)) else {
            return;
        };
        for run in runs {
            if let Err(e) = self.end_if_done(&run).await {
                tracing::warn!(run = %run, error = %e, "cannot check whether a run ended");
            }
        }
    }

    /// Records the run's end if it is done and no process recorded it yet, and has its report
    /// delivered; true when this call ended it.
    pub(super) async fn end_if_done(&self, id: &str) -> Result<bool, RunError> {
        let Some(run) = self.check_end(id).await? else {
            return Ok(false);
        };
        if self.notifier.is_some()
            && let Err(Message::Report(run)) = self.post(Message::Report(Box::new(run)))
        {
            self.send_report(*run).await;
        }
        Ok(true)
    }

    /// Counts jobs removed from the back-office before they finished as failed, so their run
    /// can still end (and says why it failed).
    pub(crate) async fn record_removed(&self, jobs: &[Moved]) -> Result<(), RunError> {
        let mut failures: HashMap<String, Failures> = HashMap::new();
        for job in jobs {
            if matches!(job.from, JobState::Completed | JobState::Failed) {
                continue;
            }
            if let Some(run) = run_of(&job.data) {
                failures
                    .entry(run)
                    .or_default()
                    .fail("removed from the back-office");
            }
        }
        self.count(&failures).await
    }

    /// Failed jobs were retried: their runs count them as unfinished again (their failure
    /// reasons too) and, if they had ended, are open again until those jobs finish. Runs whose
    /// counters have lapsed are history and stay as recorded.
    pub async fn reopen(&self, retried: &[Moved]) -> Result<(), RunError> {
        let mut failures: HashMap<String, Failures> = HashMap::new();
        for job in retried {
            if let Some(run) = run_of(&job.data) {
                failures.entry(run).or_default().fail(&job.reason);
            }
        }
        let mut redis = self.redis.clone();
        for (run, these) in failures {
            let live: bool = redis
                .exists(RunKeys::new(&self.prefix, &run).counts())
                .await?;
            if !live {
                continue;
            }
            // Counts first: once they are short, no process ends the run on the old ones, and
            // the reopened record can only be ended again when the retried jobs finish.
            let mut pipe = redis::pipe();
            pipe.hincr(
                RunKeys::new(&self.prefix, &run).counts(),
                "failed",
                -these.failed,
            )
            .ignore();
            for (reason, n) in &these.reasons {
                pipe.hincr(RunKeys::new(&self.prefix, &run).reasons(), reason, -n)
                    .ignore();
            }
            pipe.query_async::<()>(&mut redis).await?;
            self.store
                .bounded(self.collection().update_one(
                    doc! { "_id": &run },
                    doc! { "$unset": { "endedAt": "", "outcome": "" } },
                ))
                .await?;
            // The retried jobs may have finished already, before the counts went down.
            self.end_if_done(&run).await?;
        }
        Ok(())
    }

    /// Adds to the runs' counters in one round trip, then ends the runs that are done.
    async fn count(&self, failures: &HashMap<String, Failures>) -> Result<(), RunError> {
        if failures.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (run, these) in failures {
            pipe.hincr(
                RunKeys::new(&self.prefix, run).counts(),
                "failed",
                these.failed,
            )
            .ignore();
            for (reason, n) in &these.reasons {
                pipe.hincr(RunKeys::new(&self.prefix, run).reasons(), reason, *n)
                    .ignore();
            }
            if !these.reasons.is_empty() {
                pipe.expire(
                    RunKeys::new(&self.prefix, run).reasons(),
                    COUNTER_TTL.as_secs() as i64,
                )
                .ignore();
            }
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
        for run in failures.keys() {
            if let Err(e) = self.end_if_done(run).await {
                tracing::warn!(run = %run, error = %e, "cannot check whether a run ended");
            }
        }
        Ok(())
    }

    /// Records the run's end if its jobs have all finished and no process recorded it yet;
    /// the ended run when this call did (its report is the caller's to deliver).
    pub(super) async fn check_end(&self, id: &str) -> Result<Option<RunRecord>, RunError> {
        let (total, completed, failed): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(RunKeys::new(&self.prefix, id).counts())
                .arg(&["total", "completed", "failed"])
                .query_async(&mut self.redis.clone())
                .await?;
        let (completed, failed) = (completed.unwrap_or(0), failed.unwrap_or(0));
        let Some(total) = total else {
            return Ok(None);
        };
        if completed + failed < total {
            return Ok(None);
        }
        let outcome = if failed == 0 { "succeeded" } else { "failed" };
        // Only an open record matches: the process whose update changes it is the one that
        // ended the run, and it alone reports it. A failed update leaves the run open for the
        // next check (the next finish, or the stall check).
        let ended = self
            .store
            .bounded(self.collection().update_one(
                doc! { "_id": id, "endedAt": null },
                doc! { "$set": {
                    "completed": completed as i64,
                    "failed": failed as i64,
                    "endedAt": bson::DateTime::now(),
                    "outcome": outcome,
                } },
            ))
            .await?;
        if ended.modified_count == 0 {
            return Ok(None);
        }
        metrics::counter!(names::RUNS_ENDED, "outcome" => outcome).increment(1);
        let run = self.get(id).await?;
        if let Some(run) = &run {
            tracing::info!(
                run = %run.id, pipeline = %run.pipeline, date = %run.date, trigger = %run.trigger,
                jobs = total, completed, failed, outcome,
                wall_ms = run.wall().map_or(0, |w| w.as_millis() as u64),
                "run ended"
            );
        }
        Ok(run)
    }

    pub(super) async fn send_report(&self, run: RunRecord) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        match self.report(run).await {
            Ok(report) => {
                notifier.send(&report::payload(&report)).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot build the run report"),
        }
    }

    /// Reports, once each, the unfinished runs in which no job finished for `after`; returns
    /// their ids. Any number of processes may call it: each looks at the shared counters, and
    /// only the first to see a stall reports it.
    pub async fn check_stalled(&self, after: Duration) -> Result<Vec<String>, RunError> {
        let now = crate::queue::now_ms();
        let since = bson::DateTime::from_millis(
            i64::try_from(now.saturating_sub(COUNTER_TTL.as_millis() as u64)).unwrap_or(0),
        );
        let runs = self.collection();
        let find = runs
            .find(doc! { "endedAt": null, "planned": { "$ne": null }, "startedAt": { "$gte": since } })
            .max_time(self.store.op_timeout());
        let open: Vec<RunRecord> = self
            .store
            .bounded(async { find.await?.try_collect().await })
            .await?;
        let mut stalled = Vec::new();
        let mut redis = self.redis.clone();
        for run in open {
            // Ends a run whose last finish was counted but whose end was not recorded (the
            // database was away at that moment, or the process stopped in between).
            if self.end_if_done(&run.id).await? {
                continue;
            }
            let done = self.finished_jobs(&run.id).await?;
            let key = RunKeys::new(&self.prefix, &run.id).progress();
            let (seen, since): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["done", "since"])
                .query_async(&mut redis)
                .await?;
            if seen != Some(done) || since.is_none() {
                let _: () = redis::pipe()
                    .hset(&key, "done", done)
                    .ignore()
                    .hset(&key, "since", now)
                    .ignore()
                    .expire(&key, COUNTER_TTL.as_secs() as i64)
                    .ignore()
                    .query_async(&mut redis)
                    .await?;
                continue;
            }
            let idle = Duration::from_millis(now.saturating_sub(since.unwrap_or(now)));
            if idle < after {
                continue;
            }
            let first: Option<String> = redis::cmd("SET")
                .arg(RunKeys::new(&self.prefix, &run.id).stalled())
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(COUNTER_TTL.as_secs())
                .query_async(&mut redis)
                .await?;
            if first.is_none() {
                continue;
            }
            tracing::warn!(run = %run.id, finished = done, idle = ?idle, "run stalled: no job finished");
            if let Some(notifier) = &self.notifier {
                notifier
                    .send(&report::stall_payload(&run, done, idle))
                    .await;
            }
            stalled.push(run.id);
        }
        Ok(stalled)
    }

    /// Jobs of the run that finished so far (completed or failed for good).
    pub async fn finished_jobs(&self, id: &str) -> Result<u64, RunError> {
        let (completed, failed): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(RunKeys::new(&self.prefix, id).counts())
            .arg(&["completed", "failed"])
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(completed.unwrap_or(0) + failed.unwrap_or(0))
    }

    /// What a run's report says: its record, the database's CPU over it, its commonest
    /// failure reasons.
    pub async fn report(&self, run: RunRecord) -> Result<RunReport, RunError> {
        let mut redis = self.redis.clone();
        let reasons: HashMap<String, i64> = redis
            .hgetall(RunKeys::new(&self.prefix, &run.id).reasons())
            .await?;
        // Reasons of failures that were retried since count 0.
        let mut reasons: Vec<(String, u64)> = reasons
            .into_iter()
            .filter_map(|(reason, n)| Some((reason, u64::try_from(n).ok().filter(|&n| n > 0)?)))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons.truncate(TOP_REASONS);
        let from = u64::try_from(run.started_at.timestamp_millis()).unwrap_or(0);
        let to = run
            .ended_at
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .unwrap_or_else(crate::queue::now_ms);
        let cpu = budget::cpu_between(&mut redis, from, to).await?;
        Ok(RunReport { run, cpu, reasons })
    }
}

/// Runs observe the worker: each job that names a run is counted in its counters by the
/// settlement itself, and the runs of a batch's finished jobs are checked for their end.
impl Observer for Runs {
    fn count_for(&self, job: &Job) -> Option<FinishCount> {
        Runs::count_for(self, job)
    }

    fn finished<'a>(&'a self, jobs: &'a [&'a Job]) -> BoxFuture<'a, ()> {
        Box::pin(self.check_ends(jobs))
    }
}
