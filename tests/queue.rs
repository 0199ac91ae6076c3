//! The queue's atomic moves against real Redis, checked in BullMQ v5's layout: what the keys
//! and job hashes hold after each move.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tidegate::queue::Redis;
use tidegate::queue::{
    Counts, FinishCount, JobOptions, NewJob, Queue, Retention, Settled, Settlement, clip_reason,
    connect,
};

const LOCK: Duration = Duration::from_secs(30);

async fn queue() -> (Queue, Redis) {
    let conn = connect(&common::redis_url()).await.expect("connect");
    (Queue::new(conn.clone(), "bull", &common::unique("q")), conn)
}

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("collect", json!({ "userId": format!("u{i}") })))
        .collect()
}

fn with_id(id: &str) -> NewJob {
    NewJob::new("collect", json!({})).with_opts(JobOptions {
        job_id: Some(id.to_owned()),
        ..JobOptions::default()
    })
}

fn complete(id: &str, keep: Retention) -> Settlement {
    Settlement::Completed {
        id: id.to_owned(),
        returnvalue: "{\"score\":1}".to_owned(),
        keep,
        count: None,
    }
}

/// Takes up to `n` jobs under `token` and returns their ids.
async fn take_ids(q: &Queue, n: usize, token: &str) -> Vec<String> {
    q.take(n, token, LOCK)
        .await
        .expect("take")
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect()
}

async fn hash(conn: &mut Redis, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("HGETALL")
}

async fn events(conn: &mut Redis, q: &Queue) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(q.keys().events())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    reply
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("event"))
        .collect()
}

