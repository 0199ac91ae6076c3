//! The daily score job end to end on the real services: sample data, planning a run, workers
//! processing it into `daily_scores`, the run noticing its end, re-runs, purges, the schedule
//! firing twice, and the naive mode giving the same numbers.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, TimeZone};
use mongodb::bson::{Document, doc};
use serde_json::json;
use tidegate::engine::Engine as App;
use tidegate::queue::{NewJob, Retention, Settlement, connect};
use tidegate::schedule::{Fired, Planner};
use tidegate::store::Store;
use tidegate::worker::{Worker, WorkerOptions};
use tidegate_score::{self as score, DAILY_SCORES};
use tokio_util::sync::CancellationToken;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Seoul;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")
}

/// A queue and a database of its own, built as `tidegate run` builds them, with a sample day of
/// `users` users; retries 10 ms apart.
async fn world(users: u64) -> App {
    let app = common::app(
        "score",
        &[
            ("TIDEGATE_ATTEMPTS", "3"),
            ("TIDEGATE_BACKOFF", "fixed:10ms"),
            ("TIDEGATE_TIMEZONE", "Asia/Seoul"),
            ("TIDEGATE_APPS", "upsert,score"),
        ],
    )
    .await;
    score::sample_day(&app.store, day(), TZ, users, 7, |_| {})
        .await
        .expect("sample day");
    app
}

fn planner(w: &App) -> &Planner {
    w.planner().expect("score plans days")
}

fn start_worker(w: &App) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let pipelines = w.router();
    let options = WorkerOptions {
        batch_docs: 50,
        idle_block: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let stop = CancellationToken::new();
    let worker = Worker::new(w.queue.clone(), &common::redis_url(), pipelines, options)
        .observed_by(w.runs.clone());
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            worker.run(stop).await.expect("worker");
        }
    });
    (stop, handle)
}

