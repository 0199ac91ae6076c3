//! One write budget per database, shared in Redis by every process of every queue that writes
//! to it. Each control interval each process renews its membership (with its queue, the
//! queue's weight and how many of its jobs wait) and reports the batches it started and
//! finished; one of them holds a lease, reads the batch ledger and the members, runs the
//! controller, and publishes one pace per queue; each process takes an equal share of its
//! queue's pace, and the queue's batches take turns ([`Turns`]). N processes of one queue thus hold the database at one target, not N times
//! it; two queues on one database split one target by weight; and a dead leader's lease passes
//! to another process within a few intervals. Times come from Redis' clock, so hosts' clocks
//! may disagree.

use std::sync::LazyLock;
use std::time::Duration;

use crate::queue::Redis;
use redis::Script;

use crate::control::controller::{Decision, Pace};
use crate::control::cost::Cost;
use crate::queue::keys::{self, BudgetKeys};

static TICK: LazyLock<Script> = LazyLock::new(|| crate::control::clocked(include_str!("tick.lua")));
static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| crate::control::clocked(include_str!("publish.lua")));

/// A batch as a process reports it: ms ago (on its own clock, at the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub seq: u64,
    pub ago_ms: u64,
    pub documents: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub seq: u64,
    pub started_ago_ms: u64,
    pub ended_ago_ms: u64,
    pub documents: u64,
}

/// What one process tells the budget each interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Transient write errors since the last report.
    pub errors: u64,
    /// Jobs of its queue waiting to be taken.
    pub backlog: u64,
    pub started: Vec<Started>,
    pub finished: Vec<Finished>,
}

/// What one tick learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// This process holds the lease: it runs the controller this interval.
    pub leader: bool,
    /// Processes sharing the budget, this one included.
    pub members: u64,
    /// Of which working this process's queue.
    pub queue_members: u64,
    /// This queue's pace as the leader last published it, if it is still current.
    pub pace: Option<(f64, usize)>,
    /// Transient write errors all members have reported, ever (a counter).
    pub errors: u64,
    /// Redis' clock at the tick, ms.
    pub now_ms: u64,
    /// This process reports its queue's depth: of the queue's members, the one with the lowest
    /// id, so that each queue's depth is exported once whatever the number of processes.
    pub queue_reporter: bool,
}

/// A member as the leader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub queue: String,
    pub weight: f64,
    pub backlog: u64,
    /// The queue's largest batch, when its member sets it: 1 for a governed queue, whose
    /// workers take one job at a time.
    pub largest: Option<usize>,
}

/// A batch in the ledger, on Redis' clock (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerBatch {
    pub queue: String,
    pub start_ms: u64,
    /// `None` while in flight.
    pub end_ms: Option<u64>,
    pub documents: u64,
}

/// Everything the leader decides from, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    pub members: Vec<Member>,
    pub batches: Vec<LedgerBatch>,
}

/// How long the database's CPU history is kept: as long as a run's counters.
const DB_CPU_KEEP_MS: u64 = 14 * 86_400_000;

/// Records one interval's database CPU (percent) seen at `at_ms`.
pub async fn record_cpu(conn: &mut Redis, at_ms: u64, cpu: f64) -> redis::RedisResult<()> {
    redis::pipe()
        .zadd(keys::DB_CPU, format!("{at_ms}:{cpu:.3}"), at_ms)
        .ignore()
        .zrembyscore(keys::DB_CPU, 0, at_ms.saturating_sub(DB_CPU_KEEP_MS))
        .ignore()
        .query_async(conn)
        .await
}

/// Mean and peak database CPU recorded in `[from_ms, to_ms]`; `None` when nothing was.
pub(crate) async fn cpu_between(
    conn: &mut Redis,
    from_ms: u64,
    to_ms: u64,
) -> redis::RedisResult<Option<(f64, f64)>> {
    let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys::DB_CPU)
        .arg(from_ms)
        .arg(to_ms)
        .query_async(conn)
        .await?;
    let values: Vec<f64> = members
        .iter()
        .filter_map(|m| m.split_once(':').and_then(|(_, v)| v.parse().ok()))
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let peak = values.iter().copied().fold(f64::MIN, f64::max);
    Ok(Some((mean, peak)))
}