#[tokio::test]
async fn add_take_complete_in_bullmq_layout() {
    let (q, mut conn) = queue().await;
    let added = q.add_bulk(&jobs(3)).await.expect("add");
    assert_eq!(
        added.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(q.counts().await.expect("counts").waiting, 3);

    let job = hash(&mut conn, &q.keys().job("1")).await;
    assert_eq!(job["name"], "collect");
    assert_eq!(job["data"], r#"{"userId":"u0"}"#);
    assert_eq!(job["opts"], "{}");
    assert_eq!(job["delay"], "0");
    assert_eq!(job["priority"], "0");
    assert!(job["timestamp"].parse::<u64>().expect("timestamp") > 1_700_000_000_000);

    let taken = q.take(10, "tok", LOCK).await.expect("take");
    let ids: Vec<_> = taken.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"], "FIFO order");
    assert_eq!(
        taken.jobs[1].data::<serde_json::Value>().expect("json")["userId"],
        "u1"
    );
    let lock: String = redis::cmd("GET")
        .arg(format!("{}:lock", q.keys().job("2")))
        .query_async(&mut conn)
        .await
        .expect("lock");
    assert_eq!(lock, "tok");
    assert_eq!(q.counts().await.expect("counts").active, 3);

    let settlements: Vec<_> = ids
        .iter()
        .map(|id| complete(id, Retention::KEEP_ALL))
        .collect();
    let settled = q.settle("tok", &settlements).await.expect("settle");
    assert_eq!(settled, [Settled::Done; 3]);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.active, counts.completed), (0, 3));
    let job = hash(&mut conn, &q.keys().job("3")).await;
    assert_eq!(job["returnvalue"], r#"{"score":1}"#);
    assert_eq!(job["atm"], "1");
    assert_eq!(job["ats"], "1");
    assert!(job.contains_key("finishedOn") && job.contains_key("processedOn"));

    let events = events(&mut conn, &q).await;
    for name in ["added", "waiting", "active", "completed", "drained"] {
        assert!(
            events.iter().any(|e| e == name),
            "no {name} event in {events:?}"
        );
    }
}

#[tokio::test]
async fn a_caller_given_id_is_never_enqueued_twice() {
    let (q, _) = queue().await;
    let added = q
        .add_bulk(&[
            with_id("score-2026-11-24-u1"),
            with_id("score-2026-11-24-u1"),
        ])
        .await
        .expect("add");
    assert!(!added[0].duplicate && added[1].duplicate);
    let again = q.add(with_id("score-2026-11-24-u1")).await.expect("add");
    assert!(again.duplicate);
    assert_eq!(q.counts().await.expect("counts").waiting, 1);
}

#[tokio::test]
async fn bad_ids_reject_the_call_before_anything_is_written() {
    let (q, _) = queue().await;
    for bad in ["42", "a:b", ""] {
        let err = q
            .add_bulk(&[with_id("fine-1"), with_id(bad)])
            .await
            .expect_err("must reject");
        assert!(err.to_string().contains("job 1 cannot be added"), "{err}");
    }
    assert_eq!(q.counts().await.expect("counts"), Counts::default());
}

#[tokio::test]
async fn retry_then_fail_for_good() {
    let (q, mut conn) = queue().await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    let job = q.take(1, "t1", LOCK).await.expect("take").jobs.remove(0);
    let retry = Settlement::Retry {
        id: job.id.clone(),
        reason: "timeout".into(),
        stacktrace: vec!["at collect".into()],
        delay: Duration::ZERO,
        lifo: false,
    };
    assert_eq!(
        q.settle("t1", &[retry]).await.expect("settle"),
        [Settled::Done]
    );
    let stored = hash(&mut conn, &q.keys().job(&job.id)).await;
    assert_eq!(
        (stored["atm"].as_str(), stored["failedReason"].as_str()),
        ("1", "timeout")
    );

    let again = q.take(1, "t2", LOCK).await.expect("take").jobs.remove(0);
    assert_eq!(again.attempts_made, 1);
    let fail = Settlement::Failed {
        id: again.id.clone(),
        reason: "bad data".into(),
        stacktrace: vec![],
        keep: Retention::KEEP_ALL,
        exhausted: true,
        count: None,
    };
    q.settle("t2", &[fail]).await.expect("settle");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.failed), (0, 1));
    let stored = hash(&mut conn, &q.keys().job(&job.id)).await;
    assert_eq!(stored["failedReason"], "bad data");
    assert_eq!(stored["stacktrace"], "[]");
    let events = events(&mut conn, &q).await;
    assert!(
        events.iter().any(|e| e == "retries-exhausted"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_delayed_retry_waits_then_is_promoted() {
    let (q, _) = queue().await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    let job = q.take(1, "t", LOCK).await.expect("take").jobs.remove(0);
    let retry = Settlement::Retry {
        id: job.id.clone(),
        reason: "busy".into(),
        stacktrace: vec![],
        delay: Duration::from_millis(300),
        lifo: false,
    };
    q.settle("t", &[retry]).await.expect("settle");
    assert_eq!(q.counts().await.expect("counts").delayed, 1);
    let early = q.take(1, "t", LOCK).await.expect("take");
    assert!(early.jobs.is_empty());
    assert!(early.next_delayed.expect("due time") > tidegate::queue::now_ms());

    let taken = common::eventually(
        "the delayed job to be promoted",
        Duration::from_secs(10),
        || async {
            let taken = q.take(1, "t", LOCK).await.expect("take");
            (!taken.jobs.is_empty()).then_some(taken)
        },
    )
    .await;
    assert_eq!(taken.jobs[0].id, job.id);
}

#[tokio::test]
async fn delayed_and_prioritized_jobs_take_their_turn() {
    let (q, _) = queue().await;
    let opts = |priority, delay| JobOptions {
        priority,
        delay,
        ..JobOptions::default()
    };
    q.add_bulk(&[
        NewJob::new("p5", json!({})).with_opts(opts(5, 0)),
        NewJob::new("p1", json!({})).with_opts(opts(1, 0)),
        NewJob::new("later", json!({})).with_opts(opts(0, 60_000)),
        NewJob::new("plain", json!({})),
    ])
    .await
    .expect("add");
    let counts = q.counts().await.expect("counts");
    assert_eq!(
        (counts.waiting, counts.prioritized, counts.delayed),
        (1, 2, 1)
    );
    let names: Vec<_> = q
        .take(10, "t", LOCK)
        .await
        .expect("take")
        .jobs
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["plain", "p1", "p5"]);
}

#[tokio::test]
async fn retention_by_count_by_age_and_immediate_removal() {
    let (q, mut conn) = queue().await;
    q.add_bulk(&jobs(10)).await.expect("add");
    let ids = take_ids(&q, 10, "t").await;

    // Removal on completion: the hash goes, the set never holds it.
    q.settle("t", &[complete(&ids[0], Retention::keep_last(0))])
        .await
        .expect("settle");
    let exists: bool = redis::cmd("EXISTS")
        .arg(q.keys().job(&ids[0]))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!exists);

    // Keep the newest 3.
    let rest: Vec<_> = ids[1..6]
        .iter()
        .map(|id| complete(id, Retention::keep_last(3)))
        .collect();
    q.settle("t", &rest).await.expect("settle");
    let kept: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.keys().completed())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    assert_eq!(kept.len(), 3);
    let exists: bool = redis::cmd("EXISTS")
        .arg(q.keys().job(&ids[1]))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!exists, "trimmed jobs lose their hash");

    // Age: make the kept ones an hour old, then finish one with a 60 s age limit.
    let old = tidegate::queue::now_ms() - 3_600_000;
    for id in &kept {
        let _: i64 = redis::cmd("ZADD")
            .arg(q.keys().completed())
            .arg(old)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("ZADD");
    }
    let by_age = Retention {
        count: None,
        age: Some(Duration::from_secs(60)),
    };
    q.settle("t", &[complete(&ids[6], by_age)])
        .await
        .expect("settle");
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.keys().completed())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    assert_eq!(left, [ids[6].clone()]);
}

