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
use tidegate::queue::{Job, JobOptions, Retention, Settlement, connect, now_ms};
use tidegate::runs::Runs;
use tidegate::store::{Store, StoreOptions};

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

fn job(id: &str, run: &str) -> Job {
    Job {
        id: id.into(),
        name: "score".into(),
        raw_data: serde_json::json!({ "runId": run, "userId": id }).to_string(),
        opts: JobOptions::default(),
        timestamp: now_ms(),
        attempts_made: 0,
    }
}

fn failed(id: &str, reason: &str) -> Settlement {
    Settlement::Failed {
        id: id.into(),
        reason: reason.into(),
        stacktrace: Vec::new(),
        keep: Retention::KEEP_ALL,
        exhausted: true,
    }
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
    let redis = connect(&common::redis_url()).await.expect("redis");
    let store = Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_stall"),
        StoreOptions::default(),
    )
    .await
    .expect("mongodb");
    let notifier = Notifier::with_backoff(url, Duration::from_millis(10)).expect("notifier");
    let runs = Runs::new(redis, store).with_notifier(notifier);
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

    let mut redis = connect(&common::redis_url()).await.expect("redis");
    let store = Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_notify"),
        StoreOptions::default(),
    )
    .await
    .expect("mongodb");
    let notifier = Notifier::with_backoff(url, Duration::from_millis(10)).expect("notifier");
    let runs = Runs::new(redis.clone(), store).with_notifier(notifier);

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

    let jobs = [
        job("a", &run.id),
        job("b", &run.id),
        job("c", &run.id),
        job("d", &run.id),
    ];
    let ok = Settlement::Completed {
        id: "a".into(),
        returnvalue: "null".into(),
        keep: Retention::KEEP_ALL,
    };
    let (b, c, d) = (
        failed("b", "userId missing"),
        failed("c", "userId missing"),
        failed("d", "timeout"),
    );
    runs.record_finished(&[(&jobs[0], &ok), (&jobs[1], &b)])
        .await;
    assert!(
        receiver.posts.lock().expect("posts").is_empty(),
        "not ended yet: no report"
    );
    runs.record_finished(&[(&jobs[2], &c), (&jobs[3], &d)])
        .await;

    let posts = receiver.posts.lock().expect("posts").clone();
    assert_eq!(
        posts.len(),
        2,
        "refused once, delivered on the retry: {posts:?}"
    );
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