/// What the leader decided from, published beside the paces.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedFrom {
    pub limiter: &'static str,
    /// Database CPU, percent of one core; `None` when not measured.
    pub cpu: Option<f64>,
    /// Mean write and read latency, seconds.
    pub write_latency: Option<f64>,
    pub read_latency: Option<f64>,
    pub target_cpu: f64,
    pub target_latency: f64,
}

/// The load control of a queue as the last leader published it, read by the back-office.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The database's budget this queue shares.
    pub budget_name: String,
    /// This queue's documents/second; `None` when no leader published one lately.
    pub rate: Option<f64>,
    /// Documents per batch.
    pub batch: Option<u64>,
    /// Processes sharing the budget (every queue's).
    pub members: u64,
    /// The signal that limits the pace (`cpu`, `no_headroom`, `latency`, `blind`, ...).
    pub limiter: Option<String>,
    /// CPU percent all batches may use.
    pub cpu_budget: Option<f64>,
    /// CPU percent the database uses without the batches, as learned.
    pub live_load: Option<f64>,
    pub db_cpu: Option<f64>,
    pub target_cpu: Option<f64>,
    /// Seconds.
    pub write_latency: Option<f64>,
    pub read_latency: Option<f64>,
    pub target_latency: Option<f64>,
    /// When the pace was decided, ms since the epoch.
    pub decided_at: Option<u64>,
}

/// One queue's published pace field: rate, batch, then the learned costs (empty when not).
fn pace_field(pace: &Pace) -> String {
    let cost = pace.cost.map_or((String::new(), String::new()), |c| {
        (c.per_batch.to_string(), c.per_document.to_string())
    });
    format!("{}:{}:{}:{}", pace.rate, pace.batch, cost.0, cost.1)
}

fn parse_pace(queue: &str, field: &str) -> Option<Pace> {
    let mut parts = field.split(':');
    let rate = parts.next()?.parse().ok()?;
    let batch = parts.next()?.parse().ok()?;
    let per_batch = parts.next().and_then(|v| v.parse().ok());
    let per_document = parts.next().and_then(|v| v.parse().ok());
    Some(Pace {
        queue: queue.to_owned(),
        rate,
        batch,
        budget: None,
        cost: per_batch
            .zip(per_document)
            .map(|(per_batch, per_document)| Cost {
                per_batch,
                per_document,
            }),
    })
}

/// Reads the published state of `queue`'s pace on `keys`' budget in one round trip.
pub async fn status(
    conn: &mut Redis,
    keys: &BudgetKeys,
    name: &str,
    queue: &str,
) -> redis::RedisResult<Status> {
    let now = crate::queue::now_ms();
    let fields = [
        "pace_until",
        "limiter",
        "cpu",
        "target_cpu",
        "write_latency",
        "read_latency",
        "target_latency",
        "decided_at",
        "budget",
        "live",
    ];
    let (values, pace, members): (Vec<Option<String>>, Option<String>, u64) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.budget())
        .arg(&fields)
        .hget(keys.budget(), format!("pace:{queue}"))
        .zcount(keys.members(), now, "+inf")
        .query_async(conn)
        .await?;
    let number = |i: usize| {
        values
            .get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<f64>().ok())
    };
    let current = number(0).is_some_and(|until| until >= now as f64);
    let pace = pace.filter(|_| current).and_then(|p| parse_pace(queue, &p));
    Ok(Status {
        budget_name: name.to_owned(),
        rate: pace.as_ref().map(|p| p.rate),
        batch: pace.as_ref().map(|p| p.batch as u64),
        members,
        limiter: values.get(1).cloned().flatten(),
        cpu_budget: number(8),
        live_load: number(9),
        db_cpu: number(2),
        target_cpu: number(3),
        write_latency: number(4),
        read_latency: number(5),
        target_latency: number(6),
        decided_at: number(7).map(|v| v as u64),
    })
}