#[tokio::test]
async fn stalled_jobs_go_back_to_wait_and_fail_past_the_maximum() {
    let (q, mut conn) = queue().await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    let interval = Duration::from_millis(50);

    // Each round: take with a lock that expires at once, then two checks (mark, then recover).
    for round in 1..=2u32 {
        let taken = q
            .take(1, "gone", Duration::from_millis(1))
            .await
            .expect("take");
        assert_eq!(taken.jobs.len(), 1, "round {round}");
        let check = common::eventually(
            "the stalled check to recover the job",
            Duration::from_secs(10),
            || {
                let q = q.clone();
                async move {
                    let check = q.recover_stalled(interval, 1).await.expect("check");
                    (!check.requeued.is_empty()).then_some(check)
                }
            },
        )
        .await;
        assert_eq!(
            check.over_limit.len(),
            usize::from(round == 2),
            "round {round}"
        );
        let job = hash(&mut conn, &q.keys().job(&check.requeued[0])).await;
        assert_eq!(job["stc"], round.to_string());
    }
    // Past the maximum (1): the next taker gets it as a job to fail, with BullMQ's reason.
    let taken = q.take(1, "t", LOCK).await.expect("take");
    assert!(taken.jobs.is_empty());
    assert_eq!(taken.malformed.len(), 1);
    assert_eq!(
        taken.malformed[0].1,
        "job stalled more than allowable limit"
    );
    let events = events(&mut conn, &q).await;
    assert!(events.iter().any(|e| e == "stalled"), "{events:?}");
}

#[tokio::test]
async fn locks_extend_only_for_their_holder_and_release_returns_jobs() {
    let (q, _) = queue().await;
    q.add_bulk(&jobs(2)).await.expect("add");
    let ids = take_ids(&q, 2, "mine").await;
    assert!(
        q.extend_locks("mine", &ids, LOCK)
            .await
            .expect("extend")
            .is_empty()
    );
    assert_eq!(
        q.extend_locks("theirs", &ids, LOCK).await.expect("extend"),
        ids
    );
    assert_eq!(
        q.settle("theirs", &[complete(&ids[0], Retention::KEEP_ALL)])
            .await
            .expect("settle"),
        [Settled::LockTaken]
    );

    assert_eq!(q.release("mine", &ids).await.expect("release"), 2);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.active, counts.waiting), (0, 2));
    let again = take_ids(&q, 2, "next").await;
    assert_eq!(again.len(), 2);
}

