//! BullMQ itself (the Node package, `tests/interop`) on the other side of tidegate's queue:
//! jobs a BullMQ producer adds are processed by tidegate's worker, jobs tidegate adds are
//! processed by a BullMQ worker, and BullMQ reads tidegate's results, states and counts.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tidegate::pipeline::{Outcome, Pipeline};
use tidegate::queue::{Job, JobOptions, NewJob, Queue, Removal, Retention, Settlement, connect};
use tidegate::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

/// BullMQ itself on the shared Redis (see `common::bullmq`).
fn bullmq(args: &[&str]) -> Value {
    common::bullmq(args, &[], "")
}

/// Completes jobs whose data says `ok`, fails the others for good.
struct Judge;

impl Pipeline for Judge {
    fn name(&self) -> &str {
        "judge"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        jobs.iter()
            .map(|job| match job.data::<Value>() {
                Ok(data) if data["ok"] == true => {
                    Outcome::Completed(json!({ "score": data["userId"] }))
                }
                _ => Outcome::permanent("rejected by tidegate"),
            })
            .collect()
    }
}

#[tokio::test]
async fn tidegate_processes_what_bullmq_adds() {
    let name = common::unique("interop_in");
    let jobs = json!([
        { "name": "collect", "data": { "userId": "u1", "ok": true } },
        { "name": "collect", "data": { "userId": "u2", "ok": false }, "opts": { "attempts": 1 } },
        { "name": "collect", "data": { "userId": "u3", "ok": true },
          "opts": { "jobId": "score-2026-11-24-u3", "attempts": 3,
                    "backoff": { "type": "exponential", "delay": 1000 }, "removeOnComplete": 10 } },
    ]);
    let ids = bullmq(&["add", &name, &jobs.to_string()]);
    assert_eq!(ids, json!(["1", "2", "score-2026-11-24-u3"]));

    let conn = connect(&common::redis_url()).await.expect("connect");
    let q = Queue::new(conn, "bull", &name);
    work_until(&q, Judge, "tidegate to settle the jobs", |c| {
        c.completed + c.failed == 3
    })
    .await;

    let seen = bullmq(&["inspect", &name, "1", "2", "score-2026-11-24-u3"]);
    let counts = &seen["counts"];
    assert_eq!(
        (counts["completed"].as_u64(), counts["failed"].as_u64()),
        (Some(2), Some(1)),
        "{seen}"
    );
    assert_eq!(counts["active"], 0);
    let [ok, bad, custom] = [&seen["jobs"][0], &seen["jobs"][1], &seen["jobs"][2]];
    assert_eq!(ok["state"], "completed");
    assert_eq!(ok["returnvalue"], json!({ "score": "u1" }));
    assert_eq!(ok["attemptsMade"], 1);
    assert!(ok["finishedOn"].as_u64() >= ok["processedOn"].as_u64());
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["failedReason"], "rejected by tidegate");
    assert_eq!(custom["state"], "completed");
    assert_eq!(custom["opts"]["attempts"], 3);
}

#[tokio::test]
async fn bullmq_processes_what_tidegate_adds() {
    let name = common::unique("interop_out");
    let conn = connect(&common::redis_url()).await.expect("connect");
    let q = Queue::new(conn, "bull", &name);
    let custom = JobOptions {
        job_id: Some("score-2026-11-24-u9".into()),
        attempts: Some(2),
        ..JobOptions::default()
    };
    q.add_bulk(&[
        NewJob::new("collect", json!({ "userId": "u8" })),
        NewJob::new("collect", json!({ "userId": "u9" })).with_opts(custom),
    ])
    .await
    .expect("add");

    let seen = bullmq(&["consume", &name, "2"]);
    let data: Vec<_> = seen
        .as_array()
        .expect("array")
        .iter()
        .map(|j| j["data"]["userId"].clone())
        .collect();
    assert_eq!(
        data,
        [json!("u8"), json!("u9")],
        "BullMQ takes them in FIFO order: {seen}"
    );
    assert_eq!(seen[1]["id"], "score-2026-11-24-u9");
    assert_eq!(seen[0]["attemptsMade"], 0);

    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.completed, counts.waiting, counts.active), (2, 0, 0));
    let inspected = bullmq(&["inspect", &name, "score-2026-11-24-u9"]);
    assert_eq!(
        inspected["jobs"][0]["returnvalue"],
        json!({ "consumedBy": "bullmq" })
    );
}

