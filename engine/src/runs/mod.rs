//! Runs: one planned day of a pipeline. The record lives in MongoDB (`runs`: history for the
//! CLI and the back-office); the live counters live in Redis (one hash per run, counted by the
//! queue's settle script in the same call that settles each job, so no finish is lost or counted
//! twice), and the end is recorded in MongoDB exactly once, by whichever process first sees the
//! counts complete: the one whose conditional update finds the run still open.

use std::time::Duration;

use crate::queue::Redis;
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use crate::notify::Notifier;
use crate::queue::keys::{self, RunKeys};
use crate::retry::ride_through;
use crate::store::Store;

mod ends;
mod outbox;
pub mod report;

pub(crate) const RUNS: &str = "runs";

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

impl crate::retry::Transient for RunError {
    fn transient(&self) -> bool {
        match self {
            RunError::Mongo(e) => e.transient(),
            RunError::Redis(e) => e.transient(),
            RunError::Missing(_) | RunError::Timeout(..) => false,
        }
    }
}

/// A run's id: the day it is of and its number among that day's runs, `<date>-r<n>`.
fn run_id(date: &str, seq: u64) -> String {
    format!("{date}-r{seq}")
}

/// Whether `id` has a run id's form (`YYYY-MM-DD-r<n>`), whether or not such a run exists.
pub(crate) fn is_run_id(id: &str) -> bool {
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
    redis: Redis,
    store: Store,
    /// The queues' key prefix, whose hash tag the run keys carry (see `RunKeys`).
    prefix: String,
    notifier: Option<Notifier>,
    outbox: outbox::Outbox,
}

impl Runs {
    /// Runs of the jobs of queues under `prefix` (`TIDEGATE_QUEUE_PREFIX`).
    pub fn new(redis: Redis, store: Store, prefix: &str) -> Self {
        // Both outcomes exist from the start at 0, so that the first failed run is an
        // increase Prometheus can see (a counter born at 1 shows none).
        for outcome in ["succeeded", "failed"] {
            metrics::counter!(crate::telemetry::names::RUNS_ENDED, "outcome" => outcome)
                .increment(0);
        }
        Self {
            redis,
            store,
            prefix: prefix.to_owned(),
            notifier: None,
            outbox: outbox::Outbox::default(),
        }
    }

    /// Reports each run's end to `notifier` (from the process that records the end). Set it
    /// before the first use: the outbox's task keeps the `Runs` it started with.
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
            .hset(RunKeys::new(&self.prefix, id).counts(), "total", planned)
            .ignore()
            .expire(
                RunKeys::new(&self.prefix, id).counts(),
                COUNTER_TTL.as_secs() as i64,
            )
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        self.store
            .bounded(self.collection().update_one(
                doc! { "_id": id },
                doc! { "$set": { "planned": planned as i64, "skipped": skipped as i64 } },
            ))
            .await?;
        self.end_if_done(id).await?;
        Ok(())
    }

    /// Fills in the live counts of the runs that have not ended (the record has them only
    /// from the end on), in one round trip.
    pub(crate) async fn with_live_counts(&self, runs: &mut [RunRecord]) -> Result<(), RunError> {
        let open: Vec<&mut RunRecord> = runs.iter_mut().filter(|r| r.ended_at.is_none()).collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for run in &open {
            pipe.cmd("HMGET")
                .arg(RunKeys::new(&self.prefix, &run.id).counts())
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

    /// Runs of `pipeline` for `date` started by `trigger`.
    pub async fn find(
        &self,
        pipeline: &str,
        date: &str,
        trigger: &str,
    ) -> Result<Vec<RunRecord>, RunError> {
        let runs = self.collection();
        let find = runs
            .find(doc! { "pipeline": pipeline, "date": date, "trigger": trigger })
            .max_time(self.store.op_timeout());
        Ok(self
            .store
            .bounded(async { find.await?.try_collect().await })
            .await?)
    }

    /// The run of `pipeline` that succeeded last (by when it ended), whatever started it.
    pub async fn last_success(&self, pipeline: &str) -> Result<Option<RunRecord>, RunError> {
        let runs = self.collection();
        let find = runs
            .find_one(doc! { "pipeline": pipeline, "outcome": "succeeded" })
            .sort(doc! { "endedAt": -1 })
            .max_time(self.store.op_timeout());
        Ok(self.store.bounded(find).await?)
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

    /// Waits until the run has ended, checking its record with a deadline; a read that fails
    /// while the database is out of reach is tried again until the deadline.
    pub async fn wait_for_end(&self, id: &str, limit: Duration) -> Result<RunRecord, RunError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = ride_through("reading the run's record", Some(deadline), || self.get(id))
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
mod tests;
