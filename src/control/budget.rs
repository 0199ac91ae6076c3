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
