//! What workers do to a queue: take jobs into active under a lock, settle them by their outcome
//! (each finish counted where its job says, in the same call), extend and release locks,
//! recover stalled jobs, and wait for work.

use std::time::Duration;

use redis::Value;

use super::{
    CHUNK, EXTEND, Job, JobOptions, NAMES, Queue, QueueError, RELEASE, Redis, Result, Retention,
    SETTLE, STALLED, TAKE, now_ms,
};
use crate::telemetry::names;

/// What one take returned.
#[derive(Debug, Default)]
pub struct Taken {
    /// Jobs now active under the caller's lock token.
    pub jobs: Vec<Job>,
    /// Jobs taken that cannot run (unreadable options, or a failure deferred by the stalled
    /// check), as much of each as could be read (its data, for the run it belongs to); the
    /// caller fails them with the reason given.
    pub malformed: Vec<(Job, String)>,
    /// When the earliest delayed job is due (ms since the epoch), if any.
    pub next_delayed: Option<u64>,
    /// Jobs looked at and left in place for the queue's other workers: their names are not
    /// among those the caller handles.
    pub left: u64,
}

/// Counters a job's finish is added to in the same script call that settles it, so that a
/// count can neither be lost (a reply lost after the settlement applied) nor doubled (a
/// settlement retried): `counts` is a HASH whose `completed` or `failed` field goes up by one,
/// `reasons` a HASH of failure reason (its first [`REASON_BYTES`]) → count. Both expire after
/// `ttl`, which each finish renews.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FinishCount {
    pub counts: String,
    pub reasons: String,
    pub ttl: Duration,
}

/// Failure reasons are counted by their first bytes (cut at a character boundary): enough to
/// tell them apart, bounded in size.
pub const REASON_BYTES: usize = 160;

/// `reason` cut to at most [`REASON_BYTES`] at a character boundary, as `settle.lua` cuts it.
pub fn clip_reason(reason: &str) -> &str {
    let mut end = reason.len().min(REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// How a taken job leaves active.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Completed {
        id: String,
        /// JSON text stored as the job's `returnvalue`.
        returnvalue: String,
        keep: Retention,
        count: Option<FinishCount>,
    },
    Failed {
        id: String,
        reason: String,
        stacktrace: Vec<String>,
        keep: Retention,
        /// The job used its last attempt (BullMQ then also emits `retries-exhausted`).
        exhausted: bool,
        count: Option<FinishCount>,
    },
    Retry {
        id: String,
        reason: String,
        stacktrace: Vec<String>,
        delay: Duration,
        lifo: bool,
    },
}

impl Settlement {
    pub fn id(&self) -> &str {
        match self {
            Settlement::Completed { id, .. }
            | Settlement::Failed { id, .. }
            | Settlement::Retry { id, .. } => id,
        }
    }

    /// The same settlement, its finish added to `count` (a retry finishes nothing).
    pub fn counted_in(mut self, count: Option<FinishCount>) -> Self {
        match &mut self {
            Settlement::Completed { count: c, .. } | Settlement::Failed { count: c, .. } => {
                *c = count
            }
            Settlement::Retry { .. } => {}
        }
        self
    }
}

/// What happened to one settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Done,
    /// The lock had expired: the stalled check may already have given the job to another worker.
    LockMissing,
    /// Another worker holds the job now.
    LockTaken,
}

/// Result of one stalled check.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StalledCheck {
    /// False when another worker ran the check within the interval.
    pub ran: bool,
    pub requeued: Vec<String>,
    /// Requeued jobs past the maximum stall count: their next taker fails them.
    pub over_limit: Vec<String>,
}

impl Queue {
    /// Promotes due delayed jobs, then moves up to `max` jobs into active, each locked with
    /// `token` for `lock`.
    pub async fn take(&self, max: usize, token: &str, lock: Duration) -> Result<Taken> {
        self.take_named(max, token, lock, &[]).await
    }

    /// [`Queue::take`] of only the jobs named one of `names` (every name when empty): the
    /// others stay where they are, in order, for the queue's other workers.
    pub async fn take_named(
        &self,
        max: usize,
        token: &str,
        lock: Duration,
        job_names: &[String],
    ) -> Result<Taken> {
        let k = &self.keys;
        let (rows, next, left): (Vec<Vec<Option<String>>>, u64, u64) = self
            .invoke(&TAKE)
            .arg(k.base())
            .arg(token)
            .arg(lock.as_millis() as u64)
            .arg(max)
            .arg(now_ms())
            .arg(job_names)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut taken = Taken {
            next_delayed: (next > 0).then_some(next),
            left,
            ..Taken::default()
        };
        for row in rows {
            match parse_taken(row)? {
                (job, None) => taken.jobs.push(job),
                (job, Some(reason)) => taken.malformed.push((job, reason)),
            }
        }
        Ok(taken)
    }

