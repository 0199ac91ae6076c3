//! One write budget per queue, shared in Redis by every process that works it. Each control
//! interval each process renews its membership; one of them holds a lease and runs the
//! controller, publishing the queue's total rate; each takes an equal share of it. N workers
//! thus hold the database at one target, not N times it, and a dead leader's lease passes to
//! another process within a few intervals. Times come from Redis' clock, so hosts may disagree.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::queue::keys::Keys;

static TICK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/tick.lua")));
static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/publish.lua")));

/// What one tick learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// This process holds the lease: it runs the controller this interval.
    pub leader: bool,
    /// Processes sharing the budget, this one included.
    pub members: u64,
    /// The total rate the leader last published, if it is still current.
    pub rate: Option<f64>,
    /// Transient write errors all members have reported, ever (a counter).
    pub errors: u64,
    /// Documents all members have taken under the budget, ever (a counter): the demand.
    pub used: u64,
}

impl Tick {
    /// This process's share of a total rate.
    pub fn share(&self, total: f64) -> f64 {
        total / self.members.max(1) as f64
    }
}

/// ZSET of the database CPU the leaders saw, one member per control interval (score = ms),
/// kept two weeks: run reports read the mean and peak over a run from it. One per Redis, since
/// the processes of every queue watch the same database.
const DB_CPU_KEY: &str = "tidegate:db-cpu";
const DB_CPU_KEEP_MS: u64 = 14 * 86_400_000;

/// Records one interval's database CPU (percent) seen at `at_ms`.
pub async fn record_cpu(
    conn: &mut ConnectionManager,
    at_ms: u64,
    cpu: f64,
) -> redis::RedisResult<()> {
    redis::pipe()
        .zadd(DB_CPU_KEY, format!("{at_ms}:{cpu:.3}"), at_ms)
        .ignore()
        .zrembyscore(DB_CPU_KEY, 0, at_ms.saturating_sub(DB_CPU_KEEP_MS))
        .ignore()
        .query_async(conn)
        .await
}

/// Mean and peak database CPU recorded in `[from_ms, to_ms]`; `None` when nothing was.
pub async fn cpu_between(
    conn: &mut ConnectionManager,
    from_ms: u64,
    to_ms: u64,
) -> redis::RedisResult<Option<(f64, f64)>> {
    let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(DB_CPU_KEY)
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

/// What the leader decided the rate from.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    pub limiter: &'static str,
    /// Database CPU, percent of one core; `None` when not measured.
    pub cpu: Option<f64>,
    /// Mean write latency, seconds.
    pub latency: Option<f64>,
    pub target_cpu: f64,
    pub target_latency: f64,
}

/// The queue's load control as the last leader published it, read by the back-office.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Total documents/second for the queue; `None` when no leader published one lately.
    pub rate: Option<f64>,
    /// Processes sharing the budget.
    pub members: u64,
    /// The signal that limits the rate (`cpu`, `latency`, `errors`, `blind`, `demand`, ...).
    pub limiter: Option<String>,
    pub db_cpu: Option<f64>,
    pub target_cpu: Option<f64>,
    /// Seconds.
    pub write_latency: Option<f64>,
    pub target_latency: Option<f64>,
    /// When the rate was decided, ms since the epoch.
    pub decided_at: Option<u64>,
}

/// Reads the published state of `keys`' budget in one round trip.
pub async fn status(conn: &mut ConnectionManager, keys: &Keys) -> redis::RedisResult<Status> {
    let now = crate::queue::now_ms();
    let (fields, members): (Vec<Option<String>>, u64) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.budget())
        .arg(&[
            "rate",
            "rate_until",
            "limiter",
            "cpu",
            "target_cpu",
            "latency",
            "target_latency",
            "decided_at",
        ])
        .zcount(keys.budget_members(), now, "+inf")
        .query_async(conn)
        .await?;
    let number = |i: usize| {
        fields
            .get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<f64>().ok())
    };
    let current = number(1).is_some_and(|until| until >= now as f64);
    Ok(Status {
        rate: number(0).filter(|_| current),
        members,
        limiter: fields.get(2).cloned().flatten(),
        db_cpu: number(3),
        target_cpu: number(4),
        write_latency: number(5),
        target_latency: number(6),
        decided_at: number(7).map(|v| v as u64),
    })
}

#[derive(Clone)]
pub struct Budget {
    conn: ConnectionManager,
    budget: String,
    members: String,
    id: String,
    /// Membership and lease last this long without renewal: a few intervals.
    ttl: Duration,
}

impl Budget {
    pub fn new(conn: ConnectionManager, keys: &Keys, interval: Duration) -> Self {
        Self {
            conn,
            budget: keys.budget(),
            members: keys.budget_members(),
            id: format!("{:016x}", rand::random::<u64>()),
            ttl: (interval * 3).max(Duration::from_millis(300)),
        }
    }

    /// The connection, for what the leader records beside the budget.
    pub fn connection(&mut self) -> &mut ConnectionManager {
        &mut self.conn
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Renews membership, reports `new_errors` and the documents `used` since the last tick,
    /// takes or keeps the lease, reads the rate.
    pub async fn tick(&mut self, new_errors: u64, used: u64) -> redis::RedisResult<Tick> {
        let (leader, members, rate, errors, used): (u8, u64, String, u64, u64) = TICK
            .key(&self.budget)
            .key(&self.members)
            .arg(&self.id)
            .arg(self.ttl.as_millis() as u64)
            .arg(new_errors)
            .arg(used)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(Tick {
            leader: leader == 1,
            members,
            rate: rate.parse().ok(),
            errors,
            used,
        })
    }

    /// Publishes the total rate and what it was decided from; false if another process has
    /// taken the lease meanwhile.
    pub async fn publish(&mut self, rate: f64, why: &Why) -> redis::RedisResult<bool> {
        let number = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let published: u8 = PUBLISH
            .key(&self.budget)
            .arg(&self.id)
            .arg(rate)
            .arg(self.ttl.as_millis() as u64)
            .arg(&[
                ("limiter", why.limiter.to_owned()),
                ("cpu", number(why.cpu)),
                ("latency", number(why.latency)),
                ("target_cpu", why.target_cpu.to_string()),
                ("target_latency", why.target_latency.to_string()),
            ])
            .invoke_async(&mut self.conn)
            .await?;
        Ok(published == 1)
    }

    /// Leaves at shutdown, so the others' shares grow at their next tick.
    pub async fn leave(&mut self) -> redis::RedisResult<()> {
        redis::pipe()
            .zrem(&self.members, &self.id)
            .ignore()
            .cmd("EVAL")
            .arg("if redis.call('HGET', KEYS[1], 'leader') == ARGV[1] then redis.call('HDEL', KEYS[1], 'leader', 'leader_until') end")
            .arg(1)
            .arg(&self.budget)
            .arg(&self.id)
            .ignore()
            .query_async(&mut self.conn)
            .await
    }
}
