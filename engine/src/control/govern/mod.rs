//! A queue worked by other BullMQ workers (Node, Python), paced through the queue's global
//! rate limit: the `max` and `duration` fields of its meta hash, which every BullMQ >= 5.60
//! worker reads on every fetch. The queue is a member of its database's budget like a
//! tidegate queue: its jobs are reported as batches of one (start and end from the queue's
//! event stream), the cost model learns what a job costs, and the pace the leader publishes
//! becomes the limit. One process governs a queue at a time (a lease beside the queue); the
//! limit the first governor found is kept and restored when a governor hands the queue back.
//! The limit a governor that died last wrote stays, and the next one says so.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::control::budget::{Finished, Started};
use crate::queue::Redis;
use crate::queue::keys::Keys;

static HOLD: LazyLock<Script> = LazyLock::new(|| crate::control::clocked(include_str!("hold.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("release.lua")));

/// The shortest window the governor writes: a limit of `max` per window lets `max` jobs start
/// together at its beginning, so a short window spreads them (BullMQ's window is fixed, not a
/// bucket). Shorter costs the workers more fetches while limited.
const WINDOW_MS: f64 = 100.0;
/// The longest: an idle worker that met the limit sleeps until its window ends before it
/// looks again, so a longer window delays the next raise by as much.
const LONGEST_WINDOW_MS: f64 = 10_000.0;
/// Events read per round trip, and round trips per interval at most: a stream trimmed
/// faster than this (BullMQ keeps about 10,000 events) loses jobs from the cost model, never
/// from the queue.
const EVENTS_PER_READ: usize = 5_000;
const READS_PER_TICK: usize = 4;
/// A job seen starting and never ending (its end trimmed from the stream, a worker killed)
/// stops counting as in flight after this long.
const FORGET_AFTER_MS: u64 = 600_000;

/// The limit a governor leaves on a queue it hands back (`TIDEGATE_GOVERN_FALLBACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// The limit the queue had when first governed (none, or the team's hand-picked one).
    #[default]
    Found,
    /// No global limit: the workers' own limiters, if any.
    Removed,
    /// `max` jobs per `duration_ms`.
    Limit { max: u64, duration_ms: u64 },
}

impl Fallback {
    /// Reads `found`, `none`, or `MAX/DURATION` (`5/1s`, `300/500ms`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "found" => Ok(Self::Found),
            "none" => Ok(Self::Removed),
            limit => {
                let (max, duration) = limit
                    .split_once('/')
                    .ok_or_else(|| format!("`{limit}` is not found, none, or MAX/DURATION"))?;
                let max = max
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("`{max}` is not a whole number of jobs"))?;
                let duration = humantime::parse_duration(duration.trim())
                    .map_err(|e| format!("`{duration}` is not a duration: {e}"))?;
                let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                if max == 0 || duration_ms == 0 {
                    return Err(format!("`{limit}` lets no job through"));
                }
                Ok(Self::Limit { max, duration_ms })
            }
        }
    }

    fn argument(self) -> String {
        match self {
            Self::Found => "found".into(),
            Self::Removed => "none".into(),
            Self::Limit { max, duration_ms } => format!("{max}:{duration_ms}"),
        }
    }
}

/// `rate` jobs/second as BullMQ's limit: `max` jobs per `duration` ms. The window is as
/// short as an integer `max` allows, at least [`WINDOW_MS`]; when the workers' own limiter
/// sets the window (`theirs`, ms: a worker's `limiter.duration` overrides the queue's), `max`
/// is counted for that one. A rate under one job per longest window is one job per longest
/// window: BullMQ cannot say zero without pausing the queue, which moves its jobs.
pub fn limit(rate: f64, theirs: Option<f64>) -> (u64, u64) {
    let rate = rate.max(1000.0 / LONGEST_WINDOW_MS);
    if let Some(window) = theirs {
        let max = (rate * window / 1000.0).round().max(1.0);
        return (max as u64, window.round().max(1.0) as u64);
    }
    let max = (rate * WINDOW_MS / 1000.0).ceil().max(1.0);
    let duration = (1000.0 * max / rate).round().clamp(1.0, LONGEST_WINDOW_MS);
    (max as u64, duration as u64)
}

/// Whether the BullMQ that wrote a queue's meta `version` (`bullmq:5.81.5`) has workers that
/// read the queue's rate limit (5.60 and later). Another library's, or one that cannot be
/// read, is given the benefit of the doubt: the starts are watched anyway.
pub fn honours(version: &str) -> bool {
    let Some(number) = version.strip_prefix("bullmq:") else {
        return true;
    };
    let mut parts = number.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (5, 60),
        _ => true,
    }
}

/// What one look at the queue found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Jobs started since the last look and still running, and those that ended.
    pub started: Vec<Started>,
    pub finished: Vec<Finished>,
    /// Jobs that started since the last look, ended or not.
    pub starts: u64,
    /// Jobs waiting (wait and prioritized).
    pub backlog: u64,
}

/// The lease, as the last [`Governor::hold`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// This process governs the queue.
    pub holds: bool,
    pub holder: String,
    /// When this process took the queue over from a governor that stopped without handing it
    /// back: when that one's lease ended (ms, Redis' clock), and the limit it left.
    pub orphaned: Option<(u64, String)>,
    /// The limiter window's time left, ms (negative when no window is open).
    pub window_left_ms: i64,
    /// The `version` field of the queue's meta (`bullmq:5.81.5`), empty when none.
    pub version: String,
    /// Redis' clock, ms.
    pub now_ms: u64,
    /// The queue's `duration` before this call wrote one: windows opened under it may run.
    pub duration_ms: Option<u64>,
}

