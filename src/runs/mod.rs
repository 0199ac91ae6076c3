//! Runs: one planned day of a pipeline. The record lives in MongoDB (`runs`: history for the
//! CLI and the back-office); the live counters live in Redis (one hash per run, counted by the
//! queue's settle script in the same call that settles each job, so no finish is lost or counted
//! twice), and the end is recorded in MongoDB exactly once, by whichever process first sees the
//! counts complete: the one whose conditional update finds the run still open.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::control::budget;
use crate::notify::Notifier;
use crate::queue::keys::{self, RunKeys};
use crate::queue::{FinishCount, Job, JobState, Moved, clip_reason};
use crate::store::Store;
use crate::telemetry::names;

pub mod report;

use report::RunReport;

pub const RUNS: &str = "runs";

/// How long run counters stay in Redis after planning.
const COUNTER_TTL: Duration = Duration::from_secs(14 * 86_400);

/// A run as recorded in MongoDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub pipeline: String,
    pub date: String,
    /// `schedule`, `rerun`, `demo`, ...
    pub trigger: String,
    pub started_at: bson::DateTime,
    /// Jobs enqueued; set once planning is done.
    pub planned: Option<i64>,
    /// Targets not enqueued (an id already queued, or an id BullMQ cannot take).
    #[serde(default)]
    pub skipped: i64,
    #[serde(default)]
    pub completed: i64,
    #[serde(default)]
    pub failed: i64,
    pub ended_at: Option<bson::DateTime>,
    /// `succeeded` (no job failed) or `failed`, once ended.
    pub outcome: Option<String>,
}

impl RunRecord {
    pub fn wall(&self) -> Option<Duration> {
        let ended = self.ended_at?;
        let ms = ended.timestamp_millis() - self.started_at.timestamp_millis();
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("run {0} does not exist")]
    Missing(String),
    #[error("run {0} did not end within {1:?}")]
    Timeout(String, Duration),
}

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

/// A run's id: the day it is of and its number among that day's runs, `<date>-r<n>`.
fn run_id(date: &str, seq: u64) -> String {
    format!("{date}-r{seq}")
}

/// Whether `id` has a run id's form (`YYYY-MM-DD-r<n>`), whether or not such a run exists.
pub fn is_run_id(id: &str) -> bool {
    let digits = |t: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
    };
    id.split_once("-r").is_some_and(|(date, n)| {
        let parts: Vec<&str> = date.split('-').collect();
        matches!(parts.as_slice(), [y, m, d] if digits(y, 4..=4) && digits(m, 2..=2) && digits(d, 2..=2))
            && digits(n, 1..=19)
    })
}

/// Whether a write failed on a unique index (E11000).
fn duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => {
            e.code == 11000
        }
        mongodb::error::ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}

fn run_of(data: &str) -> Option<String> {
    serde_json::from_str::<RunRef>(data).ok()?.run_id
}

/// The `runId` any job may carry in its data.
#[derive(Deserialize)]
struct RunRef {
    #[serde(rename = "runId")]
    run_id: Option<String>,
}

#[derive(Clone)]
pub struct Runs {
    redis: ConnectionManager,
    store: Store,
    notifier: Option<Notifier>,
}

/// Reasons a run report lists.
const TOP_REASONS: usize = 3;

impl Runs {
    pub fn new(redis: ConnectionManager, store: Store) -> Self {
        Self {
            redis,
            store,
            notifier: None,
        }
    }