#[derive(Clone)]
pub struct Budget {
    conn: Redis,
    keys: BudgetKeys,
    queue: String,
    weight: f64,
    largest: Option<usize>,
    id: String,
    /// Membership and lease last this long without renewal: a few intervals.
    ttl: Duration,
    /// Finished batches are kept this long: the probe's longest lag, a reading and a margin.
    keep: Duration,
}

impl Budget {
    pub fn new(
        conn: Redis,
        keys: BudgetKeys,
        queue: &str,
        weight: f64,
        interval: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            queue: queue.to_owned(),
            weight,
            largest: None,
            id: format!("{:016x}", rand::random::<u64>()),
            ttl: (interval * 3).max(Duration::from_millis(300)),
            keep: (interval * 6).max(Duration::from_secs(30)),
        }
    }

    /// A member whose queue's batches never carry more than `largest` documents.
    pub fn with_largest(mut self, largest: usize) -> Self {
        self.largest = Some(largest.max(1));
        self
    }

    /// The connection, for what the leader records beside the budget.
    pub fn connection(&mut self) -> &mut Redis {
        &mut self.conn
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long membership and the lease last without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Renews membership, reports this interval's errors, backlog and batches, takes or keeps
    /// the lease, and reads this queue's pace.
    pub async fn tick(&mut self, report: &Report) -> redis::RedisResult<Tick> {
        let mut call = TICK.prepare_invoke();
        call.key(self.keys.budget())
            .key(self.keys.members())
            .key(self.keys.member_info())
            .key(self.keys.in_flight())
            .key(self.keys.finished_batches())
            .arg(&self.id)
            .arg(self.ttl.as_millis() as u64)
            .arg(report.errors)
            .arg(&self.queue)
            .arg(self.weight)
            .arg(report.backlog)
            .arg(self.keep.as_millis() as u64)
            .arg(self.largest.map_or_else(String::new, |l| l.to_string()))
            .arg(report.started.len());
        for s in &report.started {
            call.arg(s.seq).arg(s.ago_ms).arg(s.documents);
        }
        call.arg(report.finished.len());
        for f in &report.finished {
            call.arg(f.seq)
                .arg(f.started_ago_ms)
                .arg(f.ended_ago_ms)
                .arg(f.documents);
        }
        let (leader, members, queue_members, pace, errors, now_ms, reporter): (
            u8,
            u64,
            u64,
            String,
            u64,
            u64,
            u8,
        ) = call.invoke_async(&mut self.conn).await?;
        Ok(Tick {
            leader: leader == 1,
            members,
            queue_members,
            pace: parse_pace(&self.queue, &pace).map(|p| (p.rate, p.batch)),
            errors,
            now_ms,
            queue_reporter: reporter == 1,
        })
    }

    /// The members and the batches of the last `keep`, for the leader. Members' in-flight
    /// batches only: a process that died mid-batch does not load the database any more.
    pub async fn ledger(&mut self) -> redis::RedisResult<Ledger> {
        type Fields = Vec<(String, String)>;
        let (info, in_flight, finished): (Fields, Fields, Vec<String>) = redis::pipe()
            .hgetall(self.keys.member_info())
            .hgetall(self.keys.in_flight())
            .zrange(self.keys.finished_batches(), 0, -1)
            .query_async(&mut self.conn)
            .await?;
        let mut ledger = Ledger::default();
        let mut ids = Vec::new();
        for (id, value) in info {
            // weight:backlog[:largest]:queue (see tick.lua)
            let parts: Vec<&str> = value.split(':').collect();
            let (weight, backlog, largest, queue) = match parts[..] {
                [weight, backlog, queue] => (weight, backlog, None, queue),
                [weight, backlog, largest, queue] => (weight, backlog, Some(largest), queue),
                _ => continue,
            };
            ids.push(id);
            ledger.members.push(Member {
                queue: queue.to_owned(),
                weight: weight.parse().unwrap_or(1.0),
                backlog: backlog.parse().unwrap_or(0),
                largest: largest.and_then(|l| l.parse().ok()),
            });
        }
        let mut dead = Vec::new();
        for (field, value) in in_flight {
            let process = field.split(':').next().unwrap_or_default();
            let mut parts = value.splitn(3, ':');
            let batch = (|| {
                Some(LedgerBatch {
                    start_ms: parts.next()?.parse().ok()?,
                    documents: parts.next()?.parse().ok()?,
                    queue: parts.next()?.to_owned(),
                    end_ms: None,
                })
            })();
            match batch {
                Some(batch) if ids.iter().any(|i| i == process) => ledger.batches.push(batch),
                _ => dead.push(field),
            }
        }
        if !dead.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("HDEL")
                .arg(self.keys.in_flight())
                .arg(&dead)
                .query_async(&mut self.conn)
                .await;
        }
        for member in finished {
            // <process>:<seq>:<start>:<end>:<documents>:<queue>
            let mut parts = member.splitn(6, ':');
            let batch = (|| {
                parts.next()?;
                parts.next()?;
                Some(LedgerBatch {
                    start_ms: parts.next()?.parse().ok()?,
                    end_ms: Some(parts.next()?.parse().ok()?),
                    documents: parts.next()?.parse().ok()?,
                    queue: parts.next()?.to_owned(),
                })
            })();
            ledger.batches.extend(batch);
        }
        Ok(ledger)
    }

    /// Publishes the decision and what it was decided from; false if another process has
    /// taken the lease meanwhile.
    pub async fn publish(
        &mut self,
        decision: &Decision,
        why: &DecidedFrom,
    ) -> redis::RedisResult<bool> {
        let number = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let mut fields: Vec<(String, String)> = vec![
            ("limiter".into(), why.limiter.to_owned()),
            ("cpu".into(), number(why.cpu)),
            ("write_latency".into(), number(why.write_latency)),
            ("read_latency".into(), number(why.read_latency)),
            ("target_cpu".into(), why.target_cpu.to_string()),
            ("target_latency".into(), why.target_latency.to_string()),
            ("budget".into(), number(decision.budget)),
            ("live".into(), number(decision.live)),
        ];
        for pace in &decision.paces {
            fields.push((format!("pace:{}", pace.queue), pace_field(pace)));
        }
        let mut call = PUBLISH.prepare_invoke();
        call.key(self.keys.budget())
            .arg(&self.id)
            .arg(self.ttl.as_millis() as u64);
        for (field, value) in &fields {
            call.arg(field).arg(value);
        }
        let published: u8 = call.invoke_async(&mut self.conn).await?;
        Ok(published == 1)
    }

    /// The paces and budget the last leader published, for a new leader to go on from.
    pub async fn published(
        &mut self,
        queues: &[String],
    ) -> redis::RedisResult<(Option<f64>, Vec<Pace>)> {
        let fields: Vec<String> = queues.iter().map(|q| format!("pace:{q}")).collect();
        let (budget, values): (Option<String>, Vec<Option<String>>) = redis::pipe()
            .hget(self.keys.budget(), "budget")
            .cmd("HMGET")
            .arg(self.keys.budget())
            .arg(&fields)
            .query_async(&mut self.conn)
            .await?;
        let paces = queues
            .iter()
            .zip(values)
            .filter_map(|(q, v)| v.and_then(|v| parse_pace(q, &v)))
            .collect();
        Ok((budget.and_then(|b| b.parse().ok()), paces))
    }

    /// Leaves at shutdown, so the others' shares grow at their next tick.
    pub async fn leave(&mut self) -> redis::RedisResult<()> {
        redis::pipe()
            .zrem(self.keys.members(), &self.id)
            .ignore()
            .hdel(self.keys.member_info(), &self.id)
            .ignore()
            .cmd("EVAL")
            .arg("if redis.call('HGET', KEYS[1], 'leader') == ARGV[1] then redis.call('HDEL', KEYS[1], 'leader', 'leader_until') end")
            .arg(1)
            .arg(self.keys.budget())
            .arg(&self.id)
            .ignore()
            .query_async(&mut self.conn)
            .await
    }
}

mod turns;
pub use turns::{LEASE, Turns};

#[cfg(test)]
mod tests;
