//! Turns: which batch of a queue may start next, whichever process runs it. Each process paces
//! at its share of the queue's pace, but shares alone let processes that started together fire
//! together: N members that each fill a batch's share of tokens in N intervals land N batches
//! in the same second and none for the next N intervals, a square wave on the database that
//! the controller's cuts keep in step. So the queue's batch starts are also spaced in Redis by
//! the queue's whole pace (a batch of n documents holds the turn for n / pace seconds), and the
//! queue's running batches are counted there against the slots its pace needs: each process
//! alone would allow itself at least one, and 12 processes on a database slowed by their own
//! batches ran 7 at once, each slower for the others. The slots follow from the pace and the
//! queue's batches' mean run time, timed in Redis across the fleet: timed by each process, a
//! process that had just joined knew none and allowed one while the others allowed three.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::queue::Redis;
use crate::queue::keys::BudgetKeys;

static TURN: LazyLock<Script> = LazyLock::new(|| crate::control::clocked(include_str!("turn.lua")));
static DONE: LazyLock<Script> = LazyLock::new(|| crate::control::clocked(include_str!("done.lua")));

/// A running batch holds its slot this long at most: longer than a batch may run
/// (TIDEGATE_BATCH_TIMEOUT's default, a minute, with a margin). A process that dies
/// mid-batch frees its slots sooner, when its membership of the budget lapses.
pub const LEASE: Duration = Duration::from_secs(90);

/// One queue's turns on its budget.
#[derive(Clone)]
pub struct Turns {
    conn: Redis,
    turn: String,
    running: String,
    members: String,
    /// The process's id in the budget ([`super::Budget::id`]).
    process: String,
}

impl Turns {
    /// The turns of `queue` for the budget member `process`.
    pub fn new(conn: Redis, keys: &BudgetKeys, queue: &str, process: &str) -> Self {
        Self {
            conn,
            turn: keys.turn(queue),
            running: keys.running(queue),
            members: keys.members(),
            process: process.to_owned(),
        }
    }

    /// The id of this process's batch number `seq` in the queue's slots.
    pub fn batch_id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.process)
    }

    /// Takes the turn and a slot for batch `id` of `documents` if both are free at `pace` (the
    /// queue's documents per second); otherwise how long to wait before asking again.
    pub async fn take(
        &self,
        documents: usize,
        pace: f64,
        id: &str,
    ) -> redis::RedisResult<Option<Duration>> {
        let mut conn = self.conn.clone();
        let wait_ms: u64 = TURN
            .key(&self.turn)
            .key(&self.running)
            .key(&self.members)
            .arg(documents)
            .arg(pace)
            .arg(LEASE.as_millis() as u64)
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    /// Batch `id` has ended: its slot is free, and its run time is counted.
    pub async fn release(&self, id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: u8 = DONE
            .key(&self.turn)
            .key(&self.running)
            .arg(id)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
