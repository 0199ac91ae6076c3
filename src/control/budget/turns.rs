//! Turns: which batch of a queue may start next, whichever process runs it. Each process paces
//! at its share of the queue's pace, but shares alone let processes that started together fire
//! together: N members that each fill a batch's share of tokens in N intervals land N batches
//! in the same second and none for the next N intervals, a square wave on the database that
//! the controller's cuts keep in step. So the queue's batch starts are also spaced in Redis by
//! the queue's whole pace: a batch of n documents holds the turn for n / pace seconds.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::queue::Redis;
use crate::queue::keys::BudgetKeys;

static TURN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("turn.lua")));

/// One queue's turns on its budget.
#[derive(Clone)]
pub struct Turns {
    conn: Redis,
    key: String,
}

impl Turns {
    pub fn new(conn: Redis, keys: &BudgetKeys, queue: &str) -> Self {
        Self {
            conn,
            key: keys.turn(queue),
        }
    }

    /// Takes the turn for a batch of `documents` if it is free at `pace` (the queue's documents
    /// per second); otherwise how long until it frees at that pace.
    pub async fn take(&self, documents: usize, pace: f64) -> redis::RedisResult<Option<Duration>> {
        let mut conn = self.conn.clone();
        let wait_ms: u64 = TURN
            .key(&self.key)
            .arg(documents)
            .arg(pace)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }
}