#[tokio::test]
async fn pause_moves_waiting_jobs_aside_and_resume_brings_them_back() {
    let (q, _) = queue().await;
    q.add_bulk(&jobs(2)).await.expect("add");
    q.pause().await.expect("pause");
    assert!(q.is_paused().await.expect("paused"));
    q.add(NewJob::new("collect", json!({})))
        .await
        .expect("add while paused");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.paused), (0, 3));
    assert!(q.take(10, "t", LOCK).await.expect("take").jobs.is_empty());

    q.resume().await.expect("resume");
    assert!(!q.is_paused().await.expect("paused"));
    assert_eq!(q.take(10, "t", LOCK).await.expect("take").jobs.len(), 3);
}

#[tokio::test]
async fn malformed_options_surface_as_a_job_to_fail() {
    let (q, mut conn) = queue().await;
    let added = q.add(NewJob::new("collect", json!({}))).await.expect("add");
    let _: i64 = redis::cmd("HSET")
        .arg(q.keys().job(&added.id))
        .arg("opts")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let taken = q.take(1, "t", LOCK).await.expect("take");
    assert!(taken.jobs.is_empty());
    assert!(
        taken.malformed[0]
            .1
            .starts_with("job options are not valid"),
        "{:?}",
        taken.malformed
    );
}

#[tokio::test]
async fn a_job_written_with_plain_redis_commands_is_taken() {
    // The README's redis-cli recipe, command for command.
    let (q, mut conn) = queue().await;
    let k = q.keys();
    let id: i64 = redis::cmd("INCR")
        .arg(k.id())
        .query_async(&mut conn)
        .await
        .expect("INCR");
    let id = id.to_string();
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(k.job(&id))
        .arg(&[
            "name",
            "collect",
            "data",
            r#"{"userId":"u1"}"#,
            "opts",
            "{}",
        ])
        .arg(&["timestamp", "1764000000000", "delay", "0", "priority", "0"])
        .ignore()
        .cmd("LPUSH")
        .arg(k.wait())
        .arg(&id)
        .ignore()
        .cmd("ZADD")
        .arg(k.marker())
        .arg(0)
        .arg("0")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("MULTI/EXEC");
    let taken = q.take(10, "t", LOCK).await.expect("take");
    assert_eq!(taken.jobs.len(), 1);
    assert_eq!(taken.jobs[0].name, "collect");
    assert_eq!(taken.jobs[0].timestamp, 1_764_000_000_000);
}