#[tokio::test]
async fn bullmq_sees_tidegate_pause_and_delayed_jobs() {
    let name = common::unique("interop_state");
    let conn = connect(&common::redis_url()).await.expect("connect");
    let q = Queue::new(conn, "bull", &name);
    let later = JobOptions {
        delay: 60_000,
        ..JobOptions::default()
    };
    q.add_bulk(&[
        NewJob::new("now", json!({})),
        NewJob::new("later", json!({})).with_opts(later),
    ])
    .await
    .expect("add");
    q.pause().await.expect("pause");
    let seen = bullmq(&["inspect", &name, "1", "2"]);
    assert_eq!(seen["isPaused"], true);
    assert_eq!(seen["counts"]["paused"], 1);
    assert_eq!(seen["counts"]["delayed"], 1);
    assert_eq!(seen["jobs"][1]["state"], "delayed");
    q.resume().await.expect("resume");
    let seen = bullmq(&["inspect", &name, "1"]);
    assert_eq!(
        (seen["isPaused"].clone(), seen["counts"]["waiting"].clone()),
        (json!(false), json!(1))
    );
    assert_eq!(seen["jobs"][0]["state"], "waiting");
}

/// Fails a job the first time it runs, completes it after.
struct FirstTryFails;

impl Pipeline for FirstTryFails {
    fn name(&self) -> &str {
        "first-try-fails"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        jobs.iter()
            .map(|job| match job.data::<Value>() {
                Ok(data) if data["flaky"] == true && job.attempts_made == 0 => {
                    Outcome::permanent("failed on the first try")
                }
                _ => Outcome::Completed(json!("done")),
            })
            .collect()
    }
}

/// Runs a tidegate worker with `pipeline` until the queue's counts satisfy `done`.
async fn work_until<P: Pipeline>(
    q: &Queue,
    pipeline: P,
    what: &str,
    done: impl Fn(&tidegate::queue::Counts) -> bool,
) {
    let stop = CancellationToken::new();
    let options = WorkerOptions {
        idle_block: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let worker = tokio::spawn(
        Worker::new(q.clone(), &common::redis_url(), pipeline, options).run(stop.clone()),
    );
    common::eventually(what, Duration::from_secs(30), || async {
        let c = q.counts().await.expect("counts");
        done(&c).then_some(())
    })
    .await;
    stop.cancel();
    worker.await.expect("join").expect("worker");
}

#[tokio::test]
async fn failed_jobs_retried_from_bull_board_and_bullmq_run_again_in_tidegate() {
    let name = common::unique("interop_retry");
    let conn = connect(&common::redis_url()).await.expect("connect");
    let q = Queue::new(conn, "bull", &name);
    q.add_bulk(&[
        NewJob::new("collect", json!({ "flaky": false })),
        NewJob::new("collect", json!({ "flaky": true })),
        NewJob::new("collect", json!({ "flaky": true })),
    ])
    .await
    .expect("add");
    work_until(&q, FirstTryFails, "one completed, two failed", |c| {
        c.completed == 1 && c.failed == 2
    })
    .await;

    // bull-board's adapter sees the failures and its retry button moves job 2 back to wait.
    let board = bullmq(&["board", &name, "2"]);
    assert_eq!(board["counts"]["failed"], 2, "{board}");
    assert_eq!(board["counts"]["completed"], 1, "{board}");
    let failed: Vec<_> = board["failed"]
        .as_array()
        .expect("array")
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert!(
        failed.contains(&json!("2")) && failed.contains(&json!("3")),
        "{board}"
    );
    assert_eq!(
        board["failed"][0]["failedReason"],
        "failed on the first try"
    );
    assert_eq!(board["retried"], "2");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.failed), (1, 1));
    work_until(&q, FirstTryFails, "the retried job completed", |c| {
        c.completed == 2
    })
    .await;

    // BullMQ's Queue.retryJobs moves the rest back; tidegate completes them too.
    let after = bullmq(&["retry-all", &name]);
    assert_eq!(after["failed"], 0, "{after}");
    work_until(&q, FirstTryFails, "every job completed", |c| {
        c.completed == 3 && c.failed == 0
    })
    .await;
}