async fn scores(store: &Store) -> Vec<Document> {
    use futures::TryStreamExt;
    store
        .database()
        .collection::<Document>(DAILY_SCORES)
        .find(doc! {})
        .sort(doc! { "userId": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

/// Score and event count per user, from every event of the day, summed here without the
/// pipeline's code: view 1, click 3, purchase 10 per unit of value.
async fn independent_scores(store: &Store) -> std::collections::HashMap<String, (f64, i64)> {
    use futures::TryStreamExt;
    let start = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 15, 0, 0)
        .single()
        .expect("start");
    let end = chrono::Utc
        .with_ymd_and_hms(2026, 11, 24, 15, 0, 0)
        .single()
        .expect("end");
    let ms = |t: chrono::DateTime<chrono::Utc>| {
        mongodb::bson::DateTime::from_millis(t.timestamp_millis())
    };
    let events: Vec<Document> = store
        .database()
        .collection::<Document>(score::EVENTS)
        .find(doc! { "ts": { "$gte": ms(start), "$lt": ms(end) } })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    let mut out = std::collections::HashMap::new();
    for e in events {
        let weight = match e.get_str("kind").expect("kind") {
            "view" => 1.0,
            "click" => 3.0,
            "purchase" => 10.0,
            _ => 0.0,
        };
        let value = f64::from(e.get_i32("value").expect("value"));
        let entry = out
            .entry(e.get_str("userId").expect("user").to_owned())
            .or_insert((0.0, 0));
        entry.0 += weight * value;
        entry.1 += 1;
    }
    out
}

#[tokio::test]
async fn a_day_runs_through_the_queue_into_daily_scores() {
    let w = world(120).await;
    let (stop, worker) = start_worker(&w);
    let run = planner(&w).plan(day(), "test", false).await.expect("plan");
    assert_eq!((run.planned, run.skipped), (Some(120), 0));
    let run = w
        .runs
        .wait_for_end(&run.id, Duration::from_secs(60))
        .await
        .expect("run ends");
    assert_eq!(
        (run.completed, run.failed, run.outcome.as_deref()),
        (120, 0, Some("succeeded"))
    );

    let written = scores(&w.store).await;
    assert_eq!(written.len(), 120);
    // Every score equals one computed here, independently, from all the raw events.
    let expected = independent_scores(&w.store).await;
    assert_eq!(expected.len(), 120);
    for doc in &written {
        let user = doc.get_str("userId").expect("user");
        let (score, events) = expected[user];
        assert!(
            (doc.get_f64("score").expect("score") - score).abs() < 1e-9,
            "{user}"
        );
        assert_eq!(doc.get_i64("events").expect("events"), events, "{user}");
        assert_eq!(doc.get_str("date").expect("date"), "2026-11-24");
        assert_eq!(doc.get_str("runId").expect("run"), run.id);
    }

    // A re-run under a new id really runs again, even with the first run's jobs retained.
    let again = planner(&w).plan(day(), "rerun", true).await.expect("rerun");
    assert_ne!(again.id, run.id);
    assert_eq!(again.planned, Some(120));
    let again = w
        .runs
        .wait_for_end(&again.id, Duration::from_secs(60))
        .await
        .expect("rerun ends");
    assert_eq!(again.completed, 120);
    let rewritten = scores(&w.store).await;
    assert_eq!(
        rewritten.len(),
        120,
        "upserts keyed on (user, date) keep one score per user"
    );
    assert!(
        rewritten
            .iter()
            .all(|d| d.get_str("runId").ok() == Some(again.id.as_str()))
    );
    // Running the day twice leaves the same scores.
    let values = |docs: &[Document]| {
        docs.iter()
            .map(|d| {
                (
                    d.get_str("_id").expect("id").to_owned(),
                    d.get_f64("score").expect("s"),
                    d.get_i64("events").expect("e"),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&written), values(&rewritten));

    stop.cancel();
    worker.await.expect("join");
    w.store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn the_schedule_plans_a_day_once() {
    let w = world(20).await;
    let fired = TZ
        .with_ymd_and_hms(2026, 11, 25, 1, 0, 0)
        .single()
        .expect("time");
    let Fired::Planned(first) = planner(&w).fire(fired).await.expect("fire") else {
        panic!("the first firing plans the day");
    };
    assert_eq!(first.date, "2026-11-24");
    assert_eq!(first.planned, Some(20));
    let second = planner(&w).fire(fired).await.expect("fire again");
    assert!(
        matches!(second, Fired::Already),
        "a second firing must not plan the day again: {second:?}"
    );
    assert_eq!(w.queue.counts().await.expect("counts").waiting, 20);
    // Two replicas firing the next day at the same moment: exactly one plans it, the other
    // finds it planned or being planned.
    let next = fired + chrono::Duration::days(1);
    let other = planner(&w).clone();
    let (a, b) = tokio::join!(planner(&w).fire(next), other.fire(next));
    let fired = [a.expect("replica a"), b.expect("replica b")];
    assert_eq!(
        fired
            .iter()
            .filter(|r| matches!(r, Fired::Planned(_)))
            .count(),
        1,
        "{fired:?}"
    );
    w.store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn a_malformed_job_fails_alone_the_generic_upsert_writes_and_an_unknown_name_is_left() {
    let w = world(0).await;
    let (stop, worker) = start_worker(&w);
    w.queue
        .add_bulk(&[
            NewJob::new(
                "collect",
                json!({ "userId": "u1", "collectDate": "yesterday" }),
            ),
            NewJob::new(
                "upsert",
                json!({
                    "collection": "profiles", "key": ["userId"],
                    "document": { "userId": "u1", "tier": "gold" }
                }),
            ),
            NewJob::new("mystery", json!({})),
        ])
        .await
        .expect("add");
    let counts = common::eventually("both of ours settled", Duration::from_secs(30), || async {
        let c = w.queue.counts().await.expect("counts");
        (c.completed + c.failed == 2).then_some(c)
    })
    .await;
    assert_eq!((counts.completed, counts.failed), (1, 1));
    assert_eq!(
        (counts.waiting, counts.active),
        (1, 0),
        "a name no pipeline handles is left for other workers, not failed"
    );
    let profile = w
        .store
        .database()
        .collection::<Document>("profiles")
        .find_one(doc! { "userId": "u1" })
        .await
        .expect("find")
        .expect("written");
    assert_eq!(profile.get_str("tier").expect("tier"), "gold");
    stop.cancel();
    worker.await.expect("join");
    w.store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn naive_mode_computes_the_same_scores() {
    let w = world(60).await;
    let users: Vec<String> = (1..=60).map(|n| format!("u{n:06}")).collect();
    let report = score::run_naive(&w.store, day(), TZ, users).await;
    assert_eq!(
        (report.written, report.failed, report.round_trips),
        (60, 0, 120)
    );
    let naive = scores(&w.store).await;
    score::purge(&w.store, day(), &Default::default())
        .await
        .expect("purge");

    let (stop, worker) = start_worker(&w);
    let run = planner(&w).plan(day(), "test", false).await.expect("plan");
    w.runs
        .wait_for_end(&run.id, Duration::from_secs(60))
        .await
        .expect("run ends");
    let batched = scores(&w.store).await;
    let pick = |docs: &[Document]| {
        docs.iter()
            .map(|d| {
                (
                    d.get_str("userId").expect("u").to_owned(),
                    d.get_f64("score").expect("s"),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pick(&naive), pick(&batched));
    stop.cancel();
    worker.await.expect("join");
    w.store.database().drop().await.expect("drop");
}

/// Redis lost its data (its run counter starts over) while MongoDB kept the runs: a re-run
/// still gets an id no run has; its purge, once the run is planned, deletes the day's results
/// of users the new run does not target, and leaves those it rewrites.
#[tokio::test]
async fn a_rerun_takes_an_unused_id_and_purges_only_once_planned() {
    let w = world(30).await;
    let mut redis = connect(&common::redis_url()).await.expect("redis");
    let counted: Option<u64> = redis::cmd("GET")
        .arg("tidegate:runs:2026-11-24:seq")
        .query_async(&mut redis)
        .await
        .expect("counter");
    let last = counted.unwrap_or(0) + 1000;
    let earlier = format!("2026-11-24-r{last}");
    let db = w.store.database();
    db.collection::<Document>("runs")
        .insert_one(doc! {
            "_id": &earlier, "pipeline": "score", "date": "2026-11-24",
            "trigger": "test", "startedAt": mongodb::bson::DateTime::now(),
            "skipped": 0_i64, "completed": 0_i64, "failed": 0_i64,
        })
        .await
        .expect("an earlier run");
    db.collection::<Document>(DAILY_SCORES)
        .insert_many([
            doc! { "_id": "2026-11-24:gone", "userId": "gone", "date": "2026-11-24",
            "runId": &earlier },
            doc! { "_id": "2026-11-24:u000001", "userId": "u000001", "date": "2026-11-24",
            "runId": &earlier },
        ])
        .await
        .expect("results");

    let run = planner(&w).plan(day(), "rerun", true).await.expect("rerun");
    assert_eq!(
        run.id,
        format!("2026-11-24-r{}", last + 1),
        "one more than the highest run MongoDB has"
    );
    assert_eq!(run.planned, Some(30));
    let ids: Vec<String> = scores(&w.store)
        .await
        .iter()
        .map(|d| d.get_str("_id").expect("id").to_owned())
        .collect();
    assert_eq!(
        ids,
        ["2026-11-24:u000001"],
        "a user the day no longer has is purged; one the run rewrites stays until it does"
    );
    w.store.database().drop().await.expect("drop");
}

/// Jobs whose worker died twice (their locks lapsed past the stall limit) fail for good, and
/// their run still counts them and ends: the failure is deferred by the stalled check and
/// made final by the next taker, which must tell the run.
#[tokio::test]
async fn a_run_ends_when_its_jobs_fail_by_stalling() {
    let w = world(3).await;
    let run = planner(&w).plan(day(), "test", false).await.expect("plan");
    let taken = w
        .queue
        .take(10, "a-worker-that-dies", Duration::from_millis(50))
        .await
        .expect("take");
    assert_eq!(taken.jobs.len(), 3);
    // Two checks: the first marks the active jobs, the next (their locks lapsed) requeues them
    // past a limit of 0.
    common::eventually(
        "the jobs to pass the stall limit",
        Duration::from_secs(10),
        || async {
            let check = w
                .queue
                .recover_stalled(Duration::from_millis(10), 0)
                .await
                .expect("stalled check");
            (check.over_limit.len() == 3).then_some(())
        },
    )
    .await;
    let (stop, worker) = start_worker(&w);
    let ended = w
        .runs
        .wait_for_end(&run.id, Duration::from_secs(30))
        .await
        .expect("the run ends");
    assert_eq!(
        (ended.completed, ended.failed, ended.outcome.as_deref()),
        (0, 3, Some("failed"))
    );
    stop.cancel();
    worker.await.expect("join");
    w.store.database().drop().await.expect("drop");
}

/// The settle that counted a run's last jobs ran, but its process never saw the reply (Redis
/// went away, the process died): nobody checked the run's end. The next stall check records
/// it, with the counts the settle made, once.
#[tokio::test]
async fn a_run_whose_last_finish_went_unseen_ends_at_the_next_stall_check() {
    let w = world(3).await;
    let run = planner(&w).plan(day(), "test", false).await.expect("plan");
    let taken = w
        .queue
        .take(10, "a-worker-that-dies", Duration::from_secs(30))
        .await
        .expect("take");
    assert_eq!(taken.jobs.len(), 3);
    let settlements: Vec<Settlement> = taken
        .jobs
        .iter()
        .map(|job| {
            Settlement::Completed {
                id: job.id.clone(),
                returnvalue: "null".into(),
                keep: Retention::KEEP_ALL,
                count: None,
            }
            .counted_in(w.runs.count_for(job))
        })
        .collect();
    w.queue
        .settle("a-worker-that-dies", &settlements)
        .await
        .expect("settle");
    assert_eq!(w.runs.finished_jobs(&run.id).await.expect("finished"), 3);
    let open = w.runs.get(&run.id).await.expect("get").expect("run");
    assert_eq!(open.ended_at, None, "no process has looked yet");

    let stalled = w
        .runs
        .check_stalled(Duration::from_secs(3600))
        .await
        .expect("stall check");
    assert!(stalled.is_empty(), "an ended run is no stall: {stalled:?}");
    let ended = w.runs.get(&run.id).await.expect("get").expect("run");
    assert_eq!(
        (ended.completed, ended.failed, ended.outcome.as_deref()),
        (3, 0, Some("succeeded"))
    );
    let at = ended.ended_at;
    w.runs
        .check_stalled(Duration::from_secs(3600))
        .await
        .expect("stall check");
    let again = w.runs.get(&run.id).await.expect("get").expect("run");
    assert_eq!(again.ended_at, at, "ended once");
    w.store.database().drop().await.expect("drop");
}
