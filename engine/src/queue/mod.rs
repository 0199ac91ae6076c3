//! The Redis job queue, in BullMQ v5's data layout so that BullMQ producers, BullMQ workers and
//! bull-board share queues with tidegate. Unlike BullMQ's open-source worker, every move here is
//! batched: adding, taking into active (with locks) and settling hundreds of jobs are each one
//! atomic Lua script and one round trip.
//!
//! [`keys`] spells the key names, [`job`] holds the job model and its pure rules; `conn` the connection
//! (one server or a cluster); here are the queue and what producers do (add); `work` holds what workers do (take,
//! settle, extend, release, recover stalled jobs, wait), `manage` what the back-office does
//! (counts, listings, pause, retry, promote, remove). The Lua scripts in `lua/` do the atomic
//! moves, one file each.

mod conn;
pub mod job;
pub mod keys;
mod manage;
mod work;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Script;

pub use conn::{Redis, connect, ping};
pub(crate) use conn::{check_sentinel_url, ping_once};
pub use job::{Backoff, BackoffKind, Job, JobOptions, Keep, NewJob, Retention};
pub use keys::Keys;
pub use manage::{Counts, JobState, JobView, Moved, Removal};
pub use work::{FinishCount, REASON_BYTES, Settled, Settlement, StalledCheck, Taken, clip_reason};

use crate::telemetry::names;

/// A queue script: its Lua (after `lua/common.lua`) and the queue keys it takes as KEYS, in the
/// order its header numbers them. Each script's keys are listed here and nowhere else; a test
/// holds every list to its script's header.
pub(crate) struct QueueScript {
    /// The script as written, for the test that reads its header.
    #[cfg_attr(not(test), expect(dead_code))]
    lua: &'static str,
    script: Script,
    keys: fn(&Keys) -> Vec<String>,
}

impl QueueScript {
    fn new(lua: &'static str, keys: fn(&Keys) -> Vec<String>) -> Self {
        Self {
            lua,
            script: Script::new(&format!("{}\n{lua}", include_str!("lua/common.lua"))),
            keys,
        }
    }
}

/// Declares a queue script: the static, its file in `lua/`, and its keys in KEYS order.
macro_rules! queue_script {
    ($name:ident, $file:literal, [$($key:ident),*]) => {
        static $name: LazyLock<QueueScript> = LazyLock::new(|| {
            QueueScript::new(include_str!(concat!("lua/", $file, ".lua")), |k| vec![$(k.$key()),*])
        });
    };
}

queue_script! { ADD, "add", [wait, paused, meta, id, delayed, prioritized, priority_counter, events, marker] }
queue_script! { TAKE, "take", [wait, active, prioritized, delayed, paused, meta, marker, events, priority_counter] }
queue_script! { NAMES, "names", [wait, paused, prioritized, delayed] }
queue_script! { SETTLE, "settle", [active, completed, failed, delayed, wait, paused, meta, events, marker, stalled, prioritized, priority_counter] }
queue_script! { EXTEND, "extend", [stalled] }
queue_script! { STALLED, "stalled", [stalled_check, stalled, active, wait, paused, meta, marker, events] }
queue_script! { RELEASE, "release", [active, wait, paused, meta, marker, events] }
queue_script! { PAUSE, "pause", [wait, paused, meta, marker, events, prioritized, delayed] }
queue_script! { RETRY, "retry", [failed, wait, paused, meta, marker, events, prioritized, priority_counter] }
queue_script! { PROMOTE, "promote", [delayed, wait, paused, meta, marker, events, prioritized, priority_counter] }
queue_script! { REMOVE, "remove", [wait, paused, active, prioritized, delayed, completed, failed, events, stalled] }

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

/// Whether a Redis error says Redis cannot be reached now (down, silent, loading, or in a
/// fail-over), rather than that this one command was wrong.
pub fn unreachable(e: &redis::RedisError) -> bool {
    use redis::ErrorKind::*;
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            BusyLoadingError
                | TryAgain
                | ClusterDown
                | MasterDown
                | ReadOnly
                | ClusterConnectionNotFound
                | MasterNameNotFoundBySentinel
                | NoValidReplicasFoundBySentinel
        )
}

impl crate::retry::Transient for redis::RedisError {
    fn transient(&self) -> bool {
        unreachable(self)
    }
}

impl QueueError {
    /// Whether the error says Redis cannot be reached now: what opens its circuit.
    pub fn unreachable(&self) -> bool {
        match self {
            QueueError::Redis(e) => unreachable(e),
            QueueError::InvalidJob { .. } | QueueError::Reply(_) => false,
        }
    }
}

impl crate::retry::Transient for QueueError {
    fn transient(&self) -> bool {
        self.unreachable()
    }
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

/// One queue: a name under a key prefix, on a shared connection. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: Redis,
    keys: Keys,
    name: String,
}

impl Queue {
    pub fn new(conn: Redis, prefix: &str, name: &str) -> Self {
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
    pub fn connection(&self) -> Redis {
        self.conn.clone()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A call of `script` with this queue's keys; the caller adds its arguments (and any keys
    /// of its own after the queue's).
    fn invoke<'a>(&self, script: &'a QueueScript) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.script.prepare_invoke();
        for key in (script.keys)(&self.keys) {
            invocation.key(key);
        }
        invocation
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
            let mut inv = self.invoke(&ADD);
            inv.arg(k.base()).arg(now_ms()).arg(chunk.len());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys each script's header numbers (`KEYS: 1 wait, 2 paused, ...`, up to a `then`
    /// that introduces keys of the caller's own), by their names under the queue's base.
    fn header_keys(lua: &str) -> Vec<String> {
        let Some((_, rest)) = lua.split_once("KEYS:") else {
            return Vec::new();
        };
        let numbered = rest.split("ARGV:").next().unwrap_or(rest);
        let numbered = numbered.split("then").next().unwrap_or(numbered);
        numbered
            .split(',')
            .filter_map(|entry| {
                let (n, name) = entry.trim().split_once(' ')?;
                n.parse::<usize>().ok()?;
                Some(name.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn every_script_gets_the_keys_its_header_numbers() {
        let keys = Keys::new("bull", "q");
        let scripts: [(&str, &QueueScript); 11] = [
            ("add", &ADD),
            ("take", &TAKE),
            ("names", &NAMES),
            ("settle", &SETTLE),
            ("extend", &EXTEND),
            ("stalled", &STALLED),
            ("release", &RELEASE),
            ("pause", &PAUSE),
            ("retry", &RETRY),
            ("promote", &PROMOTE),
            ("remove", &REMOVE),
        ];
        for (name, script) in scripts {
            let given: Vec<String> = (script.keys)(&keys)
                .iter()
                .map(|k| k.strip_prefix(keys.base()).unwrap_or(k).to_owned())
                .collect();
            assert_eq!(header_keys(script.lua), given, "{name}.lua");
        }
    }
}
