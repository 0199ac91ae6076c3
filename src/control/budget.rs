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

    /// Publishes the total rate; false if another process has taken the lease meanwhile.
    pub async fn publish(&mut self, rate: f64) -> redis::RedisResult<bool> {
        let published: u8 = PUBLISH
            .key(&self.budget)
            .arg(&self.id)
            .arg(rate)
            .arg(self.ttl.as_millis() as u64)
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