/// A finish is counted in the same call that settles it: the retry of a settle whose reply was
/// lost finds the locks gone and counts nothing twice; a failure's reason is counted by its
/// first bytes, cut at a character boundary; both counters expire.
#[tokio::test]
async fn settling_counts_each_finish_once_in_its_counter() {
    let (q, mut conn) = queue().await;
    q.add_bulk(&jobs(3)).await.expect("add");
    let ids = take_ids(&q, 3, "t").await;
    let counter = FinishCount {
        counts: format!("{}:test-counts", q.keys().base()),
        reasons: format!("{}:test-reasons", q.keys().base()),
        ttl: Duration::from_secs(600),
    };
    let long = "é".repeat(200);
    let settlements: Vec<Settlement> = vec![
        complete(&ids[0], Retention::KEEP_ALL),
        Settlement::Failed {
            id: ids[1].clone(),
            reason: long.clone(),
            stacktrace: vec![],
            keep: Retention::KEEP_ALL,
            exhausted: true,
            count: None,
        },
        // Not counted: it names no counter.
        complete(&ids[2], Retention::KEEP_ALL),
    ];
    let counted: Vec<Settlement> = settlements
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.counted_in((i < 2).then(|| counter.clone())))
        .collect();
    let first = q.settle("t", &counted).await.expect("settle");
    assert_eq!(first, vec![Settled::Done; 3]);
    let again = q.settle("t", &counted).await.expect("settle again");
    assert_eq!(again, vec![Settled::LockMissing; 3]);

    let counts = hash(&mut conn, &counter.counts).await;
    assert_eq!(
        (counts.get("completed"), counts.get("failed")),
        (Some(&"1".to_owned()), Some(&"1".to_owned()))
    );
    let reasons = hash(&mut conn, &counter.reasons).await;
    let clipped = clip_reason(&long);
    assert_eq!(clipped.len(), 160);
    assert_eq!(clipped.chars().count(), 80);
    assert_eq!(
        reasons,
        HashMap::from([(clipped.to_owned(), "1".to_owned())])
    );
    for key in [&counter.counts, &counter.reasons] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("TTL");
        assert!((1..=600).contains(&ttl), "{key} expires: {ttl}");
    }
}

#[test]
fn a_reason_is_clipped_at_a_character_boundary() {
    assert_eq!(clip_reason("short"), "short");
    // 159 ASCII bytes then a 2-byte character: cutting at 160 would split it.
    let reason = format!("{}é", "a".repeat(159));
    assert_eq!(clip_reason(&reason), "a".repeat(159));
    let reason = format!("{}€tail", "a".repeat(158));
    assert_eq!(clip_reason(&reason), "a".repeat(158));
}

/// The ids in wait, the next to be taken first.
async fn waiting(q: &Queue, conn: &mut Redis) -> Vec<String> {
    let mut ids: Vec<String> = redis::cmd("LRANGE")
        .arg(q.keys().wait())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("wait");
    ids.reverse();
    ids
}

#[tokio::test]
async fn a_take_by_name_leaves_other_names_in_place_in_order_and_finds_its_own_behind_them() {
    let (q, mut conn) = queue().await;
    let named = |name: &str, n: usize| -> Vec<NewJob> {
        (0..n).map(|_| NewJob::new(name, json!({}))).collect()
    };
    // Five of another worker's jobs at the head, then ours and theirs interleaved.
    let mut added = named("sendEmail", 5);
    added.extend(named("upsert", 2));
    added.extend(named("sendEmail", 1));
    added.extend(named("upsert", 2));
    q.add_bulk(&added).await.expect("add");
    let ours = ["upsert".to_owned()];
    // A batch of 3: the first look (3 ids) holds none of ours; the look reaches further.
    let taken = q.take_named(3, "t1", LOCK, &ours).await.expect("take");
    let ids: Vec<&str> = taken.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["6", "7", "9"], "ours, oldest first");
    assert_eq!(taken.left, 6, "what it looked at and left");
    assert_eq!(
        waiting(&q, &mut conn).await,
        ["1", "2", "3", "4", "5", "8", "10"],
        "theirs where they were, the next to be taken"
    );
    let rest = q.take_named(10, "t2", LOCK, &ours).await.expect("take");
    assert_eq!(rest.jobs.len(), 1);
    assert_eq!(rest.left, 6);
    // Nothing of ours left: nothing taken, the other worker's jobs untouched.
    let none = q.take_named(10, "t3", LOCK, &ours).await.expect("take");
    assert!(none.jobs.is_empty());
    assert_eq!(waiting(&q, &mut conn).await, ["1", "2", "3", "4", "5", "8"]);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active), (6, 4));
    // Without names, every job is taken, in order.
    assert_eq!(take_ids(&q, 10, "t4").await, ["1", "2", "3", "4", "5", "8"]);
}

