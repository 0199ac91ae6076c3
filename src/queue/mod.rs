//! The Redis job queue, in BullMQ v5's data layout so that BullMQ producers, BullMQ workers and
//! bull-board share queues with tidegate. Unlike BullMQ's open-source worker, every move here is
//! batched: adding, taking into active (with locks) and settling hundreds of jobs are each one
//! atomic Lua script and one round trip.
//!
//! [`keys`] spells the key names, [`job`] holds the job model and its pure rules, and the Lua
//! scripts in `lua/` do the atomic moves.

pub mod job;
pub mod keys;

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

pub use job::{Backoff, BackoffKind, Job, JobOptions, Keep, NewJob, Retention};
pub use keys::Keys;

use crate::telemetry::names;

static ADD: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/add.lua")));
static TAKE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/take.lua")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/settle.lua")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/extend.lua")));
static STALLED: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/stalled.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/release.lua")));
static PAUSE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/pause.lua")));
static RETRY: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/retry.lua")));
static PROMOTE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/promote.lua")));
static REMOVE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/remove.lua")));

/// Every script starts with the shared helpers of `lua/common.lua`.
fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("lua/common.lua")))
}

/// Jobs per script call: large enough to amortise the round trip, small enough that one call
/// never holds Redis (single-threaded) for long.
const CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job {index} cannot be added: {reason}")]
    InvalidJob { index: usize, reason: String },
    #[error("unexpected reply from a queue script: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// Opens a multiplexed, self-reconnecting connection. Fails when Redis cannot be reached now,
/// so a wrong `REDIS_URL` stops startup instead of surfacing later as stuck jobs.
///
/// Reconnection: the redis crate hands `factor` to backon as the multiplier of a 1-s first
/// delay, capped at 60 s by default, so its defaults wait a minute or more between attempts
/// once Redis is back (work sat still for 96-117 s after a restart). Here every attempt is
/// about a second apart, three per command that finds the connection broken; the next
/// command starts three more.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_factor(1)
        .set_max_delay(1000)
        .set_number_of_retries(2)
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(RESPONSE_TIMEOUT);
    client.get_connection_manager_with_config(config).await
}

/// One `PING` on a connection of its own, with no retry: whether Redis answers now (start-up
/// asks this before it opens connections that retry on their own).
pub async fn ping_once(url: &str) -> redis::RedisResult<()> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(drop)
}

/// The longest tidegate waits for any Redis reply. Above the longest blocking wait a worker
/// asks for (its idle block), well above any script's run time.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// One `PING` round trip.
pub async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The result of adding one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub id: String,
    /// A job with this caller-given id already existed; nothing was written.
    pub duplicate: bool,
}

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

/// A job the back-office moved or removed: its id, the state it left, its data (JSON text,
/// which tells the run it belongs to) and, for a failed one, why it had failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub id: String,
    pub from: JobState,
    pub data: String,
    pub reason: String,
}

/// What removing one job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed(Moved),
    /// A worker holds the job; it is left alone.
    Locked,
    Missing,
}

/// Jobs per state, as BullMQ's `getJobCounts` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub waiting: u64,
    pub paused: u64,
    pub prioritized: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn by_state(&self) -> [(&'static str, u64); 7] {
        [
            ("waiting", self.waiting),
            ("paused", self.paused),
            ("prioritized", self.prioritized),
            ("active", self.active),
            ("delayed", self.delayed),
            ("completed", self.completed),
            ("failed", self.failed),
        ]
    }
}

/// One queue: a name under a key prefix, on a shared connection. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    keys: Keys,
    name: String,
}

impl Queue {
    pub fn new(conn: ConnectionManager, prefix: &str, name: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix, name),
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's connection, for what lives beside the queue's keys.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub async fn add(&self, job: NewJob) -> Result<Added> {
        let mut added = self.add_bulk(std::slice::from_ref(&job)).await?;
        added
            .pop()
            .ok_or_else(|| QueueError::Reply("add returned no id".into()))
    }