    /// Reports each run's end to `notifier` (from the process that records the end).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    fn collection(&self) -> mongodb::Collection<RunRecord> {
        self.store.database().collection(RUNS)
    }

    /// Records a new run of `pipeline` for `date`; its id is `<date>-r<n>`. `n` comes from a
    /// counter in Redis (ids unique across the databases that share one Redis, whose run
    /// counters live there), raised above the day's highest in MongoDB (the counter starts over
    /// when Redis loses its data); the record's `_id` settles a race: the loser picks again.
    pub async fn start(
        &self,
        pipeline: &str,
        date: &str,
        trigger: &str,
    ) -> Result<RunRecord, RunError> {
        let mut tries = 0;
        loop {
            let counted: u64 = redis::cmd("INCR")
                .arg(keys::run_sequence(date))
                .query_async(&mut self.redis.clone())
                .await?;
            let seq = counted.max(self.last_seq(date).await? + 1);
            if seq > counted {
                let _: () = redis::cmd("SET")
                    .arg(keys::run_sequence(date))
                    .arg(seq)
                    .query_async(&mut self.redis.clone())
                    .await?;
            }
            let record = RunRecord {
                id: run_id(date, seq),
                pipeline: pipeline.to_owned(),
                date: date.to_owned(),
                trigger: trigger.to_owned(),
                started_at: bson::DateTime::now(),
                planned: None,
                skipped: 0,
                completed: 0,
                failed: 0,
                ended_at: None,
                outcome: None,
            };
            match self
                .store
                .bounded(self.collection().insert_one(&record))
                .await
            {
                Ok(_) => return Ok(record),
                Err(e) if duplicate_key(&e) && tries < 10 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The highest `n` of the day's run ids `<date>-r<n>`, 0 when there are none.
    async fn last_seq(&self, date: &str) -> Result<u64, RunError> {
        let runs = self.store.database().collection::<Document>(RUNS);
        let find = runs
            .find(doc! { "date": date })
            .projection(doc! { "_id": 1 })
            .max_time(self.store.op_timeout());
        let ids: Vec<Document> = self
            .store
            .bounded(async { find.await?.try_collect().await })
            .await?;
        let prefix = format!("{date}-r");
        Ok(ids
            .iter()
            .filter_map(|d| d.get_str("_id").ok()?.strip_prefix(&prefix)?.parse().ok())
            .max()
            .unwrap_or(0))
    }

    /// Planning is done: `planned` jobs are queued. Ends the run now if they already finished
    /// (or there were none).
    pub async fn planned(&self, id: &str, planned: u64, skipped: u64) -> Result<(), RunError> {
        let _: () = redis::pipe()
            .hset(RunKeys::new(id).counts(), "total", planned)
            .ignore()
            .expire(RunKeys::new(id).counts(), COUNTER_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        self.store
            .bounded(self.collection().update_one(
                doc! { "_id": id },
                doc! { "$set": { "planned": planned as i64, "skipped": skipped as i64 } },
            ))
            .await?;
        self.check_end(id).await?;
        Ok(())
    }

    /// Where the queue counts the finish of `job`: the counters of the run its data names
    /// (`runId`), if any.
    pub fn count_for(job: &Job) -> Option<FinishCount> {
        let RunRef { run_id: Some(run) } = job.data::<RunRef>().ok()? else {
            return None;
        };
        Some(FinishCount {
            counts: RunKeys::new(&run).counts(),
            reasons: RunKeys::new(&run).reasons(),
            ttl: COUNTER_TTL,
        })
    }

    /// Ends the runs of `jobs` that are done, once their finishes are counted; logs rather
    /// than fails, since the jobs themselves are settled (and the stall check looks again).
    pub async fn check_ends(&self, jobs: &[&Job]) {
        let mut runs: Vec<String> = jobs
            .iter()
            .filter_map(|job| job.data::<RunRef>().ok()?.run_id)
            .collect();
        runs.sort_unstable();
        runs.dedup();
        for run in runs {
            if let Err(e) = self.check_end(&run).await {
                tracing::warn!(run = %run, error = %e, "cannot check whether a run ended");
            }
        }
    }

    /// Counts jobs removed from the back-office before they finished as failed, so their run
    /// can still end (and says why it failed).
    pub async fn record_removed(&self, jobs: &[Moved]) -> Result<(), RunError> {
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
            let live: bool = redis.exists(RunKeys::new(&run).counts()).await?;
            if !live {
                continue;
            }
            // Counts first: once they are short, no process ends the run on the old ones, and
            // the reopened record can only be ended again when the retried jobs finish.
            let mut pipe = redis::pipe();
            pipe.hincr(RunKeys::new(&run).counts(), "failed", -these.failed)
                .ignore();
            for (reason, n) in &these.reasons {
                pipe.hincr(RunKeys::new(&run).reasons(), reason, -n)
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
            self.check_end(&run).await?;
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
            pipe.hincr(RunKeys::new(run).counts(), "failed", these.failed)
                .ignore();
            for (reason, n) in &these.reasons {
                pipe.hincr(RunKeys::new(run).reasons(), reason, *n).ignore();
            }
            if !these.reasons.is_empty() {
                pipe.expire(RunKeys::new(run).reasons(), COUNTER_TTL.as_secs() as i64)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
        for run in failures.keys() {
            if let Err(e) = self.check_end(run).await {
                tracing::warn!(run = %run, error = %e, "cannot check whether a run ended");
            }
        }
        Ok(())
    }

    /// Records the run's end if its jobs have all finished and no process recorded it yet;
    /// true when this call did.
    async fn check_end(&self, id: &str) -> Result<bool, RunError> {
        let (total, completed, failed): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(RunKeys::new(id).counts())
                .arg(&["total", "completed", "failed"])
                .query_async(&mut self.redis.clone())
                .await?;
        let (completed, failed) = (completed.unwrap_or(0), failed.unwrap_or(0));
        let Some(total) = total else {
            return Ok(false);
        };
        if completed + failed < total {
            return Ok(false);
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
            return Ok(false);
        }
        metrics::counter!(names::RUNS_ENDED, "outcome" => outcome).increment(1);
        if let Some(run) = self.get(id).await? {
            tracing::info!(
                run = %run.id, pipeline = %run.pipeline, date = %run.date, trigger = %run.trigger,
                jobs = total, completed, failed, outcome,
                wall_ms = run.wall().map_or(0, |w| w.as_millis() as u64),
                "run ended"
            );
            if self.notifier.is_some() {
                // Off the caller's path: a slow or silent webhook (four tries of up to 10 s)
                // never holds the batch whose jobs ended the run.
                let runs = self.clone();
                tokio::spawn(async move { runs.send_report(run).await });
            }
        }
        Ok(true)
    }

    async fn send_report(&self, run: RunRecord) {
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
            if self.check_end(&run.id).await? {
                continue;
            }
            let done = self.finished_jobs(&run.id).await?;
            let key = RunKeys::new(&run.id).progress();
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
                .arg(RunKeys::new(&run.id).stalled())
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
            .arg(RunKeys::new(id).counts())
            .arg(&["completed", "failed"])
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(completed.unwrap_or(0) + failed.unwrap_or(0))
    }

    /// What a run's report says: its record, the database's CPU over it, its commonest
    /// failure reasons.
    pub async fn report(&self, run: RunRecord) -> Result<RunReport, RunError> {
        let mut redis = self.redis.clone();
        let reasons: HashMap<String, i64> = redis.hgetall(RunKeys::new(&run.id).reasons()).await?;
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

    /// Fills in the live counts of the runs that have not ended (the record has them only
    /// from the end on), in one round trip.
    pub async fn with_live_counts(&self, runs: &mut [RunRecord]) -> Result<(), RunError> {
        let open: Vec<&mut RunRecord> = runs.iter_mut().filter(|r| r.ended_at.is_none()).collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for run in &open {
            pipe.cmd("HMGET")
                .arg(RunKeys::new(&run.id).counts())
                .arg(&["completed", "failed"]);
        }
        let counts: Vec<(Option<i64>, Option<i64>)> =
            pipe.query_async(&mut self.redis.clone()).await?;
        for (run, (completed, failed)) in open.into_iter().zip(counts) {
            run.completed = completed.unwrap_or(0);
            run.failed = failed.unwrap_or(0);
        }
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<RunRecord>, RunError> {
        Ok(self
            .store
            .bounded(
                self.collection()
                    .find_one(doc! { "_id": id })
                    .max_time(self.store.op_timeout()),
            )
            .await?)
    }

    /// Runs of `date` started by `trigger`.
    pub async fn find(&self, date: &str, trigger: &str) -> Result<Vec<RunRecord>, RunError> {
        let runs = self.collection();
        let find = runs
            .find(doc! { "date": date, "trigger": trigger })
            .max_time(self.store.op_timeout());
        Ok(self
            .store
            .bounded(async { find.await?.try_collect().await })
            .await?)
    }

    /// The `limit` most recently started runs (of `date`, if given), newest first.
    pub async fn latest(&self, date: Option<&str>, limit: i64) -> Result<Vec<RunRecord>, RunError> {
        let filter = match date {
            Some(date) => doc! { "date": date },
            None => doc! {},
        };
        let runs = self.collection();
        let find = runs
            .find(filter)
            .sort(doc! { "startedAt": -1 })
            .limit(limit)
            .max_time(self.store.op_timeout());
        Ok(self
            .store
            .bounded(async { find.await?.try_collect().await })
            .await?)
    }

    /// Waits until the run has ended, checking its record with a deadline.
    pub async fn wait_for_end(&self, id: &str, limit: Duration) -> Result<RunRecord, RunError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = self
                .get(id)
                .await?
                .ok_or_else(|| RunError::Missing(id.to_owned()))?;
            if run.ended_at.is_some() {
                return Ok(run);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RunError::Timeout(id.to_owned(), limit));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_a_date_and_a_number() {
        assert_eq!(run_id("2026-11-24", 3), "2026-11-24-r3");
        assert!(is_run_id(&run_id("2026-11-24", 3)));
        assert!(
            is_run_id("2026-02-31-r1"),
            "the form only: no such day is merely not found"
        );
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24-r",
            "2026-11-24-rx",
            "26-11-24-r1",
            "2026-11-24-r1-x",
        ] {
            assert!(!is_run_id(bad), "{bad:?}");
        }
    }
}