/// One governed queue, from one process.
pub struct Governor {
    conn: Redis,
    keys: Keys,
    queue: String,
    id: String,
    ttl: Duration,
    fallback: Fallback,
    /// The last event read, once the stream's position is known.
    last: Option<String>,
    jobs: Jobs,
}

/// The queue's jobs as the event stream tells them.
#[derive(Debug, Default)]
struct Jobs {
    /// Jobs seen starting and not yet ending: id → (seq, start ms).
    running: HashMap<String, (u64, u64)>,
    seq: u64,
}

impl Jobs {
    /// The seq the next job to start will take.
    fn next(&self) -> u64 {
        self.seq + 1
    }

    /// One event of job `job` at `at` (ms): `active` starts it; any other but `progress` ends
    /// a job seen starting (completed, failed, or back to waiting or delayed for a retry or
    /// from a stalled worker).
    fn event(&mut self, event: &str, job: &str, at: u64, seen: &mut Seen) {
        match event {
            "active" => {
                self.seq += 1;
                seen.starts += 1;
                self.running.insert(job.to_owned(), (self.seq, at));
            }
            "progress" => {}
            _ => {
                if let Some((seq, start)) = self.running.remove(job) {
                    seen.finished.push(Finished {
                        seq,
                        started_ago_ms: start,
                        ended_ago_ms: at,
                        documents: 1,
                    });
                }
            }
        }
    }

    /// Ends a look at `now` (ms): times become ms ago, and the jobs that started since `first`
    /// and still run are reported as started (those that also ended, by their end alone).
    fn close(&mut self, first: u64, now: u64, seen: &mut Seen) {
        let ago = |t: u64| now.saturating_sub(t);
        for f in &mut seen.finished {
            f.started_ago_ms = ago(f.started_ago_ms);
            f.ended_ago_ms = ago(f.ended_ago_ms);
        }
        self.running
            .retain(|_, (_, start)| ago(*start) < FORGET_AFTER_MS);
        let mut started: Vec<Started> = self
            .running
            .values()
            .filter(|(seq, _)| *seq >= first)
            .map(|&(seq, start)| Started {
                seq,
                ago_ms: ago(start),
                documents: 1,
            })
            .collect();
        started.sort_by_key(|s| s.seq);
        seen.started = started;
    }
}

impl Governor {
    /// Governs `queue` under `prefix`, as process `id` (its budget membership's), holding the
    /// lease for `ttl` between renewals.
    pub fn new(
        conn: Redis,
        prefix: &str,
        queue: &str,
        id: &str,
        ttl: Duration,
        fallback: Fallback,
    ) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix, queue),
            queue: queue.to_owned(),
            id: id.to_owned(),
            ttl,
            fallback,
            last: None,
            jobs: Jobs::default(),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Takes or keeps the lease, and writes `limit` (max, duration ms) if it holds it.
    pub async fn hold(&mut self, limit: Option<(u64, u64)>) -> redis::RedisResult<Lease> {
        let (max, duration) = match limit {
            Some((max, duration)) => (max.to_string(), duration.to_string()),
            None => (String::new(), String::new()),
        };
        type Reply = (u8, String, u64, String, i64, String, u64, String);
        let (holds, holder, before, written, pttl, version, now_ms, duration): Reply = HOLD
            .key(self.keys.governor())
            .key(self.keys.meta())
            .key(self.keys.limiter())
            .arg(&self.id)
            .arg(self.ttl.as_millis() as u64)
            .arg(max)
            .arg(duration)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(Lease {
            holds: holds == 1,
            holder,
            orphaned: (before > 0).then_some((before, written)),
            window_left_ms: pttl,
            version,
            now_ms,
            duration_ms: duration.parse().ok(),
        })
    }

    /// Hands the queue back: its limit becomes the fallback. Returns the limit left, or `None`
    /// if another process holds the lease.
    pub async fn release(&mut self) -> redis::RedisResult<Option<String>> {
        RELEASE
            .key(self.keys.governor())
            .key(self.keys.meta())
            .arg(&self.id)
            .arg(self.fallback.argument())
            .invoke_async(&mut self.conn)
            .await
    }

    /// Reads the queue's events since the last look: its jobs as batches of one document, in
    /// ms before Redis' clock at the read, and how many wait.
    pub async fn look(&mut self) -> redis::RedisResult<Seen> {
        let (time, backlog, prioritized): ((u64, u64), u64, u64) = redis::pipe()
            .cmd("TIME")
            .llen(self.keys.wait())
            .zcard(self.keys.prioritized())
            .query_async(&mut self.conn)
            .await?;
        let now = time.0 * 1000 + time.1 / 1000;
        let mut seen = Seen {
            backlog: backlog + prioritized,
            ..Seen::default()
        };
        let first = self.jobs.next();
        let Some(mut last) = self.last.clone() else {
            // The stream from now on: what ran before has no start to go by.
            self.last = Some(format!("{now}-0"));
            return Ok(seen);
        };
        for _ in 0..READS_PER_TICK {
            let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(self.keys.events())
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(EVENTS_PER_READ)
                .query_async(&mut self.conn)
                .await?;
            let read = entries.len();
            for (id, fields) in entries {
                let at = id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse::<u64>().ok())
                    .unwrap_or(now);
                if let (Some(event), Some(job)) = (fields.get("event"), fields.get("jobId")) {
                    self.jobs.event(event, job, at, &mut seen);
                }
                last = id;
            }
            if read < EVENTS_PER_READ {
                break;
            }
        }
        self.last = Some(last);
        self.jobs.close(first, now, &mut seen);
        Ok(seen)
    }
}

#[cfg(test)]
mod tests;
