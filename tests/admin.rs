//! The back-office API on the real services: every route refuses a missing or wrong token
//! (401), bad inputs get a 4xx with a message, and the good ones act on Redis and MongoDB.

mod common;

use chrono::NaiveDate;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidegate::http::admin::{AdminState, router};
use tidegate::pipeline::score;
use tidegate::queue::{Backoff, Queue, connect};
use tidegate::runs::Runs;
use tidegate::schedule::Planner;
use tidegate::store::{Store, StoreOptions};

const TOKEN: &str = "0123456789abcdef-test-token";
const TZ: chrono_tz::Tz = chrono_tz::Asia::Seoul;

struct Admin {
    base: String,
    queue: Queue,
    http: reqwest::Client,
}

impl Admin {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, body, Some(TOKEN)).await
    }
}

async fn start() -> Admin {
    let store = Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_admin"),
        StoreOptions::default(),
    )
    .await
    .expect("mongodb");
    let day = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
    score::seed_day(&store, day, TZ, 10, 3, |_| {})
        .await
        .expect("seed");
    let redis = connect(&common::redis_url()).await.expect("redis");
    let queue = Queue::new(redis.clone(), "bull", &common::unique("admin"));
    let runs = Runs::new(redis.clone(), store.clone());
    let planner = Planner {
        queue: queue.clone(),
        store,
        runs: runs.clone(),
        redis,
        tz: TZ,
        attempts: 1,
        backoff: Backoff::Millis(10),
    };
    let app = router(AdminState {
        token: TOKEN.into(),
        queue: queue.clone(),
        runs,
        planner,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Admin {
        base,
        queue,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let routes = [
        ("GET", "/api/queues".to_owned()),
        ("POST", format!("/api/queues/{q}/pause")),
        ("POST", format!("/api/queues/{q}/resume")),
        ("GET", "/api/runs?date=2026-11-24".to_owned()),
        ("POST", "/api/runs".to_owned()),
        ("GET", "/api/runs/2026-11-24-r1".to_owned()),
        ("GET", format!("/api/queues/{q}/jobs?state=waiting")),
        ("GET", format!("/api/queues/{q}/jobs/1")),
    ];
    for (method, path) in &routes {
        for token in [None, Some("wrong"), Some("0123456789abcdef-test-tokeN")] {
            let (status, body) = admin
                .call(method, path, Some(json!({"date": "2026-11-24"})), token)
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(body["error"].is_string());
        }
    }
    assert!(
        !admin.queue.is_paused().await.expect("paused?"),
        "nothing acted"
    );
}

#[tokio::test]
async fn the_queue_is_listed_paused_and_resumed() {
    let admin = start().await;
    let q = admin.queue.name().to_owned();
    let (status, body) = admin.ok("GET", "/api/queues", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], q.as_str());
    assert_eq!(body[0]["paused"], false);
    assert_eq!(body[0]["counts"]["waiting"], 0);

    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.queue.is_paused().await.expect("paused?"));
    let (status, _) = admin
        .ok("POST", &format!("/api/queues/{q}/resume"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!admin.queue.is_paused().await.expect("paused?"));

    let (status, body) = admin.ok("POST", "/api/queues/nosuch/pause", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("nosuch")));
}

#[tokio::test]
async fn runs_are_started_listed_and_shown_and_bad_inputs_are_refused() {
    let admin = start().await;
    for (method, path, body) in [
        ("GET", "/api/runs", None),
        ("GET", "/api/runs?date=24-11-2026", None),
        ("GET", "/api/runs/not-a-run", None),
        ("GET", "/api/runs/2026-11-24-rX", None),
        ("POST", "/api/runs", Some(json!({"date": "2026-02-30"}))),
        ("POST", "/api/runs", Some(json!({"day": "2026-11-24"}))),
        (
            "POST",
            "/api/runs",
            Some(json!({"date": "2026-11-24", "purge": "yes"})),
        ),
        ("POST", "/api/runs", Some(json!([1, 2]))),
    ] {
        let (status, reply) = admin.ok(method, path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body:?}: {reply}"
        );
        assert!(reply["error"].is_string(), "{reply}");
    }

    let (status, run) = admin
        .ok(
            "POST",
            "/api/runs",
            Some(json!({"date": "2026-11-24", "purge": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["planned"], 10);
    assert_eq!(run["trigger"], "admin");
    let id = run["_id"].as_str().expect("run id").to_owned();
    let counts = admin.queue.counts().await.expect("counts");
    assert_eq!(counts.waiting, 10, "the run's jobs wait in the queue");

    let (status, listed) = admin.ok("GET", "/api/runs?date=2026-11-24", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["_id"] == id.as_str())),
        "{listed}"
    );
    let (status, shown) = admin.ok("GET", &format!("/api/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["_id"], id.as_str());
    let (status, _) = admin.ok("GET", "/api/runs/2026-11-24-r999999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The run's jobs, paged, and one in full.
    let q = admin.queue.name().to_owned();
    let (status, page) = admin
        .ok(
            "GET",
            &format!("/api/queues/{q}/jobs?state=waiting&page=1&size=3"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 10);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(3));
    let (_, last) = admin
        .ok(
            "GET",
            &format!("/api/queues/{q}/jobs?state=waiting&page=4&size=3"),
            None,
        )
        .await;
    assert_eq!(last["jobs"].as_array().map(Vec::len), Some(1));
    let first = page["jobs"][0]["id"].as_str().expect("job id").to_owned();
    let (status, job) = admin
        .ok("GET", &format!("/api/queues/{q}/jobs/{first}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["data"]["runId"], id.as_str());
    assert!(job["data"]["userId"].is_string());
    assert_eq!(job["attemptsMade"], 0);
    let (status, _) = admin
        .ok("GET", &format!("/api/queues/{q}/jobs/no-such-job"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        format!("/api/queues/{q}/jobs"),
        format!("/api/queues/{q}/jobs?state=done"),
        format!("/api/queues/{q}/jobs?state=failed&size=0"),
        format!("/api/queues/{q}/jobs?state=failed&size=501"),
        format!("/api/queues/{q}/jobs?state=failed&page=x"),
        format!("/api/queues/{q}/jobs/a:b"),
    ] {
        let (status, reply) = admin.ok("GET", &bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
        assert!(reply["error"].is_string());
    }
}
