//! Run reports reach a Slack-compatible webhook: a local HTTP receiver stands in for Slack,
//! refuses the first post (the notifier must retry) and checks the report's content, taken from
//! the real run counters, failure reasons and CPU history in Redis and MongoDB.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tidegate::control::budget;
use tidegate::notify::Notifier;
use tidegate::queue::Redis;
use tidegate::queue::{Job, JobOptions, NewJob, Queue, Retention, Settlement, connect};
use tidegate::runs::Runs;
use tidegate::store::Store;

#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<serde_json::Value>) -> StatusCode {
    let mut posts = r.posts.lock().unwrap_or_else(|e| e.into_inner());
    posts.push(body);
    // Slack has bad moments: the first post gets a 503.
    if posts.len() == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

fn job(id: &str, run: &str) -> NewJob {
    NewJob::new("score", serde_json::json!({ "runId": run, "userId": id })).with_opts(JobOptions {
        job_id: Some(id.to_owned()),
        ..JobOptions::default()
    })
}

/// Takes the next `n` jobs and settles each as `outcome` says (a failure reason, or none for
/// completed), counted in its run as the worker counts it; then lets the runs end.
async fn finish(queue: &Queue, runs: &Runs, outcomes: &[Option<&str>]) {
    let jobs = settle(queue, runs, outcomes).await;
    runs.check_ends(&jobs.iter().collect::<Vec<&Job>>()).await;
}

/// [`finish`] without letting the runs end: returns the settled jobs.
async fn settle(queue: &Queue, runs: &Runs, outcomes: &[Option<&str>]) -> Vec<Job> {
    let taken = queue
        .take(outcomes.len(), "notify-test", Duration::from_secs(30))
        .await
        .expect("take");
    assert_eq!(taken.jobs.len(), outcomes.len());
    let settlements: Vec<Settlement> = taken
        .jobs
        .iter()
        .zip(outcomes)
        .map(|(job, outcome)| {
            let settlement = match outcome {
                None => Settlement::Completed {
                    id: job.id.clone(),
                    returnvalue: "null".into(),
                    keep: Retention::KEEP_ALL,
                    count: None,
                },
                Some(reason) => Settlement::Failed {
                    id: job.id.clone(),
                    reason: (*reason).into(),
                    stacktrace: Vec::new(),
                    keep: Retention::KEEP_ALL,
                    exhausted: true,
                    count: None,
                },
            };
            settlement.counted_in(runs.count_for(job))
        })
        .collect();
    queue
        .settle("notify-test", &settlements)
        .await
        .expect("settle");
    taken.jobs
}

/// A run on a date of `year`'s of its own, planned as one job, `id`, added to `queue`; its id.
async fn run_of_one(runs: &Runs, queue: &Queue, year: u32, id: &str) -> String {
    let date = format!("{year}-{}", &common::unique("d")[..8]);
    let run = runs.start("score", &date, "test").await.expect("start");
    runs.planned(&run.id, 1, 0).await.expect("planned");
    queue.add_bulk(&[job(id, &run.id)]).await.expect("add");
    run.id
}

/// Runs reporting to the webhook at `url` (retrying 10 ms apart), on a database of their own;
/// with the Redis connection and the store.
async fn runs_reporting_to(url: String) -> (Runs, Redis, Store) {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let store = common::store("tidegate_notify").await;
    let notifier = Notifier::with_backoff(url, Duration::from_millis(10)).expect("notifier");
    let runs = Runs::new(redis.clone(), store.clone(), "bull").with_notifier(notifier);
    (runs, redis, store)
}