    /// Adds jobs in order, one round trip per [`CHUNK`]. A job whose caller-given id exists
    /// already is reported as a duplicate and not written. Ids are checked before anything is
    /// written, so a bad one rejects the call whole.
    pub async fn add_bulk(&self, jobs: &[NewJob]) -> Result<Vec<Added>> {
        let mut encoded = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            if let Some(id) = &job.opts.job_id {
                job::check_custom_id(id)
                    .map_err(|reason| QueueError::InvalidJob { index, reason })?;
            }
            let data = serde_json::to_string(&job.data).map_err(|e| QueueError::InvalidJob {
                index,
                reason: e.to_string(),
            })?;
            let opts = serde_json::to_string(&job.opts).map_err(|e| QueueError::InvalidJob {
                index,
                reason: e.to_string(),
            })?;
            encoded.push((job, data, opts));
        }
        let k = &self.keys;
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in encoded.chunks(CHUNK) {
            let mut inv = ADD.prepare_invoke();
            inv.key(k.wait())
                .key(k.paused())
                .key(k.meta())
                .key(k.id())
                .key(k.delayed())
                .key(k.prioritized())
                .key(k.priority_counter())
                .key(k.events())
                .key(k.marker())
                .arg(k.base())
                .arg(now_ms())
                .arg(chunk.len());
            for (job, data, opts) in chunk {
                inv.arg(job.opts.job_id.as_deref().unwrap_or(""))
                    .arg(&job.name)
                    .arg(data)
                    .arg(opts)
                    .arg(job.opts.delay)
                    .arg(job.opts.priority)
                    .arg(if job.opts.lifo { "1" } else { "0" });
            }
            let (ids, dups): (Vec<String>, Vec<i64>) =
                inv.invoke_async(&mut self.conn.clone()).await?;
            if ids.len() != chunk.len() || dups.len() != chunk.len() {
                return Err(QueueError::Reply(format!(
                    "add returned {} ids for {} jobs",
                    ids.len(),
                    chunk.len()
                )));
            }
            out.extend(ids.into_iter().zip(dups).map(|(id, dup)| Added {
                id,
                duplicate: dup == 1,
            }));
        }
        let new = out.iter().filter(|a| !a.duplicate).count();
        metrics::counter!(names::JOBS_ADDED, "queue" => self.name.clone()).increment(new as u64);
        Ok(out)
    }

    /// Promotes due delayed jobs, then moves up to `max` jobs into active, each locked with
    /// `token` for `lock`.
    pub async fn take(&self, max: usize, token: &str, lock: Duration) -> Result<Taken> {
        let k = &self.keys;
        let (rows, next): (Vec<Vec<Option<String>>>, u64) = TAKE
            .key(k.wait())
            .key(k.active())
            .key(k.prioritized())
            .key(k.delayed())
            .key(k.paused())
            .key(k.meta())
            .key(k.marker())
            .key(k.events())
            .key(k.priority_counter())
            .arg(k.base())
            .arg(token)
            .arg(lock.as_millis() as u64)
            .arg(max)
            .arg(now_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut taken = Taken {
            next_delayed: (next > 0).then_some(next),
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
                            "c".into(),
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
                            if *exhausted { "x" } else { "f" }.into(),
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
                        "r".into(),
                        reason.clone(),
                        stack_json(stacktrace),
                        (delay.as_millis() as u64).to_string(),
                        if *lifo { "1" } else { "0" }.into(),
                        "0".into(),
                    ],
                });
            }
            let mut inv = SETTLE.prepare_invoke();
            inv.key(k.active())
                .key(k.completed())
                .key(k.failed())
                .key(k.delayed())
                .key(k.wait())
                .key(k.paused())
                .key(k.meta())
                .key(k.events())
                .key(k.marker())
                .key(k.stalled())
                .key(k.prioritized())
                .key(k.priority_counter());
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
            let mut inv = EXTEND.prepare_invoke();
            inv.key(k.stalled())
                .arg(k.base())
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
        let released: u64 = RELEASE
            .key(k.active())
            .key(k.wait())
            .key(k.paused())
            .key(k.meta())
            .key(k.marker())
            .key(k.events())
            .arg(k.base())
            .arg(token)
            .arg(ids)
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
        let (ran, requeued, over_limit): (i64, Vec<String>, Vec<String>) = STALLED
            .key(k.stalled_check())
            .key(k.stalled())
            .key(k.active())
            .key(k.wait())
            .key(k.paused())
            .key(k.meta())
            .key(k.marker())
            .key(k.events())
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

    pub async fn pause(&self) -> Result<()> {
        self.pause_or_resume("pause").await
    }

    pub async fn resume(&self) -> Result<()> {
        self.pause_or_resume("resume").await
    }

    async fn pause_or_resume(&self, what: &str) -> Result<()> {
        let k = &self.keys;
        let _: i64 = PAUSE
            .key(k.wait())
            .key(k.paused())
            .key(k.meta())
            .key(k.marker())
            .key(k.events())
            .key(k.prioritized())
            .key(k.delayed())
            .arg(what)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool> {
        let paused: bool = redis::cmd("HEXISTS")
            .arg(self.keys.meta())
            .arg("paused")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(paused)
    }

    /// Jobs per state, read in one round trip.
    pub async fn counts(&self) -> Result<Counts> {
        let k = &self.keys;
        let (waiting, paused, prioritized, active, delayed, completed, failed) = redis::pipe()
            .llen(k.wait())
            .llen(k.paused())
            .zcard(k.prioritized())
            .llen(k.active())
            .zcard(k.delayed())
            .zcard(k.completed())
            .zcard(k.failed())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Counts {
            waiting,
            paused,
            prioritized,
            active,
            delayed,
            completed,
            failed,
        })
    }

    /// One page of the jobs in `state`, with the state's total: lists newest first (producers
    /// push on the left), completed and failed by most recently finished, delayed and
    /// prioritized by when they run.
    pub async fn jobs(
        &self,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<JobView>)> {
        let k = &self.keys;
        let (start, stop) = (offset as isize, (offset + limit.max(1)) as isize - 1);
        let mut conn = self.conn.clone();
        let key = match state {
            JobState::Waiting => k.wait(),
            JobState::Paused => k.paused(),
            JobState::Active => k.active(),
            JobState::Completed => k.completed(),
            JobState::Failed => k.failed(),
            JobState::Delayed => k.delayed(),
            JobState::Prioritized => k.prioritized(),
        };
        let mut page = redis::pipe();
        match state {
            JobState::Waiting | JobState::Paused | JobState::Active => {
                page.llen(&key).lrange(&key, start, stop)
            }
            JobState::Completed | JobState::Failed => page.zcard(&key).zrevrange(&key, start, stop),
            JobState::Delayed | JobState::Prioritized => page.zcard(&key).zrange(&key, start, stop),
        };
        let (total, mut ids): (u64, Vec<String>) = page.query_async(&mut conn).await?;
        // An id another client put in a state that names a queue key would list that key as
        // a job.
        ids.retain(|id| keys::can_be_job_id(id));
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(k.job(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let views = ids
            .into_iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| JobView::from_hash(id, h))
            .collect();
        Ok((total, views))
    }

    /// One job in full, or `None` when there is no such job. An id that cannot be a job's
    /// (see [`keys::can_be_job_id`]) is `None` without a word to Redis: its key is the queue's.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>> {
        if !keys::can_be_job_id(id) {
            return Ok(None);
        }
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((!hash.is_empty()).then(|| JobView::from_hash(id.to_owned(), hash)))
    }

    /// Retries one failed job; `None` when `id` is not in failed (or cannot be a job's).
    pub async fn retry(&self, id: &str) -> Result<Option<Moved>> {
        if !keys::can_be_job_id(id) {
            return Ok(None);
        }
        Ok(self.retry_script(0, Some(id)).await?.pop())
    }

    /// Retries every job that was in failed when called, in chunks; jobs failing again
    /// meanwhile are not taken a second time.
    pub async fn retry_all_failed(&self) -> Result<Vec<Moved>> {
        let failed: u64 = redis::cmd("ZCARD")
            .arg(self.keys.failed())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut left = usize::try_from(failed).unwrap_or(usize::MAX);
        let mut retried = Vec::new();
        while left > 0 {
            let chunk = self.retry_script(left.min(CHUNK), None).await?;
            if chunk.is_empty() {
                break;
            }
            left = left.saturating_sub(chunk.len());
            retried.extend(chunk);
        }
        Ok(retried)
    }

    async fn retry_script(&self, most: usize, id: Option<&str>) -> Result<Vec<Moved>> {
        let reply: Vec<String> = self
            .requeue_call(&RETRY, self.keys.failed())
            .arg(most)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(reply
            .chunks_exact(3)
            .map(|job| Moved {
                id: job[0].clone(),
                from: JobState::Failed,
                data: job[1].clone(),
                reason: job[2].clone(),
            })
            .collect())
    }

    /// A call of a script that puts jobs from the set `from` back in line (retry, promote):
    /// they share their keys and first argument.
    fn requeue_call<'a>(&self, script: &'a Script, from: String) -> redis::ScriptInvocation<'a> {
        let k = &self.keys;
        let mut call = script.prepare_invoke();
        call.key(from)
            .key(k.wait())
            .key(k.paused())
            .key(k.meta())
            .key(k.marker())
            .key(k.events())
            .key(k.prioritized())
            .key(k.priority_counter())
            .arg(k.base());
        call
    }

    /// Moves a delayed job to wait now; false when it is not delayed (or cannot be a job's).
    pub async fn promote(&self, id: &str) -> Result<bool> {
        if !keys::can_be_job_id(id) {
            return Ok(false);
        }
        let promoted: i64 = self
            .requeue_call(&PROMOTE, self.keys.delayed())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(promoted == 1)
    }

    /// Removes a job and its data, unless a worker holds it. An id that cannot be a job's is
    /// missing, and its key (the queue's own) is left alone.
    pub async fn remove(&self, id: &str) -> Result<Removal> {
        if !keys::can_be_job_id(id) {
            return Ok(Removal::Missing);
        }
        let k = &self.keys;
        let reply: Vec<String> = REMOVE
            .key(k.wait())
            .key(k.paused())
            .key(k.active())
            .key(k.prioritized())
            .key(k.delayed())
            .key(k.completed())
            .key(k.failed())
            .key(k.events())
            .key(k.stalled())
            .arg(k.base())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_slice() {
            [] => Ok(Removal::Missing),
            [locked] if locked == "locked" => Ok(Removal::Locked),
            [from, data, reason] => Ok(Removal::Removed(Moved {
                id: id.to_owned(),
                // A hash in no state (half-written by a crashed producer) counts as waiting.
                from: from.parse().unwrap_or(JobState::Waiting),
                data: data.clone(),
                reason: reason.clone(),
            })),
            other => Err(QueueError::Reply(format!("remove returned {other:?}"))),
        }
    }

    /// Blocks on the queue's marker until a producer signals work or `timeout` passes. Needs a
    /// connection of its own (a [`connect`] of its own: blocking commands would stall every
    /// other command sharing a multiplexed connection).
    pub async fn wait_for_work(
        &self,
        blocking: &mut ConnectionManager,
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

/// The states a job can be listed by, in BullMQ's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Waiting,
    Paused,
    Prioritized,
    Active,
    Delayed,
    Completed,
    Failed,
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "waiting" => JobState::Waiting,
            "paused" => JobState::Paused,
            "prioritized" => JobState::Prioritized,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            _ => {
                return Err(format!(
                    "{s:?} is not a state: waiting, paused, prioritized, active, delayed, completed or failed"
                ));
            }
        })
    }
}

