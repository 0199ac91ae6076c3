//! A team's first day: tidegate pointed at a database and a queue that are theirs. It creates
//! no index, collection or schedule it was not asked for (indexes only through `tidegate
//! setup`); a scheduled firing missed while no process was up runs when one starts, or is
//! reported when too old; and on a queue that BullMQ workers share, it fails no job for its
//! name: it refuses to start, naming them, or leaves them to those workers.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{Duration as Span, Timelike, Utc};
use common::scenario::{self, free_port};
use mongodb::bson::{Document, doc};
use serde_json::json;
use tidegate::queue::{Queue, connect, keys};

/// `tidegate run` on a queue and database of the test's own, serving HTTP on `port`.
fn run(queue: &str, database: &str, port: u16, vars: &[(&str, &str)]) -> common::Running {
    scenario::start(
        scenario::command(
            queue,
            database,
            &common::redis_url(),
            &common::mongodb_uri(),
        )
        .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TIDEGATE_BUDGET", common::unique("first_day"))
        .envs(vars.iter().copied()),
    )
}

/// Waits until the process on `port` says it is ready: everything it does at start is done.
async fn ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    common::eventually("tidegate to be ready", Duration::from_secs(60), || async {
        let response = reqwest::get(&url).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// The indexes of each collection of the database, by name.
async fn indexes(store: &tidegate::store::Store) -> Vec<(String, usize)> {
    let db = store.database();
    let mut names = db.list_collection_names().await.expect("collections");
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let indexes = db
            .collection::<Document>(&name)
            .list_index_names()
            .await
            .expect("indexes");
        found.push((name, indexes.len()));
    }
    found
}

/// `tidegate setup` with `vars`; its standard output.
fn setup(database: &str, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("setup")
        .args(args)
        .env("REDIS_URL", common::redis_url())
        .env("MONGODB_URI", common::mongodb_uri())
        .env("TIDEGATE_DATABASE", database)
        .env("TIDEGATE_LOG", "warn")
        .envs(vars.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("tidegate setup");
    assert!(
        out.status.success(),
        "tidegate setup {args:?}: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn starting_creates_no_index_collection_or_schedule_and_setup_creates_what_it_says() {
    let store = common::store("tidegate_first_day").await;
    let database = store.database().name().to_owned();
    // The team's own collections, with the one index each that MongoDB gives.
    for collection in ["events", "daily_scores"] {
        store
            .database()
            .collection::<Document>(collection)
            .insert_one(doc! { "userId": "u1", "team": true })
            .await
            .expect("insert");
    }
    let before = indexes(&store).await;
    assert_eq!(
        before,
        [("daily_scores".to_owned(), 1), ("events".to_owned(), 1)]
    );

    let queue = common::unique("first_day");
    for apps in ["upsert", "upsert,score"] {
        let port = free_port();
        let process = run(&queue, &database, port, &[("TIDEGATE_APPS", apps)]);
        ready(port).await;
        assert_eq!(indexes(&store).await, before, "TIDEGATE_APPS={apps}");
        drop(process);
    }
    let mut redis = connect(&common::redis_url()).await.expect("redis");
    let base = tidegate::queue::keys::Keys::new("bull", &queue);
    let scheduled: bool = redis::cmd("EXISTS")
        .arg(keys::schedule(base.base(), "score"))
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert!(!scheduled, "no schedule state without TIDEGATE_SCHEDULE");

    // Setup says what it would create, and where, and creates it only when not a dry run.
    let score = [("TIDEGATE_APPS", "score")];
    let dry = setup(&database, &score, &["--dry-run"]);
    assert_eq!(dry.matches("would create").count(), 3, "{dry}");
    assert!(
        dry.contains(&format!("database {database}, collection events")),
        "{dry}"
    );
    assert_eq!(indexes(&store).await, before, "a dry run creates nothing");
    let done = setup(&database, &score, &[]);
    assert_eq!(done.matches("created ").count(), 3, "{done}");
    assert_eq!(
        indexes(&store).await,
        [("daily_scores".to_owned(), 2), ("events".to_owned(), 3)]
    );
    let again = setup(&database, &score, &[]);
    assert_eq!(again.matches("exists").count(), 3, "{again}");
    let upsert_only = setup(&database, &[], &[]);
    assert!(upsert_only.contains("nothing to create"), "{upsert_only}");
    store.database().drop().await.expect("drop");
}

/// A schedule that fired `ago` (to the minute), as a crontab line in UTC, and that firing.
fn fired_ago(ago: Span) -> (String, chrono::DateTime<Utc>) {
    let fired = (Utc::now() - ago)
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("a minute");
    (format!("{} {} * * *", fired.minute(), fired.hour()), fired)
}

/// A process of the score application on a queue and database of its own, with a schedule
/// that fired two hours ago while, as far as Redis knows, its replicas had been down for three.
struct Missed {
    store: tidegate::store::Store,
    database: String,
    queue: String,
    schedule: String,
    day: chrono::NaiveDate,
}

impl Missed {
    async fn new() -> Self {
        let store = common::store("tidegate_catch_up").await;
        let database = store.database().name().to_owned();
        let queue = common::unique("catch_up");
        let (schedule, fired) = fired_ago(Span::hours(2));
        let day = fired.date_naive().pred_opt().expect("a day");
        tidegate_score::sample_day(&store, day, chrono_tz::UTC, 5, 3, |_| {})
            .await
            .expect("sample day");
        let mut redis = connect(&common::redis_url()).await.expect("redis");
        let down = (Utc::now() - Span::hours(3)).timestamp_millis();
        let base = tidegate::queue::keys::Keys::new("bull", &queue);
        let _: () = redis::cmd("HSET")
            .arg(keys::schedule(base.base(), "score"))
            .arg("since")
            .arg(down)
            .arg("through")
            .arg(down)
            .query_async(&mut redis)
            .await
            .expect("a schedule handled up to three hours ago");
        Self {
            store,
            database,
            queue,
            schedule,
            day,
        }
    }

    /// The process, with its back-office on `admin`.
    fn start(&self, port: u16, admin: u16, catch_up: &str) -> common::Running {
        run(
            &self.queue,
            &self.database,
            port,
            &[
                ("TIDEGATE_APPS", "score"),
                ("TIDEGATE_SCHEDULE", &self.schedule),
                ("TIDEGATE_TIMEZONE", "UTC"),
                ("TIDEGATE_SCHEDULE_CATCH_UP", catch_up),
                ("TIDEGATE_ADMIN_TOKEN", TOKEN),
                ("TIDEGATE_ADMIN_ADDR", &format!("127.0.0.1:{admin}")),
            ],
        )
    }

    async fn scheduled_runs(&self) -> Vec<Document> {
        use futures::TryStreamExt;
        self.store
            .database()
            .collection::<Document>("runs")
            .find(doc! { "trigger": "schedule" })
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("runs")
    }
}

const TOKEN: &str = "first-day-token-0123456789";

async fn schedule_view(admin: u16) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/api/schedule"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the back-office answers")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn a_firing_missed_while_no_process_was_up_runs_when_one_starts() {
    let missed = Missed::new().await;
    let (port, admin) = (free_port(), free_port());
    let process = missed.start(port, admin, "6h");
    // The run is recorded before its jobs are added, its count (`planned`) once they are: a
    // run read in between has none yet.
    let runs = common::eventually(
        "the missed firing's run to be planned",
        Duration::from_secs(60),
        || async {
            let runs = missed.scheduled_runs().await;
            (!runs.is_empty() && runs.iter().all(|r| r.get_i64("planned").is_ok())).then_some(runs)
        },
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].get_str("date"), Ok(missed.day.to_string().as_str()));
    assert_eq!(runs[0].get_i64("planned"), Ok(5));
    let view = schedule_view(admin).await;
    assert_eq!(view["schedule"], json!(missed.schedule), "{view}");
    assert_eq!(view["missed"], 0, "{view}");
    assert_eq!(view["next"].as_array().map(Vec::len), Some(3), "{view}");
    assert!(view["handledThrough"].is_string(), "{view}");
    drop(process);
    missed.store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn a_firing_older_than_the_catch_up_window_is_reported_not_run() {
    let missed = Missed::new().await;
    let (port, admin) = (free_port(), free_port());
    let process = missed.start(port, admin, "1h");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    common::eventually(
        "the missed firing to be counted",
        Duration::from_secs(60),
        || async {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            text.contains("tidegate_schedule_missed_total{application=\"score\"} 1")
                .then_some(())
        },
    )
    .await;
    let view = schedule_view(admin).await;
    assert_eq!(view["missed"], 1, "{view}");
    assert!(view["lastMissed"].is_string(), "{view}");
    assert!(missed.scheduled_runs().await.is_empty(), "not run");
    drop(process);
    missed.store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn a_queue_shared_with_bullmq_workers_loses_no_job_to_its_name() {
    let queue = common::unique("shared");
    let database = common::unique("tidegate_shared");
    let mut jobs: Vec<serde_json::Value> = (0..20)
        .map(|i| json!({ "name": "sendEmail", "data": { "to": format!("user{i}@example.com") } }))
        .collect();
    jobs.extend((0..10).map(|i| {
        json!({ "name": "upsert", "data": {
            "collection": "effects", "key": ["job"], "document": { "job": format!("j{i}") } } })
    }));
    common::bullmq(&["add", &queue], &[], &json!(jobs).to_string());
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue,
    );

    // By default it refuses to start, naming the jobs and the way out, and touches nothing.
    let refused = scenario::command(
        &queue,
        &database,
        &common::redis_url(),
        &common::mongodb_uri(),
    )
    .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
    .stderr(Stdio::piped())
    .spawn()
    .expect("start tidegate");
    let out = tokio::task::spawn_blocking(move || refused.wait_with_output())
        .await
        .expect("join")
        .expect("tidegate ends");
    assert!(!out.status.success(), "it must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"sendEmail\" (20)"), "{stderr}");
    assert!(stderr.contains("TIDEGATE_UNKNOWN_JOBS=leave"), "{stderr}");
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active, counts.failed), (30, 0, 0));

    // Told to leave them: it works its own and leaves the rest, untouched, to BullMQ's workers.
    let port = free_port();
    let process = run(
        &queue,
        &database,
        port,
        &[("TIDEGATE_UNKNOWN_JOBS", "leave")],
    );
    common::eventually(
        "the upserts to complete",
        Duration::from_secs(60),
        || async {
            q.counts()
                .await
                .ok()
                .filter(|c| c.completed == 10)
                .map(drop)
        },
    )
    .await;
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active, counts.failed), (20, 0, 0));
    let consumed =
        tokio::task::spawn_blocking(move || common::bullmq(&["consume", &queue, "20"], &[], ""))
            .await
            .expect("join");
    let consumed = consumed.as_array().expect("jobs");
    assert_eq!(consumed.len(), 20);
    assert!(
        consumed
            .iter()
            .all(|j| j["name"] == "sendEmail" && j["attemptsMade"] == 0),
        "{consumed:?}"
    );
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.completed, counts.failed), (30, 0));
    drop(process);
}