    /// The names of the jobs waiting to run (in wait, paused, prioritized or delayed), with how
    /// many of each, over the next `sample` of each state: what a worker that handles only
    /// some names would leave alone.
    pub async fn waiting_names(&self, sample: usize) -> Result<Vec<(String, u64)>> {
        let flat: Vec<redis::Value> = self
            .invoke(&NAMES)
            .arg(self.keys.base())
            .arg(sample.max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut counted = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let name: String = redis::from_redis_value(&pair[0])?;
            let count: u64 = redis::from_redis_value(&pair[1])?;
            counted.push((name, count));
        }
        Ok(counted)
    }

    /// Settles jobs this token holds, each by its own outcome, one round trip per [`CHUNK`];
    /// each finish is added to its [`FinishCount`] in the same call.
    pub async fn settle<'a>(
        &self,
        token: &str,
        settlements: &'a [Settlement],
    ) -> Result<Vec<Settled>> {
        let k = &self.keys;
        let mut out = Vec::with_capacity(settlements.len());
        for chunk in settlements.chunks(CHUNK) {
            // Each distinct counter's keys are passed once, after the queue's; a job names
            // its counter by position (0: none).
            let mut counters: Vec<&FinishCount> = Vec::new();
            let mut position = |count: &'a Option<FinishCount>| match count {
                None => 0,
                Some(c) => match counters.iter().position(|known| *known == c) {
                    Some(i) => i + 1,
                    None => {
                        counters.push(c);
                        counters.len()
                    }
                },
            };
            let mut args: Vec<[String; 7]> = Vec::with_capacity(chunk.len());
            for s in chunk {
                args.push(match s {
                    Settlement::Completed {
                        id,
                        returnvalue,
                        keep,
                        count,
                    } => {
                        let (keep_count, age) = keep_args(keep);
                        [
                            id.clone(),
                            "completed".into(),
                            returnvalue.clone(),
                            String::new(),
                            keep_count.to_string(),
                            age.to_string(),
                            position(count).to_string(),
                        ]
                    }
                    Settlement::Failed {
                        id,
                        reason,
                        stacktrace,
                        keep,
                        exhausted,
                        count,
                    } => {
                        let (keep_count, age) = keep_args(keep);
                        [
                            id.clone(),
                            if *exhausted { "exhausted" } else { "failed" }.into(),
                            reason.clone(),
                            stack_json(stacktrace),
                            keep_count.to_string(),
                            age.to_string(),
                            position(count).to_string(),
                        ]
                    }
                    Settlement::Retry {
                        id,
                        reason,
                        stacktrace,
                        delay,
                        lifo,
                    } => [
                        id.clone(),
                        "retry".into(),
                        reason.clone(),
                        stack_json(stacktrace),
                        (delay.as_millis() as u64).to_string(),
                        if *lifo { "1" } else { "0" }.into(),
                        "0".into(),
                    ],
                });
            }
            let mut inv = self.invoke(&SETTLE);
            for c in &counters {
                inv.key(&c.counts).key(&c.reasons);
            }
            inv.arg(k.base())
                .arg(token)
                .arg(now_ms())
                .arg(chunk.len())
                .arg(REASON_BYTES);
            for c in &counters {
                inv.arg(c.ttl.as_secs().max(1));
            }
            for job in &args {
                inv.arg(job.as_slice());
            }
            let codes: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
            if codes.len() != chunk.len() {
                return Err(QueueError::Reply(format!(
                    "settle returned {} codes for {} jobs",
                    codes.len(),
                    chunk.len()
                )));
            }
            out.extend(codes.into_iter().map(|code| match code {
                1 => Settled::Done,
                -6 => Settled::LockTaken,
                _ => Settled::LockMissing,
            }));
        }
        Ok(out)
    }

    /// Extends the locks `token` holds on `ids`; returns the ids whose lock was lost.
    pub async fn extend_locks(
        &self,
        token: &str,
        ids: &[String],
        lock: Duration,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.keys;
        let mut lost = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut inv = self.invoke(&EXTEND);
            inv.arg(k.base())
                .arg(token)
                .arg(lock.as_millis() as u64)
                .arg(chunk);
            let chunk_lost: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
            lost.extend(chunk_lost);
        }
        Ok(lost)
    }

    /// Returns unfinished jobs `token` holds to the front of wait (used at shutdown).
    pub async fn release(&self, token: &str, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let k = &self.keys;
        let mut released = 0;
        for chunk in ids.chunks(CHUNK) {
            let n: u64 = self
                .invoke(&RELEASE)
                .arg(k.base())
                .arg(token)
                .arg(chunk)
                .invoke_async(&mut self.conn.clone())
                .await?;
            released += n;
        }
        Ok(released)
    }

    /// Releases every active job `token` holds, as [`Queue::release`] does: after a take whose
    /// answer was lost (Redis frozen, then back), the jobs it took are known only by their
    /// lock. Scans the active list once.
    pub async fn release_all(&self, token: &str) -> Result<u64> {
        let released: u64 = self
            .invoke(&RELEASE)
            .arg(self.keys.base())
            .arg(token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released)
    }

    /// Runs the stalled check if no worker ran it within `interval`.
    pub async fn recover_stalled(
        &self,
        interval: Duration,
        max_stalled: u32,
    ) -> Result<StalledCheck> {
        let k = &self.keys;
        let (ran, requeued, over_limit): (i64, Vec<String>, Vec<String>) = self
            .invoke(&STALLED)
            .arg(k.base())
            .arg(now_ms())
            .arg(interval.as_millis().max(1) as u64)
            .arg(max_stalled)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if !requeued.is_empty() {
            metrics::counter!(names::JOBS_STALLED, "queue" => self.name.clone())
                .increment(requeued.len() as u64);
        }
        Ok(StalledCheck {
            ran: ran == 1,
            requeued,
            over_limit,
        })
    }

    /// Blocks on the queue's marker until a producer signals work or `timeout` passes. Needs a
    /// connection of its own (a [`connect`] of its own: blocking commands would stall every
    /// other command sharing a multiplexed connection).
    pub(crate) async fn wait_for_work(
        &self,
        blocking: &mut Redis,
        timeout: Duration,
    ) -> Result<()> {
        // BZPOPMIN takes seconds with decimals; 0 would block forever.
        let seconds = timeout.as_secs_f64().max(0.001);
        let _: Value = redis::cmd("BZPOPMIN")
            .arg(self.keys.marker())
            .arg(seconds)
            .query_async(blocking)
            .await?;
        Ok(())
    }
}