/// A webhook receiver on a free port; returns its URL.
async fn start_receiver(receiver: &Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_run_that_stops_moving_is_reported_as_stalled_once() {
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    let (runs, _, _) = runs_reporting_to(url).await;
    let date = format!("2032-{}", &common::unique("s")[..8]);
    let run = runs.start("score", &date, "test").await.expect("start");
    runs.planned(&run.id, 5, 0).await.expect("planned");

    let after = Duration::from_millis(300);
    assert!(
        runs.check_stalled(after).await.expect("check").is_empty(),
        "the first look only notes where the run is"
    );
    let stalled = common::eventually(
        "the stall to be reported",
        Duration::from_secs(10),
        || async {
            let stalled = runs.check_stalled(after).await.expect("check");
            (!stalled.is_empty()).then_some(stalled)
        },
    )
    .await;
    assert_eq!(stalled, vec![run.id.clone()]);
    assert!(
        runs.check_stalled(after).await.expect("check").is_empty(),
        "reported once"
    );
    let posts = receiver.posts.lock().expect("posts").clone();
    let text = posts
        .last()
        .and_then(|p| p["text"].as_str())
        .expect("a report");
    assert!(
        text.starts_with(&format!(
            ":warning: tidegate run {} STALLED: 0 of 5 jobs finished",
            run.id
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_run_that_ends_is_reported_once_with_its_numbers_and_reasons() {
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;

    let (runs, mut redis, _) = runs_reporting_to(url).await;

    let date = format!("2031-{}", &common::unique("d")[..8]);
    let run = runs.start("score", &date, "test").await.expect("start");
    runs.planned(&run.id, 4, 0).await.expect("planned");
    // The leader's probe saw the database at 120% and 180% during the run: both samples are
    // dated at its start, since the whole run can take under a millisecond here.
    let started = u64::try_from(run.started_at.timestamp_millis()).expect("a time after 1970");
    for cpu in [120.0, 180.0] {
        budget::record_cpu(&mut redis, started, cpu)
            .await
            .expect("cpu");
    }

    let queue = Queue::new(redis.clone(), "bull", &common::unique("notify"));
    let jobs: Vec<NewJob> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| job(id, &run.id))
        .collect();
    queue.add_bulk(&jobs).await.expect("add");
    finish(&queue, &runs, &[None, Some("userId missing")]).await;
    assert!(
        receiver.posts.lock().expect("posts").is_empty(),
        "not ended yet: no report"
    );
    finish(&queue, &runs, &[Some("userId missing"), Some("timeout")]).await;

    // Refused once, delivered on the retry.
    let posts = common::eventually("the report to arrive", Duration::from_secs(10), || async {
        let posts = receiver.posts.lock().expect("posts").clone();
        (posts.len() == 2).then_some(posts)
    })
    .await;
    assert_eq!(posts[0], posts[1]);
    let text = posts[1]["text"].as_str().expect("text");
    for part in [
        format!("tidegate run {} FAILED: 3 of 4 jobs failed", run.id),
        format!("pipeline *score*, date *{date}*, trigger test"),
        "1 succeeded, 3 failed, 0 skipped".to_owned(),
        "database CPU mean 150%, peak 180%".to_owned(),
        "• 2× userId missing".to_owned(),
        "• 1× timeout".to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from {text}");
    }
}

/// A webhook that accepts connections and never answers holds nothing up: the batch that ends
/// the run returns at once (the report goes out on a task of its own, up to four tries of 10 s).
#[tokio::test]
async fn a_silent_webhook_never_holds_the_batch_that_ends_a_run() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", silent.local_addr().expect("addr"));
    let (runs, redis, store) = runs_reporting_to(url).await;
    let queue = Queue::new(redis, "bull", &common::unique("notify"));
    let run = run_of_one(&runs, &queue, 2031, "a").await;

    tokio::time::timeout(Duration::from_secs(5), finish(&queue, &runs, &[None]))
        .await
        .expect("the batch's settle path does not wait for the webhook");
    let ended = runs
        .wait_for_end(&run, Duration::from_secs(10))
        .await
        .expect("the outbox ends the run");
    assert_eq!(ended.outcome.as_deref(), Some("succeeded"));
    // A clean stop waits for the report, but no longer than its bound.
    tokio::time::timeout(
        Duration::from_secs(5),
        runs.close(Duration::from_millis(500)),
    )
    .await
    .expect("a stop's wait for reports is bounded");
    store.database().drop().await.expect("drop");
    drop(silent);
}

/// A clean stop delivers the report of a run this process has just ended: the outbox ends it,
/// the webhook refuses the first post, and the retry lands before `close` returns.
#[tokio::test]
async fn a_clean_stop_waits_for_the_report_of_a_run_it_ended() {
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    let (runs, redis, store) = runs_reporting_to(url).await;
    let queue = Queue::new(redis, "bull", &common::unique("notify"));
    run_of_one(&runs, &queue, 2033, "a").await;
    finish(&queue, &runs, &[None]).await;
    runs.close(Duration::from_secs(10)).await;
    let posts = receiver.posts.lock().expect("posts").len();
    assert_eq!(
        posts, 2,
        "refused once, then delivered, before the stop returned"
    );
    store.database().drop().await.expect("drop");
}

/// A run check posted while a clean stop closes the outbox is still done before the stop
/// returns: the run whose last job settled as the process stopped ends then, with its report,
/// not at the stall check minutes later.
#[tokio::test]
async fn a_check_posted_as_the_stop_closes_is_still_done() {
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    let (runs, redis, store) = runs_reporting_to(url).await;
    let queue = Queue::new(redis, "bull", &common::unique("notify"));
    let ids = [
        run_of_one(&runs, &queue, 2034, "first").await,
        run_of_one(&runs, &queue, 2035, "second").await,
    ];
    // The first run's end shows the outbox's task is up and has nothing queued.
    finish(&queue, &runs, &[None]).await;
    runs.wait_for_end(&ids[0], Duration::from_secs(10))
        .await
        .expect("the outbox ends the first run");

    let last = settle(&queue, &runs, &[None]).await;
    let last: Vec<&Job> = last.iter().collect();
    // The close is queued first, the check behind it.
    tokio::join!(runs.close(Duration::from_secs(10)), runs.check_ends(&last));
    let ended = runs.get(&ids[1]).await.expect("get").expect("the run");
    assert_eq!(ended.outcome.as_deref(), Some("succeeded"));
    let posts = receiver.posts.lock().expect("posts").len();
    assert_eq!(
        posts, 3,
        "the first report twice (refused once), the second once"
    );
    store.database().drop().await.expect("drop");
}
