//! Outages longer than every time limit, under the product's defaults: a `tidegate rerun` of
//! a score day while the database is frozen (SIGSTOP) for longer than the operation and batch
//! limits, and while Redis is frozen for longer than its response limit. Each ends with every
//! job completed on its first attempt (an outage spends none), none failed, the run's record
//! right, the day's results each written once, the command exiting 0, and work going on within
//! seconds of the return. `TIDEGATE_OUTAGE` sets how long each outage lasts (3 minutes unless
//! set); both tests run at once, on a database and a Redis of their own.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use common::scenario::{self, Server, aof_redis};
use tidegate::queue::{Queue, connect};

/// Users in the day: enough that the outage lands mid-run at the default pace.
const USERS: u64 = 600;

fn outage() -> Duration {
    std::env::var("TIDEGATE_OUTAGE")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(180))
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).expect("a day")
}

/// `tidegate rerun` of the day, with nothing but the product's defaults beside what names the
/// services, the queue, the database and the application.
fn rerun(redis_url: &str, mongodb_uri: &str, queue: &str, database: &str) -> Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["rerun", "--date", &day().to_string()])
        .env("REDIS_URL", redis_url)
        .env("MONGODB_URI", mongodb_uri)
        .env("TIDEGATE_QUEUE", queue)
        .env("TIDEGATE_DATABASE", database)
        .env("TIDEGATE_APPS", "score")
        .env("TIDEGATE_HTTP_ADDR", "127.0.0.1:0")
        .env(
            "TIDEGATE_LOG",
            std::env::var("TIDEGATE_OUTAGE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidegate rerun")
}

/// The day seeded in `database`, and the queue the rerun works.
async fn world(redis_url: &str, mongodb_uri: &str, name: &str) -> (String, Queue) {
    let database = common::unique(&format!("tidegate_{name}"));
    let store = tidegate::store::Store::connect(mongodb_uri, &database, Default::default())
        .await
        .expect("mongo");
    tidegate_score::sample_day(&store, day(), chrono_tz::UTC, USERS, 5, |_| {})
        .await
        .expect("sample day");
    let queue = common::unique(name);
    let q = Queue::new(connect(redis_url).await.expect("redis"), "bull", &queue);
    (database, q)
}

/// Completed jobs, when Redis answers.
async fn completed(q: &Queue) -> Option<u64> {
    q.counts().await.ok().map(|c| c.completed)
}

/// The rerun ends by itself, exiting 0 with its report; every job of the run completed on
/// its first attempt, none failed; the day's results are each written once.
async fn assert_ridden_through(mut child: Child, q: &Queue, mongodb_uri: &str, database: &str) {
    let waited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(status) = child.try_wait().expect("the rerun's status") {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    use std::io::Read;
                    let _ = stdout.read_to_string(&mut out);
                }
                return (status, out);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the rerun did not end within 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("join");
    let (status, report) = waited;
    assert!(status.success(), "the rerun exits 0: {status}\n{report}");
    assert!(
        report.contains(&format!(
            "jobs       {USERS} planned, {USERS} completed, 0 failed"
        )),
        "{report}"
    );
    assert!(report.contains("outcome    succeeded"), "{report}");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.completed, counts.failed), (USERS, 0));
    // `atm` counts attempts: 1 for every job means the outage spent none.
    let attempts = scenario::attempts_of_completed(q).await;
    let retried = attempts.iter().filter(|&&a| a != 1).count();
    assert_eq!(retried, 0, "jobs that spent an attempt on the outage");
    let store = tidegate::store::Store::connect(mongodb_uri, database, Default::default())
        .await
        .expect("mongo");
    let scores = store
        .database()
        .collection::<mongodb::bson::Document>(tidegate_score::DAILY_SCORES)
        .count_documents(mongodb::bson::doc! { "date": day().to_string() })
        .await
        .expect("count");
    assert_eq!(scores, USERS, "each user's score once");
    store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn a_database_frozen_past_every_time_limit_spends_no_attempt_and_the_rerun_exits_0() {
    let Some(db) = scenario::ferretdb().await else {
        common::skip("FERRETDB_BIN is not set (MONGODB_URI points at another server)");
        return;
    };
    let mongodb_uri = format!("mongodb://127.0.0.1:{}/", db.port);
    let redis_url = common::redis_url();
    let (database, q) = world(&redis_url, &mongodb_uri, "outage_db").await;
    let child = rerun(&redis_url, &mongodb_uri, q.name(), &database);
    scenario::first_jobs_done(&q, Duration::from_secs(120)).await;
    db.freeze();
    let frozen = Instant::now();
    tokio::time::sleep(outage()).await; // the outage itself: its length is the test's point
    let before = completed(&q).await.expect("Redis answers");
    db.thaw();
    let resumed = scenario::work_resumes(&q, before).await;
    eprintln!(
        "database frozen {:?}: work resumed {resumed:?} after it answered",
        frozen.elapsed()
    );
    assert_ridden_through(child, &q, &mongodb_uri, &database).await;
    drop(db);
}

#[tokio::test]
async fn redis_frozen_past_its_response_limit_spends_no_attempt_and_the_rerun_exits_0() {
    let redis: Server = aof_redis().await;
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let mongodb_uri = common::mongodb_uri();
    let (database, q) = world(&redis_url, &mongodb_uri, "outage_redis").await;
    let child = rerun(&redis_url, &mongodb_uri, q.name(), &database);
    scenario::first_jobs_done(&q, Duration::from_secs(120)).await;
    redis.freeze();
    tokio::time::sleep(outage()).await; // the outage itself: its length is the test's point
    redis.thaw();
    // What the queue says first once Redis answers (settles waiting for it land at once).
    let before = common::eventually("Redis to answer", Duration::from_secs(30), || async {
        completed(&q).await
    })
    .await;
    let resumed = scenario::work_resumes(&q, before).await;
    eprintln!(
        "Redis frozen {:?}: work resumed {resumed:?} after it answered",
        outage()
    );
    assert_ridden_through(child, &q, &mongodb_uri, &database).await;
}