/// A job as the back-office shows it: its hash, with JSON fields parsed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub data: serde_json::Value,
    pub opts: serde_json::Value,
    pub attempts_made: u64,
    pub failed_reason: Option<String>,
    pub stacktrace: serde_json::Value,
    pub returnvalue: serde_json::Value,
    /// Added, started and finished, ms since the epoch.
    pub timestamp: Option<u64>,
    pub processed_on: Option<u64>,
    pub finished_on: Option<u64>,
}

impl JobView {
    fn from_hash(id: String, mut h: HashMap<String, String>) -> Self {
        // Stored JSON that does not parse is shown as the text it is.
        let json = |text: Option<String>| match text {
            None => serde_json::Value::Null,
            Some(t) => serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)),
        };
        let number = |text: Option<String>| text.and_then(|t| t.parse::<u64>().ok());
        Self {
            id,
            name: h.remove("name").unwrap_or_default(),
            data: json(h.remove("data")),
            opts: json(h.remove("opts")),
            attempts_made: number(h.remove("atm")).unwrap_or(0),
            failed_reason: h.remove("failedReason"),
            stacktrace: json(h.remove("stacktrace")),
            returnvalue: json(h.remove("returnvalue")),
            timestamp: number(h.remove("timestamp")),
            processed_on: number(h.remove("processedOn")),
            finished_on: number(h.remove("finishedOn")),
        }
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