fn keep_args(keep: &Retention) -> (i64, i64) {
    let count = keep.count.map_or(-1, |c| c.min(i64::MAX as u64) as i64);
    let age = keep.age.map_or(-1, |a| a.as_secs().max(1) as i64);
    (count, age)
}

fn stack_json(stacktrace: &[String]) -> String {
    serde_json::to_string(stacktrace).unwrap_or_else(|_| "[]".to_owned())
}

/// One row of `take.lua`: {id, name, data, opts, timestamp, attemptsMade, deferred failure}.
/// The error is a broken reply; a job that cannot run comes with its reason, and with what of
/// it could be read.
fn parse_taken(row: Vec<Option<String>>) -> Result<(Job, Option<String>)> {
    let mut fields = row.into_iter();
    let mut next = || fields.next().flatten();
    let id = next().ok_or_else(|| QueueError::Reply("take returned a job without id".into()))?;
    let (name, data, opts, timestamp, attempts, deferred) =
        (next(), next(), next(), next(), next(), next());
    let mut cannot_run = deferred;
    if data.is_none() {
        cannot_run.get_or_insert_with(|| "job has no data field".to_owned());
    }
    let opts = match opts.as_deref().map(serde_json::from_str::<JobOptions>) {
        None => JobOptions::default(),
        Some(Ok(opts)) => opts,
        Some(Err(e)) => {
            cannot_run.get_or_insert_with(|| format!("job options are not valid: {e}"));
            JobOptions::default()
        }
    };
    let job = Job {
        id,
        name: name.unwrap_or_default(),
        raw_data: data.unwrap_or_default(),
        opts,
        timestamp: timestamp.and_then(|t| t.parse().ok()).unwrap_or(0),
        attempts_made: attempts.and_then(|a| a.parse().ok()).unwrap_or(0),
    };
    Ok((job, cannot_run))
}
