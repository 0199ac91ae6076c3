//! What the back-office does to a queue: counts and listings by state, one job's view, pause and
//! resume, retry, promote and remove; each move that changes state is one Lua script.

use std::collections::HashMap;

use super::{CHUNK, PAUSE, PROMOTE, Queue, QueueError, REMOVE, RETRY, Result, keys};

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
    pub(crate) fn by_state(&self) -> [(&'static str, u64); 7] {
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

impl Queue {
    pub async fn pause(&self) -> Result<()> {
        self.pause_or_resume("pause").await
    }

    pub async fn resume(&self) -> Result<()> {
        self.pause_or_resume("resume").await
    }

    async fn pause_or_resume(&self, what: &str) -> Result<()> {
        let _: i64 = self
            .invoke(&PAUSE)
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
    pub(crate) async fn retry_all_failed(&self) -> Result<Vec<Moved>> {
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
            .invoke(&RETRY)
            .arg(self.keys.base())
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

    /// Moves a delayed job to wait now; false when it is not delayed (or cannot be a job's).
    pub async fn promote(&self, id: &str) -> Result<bool> {
        if !keys::can_be_job_id(id) {
            return Ok(false);
        }
        let promoted: i64 = self
            .invoke(&PROMOTE)
            .arg(self.keys.base())
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
        let reply: Vec<String> = self
            .invoke(&REMOVE)
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
}
