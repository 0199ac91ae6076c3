//! Random sequences of queue moves on real Redis, checked against a model after every step: no
//! job is ever lost, and none is ever in two states.

mod common;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tidegate::queue::Redis;
use tidegate::queue::{NewJob, Queue, Retention, Settlement, connect};

const LOCK: Duration = Duration::from_secs(30);
const KEEP: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Take(usize),
    Complete(usize),
    Fail(usize),
    Retry(usize),
    LoseLock(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..4).prop_map(Op::Add),
        (1usize..4).prop_map(Op::Take),
        any::<usize>().prop_map(Op::Complete),
        any::<usize>().prop_map(Op::Fail),
        any::<usize>().prop_map(Op::Retry),
        any::<usize>().prop_map(Op::LoseLock),
    ]
}

#[derive(Default)]
struct Model {
    /// Front = next to be taken.
    waiting: VecDeque<String>,
    active: Vec<(String, String)>,
    completed: VecDeque<String>,
    failed: HashSet<String>,
    removed: HashSet<String>,
}

async fn range(conn: &mut Redis, cmd: &str, key: String) -> Vec<String> {
    redis::cmd(cmd)
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("range")
}

async fn check(q: &Queue, conn: &mut Redis, m: &Model) {
    let k = q.keys();
    // LRANGE lists head first; jobs are taken from the tail.
    let mut wait = range(conn, "LRANGE", k.wait()).await;
    wait.reverse();
    assert_eq!(wait, m.waiting.iter().cloned().collect::<Vec<_>>(), "wait");
    let active: HashSet<_> = range(conn, "LRANGE", k.active())
        .await
        .into_iter()
        .collect();
    let model_active: HashSet<_> = m.active.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(active, model_active, "active");
    let completed: HashSet<_> = range(conn, "ZRANGE", k.completed())
        .await
        .into_iter()
        .collect();
    assert_eq!(
        completed,
        m.completed.iter().cloned().collect(),
        "completed"
    );
    let failed: HashSet<_> = range(conn, "ZRANGE", k.failed())
        .await
        .into_iter()
        .collect();
    assert_eq!(failed, m.failed, "failed");
    for id in &m.removed {
        let exists: bool = redis::cmd("EXISTS")
            .arg(k.job(id))
            .query_async(conn)
            .await
            .expect("EXISTS");
        assert!(!exists, "job {id} was trimmed but its hash remains");
    }
    let total = wait.len() + active.len() + completed.len() + failed.len() + m.removed.len();
    let distinct: HashSet<_> = wait
        .iter()
        .chain(&active)
        .chain(&completed)
        .chain(&failed)
        .chain(&m.removed)
        .collect();
    assert_eq!(distinct.len(), total, "a job is in two states");
}

async fn run(ops: Vec<Op>) {
    let mut conn = connect(&common::redis_url()).await.expect("connect");
    let q = Queue::new(conn.clone(), "bull", &common::unique("model"));
    let mut m = Model::default();
    let mut tokens = 0;
    for op in ops {
        match op {
            Op::Add(n) => {
                let jobs: Vec<_> = (0..n).map(|_| NewJob::new("j", json!({}))).collect();
                for added in q.add_bulk(&jobs).await.expect("add") {
                    m.waiting.push_back(added.id);
                }
            }
            Op::Take(n) => {
                tokens += 1;
                let token = format!("t{tokens}");
                for job in q.take(n, &token, LOCK).await.expect("take").jobs {
                    assert_eq!(
                        m.waiting.pop_front().as_ref(),
                        Some(&job.id),
                        "taken out of order"
                    );
                    m.active.push((job.id, token.clone()));
                }
            }
            Op::Complete(i) | Op::Fail(i) | Op::Retry(i) if !m.active.is_empty() => {
                let (id, token) = m.active.remove(i % m.active.len());
                let settlement = match op {
                    Op::Complete(_) => Settlement::Completed {
                        id: id.clone(),
                        returnvalue: "1".into(),
                        keep: Retention::keep_last(KEEP),
                        count: None,
                    },
                    Op::Fail(_) => Settlement::Failed {
                        id: id.clone(),
                        reason: "x".into(),
                        stacktrace: vec![],
                        keep: Retention::KEEP_ALL,
                        exhausted: true,
                        count: None,
                    },
                    _ => Settlement::Retry {
                        id: id.clone(),
                        reason: "x".into(),
                        stacktrace: vec![],
                        delay: Duration::ZERO,
                        lifo: false,
                    },
                };
                q.settle(&token, &[settlement]).await.expect("settle");
                match op {
                    Op::Complete(_) => {
                        m.completed.push_back(id);
                        while m.completed.len() as u64 > KEEP {
                            let old = m.completed.pop_front().expect("oldest");
                            m.removed.insert(old);
                        }
                    }
                    Op::Fail(_) => {
                        m.failed.insert(id);
                    }
                    _ => m.waiting.push_back(id),
                }
            }
            Op::LoseLock(i) if !m.active.is_empty() => {
                let (id, _) = m.active.remove(i % m.active.len());
                let _: i64 = redis::cmd("DEL")
                    .arg(format!("{}:lock", q.keys().job(&id)))
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
                let requeued = common::eventually(
                    "the stalled check to requeue",
                    Duration::from_secs(10),
                    || {
                        let q = q.clone();
                        async move {
                            let check = q
                                .recover_stalled(Duration::from_millis(1), 100)
                                .await
                                .expect("check");
                            (!check.requeued.is_empty()).then_some(check.requeued)
                        }
                    },
                )
                .await;
                assert_eq!(requeued, std::slice::from_ref(&id));
                // Recovered jobs go to the front of the line.
                m.waiting.push_front(id);
            }
            _ => {}
        }
        check(&q, &mut conn, &m).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn no_job_is_lost_or_in_two_states(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Runtime::new().expect("runtime").block_on(run(ops));
    }
}