#[tokio::test]
async fn a_take_by_name_leaves_other_prioritized_jobs_and_counts_the_names_waiting() {
    let (q, _conn) = queue().await;
    let prioritized = |name: &str, priority: u32| {
        NewJob::new(name, json!({})).with_opts(JobOptions {
            priority,
            ..JobOptions::default()
        })
    };
    q.add_bulk(&[
        prioritized("sendEmail", 1),
        prioritized("upsert", 2),
        prioritized("sendEmail", 3),
    ])
    .await
    .expect("add");
    let names = q.waiting_names(100).await.expect("names");
    assert_eq!(
        names,
        [("sendEmail".to_owned(), 2), ("upsert".to_owned(), 1)],
        "by first seen"
    );
    let taken = q
        .take_named(1, "t", LOCK, &["upsert".to_owned()])
        .await
        .expect("take");
    assert_eq!(taken.jobs.len(), 1);
    assert_eq!(taken.jobs[0].name, "upsert");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.prioritized, counts.active), (2, 1));
}

#[tokio::test]
async fn jobs_a_lost_take_holds_are_released_by_their_token_alone() {
    let (q, mut conn) = queue().await;
    q.add_bulk(&jobs(5)).await.expect("add");
    // Two takes whose answers the callers never read; only the first's token is released.
    let lost = take_ids(&q, 2, "lost").await;
    let kept = take_ids(&q, 1, "kept").await;
    assert_eq!(q.release_all("lost").await.expect("release"), 2);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active), (4, 1));
    let next: Vec<String> = waiting(&q, &mut conn).await.into_iter().take(2).collect();
    assert_eq!(next.len(), 2);
    assert!(
        lost.iter().all(|id| next.contains(id)),
        "released to the front: {next:?}"
    );
    let job = hash(&mut conn, &q.keys().job(&lost[0])).await;
    assert_eq!(
        job.get("ats").map(String::as_str),
        Some("0"),
        "the attempt not counted"
    );
    assert_eq!(q.release_all("lost").await.expect("again"), 0);
    let lock: Option<String> = redis::cmd("GET")
        .arg(format!("{}:lock", q.keys().job(&kept[0])))
        .query_async(&mut conn)
        .await
        .expect("lock");
    assert_eq!(
        lock.as_deref(),
        Some("kept"),
        "another token's job untouched"
    );
}

#[tokio::test]
async fn a_settle_after_its_lock_lapsed_lands_while_nobody_took_the_job_since() {
    let (q, mut conn) = queue().await;
    q.add_bulk(&jobs(2)).await.expect("add");
    let ids: Vec<String> = q
        .take(2, "t", Duration::from_millis(100))
        .await
        .expect("take")
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    let lock = |id: &str| format!("{}:lock", q.keys().job(id));
    let locks = [lock(&ids[0]), lock(&ids[1])];
    common::eventually("the locks to lapse", Duration::from_secs(5), || {
        let mut conn = conn.clone();
        let locks = locks.clone();
        async move {
            let n: u64 = redis::cmd("EXISTS")
                .arg(&locks)
                .query_async(&mut conn)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    // The first is still active: nobody took it since, so its settle lands.
    let landed = q
        .settle("t", &[complete(&ids[0], Retention::KEEP_ALL)])
        .await
        .expect("settle");
    assert_eq!(landed, [Settled::Done]);
    // The second the stalled check hands out again (two checks: mark, then move): then its
    // settle is refused, as BullMQ refuses it.
    for _ in 0..2 {
        let _: () = redis::cmd("DEL")
            .arg(format!("{}stalled-check", q.keys().base()))
            .query_async(&mut conn)
            .await
            .expect("let the check run");
        q.recover_stalled(Duration::from_millis(10), 5)
            .await
            .expect("stalled check");
    }
    let refused = q
        .settle("t", &[complete(&ids[1], Retention::KEEP_ALL)])
        .await
        .expect("settle");
    assert_eq!(refused, [Settled::LockMissing]);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.completed, counts.waiting, counts.active), (1, 1, 0));
}