/// The back-office's moves, as BullMQ sees them: a failed job retried by tidegate, a delayed
/// one promoted and a removed one are what BullMQ's own `retry`, `promote` and `remove` leave,
/// and a BullMQ worker runs the two that are waiting.
#[tokio::test]
async fn bullmq_sees_the_back_office_moves() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let name = common::unique("interop_admin");
    let q = Queue::new(redis, "bull", &name);
    let later = JobOptions {
        delay: 3_600_000,
        ..JobOptions::default()
    };
    q.add_bulk(&[
        NewJob::new("fails", json!({})),
        NewJob::new("goes", json!({})),
        NewJob::new("later", json!({})).with_opts(later),
    ])
    .await
    .expect("add");
    let taken = q.take(2, "t", Duration::from_secs(30)).await.expect("take");
    let fail = |id: &str| Settlement::Failed {
        id: id.to_owned(),
        reason: "broken".into(),
        stacktrace: vec![],
        keep: Retention::KEEP_ALL,
        exhausted: true,
        count: None,
    };
    let settlements: Vec<Settlement> = taken.jobs.iter().map(|j| fail(&j.id)).collect();
    q.settle("t", &settlements).await.expect("settle");

    assert!(q.retry("1").await.expect("retry").is_some());
    assert!(q.promote("3").await.expect("promote"));
    assert!(matches!(
        q.remove("2").await.expect("remove"),
        Removal::Removed(_)
    ));
    let seen = bullmq(&["inspect", &name, "1", "2", "3"]);
    assert_eq!(seen["jobs"][0]["state"], "waiting");
    assert_eq!(seen["jobs"][0]["failedReason"], Value::Null);
    assert_eq!(seen["jobs"][0]["attemptsMade"], 1);
    assert_eq!(seen["jobs"][1], Value::Null, "removed");
    assert_eq!(seen["jobs"][2]["state"], "waiting");
    assert_eq!(
        (
            seen["counts"]["failed"].clone(),
            seen["counts"]["delayed"].clone()
        ),
        (json!(0), json!(0))
    );
    let consumed = bullmq(&["consume", &name, "2"]);
    let mut names: Vec<&str> = consumed
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["fails", "later"]);
}

/// What a Node producer's types become: Extended JSON's `{"$date": …}` and `{"$oid": …}`
/// arrive as a BSON date and an ObjectId, while a JavaScript `Date`, which BullMQ serialises to
/// JSON, arrives as the string it became (the README says so to teams that add `upsert` jobs).
#[tokio::test]
async fn an_upsert_from_node_stores_extended_json_as_bson_types_and_a_js_date_as_a_string() {
    let name = common::unique("interop_types");
    let database = common::unique("tidegate_types");
    let at = "2026-11-24T10:30:00.000Z";
    bullmq(&["upsert-dates", &name, at]);
    let app = common::app(
        "interop_types",
        &[("TIDEGATE_QUEUE", &name), ("TIDEGATE_DATABASE", &database)],
    )
    .await;
    work_until(&app.queue, app.router(), "the upsert to complete", |c| {
        c.completed == 1
    })
    .await;
    let store = &app.store;
    let stored = store
        .database()
        .collection::<mongodb::bson::Document>("typed")
        .find_one(mongodb::bson::doc! { "ref": "d1" })
        .await
        .expect("find")
        .expect("the document");
    let when = stored.get_datetime("when").expect("a BSON date");
    assert_eq!(
        when.try_to_rfc3339_string().expect("rfc3339"),
        "2026-11-24T10:30:00Z"
    );
    assert_eq!(
        stored.get_object_id("owner").expect("an ObjectId").to_hex(),
        "65a1b2c3d4e5f60718293a4b"
    );
    assert_eq!(
        stored.get_str("jsDate"),
        Ok(at),
        "a JS Date arrives as its JSON string"
    );
    store.database().drop().await.expect("drop");
}
